//! Leases (issue 22): a lease is a CASPaxos register of its own, and expiry is a
//! compare-and-set on it. No node owns a lease, no clock is shared, and no new protocol
//! step is needed. Keys attached to a lease go with it ("Attached keys" below).
//!
//! # The record
//!
//! Lease `id` (64 random bits, shown as 16 hex digits) is the register at the reserved key
//! [`lease_key`]`(id)` (`\0paxkv/lease/<16 hex digits>`, out of clients' reach). Its value
//! is a [`LeaseRecord`] (its TTL); its version counts its life:
//!
//! - **grant**: a compare-and-set on version 0 ("no value"), so a fresh id is taken once;
//!   the client picks the id at random and sends the grant to the home node of its key,
//!   whose keeper then tracks the lease from its grant (`actors::lease`);
//! - **keepalive**: `Command::Touch`, which raises the version of a register that has a
//!   value and does nothing to one that has none (the lease is gone);
//! - **revoke**: an end (`Command::LeaseEnd { expect: 0 }`), then its keys' release;
//! - **expiry**: `Command::LeaseEnd { expect: v }` (or `DeleteIf { expect: v }` for a lease
//!   with no keys), by any node that has watched the register stay at version `v` for long
//!   enough ([`Tracker`]), then its keys' release.
//!
//! # What is promised, and the one clock assumption
//!
//! **Assumption (clock rate, not clock value):** over any interval, a node's monotonic clock
//! advances at most `1 + ρ` times as fast as real time, with ρ = [`CLOCK_RATE_MARGIN`] (1 %;
//! quartz drift is ~10⁻⁵, and NTP slews by at most 5·10⁻⁴): `TTL·(1 + ρ)` on its clock is
//! at least TTL of real time. No two clocks are compared, so no clock needs to be
//! synchronized; a node whose clock runs faster than that (a VM with a broken clock source)
//! can expire leases early, and nothing else can.
//!
//! **Safety: never early.** A lease is deleted by expiry only after TTL of real time has
//! passed since its last keepalive (or its grant) was chosen, and so after TTL since that
//! keepalive was *sent*. A client that counts its lease from the moment it sent its last
//! successful keepalive, on a clock that does not run slow (the whole margin is spent on
//! the nodes' side), holds it no longer than the cluster does. That is not enough to act
//! safely on a resource: a client may pause between checking its lease and acting, past the
//! lease's end; only a fencing token checked by the resource closes that (`paxkv lock`
//! passes the lock key's version: "Locks and elections" below). Why the lease is never expired early:
//!
//! 1. The expiring node saw the register at version `v` in a linearizable read that returned
//!    at its local time `t_seen` (a listing of the lease prefix: each item a state chosen at
//!    some moment within the call, `actors::list`). Version `v` was chosen no later than the
//!    read's return, so no later than `t_seen`.
//! 2. It sends `DeleteIf { expect: v }` only when its clock reads `t_seen + TTL·(1 + ρ)` or
//!    later, which is at least TTL of real time after `t_seen` by the assumption.
//! 3. The expiry (`LeaseEnd` or `DeleteIf`) acts only if the register is still at `v`,
//!    decided by consensus at the moment it is chosen: if any keepalive (or attach) was
//!    chosen after `v`, the version moved and the expiry does nothing. So when it acts, the
//!    last keepalive is the one that made `v`, chosen before `t_seen`, at least TTL before
//!    the expiry. ∎
//!
//! Messages may be delayed, duplicated or reordered at will: a delayed `DeleteIf` is still
//! conditional on `v` when it is chosen, and a retried one is de-duplicated by its write id
//! (`paxos::register`), and any copy of it can delete only a register still at `v` (versions
//! never repeat). A paused node resumes with an old `t_seen` and may find the lease due at
//! once; its `DeleteIf { expect: v }` then does nothing if a keepalive came during the
//! pause: step 3, not the pause, keeps it safe.
//!
//! Outside the model: a data directory restored in place from a copy (not wiped: paxkv
//! refuses a wiped or rolled-back store it can detect, `actors::membership::start`) can
//! lose a chosen keepalive, and a node that never saw it may then expire the lease early,
//! as any chosen write can be lost that way.
//!
//! **A keepalive racing an expiry: exactly one wins, and the client hears which.** Both are
//! writes of one register, ordered by consensus. A touch chosen first raises the version and
//! the expiry's `DeleteIf` does nothing; a delete chosen first leaves no value and the touch
//! answers `swapped: false`: `paxkv lease keepalive` then exits 1 ("the lease is gone").
//! An unknown outcome (the write may or may not have been chosen) is said as such; the
//! client retries, which reads which one happened.
//!
//! **Liveness: expired within a bound, while a majority is up.** Every node scans the lease
//! prefix every [`SCAN_INTERVAL`] (or, with many leases, every ten times as long as a scan
//! takes, so that scanning uses at most about a tenth of a node: `actors::lease`) and tracks
//! what it sees. A lease that is not kept alive is expired by the first of
//! its nodes to reach its deadline: node `i` of the lease key's order of nodes (its home
//! first, as a client picks the home of a key) waits `i ·` [`STAGGER`] more than the home,
//! so that one node usually does it, and another does when the home is down. With its home
//! up, a lapsed lease is gone within `TTL·(1 + ρ)` plus two scan intervals plus a round;
//! with it down, one more `STAGGER` per node before it in the order. Every node lists every
//! lease: that is the keeper's scale limit (BENCHMARKS.md, "Leases"), to be lifted by
//! scanning often only the leases a node is first or second in line for.
//!
//! # Attached keys
//!
//! `put KEY VALUE --lease ID` (and `cas ... --lease ID`) attaches KEY to the lease: when the
//! lease expires or is revoked, KEY is deleted, as any delete (its version up by one,
//! watchers told). Three registers take part, each changed only by consensus; no step needs
//! a lock, a clock or a second register's state.
//!
//! - KEY's register holds the lease its value is attached to (`Register::lease`, set by a
//!   leased write, cleared by every other write: a put without `--lease` detaches) and a
//!   **fence** (`Register::fence`), a counter raised by every release of KEY.
//! - The lease's register lists the keys attached while it lived (`LeaseRecord::keys`, at
//!   most `limits.max_keys_per_lease`), and whether it **ended**.
//!
//! **A leased write** (`actors::lease::Leases::write`) is three commands, in order: (1) read
//! KEY's fence `f` (`Command::Inspect`); (2) record KEY in the lease (`LeaseAttach`, which
//! does nothing unless the lease is live: "not found", nothing written, when it is gone);
//! (3) write KEY attached to the lease *if its fence is still `f`* (`LeasedWrite`). A write
//! refused at (3) (`Outcome::Fenced`) changed nothing and is not remembered; the node starts
//! again at (1).
//!
//! **A lease's end** (expiry: `LeaseEnd { expect: v }`, conditional on the version seen as
//! in the argument above; revoke: `LeaseEnd { expect: 0 }`) marks its record ended, keys
//! kept, in one consensus step: from then on no keepalive (`Touch` needs a live record) and
//! no attach succeeds. Then every listed key gets `Release { lease }`: deleted if still
//! attached to this lease, and its fence raised whatever it is attached to. Then the
//! record is deleted. A lease that lists no keys at the version seen is deleted at once
//! (`DeleteIf`), as before keys could be attached: there is nothing to release.
//!
//! Why no attached key outlives its lease, whatever the delays, duplicates, reorderings,
//! pauses and crashes:
//!
//! 1. *A key recorded in the lease is released.* The end is chosen once; the list it froze
//!    is every key whose attach (2) was chosen before it, and no attach is chosen after it.
//!    The node that ended the lease releases the list; if it stops midway, every keeper's
//!    scan finds the record ended and, one `STAGGER` per place in line later, releases the
//!    list again and deletes the record (`Tracker::due`, `Due::ended`). Every step may be
//!    repeated: a release of a released key deletes nothing (its lease is no longer that
//!    one); raising the fence again is harmless.
//! 2. *A write whose key was released cannot attach it afterwards.* Take a leased write
//!    whose (3) is chosen after the release of its key (say it was delayed in a paused
//!    node's socket). Its (2) was chosen before the end (else it found the lease ended and
//!    there is no (3)), so (1), before (2), read the fence before the release raised it: (3)
//!    names an old fence and is refused, however late it comes (fences only go up). A copy
//!    of a (3) chosen *before* the release is a retry of a write that took effect and is
//!    answered from the register's memory of writes; the release then deleted it.
//! 3. *A key re-attached to another lease survives the first's end*: its release finds it
//!    attached to the other lease and only raises the fence (a leased write to it that read
//!    the old fence is then tried again from (1), not lost).
//!
//! So a key attached to a lease is deleted once the lease ends, by the node that ended it or
//! by the keepers; the deadline of the argument above holds for the end, and the release
//! follows it within a round per key (`RELEASES_IN_FLIGHT` at once), or, after a crash, one
//! `STAGGER` per place plus two scans. An attach is a change of the lease's register, so it
//! also counts as a keepalive: the lease lasts TTL after the last attach too.
//!
//! Reads are not affected: a key's value is there until its release is chosen, and gone
//! after, as any delete. Between the lease's end and the release, a read still finds it:
//! the promise is "deleted within the bound", not "invisible from the end".
//!
//! # Tested where
//!
//! The seeded simulation (`paxos::sim::keeper`) runs every node's keeper with these
//! decisions ([`Tracker`] with what each served request tells it, [`Served`], and how a
//! keepalive starts, [`Keepalive`]; [`place`]; and [`Expiry`], the sequence of an expiry's
//! commands built on [`expiry`], [`after_expiry`] and [`release_plan`]) on
//! clocks of their own rates up to `1 + ρ`, with keeper pauses and restarts among its faults,
//! and checks each expiry that acts against step 2 of the argument (sent at least TTL after
//! the version it names was first seen chosen), and that lapsed leases and their keys are
//! gone within a bound once the run heals. `tests/leases.rs` and both nemesis tests check
//! the same on running nodes.
//!
//! # Locks and elections
//!
//! `paxkv lock` and `paxkv elect` (`cli::lock`) hold a key attached to a lease; the fencing
//! token is the key's version at its creation, and what a lock cannot promise without it
//! (a holder paused past its lease) is said there and in the README.
//!
//! # Known gaps
//!
//! - A revoke retried after its first attempt was applied answers "there was none".
//! - A grant's create delayed past the register's memory of writes could, in the
//!   de-duplication gap `paxos::register` names, bring an expired lease back (a 2⁻⁶⁴ id
//!   collision aside, only its own delayed retry can).
//! - A key put again without the lease stays listed in it (and counts against
//!   `limits.max_keys_per_lease`) until the lease ends.
//! - Every node scans and tracks every lease: the keeper's scale limit (BENCHMARKS.md,
//!   "Leases"). Its memory is 100 to 150 bytes a lease on each node, bounded by
//!   `limits.max_leases` (a grant past it is refused), not independent of it.
//! - The model of the linearizability checker applies this module's record functions
//!   (`attach`, `end`) to a lease's value, as the register does: the checker tests that the
//!   cluster applies them once, in one order; their own behaviour is tested here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::paxos::membership::RESERVED_PREFIX;
use crate::paxos::types::{key_hash, Command, Key, NodeId, Outcome};

/// A lease's id.
pub type LeaseId = u64;

/// The margin for clock rate drift (the assumption above): a node waits `TTL · (1 + ρ)`.
pub const CLOCK_RATE_MARGIN: f64 = 0.01;
/// How often a node scans the lease prefix.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// How much longer each node after a lease's home waits before expiring it.
pub const STAGGER: Duration = Duration::from_millis(1_000);
/// The shortest and longest TTL a lease may have.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The prefix of every lease's key.
pub fn lease_prefix() -> Vec<u8> {
    let mut key = RESERVED_PREFIX.to_vec();
    key.extend_from_slice(b"lease/");
    key
}

/// The key of lease `id`: the prefix, then 16 hex digits (so keys sort by id).
pub fn lease_key(id: LeaseId) -> Vec<u8> {
    let mut key = lease_prefix();
    key.extend_from_slice(format!("{id:016x}").as_bytes());
    key
}

/// The lease a key of the lease prefix is the register of (`None`: not a lease's key).
pub fn lease_of_key(key: &[u8]) -> Option<LeaseId> {
    let hex = key.strip_prefix(lease_prefix().as_slice())?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// A lease as `paxkv lease` shows it: `{"id": "<16 hex digits>", ...}`.
pub fn format_id(id: LeaseId) -> String {
    format!("{id:016x}")
}

/// Reads a lease id as `paxkv lease` prints it (16 hex digits; fewer are taken too).
pub fn parse_id(text: &str) -> Option<LeaseId> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The value of a lease's register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Its time to live, milliseconds: how long it lasts after its last keepalive.
    pub ttl_ms: u64,
    /// The keys attached to it while it lived, in the order they were (a key put without
    /// the lease since stays listed: its release then finds it attached to nothing).
    pub keys: Vec<serde_bytes::ByteBuf>,
    /// Expired or revoked: its keys are being released, then the register is deleted.
    pub ended: bool,
}

/// A lease record as the first builds with leases wrote it (a TTL only): read as a live
/// lease with no keys.
#[derive(Deserialize)]
struct RecordV1 {
    ttl_ms: u64,
}

impl LeaseRecord {
    pub fn new(ttl: Duration) -> LeaseRecord {
        LeaseRecord {
            ttl_ms: ttl.as_millis() as u64,
            keys: Vec::new(),
            ended: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a lease record encodes")
    }

    /// `None` for bytes that are not a record (a register written by something else: not a
    /// lease, never expired). Only bytes that decode whole are a record. The older form's
    /// bytes end where the keys begin, so they never decode as the newer one: it is tried
    /// second.
    pub fn decode(bytes: &[u8]) -> Option<LeaseRecord> {
        fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
            match postcard::take_from_bytes(bytes) {
                Ok((value, [])) => Some(value),
                _ => None,
            }
        }
        whole::<LeaseRecord>(bytes).or_else(|| {
            whole::<RecordV1>(bytes).map(|v1| LeaseRecord {
                ttl_ms: v1.ttl_ms,
                keys: Vec::new(),
                ended: false,
            })
        })
    }

    /// The record in `bytes` if it is a live lease's.
    pub fn live(bytes: Option<&[u8]>) -> Option<LeaseRecord> {
        LeaseRecord::decode(bytes?).filter(|r| !r.ended)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    pub fn has_key(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k.as_slice() == key)
    }
}

/// `LeaseAttach`'s change (`paxos::register`): the lease's next value with `key` among its
/// keys; `None` when the value is no live lease, or it holds `max_keys` others.
pub fn attach(value: Option<&[u8]>, key: &[u8], max_keys: u32) -> Option<Vec<u8>> {
    let mut record = LeaseRecord::live(value)?;
    if !record.has_key(key) {
        if record.keys.len() >= max_keys as usize {
            return None;
        }
        record.keys.push(serde_bytes::ByteBuf::from(key.to_vec()));
    }
    Some(record.encode())
}

/// `LeaseEnd`'s change: the lease's value, ended; `None` when it is no live lease.
pub fn end(value: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut record = LeaseRecord::live(value)?;
    record.ended = true;
    Some(record.encode())
}

/// How long after it saw a version a node may expire it: `TTL · (1 + ρ)`, plus its place
/// in the lease's order of nodes times [`STAGGER`].
pub fn wait_before_expiry(ttl: Duration, place: usize) -> Duration {
    ttl.mul_f64(1.0 + CLOCK_RATE_MARGIN) + STAGGER * place as u32
}

/// How long after it saw a lease ended a node releases its keys itself (the node that ended
/// it does so at once; this is for when that node stopped midway): one [`STAGGER`] more per
/// place in the lease's order of nodes.
pub fn wait_before_release(place: usize) -> Duration {
    STAGGER * (place as u32 + 1)
}

/// Node `me`'s place in the order of `nodes` for `key`: its home (the node a client sends
/// the key's requests to) first. `None` when `me` is not among them.
pub fn place(nodes: &[NodeId], me: NodeId, key: &[u8]) -> Option<usize> {
    let mine = nodes.iter().position(|n| *n == me)?;
    let home = (key_hash(key) % nodes.len() as u64) as usize;
    Some((mine + nodes.len() - home) % nodes.len())
}

/// The keeper's first step on a lease [`Tracker::due`] named, conditional on the version
/// seen (the argument above): `None` for an ended lease (its keys are to be released:
/// [`release_plan`]); a delete for one that lists no keys (nothing to release); else its end.
pub fn expiry(due: &Due) -> Option<Command> {
    let seen = due.version;
    if due.ended {
        None
    } else if due.keyless {
        Some(Command::DeleteIf { expect: seen })
    } else {
        Some(Command::LeaseEnd { expect: seen })
    }
}

/// What follows an expiry's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExpiry {
    /// Done: the lease was deleted (it listed no keys), or a keepalive or another node came
    /// first (the version moved: nothing changed). Forget it until a scan says more.
    Done,
    /// It ended now: its keys are to be released ([`release_plan`]).
    Release,
}

/// What an expiry of `due` answered `outcome` leads to (`None`: an answer a delete never
/// gives).
pub fn after_expiry(due: &Due, outcome: &Outcome) -> Option<AfterExpiry> {
    match outcome {
        Outcome::Delete { deleted: true, .. } if !due.keyless => Some(AfterExpiry::Release),
        Outcome::Delete { .. } => Some(AfterExpiry::Done),
        _ => None,
    }
}

/// The release of an ended lease's keys: one `Release` per key it lists (in any order,
/// several at once), then, once every one was answered, `delete`. Every command may be
/// repeated ("Attached keys", point 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePlan {
    pub releases: Vec<(Key, Command)>,
    pub delete: Command,
}

/// The plan for lease `id` read at `version` as `record`; `None` unless it ended (a live
/// lease is not released; a gone one has nothing left).
pub fn release_plan(id: LeaseId, record: &LeaseRecord, version: u64) -> Option<ReleasePlan> {
    record.ended.then(|| ReleasePlan {
        releases: record
            .keys
            .iter()
            .map(|k| (k.to_vec(), Command::Release { lease: id }))
            .collect(),
        delete: Command::DeleteIf { expect: version },
    })
}

/// A command on a key that an [`Expiry`] needs run.
pub type Call = (Key, Command);

/// One lease's expiry, or the release of an ended lease's keys, as the sequence of commands
/// it is: its end (or delete), the read of the ended record, the releases of its keys, the
/// record's delete. Sans IO: `actors::lease` runs its calls through the node's proposers and
/// the simulation through its own (`paxos::sim::keeper`), and both feed the answers back, so
/// that the sequence the simulation checks is the one that runs.
#[derive(Debug)]
pub struct Expiry {
    id: LeaseId,
    due: Due,
    step: ExpiryStep,
    ended_here: bool,
}

#[derive(Debug)]
enum ExpiryStep {
    /// Its end, or its delete (a lease with no keys).
    End,
    /// The read of its record before the releases.
    Read,
    /// Releases in flight, whether one failed, and the delete that follows them.
    Release {
        left: usize,
        failed: bool,
        delete: Command,
    },
    /// The record's delete.
    Delete,
}

/// What an [`Expiry`] does after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Run these calls (all at once, in any order) and feed back each answer.
    Run(Vec<Call>),
    /// Wait for the other answers of the calls in flight.
    Wait,
    /// Done: the lease is gone, or was kept alive since it was found due (forget it until a
    /// scan says where it stands).
    Done,
    /// A call failed, or answered what it never does: try again later.
    Failed(String),
}

impl Expiry {
    /// Acting on `due` ([`Tracker::due`]): the expiry and its first call.
    pub fn start(due: Due) -> (Expiry, Call) {
        let (step, command) = match expiry(&due) {
            Some(command) => (ExpiryStep::End, command),
            None => (ExpiryStep::Read, Command::Get),
        };
        let expiry = Expiry {
            id: due.id,
            due,
            step,
            ended_here: false,
        };
        (expiry, (lease_key(due.id), command))
    }

    /// The release of lease `id`, ended by a revoke: its read first.
    pub fn release(id: LeaseId) -> (Expiry, Call) {
        Expiry::start(Due {
            id,
            version: 0,
            keyless: false,
            ended: true,
        })
    }

    /// The lease whose expiry this is.
    pub fn lease(&self) -> LeaseId {
        self.id
    }

    /// This expiry ended the lease itself (its end was chosen), and has its keys to release.
    pub fn ended_here(&self) -> bool {
        self.ended_here
    }

    /// Its call in flight is the lease's end (or delete): the one the timing rule is about.
    pub fn is_ending(&self) -> bool {
        matches!(self.step, ExpiryStep::End)
    }

    /// One call's answer (`None`: it failed, or its outcome is unknown).
    pub fn answered(&mut self, answer: Option<&Outcome>) -> Next {
        let id = self.id;
        let Some(outcome) = answer else {
            return match &mut self.step {
                ExpiryStep::Release { left, failed, .. } if *left > 1 => {
                    *left -= 1;
                    *failed = true;
                    Next::Wait
                }
                _ => Next::Failed(format!("lease {id:016x}: a call of its expiry failed")),
            };
        };
        let unexpected = || Next::Failed(format!("lease {id:016x}: answered {outcome:?}"));
        match &mut self.step {
            ExpiryStep::End => match after_expiry(&self.due, outcome) {
                Some(AfterExpiry::Release) => {
                    self.ended_here = true;
                    self.step = ExpiryStep::Read;
                    Next::Run(vec![(lease_key(id), Command::Get)])
                }
                Some(AfterExpiry::Done) => Next::Done,
                None => unexpected(),
            },
            ExpiryStep::Read => {
                let Outcome::Get { value, version } = outcome else {
                    return unexpected();
                };
                let plan = value
                    .as_deref()
                    .and_then(LeaseRecord::decode)
                    .and_then(|record| release_plan(id, &record, *version));
                match plan {
                    None => Next::Done,
                    Some(plan) if plan.releases.is_empty() => {
                        self.step = ExpiryStep::Delete;
                        Next::Run(vec![(lease_key(id), plan.delete)])
                    }
                    Some(plan) => {
                        self.step = ExpiryStep::Release {
                            left: plan.releases.len(),
                            failed: false,
                            delete: plan.delete,
                        };
                        Next::Run(plan.releases)
                    }
                }
            }
            ExpiryStep::Release { left, .. } if *left > 1 => {
                *left -= 1;
                Next::Wait
            }
            ExpiryStep::Release { failed: true, .. } => Next::Failed(format!(
                "lease {id:016x}: a release of one of its keys failed"
            )),
            ExpiryStep::Release { delete, .. } => {
                let delete = delete.clone();
                self.step = ExpiryStep::Delete;
                Next::Run(vec![(lease_key(id), delete)])
            }
            ExpiryStep::Delete => match outcome {
                Outcome::Delete { .. } => Next::Done,
                _ => unexpected(),
            },
        }
    }
}

/// What one node has seen of the leases it scans: per lease, the version it last saw and
/// when it first saw it. Pure (the clock is passed in), so that its rule is tested alone.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: HashMap<LeaseId, Seen>,
}

/// The scan number of an entry a served request made, until a scan lists it.
const SERVED: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    since: Instant,
    ttl: Duration,
    place: usize,
    /// The lease at `version` is known to list no keys (its expiry may then delete it at
    /// once, with nothing to release).
    keyless: bool,
    /// The lease at `version` ended: its keys are to be released.
    ended: bool,
    /// The scan that last listed it (leases gone from the listing are forgotten).
    scan: u64,
}

/// A request a node served on a lease, whose write was chosen: what it tells the node's
/// [`Tracker`] ([`Tracker::served`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A grant: the lease, new, lists no keys; its TTL is the grant's.
    Grant { ttl: Duration },
    /// A keepalive: it changes no keys, so the lease is keyless if it was at the version
    /// before and this node saw that version; `ttl` is from the tracker or the keepalive's
    /// read ([`Keepalive`]). Tracked whether or not it was before.
    Keepalive { ttl: Duration },
    /// An attach of a key: the lease lists keys. Tracked only if its TTL is known here (an
    /// attach's answer carries none; a lease the node does not know waits for a scan).
    Attach,
}

/// How a keepalive starts ([`Tracker::keepalive`]).
///
/// A lease the node does not track (granted elsewhere and not scanned yet, ended and forgotten,
/// or made up) is read first, and one that is not live is answered "gone" without a round: a
/// round always prepares and accepts, so a `Touch` of a lease that never existed would leave a
/// record of its key on every voter, and any client could grow the stores by one record per
/// made-up id (nothing collects records). The read is linearizable, and a `Touch` of a register
/// that holds no live lease changes nothing and answers "gone" (`paxos::register`): a keepalive
/// answered "gone" by its read takes effect at the read's point, as that `Touch` would have. A
/// live lease is then touched by its own round (a revoke between the two makes the touch answer
/// "gone"), and the read gave its TTL, which never changes. A lease the node tracks (the usual
/// case: a client sends its keepalives to the lease's home node, which granted or scanned it)
/// skips the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// Touch the lease now; its TTL is `ttl`.
    Touch { ttl: Duration },
    /// Read the lease first, then [`Keepalive::read`].
    Read,
}

impl Keepalive {
    /// What follows the read of a keepalive's lease (`read`: the register's value, `None`
    /// when it holds none): its touch, with the TTL the record gives (`Some`), or "gone"
    /// (`None`: no lease, or an ended one). A value that is not a lease record is an error.
    pub fn read(read: Option<&[u8]>) -> Result<Option<Duration>, String> {
        let Some(bytes) = read else { return Ok(None) };
        let record = LeaseRecord::decode(bytes).ok_or_else(|| "not a lease record".to_string())?;
        Ok((!record.ended).then(|| record.ttl()))
    }
}

/// A lease a node may act on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub id: LeaseId,
    /// The version it was seen at: the expiry is conditional on it.
    pub version: u64,
    /// It lists no keys at that version.
    pub keyless: bool,
    /// It ended already: release its keys and delete it.
    pub ended: bool,
}

impl Tracker {
    /// Leases tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Lease `id` was listed at `version` by the scan numbered `scan`, whose listing
    /// returned at `now`; `place`: this node's place in the lease's order of nodes. A new
    /// version restarts its clock (a keepalive, an attach, its end). A listing older than
    /// what this node tracks (it read the lease before a keepalive served here since) only
    /// marks the lease listed: taking its version would make the expiry's compare-and-set
    /// miss, and the lease be forgotten until the next scan (expired late, never early).
    pub fn saw(
        &mut self,
        id: LeaseId,
        version: u64,
        record: &LeaseRecord,
        place: usize,
        now: Instant,
        scan: u64,
    ) {
        let entry = self.seen.entry(id).or_insert(Seen {
            version,
            since: now,
            ttl: record.ttl(),
            place,
            keyless: record.keys.is_empty(),
            ended: record.ended,
            scan,
        });
        if version < entry.version {
            entry.scan = scan;
            return;
        }
        if entry.version != version {
            entry.version = version;
            entry.since = now;
        }
        entry.ttl = record.ttl();
        entry.place = place;
        entry.keyless = record.keys.is_empty();
        entry.ended = record.ended;
        entry.scan = scan;
    }

    /// Lease `id` is at `version` by a request this node served (`how`), whose write was
    /// chosen before `now` (its answer came): tracked at once, with no scan, as a listing's
    /// item is (the argument is the same: chosen before `now`), and kept until a scan lists
    /// it or its expiry finds it gone. Which requests track their lease, and what they tell
    /// of its keys, is decided here, for the runtime (`actors::lease`) and the simulation's
    /// keepers alike (see [`Served`]).
    pub fn served(&mut self, id: LeaseId, version: u64, how: Served, place: usize, now: Instant) {
        let (ttl, keyless) = match how {
            Served::Grant { ttl } => (ttl, true),
            Served::Keepalive { ttl } => (
                ttl,
                self.seen
                    .get(&id)
                    .is_some_and(|s| s.keyless && s.version + 1 == version),
            ),
            Served::Attach => match self.ttl(id) {
                Some(ttl) => (ttl, false),
                None => return,
            },
        };
        let entry = self.seen.entry(id).or_insert(Seen {
            version,
            since: now,
            ttl,
            place,
            keyless,
            ended: false,
            scan: SERVED,
        });
        if entry.version < version {
            entry.version = version;
            entry.since = now;
            entry.keyless = keyless;
            entry.ended = false;
            entry.scan = SERVED;
        }
        entry.place = place;
    }

    /// How a keepalive of lease `id` starts on this node: with its touch, when the lease is
    /// tracked here (its TTL known), or with a read ([`Keepalive::read`]).
    pub fn keepalive(&self, id: LeaseId) -> Keepalive {
        match self.ttl(id) {
            Some(ttl) => Keepalive::Touch { ttl },
            None => Keepalive::Read,
        }
    }

    /// Forgets the leases the scan numbered `scan` did not list (gone, or no longer listed
    /// here), but for those served here since the scan began.
    pub fn forget_unlisted(&mut self, scan: u64) {
        self.seen.retain(|_, s| s.scan == scan || s.scan == SERVED);
    }

    /// Forgets lease `id` (expired, or found gone).
    pub fn forget(&mut self, id: LeaseId) {
        self.seen.remove(&id);
    }

    /// Lease `id` is to be acted on again no sooner than a full wait from `now` (its release
    /// failed: tried again later, not at every tick).
    pub fn postpone(&mut self, id: LeaseId, now: Instant) {
        if let Some(s) = self.seen.get_mut(&id) {
            s.since = now;
        }
    }

    /// The leases this node may act on at `now`: those not kept alive for their wait (to
    /// expire, at the version seen), and those ended for theirs (to release), by id. (In id
    /// order, not the map's, which a `HashMap` draws at random per process: the simulation's
    /// keepers act on them in this order, and a seed must replay the same schedule.)
    pub fn due(&self, now: Instant) -> Vec<Due> {
        let mut due: Vec<Due> = self
            .seen
            .iter()
            .filter(|(_, s)| {
                let wait = if s.ended {
                    wait_before_release(s.place)
                } else {
                    wait_before_expiry(s.ttl, s.place)
                };
                now.duration_since(s.since) >= wait
            })
            .map(|(id, s)| Due {
                id: *id,
                version: s.version,
                keyless: s.keyless,
                ended: s.ended,
            })
            .collect();
        due.sort_unstable_by_key(|d| d.id);
        due
    }

    /// Lease `id`'s TTL, if a scan saw it (a lease's TTL never changes).
    pub fn ttl(&self, id: LeaseId) -> Option<Duration> {
        self.seen.get(&id).map(|s| s.ttl)
    }

    /// How long until lease `id` may expire if its version stays, as this node saw that
    /// version (`None`: not tracked here): the wait of the first node in the lease's order,
    /// not this node's own (which adds a [`STAGGER`] per place before it: a node fourth in
    /// line said 4 s more than its lease's home would wait). Counted from when this node saw
    /// the version, which is no earlier than when it was chosen: an estimate, as the
    /// README's "as a node sees it" says, never a promise.
    pub fn remaining(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        let s = self.seen.get(&id)?;
        Some(wait_before_expiry(s.ttl, 0).saturating_sub(now.duration_since(s.since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second() -> LeaseRecord {
        LeaseRecord::new(Duration::from_secs(1))
    }

    fn due(id: LeaseId, version: u64, keyless: bool, ended: bool) -> Due {
        Due {
            id,
            version,
            keyless,
            ended,
        }
    }

    #[test]
    fn a_lease_is_due_only_after_its_ttl_and_margin_since_its_version_was_first_seen() {
        let start = Instant::now();
        let mut t = Tracker::default();
        t.saw(7, 1, &second(), 0, start, 1);
        let wait = wait_before_expiry(second().ttl(), 0);
        assert!(wait > second().ttl(), "the drift margin is added");
        assert!(t.due(start + wait - Duration::from_millis(1)).is_empty());
        // Listed again at the same version later: its clock is not restarted.
        t.saw(7, 1, &second(), 0, start + Duration::from_millis(900), 2);
        assert_eq!(t.due(start + wait), vec![due(7, 1, true, false)]);
    }

    #[test]
    fn a_keepalive_restarts_the_clock_and_a_later_place_waits_longer() {
        let start = Instant::now();
        let mut t = Tracker::default();
        t.saw(7, 1, &second(), 2, start, 1);
        let later = start + Duration::from_millis(800);
        t.saw(7, 2, &second(), 2, later, 2);
        let wait = wait_before_expiry(second().ttl(), 2);
        assert_eq!(wait, wait_before_expiry(second().ttl(), 0) + 2 * STAGGER);
        assert!(
            t.due(start + wait).is_empty(),
            "the keepalive moved the deadline"
        );
        assert_eq!(t.due(later + wait), vec![due(7, 2, true, false)]);
        // What a node says is left is the first node's wait, whatever its own place.
        let first = wait_before_expiry(second().ttl(), 0);
        assert_eq!(t.remaining(7, later), Some(first));
        let half = later + Duration::from_millis(500);
        assert_eq!(
            t.remaining(7, half),
            Some(first - Duration::from_millis(500))
        );
    }

    #[test]
    fn a_lease_served_here_is_tracked_at_once_and_kept_until_a_scan_lists_it() {
        let now = Instant::now();
        let mut t = Tracker::default();
        t.served(
            3,
            1,
            Served::Grant {
                ttl: second().ttl(),
            },
            0,
            now,
        );
        t.forget_unlisted(1);
        assert_eq!(
            t.ttl(3),
            Some(second().ttl()),
            "a scan that began before it"
        );
        assert_eq!(
            t.due(now + wait_before_expiry(second().ttl(), 0)),
            vec![due(3, 1, true, false)]
        );
        t.saw(3, 1, &second(), 0, now + Duration::from_millis(300), 2);
        t.forget_unlisted(3);
        assert_eq!(t.ttl(3), None, "listed, then not: an ordinary entry");
    }

    /// A listing that read the lease before a keepalive this node served since neither
    /// moves its version back nor restarts its clock, and keeps it from being forgotten.
    #[test]
    fn a_listing_older_than_a_served_keepalive_does_not_move_the_lease_back() {
        let now = Instant::now();
        let mut t = Tracker::default();
        let ttl = second().ttl();
        t.saw(3, 1, &second(), 0, now, 1);
        let later = now + Duration::from_millis(300);
        t.served(3, 2, Served::Keepalive { ttl }, 0, later);
        t.saw(3, 1, &second(), 0, now + Duration::from_millis(600), 2);
        t.forget_unlisted(2);
        let wait = wait_before_expiry(ttl, 0);
        assert!(t.due(later + wait - Duration::from_millis(1)).is_empty());
        assert_eq!(t.due(later + wait), vec![due(3, 2, true, false)]);
    }

    /// A grant and a keepalive track their lease wherever they were served; an attach only
    /// a lease whose TTL the node knows (its answer carries none). A keepalive starts with
    /// its touch only on a node that tracks the lease, and after a read only for a live one.
    #[test]
    fn which_served_requests_track_their_lease_and_how_a_keepalive_starts() {
        let now = Instant::now();
        let ttl = second().ttl();
        let mut t = Tracker::default();
        assert_eq!(t.keepalive(3), Keepalive::Read);
        t.served(3, 4, Served::Attach, 0, now);
        assert_eq!(t.ttl(3), None, "an attach, its TTL unknown");
        t.served(3, 5, Served::Keepalive { ttl }, 0, now);
        assert_eq!(t.keepalive(3), Keepalive::Touch { ttl });
        t.served(3, 6, Served::Attach, 0, now);
        assert_eq!(
            t.due(now + wait_before_expiry(ttl, 0)),
            vec![due(3, 6, false, false)]
        );
        t.served(4, 1, Served::Grant { ttl }, 0, now);
        assert_eq!(t.keepalive(4), Keepalive::Touch { ttl });

        assert_eq!(Keepalive::read(None), Ok(None), "no lease");
        let live = second().encode();
        assert_eq!(Keepalive::read(Some(&live)), Ok(Some(ttl)));
        let mut ended = second();
        ended.ended = true;
        assert_eq!(Keepalive::read(Some(&ended.encode())), Ok(None), "ended");
        assert!(Keepalive::read(Some(b"not a lease")).is_err());
    }

    /// An expiry deletes a keyless lease outright; one that may list keys must end and
    /// release them. A keepalive changes no keys, so keyless carries over one version; an
    /// attach, or a version this node never saw the one before of, may list keys.
    #[test]
    fn a_lease_is_known_keyless_only_at_a_version_that_cannot_list_keys() {
        let now = Instant::now();
        let ttl = second().ttl();
        let late = now + wait_before_expiry(ttl, 0);
        let mut t = Tracker::default();
        t.served(3, 1, Served::Grant { ttl }, 0, now);
        t.served(3, 2, Served::Keepalive { ttl }, 0, now);
        assert_eq!(t.due(late), vec![due(3, 2, true, false)], "a keepalive");
        t.served(3, 3, Served::Attach, 0, now);
        assert_eq!(t.due(late), vec![due(3, 3, false, false)], "an attach");
        t.served(3, 4, Served::Keepalive { ttl }, 0, now);
        assert_eq!(t.due(late), vec![due(3, 4, false, false)], "keyed before");
        let mut t = Tracker::default();
        t.served(5, 1, Served::Grant { ttl }, 0, now);
        t.served(5, 3, Served::Keepalive { ttl }, 0, now);
        assert_eq!(
            t.due(late),
            vec![due(5, 3, false, false)],
            "a version missed"
        );
        let mut keyed = second();
        keyed.keys.push(serde_bytes::ByteBuf::from(b"k".to_vec()));
        t.saw(5, 4, &keyed, 0, now, 7);
        assert_eq!(t.due(late), vec![due(5, 4, false, false)]);
    }

    #[test]
    fn an_ended_lease_is_released_after_a_stagger_per_place_not_a_ttl() {
        let now = Instant::now();
        let mut t = Tracker::default();
        let mut ended = LeaseRecord::new(Duration::from_secs(3600));
        ended.ended = true;
        t.saw(9, 5, &ended, 1, now, 1);
        assert!(t.due(now + STAGGER).is_empty());
        assert_eq!(t.due(now + 2 * STAGGER), vec![due(9, 5, true, true)]);
        t.postpone(9, now + 2 * STAGGER);
        assert!(t.due(now + 3 * STAGGER).is_empty(), "postponed");
    }

    #[test]
    fn leases_no_longer_listed_are_forgotten() {
        let now = Instant::now();
        let mut t = Tracker::default();
        t.saw(1, 1, &second(), 0, now, 1);
        t.saw(2, 1, &second(), 0, now, 1);
        t.saw(2, 1, &second(), 0, now, 2);
        t.forget_unlisted(2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remaining(1, now), None);
    }

    fn gone(deleted: bool, version: u64) -> Outcome {
        Outcome::Delete { deleted, version }
    }

    /// A read of an ended lease that lists keys `a` and `b`, at `version`.
    fn ended_with_keys_a_and_b(version: u64) -> Outcome {
        let mut record = second();
        record.keys = vec![b"a".to_vec().into(), b"b".to_vec().into()];
        record.ended = true;
        Outcome::Get {
            value: Some(record.encode()),
            version,
        }
    }

    #[test]
    fn an_expiry_ends_reads_releases_every_key_then_deletes_and_stops_if_kept_alive() {
        // A lease with no keys: one delete, conditional on the version seen.
        let (mut e, first) = Expiry::start(due(1, 4, true, false));
        assert_eq!(first, (lease_key(1), Command::DeleteIf { expect: 4 }));
        assert_eq!(e.answered(Some(&gone(true, 5))), Next::Done);
        // A keepalive came first: the conditional end changed nothing, and that is all.
        let (mut e, first) = Expiry::start(due(2, 4, false, false));
        assert_eq!(first, (lease_key(2), Command::LeaseEnd { expect: 4 }));
        assert!(e.is_ending());
        assert_eq!(e.answered(Some(&gone(false, 6))), Next::Done);
        assert!(!e.ended_here());
        // Ended here: the record read, each key released, then the record deleted.
        let (mut e, _) = Expiry::start(due(3, 4, false, false));
        let read = vec![(lease_key(3), Command::Get)];
        assert_eq!(e.answered(Some(&gone(true, 5))), Next::Run(read));
        assert!(e.ended_here() && !e.is_ending());
        let ended = ended_with_keys_a_and_b(5);
        let release = Command::Release { lease: 3 };
        assert_eq!(
            e.answered(Some(&ended)),
            Next::Run(vec![
                (b"a".to_vec(), release.clone()),
                (b"b".to_vec(), release)
            ])
        );
        assert_eq!(e.answered(Some(&gone(true, 2))), Next::Wait);
        assert_eq!(
            e.answered(Some(&gone(false, 7))),
            Next::Run(vec![(lease_key(3), Command::DeleteIf { expect: 5 })])
        );
        assert_eq!(e.answered(Some(&gone(true, 6))), Next::Done);
    }

    #[test]
    fn an_expiry_whose_call_fails_fails_after_every_release_answered_and_a_revoke_starts_at_the_read(
    ) {
        let (mut e, first) = Expiry::release(9);
        assert_eq!(
            first,
            (lease_key(9), Command::Get),
            "a revoke ended it already"
        );
        let ended = ended_with_keys_a_and_b(3);
        assert!(matches!(e.answered(Some(&ended)), Next::Run(calls) if calls.len() == 2));
        assert_eq!(
            e.answered(None),
            Next::Wait,
            "the other release is still out"
        );
        assert!(matches!(e.answered(Some(&gone(true, 2))), Next::Failed(_)));
        // A live lease is not released; a gone one has nothing left; a strange answer fails.
        let (mut e, _) = Expiry::release(9);
        let live = Outcome::Get {
            value: Some(second().encode()),
            version: 3,
        };
        assert_eq!(e.answered(Some(&live)), Next::Done);
        let (mut e, _) = Expiry::start(due(9, 2, false, false));
        assert!(matches!(
            e.answered(Some(&Outcome::Put { version: 1 })),
            Next::Failed(_)
        ));
        let (mut e, _) = Expiry::start(due(9, 2, true, false));
        assert!(matches!(e.answered(None), Next::Failed(_)));
    }

    #[test]
    fn a_lease_key_names_its_id_and_nothing_else_does() {
        let id = 0x00ab_cdef_0123_4567;
        assert_eq!(lease_of_key(&lease_key(id)), Some(id));
        assert_eq!(format_id(id), "00abcdef01234567");
        assert_eq!(parse_id("00abcdef01234567"), Some(id));
        assert_eq!(parse_id("abcdef01234567"), Some(id));
        assert_eq!(parse_id("xyz"), None);
        assert_eq!(parse_id("00abcdef012345670"), None);
        assert_eq!(lease_of_key(b"\0paxkv/members"), None);
        let mut short = lease_prefix();
        short.extend_from_slice(b"12");
        assert_eq!(lease_of_key(&short), None);
    }

    #[test]
    fn a_record_round_trips_and_the_first_form_reads_as_a_live_lease_with_no_keys() {
        let mut record = second();
        record.keys.push(serde_bytes::ByteBuf::from(b"a".to_vec()));
        assert_eq!(LeaseRecord::decode(&record.encode()), Some(record));
        #[derive(Serialize)]
        struct V1 {
            ttl_ms: u64,
        }
        let v1 = postcard::to_allocvec(&V1 { ttl_ms: 1_500 }).unwrap();
        assert_eq!(
            LeaseRecord::decode(&v1),
            Some(LeaseRecord::new(Duration::from_millis(1_500)))
        );
    }

    #[test]
    fn attach_records_a_key_once_within_the_limit_and_only_in_a_live_lease() {
        let live = second().encode();
        let one = attach(Some(&live), b"a", 2).expect("live");
        assert_eq!(
            attach(Some(&one), b"a", 1),
            Some(one.clone()),
            "already there"
        );
        let two = attach(Some(&one), b"b", 2).expect("within the limit");
        assert_eq!(attach(Some(&two), b"c", 2), None, "full");
        assert_eq!(LeaseRecord::decode(&two).unwrap().keys.len(), 2);
        let ended = end(Some(&two)).expect("live");
        assert!(LeaseRecord::decode(&ended).unwrap().ended);
        assert_eq!(attach(Some(&ended), b"d", 9), None, "ended");
        assert_eq!(end(Some(&ended)), None, "ends once");
        assert_eq!(attach(None, b"d", 9), None, "gone");
        assert_eq!(attach(Some(b"not a record"), b"d", 9), None);
    }
}
