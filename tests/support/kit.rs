//! The one cluster abstraction of the integration tests, and the verbs and helpers every kind
//! of test shares.
//!
//! [`Cluster`] is what a test does to a cluster, whatever runs its nodes: the in-process
//! [`crate::TestCluster`] (each node an actix system on a thread of the test process) and
//! [`crate::processes::ProcessCluster`] (each node a `paxkv node` process) implement it. The
//! verbs are the same for both: stop a node (its actix system stops; a process gets SIGKILL),
//! restart it on its data directory, wipe that directory or roll it back to a copy, cut links
//! (a partition, a bridge, a one-way cut), heal, talk to it (`client`, `client_for`,
//! `status`), and wait until nodes vote. Scenario helpers written against the trait (as
//! [`wait_store_refused`](Cluster::wait_store_refused)) serve both kinds of test.
//!
//! The trait's methods are `async` where one implementation waits (a process is reaped after
//! SIGKILL; a fault plan goes over the wire): the in-process cluster's are immediate.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paxkv::client::{Client, ClientOptions};
use paxkv::messages::{FaultPlan, LinkFaults, NodeStatus};
use paxkv::paxos::types::{NodeId, Outcome};
use rand::seq::SliceRandom;
use rand::Rng;

/// What a test does to a cluster of paxkv nodes, in process or as processes.
// (The tests await these in place and never move one of these futures to another thread, so
// the futures carry no `Send` bound: the lint's concern does not arise.)
#[allow(async_fn_in_trait)]
pub trait Cluster {
    /// Every node of the cluster, running or not: the config's and those added since
    /// (without those a process cluster retired for good).
    fn ids(&self) -> Vec<NodeId>;

    /// Node `id`'s address for peers and clients.
    fn addr(&self, id: NodeId) -> SocketAddr;

    /// Node `id`'s data directory.
    fn data_dir(&self, id: NodeId) -> PathBuf;

    /// Whether node `id` runs (a paused process runs).
    fn is_running(&self, id: NodeId) -> bool;

    /// Stops node `id` at once, its data left as it is: an in-process node's actix system
    /// stops, a process gets SIGKILL (and is reaped). A node that is down stays down.
    async fn stop(&mut self, id: NodeId);

    /// Starts node `id` again on its address and data directory (it must be down).
    fn restart(&mut self, id: NodeId);

    /// A client that may use every node.
    fn client(&self) -> Client;

    /// A client that sends every request to node `id` only.
    fn client_for(&self, id: NodeId) -> Client;

    /// Replaces node `id`'s fault plan for the messages it sends (a node that is down or
    /// paused is left alone: it starts without faults).
    async fn set_faults(&self, id: NodeId, plan: FaultPlan);

    /// Waits until every node in `ids` votes; panics after the cluster's deadline.
    async fn wait_voting(&mut self, ids: &[NodeId]);

    /// What node `id` says of itself; `Err` if it does not answer.
    async fn try_status(&self, id: NodeId) -> paxkv::Result<NodeStatus> {
        self.client_for(id).status(0).await
    }

    /// What node `id` says of itself (it must answer).
    async fn status(&self, id: NodeId) -> NodeStatus {
        self.try_status(id)
            .await
            .unwrap_or_else(|e| panic!("node {id} answers its status: {e}"))
    }

    /// Removes node `id`'s data directory (the node must be down): a lost disk.
    fn wipe(&self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is running");
        lose_disk(&self.data_dir(id), None);
    }

    /// Puts a copy of node `id`'s data directory at `copy` (replacing what was there), for a
    /// later [`roll_back`](Cluster::roll_back). The node should be down.
    fn copy_disk(&self, id: NodeId, copy: &Path) {
        lose_disk(copy, Some(&self.data_dir(id)));
    }

    /// Replaces node `id`'s data directory by `copy` (the node must be down): an older copy
    /// of its disk, put back in place.
    fn roll_back(&self, id: NodeId, copy: &Path) {
        assert!(!self.is_running(id), "node {id} is running");
        lose_disk(&self.data_dir(id), Some(copy));
    }

    /// Cuts each `(from, to)` link, one way: `from` drops every Paxos message it sends to
    /// `to`. Only the nodes named as `from` get a plan, their whole plan (earlier faults of
    /// theirs are replaced).
    async fn cut_links(&self, cuts: &[(NodeId, NodeId)]) {
        let mut plans: std::collections::BTreeMap<NodeId, FaultPlan> = Default::default();
        for &(from, to) in cuts {
            assert_ne!(from, to, "a node cannot be cut from itself");
            plans.entry(from).or_default().links.insert(to, cut());
        }
        for (id, plan) in plans {
            self.set_faults(id, plan).await;
        }
    }

    /// Each node of a group is cut, both ways, from every node outside its group (nodes in
    /// no group are cut from every group, one way: they get no plan).
    async fn partition(&self, groups: &[&[NodeId]]) {
        let mut cuts = Vec::new();
        for group in groups {
            for &from in *group {
                for to in self.ids() {
                    if !group.contains(&to) {
                        cuts.push((from, to));
                    }
                }
            }
        }
        self.cut_links(&cuts).await;
    }

    /// Cuts every link between `a` and `b`, both ways; every other link stays (a bridge: a
    /// node on neither side still talks to both).
    async fn cut_between(&self, a: &[NodeId], b: &[NodeId]) {
        let mut cuts = Vec::new();
        for &x in a {
            for &y in b {
                cuts.push((x, y));
                cuts.push((y, x));
            }
        }
        self.cut_links(&cuts).await;
    }

    /// Every running node drops, duplicates and delays (so reorders) the messages it sends.
    async fn set_message_faults(&self, faults: LinkFaults) {
        for id in self.ids() {
            let plan = FaultPlan {
                default: faults,
                ..FaultPlan::default()
            };
            self.set_faults(id, plan).await;
        }
    }

    /// An empty fault plan to every running node.
    async fn heal(&self) {
        for id in self.ids() {
            self.set_faults(id, FaultPlan::default()).await;
        }
    }

    /// Waits until node `id` says that its store is refused (wiped, replaced, or an older
    /// copy) and that it does not vote.
    async fn wait_store_refused(&self, id: NodeId) {
        let probe = self.client_for(id);
        eventually(
            &format!("node {id} refuses its store"),
            Duration::from_secs(30),
            || async { matches!(probe.status(0).await, Ok(s) if s.store_refused && !s.voting) },
        )
        .await;
    }
}

/// A link that carries nothing.
pub fn cut() -> LinkFaults {
    LinkFaults {
        cut: true,
        ..LinkFaults::default()
    }
}

/// What a get returns for `value` at `version`.
pub fn got(value: &str, version: u64) -> Outcome {
    Outcome::Get {
        value: Some(value.as_bytes().to_vec()),
        version,
    }
}

/// The seed of a seeded test: the environment variable `var` if set (it must be a `u64`),
/// else a fresh one. The caller prints it, so that a failing run can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// A length in seconds from the environment variable `var`, `default_secs` if unset.
pub fn secs_from_env(var: &str, default_secs: u64) -> Duration {
    let secs = match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a number of seconds")),
        Err(_) => default_secs,
    };
    Duration::from_secs(secs)
}

/// Faults dealt from a shuffled deck of every kind, so that even a short run sees each kind.
pub struct Deck<T> {
    kinds: Vec<T>,
    cards: Vec<T>,
}

impl<T: Clone> Deck<T> {
    pub fn new(kinds: &[T]) -> Deck<T> {
        Deck {
            kinds: kinds.to_vec(),
            cards: Vec::new(),
        }
    }

    /// The next card; a fresh shuffled deck when this one is empty.
    pub fn deal(&mut self, rng: &mut impl Rng) -> T {
        if self.cards.is_empty() {
            self.cards = self.kinds.clone();
            self.cards.shuffle(rng);
        }
        self.cards.pop().expect("a full deck")
    }

    /// Puts `card` back at the bottom, to be dealt after every other.
    pub fn put_back(&mut self, card: T) {
        self.cards.insert(0, card);
    }
}

/// The `[[node]]` tables of a config: each node's id and address, and its metrics address
/// if given (same order).
pub fn nodes_toml(nodes: &[(NodeId, SocketAddr)], metrics: Option<&[SocketAddr]>) -> String {
    nodes_toml_with(nodes, metrics, None)
}

/// [`nodes_toml`], with an `http_addr` for each node if `http` gives them.
pub fn nodes_toml_with(
    nodes: &[(NodeId, SocketAddr)],
    metrics: Option<&[SocketAddr]>,
    http: Option<&[SocketAddr]>,
) -> String {
    let mut text = String::new();
    for (i, (id, addr)) in nodes.iter().enumerate() {
        text.push_str(&format!("[[node]]\nid = {id}\naddr = \"{addr}\"\n"));
        if let Some(metrics) = metrics {
            text.push_str(&format!("metrics_addr = \"{}\"\n", metrics[i]));
        }
        if let Some(http) = http {
            text.push_str(&format!("http_addr = \"{}\"\n", http[i]));
        }
    }
    text
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

/// `n` distinct free loopback ports for a test to hand to a node that binds them later.
///
/// A port bound and released can be taken before the node binds it: CI saw a node's
/// `metrics_addr` "already in use". The kernel hands out ports of its ephemeral range
/// (`net.ipv4.ip_local_port_range`) to every `bind(0)` and every outgoing connection, and
/// the tests make thousands of both, so these ports come from below that range, where only
/// an explicit bind takes a port: each is checked free by binding it (all `n` held at once),
/// and a cursor shared by the test process never hands out the same port twice. Test
/// binaries run one after another, and a port still held (a node left running) fails the
/// check and is skipped.
pub fn free_ports(n: usize) -> Vec<SocketAddr> {
    let held = bound_ports(n);
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// `n` loopback listeners on distinct ports chosen as [`free_ports`] chooses them: for a node
/// that takes its listener (and binds the same address again when it restarts, which a port
/// of the ephemeral range would not reliably allow: an outgoing connection may hold it).
pub fn bound_ports(n: usize) -> Vec<TcpListener> {
    let (low, high) = unallocated_range();
    let span = u32::from(high - low);
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let offset = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = low + offset as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports in {low}..{high}");
    held
}

/// A free 127.0.0.1 port, as [`free_ports`] chooses them.
pub fn free_port() -> SocketAddr {
    free_ports(1)[0]
}

/// Where [`free_ports`] next looks, as an offset into [`unallocated_range`]: it starts at a
/// place drawn from the process id, so that two test processes that do run side by side
/// (`cargo test` runs binaries in turn; a developer may not) rarely start at the same port.
static NEXT_PORT: std::sync::LazyLock<std::sync::atomic::AtomicU32> =
    std::sync::LazyLock::new(|| {
        std::sync::atomic::AtomicU32::new(std::process::id().wrapping_mul(97))
    });

/// Ports the kernel never assigns by itself: up to 12,000 below the ephemeral range's start
/// (from 10,000 at the lowest, clear of the well-known and registered services under it).
fn unallocated_range() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_start.max(11_000);
    let low = high.saturating_sub(12_000).max(10_000);
    (low, high)
}

/// Copies the files of a (node's data) directory; `to` is created.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Replaces a stopped node's data directory with `copy` (a rollback), or removes it (a wipe)
/// when there is no copy.
fn lose_disk(dir: &std::path::Path, copy: Option<&std::path::Path>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    if let Some(copy) = copy {
        copy_dir(copy, dir);
    }
}

/// `member add` of node `id` at its address in `cluster`.
pub fn member_add(cluster: &impl Cluster, id: NodeId) -> paxkv::messages::MemberChangeRequest {
    paxkv::messages::MemberChangeRequest::Add {
        id,
        addr: cluster.addr(id).to_string(),
    }
}

/// The operator's path for a node whose store was lost: remove it (driven through `via`),
/// give it an empty directory, start it, add it again, and wait until it votes (it then holds
/// every key's state).
pub async fn rejoin(cluster: &mut impl Cluster, id: NodeId, via: &[NodeId]) {
    let addrs: Vec<SocketAddr> = via.iter().map(|n| cluster.addr(*n)).collect();
    let deadline = Duration::from_secs(60);
    let remove = paxkv::messages::MemberChangeRequest::Remove { id };
    drive_until_done(addrs.clone(), remove, deadline).await;
    cluster.stop(id).await;
    cluster.wipe(id);
    cluster.restart(id);
    drive_until_done(addrs, member_add(cluster, id), deadline).await;
    cluster.wait_voting(&[id]).await;
}

/// A lost store stays refused however often its node is restarted (as an orchestrator does
/// while `/health` answers 503): node `id`, running, is refused now, and after each of
/// `restarts` stops and restarts. It is left running.
pub async fn assert_stays_refused(cluster: &mut impl Cluster, id: NodeId, restarts: usize) {
    cluster.wait_store_refused(id).await;
    for _ in 0..restarts {
        cluster.stop(id).await;
        cluster.restart(id);
        cluster.wait_store_refused(id).await;
    }
}

/// The operator's path for node `id` whose store was lost, driven in a task while the test
/// goes on: `member remove`, then `member add` at its address (its node runs on an empty
/// directory by then), each through any of the nodes `via` (a rerun resumes a change whose
/// driver died). The task ends once both completed (at most 120 s each).
pub fn spawn_remove_and_add(
    cluster: &impl Cluster,
    id: NodeId,
    via: &[NodeId],
) -> tokio::task::JoinHandle<()> {
    let addrs: Vec<SocketAddr> = via.iter().map(|n| cluster.addr(*n)).collect();
    let add = member_add(cluster, id);
    tokio::spawn(async move {
        let deadline = Duration::from_secs(120);
        let remove = paxkv::messages::MemberChangeRequest::Remove { id };
        drive_until_done(addrs.clone(), remove, deadline).await;
        drive_until_done(addrs, add, deadline).await;
    })
}

/// A replacement driven in a task: `member add` of node `new` (running, on an empty
/// directory), then `member remove` of node `old`, each through any of the nodes `via`. The
/// task ends once both completed (at most 120 s each).
pub fn spawn_replacement(
    cluster: &impl Cluster,
    old: NodeId,
    new: NodeId,
    via: &[NodeId],
) -> tokio::task::JoinHandle<()> {
    let addrs: Vec<SocketAddr> = via.iter().map(|n| cluster.addr(*n)).collect();
    let add = member_add(cluster, new);
    tokio::spawn(async move {
        let deadline = Duration::from_secs(120);
        drive_until_done(addrs.clone(), add, deadline).await;
        let remove = paxkv::messages::MemberChangeRequest::Remove { id: old };
        drive_until_done(addrs, remove, deadline).await;
    })
}

/// Waits until `observer`'s membership shows a change under way (a step written), for at
/// most `deadline`.
pub async fn wait_for_a_change_under_way(
    cluster: &impl Cluster,
    observer: NodeId,
    deadline: Duration,
) {
    let client = cluster.client_for(observer);
    eventually("a change under way", deadline, || async {
        match client
            .request(0, paxkv::messages::RequestBody::Members)
            .await
        {
            Ok(paxkv::messages::Reply::Members(info)) => {
                info.membership.is_some_and(|m| m.phase.is_some())
            }
            _ => false,
        }
    })
    .await;
}

/// The resident memory of this process (every node of the in-process cluster), in bytes.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Whether every one of `tools` runs here (`tool --version` succeeds). A test that drives
/// outside tools calls this first: where one is missing it is skipped on a developer's
/// machine (said on stderr), and fails under CI (`CI` set; `.ci/run` installs them), so
/// that CI never passes a test that did not run.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            std::process::Command::new(tool)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map_or(true, |status| !status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not installed (.ci/run installs it)", missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}: under CI every test runs"
    );
    eprintln!("{why}: skipped");
    false
}
