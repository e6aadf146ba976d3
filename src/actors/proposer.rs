//! The proposer actor of one key: a thin shell around [`paxos::proposer::Proposer`]. It feeds
//! the core client commands, acceptor replies and clock ticks, and carries out the effects:
//! messages to the [`Outbox`], answers to the waiting callers.
//!
//! It arms a timer only for the core's next wakeup (the end of a backoff, a phase timeout, a
//! deadline), so thousands of idle keys cost no timers and a 1 ms backoff lasts 1 ms. A panic in
//! the core is caught at the handler boundary, logged, and turned into a stop that the
//! supervisor sees as a crash; the callers still waiting are answered "outcome unknown" (their
//! commands may have been accepted).
//!
//! [`paxos::proposer::Proposer`]: crate::paxos::proposer::Proposer

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::membership::MembershipService;
#[cfg(feature = "testing")]
use crate::actors::messages::Crash;
use crate::actors::messages::{ActorStopped, FromAcceptor, ReplyTo, Retire, Role, Submit};
use crate::actors::outbox::Outbox;
use crate::actors::{guarded, Stats};
use crate::error::Result;
use crate::paxos::proposer::{Effect, Proposer, Token};
use crate::paxos::types::{Key, Outcome};

pub struct ProposerActor {
    key: Key,
    incarnation: u64,
    core: Proposer,
    outbox: Outbox,
    supervisor: Recipient<ActorStopped>,
    stats: Arc<Stats>,
    waiting: HashMap<Token, ReplyTo<Result<Outcome>>>,
    next_token: Token,
    /// The coarsest timer granularity (`paxos.tick_ms`).
    tick: Duration,
    /// The armed timer: when it fires, and its handle.
    timer: Option<(Instant, SpawnHandle)>,
    mailbox_capacity: usize,
    members: MembershipService,
    crashed: bool,
}

impl ProposerActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: Key,
        incarnation: u64,
        core: Proposer,
        outbox: Outbox,
        supervisor: Recipient<ActorStopped>,
        stats: Arc<Stats>,
        tick: Duration,
        mailbox_capacity: usize,
        members: MembershipService,
    ) -> ProposerActor {
        ProposerActor {
            key,
            incarnation,
            core,
            outbox,
            supervisor,
            stats,
            waiting: HashMap::new(),
            next_token: 0,
            tick,
            timer: None,
            mailbox_capacity,
            members,
            crashed: false,
        }
    }

    /// Follows the node's membership: a newer epoch reconfigures the core before it steps.
    fn follow_membership(&mut self) {
        if self.members.view.epoch() == self.core.config().epoch {
            return;
        }
        if let Some(m) = self.members.view.get() {
            let voters = m.voters();
            if !voters.is_empty() {
                let joining = m.joining_voters();
                let member = m.member(self.core.config().node).is_some();
                self.core.reconfigure(
                    Instant::now(),
                    voters,
                    joining,
                    m.epoch,
                    member,
                    m.fast_allowed(),
                );
            }
        }
    }

    /// Runs one step of the core, then its effects; a panic in the core is a crash.
    fn step(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Proposer, &mut Vec<Effect>)) {
        self.follow_membership();
        self.core.set_announcing(self.outbox.announcing());
        let now = Instant::now();
        let core = &mut self.core;
        self.outbox.suspects(|s| core.avoid(s, now));
        let mut out = Vec::new();
        let core = &mut self.core;
        if let Err(panic) = guarded(|| f(core, &mut out)) {
            log::error!(
                "proposer of key {:?} crashed: {panic}",
                String::from_utf8_lossy(&self.key)
            );
            self.crash(ctx);
            return;
        }
        for (kind, n) in self.core.take_rounds() {
            self.stats.metrics.round(kind, n);
        }
        self.carry_out(ctx, out);
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, out: Vec<Effect>) {
        for effect in out {
            match effect {
                Effect::Broadcast(msg) => {
                    let cfg = self.core.config();
                    self.outbox
                        .broadcast(&cfg.nodes, &self.key, self.core.id(), cfg.epoch, msg)
                }
                Effect::Multicast(to, msg) => {
                    let cfg = self.core.config();
                    self.outbox
                        .broadcast(&to, &self.key, self.core.id(), cfg.epoch, msg)
                }
                Effect::Suspect(node) => {
                    self.outbox.silent(node, self.core.config().suspect_after())
                }
                Effect::Failing(node) => self.outbox.failing(node),
                Effect::Send(to, msg) => {
                    let epoch = self.core.config().epoch;
                    self.outbox.send(to, &self.key, self.core.id(), epoch, msg)
                }
                Effect::Reply(token, result) => {
                    if let Some(waiter) = self.waiting.remove(&token) {
                        let _ = waiter.send(result);
                    }
                }
                Effect::Chosen(changes) => {
                    let epoch = self.core.config().epoch;
                    self.outbox
                        .announce(&self.key, self.core.id(), epoch, changes)
                }
            }
        }
        self.schedule_tick(ctx);
    }

    /// Arms one timer for the core's next wakeup (re-arming it if that moved earlier). The
    /// tick setting is the coarsest granularity: timers closer together are merged.
    ///
    /// A core with no next wakeup (its round done, nothing queued) has nothing a tick would
    /// do, so a timer still armed for the round just finished is cancelled: otherwise nearly
    /// every get and put woke its proposer once more, `read_grace` after it started, for
    /// nothing (0.88 timer wakeups per get and 0.96 per put, BENCHMARKS.md). The next
    /// message arms a timer again. (A cancelled timer costs a removal from the runtime's
    /// wheel; a fired one a wakeup of the actor and a whole step.)
    fn schedule_tick(&mut self, ctx: &mut Context<Self>) {
        let Some(wake) = self.core.next_wakeup() else {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if let Some((at, handle)) = self.timer {
            if at <= wake + self.tick {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = wake.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.on_tick(ctx);
        });
        self.timer = Some((wake, handle));
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        Stats::add(&self.stats.proposer_timer_wakeups, 1);
        self.step(ctx, |core, out| core.tick(Instant::now(), out));
    }

    fn crash(&mut self, ctx: &mut Context<Self>) {
        self.crashed = true;
        ctx.stop();
    }
}

impl Actor for ProposerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        Stats::add(&self.stats.live_proposers, 1);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        Stats::sub(&self.stats.live_proposers, 1);
        // Dropping the waiters answers their callers "outcome unknown".
        self.waiting.clear();
        let _ = self.supervisor.try_send(ActorStopped {
            key: self.key.clone(),
            role: Role::Proposer,
            incarnation: self.incarnation,
            crashed: self.crashed,
        });
    }
}

impl Handler<Submit> for ProposerActor {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        self.next_token += 1;
        let token = self.next_token;
        self.waiting.insert(token, msg.reply);
        self.step(ctx, |core, out| match msg.command {
            Some(command) => core.submit(
                Instant::now(),
                token,
                command,
                msg.write_id,
                msg.maybe_applied,
                msg.deadline,
                out,
            ),
            None => core.settle(Instant::now(), token, msg.deadline, out),
        });
    }
}

impl Handler<FromAcceptor> for ProposerActor {
    type Result = ();

    fn handle(&mut self, msg: FromAcceptor, ctx: &mut Context<Self>) {
        if let crate::messages::PeerMessage::Stale { epoch } = msg.msg {
            self.members.fetch_from(msg.from, epoch);
            return;
        }
        self.follow_membership();
        if msg.epoch != self.core.config().epoch {
            return; // an answer of another epoch counts for nothing
        }
        self.outbox.heard(msg.from);
        self.step(ctx, |core, out| {
            core.on_message(Instant::now(), msg.from, msg.proposer, msg.msg, out)
        });
    }
}

impl Handler<Retire> for ProposerActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(feature = "testing")]
impl Handler<Crash> for ProposerActor {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.step(ctx, |_, _| panic!("crash requested"));
    }
}
