//! The table of a node's live per-key actors, and the delivery of peers' Paxos messages to
//! them without a stop in the supervisor's mailbox.
//!
//! The supervisor owns the table: only it starts, restarts and retires actors. The table
//! lives behind one lock that both the supervisor and the delivery path take, so that a
//! message for a key whose actor is live goes from the connection's task (or this node's
//! outbox) straight to that actor's mailbox. Only a request for a key with no live acceptor
//! goes on to the supervisor, which starts one. Before this, every message took the
//! supervisor's mailbox first: one more queued envelope, task wakeup and two key lookups per
//! message, a tenth of the read path's CPU (BENCHMARKS.md).
//!
//! **Why the retirement handshake still holds** (at most one live acceptor per key, see
//! `actors::supervisor`). Every change of the table, with the `Retire` that goes with it, and
//! every send to an actor found in the table, happen under the table's lock. So each send
//! is either before a key's retirement (its message is in the actor's mailbox ahead of
//! `Retire`, and is handled before the actor stops, as a message the supervisor itself had
//! passed on before retiring it: an actix actor takes nothing from its mailbox once it is
//! stopping) or after it (the key is no longer in `keys`: a reply is dropped, its proposer
//! has nobody waiting; a request goes to the supervisor, which drops it while the key is
//! `retiring`, or starts a new incarnation once the old ones told it they stopped). A send
//! never starts an actor, and never finds a retiring one. A crashed actor's slot is replaced
//! only by the supervisor, once the actor's address is no longer connected (its task has
//! ended). Nothing depends on timing: the lock orders the two. And since the node's actors,
//! its connections' tasks and its router share one thread, a direct delivery does what the
//! supervisor would have done had it handled the message at that moment: a schedule the
//! old design allowed too.
//!
//! **What changes for Paxos: order.** A message that needs the supervisor (a request that
//! starts the key's acceptor) can be overtaken by a later one that finds the acceptor live.
//! The protocol assumes nothing of order (messages may be reordered, duplicated or lost,
//! and the simulation does all three); before, the supervisor's mailbox kept a connection's
//! order, which nothing relied on. The admission checks (cluster, voting, the store
//! recorded) are the supervisor's, made on the message's way in, and made again by the
//! supervisor for a message passed on to it.
//!
//! **If the supervisor stops** (a panic in its handler), live keys go on serving through the
//! table while no key can start, retire or restart; before, all of the node's Paxos
//! traffic stopped with it. Either way the node is degraded until restarted, and neither
//! way is unsafe: only the supervisor changes the table.
//!
//! Commands take [`Routes::submit`] through `supervisor::Keys`: clients' (the router's) and
//! the node's own (the membership register, the leases, a list's read rounds). Only the
//! settles of anti-entropy and membership changes (`SettleKey`) still go through the
//! supervisor: rare, and off the hot path.
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use crate::actors::acceptor::{AcceptorActor, DurableView};
use crate::actors::membership::InstalledMembership;
use crate::actors::messages::{Deliver, FromAcceptor, FromProposer, Submit};
use crate::actors::proposer::ProposerActor;
use crate::actors::{Readiness, Stats};
use crate::error::Error;
use crate::messages::{Envelope, PeerMessage};
use crate::paxos::admission;
use crate::paxos::types::Key;

/// The live actors of one key, with their incarnations.
pub struct KeyActors {
    pub proposer: Option<(Addr<ProposerActor>, u64)>,
    pub acceptor: Option<LiveAcceptor>,
    pub last_used: Instant,
}

/// A key's live acceptor actor.
pub struct LiveAcceptor {
    pub addr: Addr<AcceptorActor>,
    pub incarnation: u64,
    /// The record it last made durable, which reads are answered from (empty while it loads,
    /// and once it stopped).
    pub view: Arc<DurableView>,
}

impl KeyActors {
    pub fn new(now: Instant) -> KeyActors {
        KeyActors {
            proposer: None,
            acceptor: None,
            last_used: now,
        }
    }
}

/// The node's keys with actors. Changed only by the supervisor.
#[derive(Default)]
pub struct KeyTable {
    /// Keys are hashed with FxHash: every Paxos message looks its key up.
    pub keys: FxHashMap<Key, KeyActors>,
    /// Keys retired whose actors have not all stopped yet: no new actor starts for them.
    pub retiring: FxHashMap<Key, KeyActors>,
}

/// The table, shared by the supervisor and the delivery path. Cheap to share (`Arc`).
pub struct Routes {
    table: Mutex<KeyTable>,
    view: Arc<InstalledMembership>,
    readiness: Arc<Readiness>,
    stats: Arc<Stats>,
}

impl Routes {
    pub fn new(
        view: Arc<InstalledMembership>,
        readiness: Arc<Readiness>,
        stats: Arc<Stats>,
    ) -> Routes {
        Routes {
            table: Mutex::new(KeyTable::default()),
            view,
            readiness,
            stats,
        }
    }

    /// The table, locked. Held only for lookups, sends and the supervisor's changes, never
    /// across an await. A poisoned lock is taken as it is: only the supervisor changes the
    /// table, and a panic in its handler ends the supervisor, so nothing goes on to act on a
    /// change it left half done.
    pub fn lock(&self) -> MutexGuard<'_, KeyTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers a Paxos message that arrived for this node to its key's live actor, or drops
    /// it (counted): refused by admission, a reply with no live proposer, a full mailbox.
    /// Returns it when it is a request whose key has no live acceptor: only the supervisor
    /// may start one.
    ///
    /// A read for a live acceptor that has published its durable record is answered from
    /// that record, without its mailbox (`actors::acceptor`, where that is argued).
    pub fn deliver(&self, msg: Deliver) -> Option<Deliver> {
        if !self.admits(&msg.0) {
            return None;
        }
        let mut table = self.lock();
        let Some((view, reply)) = self.answer_from_durable(&mut table, &msg.0) else {
            return self.route(&mut table, msg);
        };
        // Unlocked first: a reply to this node's own proposer is routed through the table.
        drop(table);
        let Deliver(request, _inbox) = msg;
        view.reply(request, reply);
        None
    }

    /// The answer to `envelope` from its key's durable view: only a read, for a live
    /// acceptor that published its record, that admission would step at this epoch (the rest
    /// go to the actor, which refuses or answers them as before).
    fn answer_from_durable(
        &self,
        table: &mut KeyTable,
        envelope: &Envelope,
    ) -> Option<(Arc<DurableView>, PeerMessage)> {
        if !envelope.body.is_read() {
            return None;
        }
        let entry = table.keys.get_mut(&envelope.key)?;
        let view = &entry.acceptor.as_ref().filter(|a| a.addr.connected())?.view;
        // The record first, then the epoch: on this node's one thread nothing happens between
        // the two; were they ever on two threads, epochs only rise, so a record taken first
        // is never one written after the epoch that admits the read.
        let reply = view.answer(&envelope.body)?;
        let fast_allowed = || self.view.get().is_some_and(|m| m.fast_allowed());
        let admitted = admission::admit(
            self.view.epoch(),
            envelope.epoch,
            &envelope.body,
            fast_allowed,
        );
        if !matches!(admitted, admission::Admission::Step) {
            return None;
        }
        entry.last_used = Instant::now();
        Some((view.clone(), reply))
    }

    /// [`Routes::deliver`], with the table already locked (the supervisor's way).
    pub fn deliver_locked(&self, table: &mut KeyTable, msg: Deliver) -> Option<Deliver> {
        if !self.admits(&msg.0) {
            return None;
        }
        self.route(table, msg)
    }

    /// The routing of an admitted message (see [`Routes::deliver`]).
    pub fn route(
        &self,
        table: &mut KeyTable,
        Deliver(envelope, inbox): Deliver,
    ) -> Option<Deliver> {
        let Some(entry) = table.keys.get_mut(&envelope.key) else {
            // Replies go to a live proposer only: one that stopped has nobody waiting.
            return envelope
                .body
                .is_request()
                .then_some(Deliver(envelope, inbox));
        };
        let sent = if envelope.body.is_request() {
            let Some(LiveAcceptor { addr: acceptor, .. }) =
                entry.acceptor.as_ref().filter(|a| a.addr.connected())
            else {
                return Some(Deliver(envelope, inbox));
            };
            entry.last_used = Instant::now();
            let Envelope {
                from,
                proposer,
                epoch,
                body,
                ..
            } = envelope;
            let msg = FromProposer {
                from,
                epoch,
                proposer,
                msg: body,
                inbox,
            };
            acceptor.try_send(msg).is_ok()
        } else {
            let Some((proposer, _)) = &entry.proposer else {
                return None;
            };
            entry.last_used = Instant::now();
            let Envelope {
                from,
                proposer: instance,
                epoch,
                body,
                ..
            } = envelope;
            let msg = FromAcceptor {
                from,
                epoch,
                proposer: instance,
                msg: body,
                inbox,
            };
            proposer.try_send(msg).is_ok()
        };
        if !sent {
            Stats::add(&self.stats.peer_frames_dropped, 1);
        }
        None
    }

    /// Hands a command to its key's live proposer (or answers why it cannot run,
    /// [`hand_to_proposer`]). Returns it when the key has no live proposer: only the
    /// supervisor may start one. The lock orders it with retirement as for [`Routes::deliver`]:
    /// a command queued before `Retire` is answered by the proposer as it stops (unknown
    /// outcome for a write in flight, as for any stop).
    pub fn submit(&self, key: &[u8], submit: Submit) -> Option<Submit> {
        let mut table = self.lock();
        let Some(entry) = table.keys.get_mut(key) else {
            return Some(submit);
        };
        let Some((proposer, _)) = entry.proposer.as_ref().filter(|(p, _)| p.connected()) else {
            return Some(submit);
        };
        entry.last_used = Instant::now();
        hand_to_proposer(proposer, submit);
        None
    }

    /// Whether this node takes `envelope` at all: from this cluster, and a request only while
    /// this node votes (a voter with its own store, its generation confirmed) and, until its
    /// store is recorded, only on the membership key.
    fn admits(&self, envelope: &Envelope) -> bool {
        if !admission::same_cluster(self.view.cluster(), envelope.cluster) {
            // Another cluster's node, at an address of this one's (a config of the same
            // nodes under another token, a reused address): neither its requests nor its
            // replies count here.
            Stats::add(&self.stats.foreign_frames, 1);
            return false;
        }
        if envelope.body.is_request()
            && !(self.readiness.is_voting() && self.view.admits_key(&envelope.key))
        {
            Stats::add(&self.stats.dropped_not_voting, 1);
            return false;
        }
        true
    }
}

/// Queues `submit` for `proposer`, or answers why it cannot run (nothing ran, so it is safe
/// to refuse): a full mailbox is the key's queue limit.
pub fn hand_to_proposer(proposer: &Addr<ProposerActor>, submit: Submit) {
    match proposer.try_send(submit) {
        Ok(()) => {}
        Err(SendError::Full(submit)) => {
            let _ = submit.reply.send(Err(Error::Busy(
                "too many requests queued for this key".into(),
            )));
        }
        Err(SendError::Closed(submit)) => {
            let _ = submit.reply.send(Err(Error::Unavailable(
                "the key's proposer is stopping".into(),
            )));
        }
    }
}
