//! Test support shared by the integration tests: an in-process cluster (each node its own
//! actix system on its own thread, ephemeral ports, temporary data directories), a history
//! recorder for the linearizability checker, and polling with a deadline.

#![allow(dead_code)]

pub mod convert;
pub mod linearizability;
pub mod processes;
pub mod workload;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linearizability::{Input, Operation, Output};

use paxkv::client::{Client, ClientOptions};
use paxkv::config::Config;
use paxkv::messages::NodeStatus;
use paxkv::node::NodeHandle;
use paxkv::paxos::types::{Command, NodeId, Outcome};
use tempfile::TempDir;

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
pub fn tls_dir_for(config: &mut Config, dir: &std::path::Path) {
    let nodes: Vec<(NodeId, SocketAddr)> =
        config.node_ids().into_iter().zip(config.addrs()).collect();
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
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
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

    /// Blocks until every node in `ids` votes (has recovered from a majority).
    /// (On a thread of its own, so that it may be called from inside a test's runtime.)
    pub fn wait_voting_blocking(&self, ids: &[NodeId]) {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    self.wait_voting(ids).await;
                    self.wait_bootstrapped(ids[0]).await;
                });
            });
        });
    }

    /// Waits until every node in `ids` votes.
    pub async fn wait_voting(&self, ids: &[NodeId]) {
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
        };
        NodeHandle::start_with(config, id, &dir, listener, options).expect("node starts")
    }

    /// Starts a new node `id` that the config does not list, on a fresh address and an
    /// empty data directory; it waits for `member add`. Returns its address.
    pub fn start_new_node(&mut self, id: NodeId) -> SocketAddr {
        assert!(self.config.node(id).is_err(), "node {id} is in the config");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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

    /// Removes node `id`'s data directory (the node must be stopped).
    pub fn wipe(&self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is running");
        lose_disk(&self.node_dir(id), None);
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

    /// A task that drives `change` through the nodes at `via` until it completes (see
    /// [`drive_until_done`]).
    pub fn spawn_change(
        &self,
        via: &[NodeId],
        change: paxkv::messages::MemberChangeRequest,
        deadline: Duration,
    ) -> tokio::task::JoinHandle<paxkv::paxos::membership::Membership> {
        let addrs: Vec<SocketAddr> = via.iter().map(|id| self.addr(*id)).collect();
        tokio::spawn(drive_until_done(addrs, change, deadline))
    }

    /// Waits until node `id` reports that its store is refused (wiped, replaced, or an older
    /// copy) and that it does not vote.
    pub async fn wait_store_refused(&self, id: NodeId) {
        let probe = self.client_for(id);
        eventually(
            &format!("node {id} refuses its store"),
            Duration::from_secs(20),
            || async { matches!(probe.status(0).await, Ok(s) if s.store_refused && !s.voting) },
        )
        .await;
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

    pub fn node_dir(&self, id: NodeId) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn addr(&self, id: NodeId) -> SocketAddr {
        match self.extra.get(&id) {
            Some(addr) => *addr,
            None => self.config.addr_of(id).unwrap(),
        }
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle {
        self.nodes[id as usize - 1]
            .as_ref()
            .expect("node is running")
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(id as usize - 1).is_some_and(|n| n.is_some())
    }

    /// Stops node `id` (its data stays).
    pub fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(id as usize - 1).and_then(Option::take) {
            node.stop();
        }
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
                &self.node_dir(n.id),
                self.config.storage.map_size_mb << 20,
                n.id,
            )
            .expect("opening the node's store");
            store
                .install_membership(&m)
                .expect("installing the bootstrap membership");
        }
    }

    /// Starts node `id` (again) on its address and data directory.
    pub fn restart(&mut self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is running");
        let node = self.start_node(id);
        self.nodes[id as usize - 1] = Some(node);
    }

    /// A client that may use every node.
    pub fn client(&self) -> Client {
        self.client_with(self.config.addrs(), false, Duration::from_secs(10))
    }

    /// A client that only talks to node `id`.
    pub fn client_for(&self, id: NodeId) -> Client {
        self.client_with(vec![self.addr(id)], true, Duration::from_secs(10))
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

    pub async fn status(&self, id: NodeId) -> NodeStatus {
        self.client_for(id).status(0).await.expect("status")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.stop();
        }
    }
}

/// Drives a membership change through the nodes at `addrs`, one after the other, until one
/// answers that it is complete (a rerun resumes a change a stopped driver left); panics if
/// that takes longer than `deadline` or the change is refused as bad input.
pub async fn drive_until_done(
    addrs: Vec<SocketAddr>,
    change: paxkv::messages::MemberChangeRequest,
    deadline: Duration,
) -> paxkv::paxos::membership::Membership {
    let until = Instant::now() + deadline;
    let mut attempt = 0;
    loop {
        let addr = addrs[attempt % addrs.len()];
        attempt += 1;
        let client = Client::new(
            vec![addr],
            ClientOptions {
                op_timeout: Duration::from_secs(60),
                attempt_timeout: Duration::from_secs(60),
                pinned: true,
                ..ClientOptions::default()
            },
        );
        let answer = client
            .request(
                0,
                paxkv::messages::RequestBody::MemberChange(change.clone()),
            )
            .await;
        match answer {
            Ok(paxkv::messages::Reply::MemberChanged(m)) => return m,
            Ok(other) => panic!("unexpected answer {other:?}"),
            // (a fenced change whose membership moved on is asked again, as an operator
            // would after `member list`)
            Err(e)
                if Instant::now() < until
                    && (!e.is_bad_input() || e.message().contains("membership changed since")) =>
            {
                log::info!("change {change:?} through {addr}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("change {change:?} did not complete: {e}"),
        }
    }
}

/// A fault plan that drops every Paxos message a node sends (its acceptors' votes and its
/// proposers' requests never arrive; its other calls, membership and `Hello`s, still do).
pub fn outgoing_paxos_cut() -> paxkv::messages::FaultPlan {
    paxkv::messages::FaultPlan {
        default: paxkv::messages::LinkFaults {
            cut: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every client operation with its invocation and completion times, for the
/// linearizability checker.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Runs `command` on `key` through `client`, recording it.
    pub async fn run(
        &self,
        client_id: u64,
        client: &Client,
        key: &[u8],
        command: Command,
    ) -> paxkv::Result<Outcome> {
        let input = convert::input_of(&command);
        let call = self.now();
        let result = client.execute(key, command).await;
        let (ret, output) = match &result {
            Ok(outcome) => (Some(self.now()), Some(convert::output_of(outcome.clone()))),
            // Recorded exactly: these certainly did not take effect, so the operation is left
            // out of the history (if it did take effect after all, its value shows up in a read
            // that no recorded write explains, and the check fails).
            Err(e) if !e.may_have_applied() => {
                return result;
            }
            // May have taken effect, at any time after it was invoked, or never.
            Err(_) => (None, None),
        };
        self.ops.lock().unwrap().push(Operation {
            client: client_id,
            key: key.to_vec(),
            input,
            call,
            ret,
            output,
        });
        result
    }

    pub fn operations(&self) -> Vec<Operation> {
        self.ops.lock().unwrap().clone()
    }

    /// Checks the history; on failure writes it to a file and panics with the explanation.
    pub fn assert_linearizable(&self, name: &str) {
        let ops = self.operations();
        let result = linearizability::check_operations(&ops, Duration::from_secs(60));
        if !matches!(result, linearizability::CheckResult::Ok) {
            let path = std::env::temp_dir().join(format!("paxkv-{name}.history.txt"));
            let _ = linearizability::write_history(&path, &ops);
            panic!(
                "history is not linearizable (written to {}):\n{}",
                path.display(),
                linearizability::describe(&ops, &result)
            );
        }
    }
}

/// Copies the files of a (node's data) directory; `to` is created.
/// A free 127.0.0.1 port (bound, read, released).
/// `n` distinct free loopback ports, bound together (one bound and released at a time can come
/// back twice: "address used twice", seen in CI).
pub fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` over HTTP/1.1 (one request, `Connection: close`): the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of series `name` (labels included, as the text format prints them) in a
/// Prometheus text page.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Replaces a stopped node's data directory with `copy` (a rollback), or removes it (a wipe)
/// when there is no copy.
pub fn lose_disk(dir: &std::path::Path, copy: Option<&std::path::Path>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    if let Some(copy) = copy {
        copy_dir(copy, dir);
    }
}

/// Puts keys `{prefix}-{i}` once each, with unique values, until `stop`; every put is in
/// `history`. Returns the keys it wrote, to read back at the end.
pub async fn write_once_keys(
    client_id: u64,
    client: Client,
    history: History,
    prefix: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("{prefix}-{}", keys.len()).into_bytes();
        let value = format!("{prefix}-value-{}", keys.len()).into_bytes();
        let _ = history
            .run(client_id, &client, &key, Command::Put { value })
            .await;
        keys.push(key);
    }
    keys
}

/// A random command of the concurrent workloads: 40 % get, 30 % put, 10 % delete, 20 % cas
/// expecting a version below `max_expect`; writes carry `value`.
pub fn random_command(rng: &mut impl rand::Rng, value: Vec<u8>, max_expect: u64) -> Command {
    match rng.random_range(0..10) {
        0..=3 => Command::Get,
        4..=6 => Command::Put { value },
        7 => Command::Delete,
        _ => Command::Cas {
            expect: rng.random_range(0..max_expect.max(1)),
            value,
        },
    }
}

/// The TLS identity of `stem` (`node-3`, `client`, `operator`) in `dir`, trusting `ca`.
pub fn tls_identity(
    dir: &std::path::Path,
    ca: &std::path::Path,
    stem: &str,
    role: paxkv::tls::Role,
) -> Arc<paxkv::tls::Tls> {
    paxkv::tls::Tls::load(
        paxkv::tls::TlsFiles {
            ca: ca.to_path_buf(),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        },
        role,
    )
    .unwrap()
}

/// A connection to `addr`, TLS with `identity` if given (checking the address's IP).
pub async fn tls_dial(
    addr: SocketAddr,
    identity: Option<&paxkv::tls::Tls>,
) -> std::io::Result<paxkv::tls::BoxStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    paxkv::tls::dial(identity, tcp, paxkv::tls::Dial::Address(addr.ip())).await
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
