//! Watches (`paxkv watch`): the changes of a key, or of every key under a prefix, streamed to a
//! client in version order, with every gap said out loud. The node's part is here: how nodes
//! learn what was chosen, and how a node's watchers are registered, fed and bounded. The
//! client's part (where each key's sequence starts, the reordering, `skipped_to`, resuming on
//! another node) is `crate::watch`.
//!
//! **How a node learns what was chosen.** Nothing but the proposer that saw a quorum accept a
//! state knows it was chosen. So a node with watchers asks every member for a *watch lease*
//! (`NodeRequest::Watching`, [`WATCH_LEASE`], asked again every [`LEASE_REFRESH`] while it has
//! watchers), and while a node holds leases its proposers announce what they see chosen to the
//! lease holders (`PeerMessage::Chosen`: each change of the chosen round's batch, its version
//! and value; `paxos::proposer`, "Announcing what is chosen"). With no watcher anywhere a
//! proposer pays one atomic load per step. Announcements travel as other Paxos frames do, and
//! are dropped, delayed, duplicated and reordered as they are: an announcement claims only
//! that a change was chosen, which is true whenever it arrives, and the client orders changes
//! by version, never by arrival.
//!
//! **What a watch promises** (the client checks the versions; `crate::watch`):
//! 1. *Every change delivered was chosen*, with the value it wrote: only a proposer that saw a
//!    quorum announces, and only the changes of the state it saw chosen.
//! 2. *Per key, versions increase, none twice*: versions of a key go up by one per change, and
//!    the client delivers a key's change only above the last it delivered.
//! 3. *No change is missed silently.* A missing version is seen as the version the next change
//!    skips (the client waits a moment for the late one, then says `skipped_to`), or, when no
//!    change follows, by the client's periodic reconcile (a linearizable read of the key, or a
//!    listing of the prefix, compared with the last version delivered).
//! 4. *No gap while nothing fails.* The node answers a watch `Started` only after every member
//!    of its epoch granted a lease (`confirmed`), and the client takes its starting versions
//!    (a linearizable read or listing) only after that. Every change chosen after that read is
//!    announced: a proposer reads the lease flag when it sees its quorum
//!    ([`crate::actors::outbox::Outbox::announcing`]), and a change it saw chosen with the
//!    flag off was chosen before the lease was granted, so before the start was read, so it
//!    is not after the start. A batch whose proposer never sees its quorum (a timeout) is
//!    retried by that proposer while its callers wait, and the retry finds each write's
//!    recorded outcome and announces it; a batch given up (every caller's deadline passed)
//!    is announced only as far as a later Prepare reads its last state, and its middle
//!    versions, if any, are gaps, reported (a write that ran out of time is a failure). What
//!    breaks this is a fault: a proposer that crashes between its quorum and its
//!    announcement, an announcement dropped (a full peer queue, a cut link), a lease that ends
//!    before it is renewed (a partition, a paused node: the timing assumption is that two
//!    nodes' clocks measure [`WATCH_LEASE`] within a factor of two, so a lease confirmed less
//!    than half a lease ago still runs; if not, the result is a gap reported, never a wrong
//!    change), a watch node that dies. Each of those is then a gap reported by 3.
//!
//! **Bounds.** A node serves at most `limits.max_watchers` watches, a connection holds at most
//! `limits.max_watchers_per_connection`. Each watcher has a buffer of changes not yet written
//! to its client, bounded by `limits.watch_buffer_bytes`: a client that reads slower than its
//! keys change is ended with the reason (`WatchEvent::Ended`), never buffered without end; an
//! announcement is held once however many watchers share it, and every watcher's buffer
//! together (counted per watcher) stays within `limits.max_node_bytes`. A watch's answers take
//! its connection's and the node's byte budgets before they are made (`actors::network`).
//!
//! **Membership changes.** A lease is asked of every member of the watch node's epoch, joining
//! and leaving ones included (any member's proposers may choose). A member added later holds
//! no lease until the next refresh; its changes in between are gaps, reported. Announcements
//! are taken from members only, and of the node's own cluster only, as other Paxos frames.
//!
//! **Deleted keys** keep their record (see `actors::list`): a prefix watch starts from every
//! key's version, deleted ones included (`RequestBody::ListVersions`), so that a key deleted
//! before the watch and put during it starts at the right version.
//!
//! **Partitioned keyspaces (later).** A lease is per node, not per key: with partitions, a
//! watch node asks the members of each partition that overlaps its watches, and 1-4 hold
//! partition by partition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::actors::membership::installed::addr_of;
use crate::actors::membership::MembershipService;
use crate::actors::Stats;
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::{NodeReply, NodeRequest};
use crate::paxos::membership::RESERVED_PREFIX;
use crate::paxos::types::{Key, KeyChange, NodeId};

/// How long a watch lease lasts.
pub const WATCH_LEASE: Duration = Duration::from_secs(10);
/// How often a node with watchers renews its leases.
pub const LEASE_REFRESH: Duration = Duration::from_secs(2);
/// How long a member may take to grant a lease before a watch starts unconfirmed.
const GRANT_TIMEOUT: Duration = Duration::from_secs(1);
/// Announcements one watcher may have waiting, whatever their size (the byte bound is
/// `limits.watch_buffer_bytes`).
const WATCHER_QUEUE: usize = 4_096;

/// Changes of one key, as announced: shared by every watcher it goes to.
#[derive(Debug)]
pub struct Announced {
    pub key: Key,
    pub changes: Vec<KeyChange>,
    bytes: usize,
}

impl Announced {
    /// Bytes it holds (its key and changes).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A node's watchers, and its leases on the other members. Cheap to share (`Arc`).
pub struct WatchHub {
    me: NodeId,
    config: Arc<Config>,
    stats: Arc<Stats>,
    registry: Mutex<Registry>,
    /// Bytes in every watcher's buffer together, within `limits.max_node_bytes`.
    buffered: Arc<AtomicUsize>,
    members: OnceLock<MembershipService>,
    /// The last lease round: when it began, at which epoch, whether every member granted;
    /// rounds run one at a time.
    confirmed: tokio::sync::Mutex<Option<LeaseRound>>,
    /// The client of the members' calls, for the epoch it was made for.
    client: Mutex<Option<(u64, Client, Vec<NodeId>)>>,
}

#[derive(Clone, Copy)]
struct LeaseRound {
    at: Instant,
    epoch: u64,
    granted: bool,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_key: FxHashMap<Key, Vec<u64>>,
    prefixes: Vec<(Key, u64)>,
    watchers: FxHashMap<u64, Watcher>,
}

struct Watcher {
    key: Key,
    prefix: bool,
    queue: mpsc::Sender<Arc<Announced>>,
    /// Bytes of changes in `queue`.
    buffered: Arc<AtomicUsize>,
    /// Why the node ended it.
    ended: Arc<OnceLock<String>>,
}

/// One registered watch: its changes, until it is dropped (which unregisters it).
pub struct Watch {
    id: u64,
    hub: Arc<WatchHub>,
    queue: mpsc::Receiver<Arc<Announced>>,
    buffered: Arc<AtomicUsize>,
    ended: Arc<OnceLock<String>>,
}

impl Watch {
    /// The next announcement; `None` once the node ended the watch ([`Watch::end_reason`]).
    pub async fn next(&mut self) -> Option<Arc<Announced>> {
        let next = self.queue.recv().await?;
        self.buffered.fetch_sub(next.bytes, Ordering::Relaxed);
        self.hub.buffered.fetch_sub(next.bytes, Ordering::Relaxed);
        Some(next)
    }

    /// Why the node ended it, if it did.
    pub fn end_reason(&self) -> Option<String> {
        self.ended.get().cloned()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Unlinked first: nothing is added to its buffer after, and what it held is given back.
        self.hub.remove(self.id);
        let held = self.buffered.load(Ordering::Relaxed);
        self.hub.buffered.fetch_sub(held, Ordering::Relaxed);
    }
}

impl WatchHub {
    pub fn new(me: NodeId, config: Arc<Config>, stats: Arc<Stats>) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            me,
            config,
            stats,
            registry: Default::default(),
            buffered: Default::default(),
            members: OnceLock::new(),
            confirmed: Default::default(),
            client: Default::default(),
        })
    }

    /// Renews the leases while this node has watchers; runs for the node's life.
    pub async fn run(self: Arc<Self>, members: MembershipService) {
        let _ = self.members.set(members);
        let mut every = tokio::time::interval(LEASE_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.watchers() > 0 {
                let mut last = self.confirmed.lock().await;
                self.lease_round(&mut last).await;
            }
        }
    }

    fn watchers(&self) -> usize {
        self.registry.lock().expect("watch registry").watchers.len()
    }

    /// Registers a watch of `key` (of every key under it with `prefix`).
    pub fn add(self: &Arc<Self>, key: Key, prefix: bool) -> Result<Watch> {
        check_watched(&key, prefix, &self.config)?;
        let mut registry = self.registry.lock().expect("watch registry");
        let limit = self.config.limits.max_watchers;
        if registry.watchers.len() >= limit {
            return Err(Error::Busy(format!(
                "this node serves {limit} watches already (limits.max_watchers)"
            )));
        }
        registry.next_id += 1;
        let id = registry.next_id;
        let (tx, queue) = mpsc::channel(WATCHER_QUEUE);
        let (buffered, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(OnceLock::new()));
        if prefix {
            registry.prefixes.push((key.clone(), id));
        } else {
            registry.by_key.entry(key.clone()).or_default().push(id);
        }
        registry.watchers.insert(
            id,
            Watcher {
                key,
                prefix,
                queue: tx,
                buffered: buffered.clone(),
                ended: ended.clone(),
            },
        );
        Stats::add(&self.stats.watchers, 1);
        Ok(Watch {
            id,
            hub: self.clone(),
            queue,
            buffered,
            ended,
        })
    }

    fn remove(&self, id: u64) {
        let mut registry = self.registry.lock().expect("watch registry");
        registry.unlink(id, &self.stats);
    }

    /// Makes sure every member of the epoch holds a lease for this node, renewed less than
    /// half a lease ago: true if so (a watch is then `confirmed`).
    pub async fn confirm(&self) -> bool {
        let Some(epoch) = self.members.get().map(|m| m.view.epoch()) else {
            return false;
        };
        let mut last = self.confirmed.lock().await;
        if let Some(round) = *last {
            // Granted: good for half a lease. Refused: a watch that comes right after gets
            // the same answer rather than waiting for another round (a member down would
            // make every new watch wait `GRANT_TIMEOUT`, one after the other).
            let good_for = if round.granted {
                WATCH_LEASE / 2
            } else {
                GRANT_TIMEOUT
            };
            if round.epoch == epoch && round.at.elapsed() < good_for {
                return round.granted;
            }
        }
        self.lease_round(&mut last).await
    }

    /// Asks every member for a lease (this node grants its own); records when all granted.
    async fn lease_round(&self, last: &mut Option<LeaseRound>) -> bool {
        let Some(members) = self.members.get() else {
            return false;
        };
        let started = Instant::now();
        let Ok((epoch, client, nodes)) = self.client(members) else {
            return false;
        };
        members.outbox.grant_watch(self.me, WATCH_LEASE);
        let lease_ms = WATCH_LEASE.as_millis() as u32;
        let calls = nodes.iter().enumerate().map(|(index, &node)| {
            let client = &client;
            async move {
                if node == self.me {
                    return true;
                }
                let body = NodeRequest::Watching {
                    node: self.me,
                    lease_ms,
                };
                let call = tokio::time::timeout(GRANT_TIMEOUT, client.node_call(index, body));
                matches!(call.await, Ok(Ok(NodeReply::Watching)))
            }
        });
        let granted = join_all(calls).await.into_iter().all(|ok| ok);
        // A granted round counts from its start (every lease began after it); a refused one
        // from its end, so that the watches waiting behind it take its answer rather than each
        // running another round.
        let at = if granted { started } else { Instant::now() };
        *last = Some(LeaseRound { at, epoch, granted });
        granted
    }

    /// The client of the installed epoch's members (made again when the epoch moves).
    fn client(&self, members: &MembershipService) -> Result<(u64, Client, Vec<NodeId>)> {
        let m = members
            .view
            .get()
            .ok_or_else(|| Error::Unavailable("no membership installed".into()))?;
        let mut cached = self.client.lock().expect("watch client");
        if let Some((epoch, client, nodes)) = &*cached {
            if *epoch == m.epoch {
                return Ok((*epoch, client.clone(), nodes.clone()));
            }
        }
        let nodes = m.nodes();
        let addrs = nodes
            .iter()
            .map(|&n| Ok((n, addr_of(&m, n)?)))
            .collect::<Result<Vec<_>>>()?;
        let client = members.client_of(&addrs);
        *cached = Some((m.epoch, client.clone(), nodes.clone()));
        Ok((m.epoch, client, nodes))
    }

    /// Hands an announcement to every watcher of its key; ends the watchers that cannot take
    /// it (their client reads too slowly).
    pub fn publish(&self, key: Key, changes: Vec<KeyChange>) {
        Stats::add(&self.stats.announcements_received, 1);
        if key.starts_with(RESERVED_PREFIX) {
            return; // the cluster's own keys are never watched (an empty prefix included)
        }
        let mut registry = self.registry.lock().expect("watch registry");
        if registry.watchers.is_empty() {
            return;
        }
        let mut ids: Vec<u64> = registry.by_key.get(&key).cloned().unwrap_or_default();
        ids.extend(
            registry
                .prefixes
                .iter()
                .filter(|(p, _)| key.starts_with(p))
                .map(|(_, id)| *id),
        );
        if ids.is_empty() {
            return;
        }
        let bytes = key.len() + changes.iter().map(KeyChange::bytes).sum::<usize>();
        let announced = Arc::new(Announced {
            key,
            changes,
            bytes,
        });
        let limit = self.config.limits.watch_buffer_bytes;
        let node_limit = self.config.limits.max_node_bytes;
        let mut slow = Vec::new();
        for id in ids {
            let Some(w) = registry.watchers.get(&id) else {
                continue;
            };
            let held = w.buffered.load(Ordering::Relaxed);
            // An empty buffer takes any one announcement (a value may be larger than the
            // buffer); a buffer holding something takes one only within the budget.
            if held > 0 && held + bytes > limit {
                slow.push((id, format!("{held} bytes of changes not read yet")));
                continue;
            }
            // Every watcher's buffer together stays within the node's byte budget: past it,
            // the watcher that would take more is ended (each holds at most its own bound).
            let all = self.buffered.load(Ordering::Relaxed);
            if all + bytes > node_limit {
                slow.push((
                    id,
                    format!("this node's watchers hold {all} bytes not read yet"),
                ));
                continue;
            }
            match w.queue.try_send(announced.clone()) {
                Ok(()) => {
                    w.buffered.fetch_add(bytes, Ordering::Relaxed);
                    self.buffered.fetch_add(bytes, Ordering::Relaxed);
                    Stats::add(
                        &self.stats.watch_changes_sent,
                        announced.changes.len() as u64,
                    );
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slow.push((id, format!("{WATCHER_QUEUE} announcements not read yet")))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => slow.push((id, String::new())),
            }
        }
        for (id, why) in slow {
            if let Some(w) = registry.watchers.get(&id) {
                let _ = w.ended.set(format!(
                    "ended: this watch's client reads slower than its keys change ({why}; \
                     limits.watch_buffer_bytes is {limit}); watch again to resume"
                ));
                Stats::add(&self.stats.watchers_cut, 1);
            }
            registry.unlink(id, &self.stats);
        }
    }
}

impl Registry {
    /// Forgets watcher `id`; dropping its sender ends its stream once drained.
    fn unlink(&mut self, id: u64, stats: &Stats) {
        let Some(w) = self.watchers.remove(&id) else {
            return;
        };
        Stats::sub(&stats.watchers, 1);
        if w.prefix {
            self.prefixes.retain(|(_, i)| *i != id);
        } else if let Some(ids) = self.by_key.get_mut(&w.key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(&w.key);
            }
        }
    }
}

/// A watched key is a key like any other (a prefix may be empty: every key); never one of the
/// cluster's own.
pub(crate) fn check_watched(key: &[u8], prefix: bool, config: &Config) -> Result<()> {
    let max = config.limits.max_key_bytes;
    if key.len() > max || (!prefix && key.is_empty()) {
        return Err(Error::BadRequest(format!(
            "a watched key must have 1 to {max} bytes (a prefix 0 to {max}); it has {}",
            key.len()
        )));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::BadRequest(
            "keys starting with \\0paxkv/ are the cluster's own (its membership)".into(),
        ));
    }
    Ok(())
}
