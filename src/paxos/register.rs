//! The register's change functions (CASPaxos §2: a round applies a function to the state it
//! found). Pure: a command and the current state in, the next state and the outcome out.
//!
//! Invariants: `version` never decreases; it grows by exactly one on every put, every delete of
//! a present value and every swapping cas, and by nothing otherwise. A write whose id is among
//! the register's `recent` writes is not applied again: it answers the outcome it had.

use crate::messages::{AppliedWrite, Command, Outcome, Register, RequestId};

/// How many applied writes a register remembers for de-duplication. Must be at least the
/// largest batch a proposer applies in one round (see `paxos::proposer`), so that a batch
/// retried after an unknown outcome is recognised whole.
pub const RECENT_WRITES: usize = 64;

/// Applies `command` (a write identified by `id`, or a get) to `state` in place and returns the
/// outcome the client sees.
pub fn apply(state: &mut Register, command: &Command, id: Option<RequestId>) -> Outcome {
    if let (true, Some(id)) = (command.is_write(), id) {
        if let Some(seen) = state.recent.iter().find(|w| w.id == id) {
            return seen.outcome.clone();
        }
    }
    let outcome = match command {
        Command::Get => {
            return Outcome::Get {
                value: state.value.clone(),
                version: state.version,
            }
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
            state.recent.remove(0);
        }
        state.recent.push(AppliedWrite {
            id,
            outcome: outcome.clone(),
        });
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> Option<RequestId> {
        Some(RequestId { client: 7, seq })
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
    fn the_dedup_window_is_bounded() {
        let mut s = Register::default();
        for seq in 0..(RECENT_WRITES as u64 * 3) {
            apply(&mut s, &put("x"), id(seq));
        }
        assert_eq!(s.recent.len(), RECENT_WRITES);
        assert_eq!(s.recent[0].id.seq, RECENT_WRITES as u64 * 2);
    }
}
