//! The network actor: one TCP listener per node for peers and clients alike, one outbound
//! connection per peer, and length-prefixed postcard frames both ways.
//!
//! - A frame is a 4-byte big-endian length and a postcard-encoded [`Frame`]. A frame longer
//!   than the node's limit (one key, one value and the protocol around them) is refused from
//!   its length prefix, before anything is allocated for it; a frame that does not decode, or
//!   one a node never expects, closes that connection with a log line. Nothing else is
//!   disturbed.
//! - Outbound: [`Outbox`] encodes a message once and queues the bytes for each peer in a
//!   bounded queue (`limits.peer_queue_capacity`); a full queue drops the frame (Paxos treats
//!   it as lost and retries). A writer task per peer connects with exponential backoff; woken
//!   by a frame, it yields once to the runtime and then writes everything queued, so messages
//!   to the same peer are coalesced into one `write`. Messages to this node itself skip the
//!   network.
//! - Clients: requests on one connection are served concurrently (at most
//!   `limits.max_inflight_per_connection` at once; beyond that the connection is not read
//!   until one finishes) and answered in completion order, matched by request id.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::FramedRead;

use crate::actors::messages::{ClientCommand, Deliver, FetchRecords, GetStatus, ScanDigest};
use crate::actors::storage::StorageActor;
use crate::actors::supervisor::NodeSupervisor;
use crate::actors::Stats;
use crate::config::Config;
use crate::error::Error;
use crate::frame;
use crate::messages::{
    ClientRequest, ClientResponse, Envelope, FaultPlan, Frame, PeerMessage, Reply, RequestBody,
};
use crate::paxos::types::{NodeId, WriteIdMint};

/// The most digest entries one anti-entropy page carries.
pub const MAX_SYNC_DIGEST_ENTRIES: usize = 4_096;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Sends Paxos messages to peers (or to this node). Cheap to clone.
///
/// Every message leaves through `Outbox::dispatch`, which is also where a [`FaultPlan`]
/// (tests only) drops, duplicates, delays and so reorders messages, or cuts links.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    me: NodeId,
    peers: BTreeMap<NodeId, mpsc::Sender<Bytes>>,
    local: Recipient<Deliver>,
    stats: Arc<Stats>,
    faults_active: AtomicBool,
    faults: RwLock<FaultPlan>,
}

/// A message on its way out: to this node's own supervisor, or encoded for a peer.
#[derive(Clone)]
enum Outgoing {
    Local(Envelope),
    Remote(Bytes),
}

/// A peer's queue, for its writer task.
pub struct PeerQueue {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub frames: mpsc::Receiver<Bytes>,
}

impl Outbox {
    pub fn new(
        me: NodeId,
        config: &Config,
        local: Recipient<Deliver>,
        stats: Arc<Stats>,
    ) -> (Outbox, Vec<PeerQueue>) {
        let mut peers = BTreeMap::new();
        let mut queues = Vec::new();
        for node in config.node_ids().into_iter().filter(|n| *n != me) {
            let (tx, rx) = mpsc::channel(config.limits.peer_queue_capacity);
            peers.insert(node, tx);
            queues.push(PeerQueue {
                node,
                addr: config.addr_of(node).expect("a configured node"),
                frames: rx,
            });
        }
        let inner = OutboxInner {
            me,
            peers,
            local,
            stats,
            faults_active: AtomicBool::new(false),
            faults: RwLock::new(FaultPlan::default()),
        };
        (
            Outbox {
                inner: Arc::new(inner),
            },
            queues,
        )
    }

    /// Replaces the faults injected on this node's outgoing messages.
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

    /// Sends `msg` about `key` to node `to`, from or for proposer instance `proposer`.
    pub fn send(&self, to: NodeId, key: &[u8], proposer: u64, msg: PeerMessage) {
        let envelope = Envelope {
            from: self.inner.me,
            proposer,
            key: key.to_vec(),
            body: msg,
        };
        if to == self.inner.me {
            self.dispatch(to, Outgoing::Local(envelope));
        } else {
            let frame = frame::encode(&Frame::Peer(envelope));
            self.dispatch(to, Outgoing::Remote(frame));
        }
    }

    /// Sends `msg` about `key` from proposer instance `proposer` to every node, this one
    /// included; encodes it once.
    pub fn broadcast(&self, key: &[u8], proposer: u64, msg: PeerMessage) {
        let envelope = Envelope {
            from: self.inner.me,
            proposer,
            key: key.to_vec(),
            body: msg,
        };
        let frame = Frame::Peer(envelope);
        let bytes = frame::encode(&frame);
        for &node in self.inner.peers.keys() {
            self.dispatch(node, Outgoing::Remote(bytes.clone()));
        }
        let Frame::Peer(envelope) = frame else {
            unreachable!()
        };
        self.dispatch(self.inner.me, Outgoing::Local(envelope));
    }

    /// Applies the fault plan, if any, then delivers.
    fn dispatch(&self, to: NodeId, msg: Outgoing) {
        if !self.inner.faults_active.load(Ordering::Relaxed) {
            return self.deliver(to, msg);
        }
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
            Outgoing::Local(envelope) => self.inner.local.try_send(Deliver(envelope)).is_ok(),
            Outgoing::Remote(frame) => match self.inner.peers.get(&to) {
                Some(queue) => queue.try_send(frame).is_ok(),
                None => {
                    log::warn!("no peer {to} in the config; message dropped");
                    false
                }
            },
        };
        if !delivered {
            Stats::add(&self.inner.stats.peer_frames_dropped, 1);
        }
    }
}

/// Listens for connections and runs the peer writers.
pub struct Network {
    listener: Option<std::net::TcpListener>,
    queues: Vec<PeerQueue>,
    shared: Arc<Shared>,
}

/// What every connection task needs.
struct Shared {
    node: NodeId,
    outbox: Outbox,
    supervisor: Addr<NodeSupervisor>,
    storage: Addr<StorageActor>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    connections: Arc<Semaphore>,
    /// Write ids for client writes that came without one.
    write_ids: WriteIdMint,
}

impl Network {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: NodeId,
        listener: std::net::TcpListener,
        outbox: Outbox,
        queues: Vec<PeerQueue>,
        supervisor: Addr<NodeSupervisor>,
        storage: Addr<StorageActor>,
        config: Arc<Config>,
        stats: Arc<Stats>,
    ) -> Network {
        let connections = Arc::new(Semaphore::new(config.limits.max_client_connections));
        Network {
            listener: Some(listener),
            queues,
            shared: Arc::new(Shared {
                node,
                outbox,
                supervisor,
                storage,
                config,
                stats,
                connections,
                write_ids: WriteIdMint::new(),
            }),
        }
    }
}

impl Actor for Network {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = self.listener.take().expect("started once");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let listener = TcpListener::from_std(listener).expect("listener on the runtime");
        ctx.spawn(accept_loop(listener, self.shared.clone()).into_actor(self));
        for queue in std::mem::take(&mut self.queues) {
            ctx.spawn(peer_writer(queue).into_actor(self));
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            log::warn!("refusing connection from {peer}: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        actix_rt::spawn(async move {
            if let Err(e) = serve_connection(stream, shared.clone()).await {
                Stats::add(&shared.stats.bad_frames, 1);
                log::warn!("closing connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// Reads frames from one connection until it closes; `Err` for a bad frame.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) -> Result<(), Error> {
    let (reader, writer) = stream.into_split();
    let mut frames = FramedRead::new(reader, frame::codec(shared.config.frame_limit()));
    let inflight_limit = shared.config.limits.max_inflight_per_connection;
    let (responses, outgoing) = mpsc::channel::<Bytes>(inflight_limit);
    actix_rt::spawn(async move {
        let (mut writer, mut outgoing) = (writer, outgoing);
        let _ = frame::write_queue(&mut writer, &mut outgoing).await;
    });
    let inflight = Arc::new(Semaphore::new(inflight_limit));
    while let Some(frame) = frames.next().await {
        let bytes = frame.map_err(|e| Error::Frame(e.to_string()))?;
        match frame::decode(&bytes)? {
            Frame::Peer(envelope) => {
                check_envelope(&envelope, &shared.config)?;
                if shared.supervisor.try_send(Deliver(envelope)).is_err() {
                    Stats::add(&shared.stats.peer_frames_dropped, 1);
                }
            }
            Frame::Request(request) => {
                let permit = inflight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let shared = shared.clone();
                let responses = responses.clone();
                actix_rt::spawn(async move {
                    let response = serve_request(request, &shared).await;
                    let _ = responses
                        .send(frame::encode(&Frame::Response(response)))
                        .await;
                    drop(permit);
                });
            }
            Frame::Response(_) => {
                return Err(Error::Frame("a node does not take responses".into()));
            }
        }
    }
    Ok(())
}

fn check_envelope(envelope: &Envelope, config: &Config) -> Result<(), Error> {
    if config.node(envelope.from).is_err() {
        return Err(Error::Frame(format!(
            "a peer frame from node {}, which is not in the config",
            envelope.from
        )));
    }
    if envelope.key.len() > config.limits.max_key_bytes {
        return Err(Error::Frame(format!(
            "a peer frame with a {}-byte key",
            envelope.key.len()
        )));
    }
    Ok(())
}

/// Checks a client's key and value against the limits.
pub fn check_request(key: &[u8], value_len: usize, config: &Config) -> Result<(), Error> {
    let limits = &config.limits;
    if key.is_empty() {
        return Err(Error::BadRequest("the key is empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Error::BadRequest(format!(
            "key of {} bytes is over the limit of {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if value_len > limits.max_value_bytes {
        return Err(Error::BadRequest(format!(
            "value of {value_len} bytes is over the limit of {} bytes",
            limits.max_value_bytes
        )));
    }
    Ok(())
}

async fn serve_request(request: ClientRequest, shared: &Shared) -> ClientResponse {
    let result = match request.body {
        RequestBody::Ping => Ok(Reply::Pong { node: shared.node }),
        RequestBody::SetFaults(plan) => {
            if shared.config.testing.allow_fault_injection {
                log::warn!("node {}: injecting faults {plan:?}", shared.node);
                shared.outbox.set_faults(plan);
                Ok(Reply::FaultsSet)
            } else {
                Err(Error::BadRequest(
                    "fault injection is off (testing.allow_fault_injection)".into(),
                ))
            }
        }
        RequestBody::SyncDigest { after, limit } => {
            let limit = (limit as usize).min(MAX_SYNC_DIGEST_ENTRIES);
            match shared.storage.send(ScanDigest { after, limit }).await {
                Ok(Ok(page)) => Ok(Reply::SyncDigest(page)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            }
        }
        RequestBody::SyncFetch { keys } => {
            let keys = keys.into_iter().map(|k| k.into_vec()).collect();
            // Half a frame of records leaves room for the framing around them.
            let max_bytes = shared.config.frame_limit() / 2;
            match shared.storage.send(FetchRecords { keys, max_bytes }).await {
                Ok(Ok(records)) => Ok(Reply::SyncRecords(records)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            }
        }
        RequestBody::Status => match shared.supervisor.send(GetStatus).await {
            Ok(status) => Ok(Reply::Status(status)),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        },
        RequestBody::Kv {
            key,
            command,
            write_id,
            maybe_applied,
        } => match check_request(&key, command.value_len(), &shared.config) {
            Err(e) => Err(e),
            Ok(()) => {
                let write_id = match (command.is_write(), write_id) {
                    (false, _) => None,
                    (true, Some(id)) => Some(id),
                    (true, None) => Some(shared.write_ids.mint()),
                };
                let (reply, outcome) = oneshot::channel();
                let command = ClientCommand {
                    key,
                    command,
                    write_id,
                    maybe_applied,
                    reply,
                };
                if let Err(e) = shared.supervisor.send(command).await {
                    // The command never reached a proposer: nothing ran.
                    return ClientResponse {
                        id: request.id,
                        result: Err(Error::Unavailable(format!("node supervisor: {e}"))),
                    };
                }
                match outcome.await {
                    Ok(Ok(outcome)) => Ok(Reply::Kv(outcome)),
                    Ok(Err(e)) => Err(e),
                    // Dropped unanswered: the proposer crashed or stopped with it in flight.
                    Err(_) => Err(Error::Unknown("the key's proposer stopped".into())),
                }
            }
        },
    };
    ClientResponse {
        id: request.id,
        result,
    }
}

/// Keeps one connection to a peer and writes its queue into it.
async fn peer_writer(mut queue: PeerQueue) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut last_warning: Option<Instant> = None;
    loop {
        let mut stream = match TcpStream::connect(queue.addr).await {
            Ok(stream) => {
                backoff = RECONNECT_BACKOFF_MIN;
                let _ = stream.set_nodelay(true);
                log::info!("connected to node {} at {}", queue.node, queue.addr);
                stream
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!("node {} at {} unreachable: {e}", queue.node, queue.addr);
                    last_warning = Some(Instant::now());
                }
                // What was queued for a peer that is down is stale by the time it is back:
                // drop it (Paxos retries) rather than replay it.
                while queue.frames.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        match frame::write_queue(&mut stream, &mut queue.frames).await {
            Ok(()) => return,
            Err(e) => log::warn!("connection to node {} lost: {e}", queue.node),
        }
    }
}
