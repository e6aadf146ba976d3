//! The node supervisor: owns the per-key actors of one node.
//!
//! - Spawns a key's acceptor on the first Paxos request for that key, and its proposer on the
//!   first client command. Once they are live, the key's messages and commands go to them
//!   without passing here (`actors::routes`, whose table this supervisor alone changes).
//! - Restarts a crashed actor: the new incarnation loads the key's record from LMDB before it
//!   handles anything. At once the first time; while the same key's actor keeps crashing (a
//!   record that fails its checks crashes every incarnation as it loads), after a delay that
//!   doubles, and past [`RESTART_EAGER`] crashes not until a message for the key comes, as
//!   for any key without a live actor ([`Restarts`]). Restarted at once, such an actor looped
//!   as fast as the storage actor answered its loads (review, 2026-12-08); restarted by a
//!   timer for ever, it kept its key live, never retired as idle.
//! - Retires the actors of a key idle for `limits.idle_timeout_ms`, and keeps at most
//!   `limits.max_live_keys` keys alive: past that it retires the longest-idle keys first, and
//!   if every key is busy it refuses new ones (clients get "busy", peer messages are dropped,
//!   which Paxos treats as loss). Memory stays bounded however many keys exist.
//!
//! **Retirement is a handshake.** A retired key's actors move to `retiring` and stay there
//! until each has told the supervisor it stopped; only then may a new incarnation start for
//! the key. Until then its messages are dropped (peers' requests and replies: loss, which
//! Paxos tolerates) or refused (clients: "busy", nothing ran). Starting a new acceptor at
//! once instead (as the first version did) lets the old one, still working through its
//! mailbox, promise or accept after the new one loaded the record from disk: two live copies
//! of one acceptor, the new one answering from a record that misses the old one's last
//! promise. An actor that stops has answered its last message (an acceptor holds its mailbox
//! while a write is in flight), so a successor that loads after the stop sees everything it
//! made durable. `retiring` is bounded ([`MAX_RETIRING`]); when it is full nothing more is
//! retired and new keys are refused as at the cap.
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use tokio::sync::mpsc;

use crate::actors::acceptor::{AcceptorActor, DurableView};
use crate::actors::membership::{InstalledMembership, MembershipService};
use crate::actors::messages::{
    ActorStopped, Adopt, AdoptRecord, AdoptRecords, Deliver, GetStatus, Inbound, ReplyTo, Retire,
    Role, SettleKey, Submit, SubmitFor,
};
#[cfg(feature = "testing")]
use crate::actors::messages::{CountRelayed, Crash, CrashActor, Inspect, InspectAcceptor};
use crate::actors::outbox::{Outbox, PeerQueue};
use crate::actors::proposer::ProposerActor;
use crate::actors::routes::{hand_to_proposer, KeyActors, KeyTable, LiveAcceptor, Routes};
use crate::actors::storage::{records_stored, StorageActor};
use crate::actors::watch::WatchHub;
use crate::actors::{Readiness, Stats};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::NodeStatus;
use crate::paxos::proposer::{Proposer, ProposerConfig};
#[cfg(feature = "testing")]
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{key_hash, Command, Key, NodeId, Outcome, RequestId};

/// Messages routed to the supervisor that may wait in its mailbox.
const SUPERVISOR_MAILBOX_CAPACITY: usize = 65_536;
/// When the live-key limit is reached, keys idle at least this long may be retired early.
const EVICTION_MIN_IDLE: Duration = Duration::from_millis(500);
/// Keys whose actors are stopping, at most.
pub const MAX_RETIRING: usize = 16_384;

/// The first delay before a crashed actor is restarted again ([`Restarts`]).
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Crashes in a row that the supervisor restarts; after one more, the actor starts again only
/// when a message for its key comes.
const RESTART_EAGER: u32 = 6;
/// A key's actor that has not crashed for this long is restarted at once again.
const RESTART_QUIET: Duration = Duration::from_secs(60);
/// Keys whose recent crashes are remembered, at most (the oldest forgotten first).
const RESTART_KEYS: usize = 1_024;

/// When a crashed actor is started again: at once the first time; while the same key's actor
/// of the same role keeps crashing, after [`RESTART_BACKOFF_MIN`], doubling at each crash;
/// past [`RESTART_EAGER`] crashes, not by the supervisor (`None`); at once again after
/// [`RESTART_QUIET`] without a crash. Bounded ([`RESTART_KEYS`]).
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    recent: std::collections::HashMap<(Key, Role), (u32, Instant)>,
}

impl Restarts {
    /// The key's actor in `role` crashed at `now`: how long to wait before it is restarted
    /// (`None`: it is not, until a message for its key starts it).
    pub(crate) fn delay(&mut self, key: &[u8], role: Role, now: Instant) -> Option<Duration> {
        let (crashes, last) = self.recent.entry((key.to_vec(), role)).or_insert((0, now));
        if now.saturating_duration_since(*last) >= RESTART_QUIET {
            *crashes = 0;
        }
        *crashes = crashes.saturating_add(1);
        *last = now;
        let crashes = *crashes;
        if self.recent.len() > RESTART_KEYS {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.recent.remove(&oldest);
            }
        }
        match crashes {
            1 => Some(Duration::ZERO),
            n if n <= RESTART_EAGER => Some(RESTART_BACKOFF_MIN * (1 << (n - 2))),
            _ => None,
        }
    }
}

/// A started supervisor, with what the rest of the node needs of it.
pub struct Started {
    pub supervisor: Addr<NodeSupervisor>,
    pub outbox: Outbox,
    /// The peer queues, for the network actor's writers.
    pub queues: mpsc::UnboundedReceiver<PeerQueue>,
    pub members: MembershipService,
    /// Where the network hands peers' Paxos messages.
    pub inbound: Inbound,
    /// The key table, through which commands reach live proposers ([`Keys`]).
    pub routes: Arc<Routes>,
}

pub struct NodeSupervisor {
    node: NodeId,
    config: Arc<Config>,
    outbox: Outbox,
    storage: Addr<StorageActor>,
    stats: Arc<Stats>,
    readiness: Arc<Readiness>,
    members: MembershipService,
    /// The key table, which peers' messages are delivered through (`actors::routes`).
    routes: Arc<Routes>,
    /// Peers' messages and clients' commands this supervisor handled (for `CountRelayed`, in
    /// tests).
    relayed: u64,
    incarnations: u64,
    seed: u64,
    /// When crashed actors are restarted.
    restarts: Restarts,
}

impl NodeSupervisor {
    /// Starts the supervisor on the current arbiter; returns it with what the rest of the
    /// node needs of it.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        node: NodeId,
        config: Arc<Config>,
        storage: Addr<StorageActor>,
        stats: Arc<Stats>,
        readiness: Arc<Readiness>,
        view: Arc<InstalledMembership>,
        tls: Option<Arc<crate::tls::Tls>>,
        watch: Arc<WatchHub>,
    ) -> Started {
        let mut out = None;
        let addr = NodeSupervisor::create(|ctx| {
            let routes = Arc::new(Routes::new(view.clone(), readiness.clone(), stats.clone()));
            let inbound = inbound(routes.clone(), ctx.address().recipient());
            let (outbox, queues) = Outbox::new(
                node,
                &config,
                inbound.clone(),
                stats.clone(),
                Arc::new(move |key, changes| watch.publish(key, changes)),
            );
            match view.get() {
                Some(m) => outbox.set_peers(&m),
                None => outbox.set_peer_addrs(
                    &config
                        .nodes
                        .iter()
                        .map(|n| (n.id, n.addr.clone()))
                        .collect::<Vec<_>>(),
                ),
            }
            let members = MembershipService::new(
                view,
                storage.clone(),
                outbox.clone(),
                readiness.clone(),
                stats.clone(),
                config.clone(),
                tls,
            );
            out = Some((
                outbox.clone(),
                queues,
                members.clone(),
                inbound,
                routes.clone(),
            ));
            NodeSupervisor {
                node,
                config,
                outbox,
                storage,
                stats,
                readiness,
                members,
                routes,
                relayed: 0,
                incarnations: 0,
                seed: rand::random(),
                restarts: Restarts::default(),
            }
        });
        let (outbox, queues, members, inbound, routes) = out.expect("created");
        Started {
            supervisor: addr,
            outbox,
            queues,
            members,
            inbound,
            routes,
        }
    }

    /// The key's entry, creating it if the live-key limit allows and the key is not still
    /// retiring.
    fn entry<'t>(&self, table: &'t mut KeyTable, key: &[u8]) -> Option<&'t mut KeyActors> {
        let now = Instant::now();
        if !table.keys.contains_key(key) {
            if table.retiring.contains_key(key) {
                return None;
            }
            let max = self.config.limits.max_live_keys;
            if table.keys.len() >= max {
                retire_idle(table, EVICTION_MIN_IDLE, table.keys.len() / 8 + 1);
            }
            if table.keys.len() >= max {
                return None;
            }
            table.keys.insert(key.to_vec(), KeyActors::new(now));
        }
        let entry = table.keys.get_mut(key).expect("just ensured");
        entry.last_used = now;
        Some(entry)
    }

    /// The key's live acceptor, started if there is none (and the live-key limit allows).
    fn acceptor(
        &mut self,
        table: &mut KeyTable,
        key: &[u8],
        ctx: &mut Context<Self>,
    ) -> Option<Addr<AcceptorActor>> {
        let entry = self.entry(table, key)?;
        if let Some(live) = entry.acceptor.as_ref().filter(|a| a.addr.connected()) {
            return Some(live.addr.clone());
        }
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let view = DurableView::new(self.outbox.clone(), self.stats.clone());
        let actor = AcceptorActor::new(
            key.to_vec(),
            incarnation,
            self.storage.clone(),
            ctx.address().recipient(),
            self.members.clone(),
            view.clone(),
        );
        let addr = actor.start();
        let entry = table.keys.get_mut(key).expect("entry() created it");
        entry.acceptor = Some(LiveAcceptor {
            addr: addr.clone(),
            incarnation,
            view,
        });
        Some(addr)
    }

    /// The key's live proposer, started if there is none (and the live-key limit allows).
    fn proposer(
        &mut self,
        table: &mut KeyTable,
        key: &[u8],
        ctx: &mut Context<Self>,
    ) -> Option<Addr<ProposerActor>> {
        let entry = self.entry(table, key)?;
        if let Some((addr, _)) = entry.proposer.as_ref().filter(|(a, _)| a.connected()) {
            return Some(addr.clone());
        }
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let actor = ProposerActor::new(
            key.to_vec(),
            incarnation,
            self.new_proposer_core(key, incarnation),
            self.outbox.clone(),
            ctx.address().recipient(),
            self.stats.clone(),
            Duration::from_millis(self.config.paxos.tick_ms),
            self.config.limits.max_queued_per_key,
            self.members.clone(),
        );
        let addr = actor.start();
        let entry = table.keys.get_mut(key).expect("entry() created it");
        entry.proposer = Some((addr.clone(), incarnation));
        Some(addr)
    }

    fn new_proposer_core(&self, key: &[u8], incarnation: u64) -> Proposer {
        let p = &self.config.paxos;
        // Before a membership is installed (a joining node) the proposer has the config's
        // nodes at epoch 0, whose frames every peer refuses: it answers every command
        // "unavailable" at once, sending nothing, until then (`paxos::proposer`).
        let (nodes, joining, epoch, member, fast) = match self.members.view.get() {
            Some(m) if !m.voters().is_empty() => (
                m.voters(),
                m.joining_voters(),
                m.epoch,
                m.member(self.node).is_some(),
                m.fast_allowed(),
            ),
            _ => (self.config.node_ids(), vec![], 0, false, false),
        };
        let nodes = if nodes.is_empty() {
            vec![self.node]
        } else {
            nodes
        };
        let cfg = ProposerConfig {
            node: self.node,
            nodes,
            joining,
            epoch,
            member,
            phase_timeout: Duration::from_millis(p.phase_timeout_ms),
            read_grace: Duration::from_millis(p.read_grace_ms),
            backoff_min: Duration::from_millis(p.backoff_min_ms),
            backoff_max: Duration::from_millis(p.backoff_max_ms),
            max_batch: p.max_batch,
            max_queue: self.config.limits.max_queued_per_key,
            fast_path: p.fast_path && fast,
            settle_fast_writes: p.settle_fast_writes,
            thrifty: p.thrifty,
            spread: key_hash(key),
        };
        Proposer::new(
            cfg,
            SmallRng::seed_from_u64(self.seed ^ key_hash(key) ^ incarnation),
        )
    }
}

/// Retires up to `at_most` keys idle for at least `min_idle`, longest-idle first (as many
/// as `retiring` has room for). Each key leaves `keys` and is sent `Retire` under the table's
/// lock (`actors::routes`).
fn retire_idle(table: &mut KeyTable, min_idle: Duration, at_most: usize) {
    forget_stopped(table);
    let at_most = at_most.min(MAX_RETIRING.saturating_sub(table.retiring.len()));
    if at_most == 0 {
        return;
    }
    let now = Instant::now();
    let mut idle: Vec<(Instant, Key)> = table
        .keys
        .iter()
        .filter(|(_, e)| now.duration_since(e.last_used) >= min_idle)
        .map(|(k, e)| (e.last_used, k.clone()))
        .collect();
    idle.sort();
    for (_, key) in idle.into_iter().take(at_most) {
        if let Some(entry) = table.keys.remove(&key) {
            if let Some((p, _)) = &entry.proposer {
                p.do_send(Retire);
            }
            if let Some(a) = &entry.acceptor {
                a.addr.do_send(Retire);
            }
            if entry.proposer.is_some() || entry.acceptor.is_some() {
                table.retiring.insert(key, entry);
            }
        }
    }
}

/// Forgets retiring actors that stopped without their notice arriving (the supervisor's
/// mailbox was full): a stopped actor's address is no longer connected.
fn forget_stopped(table: &mut KeyTable) {
    table.retiring.retain(|_, e| {
        e.proposer = e.proposer.take().filter(|(a, _)| a.connected());
        e.acceptor = e.acceptor.take().filter(|a| a.addr.connected());
        e.proposer.is_some() || e.acceptor.is_some()
    });
}

/// Where peers' Paxos messages (and this node's own) go: straight to the key's live actor
/// through `routes`, else to the supervisor. False when the supervisor's mailbox is full.
fn inbound(routes: Arc<Routes>, supervisor: Recipient<Deliver>) -> Inbound {
    Arc::new(move |msg| match routes.deliver(msg) {
        None => true,
        Some(msg) => supervisor.try_send(msg).is_ok(),
    })
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(SUPERVISOR_MAILBOX_CAPACITY);
        let idle = Duration::from_millis(self.config.limits.idle_timeout_ms);
        ctx.run_interval(idle / 4, move |act, _| {
            retire_idle(&mut act.routes.lock(), idle, usize::MAX)
        });
    }
}

impl Handler<Deliver> for NodeSupervisor {
    type Result = ();

    /// A request for a key with no live acceptor (the rest went straight to the key's actor,
    /// `actors::routes`): starts the acceptor, if the live-key limit allows.
    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.relayed += 1;
        let routes = self.routes.clone();
        let mut table = routes.lock();
        // Checked again: the table or the membership may have changed since.
        let Some(msg) = routes.deliver_locked(&mut table, msg) else {
            return;
        };
        // Once the acceptor is live, the message takes the way every other one takes.
        if self.acceptor(&mut table, &msg.0.key, ctx).is_none()
            || routes.route(&mut table, msg).is_some()
        {
            Stats::add(&self.stats.peer_frames_dropped, 1);
        }
    }
}

impl Handler<SettleKey> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SettleKey, ctx: &mut Context<Self>) {
        let submit = Submit {
            command: None,
            write_id: None,
            maybe_applied: false,
            deadline: Instant::now() + self.config.request_timeout(),
            reply: msg.reply,
        };
        self.submit(&msg.key, submit, ctx);
    }
}

impl NodeSupervisor {
    /// Hands `submit` to the key's proposer, or answers why it cannot run (nothing ran).
    fn submit(&mut self, key: &[u8], submit: Submit, ctx: &mut Context<Self>) {
        let routes = self.routes.clone();
        let mut table = routes.lock();
        let Some(proposer) = self.proposer(&mut table, key, ctx) else {
            let why = if table.retiring.contains_key(key) {
                "the key's actors are being retired".to_string()
            } else {
                format!("{} keys are busy on this node", table.keys.len())
            };
            let _ = submit.reply.send(Err(Error::Busy(why)));
            return;
        };
        hand_to_proposer(&proposer, submit);
    }
}

impl Handler<SubmitFor> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SubmitFor, ctx: &mut Context<Self>) {
        self.relayed += 1;
        self.submit(&msg.key, msg.submit, ctx);
    }
}

impl Handler<Adopt> for NodeSupervisor {
    type Result = ResponseFuture<Result<u64>>;

    /// Records of keys with a live acceptor go to that acceptor (its memory must stay the
    /// truth it answers from); the rest go to storage in one commit. An acceptor started for
    /// one of those keys later loads after that commit: storage handles messages in order,
    /// and the adoption is queued before this handler returns (`do_send`, see
    /// [`AdoptRecords`]).
    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) -> Self::Result {
        let mut to_storage = Vec::new();
        let mut to_actors = Vec::new();
        let table = self.routes.lock();
        for record in msg.records {
            if table.retiring.contains_key(&record.key) {
                // Its acceptor is still stopping and may write its record once more; the
                // next anti-entropy round merges this one.
                continue;
            }
            let live = table
                .keys
                .get(&record.key)
                .and_then(|e| e.acceptor.as_ref())
                .filter(|a| a.addr.connected());
            match live {
                Some(acceptor) => to_actors.push(acceptor.addr.send(AdoptRecord {
                    record: record.record,
                })),
                None => to_storage.push(record),
            }
        }
        drop(table);
        let (done, storage) = tokio::sync::oneshot::channel();
        self.storage.do_send(AdoptRecords {
            records: to_storage,
            done,
        });
        let stats = self.stats.clone();
        Box::pin(async move {
            let mut changed = storage
                .await
                .map_err(|_| Error::Storage("the storage actor stopped".into()))??;
            for adopted in to_actors {
                if let Ok(Ok(true)) = adopted.await {
                    changed += 1;
                }
            }
            Stats::add(&stats.records_adopted, changed);
            Ok(changed)
        })
    }
}

impl Handler<ActorStopped> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ActorStopped, ctx: &mut Context<Self>) {
        let routes = self.routes.clone();
        let mut table = routes.lock();
        if let Some(entry) = table.retiring.get_mut(&msg.key) {
            let slot = match msg.role {
                Role::Proposer => entry.proposer.as_ref().map(|(_, i)| *i),
                Role::Acceptor => entry.acceptor.as_ref().map(|a| a.incarnation),
            };
            if slot == Some(msg.incarnation) {
                match msg.role {
                    Role::Proposer => entry.proposer = None,
                    Role::Acceptor => entry.acceptor = None,
                }
                if entry.proposer.is_none() && entry.acceptor.is_none() {
                    table.retiring.remove(&msg.key);
                }
                return;
            }
        }
        let Some(entry) = table.keys.get_mut(&msg.key) else {
            return;
        };
        let slot_matches = match msg.role {
            Role::Proposer => entry.proposer.as_ref().map(|(_, i)| *i) == Some(msg.incarnation),
            Role::Acceptor => {
                entry.acceptor.as_ref().map(|a| a.incarnation) == Some(msg.incarnation)
            }
        };
        if !slot_matches {
            return;
        }
        match msg.role {
            Role::Proposer => entry.proposer = None,
            Role::Acceptor => entry.acceptor = None,
        }
        if msg.crashed {
            let delay = self.restarts.delay(&msg.key, msg.role, Instant::now());
            let key = String::from_utf8_lossy(&msg.key);
            match delay {
                Some(delay) if delay.is_zero() => {
                    log::warn!(
                        "node {}: restarting the {:?} of key {key:?} from disk",
                        self.node,
                        msg.role
                    );
                    self.restart(&mut table, &msg.key, msg.role, ctx);
                }
                Some(delay) => {
                    log::warn!(
                        "node {}: the {:?} of key {key:?} keeps crashing: restarting it in \
                         {delay:?}",
                        self.node,
                        msg.role
                    );
                    drop(table);
                    ctx.run_later(delay, move |act, ctx| {
                        let routes = act.routes.clone();
                        let mut table = routes.lock();
                        // Not if the key was retired meanwhile: that would start it again.
                        if table.keys.contains_key(&msg.key) {
                            act.restart(&mut table, &msg.key, msg.role, ctx);
                        }
                    });
                }
                None => log::error!(
                    "node {}: the {:?} of key {key:?} crashed over {RESTART_EAGER} times in a \
                     row: not restarted until a message for the key comes",
                    self.node,
                    msg.role
                ),
            }
        }
    }
}

impl NodeSupervisor {
    /// Starts the key's actor in `role` again, after it crashed (unless one is live: a message
    /// for the key started it meanwhile).
    fn restart(&mut self, table: &mut KeyTable, key: &[u8], role: Role, ctx: &mut Context<Self>) {
        let live = table.keys.get(key).is_some_and(|e| match role {
            Role::Proposer => e.proposer.as_ref().is_some_and(|(a, _)| a.connected()),
            Role::Acceptor => e.acceptor.as_ref().is_some_and(|a| a.addr.connected()),
        });
        if live {
            return;
        }
        match role {
            Role::Proposer => {
                Stats::add(&self.stats.proposer_restarts, 1);
                self.proposer(table, key, ctx);
            }
            Role::Acceptor => {
                Stats::add(&self.stats.acceptor_restarts, 1);
                self.acceptor(table, key, ctx);
            }
        }
    }
}

#[cfg(feature = "testing")]
impl Handler<CrashActor> for NodeSupervisor {
    type Result = bool;

    fn handle(&mut self, msg: CrashActor, _: &mut Context<Self>) -> bool {
        let table = self.routes.lock();
        let Some(entry) = table.keys.get(&msg.key) else {
            return false;
        };
        match msg.role {
            Role::Proposer => entry.proposer.as_ref().map(|(a, _)| a.do_send(Crash)),
            Role::Acceptor => entry.acceptor.as_ref().map(|a| a.addr.do_send(Crash)),
        }
        .is_some()
    }
}

#[cfg(feature = "testing")]
impl Handler<CountRelayed> for NodeSupervisor {
    type Result = u64;

    fn handle(&mut self, _: CountRelayed, _: &mut Context<Self>) -> u64 {
        self.relayed
    }
}

#[cfg(feature = "testing")]
impl Handler<InspectAcceptor> for NodeSupervisor {
    type Result = ResponseFuture<Option<AcceptorRecord>>;

    fn handle(&mut self, msg: InspectAcceptor, _: &mut Context<Self>) -> Self::Result {
        let acceptor = self
            .routes
            .lock()
            .keys
            .get(&msg.key)
            .and_then(|e| e.acceptor.as_ref())
            .map(|a| a.addr.clone());
        Box::pin(async move {
            match acceptor {
                Some(a) => a.send(Inspect).await.ok().flatten(),
                None => None,
            }
        })
    }
}

impl Handler<GetStatus> for NodeSupervisor {
    type Result = ResponseFuture<NodeStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let s = &self.stats;
        let voting = self.readiness.is_voting();
        let (requests, request_buckets) = s.metrics.request_latency();
        let mut status = NodeStatus {
            node: self.node,
            live_proposers: Stats::get(&s.live_proposers),
            live_acceptors: Stats::get(&s.live_acceptors),
            acceptor_restarts: Stats::get(&s.acceptor_restarts),
            proposer_restarts: Stats::get(&s.proposer_restarts),
            commits: Stats::get(&s.commits),
            records_written: Stats::get(&s.records_written),
            peer_frames_dropped: Stats::get(&s.peer_frames_dropped),
            bad_frames: Stats::get(&s.bad_frames),
            rss_bytes: resident_memory_bytes(),
            voting,
            retired_repaired: voting,
            records_adopted: Stats::get(&s.records_adopted),
            sync_rounds: Stats::get(&s.sync_rounds),
            dropped_not_voting: Stats::get(&s.dropped_not_voting),
            duplicate_acceptors: Stats::get(&s.duplicate_acceptors),
            keys_settled: Stats::get(&s.keys_settled),
            epoch: self.members.view.epoch(),
            stale_refused: Stats::get(&s.stale_refused),
            store_refused: self.members.store_refused(),
            foreign_frames: Stats::get(&s.foreign_frames),
            cluster: self.members.view.cluster(),
            requests,
            request_buckets,
            cpu_us: process_cpu_us(),
            proposer_timer_wakeups: Stats::get(&s.proposer_timer_wakeups),
            records_stored: None,
        };
        // The count is the storage actor's (it owns the store); the counters above are
        // taken now, the count when the storage actor gets to it.
        let storage = self.storage.clone();
        Box::pin(async move {
            status.records_stored = records_stored(&storage, "status").await;
            status
        })
    }
}

/// The CPU time this process used since it started, user and system, microseconds
/// (`getrusage`; 0 where it fails).
pub fn process_cpu_us() -> u64 {
    // SAFETY: `getrusage` writes the struct it is given and nothing else; a zeroed `rusage`
    // is a valid value of it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// This process's resident memory, from /proc (0 where there is none).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The way to the keys' proposers on this node, for what the node runs itself (the membership
/// register, the leases, a list's read rounds) and for the router: straight to a key's live
/// proposer (`actors::routes`), else through the supervisor, which starts one. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    supervisor: Addr<NodeSupervisor>,
    routes: Arc<Routes>,
    request_timeout: Duration,
}

impl Keys {
    pub fn new(supervisor: Addr<NodeSupervisor>, routes: Arc<Routes>, config: &Config) -> Keys {
        Keys {
            supervisor,
            routes,
            request_timeout: config.request_timeout(),
        }
    }

    pub fn supervisor(&self) -> &Addr<NodeSupervisor> {
        &self.supervisor
    }

    /// Hands `command` on `key` to the key's proposer; its outcome comes to `reply`. A key
    /// with a live proposer takes it here and now (`None`); otherwise the returned future
    /// asks the supervisor to start one. An error from that future means it never reached a
    /// proposer: nothing ran.
    ///
    /// Not an `async fn`: its future would hold the request and actix's request future (a
    /// timer and the message's slot) across the supervisor's answer, and every request to a
    /// live key, which never asks the supervisor, would carry and copy that state in its
    /// task (BENCHMARKS.md, issue 23: a task's size is copied per request).
    pub fn submit(
        &self,
        key: Key,
        command: Command,
        write_id: Option<RequestId>,
        maybe_applied: bool,
        reply: ReplyTo<Result<Outcome>>,
    ) -> Option<LocalBoxFuture<'static, Result<()>>> {
        let submit = Submit {
            command: Some(command),
            write_id,
            maybe_applied,
            deadline: Instant::now() + self.request_timeout,
            reply,
        };
        let submit = self.routes.submit(&key, submit)?;
        let supervisor = self.supervisor.clone();
        Some(Box::pin(async move {
            supervisor
                .send(SubmitFor { key, submit })
                .await
                .map_err(|e| Error::Unavailable(format!("node supervisor: {e}")))
        }))
    }
}

/// Runs `command` on `key` through the key's proposer on this node, as the node's own request:
/// the membership register, the leases, a list's read rounds. `write_id` for a write (the
/// caller's mint), none for a read.
pub async fn run_command(
    keys: &Keys,
    key: Key,
    command: Command,
    write_id: Option<RequestId>,
) -> Result<Outcome> {
    run_command_as(keys, key, command, write_id, false).await
}

/// [`run_command`] of a client's command (the router's): `maybe_applied` as the client said
/// ([`crate::messages::RequestBody::Kv`]).
pub async fn run_command_as(
    keys: &Keys,
    key: Key,
    command: Command,
    write_id: Option<RequestId>,
    maybe_applied: bool,
) -> Result<Outcome> {
    start_command(keys, key, command, write_id, maybe_applied)
        .outcome()
        .await
}

/// Hands `command` on `key` to the key's proposer now; the outcome is awaited from what it
/// returns. Split from [`run_command_as`] so that a request's future holds only what it
/// waits on, not the request it handed over.
pub fn start_command(
    keys: &Keys,
    key: Key,
    command: Command,
    write_id: Option<RequestId>,
    maybe_applied: bool,
) -> PendingCommand {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let write = command.is_write();
    let starting = keys.submit(key, command, write_id, maybe_applied, reply);
    PendingCommand {
        starting,
        answer,
        write,
    }
}

/// A command handed to its key's proposer ([`start_command`]), its outcome to come.
pub struct PendingCommand {
    /// The supervisor starting the key's proposer, if none was live.
    starting: Option<LocalBoxFuture<'static, Result<()>>>,
    answer: tokio::sync::oneshot::Receiver<Result<Outcome>>,
    write: bool,
}

impl PendingCommand {
    pub async fn outcome(self) -> Result<Outcome> {
        if let Some(starting) = self.starting {
            starting.await?;
        }
        // A proposer that stopped mid-write may have had it chosen; a read changed nothing.
        self.answer.await.map_err(|_| {
            let why = "the key's proposer stopped".to_string();
            if self.write {
                Error::Unknown(why)
            } else {
                Error::Unavailable(why)
            }
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crashed actor is restarted at once the first time; while it keeps crashing, after a
    /// delay doubling from 10 ms, and after six crashes not by the supervisor; at once again
    /// after a quiet minute. Keys and roles count apart, and at most `RESTART_KEYS` keys are
    /// remembered.
    #[test]
    fn an_actor_that_keeps_crashing_is_restarted_ever_later() {
        let mut restarts = Restarts::default();
        let start = Instant::now();
        let ms = Duration::from_millis;
        let delays: Vec<Option<Duration>> = (0..8)
            .map(|i| restarts.delay(b"k", Role::Acceptor, start + ms(i)))
            .collect();
        let eager = [0, 10, 20, 40, 80, 160].map(|d| Some(ms(d)));
        assert_eq!(delays, [&eager[..], &[None, None]].concat());
        assert_eq!(restarts.delay(b"k", Role::Proposer, start), Some(ms(0)));
        assert_eq!(restarts.delay(b"j", Role::Acceptor, start), Some(ms(0)));
        let later = start + ms(7) + RESTART_QUIET;
        assert_eq!(restarts.delay(b"k", Role::Acceptor, later), Some(ms(0)));
        for i in 0..2 * RESTART_KEYS {
            restarts.delay(format!("many{i}").as_bytes(), Role::Acceptor, later + ms(1));
        }
        assert!(restarts.recent.len() <= RESTART_KEYS);
    }
}
