//! The record an acceptor keeps durable for one key, and the checks every copy of it passes:
//! before it is written, after it is read back from disk, and when it arrives from a peer
//! (anti-entropy and recovery). Also the anti-entropy decisions that read only records: is a
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
