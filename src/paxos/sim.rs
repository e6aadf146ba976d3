//! A seeded simulation of paxkv's Paxos with membership changes: nodes with an acceptor and a
//! proposer per key, a network that drops, duplicates, delays and reorders messages, and
//! these faults:
//! - acceptor crashes (a restart from the durable records), and intact restarts of a node's
//!   process (it votes again at once, with what its disk holds);
//! - **writes in flight**: three acceptor writes in ten are not durable at once; their commit
//!   returns later, as an event of its own (`Payload::Committed`). Meanwhile the acceptor
//!   takes no other request (they wait, as in its actor's held mailbox), a read is answered
//!   from its durable record (as the runtime's `actors::acceptor::DurableView` answers it),
//!   and a crash, a restart, or a wipe or rollback of its store loses the write with its
//!   reply (`lose_commits`). An aimed run (`Aim::reads_past_writes`) leaves eight writes in
//!   ten in flight and holds their commits longer; an acceptor that answered a read past an
//!   Accept in flight then crashes, losing it, with the proposer that sent it (which so never
//!   widens it), and the key is read again through another node 30 to 120 ms later. A read
//!   answered from the record in flight instead of the durable one sees, at a majority, a
//!   write that the crashes then take from everywhere, and the later read does not: mutant
//!   `sim-read-from-flight`, caught (the common runs miss it: without the aimed crash and
//!   the read after it, that write is almost always carried to a majority anyway);
//! - proposer crashes mid-round (a new instance, with a new id, that tries the fast ballot
//!   again while its predecessor's replies are still in flight);
//! - a rotating isolated node;
//! - **the bootstrap window** (odd seeds): node 5 starts with a store the membership does
//!   not record yet, votes on no client key until it records it (`Membership::admits_vote`,
//!   the runtime's gate; during a change too), and is often wiped first;
//! - **held first attempts**: a busy key's put has its first attempt wait (in a paused
//!   node's socket) while the client's retry is applied, and arrive 2,000 to 3,000 steps
//!   later, past the writes the register remembers, saying "never applied"
//!   (`register::apply` must refuse it: process nemesis seed 1796427747832293448);
//! - **another cluster's node** at this cluster's addresses (a config of other nodes, or of
//!   the same nodes under another token): Accepts of values no client wrote, Prepares, and
//!   `Install`s of a membership that makes the target the only voter, at the target's epoch
//!   and claiming a member as sender, so that only the cluster identity refuses them
//!   (`admission::same_cluster`, `Membership::installs_over`, as the runtime);
//! - **disk wipes and rollbacks**: a node loses every record (and its membership), or goes
//!   back to a copy of its directory taken at a stop after which it ran again (restored cut
//!   off from its peers half of the time). It never votes with that store: a wiped store is a
//!   new store the membership does not list, and a rolled-back one is refused by its
//!   generation, decided by the runtime's own `paxos::identity` (`Confirmation`,
//!   `begin_round`, `judge_hello`) through `Hello`s and answers that go through the faulty
//!   network (`Sim::say_hello`); an orchestrator restarts it at random meanwhile. Checked at
//!   each answer: an older copy is never confirmed, an intact store never refused; and no
//!   older copy ever votes. It rejoins as a new member: `remove`, then (wiped) `add` with its
//!   new store. Every node votes only once `q - 1` voters confirmed its start;
//! - **membership changes** while all of the above goes on: the lost stores' remove and add,
//!   the replacement of a node by a new one (add the new, remove the old, which is dead),
//!   growing to seven voters and shrinking back to three; **the driver's node restarts in the
//!   middle of a change**, and another node resumes it from the register; **a joining node
//!   dies during its add**, which is given up by removing it (the add's rescan, which waits
//!   for it, skipped: `Membership::work_before_next`).
//!
//! **The driver is the runtime's** (`paxos::driver::ChangeDriver`, which
//! `actors::membership` runs too); this world carries its actions out. The register
//! is a value the simulation holds, standing for the CASPaxos register (its own safety is
//! that of any key), read and compare-and-set on its version, with reads that fail now and
//! then and writes whose answer is lost (applied or not). Installs go through the same
//! faulty network; an install round ends once every member acknowledged, or when the calls
//! of the others time out (10 to 300 ms, drawn per round, and 1 to 3 ms for 15 % of rounds):
//! whether what came back is a barrier is the driver's decision (when it is not, the operator
//! asks again). The step's settles run through the nodes' proposers;
//! a key that fails four times fails the step, as `settle_all` does. **Operators** act as the
//! CLI and the runbook say: a request answered "unavailable" is asked again at another node
//! with the same fence; one refused because the membership moved since they read it is asked
//! again from the new epoch; an add refused because the store holds records is retried on an
//! empty directory. **Zombie drivers**: a driver whose client stopped waiting (abandoned now
//! and then, or because its store stopped voting, or an add given up) runs on beside the
//! request asked again, and its answer is thrown away; every write of every driver is
//! checked against its operator's fence from the outside (`Sim::cas_register`). Acceptors
//! answer only requests of their own epoch (older: `Stale`; newer: fetch the sender's
//! membership first), refuse fast Accepts while a change is in progress, and a node's network
//! refuses Paxos requests from non-members. Unlike the simulation before issue 10, **nothing is fenced when a disk is
//! lost**: every message in flight stays in flight, because a lost store never votes.
//!
//! The workload mixes one hot key (gets, puts, deletes, cas from every node) with keys
//! written once (one put each, through a fresh proposer, so at the fast ballot), a few cool
//! keys, and, after everything heals and every change completes, a read of every key. Errors
//! are recorded exactly: `Unavailable`, `Busy` and `NotThisNode` as "did not take effect"
//! (`Error::may_have_applied`), everything else as "may have taken effect".
//!
//! **Watches** (`actors::watch`): some node always watches, so every proposer announces what it
//! sees chosen (`Proposer::set_announcing`); each announcement goes through the faulty network
//! to every node, and each node runs the client's own reordering (`crate::watch::Sequencer`)
//! over every key from version 0, begun again when its process restarts. Each item a watch
//! delivers is checked at once (per node and key, versions go up by one but where a `Skipped`
//! says the gap; no two deliveries disagree on a version's value), and at the end against the
//! history: a change delivered is the one the history's writes and reads show at that version.
//!
//! **Lease keepers** (`keeper`): every node runs the keeper of `actors::lease` with the
//! runtime's decisions (`paxos::lease::Tracker` and the expiry's commands) on a clock of its
//! own rate, beside clients that grant, keep alive, let lapse and write keys attached to a
//! few leases; keepers pause and restart. Each expiry that acts is checked never to come
//! before TTL since the version it was conditional on was first seen chosen; after the run
//! heals, every lapsed lease and its keys must be gone within a bound.
//!
//! After every step the invariants below are checked; at the end the history is checked for
//! linearizability. A failing seed replays exactly: `PAXKV_SIM_SEED=<seed> cargo test --lib
//! sim`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::error::Error;
use crate::messages::{Envelope, Frame, ListPage, PeerMessage, SyncRecord};
use crate::paxos::acceptor::{answer_read, Acceptor};
use crate::paxos::admission::{self, Admission};
use crate::paxos::bootstrap;
use crate::paxos::driver::{Action, ChangeDriver, Event};
use crate::paxos::identity::{self, SeenStore};
use crate::paxos::listing::{self, PageScan, PageSpec, ScanSizes, Versioned};
use crate::paxos::membership::{Change, JoiningStore, Membership, Phase, RESERVED_PREFIX};
use crate::paxos::proposer::{
    first_majority, Effect, Proposer, ProposerConfig, RoundKind, Suspects,
};
use crate::paxos::quorum::{tally, Quorums};
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{
    key_hash, Ballot, Command, Key, KeyChange, NodeId, Outcome, Register, RequestId,
};
use crate::watch::{Sequencer, WatchItem};

#[path = "../../tests/support/convert.rs"]
mod convert;
mod keeper;
#[path = "../../tests/support/linearizability.rs"]
mod linearizability;
mod scenarios;
/// What `linearizability.rs` takes from its parent: the lease record's change functions.
use crate::paxos::lease as lease_model;
use linearizability::{check_operations, describe, CheckResult, Input, Operation, Output};

const FIRST_NODES: [NodeId; 5] = [1, 2, 3, 4, 5];
const HOT: &[u8] = b"hot";
/// The key of the lease workload (`Workload::lease_command`).
const LEASE: &[u8] = b"lease";
/// Keys attached to leases (`Workload::leased_key_command`).
const LEASED_KEYS: usize = 2;

fn leased_key(i: usize) -> Key {
    format!("leased-{i}").into_bytes()
}
/// Written more often than the register remembers writes (`register::REMEMBERED_WRITES`).
const BUSY: &[u8] = b"busy";
const ONCE_KEYS: usize = 30;
/// Keys of the lag probe (`Workload::probe`).
const PROBE_KEYS: usize = 4;
/// Keys of `Workload::again`, each used once.
const AGAIN_KEYS: usize = 12;
/// Keys that get a few writes each, from any node: their first writes race at the fast ballot.
const COOL_KEYS: usize = 6;
/// Keys whose first write comes from two nodes at once: split votes at the fast ballot, which
/// a change of the voters must not miscount (see `paxos::membership`, the close-fast step).
const RACE_KEYS: usize = 12;
/// Keys of `Workload::race_during_change`, each raced once while a change is in progress.
const CHANGE_RACE_KEYS: usize = 160;
/// The most keys `Workload::race_during_change` races in one change.
const RACES_PER_CHANGE: usize = 20;
const MIN_VOTERS: usize = 3;
const MAX_VOTERS: usize = 7;
/// The chance, each time the driver of an add looks at its step, that the joining node dies
/// and the operator gives the add up by removing it.
const GIVE_UP_ADD_RATE: f64 = 0.002;
/// How long an install round waits for members that do not answer (the runtime's: a call's
/// timeout), drawn for each round.
const INSTALL_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=300;
/// The share of install rounds whose calls time out at once (1 to 3 ms: a driver whose
/// links are slow), ending with its own acknowledgement and few others: the barrier must
/// refuse them.
const SHORT_ROUNDS: f64 = 0.15;
/// How often a step's key may fail to settle before the step fails (`settle_all`'s passes).
const SETTLE_PASSES: u32 = 4;
/// How long each node's watch waits for a missing version before it says `skipped_to`
/// (`crate::watch::Sequencer`): a few ticks, less than a message's usual delay, so that both
/// the reordering and the skips are exercised.
const WATCH_GAP_WAIT: Duration = Duration::from_millis(5);

enum Payload {
    Paxos(PeerMessage),
    /// An acceptor's commit returned (not a network message: never dropped, duplicated or
    /// cut): the record of its write in flight number `seq` (`Node::commits`) is durable, and
    /// the write's reply goes out.
    Committed {
        seq: u64,
    },
    /// The driver sends a membership to install (`NodeRequest::Install`): taken from its
    /// own cluster only.
    Install(Membership),
    /// A peer's answer to a node's fetch (`NodeRequest::Membership`): a node with none
    /// installed takes any cluster's, as the runtime's pull does.
    Fetched(Membership),
    /// A node installed the epoch.
    Installed(u64),
    /// A node's start (`NodeRequest::Hello`): its store and the round (generation and
    /// call), and the link it was sent on (an answer reaches only the link that asked, as on
    /// a connection of the process that asked).
    Hello {
        store: u64,
        round: identity::Round,
        link: u64,
    },
    /// A peer's answer: the round it answers, and the generation it had seen before.
    HelloAnswer {
        round: identity::Round,
        seen: u64,
        link: u64,
    },
    /// A list's ask for one scan page of `prefix` after `after` (`NodeRequest::Scan`, at the
    /// sender's epoch): answered only by a store at that epoch and intact, as `actors::calls`
    /// answers it.
    Scan {
        list: u64,
        ask: u64,
        prefix: Key,
        after: Option<Key>,
        limit: u32,
    },
    /// A voter's scan page, as of its answer, and whether it has more.
    Scanned {
        list: u64,
        ask: u64,
        records: Vec<SyncRecord>,
        more: bool,
    },
}

/// A Paxos message as a peer receives it: its whole frame (`Frame::Peer`, the envelope with
/// sender, instance, epoch, cluster and key) encoded and decoded with postcard as the network
/// does (`frame::encode`, `frame::decode`), then held to the network's checks
/// (`Frame::validate`, under the default limits), so that the simulation runs the wire form
/// of every message it delivers (a register's remembered writes are one compact string,
/// decoded with its checks: `paxos::recent`) and delivers only what a peer would take.
///
/// Both are bugs of the sender, and fail the run:
/// - a frame that does not come back equal is a bug in an encoding;
/// - a frame the checks refuse is one every peer's network would drop
///   (`actors::network`). Delivered anyway, the simulation would test a protocol the
///   cluster does not run.
///
/// The simulation forges no messages: every one comes from a node's own code, or is a
/// duplicate of one.
fn over_the_wire(route: Route, cluster: u64, key: &[u8], msg: PeerMessage) -> PeerMessage {
    let frame = Frame::Peer(Envelope {
        from: route.from,
        proposer: route.proposer,
        epoch: route.epoch,
        cluster,
        key: key.to_vec(),
        body: msg,
    });
    let bytes = crate::frame::encode(&frame);
    let body = &bytes[crate::frame::LENGTH_PREFIX_BYTES..];
    let back: Frame = crate::frame::decode(body)
        .unwrap_or_else(|e| panic!("a frame does not decode ({e}): {frame:?}"));
    assert_eq!(back, frame, "a frame changed on the wire");
    if let Err(e) = back.validate(&WIRE_LIMITS) {
        panic!("a peer's network would refuse this frame ({e}): {frame:?}");
    }
    match back {
        Frame::Peer(envelope) => envelope.body,
        _ => unreachable!("a peer frame decodes as one"),
    }
}

/// The config whose limits [`over_the_wire`] holds messages to: the defaults.
static WIRE_LIMITS: std::sync::LazyLock<Config> = std::sync::LazyLock::new(|| Config::local(&[]));

struct InFlight {
    from: NodeId,
    to: NodeId,
    key: Key,
    /// The proposer instance (see `messages::Envelope::proposer`).
    proposer: u64,
    /// The sender's epoch (see `messages::Envelope::epoch`).
    epoch: u64,
    /// The sender's cluster identity (see `messages::Envelope::cluster`).
    cluster: u64,
    payload: Payload,
}

/// Where a Paxos message goes and whose it is: an [`InFlight`]'s envelope but its key and
/// cluster.
#[derive(Clone, Copy)]
struct Route {
    from: NodeId,
    to: NodeId,
    proposer: u64,
    epoch: u64,
}

struct Node {
    /// Loaded acceptors; the others load from `durable` on their first message.
    acceptors: BTreeMap<Key, Acceptor>,
    durable: BTreeMap<Key, AcceptorRecord>,
    /// Acceptors' writes whose commit has not returned (in memory: lost by a crash): the
    /// acceptor stepped the request, its record is not durable yet, its reply not sent. As the
    /// runtime's acceptor actor, it takes no other request meanwhile, and reads are answered
    /// from `durable` (`actors::acceptor::DurableView`).
    commits: BTreeMap<Key, Commit>,
    proposers: BTreeMap<Key, Proposer>,
    /// The installed membership (durable; `None`: a wiped store that learned none yet).
    membership: Option<Membership>,
    store: u64,
    /// Its store is an older copy (a peer saw a later generation): it never votes again.
    refused: bool,
    /// Dead for good (replaced).
    dead: bool,
    /// The store's generation (durable), raised before each `Hello` (`paxos::identity`).
    generation: u64,
    /// The store's refusal mark (durable): once refused, refused at every start.
    marked: bool,
    /// What this node remembers of its peers' stores (durable), as `storage::Store::hello`.
    seen: BTreeMap<(NodeId, u64), SeenStore>,
    /// This run's `Hello` rounds (in memory), the runtime's `identity::Confirmation`, and
    /// when the next round is due.
    confirmation: identity::Confirmation,
    next_round: Instant,
    /// The link the round in progress was last sent on (0: none).
    link: u64,
    /// The round no peer answered yet (durable, `paxos::identity::begin_round`).
    pending: Option<identity::Round>,
    /// Once `q - 1` voters confirmed this run: its store counts as intact (in memory).
    intact: bool,
    /// The world's truth: this store is an older copy of the directory (never to vote).
    rolled_back: bool,
    /// The node's watch of every key from version 0 (in memory: a restart ends it and
    /// begins another, see "Watches" below).
    watch: Sequencer,
    /// Its lease keeper (in memory; `keeper`).
    keeper: keeper::Keeper,
    /// The acceptors its proposers suspect (in memory), as `actors::outbox` keeps them.
    suspects: Suspects,
}

/// A write in flight at one acceptor ([`Node::commits`]).
struct Commit {
    seq: u64,
    record: AcceptorRecord,
    reply: InFlight,
}

/// A crash, a restart or a store's wipe or rollback: `node`'s writes in flight never become
/// durable, and their replies are never sent.
fn lose_commits(node: &mut Node, faults: &mut BTreeMap<&'static str, u32>) {
    if !node.commits.is_empty() {
        *faults.entry("write in flight lost").or_default() += node.commits.len() as u32;
        node.commits.clear();
    }
}

/// What a copy of a node's data directory holds: its records and the store's identity state.
#[derive(Clone)]
struct Snapshot {
    durable: BTreeMap<Key, AcceptorRecord>,
    store: u64,
    generation: u64,
    pending: Option<identity::Round>,
    marked: bool,
    seen: BTreeMap<(NodeId, u64), SeenStore>,
}

impl Node {
    /// `now` is the simulation's time: a node's first `Hello` round is due at once. (It
    /// was the wall clock's `Instant::now()`, microseconds after the simulation's start:
    /// whether the first round was due at the first step depended on how fast the machine
    /// built the nodes, a dependence on timing that a seed's replay must not have.)
    fn new(store: u64, membership: Option<Membership>, clock: keeper::Clock, now: Instant) -> Node {
        Node {
            acceptors: BTreeMap::new(),
            durable: BTreeMap::new(),
            commits: BTreeMap::new(),
            proposers: BTreeMap::new(),
            suspects: Suspects::default(),
            membership,
            store,
            refused: false,
            dead: false,
            generation: 0,
            marked: false,
            seen: BTreeMap::new(),
            confirmation: identity::Confirmation::default(),
            next_round: now,
            link: 0,
            pending: None,
            intact: false,
            rolled_back: false,
            watch: Sequencer::new(WATCH_GAP_WAIT, None, crate::watch::MAX_WATCH_KEYS),
            keeper: keeper::Keeper::new(clock),
        }
    }

    fn epoch(&self) -> u64 {
        self.membership.as_ref().map_or(0, |m| m.epoch)
    }

    /// As `InstalledMembership::cluster`: 0 while none is installed.
    fn cluster(&self) -> u64 {
        self.membership.as_ref().map_or(0, |m| m.cluster)
    }

    /// As the runtime's start (`bootstrap::standing`: a voter with its own store recorded),
    /// and not refused.
    fn votes(&self, id: NodeId) -> bool {
        !self.dead
            && !self.refused
            && self.intact
            && self.membership.as_ref().is_some_and(|m| {
                bootstrap::standing(m, id, self.store) == bootstrap::Standing::Voter
            })
    }
}

/// Why a token was issued.
enum Waiter {
    /// A client operation: index into `history`.
    Client(usize),
    /// A settle of the anti-entropy sweep (nobody waits for its outcome).
    Sweep,
    /// A settle of a driver's current step (its answer goes to `Sim::settled`).
    Rescan,
    /// A list's read round of a key its records did not decide.
    ListRead(u64, Key),
    /// A client's first attempt that was held up (in a paused node's socket) while the
    /// client retried elsewhere (the history's operation at this index): nobody waits for
    /// its answer any more, and the write must not be applied again.
    HeldAttempt(usize),
    /// A lease keeper's command (`keeper`): the node, the lease, the history's operation.
    Keeper(NodeId, crate::paxos::lease::LeaseId, usize),
}

/// A driver of a change: the runtime's `paxos::driver::ChangeDriver`, and what its current
/// action waits for in this world.
struct Driving {
    id: u64,
    driver: ChangeDriver,
    /// The node driving it.
    node: NodeId,
    /// The epoch the operator read before asking: the driver's fence (a rerun keeps it).
    fence: u64,
    /// What to do to the node once this change completes.
    then: Then,
    waiting: Waiting,
}

/// What a driver's action waits for.
enum Waiting {
    /// Its register read, answered at `at`.
    Read { at: Instant },
    /// Its install round: the nodes that acknowledged (from an intact store), and when the
    /// calls of those that did not answer time out.
    Install {
        membership: Membership,
        previous: Membership,
        acked: BTreeSet<NodeId>,
        timeout: Instant,
    },
    /// The step's settles.
    Settle(Settles),
    /// The request was answered.
    Done(Result<Membership, Error>),
}

impl Waiting {
    /// What it waits for, said in a stuck run's report.
    fn describe(&self) -> String {
        match self {
            Waiting::Read { .. } => "a read".to_string(),
            Waiting::Install { acked, .. } => format!("installs (acked {acked:?})"),
            Waiting::Settle(s) => format!(
                "settles ({} in flight, {} to do)",
                s.settling.len(),
                s.todo.len()
            ),
            Waiting::Done(r) => format!("nothing (answered {r:?})"),
        }
    }
}

/// A step's settles: the keys of its sources (once scanned), keys in flight (by token), keys
/// still to settle, failures per key (a key that fails `SETTLE_PASSES` times fails the step,
/// as `settle_all` does).
struct Settles {
    sources: Vec<NodeId>,
    fast_only: bool,
    scanned: bool,
    settling: BTreeMap<u64, Key>,
    todo: Vec<Key>,
    failures: BTreeMap<Key, u32>,
    total: u64,
}

impl Settles {
    /// Takes the settles answered from `settled`: a key that failed is to settle again.
    /// True once a key failed `SETTLE_PASSES` times (the step fails).
    fn take_answers(&mut self, settled: &mut BTreeMap<u64, bool>) -> bool {
        let answered: Vec<u64> = self
            .settling
            .keys()
            .filter(|t| settled.contains_key(t))
            .copied()
            .collect();
        let mut failed = false;
        for token in answered {
            let key = self.settling.remove(&token).expect("listed");
            if !settled.remove(&token).expect("listed") {
                let n = self.failures.entry(key.clone()).or_default();
                *n += 1;
                failed |= *n >= SETTLE_PASSES;
                self.todo.push(key);
            }
        }
        failed
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Then {
    Nothing,
    /// A refused (rolled-back) node: wipe its store, then add it again.
    WipeAndAdd,
    /// Add the node again with its (new) store.
    Add,
}

struct Sim {
    rng: SmallRng,
    /// Which nodes' proposers run thrifty rounds (see `proposer_config`).
    thrifty: Thrifty,
    now: Instant,
    start: Instant,
    nodes: BTreeMap<NodeId, Node>,
    net: Vec<InFlight>,
    /// Nodes cut off from everyone else, both ways.
    isolated: Vec<NodeId>,
    /// Keys whose Accepts to some voters are held back until then (`Sim::lag_accepts`).
    lagging: Vec<(Key, Vec<NodeId>, Instant)>,
    /// Every state ever accepted at a classic ballot, per key: one ballot, one state.
    accepted: BTreeMap<(Key, Ballot), Register>,
    /// Copies of nodes' records taken earlier, to roll back to.
    snapshots: BTreeMap<NodeId, Snapshot>,
    /// The membership register: the membership of the latest step written, and its version
    /// (how many writes it has had).
    register: Membership,
    register_version: u64,
    /// Changes waiting, one driven at a time.
    changes: VecDeque<(Change, Then)>,
    /// The driver the operator waits for.
    driving: Option<Driving>,
    /// Drivers whose operator stopped waiting (a client that timed out and asked again
    /// elsewhere, an add given up): they run on until they answer, and nobody reads it.
    zombies: Vec<Driving>,
    next_driver: u64,
    /// Settles of drivers answered: token → succeeded.
    settled: BTreeMap<u64, bool>,
    /// Nodes being added to grow the voters (an add the simulation may give up).
    growing: BTreeSet<NodeId>,
    next_id: NodeId,
    history: Vec<Operation>,
    /// Indexes of operations that certainly did not take effect (left out of the check).
    not_applied: BTreeSet<usize>,
    waiters: BTreeMap<u64, Waiter>,
    /// token → the (node, key) whose proposer holds it
    owner: BTreeMap<u64, (NodeId, Key)>,
    next_token: u64,
    drop_rate: f64,
    dup_rate: f64,
    /// How often an acceptor's write is left in flight (its commit an event of its own) rather
    /// than durable at once, and the number of the last one.
    commit_in_flight_rate: f64,
    commit_seq: u64,
    /// How often a read answered past a write in flight crashes the acceptor it was answered
    /// by, losing that write, and the write's proposer with it (`Aim::reads_past_writes`).
    crash_after_passing_read: f64,
    /// How often a commit about to return is held back (a slower disk: writes stay in flight
    /// longer, and more reads pass them).
    commit_held: f64,
    /// Bytes of one scan answer, the same for every node (`Aim::whole_scans`); `None`: 150,
    /// 400 or 650 by node, a record or two.
    scan_answer_bytes: Option<usize>,
    /// Gets due (at this many µs of `elapsed`) of keys whose write in flight a read passed
    /// before its acceptor crashed: a later read that must still see what the first one saw.
    follow_up_reads: Vec<(u64, Key)>,
    /// The change driver's world never fails it (scripted runs, `scenarios`): no register
    /// read fails, no register answer is lost, every install round waits the longest
    /// timeout; so a change stays with the driver the script gave it.
    steady_driver: bool,
    faults: BTreeMap<&'static str, u32>,
    /// The cluster's identity (every node's); another cluster's frames carry another.
    cluster: u64,
    /// Copies of busy-key writes' first attempts, held up (a paused node's socket) while the
    /// write itself was submitted as the client's retry: (step to arrive, node, the retry's
    /// index in the history, command, id).
    held: Vec<(u32, NodeId, usize, Command, RequestId)>,
    /// Operations submitted as a retry (`Sim::submit_attempt`).
    retried: BTreeSet<usize>,
    /// Lists in progress (`actors::list`'s rule: a scan of the voters, `paxos::listing`,
    /// read rounds), by id.
    lists: BTreeMap<u64, Listing>,
    next_list: u64,
    next_ask: u64,
    /// What the nodes' watches delivered, checked as it is delivered and against the history
    /// at the end.
    watched: Watched,
    /// The lease keepers' world (`keeper`).
    keeping: keeper::Keeping,
}

/// One list in progress, as `paxkv list --all` makes it: a page at a time, each one
/// `actors::list::Lister::list`'s (`paxos::listing::PageScan`, driven here as the runtime
/// drives it), the next asked after the last key of the one before.
struct Listing {
    node: NodeId,
    /// When its current page was asked (the history's time).
    call: u64,
    /// The epoch's voters, by the scan's index.
    voters: Vec<NodeId>,
    epoch: u64,
    cluster: u64,
    page: PageScan,
    /// The scan asks in flight, by voter index: an answer to any other (older, or a
    /// duplicate) is dropped, as the runtime drops a batch's late answers with its future.
    asking: BTreeMap<usize, u64>,
    /// The asks wait this long for voters that do not answer (the runtime's page timeout).
    deadline: Instant,
    /// The batch being decided (`None`: asking), the read rounds it waits for, and their
    /// answers (`None`: the round failed).
    batch: Option<Vec<(Key, Option<Versioned>)>>,
    reading: BTreeSet<Key>,
    read: BTreeMap<Key, Option<Versioned>>,
    /// The keeper's scan it is (`keeper`), if it is one.
    scan: Option<u64>,
    /// Pages it goes on for after this one.
    pages_left: u32,
}

/// A scan ask as a voter receives it.
struct ScanAsked {
    list: u64,
    ask: u64,
    prefix: Key,
    after: Option<Key>,
    limit: u32,
}

/// Which nodes' proposers run thrifty rounds: both kinds run side by side on the same keys.
#[derive(Debug, Clone, Copy)]
enum Thrifty {
    /// All but every third node (odd seeds): most rounds thrifty, so that a thrifty read
    /// often meets a majority that a widened or broadcast write only partly reached.
    Most,
    /// Nodes 1, 4 and 7 (even seeds).
    Some,
}

impl Thrifty {
    /// Whether `node`'s proposers run thrifty rounds.
    fn on(self, node: NodeId) -> bool {
        match self {
            Thrifty::Most => !node.is_multiple_of(3),
            Thrifty::Some => node % 3 == 1,
        }
    }
}

fn proposer_config(
    node: NodeId,
    key: &[u8],
    m: Option<&Membership>,
    thrifty: Thrifty,
) -> ProposerConfig {
    let (nodes, joining, epoch, member, fast) = match m {
        Some(m) => (
            m.voters(),
            m.joining_voters(),
            m.epoch,
            m.member(node).is_some(),
            m.fast_allowed(),
        ),
        None => (FIRST_NODES.to_vec(), vec![], 0, false, false),
    };
    ProposerConfig {
        epoch,
        member,
        joining,
        node,
        nodes,
        phase_timeout: Duration::from_millis(40),
        // As the runtime's 20 ms is to a LAN's round trip, 30 ms is longer than most of the
        // simulation's (two hops of about 10 ms each): a thrifty round's first majority
        // often answers before the round widens. Node 4's 5 ms is shorter than nearly every
        // round trip, so its rounds widen on silence. (At 5 ms everywhere, every thrifty
        // round widened before its first answer: the thrifty majority's own count was never
        // tested, and a quick read that took two answers of three went uncaught.)
        read_grace: Duration::from_millis(if node.is_multiple_of(4) { 5 } else { 30 }),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(30),
        max_batch: 8,
        max_queue: 64,
        fast_path: fast,
        // Odd nodes leave a write chosen at the fast ballot there until a sweep or a change
        // settles it, so that lost disks and changes meet keys at the fast ballot.
        settle_fast_writes: node.is_multiple_of(2),
        // Thrifty rounds on some nodes, every acceptor asked at once on the others (see
        // `Thrifty`). With four thrifty nodes of five, rounds that wait `read_grace` to widen
        // leave more impatient clients' writes "outcome unknown" (see docs/TESTING.md).
        thrifty: thrifty.on(node),
        spread: key_hash(key),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let now = Instant::now();
        let mut register =
            Membership::bootstrap(FIRST_NODES.iter().map(|&n| (n, format!("n{n}"))), "sim");
        // Stores recorded at bootstrap; in odd seeds node 5 starts unrecorded (the bootstrap
        // window: it records itself later, `Sim::record_store`).
        for m in register.members.iter_mut() {
            m.store = if seed % 2 == 1 && m.id == 5 {
                0
            } else {
                m.id as u64
            };
        }
        let cluster = register.cluster;
        let mut keeping = keeper::Keeping::new(seed);
        let nodes = FIRST_NODES
            .iter()
            .map(|&n| {
                let clock = keeping.clock(now);
                (n, Node::new(n as u64, Some(register.clone()), clock, now))
            })
            .collect();
        Sim {
            thrifty: if seed % 2 == 1 {
                Thrifty::Most
            } else {
                Thrifty::Some
            },
            rng: SmallRng::seed_from_u64(seed),
            now,
            start: now,
            nodes,
            net: Vec::new(),
            isolated: Vec::new(),
            lagging: Vec::new(),
            accepted: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            register,
            changes: VecDeque::new(),
            register_version: 0,
            driving: None,
            zombies: Vec::new(),
            next_driver: 0,
            settled: BTreeMap::new(),
            growing: BTreeSet::new(),
            next_id: 6,
            history: Vec::new(),
            not_applied: BTreeSet::new(),
            waiters: BTreeMap::new(),
            owner: BTreeMap::new(),
            next_token: 0,
            drop_rate: 0.05,
            dup_rate: 0.05,
            commit_in_flight_rate: 0.3,
            commit_seq: 0,
            crash_after_passing_read: 0.0,
            commit_held: 0.0,
            scan_answer_bytes: None,
            follow_up_reads: Vec::new(),
            steady_driver: false,
            faults: BTreeMap::new(),
            cluster,
            held: Vec::new(),
            retried: BTreeSet::new(),
            lists: BTreeMap::new(),
            next_list: 0,
            next_ask: 0,
            watched: Watched {
                seed,
                ..Watched::default()
            },
            keeping,
        }
    }

    fn elapsed(&self) -> u64 {
        self.now.duration_since(self.start).as_micros() as u64
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The key's proposer on `node`, started (with a fresh id from the seeded RNG) if none,
    /// and following the node's membership (as `actors::proposer` does before every step).
    fn proposer(&mut self, node: NodeId, key: &[u8]) -> &mut Proposer {
        let seed = self.rng.random();
        let (now, thrifty) = (self.now, self.thrifty);
        let n = self.nodes.get_mut(&node).unwrap();
        let membership = n.membership.clone();
        let p = n.proposers.entry(key.to_vec()).or_insert_with(|| {
            let mut p = Proposer::new(
                proposer_config(node, key, membership.as_ref(), thrifty),
                SmallRng::seed_from_u64(seed),
            );
            // Some node always watches (every node does, see "Watches" below).
            p.set_announcing(true);
            p
        });
        if let Some(m) = membership.filter(|m| m.epoch != p.config().epoch) {
            p.reconfigure(
                now,
                m.voters(),
                m.joining_voters(),
                m.epoch,
                m.member(node).is_some(),
                m.fast_allowed(),
            );
        }
        p.avoid(&n.suspects, now);
        p
    }

    fn token(&mut self, waiter: Waiter, node: NodeId, key: &[u8]) -> u64 {
        self.next_token += 1;
        self.waiters.insert(self.next_token, waiter);
        self.owner.insert(self.next_token, (node, key.to_vec()));
        self.next_token
    }

    /// A write's first attempt arriving late at `node` (`Sim::held`): the same id as the
    /// write the history holds, and, as a first attempt, "never applied".
    fn submit_held(
        &mut self,
        node: NodeId,
        key: &[u8],
        (command, id, index): (Command, RequestId, usize),
    ) {
        *self.faults.entry("held first attempt").or_default() += 1;
        let token = self.token(Waiter::HeldAttempt(index), node, key);
        let (now, deadline) = (self.now, self.now + Duration::from_millis(400));
        let mut out = Vec::new();
        self.proposer(node, key)
            .submit(now, token, command, Some(id), false, deadline, &mut out);
        self.effects(node, key, out);
    }

    /// Submits `command` as a client would; returns the write's id.
    fn submit(&mut self, node: NodeId, key: &[u8], command: Command) -> Option<RequestId> {
        self.submit_attempt(node, key, command, false)
    }

    /// Submits `command`; `retried`: as the client's retry after an attempt that was lost
    /// (still held somewhere): said to the register ("may have been applied"), and any
    /// error then leaves the outcome unknown, as `Client::execute` answers.
    fn submit_attempt(
        &mut self,
        node: NodeId,
        key: &[u8],
        command: Command,
        retried: bool,
    ) -> Option<RequestId> {
        self.submit_with(node, key, command, retried, None)
    }

    /// [`Sim::submit_attempt`], with a client of `patience` (`None`: drawn, a quarter of
    /// them impatient).
    fn submit_with(
        &mut self,
        node: NodeId,
        key: &[u8],
        command: Command,
        retried: bool,
        patience: Option<u64>,
    ) -> Option<RequestId> {
        let index = self.push_operation(key, &command);
        let token = self.token(Waiter::Client(index), node, key);
        let id = command.is_write().then_some(RequestId {
            client: node as u64,
            seq: token,
        });
        // A quarter of the clients are impatient: their deadlines often pass mid-round (a
        // retry is patient: its outcome, if an error, stays unknown, which costs the check).
        let patience = match patience {
            Some(patience) => patience,
            None if !retried && self.rng.random_bool(0.25) => 30,
            None => 400,
        };
        let (now, deadline) = (self.now, self.now + Duration::from_millis(patience));
        let mut out = Vec::new();
        if retried {
            self.retried.insert(index);
        }
        self.proposer(node, key)
            .submit(now, token, command, id, retried, deadline, &mut out);
        self.effects(node, key, out);
        id
    }

    /// A client's operation called now, into the history; returns its index.
    fn push_operation(&mut self, key: &[u8], command: &Command) -> usize {
        self.history.push(Operation {
            client: self.next_token + 1,
            key: key.to_vec(),
            input: convert::input_of(command),
            call: self.elapsed(),
            ret: None,
            output: None,
        });
        self.history.len() - 1
    }

    /// A settle round for `key` on `node`, for `waiter`; returns its token.
    fn settle(&mut self, node: NodeId, key: &[u8], waiter: Waiter) -> u64 {
        let token = self.token(waiter, node, key);
        let (now, deadline) = (self.now, self.now + Duration::from_millis(400));
        let mut out = Vec::new();
        self.proposer(node, key)
            .settle(now, token, deadline, &mut out);
        self.effects(node, key, out);
        token
    }

    fn effects(&mut self, from: NodeId, key: &[u8], out: Vec<Effect>) {
        let Some(p) = self.nodes.get_mut(&from).unwrap().proposers.get_mut(key) else {
            return;
        };
        let (proposer, epoch, voters) = (p.id(), p.config().epoch, p.config().nodes.clone());
        let suspect_after = p.config().suspect_after();
        let rounds = p.take_rounds();
        let widened = rounds[RoundKind::Widened.index()].1;
        *self.faults.entry("thrifty round widened").or_default() += widened as u32;
        let paced = rounds[RoundKind::Paced.index()].1;
        *self
            .faults
            .entry("phase timeout lengthened by a late majority")
            .or_default() += paced as u32;
        let known = rounds[RoundKind::KnownFastRead.index()].1;
        *self
            .faults
            .entry("read of a state its proposer saw chosen at the fast ballot")
            .or_default() += known as u32;
        // Stamped as the outbox stamps: the node's installed cluster (0: none yet).
        let cluster = self.nodes[&from].cluster();
        // A message of this proposer to node `to`, stamped as the outbox stamps it.
        let message = |to, msg| InFlight {
            from,
            to,
            key: key.to_vec(),
            proposer,
            epoch,
            cluster,
            payload: Payload::Paxos(msg),
        };
        for e in &out {
            // Coverage of reads without remembered writes: a read asked in full is one whose
            // predecessor saw laggards and could not repair them from `ReadReply`s.
            let (Effect::Broadcast(m) | Effect::Multicast(_, m) | Effect::Send(_, m)) = e else {
                continue;
            };
            let counted = match m {
                PeerMessage::Read { .. } => "read asked without remembered writes",
                PeerMessage::Query { .. } => "read asked in full after laggards",
                _ => continue,
            };
            *self.faults.entry(counted).or_default() += 1;
        }
        for e in out {
            match e {
                Effect::Broadcast(msg) => {
                    for &to in &voters {
                        self.net.push(message(to, msg.clone()));
                    }
                }
                Effect::Multicast(to, msg) => {
                    *self.faults.entry("thrifty request").or_default() += 1;
                    for to in to {
                        self.net.push(message(to, msg.clone()));
                    }
                }
                Effect::Send(to, msg) => self.net.push(message(to, msg)),
                Effect::Suspect(node) => {
                    let (now, quiet) = (self.now, suspect_after);
                    let n = self.nodes.get_mut(&from).expect("a node");
                    if n.suspects.silent(node, now, quiet) {
                        *self.faults.entry("thrifty suspect").or_default() += 1;
                    }
                }
                Effect::Failing(node) => {
                    let now = self.now;
                    self.nodes
                        .get_mut(&from)
                        .expect("a node")
                        .suspects
                        .mark(node, now);
                }
                Effect::Reply(token, result) => self.answered(token, result),
                // Every node watches: to each, through the network, as the outbox sends it
                // to the lease holders (`actors::outbox::Outbox::announce`).
                Effect::Chosen(changes) => {
                    for to in self.live_nodes() {
                        let msg = PeerMessage::Chosen {
                            changes: changes.clone(),
                        };
                        self.net.push(message(to, msg));
                    }
                }
            }
        }
    }

    fn answered(&mut self, token: u64, result: Result<Outcome, Error>) {
        // Refused at once by a proposer whose node is no member of its membership (the
        // shortcut of `Proposer::enqueue`): counted, so that a run shows it was exercised.
        if matches!(&result, Err(Error::NotThisNode(why)) if why.contains("not a member")) {
            *self
                .faults
                .entry("asked a node that is no member")
                .or_default() += 1;
        }
        if let (Some((_, key)), Ok(outcome)) = (self.owner.remove(&token), &result) {
            if let Some(version) = keeper::version_of(outcome) {
                self.seen_chosen(&key, version);
            }
        }
        match self.waiters.remove(&token).expect("one reply per request") {
            Waiter::Client(i) => {
                self.keeper_client_answered(i, &result);
                self.record_answer(i, result);
            }
            Waiter::Keeper(node, id, i) => {
                self.record_answer(i, result.clone());
                self.keeper_answered(node, id, result);
            }
            Waiter::Sweep => {}
            Waiter::HeldAttempt(i) => {
                // Either the outcome the register remembers for the write, or a refusal;
                // any other outcome applied it a second time.
                let seen = if result.is_ok() {
                    "held attempt answered as its retry"
                } else {
                    "held attempt refused"
                };
                *self.faults.entry(seen).or_default() += 1;
                if let Ok(outcome) = result {
                    let again = convert::output_of(outcome);
                    assert!(
                        self.history[i].output.as_ref() == Some(&again),
                        "a write applied twice: {:?} answered {:?}, its held first attempt \
                         {again:?}",
                        self.history[i].input,
                        self.history[i].output
                    );
                }
            }
            Waiter::Rescan => {
                self.settled.insert(token, result.is_ok());
            }
            Waiter::ListRead(list, key) => self.list_read(list, key, result),
        }
    }

    /// The history's operation `i` answered.
    fn record_answer(&mut self, i: usize, result: Result<Outcome, Error>) {
        match result {
            Ok(outcome) => {
                self.history[i].ret = Some(self.elapsed());
                self.history[i].output = Some(convert::output_of(outcome));
            }
            // May have taken effect: the checker lets it take effect any time, or never.
            Err(e) if e.may_have_applied() || self.retried.contains(&i) => {}
            Err(_) => {
                self.not_applied.insert(i);
            }
        }
    }

    /// Puts a call between nodes (no key, no proposer: an install, a fetch, a `Hello`, a
    /// scan, or an answer to one) into the network.
    fn call(&mut self, from: NodeId, to: NodeId, epoch: u64, cluster: u64, payload: Payload) {
        self.net.push(InFlight {
            from,
            to,
            key: Vec::new(),
            proposer: 0,
            epoch,
            cluster,
            payload,
        });
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        a != b && (self.isolated.contains(&a) || self.isolated.contains(&b))
    }

    /// Sends `m` (a membership) from `from` to `to` through the network: the driver's
    /// `NodeRequest::Install`, stamped with the sender's cluster.
    fn send_install(&mut self, from: NodeId, to: NodeId, m: Membership) {
        self.call(
            from,
            to,
            m.epoch,
            self.nodes[&from].cluster(),
            Payload::Install(m),
        );
    }

    /// A node learns of a newer epoch from `peer`: it fetches `peer`'s membership (a message
    /// through the network, like the runtime's `NodeRequest::Membership`).
    fn fetch(&mut self, node: NodeId, peer: NodeId) {
        if let Some(m) = self.nodes[&peer].membership.clone() {
            if m.epoch > self.nodes[&node].epoch() {
                self.call(peer, node, m.epoch, m.cluster, Payload::Fetched(m));
            }
        }
    }

    /// Delivers (or drops, or duplicates) one message chosen at random: reordering for free.
    /// Returns the key an acceptor changed, if one did.
    fn deliver_one(&mut self) -> Option<Key> {
        if self.net.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.net.len());
        let m = self.net.swap_remove(i);
        self.deliver(m)
    }

    /// Delivers (or drops, or duplicates) `m`, taken out of the network.
    fn deliver(&mut self, m: InFlight) -> Option<Key> {
        if let Payload::Committed { seq } = m.payload {
            // (drawn only in the runs that hold commits: the others keep their schedules)
            if self.commit_held > 0.0 && self.rng.random_bool(self.commit_held) {
                // A slow disk: the commit returns later still.
                self.net.push(m);
                return None;
            }
            return self.committed(m.to, m.key, seq);
        }
        let accept = matches!(m.payload, Payload::Paxos(PeerMessage::Accept { .. }));
        let now = self.now;
        self.lagging.retain(|(_, _, until)| now < *until);
        if accept
            && self
                .lagging
                .iter()
                .any(|(key, to, _)| *key == m.key && to.contains(&m.to))
        {
            self.net.push(m);
            return None;
        }
        if self.nodes[&m.to].dead
            || self.nodes[&m.from].dead
            || self.cut(m.from, m.to)
            || self.rng.random_bool(self.drop_rate)
        {
            return None;
        }
        let msg = match m.payload {
            Payload::Committed { .. } => unreachable!("taken before the network's faults"),
            Payload::Install(membership) => {
                if admission::serves_call(self.nodes[&m.to].cluster(), m.cluster, false) {
                    self.install(m.from, m.to, membership);
                } else {
                    *self.faults.entry("foreign refused").or_default() += 1;
                }
                return None;
            }
            Payload::Fetched(membership) => {
                self.install(m.from, m.to, membership);
                return None;
            }
            Payload::Hello { store, round, link } => {
                if admission::serves_call(self.nodes[&m.to].cluster(), m.cluster, false) {
                    self.answer_hello(m.from, m.to, store, round, link);
                } else {
                    *self.faults.entry("foreign refused").or_default() += 1;
                }
                return None;
            }
            Payload::HelloAnswer { round, seen, link } => {
                if self.nodes[&m.to].link == link {
                    self.hello_answered(m.to, m.from, round, seen);
                }
                return None;
            }
            Payload::Installed(epoch) => {
                self.count_install_ack(m.from, m.to, epoch);
                return None;
            }
            Payload::Scan {
                list,
                ask,
                prefix,
                after,
                limit,
            } => {
                let asked = ScanAsked {
                    list,
                    ask,
                    prefix,
                    after,
                    limit,
                };
                self.answer_scan(m.from, m.to, m.epoch, m.cluster, asked);
                return None;
            }
            Payload::Scanned {
                list,
                ask,
                records,
                more,
            } => {
                self.scanned(m.from, list, ask, records, more);
                return None;
            }
            Payload::Paxos(msg) => {
                let route = Route {
                    from: m.from,
                    to: m.to,
                    proposer: m.proposer,
                    epoch: m.epoch,
                };
                over_the_wire(route, m.cluster, &m.key, msg)
            }
        };
        if !admission::same_cluster(self.nodes[&m.to].cluster(), m.cluster) {
            *self.faults.entry("foreign refused").or_default() += 1;
            return None;
        }
        if self.rng.random_bool(self.dup_rate) {
            self.net.push(InFlight {
                from: m.from,
                to: m.to,
                key: m.key.clone(),
                proposer: m.proposer,
                epoch: m.epoch,
                cluster: m.cluster,
                payload: Payload::Paxos(msg.clone()),
            });
        }
        if let PeerMessage::Chosen { changes } = msg {
            self.announced(m.from, m.to, m.key, changes);
            return None;
        }
        let route = Route {
            from: m.from,
            to: m.to,
            proposer: m.proposer,
            epoch: m.epoch,
        };
        if msg.is_request() && !msg.is_read() && self.nodes[&m.to].commits.contains_key(&m.key) {
            // The acceptor holds its mailbox until its write in flight is durable: this
            // request waits (and so may be overtaken, as any message).
            *self
                .faults
                .entry("request held behind a write in flight")
                .or_default() += 1;
            self.net.push(InFlight {
                payload: Payload::Paxos(msg),
                ..m
            });
            return None;
        }
        if msg.is_request() {
            self.deliver_request(route, m.key, msg)
        } else {
            self.deliver_answer(route, &m.key, msg);
            None
        }
    }

    /// `to` takes a membership from `from` (pushed by a driver, or fetched) if it is newer
    /// and of its cluster, and acknowledges what it holds then.
    fn install(&mut self, from: NodeId, to: NodeId, membership: Membership) {
        let node = self.nodes.get_mut(&to).unwrap();
        match membership.installs_over(node.membership.as_ref()) {
            Ok(true) => node.membership = Some(membership),
            Ok(false) => {}
            Err(_) => {
                *self.faults.entry("foreign refused").or_default() += 1;
                return;
            }
        }
        let epoch = node.epoch();
        // Only a store confirmed intact acknowledges (`NodeReply::Installed`, as
        // `MembershipService::store_confirmed_intact`).
        if self.intact(to) {
            self.call(
                to,
                from,
                epoch,
                self.nodes[&to].cluster(),
                Payload::Installed(epoch),
            );
        }
    }

    /// `to` judges the `Hello` of `from`'s `store` (`identity::judge_hello`), remembers it,
    /// and answers on the link it came from; a refused store confirms nobody.
    fn answer_hello(
        &mut self,
        from: NodeId,
        to: NodeId,
        store: u64,
        round: identity::Round,
        link: u64,
    ) {
        let peer = self.nodes.get_mut(&to).unwrap();
        if peer.refused || peer.marked {
            return;
        }
        let (seen, remember) = identity::judge_hello(
            peer.seen.get(&(from, store)).copied(),
            round.generation,
            round.call,
        );
        if let Some(remember) = remember {
            peer.seen.insert((from, store), remember);
        }
        self.call(
            to,
            from,
            self.nodes[&to].epoch(),
            self.nodes[&to].cluster(),
            Payload::HelloAnswer { round, seen, link },
        );
    }

    /// `from` installed `epoch`: an acknowledgement for every driver on `to` (the operator's
    /// and the zombies) whose install round is of that epoch or an older one.
    fn count_install_ack(&mut self, from: NodeId, to: NodeId, epoch: u64) {
        for d in self.driving.iter_mut().chain(self.zombies.iter_mut()) {
            if let Waiting::Install {
                membership, acked, ..
            } = &mut d.waiting
            {
                if to == d.node && epoch >= membership.epoch {
                    acked.insert(from);
                }
            }
        }
    }

    /// A Paxos request at `route.to`'s acceptor, from a member, voted on only by a store
    /// admitted to vote (otherwise dropped), and only of its epoch (`admission::admit`):
    /// answered, or stepped and its record persisted. Returns the key if a record changed.
    fn deliver_request(&mut self, route: Route, key: Key, msg: PeerMessage) -> Option<Key> {
        let Route { from, to, .. } = route;
        if !self.member_votes(to, from, &key) {
            return None;
        }
        let node = &self.nodes[&to];
        let fast_allowed = || node.membership.as_ref().is_some_and(|x| x.fast_allowed());
        let mut passed_a_write = false;
        let (reply, record) = match admission::admit(node.epoch(), route.epoch, &msg, fast_allowed)
        {
            Admission::Step => match self.read_from_durable(to, &key, &msg) {
                Some(reply) => {
                    passed_a_write = true;
                    (reply, None)
                }
                None => self.step_acceptor(to, &key, msg),
            },
            Admission::Answer(reply) => (reply, None),
            Admission::FetchNewer => {
                self.fetch(to, from);
                return None;
            }
        };
        let reply = InFlight {
            from: to,
            to: from,
            key: key.clone(),
            proposer: route.proposer,
            epoch: route.epoch,
            cluster: self.nodes[&to].cluster(),
            payload: Payload::Paxos(reply),
        };
        let Some(record) = record else {
            self.net.push(reply);
            if passed_a_write
                && self.crash_after_passing_read > 0.0
                && self.rng.random_bool(self.crash_after_passing_read)
            {
                self.crash_the_passed_write(to, &key);
            }
            return None;
        };
        if self.rng.random_bool(self.commit_in_flight_rate) {
            // The commit returns later (an event of its own); until then the reply waits, and
            // a crash loses the write.
            *self.faults.entry("write in flight").or_default() += 1;
            self.commit_seq += 1;
            let seq = self.commit_seq;
            self.net.push(InFlight {
                from: to,
                to,
                key: key.clone(),
                proposer: 0,
                epoch: 0,
                cluster: 0,
                payload: Payload::Committed { seq },
            });
            let commits = &mut self.nodes.get_mut(&to).unwrap().commits;
            let held = commits.insert(key, Commit { seq, record, reply });
            assert!(held.is_none(), "two writes in flight at one acceptor");
            return None;
        }
        self.make_durable(to, &key, record);
        self.net.push(reply);
        Some(key)
    }

    /// A read at an acceptor whose write is in flight: answered from its durable record, as
    /// the runtime answers it (`actors::acceptor::DurableView`), not from the record it
    /// stepped. `None`: not a read, or no write in flight (the acceptor answers).
    fn read_from_durable(
        &mut self,
        node: NodeId,
        key: &Key,
        msg: &PeerMessage,
    ) -> Option<PeerMessage> {
        let node = &self.nodes[&node];
        node.commits.get(key)?;
        let durable = node.durable.get(key).cloned().unwrap_or_default();
        let answer = answer_read(&durable, msg)?;
        *self
            .faults
            .entry("read answered from durable, a write in flight")
            .or_default() += 1;
        Some(answer)
    }

    /// A read was just answered past `node`'s write of `key` in flight: the acceptor crashes,
    /// losing the write, and so does the proposer that sent it, which so never widens it to
    /// the others. Were the read answered from the record in flight (not the durable one),
    /// it could have seen that write at a majority that then lost it: a value read that no
    /// later read sees (`Aim::reads_past_writes`).
    fn crash_the_passed_write(&mut self, node: NodeId, key: &Key) {
        let n = &self.nodes[&node];
        let Some(commit) = n.commits.get(key) else {
            return;
        };
        let durable = n.durable.get(key).map_or(Ballot::ZERO, |r| r.accepted);
        if commit.record.accepted == durable {
            // A promise in flight: nothing a read could see.
            return;
        }
        let (writer, id) = (commit.reply.to, commit.reply.proposer);
        *self
            .faults
            .entry("acceptor crashed after a read passed its write")
            .or_default() += 1;
        self.crash_acceptors(node);
        let due = self.elapsed() + self.rng.random_range(30_000..120_000);
        self.follow_up_reads.push((due, key.clone()));
        let proposers = &mut self.nodes.get_mut(&writer).unwrap().proposers;
        if proposers.get(key).is_some_and(|p| p.id() == id) {
            proposers.remove(key);
            *self
                .faults
                .entry("proposer crashed with the write a read passed")
                .or_default() += 1;
            self.forget_tokens(|n, k| n == writer && k == key.as_slice());
        }
    }

    /// The commit of `node`'s write in flight number `seq` returned: its record is durable,
    /// its reply goes out. Gone (a crash, a restart, a wipe or rollback of the store took it
    /// away, or the node is dead): nothing happens, the write is lost with its reply.
    fn committed(&mut self, node: NodeId, key: Key, seq: u64) -> Option<Key> {
        let n = self.nodes.get_mut(&node).unwrap();
        if n.commits.get(&key).is_none_or(|c| c.seq != seq) {
            return None;
        }
        let commit = n.commits.remove(&key).expect("just found");
        if n.dead {
            // Its process is gone: the write never became durable, and its acceptors reload
            // from the disk when it restarts.
            n.acceptors.remove(&key);
            *self.faults.entry("write in flight lost").or_default() += 1;
            return None;
        }
        self.make_durable(node, &key, commit.record);
        self.net.push(commit.reply);
        Some(key)
    }

    /// Does `to`'s acceptor vote on `key` for `from`? The network refuses Paxos frames from
    /// non-members; a node whose store is not the member's does not vote.
    fn member_votes(&self, to: NodeId, from: NodeId, key: &Key) -> bool {
        let node = &self.nodes[&to];
        let member = node
            .membership
            .as_ref()
            .is_some_and(|x| x.member(from).is_some());
        // As the runtime's gate (`actors::routes`): a store votes once its start was
        // confirmed, and a store not recorded yet votes on no client key.
        let admitted = !node.dead
            && !node.refused
            && node.intact
            && node
                .membership
                .as_ref()
                .is_some_and(|x| x.admits_vote(to, node.store, key));
        member && admitted
    }

    /// `node`'s acceptor of `key` (loaded from its durable record) steps `msg`. Returns the
    /// reply, and the record to make durable before it is sent, if it changed.
    fn step_acceptor(
        &mut self,
        node: NodeId,
        key: &Key,
        msg: PeerMessage,
    ) -> (PeerMessage, Option<AcceptorRecord>) {
        let node = self.nodes.get_mut(&node).unwrap();
        let durable = node.durable.get(key).cloned().unwrap_or_default();
        let acceptor = node
            .acceptors
            .entry(key.clone())
            .or_insert_with(|| Acceptor::new(durable));
        let step = acceptor.step(msg);
        (
            step.reply,
            step.persist.map(std::sync::Arc::unwrap_or_clone),
        )
    }

    /// `node`'s record of `key` is durable (and a classic ballot's state remembered for the
    /// checks).
    fn make_durable(&mut self, node: NodeId, key: &Key, record: AcceptorRecord) {
        if record.accepted != Ballot::FAST && record.accepted != Ballot::ZERO {
            self.accepted
                .entry((key.clone(), record.accepted))
                .or_insert_with(|| record.state.clone());
        }
        self.nodes
            .get_mut(&node)
            .unwrap()
            .durable
            .insert(key.clone(), record);
    }

    /// A Paxos answer for `route.to`'s proposer of `key`: `Stale` makes the node fetch the
    /// sender's membership; an answer of another epoch than the proposer's counts for
    /// nothing.
    fn deliver_answer(&mut self, route: Route, key: &Key, msg: PeerMessage) {
        let Route { from, to, .. } = route;
        if let PeerMessage::Stale { .. } = msg {
            self.fetch(to, from);
            return;
        }
        if !self.nodes[&to].proposers.contains_key(key) {
            return;
        }
        let now = self.now;
        let p = self.proposer(to, key);
        if route.epoch != p.config().epoch {
            return;
        }
        let mut out = Vec::new();
        p.on_message(now, from, route.proposer, msg, &mut out);
        // `actors::proposer` notes the answer as heard just before stepping, here just after:
        // the same, since only `tick` reports a silent acceptor (`Effect::Suspect`).
        self.nodes
            .get_mut(&to)
            .expect("a node")
            .suspects
            .heard(from, now);
        self.effects(to, key, out);
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(1);
        let due: Vec<(NodeId, Key)> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .flat_map(|(n, node)| {
                node.proposers
                    .iter()
                    .filter(|(_, p)| p.next_wakeup().is_some_and(|t| t <= self.now))
                    .map(|(k, _)| (*n, k.clone()))
            })
            .collect();
        for (node, key) in due {
            let mut out = Vec::new();
            let now = self.now;
            self.proposer(node, &key).tick(now, &mut out);
            self.effects(node, &key, out);
        }
        // A start goes on with a new `Hello` round while some peer has not confirmed it
        // (`membership::start::run`, with its back-off).
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                !n.dead
                    && !n.marked
                    && n.next_round <= self.now
                    && n.membership.as_ref().is_some_and(|m| {
                        !n.confirmation.unconfirmed(m, **id).is_empty() || !n.intact
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for node in due {
            self.say_hello(node);
        }
        self.progress_lists();
        self.run_keepers();
        self.expire_watches();
        // A node that does not vote keeps asking a peer for the membership (the start loop
        // of `actors::membership`, every 300 ms): a joining node learns the Rescan step that
        // makes it a voter even when the driver's barrier no longer resends it (seed 44).
        if self.rng.random_bool(0.02) {
            let waiting: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(id, n)| !n.dead && !n.votes(**id))
                .map(|(id, _)| *id)
                .collect();
            let live = self.live_nodes();
            for node in waiting {
                let peer = live[self.rng.random_range(0..live.len())];
                if peer != node {
                    self.fetch(node, peer);
                }
            }
        }
        self.drive();
    }

    // -----------------------------------------------------------------------------------------
    // Membership changes: the runtime's driver (`paxos::driver`), this world's IO
    // -----------------------------------------------------------------------------------------

    /// A node of the current voters that is alive, votes and is not the change's subject.
    fn pick_driver(&mut self, not: NodeId) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .register
            .voters()
            .into_iter()
            .filter(|n| *n != not && self.nodes[n].votes(*n))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    /// Is `id`'s store intact and its start confirmed (`MembershipService::store_confirmed_intact`:
    /// neither refused, nor a store other than the one its membership records, and `q - 1`
    /// voters confirmed this run)? Only such a store acknowledges an install (`actors::membership`: a refused
    /// one may lack what it voted for, and must count in no barrier and no scan); one not
    /// recorded yet is intact (it voted on no client key, so lacks nothing).
    fn intact(&self, id: NodeId) -> bool {
        let node = &self.nodes[&id];
        !node.dead
            && !node.refused
            && node.intact
            && node
                .membership
                .as_ref()
                .is_some_and(|x| x.holds_store_of(id, node.store))
    }

    /// A new driver of `change` on `node`, fenced at `fence`, started.
    fn new_driver(&mut self, change: Change, then: Then, node: NodeId, fence: u64) -> Driving {
        let mut driver = ChangeDriver::new(change, Some(fence));
        let action = driver.start();
        self.next_driver += 1;
        let mut d = Driving {
            id: self.next_driver,
            driver,
            node,
            fence,
            then,
            waiting: Waiting::Read { at: self.now },
        };
        self.act(&mut d, action);
        d
    }

    /// Carries `action` out for `d`: what this world answers at once (the register's
    /// compare-and-set, the joining store's answer) is fed back at once; the rest waits in
    /// `d.waiting` for [`Sim::progress`].
    fn act(&mut self, d: &mut Driving, mut action: Action) {
        loop {
            let event = match action {
                Action::ReadRegister { delay } => {
                    d.waiting = Waiting::Read {
                        at: self.now + delay,
                    };
                    return;
                }
                Action::Install {
                    membership,
                    previous,
                } => {
                    // Here first (the driver's own install), then every other member of both.
                    let n = self.nodes.get_mut(&d.node).unwrap();
                    if n.epoch() < membership.epoch {
                        n.membership = Some(membership.clone());
                    }
                    let mut targets: BTreeSet<NodeId> = membership.nodes().into_iter().collect();
                    targets.extend(previous.nodes());
                    for to in targets.into_iter().filter(|to| *to != d.node) {
                        self.send_install(d.node, to, membership.clone());
                    }
                    let acked = self.intact(d.node).then_some(d.node).into_iter().collect();
                    d.waiting = Waiting::Install {
                        membership,
                        previous,
                        acked,
                        timeout: self.now
                            + Duration::from_millis(if self.steady_driver {
                                *INSTALL_TIMEOUT_MS.end()
                            } else if self.rng.random_bool(SHORT_ROUNDS) {
                                self.rng.random_range(1..=3)
                            } else {
                                self.rng.random_range(INSTALL_TIMEOUT_MS)
                            }),
                    };
                    return;
                }
                Action::ProbeJoining { id } => {
                    let n = &self.nodes[&id];
                    Event::Probed(if n.dead {
                        Err(Error::Unavailable(format!("node {id} does not answer")))
                    } else {
                        Ok(JoiningStore {
                            installed: n.membership.clone(),
                            holds_records: !n.durable.is_empty(),
                        })
                    })
                }
                Action::Settle {
                    membership: _,
                    sources,
                    fast_only,
                } => {
                    d.waiting = Waiting::Settle(Settles {
                        sources,
                        fast_only,
                        scanned: false,
                        settling: BTreeMap::new(),
                        todo: Vec::new(),
                        failures: BTreeMap::new(),
                        total: 0,
                    });
                    return;
                }
                Action::Write { expect, next } => {
                    Event::Written(self.cas_register(d, expect, next))
                }
                Action::Done(result) => {
                    d.waiting = Waiting::Done(result);
                    return;
                }
            };
            action = d.driver.on(event);
        }
    }

    /// The membership register's compare-and-set (its own safety is that of any key), with
    /// an outcome now and then unknown to the driver (its answer lost), applied or not.
    fn cas_register(&mut self, d: &Driving, expect: u64, next: Membership) -> Result<bool, Error> {
        let swapped = self.register_version == expect;
        if swapped {
            // The fence, checked from the outside: a change begins, or an add is given up,
            // only from the epoch its operator read (issue 17, item 5); only continuing the
            // change the register shows may happen at another.
            if !self.register.continues(d.driver.change()) {
                assert_eq!(
                    self.register.epoch,
                    d.fence,
                    "driver {} wrote {:?} for {:?} from epoch {}, its operator read epoch {}",
                    d.id,
                    next.phase,
                    d.driver.change(),
                    self.register.epoch,
                    d.fence
                );
            }
            *self.faults.entry("change step").or_default() += 1;
            self.register = next;
            self.register_version += 1;
        }
        if !self.steady_driver && self.rng.random_bool(0.03) {
            *self.faults.entry("register write unknown").or_default() += 1;
            return Err(Error::Unknown(
                "the register write's answer was lost".into(),
            ));
        }
        Ok(swapped)
    }

    /// Feeds `d` what its action waited for, if it has come.
    fn progress(&mut self, d: &mut Driving) {
        let event = match &mut d.waiting {
            Waiting::Done(_) => return,
            Waiting::Read { at } => {
                if *at > self.now {
                    return;
                }
                if !self.steady_driver && self.rng.random_bool(0.02) {
                    *self.faults.entry("register read failed").or_default() += 1;
                    Event::Register(Err(Error::Unavailable("a slow majority".into())))
                } else {
                    Event::Register(Ok((self.register.clone(), self.register_version)))
                }
            }
            Waiting::Install {
                membership,
                previous,
                acked,
                timeout,
            } => {
                let targets: BTreeSet<NodeId> = membership
                    .nodes()
                    .into_iter()
                    .chain(previous.nodes())
                    .collect();
                // Every member answered, or the calls of the others timed out (whether the
                // acknowledgements make a barrier is the driver's decision, not this world's).
                if targets.is_subset(acked) || self.now >= *timeout {
                    let list: Vec<NodeId> = acked.iter().copied().collect();
                    Event::Installed(Ok(list))
                } else {
                    if self.rng.random_bool(0.05) {
                        let (node, m) = (d.node, membership.clone());
                        for to in targets.difference(acked) {
                            if *to != node {
                                self.send_install(node, *to, m.clone());
                            }
                        }
                    }
                    return;
                }
            }
            Waiting::Settle(settles) => match self.settle_round(d.node, settles) {
                Some(event) => event,
                None => return,
            },
        };
        let action = d.driver.on(event);
        self.act(d, action);
    }

    /// A step's settles on `node`: its keys scanned first, then settled (again, for those
    /// that failed) until each succeeded or one failed too often; the event once they end.
    fn settle_round(&mut self, node: NodeId, s: &mut Settles) -> Option<Event> {
        if !s.scanned {
            self.scan_keys(s);
        }
        if s.take_answers(&mut self.settled) {
            *self.faults.entry("rescan failed").or_default() += 1;
            Some(Event::Settled(Err(Error::Unavailable(
                "keys not settled".into(),
            ))))
        } else if !s.todo.is_empty() {
            let keys = std::mem::take(&mut s.todo);
            let tokens: Vec<(u64, Key)> = keys
                .into_iter()
                .map(|key| (self.settle(node, &key, Waiter::Rescan), key))
                .collect();
            s.settling.extend(tokens);
            None
        } else if s.settling.is_empty() {
            Some(Event::Settled(Ok(s.total)))
        } else {
            None
        }
    }

    /// The scan: every key of the sources (their records as of now, after their install),
    /// only those at the fast ballot in CloseFast.
    fn scan_keys(&mut self, s: &mut Settles) {
        let mut keys: BTreeSet<Key> = BTreeSet::new();
        for source in &s.sources {
            for (k, r) in &self.nodes[source].durable {
                if !s.fast_only || r.accepted == Ballot::FAST {
                    keys.insert(k.clone());
                }
            }
        }
        *self.faults.entry("keys rescanned").or_default() += keys.len() as u32;
        s.total = keys.len() as u64;
        s.todo = keys.into_iter().collect();
        s.scanned = true;
    }

    /// What the operator does with a change's answer: completed (then what it was for), asked
    /// again elsewhere (unavailable: every step is idempotent), or asked again from the
    /// membership as it is now (refused because it changed since they read it).
    fn answered_change(&mut self, d: Driving, result: Result<Membership, Error>) {
        let change = d.driver.change().clone();
        match result {
            Ok(_) => self.finished(change, d.then),
            Err(Error::BadRequest(_)) if self.register.continues(&change) => {
                // Refused at its begin, while another driver of the same request (one the
                // operator stopped waiting for) began it: asked again, it continues.
                *self.faults.entry("change fenced, asked again").or_default() += 1;
                self.changes.push_front((change, d.then));
            }
            Err(Error::BadRequest(_))
                if matches!(change, Change::Add { id, .. }
                    if !self.nodes[&id].durable.is_empty()
                        || self.nodes[&id].cluster() != self.cluster) =>
            {
                // The store to be added holds records (another cluster's, or an unrecorded
                // store wiped, then recorded and voting before its re-add), or it installed
                // another cluster's membership: `admits_joining` refuses it. The operator
                // does as told: an empty directory, and the add again.
                *self
                    .faults
                    .entry("add refused: store holds records")
                    .or_default() += 1;
                let id = change.node();
                self.wipe_store(id);
                self.add_again(id, d.then);
            }
            Err(Error::BadRequest(why)) => {
                assert_ne!(
                    self.register.epoch, d.fence,
                    "the simulation asked for a change the membership refuses: {change:?}: {why}"
                );
                *self.faults.entry("change fenced, asked again").or_default() += 1;
                self.changes.push_front((change, d.then));
            }
            Err(_) => {
                *self.faults.entry("change asked again").or_default() += 1;
                self.rerun(change, d.then, d.fence);
            }
        }
    }

    /// Node `id` is added again, with the store it has now, before any other change.
    fn add_again(&mut self, id: NodeId, then: Then) {
        let add = self.add_of(id);
        self.changes.push_front((add, then));
    }

    /// The change that adds node `id` with its store, as the operator asks for it.
    fn add_of(&self, id: NodeId) -> Change {
        Change::Add {
            id,
            addr: format!("n{id}"),
            store: self.nodes[&id].store,
        }
    }

    /// The operator asks again at another node, with the same fence (the epoch they read).
    fn rerun(&mut self, change: Change, then: Then, fence: u64) {
        match self.pick_driver(change.node()) {
            Some(node) => {
                let d = self.new_driver(change, then, node, fence);
                self.driving = Some(d);
            }
            None => self.changes.push_front((change, then)),
        }
    }

    fn finished(&mut self, change: Change, then: Then) {
        *self
            .faults
            .entry(match change {
                Change::Add { .. } => "add",
                Change::Remove { .. } => "remove",
            })
            .or_default() += 1;
        let id = change.node();
        match then {
            Then::Nothing => {}
            Then::Add => self.add_again(id, Then::Nothing),
            Then::WipeAndAdd => {
                self.wipe_store(id);
                self.add_again(id, Then::Nothing);
            }
        }
    }

    /// The driver's process stopped: its driver is gone, and the operator, whose request
    /// failed, asks again at another node (from the register's step, its work started over).
    fn resume_elsewhere(&mut self) {
        if let Some(d) = self.driving.take() {
            self.rerun(d.driver.change().clone(), d.then, d.fence);
        }
    }

    /// The operator stops waiting for the driver (its client timed out) and asks again at
    /// another node; the first driver runs on, unread.
    fn abandon_driver(&mut self) {
        if let Some(d) = self.driving.take() {
            *self.faults.entry("driver abandoned").or_default() += 1;
            let (change, then, fence) = (d.driver.change().clone(), d.then, d.fence);
            self.zombies.push(d);
            self.rerun(change, then, fence);
        }
    }

    /// Progresses every driver; starts the next change when none runs.
    fn drive(&mut self) {
        for mut z in std::mem::take(&mut self.zombies) {
            if self.nodes[&z.node].dead {
                continue;
            }
            self.progress(&mut z);
            match &z.waiting {
                Waiting::Done(result) => {
                    let seen = if result.is_ok() {
                        "zombie completed"
                    } else {
                        "zombie refused"
                    };
                    *self.faults.entry(seen).or_default() += 1;
                }
                _ => self.zombies.push(z),
            }
        }
        let Some(mut d) = self.driving.take() else {
            let Some((change, then)) = self.changes.pop_front() else {
                return;
            };
            match self.pick_driver(change.node()) {
                Some(node) => {
                    let fence = self.register.epoch;
                    let d = self.new_driver(change, then, node, fence);
                    self.driving = Some(d);
                }
                None => self.changes.push_front((change, then)),
            }
            return;
        };
        if !self.nodes[&d.node].votes(d.node) {
            // The driver's store stopped voting: the operator's request fails there and
            // is asked again elsewhere; the first driver runs on.
            self.driving = Some(d);
            self.abandon_driver();
            return;
        }
        // (only the add of a node that grows the voters: giving up the re-add of a lost
        // disk, or a replacement's new node, would shrink them for good)
        let growing =
            matches!(d.driver.change(), Change::Add { id, .. } if self.growing.contains(id));
        if growing
            && self.register.continues(d.driver.change())
            && self.rng.random_bool(GIVE_UP_ADD_RATE)
        {
            // The joining node dies during its add, and the operator gives the add up by
            // removing it, fenced at the epoch they read: the step's work (a rescan that
            // waits for the dead node) is skipped by `Membership::work_before_next`. The
            // add's driver runs on until it fails.
            let id = d.driver.change().node();
            *self.faults.entry("add given up").or_default() += 1;
            self.growing.remove(&id);
            self.nodes.get_mut(&id).unwrap().dead = true;
            self.restart(id);
            self.zombies.push(d);
            self.changes
                .push_front((Change::Remove { id }, Then::Nothing));
            return;
        }
        self.progress(&mut d);
        match std::mem::replace(&mut d.waiting, Waiting::Read { at: self.now }) {
            Waiting::Done(result) => self.answered_change(d, result),
            waiting => {
                d.waiting = waiting;
                self.driving = Some(d);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    /// An acceptor crash: every loaded acceptor of the node reloads from its durable record.
    fn crash_acceptors(&mut self, node: NodeId) {
        *self.faults.entry("acceptor crash").or_default() += 1;
        let n = self.nodes.get_mut(&node).unwrap();
        n.acceptors.clear();
        lose_commits(n, &mut self.faults);
    }

    /// The node's process starts again: no acceptor loaded, no proposer, its callers
    /// forgotten (unknown outcomes). On an intact store it votes at once.
    /// A new process on the node's disk: what it held in memory is gone (its acceptors, its
    /// proposers, its watch, whether its store was found refused: `say_hello` decides that
    /// again).
    fn restart(&mut self, node: NodeId) {
        let n = self.nodes.get_mut(&node).unwrap();
        n.acceptors.clear();
        lose_commits(n, &mut self.faults);
        n.proposers.clear();
        n.suspects = Suspects::default();
        n.refused = false;
        n.intact = false;
        n.link = 0;
        n.confirmation = identity::Confirmation::default();
        n.watch = Sequencer::new(WATCH_GAP_WAIT, None, crate::watch::MAX_WATCH_KEYS);
        n.keeper = keeper::Keeper::new(n.keeper.clock());
        self.watched.end_stream(node);
        // A node dead for good ends the lists it served (nothing is recorded): left in
        // progress, their read rounds would start on proposers that no tick runs (seed 20,
        // once announcements changed the schedule). A restarted node's lists go on, through
        // its new proposers.
        if n.dead {
            let before = self.lists.len();
            self.lists.retain(|_, l| l.node != node);
            if self.lists.len() < before {
                *self.faults.entry("lists lost with their node").or_default() += 1;
            }
        }
        self.forget_tokens(|owner, _| owner == node);
        // Its drivers are gone with the process.
        self.zombies.retain(|z| z.node != node);
        if self.driving.as_ref().is_some_and(|d| d.node == node) {
            *self.faults.entry("driver restart").or_default() += 1;
            self.resume_elsewhere();
        }
    }

    /// An orchestrator restarts a node on an older copy of its directory (its `/health`
    /// answers 503 while it waits, refused or not yet): it must never vote.
    fn restart_refused(&mut self) {
        let copies: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.rolled_back && !n.dead)
            .map(|(id, _)| *id)
            .collect();
        if let Some(&node) = copies.get(self.rng.random_range(0..copies.len().max(1))) {
            *self.faults.entry("refused restart").or_default() += 1;
            self.restart(node);
            self.say_hello(node);
        }
    }

    fn restart_intact(&mut self, node: NodeId) {
        *self.faults.entry("intact restart").or_default() += 1;
        self.restart(node);
        self.say_hello(node);
    }

    /// A node's start, as `actors::membership::start::run`: the store's refusal mark
    /// first, then rounds of `Hello`s through the network (each at a new generation, raised
    /// durably first), decided by the runtime's own `identity::Confirmation`: the node votes
    /// once `q - 1` voters confirmed this run, and a refusing answer marks the store for
    /// good. Peers answer from (and update) what they remember of the store, as
    /// `identity::judge_hello` says; a refused peer answers nobody.
    fn say_hello(&mut self, node: NodeId) {
        let now = self.now;
        self.next_token += 1;
        let (link, call) = (self.next_token, self.rng.random::<u64>().max(1));
        let delay = Duration::from_millis(self.rng.random_range(30..=80));
        let n = self.nodes.get_mut(&node).unwrap();
        if n.marked {
            n.refused = true;
            return;
        }
        if n.confirmation.needs_round(n.membership.as_ref()) {
            let (round, fresh) = identity::begin_round(n.generation, n.pending, call);
            if fresh {
                n.generation = round.generation;
                n.pending = Some(round);
            }
            n.confirmation.begin(round, fresh);
        }
        let round = n.confirmation.round().expect("begun");
        n.next_round = now + delay;
        n.link = link;
        let store = n.store;
        let peers = n
            .membership
            .as_ref()
            .map(|m| n.confirmation.unconfirmed(m, node))
            .unwrap_or_default();
        for peer in peers {
            self.call(
                node,
                peer,
                self.nodes[&node].epoch(),
                self.nodes[&node].cluster(),
                Payload::Hello { store, round, link },
            );
        }
    }

    /// `node` got `peer`'s answer to its `Hello` of `round`.
    fn hello_answered(&mut self, node: NodeId, peer: NodeId, round: identity::Round, seen: u64) {
        let now = self.now;
        let n = self.nodes.get_mut(&node).unwrap();
        if n.marked {
            return;
        }
        match n.confirmation.on_answer(peer, round, seen) {
            Ok(()) => {
                let cleared = n
                    .membership
                    .as_ref()
                    .and_then(|m| n.confirmation.to_clear(m));
                if cleared.is_some() && n.pending == cleared {
                    n.pending = None;
                }
                if n.confirmation.needs_round(n.membership.as_ref()) {
                    n.next_round = now; // a retried round was confirmed: a fresh one now
                }
                if !n.intact
                    && n.membership
                        .as_ref()
                        .is_some_and(|m| n.confirmation.is_confirmed(m))
                {
                    n.intact = true;
                    assert!(
                        !n.rolled_back,
                        "node {node}: an older copy of its store was confirmed by its peers"
                    );
                }
            }
            Err(_) => {
                n.marked = true;
                n.refused = true;
                n.intact = false;
                assert!(
                    n.rolled_back,
                    "node {node}: an intact store was refused as an older copy"
                );
                *self.faults.entry("older copy refused").or_default() += 1;
            }
        }
    }

    /// A node of **another cluster** at this cluster's addresses (bootstrapped from a config
    /// of other nodes, or of the same nodes under another token), claiming to be member `f`
    /// and at the target's own epoch, so that only the cluster identity tells it: an Accept
    /// of a value no client wrote at a ballot above any in use, a Prepare, or an `Install`
    /// of its membership, newer than the target's, in which the target is the only voter,
    /// pushed, or as the answer to the target's pull. Each would break the history if taken
    /// (the value read back, or one node choosing alone); `paxos::admission::same_cluster`
    /// and `Membership::installs_over` refuse them.
    fn inject_foreign(&mut self) {
        *self.faults.entry("foreign frames").or_default() += 1;
        let to = self.random_node();
        let from = self.random_node();
        let epoch = self.nodes[&to].epoch().max(1);
        let foreign = self.cluster ^ (1 << 63);
        let key = match self.rng.random_range(0..3) {
            0 => HOT.to_vec(),
            1 => format!("once-{:02}", self.rng.random_range(0..ONCE_KEYS)).into_bytes(),
            _ => format!("cool-{}", self.rng.random_range(0..COOL_KEYS)).into_bytes(),
        };
        let ballot = Ballot::new((1 << 40) + self.rng.random_range(0..1_000), from);
        let payload = match self.rng.random_range(0..4) {
            0 => Payload::Paxos(PeerMessage::Accept {
                ballot,
                state: Register {
                    version: 1_000_000,
                    value: Some(b"foreign".to_vec()),
                    ..Register::default()
                },
                next: None,
            }),
            1 => Payload::Paxos(PeerMessage::Prepare { ballot }),
            kind => {
                let mut takeover = Membership::bootstrap([(to, format!("n{to}"))], "other");
                takeover.cluster = foreign;
                takeover.epoch = epoch + 3;
                takeover.members[0].store = self.nodes[&to].store;
                // Pushed, or as the answer to the target's pull (which the runtime's other
                // node refuses to give a caller of another cluster; a target with none
                // installed asks its own cluster's nodes here).
                if kind == 2 || self.nodes[&to].membership.is_none() {
                    Payload::Install(takeover)
                } else {
                    Payload::Fetched(takeover)
                }
            }
        };
        self.net.push(InFlight {
            from,
            to,
            key,
            proposer: self.rng.random(),
            epoch,
            cluster: foreign,
            payload,
        });
    }

    /// The new node `id` is started on a directory that served another cluster (staging,
    /// with the same key names): its membership is that cluster's, and most of the time it
    /// holds records of the workload's keys at ballots above any in use, with values no
    /// client wrote. `member add` must refuse it (`Membership::admits_joining`): taken, its
    /// records would win the add's rescan (review of issue 11, item 3). The operator then
    /// gives it an empty directory and adds it again.
    fn plant_foreign_store(&mut self, id: NodeId) {
        *self.faults.entry("foreign store").or_default() += 1;
        let mut theirs = Membership::bootstrap([(id, format!("n{id}"))], "staging");
        theirs.cluster = self.cluster ^ (1 << 62);
        // Three kinds, so that each of `admits_joining`'s rules is the only one that refuses
        // one of them: records and staging's membership; records and no membership (its
        // membership record lost: it then pulls this cluster's); no records and staging's
        // membership, at an epoch below this cluster's.
        let kind = self.rng.random_range(0..3);
        theirs.epoch = match kind {
            2 => self.register.epoch.saturating_sub(1).max(1),
            _ => self.register.epoch + self.rng.random_range(0..3),
        };
        let mut records = BTreeMap::new();
        if kind < 2 {
            let ballot = Ballot::new((1 << 41) + self.rng.random_range(0..1_000), id);
            for key in std::iter::once(HOT.to_vec())
                .chain((0..ONCE_KEYS).map(|i| format!("once-{i:02}").into_bytes()))
            {
                let record = AcceptorRecord {
                    promised: ballot,
                    accepted: ballot,
                    state: Register {
                        version: 1_000_000,
                        value: Some(b"staging".to_vec()),
                        ..Register::default()
                    },
                    fast_unknown: false,
                };
                records.insert(key, record);
            }
        }
        // (staging recorded another store for it: it votes in neither cluster, so no client
        // of this one is ever answered by staging)
        theirs.members[0].store = self.rng.random::<u64>() | 1;
        let n = self.nodes.get_mut(&id).unwrap();
        n.membership = (kind != 1).then_some(theirs);
        n.durable = records;
        n.acceptors.clear();
        lose_commits(n, &mut self.faults);
    }

    /// A copy of a stopped node's data directory, after which the node runs again (so that
    /// its peers see a later generation of its store: a rollback to the copy is then one the
    /// design claims to detect; a copy of a running node's latest run is not, see
    /// `paxos::identity`).
    fn take_copy(&mut self, node: NodeId) {
        let n = &self.nodes[&node];
        if n.dead || n.refused {
            return;
        }
        let copy = Snapshot {
            durable: n.durable.clone(),
            store: n.store,
            generation: n.generation,
            pending: n.pending,
            marked: n.marked,
            seen: n.seen.clone(),
        };
        self.snapshots.insert(node, copy);
        self.restart_intact(node);
    }

    /// A new, empty store for `node` (it learns a membership from a live peer).
    fn wipe_store(&mut self, node: NodeId) {
        let store = self.rng.random::<u64>() | 1 << 63;
        let peer_membership = self
            .live_nodes()
            .into_iter()
            .filter(|n| *n != node)
            .filter_map(|n| self.nodes[&n].membership.clone())
            .max_by_key(|m| m.epoch);
        let n = self.nodes.get_mut(&node).unwrap();
        n.durable.clear();
        lose_commits(n, &mut self.faults);
        n.store = store;
        n.refused = false;
        n.generation = 0;
        n.pending = None;
        n.marked = false;
        n.rolled_back = false;
        n.seen.clear();
        n.membership = peer_membership;
        self.restart(node);
        self.say_hello(node);
    }

    /// A node loses its disk (wiped, or an older copy): it never votes with it, and rejoins
    /// as a new member. Nothing is fenced: every message in flight stays in flight.
    fn lose_disk(&mut self, node: NodeId, rollback: bool) {
        // (a rollback needs a copy of this node taken since the last lost store)
        let rollback = rollback && self.snapshots.contains_key(&node);
        *self
            .faults
            .entry(if rollback { "rollback" } else { "wipe" })
            .or_default() += 1;
        let id = node;
        let copy = self.snapshots.remove(&node);
        // Every other copy goes too: a rollback past a lost store (whose memory of the
        // node's later runs went with it) is outside what `paxos::identity` claims to detect.
        self.snapshots.clear();
        if rollback {
            let copy = copy.expect("checked above");
            if self.rng.random_bool(0.3) {
                // The node first started once on an empty directory (a new store, whose
                // `Hello`s the peers remember apart from the real store's: item 1 (b)).
                *self
                    .faults
                    .entry("empty start before a rollback")
                    .or_default() += 1;
                self.wipe_store(node);
            }
            let n = self.nodes.get_mut(&node).unwrap();
            n.durable = copy.durable;
            lose_commits(n, &mut self.faults);
            n.store = copy.store;
            n.generation = copy.generation;
            n.pending = copy.pending;
            n.marked = copy.marked;
            n.seen = copy.seen;
            n.rolled_back = true;
            if self.rng.random_bool(0.5) {
                // Restored while cut off from its peers (until the rotating isolation moves
                // on): its rounds and restarts go unanswered for a while, and must not raise
                // its generation past what they saw (seed 804).
                self.isolated = vec![node];
            }
            self.restart(node);
            // Its peers saw the run after the copy: the store must be refused (by
            // `identity`'s decisions, through the network, not by the simulation's say-so),
            // never confirmed, and stay refused through the restarts an orchestrator makes
            // (`Sim::restart_refused`). Checked when its answers arrive.
            self.say_hello(node);
            self.changes
                .push_back((Change::Remove { id }, Then::WipeAndAdd));
        } else {
            self.wipe_store(node);
            self.changes.push_back((Change::Remove { id }, Then::Add));
        }
    }

    /// A node whose store the membership does not record yet (the bootstrap's 0) records
    /// it, as `Start::record_store` does: a step of the register that changes no voter, at
    /// the next epoch, installed everywhere; during a change too (the runtime allows it, or
    /// a change whose quorums need the unrecorded votes would wait for ever), when the
    /// change's driver, whose compare-and-set then fails, redoes its step at the new epoch.
    fn record_store(&mut self) {
        let unrecorded = self.register.members.iter().find(|m| {
            m.store == 0
                && self
                    .nodes
                    .get(&m.id)
                    .is_some_and(|n| !n.dead && !n.refused && n.intact)
        });
        let Some(id) = unrecorded.map(|m| m.id) else {
            return;
        };
        *self.faults.entry("store recorded").or_default() += 1;
        let mut next = self.register.clone();
        next.epoch += 1;
        let store = self.nodes[&id].store;
        next.members
            .iter_mut()
            .filter(|m| m.id == id)
            .for_each(|m| m.store = store);
        self.register = next.clone();
        self.register_version += 1;
        for to in self.live_nodes() {
            self.send_install(id, to, next.clone());
        }
    }

    /// A node not recorded yet, alive and not refused (for faults).
    fn random_unrecorded(&mut self) -> Option<NodeId> {
        let ids: Vec<NodeId> = self
            .register
            .members
            .iter()
            .filter(|m| m.store == 0)
            .map(|m| m.id)
            .filter(|id| self.nodes.get(id).is_some_and(|n| !n.dead && !n.refused))
            .collect();
        (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())])
    }

    /// A voter dies for good; a new node is added, then the dead one removed.
    fn replace(&mut self, dead: NodeId) {
        *self.faults.entry("replace").or_default() += 1;
        self.snapshots.clear(); // as for a lost disk
        self.nodes.get_mut(&dead).unwrap().dead = true;
        self.restart(dead);
        let id = self.add_new_node();
        let add = self.add_of(id);
        self.changes.push_back((add, Then::Nothing));
        self.changes
            .push_back((Change::Remove { id: dead }, Then::Nothing));
    }

    /// A new node process with an empty store, waiting to be added.
    fn add_new_node(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        let m = self
            .nodes
            .values()
            .filter_map(|n| n.membership.clone())
            .max_by_key(|m| m.epoch);
        let store = self.rng.random::<u64>() | 1 << 63;
        let clock = self.keeping.clock(self.now);
        self.nodes.insert(id, Node::new(store, m, clock, self.now));
        self.say_hello(id);
        id
    }

    /// Callers of proposers that stopped never hear back: unknown outcomes.
    fn forget_tokens(&mut self, lost: impl Fn(NodeId, &[u8]) -> bool) {
        let tokens: Vec<u64> = self
            .owner
            .iter()
            .filter(|(_, (n, k))| lost(*n, k))
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.owner.remove(&token);
            match self.waiters.remove(&token) {
                Some(Waiter::Rescan) => {
                    self.settled.insert(token, false);
                }
                // The list's coordinator lost the round (its proposer crashed): the list
                // fails, as the runtime's answers "unavailable".
                Some(Waiter::ListRead(list, key)) => {
                    let lost = Err(Error::Unavailable("the key's proposer stopped".into()));
                    self.list_read(list, key, lost);
                }
                Some(Waiter::Keeper(node, id, _)) => {
                    let lost = Err(Error::Unknown("the lease's proposer stopped".into()));
                    self.keeper_answered(node, id, lost);
                }
                _ => {}
            }
        }
    }

    /// Replaces a proposer in the middle of a round with a fresh instance (a crash); its
    /// replies are still in flight, and the next command for its key on that node goes
    /// through the new instance.
    fn restart_proposer(&mut self) {
        let live: Vec<(NodeId, Key)> = self
            .nodes
            .iter()
            .flat_map(|(n, node)| {
                node.proposers
                    .iter()
                    .filter(|(_, p)| !p.is_idle())
                    .map(|(k, _)| (*n, k.clone()))
            })
            .collect();
        if live.is_empty() {
            return;
        }
        let (node, key) = live[self.rng.random_range(0..live.len())].clone();
        *self.faults.entry("proposer restart").or_default() += 1;
        self.nodes.get_mut(&node).unwrap().proposers.remove(&key);
        self.forget_tokens(|n, k| n == node && k == key.as_slice());
    }

    /// The anti-entropy sweep of one voting node: settle what it holds at the fast ballot.
    fn sweep(&mut self, node: NodeId) {
        if !self.nodes[&node].votes(node) {
            return;
        }
        let unsettled: Vec<Key> = self.nodes[&node]
            .durable
            .iter()
            .filter(|(_, r)| r.is_unsettled())
            .map(|(k, _)| k.clone())
            .collect();
        *self.faults.entry("sweep").or_default() += 1;
        for key in unsettled {
            self.settle(node, &key, Waiter::Sweep);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Invariants
    // -----------------------------------------------------------------------------------------

    /// Invariants that must hold after every step, for every key.
    fn check_invariants(&self) {
        for (id, n) in &self.nodes {
            // (issue 17, item 1: a refusal sticks, and an older copy never votes)
            assert!(
                !(n.rolled_back && n.votes(*id)),
                "node {id}: an older copy of its store votes"
            );
            // (item 4: a store the membership never recorded holds no vote on a client key,
            // so losing it in the bootstrap window loses no write)
            if self.register.member(*id).is_some_and(|m| m.store == 0) {
                assert!(
                    n.durable.is_empty(),
                    "node {id}: a store the membership does not record holds votes on {:?}",
                    n.durable
                        .keys()
                        .map(|k| String::from_utf8_lossy(k))
                        .collect::<Vec<_>>()
                );
            }
        }
        let mut keys: BTreeSet<&Key> = BTreeSet::new();
        for node in self.nodes.values() {
            keys.extend(node.durable.keys());
        }
        for key in keys {
            self.check_key(key);
        }
    }

    /// The invariants of one key; returns the versions found chosen.
    fn check_key(&self, key: &Key) -> Vec<u64> {
        for (id, node) in &self.nodes {
            if let Some(a) = node.acceptors.get(key) {
                let rec = a.record();
                let in_flight = node.commits.get(key);
                // One classic ballot carries one state (several may be accepted at the fast
                // ballot, at most one chosen). A write still in flight may be the first of
                // its ballot: none durable yet.
                if rec.accepted != Ballot::ZERO && rec.accepted != Ballot::FAST {
                    let known = self.accepted.get(&(key.clone(), rec.accepted));
                    assert!(
                        known == Some(&rec.state) || (known.is_none() && in_flight.is_some()),
                        "node {id} holds a second state for ballot {}",
                        rec.accepted
                    );
                }
                // What an acceptor holds in memory is durable, but for its one write in flight,
                // whose reply is not sent yet.
                let expected = match in_flight {
                    Some(c) => c.record.clone(),
                    None => node.durable.get(key).cloned().unwrap_or_default(),
                };
                assert_eq!(*rec, expected, "node {id} answered from memory only");
            }
        }
        // Versions grow with ballots: a state still held at a higher ballot never has a lower
        // version than one chosen below it (held by a majority of the current voters at a
        // classic ballot, or by a fast quorum of them at the fast ballot, while no change is
        // in progress). States no acceptor holds any more (a lost disk's) can no longer be
        // carried forward and are left out.
        let held: BTreeSet<Ballot> = self
            .nodes
            .values()
            .filter_map(|n| n.durable.get(key).map(|r| r.accepted))
            .collect();
        let voters = self.register.voters();
        let quorums = Quorums::new(voters.len());
        let voting: Vec<&AcceptorRecord> = voters
            .iter()
            .filter(|v| self.nodes[v].votes(**v))
            .filter_map(|v| self.nodes[v].durable.get(key))
            .collect();
        let classic = tally(
            voting
                .iter()
                .filter(|r| r.accepted > Ballot::FAST)
                .map(|r| r.accepted),
        );
        let mut chosen: Vec<(Ballot, u64)> = classic
            .iter()
            .filter(|(_, c)| *c >= quorums.classic())
            .map(|(b, _)| (*b, self.accepted[&(key.clone(), *b)].version))
            .collect();
        if self.register.fast_allowed() {
            let fast = tally(
                voting
                    .iter()
                    .filter(|r| r.accepted == Ballot::FAST)
                    .map(|r| &r.state),
            );
            chosen.extend(
                fast.iter()
                    .filter(|(_, n)| *n >= quorums.fast())
                    .map(|(s, _)| (Ballot::FAST, s.version)),
            );
        }
        for &(b, v) in &chosen {
            let lo = (key.clone(), b);
            let hi = (key.clone(), Ballot::new(u64::MAX, NodeId::MAX));
            let live = self
                .accepted
                .range(lo..=hi)
                .filter(|((_, b), _)| held.contains(b));
            for ((_, higher), s) in live {
                assert!(
                    s.version >= v,
                    "key {key:?}: ballot {higher} lost the version chosen at {b}"
                );
            }
        }
        chosen.into_iter().map(|(_, v)| v).collect()
    }

    /// A random live node (any: clients may use non-members, whose proposers still work).
    fn random_node(&mut self) -> NodeId {
        let live = self.live_nodes();
        live[self.rng.random_range(0..live.len())]
    }

    /// A random voter that votes and is no change's subject (for faults).
    fn random_healthy_voter(&mut self) -> Option<NodeId> {
        self.random_healthy_voter_where(|_, _| true)
    }

    /// [`Sim::random_healthy_voter`], among those `fits` picks.
    fn random_healthy_voter_where(
        &mut self,
        fits: impl Fn(&Sim, NodeId) -> bool,
    ) -> Option<NodeId> {
        let busy: BTreeSet<NodeId> = self
            .changes
            .iter()
            .map(|(c, _)| c.node())
            .chain(self.driving.as_ref().map(|d| d.driver.change().node()))
            .collect();
        let candidates: Vec<NodeId> = self
            .register
            .voters()
            .into_iter()
            .filter(|n| !busy.contains(n) && self.nodes[n].votes(*n) && fits(self, *n))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    fn quiet(&self) -> bool {
        self.driving.is_none() && self.changes.is_empty()
    }
}

// -----------------------------------------------------------------------------------------
// Lists: `actors::list`'s scan of the voters and its per-key rule (`paxos::listing`)
// -----------------------------------------------------------------------------------------

impl Sim {
    /// A list of `prefix` asked of `node`: its pages one after another, each a scan of the
    /// voters of its epoch merged by key.
    fn start_list(&mut self, node: NodeId, prefix: &[u8]) {
        self.start_list_of(node, prefix, None);
    }

    /// A list of `prefix` asked of `node`, for its keeper's scan `scan` if it is one (which
    /// goes on to the prefix's end); the list's id (`None`: the node has no membership to
    /// ask).
    fn start_list_of(&mut self, node: NodeId, prefix: &[u8], scan: Option<u64>) -> Option<u64> {
        let mut page = self.page_of(node, prefix.to_vec(), None, scan.is_some())?;
        *self.faults.entry("lists").or_default() += 1;
        page.scan = scan;
        page.pages_left = match scan {
            Some(_) => u32::MAX,
            None => self.rng.random_range(0..=6),
        };
        self.next_list += 1;
        let list = self.next_list;
        self.lists.insert(list, page);
        self.ask_scan(list);
        Some(list)
    }

    /// A page of `prefix` after `after` asked of `node` now, at its epoch, sized at random
    /// (down to pages of one key and scan pages of one record, so that a list pages often and
    /// its merge meets pages of every shape); `None` if the node has no membership.
    fn page_of(
        &mut self,
        node: NodeId,
        prefix: Key,
        after: Option<Key>,
        reserved: bool,
    ) -> Option<Listing> {
        let m = self.nodes[&node].membership.clone()?;
        let voters = m.voters();
        // `Aim::whole_scans`: pages that ask every voter for the whole prefix (a thousand
        // keys), half of them full by their bytes at their first item, and that pass over
        // one to five keys at most, so that a first page of the prefix `\0` fills at
        // `\0once-00` just as the cluster's own keys cut it, `\0~once-01` after them.
        let whole = self.scan_answer_bytes.is_some();
        let (limit, max_bytes) = if whole {
            let bytes = self.rng.random_range(20..=600);
            (1000, if self.rng.random_bool(0.5) { 20 } else { bytes })
        } else {
            let limit = [1, 2, 3, 5, 1000][self.rng.random_range(0..5)];
            (limit, self.rng.random_range(20..=600))
        };
        let spec = PageSpec {
            prefix,
            after,
            limit,
            max_bytes,
            keys_only: false,
            with_deleted: false,
            reserved,
        };
        let slack = self.rng.random_range(0..=3);
        let sizes = if whole {
            ScanSizes {
                slack,
                most: 4096,
                skipped: [1, 2, 5][self.rng.random_range(0..3)],
            }
        } else {
            ScanSizes {
                slack,
                most: [1, 2, 4, 4096][self.rng.random_range(0..4)],
                skipped: [1, 2, 5, 1_000_000][self.rng.random_range(0..4)],
            }
        };
        Some(Listing {
            node,
            call: self.elapsed(),
            page: PageScan::new(spec, voters.len(), m.quorums(), sizes),
            voters,
            epoch: m.epoch,
            cluster: m.cluster,
            asking: BTreeMap::new(),
            deadline: self.now,
            batch: None,
            reading: BTreeSet::new(),
            read: BTreeMap::new(),
            scan: None,
            pages_left: 0,
        })
    }

    /// The scan pages `list`'s page asks for now, sent to their voters.
    fn ask_scan(&mut self, list: u64) {
        let deadline = self.now + Duration::from_millis(self.rng.random_range(20..=300));
        let l = self.lists.get_mut(&list).expect("listed");
        l.deadline = deadline;
        let mut sends = Vec::new();
        for ask in l.page.asks() {
            self.next_ask += 1;
            l.asking.insert(ask.voter, self.next_ask);
            let payload = Payload::Scan {
                list,
                ask: self.next_ask,
                prefix: l.page.spec().prefix.clone(),
                after: ask.after,
                limit: ask.limit,
            };
            sends.push((l.voters[ask.voter], payload));
        }
        let (node, epoch, cluster) = (l.node, l.epoch, l.cluster);
        for (to, payload) in sends {
            self.net.push(InFlight {
                from: node,
                to,
                key: Vec::new(),
                proposer: 0,
                epoch,
                cluster,
                payload,
            });
        }
    }

    /// `to` answers a scan only at the caller's epoch, of its own cluster, with a store
    /// confirmed intact (`actors::calls::CallServer::scan`); a refusal is an answer that
    /// never comes. Its page is `Store::scan_prefix`'s: the records under the prefix after
    /// `after`, at most `limit` and at most its bytes (the first whatever its size; each
    /// node's budget differs, down to a record or two a page).
    fn answer_scan(
        &mut self,
        from: NodeId,
        to: NodeId,
        epoch: u64,
        cluster: u64,
        asked: ScanAsked,
    ) {
        let node = &self.nodes[&to];
        let serves = listing::serves_scan(node.epoch(), epoch, self.intact(to));
        if !admission::serves_call(node.cluster(), cluster, true) || !serves {
            *self.faults.entry("scans refused").or_default() += 1;
            return;
        }
        let max_bytes = self
            .scan_answer_bytes
            .unwrap_or(150 + 250 * (to as usize % 3));
        let prefix = &asked.prefix;
        let lower = match &asked.after {
            Some(after) if after >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.clone()),
        };
        let (mut records, mut bytes, mut more) = (Vec::new(), 0, false);
        for (key, record) in node.durable.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let size = key.len() + postcard::experimental::serialized_size(record).unwrap_or(0);
            let full = records.len() == asked.limit as usize;
            if full || (!records.is_empty() && bytes + size > max_bytes) {
                more = true;
                break;
            }
            bytes += size;
            records.push(SyncRecord {
                key: key.clone(),
                record: record.clone(),
            });
        }
        let payload = Payload::Scanned {
            list: asked.list,
            ask: asked.ask,
            records,
            more,
        };
        self.call(to, from, epoch, cluster, payload);
    }

    /// A voter's scan page arrived: taken if it answers the ask in flight for that voter.
    fn scanned(&mut self, from: NodeId, list: u64, ask: u64, records: Vec<SyncRecord>, more: bool) {
        let Some(l) = self.lists.get_mut(&list) else {
            return;
        };
        let Some(voter) = l.voters.iter().position(|v| *v == from) else {
            return;
        };
        if l.asking.get(&voter) == Some(&ask) {
            l.asking.remove(&voter);
            l.page.answered(voter, Ok((records, more)));
        }
    }

    /// Lists whose asks are all answered or timed out: the next batch of keys, each decided
    /// from the records where a quorum shows it chosen and read with a round otherwise; a
    /// scan that fewer than a quorum answered fails (nothing recorded: a list changes
    /// nothing).
    fn progress_lists(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .lists
            .iter()
            .filter(|(_, l)| l.batch.is_none() && (l.asking.is_empty() || now >= l.deadline))
            .map(|(id, _)| *id)
            .collect();
        for list in due {
            let l = self.lists.get_mut(&list).expect("listed");
            for voter in std::mem::take(&mut l.asking).into_keys() {
                *self.faults.entry("scan asks unanswered").or_default() += 1;
                l.page.answered(voter, Err("no answer in time".into()));
            }
            let batch = match l.page.batch() {
                Err(_) => {
                    *self.faults.entry("lists unavailable").or_default() += 1;
                    self.lists.remove(&list);
                    continue;
                }
                Ok(None) => {
                    let l = self.lists.remove(&list).expect("listed");
                    self.page_done(list, l, None);
                    continue;
                }
                Ok(Some(batch)) => batch,
            };
            let undecided: Vec<Key> = batch
                .iter()
                .filter(|(_, quick)| quick.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            let node = l.node;
            // Every read is counted as outstanding before the first is submitted: a proposer
            // may answer at once (a node that is no member of its membership), and the batch
            // must not be decided on the first answer.
            l.reading.extend(undecided.iter().cloned());
            l.batch = Some(batch);
            for key in undecided {
                *self.faults.entry("list read rounds").or_default() += 1;
                let token = self.token(Waiter::ListRead(list, key.clone()), node, &key);
                let (now, deadline) = (self.now, self.now + Duration::from_millis(400));
                let mut out = Vec::new();
                self.proposer(node, &key).submit(
                    now,
                    token,
                    Command::Get,
                    None,
                    false,
                    deadline,
                    &mut out,
                );
                self.effects(node, &key, out);
            }
            self.decide_if_read(list);
        }
    }

    /// A list's read round answered: the key's state, or `None` if the round failed.
    fn list_read(&mut self, list: u64, key: Key, result: Result<Outcome, Error>) {
        let Some(l) = self.lists.get_mut(&list) else {
            return;
        };
        l.reading.remove(&key);
        let state = match result {
            Ok(Outcome::Get { value, version }) => Some((value, version)),
            _ => None,
        };
        l.read.insert(key, state);
        self.decide_if_read(list);
    }

    /// Once a batch's read rounds are answered, its keys are offered to the page in order (a
    /// failed read fails the list only if the page reaches its key, as in the runtime's
    /// stream): the page once it is complete, else the next scan asks.
    fn decide_if_read(&mut self, list: u64) {
        // (Gone: finished already, by a read answered at once.)
        let Some(l) = self.lists.get_mut(&list).filter(|l| l.reading.is_empty()) else {
            return;
        };
        let Some(batch) = l.batch.take() else {
            return;
        };
        let mut read = std::mem::take(&mut l.read);
        for (key, quick) in batch {
            let state = match quick {
                Some(state) => state,
                None => match read.remove(&key).flatten() {
                    Some(state) => state,
                    None => {
                        *self.faults.entry("lists failed on a read").or_default() += 1;
                        self.lists.remove(&list);
                        return;
                    }
                },
            };
            if let Some(page) = l.page.offer(key, state) {
                let l = self.lists.remove(&list).expect("listed");
                self.page_done(list, l, Some(page));
                return;
            }
        }
        self.ask_scan(list);
    }

    /// A page of `list` is complete (`None`: the prefix was exhausted before it filled):
    /// checked for its shape, put into the history (or given to the keeper whose scan it
    /// is), and the list's next page asked if it goes on.
    fn page_done(&mut self, list: u64, l: Listing, page: Option<ListPage>) {
        let Listing {
            node,
            call,
            page: scan_page,
            scan,
            pages_left,
            ..
        } = l;
        let spec = scan_page.spec().clone();
        let cut_scanned = scan_page.cut_with_the_prefix_scanned();
        let page = page.unwrap_or_else(|| scan_page.finish());
        if cut_scanned
            && page.next.is_some()
            && page.next.as_ref() == page.items.last().map(|i| &i.key)
        {
            // Only the cut says that keys follow this page's last item.
            *self
                .faults
                .entry("list pages filled before a cut, the whole prefix scanned")
                .or_default() += 1;
        }
        // A page holds keys of its prefix after its `after`, in strictly increasing order
        // (so each once), and its `next` is its last key, or a key of its prefix after it
        // (the last it passed over: every key up to `next` is decided by this page, checked
        // in `record_page`).
        let mut last = spec.after.as_ref();
        for item in &page.items {
            assert!(
                item.key.starts_with(&spec.prefix) && last.is_none_or(|last| item.key > *last),
                "list {list}: a page's keys out of order, repeated, or outside its prefix: {:?}",
                page.items.iter().map(|i| &i.key).collect::<Vec<_>>()
            );
            last = Some(&item.key);
        }
        if let Some(next) = &page.next {
            assert!(
                next.starts_with(&spec.prefix) && last.is_none_or(|last| next >= last),
                "list {list}: a page's next {next:?} is outside its prefix or before its last key"
            );
            if page.items.last().map(|i| &i.key) != Some(next) {
                *self
                    .faults
                    .entry("list pages ended past their last item")
                    .or_default() += 1;
            }
        }
        // Within its count, and its bytes unless it holds one item (taken whatever its size).
        let bytes: usize = page
            .items
            .iter()
            .map(|i| i.key.len() + i.value.as_ref().map_or(0, Vec::len) + 16)
            .sum();
        assert!(
            page.items.len() <= spec.limit && (page.items.len() <= 1 || bytes <= spec.max_bytes),
            "list {list}: a page of {} items and {bytes} bytes, over its {} items or {} bytes",
            page.items.len(),
            spec.limit,
            spec.max_bytes
        );
        *self.faults.entry("list pages").or_default() += 1;
        let next_is_last = page.next.as_ref() == page.items.last().map(|i| &i.key);
        if page.next.is_some() && next_is_last && page.items.len() < spec.limit {
            *self
                .faults
                .entry("list pages ended by their bytes")
                .or_default() += 1;
        }
        if page.next.is_none() && scan.is_none() {
            *self.faults.entry("lists to their end").or_default() += 1;
        }
        for item in &page.items {
            self.seen_chosen(&item.key, item.version);
        }
        match scan {
            Some(scan) => {
                let leases = page
                    .items
                    .iter()
                    .filter(|i| keeper::is_lease_register(&i.key))
                    .filter_map(|i| Some((i.key.clone(), i.value.clone()?, i.version)))
                    .collect();
                self.keeper_scanned(node, list, scan, leases, page.next.is_none());
            }
            None => self.record_page(list, call, &spec, &page),
        }
        let Some(next) = page.next else {
            return;
        };
        if pages_left == 0 {
            return;
        }
        let Some(mut following) = self.page_of(node, spec.prefix, Some(next), spec.reserved) else {
            return;
        };
        following.scan = scan;
        following.pages_left = pages_left - 1;
        self.lists.insert(list, following);
        self.ask_scan(list);
    }

    /// A page into the history: each item as a read at the page's call and return, and each
    /// key of the history in the page's range (after its `after`, up to its `next` if it has
    /// one) that the page left out as absent (`Input::Absent`).
    fn record_page(&mut self, list: u64, call: u64, spec: &PageSpec, page: &ListPage) {
        let ret = self.elapsed();
        let op = |key: &[u8], input, output| Operation {
            client: 1_000_000 + list,
            key: key.to_vec(),
            input,
            call,
            ret: Some(ret),
            output: Some(output),
        };
        let listed: BTreeSet<&Key> = page.items.iter().map(|i| &i.key).collect();
        // (A client's list never shows the cluster's own keys, the lease registers among them.)
        let in_range = |key: &Key| {
            key.starts_with(&spec.prefix)
                && (spec.reserved || !key.starts_with(RESERVED_PREFIX))
                && spec.after.as_ref().is_none_or(|after| key > after)
                && page.next.as_ref().is_none_or(|next| key <= next)
        };
        let absent: BTreeSet<Key> = self
            .history
            .iter()
            .filter(|o| in_range(&o.key) && !listed.contains(&o.key))
            .map(|o| o.key.clone())
            .collect();
        let mut ops = Vec::new();
        for item in &page.items {
            let output = Output::Get {
                value: item.value.clone(),
                version: item.version,
            };
            ops.push(op(&item.key, Input::Get, output));
        }
        for key in absent {
            ops.push(op(&key, Input::Absent, Output::Absent { live: false }));
        }
        self.history.extend(ops);
    }
}

// -----------------------------------------------------------------------------------------
// Watches: every node watches every key (`crate::watch::Sequencer`, as the client runs it), fed
// by the proposers' announcements through the faulty network; what a watch promises
// (`actors::watch`) is checked as each item is delivered and against the history at the end
// -----------------------------------------------------------------------------------------

/// What the nodes' watches delivered.
#[derive(Default)]
struct Watched {
    seed: u64,
    /// Per node and key, the last version its current watch delivered, or skipped past
    /// (`skipped_to - 1`); a node's watch ends with its process ([`Sim::restart`]).
    last: BTreeMap<(NodeId, Key), u64>,
    /// Per key and version, the value a watch delivered (the first; every other must agree).
    values: BTreeMap<(Key, u64), Option<Vec<u8>>>,
    changes: u32,
    skips: u32,
    /// Watches that delivered something and ended (their node's process stopped).
    ended: u32,
}

impl Watched {
    /// Checks one item `node`'s watch delivers: per key, versions go up by one from where the
    /// watch started (0), but where a `Skipped` says the gap (promises 2 and 3 of
    /// `actors::watch`: increasing, none twice, no gap unsaid); a change agrees with every
    /// other delivery of its version, on any node (promise 1, held against the history in
    /// [`check_watches`]).
    fn deliver(&mut self, node: NodeId, item: WatchItem) {
        let seed = self.seed;
        match item {
            WatchItem::Change {
                key,
                version,
                value,
            } => {
                let last = self.last.entry((node, key.clone())).or_default();
                assert!(
                    version > *last,
                    "seed {seed}: node {node}'s watch of {} delivered version {version} after \
                     {last}",
                    text(&key)
                );
                assert_eq!(
                    version,
                    *last + 1,
                    "seed {seed}: node {node}'s watch of {} went from version {last} to \
                     {version} and said no gap",
                    text(&key)
                );
                *last = version;
                let first = self
                    .values
                    .entry((key.clone(), version))
                    .or_insert_with(|| value.clone());
                assert!(
                    *first == value,
                    "seed {seed}: watches delivered two values of {} at version {version}: {:?} \
                     and {:?} (node {node})",
                    text(&key),
                    first.as_deref().map(text),
                    value.as_deref().map(text)
                );
                self.changes += 1;
            }
            WatchItem::Skipped { key, skipped_to } => {
                let last = self.last.entry((node, key.clone())).or_default();
                assert!(
                    skipped_to > *last + 1,
                    "seed {seed}: node {node}'s watch of {} skipped to {skipped_to} after \
                     version {last}",
                    text(&key)
                );
                *last = skipped_to - 1;
                self.skips += 1;
            }
        }
    }

    /// `node`'s process stopped: its watch ended (a new one starts from scratch).
    fn end_stream(&mut self, node: NodeId) {
        let before = self.last.len();
        self.last.retain(|(n, _), _| *n != node);
        if self.last.len() < before {
            self.ended += 1;
        }
    }
}

/// A key or a value, as the workload writes them (text), for the checks' messages.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Sim {
    /// `to` receives an announcement by `from`'s proposer of what it saw chosen: taken from a
    /// member only (as the network takes any Paxos frame), into the node's watch.
    fn announced(&mut self, from: NodeId, to: NodeId, key: Key, changes: Vec<KeyChange>) {
        let now = self.now;
        let node = self.nodes.get_mut(&to).unwrap();
        let member = |m: &Membership| m.member(from).is_some();
        if !node.membership.as_ref().is_some_and(member) {
            return;
        }
        for item in node.watch.offer(now, key, changes) {
            self.watched.deliver(to, item);
        }
    }

    /// Each live node's watch skips the gaps that waited long enough. (A sequencer keeps its
    /// keys in a `HashMap`: the order of items across keys varies from run to run, each key's
    /// order does not, and no check and no random draw depends on the former, so a seed still
    /// replays exactly.)
    fn expire_watches(&mut self) {
        let now = self.now;
        for (id, node) in self.nodes.iter_mut().filter(|(_, n)| !n.dead) {
            if node.watch.next_deadline().is_some_and(|t| t <= now) {
                for item in node.watch.expire(now) {
                    self.watched.deliver(*id, item);
                }
            }
        }
    }
}

/// Every change a watch delivered, against the history (found linearizable): where an answered
/// write made that version of the key (`Put`, a `Cas` that swapped, a `Delete` that deleted),
/// or an answered read saw it, the watch delivered the same value; a value delivered was written
/// to that key by a write that may have taken effect, and at one version only (each write
/// writes a new value, and applies once).
fn check_watches(sim: &Sim, seed: u64) {
    let mut states: BTreeMap<(&Key, u64), Option<&Vec<u8>>> = BTreeMap::new();
    let mut written: BTreeSet<(&Key, &Vec<u8>)> = BTreeSet::new();
    for (i, op) in sim.history.iter().enumerate() {
        if op.key == LEASE || keeper::is_lease_register(&op.key) {
            continue;
        }
        let value = match &op.input {
            Input::Put { value } | Input::Cas { value, .. } | Input::LeasedWrite { value, .. } => {
                Some(value)
            }
            Input::Delete
            | Input::DeleteIf { .. }
            | Input::Release { .. }
            | Input::Touch
            | Input::LeaseAttach { .. }
            | Input::LeaseEnd { .. }
            | Input::Get
            | Input::Inspect
            | Input::Absent => None,
        };
        if let (Some(v), false) = (value, sim.not_applied.contains(&i)) {
            written.insert((&op.key, v));
        }
        let (version, state) = match &op.output {
            Some(Output::Put { version })
            | Some(Output::Cas {
                swapped: true,
                version,
            }) => (*version, value),
            Some(Output::Delete {
                deleted: true,
                version,
            }) => (*version, None),
            Some(Output::Get { value, version }) if *version > 0 => (*version, value.as_ref()),
            _ => continue,
        };
        states.entry((&op.key, version)).or_insert(state);
    }
    let mut versions: BTreeMap<(&Key, &Vec<u8>), u64> = BTreeMap::new();
    for ((key, version), value) in &sim.watched.values {
        if key.as_slice() == LEASE || keeper::is_lease_register(key) {
            continue;
        }
        if let Some(state) = states.get(&(key, *version)) {
            assert!(
                *state == value.as_ref(),
                "seed {seed}: a watch delivered {:?} as version {version} of {}, the history has \
                 {:?}",
                value.as_deref().map(text),
                text(key),
                state.map(|v| text(v))
            );
        }
        let Some(value) = value else { continue };
        assert!(
            written.contains(&(key, value)),
            "seed {seed}: a watch delivered {} as version {version} of {}: no write that may \
             have taken effect wrote it there",
            text(value),
            text(key)
        );
        if let Some(other) = versions.insert((key, value), *version) {
            panic!(
                "seed {seed}: a watch delivered {} of {} as versions {other} and {version}",
                text(value),
                text(key)
            );
        }
    }
}

// -----------------------------------------------------------------------------------------
// A run: the faults and the changes of each step, the workload, and the end (heal, converge,
// read every key back, check the history)
// -----------------------------------------------------------------------------------------

impl Sim {
    /// This step's faults: scheduled (an isolated node, a copy of a directory, a sweep) or
    /// drawn, in this order (a seed's run depends on it).
    fn inject_faults(&mut self, step: u32) {
        if step % 500 == 250 {
            self.isolated = vec![self.random_node()];
        }
        if step % 500 == 450 {
            self.isolated.clear();
        }
        if step.is_multiple_of(300) {
            let node = self.random_node();
            self.take_copy(node);
        }
        if self.rng.random_bool(0.01) {
            let node = self.random_node();
            self.crash_acceptors(node);
        }
        if self.rng.random_bool(0.01) {
            self.restart_proposer();
        }
        if self.rng.random_bool(0.0005) {
            self.record_store();
        }
        if step < 6500 && self.quiet() && self.rng.random_bool(0.003) {
            // The bootstrap window's hazard: a store not recorded yet is lost.
            self.wipe_unrecorded();
        }
        self.deliver_held_attempts(step);
        if step < 6500 && self.rng.random_bool(0.01) {
            self.inject_foreign();
        }
        if step < 6500 && self.rng.random_bool(0.004) {
            self.lag_hot_accepts();
        }
        if self.rng.random_bool(0.004) {
            let node = self.random_node();
            self.restart_intact(node);
        }
        if self.rng.random_bool(0.01) {
            self.restart_refused();
        }
        if step % 400 == 200 {
            let node = self.random_node();
            self.sweep(node);
        }
        // A restart of the driving node in the middle of a change comes from the intact
        // restarts above and this one.
        if self.driving.is_some() && self.rng.random_bool(0.001) {
            let node = self.driving.as_ref().map(|d| d.node).expect("checked");
            self.restart_intact(node);
        }
        if self.driving.is_some() && self.rng.random_bool(0.0005) {
            self.abandon_driver();
        }
    }

    /// Holds back the hot key's Accepts to two voters (of five or more; fewer when some are
    /// down: `Sim::lag_accepts`) for 20 to 100 ms, while everything else flows: a write is
    /// then chosen by the others, and a read that asks a majority
    /// holding both laggards (a thrifty one, when they are in the key's majority) sees two
    /// older states and one newer, which must not be read as the older one.
    fn lag_hot_accepts(&mut self) {
        if self.register.voters().len() < 5 {
            return;
        }
        let lag = Duration::from_millis(self.rng.random_range(20..=100));
        self.lag_accepts(HOT, lag, false);
        *self.faults.entry("hot accepts lagged").or_default() += 1;
    }

    /// Holds back `key`'s Accepts for `lag` to as many voters, drawn at random among those
    /// voting and connected, as leaves a majority of those (two of five, one of three or four,
    /// fewer when some are down): a write can still be chosen, by the others. `aimed`: drawn
    /// from the key's thrifty majority first (`proposer::first_majority`, as the proposers
    /// place it), where a thrifty read then meets them. Returns how many
    /// voters it holds back.
    fn lag_accepts(&mut self, key: &[u8], lag: Duration, aimed: bool) -> usize {
        let voters = self.register.voters();
        let quorum = self.register.quorums().classic();
        let up = |v: &NodeId| self.nodes[v].votes(*v) && !self.isolated.contains(v);
        let majority: Vec<NodeId> = first_majority(voters.len(), quorum, key_hash(key))
            .map(|i| voters[i])
            .collect();
        let (mut first, mut rest): (Vec<NodeId>, Vec<NodeId>) = voters
            .iter()
            .copied()
            .filter(up)
            .partition(|v| aimed && majority.contains(v));
        let held = (first.len() + rest.len()).saturating_sub(quorum);
        let to = (0..held)
            .map(|_| {
                let pool = if first.is_empty() {
                    &mut rest
                } else {
                    &mut first
                };
                pool.swap_remove(self.rng.random_range(0..pool.len()))
            })
            .collect();
        self.lagging.push((key.to_vec(), to, self.now + lag));
        held
    }

    /// Ends `key`'s lag now.
    fn end_lag(&mut self, key: &[u8]) {
        self.lagging.retain(|(k, _, _)| k != key);
    }

    /// Wipes a store not recorded yet, if there is one; says whether there was.
    fn wipe_unrecorded(&mut self) -> bool {
        let Some(node) = self.random_unrecorded() else {
            return false;
        };
        *self
            .faults
            .entry("wipe of an unrecorded store")
            .or_default() += 1;
        self.lose_disk(node, false);
        true
    }

    /// A lost disk: a store not recorded yet if there is one (item 4 of issue 17: it must
    /// have voted on no client key), else a healthy voter's.
    fn wipe_some_store(&mut self) {
        if self.wipe_unrecorded() {
            return;
        }
        if let Some(node) = self.random_healthy_voter() {
            self.lose_disk(node, false);
        }
    }

    /// The gets that follow reads past lost writes (`Sim::follow_up_reads`), when due, each
    /// through a live node drawn at random.
    fn submit_follow_up_reads(&mut self) {
        let now = self.elapsed();
        while let Some(i) = self.follow_up_reads.iter().position(|r| r.0 <= now) {
            let (_, key) = self.follow_up_reads.swap_remove(i);
            let live = self.live_nodes();
            if live.is_empty() {
                return;
            }
            let node = live[self.rng.random_range(0..live.len())];
            *self
                .faults
                .entry("read after a crash lost a passed write")
                .or_default() += 1;
            self.submit(node, &key, Command::Get);
        }
    }

    /// The held first attempts due at `step` arrive (`Sim::held`), once their retry was
    /// acknowledged (the case that applied a write twice); a retry that failed leaves the
    /// write unknown either way.
    fn deliver_held_attempts(&mut self, step: u32) {
        while let Some(i) = self.held.iter().position(|h| h.0 <= step) {
            let (_, node, index, command, id) = self.held.swap_remove(i);
            if !self.nodes[&node].dead && self.history[index].output.is_some() {
                self.submit_held(node, BUSY, (command, id, index));
            }
        }
    }

    /// A change drawn at random (the previous one done): a lost disk, a rollback, a
    /// replacement, growing or shrinking the voters.
    fn start_random_change(&mut self) {
        let voters = self.register.voters().len();
        match self.rng.random_range(0..5) {
            0 => self.wipe_some_store(),
            // (one with a copy to go back to, if any: else a wipe)
            1 => {
                let copied = |sim: &Sim, n| sim.snapshots.contains_key(&n);
                if let Some(node) = self
                    .random_healthy_voter_where(copied)
                    .or_else(|| self.random_healthy_voter())
                {
                    self.lose_disk(node, true);
                }
            }
            2 => {
                if let Some(node) = self.random_healthy_voter() {
                    self.replace(node);
                }
            }
            3 if voters < MAX_VOTERS => self.grow(),
            _ if voters > MIN_VOTERS => self.shrink(),
            _ => {}
        }
    }

    /// A change of the voters' count, aimed at four voters (the count whose fast quorum, 3,
    /// a majority of one node fewer or one more miscounts): grow below four, shrink above,
    /// either from four; a third of the time any change.
    fn start_voter_change(&mut self) {
        let voters = self.register.voters().len();
        if self.rng.random_bool(0.33) {
            return self.start_random_change();
        }
        let grow = match voters.cmp(&4) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => self.rng.random_bool(0.5),
        };
        if grow && voters < MAX_VOTERS {
            self.grow();
        } else if voters > MIN_VOTERS {
            self.shrink();
        }
    }

    /// Removes a healthy voter, if there is one.
    fn shrink(&mut self) {
        if let Some(id) = self.random_healthy_voter() {
            *self.faults.entry("shrink").or_default() += 1;
            self.changes
                .push_back((Change::Remove { id }, Then::Nothing));
        }
    }

    /// A new node (with another cluster's store planted 30 % of the time) asked to be added.
    fn grow(&mut self) {
        *self.faults.entry("grow").or_default() += 1;
        let id = self.add_new_node();
        if self.rng.random_bool(0.3) {
            self.plant_foreign_store(id);
        }
        self.growing.insert(id);
        let add = self.add_of(id);
        self.changes.push_back((add, Then::Nothing));
    }

    /// Delivers a share of what is in flight, `base` messages and one per 20 in flight, so
    /// that a message's expected delay stays the same however many are in flight (one at
    /// random from the pool: reordering), checking each key an acceptor changed.
    fn deliver_share(&mut self, base: usize) {
        for _ in 0..(base + self.net.len() / 20) {
            if let Some(key) = self.deliver_one() {
                for version in self.check_key(&key) {
                    self.seen_chosen(&key, version);
                }
            }
        }
    }

    /// Says on stderr what a run that never settled is left with: every node, every driver,
    /// and the kinds of message most in flight.
    fn report_unsettled(&self) {
        for (id, n) in &self.nodes {
            eprintln!(
                "node {id}: dead {} votes {} epoch {} proposers {} refused {} marked {} \
                 intact {} round {:?} pending {:?} rolled back {}",
                n.dead,
                n.votes(*id),
                n.epoch(),
                n.proposers.len(),
                n.refused,
                n.marked,
                n.intact,
                n.confirmation.round(),
                n.pending,
                n.rolled_back
            );
        }
        for d in self.driving.iter().chain(&self.zombies) {
            eprintln!(
                "driver {} on node {} of {:?}: register epoch {} {:?}, waiting for {}",
                d.id,
                d.node,
                d.driver.change(),
                self.register.epoch,
                self.register.phase,
                d.waiting.describe()
            );
        }
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for m in &self.net {
            let k = match &m.payload {
                Payload::Paxos(p) => format!("{:?}", std::mem::discriminant(p)),
                Payload::Install(_) => "install".into(),
                Payload::Fetched(_) => "fetched".into(),
                Payload::Installed(_) => "installed".into(),
                Payload::Hello { .. } => "hello".into(),
                Payload::HelloAnswer { .. } => "hello answer".into(),
                Payload::Scan { .. } => "scan".into(),
                Payload::Scanned { .. } => "scanned".into(),
                Payload::Committed { .. } => "committed".into(),
            };
            *kinds
                .entry(format!("{k} {}->{}", m.from, m.to))
                .or_default() += 1;
        }
        let mut top: Vec<_> = kinds.into_iter().collect();
        top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        eprintln!("in flight: {:?}", &top[..top.len().min(8)]);
    }
}

/// The clients' keys, and the last value written (each write writes a new one).
struct Workload {
    value: u64,
    /// Keys written once each (one put, through a fresh proposer, so at the fast ballot),
    /// and those not written yet.
    once: Vec<Key>,
    unwritten: Vec<Key>,
    /// Keys whose first write comes from two nodes at once, and those not raced yet.
    race: Vec<Key>,
    unraced: Vec<Key>,
    /// The lag probe in progress, if one is.
    probe: Option<Probe>,
    /// `Workload::again` runs (only in its own test, so that the other runs' schedules do not
    /// move), the keys it has not used yet, and the one in progress.
    again_on: bool,
    unused_again: Vec<Key>,
    again: Option<Again>,
    /// `Workload::race_during_change` runs (only in its own test, as `again`), and the keys
    /// it has not raced yet.
    change_races_on: bool,
    unraced_in_changes: Vec<Key>,
    /// `Aim::whole_scans`: lists of the prefix `\0` too.
    whole_scans_on: bool,
    /// Keys written once to read back through their writer's node, and when.
    writer_reads: Vec<(Key, NodeId, u32)>,
    /// The register epoch of the last race, and how many were started at it (at most
    /// `RACES_PER_CHANGE`, so that every change of a run gets some).
    races_at: (u64, usize),
}

/// What a run aims at beyond the common workload. Each aim moves the whole schedule, so it
/// runs in its own test and the common seeds stay what they were.
#[derive(Clone, Copy, Default)]
struct Aim {
    /// `Workload::again`.
    again: bool,
    /// `Workload::race_during_change`, with changes started three times as often.
    change_races: bool,
    /// Most acceptor writes in flight, their commits held longer; a read answered past an
    /// Accept in flight crashes the acceptor and the write's proposer, and the key is read
    /// again later (`Sim::crash_the_passed_write`, `Sim::submit_follow_up_reads`).
    reads_past_writes: bool,
    /// Scan answers of up to a MiB: a voter sends the rest of a prefix in one answer, so the
    /// merge can be done in the very batch a page is cut in (`PageScan::more_follow` must then
    /// still say that keys follow the cut; the common runs' answers of a record or two never
    /// get there while live keys follow: mutant `page-cut-says-no-more-sim`).
    whole_scans: bool,
}

/// One run of `Workload::again`: its key and node, the first write's command, id and place
/// in the history, and the request waited for now.
struct Again {
    key: Key,
    node: NodeId,
    first: (Command, RequestId, usize),
    waiting: u64,
    stage: AgainStage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AgainStage {
    /// The first write, at the fast ballot.
    First,
    /// Its first attempt again, through a new proposer instance of the same node.
    Retried,
    /// A write after it, through that instance.
    After,
}

/// One run of the lag probe (`Workload::probe`): its key, the put's token and place in the
/// history, whether it must go past held voters of its own first majority (a thrifty node's
/// put whose held voters were drawn from the key's majority), then the read's token.
struct Probe {
    key: Key,
    put: u64,
    put_index: usize,
    past_its_majority: bool,
    read: Option<u64>,
}

impl Workload {
    fn new(aim: Aim) -> Workload {
        // The first sorts before the cluster's own keys (`\0paxkv/`), so that a list of the
        // empty prefix meets live keys on both sides of them (a page cut among them, with a
        // live key before the cut, `PageScan::more_follow`).
        // `Aim::whole_scans`: the second sorts after them, in the prefix `\0` with them.
        let once: Vec<Key> = (0..ONCE_KEYS)
            .map(|i| match i {
                0 => b"\0once-00".to_vec(),
                1 if aim.whole_scans => b"\0~once-01".to_vec(),
                _ => format!("once-{i:02}").into_bytes(),
            })
            .collect();
        let race: Vec<Key> = (0..RACE_KEYS)
            .map(|i| format!("race-{i:02}").into_bytes())
            .collect();
        Workload {
            value: 0,
            unwritten: once.clone(),
            once,
            unraced: race.clone(),
            race,
            probe: None,
            again_on: aim.again,
            unused_again: (0..AGAIN_KEYS)
                .map(|i| format!("again-{i}").into_bytes())
                .collect(),
            again: None,
            change_races_on: aim.change_races,
            whole_scans_on: aim.whole_scans,
            races_at: (0, 0),
            writer_reads: Vec::new(),
            unraced_in_changes: (0..CHANGE_RACE_KEYS)
                .map(|i| format!("change-race-{i:02}").into_bytes())
                .collect(),
        }
    }

    fn next_value(&mut self) -> Vec<u8> {
        self.value += 1;
        self.value.to_string().into_bytes()
    }

    /// This step's client commands, each kind drawn in turn (a seed's run depends on the
    /// order), until its last step.
    fn submit(&mut self, sim: &mut Sim, step: u32) {
        if step < 6500 && sim.rng.random_bool(0.06) {
            self.hot_command(sim);
        }
        if step < 6500 && sim.rng.random_bool(0.03) {
            self.cool_command(sim);
        }
        if step < 6500 && sim.rng.random_bool(0.02) {
            self.lease_command(sim);
        }
        if step < 6500 && sim.rng.random_bool(0.02) {
            self.leased_key_command(sim);
        }
        if step < 5500 && !self.unraced.is_empty() && sim.rng.random_bool(0.005) {
            self.race_first_write(sim);
        }
        if (500..5000).contains(&step) && sim.rng.random_bool(0.12) {
            self.busy_put(sim, step);
        }
        if step < 5500 && !self.unwritten.is_empty() && sim.rng.random_bool(0.02) {
            self.write_once(sim, step);
        }
        if step < 6500 {
            self.probe(sim);
        }
        if step < 6000 && self.again_on {
            self.again(sim);
        }
        self.read_by_writers(sim, step);
        if step < 6500 && self.change_races_on {
            self.race_during_change(sim);
        }
        if step < 6500 && sim.rng.random_bool(0.01) {
            let prefixes: &[&[u8]] = if self.whole_scans_on {
                &[b"once-", b"cool-", b"race-", b"", b"\0"]
            } else {
                &[b"once-", b"cool-", b"race-", b""]
            };
            let prefix = prefixes[sim.rng.random_range(0..prefixes.len())];
            let node = sim.random_node();
            sim.start_list(node, prefix);
        }
    }

    /// A get, put, delete, conditional delete or cas of the hot key, from any node.
    fn hot_command(&mut self, sim: &mut Sim) {
        let node = sim.random_node();
        let v = self.next_value();
        let command = match sim.rng.random_range(0..5) {
            0 => Command::Get,
            1 => Command::Put { value: v },
            2 => Command::Delete,
            3 => Command::DeleteIf {
                expect: sim.rng.random_range(0..4),
            },
            _ => Command::Cas {
                expect: sim.rng.random_range(0..4),
                value: v,
            },
        };
        sim.submit(node, HOT, command);
    }

    /// A lease's commands on the lease key, from any node (`paxos::lease`): a grant (a
    /// create of a lease record), keepalives (touches), attaches of keys, an end (expiry of
    /// the version it saw, or revoke), the delete that follows its release, reads. A
    /// touched value stays at the next version, so the watch check, which takes each value
    /// for one version, leaves this key out.
    fn lease_command(&mut self, sim: &mut Sim) {
        let node = sim.random_node();
        let command = match sim.rng.random_range(0..8) {
            0 => Command::Get,
            1 => {
                // A distinct TTL per grant, so that each grant's record is its own value.
                self.value += 1;
                let ttl = Duration::from_millis(1_000 + self.value);
                Command::Cas {
                    expect: 0,
                    value: crate::paxos::lease::LeaseRecord::new(ttl).encode(),
                }
            }
            2 | 3 => Command::Touch,
            4 => Command::LeaseAttach {
                key: leased_key(sim.rng.random_range(0..LEASED_KEYS)),
                max_keys: 2,
            },
            5 => Command::LeaseEnd {
                expect: sim.rng.random_range(0..8),
            },
            6 => Command::DeleteIf {
                expect: sim.rng.random_range(0..8),
            },
            _ => Command::Delete,
        };
        sim.submit(node, LEASE, command);
    }

    /// A key attached to leases (`paxos::lease`): leased puts and cases naming a fence
    /// (stale ones among them), releases of one of two leases, plain puts (which detach),
    /// reads with the lease and the fence.
    fn leased_key_command(&mut self, sim: &mut Sim) {
        let node = sim.random_node();
        let key = leased_key(sim.rng.random_range(0..LEASED_KEYS));
        let lease = sim.rng.random_range(1..3);
        let command = match sim.rng.random_range(0..6) {
            0 => Command::Inspect,
            1 | 2 => Command::LeasedWrite(Box::new(crate::paxos::types::LeasedWrite {
                expect: sim.rng.random_bool(0.3).then(|| sim.rng.random_range(0..6)),
                value: self.next_value(),
                lease,
                fence: sim.rng.random_range(0..6),
                // Half of them as a client's retry (no draw: a seed's other draws stay).
                retried: self.value.is_multiple_of(2),
            })),
            3 | 4 => Command::Release { lease },
            _ => Command::Put {
                value: self.next_value(),
            },
        };
        sim.submit(node, &key, command);
    }

    /// A cool key, through one of two nodes, so that a restarted proposer's successor gets
    /// the key's next command while its predecessor's replies are in flight.
    fn cool_command(&mut self, sim: &mut Sim) {
        let key = format!("cool-{}", sim.rng.random_range(0..COOL_KEYS)).into_bytes();
        let live = sim.live_nodes();
        let node = live[sim.rng.random_range(0..2.min(live.len()))];
        let v = self.next_value();
        let command = match sim.rng.random_range(0..3) {
            0 => Command::Get,
            1 => Command::Put { value: v },
            _ => Command::Cas {
                expect: 0,
                value: v,
            },
        };
        sim.submit(node, &key, command);
    }

    /// A race key's first write, from two nodes at once.
    fn race_first_write(&mut self, sim: &mut Sim) {
        let key = self
            .unraced
            .swap_remove(sim.rng.random_range(0..self.unraced.len()));
        let (a, b) = (sim.random_node(), sim.random_node());
        for node in [a, b] {
            let v = self.next_value();
            sim.submit(node, &key, Command::Put { value: v });
        }
    }

    /// While a change of the voters is about to start, and between the close-fast step's
    /// scan and the rescan's, the first write of a fresh key from two different nodes at
    /// once. A fast vote of the stable epoch is what the close-fast step must settle; one
    /// cast at the close-fast epoch escapes that scan and meets the rescan, which counts it
    /// under the new voters. Split three to one over four voters, one state
    /// is chosen by a fast quorum of the old voters, which a majority of the new ones (one
    /// holder fewer, or the empty joining node more) can count as not chosen. The change's
    /// steps forbid the fast ballot so that such a split can only be of the stable epoch,
    /// which the close-fast step settles (`paxos::membership`); this is the schedule that
    /// shows what allowing it costs (`fast-open-during-a-change` in docs/TESTING.md).
    fn race_during_change(&mut self, sim: &mut Sim) {
        let scanned = |fast_only| {
            matches!(&sim.driving,
                Some(Driving { waiting: Waiting::Settle(s), .. }) if s.fast_only == fast_only && s.scanned)
        };
        let between_the_scans = match sim.register.phase {
            Some(Phase::CloseFast) => scanned(true),
            Some(Phase::Rescan) => !scanned(false),
            // And before the change's first step: a fast vote of the stable epoch, which the
            // close-fast step must settle.
            None => sim.driving.is_some(),
        };
        let epoch = sim.register.epoch;
        if self.races_at.0 != epoch {
            self.races_at = (epoch, 0);
        }
        if !between_the_scans
            || self.unraced_in_changes.is_empty()
            || self.races_at.1 >= RACES_PER_CHANGE
            || !sim.rng.random_bool(0.3)
        {
            return;
        }
        let live = sim.live_nodes();
        // The winner from a node that leaves its fast writes at the fast ballot (odd nodes,
        // as the runtime's default `settle_fast_writes = false` does everywhere): a write its
        // own proposer settles at once is out of the miscount's reach.
        let odd: Vec<NodeId> = live.iter().copied().filter(|n| n % 2 == 1).collect();
        let others: Vec<NodeId> = live.iter().copied().filter(|n| n % 2 == 0).collect();
        if odd.is_empty() || others.is_empty() {
            return;
        }
        self.races_at.1 += 1;
        let a = odd[sim.rng.random_range(0..odd.len())];
        let b = others[sim.rng.random_range(0..others.len())];
        let key = self
            .unraced_in_changes
            .swap_remove(sim.rng.random_range(0..self.unraced_in_changes.len()));
        *sim.faults
            .entry("first write raced during a change")
            .or_default() += 1;
        // Creates (compare-and-set from no value), as two candidates of an election would:
        // two that both look applied are a history no order explains, where two blind puts
        // would be (the second overwrote the first).
        let mut create = |sim: &mut Sim, node| {
            let value = self.next_value();
            sim.submit(node, &key, Command::Cas { expect: 0, value });
        };
        create(sim, b);
        // Mostly, the loser's fast Accepts are lost but one, and its proposer crashes: one
        // acceptor of the old voters may take its state (when its Accept arrives first), and
        // nothing recovers the key at the close-fast epoch, under the old voters' counts; the
        // next round on the key is the rescan's, under the new ones. Else the two race in full.
        if sim.rng.random_bool(0.75) {
            *sim.faults
                .entry("raced proposer crashed mid-change")
                .or_default() += 1;
            let fast_accept = |m: &InFlight| {
                m.from == b
                    && m.key == key
                    && matches!(&m.payload,
                        Payload::Paxos(PeerMessage::Accept { ballot, .. }) if *ballot == Ballot::FAST)
            };
            let sent: Vec<usize> = (0..sim.net.len())
                .filter(|&i| fast_accept(&sim.net[i]))
                .collect();
            if !sent.is_empty() {
                let kept = sent[sim.rng.random_range(0..sent.len())];
                for i in sent.into_iter().rev().filter(|&i| i != kept) {
                    sim.net.remove(i);
                }
            }
            sim.nodes
                .get_mut(&b)
                .expect("a live node")
                .proposers
                .remove(&key);
            sim.forget_tokens(|n, k| n == b && k == key.as_slice());
        }
        create(sim, a);
    }

    /// The busy key: puts through any node, more than the register remembers (32); blind
    /// puts, whose versions order them, keep its history cheap to check. Now and then a
    /// put's first attempt is held up in another node (paused) and arrives 2,000 to 3,000
    /// steps later, after its retry (the history's operation) was applied and forgotten: it
    /// must never apply the write again.
    fn busy_put(&mut self, sim: &mut Sim, step: u32) {
        let node = sim.random_node();
        let put = Command::Put {
            value: self.next_value(),
        };
        let held = sim.rng.random_bool(0.1);
        let id = sim.submit_attempt(node, BUSY, put.clone(), held);
        if let (true, Some(id)) = (held, id) {
            let at = step + sim.rng.random_range(2000..3000);
            let to = sim.random_node();
            let index = sim.history.len() - 1;
            sim.held.push((at, to, index, put, id));
        }
    }

    /// The lag probe: a key's Accepts to as many voters as leaves a majority are held back
    /// (`Sim::lag_accepts`); a patient put of it through a node drawn at random, and once
    /// that is answered, a patient get through another. The put can only be chosen by the
    /// voters not held back, so the get, which starts after it ended, asks acceptors of
    /// which a majority may still hold the older state, all answering alike: a thrifty read
    /// whose first majority holds the laggards sees two older states and one newer. It must
    /// read the newer one (or none at all); the history's check says whether it did. On the
    /// hot key, whose operations overlap one another and which proposer restarts and
    /// impatient clients leave mostly unanswered, a read after a completed write in such a
    /// window was too rare to catch a quick read that counts too few answers.
    fn probe(&mut self, sim: &mut Sim) {
        let patient = Some(400);
        match &mut self.probe {
            None if sim.rng.random_bool(0.02) => {
                let key = format!("probe-{}", sim.rng.random_range(0..PROBE_KEYS)).into_bytes();
                let aimed = sim.rng.random_bool(0.5);
                let held = sim.lag_accepts(&key, Duration::from_millis(1000), aimed);
                *sim.faults.entry("probe writes lagged").or_default() += 1;
                let node = sim.random_node();
                let put = Command::Put {
                    value: self.next_value(),
                };
                sim.submit_with(node, &key, put, false, patient);
                self.probe = Some(Probe {
                    key,
                    put: sim.next_token,
                    put_index: sim.history.len() - 1,
                    past_its_majority: aimed && held > 0 && sim.thrifty.on(node),
                    read: None,
                });
            }
            None => {}
            // The put was answered (or its proposer lost): read.
            Some(p) if p.read.is_none() && !sim.waiters.contains_key(&p.put) => {
                // A thrifty round whose majority cannot choose must ask the rest: coverage
                // of that (a proposer that never widens leaves this at 0).
                if p.past_its_majority && sim.history[p.put_index].output.is_some() {
                    *sim.faults
                        .entry("probe write chosen past its majority")
                        .or_default() += 1;
                }
                let node = sim.random_node();
                sim.submit_with(node, &p.key, Command::Get, false, patient);
                p.read = Some(sim.next_token);
            }
            Some(Probe {
                key,
                read: Some(read),
                ..
            }) if !sim.waiters.contains_key(read) => {
                sim.end_lag(key);
                self.probe = None;
            }
            Some(_) => {}
        }
    }

    /// A first write retried through the node that made it, after that node's proposer for
    /// the key crashed (review of 2026-12-06, `paxos::acceptor`): a patient put of a fresh
    /// key through an odd node (which leaves it at the fast ballot) caches the promise of
    /// (1, node); a second put takes that ballot at once, and its Accept is lost to all
    /// acceptors but one; the node's proposer for the key crashes; the first put's first
    /// attempt arrives again there (`Sim::submit_held`: same id, same value), and the new
    /// instance's fast Accept is a duplicate at the others; then a third put through it. An
    /// acceptor that confirmed its predecessor's promise of (1, node) for the duplicate would
    /// let that third put take (1, node) without a Prepare: a second state at one ballot,
    /// which `Sim::check_key` refuses.
    fn again(&mut self, sim: &mut Sim) {
        let patient = Some(400);
        let Some(a) = &self.again else {
            if self.unused_again.is_empty() || !sim.rng.random_bool(0.01) {
                return;
            }
            let node = sim.random_node();
            if node.is_multiple_of(2) {
                return;
            }
            let key = self
                .unused_again
                .swap_remove(sim.rng.random_range(0..self.unused_again.len()));
            let put = Command::Put {
                value: self.next_value(),
            };
            let id = sim.submit_with(node, &key, put.clone(), false, patient);
            let index = sim.history.len() - 1;
            self.again = Some(Again {
                key,
                node,
                first: (put, id.expect("a write has an id"), index),
                waiting: sim.next_token,
                stage: AgainStage::First,
            });
            return;
        };
        if sim.waiters.contains_key(&a.waiting) {
            return;
        }
        let (key, node, stage, first) = (a.key.clone(), a.node, a.stage, a.first.clone());
        match stage {
            AgainStage::First if sim.history[first.2].output.is_some() => {
                let put = Command::Put {
                    value: self.next_value(),
                };
                sim.submit_with(node, &key, put, false, patient);
                // Its Accept at the cached (1, node), to one acceptor only.
                let cached = Ballot::new(1, node);
                let at_cached = |m: &InFlight| {
                    m.from == node
                        && m.key == key
                        && matches!(&m.payload,
                            Payload::Paxos(PeerMessage::Accept { ballot, .. }) if *ballot == cached)
                };
                let sent: Vec<usize> = (0..sim.net.len())
                    .filter(|&i| at_cached(&sim.net[i]))
                    .collect();
                if sent.is_empty() {
                    self.again = None;
                    return;
                }
                let kept = sent[sim.rng.random_range(0..sent.len())];
                for i in sent.into_iter().rev().filter(|&i| i != kept) {
                    sim.net.remove(i);
                }
                *sim.faults
                    .entry("first write retried through its own node")
                    .or_default() += 1;
                // The node's proposer for the key crashes; the first write arrives again.
                sim.nodes
                    .get_mut(&node)
                    .expect("a node")
                    .proposers
                    .remove(&key);
                sim.forget_tokens(|n, k| n == node && k == key.as_slice());
                sim.submit_held(node, &key, first);
                self.wait_again(sim.next_token, AgainStage::Retried);
            }
            AgainStage::Retried => {
                let put = Command::Put {
                    value: self.next_value(),
                };
                sim.submit_with(node, &key, put, false, patient);
                self.wait_again(sim.next_token, AgainStage::After);
            }
            // Done, or the first write was not answered (nothing to retry).
            AgainStage::First | AgainStage::After => self.again = None,
        }
    }

    fn wait_again(&mut self, token: u64, stage: AgainStage) {
        if let Some(a) = &mut self.again {
            a.waiting = token;
            a.stage = stage;
        }
    }

    /// The one write of a key written once.
    fn write_once(&mut self, sim: &mut Sim, step: u32) {
        let key = self
            .unwritten
            .swap_remove(sim.rng.random_range(0..self.unwritten.len()));
        let node = sim.random_node();
        let v = self.next_value();
        sim.submit(node, &key, Command::Put { value: v });
        // Half the time its writer reads it back soon after, through the same node: while the
        // key is still at the fast ballot, a proposer that saw its write chosen there reads
        // it from a majority (`paxos::proposer`, "A state this proposer saw chosen at the
        // fast ballot").
        if sim.rng.random_bool(0.5) {
            let due = step + sim.rng.random_range(20..300);
            self.writer_reads.push((key, node, due));
        }
    }

    /// The reads back that `write_once` planned, when due.
    fn read_by_writers(&mut self, sim: &mut Sim, step: u32) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.writer_reads)
            .into_iter()
            .partition(|(_, _, at)| *at <= step);
        self.writer_reads = later;
        for (key, node, _) in due {
            sim.submit(node, &key, Command::Get);
        }
    }

    /// Every key to read back at the end: the hot key, the keys written once, the cool
    /// keys, the race keys, the probe's keys.
    fn keys(self) -> impl Iterator<Item = Key> {
        let cool = (0..COOL_KEYS).map(|i| format!("cool-{i}").into_bytes());
        let probe = (0..PROBE_KEYS).map(|i| format!("probe-{i}").into_bytes());
        let again = (0..AGAIN_KEYS)
            .filter(move |_| self.again_on)
            .map(|i| format!("again-{i}").into_bytes());
        let change_races = (0..CHANGE_RACE_KEYS)
            .filter(move |_| self.change_races_on)
            .map(|i| format!("change-race-{i:02}").into_bytes());
        std::iter::once(HOT.to_vec())
            .chain(self.once)
            .chain(cool)
            .chain(self.race)
            .chain(probe)
            .chain(again)
            .chain(change_races)
    }
}

/// What a run injected and checked.
struct RunStats {
    faults: BTreeMap<&'static str, u32>,
    checked: usize,
}

/// A run, with what `aim` adds (which moves every other part of the schedule).
fn run_with(seed: u64, aim: Aim) -> RunStats {
    let mut sim = Sim::new(seed);
    for node in FIRST_NODES {
        sim.say_hello(node);
    }
    let mut workload = Workload::new(aim);
    if aim.whole_scans {
        sim.scan_answer_bytes = Some(1 << 20);
    }
    if aim.reads_past_writes {
        sim.commit_in_flight_rate = 0.8;
        sim.crash_after_passing_read = 1.0;
        sim.commit_held = 0.8;
    }
    let change_rate = if aim.change_races { 0.03 } else { 0.01 };
    if aim.change_races {
        // From four voters on, every change is one from four: one voter removed first, on a
        // quiet cluster.
        sim.changes
            .push_back((Change::Remove { id: FIRST_NODES[0] }, Then::Nothing));
        run_until_quiet(&mut sim, seed);
    }
    for step in 0..8000u32 {
        sim.inject_faults(step);
        // Now and then (one change at a time, once the previous one is done): a lost disk, a
        // replacement, growing or shrinking the voters.
        if step < 6500 && sim.quiet() && sim.rng.random_bool(change_rate) {
            if aim.change_races {
                sim.start_voter_change();
            } else {
                sim.start_random_change();
            }
        }
        workload.submit(&mut sim, step);
        sim.submit_follow_up_reads();
        sim.keeper_client(step);
        sim.pause_a_keeper();
        // A message's expected delay stays around 20 steps.
        sim.deliver_share(3);
        if step % 2 == 0 {
            sim.tick();
        }
        if step % 100 == 0 {
            sim.check_invariants();
        }
    }
    // Heal and let everything finish, membership changes included.
    sim.isolated.clear();
    sim.drop_rate = 0.0;
    (sim.crash_after_passing_read, sim.commit_held) = (0.0, 0.0);
    run_until_quiet(&mut sim, seed);
    sim.check_invariants();
    let voters = converge(&mut sim, seed);
    // The keepers alone, for as long as a lapsed lease may take to go; then read them back.
    let kept = sim.keep_until_bound();
    run_until_quiet(&mut sim, seed);
    sim.check_keepers_done(seed, &kept);
    // Read every key back, through a voter chosen at random.
    for key in workload.keys() {
        let node = voters[sim.rng.random_range(0..voters.len())];
        sim.submit(node, &key, Command::Get);
    }
    run_until_quiet(&mut sim, seed);
    check_history(sim, seed)
}

/// Runs until every request is answered, nothing is in flight and every change has ended;
/// panics, saying what is left, if that does not happen.
fn run_until_quiet(sim: &mut Sim, seed: u64) {
    for _ in 0..200_000 {
        let busy =
            !sim.waiters.is_empty() || !sim.net.is_empty() || !sim.quiet() || !sim.lists.is_empty();
        if !busy {
            return;
        }
        // (a confirmed store not recorded yet records itself, as `membership::start::run` does;
        // the main loop leaves that window open longer, to attack it)
        sim.record_store();
        sim.deliver_share(6);
        sim.tick();
    }
    sim.report_unsettled();
    panic!(
        "seed {seed}: requests never answered or changes never ended: {} waiting, {} \
         messages in flight, driving {:?}, changes {:?}",
        sim.waiters.len(),
        sim.net.len(),
        sim.driving.as_ref().map(|d| d.driver.change()),
        sim.changes
    );
}

/// Every voter installs the last membership (they converge): sent again to a voter until it
/// has. Returns the voters.
fn converge(sim: &mut Sim, seed: u64) -> Vec<NodeId> {
    let voters = sim.register.voters();
    for v in &voters {
        let mut guard = 0;
        while sim.nodes[v].epoch() < sim.register.epoch && guard < 100 {
            let driver = voters.iter().copied().find(|n| n != v).unwrap_or(*v);
            let m = sim.register.clone();
            sim.send_install(driver, *v, m);
            run_until_quiet(sim, seed);
            guard += 1;
        }
        assert_eq!(
            sim.nodes[v].epoch(),
            sim.register.epoch,
            "seed {seed}: node {v}"
        );
    }
    voters
}

impl Sim {
    /// The history to check: every operation but those that certainly did not take effect.
    fn checked_history(&self) -> Vec<Operation> {
        self.history
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.not_applied.contains(i))
            .map(|(_, op)| op.clone())
            .collect()
    }
}

/// Checks the history (but the operations that certainly did not take effect) for
/// linearizability, after enough of it completed.
fn check_history(sim: Sim, seed: u64) -> RunStats {
    let history = sim.checked_history();
    let completed = history.iter().filter(|o| o.output.is_some()).count();
    assert!(
        completed > 50,
        "seed {seed}: only {completed} of {} operations completed ({} did not take effect); \
         faults: {:?}",
        sim.history.len(),
        sim.not_applied.len(),
        sim.faults
    );
    // The checker's budget: 20 s, or `PAXKV_CHECK_SECS` to replay a seed whose check ran out
    // of time ("may or may not be linearizable") until it decides.
    let budget = std::env::var("PAXKV_CHECK_SECS").map_or(20, |s| s.parse().expect("seconds"));
    let budget = Duration::from_secs(budget);
    let (busy, history): (Vec<Operation>, Vec<Operation>) =
        history.into_iter().partition(|o| o.key == BUSY);
    let result = check_operations(&history, budget);
    let versions = match &result {
        CheckResult::Timeout { key } => versions_follow_real_time(&history, key).1,
        _ => String::new(),
    };
    assert!(
        matches!(result, CheckResult::Ok),
        "seed {seed}: not linearizable\n{}{versions}",
        describe(&history, &result)
    );
    // The busy key: its puts duel through every node, and nine in ten end "outcome unknown"
    // (400 of 440 in some seeds), which the search cannot always place within any budget.
    // Its puts are blind and every answer carries a version, so when the search runs out of
    // time the versions decide instead (`versions_follow_real_time`, which reads also
    // answer the value of the put that made their version); that is counted.
    let mut busy_by_versions = 0;
    match check_operations(&busy, budget) {
        CheckResult::Ok => {}
        CheckResult::Timeout { .. } => {
            let (ok, why) = versions_follow_real_time(&busy, BUSY);
            assert!(ok, "seed {seed}: the busy key's versions: {why}");
            busy_by_versions = 1;
        }
        illegal => panic!(
            "seed {seed}: not linearizable\n{}",
            describe(&busy, &illegal)
        ),
    }
    let checked_ops = history.len() + busy.len();
    check_watches(&sim, seed);
    let mut faults = sim.faults;
    faults.insert("busy key checked by its versions", busy_by_versions);
    faults.insert("watch changes delivered", sim.watched.changes);
    faults.insert("watch skips", sim.watched.skips);
    faults.insert("watches ended", sim.watched.ended);
    RunStats {
        faults,
        checked: checked_ops,
    }
}

/// When the checker runs out of time on `key`, a weaker check that always finishes: the
/// version every answered operation reports (the register's version it read or made) never
/// goes down in real time, no two answered puts made the same version, and a get that read a
/// version an answered put made read that put's value. A linearizable history passes it; a
/// stale read, a lost write or a write applied twice fails it. Returns whether it passed, and
/// what it found.
fn versions_follow_real_time(history: &[Operation], key: &[u8]) -> (bool, String) {
    let version = |o: &Output| match o {
        Output::Get { version, .. }
        | Output::Put { version }
        | Output::Delete { version, .. }
        | Output::Cas { version, .. }
        | Output::Inspect { version, .. } => Some(*version),
        Output::Absent { .. } | Output::Fenced { .. } => None,
    };
    let ops: Vec<&Operation> = history.iter().filter(|o| o.key == key).collect();
    // (call, return, version, the value a put wrote)
    let known: Vec<(u64, u64, u64, Option<&[u8]>)> = ops
        .iter()
        .filter_map(|o| {
            let v = version(o.output.as_ref()?)?;
            let put = match (&o.input, &o.output) {
                (Input::Put { value }, Some(Output::Put { .. })) => Some(value.as_slice()),
                _ => None,
            };
            Some((o.call, o.ret?, v, put))
        })
        .collect();
    for a in &known {
        for b in &known {
            if a.1 < b.0 && a.2 > b.2 {
                let why = format!(
                    "versions go down in real time: version {} answered before an operation \
                     that began later answered version {}",
                    a.2, b.2
                );
                return (false, why);
            }
            if a.3.is_some() && b.3.is_some() && a.0 != b.0 && a.2 == b.2 {
                return (false, format!("two puts made version {}", a.2));
            }
        }
    }
    for o in &ops {
        if let Some(Output::Get { value, version }) = &o.output {
            let maker = known.iter().find(|k| k.2 == *version && k.3.is_some());
            if let Some((_, _, _, Some(written))) = maker {
                if value.as_deref() != Some(*written) {
                    return (
                        false,
                        format!("a get of version {version} read another value"),
                    );
                }
            }
        }
    }
    let unknown_writes = ops
        .iter()
        .filter(|o| o.is_unknown() && !o.input.is_read())
        .count();
    let why = format!(
        "the weaker check passed: the {} answered operations' versions follow real time \
         ({} operations, {unknown_writes} writes of unknown outcome)",
        known.len(),
        ops.len()
    );
    (true, why)
}

/// The seeds a seeded test runs: `PAXKV_SIM_SEED` (one, to replay it), else 1 to
/// `PAXKV_SIM_SEEDS`, else 1 to `default`.
pub(super) fn seeds(default: u64) -> Vec<u64> {
    match std::env::var("PAXKV_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("PAXKV_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("PAXKV_SIM_SEEDS").map_or(default, |n| n.parse().unwrap());
            (1..=count).collect()
        }
    }
}

/// `Workload::again` with everything else: a first write retried through its own node after
/// the node's proposer crashed, its successor's fast Accept a duplicate at a fast quorum.
#[test]
fn seeded_first_writes_retried_through_their_own_node_after_a_crash_stay_linearizable() {
    let aim = Aim {
        again: true,
        ..Aim::default()
    };
    let retried = "first write retried through its own node";
    let (faults, _) = run_seeds_requiring(aim, 24, &[retried]);
    eprintln!("simulation: {:?} {retried}", faults.get(retried));
}

/// Runs `seed_count` seeds (unless `PAXKV_SIM_SEED(S)` says otherwise) with `aim`, and asserts
/// that, over more than one seed, each of `required` happened; returns every count.
fn run_seeds_requiring(
    aim: Aim,
    seed_count: u64,
    required: &[&str],
) -> (BTreeMap<&'static str, u32>, usize) {
    let seeds = seeds(seed_count);
    let many = seeds.len() > 1;
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut checked = 0;
    for seed in seeds {
        let stats = run_with(seed, aim);
        for (fault, n) in stats.faults {
            *faults.entry(fault).or_default() += n;
        }
        checked += stats.checked;
    }
    for fault in required {
        assert!(
            !many || faults.get(fault).is_some_and(|n| *n > 0),
            "no {fault} injected"
        );
    }
    (faults, checked)
}

/// Reads answered past writes in flight, each such acceptor then crashed with the write's
/// proposer: a read answered from a record that is not durable yet would see a write that
/// the crash then loses everywhere (mutant `sim-read-from-flight`).
#[test]
fn seeded_reads_past_writes_in_flight_whose_acceptors_then_crash_stay_linearizable() {
    let aim = Aim {
        reads_past_writes: true,
        ..Aim::default()
    };
    let required = [
        "read answered from durable, a write in flight",
        "acceptor crashed after a read passed its write",
        "proposer crashed with the write a read passed",
        "read after a crash lost a passed write",
    ];
    let (faults, checked) = run_seeds_requiring(aim, 24, &required);
    eprintln!("simulation, reads past writes in flight: {checked} operations checked; {faults:?}");
}

/// Lists whose voters each send the rest of the prefix in one scan answer
/// (`Aim::whole_scans`): a page that fills at its last item just as the cluster's own keys
/// cut it (`\0once-00`, before them in the prefix `\0`), the merge already done, must still
/// say that keys follow (`\0~once-01`, after them: mutant `page-cut-says-no-more-sim`).
/// Eight seeds, not 24 (a minute of a debug CI run for a case they reach about fifty times;
/// `PAXKV_SIM_SEEDS` sets more, as the mutation runs do).
#[test]
fn seeded_lists_whose_voters_send_the_whole_prefix_at_once_stay_linearizable() {
    let aim = Aim {
        whole_scans: true,
        ..Aim::default()
    };
    let required = [
        "list pages",
        "list pages ended past their last item",
        "list pages filled before a cut, the whole prefix scanned",
        "lists to their end",
    ];
    let (faults, checked) = run_seeds_requiring(aim, 8, &required);
    eprintln!("simulation, lists of whole scans: {checked} operations checked; {faults:?}");
}

/// `Workload::race_during_change` with everything else: first writes raced at the fast
/// ballot while the voters change, three times as many changes as the common runs.
#[test]
fn seeded_first_writes_raced_while_the_voters_change_stay_linearizable() {
    let aim = Aim {
        change_races: true,
        ..Aim::default()
    };
    let required = [
        "first write raced during a change",
        "raced proposer crashed mid-change",
        "add",
        "remove",
        // `Proposer::enqueue`'s refusal at a node that is no member (the run's clients ask
        // nodes between their removal and their re-add).
        "asked a node that is no member",
    ];
    let (faults, _) = run_seeds_requiring(aim, 24, &required);
    eprintln!("simulation, first writes raced during changes: {faults:?}");
}

/// A seed replays exactly: the same seed, run twice in one process, makes the same schedule
/// (the same operations, the same faults). Each run's maps draw their own hash keys, so an
/// order taken from a `HashMap` that reaches the schedule shows here, most of the time.
/// Seeds 2, 6, 14 and 20 did not replay while the lease keepers acted on due leases in their
/// tracker's map order (`paxos::lease::Tracker::due`, now by id): with that order back, this
/// test failed 8 times in 8 tries (with two of the seeds, 3 in 4). Only the checker's own
/// verdict path (whether the busy key was decided by its versions, which depends on the
/// search's time budget) is left out.
#[test]
fn a_seed_replays_exactly() {
    for seed in [2, 6, 14, 20] {
        let run = || {
            let mut stats = run_with(seed, Aim::default());
            stats.faults.remove("busy key checked by its versions");
            (stats.checked, stats.faults)
        };
        assert_eq!(run(), run(), "seed {seed} did not replay the same schedule");
    }
}

#[test]
fn seeded_runs_with_membership_changes_message_faults_crashes_and_lost_disks_stay_linearizable() {
    let required = [
        "wipe",
        "rollback",
        "replace",
        "add",
        "remove",
        "intact restart",
        "driver restart",
        "add given up",
        "proposer restart",
        "acceptor crash",
        "watch changes delivered",
        "watch skips",
        "watches ended",
        "lease expired by a keeper",
        "lease expiry checked",
        "key released by a keeper",
        "keeper pause",
        "keepalive read, then touched",
        "keepalive read, lease gone",
        "phase timeout lengthened by a late majority",
        "thrifty request",
        "hot accepts lagged",
        "probe writes lagged",
        "probe write chosen past its majority",
        "thrifty round widened",
        "thrifty suspect",
        "read asked without remembered writes",
        "read asked in full after laggards",
        "read of a state its proposer saw chosen at the fast ballot",
        "list pages",
        "list pages ended by their bytes",
        "list pages ended past their last item",
        "lists to their end",
        "list read rounds",
        "scan asks unanswered",
        "lists unavailable",
    ];
    let (faults, checked) = run_seeds_requiring(Aim::default(), 24, &required);
    eprintln!("simulation: {checked} operations checked; faults injected: {faults:?}");
}
