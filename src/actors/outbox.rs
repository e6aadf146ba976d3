//! The outbox: how the per-key actors send Paxos messages. A message to a peer is encoded
//! once and queued, as bytes, on that peer's queue, bounded in frames
//! (`limits.peer_queue_capacity`) and in bytes (`limits.peer_queue_bytes`: a frame carries
//! up to a whole value), which the peer's writer in `actors::network` drains; a full queue
//! drops the frame (Paxos treats it as lost and retries). A message to this node itself
//! skips the network and goes straight to its key's actor (`actors::routes`; to the
//! supervisor when the key has none). Every message leaves through
//! [`Outbox::dispatch`], which is also where a [`FaultPlan`] (tests only) drops, duplicates,
//! delays (and so reorders) messages, or cuts links.

use std::collections::BTreeMap;
use std::net::SocketAddr;
#[cfg(feature = "testing")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
#[cfg(feature = "testing")]
use std::sync::RwLock;
#[cfg(feature = "testing")]
use std::time::Duration;

use bytes::Bytes;
#[cfg(feature = "testing")]
use rand::Rng;
use tokio::sync::mpsc;

use crate::actors::messages::{Deliver, Inbound};
use crate::actors::{HeldBytes, Stats};
use crate::config::Config;
use crate::frame;
#[cfg(feature = "testing")]
use crate::messages::FaultPlan;
use crate::messages::{Envelope, Frame, PeerMessage};
use crate::paxos::proposer::Suspects;
use crate::paxos::types::{KeyChange, NodeId};

/// `changes` in runs, in order, each holding at most `max_bytes` of values (or one change, if
/// that alone holds more).
fn frames_of(changes: Vec<KeyChange>, max_bytes: usize) -> Vec<Vec<KeyChange>> {
    let mut frames: Vec<Vec<KeyChange>> = Vec::new();
    let mut bytes = 0;
    for change in changes {
        let size = change.value.as_ref().map_or(0, Vec::len);
        match frames.last_mut() {
            Some(frame) if bytes + size <= max_bytes => frame.push(change),
            _ => {
                bytes = 0;
                frames.push(vec![change]);
            }
        }
        bytes += size;
    }
    frames
}

/// Takes the announcements of this node's own proposers (`actors::watch::WatchHub::publish`;
/// a function, so that the outbox depends on no watch type).
pub type LocalAnnouncements = Arc<dyn Fn(Vec<u8>, Vec<KeyChange>) + Send + Sync>;

/// Sends Paxos messages to peers (or to this node). Cheap to clone.
///
/// Every message leaves through [`Outbox::dispatch`], which is also where a [`FaultPlan`]
/// (tests only) drops, duplicates, delays and so reorders messages, or cuts links.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    me: NodeId,
    /// The installed membership's cluster identity, stamped on every message
    /// (`messages::Envelope::cluster`); set with the peers ([`Outbox::set_peers`]).
    cluster: AtomicU64,
    /// One queue per peer of the installed membership (and of the config before one is
    /// installed), with its address; replaced when the membership changes.
    peers: std::sync::RwLock<BTreeMap<NodeId, (String, PeerSender)>>,
    /// New peers' queues go to the network actor, which starts their writers.
    new_queues: mpsc::UnboundedSender<PeerQueue>,
    queue_capacity: usize,
    queue_bytes: usize,
    /// This node's own messages: to its key's actor, or to the supervisor (`actors::routes`).
    local: Inbound,
    stats: Arc<Stats>,
    /// Where this node's own announcements go: straight to its watchers (`actors::watch`),
    /// not through the supervisor's mailbox, which sheds load.
    local_announcements: LocalAnnouncements,
    /// The nodes that watch, and until when ([`Outbox::grant_watch`]).
    watching: std::sync::Mutex<BTreeMap<NodeId, std::time::Instant>>,
    /// Some node may watch: a proposer looks at this one flag per step.
    announcing: std::sync::atomic::AtomicBool,
    /// The acceptors this node's proposers suspect: their keys' rounds ask everyone at once
    /// (`paxos::proposer::Suspects`).
    suspects: std::sync::RwLock<Suspects>,
    /// `limits.max_value_bytes`: the values one announcement frame may hold.
    max_value_bytes: usize,
    #[cfg(feature = "testing")]
    faults_active: AtomicBool,
    #[cfg(feature = "testing")]
    faults: RwLock<FaultPlan>,
}

/// A message on its way out: to this node's own key actors, or encoded for a peer.
#[derive(Clone)]
enum Outgoing {
    Local(Envelope),
    Remote(Bytes),
}

/// A peer's queue, for its writer task.
pub struct PeerQueue {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub frames: mpsc::Receiver<Queued>,
}

/// A frame in a peer's queue: its bytes count against the queue's byte budget until it is
/// written or dropped.
pub struct Queued {
    bytes: Bytes,
    _held: HeldBytes,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The sending side of a peer's queue: frames, and the bytes they hold.
#[derive(Clone)]
struct PeerSender {
    frames: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(
        me: NodeId,
        config: &Config,
        local: Inbound,
        stats: Arc<Stats>,
        local_announcements: LocalAnnouncements,
    ) -> (Outbox, mpsc::UnboundedReceiver<PeerQueue>) {
        let (new_queues, queues) = mpsc::unbounded_channel();
        let inner = OutboxInner {
            me,
            cluster: AtomicU64::new(0),
            peers: Default::default(),
            new_queues,
            queue_capacity: config.limits.peer_queue_capacity,
            queue_bytes: config.limits.peer_queue_bytes,
            local,
            stats,
            local_announcements,
            watching: Default::default(),
            announcing: Default::default(),
            suspects: Default::default(),
            max_value_bytes: config.limits.max_value_bytes,
            #[cfg(feature = "testing")]
            faults_active: AtomicBool::new(false),
            #[cfg(feature = "testing")]
            faults: RwLock::new(FaultPlan::default()),
        };
        (
            Outbox {
                inner: Arc::new(inner),
            },
            queues,
        )
    }

    /// Makes the peers those of `members` (`(id, addr)`): a queue and a writer for each new one
    /// (or one whose address changed); a peer no longer listed loses its queue, and its
    /// writer stops.
    pub fn set_peer_addrs(&self, members: &[(NodeId, String)]) {
        let mut peers = self.inner.peers.write().expect("peers lock");
        peers.retain(|id, (addr, _)| members.iter().any(|(m, a)| m == id && a == addr));
        for (id, addr) in members {
            if *id == self.inner.me || peers.contains_key(id) {
                continue;
            }
            let Ok(parsed) = addr.parse() else {
                log::warn!("node {id}'s address {addr} does not parse; no link to it");
                continue;
            };
            let (tx, rx) = mpsc::channel(self.inner.queue_capacity);
            let sender = PeerSender {
                frames: tx,
                queued: Arc::new(AtomicUsize::new(0)),
            };
            peers.insert(*id, (addr.clone(), sender));
            let _ = self.inner.new_queues.send(PeerQueue {
                node: *id,
                addr: parsed,
                frames: rx,
            });
        }
    }

    /// Frames queued now for each peer.
    pub fn queue_depths(&self) -> Vec<(NodeId, usize)> {
        let peers = self.inner.peers.read().expect("peers lock");
        peers
            .iter()
            .map(|(id, (_, queue))| (*id, queue.frames.max_capacity() - queue.frames.capacity()))
            .collect()
    }

    /// [`Outbox::set_peer_addrs`] for the members of `m`.
    pub fn set_peers(&self, m: &crate::paxos::membership::Membership) {
        let members: Vec<(NodeId, String)> =
            m.members.iter().map(|x| (x.id, x.addr.clone())).collect();
        self.inner.cluster.store(m.cluster, Ordering::Release);
        self.set_peer_addrs(&members);
    }

    /// Replaces the faults injected on this node's outgoing messages (test builds only).
    #[cfg(feature = "testing")]
    pub fn set_faults(&self, plan: FaultPlan) {
        let active = !plan.is_none();
        *self.inner.faults.write().expect("fault plan lock") = plan;
        self.inner.faults_active.store(active, Ordering::Relaxed);
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.inner.me
    }

    /// Does the fault plan cut this node's link to `to`? (Anti-entropy, which travels on
    /// client connections, honours it too, so that a partition is a partition.)
    #[cfg(not(feature = "testing"))]
    pub fn is_cut(&self, _to: NodeId) -> bool {
        false
    }

    /// Does the fault plan cut this node's link to `to`?
    #[cfg(feature = "testing")]
    pub fn is_cut(&self, to: NodeId) -> bool {
        self.inner.faults_active.load(Ordering::Relaxed)
            && self
                .inner
                .faults
                .read()
                .expect("fault plan lock")
                .link(to)
                .cut
    }

    /// Sends `msg` about `key` to node `to`, from or for proposer instance `proposer`, at
    /// membership epoch `epoch`.
    pub fn send(&self, to: NodeId, key: &[u8], proposer: u64, epoch: u64, msg: PeerMessage) {
        let envelope = Envelope {
            from: self.inner.me,
            proposer,
            epoch,
            cluster: self.inner.cluster.load(Ordering::Acquire),
            key: key.to_vec(),
            body: msg,
        };
        self.post(to, envelope);
    }

    /// Answers `request` (a Paxos request to this node) with `msg`: to its sender's proposer
    /// instance, at its epoch, reusing its key.
    pub fn answer(&self, request: Envelope, msg: PeerMessage) {
        let to = request.from;
        let envelope = Envelope {
            from: self.inner.me,
            cluster: self.inner.cluster.load(Ordering::Acquire),
            body: msg,
            ..request
        };
        self.post(to, envelope);
    }

    fn post(&self, to: NodeId, envelope: Envelope) {
        if to == self.inner.me {
            self.dispatch(to, Outgoing::Local(envelope));
        } else {
            let frame = frame::encode(&Frame::Peer(envelope));
            self.dispatch(to, Outgoing::Remote(frame));
        }
    }

    /// Sends `msg` about `key` from proposer instance `proposer`, at epoch `epoch`, to every
    /// node of `to` (this one included if listed); encodes it once.
    pub fn broadcast(
        &self,
        to: &[NodeId],
        key: &[u8],
        proposer: u64,
        epoch: u64,
        msg: PeerMessage,
    ) {
        let envelope = Envelope {
            from: self.inner.me,
            proposer,
            epoch,
            cluster: self.inner.cluster.load(Ordering::Acquire),
            key: key.to_vec(),
            body: msg,
        };
        let frame = Frame::Peer(envelope);
        let bytes = frame::encode(&frame);
        for &node in to.iter().filter(|n| **n != self.inner.me) {
            self.dispatch(node, Outgoing::Remote(bytes.clone()));
        }
        if to.contains(&self.inner.me) {
            let Frame::Peer(envelope) = frame else {
                unreachable!()
            };
            self.dispatch(self.inner.me, Outgoing::Local(envelope));
        }
    }

    /// Node `node` watches for `lease`: what this node's proposers see chosen is announced to
    /// it until then (`NodeRequest::Watching`, `actors::watch`). The flag proposers read is
    /// set before this returns, so before the caller's call is answered.
    pub fn grant_watch(&self, node: NodeId, lease: std::time::Duration) {
        let mut watching = self.inner.watching.lock().expect("watching lock");
        watching.insert(node, std::time::Instant::now() + lease);
        self.inner.announcing.store(true, Ordering::SeqCst);
    }

    /// A proposer of this node found `node` silent for `quiet` (`Effect::Suspect`): see
    /// `Suspects::silent`.
    pub fn silent(&self, node: NodeId, quiet: std::time::Duration) {
        self.suspects_mut(|s| s.silent(node, std::time::Instant::now(), quiet));
    }

    /// A proposer of this node found `node` failing to write (`Effect::Failing`).
    pub fn failing(&self, node: NodeId) {
        self.suspects_mut(|s| s.mark(node, std::time::Instant::now()));
    }

    /// A proposer of this node had an answer from `node`.
    pub fn heard(&self, node: NodeId) {
        self.suspects_mut(|s| s.heard(node, std::time::Instant::now()));
    }

    fn suspects_mut<T>(&self, f: impl FnOnce(&mut Suspects) -> T) -> T {
        f(&mut self
            .inner
            .suspects
            .write()
            .unwrap_or_else(|e| e.into_inner()))
    }

    /// The node's suspects, as of now, for a proposer about to step.
    pub fn suspects<T>(&self, f: impl FnOnce(&Suspects) -> T) -> T {
        f(&self
            .inner
            .suspects
            .read()
            .unwrap_or_else(|e| e.into_inner()))
    }

    /// Does some node (may) watch? One atomic load: what a proposer asks on every step.
    pub fn announcing(&self) -> bool {
        self.inner.announcing.load(Ordering::SeqCst)
    }

    /// Announces `changes` of `key`, chosen by proposer instance `proposer`, to every node
    /// whose watch lease runs; forgets the leases that ended. A round's changes may hold
    /// several values (a batch, and the state its Prepare read): they go in as many frames as
    /// keep each within one value's bytes, so that every frame fits the peers' frame limit (one
    /// key, one value): a larger one would close the link it travels on.
    pub fn announce(&self, key: &[u8], proposer: u64, epoch: u64, changes: Vec<KeyChange>) {
        let to: Vec<NodeId> = {
            let mut watching = self.inner.watching.lock().expect("watching lock");
            let now = std::time::Instant::now();
            watching.retain(|_, until| *until > now);
            if watching.is_empty() {
                self.inner.announcing.store(false, Ordering::SeqCst);
            }
            watching.keys().copied().collect()
        };
        if to.is_empty() {
            return;
        }
        for changes in frames_of(changes, self.inner.max_value_bytes) {
            Stats::add(&self.inner.stats.announcements, to.len() as u64);
            self.broadcast(&to, key, proposer, epoch, PeerMessage::Chosen { changes });
        }
    }

    /// Applies the fault plan, if any, then delivers.
    fn dispatch(&self, to: NodeId, msg: Outgoing) {
        #[cfg(feature = "testing")]
        if self.inner.faults_active.load(Ordering::Relaxed) {
            return self.dispatch_with_faults(to, msg);
        }
        self.deliver(to, msg)
    }

    /// Drops, duplicates or delays `msg` as the fault plan says, then delivers.
    #[cfg(feature = "testing")]
    fn dispatch_with_faults(&self, to: NodeId, msg: Outgoing) {
        let link = self.inner.faults.read().expect("fault plan lock").link(to);
        let mut rng = rand::rng();
        let roll = |rng: &mut rand::rngs::ThreadRng, permille: u16| {
            permille > 0 && rng.random_range(0..1000) < permille
        };
        if link.cut || roll(&mut rng, link.drop_permille) {
            Stats::add(&self.inner.stats.peer_frames_dropped, 1);
            return;
        }
        let copies = if roll(&mut rng, link.duplicate_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay_ms = if link.delay_max_ms > 0 {
                rng.random_range(link.delay_min_ms..=link.delay_max_ms.max(link.delay_min_ms))
            } else {
                0
            };
            if delay_ms == 0 {
                self.deliver(to, msg.clone());
            } else {
                let (outbox, msg) = (self.clone(), msg.clone());
                actix_rt::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    outbox.deliver(to, msg);
                });
            }
        }
    }

    fn deliver(&self, to: NodeId, msg: Outgoing) {
        let delivered = match msg {
            Outgoing::Local(Envelope {
                key,
                body: PeerMessage::Chosen { changes },
                ..
            }) => {
                (self.inner.local_announcements)(key, changes);
                true
            }
            Outgoing::Local(envelope) => (self.inner.local)(Deliver(envelope, None)),
            Outgoing::Remote(frame) => {
                match self.inner.peers.read().expect("peers lock").get(&to) {
                    Some((_, queue)) => {
                        // Over the byte budget: dropped, as on a full queue.
                        let held =
                            HeldBytes::take(&queue.queued, frame.len(), self.inner.queue_bytes);
                        held.is_some_and(|held| {
                            let queued = Queued {
                                bytes: frame,
                                _held: held,
                            };
                            queue.frames.try_send(queued).is_ok()
                        })
                    }
                    None => {
                        log::debug!("no peer {to} in the membership; message dropped");
                        false
                    }
                }
            }
        };
        if !delivered {
            Stats::add(&self.inner.stats.peer_frames_dropped, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(version: u64, bytes: usize) -> KeyChange {
        KeyChange {
            version,
            value: Some(vec![0; bytes]),
        }
    }

    #[test]
    fn an_announcement_is_split_so_that_each_frame_holds_one_values_bytes_at_most() {
        let changes = vec![
            change(1, 600),
            change(2, 600),
            change(3, 10),
            change(4, 1_500),
        ];
        let frames = frames_of(changes, 1_000);
        let versions: Vec<Vec<u64>> = frames
            .iter()
            .map(|f| f.iter().map(|c| c.version).collect())
            .collect();
        assert_eq!(versions, vec![vec![1], vec![2, 3], vec![4]]);
        let deletes = vec![
            KeyChange {
                version: 5,
                value: None,
            };
            3
        ];
        assert_eq!(frames_of(deletes, 1_000).len(), 1);
    }
}
