//! The register's change functions (CASPaxos §2: a round applies a function to the state it
//! found). Pure: a command and the current state in, the next state and the outcome out.
//!
//! Invariants: `version` never decreases; it grows by exactly one on every put, every delete of
//! a present value and every swapping cas, and by nothing otherwise. A write is applied at most
//! once:
//! - the register remembers its last [`REMEMBERED_WRITES`] writes by id (`recent`, oldest
//!   first);
//!   a write found there answers the outcome it had;
//! - when it forgets one (the oldest), it raises that write's *client's* floor to the write's
//!   sequence (`floors`, one entry per client, at most [`CLIENT_FLOORS`]); a write at or
//!   below its client's floor is refused with [`TooLate`]: it may have been applied and
//!   forgotten;
//! - past [`CLIENT_FLOORS`] clients the least recently raised floor is dropped and
//!   `floors_overflowed` is set: from then on a write that may have been applied before, from
//!   a client with no floor, is refused too (its floor may be the one dropped), and no new
//!   client gets a floor (it could be lower than the one dropped).
//!
//! **Below its floor, a write is refused even when its attempt says it was never applied.**
//! Whether a write "may have been applied before" is known by the sender of one attempt
//! only (the client sets it once an attempt was lost or answered "outcome unknown", the
//! proposer once it sent an Accept carrying the write), and a first attempt speaks for
//! itself alone: while it waits (in a paused node's socket, for as long as the pause lasts),
//! the client retries elsewhere and that attempt is applied and, enough writes later,
//! forgotten. When the first attempt then arrives, "never applied" is false for the write.
//! Before this rule it was applied a second time (process nemesis, seed
//! 1796427747832293448: the put acknowledged at version 536 of `hot-0` applied again at
//! version 641, after node 5 resumed from a 2.6 s pause). Refusing a write that really was
//! never applied is safe: `TooLate` says "may have taken effect", which is true of nothing
//! it contradicts; it costs only a write of a client delayed behind 32 later writes to the
//! same key. **Still open:** after an overflow, a client whose floor was
//! dropped has none, and its delayed first attempt is applied if the write was forgotten
//! (it cannot be told from a new client's first write without refusing every new client);
//! it needs 64 other clients' writes forgotten while the attempt waits (README, limits).
//!
//! **A leased write the client sent once is not refused by these rules** (`LeasedWrite`
//! with `retried: false`): its fence guards it. Every write that changes the register raises
//! the fence, and a leased write applies only at the fence it names, so one leased write
//! command applies at most once however often it is proposed: re-proposed by its proposer
//! after an Accept that may have been taken (which sets `maybe_applied`), or delayed and
//! delivered late. Another attempt of the same write is a new command, with the fence read
//! again, made only by a client's retry (`retried: true`: every rule above applies) or by
//! the node after a `Fenced` answer, which says the earlier command can never apply. Without
//! this, a key written by more than `CLIENT_FLOORS` clients (a lock's key: one client per
//! `paxkv lock` process) refused every leased write whose Accept a concurrent proposer
//! pre-empted, and a lock under contention could not be taken at all (`tests/locks.rs`).
//!
//! No clock is read anywhere, and one client's ids are only ever compared with its own: no
//! client can get another client's writes refused (the floor of the old design was one
//! clock-ordered value for all clients, so one client's fast clock refused everyone).

use crate::paxos::lease;
use crate::paxos::types::RequestId;
use crate::paxos::types::{ClientFloor, Command, Outcome, RecentWrites, Register, Remembered};
use crate::paxos::types::{Inspected, LeasedWrite};

pub use crate::paxos::recent::RECENT_WRITES;

/// How many applied writes a register keeps for de-duplication: the default
/// `paxos.max_batch`, so that a default round's writes are all remembered. The memory goes
/// into every record, every Accept and every log entry: at 128, a key written more than
/// 128 times cost 1.75x the CPU per put of a fresh one (BENCHMARKS.md, issue 23), and at 32
/// still about 1.45x, until they were held in one compact encoding (`paxos::recent`). A retry
/// that comes after more of the key's writes than this is refused as "too late" (it may
/// have taken effect), never applied twice: fewer remembered writes cost only retries of
/// busy keys their exact outcome. A state remembering more (an older build's) sheds the
/// oldest on its next write, raising their floors.
pub const REMEMBERED_WRITES: usize = 32;

/// How many clients' floors a register keeps (16 bytes each).
pub const CLIENT_FLOORS: usize = 64;

/// A write retried after the register forgot whether it applied it: it may have taken effect
/// once, and will not take effect again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate;

/// Applies `command` (a write identified by `id`, or a get) to `state` in place and returns the
/// outcome the client sees. `maybe_applied`: an earlier attempt of this write may have taken
/// effect (see the module doc).
pub fn apply(
    state: &mut Register,
    command: &Command,
    id: Option<RequestId>,
    maybe_applied: bool,
) -> Result<Outcome, TooLate> {
    // A write's remembered writes, decoded once: looked up here, one more remembered below.
    let mut remembered = None;
    if let (true, Some(id)) = (command.is_write(), id) {
        let writes = state.recent.to_vec();
        if let Some(seen) = writes.iter().find(|w| w.id == id) {
            return Ok(seen.outcome.into());
        }
        remembered = Some(writes);
        let refused = match state.floors.iter().find(|f| f.client == id.client) {
            Some(floor) => id.seq <= floor.seq,
            None => maybe_applied && state.floors_overflowed,
        };
        // A leased write the client sent once is guarded by its fence instead (module doc).
        let fenced = matches!(command, Command::LeasedWrite(w) if !w.retried);
        if refused && !fenced {
            return Err(TooLate);
        }
    }
    let version_before = state.version;
    let outcome = match command {
        Command::Get => {
            return Ok(Outcome::Get {
                value: state.value.clone(),
                version: state.version,
            })
        }
        Command::Inspect => {
            return Ok(Outcome::Inspect(Box::new(Inspected {
                value: state.value.clone(),
                version: state.version,
                lease: state.lease,
                fence: state.fence,
            })))
        }
        Command::Put { value } => {
            state.version += 1;
            state.value = Some(value.clone());
            state.lease = None;
            Outcome::Put {
                version: state.version,
            }
        }
        Command::Delete => delete_if(state, true),
        Command::DeleteIf { expect } => delete_if(state, state.version == *expect),
        Command::Cas { expect, value } => cas(state, *expect, value, None),
        Command::LeasedWrite(w) => {
            let LeasedWrite {
                expect,
                value,
                lease,
                fence,
                ..
            } = &**w;
            if state.fence != *fence {
                // Not applied and not remembered: the node that sent it tries again with
                // the fence it reads now (`actors::lease`); a copy of this attempt, however
                // late, is refused the same way (fences only go up).
                return Ok(Outcome::Fenced { fence: state.fence });
            }
            match expect {
                None => {
                    state.version += 1;
                    state.value = Some(value.clone());
                    state.lease = Some(*lease);
                    Outcome::Put {
                        version: state.version,
                    }
                }
                Some(expect) => cas(state, *expect, value, Some(*lease)),
            }
        }
        Command::Release { lease } => {
            let attached = state.lease == Some(*lease);
            delete_if(state, attached)
        }
        Command::Touch => {
            let live = lease::LeaseRecord::live(state.value.as_deref()).is_some();
            if live {
                state.version += 1;
            }
            Outcome::Cas {
                swapped: live,
                version: state.version,
            }
        }
        Command::LeaseAttach { key, max_keys } => {
            match lease::attach(state.value.as_deref(), key, *max_keys) {
                Some(next) => {
                    state.version += 1;
                    state.value = Some(next);
                    Outcome::Cas {
                        swapped: true,
                        version: state.version,
                    }
                }
                None => Outcome::Cas {
                    swapped: false,
                    version: state.version,
                },
            }
        }
        Command::LeaseEnd { expect } => {
            let at = *expect == 0 || state.version == *expect;
            match lease::end(state.value.as_deref()).filter(|_| at) {
                Some(ended) => {
                    state.version += 1;
                    state.value = Some(ended);
                    Outcome::Delete {
                        deleted: true,
                        version: state.version,
                    }
                }
                None => Outcome::Delete {
                    deleted: false,
                    version: state.version,
                },
            }
        }
    };
    if state.version != version_before || matches!(command, Command::Release { .. }) {
        state.fence += 1;
    }
    // Only a write is remembered (a read changed nothing, and carries no id).
    if let (Some(mut writes), Some(id), Some(done)) = (remembered, id, outcome.as_write()) {
        // Forget the oldest (raising their clients' floors) to make room: a state of an
        // older build may remember more than REMEMBERED_WRITES.
        let forgotten = (writes.len() + 1).saturating_sub(REMEMBERED_WRITES);
        for w in writes.drain(..forgotten) {
            raise_floor(state, w.id);
        }
        writes.push(Remembered { id, outcome: done });
        state.recent = RecentWrites::from_writes(&writes).expect("at most REMEMBERED_WRITES");
    }
    Ok(outcome)
}

/// Deletes the value if there is one and `matches`; a delete detaches the key from its lease.
fn delete_if(state: &mut Register, matches: bool) -> Outcome {
    let deleted = matches && state.value.is_some();
    if deleted {
        state.value = None;
        state.lease = None;
        state.version += 1;
    }
    Outcome::Delete {
        deleted,
        version: state.version,
    }
}

/// Sets the value, attached to `lease` (`None`: to none), if the version is `expect`
/// (`expect == 0`: if there is no value).
fn cas(state: &mut Register, expect: u64, value: &[u8], lease: Option<u64>) -> Outcome {
    let swapped = if expect == 0 {
        state.value.is_none()
    } else {
        state.version == expect
    };
    if swapped {
        state.version += 1;
        state.value = Some(value.to_vec());
        state.lease = lease;
    }
    Outcome::Cas {
        swapped,
        version: state.version,
    }
}

/// Remembers that `forgotten` was applied and is no longer in `recent`.
///
/// Once a floor was dropped (`floors_overflowed`), a client with no floor gets none: its
/// dropped floor may have been higher than this write, and a new, lower floor would then let
/// a retry of a write between the two be applied twice (review of issue 8). Such a client's
/// retries are refused by the overflow rule instead.
fn raise_floor(state: &mut Register, forgotten: RequestId) {
    let seq = match state
        .floors
        .iter()
        .position(|f| f.client == forgotten.client)
    {
        Some(i) => state.floors.remove(i).seq.max(forgotten.seq),
        None if state.floors_overflowed => return,
        None => forgotten.seq,
    };
    if state.floors.len() >= CLIENT_FLOORS {
        state.floors.remove(0);
        state.floors_overflowed = true;
    }
    state.floors.push(ClientFloor {
        client: forgotten.client,
        seq,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> Option<RequestId> {
        Some(RequestId { client: 7, seq })
    }

    /// `apply` of a retried write (the strict case) for commands that are never refused.
    fn apply(state: &mut Register, command: &Command, id: Option<RequestId>) -> Outcome {
        super::apply(state, command, id, true).expect("not refused")
    }

    fn put(v: &str) -> Command {
        Command::Put {
            value: v.as_bytes().to_vec(),
        }
    }

    fn leased(v: &str, lease: u64, fence: u64) -> Command {
        Command::LeasedWrite(Box::new(LeasedWrite {
            expect: None,
            value: v.as_bytes().to_vec(),
            lease,
            fence,
            retried: false,
        }))
    }

    /// The race of `paxos::lease`: a leased write whose fence was read before its lease's
    /// release is refused once the release is applied, however late it comes, and is not
    /// remembered (its next attempt, with the fence read again, applies once).
    #[test]
    fn a_leased_write_from_before_a_release_is_fenced_and_its_retry_applies_once() {
        let mut s = Register::default();
        assert_eq!(
            apply(&mut s, &leased("a", 9, 0), id(1)),
            Outcome::Put { version: 1 }
        );
        assert_eq!((s.lease, s.fence), (Some(9), 1), "a write raises the fence");
        assert_eq!(
            apply(&mut s, &Command::Release { lease: 9 }, id(2)),
            Outcome::Delete {
                deleted: true,
                version: 2
            }
        );
        assert_eq!((s.value.as_deref(), s.lease, s.fence), (None, None, 2));
        // A write that read fence 1, delayed past the release:
        assert_eq!(
            apply(&mut s, &leased("late", 9, 1), id(3)),
            Outcome::Fenced { fence: 2 }
        );
        assert_eq!(s.version, 2, "nothing written");
        assert!(
            s.recent.iter().all(|w| w.id != id(3).unwrap()),
            "not remembered"
        );
        assert_eq!(
            apply(&mut s, &leased("late", 10, 2), id(3)),
            Outcome::Put { version: 3 }
        );
        assert_eq!(
            apply(&mut s, &leased("late", 10, 2), id(3)),
            Outcome::Put { version: 3 },
            "a retry answers the first outcome"
        );
    }

    /// A key whose floors overflowed (more than `CLIENT_FLOORS` clients' writes forgotten)
    /// refuses a write that may have been applied from a client it has no floor for; a
    /// leased write the client sent once is guarded by its fence instead: taken once, and
    /// refused by the fence when proposed again.
    #[test]
    fn a_leased_write_sent_once_is_guarded_by_its_fence_not_by_the_floors() {
        let mut s = Register {
            floors_overflowed: true,
            ..Register::default()
        };
        let fresh = |seq| {
            Some(RequestId {
                client: 1000 + seq,
                seq,
            })
        };
        assert_eq!(
            super::apply(&mut s, &put("x"), fresh(1), true),
            Err(TooLate),
            "an ordinary write is refused"
        );
        let mut retried = leased("y", 9, 0);
        if let Command::LeasedWrite(w) = &mut retried {
            w.retried = true;
        }
        assert_eq!(super::apply(&mut s, &retried, fresh(2), true), Err(TooLate));
        let once = leased("y", 9, 0);
        assert_eq!(
            super::apply(&mut s, &once, fresh(3), true),
            Ok(Outcome::Put { version: 1 })
        );
        // Proposed again after it was taken and forgotten: its fence moved.
        s.recent = Default::default();
        assert_eq!(
            super::apply(&mut s, &once, fresh(3), true),
            Ok(Outcome::Fenced { fence: 1 })
        );
        assert_eq!(s.version, 1, "applied once");
    }

    #[test]
    fn only_a_live_lease_is_touched_attached_to_or_ended() {
        use crate::paxos::lease::LeaseRecord;
        let mut s = Register::default();
        let touch = |s: &mut Register, seq| apply(s, &Command::Touch, id(seq));
        assert_eq!(
            touch(&mut s, 1),
            Outcome::Cas {
                swapped: false,
                version: 0
            }
        );
        let record = LeaseRecord::new(std::time::Duration::from_secs(5)).encode();
        apply(
            &mut s,
            &Command::Cas {
                expect: 0,
                value: record,
            },
            id(2),
        );
        assert_eq!(
            touch(&mut s, 3),
            Outcome::Cas {
                swapped: true,
                version: 2
            }
        );
        let attach = Command::LeaseAttach {
            key: b"k".to_vec(),
            max_keys: 1,
        };
        assert_eq!(
            apply(&mut s, &attach, id(4)),
            Outcome::Cas {
                swapped: true,
                version: 3
            }
        );
        assert_eq!(
            apply(&mut s, &Command::LeaseEnd { expect: 2 }, id(5)),
            Outcome::Delete {
                deleted: false,
                version: 3
            },
            "an expiry of a version since moved on"
        );
        assert_eq!(
            apply(&mut s, &Command::LeaseEnd { expect: 3 }, id(6)),
            Outcome::Delete {
                deleted: true,
                version: 4
            }
        );
        let ended = LeaseRecord::decode(s.value.as_deref().unwrap()).unwrap();
        assert!(ended.ended && ended.has_key(b"k"), "ended, its keys kept");
        assert_eq!(
            touch(&mut s, 7),
            Outcome::Cas {
                swapped: false,
                version: 4
            },
            "a keepalive after the end loses"
        );
        assert_eq!(
            apply(&mut s, &attach, id(8)),
            Outcome::Cas {
                swapped: false,
                version: 4
            }
        );
        assert_eq!(
            apply(&mut s, &Command::LeaseEnd { expect: 0 }, id(9)),
            Outcome::Delete {
                deleted: false,
                version: 4
            }
        );
    }

    #[test]
    fn a_key_never_written_has_version_zero_and_no_value() {
        let mut s = Register::default();
        assert_eq!(
            apply(&mut s, &Command::Get, None),
            Outcome::Get {
                value: None,
                version: 0
            }
        );
    }

    #[test]
    fn a_touch_raises_the_version_of_a_value_and_changes_nothing_else() {
        let mut s = Register::default();
        let touched = |swapped, version| Outcome::Cas { swapped, version };
        assert_eq!(apply(&mut s, &Command::Touch, id(1)), touched(false, 0));
        let record = crate::paxos::lease::LeaseRecord::new(std::time::Duration::from_secs(2));
        let a = record.encode();
        apply(&mut s, &Command::Put { value: a.clone() }, id(2));
        assert_eq!(apply(&mut s, &Command::Touch, id(3)), touched(true, 2));
        assert_eq!((s.value.as_deref(), s.version), (Some(&a[..]), 2));
        apply(&mut s, &Command::Delete, id(4));
        assert_eq!(apply(&mut s, &Command::Touch, id(5)), touched(false, 3));
        assert_eq!((s.value.as_deref(), s.version), (None, 3));
    }

    #[test]
    fn a_conditional_delete_removes_only_the_version_it_names() {
        let mut s = Register::default();
        let delete_if = |expect| Command::DeleteIf { expect };
        let delete = |deleted, version| Outcome::Delete { deleted, version };
        // no value: nothing to delete, whatever it names
        assert_eq!(apply(&mut s, &delete_if(0), id(1)), delete(false, 0));
        apply(&mut s, &put("a"), id(2));
        apply(&mut s, &put("b"), id(3));
        // another version: kept, the current version answered
        assert_eq!(apply(&mut s, &delete_if(1), id(4)), delete(false, 2));
        assert_eq!(s.value.as_deref(), Some(&b"b"[..]));
        assert_eq!(apply(&mut s, &delete_if(2), id(5)), delete(true, 3));
        assert_eq!((s.value.as_deref(), s.version), (None, 3));
        // the version a delete left names no value
        assert_eq!(apply(&mut s, &delete_if(3), id(6)), delete(false, 3));
    }

    #[test]
    fn put_delete_and_cas_follow_the_client_semantics() {
        let mut s = Register::default();
        assert_eq!(apply(&mut s, &put("a"), id(1)), Outcome::Put { version: 1 });
        assert_eq!(
            apply(&mut s, &Command::Delete, id(2)),
            Outcome::Delete {
                deleted: true,
                version: 2
            }
        );
        // deleting an absent value changes nothing
        assert_eq!(
            apply(&mut s, &Command::Delete, id(3)),
            Outcome::Delete {
                deleted: false,
                version: 2
            }
        );
        // expect 0: only when absent
        let cas0 = Command::Cas {
            expect: 0,
            value: b"b".to_vec(),
        };
        assert_eq!(
            apply(&mut s, &cas0, id(4)),
            Outcome::Cas {
                swapped: true,
                version: 3
            }
        );
        assert_eq!(
            apply(&mut s, &cas0, id(5)),
            Outcome::Cas {
                swapped: false,
                version: 3
            }
        );
        let cas_wrong = Command::Cas {
            expect: 2,
            value: b"c".to_vec(),
        };
        assert_eq!(
            apply(&mut s, &cas_wrong, id(6)),
            Outcome::Cas {
                swapped: false,
                version: 3
            }
        );
        let cas_right = Command::Cas {
            expect: 3,
            value: b"c".to_vec(),
        };
        assert_eq!(
            apply(&mut s, &cas_right, id(7)),
            Outcome::Cas {
                swapped: true,
                version: 4
            }
        );
        assert_eq!(
            apply(&mut s, &Command::Get, None),
            Outcome::Get {
                value: Some(b"c".to_vec()),
                version: 4
            }
        );
    }

    #[test]
    fn a_retried_write_answers_its_first_outcome_and_changes_nothing() {
        let mut s = Register::default();
        assert_eq!(apply(&mut s, &put("a"), id(1)), Outcome::Put { version: 1 });
        assert_eq!(apply(&mut s, &put("b"), id(2)), Outcome::Put { version: 2 });
        assert_eq!(apply(&mut s, &put("a"), id(1)), Outcome::Put { version: 1 });
        assert_eq!(s.version, 2);
        assert_eq!(s.value.as_deref(), Some(&b"b"[..]));
    }

    /// A record written by an older build remembers up to `RECENT_WRITES` writes: its next
    /// write sheds all but the newest `REMEMBERED_WRITES - 1`, raising each shed write's
    /// client floor, so that none of them is applied again.
    #[test]
    fn a_state_remembering_more_writes_sheds_them_on_its_next_write_and_refuses_their_retries() {
        let mut s = Register::default();
        let mut older = Vec::new();
        for seq in 0..RECENT_WRITES as u64 {
            s.version += 1;
            older.push(Remembered {
                id: RequestId { client: 7, seq },
                outcome: crate::paxos::types::WriteOutcome::Put { version: seq + 1 },
            });
        }
        s.recent = crate::paxos::types::RecentWrites::from_writes(&older).unwrap();
        let before = s.version;
        let next = RECENT_WRITES as u64;
        assert_eq!(
            apply(&mut s, &put("x"), id(next)),
            Outcome::Put {
                version: before + 1
            }
        );
        assert_eq!(s.recent.len(), REMEMBERED_WRITES);
        let shed = RECENT_WRITES - REMEMBERED_WRITES; // the oldest, seq 0..=shed
        assert_eq!(
            s.floors,
            vec![ClientFloor {
                client: 7,
                seq: shed as u64
            }]
        );
        for seq in [0, shed as u64] {
            assert_eq!(super::apply(&mut s, &put("x"), id(seq), true), Err(TooLate));
        }
        let kept = shed as u64 + 1;
        assert_eq!(
            super::apply(&mut s, &put("x"), id(kept), true),
            Ok(Outcome::Put { version: kept + 1 }),
            "a write still remembered answers its outcome"
        );
        assert_eq!(s.version, before + 1, "nothing applied twice");
    }

    #[test]
    fn the_dedup_window_is_bounded_and_a_forgotten_write_is_refused_not_applied_twice() {
        let mut s = Register::default();
        for seq in 0..(REMEMBERED_WRITES as u64 * 3) {
            apply(&mut s, &put("x"), id(seq));
        }
        assert_eq!(s.recent.len(), REMEMBERED_WRITES);
        assert_eq!(
            s.floors,
            vec![ClientFloor {
                client: 7,
                seq: REMEMBERED_WRITES as u64 * 2 - 1
            }]
        );
        let version = s.version;
        // a retry of a write the register forgot
        assert_eq!(super::apply(&mut s, &put("x"), id(3), true), Err(TooLate));
        assert_eq!(s.version, version, "refused, not applied again");
        // a retry of one it remembers
        let last = REMEMBERED_WRITES as u64 * 3 - 1;
        assert_eq!(
            super::apply(&mut s, &put("x"), id(last), true),
            Ok(Outcome::Put { version: last + 1 })
        );
        // a new write above the floor is applied
        assert!(super::apply(&mut s, &put("y"), id(last + 1), true).is_ok());
        assert_eq!(s.version, version + 1);
        // a first attempt below the floor (the write was applied through a retry, and
        // forgotten, while this attempt waited in a paused node) is refused, not applied a
        // second time
        assert_eq!(super::apply(&mut s, &put("x"), id(5), false), Err(TooLate));
        assert_eq!(s.version, version + 1);
    }

    /// Process nemesis, seed 1796427747832293448: a put's first attempt waits in a paused
    /// node while the client's retry is applied elsewhere (version 1 here); enough writes later
    /// the register has forgotten it. The first attempt, which says "never applied", then
    /// arrives: it must not be applied again.
    #[test]
    fn a_delayed_first_attempt_of_a_write_applied_by_its_retry_is_never_applied_again() {
        let mut s = Register::default();
        let write = RequestId {
            client: 5,
            seq: 946,
        };
        let retry = super::apply(&mut s, &put("t5-946"), Some(write), true);
        assert_eq!(retry, Ok(Outcome::Put { version: 1 }));
        for seq in 947..(947 + REMEMBERED_WRITES as u64) {
            let other = Some(RequestId { client: 5, seq });
            super::apply(&mut s, &put("later"), other, false).unwrap();
        }
        let version = s.version;
        let first_attempt = super::apply(&mut s, &put("t5-946"), Some(write), false);
        assert_eq!(first_attempt, Err(TooLate));
        assert_eq!(
            (s.version, s.value.as_deref()),
            (version, Some(&b"later"[..]))
        );
    }

    /// Issue 8, bug 5: the old floor was one value ordered by the clients' clocks, so after a
    /// fast-clock client's writes every other client's retries were refused.
    #[test]
    fn one_clients_writes_never_get_another_clients_writes_refused() {
        let mut s = Register::default();
        let fast = |seq| {
            Some(RequestId {
                client: 1,
                seq: u64::MAX / 2 + seq,
            })
        };
        for seq in 0..(REMEMBERED_WRITES as u64 * 2) {
            apply(&mut s, &put("fast"), fast(seq));
        }
        // another client, with small sequence numbers, first attempts and retries alike
        for seq in 0..(REMEMBERED_WRITES as u64 * 2) {
            let other = Some(RequestId { client: 2, seq });
            let before = s.version;
            assert!(super::apply(&mut s, &put("slow"), other, seq % 2 == 0).is_ok());
            assert_eq!(s.version, before + 1, "client 2's write {seq} applied");
        }
    }

    #[test]
    fn floors_are_bounded_and_an_overflow_refuses_only_retries_of_clients_it_forgot() {
        let mut s = Register::default();
        // every client writes once; the window forgets most of them
        let clients = (REMEMBERED_WRITES + CLIENT_FLOORS + 10) as u64;
        for client in 0..clients {
            super::apply(&mut s, &put("x"), Some(RequestId { client, seq: 1 }), false).unwrap();
        }
        assert_eq!(s.floors.len(), CLIENT_FLOORS);
        assert!(s.floors_overflowed);
        let version = s.version;
        // client 0's floor was dropped: its retry is refused, a first attempt is applied
        let retry = Some(RequestId { client: 0, seq: 1 });
        assert_eq!(super::apply(&mut s, &put("x"), retry, true), Err(TooLate));
        let first = Some(RequestId { client: 0, seq: 2 });
        assert!(super::apply(&mut s, &put("x"), first, false).is_ok());
        assert_eq!(s.version, version + 1);
        // a client still remembered in `recent` gets its first outcome back
        let recent = Some(RequestId {
            client: clients - 1,
            seq: 1,
        });
        assert_eq!(
            super::apply(&mut s, &put("x"), recent, true),
            Ok(Outcome::Put { version: clients })
        );
    }

    /// Review of issue 8: after a client's floor was dropped, a delayed first attempt of an
    /// older write of it must not give it a new, lower floor.
    #[test]
    fn a_dropped_floor_is_never_replaced_by_a_lower_one() {
        let mut s = Register::default();
        let c = |seq| Some(RequestId { client: 1, seq });
        // client 1's write 90 is applied, then forgotten: floor 90
        super::apply(&mut s, &put("x"), c(90), false).unwrap();
        let other = |client| Some(RequestId { client, seq: 1 });
        for client in 100..(100 + REMEMBERED_WRITES as u64) {
            super::apply(&mut s, &put("x"), other(client), false).unwrap();
        }
        assert_eq!(s.floors[0], ClientFloor { client: 1, seq: 90 });
        // 64 more clients push client 1's floor out
        for client in 1_000..(1_000 + CLIENT_FLOORS as u64 + 1) {
            super::apply(&mut s, &put("x"), other(client), false).unwrap();
        }
        assert!(s.floors_overflowed && s.floors.iter().all(|f| f.client != 1));
        // a delayed first attempt of client 1's write 60 is applied, then forgotten
        super::apply(&mut s, &put("x"), c(60), false).unwrap();
        for client in 5_000..(5_000 + REMEMBERED_WRITES as u64) {
            super::apply(&mut s, &put("x"), other(client), false).unwrap();
        }
        // a retry of write 90 must still be refused
        let version = s.version;
        assert_eq!(super::apply(&mut s, &put("x"), c(90), true), Err(TooLate));
        assert_eq!(s.version, version);
    }

    #[test]
    fn writes_retried_in_any_order_take_effect_at_most_once() {
        let mut s = Register::default();
        // 200 writes of three clients, each sent twice (the second send a retry), scrambled
        let mut sends: Vec<(u64, bool)> = (0..200)
            .map(|w| (w, false))
            .chain((0..200).map(|w| (w, true)))
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..sends.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sends.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut applied = std::collections::BTreeSet::new();
        let mut sent = std::collections::BTreeSet::new();
        for (w, _) in sends {
            // the first send of a write is a first attempt, every later one a retry
            let maybe_applied = !sent.insert(w);
            let write = Some(RequestId {
                client: w % 3,
                seq: w / 3,
            });
            let before = s.version;
            match super::apply(&mut s, &put("x"), write, maybe_applied) {
                Ok(Outcome::Put { version }) if version > before => {
                    assert!(applied.insert(w), "write {w} applied twice");
                }
                Ok(_) | Err(TooLate) => assert_eq!(s.version, before),
            }
        }
        assert_eq!(s.version, applied.len() as u64);
    }

    /// One step of a random workload: a client's new write, or a retry of an earlier write
    /// (which was applied once) as a client retries after a lost answer.
    #[derive(Debug, Clone)]
    enum Step {
        Write { client: u64, command: Command },
        Retry { earlier: usize },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let command = prop_oneof![
            any::<u8>().prop_map(|v| Command::Put { value: vec![v] }),
            Just(Command::Delete),
            (0u64..6).prop_map(|expect| Command::DeleteIf { expect }),
            Just(Command::Touch),
            (0u64..6, any::<u8>()).prop_map(|(expect, v)| Command::Cas {
                expect,
                value: vec![v]
            }),
        ];
        prop_oneof![
            3 => (0u64..90, command).prop_map(|(client, command)| Step::Write { client, command }),
            1 => any::<usize>().prop_map(|earlier| Step::Retry { earlier }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// A write applies once: a retry of a write already applied never changes the
        /// register again (it answers the first outcome, or is refused as too late), however
        /// many writes of however many clients came in between (past `REMEMBERED_WRITES` and
        /// `CLIENT_FLOORS`); and the version never goes down.
        #[test]
        fn a_write_applies_once_and_versions_never_go_down(
            steps in proptest::collection::vec(step(), 1..600)
        ) {
            let mut state = Register::default();
            let mut next_seq = std::collections::HashMap::<u64, u64>::new();
            let mut applied: Vec<(RequestId, Command, Outcome)> = Vec::new();
            for step in steps {
                let before = (state.version, state.value.clone());
                match step {
                    Step::Write { client, command } => {
                        let seq = next_seq.entry(client).or_default();
                        *seq += 1;
                        let id = RequestId { client, seq: *seq };
                        let outcome = super::apply(&mut state, &command, Some(id), false)
                            .expect("a write never applied is never refused");
                        applied.push((id, command, outcome));
                    }
                    Step::Retry { earlier } if !applied.is_empty() => {
                        let (id, command, first) = &applied[earlier % applied.len()];
                        // Refused as too late (`TooLate`) is the other allowed answer.
                        if let Ok(outcome) = super::apply(&mut state, command, Some(*id), true) {
                            proptest::prop_assert_eq!(&outcome, first);
                        }
                        proptest::prop_assert_eq!(
                            (state.version, state.value.clone()),
                            before.clone(),
                            "a retry changed the register"
                        );
                    }
                    Step::Retry { .. } => {}
                }
                proptest::prop_assert!(state.version >= before.0, "the version went down");
                proptest::prop_assert!(state.recent.len() <= REMEMBERED_WRITES);
                proptest::prop_assert!(state.floors.len() <= CLIENT_FLOORS);
            }
        }
    }
}
