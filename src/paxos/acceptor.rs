//! The acceptor role of one key (CASPaxos §2.1, Paxos phase 1b and 2b), with no IO.
//!
//! [`Acceptor::step`] takes a request and returns the reply and, when the record changed, the
//! record to persist. The caller must make that record durable **before** it sends the reply:
//! a promise or an accept that is answered and then forgotten can let two values be chosen.
//!
//! Invariants, checked on every step and on every record read back from disk:
//! - `accepted <= promised`;
//! - `promised` and `accepted` never decrease;
//! - a ballot is promised only if it is above everything promised or accepted before, so a
//!   proposer that reuses a ballot after a restart is rejected rather than promised twice;
//! - `fast_unknown` only while nothing is accepted.
//!
//! **`fast_unknown`** ("I may have voted at the fast ballot and lost it") was written by the
//! in-place recovery of builds before issue 10 and may still be on their stores: such an
//! acceptor's promises and read answers say so, and Fast Paxos recovery counts it as a possible
//! holder of any state (see `paxos::proposer`); the next classic accept clears it. Nothing
//! sets it any more: a node whose store was lost never votes with it, it rejoins as a new
//! member (`paxos::membership`).

use std::sync::Arc;

use crate::messages::PeerMessage;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{Ballot, Register};

/// The answer to a read (`Query` or `Read`) of an acceptor whose record is `record`; `None` for
/// any other message. A read changes nothing, so it needs no write and no mailbox: this is
/// both [`Acceptor::step`]'s answer and the one a node gives from the record its acceptor
/// last made durable, without a stop in the acceptor's mailbox (`actors::acceptor`,
/// `DurableView`, where that is argued).
pub fn answer_read(record: &AcceptorRecord, msg: &PeerMessage) -> Option<PeerMessage> {
    Some(match *msg {
        PeerMessage::Read { read } if record.accepted != Ballot::FAST => PeerMessage::ReadReply {
            read,
            promised: record.promised,
            accepted: record.accepted,
            seen: record.state.seen(),
            fast_unknown: record.fast_unknown,
        },
        PeerMessage::Query { read } | PeerMessage::Read { read } => PeerMessage::QueryReply {
            read,
            promised: record.promised,
            accepted: record.accepted,
            state: record.state.clone(),
            fast_unknown: record.fast_unknown,
        },
        _ => return None,
    })
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Send this back to the proposer, after `persist` (if any) is durable.
    pub reply: PeerMessage,
    /// The record to make durable first; `None` when nothing changed. Shared with the
    /// acceptor, which never changes a record in place (see [`Acceptor`]).
    pub persist: Option<Arc<AcceptorRecord>>,
}

/// The acceptor's record is shared, never changed in place: each change makes a new record
/// (copying only what stays), so the record to persist is the acceptor's own, not a copy, and
/// a record handed out earlier (to storage, or published for reads, `actors::acceptor`) stays
/// as it was.
#[derive(Debug, Clone, Default)]
pub struct Acceptor {
    record: Arc<AcceptorRecord>,
}

impl Acceptor {
    /// An acceptor resumed from its durable record.
    pub fn new(record: AcceptorRecord) -> Acceptor {
        if let Err(e) = record.check() {
            panic!("acceptor record read back broken: {e}: {record:?}");
        }
        Acceptor {
            record: Arc::new(record),
        }
    }

    pub fn record(&self) -> &AcceptorRecord {
        &self.record
    }

    /// The record, shared (it is never changed in place).
    pub fn shared(&self) -> Arc<AcceptorRecord> {
        self.record.clone()
    }

    /// Handles one request. Panics on a message an acceptor never receives (a reply).
    pub fn step(&mut self, msg: PeerMessage) -> Step {
        let before = (self.record.promised, self.record.accepted);
        let step = match msg {
            PeerMessage::Prepare { ballot } => self.prepare(ballot),
            PeerMessage::Accept {
                ballot,
                state,
                next,
            } => self.accept(ballot, state, next),
            read @ (PeerMessage::Query { .. } | PeerMessage::Read { .. }) => Step {
                reply: answer_read(&self.record, &read).expect("matched a read"),
                persist: None,
            },
            reply => panic!("an acceptor received a reply: {reply:?}"),
        };
        assert!(
            self.record.promised >= before.0 && self.record.accepted >= before.1,
            "acceptor ballots went down: {before:?} -> {:?}",
            (self.record.promised, self.record.accepted)
        );
        if let Err(e) = self.record.check() {
            panic!("acceptor record broken after a step: {e}");
        }
        step
    }

    /// Merges a peer's record for the same key (anti-entropy): takes its accepted
    /// state only where an Accept of it would be taken (above what this acceptor accepted, and
    /// not below its promise), then raises the promise to the peer's. Raising a promise is
    /// always safe; it is how a node that lost its disk relearns the promises it forgot.
    /// Returns the record to persist if anything changed.
    pub fn adopt(&mut self, peer: &AcceptorRecord) -> Option<Arc<AcceptorRecord>> {
        if peer.check().is_err() {
            // A peer's record arrives over the network: a broken one is ignored, never merged.
            return None;
        }
        let mut record = (*self.record).clone();
        // A state accepted at the fast ballot is never copied: how many acceptors took it is
        // what tells whether it may have been chosen.
        let classic = peer.accepted != Ballot::FAST;
        if classic && peer.accepted > record.accepted && peer.accepted >= record.promised {
            record.accepted = peer.accepted;
            record.state = peer.state.clone();
            record.fast_unknown = false;
        }
        record.promised = record.promised.max(peer.promised).max(record.accepted);
        if let Err(e) = record.check() {
            panic!("acceptor record broken after adopting {peer:?}: {e}");
        }
        if record == *self.record {
            return None;
        }
        self.record = Arc::new(record);
        Some(self.record.clone())
    }

    fn highest_seen(&self) -> Ballot {
        self.record.promised.max(self.record.accepted)
    }

    fn prepare(&mut self, ballot: Ballot) -> Step {
        if ballot <= self.highest_seen() {
            return self.reject(ballot);
        }
        self.record = Arc::new(AcceptorRecord {
            promised: ballot,
            ..(*self.record).clone()
        });
        Step {
            reply: PeerMessage::Promise {
                ballot,
                accepted: self.record.accepted,
                state: self.record.state.clone(),
                fast_unknown: self.record.fast_unknown,
            },
            persist: Some(self.record.clone()),
        }
    }

    fn accept(&mut self, ballot: Ballot, state: Register, next: Option<Ballot>) -> Step {
        if ballot == Ballot::FAST {
            let fresh = self.record.promised == Ballot::ZERO;
            let duplicate = self.record.accepted == Ballot::FAST && self.record.state == state;
            if duplicate {
                // The vote is confirmed, the promise is not: every proposer instance of a
                // node sends the fast Accept with the same `next`, (1, node), so the promise
                // of it this acceptor holds may be a predecessor's, which may have used that
                // ballot for another state. Reported, it would let the new instance take
                // (1, node) for its own next write without a Prepare: two states at one
                // classic ballot (a retried first write through the same node; review of
                // 2026-12-06, `a_repeated_fast_accept_never_lends_a_new_instance_...`).
                return Step {
                    reply: PeerMessage::Accepted {
                        ballot,
                        promised: Ballot::FAST,
                    },
                    persist: None,
                };
            }
            if !fresh {
                // Anything seen for this key (a promise, a fast or classic accept) rules out
                // the fast path: the proposer must go through a classic round.
                return self.reject(ballot);
            }
        } else if ballot < self.record.promised && ballot != self.record.accepted {
            return self.reject(ballot);
        }
        if ballot == self.record.accepted {
            if state != self.record.state {
                // One classic ballot carries one state (one proposer instance, one Accept per
                // ballot): a second state at it is forged or broken, and is refused.
                return self.reject(ballot);
            }
            // A duplicate (or a repair with what this acceptor already holds): nothing to
            // write.
            return Step {
                reply: PeerMessage::Accepted {
                    ballot,
                    promised: self.record.promised,
                },
                persist: None,
            };
        }
        if ballot < self.record.accepted {
            // Reachable only below the promise (refused above), kept as a guard.
            return self.reject(ballot);
        }
        let mut promised = self.record.promised.max(ballot);
        // An Accept's `next` must be above its ballot (it comes from the network: one that is
        // not is ignored, and the Accept taken without the extra promise).
        if let Some(next) = next.filter(|n| *n > ballot) {
            promised = promised.max(next);
        }
        // A new record: the state it replaces is not copied first.
        self.record = Arc::new(AcceptorRecord {
            promised,
            accepted: ballot,
            state,
            fast_unknown: false,
        });
        Step {
            reply: PeerMessage::Accepted {
                ballot,
                promised: self.record.promised,
            },
            persist: Some(self.record.clone()),
        }
    }

    fn reject(&self, ballot: Ballot) -> Step {
        Step {
            reply: PeerMessage::Reject {
                ballot,
                seen: self.highest_seen(),
            },
            persist: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{RecentWrites, Remembered, RequestId, Seen, WriteOutcome};

    fn b(round: u64, node: u32) -> Ballot {
        Ballot::new(round, node)
    }

    fn state(version: u64, v: &str) -> Register {
        Register {
            version,
            value: Some(v.as_bytes().to_vec()),
            ..Register::default()
        }
    }

    #[test]
    fn a_prepare_above_everything_seen_is_promised_and_persisted() {
        let mut a = Acceptor::default();
        let step = a.step(PeerMessage::Prepare { ballot: b(1, 1) });
        assert_eq!(
            step.reply,
            PeerMessage::Promise {
                ballot: b(1, 1),
                accepted: Ballot::ZERO,
                state: Register::default(),
                fast_unknown: false,
            }
        );
        assert_eq!(step.persist.unwrap().promised, b(1, 1));
    }

    /// A record handed out (to storage, or published for reads) is never changed by a later
    /// step: each change is a new record, and the one to persist is the acceptor's own.
    #[test]
    fn a_record_handed_out_stays_as_it_was_and_the_one_to_persist_is_the_acceptors_own() {
        let mut a = Acceptor::default();
        let promised = a
            .step(PeerMessage::Prepare { ballot: b(1, 1) })
            .persist
            .unwrap();
        let before = a.shared();
        assert!(Arc::ptr_eq(&promised, &before), "persisted a copy");
        let accepted = a
            .step(PeerMessage::Accept {
                ballot: b(1, 1),
                state: state(1, "x"),
                next: Some(b(2, 1)),
            })
            .persist
            .unwrap();
        assert!(Arc::ptr_eq(&accepted, &a.shared()), "persisted a copy");
        assert_eq!(accepted.state, state(1, "x"));
        assert_eq!(accepted.promised, b(2, 1));
        assert_eq!(*before, *promised);
        assert_eq!(before.promised, b(1, 1));
        assert_eq!(
            before.accepted,
            Ballot::ZERO,
            "a record handed out was changed"
        );
        // Nothing changed, nothing new: a read and a duplicate Accept share the record.
        a.step(PeerMessage::Read { read: 1 });
        assert!(Arc::ptr_eq(&accepted, &a.shared()));
    }

    #[test]
    fn a_prepare_at_or_below_the_promise_is_rejected_with_the_higher_ballot() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Prepare { ballot: b(5, 2) });
        for ballot in [b(5, 2), b(5, 1), b(4, 9)] {
            let step = a.step(PeerMessage::Prepare { ballot });
            assert_eq!(
                step.reply,
                PeerMessage::Reject {
                    ballot,
                    seen: b(5, 2)
                }
            );
            assert_eq!(step.persist, None, "a rejection promises nothing");
        }
    }

    #[test]
    fn a_promise_carries_the_last_accepted_state() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Accept {
            ballot: b(1, 1),
            state: state(1, "x"),
            next: None,
        });
        let step = a.step(PeerMessage::Prepare { ballot: b(2, 3) });
        assert_eq!(
            step.reply,
            PeerMessage::Promise {
                ballot: b(2, 3),
                accepted: b(1, 1),
                state: state(1, "x"),
                fast_unknown: false,
            }
        );
    }

    #[test]
    fn an_accept_below_the_promise_is_rejected_and_changes_nothing() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Prepare { ballot: b(3, 1) });
        let step = a.step(PeerMessage::Accept {
            ballot: b(2, 2),
            state: state(1, "x"),
            next: None,
        });
        assert_eq!(
            step.reply,
            PeerMessage::Reject {
                ballot: b(2, 2),
                seen: b(3, 1)
            }
        );
        assert_eq!(a.record().accepted, Ballot::ZERO);
    }

    #[test]
    fn an_accept_with_next_also_promises_the_next_ballot_section_2_2_1() {
        let mut a = Acceptor::default();
        let step = a.step(PeerMessage::Accept {
            ballot: b(1, 1),
            state: state(1, "x"),
            next: Some(b(2, 1)),
        });
        assert_eq!(
            step.reply,
            PeerMessage::Accepted {
                ballot: b(1, 1),
                promised: b(2, 1)
            }
        );
        let rec = step.persist.unwrap();
        assert_eq!((rec.promised, rec.accepted), (b(2, 1), b(1, 1)));
        // a competitor between the two ballots is now refused
        assert!(matches!(
            a.step(PeerMessage::Prepare { ballot: b(1, 5) }).reply,
            PeerMessage::Reject { .. }
        ));
        // and the promised proposer may accept without a Prepare
        assert!(matches!(
            a.step(PeerMessage::Accept {
                ballot: b(2, 1),
                state: state(2, "y"),
                next: Some(b(3, 1))
            })
            .reply,
            PeerMessage::Accepted { .. }
        ));
    }

    #[test]
    fn a_duplicated_accept_is_answered_without_a_second_write() {
        let mut a = Acceptor::default();
        let accept = PeerMessage::Accept {
            ballot: b(1, 1),
            state: state(1, "x"),
            next: Some(b(2, 1)),
        };
        assert!(a.step(accept.clone()).persist.is_some());
        let again = a.step(accept);
        assert!(matches!(again.reply, PeerMessage::Accepted { .. }));
        assert_eq!(again.persist, None);
    }

    #[test]
    fn a_query_reports_the_record_and_persists_nothing() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Accept {
            ballot: b(1, 1),
            state: state(1, "x"),
            next: None,
        });
        let step = a.step(PeerMessage::Query { read: 9 });
        assert_eq!(
            step.reply,
            PeerMessage::QueryReply {
                read: 9,
                promised: b(1, 1),
                accepted: b(1, 1),
                state: state(1, "x"),
                fast_unknown: false,
            }
        );
        assert_eq!(step.persist, None);
    }

    /// A `Read` is answered with what a read sees, without the state's remembered writes,
    /// except at the fast ballot, where those writes tell states apart: answered in full.
    #[test]
    fn a_read_is_answered_without_remembered_writes_except_at_the_fast_ballot() {
        let mut remembering = state(1, "x");
        remembering.recent = RecentWrites::from_writes(&[Remembered {
            id: RequestId { client: 3, seq: 1 },
            outcome: WriteOutcome::Put { version: 1 },
        }])
        .unwrap();
        let mut a = Acceptor::default();
        assert!(matches!(
            a.step(PeerMessage::Read { read: 1 }).reply,
            PeerMessage::ReadReply { accepted: Ballot::ZERO, ref seen, .. } if *seen == Seen::default()
        ));
        a.step(PeerMessage::Accept {
            ballot: Ballot::FAST,
            state: remembering.clone(),
            next: None,
        });
        let at_fast = a.step(PeerMessage::Read { read: 2 });
        assert_eq!(
            at_fast.reply,
            PeerMessage::QueryReply {
                read: 2,
                promised: Ballot::FAST,
                accepted: Ballot::FAST,
                state: remembering.clone(),
                fast_unknown: false,
            }
        );
        a.step(PeerMessage::Accept {
            ballot: b(2, 1),
            state: remembering.clone(),
            next: None,
        });
        let step = a.step(PeerMessage::Read { read: 3 });
        assert_eq!(
            step.reply,
            PeerMessage::ReadReply {
                read: 3,
                promised: b(2, 1),
                accepted: b(2, 1),
                seen: remembering.seen(),
                fast_unknown: false,
            }
        );
        assert_eq!(step.persist, None);
        assert!(remembering.seen().forgetful().recent.is_empty());
    }

    #[test]
    fn a_restarted_acceptor_resumes_from_its_record() {
        let mut a = Acceptor::default();
        let rec = a
            .step(PeerMessage::Prepare { ballot: b(4, 2) })
            .persist
            .unwrap();
        let mut again = Acceptor::new((*rec).clone());
        assert!(matches!(
            again.step(PeerMessage::Prepare { ballot: b(3, 1) }).reply,
            PeerMessage::Reject { .. }
        ));
    }

    #[test]
    fn adopting_a_peer_record_takes_its_newer_state_and_its_promise() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Accept {
            ballot: b(1, 1),
            state: state(1, "old"),
            next: None,
        });
        let peer = AcceptorRecord {
            promised: b(5, 2),
            accepted: b(3, 2),
            state: state(2, "new"),
            fast_unknown: false,
        };
        let rec = a.adopt(&peer).expect("changed");
        assert_eq!(*rec, peer);
        assert_eq!(a.adopt(&peer), None, "adopting twice changes nothing");
        // an older peer record changes nothing
        let older = AcceptorRecord {
            promised: b(1, 1),
            accepted: b(1, 1),
            state: state(1, "old"),
            fast_unknown: false,
        };
        assert_eq!(a.adopt(&older), None);
    }

    #[test]
    fn adopting_never_takes_a_state_below_the_promise() {
        let mut a = Acceptor::default();
        a.step(PeerMessage::Prepare { ballot: b(9, 1) });
        let peer = AcceptorRecord {
            promised: b(4, 2),
            accepted: b(4, 2),
            state: state(1, "x"),
            fast_unknown: false,
        };
        // an Accept at 4.2 would be refused after promising 9.1, so adoption refuses it too
        assert_eq!(a.adopt(&peer), None);
        assert_eq!(a.record().accepted, Ballot::ZERO);
    }

    #[test]
    fn a_fast_accept_is_taken_only_by_an_acceptor_that_never_saw_the_key() {
        let fast = |v: &str| PeerMessage::Accept {
            ballot: Ballot::FAST,
            state: state(1, v),
            next: Some(b(1, 3)),
        };
        let mut fresh = Acceptor::default();
        let step = fresh.step(fast("x"));
        assert_eq!(
            step.reply,
            PeerMessage::Accepted {
                ballot: Ballot::FAST,
                promised: b(1, 3)
            }
        );
        assert!(step.persist.is_some());
        // the same state again is a duplicate; another state at the fast ballot is refused
        assert_eq!(fresh.step(fast("x")).persist, None);
        assert!(matches!(
            fresh.step(fast("y")).reply,
            PeerMessage::Reject { .. }
        ));
        // an acceptor that promised anything refuses the fast ballot
        let mut promised = Acceptor::default();
        promised.step(PeerMessage::Prepare { ballot: b(1, 2) });
        assert!(matches!(
            promised.step(fast("x")).reply,
            PeerMessage::Reject { .. }
        ));
        // and a classic Prepare is always above it
        assert!(matches!(
            fresh.step(PeerMessage::Prepare { ballot: b(2, 1) }).reply,
            PeerMessage::Promise { accepted, .. } if accepted == Ballot::FAST
        ));
    }

    #[test]
    fn a_state_accepted_at_the_fast_ballot_is_not_copied_by_anti_entropy() {
        let mut a = Acceptor::default();
        let peer = AcceptorRecord {
            promised: b(1, 3),
            accepted: Ballot::FAST,
            state: state(1, "x"),
            fast_unknown: false,
        };
        let rec = a.adopt(&peer).expect("the promise is raised");
        assert_eq!(rec.accepted, Ballot::ZERO);
        assert_eq!(rec.promised, b(1, 3));
    }

    #[test]
    #[should_panic(expected = "acceptor record read back broken")]
    fn a_broken_record_is_refused_on_load() {
        Acceptor::new(AcceptorRecord {
            promised: b(1, 1),
            accepted: b(2, 1),
            state: state(1, "x"),
            fast_unknown: false,
        });
    }

    #[test]
    #[should_panic(expected = "an acceptor received a reply")]
    fn an_acceptor_panics_on_a_reply() {
        Acceptor::default().step(PeerMessage::Accepted {
            ballot: b(1, 1),
            promised: b(1, 1),
        });
    }

    /// A valid record (one that passes `AcceptorRecord::check`), as a peer may send it. One
    /// classic ballot carries one state (one proposer instance sends one Accept per ballot,
    /// and an acceptor refuses a second state at it), so the state of a classic accept is a
    /// function of its ballot; at the fast ballot several states may coexist.
    fn any_record() -> impl proptest::strategy::Strategy<Value = AcceptorRecord> {
        use proptest::prelude::*;
        let ballot = (1u64..6, 1u32..4).prop_map(|(r, n)| b(r, n));
        let accepted = prop_oneof![Just(Ballot::ZERO), Just(Ballot::FAST), ballot.clone(),];
        (accepted, ballot, 0u64..4, any::<bool>()).prop_map(|(accepted, promised, v, unknown)| {
            let state = match accepted {
                Ballot::ZERO => Register::default(),
                Ballot::FAST => state(v + 1, &format!("fast{v}")),
                classic => state(classic.round, &format!("{classic}")),
            };
            AcceptorRecord {
                promised: promised.max(accepted),
                accepted,
                state,
                fast_unknown: unknown && accepted == Ballot::ZERO,
            }
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// `adopt` is idempotent, never lowers a ballot, and takes a peer's state only where
        /// an Accept of it would be taken (not below the promise held before).
        #[test]
        fn adopting_is_idempotent_and_never_takes_a_state_below_the_promise(
            local in any_record(),
            peer in any_record(),
        ) {
            let mut a = Acceptor::new(local.clone());
            a.adopt(&peer);
            let once = a.record().clone();
            proptest::prop_assert_eq!(a.adopt(&peer), None, "adopting twice changed the record");
            proptest::prop_assert!(once.promised >= local.promised);
            proptest::prop_assert!(once.accepted >= local.accepted);
            if once.accepted != local.accepted {
                proptest::prop_assert_eq!(once.accepted, peer.accepted);
                proptest::prop_assert!(peer.accepted >= local.promised);
            }
            proptest::prop_assert!(once.check().is_ok());
        }
    }

    /// `adopt` depends on the order of its sources: a promise adopted first blocks a state
    /// adopted next. Either order is safe (each is what some order of delivered Accepts and
    /// Prepares would leave); catch-up needs no single answer. (The in-place recovery of
    /// builds before issue 10 did, and merged in two passes; a lost store now rejoins as a
    /// new member instead.)
    #[test]
    fn adopting_sources_one_by_one_depends_on_their_order() {
        let promised_high = AcceptorRecord {
            promised: b(5, 1),
            accepted: b(1, 1),
            state: state(1, "a"),
            fast_unknown: false,
        };
        let accepted_higher = AcceptorRecord {
            promised: b(3, 2),
            accepted: b(3, 2),
            state: state(2, "b"),
            fast_unknown: false,
        };
        let one_by_one = |first: &AcceptorRecord, second: &AcceptorRecord| {
            let mut a = Acceptor::default();
            a.adopt(first);
            a.adopt(second);
            a.record().accepted
        };
        assert_eq!(one_by_one(&promised_high, &accepted_higher), b(1, 1));
        assert_eq!(one_by_one(&accepted_higher, &promised_high), b(3, 2));
    }
}
