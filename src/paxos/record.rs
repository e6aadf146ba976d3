//! The record an acceptor keeps durable for one key, and the checks every copy of it passes:
//! before it is written, after it is read back from disk, and when it arrives from a peer
//! (anti-entropy). Also the anti-entropy decisions that read only records: is a
//! record unsettled, is this node behind a peer's digest entry.

use serde::{Deserialize, Serialize};

use crate::paxos::types::{AppliedWrite, Ballot, ClientFloor, RecentWrites, Register, Remembered};

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

/// A record as builds from issue 22 to the compact remembered writes (issue 23) wrote it:
/// the register's remembered writes a `Vec` of [`AppliedWrite`]s, not
/// [`crate::paxos::recent::RecentWrites`]. Told from the current form by its checksum, not
/// by trying (`storage::decode`): a record of the current form is checksummed with a salt,
/// so that no older record can be read as a newer one, nor the other way round. Read, it is
/// re-encoded: the same writes, remembered in the current form. A store this build wrote
/// must not be opened by an older build (ARCHITECTURE.md, "Mixed versions").
#[derive(Deserialize)]
pub struct AcceptorRecordV2 {
    promised: Ballot,
    accepted: Ballot,
    state: RegisterV2,
    fast_unknown: bool,
}

#[derive(Deserialize)]
struct RegisterV2 {
    version: u64,
    #[serde(with = "crate::paxos::types::opt_bytes")]
    value: Option<Vec<u8>>,
    recent: Vec<AppliedWrite>,
    floors: Vec<ClientFloor>,
    floors_overflowed: bool,
    lease: Option<u64>,
    fence: u64,
}

/// A record as builds before keys could be attached to leases wrote it: the register had no
/// `lease` and no `fence` (issue 22). Its bytes end one field after the register's, where the
/// [`AcceptorRecordV2`] form has three, so they never decode as that form, which is tried
/// first ([`decode_legacy`]); read, it is a record whose key is attached to nothing, at
/// fence 0.
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
    recent: Vec<AppliedWrite>,
    floors: Vec<ClientFloor>,
    floors_overflowed: bool,
}

impl From<AcceptorRecordV1> for AcceptorRecordV2 {
    fn from(v1: AcceptorRecordV1) -> AcceptorRecordV2 {
        let RegisterV1 {
            version,
            value,
            recent,
            floors,
            floors_overflowed,
        } = v1.state;
        AcceptorRecordV2 {
            promised: v1.promised,
            accepted: v1.accepted,
            state: RegisterV2 {
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

impl TryFrom<AcceptorRecordV2> for AcceptorRecord {
    type Error = String;

    fn try_from(v2: AcceptorRecordV2) -> Result<AcceptorRecord, String> {
        let RegisterV2 {
            version,
            value,
            recent,
            floors,
            floors_overflowed,
            lease,
            fence,
        } = v2.state;
        Ok(AcceptorRecord {
            promised: v2.promised,
            accepted: v2.accepted,
            state: Register {
                version,
                value,
                recent: RecentWrites::from_writes(&remembered(&recent)?)?,
                floors,
                floors_overflowed,
                lease,
                fence,
            },
            fast_unknown: v2.fast_unknown,
        })
    }
}

/// Writes remembered in the older form, in the current one; a read's outcome (which no
/// build ever remembered) makes the record corrupt.
fn remembered(writes: &[AppliedWrite]) -> Result<Vec<Remembered>, String> {
    writes
        .iter()
        .map(|w| match w.outcome.as_write() {
            Some(outcome) => Ok(Remembered { id: w.id, outcome }),
            None => Err(format!("a remembered write with outcome {:?}", w.outcome)),
        })
        .collect()
}

/// A record body written by an older build: the [`AcceptorRecordV2`] form, else the
/// [`AcceptorRecordV1`] form.
pub fn decode_legacy(body: &[u8]) -> Result<AcceptorRecord, String> {
    let v2 = match postcard::from_bytes::<AcceptorRecordV2>(body) {
        Ok(v2) => v2,
        Err(e) => postcard::from_bytes::<AcceptorRecordV1>(body)
            .map(AcceptorRecordV2::from)
            .map_err(|_| e.to_string())?,
    };
    AcceptorRecord::try_from(v2)
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

/// Is this node, holding a key's record at `ours` (its promised and accepted ballots; `None`:
/// no record), behind a peer that holds it at `(promised, accepted)`: a higher accepted
/// ballot or a higher promise?
pub fn is_behind(ours: Option<(Ballot, Ballot)>, promised: Ballot, accepted: Ballot) -> bool {
    let (our_promised, our_accepted) = ours.unwrap_or((Ballot::ZERO, Ballot::ZERO));
    accepted > our_accepted || promised > our_promised
}

/// Test builds: the body of a record in the oldest form (before keys could be attached to
/// leases: no `lease`, no `fence`, a `Vec` of remembered writes), as an older build wrote it:
/// `version` and `value`, no remembered write, `floors_overflowed` set.
#[cfg(test)]
pub(crate) fn older_form(
    promised: Ballot,
    accepted: Ballot,
    version: u64,
    value: &[u8],
) -> Vec<u8> {
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
    postcard::to_allocvec(&Old {
        promised,
        accepted,
        state: OldRegister {
            version,
            value: Some(value.to_vec()),
            recent: &[],
            floors: &[],
            floors_overflowed: true,
        },
        fast_unknown: false,
    })
    .expect("encodes")
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
        let b = Ballot::new(3, 2);
        let bytes = older_form(b, b, 7, b"v");
        assert!(
            postcard::from_bytes::<AcceptorRecord>(&bytes).is_err(),
            "the older form never reads as the newer"
        );
        assert!(
            postcard::from_bytes::<AcceptorRecordV2>(&bytes).is_err(),
            "nor as the form before the newer"
        );
        let read = decode_legacy(&bytes).unwrap();
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
        let held = Some((ours.promised, ours.accepted));
        assert!(is_behind(held, b2, b1));
        assert!(is_behind(held, b1, b2));
        assert!(!is_behind(held, b1, b1));
        assert!(!is_behind(held, Ballot::ZERO, Ballot::ZERO));
        // no record: behind anything
        assert!(is_behind(None, b1, Ballot::FAST));
        assert!(rec(b1, Ballot::FAST).is_unsettled());
        assert!(!ours.is_unsettled());
    }
}
