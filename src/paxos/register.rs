//! The register's change functions (CASPaxos §2: a round applies a function to the state it
//! found). Pure: a command and the current state in, the next state and the outcome out.
//!
//! Invariants: `version` never decreases; it grows by exactly one on every put, every delete of
//! a present value and every swapping cas, and by nothing otherwise. A write is applied at most
//! once: if its id is among the register's `recent` writes it answers the outcome it had; if
//! its id is at or below the `dedup_floor` (the highest id the register forgot) it is refused
//! with [`TooLate`], because it may have been applied and forgotten. The window is bounded by
//! count, and the register forgets its smallest ids first, so the floor only rises.

use crate::messages::{AppliedWrite, Command, Outcome, Register, RequestId};

/// How many applied writes a register remembers for de-duplication. At least the largest
/// batch a proposer applies in one round (see `paxos::proposer`).
pub const RECENT_WRITES: usize = 128;

/// A write retried after the register forgot whether it applied it: it may have taken effect
/// once, and will not take effect again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate;

/// Applies `command` (a write identified by `id`, or a get) to `state` in place and returns the
/// outcome the client sees.
pub fn apply(
    state: &mut Register,
    command: &Command,
    id: Option<RequestId>,
) -> Result<Outcome, TooLate> {
    if let (true, Some(id)) = (command.is_write(), id) {
        if let Some(seen) = state.recent.iter().find(|w| w.id == id) {
            return Ok(seen.outcome.clone());
        }
        if state.dedup_floor.is_some_and(|floor| id <= floor) {
            return Err(TooLate);
        }
    }
    let outcome = match command {
        Command::Get => {
            return Ok(Outcome::Get {
                value: state.value.clone(),
                version: state.version,
            })
        }
        Command::Put { value } => {
            state.version += 1;
            state.value = Some(value.clone());
            Outcome::Put {
                version: state.version,
            }
        }
        Command::Delete => {
            let deleted = state.value.take().is_some();
            if deleted {
                state.version += 1;
            }
            Outcome::Delete {
                deleted,
                version: state.version,
            }
        }
        Command::Cas { expect, value } => {
            let swapped = if *expect == 0 {
                state.value.is_none()
            } else {
                state.version == *expect
            };
            if swapped {
                state.version += 1;
                state.value = Some(value.clone());
            }
            Outcome::Cas {
                swapped,
                version: state.version,
            }
        }
    };
    if let Some(id) = id {
        if state.recent.len() == RECENT_WRITES {
            let (oldest, _) = state
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.id)
                .expect("a full window");
            let forgotten = state.recent.swap_remove(oldest).id;
            state.dedup_floor = state.dedup_floor.max(Some(forgotten));
        }
        state.recent.push(AppliedWrite {
            id,
            outcome: outcome.clone(),
        });
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> Option<RequestId> {
        Some(RequestId {
            issued_ms: seq,
            client: 7,
            seq,
        })
    }

    /// `apply` for commands that are never refused.
    fn apply(state: &mut Register, command: &Command, id: Option<RequestId>) -> Outcome {
        super::apply(state, command, id).expect("not refused")
    }

    fn put(v: &str) -> Command {
        Command::Put {
            value: v.as_bytes().to_vec(),
        }
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

    #[test]
    fn the_dedup_window_is_bounded_and_a_forgotten_write_is_refused_not_applied_twice() {
        let mut s = Register::default();
        for seq in 0..(RECENT_WRITES as u64 * 3) {
            apply(&mut s, &put("x"), id(seq));
        }
        assert_eq!(s.recent.len(), RECENT_WRITES);
        assert_eq!(s.dedup_floor, id(RECENT_WRITES as u64 * 2 - 1));
        let version = s.version;
        // a retry of a write the register forgot
        assert_eq!(super::apply(&mut s, &put("x"), id(3)), Err(TooLate));
        assert_eq!(s.version, version, "refused, not applied again");
        // a retry of one it remembers
        let last = RECENT_WRITES as u64 * 3 - 1;
        assert_eq!(
            super::apply(&mut s, &put("x"), id(last)),
            Ok(Outcome::Put { version: last + 1 })
        );
        // a new write above the floor is applied
        assert!(super::apply(&mut s, &put("y"), id(last + 1)).is_ok());
        assert_eq!(s.version, version + 1);
    }

    #[test]
    fn writes_retried_in_any_order_take_effect_at_most_once() {
        let mut s = Register::default();
        // 200 writes, each sent twice, in a scrambled order
        let mut sends: Vec<u64> = (0..200).chain(0..200).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..sends.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sends.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut applied = std::collections::BTreeSet::new();
        for seq in sends {
            let before = s.version;
            match super::apply(&mut s, &put("x"), id(seq)) {
                Ok(Outcome::Put { version }) if version > before => {
                    assert!(applied.insert(seq), "write {seq} applied twice");
                }
                Ok(_) | Err(TooLate) => assert_eq!(s.version, before),
            }
        }
        assert_eq!(s.version, applied.len() as u64);
    }
}
