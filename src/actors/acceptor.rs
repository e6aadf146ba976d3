//! The acceptor actor of one key: a thin shell around [`paxos::acceptor::Acceptor`].
//!
//! On start (and so on every restart) it loads the key's record from LMDB before it handles
//! any message (`ctx.wait` holds the mailbox). For each request it steps the core and, when the
//! record changed, has the storage actor make it durable, again holding the mailbox, and only
//! then sends the reply. Messages are thus handled one at a time, each against durable state.
//!
//! A panic in the core, a record that fails its checks, or a storage error is a crash: the
//! reply is never sent (a promise or accept that is not durable must not be claimed), the
//! actor stops, and the supervisor starts a new incarnation from what is on disk. After a
//! storage error (a full disk or map) the proposer gets `Failed` with the cause instead, so
//! that it stops waiting for this acceptor and its caller learns why the write failed.
//!
//! **Reads answered from the durable record, without the mailbox** ([`DurableView`]). A read
//! (`Query`, `Read`) changes nothing and needs nothing but the record. So each acceptor
//! publishes the record it last made durable, and `actors::routes` answers a read that
//! arrives for a live acceptor from it, with `paxos::acceptor::answer_read` (the function
//! [`Acceptor::step`] answers reads with), instead of queueing it in the mailbox. That saves a
//! queued message, a task wakeup and a poll of the actor per read, three per get; and a read
//! no longer waits behind the key's write in flight (its fsync, a millisecond or more).
//!
//! *Why the answer is one the acceptor could have given.* The acceptor's history is the
//! sequence of its durable records. Take the moment its actor publishes a record as the
//! moment it handled the request that made it (the reply is sent right after, in the same
//! step of this thread). A read answered from the view between two publications is then a
//! read the acceptor handled between those two requests: it got there before the request in
//! flight, which is only a reordering of two messages on their way to the acceptor, which
//! the asynchronous model allows and the protocol already survives (the simulation reorders
//! every message). Until a record is durable it is never published, so no read is answered
//! with a promise or an accept that a crash could still take back (the rule `paxos::acceptor`
//! states for replies). A record made durable but not yet published (the commit returned,
//! the completion not yet run) is answered as the one before it: as if the request were
//! still on its way; if the node crashes then, the request was handled at the crash, and its
//! reply lost. Since each published record is the next durable one, what a view answers
//! only moves forward, as the acceptor's answers do.
//!
//! Every reply the acceptor sent is in the view: the publication comes first. So a write
//! whose majority answered is seen by every later read's majority, through the quorum
//! intersection the quick read (`paxos::proposer`) relies on, exactly as before. What a read
//! may now miss is only a write no acceptor has answered yet at the acceptors it asked: a
//! write concurrent with the read, which a linearizable read may order either way. Nothing
//! in the proposer counts on an acceptor taking one connection's messages in order (reads
//! are counted by majorities; repairs and settles are Accepts and Prepares, which still go
//! through the mailbox).
//!
//! *Other readers of the store in that window.* Between a commit and its publication,
//! anti-entropy's scans and fetches, a change's rescan and a successor's load can already
//! read the new record from disk. That is no different from before: they read the disk, not
//! the actor, and they always could see a record whose reply was not sent yet. A classic
//! record copied elsewhere is a copy of an Accept that exists, a fast-ballot state is never
//! copied, and a rescan needs only chosen states.
//!
//! *An epoch raised in that window.* A node may install a newer membership (epoch k+1)
//! while an epoch-k write of one of its acceptors is being committed; a read of epoch k+1
//! answered from the view then misses that write, whose reply still goes out, at epoch k,
//! once it is durable. Before, the read waited in the mailbox and saw it. The reordered
//! history (the acceptor answers at k+1, then accepts at k) is not one admission allows, so
//! "only a reordering" does not cover this case; it is safe for another reason. A change's
//! safety never rests on what read answers say: it rests on the refusals of Prepares and
//! Accepts of the older epoch, and on the stores, whose queued writes commit before the
//! install (`actors::membership`) and so are on disk for the change's rescan. The write in
//! question was concurrent with the read (its reply was not sent when the read was
//! answered), so the read may be ordered before it; whether the write is chosen, and seen by
//! the reads after it, is decided as it was before this path existed.
//!
//! *What is not taken from the view*: nothing but reads; no read while the record is being
//! loaded or after a crash (the view is empty until the actor publishes, and is cleared when
//! it crashes or stops; the read goes to the mailbox as before, where a restarted actor
//! answers it from disk); no read of a key being retired (it leaves the key table, under the
//! table's lock, when its `Retire` is sent, and the view is found only through that table);
//! no read that admission would not step (another epoch, `paxos::admission`), which the
//! actor refuses or answers as before. The node-level gates (cluster, voting) are checked on
//! every frame's way in, before either path. The record and the epoch are read on the
//! node's one thread with nothing in between (`actors::routes`); the record is taken first,
//! so that even across threads it would never be one written after the epoch that admits
//! the read.
//!
//! *Messages already in the mailbox when the node stops voting* passed the voting gate and
//! are still stepped; the gate is not checked again. That is the message stepped a little
//! later than it arrived, which the model allows, and neither way a node stops voting rests
//! on when its last vote was cast. It was removed from the voters, or its store replaced: the
//! newer membership's epoch is raised before voting is cleared (`actors::membership`,
//! `InstalledMembership::install`), and admission answers every message of an older epoch
//! `Stale`, queued or not, so nothing of the old epoch is stepped after it. Its store was found
//! to be an older copy after it began voting (a peer reports a later generation,
//! `paxos::identity`, "What this cannot catch"): it has voted since its start on a
//! confirmation that proved wrong, and a message stepped after the refusal is one more vote of
//! that same run, which the refusal cannot take back in any case.
//!
//! [`paxos::acceptor::Acceptor`]: crate::paxos::acceptor::Acceptor

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::membership::MembershipService;
use crate::actors::messages::{
    ActorStopped, AdoptRecord, FromProposer, Load, Persist, Retire, Role,
};
#[cfg(feature = "testing")]
use crate::actors::messages::{Crash, Inspect};
use crate::actors::outbox::Outbox;
use crate::actors::storage::StorageActor;
use crate::actors::{guarded, Stats};
use crate::error::{Error, Result};
use crate::messages::{Envelope, PeerMessage};
use crate::paxos::acceptor::{answer_read, Acceptor};
use crate::paxos::admission::{self, Admission};
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::Key;

/// Requests that may wait for one key's acceptor; more are dropped (Paxos treats it as loss).
const ACCEPTOR_MAILBOX_CAPACITY: usize = 1_024;
/// The longest storage error passed on to a proposer.
const MAX_FAILURE_REASON_CHARS: usize = 256;

/// The record one acceptor actor last made durable, for the reads answered without its
/// mailbox (see the module doc). Shared by the actor, which publishes, and the key's entry in
/// `actors::routes`, which answers from it.
pub struct DurableView {
    record: Mutex<Option<Arc<AcceptorRecord>>>,
    outbox: Outbox,
    stats: Arc<Stats>,
}

impl DurableView {
    pub fn new(outbox: Outbox, stats: Arc<Stats>) -> Arc<DurableView> {
        Arc::new(DurableView {
            record: Mutex::new(None),
            outbox,
            stats,
        })
    }

    /// The record, locked. Nothing panics while holding it, so a poisoned lock is taken as
    /// it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<AcceptorRecord>>> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Only ever a record that is durable: after its write returned, or as loaded.
    fn publish(&self, record: Arc<AcceptorRecord>) {
        *self.lock() = Some(record);
    }

    /// The actor stopped, crashed or is reloading: reads go to its mailbox until it publishes
    /// again.
    fn clear(&self) {
        *self.lock() = None;
    }

    /// The answer to `request` if it is a read and a record is published.
    pub fn answer(&self, request: &PeerMessage) -> Option<PeerMessage> {
        answer_read(self.lock().as_ref()?, request)
    }

    /// Sends `reply` (from [`DurableView::answer`]) to the proposer of `request`, as the actor
    /// would have. Called with no lock held: a reply to this node's own proposer is routed
    /// at once (`actors::outbox`).
    pub fn reply(&self, request: Envelope, reply: PeerMessage) {
        Stats::add(&self.stats.answers_without_write, 1);
        Stats::add(&self.stats.reads_from_durable, 1);
        self.outbox.answer(request, reply);
    }
}

pub struct AcceptorActor {
    key: Key,
    incarnation: u64,
    /// `None` until the record is loaded.
    core: Option<Acceptor>,
    storage: Addr<StorageActor>,
    outbox: Outbox,
    supervisor: Recipient<ActorStopped>,
    stats: Arc<Stats>,
    members: MembershipService,
    /// What the reads answered without the mailbox see.
    view: Arc<DurableView>,
    crashed: bool,
}

impl AcceptorActor {
    /// Sends its replies with `view`'s outbox and counts in `view`'s stats.
    pub fn new(
        key: Key,
        incarnation: u64,
        storage: Addr<StorageActor>,
        supervisor: Recipient<ActorStopped>,
        members: MembershipService,
        view: Arc<DurableView>,
    ) -> AcceptorActor {
        AcceptorActor {
            key,
            incarnation,
            core: None,
            storage,
            outbox: view.outbox.clone(),
            supervisor,
            stats: view.stats.clone(),
            members,
            view,
            crashed: false,
        }
    }

    /// The membership check of every request, at the moment it is handled (see
    /// `actors::membership`: the view's epoch is raised before an install is queued to
    /// storage, so a request handled after that sees the new epoch); the decision is
    /// `paxos::admission::admit`. `Some(reply)`: answer that instead of stepping the core;
    /// `Some(None)`: drop the request.
    fn check_epoch(&self, msg: &FromProposer) -> Option<Option<PeerMessage>> {
        let view = &self.members.view;
        let fast_allowed = || view.get().is_some_and(|m| m.fast_allowed());
        match admission::admit(view.epoch(), msg.epoch, &msg.msg, fast_allowed) {
            Admission::Step => None,
            Admission::Answer(reply) => {
                if matches!(reply, PeerMessage::Stale { .. }) {
                    Stats::add(&self.stats.stale_refused, 1);
                }
                Some(Some(reply))
            }
            Admission::FetchNewer => {
                // Learn the newer membership first; the proposer retries.
                self.members.fetch_from(msg.from, msg.epoch);
                Some(None)
            }
        }
    }

    /// Hands `record` to the storage actor; the receiver is answered once it is durable.
    /// Sent without waiting for mailbox room: this acceptor holds its mailbox until the answer
    /// comes, so it has at most one write in flight.
    fn persist(&self, record: Arc<AcceptorRecord>) -> oneshot::Receiver<Result<()>> {
        let (done, durable) = oneshot::channel();
        self.storage.do_send(Persist {
            key: self.key.clone(),
            record,
            done,
        });
        durable
    }

    fn crash(&mut self, ctx: &mut Context<Self>, why: &str) {
        log::error!(
            "acceptor of key {:?} crashed: {why}",
            String::from_utf8_lossy(&self.key)
        );
        self.crashed = true;
        self.core = None;
        self.view.clear();
        ctx.stop();
    }
}

impl Actor for AcceptorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(ACCEPTOR_MAILBOX_CAPACITY);
        Stats::add(&self.stats.live_acceptors, 1);
        if !self.stats.acceptor_started(&self.key) {
            log::error!(
                "a second live acceptor of key {:?}: the supervisor started it before the \
                 first one stopped",
                String::from_utf8_lossy(&self.key)
            );
        }
        let load = self.storage.send(Load {
            key: self.key.clone(),
        });
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| {
            let record = match loaded {
                Ok(Ok(record)) => record.unwrap_or_default(),
                Ok(Err(e)) => return act.crash(ctx, &format!("loading its record: {e}")),
                Err(e) => return act.crash(ctx, &format!("storage unreachable: {e}")),
            };
            match guarded(|| Acceptor::new(record)) {
                Ok(core) => {
                    act.view.publish(core.shared());
                    act.core = Some(core);
                }
                Err(panic) => act.crash(ctx, &panic),
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.view.clear();
        Stats::sub(&self.stats.live_acceptors, 1);
        self.stats.acceptor_stopped(&self.key);
        let _ = self.supervisor.try_send(ActorStopped {
            key: self.key.clone(),
            role: Role::Acceptor,
            incarnation: self.incarnation,
            crashed: self.crashed,
        });
    }
}

impl Handler<FromProposer> for AcceptorActor {
    type Result = ();

    fn handle(&mut self, msg: FromProposer, ctx: &mut Context<Self>) {
        if self.core.is_none() {
            return; // crashed while loading; stopping
        }
        let (to, proposer, epoch) = (msg.from, msg.proposer, msg.epoch);
        match self.check_epoch(&msg) {
            Some(Some(reply)) => return self.outbox.send(to, &self.key, proposer, epoch, reply),
            Some(None) => return,
            None => {}
        }
        let core = self.core.as_mut().expect("checked above");
        let ballot = msg.msg.requested_ballot();
        let step = match guarded(|| core.step(msg.msg)) {
            Ok(step) => step,
            Err(panic) => return self.crash(ctx, &panic),
        };
        let Some(record) = step.persist else {
            Stats::add(&self.stats.answers_without_write, 1);
            self.outbox.send(to, &self.key, proposer, epoch, step.reply);
            return;
        };
        let durable = self.persist(record.clone());
        ctx.wait(fut::wrap_future(durable).map(
            move |written, act: &mut Self, ctx| match written {
                Ok(Ok(())) => {
                    act.view.publish(record);
                    act.outbox.send(to, &act.key, proposer, epoch, step.reply)
                }
                Ok(Err(e)) => {
                    // Tell the proposer at once (it would otherwise wait out its phase, and
                    // its caller would never learn why), then reload from disk.
                    if let Some(ballot) = ballot {
                        let reason = format!("node {}: {e}", act.outbox.me())
                            .chars()
                            .take(MAX_FAILURE_REASON_CHARS)
                            .collect();
                        let failed = PeerMessage::Failed { ballot, reason };
                        act.outbox.send(to, &act.key, proposer, epoch, failed);
                    }
                    act.crash(ctx, &format!("persisting: {e}"))
                }
                Err(_) => act.crash(ctx, "storage stopped"),
            },
        ));
    }
}

impl Handler<Retire> for AcceptorActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(feature = "testing")]
impl Handler<Crash> for AcceptorActor {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        if let Err(panic) = guarded::<()>(|| panic!("crash requested")) {
            self.crash(ctx, &panic);
        }
    }
}

impl Handler<AdoptRecord> for AcceptorActor {
    type Result = ResponseActFuture<Self, Result<bool>>;

    fn handle(&mut self, msg: AdoptRecord, ctx: &mut Context<Self>) -> Self::Result {
        let Some(core) = self.core.as_mut() else {
            return Box::pin(fut::ready(Err(Error::Unavailable(
                "acceptor stopping".into(),
            ))));
        };
        let merged = match guarded(|| core.adopt(&msg.record)) {
            Ok(merged) => merged,
            Err(panic) => {
                self.crash(ctx, &panic);
                return Box::pin(fut::ready(Err(Error::Storage(panic))));
            }
        };
        let Some(record) = merged else {
            return Box::pin(fut::ready(Ok(false)));
        };
        let durable = self.persist(record.clone());
        // Hold the mailbox until the merge is durable, like any other write of this acceptor.
        let (tx, rx) = oneshot::channel();
        ctx.wait(
            fut::wrap_future(durable).map(move |written, act: &mut Self, ctx| {
                let result = match written {
                    Ok(Ok(())) => {
                        act.view.publish(record);
                        Ok(true)
                    }
                    Ok(Err(e)) => {
                        act.crash(ctx, &format!("persisting an adopted record: {e}"));
                        Err(e)
                    }
                    Err(_) => {
                        act.crash(ctx, "storage stopped");
                        Err(Error::Storage("storage stopped".into()))
                    }
                };
                let _ = tx.send(result);
            }),
        );
        Box::pin(fut::wrap_future(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::Unavailable("acceptor stopped".into())))
        }))
    }
}

#[cfg(feature = "testing")]
impl Handler<Inspect> for AcceptorActor {
    type Result = Option<AcceptorRecord>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        self.core.as_ref().map(|core| core.record().clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::mpsc;

    use super::*;
    use crate::actors::membership::InstalledMembership;
    use crate::actors::messages::{Deliver, Inbound};
    use crate::actors::Readiness;
    use crate::config::Config;
    use crate::paxos::types::{Ballot, Register};
    use crate::storage::Store;

    /// Takes the notices of stopped actors (the supervisor's part), and drops them.
    struct NoSupervisor;

    impl Actor for NoSupervisor {
        type Context = Context<Self>;
    }

    impl Handler<ActorStopped> for NoSupervisor {
        type Result = ();

        fn handle(&mut self, _: ActorStopped, _: &mut Context<Self>) {}
    }

    /// One acceptor of key `k` on node 1, over a store whose every commit takes `delay`; its
    /// replies (sent to node 1's own proposer) arrive on the receiver.
    fn acceptor_with_slow_disk(
        delay: Duration,
    ) -> (
        tempfile::TempDir,
        Addr<AcceptorActor>,
        Arc<DurableView>,
        mpsc::UnboundedReceiver<Envelope>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let stats = Arc::new(Stats::default());
        // On a thread of its own, as in a node: its commits block that thread only.
        let storage = StorageActor::new(store, 64, stats.clone()).with_commit_delay(delay);
        let storage = StorageActor::start_in_arbiter(&Arbiter::new().handle(), |_| storage);
        let config = Arc::new(Config::local(&["127.0.0.1:1".parse().unwrap()]));
        let (replies, received) = mpsc::unbounded_channel();
        let inbound: Inbound = Arc::new(move |Deliver(envelope, _)| replies.send(envelope).is_ok());
        let (outbox, _queues) =
            Outbox::new(1, &config, inbound, stats.clone(), Arc::new(|_, _| {}));
        let members = MembershipService::new(
            Arc::new(InstalledMembership::new(1, 1, None)),
            storage.clone(),
            outbox.clone(),
            Arc::new(Readiness::default()),
            stats.clone(),
            config,
            None,
        );
        let view = DurableView::new(outbox.clone(), stats.clone());
        let acceptor = AcceptorActor::new(
            b"k".to_vec(),
            1,
            storage,
            NoSupervisor.start().recipient(),
            members,
            view.clone(),
        )
        .start();
        (dir, acceptor, view, received)
    }

    fn accept(ballot: Ballot, value: &str) -> FromProposer {
        FromProposer {
            from: 1,
            epoch: 0,
            proposer: 7,
            msg: PeerMessage::Accept {
                ballot,
                state: Register {
                    version: 1,
                    value: Some(value.as_bytes().to_vec()),
                    ..Register::default()
                },
                next: None,
            },
            inbox: None,
        }
    }

    fn published(view: &DurableView) -> Option<AcceptorRecord> {
        view.lock().as_deref().cloned()
    }

    /// The view answers reads only with what is durable: an Accept the acceptor has stepped
    /// but whose commit has not returned (every commit here takes 300 ms) is not seen by a
    /// read from the view until its reply is sent, and is seen from then on, as the actor
    /// itself would answer.
    #[actix_rt::test]
    async fn a_read_from_the_view_sees_a_write_only_once_it_is_durable() {
        let (_dir, acceptor, view, mut replies) =
            acceptor_with_slow_disk(Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(10);
        while published(&view).is_none() {
            assert!(Instant::now() < deadline, "the acceptor never loaded");
            tokio::time::sleep(Duration::from_millis(1)).await; // polls the load
        }
        assert_eq!(published(&view), Some(AcceptorRecord::default()));

        let ballot = Ballot::new(3, 1);
        acceptor.do_send(accept(ballot, "v"));
        let read = PeerMessage::Read { read: 1 };
        let mut polled = 0;
        let reply = loop {
            if let Ok(reply) = replies.try_recv() {
                break reply;
            }
            polled += 1;
            match view.answer(&read) {
                Some(PeerMessage::ReadReply { accepted, .. }) => assert_eq!(
                    accepted,
                    Ballot::ZERO,
                    "a read saw the accept before it was durable (poll {polled})"
                ),
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < deadline, "no reply to the Accept");
            tokio::time::sleep(Duration::from_millis(1)).await; // polls the reply
        };
        assert!(
            matches!(reply.body, PeerMessage::Accepted { ballot: b, .. } if b == ballot),
            "{reply:?}"
        );
        // The commit took 300 ms: the view was read many times while it ran.
        assert!(polled > 20, "only {polled} reads during the commit");
        let record = published(&view).expect("published");
        assert_eq!(record.accepted, ballot);
        assert_eq!(
            view.answer(&read),
            answer_read(&record, &read),
            "the view answers as the acceptor does"
        );
        match view.answer(&read) {
            Some(PeerMessage::ReadReply { seen, .. }) => {
                assert_eq!(seen, record.state.seen())
            }
            other => panic!("{other:?}"),
        }
        // Not a read: never answered from the view.
        assert_eq!(view.answer(&accept(Ballot::new(4, 1), "w").msg), None);
    }
}
