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
//! [`paxos::acceptor::Acceptor`]: crate::paxos::acceptor::Acceptor

use std::sync::Arc;

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
use crate::messages::PeerMessage;
use crate::paxos::acceptor::Acceptor;
use crate::paxos::admission::{self, Admission};
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::Key;

/// Requests that may wait for one key's acceptor; more are dropped (Paxos treats it as loss).
const ACCEPTOR_MAILBOX_CAPACITY: usize = 1_024;
/// The longest storage error passed on to a proposer.
const MAX_FAILURE_REASON_CHARS: usize = 256;

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
    crashed: bool,
}

impl AcceptorActor {
    pub fn new(
        key: Key,
        incarnation: u64,
        storage: Addr<StorageActor>,
        outbox: Outbox,
        supervisor: Recipient<ActorStopped>,
        stats: Arc<Stats>,
        members: MembershipService,
    ) -> AcceptorActor {
        AcceptorActor {
            key,
            incarnation,
            core: None,
            storage,
            outbox,
            supervisor,
            stats,
            members,
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
    fn persist(&self, record: AcceptorRecord) -> oneshot::Receiver<Result<()>> {
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
                Ok(core) => act.core = Some(core),
                Err(panic) => act.crash(ctx, &panic),
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
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
        let durable = self.persist(record);
        ctx.wait(fut::wrap_future(durable).map(
            move |written, act: &mut Self, ctx| match written {
                Ok(Ok(())) => act.outbox.send(to, &act.key, proposer, epoch, step.reply),
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
        let durable = self.persist(record);
        // Hold the mailbox until the merge is durable, like any other write of this acceptor.
        let (tx, rx) = oneshot::channel();
        ctx.wait(
            fut::wrap_future(durable).map(move |written, act: &mut Self, ctx| {
                let result = match written {
                    Ok(Ok(())) => Ok(true),
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
