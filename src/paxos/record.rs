//! The record an acceptor keeps durable for one key, and the checks every copy of it passes:
//! before it is written, after it is read back from disk, and when it arrives from a peer
//! (anti-entropy). Also the anti-entropy decisions that read only records: is a
//! record unsettled, is this node behind a peer's digest entry.

use serde::{Deserialize, Serialize};

use crate::paxos::types::{Ballot, Register};

/// What an acceptor keeps durable for one key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AcceptorRecord {
    /// The highest ballot promised: no Accept below it is taken.
    pub promised: Ballot,
    /// The ballot of the last accepted state (`Ballot::ZERO`: none).
    pub accepted: Ballot,
    /// The last accepted state.
    pub state: Register,
    /// This acceptor holds no vote but may have accepted a state at the fast ballot that it
    /// lost (see the module doc). Only while `accepted` is `Ballot::ZERO`.
    pub fast_unknown: bool,
}

impl AcceptorRecord {
    /// Checks the record's invariants; `Err` names the broken one.
    pub fn check(&self) -> Result<(), String> {
        if self.accepted > self.promised {
            return Err(format!(
                "accepted {} above promised {}",
                self.accepted, self.promised
            ));
        }
        if self.accepted == Ballot::ZERO && self.state != Register::default() {
            return Err("a state without an accepted ballot".into());
        }
        if self.fast_unknown && self.accepted != Ballot::ZERO {
            return Err("fast_unknown with an accepted state".into());
        }
        Ok(())
    }
}

impl AcceptorRecord {
    /// Not settled at a classic ballot: accepted at the fast ballot, or possibly holding a
    /// lost fast vote. Anti-entropy settles such keys (see `actors::anti_entropy`).
    pub fn is_unsettled(&self) -> bool {
        self.accepted == Ballot::FAST || self.fast_unknown
    }
}

/// Is this node, holding `ours` (`None`: no record) of a key, behind a peer that holds it at
/// `(promised, accepted)`: a higher accepted ballot or a higher promise?
pub fn is_behind(ours: Option<&AcceptorRecord>, promised: Ballot, accepted: Ballot) -> bool {
    let (our_promised, our_accepted) =
        ours.map_or((Ballot::ZERO, Ballot::ZERO), |r| (r.promised, r.accepted));
    accepted > our_accepted || promised > our_promised
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(promised: Ballot, accepted: Ballot) -> AcceptorRecord {
        AcceptorRecord {
            promised,
            accepted,
            state: if accepted == Ballot::ZERO {
                Register::default()
            } else {
                Register {
                    version: 1,
                    ..Register::default()
                }
            },
            fast_unknown: false,
        }
    }

    #[test]
    fn a_node_is_behind_on_a_newer_promise_or_accept_only() {
        let (b1, b2) = (Ballot::new(1, 1), Ballot::new(2, 1));
        let ours = rec(b1, b1);
        assert!(is_behind(Some(&ours), b2, b1));
        assert!(is_behind(Some(&ours), b1, b2));
        assert!(!is_behind(Some(&ours), b1, b1));
        assert!(!is_behind(Some(&ours), Ballot::ZERO, Ballot::ZERO));
        // no record: behind anything
        assert!(is_behind(None, b1, Ballot::FAST));
        assert!(rec(b1, Ballot::FAST).is_unsettled());
        assert!(!ours.is_unsettled());
    }
}
