//! Starting and stopping one node: its storage actor on a thread of its own, its supervisor
//! and network on an actix system thread.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::anti_entropy::AntiEntropy;
use crate::actors::calls::CallServer;
use crate::actors::list::Lister;
use crate::actors::membership::{self, ChangeExecutor, InstalledMembership, Register};
use crate::actors::metrics;
use crate::actors::network::Network;
use crate::actors::outbox::Outbox;
use crate::actors::router::Router;
use crate::actors::storage::StorageActor;
use crate::actors::supervisor::{self, Keys, NodeSupervisor};
use crate::actors::watch::WatchHub;
use crate::actors::{Readiness, Stats};
use crate::config::Config;
use crate::error::{Error, Result};
#[cfg(feature = "testing")]
use crate::messages::FaultPlan;
use crate::paxos::bootstrap::Founding;
use crate::paxos::types::NodeId;
use crate::storage::Store;
use crate::tls::{Role, Tls};

/// How a node starts beyond its id and data directory.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Listen here instead of the config's address for the node (required for a node the
    /// config does not list: one that joins a running cluster).
    pub addr: Option<SocketAddr>,
    /// Ask these nodes for the membership (default: the config's nodes).
    pub join: Vec<SocketAddr>,
    /// Serve `/metrics` and `/health` here (default: the node's `metrics_addr` in the
    /// config, if any).
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the HTTP API here (default: the node's `http_addr` in the config, if any).
    pub http_addr: Option<SocketAddr>,
}

/// A running node. Dropping it does not stop it; call [`NodeHandle::stop`].
pub struct NodeHandle {
    pub id: NodeId,
    pub addr: SocketAddr,
    supervisor: Addr<NodeSupervisor>,
    #[cfg(feature = "testing")]
    outbox: Outbox,
    tls: Option<Arc<Tls>>,
    system: actix_rt::System,
    thread: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// Starts node `id` of `config` with its data in `data_dir`. `listener`, if given, is an
    /// already bound socket for the node's address (tests bind ephemeral ports first).
    pub fn start(
        config: Arc<Config>,
        id: NodeId,
        data_dir: &Path,
        listener: Option<std::net::TcpListener>,
    ) -> Result<NodeHandle> {
        NodeHandle::start_with(config, id, data_dir, listener, NodeOptions::default())
    }

    /// [`NodeHandle::start`] with the options of a node that may not be in the config (see
    /// [`NodeOptions`]).
    pub fn start_with(
        config: Arc<Config>,
        id: NodeId,
        data_dir: &Path,
        listener: Option<std::net::TcpListener>,
        options: NodeOptions,
    ) -> Result<NodeHandle> {
        config.check_runnable()?;
        let addr = listen_addr(&config, id, options.addr, listener.as_ref())?;
        config.check_transport(addr)?;
        let tls = Tls::from_config(&config.tls, Role::Node(id))?;
        let metrics = options
            .metrics_addr
            .or_else(|| config.metrics_addr_of(id))
            .map(metrics::bind)
            .transpose()?;
        let http = http_listener(&config, id, options.http_addr)?;
        let listener = match listener {
            Some(l) => l,
            None => std::net::TcpListener::bind(addr)
                .map_err(|e| Error::Config(format!("node {id}: cannot listen on {addr}: {e}")))?,
        };
        let store = Store::open(data_dir, config.storage.map_size_mb << 20, id)?;
        if !store.is_fully_durable()? {
            return Err(Error::Storage("LMDB opened without fsync".into()));
        }
        let view = Arc::new(InstalledMembership::new(
            id,
            store.store_id()?,
            store.membership()?,
        ));
        view.set_founds(Founding::founds(config.founding(id).as_ref()));
        let parts = Parts {
            id,
            config,
            store,
            view,
            tls: tls.clone(),
            listener,
            metrics,
            http,
            join: options.join,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("paxkv-node-{id}"))
            .spawn(move || run_node(parts, tx))?;
        #[cfg_attr(not(feature = "testing"), allow(unused_variables))]
        let (system, (supervisor, outbox)) = rx
            .recv()
            .map_err(|_| Error::Storage(format!("node {id} failed to start")))?;
        log::info!("node {id} listening on {addr}");
        Ok(NodeHandle {
            id,
            addr,
            supervisor,
            #[cfg(feature = "testing")]
            outbox,
            tls,
            system,
            thread: Some(thread),
        })
    }

    /// The node's supervisor, for tests and tools that talk to the node in-process.
    pub fn supervisor(&self) -> &Addr<NodeSupervisor> {
        &self.supervisor
    }

    /// The node's TLS state (`None`: plaintext).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Replaces the faults this node injects on its outgoing Paxos messages (test builds).
    #[cfg(feature = "testing")]
    pub fn set_faults(&self, plan: FaultPlan) {
        self.outbox.set_faults(plan);
    }

    /// Stops the node and waits until its storage is closed (its data directory may then be
    /// opened again).
    pub fn stop(mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Blocks until the node stops.
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where node `id` listens: `--addr`, else a listener's address for a node the config does
/// not list, else the config's address for it.
fn listen_addr(
    config: &Config,
    id: NodeId,
    addr: Option<SocketAddr>,
    listener: Option<&std::net::TcpListener>,
) -> Result<SocketAddr> {
    match (addr, listener) {
        (Some(addr), _) => Ok(addr),
        (None, Some(l)) if config.node(id).is_err() => Ok(l.local_addr()?),
        (None, _) => config.addr_of(id).map_err(|_| {
            Error::Config(format!(
                "node {id} is not in the config: give its address (--addr), and it joins the \
                 cluster the config lists once `paxkv member add` admits it"
            ))
        }),
    }
}

/// What a node's actors start from, checked and opened before its thread starts.
struct Parts {
    id: NodeId,
    config: Arc<Config>,
    store: Store,
    view: Arc<InstalledMembership>,
    tls: Option<Arc<Tls>>,
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    http: Option<std::net::TcpListener>,
    join: Vec<SocketAddr>,
}

/// The HTTP API's listener, if the node serves one: on `http_addr`, HTTPS with `[tls]`,
/// else loopback only (the node port's rule, `Config::check_transport`).
fn http_listener(
    config: &Config,
    id: NodeId,
    asked: Option<SocketAddr>,
) -> Result<Option<std::net::TcpListener>> {
    let Some(addr) = asked.or_else(|| config.http_addr_of(id)) else {
        return Ok(None);
    };
    config.check_transport(addr)?;
    crate::actors::http_api::bind(addr).map(Some)
}

/// What a node's thread tells the thread that started it.
type Started = (actix_rt::System, (Addr<NodeSupervisor>, Outbox));

/// The node's thread: its actix system, with its storage actor on an arbiter of its own,
/// until the system stops.
fn run_node(parts: Parts, started: std::sync::mpsc::Sender<Started>) {
    let system = actix_rt::System::new();
    let storage_arbiter = Arbiter::new();
    let actors = system.block_on(start_actors(parts, &storage_arbiter));
    let _ = started.send((actix_rt::System::current(), actors));
    let _ = system.run();
    storage_arbiter.stop();
    let _ = storage_arbiter.join();
}

/// Starts the node's actors and tasks: storage, supervisor (with the outbox and the
/// membership service), the router, the call server, the network, the start, metrics and
/// anti-entropy.
async fn start_actors(parts: Parts, storage_arbiter: &Arbiter) -> (Addr<NodeSupervisor>, Outbox) {
    let Parts {
        id,
        config,
        store,
        view,
        tls,
        listener,
        metrics,
        http,
        join,
    } = parts;
    let stats = Arc::new(Stats::default());
    let readiness = Arc::new(Readiness::default());
    let group = config.storage.max_group_commit;
    let wait_among_reads = Duration::from_micros(config.storage.commit_wait_among_reads_us);
    let commit_delay = if crate::TEST_HOOKS && config.testing.allow_fault_injection {
        Duration::from_millis(config.testing.commit_delay_ms)
    } else {
        Duration::ZERO
    };
    let storage_stats = stats.clone();
    let storage = StorageActor::start_in_arbiter(&storage_arbiter.handle(), move |_| {
        StorageActor::new(store, group, storage_stats)
            .with_wait_among_reads(wait_among_reads)
            .with_commit_delay(commit_delay)
    });
    let watch = WatchHub::new(id, config.clone(), stats.clone());
    let supervisor::Started {
        supervisor,
        outbox,
        queues,
        members,
        inbound,
        routes,
    } = NodeSupervisor::start(
        id,
        config.clone(),
        storage.clone(),
        stats.clone(),
        readiness.clone(),
        view.clone(),
        tls.clone(),
        watch.clone(),
    );
    actix_rt::spawn(watch.clone().run(members.clone()));
    let keys = Keys::new(supervisor.clone(), routes, &config);
    let register = Register::new(keys.clone());
    let changes = ChangeExecutor::new(members.clone(), register.clone(), supervisor.clone());
    let router = Router::new(
        keys.clone(),
        outbox.clone(),
        members.clone(),
        changes,
        Lister::new(members.clone(), keys),
        watch,
    );
    actix_rt::spawn(router.leases().keep());
    if let Some(listener) = http {
        let api = crate::actors::http_api::HttpApi::new(
            router.clone(),
            config.clone(),
            members.clone(),
            tls.clone(),
        );
        actix_rt::spawn(api.serve(listener));
    }
    let counter = storage.clone();
    let calls = CallServer::new(storage, readiness.clone(), &config, members.clone());
    Network::new(
        listener,
        queues,
        inbound,
        router,
        calls,
        config.clone(),
        stats.clone(),
    )
    .start();
    actix_rt::spawn(membership::start::run(members.clone(), register, join));
    if let Some(listener) = metrics {
        let sources = metrics::Sources {
            stats,
            readiness,
            view,
            outbox: outbox.clone(),
            refused: members.refused.clone(),
            storage: counter,
        };
        actix_rt::spawn(metrics::serve(listener, sources));
    }
    AntiEntropy::new(&members, supervisor.clone()).start();
    (supervisor, outbox)
}
