//! Five (or `n`) paxkv nodes in the test's process: each node its own actix system on its own
//! thread, on a loopback port bound before it starts and outside the kernel's ephemeral
//! range (no port race, on the first start or a restart: see [`bound_ports`]), with a data
//! directory in a temporary directory. Faults are fault plans set on the node's handle;
//! stopping a node stops its actix system.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use paxkv::client::{Client, ClientOptions};
use paxkv::config::Config;
use paxkv::messages::FaultPlan;
use paxkv::node::NodeHandle;
use paxkv::paxos::types::NodeId;
use tempfile::TempDir;

use crate::kit::{bound_ports, drive_until_done, eventually, free_ports, Cluster};
use crate::net::{http_get, metric_in};

pub struct TestCluster {
    pub config: Arc<Config>,
    pub dir: TempDir,
    nodes: Vec<Option<NodeHandle>>,
    /// Each node's bound listener until the node first starts (no port race in between).
    listeners: Vec<Option<TcpListener>>,
    /// Nodes the config does not list (they join through `member add`), by id.
    extra: std::collections::BTreeMap<NodeId, SocketAddr>,
    /// The client certificate of a cluster with `[tls]` (see [`TestCluster::with_tls`]).
    client_tls: Option<Arc<paxkv::tls::Tls>>,
    /// The operator's identity, when the config's `[tls] dir` holds one: membership changes
    /// (`TestCluster::change`) present it.
    operator_tls: Option<Arc<paxkv::tls::Tls>>,
}

/// A directory with a development CA and certificates for `config`'s nodes, and the config
/// turned to TLS with it ([`TestCluster::with_tls`]).
fn tls_dir_for(config: &mut Config, dir: &std::path::Path) {
    let nodes = config.nodes_and_addrs();
    paxkv::certs::write(&nodes, dir, true).expect("write the certificates");
    config.tls.dir = Some(dir.to_path_buf());
}

impl TestCluster {
    /// Five nodes with the default settings.
    pub fn start() -> TestCluster {
        TestCluster::start_with(|_| {})
    }

    /// Five nodes; `tweak` may change the config before they start.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestCluster {
        let mut cluster = TestCluster::configured_with(tweak);
        for id in 1..=5 {
            cluster.restart(id);
        }
        cluster.wait_voting_blocking(&[1, 2, 3, 4, 5]);
        cluster
    }

    /// Waits until the membership records every member's store: the end of a new cluster's
    /// bootstrap (until then a wiped store could not be told from the first one).
    pub async fn wait_bootstrapped(&self, via: NodeId) {
        eventually(
            "every store recorded in the membership",
            // (five compare-and-sets of one key; with a slow test disk, 500 ms a commit, they
            // take a while)
            Duration::from_secs(120),
            || async {
                let Ok(paxkv::messages::Reply::Members(info)) = self
                    .client_for(via)
                    .request(0, paxkv::messages::RequestBody::Members)
                    .await
                else {
                    return false;
                };
                info.membership
                    .is_some_and(|m| m.members.iter().all(|x| x.store != 0))
            },
        )
        .await;
    }

    /// Five nodes configured (ports bound, data directories chosen), none started yet:
    /// [`TestCluster::restart`] starts each.
    pub fn configured_with(tweak: impl FnOnce(&mut Config)) -> TestCluster {
        TestCluster::configured_n(5, tweak)
    }

    /// `n` nodes, all started, with the default settings but `tweak`.
    pub fn start_n(n: usize, tweak: impl FnOnce(&mut Config)) -> TestCluster {
        let mut cluster = TestCluster::configured_n(n, tweak);
        let ids: Vec<NodeId> = (1..=n as NodeId).collect();
        for &id in &ids {
            cluster.restart(id);
        }
        cluster.wait_voting_blocking(&ids);
        cluster
    }

    /// `n` nodes configured, none started.
    pub fn configured_n(n: usize, tweak: impl FnOnce(&mut Config)) -> TestCluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let listeners = bound_ports(n);
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut config = Config::local(&addrs);
        config.storage.map_size_mb = 256;
        tweak(&mut config);
        config.validate().expect("a valid test config");
        let client_tls = paxkv::tls::Tls::from_config(&config.tls, paxkv::tls::Role::Client)
            .expect("the client's certificate");
        let operator_tls = paxkv::tls::TlsFiles::of(&config.tls, paxkv::tls::Role::Operator)
            .filter(|files| files.cert.exists())
            .map(|files| {
                paxkv::tls::Tls::load(files, paxkv::tls::Role::Operator)
                    .expect("the operator's certificate")
            });
        TestCluster {
            config: Arc::new(config),
            dir: tempfile::tempdir().unwrap(),
            nodes: (0..n).map(|_| None).collect(),
            listeners: listeners.into_iter().map(Some).collect(),
            extra: Default::default(),
            client_tls,
            operator_tls,
        }
    }

    /// `n` nodes with TLS on (a development CA in `certs`, which must outlive the cluster),
    /// each serving `/metrics` on a port of its own; all started.
    pub fn with_tls(n: usize, certs: &std::path::Path) -> TestCluster {
        TestCluster::with_tls_and(n, certs, |_| {})
    }

    /// [`TestCluster::with_tls`] with the settings `tweak` changes.
    pub fn with_tls_and(
        n: usize,
        certs: &std::path::Path,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCluster {
        let mut cluster = TestCluster::configured_n(n, |config| {
            let ports = free_ports(config.nodes.len());
            for (node, port) in config.nodes.iter_mut().zip(ports) {
                node.metrics_addr = Some(port.to_string());
            }
            tls_dir_for(config, certs);
            tweak(config);
        });
        let ids: Vec<NodeId> = (1..=n as NodeId).collect();
        for &id in &ids {
            cluster.restart(id);
        }
        cluster.wait_voting_blocking(&ids);
        cluster
    }

    /// Node `id`'s `/metrics` endpoint, if it has one.
    pub fn metrics_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.config.metrics_addr_of(id)
    }

    /// The value of the series `name` (with its labels, as printed) in node `id`'s
    /// `/metrics`, `None` if absent.
    pub async fn metric(&self, id: NodeId, name: &str) -> Option<f64> {
        let addr = self.metrics_addr(id).expect("the node serves metrics");
        let text = http_get(addr, "/metrics").await.ok()?.1;
        metric_in(&text, name)
    }

    /// The value of the series `name` in node `id`'s `/metrics`; panics if it is absent.
    pub async fn counted(&self, id: NodeId, name: &str) -> f64 {
        self.metric(id, name)
            .await
            .unwrap_or_else(|| panic!("node {id} has no {name}"))
    }

    /// Blocks until every node in `ids` votes (has recovered from a majority).
    /// (On a thread of its own, so that it may be called from inside a test's runtime.)
    fn wait_voting_blocking(&self, ids: &[NodeId]) {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    self.wait_until_voting(ids).await;
                    self.wait_bootstrapped(ids[0]).await;
                });
            });
        });
    }

    /// Waits until every node in `ids` votes (20 s each at most).
    async fn wait_until_voting(&self, ids: &[NodeId]) {
        for &id in ids {
            let client = self.client_for(id);
            eventually(
                &format!("node {id} votes"),
                Duration::from_secs(20),
                || async { matches!(client.status(0).await, Ok(s) if s.voting) },
            )
            .await;
        }
    }

    fn start_node(&mut self, id: NodeId) -> NodeHandle {
        self.start_node_with(id, self.config.clone())
    }

    /// Starts node `id` (again) with a config of its own (another token, another node list:
    /// an operator's mistake), on its address and data directory.
    pub fn restart_with_config(&mut self, id: NodeId, config: Arc<Config>) {
        assert!(!self.is_running(id), "node {id} is running");
        let node = self.start_node_with(id, config);
        self.nodes[id as usize - 1] = Some(node);
    }

    fn start_node_with(&mut self, id: NodeId, config: Arc<Config>) -> NodeHandle {
        let dir = self.dir.path().join(format!("node-{id}"));
        let listener = self
            .listeners
            .get_mut(id as usize - 1)
            .and_then(Option::take);
        // Every node this cluster ever had (as an operator would pass `--join`): once the
        // config's nodes are all replaced, a wiped node finds the cluster only so.
        let mut join: Vec<SocketAddr> = self.config.addrs();
        join.extend(self.extra.values().copied());
        join.retain(|a| *a != self.addr(id));
        let options = paxkv::node::NodeOptions {
            addr: self.extra.get(&id).copied(),
            join,
            metrics_addr: None,
            http_addr: None,
        };
        NodeHandle::start_with(config, id, &dir, listener, options).expect("node starts")
    }

    /// Starts a new node `id` that the config does not list, on a fresh address and an
    /// empty data directory; it waits for `member add`. Returns its address.
    pub fn start_new_node(&mut self, id: NodeId) -> SocketAddr {
        assert!(self.config.node(id).is_err(), "node {id} is in the config");
        let listener = bound_ports(1).remove(0);
        let addr = listener.local_addr().unwrap();
        self.extra.insert(id, addr);
        while self.nodes.len() < id as usize {
            self.nodes.push(None);
            self.listeners.push(None);
        }
        self.listeners[id as usize - 1] = Some(listener);
        self.restart(id);
        addr
    }

    /// Asks node `via` to drive a membership change to completion.
    pub async fn change(
        &self,
        via: NodeId,
        change: paxkv::messages::MemberChangeRequest,
    ) -> paxkv::Result<paxkv::paxos::membership::Membership> {
        let client = Client::new(
            vec![self.addr(via)],
            ClientOptions {
                op_timeout: Duration::from_secs(120),
                attempt_timeout: Duration::from_secs(4),
                pinned: true,
                tls: self
                    .operator_tls
                    .clone()
                    .or_else(|| self.client_tls.clone()),
                ..ClientOptions::default()
            },
        );
        match client
            .request(0, paxkv::messages::RequestBody::MemberChange(change))
            .await?
        {
            paxkv::messages::Reply::MemberChanged(m) => Ok(m),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Drives a change through any of `via` until it completes (each attempt through the
    /// next node: a rerun resumes it), for at most `deadline`.
    pub async fn change_until_done(
        &self,
        via: &[NodeId],
        change: paxkv::messages::MemberChangeRequest,
        deadline: Duration,
    ) -> paxkv::paxos::membership::Membership {
        let addrs: Vec<SocketAddr> = via.iter().map(|id| self.addr(*id)).collect();
        drive_until_done(addrs, change, deadline).await
    }

    /// The membership node `id` has installed.
    /// What node `id` answers about its membership (none installed included).
    pub async fn members_of(&self, id: NodeId) -> paxkv::messages::MembershipAnswer {
        match self
            .client_for(id)
            .request(0, paxkv::messages::RequestBody::Members)
            .await
            .expect("members")
        {
            paxkv::messages::Reply::Members(info) => info,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    pub async fn membership(&self, id: NodeId) -> paxkv::paxos::membership::Membership {
        match self
            .client_for(id)
            .request(0, paxkv::messages::RequestBody::Members)
            .await
            .expect("members")
        {
            paxkv::messages::Reply::Members(info) => info.membership.expect("installed"),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Closes node `id`'s listener before its first start: until it starts, connecting to
    /// it is refused (as with a process not started yet) rather than left waiting.
    pub fn unbind(&mut self, id: NodeId) {
        self.listeners[id as usize - 1] = None;
    }

    /// Node `id`, if it is running.
    pub fn running(&self, id: NodeId) -> Option<&NodeHandle> {
        self.nodes.get(id as usize - 1)?.as_ref()
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle {
        self.nodes[id as usize - 1]
            .as_ref()
            .expect("node is running")
    }

    /// The state of a new cluster whose founding every node took part in, but of which
    /// `absent` went down before it installed the membership or recorded its store: the
    /// bootstrap membership (stores not recorded) is written into every other node's data
    /// directory, as their founding left it; none is started. (A cluster is founded only once
    /// every configured node answers, `paxos::bootstrap`: this is how a node comes to be
    /// listed with no store recorded.)
    pub fn founded_without(&self, absent: &[NodeId]) {
        let nodes: Vec<(NodeId, String)> = self
            .config
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let m = paxkv::paxos::membership::Membership::bootstrap(nodes, &self.config.cluster.token);
        for n in &self.config.nodes {
            if absent.contains(&n.id) {
                continue;
            }
            let store = paxkv::storage::Store::open(
                &self.data_dir(n.id),
                self.config.storage.map_size_mb << 20,
                n.id,
            )
            .expect("opening the node's store");
            store
                .install_membership(&m)
                .expect("installing the bootstrap membership");
        }
    }

    pub fn client_with(
        &self,
        addrs: Vec<SocketAddr>,
        pinned: bool,
        op_timeout: Duration,
    ) -> Client {
        Client::new(
            addrs,
            ClientOptions {
                op_timeout,
                attempt_timeout: op_timeout.min(Duration::from_secs(4)),
                pinned,
                tls: self.client_tls.clone(),
                ..ClientOptions::default()
            },
        )
    }
}

impl Cluster for TestCluster {
    fn ids(&self) -> Vec<NodeId> {
        (1..=self.nodes.len() as NodeId).collect()
    }

    fn addr(&self, id: NodeId) -> SocketAddr {
        match self.extra.get(&id) {
            Some(addr) => *addr,
            None => self.config.addr_of(id).unwrap(),
        }
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(id as usize - 1).is_some_and(|n| n.is_some())
    }

    /// Stops node `id`'s actix system (its data stays).
    async fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(id as usize - 1).and_then(Option::take) {
            node.stop();
        }
    }

    fn restart(&mut self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is running");
        let node = self.start_node(id);
        self.nodes[id as usize - 1] = Some(node);
    }

    /// A client that may use every node of the config (10 s per operation).
    fn client(&self) -> Client {
        self.client_with(self.config.addrs(), false, Duration::from_secs(10))
    }

    /// A client that only talks to node `id` (10 s per operation).
    fn client_for(&self, id: NodeId) -> Client {
        self.client_with(vec![self.addr(id)], true, Duration::from_secs(10))
    }

    async fn set_faults(&self, id: NodeId, plan: FaultPlan) {
        if self.is_running(id) {
            self.node(id).set_faults(plan);
        }
    }

    /// 20 s for each node.
    async fn wait_voting(&mut self, ids: &[NodeId]) {
        self.wait_until_voting(ids).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.stop();
        }
    }
}

/// Waits (30 s at most) until node `id` has counted `limit` at least once in
/// `paxkv_limited_total`.
pub async fn until_limited(cluster: &TestCluster, id: NodeId, limit: &str, what: &str) {
    let series = format!("paxkv_limited_total{{limit=\"{limit}\"}}");
    eventually(what, Duration::from_secs(30), || async {
        cluster.metric(id, &series).await.is_some_and(|n| n >= 1.0)
    })
    .await;
}

/// A client of node 1 (TLS, certificates in `certs`) that sends a thousand requests
/// (`body(id)`) and never reads an answer. Waits until the connection's byte budget is spent
/// (the node counts `connection_bytes`) or this process grew by `bound` bytes, then samples
/// resident memory for two seconds more (answers already computed are still landing). Returns
/// the peak growth over resident memory before the requests, and the task still writing them.
pub async fn growth_of_a_connection_that_never_reads(
    cluster: &TestCluster,
    certs: &std::path::Path,
    body: impl Fn(u64) -> paxkv::messages::RequestBody,
    bound: u64,
) -> (u64, tokio::task::JoinHandle<()>) {
    use paxkv::messages::{ClientRequest, Frame};
    use tokio::io::AsyncWriteExt;
    let before = crate::kit::resident_bytes();
    let ca = certs.join("ca.pem");
    let client = crate::net::tls_identity(certs, &ca, "client", paxkv::tls::Role::Client);
    let mut stream = crate::net::tls_dial(cluster.addr(1), Some(&client))
        .await
        .unwrap();
    let mut requests = Vec::new();
    for id in 0..1_000u64 {
        let request = Frame::Request(ClientRequest { id, body: body(id) });
        requests.extend_from_slice(&paxkv::frame::encode(&request));
    }
    // Written from a task: once the node stops reading, this write blocks. The task keeps
    // the connection open (never reading) until it is aborted.
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&requests).await;
        std::future::pending::<()>().await;
        drop(stream);
    });
    let peak = std::sync::atomic::AtomicU64::new(0);
    let grown = || {
        let now = crate::kit::resident_bytes().saturating_sub(before);
        peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed)
            .max(now)
    };
    eventually(
        "the connection's budget is spent (or memory is over the bound)",
        Duration::from_secs(60),
        || {
            let over = grown() >= bound;
            async move {
                over || cluster
                    .metric(1, "paxkv_limited_total{limit=\"connection_bytes\"}")
                    .await
                    .is_some_and(|n| n > 0.0)
            }
        },
    )
    .await;
    // A sampling window for the peak, not a wait for a condition.
    for _ in 0..20 {
        grown();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (peak.into_inner(), writer)
}
