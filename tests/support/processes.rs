//! A five-node cluster of real `paxkv node` processes, for process-level fault injection:
//! SIGKILL, SIGSTOP/SIGCONT, restarts on the same data directory, and network faults (cut
//! links, drops, duplicates, delays) set over the wire with `SetFaults`.
//!
//! - Ports: five free 127.0.0.1 ports (bound to port 0, read, released); if a node cannot
//!   bind its port at startup the whole cluster is started again on new ports.
//! - Each node's stderr goes to `node-N.log` in the cluster's temporary directory; on a panic
//!   the guard prints the tail of every log and keeps the directory.
//! - Every wait polls with a deadline; nothing sleeps for a fixed time to wait for a condition.
//! - The guard (`Drop`) sends SIGCONT and then SIGKILL to every child, and reaps it. Each
//!   child also gets PR_SET_PDEATHSIG=SIGKILL, so none outlives a test process that dies.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::client::{Client, ClientOptions};
use paxkv::messages::FaultPlan;
use paxkv::paxos::types::NodeId;
use tempfile::TempDir;

use crate::kit::{free_port, free_ports, nodes_toml_with, Cluster};

pub const NODE_COUNT: NodeId = 5;
/// How long every running node may take to vote (recover from a majority).
const VOTING_DEADLINE: Duration = Duration::from_secs(60);
/// How long freshly started nodes may take to answer a ping.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node may take to accept a fault plan.
const CONTROL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a SIGKILLed process may take to be reaped.
const REAP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a fresh cluster may take to have every node voting (well under a second when
/// paxkv's bootstrap works; see [`ProcessCluster::start`]).
const FIRST_START_DEADLINE: Duration = Duration::from_secs(20);
const STARTUP_ATTEMPTS: usize = 5;
/// Respawns of a node that could not bind its port on a restart (someone took it meanwhile).
const BIND_RETRIES: u32 = 20;
const POLL: Duration = Duration::from_millis(20);
/// Written to a node's log before each start of its process.
const START_MARKER: &str = "=== test harness: start";
/// Lines of each node's log printed when a test panics.
const LOG_TAIL_LINES: usize = 40;

struct Node {
    id: NodeId,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    spawns: u32,
    /// Whether the node voted when last asked (`None`: it did not answer).
    last_status: Option<bool>,
    /// A node the config does not list ([`ProcessCluster::add_node`]): started with `--addr`
    /// and `--join` of these addresses.
    join: Option<Vec<SocketAddr>>,
    /// Removed from the membership and stopped for good ([`ProcessCluster::retire`]).
    retired: bool,
}

/// How a [`ProcessCluster`] is laid out beyond the defaults (five nodes on free loopback
/// ports, plaintext, each process started directly).
#[derive(Default, Clone)]
pub struct ProcessOptions {
    /// The nodes' addresses (default: free 127.0.0.1 ports).
    pub addrs: Option<Vec<SocketAddr>>,
    /// TLS on: `paxkv::certs` writes a CA and certificates into the cluster's directory, the
    /// config says `[tls] dir`, and the harness's clients use the client certificate.
    pub tls: bool,
    /// Node `id`'s process is started as `prefix(id) ++ ["paxkv", "node", ...]` (for
    /// example `ip netns exec NS`).
    pub prefix: Option<Arc<dyn Fn(NodeId) -> Vec<String> + Send + Sync>>,
    /// A `metrics_addr` for each node (same order as the addresses).
    pub metrics: Option<Vec<SocketAddr>>,
    /// Each node serves the HTTP API, on a free port of its own ([`ProcessCluster::http_addrs`]).
    pub http: bool,
}

pub struct ProcessCluster {
    dir: TempDir,
    config_path: PathBuf,
    nodes: Vec<Node>,
    started: Instant,
    startup_attempts: usize,
    options: ProcessOptions,
    tls: Option<Arc<paxkv::tls::Tls>>,
    /// Each node's HTTP API, in the order of the nodes (empty without one).
    http: Vec<SocketAddr>,
}

impl ProcessCluster {
    /// Starts five nodes and waits until every one of them votes.
    ///
    /// If a node cannot bind its port (someone took it after it was picked), a fresh cluster
    /// is started on new ports. If the nodes do not all vote within [`FIRST_START_DEADLINE`],
    /// the test fails: that is paxkv's first-start bootstrap deadlocking (see
    /// `membership::start::run` in `src/actors/membership.rs`).
    pub async fn start() -> ProcessCluster {
        ProcessCluster::start_with(ProcessOptions::default()).await
    }

    /// [`ProcessCluster::start`] laid out as `options` say.
    pub async fn start_with(options: ProcessOptions) -> ProcessCluster {
        let mut failures = Vec::new();
        for attempt in 1..=STARTUP_ATTEMPTS {
            let addrs = options
                .addrs
                .clone()
                .unwrap_or_else(|| free_ports(NODE_COUNT as usize));
            let mut cluster = ProcessCluster::spawn_on(addrs, options.clone());
            cluster.startup_attempts = attempt;
            match cluster.wait_listening().await {
                Ok(()) => {
                    let ids = cluster.ids();
                    if let Err(e) = cluster.try_wait_voting(&ids, FIRST_START_DEADLINE).await {
                        panic!(
                            "a fresh cluster did not start (paxkv's first-start bootstrap \
                             deadlocked?): {e}"
                        );
                    }
                    return cluster;
                }
                Err(e) if (1..=NODE_COUNT).any(|id| cluster.could_not_listen(id)) => {
                    eprintln!(
                        "process cluster: startup attempt {attempt} failed; starting a fresh \
                         cluster on new ports: {e}"
                    );
                    failures.push(e);
                    // dropping the cluster kills its nodes and removes its directory
                }
                Err(e) => panic!("process cluster: startup attempt {attempt} failed: {e}"),
            }
        }
        panic!("process cluster: could not start in {STARTUP_ATTEMPTS} attempts: {failures:#?}");
    }

    /// How many fresh clusters [`ProcessCluster::start`] had to start (1 if the first did).
    pub fn startup_attempts(&self) -> usize {
        self.startup_attempts
    }

    /// Which nodes vote now, and the last line of each non-voting node's log.
    fn voting_summary(&self) -> String {
        let mut summary = String::new();
        for node in &self.nodes {
            let state = match &node.last_status {
                Some(true) => "voting".to_string(),
                Some(false) => format!(
                    "NOT voting; last log line: {}",
                    self.log_tail(node.id).lines().last().unwrap_or("")
                ),
                None => "did not answer".to_string(),
            };
            summary.push_str(&format!("  node {}: {state}\n", node.id));
        }
        summary
    }

    fn spawn_on(addrs: Vec<SocketAddr>, options: ProcessOptions) -> ProcessCluster {
        let dir = tempfile::Builder::new()
            .prefix("paxkv-processes-")
            .tempdir()
            .expect("a temporary directory");
        let config_path = dir.path().join("cluster.toml");
        let nodes: Vec<(NodeId, SocketAddr)> = (1..).zip(addrs.iter().copied()).collect();
        let http = options.http.then(|| free_ports(addrs.len()));
        let mut text = nodes_toml_with(&nodes, options.metrics.as_deref(), http.as_deref());
        text.push_str(
            "\n[paxos]\nrequest_timeout_ms = 1000\nsync_interval_ms = 1000\n\
             \n[storage]\nmap_size_mb = 256\n\
             \n[testing]\nallow_fault_injection = true\n",
        );
        let tls = options.tls.then(|| {
            let certs = dir.path().join("certs");
            let nodes: Vec<(NodeId, SocketAddr)> = (1..=NODE_COUNT).zip(addrs.clone()).collect();
            paxkv::certs::write(&nodes, &certs, true).expect("write the certificates");
            text.push_str(&format!(
                "\n[tls]\ndir = {:?}\n",
                certs.display().to_string()
            ));
            let files = paxkv::tls::TlsFiles {
                ca: certs.join("ca.pem"),
                cert: certs.join("client.pem"),
                key: certs.join("client-key.pem"),
            };
            paxkv::tls::Tls::load(files, paxkv::tls::Role::Client).expect("the client's TLS")
        });
        if http.is_some() {
            // The API answers (503 or 504) before an HTTP client with a longer timeout
            // gives up, so that its answers reach the client.
            text.push_str("\n[limits]\nhttp_request_timeout_ms = 1000\n");
        }
        std::fs::write(&config_path, text).expect("write the test config");
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = i as NodeId + 1;
                Node {
                    id,
                    addr: *addr,
                    dir: dir.path().join(format!("node-{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    spawns: 0,
                    last_status: None,
                    join: None,
                    retired: false,
                }
            })
            .collect();
        let mut cluster = ProcessCluster {
            dir,
            config_path,
            nodes,
            started: Instant::now(),
            startup_attempts: 1,
            options,
            tls,
            http: http.unwrap_or_default(),
        };
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        cluster
    }

    /// Waits until every node answers a ping; `Err` if one exited (e.g. its port was taken).
    async fn wait_listening(&mut self) -> Result<(), String> {
        let until = Instant::now() + LISTEN_DEADLINE;
        for id in self.ids() {
            let client = self.control(id);
            loop {
                if let Some(status) = self.exited(id) {
                    return Err(format!(
                        "node {id} exited at startup ({status}):\n{}",
                        self.log_tail(id)
                    ));
                }
                if client.ping(0).await.is_ok() {
                    break;
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "node {id} did not answer within {LISTEN_DEADLINE:?}:\n{}",
                        self.log_tail(id)
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Starts a node the config does not list, on a fresh loopback port and an empty
    /// directory, as an operator does before `member add`: `paxkv node --id ID --addr ADDR
    /// --join <the running nodes>`. It waits (not voting) until it is added.
    pub fn add_node(&mut self) -> NodeId {
        let id = self.nodes.len() as NodeId + 1;
        let addr = free_port();
        let join = self.ids().into_iter().map(|n| self.addr(n)).collect();
        self.nodes.push(Node {
            id,
            addr,
            dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
            paused: false,
            spawns: 0,
            last_status: None,
            join: Some(join),
            retired: false,
        });
        self.spawn(id);
        id
    }

    /// Node `id` was removed from the membership: its process is stopped for good, and it
    /// leaves [`ProcessCluster::ids`].
    pub async fn retire(&mut self, id: NodeId) {
        if self.is_paused(id) {
            self.resume(id);
        }
        if self.is_running(id) {
            self.stop(id).await;
        }
        self.node_mut(id).retired = true;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The HTTP API of each node the cluster started with ([`ProcessOptions::http`]; empty
    /// without it).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http.clone()
    }

    fn is_paused(&self, id: NodeId) -> bool {
        self.node(id).paused
    }

    /// Alive and not paused: the node can answer.
    fn is_up(&self, id: NodeId) -> bool {
        self.is_running(id) && !self.is_paused(id)
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn spawn(&mut self, id: NodeId) {
        let elapsed = self.started.elapsed();
        let config_path = self.config_path.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.spawns += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the node's log");
        let _ = writeln!(
            log,
            "{START_MARKER} #{} of node {id} at {:.3}s ===",
            node.spawns,
            elapsed.as_secs_f64()
        );
        let prefix = self
            .options
            .prefix
            .as_ref()
            .map(|p| p(id))
            .unwrap_or_default();
        let node = self.node_mut(id);
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(paxkv_bin());
                command
            }
            None => Command::new(paxkv_bin()),
        };
        command
            .arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&node.dir);
        if let Some(join) = &node.join {
            let join: Vec<String> = join.iter().map(|a| a.to_string()).collect();
            command
                .arg("--addr")
                .arg(node.addr.to_string())
                .arg("--join")
                .arg(join.join(","));
        }
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl(2) only, in the forked child before exec: the node is killed if the
        // thread that started it (the test's) goes away, so no node outlives a dead test.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        node.child = Some(command.spawn().expect("spawn a paxkv node"));
        node.paused = false;
    }

    /// If node `id`'s process has exited on its own, reaps it and says how it ended.
    fn exited(&mut self, id: NodeId) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().expect("try_wait")?;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    fn signal(&self, id: NodeId, signal: libc::c_int) {
        let child = self.node(id).child.as_ref().expect("node is alive");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its `Child`).
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
    }

    /// SIGKILL every node in `ids`, back to back, then reap them.
    pub async fn kill_many(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.signal(id, libc::SIGKILL);
        }
        let until = Instant::now() + REAP_DEADLINE;
        for &id in ids {
            let node = self.node_mut(id);
            let mut child = node.child.take().expect("node is alive");
            node.paused = false;
            loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "node {id} was not reaped within {REAP_DEADLINE:?} of SIGKILL"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// SIGKILL all five nodes as close together as possible.
    pub async fn kill_all(&mut self) {
        let ids: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&id| self.is_running(id))
            .collect();
        self.kill_many(&ids).await;
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing answers.
    pub fn pause(&mut self, id: NodeId) {
        self.signal(id, libc::SIGSTOP);
        self.node_mut(id).paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).paused = false;
    }

    /// SIGHUP: the node reads its TLS files again.
    pub fn hang_up(&self, id: NodeId) {
        self.signal(id, libc::SIGHUP);
    }

    /// The harness clients' TLS identity (TLS on): reload it after changing the files.
    pub fn client_tls(&self) -> Option<Arc<paxkv::tls::Tls>> {
        self.tls.clone()
    }

    /// The directory `paxkv::certs` wrote (TLS on).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Starts every node that is down.
    pub fn restart_all_down(&mut self) {
        for id in self.ids() {
            if !self.is_running(id) {
                self.spawn(id);
            }
        }
    }

    /// Resumes paused nodes, restarts dead ones, clears every fault plan, and waits until
    /// every node votes.
    pub async fn heal_all(&mut self) {
        for id in self.ids() {
            if self.is_paused(id) {
                self.resume(id);
            }
        }
        self.restart_all_down();
        self.heal().await;
        self.wait_all_voting().await;
    }

    /// A client of node `id` alone, for control requests (status, faults).
    fn control(&self, id: NodeId) -> Client {
        Client::new(
            vec![self.addr(id)],
            ClientOptions {
                op_timeout: Duration::from_secs(2),
                attempt_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_millis(500),
                pinned: true,
                tls: self.tls.clone(),
                nodes: Vec::new(),
                cluster: 0,
            },
        )
    }

    /// A client that may use every node, with the given deadlines, and its addresses listed
    /// from node `first` on. The client sends a key to the node at the index the key hashes
    /// to in its list (while that node is healthy): clients whose lists start at different
    /// nodes coordinate the same key on different nodes, so their proposers compete.
    pub fn client_with(
        &self,
        first: NodeId,
        op_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Client {
        let mut addrs = self.addrs();
        addrs.rotate_left(first as usize - 1);
        Client::new(
            addrs,
            ClientOptions {
                op_timeout,
                attempt_timeout,
                connect_timeout: Duration::from_millis(500),
                pinned: false,
                tls: self.tls.clone(),
                nodes: Vec::new(),
                cluster: 0,
            },
        )
    }

    /// Waits until every running, unpaused node votes. A node whose restart found its port
    /// taken is started again; a node that died otherwise fails the test.
    pub async fn wait_all_voting(&mut self) {
        let ids: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&id| self.is_up(id))
            .collect();
        self.wait_voting(&ids).await;
    }

    async fn try_wait_voting(&mut self, ids: &[NodeId], deadline: Duration) -> Result<(), String> {
        let until = Instant::now() + deadline;
        let mut waiting_for = None;
        for &id in ids {
            let mut client = self.control(id);
            let mut bind_retries = 0;
            loop {
                if let Some(status) = self.exited(id) {
                    let tail = self.log_tail(id);
                    if self.could_not_listen(id) && bind_retries < BIND_RETRIES {
                        bind_retries += 1;
                        eprintln!("process cluster: node {id} could not bind its port; again");
                        self.spawn(id);
                        client = self.control(id);
                        continue;
                    }
                    return Err(format!(
                        "node {id} exited ({status}) while waiting for it to vote:\n{tail}"
                    ));
                }
                let voting = client.status(0).await.ok().map(|status| status.voting);
                self.node_mut(id).last_status = voting;
                if voting == Some(true) {
                    break;
                }
                if Instant::now() >= until {
                    waiting_for = Some(id);
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            if waiting_for.is_some() {
                break;
            }
        }
        let Some(id) = waiting_for else {
            return Ok(());
        };
        // Record every other node's state too, for the message.
        for other in self.ids() {
            if other != id && self.is_up(other) {
                let voting = self.try_status(other).await.ok().map(|s| s.voting);
                self.node_mut(other).last_status = voting;
            }
        }
        Err(format!(
            "node {id} did not vote within {deadline:?}:\n{}\nlog of node {id}:\n{}",
            self.voting_summary(),
            self.log_tail(id)
        ))
    }

    /// Did node `id`'s latest process refuse to start because its port was taken?
    fn could_not_listen(&self, id: NodeId) -> bool {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let latest = text.rsplit(START_MARKER).next().unwrap_or("");
        latest.contains("cannot listen")
    }

    /// The last lines of node `id`'s log.
    pub fn log_tail(&self, id: NodeId) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let pid = child.id() as libc::pid_t;
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            // Keep the logs, the data directories and the config for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!(
                "process cluster: logs and data kept in {}",
                self.dir.path().display()
            );
            for node in &self.nodes {
                eprintln!(
                    "----- node {} log (last {LOG_TAIL_LINES} lines; {}) -----\n{}",
                    node.id,
                    node.log.display(),
                    self.log_tail(node.id)
                );
            }
        }
    }
}

impl Cluster for ProcessCluster {
    /// The config's five and the nodes added since, without the retired ones.
    fn ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect()
    }

    fn addr(&self, id: NodeId) -> SocketAddr {
        self.node(id).addr
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.node(id).dir.clone()
    }

    /// The process is alive (it may be paused).
    fn is_running(&self, id: NodeId) -> bool {
        self.node(id).child.is_some()
    }

    /// SIGKILL, and the process reaped.
    async fn stop(&mut self, id: NodeId) {
        if self.is_running(id) {
            self.kill_many(&[id]).await;
        }
    }

    fn restart(&mut self, id: NodeId) {
        self.spawn(id);
    }

    /// 8 s per operation, 2 s per attempt on one node.
    fn client(&self) -> Client {
        self.client_with(1, Duration::from_secs(8), Duration::from_secs(2))
    }

    /// 8 s per operation, 2 s per attempt.
    fn client_for(&self, id: NodeId) -> Client {
        Client::new(
            vec![self.addr(id)],
            ClientOptions {
                op_timeout: Duration::from_secs(8),
                attempt_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
                pinned: true,
                tls: self.tls.clone(),
                nodes: Vec::new(),
                cluster: 0,
            },
        )
    }

    /// Over the wire (`SetFaults`), asked again until the node takes it.
    async fn set_faults(&self, id: NodeId, plan: FaultPlan) {
        if !self.is_up(id) {
            return;
        }
        let client = self.control(id);
        let until = Instant::now() + CONTROL_DEADLINE;
        loop {
            match client.set_faults(0, plan.clone()).await {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < until,
                    "node {id} did not take its fault plan within {CONTROL_DEADLINE:?}: {e}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A node whose restart found its port taken is started again; a node that died
    /// otherwise fails the test. 60 s in all.
    async fn wait_voting(&mut self, ids: &[NodeId]) {
        if let Err(e) = self.try_wait_voting(ids, VOTING_DEADLINE).await {
            panic!("{e}");
        }
    }

    /// Asked through the harness's control client (2 s).
    async fn try_status(&self, id: NodeId) -> paxkv::Result<paxkv::messages::NodeStatus> {
        self.control(id).status(0).await
    }
}

/// The `paxkv` binary cargo built beside the running test (`target/<profile>/paxkv`; a test
/// binary is `target/<profile>/deps/<name>-<hash>`). Cargo builds a package's binaries
/// before its integration tests run, so it is there; its path reaches the test's own crate
/// only (`CARGO_BIN_EXE_paxkv`), not this library, hence the lookup.
fn paxkv_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary in target/<profile>/deps");
    let bin = profile_dir.join("paxkv");
    assert!(
        bin.exists(),
        "no paxkv binary at {} (run the tests through cargo)",
        bin.display()
    );
    bin
}
