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

/// A record as builds before keys could be attached to leases wrote it: the register had no
/// `lease` and no `fence` (issue 22). Its bytes end one field after the register's, where the
/// newer form has three, so they never decode as the newer form, which is tried first
/// (`storage::decode`); read, it is a record whose key is attached to nothing, at fence 0.
/// Such a store is never written back in the older form: a build that has not this reader
/// must not open a store this build wrote (README, "Upgrades").
#[derive(Deserialize)]
pub struct AcceptorRecordV1 {
    promised: Ballot,
    accepted: Ballot,
    state: RegisterV1,
    fast_unknown: bool,
}

#[derive(Deserialize)]
struct RegisterV1 {
    version: u64,
    #[serde(with = "crate::paxos::types::opt_bytes")]
    value: Option<Vec<u8>>,
    recent: Vec<crate::paxos::types::AppliedWrite>,
    floors: Vec<crate::paxos::types::ClientFloor>,
    floors_overflowed: bool,
}

impl From<AcceptorRecordV1> for AcceptorRecord {
    fn from(v1: AcceptorRecordV1) -> AcceptorRecord {
        let RegisterV1 {
            version,
            value,
            recent,
            floors,
            floors_overflowed,
        } = v1.state;
        AcceptorRecord {
            promised: v1.promised,
            accepted: v1.accepted,
            state: Register {
                version,
                value,
                recent,
                floors,
                floors_overflowed,
                lease: None,
                fence: 0,
            },
            fast_unknown: v1.fast_unknown,
        }
    }
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
    fn a_record_of_the_older_form_reads_as_one_attached_to_nothing() {
        #[derive(Serialize)]
        struct OldRegister<'a> {
            version: u64,
            #[serde(with = "crate::paxos::types::opt_bytes")]
            value: Option<Vec<u8>>,
            recent: &'a [crate::paxos::types::AppliedWrite],
            floors: &'a [crate::paxos::types::ClientFloor],
            floors_overflowed: bool,
        }
        #[derive(Serialize)]
        struct Old<'a> {
            promised: Ballot,
            accepted: Ballot,
            state: OldRegister<'a>,
            fast_unknown: bool,
        }
        let b = Ballot::new(3, 2);
        let old = Old {
            promised: b,
            accepted: b,
            state: OldRegister {
                version: 7,
                value: Some(b"v".to_vec()),
                recent: &[],
                floors: &[],
                floors_overflowed: true,
            },
            fast_unknown: false,
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert!(
            postcard::from_bytes::<AcceptorRecord>(&bytes).is_err(),
            "the older form never reads as the newer"
        );
        let read: AcceptorRecord = postcard::from_bytes::<AcceptorRecordV1>(&bytes)
            .unwrap()
            .into();
        assert_eq!(read.state.version, 7);
        assert_eq!(read.state.value.as_deref(), Some(&b"v"[..]));
        assert!(read.state.floors_overflowed);
        assert_eq!((read.state.lease, read.state.fence), (None, 0));
        assert_eq!(read.promised, b);
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
