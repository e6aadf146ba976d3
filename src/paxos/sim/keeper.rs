//! The lease keeper in the simulation (issue 22): every node runs the keeper of
//! `actors::lease` on its own clock, beside everything else `paxos::sim` does to the nodes
//! and the network, and each expiry that acts is checked against the promise of
//! `paxos::lease` as it is answered.
//!
//! **The decisions are the runtime's**: what a node has seen and what is due when
//! (`paxos::lease::Tracker`, told what each request served did by `Served`), how a
//! keepalive starts (`Keepalive`), its place in a lease's order of nodes (`place`), and each
//! expiry's sequence of commands (`paxos::lease::Expiry`: its end or delete, the read of the
//! ended record, the releases of its keys, the delete), which `actors::lease` drives too.
//! Only the schedule is restated here, as `Sim::start_list` restates `actors::list`'s IO: a
//! scan of the lease prefix every `SCAN_INTERVAL` of its clock (the next once the last
//! returned), and every `SCAN_INTERVAL`, once what it started before is done, an expiry of
//! each lease due.
//!
//! **Clocks**: each node's clock runs at its own rate, drawn from 0.9 to just under
//! `1 + CLOCK_RATE_MARGIN` (the assumption's bound: faster is outside the model), from its
//! own origin; no two are compared.
//!
//! **Clients** of six leases (`KEEPER_LEASES`, TTLs of 400 to 800 ms, so that several
//! lapse in a run) act as `actors::lease::Leases` does on the node they ask: grants,
//! keepalives (the node tracks what it served, `Tracker::served`), reads, and writes attached
//! to a lease, in its three steps (the key's fence, the attach, the write if the fence
//! holds). A keepalive on a node that does not track its lease reads it first and
//! touches it only if it is live (`paxos::lease::Keepalive`). Their keepalives stop now
//! and then for longer than a TTL, and at the end.
//!
//! **Faults** beyond the simulation's own: a node's keeper pauses for 300 ms to 2 s and
//! resumes with what it saw before (its tracker's times are old: it may find every lease due
//! at once); a restarted node's keeper starts empty.
//!
//! **Checked**:
//! - *never early*: each expiry that acted (an end or delete that changed the lease) was sent
//!   at least TTL of the simulation's time after the version it was conditional on was first
//!   seen chosen by anyone (the invariant check after each delivery, an answer, a listing),
//!   so at least TTL after the lease's last keepalive, attach or grant;
//! - *not late forever*: once the run heals and every client stopped, within
//!   `liveness_bound`, every keeper lease is gone and no key attached to one is left
//!   (a linearizable read of each, in the history);
//! - and the history, keeper's commands included, is linearizable (`paxos::sim`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Sim, Waiter};
use crate::error::Error;
use crate::paxos::lease::{
    lease_key, lease_of_key, lease_prefix, place, Due, Expiry, Keepalive, LeaseId, LeaseRecord,
    Next, Served, Tracker, CLOCK_RATE_MARGIN, SCAN_INTERVAL, STAGGER,
};
use crate::paxos::types::{Command, Key, LeasedWrite, NodeId, Outcome, RequestId};

/// The leases the keepers look after, and their TTLs.
/// (Six, each with few commands: a register's history with many operations of unknown
/// outcome is costly to check.)
const KEEPER_LEASES: [(LeaseId, Duration); 6] = [
    (0x6b65_6570_0000_0001, Duration::from_millis(400)),
    (0x6b65_6570_0000_0002, Duration::from_millis(500)),
    (0x6b65_6570_0000_0003, Duration::from_millis(600)),
    (0x6b65_6570_0000_0004, Duration::from_millis(700)),
    (0x6b65_6570_0000_0005, Duration::from_millis(800)),
    (0x6b65_6570_0000_0006, Duration::from_millis(400)),
];
/// Keys written attached to them.
const KEPT_KEYS: usize = 4;
/// The deadline of the reads that check the keepers at the end: a patient client's, since an
/// impatient one (30 ms) may run out while a read falls back to a full round (a quick read
/// that meets a first majority other than the one the last write went to, see `paxos::proposer`,
/// "Thrifty rounds"), which says nothing of the keepers.
const PATIENT_MS: u64 = 400;
/// The write ids of a node's keeper (`actors::lease` mints its own).
const KEEPER_CLIENT: u64 = 1 << 40;

fn kept_key(i: usize) -> Key {
    format!("kept-{i}").into_bytes()
}

fn ttl_of(id: LeaseId) -> Duration {
    KEEPER_LEASES
        .iter()
        .find(|(l, _)| *l == id)
        .map_or(Duration::ZERO, |(_, ttl)| *ttl)
}

/// Is `key` a lease's register (its value changes by keepalive-free steps: the watch check
/// leaves it out, as `paxos::sim`'s own lease key)?
pub(super) fn is_lease_register(key: &[u8]) -> bool {
    key.starts_with(&lease_prefix())
}

/// The version an answer shows chosen (the state it read or made, or, for a retried write,
/// made earlier): every version of an answer was chosen by then.
pub(super) fn version_of(outcome: &Outcome) -> Option<u64> {
    match outcome {
        Outcome::Get { version, .. }
        | Outcome::Put { version }
        | Outcome::Delete { version, .. }
        | Outcome::Cas { version, .. } => Some(*version),
        Outcome::Inspect(found) => Some(found.version),
        Outcome::Fenced { .. } => None,
    }
}

/// A node's clock: `origin + rate · (real time since the simulation began)`.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    begin: Instant,
    origin: Instant,
    rate: f64,
}

impl Clock {
    fn at(&self, real: Instant) -> Instant {
        self.origin + real.duration_since(self.begin).mul_f64(self.rate)
    }
}

/// One node's keeper (in memory: a restart begins another).
pub(super) struct Keeper {
    clock: Clock,
    tracker: Tracker,
    scans: u64,
    /// The list of the scan in progress.
    scanning: Option<u64>,
    next_scan: Instant,
    next_act: Instant,
    /// What it started on the leases due, by lease.
    acting: BTreeMap<LeaseId, Acting>,
    /// Paused until then (the simulation's time).
    paused_until: Instant,
}

impl Keeper {
    /// Its node's clock (a restarted process's keeper keeps it: the machine's).
    pub(super) fn clock(&self) -> Clock {
        self.clock
    }

    pub(super) fn new(clock: Clock) -> Keeper {
        Keeper {
            clock,
            tracker: Tracker::default(),
            scans: 0,
            scanning: None,
            next_scan: clock.origin,
            next_act: clock.origin,
            acting: BTreeMap::new(),
            paused_until: clock.begin,
        }
    }
}

struct Acting {
    due: Due,
    /// The runtime's expiry (`paxos::lease::Expiry`), fed the answers.
    expiry: Expiry,
    /// When its first command was sent (the simulation's time).
    sent: Instant,
}

/// A client's write attached to a lease, in `Leases::write`'s three steps.
#[derive(Clone)]
struct AttachedWrite {
    node: NodeId,
    key: Key,
    lease: LeaseId,
    value: Vec<u8>,
    /// The fence read (known from the second step on).
    fence: u64,
}

/// What a client operation of the keeper workload goes on with once answered.
enum Then {
    /// A grant or keepalive served on `node`: tracked there (`Leases::served`).
    Served {
        node: NodeId,
        lease: LeaseId,
        how: Served,
    },
    /// The read a keepalive on `node` starts with when `node` does not track the lease
    /// (`paxos::lease::Keepalive`): its touch follows if the lease is live.
    KeepaliveRead { node: NodeId, lease: LeaseId },
    /// The next step of a write attached to a lease.
    Write(AttachedWrite),
}

/// The keepers' world: their clients, what is observed of the leases' versions, and the
/// counts.
pub(super) struct Keeping {
    rng: SmallRng,
    /// The first time each version of each lease register was seen chosen.
    first_seen: BTreeMap<(Key, u64), Instant>,
    /// Client operations to go on with, by history index.
    then: BTreeMap<usize, Then>,
    /// Per lease, until when its client holds off keepalives (a lapse).
    lapsing: BTreeMap<LeaseId, Instant>,
}

impl Keeping {
    pub(super) fn new(seed: u64) -> Keeping {
        Keeping {
            rng: SmallRng::seed_from_u64(seed ^ 0x6b65_6570_6572),
            first_seen: BTreeMap::new(),
            then: BTreeMap::new(),
            lapsing: BTreeMap::new(),
        }
    }

    /// A new node's clock, at `now`.
    pub(super) fn clock(&mut self, begin: Instant) -> Clock {
        Clock {
            begin,
            origin: begin + Duration::from_secs(self.rng.random_range(0..3_600)),
            rate: self
                .rng
                .random_range(0.9..(1.0 + CLOCK_RATE_MARGIN * 0.999)),
        }
    }
}

impl Sim {
    /// Version `version` of `key` was seen chosen now (kept for lease registers).
    pub(super) fn seen_chosen(&mut self, key: &[u8], version: u64) {
        if is_lease_register(key) {
            let now = self.now;
            self.keeping
                .first_seen
                .entry((key.to_vec(), version))
                .or_insert(now);
        }
    }

    /// Every live node's keeper: a scan when one is due, and an action on what is due.
    pub(super) fn run_keepers(&mut self) {
        let nodes: Vec<NodeId> = self.live_nodes();
        for node in nodes {
            let now = self.now;
            let k = &mut self.nodes.get_mut(&node).unwrap().keeper;
            if now < k.paused_until {
                continue;
            }
            let t = k.clock.at(now);
            if k.scanning.is_some_and(|l| !self.lists.contains_key(&l)) {
                k.scanning = None; // failed (nothing recorded), or lost
            }
            let scan = (k.scanning.is_none() && t >= k.next_scan).then(|| {
                k.scans += 1;
                k.next_scan = t + SCAN_INTERVAL;
                k.scans
            });
            let due = if k.acting.is_empty() && t >= k.next_act {
                k.next_act = t + SCAN_INTERVAL;
                k.tracker.due(t)
            } else {
                Vec::new()
            };
            if let Some(scan) = scan {
                let list = self.start_list_of(node, &lease_prefix(), Some(scan));
                self.nodes.get_mut(&node).unwrap().keeper.scanning = list;
            }
            for due in due {
                self.start_acting(node, due);
            }
        }
    }

    /// A page of a keeper's scan returned: what it lists, at the node's time now (`last`:
    /// the scan's last page, after which what it did not list is forgotten).
    pub(super) fn keeper_scanned(
        &mut self,
        node: NodeId,
        list: u64,
        scan: u64,
        items: Vec<(Key, Vec<u8>, u64)>,
        last: bool,
    ) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&node).filter(|n| !n.dead) else {
            return;
        };
        let nodes = n.membership.as_ref().map(|m| m.nodes()).unwrap_or_default();
        let k = &mut n.keeper;
        if k.scanning != Some(list) {
            return; // a scan of the process before a restart
        }
        let t = k.clock.at(now);
        for (key, value, version) in items {
            let (Some(id), Some(record)) = (lease_of_key(&key), LeaseRecord::decode(&value)) else {
                continue;
            };
            if let Some(place) = place(&nodes, node, &key) {
                k.tracker.saw(id, version, &record, place, t, scan);
            }
        }
        if last {
            k.scanning = None;
            k.tracker.forget_unlisted(scan);
        }
    }

    /// Starts acting on a lease due, as `Leases::expire`.
    fn start_acting(&mut self, node: NodeId, due: Due) {
        let (expiry, (key, command)) = Expiry::start(due);
        *self.faults.entry("lease expiries started").or_default() += 1;
        let sent = self.now;
        let k = &mut self.nodes.get_mut(&node).unwrap().keeper;
        k.acting.insert(due.id, Acting { due, expiry, sent });
        self.keeper_submit(node, due.id, key, command);
    }

    /// A keeper's command, through the node's proposer, into the history.
    fn keeper_submit(&mut self, node: NodeId, id: LeaseId, key: Key, command: Command) {
        let index = self.push_operation(&key, &command);
        let token = self.token(Waiter::Keeper(node, id, index), node, &key);
        let write_id = command.is_write().then_some(RequestId {
            client: KEEPER_CLIENT + node as u64,
            seq: token,
        });
        let (now, deadline) = (self.now, self.now + Duration::from_millis(400));
        let mut out = Vec::new();
        self.proposer(node, &key)
            .submit(now, token, command, write_id, false, deadline, &mut out);
        self.effects(node, &key, out);
    }

    /// A keeper's command answered (an error: unknown, or not applied): checked if it was
    /// the lease's end, then fed to the expiry, whose next calls are sent.
    pub(super) fn keeper_answered(
        &mut self,
        node: NodeId,
        id: LeaseId,
        result: Result<Outcome, Error>,
    ) {
        let now = self.now;
        let seed = self.watched.seed;
        let Some(n) = self.nodes.get_mut(&node).filter(|n| !n.dead) else {
            return;
        };
        let t = n.keeper.clock.at(now);
        let Some(acting) = n.keeper.acting.get_mut(&id) else {
            return; // the process that asked was restarted
        };
        if let (
            true,
            Ok(Outcome::Delete {
                deleted: true,
                version,
            }),
        ) = (acting.expiry.is_ending(), &result)
        {
            // The state it replaced: the version it named, unless it was not conditional on
            // it (then whichever came last, if anyone saw it chosen).
            let before = version - 1;
            let seen = self
                .keeping
                .first_seen
                .get(&(lease_key(id), before))
                .copied();
            assert!(
                seen.is_some() || before != acting.due.version,
                "seed {seed}: lease {id:x}: version {before} was acted on but never seen chosen"
            );
            if let Some(seen) = seen {
                let waited = acting.sent.saturating_duration_since(seen);
                assert!(
                    waited >= ttl_of(id),
                    "seed {seed}: node {node} expired lease {id:x} early: its end was sent {} ms \
                     after version {before}, the one it ended, was first seen chosen, TTL {} ms \
                     (it named version {})",
                    waited.as_millis(),
                    ttl_of(id).as_millis(),
                    acting.due.version
                );
                *self.faults.entry("lease expiry checked").or_default() += 1;
            }
            *self.faults.entry("lease expired by a keeper").or_default() += 1;
        }
        let next = acting.expiry.answered(result.as_ref().ok());
        let k = &mut self.nodes.get_mut(&node).unwrap().keeper;
        match next {
            Next::Run(calls) => {
                for (key, command) in calls {
                    if matches!(command, Command::Release { .. }) {
                        *self.faults.entry("key released by a keeper").or_default() += 1;
                    }
                    self.keeper_submit(node, id, key, command);
                }
            }
            Next::Wait => {}
            Next::Done => {
                k.acting.remove(&id);
                k.tracker.forget(id);
            }
            Next::Failed(_) => {
                k.acting.remove(&id);
                k.tracker.postpone(id, t);
            }
        }
    }

    /// Now and then a keeper pauses (300 ms to 2 s) and resumes with what it saw before.
    pub(super) fn pause_a_keeper(&mut self) {
        if !self.keeping.rng.random_bool(0.002) {
            return;
        }
        let live = self.live_nodes();
        let node = live[self.keeping.rng.random_range(0..live.len())];
        let pause = Duration::from_millis(self.keeping.rng.random_range(300..2_000));
        *self.faults.entry("keeper pause").or_default() += 1;
        self.nodes.get_mut(&node).unwrap().keeper.paused_until = self.now + pause;
    }

    /// A client operation of the keeper workload answered: a served lease tracked on its
    /// node, a keepalive's touch after its read, or the next step of a write attached to a
    /// lease.
    pub(super) fn keeper_client_answered(&mut self, index: usize, result: &Result<Outcome, Error>) {
        let Some(then) = self.keeping.then.remove(&index) else {
            return;
        };
        let Ok(outcome) = result else { return };
        match then {
            Then::Served { node, lease, how } => {
                if let Outcome::Cas {
                    swapped: true,
                    version,
                } = outcome
                {
                    self.keeper_served(node, lease, *version, how);
                }
            }
            Then::KeepaliveRead { node, lease } => {
                let Outcome::Get { value, .. } = outcome else {
                    return;
                };
                match Keepalive::read(value.as_deref()) {
                    Ok(Some(ttl)) => {
                        *self
                            .faults
                            .entry("keepalive read, then touched")
                            .or_default() += 1;
                        self.keeper_keepalive(node, lease, Keepalive::Touch { ttl })
                    }
                    Ok(None) => {
                        *self.faults.entry("keepalive read, lease gone").or_default() += 1;
                    }
                    Err(why) => panic!("seed {}: lease {lease:016x}: {why}", self.watched.seed),
                }
            }
            Then::Write(mut w) => match outcome {
                Outcome::Inspect(found) => {
                    w.fence = found.fence;
                    let attach = Command::LeaseAttach {
                        key: w.key.clone(),
                        max_keys: KEPT_KEYS as u32,
                    };
                    let (node, lease) = (w.node, w.lease);
                    let i = self.history.len();
                    self.client(node, &lease_key(lease), attach);
                    self.keeping.then.insert(i, Then::Write(w));
                }
                Outcome::Cas {
                    swapped: true,
                    version,
                } => {
                    self.keeper_served(w.node, w.lease, *version, Served::Attach);
                    let write = Command::LeasedWrite(Box::new(LeasedWrite {
                        expect: None,
                        value: w.value,
                        lease: w.lease,
                        fence: w.fence,
                        retried: false,
                    }));
                    self.client(w.node, &w.key, write);
                }
                // The lease is gone (nothing written), or the key is full.
                _ => {}
            },
        }
    }

    /// A client's command: patient (the lease registers get many commands, and an
    /// impatient client's unknown outcomes make their histories costly to check).
    fn client(&mut self, node: NodeId, key: &[u8], command: Command) {
        self.submit_with(node, key, command, false, Some(400));
    }

    /// `Leases::served`: what a grant, keepalive or attach served on `node` left, tracked
    /// there at once if `Tracker::served` says so.
    fn keeper_served(&mut self, node: NodeId, lease: LeaseId, version: u64, how: Served) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&node).filter(|n| !n.dead) else {
            return;
        };
        let key = lease_key(lease);
        let nodes = n.membership.as_ref().map(|m| m.nodes()).unwrap_or_default();
        let t = n.keeper.clock.at(now);
        if let Some(place) = place(&nodes, node, &key) {
            n.keeper.tracker.served(lease, version, how, place, t);
        }
    }

    /// A keepalive of `lease` on `node`, from `start` (`Leases::keepalive`): its touch, or
    /// the read that comes first when the node does not track the lease.
    fn keeper_keepalive(&mut self, node: NodeId, lease: LeaseId, start: Keepalive) {
        let key = lease_key(lease);
        let i = self.history.len();
        match start {
            Keepalive::Touch { ttl } => {
                self.client(node, &key, Command::Touch);
                let how = Served::Keepalive { ttl };
                self.keeping
                    .then
                    .insert(i, Then::Served { node, lease, how });
            }
            Keepalive::Read => {
                self.client(node, &key, Command::Get);
                self.keeping
                    .then
                    .insert(i, Then::KeepaliveRead { node, lease });
            }
        }
    }

    /// This step's keeper client operation, if one is drawn: a grant, a keepalive (unless
    /// the lease is lapsing), a read, or a write attached to a lease.
    pub(super) fn keeper_client(&mut self, step: u32) {
        if step >= 6_500 || !self.keeping.rng.random_bool(0.02) {
            return;
        }
        let (id, _) = KEEPER_LEASES[self.keeping.rng.random_range(0..KEEPER_LEASES.len())];
        let live = self.live_nodes();
        let node = live[self.keeping.rng.random_range(0..live.len())];
        let now = self.now;
        if self.keeping.rng.random_bool(0.02) {
            let lapse = Duration::from_millis(self.keeping.rng.random_range(500..1_500));
            self.keeping.lapsing.insert(id, now + lapse);
        }
        let lapsing = self
            .keeping
            .lapsing
            .get(&id)
            .is_some_and(|until| now < *until);
        let key = lease_key(id);
        match self.keeping.rng.random_range(0..10) {
            0 | 1 => {
                let grant = Command::Cas {
                    expect: 0,
                    value: LeaseRecord::new(ttl_of(id)).encode(),
                };
                let i = self.history.len();
                self.client(node, &key, grant);
                let how = Served::Grant { ttl: ttl_of(id) };
                let served = Then::Served {
                    node,
                    lease: id,
                    how,
                };
                self.keeping.then.insert(i, served);
            }
            2..=5 if !lapsing => {
                let start = self.nodes[&node].keeper.tracker.keepalive(id);
                self.keeper_keepalive(node, id, start);
            }
            6..=8 if !lapsing => {
                let write = AttachedWrite {
                    node,
                    key: kept_key(self.keeping.rng.random_range(0..KEPT_KEYS)),
                    lease: id,
                    value: format!("kept {}", self.history.len()).into_bytes(),
                    fence: 0,
                };
                let i = self.history.len();
                self.client(node, &write.key.clone(), Command::Inspect);
                self.keeping.then.insert(i, Then::Write(write));
            }
            _ => {
                self.client(node, &key, Command::Get);
            }
        }
    }

    /// How long after the run healed and its clients stopped every keeper lease must be
    /// gone: the longest TTL with the margin, on the slowest clock, two scans and an action
    /// tick, and a second for the rounds and a failed release tried again (`STAGGER`).
    pub(super) fn liveness_bound() -> Duration {
        let longest = KEEPER_LEASES
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or_default();
        (longest.mul_f64(1.0 + CLOCK_RATE_MARGIN) + 3 * SCAN_INTERVAL).div_f64(0.9)
            + STAGGER
            + Duration::from_secs(1)
    }

    /// After the run healed: keepers only, for the bound; then a read of every keeper lease
    /// and every key written attached to one, whose answers [`check_keepers_done`] checks.
    pub(super) fn keep_until_bound(&mut self) -> Vec<usize> {
        let until = self.now + Sim::liveness_bound();
        while self.now < until {
            self.deliver_share(6);
            self.tick();
        }
        let voters = self.register.voters();
        let mut reads = Vec::new();
        for (id, _) in KEEPER_LEASES {
            let node = voters[self.rng.random_range(0..voters.len())];
            reads.push(self.history.len());
            self.submit_with(node, &lease_key(id), Command::Get, false, Some(PATIENT_MS));
        }
        for i in 0..KEPT_KEYS {
            let node = voters[self.rng.random_range(0..voters.len())];
            reads.push(self.history.len());
            self.submit_with(
                node,
                &kept_key(i),
                Command::Inspect,
                false,
                Some(PATIENT_MS),
            );
        }
        reads
    }

    /// Every keeper lease is gone, and no key is left attached to one.
    pub(super) fn check_keepers_done(&self, seed: u64, reads: &[usize]) {
        use super::linearizability::Output;
        for &i in reads {
            let op = &self.history[i];
            let key = String::from_utf8_lossy(&op.key);
            match &op.output {
                Some(Output::Get { value, .. }) => assert!(
                    value.is_none(),
                    "seed {seed}: {key} is still there {:?} after its lease lapsed",
                    Sim::liveness_bound()
                ),
                Some(Output::Inspect { value, lease, .. }) => assert!(
                    value.is_none() || !lease.is_some_and(|l| ttl_of(l) > Duration::ZERO),
                    "seed {seed}: {key} is still attached to lease {lease:x?} {:?} after it \
                     lapsed",
                    Sim::liveness_bound()
                ),
                other => panic!("seed {seed}: the final read of {key} answered {other:?}"),
            }
        }
    }
}
