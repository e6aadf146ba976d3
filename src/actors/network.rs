//! The network actor, the transport: one TCP listener per node for peers and clients alike,
//! the writer of each peer link, and length-prefixed postcard frames ([`crate::frame`]) both
//! ways. It decides nothing about what a frame asks: a decoded frame is validated
//! ([`Frame::validate`]), then a Paxos message goes to its key's actor (`actors::routes`; the
//! supervisor when the key has none), a client request to the
//! [`Router`], an anti-entropy request to the [`CallServer`].
//!
//! - A frame longer than the node's limit (one key, one value and the protocol around them)
//!   is refused from its length prefix, before anything is allocated for it; a frame that
//!   does not decode, or is one a node never takes, closes that connection with a log line;
//!   a frame that decodes but fails validation is dropped, and the connection goes on. Each
//!   is counted (`bad_frames`); nothing else is disturbed.
//! - A frame of another protocol version (a node or client of another build, see
//!   [`crate::frame`]) is not decoded: the connection is answered with this node's version
//!   ([`frame::version_refusal`]), so that the other side can say what does not match, and
//!   closed, with a log line naming both versions (`other_version_frames`).
//! - Outbound: the [`crate::actors::outbox`] queues encoded frames per peer; a writer task
//!   per peer connects with exponential backoff and drains its queue with
//!   [`frame::write_queue`], so messages to the same peer are coalesced into one `write`.
//! - With `[tls]`, every connection is TLS with certificates both ways, and what a connection
//!   may send is decided by the certificate its handshake verified ([`crate::tls`]): a
//!   connection that fails its handshake is refused before any frame is read
//!   (`refused_connections`), a frame its certificate may not send is dropped
//!   (`forged_frames`). Peer links verify that the peer's certificate names the node they
//!   are for.
//! - Clients: requests on one connection are served concurrently (at most
//!   `limits.max_inflight_per_connection` at once; beyond that the connection is not read
//!   until one finishes) and answered in completion order, matched by request id.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;

use crate::actors::calls::CallServer;
use crate::actors::membership::InstalledMembership;
use crate::actors::messages::{Deliver, Inbound};
use crate::actors::outbox::PeerQueue;
use crate::actors::router::Router;
use crate::actors::sources::PerSource;
use crate::actors::{HeldBytes, Stats};
use crate::config::Config;
use crate::error::Error;
use crate::frame;
use crate::messages::{
    ClientRequest, ClientResponse, Envelope, Frame, Reply, RequestBody, WatchEvent,
};
use crate::tls::{self, Dial, Peer, Tls};

/// The largest answer a request that returns no value can have (a membership of
/// `MAX_MEMBERS`, a status, an error message), reserved for it in the byte budgets.
const SMALL_ANSWER_BYTES: usize = 64 * 1024;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Listens for connections and runs the peer writers.
pub struct Network {
    listener: Option<std::net::TcpListener>,
    queues: Option<mpsc::UnboundedReceiver<PeerQueue>>,
    shared: Arc<Shared>,
}

/// What every connection task needs.
struct Shared {
    /// Where Paxos messages go: the key's live actor, or the node supervisor
    /// (`actors::routes`).
    deliver: Inbound,
    router: Router,
    calls: CallServer,
    config: Arc<Config>,
    stats: Arc<Stats>,
    connections: Arc<Semaphore>,
    /// Connections in their TLS handshake, from everywhere, and per source address.
    handshakes: Arc<Semaphore>,
    handshakes_from: Arc<PerSource>,
    /// Bytes in flight over every connection of this node (`limits.max_node_bytes`).
    node_bytes: Arc<Semaphore>,
    /// Bytes of peers' Paxos frames waiting in the mailboxes (`limits.max_inbox_bytes`).
    inbox_bytes: Arc<AtomicUsize>,
    view: Arc<InstalledMembership>,
    tls: Option<Arc<Tls>>,
}

impl Network {
    pub fn new(
        listener: std::net::TcpListener,
        queues: mpsc::UnboundedReceiver<PeerQueue>,
        deliver: Inbound,
        router: Router,
        calls: CallServer,
        config: Arc<Config>,
        stats: Arc<Stats>,
    ) -> Network {
        let view = calls.view();
        let tls = calls.tls();
        let connections = Arc::new(Semaphore::new(config.limits.max_client_connections));
        let handshakes = Arc::new(Semaphore::new(config.limits.max_handshakes));
        let handshakes_from = PerSource::new(config.limits.max_handshakes_per_source);
        let node_bytes = Arc::new(Semaphore::new(config.limits.max_node_bytes));
        let inbox_bytes = Arc::new(AtomicUsize::new(0));
        Network {
            listener: Some(listener),
            queues: Some(queues),
            shared: Arc::new(Shared {
                deliver,
                router,
                calls,
                config,
                stats,
                handshakes,
                handshakes_from,
                node_bytes,
                inbox_bytes,
                connections,
                view,
                tls,
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
        let mut queues = self.queues.take().expect("started once");
        let tls = self.shared.tls.clone();
        ctx.spawn(
            async move {
                while let Some(queue) = queues.recv().await {
                    actix_rt::spawn(peer_writer(queue, tls.clone()));
                }
            }
            .into_actor(self),
        );
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
        // Slots: a connection still in its TLS handshake holds one of `max_handshakes`, and
        // one of its source address's `max_handshakes_per_source` (so one host's idle sockets
        // cannot take them all), for at most `handshake_timeout_ms`; once it is a client's
        // (or plaintext), one of `limits.max_client_connections`. A node's connection takes
        // no client slot, so clients (or sockets that never finish a handshake) cannot shut
        // the peers out once they are authenticated.
        let Some(from) = shared.handshakes_from.take(peer.ip()) else {
            limited(&shared.stats, "handshakes_per_source");
            refused(
                &shared.stats,
                peer,
                "too many TLS handshakes from this address",
            );
            continue;
        };
        let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
            limited(&shared.stats, "handshakes");
            refused(&shared.stats, peer, "too many TLS handshakes at once");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        actix_rt::spawn(async move {
            // The handshake, and with it the certificate, comes before any frame is read.
            let deadline = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
            let accept = Peer::accept(shared.tls.as_deref(), stream);
            let (stream, who) = match tokio::time::timeout(deadline, accept).await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => return refused(&shared.stats, peer, &e),
                Err(_) => {
                    limited(&shared.stats, "handshake_timeout");
                    let why = format!("no TLS handshake within {deadline:?}");
                    return refused(&shared.stats, peer, &why);
                }
            };
            drop(from);
            drop(handshake);
            let permit = match who {
                Peer::Node(_) => None,
                Peer::Client | Peer::Operator | Peer::Unauthenticated => {
                    match shared.connections.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            limited(&shared.stats, "connections");
                            return refused(&shared.stats, peer, "too many connections");
                        }
                    }
                }
            };
            Stats::add(&shared.stats.accepted_connections, 1);
            Stats::add(&shared.stats.open_connections, 1);
            if let Err(e) = serve_connection(stream, who, shared.clone()).await {
                Stats::add(&shared.stats.bad_frames, 1);
                log::warn!("closing connection from {peer}: {e}");
            }
            Stats::sub(&shared.stats.open_connections, 1);
            drop(permit);
        });
    }
}

fn limited(stats: &Stats, limit: &'static str) {
    stats.metrics.limited.with_label_values(&[limit]).inc();
}

/// Counts a connection refused before any frame was read, and says why (now and then).
fn refused(stats: &Stats, peer: std::net::SocketAddr, why: &str) {
    let count = Stats::add_get(&stats.refused_connections, 1);
    if count.is_power_of_two() {
        log::warn!("refused a connection from {peer} ({count} refused so far): {why}");
    }
}

/// An answer on its way out, holding its share of the connection's and the node's byte
/// budgets until it is written (`frame::write_queue` drops it then).
struct Answer {
    bytes: Bytes,
    _budget: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl AsRef<[u8]> for Answer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The most bytes a request can hold in flight: itself, and its largest possible answer (a
/// value for a get, a frame for a node's call, a small answer otherwise). A list also holds,
/// while it builds its page, one scan page of each voter (half a frame each,
/// `actors::list`): [`LIST_FRAMES`] frames, capped at the connection's budget so that a list
/// always fits one.
fn reserved_for(call: &Call, request_bytes: usize, config: &Config) -> usize {
    let answer = match call {
        Call::Client(request) => match &request.body {
            // Every answer that may carry a value or a lease's keys (up to a value's size:
            // `LeaseRecord` is a value) is reserved a frame.
            crate::messages::RequestBody::Kv {
                command: crate::paxos::types::Command::Get | crate::paxos::types::Command::Inspect,
                ..
            }
            | crate::messages::RequestBody::LeaseKeys { .. } => config.frame_limit(),
            crate::messages::RequestBody::List { .. }
            | crate::messages::RequestBody::ListVersions { .. } => (LIST_FRAMES
                * config.frame_limit())
            .min(config.limits.max_connection_bytes - request_bytes),
            _ => SMALL_ANSWER_BYTES,
        },
        Call::Node(_) => config.frame_limit(),
    };
    request_bytes + answer
}

/// Frames a list holds at most while it builds a page: the page, and half a frame from each of
/// up to seven voters.
const LIST_FRAMES: usize = 5;

/// Takes `bytes` of `budget`, counting a wait under `limit` (the connection is not read
/// meanwhile: backpressure, never a buffer).
async fn take(
    budget: &Arc<Semaphore>,
    bytes: usize,
    stats: &Stats,
    limit: &'static str,
) -> OwnedSemaphorePermit {
    let bytes = bytes as u32; // validated: budgets fit in u32, and a request in its budget
    match budget.clone().try_acquire_many_owned(bytes) {
        Ok(permit) => permit,
        Err(_) => {
            limited(stats, limit);
            budget
                .clone()
                .acquire_many_owned(bytes)
                .await
                .expect("never closed")
        }
    }
}

/// Reads frames from one connection until it closes; `Err` for a bad frame.
///
/// **Bytes in flight are budgeted**, per connection (`limits.max_connection_bytes`) and per
/// node (`limits.max_node_bytes`): a request takes, before it is served, its own size and
/// the largest answer it can have ([`reserved_for`]); once its answer is encoded it gives
/// back what the answer does not need, and the rest once the answer is written. A request
/// that does not fit waits, and the connection is not read meanwhile (the client's own
/// sends then block in TCP): so a connection that asks for a thousand 1 MiB values and
/// never reads its answers holds at most its budget (review of issue 18: 859 MiB before).
/// A connection whose answers wait `limits.slow_reader_timeout_ms` to be written is closed,
/// giving its budget back.
async fn serve_connection(
    stream: tls::BoxStream,
    who: Peer,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    let (reader, writer) = tokio::io::split(stream);
    // The writer cuts the reading off when it gives up (a slow reader): an abortable stream,
    // a flag and a waker, nothing per frame but an atomic load.
    let (cut, registration) = futures_util::stream::AbortHandle::new_pair();
    let mut frames = futures_util::stream::Abortable::new(
        FramedRead::new(reader, frame::codec(shared.config.frame_limit())),
        registration,
    );
    let limits = &shared.config.limits;
    let (answers, outgoing) = mpsc::channel::<Answer>(limits.max_inflight_per_connection);
    spawn_writer(writer, outgoing, cut, &shared);
    let budget = ConnectionBudget {
        bytes: Arc::new(Semaphore::new(limits.max_connection_bytes)),
        inflight: Arc::new(Semaphore::new(limits.max_inflight_per_connection)),
    };
    let mut watches = ConnectionWatches::default();
    loop {
        // `None` at the end of the stream, or once the writer gave up (a slow reader).
        let Some(bytes) = frames.next().await else {
            return Ok(());
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            // A peer that went away (a TLS peer closing without close_notify, a reset) is
            // no bad frame.
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(Error::Frame(e.to_string())),
        };
        let request_bytes = bytes.len();
        let frame = match frame::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                if frame::other_version(&bytes).is_some() {
                    Stats::add(&shared.stats.other_version_frames, 1);
                    // Queued before the connection closes: the writer drains it first.
                    let refusal = Answer {
                        bytes: frame::version_refusal(),
                        _budget: None,
                    };
                    let _ = answers.send(refusal).await;
                }
                return Err(e);
            }
        };
        drop(bytes);
        let Some(frame) = admit(frame, &who, &shared, &answers).await else {
            continue;
        };
        let call = match frame {
            // A ping is answered at once, before any budget is waited for: it asks whether the
            // node is up (the client's silence check, `client::Silence`), which a node that is
            // only busy is. (A frame read before it that waits for budget still holds it.)
            Frame::Request(request) if request.body == RequestBody::Ping => {
                let response = shared.router.serve(request).await;
                let answer = Answer {
                    bytes: frame::encode(&Frame::Response(response)),
                    _budget: None,
                };
                if answers.send(answer).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Frame::Request(request) if ConnectionWatches::serves(&request.body) => {
                watches.serve(request, &budget, &shared, &answers).await;
                continue;
            }
            Frame::Peer(envelope) => {
                deliver_peer_frame(envelope, request_bytes, &shared);
                continue;
            }
            Frame::Request(request) => Call::Client(request),
            Frame::Call(call) => Call::Node(call),
            Frame::Response(_) | Frame::Answer(_) => {
                return Err(Error::Frame("a node does not take answers".into()));
            }
        };
        serve_call(call, request_bytes, &budget, &shared, &answers).await;
    }
}

/// A connection's own budgets: bytes of requests and answers in flight, and requests.
struct ConnectionBudget {
    bytes: Arc<Semaphore>,
    inflight: Arc<Semaphore>,
}

/// Writes a connection's answers, in order, until the connection or `outgoing` closes, or
/// an answer waits `limits.slow_reader_timeout_ms` to be written (a slow reader); then cuts
/// the reading off.
fn spawn_writer(
    mut writer: tokio::io::WriteHalf<tls::BoxStream>,
    mut outgoing: mpsc::Receiver<Answer>,
    cut: futures_util::stream::AbortHandle,
    shared: &Shared,
) {
    let stall = Duration::from_millis(shared.config.limits.slow_reader_timeout_ms);
    let stats = shared.stats.clone();
    actix_rt::spawn(async move {
        if let Err(e) = frame::write_queue(&mut writer, &mut outgoing, Some(stall)).await {
            if e.kind() == std::io::ErrorKind::TimedOut {
                limited(&stats, "slow_reader");
                log::warn!("closing a connection whose reader stopped: {e}");
            }
        }
        // The reading stops, and dropping `outgoing` gives back the budget of every answer
        // still queued.
        cut.abort();
    });
}

/// `frame` if it is valid and its sender (`who`, as its certificate says) may send it;
/// otherwise it is dropped and counted (a client's request answered with why), and the
/// connection goes on.
async fn admit(
    frame: Frame,
    who: &Peer,
    shared: &Shared,
    answers: &mpsc::Sender<Answer>,
) -> Option<Frame> {
    if let Err(e) = frame.validate(&shared.config) {
        // Well framed but wrong: drop this frame only; the connection goes on.
        let count = Stats::add_get(&shared.stats.bad_frames, 1);
        if count.is_power_of_two() {
            log::warn!("dropped a frame ({count} so far): {e}");
        }
        return None;
    }
    let is_member = |id| shared.view.get().is_none_or(|m| m.member(id).is_some());
    let Err(e) = who.admits(&frame, is_member) else {
        return Some(frame);
    };
    // Authenticated as someone who may not say this: drop it; the connection goes on. A
    // client request is answered, so that its sender learns why.
    let count = Stats::add_get(&shared.stats.forged_frames, 1);
    if count.is_power_of_two() {
        log::warn!("refused a forged frame ({count} so far): {e}");
    }
    if let Frame::Request(request) = frame {
        let answer = Frame::Response(crate::messages::ClientResponse {
            id: request.id,
            result: Err(Error::BadRequest(format!("not permitted: {e}"))),
        });
        let answer = Answer {
            bytes: frame::encode(&answer),
            _budget: None,
        };
        let _ = answers.send(answer).await;
    }
    None
}

/// Hands a peer's Paxos frame to its key's actor (or the supervisor), or drops it (Paxos
/// treats it as lost and retries): from a node that is no member, or when the inbox's byte
/// budget is spent.
fn deliver_peer_frame(envelope: Envelope, request_bytes: usize, shared: &Shared) {
    // Only members speak Paxos; a removed node that comes back on its old data is refused
    // here (and told by `Stale` once it asks with its old epoch).
    let member = shared
        .view
        .get()
        .is_some_and(|m| m.member(envelope.from).is_some());
    if !member {
        let count = Stats::add_get(&shared.stats.bad_frames, 1);
        if count.is_power_of_two() {
            log::warn!(
                "refused a Paxos frame from node {}, not a member of epoch {} ({count} \
                 refused so far)",
                envelope.from,
                shared.view.epoch()
            );
        }
        return;
    }
    // An announcement goes to this node's watchers straight: the supervisor's mailbox sheds
    // load, and a lost announcement is a gap its watchers must then report.
    if let crate::messages::PeerMessage::Chosen { changes } = envelope.body {
        if crate::paxos::admission::same_cluster(shared.view.cluster(), envelope.cluster) {
            shared.router.watch_hub().publish(envelope.key, changes);
        } else {
            Stats::add(&shared.stats.foreign_frames, 1);
        }
        return;
    }
    // The mailboxes a peer's frame waits in (its key's actor's, and the supervisor's first
    // when the key has no live actor) are bounded in bytes: a frame that does not fit is
    // dropped.
    let limit = shared.config.limits.max_inbox_bytes;
    let Some(inbox) = HeldBytes::take(&shared.inbox_bytes, request_bytes, limit) else {
        limited(&shared.stats, "inbox_bytes");
        Stats::add(&shared.stats.peer_frames_dropped, 1);
        return;
    };
    if !(shared.deliver)(Deliver(envelope, Some(inbox))) {
        Stats::add(&shared.stats.peer_frames_dropped, 1);
    }
}

/// Serves a client's request or a node's call once its bytes fit the connection's and the
/// node's budgets (waiting, and not reading the connection, until they do), and queues its
/// answer.
async fn serve_call(
    call: Call,
    request_bytes: usize,
    budget: &ConnectionBudget,
    shared: &Arc<Shared>,
    answers: &mpsc::Sender<Answer>,
) {
    let reserved = reserved_for(&call, request_bytes, &shared.config);
    let mine = take(&budget.bytes, reserved, &shared.stats, "connection_bytes").await;
    let node = take(&shared.node_bytes, reserved, &shared.stats, "node_bytes").await;
    let permit = budget
        .inflight
        .clone()
        .acquire_owned()
        .await
        .expect("never closed");
    actix_rt::spawn(answer_call(
        call,
        Held {
            reserved,
            mine,
            node,
            permit,
        },
        shared.clone(),
        answers.clone(),
    ));
}

/// What a call holds while it is served: its bytes of both budgets, and its place among the
/// connection's requests in flight.
struct Held {
    reserved: usize,
    mine: OwnedSemaphorePermit,
    node: OwnedSemaphorePermit,
    permit: OwnedSemaphorePermit,
}

/// Serves one call and queues its answer: the task [`serve_call`] spawns per request. Its
/// future is allocated and moved per request, at the size of the largest branch it could
/// take, so what is rare and large is boxed (here a node's call; in [`Router::serve`], all
/// but a key's command). `tests::a_key_request_task_stays_small` holds it to that.
async fn answer_call(call: Call, held: Held, shared: Arc<Shared>, answers: mpsc::Sender<Answer>) {
    let Held {
        reserved,
        mut mine,
        mut node,
        permit,
    } = held;
    // A node's call (a listing's scan, anti-entropy) is boxed: its future is larger than a
    // client request's.
    let answer = match call {
        Call::Client(request) => Frame::Response(shared.router.serve(request).await),
        Call::Node(call) => Frame::Answer(Box::pin(shared.calls.serve(call)).await),
    };
    let bytes = frame::encode(&answer);
    // Give back what the answer does not need (its request is served).
    let keep = bytes.len().min(reserved);
    drop(mine.split(reserved - keep));
    drop(node.split(reserved - keep));
    let answer = Answer {
        bytes,
        _budget: Some((mine, node)),
    };
    let _ = answers.send(answer).await;
    drop(permit);
}

/// The watches of one connection, by their request's id: a watch is a request with many
/// answers (`Reply::Watch`, the same id, until `WatchEvent::Ended`), written among the
/// connection's other answers. Each one's answers take the connection's and the node's byte
/// budgets as any answer does, so a connection that stops reading stalls its watches, whose
/// buffers then fill, and the node ends them (`actors::watch`); they end with the connection.
#[derive(Default)]
struct ConnectionWatches {
    /// Dropping or firing one ends that watch.
    live: rustc_hash::FxHashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

impl ConnectionWatches {
    fn serves(body: &RequestBody) -> bool {
        matches!(
            body,
            RequestBody::Watch { .. } | RequestBody::Unwatch { .. }
        )
    }

    /// Starts or ends a watch; answers at once only an `Unwatch` or a watch refused.
    async fn serve(
        &mut self,
        request: ClientRequest,
        budget: &ConnectionBudget,
        shared: &Arc<Shared>,
        answers: &mpsc::Sender<Answer>,
    ) {
        self.live.retain(|_, stop| !stop.is_closed());
        let result = match request.body {
            RequestBody::Watch { key, prefix } => {
                match self.start(request.id, key, prefix, budget, shared, answers) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            RequestBody::Unwatch { watch } => {
                if let Some(stop) = self.live.remove(&watch) {
                    let _ = stop.send(());
                }
                Ok(Reply::Unwatched)
            }
            _ => Err(Error::BadRequest("not a watch".into())),
        };
        let answer = Frame::Response(ClientResponse {
            id: request.id,
            result,
        });
        let answer = Answer {
            bytes: frame::encode(&answer),
            _budget: None,
        };
        let _ = answers.send(answer).await;
    }

    fn start(
        &mut self,
        id: u64,
        key: Vec<u8>,
        prefix: bool,
        budget: &ConnectionBudget,
        shared: &Arc<Shared>,
        answers: &mpsc::Sender<Answer>,
    ) -> Result<(), Error> {
        let limit = shared.config.limits.max_watchers_per_connection;
        if self.live.len() >= limit {
            return Err(Error::Busy(format!(
                "this connection holds {limit} watches already \
                 (limits.max_watchers_per_connection)"
            )));
        }
        if self.live.contains_key(&id) {
            return Err(Error::BadRequest(format!("watch {id} runs already")));
        }
        let hub = shared.router.watch_hub();
        let watch = hub.add(key, prefix)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        self.live.insert(id, stop);
        let sender = WatchSender {
            id,
            answers: answers.clone(),
            connection: budget.bytes.clone(),
            shared: shared.clone(),
        };
        actix_rt::spawn(sender.run(watch, hub, stopped));
        Ok(())
    }
}

/// Writes one watch's answers into its connection.
struct WatchSender {
    id: u64,
    answers: mpsc::Sender<Answer>,
    connection: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl WatchSender {
    /// `Started` once every member announces to this node (or it could not be confirmed),
    /// then each announcement, then `Ended`; stops early if the connection goes.
    async fn run(
        self,
        mut watch: crate::actors::watch::Watch,
        hub: Arc<crate::actors::watch::WatchHub>,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
    ) {
        let confirmed = tokio::select! {
            confirmed = hub.confirm() => confirmed,
            _ = &mut stopped => return,
        };
        if !self.send(0, || WatchEvent::Started { confirmed }).await {
            return;
        }
        let reason = loop {
            tokio::select! {
                next = watch.next() => match next {
                    Some(a) => {
                        let event = || WatchEvent::Changed {
                            key: a.key.clone(),
                            changes: a.changes.clone(),
                        };
                        if !self.send(a.bytes(), event).await {
                            return;
                        }
                    }
                    None => break watch.end_reason().unwrap_or_else(|| "ended by the node".into()),
                },
                _ = &mut stopped => break "cancelled".into(),
            }
        };
        self.send(reason.len(), || WatchEvent::Ended {
            reason: reason.clone(),
        })
        .await;
    }

    /// Queues one answer within the budgets; false once the connection is gone. The budgets
    /// are taken before the answer is made (`bytes`: what it holds, its framing besides), so
    /// that a thousand watches of a key waiting for a slow connection hold one copy of each
    /// change between them, not one each.
    async fn send(&self, bytes: usize, event: impl FnOnce() -> WatchEvent) -> bool {
        let stats = &self.shared.stats;
        let reserved = bytes + SMALL_ANSWER_OVERHEAD;
        let mut mine = take(&self.connection, reserved, stats, "connection_bytes").await;
        let mut node = take(&self.shared.node_bytes, reserved, stats, "node_bytes").await;
        let answer = Frame::Response(ClientResponse {
            id: self.id,
            result: Ok(Reply::Watch(event())),
        });
        let encoded = frame::encode(&answer);
        drop(answer);
        if encoded.len() > reserved {
            let more = encoded.len() - reserved;
            mine.merge(take(&self.connection, more, stats, "connection_bytes").await);
            node.merge(take(&self.shared.node_bytes, more, stats, "node_bytes").await);
        }
        let answer = Answer {
            bytes: encoded,
            _budget: Some((mine, node)),
        };
        self.answers.send(answer).await.is_ok()
    }
}

/// The framing of a watch's answer around the bytes its change holds.
const SMALL_ANSWER_OVERHEAD: usize = 64;

/// Did the other end just go away (rather than send something malformed)?
fn gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// A request that is answered on its connection.
enum Call {
    Client(crate::messages::ClientRequest),
    Node(crate::messages::NodeCall),
}

/// Keeps one connection to a peer and writes its queue into it: after a connection that
/// carried frames is lost, it connects again at once; after a failed connect, or a peer that
/// refused the link for its protocol version, it waits a backoff that doubles up to
/// [`RECONNECT_BACKOFF_MAX`] (so a peer of another build is dialled about once a second, not
/// once a frame).
async fn peer_writer(mut queue: PeerQueue, tls: Option<Arc<Tls>>) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut last_warning: Option<Instant> = None;
    loop {
        if queue.frames.is_closed() {
            return; // the peer left the membership
        }
        let connected = match TcpStream::connect(queue.addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                tls::dial(tls.as_deref(), stream, Dial::Node(queue.node)).await
            }
            Err(e) => Err(e),
        };
        let stream = match connected {
            Ok(stream) => {
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
        let (reader, mut writer) = tokio::io::split(stream);
        tokio::select! {
            written = frame::write_queue(&mut writer, &mut queue.frames, None) => match written {
                Ok(()) => return,
                Err(e) => {
                    // It carried frames until now: connect again at once.
                    log::warn!("connection to node {} lost: {e}", queue.node);
                    backoff = RECONNECT_BACKOFF_MIN;
                }
            },
            version = refusal(reader) => {
                // A peer of another build: it answers every connection so, so this one waits
                // out the backoff before the next (and says why, every 10 s at most).
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::error!(
                        "node {} at {} refused this node's frames: {}",
                        queue.node,
                        queue.addr,
                        frame::mismatch(version)
                    );
                    last_warning = Some(Instant::now());
                }
                while queue.frames.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

/// The protocol version a peer link's peer refused it with ([`frame::version_refusal`]): a
/// peer never answers on a link it did not open, so nothing else is read there. Pending for
/// as long as the peer says nothing of the kind.
async fn refusal(reader: tokio::io::ReadHalf<tls::BoxStream>) -> u32 {
    let mut frames = FramedRead::new(reader, frame::codec(SMALL_ANSWER_OVERHEAD));
    while let Some(Ok(body)) = frames.next().await {
        if let Some(version) = frame::other_version(&body) {
            return version;
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns (never called: only its type is looked at).
    fn future_size<A, F: std::future::Future>(_make: &impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every get and put spawns [`answer_call`]'s future, allocated and moved at its full
    /// size. With a membership change's and a lease's states inline (the router's one big
    /// match) it was over 3.5 KiB, and copying it was about 4 % of a get's node CPU
    /// (BENCHMARKS.md, issue 23); now 896 bytes. The bounds leave room for the layout to
    /// move between compilers; a rare, large branch brought back inline breaks them.
    #[test]
    fn a_key_request_task_stays_small() {
        let task = future_size(&|(call, held, shared, answers): (
            Call,
            Held,
            Arc<Shared>,
            mpsc::Sender<Answer>,
        )| { answer_call(call, held, shared, answers) });
        assert!(task <= 1536, "answer_call's future is {task} bytes");
        let serve = future_size(
            &|(router, request): (Router, crate::messages::ClientRequest)| async move {
                router.serve(request).await
            },
        );
        assert!(serve <= 1024, "Router::serve's future is {serve} bytes");
    }
}
