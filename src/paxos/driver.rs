//! The driver of a membership change, as a state machine with no IO: events in (the
//! register read, an install round's acknowledgements, the joining store's answer, the step's
//! keys settled, a compare-and-set's result), actions out. `actors::membership::ChangeExecutor::drive`
//! carries each action out over the network and feeds its result back; the seeded simulation
//! (`paxos::sim`) does the same through its faulty network, so the decisions it checks are the
//! ones that run (review of issue 17: the simulation used to check a second copy of them).
//!
//! What a change is and why its steps are safe is argued in `paxos::membership`. This module
//! decides, for one request, what to do next:
//!
//! 1. **Read the register** (the step the change is at; a rerun after a crash resumes there).
//! 2. **Install what it shows** on every member reachable, and require a majority of its
//!    voters to acknowledge it durably, from an intact store (the barrier): nothing is decided
//!    from a step that might not be installed on a majority (a driver crashed between a
//!    compare-and-set and its install).
//! 3. **The next step** is `Membership::step`; none means the change is complete.
//! 4. **Fence**: anything but continuing the change the register shows (beginning a change,
//!    giving up an add) is done only from the epoch the client read before asking (`fence`);
//!    a request that finds the membership moved on answers so and does nothing. So a request
//!    held up in a paused node never begins again on its own (review of issue 17, item 5).
//!    Before an add begins, the joining store is asked whether it holds any record
//!    (`Membership::admits_joining`).
//! 5. **The step's work** (`Membership::work_before_next`): install the step again against
//!    the old voters, then settle the keys of the old voters that acknowledged (only those at
//!    the fast ballot in `CloseFast`). Giving up an add skips the add's rescan (argued at
//!    `work_before_next`).
//! 6. **Compare-and-set** the next step on the register's version: a delayed or duplicated
//!    one cannot land on a membership other than the one checked; one that lost (someone else
//!    moved the register) goes back to 1, and so does one whose outcome is unknown (the
//!    register shows whether it landed).
//! 7. The last step written, it is **announced** (best effort) to every member of both
//!    memberships, the node that left included, and the request is answered.
//!
//! **Failures.** Transient trouble reading or writing the register (a round that met an epoch
//! being installed, a slow majority) is retried [`RETRIES`] times with a growing delay, then
//! answered "unavailable" (the client asks again, at another node). A barrier that does not
//! hold, or a step whose keys could not all be settled, is answered "unavailable" at once:
//! every step is idempotent, so a rerun (here or at another node) resumes safely. A request
//! the membership refuses (a bad change, a fenced one, a joining store that served a cluster)
//! is answered "bad request", and nothing was written.

use std::time::Duration;

use crate::error::Error;
use crate::paxos::membership::{Change, JoiningStore, Membership, Phase};
use crate::paxos::quorum::Quorums;
use crate::paxos::types::NodeId;

/// How many times transient trouble with the register is retried before the request is
/// answered "unavailable".
pub const RETRIES: u32 = 5;

/// What the driver needs done. Every action but `Done` is answered by exactly one [`Event`]
/// of the same name, passed to [`ChangeDriver::on`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Read the membership register after `delay`; answer [`Event::Register`] with its
    /// membership (the installed bootstrap one if it was never written) and its version.
    ReadRegister { delay: Duration },
    /// Install `membership` here and on every member of it and of `previous`; answer
    /// [`Event::Installed`] with the nodes that acknowledged it durably at its epoch or a
    /// later one *from an intact store* (this node included when its own store is confirmed
    /// intact). A refused store may lack states it voted for: it counts in no barrier and is
    /// scanned by no rescan.
    Install {
        membership: Membership,
        previous: Membership,
    },
    /// Ask the node about to be added what its store holds; answer [`Event::Probed`].
    ProbeJoining { id: NodeId },
    /// Settle (an identity round at `membership`'s epoch) every key held by one of `sources`,
    /// only those held at the fast ballot if `fast_only`; answer [`Event::Settled`].
    Settle {
        membership: Membership,
        sources: Vec<NodeId>,
        fast_only: bool,
    },
    /// Compare-and-set the register from version `expect` to `next`; answer
    /// [`Event::Written`] (true if it swapped).
    Write { expect: u64, next: Membership },
    /// The request's answer: the membership it left, or why not.
    Done(Result<Membership, Error>),
}

/// The outcome of an [`Action`].
#[derive(Debug, Clone)]
pub enum Event {
    Register(Result<(Membership, u64), Error>),
    Installed(Result<Vec<NodeId>, Error>),
    Probed(Result<JoiningStore, Error>),
    /// How many keys were settled.
    Settled(Result<u64, Error>),
    Written(Result<bool, Error>),
}

#[derive(Debug, Clone)]
enum State {
    Reading,
    /// The register's membership being installed before anything is decided from it.
    Confirming {
        current: Membership,
        version: u64,
    },
    /// The joining store being asked, before an add begins.
    Probing {
        current: Membership,
        version: u64,
        next: Membership,
    },
    /// The step's work: its install against the old voters, then the settles.
    Installing {
        current: Membership,
        version: u64,
        next: Membership,
        phase: Phase,
    },
    Settling {
        current: Membership,
        version: u64,
        next: Membership,
    },
    Writing {
        current: Membership,
        next: Membership,
    },
    Announcing {
        next: Membership,
    },
    Done,
}

/// One membership change request, driven from whatever step the register shows.
#[derive(Debug, Clone)]
pub struct ChangeDriver {
    change: Change,
    /// The epoch the client read before asking (or, without one, the first this driver read).
    fence: Option<u64>,
    /// For an add: the joining store was not asked yet.
    probe: bool,
    transient: u32,
    state: State,
}

impl ChangeDriver {
    /// A driver of `change`, fenced at `fence` (see the module doc). Start it with
    /// [`ChangeDriver::start`].
    pub fn new(change: Change, fence: Option<u64>) -> ChangeDriver {
        let probe = matches!(change, Change::Add { .. });
        ChangeDriver {
            change,
            fence,
            probe,
            transient: 0,
            state: State::Reading,
        }
    }

    /// The change this driver carries out.
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        self.state = State::Reading;
        Action::ReadRegister {
            delay: Duration::ZERO,
        }
    }

    /// Has the request been answered?
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next action, given the outcome of the last one. An event that does not answer the
    /// action in progress is a bug of the caller, and ends the request as unavailable.
    pub fn on(&mut self, event: Event) -> Action {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, event) {
            (State::Reading, Event::Register(Ok((current, version)))) => {
                self.state = State::Confirming {
                    current: current.clone(),
                    version,
                };
                Action::Install {
                    membership: current.clone(),
                    previous: current,
                }
            }
            (State::Reading, Event::Register(Err(e))) => self.retry(e),
            (State::Confirming { current, version }, Event::Installed(acked)) => {
                self.on_confirmed(current, version, acked)
            }
            (
                State::Probing {
                    current,
                    version,
                    next,
                },
                Event::Probed(store),
            ) => {
                let admitted = store.and_then(|store| {
                    current
                        .admits_joining(self.change.node(), &store)
                        .map_err(Error::BadRequest)
                });
                match admitted {
                    Ok(()) => self.work(current, version, next),
                    Err(e) => self.done(Err(e)),
                }
            }
            (
                State::Installing {
                    current,
                    version,
                    next,
                    phase,
                },
                Event::Installed(acked),
            ) => self.on_barrier(current, version, next, phase, acked),
            (
                State::Settling {
                    current,
                    version,
                    next,
                },
                Event::Settled(Ok(_)),
            ) => self.write(current, version, next),
            (State::Settling { .. }, Event::Settled(Err(e))) => self.done(Err(e)),
            (State::Writing { current, next }, Event::Written(Ok(true))) => {
                if next.phase.is_some() {
                    // The next step: its work starts from the register, read again.
                    return self.read(Duration::ZERO);
                }
                // The last step: tell the members of both memberships, the node that left
                // included (it stops voting now rather than at its next fetch; every member
                // refuses its frames anyway).
                self.state = State::Announcing { next: next.clone() };
                Action::Install {
                    membership: next,
                    previous: current,
                }
            }
            // Someone else moved the register: look again.
            (State::Writing { .. }, Event::Written(Ok(false))) => self.read(Duration::ZERO),
            // Its outcome shows in the register.
            (State::Writing { .. }, Event::Written(Err(e))) => self.retry(e),
            // Best effort: the change is complete whoever acknowledged. (Not read back: a
            // driver that removed itself is no member now, and the members refuse its frames.)
            (State::Announcing { next }, Event::Installed(_)) => self.done(Ok(next)),
            (State::Done, _) => Action::Done(Err(Error::Unavailable(
                "the change's driver already answered".into(),
            ))),
            (state, event) => self.done(Err(Error::Unavailable(format!(
                "the change's driver got {event:?} while in {state:?}"
            )))),
        }
    }

    /// The register's membership is installed on a majority of its voters: its next step,
    /// fenced at the epoch the request first saw, the joining store probed once, then the
    /// step's work.
    fn on_confirmed(
        &mut self,
        current: Membership,
        version: u64,
        acked: Result<Vec<NodeId>, Error>,
    ) -> Action {
        if let Err(e) = acked.and_then(|acked| barrier(&current, &current, &acked)) {
            return self.done(Err(e));
        }
        let next = match current.step(&self.change) {
            Ok(Some(next)) => next,
            Ok(None) => return self.done(Ok(current)),
            Err(why) => return self.done(Err(Error::BadRequest(why))),
        };
        if !current.continues(&self.change) {
            let seen = *self.fence.get_or_insert(current.epoch);
            if seen != current.epoch {
                return self.done(Err(Error::BadRequest(format!(
                    "the membership changed since this request was made (epoch {seen}, now \
                     {}): nothing was done; check `paxkv member list` and ask again if the \
                     change is still wanted",
                    current.epoch
                ))));
            }
            if std::mem::take(&mut self.probe) {
                let id = self.change.node();
                self.state = State::Probing {
                    current,
                    version,
                    next,
                };
                return Action::ProbeJoining { id };
            }
        }
        self.work(current, version, next)
    }

    /// The step's install reached its barrier among the old voters: settle the keys of
    /// those that acknowledged (only the fast-ballot ones when closing the fast ballot).
    fn on_barrier(
        &mut self,
        current: Membership,
        version: u64,
        next: Membership,
        phase: Phase,
        acked: Result<Vec<NodeId>, Error>,
    ) -> Action {
        let old = old_voters_of(&current);
        let acked = match acked.and_then(|acked| {
            barrier(&current, &old, &acked)?;
            Ok(acked)
        }) {
            Ok(acked) => acked,
            Err(e) => return self.done(Err(e)),
        };
        let old_voters = old.voters();
        let sources = acked
            .into_iter()
            .filter(|n| old_voters.contains(n))
            .collect();
        self.state = State::Settling {
            current: current.clone(),
            version,
            next,
        };
        Action::Settle {
            membership: current,
            sources,
            fast_only: phase == Phase::CloseFast,
        }
    }

    /// The step's work if it has any (`Membership::work_before_next`), else its write.
    fn work(&mut self, current: Membership, version: u64, next: Membership) -> Action {
        match current.work_before_next(&self.change) {
            Some(phase) => {
                let previous = old_voters_of(&current);
                self.state = State::Installing {
                    current: current.clone(),
                    version,
                    next,
                    phase,
                };
                Action::Install {
                    membership: current,
                    previous,
                }
            }
            None => self.write(current, version, next),
        }
    }

    fn write(&mut self, current: Membership, version: u64, next: Membership) -> Action {
        self.state = State::Writing {
            current,
            next: next.clone(),
        };
        Action::Write {
            expect: version,
            next,
        }
    }

    fn read(&mut self, delay: Duration) -> Action {
        self.state = State::Reading;
        Action::ReadRegister { delay }
    }

    /// Transient trouble with the register is retried; anything else answers the request.
    fn retry(&mut self, e: Error) -> Action {
        if e.is_bad_input() || self.transient >= RETRIES {
            return self.done(Err(e));
        }
        self.transient += 1;
        self.read(Duration::from_millis(200 * u64::from(self.transient)))
    }

    fn done(&mut self, result: Result<Membership, Error>) -> Action {
        self.state = State::Done;
        Action::Done(result)
    }
}

/// The voters before the change in progress: those of its `CloseFast` step (the members
/// without the joining one, the leaving one included).
pub fn old_voters_of(m: &Membership) -> Membership {
    let mut old = m.clone();
    old.phase = Some(Phase::CloseFast);
    old
}

/// Does `acked` hold a majority of the voters of `m` and of `previous` (the barrier of a
/// step)? The error says how many were missing.
pub fn barrier(m: &Membership, previous: &Membership, acked: &[NodeId]) -> Result<(), Error> {
    for voters in [m.voters(), previous.voters()] {
        let count = acked.iter().filter(|n| voters.contains(n)).count();
        let needed = Quorums::new(voters.len()).classic();
        if count < needed {
            return Err(Error::Unavailable(format!(
                "epoch {}: {count} of the voters {voters:?} installed it, {needed} needed",
                m.epoch
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::bootstrap((1..=3).map(|i| (i, format!("127.0.0.1:{}", 7400 + i))), "")
    }

    fn add4() -> Change {
        Change::Add {
            id: 4,
            addr: "127.0.0.1:7404".into(),
            store: 1004,
        }
    }

    /// A world that answers every action at once: the register, the nodes that acknowledge
    /// installs, what the joining store says. Records every action.
    struct World {
        register: Membership,
        version: u64,
        acked: Vec<NodeId>,
        joining: JoiningStore,
        actions: Vec<Action>,
        /// Lose the answer of the next compare-and-set (it is applied).
        lose_next_write: bool,
        /// Fail this many register reads first.
        failing_reads: u32,
    }

    impl World {
        fn new(register: Membership) -> World {
            World {
                register,
                version: 1,
                acked: vec![1, 2, 3, 4],
                joining: JoiningStore {
                    installed: None,
                    holds_records: false,
                },
                actions: Vec::new(),
                lose_next_write: false,
                failing_reads: 0,
            }
        }

        fn run(&mut self, driver: &mut ChangeDriver) -> Result<Membership, Error> {
            let mut action = driver.start();
            for _ in 0..100 {
                self.actions.push(action.clone());
                let event = match action {
                    Action::ReadRegister { .. } if self.failing_reads > 0 => {
                        self.failing_reads -= 1;
                        Event::Register(Err(Error::Unavailable("slow".into())))
                    }
                    Action::ReadRegister { .. } => {
                        Event::Register(Ok((self.register.clone(), self.version)))
                    }
                    Action::Install { .. } => Event::Installed(Ok(self.acked.clone())),
                    Action::ProbeJoining { .. } => Event::Probed(Ok(self.joining.clone())),
                    Action::Settle { .. } => Event::Settled(Ok(7)),
                    Action::Write { expect, next } => {
                        let swapped = expect == self.version;
                        if swapped {
                            self.register = next;
                            self.version += 1;
                        }
                        if std::mem::take(&mut self.lose_next_write) {
                            Event::Written(Err(Error::Unknown("lost".into())))
                        } else {
                            Event::Written(Ok(swapped))
                        }
                    }
                    Action::Done(result) => {
                        assert!(driver.is_done());
                        return result;
                    }
                };
                action = driver.on(event);
            }
            panic!("the driver never answered: {:?}", self.actions);
        }

        fn writes(&self) -> Vec<(u64, Option<Phase>)> {
            self.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Write { next, .. } => Some((next.epoch, next.phase)),
                    _ => None,
                })
                .collect()
        }

        fn settles(&self) -> Vec<(u64, bool)> {
            self.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Settle {
                        membership,
                        fast_only,
                        ..
                    } => Some((membership.epoch, *fast_only)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn an_add_goes_through_its_three_steps_each_after_its_work() {
        let mut world = World::new(three());
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let m = world.run(&mut driver).expect("completes");
        assert_eq!(m.voters(), vec![1, 2, 3, 4]);
        assert_eq!(m.phase, None);
        assert_eq!(
            world.writes(),
            vec![
                (2, Some(Phase::CloseFast)),
                (3, Some(Phase::Rescan)),
                (4, None)
            ]
        );
        // CloseFast settles the fast keys at epoch 2, Rescan every key at epoch 3.
        assert_eq!(world.settles(), vec![(2, true), (3, false)]);
        // The joining store was asked once, before the first write; the last step announced.
        let probe = world
            .actions
            .iter()
            .position(|a| matches!(a, Action::ProbeJoining { id: 4 }))
            .expect("asked");
        let first_write = world
            .actions
            .iter()
            .position(|a| matches!(a, Action::Write { .. }))
            .expect("written");
        assert!(probe < first_write);
        assert!(matches!(
            world.actions[world.actions.len() - 2],
            Action::Install { ref membership, .. } if membership.epoch == 4
        ));
    }

    #[test]
    fn the_rescan_scans_only_old_voters_that_acknowledged() {
        let mut world = World::new(three());
        world.acked = vec![1, 3, 4];
        let mut driver = ChangeDriver::new(add4(), Some(1));
        world.run(&mut driver).expect("completes");
        for a in &world.actions {
            if let Action::Settle { sources, .. } = a {
                assert_eq!(sources, &vec![1, 3], "the joining node is no old voter");
            }
        }
    }

    #[test]
    fn a_request_fenced_at_an_epoch_the_register_left_writes_nothing() {
        let mut register = three();
        register.epoch = 5;
        let mut world = World::new(register);
        let mut driver = ChangeDriver::new(add4(), Some(4));
        let e = world.run(&mut driver).expect_err("fenced");
        assert!(matches!(e, Error::BadRequest(ref why) if why.contains("changed since")));
        assert!(world.writes().is_empty());
    }

    #[test]
    fn continuing_the_change_the_register_shows_is_not_fenced() {
        let mut world = World::new(three().step(&add4()).unwrap().unwrap());
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let m = world.run(&mut driver).expect("resumed and completed");
        assert_eq!(m.epoch, 4);
        assert!(
            !world
                .actions
                .iter()
                .any(|a| matches!(a, Action::ProbeJoining { .. })),
            "a resumed add does not ask the joining store again (it may hold the rescan's keys)"
        );
    }

    #[test]
    fn a_barrier_without_a_majority_answers_unavailable_and_writes_nothing() {
        let mut world = World::new(three());
        world.acked = vec![1];
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let e = world.run(&mut driver).expect_err("no barrier");
        assert!(matches!(e, Error::Unavailable(ref why) if why.contains("2 needed")));
        assert!(world.writes().is_empty());
    }

    #[test]
    fn a_joining_store_that_holds_records_is_refused_before_anything_is_written() {
        let mut world = World::new(three());
        world.joining.holds_records = true;
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let e = world.run(&mut driver).expect_err("refused");
        assert!(matches!(e, Error::BadRequest(ref why) if why.contains("holds records")));
        assert!(world.writes().is_empty());
    }

    #[test]
    fn a_write_whose_answer_is_lost_is_found_in_the_register() {
        let mut world = World::new(three());
        world.lose_next_write = true;
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let m = world.run(&mut driver).expect("completes");
        assert_eq!(m.epoch, 4, "no step written twice, none skipped");
        let delayed = world
            .actions
            .iter()
            .any(|a| matches!(a, Action::ReadRegister { delay } if !delay.is_zero()));
        assert!(delayed, "the retry backs off");
    }

    #[test]
    fn transient_read_failures_are_retried_a_bounded_number_of_times() {
        let mut world = World::new(three());
        world.failing_reads = RETRIES;
        let mut driver = ChangeDriver::new(add4(), Some(1));
        world.run(&mut driver).expect("retried through");

        let mut world = World::new(three());
        world.failing_reads = RETRIES + 1;
        let mut driver = ChangeDriver::new(add4(), Some(1));
        let e = world.run(&mut driver).expect_err("gave up");
        assert!(matches!(e, Error::Unavailable(_)));
    }

    #[test]
    fn giving_up_an_add_skips_its_rescan_and_returns_to_the_old_voters() {
        // The add reached its Rescan step (4 is a voter there), then 4 died.
        let close = three().step(&add4()).unwrap().unwrap();
        let rescan = close.step(&add4()).unwrap().unwrap();
        assert_eq!(rescan.phase, Some(Phase::Rescan));
        let mut world = World::new(rescan.clone());
        world.acked = vec![1, 2, 3];
        let mut driver = ChangeDriver::new(Change::Remove { id: 4 }, Some(rescan.epoch));
        let m = world
            .run(&mut driver)
            .expect("the give-up completes without node 4");
        assert_eq!(m.voters(), vec![1, 2, 3]);
        assert!(
            !world.settles().contains(&(rescan.epoch, false)),
            "the add's rescan (which waits for node 4) was skipped: {:?}",
            world.settles()
        );
    }

    #[test]
    fn a_driver_answers_once() {
        let mut world = World::new(three());
        let mut driver = ChangeDriver::new(Change::Remove { id: 9 }, Some(1));
        let _ = world.run(&mut driver);
        assert!(matches!(
            driver.on(Event::Settled(Ok(1))),
            Action::Done(Err(Error::Unavailable(_)))
        ));
    }
}
