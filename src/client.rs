//! The async paxkv client, used by the CLI, the benchmark and the tests.
//!
//! - One connection per node, opened on first use; many requests in flight on it, matched to
//!   their responses by request id.
//! - Any node can coordinate any request; the client sends each key to one node chosen by a
//!   hash of the key while that node is healthy (so the key's proposer there stays warm and
//!   writes take one round trip), and to the next ones when it is down, slow or unavailable,
//!   until the operation's deadline.
//! - A node that failed (an attempt timed out, its connection broke or could not be made) is
//!   skipped by every request of this client until it answers a `Ping` again: one task per
//!   such node asks it every [`PROBE_INTERVAL`]. A node that is paused, or cut off without a
//!   reset, so costs the attempts already waiting on it when it stopped, once, and not one
//!   attempt timeout per [`NODE_AVOID_TIME`] for as long as it is gone.
//! - A node that stops answering is noticed sooner than the attempt timeout (4 s): a
//!   connection whose requests wait and which has heard nothing for [`SILENCE_BEFORE_PING`]
//!   pings the node (answered by the node itself, not the cluster, so a node that is only
//!   slow answers it at once), and is given up [`SILENCE_PING_TIMEOUT`] later if nothing came
//!   back. Its requests are then lost attempts, retried on the next node (a write as "maybe
//!   applied", which its id makes safe). A paused node so costs about 1.5 s, once. A pinned
//!   client (one node only) does neither: it waits out its attempt timeout.
//!   - A node answers a ping before waiting for any budget, but it reads a connection's frames
//!     in order: on a connection whose byte budget is spent by requests that each wait more
//!     than 1.5 s (a minority cut off, every request waiting for its 3 s timeout), the ping is
//!     read late and the connection is given up as silent. Its requests are then retried
//!     elsewhere while the node may still run them: safe (write ids), but extra work, in a
//!     case where they would have been answered "unavailable" anyway.
//! - Every write carries a [`RequestId`] that stays the same across retries, so retrying a
//!   write whose outcome was unknown never applies it twice. An operation that may have taken
//!   effect but could not be confirmed before the deadline ends in [`Error::Unknown`]; one that
//!   certainly did not, in [`Error::Unavailable`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::{Error, ErrorClass, Result};
use crate::frame;
use crate::messages::{
    ClientRequest, ClientResponse, DigestPage, FaultPlan, Frame, LeaseInfo, ListPage,
    MembershipAnswer, NodeAnswer, NodeCall, NodeReply, NodeRequest, NodeStatus, Reply, RequestBody,
    SyncRecord, WatchEvent,
};
use crate::paxos::types::{key_hash, Command, Outcome, RequestId, WriteIdMint};
use crate::tls::{self, Dial, Tls};

/// Requests queued for one connection's writer.
const CONNECTION_QUEUE_CAPACITY: usize = 4_096;
/// The largest response a client reads (a value of up to 64 MiB and its framing).
const CLIENT_MAX_FRAME_BYTES: usize = 65 << 20;
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How long a node that could not be reached is skipped by other requests; kept skipped
/// while its prober's pings go unanswered.
const NODE_AVOID_TIME: Duration = Duration::from_secs(1);
/// How often a skipped node is pinged, and how long each ping may take.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection with requests waiting that has received nothing for this long sends the node
/// a ping; if nothing at all arrives within [`SILENCE_PING_TIMEOUT`] of it, the connection is
/// closed and its requests are lost (retried elsewhere), rather than each waiting out its
/// attempt timeout. Checked every [`SILENCE_CHECK`].
const SILENCE_BEFORE_PING: Duration = Duration::from_millis(500);
const SILENCE_PING_TIMEOUT: Duration = Duration::from_secs(1);
const SILENCE_CHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one operation may take, retries included.
    pub op_timeout: Duration,
    /// How long one attempt on one node may take before the client tries the next node.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Send to the first address only, never to another.
    pub pinned: bool,
    /// TLS with this identity (`[tls]` of the config; `None`: plaintext). A node's own
    /// calls to its peers use the node's certificate, the CLI the client's.
    pub tls: Option<Arc<Tls>>,
    /// With TLS: the node expected at each address, in the same order (a node's calls to
    /// its peers): its certificate must name that node. Empty: any node certificate for the
    /// address's IP (a client, which does not know which node listens where).
    pub nodes: Vec<crate::paxos::types::NodeId>,
    /// The cluster identity a node's calls to its peers carry (`messages::NodeCall`); 0 for
    /// a tool, or a node with no membership yet.
    pub cluster: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            op_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(1),
            pinned: false,
            tls: None,
            nodes: Vec::new(),
            cluster: 0,
        }
    }
}

/// A cheap-to-clone handle; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<SocketAddr>,
    options: ClientOptions,
    /// Per node: until when (ms since `epoch`) to avoid it after it failed; 0 = healthy.
    avoid_until_ms: Vec<AtomicU64>,
    /// Per node: a task pings it (`Client::probe`).
    probing: Vec<AtomicBool>,
    epoch: Instant,
    connections: Mutex<HashMap<usize, Arc<Connection>>>,
    write_ids: WriteIdMint,
}

/// The result of one attempt on one node.
enum Attempt {
    Done(Result<Reply>),
    /// The connection failed or the attempt timed out: the request may have been received.
    Lost(String),
}

impl Client {
    pub fn new(addrs: Vec<SocketAddr>, options: ClientOptions) -> Client {
        assert!(
            !addrs.is_empty(),
            "a client needs at least one node address"
        );
        Client {
            inner: Arc::new(Inner {
                avoid_until_ms: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
                probing: addrs.iter().map(|_| AtomicBool::new(false)).collect(),
                epoch: Instant::now(),
                addrs,
                options,
                connections: Mutex::new(HashMap::new()),
                write_ids: WriteIdMint::new(rand::random()),
            }),
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Outcome> {
        self.execute(key, Command::Get).await
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Outcome> {
        let value = value.to_vec();
        self.execute(key, Command::Put { value }).await
    }

    pub async fn delete(&self, key: &[u8]) -> Result<Outcome> {
        self.execute(key, Command::Delete).await
    }

    /// Deletes the value only if the key's version is `expect` (`Outcome::Delete`, with
    /// `deleted: false` and the current version otherwise).
    pub async fn delete_if(&self, key: &[u8], expect: u64) -> Result<Outcome> {
        self.execute(key, Command::DeleteIf { expect }).await
    }

    pub async fn cas(&self, key: &[u8], value: &[u8], expect: u64) -> Result<Outcome> {
        let value = value.to_vec();
        self.execute(key, Command::Cas { expect, value }).await
    }

    /// Puts `value` (`expect: None`), or sets it if the version is `expect` (as
    /// [`Client::cas`]), attached to lease `lease`: deleted when the lease expires or is
    /// revoked (`paxos::lease`). [`Error::NotFound`] when the lease is gone (nothing
    /// written).
    pub async fn put_leased(
        &self,
        key: &[u8],
        value: &[u8],
        expect: Option<u64>,
        lease: u64,
    ) -> Result<Outcome> {
        self.put_leased_as(key, value, expect, lease, None, false)
            .await
    }

    /// [`Client::put_leased`] under a write id the caller keeps (`None`: a new one), as
    /// [`Client::execute_as`].
    pub async fn put_leased_as(
        &self,
        key: &[u8],
        value: &[u8],
        expect: Option<u64>,
        lease: u64,
        write_id: Option<RequestId>,
        maybe_applied: bool,
    ) -> Result<Outcome> {
        let write_id = write_id.unwrap_or_else(|| self.inner.write_ids.mint());
        let body = |retry: bool| RequestBody::LeasedWrite {
            key: key.to_vec(),
            value: value.to_vec(),
            expect,
            lease,
            write_id,
            maybe_applied: retry,
        };
        match self
            .retrying(self.home_of(key), true, maybe_applied, body)
            .await?
        {
            Reply::Kv(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// The keys attached to lease `id` (`None`: there is no such lease).
    pub async fn lease_keys(&self, id: u64) -> Result<Option<Vec<Vec<u8>>>> {
        let home = self.home_of(&crate::paxos::lease::lease_key(id));
        match self
            .retrying(home, false, false, |_| RequestBody::LeaseKeys { id })
            .await?
        {
            Reply::LeaseKeys(keys) => {
                Ok(keys.map(|k| k.into_iter().map(|k| k.into_vec()).collect()))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Runs one command with retries across nodes until it succeeds, fails for good, or its
    /// deadline passes.
    pub async fn execute(&self, key: &[u8], command: Command) -> Result<Outcome> {
        let write_id = command.is_write().then(|| self.inner.write_ids.mint());
        self.execute_as(key, command, write_id, false).await
    }

    /// [`Client::execute`] of a write whose id the caller keeps (the HTTP API's
    /// `Idempotency-Key`, `actors::idempotency`): `maybe_applied` says an earlier attempt
    /// with this id may have taken effect, so that a register that forgot it refuses it
    /// rather than apply it twice.
    pub async fn execute_as(
        &self,
        key: &[u8],
        command: Command,
        write_id: Option<RequestId>,
        maybe_applied: bool,
    ) -> Result<Outcome> {
        let write = command.is_write();
        let body = |maybe_applied| RequestBody::Kv {
            key: key.to_vec(),
            command: command.clone(),
            write_id,
            maybe_applied,
        };
        match self
            .retrying(self.home_of(key), write, maybe_applied, body)
            .await?
        {
            Reply::Kv(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// A new lease of `ttl` (whole milliseconds; `paxos::lease`). A grant whose answer was
    /// lost may have made a lease nobody holds: it lapses after its TTL.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo> {
        // Saturated, not wrapped: a TTL past 2^64 ms must stay out of range, which the node
        // answers as bad input (a cast would turn 2^64 ms + 10 s into a valid 10 s).
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // Chosen here, so that the grant goes to the home node of the lease's key.
        let id = rand::random::<u64>().max(1);
        let body = |_| RequestBody::LeaseGrant { ttl_ms, id };
        match self.lease_request(id, true, body).await? {
            Some(lease) => Ok(lease),
            None => Err(Error::Unknown("a grant answered no lease".into())),
        }
    }

    /// Keeps lease `id` alive: the lease (`None`: it is gone: expired, revoked or never
    /// granted). A caller counts its lease from the moment it *sent* this, not from the
    /// answer (`paxos::lease`).
    pub async fn lease_keepalive(&self, id: u64) -> Result<Option<LeaseInfo>> {
        self.lease_request(id, true, |_| RequestBody::LeaseKeepAlive { id })
            .await
    }

    /// Revokes lease `id`: the lease it was (`None`: there was none).
    pub async fn lease_revoke(&self, id: u64) -> Result<Option<LeaseInfo>> {
        self.lease_request(id, true, |_| RequestBody::LeaseRevoke { id })
            .await
    }

    /// Lease `id` as it is (`None`: there is none).
    pub async fn lease_show(&self, id: u64) -> Result<Option<LeaseInfo>> {
        self.lease_request(id, false, |_| RequestBody::LeaseShow { id })
            .await
    }

    /// A lease request, to the home node of the lease's key.
    async fn lease_request(
        &self,
        id: u64,
        write: bool,
        body: impl Fn(bool) -> RequestBody,
    ) -> Result<Option<LeaseInfo>> {
        let home = self.home_of(&crate::paxos::lease::lease_key(id));
        match self.retrying(home, write, false, body).await? {
            Reply::Lease(lease) => Ok(lease),
            other => Err(unexpected(other)),
        }
    }

    /// One page of the live keys that start with `prefix`, after `after`, in byte order (at
    /// most `limit`; 0: the cluster's default page size), with their values unless
    /// `keys_only`. Each item is a state chosen at some moment within the call; pages are
    /// not a snapshot across keys (see `actors::list`). Retried across nodes as a read.
    pub async fn list(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        keys_only: bool,
    ) -> Result<ListPage> {
        let body = |_| RequestBody::List {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit,
            keys_only,
        };
        match self
            .retrying(self.home_of(prefix), false, false, body)
            .await?
        {
            Reply::Listed(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// [`Client::list`] with deleted keys too (`value: None`): every key's version, which is
    /// where a prefix watch starts (`crate::watch`).
    pub async fn list_versions(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<ListPage> {
        let body = |_| RequestBody::ListVersions {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit,
        };
        match self
            .retrying(self.home_of(prefix), false, false, body)
            .await?
        {
            Reply::Listed(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a watch of `key` on node `index`: its answers once the node confirmed it
    /// (`Started`). Its answers not taken yet are bounded by `buffer_bytes` (past it the
    /// session ends), but [`STREAM_MIN_ANSWERS`] pass whatever their size.
    pub(crate) async fn open_watch(
        &self,
        index: usize,
        key: &[u8],
        prefix: bool,
        buffer_bytes: usize,
    ) -> Result<WatchSession> {
        let conn = self
            .connection(index)
            .await
            .inspect_err(|_| self.avoid(index))?;
        let body = RequestBody::Watch {
            key: key.to_vec(),
            prefix,
        };
        let call = |id| Frame::Request(ClientRequest { id, body });
        let (id, answers) = conn.stream(call, buffer_bytes).await.map_err(|lost| {
            self.forget(index, &conn);
            self.avoid(index);
            Error::Unavailable(lost)
        })?;
        let mut session = WatchSession { conn, id, answers };
        let first = tokio::time::timeout(self.inner.options.attempt_timeout, session.next()).await;
        match first {
            Ok(Some(Ok(WatchEvent::Started { confirmed }))) => {
                if !confirmed {
                    log::info!(
                        "node {} could not confirm that every member announces to it: \
                         changes some members choose may reach this watch only as gaps",
                        self.inner.addrs[index]
                    );
                }
                Ok(session)
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(other))) => Err(Error::Unavailable(format!(
                "the watch began with {other:?}"
            ))),
            Ok(None) => Err(Error::Unavailable(format!(
                "connection to {} lost",
                self.inner.addrs[index]
            ))),
            Err(_) => {
                self.avoid(index);
                Err(Error::Unavailable(format!(
                    "node {} did not start the watch within {:?}",
                    self.inner.addrs[index], self.inner.options.attempt_timeout
                )))
            }
        }
    }

    /// Sends the request `body(maybe_applied)` makes, from node `home` on, with retries
    /// across nodes until a node answers it, it fails for good, or its deadline passes. A
    /// `write`'s later attempts say whether an earlier one may have taken effect.
    /// `maybe_applied`: an attempt before this call may have taken effect.
    async fn retrying(
        &self,
        home: usize,
        write: bool,
        mut maybe_applied: bool,
        body: impl Fn(bool) -> RequestBody,
    ) -> Result<Reply> {
        let deadline = Instant::now() + self.inner.options.op_timeout;
        let mut last_error = String::from("no attempt finished");
        // `last_error` is a node's answer (not a timeout or a lost connection).
        let mut from_node = false;
        // ... and that answer was `Busy` (a key's queue full): said so at the deadline.
        let mut busy = false;
        let mut backoff = RETRY_BACKOFF_MIN;
        for attempt in 0.. {
            let now = Instant::now();
            if now >= deadline {
                return Err(match (maybe_applied, busy && from_node) {
                    (true, _) => Error::Unknown(last_error),
                    (false, true) => Error::Busy(last_error),
                    (false, false) => Error::Unavailable(last_error),
                });
            }
            let node = self.pick(home, attempt);
            let attempt_timeout = self.inner.options.attempt_timeout.min(deadline - now);
            // Every earlier attempt that may have taken effect is said so: a register that
            // forgot this client may then refuse the write rather than apply it twice.
            match self
                .attempt(node, body(maybe_applied), attempt_timeout)
                .await
            {
                Attempt::Done(Ok(reply)) => return Ok(reply),
                Attempt::Done(Err(e)) => match e.class() {
                    ErrorClass::BadInput => return Err(e),
                    // The one node a pinned client may ask cannot serve it (no member, no
                    // membership yet, its store refused) and did nothing: said at once, as
                    // `paxkv ... --node` of a node never added shows, instead of asking it
                    // again until the deadline. An unpinned client asks the next node.
                    ErrorClass::Retry
                        if self.inner.options.pinned && matches!(e, Error::NotThisNode(_)) =>
                    {
                        return Err(e)
                    }
                    class => {
                        // A storage fault on the node that ran it leaves the outcome unknown.
                        maybe_applied |= write && class != ErrorClass::Retry;
                        busy = matches!(e, Error::Busy(_));
                        (last_error, from_node) = (node_reason(e), true);
                    }
                },
                Attempt::Lost(m) => {
                    maybe_applied |= write;
                    // An attempt that only our own deadline cut short says nothing new: keep
                    // the reason a node gave (it may name a cause, such as a full disk).
                    let cut_short = attempt_timeout < self.inner.options.attempt_timeout;
                    if !(cut_short && from_node) {
                        last_error = m;
                        from_node = false;
                        self.avoid(node);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        unreachable!("the loop ends at the deadline")
    }

    /// Sends one request to node `index` (of the client's addresses), without retries.
    pub async fn request(&self, index: usize, body: RequestBody) -> Result<Reply> {
        match self
            .attempt(index, body, self.inner.options.attempt_timeout)
            .await
        {
            Attempt::Done(Ok(reply)) => Ok(reply),
            Attempt::Done(Err(e)) => Err(e),
            Attempt::Lost(m) => Err(Error::Unavailable(m)),
        }
    }

    /// Asks node `index` whether it is up.
    pub async fn ping(&self, index: usize) -> Result<()> {
        self.request(index, RequestBody::Ping).await.map(|_| ())
    }

    /// Node `index`'s counters.
    pub async fn status(&self, index: usize) -> Result<NodeStatus> {
        match self.request(index, RequestBody::Status).await? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the faults node `index` injects on its outgoing Paxos messages (the node's
    /// config must allow it).
    pub async fn set_faults(&self, index: usize, plan: FaultPlan) -> Result<()> {
        match self.request(index, RequestBody::SetFaults(plan)).await? {
            Reply::FaultsSet => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A call of one node to another: one [`NodeRequest`] to node `index`.
    /// The answer is checked first (`NodeAnswer::validate`): one that fails its checks is an
    /// unavailable node's, and nothing acts on it.
    pub async fn node_call(&self, index: usize, body: NodeRequest) -> Result<NodeReply> {
        let cluster = self.inner.options.cluster;
        let call = |id| Frame::Call(NodeCall { id, cluster, body });
        match self
            .call(index, call, self.inner.options.attempt_timeout)
            .await
        {
            Ok(Frame::Answer(answer)) => match answer.validate() {
                Ok(()) => answer.result,
                Err(e) => Err(Error::Unavailable(format!(
                    "{} answered with a frame that fails its checks: {}",
                    self.inner.addrs[index],
                    e.message()
                ))),
            },
            Ok(other) => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
            Err(Attempt::Done(result)) => result.and(Err(Error::Unavailable("no answer".into()))),
            Err(Attempt::Lost(m)) => Err(Error::Unavailable(m)),
        }
    }

    /// Anti-entropy: a page of node `index`'s digest.
    pub async fn digest_page(
        &self,
        index: usize,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<DigestPage> {
        match self
            .node_call(index, NodeRequest::Digest { after, limit })
            .await?
        {
            NodeReply::Digest(page) => Ok(page),
            other => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
        }
    }

    /// Anti-entropy: node `index`'s records of (a prefix of) `keys`.
    pub async fn fetch_records(&self, index: usize, keys: &[Vec<u8>]) -> Result<Vec<SyncRecord>> {
        let keys = keys
            .iter()
            .cloned()
            .map(serde_bytes::ByteBuf::from)
            .collect();
        match self.node_call(index, NodeRequest::Fetch { keys }).await? {
            NodeReply::Records(records) => Ok(records),
            other => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
        }
    }

    /// A client for the cluster's current members: the addresses this client was given may be
    /// old ones (a config file written before a membership change); any node that answers
    /// tells the current members (`RequestBody::Members`). This client itself if it has one
    /// address (pinned to that node on purpose), or if no node answers (its own errors then
    /// say why), or if the members are the same.
    pub async fn with_current_members(self) -> Client {
        if self.addrs().len() == 1 {
            return self;
        }
        for index in 0..self.addrs().len() {
            if let Ok(Reply::Members(MembershipAnswer {
                membership: Some(m),
                ..
            })) = self.request(index, RequestBody::Members).await
            {
                let addrs: Vec<SocketAddr> = m
                    .members
                    .iter()
                    .filter_map(|x| x.addr.parse().ok())
                    .collect();
                if addrs.is_empty() || addrs == self.addrs() {
                    return self;
                }
                let options = ClientOptions {
                    nodes: Vec::new(),
                    ..self.options().clone()
                };
                return Client::new(addrs, options);
            }
        }
        self
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    /// The node that coordinates `key` while it is healthy: always the same one, so that the
    /// key's proposer there keeps its promise (one round trip per write, CASPaxos §2.2.1)
    /// and proposers on different nodes do not duel over the key. Any node would do.
    pub(crate) fn home_of(&self, key: &[u8]) -> usize {
        if self.inner.options.pinned {
            return 0;
        }
        (key_hash(key) % self.inner.addrs.len() as u64) as usize
    }

    /// The node for the `attempt`-th try: from the home node onwards, the first that has not
    /// failed recently (the home node itself if every one has).
    pub(crate) fn pick(&self, home: usize, attempt: usize) -> usize {
        let n = self.inner.addrs.len();
        if self.inner.options.pinned {
            return 0;
        }
        let now_ms = self.inner.epoch.elapsed().as_millis() as u64;
        (0..n)
            .map(|i| (home + attempt + i) % n)
            .find(|&i| self.inner.avoid_until_ms[i].load(Ordering::Relaxed) <= now_ms)
            .unwrap_or((home + attempt) % n)
    }

    /// Avoids a node that failed, so that other requests skip it, until it answers a ping
    /// again ([`Client::probe`]).
    fn avoid(&self, node: usize) {
        self.avoid_for_now(node);
        // (A pinned client has no other node to skip to.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.options.pinned {
            return;
        }
        if !self.inner.probing[node].swap(true, Ordering::AcqRel) {
            runtime.spawn(Client::probe(Arc::downgrade(&self.inner), node));
        }
    }

    fn avoid_for(&self, node: usize, time: Duration) {
        let until = self.inner.epoch.elapsed() + time;
        let until = until.as_millis() as u64;
        self.inner.avoid_until_ms[node].fetch_max(until, Ordering::Relaxed);
    }

    fn avoid_for_now(&self, node: usize) {
        self.avoid_for(node, NODE_AVOID_TIME);
    }

    /// Pings `node` every [`PROBE_INTERVAL`] and keeps it avoided until it answers. Ends then,
    /// or once the client is dropped. Each ping extends the avoidance past the next one, with
    /// a margin of [`NODE_AVOID_TIME`] for a late wake-up: a prober that stops (its runtime
    /// ended) leaves the node avoided for that long at most.
    async fn probe(inner: std::sync::Weak<Inner>, node: usize) {
        // Ends the probing however the task ends (answered, client dropped, its runtime gone),
        // so that the next failure starts a new prober.
        struct Probing(std::sync::Weak<Inner>, usize);
        impl Drop for Probing {
            fn drop(&mut self) {
                if let Some(inner) = self.0.upgrade() {
                    inner.probing[self.1].store(false, Ordering::Release);
                }
            }
        }
        let _probing = Probing(inner.clone(), node);
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let client = Client { inner };
            client.avoid_for(node, PROBE_INTERVAL + PROBE_TIMEOUT + NODE_AVOID_TIME);
            if let Attempt::Done(Ok(_)) =
                client.attempt(node, RequestBody::Ping, PROBE_TIMEOUT).await
            {
                client.inner.avoid_until_ms[node].store(0, Ordering::Relaxed);
                return;
            }
        }
    }

    async fn attempt(&self, index: usize, body: RequestBody, timeout: Duration) -> Attempt {
        let call = |id| Frame::Request(ClientRequest { id, body });
        match self.call(index, call, timeout).await {
            Ok(Frame::Response(response)) => Attempt::Done(response.result),
            // A node that answers with the wrong kind of frame is broken: the request may
            // have been carried out, so this is a lost attempt (retried, maybe applied).
            Ok(other) => Attempt::Lost(format!("unexpected answer {other:?}")),
            Err(attempt) => attempt,
        }
    }

    /// Sends the frame `call(id)` to node `index` and waits for the answer with that id.
    async fn call(
        &self,
        index: usize,
        call: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> std::result::Result<Frame, Attempt> {
        let conn = match self.connection(index).await {
            Ok(conn) => conn,
            Err(e) => {
                self.avoid(index);
                return Err(Attempt::Done(Err(e)));
            }
        };
        match tokio::time::timeout(timeout, conn.call(call)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(lost)) => {
                self.forget(index, &conn);
                Err(lost)
            }
            Err(_) => Err(Attempt::Lost(format!(
                "node {} did not answer within {timeout:?}",
                self.inner.addrs[index]
            ))),
        }
    }

    async fn connection(&self, index: usize) -> Result<Arc<Connection>> {
        let dial = match self.inner.options.nodes.get(index) {
            Some(&node) => Dial::Node(node),
            None => Dial::Address(self.inner.addrs[index].ip()),
        };
        if let Some(conn) = self.inner.connections.lock().unwrap().get(&index) {
            if !conn.closed.load(Ordering::Relaxed) {
                return Ok(conn.clone());
            }
        }
        let addr = self.inner.addrs[index];
        let options = &self.inner.options;
        let conn = Arc::new(
            Connection::open(
                addr,
                options.connect_timeout,
                options.tls.as_deref(),
                dial,
                !options.pinned,
            )
            .await?,
        );
        let mut conns = self.inner.connections.lock().unwrap();
        // Another task may have connected meanwhile; keep one connection per node.
        let kept = conns
            .entry(index)
            .and_modify(|c| {
                if c.closed.load(Ordering::Relaxed) {
                    *c = conn.clone();
                }
            })
            .or_insert(conn);
        Ok(kept.clone())
    }

    fn forget(&self, index: usize, conn: &Arc<Connection>) {
        let mut conns = self.inner.connections.lock().unwrap();
        if conns.get(&index).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&index);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A node's error as the reason an operation failed: its message (the client's own error
/// says which class it ends in), but a storage fault keeps its "storage:" prefix, so that the
/// caller sees the cause.
fn node_reason(e: Error) -> String {
    match e {
        e @ Error::Storage(_) => e.to_string(),
        e => e.message().to_string(),
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Unknown(format!("unexpected reply {reply:?}"))
}

/// The callers waiting for answers, by frame id.
type Pending = Arc<Mutex<HashMap<u64, Waiter>>>;

/// Who waits for the answers of one id.
enum Waiter {
    /// One answer.
    Once(oneshot::Sender<Frame>),
    /// Many (a watch): kept until its last answer or the connection's end. Bounded: a caller
    /// that falls [`STREAM_CAPACITY`] answers or its stream's bytes (`WatchOptions::
    /// buffer_bytes`) behind loses its stream (it ends early, and a watch then resumes, saying
    /// the gap), so that one slow stream never stalls the connection's others. Counted by
    /// answers alone, 4,096 answers of changes of 1 MiB values held 4 GiB for one caller that
    /// stopped reading, in this process: the HTTP API's, for each of its watches (review,
    /// 2026-12-08).
    Stream(StreamSender),
}

/// Answers one stream may have waiting for its caller.
const STREAM_CAPACITY: usize = 4_096;

/// Answers a stream takes whatever their bytes: a change announced in two frames (the state
/// read and the write, each up to a value) arrives back to back, before the caller can take
/// the first, and must not end the stream of a caller that keeps up.
const STREAM_MIN_ANSWERS: usize = 4;

/// The sending side of a stream's answers, counting the bytes its caller has not taken.
struct StreamSender {
    answers: mpsc::Sender<(Frame, usize)>,
    held: Arc<AtomicUsize>,
    /// The most bytes it holds ([`STREAM_MIN_ANSWERS`] may be more).
    most: usize,
}

impl StreamSender {
    /// Passes `answer` (`size` bytes as it came) to the caller; false when the caller fell
    /// too far behind (the stream then ends).
    fn offer(&self, answer: Frame, size: usize) -> bool {
        let held = self.held.load(Ordering::Relaxed);
        let queued = self.answers.max_capacity() - self.answers.capacity();
        if queued >= STREAM_MIN_ANSWERS && held + size > self.most {
            return false;
        }
        self.held.fetch_add(size, Ordering::Relaxed);
        self.answers.try_send((answer, size)).is_ok()
    }
}

/// The caller's side of a stream's answers.
struct StreamAnswers {
    answers: mpsc::Receiver<(Frame, usize)>,
    held: Arc<AtomicUsize>,
}

impl StreamAnswers {
    async fn recv(&mut self) -> Option<Frame> {
        let (answer, size) = self.answers.recv().await?;
        self.held.fetch_sub(size, Ordering::Relaxed);
        Some(answer)
    }
}

/// One connection to one node, with many requests in flight.
struct Connection {
    addr: SocketAddr,
    plaintext: bool,
    frames: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    /// Why the node refused this connection, when it speaks another protocol version
    /// (`crate::frame`): no retry helps, and every call on it fails with this.
    refused: Arc<std::sync::OnceLock<String>>,
    next_id: AtomicU64,
    /// Dropped with the connection: ends its reader task, and so closes the socket.
    _stop: oneshot::Sender<()>,
}

impl Connection {
    async fn open(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&Tls>,
        dial: Dial,
        // Give the connection up when the node falls silent (`Silence`): not for a pinned
        // client, which has no other node to go on with and waits out its attempt timeout.
        watch_silence: bool,
    ) -> Result<Connection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Unavailable(format!("connecting to {addr} timed out")))?
            .map_err(|e| Error::Unavailable(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let stream = tls::dial(tls, stream, dial)
            .await
            .map_err(|e| Error::Unavailable(format!("TLS with {addr}: {e}")))?;
        let (reader, mut writer) = tokio::io::split(stream);
        let (frames, mut outgoing) = mpsc::channel::<Bytes>(CONNECTION_QUEUE_CAPACITY);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(std::sync::OnceLock::new());
        // The socket closes when both halves are dropped: the writer's when the last sender
        // (this `Connection`) is gone, the reader's when `stop` fires, which dropping the
        // `Connection` does too. Without it a reader waits on a server that never speaks
        // first, and every connection a dropped client opened stays open (a node waiting to
        // be re-added opened ~3 a second to every peer, and exhausted their connection
        // slots: review of issue 11).
        let (stop, mut stopped) = oneshot::channel::<()>();

        tokio::spawn(async move {
            let _ = frame::write_queue(&mut writer, &mut outgoing, None).await;
        });
        let (reader_pending, reader_closed) = (pending.clone(), closed.clone());
        let reader_refused = refused.clone();
        // (The reader's sender keeps the writer until the reader ends, which `stop` forces.)
        let mut silence = watch_silence.then(|| Silence::new(frames.clone()));
        tokio::spawn(async move {
            let mut frames = FramedRead::new(reader, frame::codec(CLIENT_MAX_FRAME_BYTES));
            let mut check = tokio::time::interval(SILENCE_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let bytes = tokio::select! {
                    next = frames.next() => match next {
                        Some(Ok(bytes)) => bytes,
                        _ => break,
                    },
                    _ = &mut stopped => break,
                    _ = check.tick(), if silence.is_some() => {
                        let silence = silence.as_mut().expect("checked");
                        let waiting = reader_pending
                            .lock()
                            .unwrap()
                            .values()
                            .any(|w| matches!(w, Waiter::Once(_)));
                        if silence.gone(waiting) {
                            // (debug: the caller is told, as a lost attempt, and a prober's
                            // pings to a node that stays silent would repeat it every 2 s)
                            log::debug!(
                                "{addr} answered nothing, not even a ping, for {:?}; closing \
                                 the connection",
                                silence.heard.elapsed()
                            );
                            break;
                        }
                        continue;
                    }
                };
                if let Some(silence) = silence.as_mut() {
                    silence.heard();
                }
                let (id, answer) = match frame::decode(&bytes) {
                    Ok(answer @ Frame::Response(ClientResponse { id, .. })) => (id, answer),
                    Ok(answer @ Frame::Answer(NodeAnswer { id, .. })) => (id, answer),
                    Err(e) if frame::other_version(&bytes).is_some() => {
                        log::error!("{addr}: {e}");
                        let _ = reader_refused.set(format!("node {addr}: {e}"));
                        break;
                    }
                    _ => {
                        log::warn!("malformed answer from {addr}; closing the connection");
                        break;
                    }
                };
                let mut pending = reader_pending.lock().unwrap();
                match pending.remove(&id) {
                    Some(Waiter::Once(waiter)) => {
                        let _ = waiter.send(answer);
                    }
                    Some(Waiter::Stream(stream)) if stream.offer(answer, bytes.len()) => {
                        pending.insert(id, Waiter::Stream(stream));
                    }
                    // A stream whose caller fell behind ends here.
                    Some(Waiter::Stream(_)) => {}
                    None => {}
                }
            }
            reader_closed.store(true, Ordering::Relaxed);
            // Dropping the waiters tells every request in flight that the connection is gone.
            reader_pending.lock().unwrap().clear();
        });
        Ok(Connection {
            addr,
            plaintext: tls.is_none(),
            frames,
            pending,
            closed,
            refused,
            next_id: AtomicU64::new(1),
            _stop: stop,
        })
    }

    /// Sends the frame `call(id)` and waits for the answer carrying `id`; `Err` if the
    /// connection was lost ([`Attempt::Lost`]), or refused for its protocol version (a
    /// [`Error::Frame`] naming both: bad input, which no other node of that cluster answers
    /// differently).
    async fn call(&self, call: impl FnOnce(u64) -> Frame) -> std::result::Result<Frame, Attempt> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, Waiter::Once(tx));
        let lost = || match (self.refused.get(), self.plaintext) {
            (Some(refused), _) => Attempt::Done(Err(Error::Frame(refused.clone()))),
            // A node with TLS closes a plaintext connection at its first bytes.
            (None, true) => Attempt::Lost(format!(
                "connection to {} lost (if the cluster runs TLS, give the client the config \
                 with its [tls])",
                self.addr
            )),
            (None, false) => Attempt::Lost(format!("connection to {} lost", self.addr)),
        };
        if self.closed.load(Ordering::Relaxed) {
            self.pending.lock().unwrap().remove(&id);
            return Err(lost());
        }
        if self.frames.send(frame::encode(&call(id))).await.is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(lost());
        }
        let answer = rx.await.map_err(|_| lost());
        self.pending.lock().unwrap().remove(&id);
        answer
    }
}

/// A connection's silence: when it last received anything, and the ping it sent since.
struct Silence {
    frames: mpsc::Sender<Bytes>,
    heard: Instant,
    ping: Option<Instant>,
    /// Pings sent, numbered down from `u64::MAX` (requests count up from 1): their answers
    /// match no waiter and are dropped.
    sent: u64,
}

impl Silence {
    fn new(frames: mpsc::Sender<Bytes>) -> Silence {
        Silence {
            frames,
            heard: Instant::now(),
            ping: None,
            sent: 0,
        }
    }

    fn heard(&mut self) {
        self.heard = Instant::now();
        self.ping = None;
    }

    /// At a check: pings the node if requests wait and nothing came for
    /// [`SILENCE_BEFORE_PING`]; `true` once the ping went [`SILENCE_PING_TIMEOUT`] without
    /// anything coming back.
    fn gone(&mut self, waiting: bool) -> bool {
        match self.ping {
            // Silence counts from when requests began to wait, not from the last answer.
            _ if !waiting => self.heard(),
            Some(sent) => return sent.elapsed() >= SILENCE_PING_TIMEOUT,
            None if self.heard.elapsed() >= SILENCE_BEFORE_PING => {
                self.sent += 1;
                let ping = Frame::Request(ClientRequest {
                    id: u64::MAX - self.sent,
                    body: RequestBody::Ping,
                });
                // A full queue: the next check tries again.
                if self.frames.try_send(frame::encode(&ping)).is_ok() {
                    self.ping = Some(Instant::now());
                }
            }
            None => {}
        }
        false
    }
}

/// One watch on one node: its answers, until the node ends it or the connection goes.
/// Dropping it ends the watch on the node (`Unwatch`).
pub(crate) struct WatchSession {
    conn: Arc<Connection>,
    id: u64,
    answers: StreamAnswers,
}

impl WatchSession {
    /// The next event; `None` once the connection is gone (or this caller fell behind).
    pub(crate) async fn next(&mut self) -> Option<Result<WatchEvent>> {
        match self.answers.recv().await? {
            Frame::Response(ClientResponse { result, .. }) => Some(match result {
                Ok(Reply::Watch(event)) => Ok(event),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(e),
            }),
            other => Some(Err(Error::Unknown(format!("unexpected answer {other:?}")))),
        }
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        let end = Frame::Request(ClientRequest {
            id: self.conn.next_id.fetch_add(1, Ordering::Relaxed),
            body: RequestBody::Unwatch { watch: self.id },
        });
        self.conn.end_stream(self.id, end);
    }
}

impl Connection {
    /// Sends the frame `call(id)` and returns its id and the stream of its answers, which
    /// ends with the connection (or when the caller falls too far behind).
    async fn stream(
        &self,
        call: impl FnOnce(u64) -> Frame,
        most_bytes: usize,
    ) -> std::result::Result<(u64, StreamAnswers), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let held = Arc::new(AtomicUsize::new(0));
        let sender = StreamSender {
            answers: tx,
            held: held.clone(),
            most: most_bytes,
        };
        self.pending
            .lock()
            .unwrap()
            .insert(id, Waiter::Stream(sender));
        let rx = StreamAnswers { answers: rx, held };
        let lost = || format!("connection to {} lost", self.addr);
        if self.closed.load(Ordering::Relaxed)
            || self.frames.send(frame::encode(&call(id))).await.is_err()
        {
            self.pending.lock().unwrap().remove(&id);
            return Err(lost());
        }
        Ok((id, rx))
    }

    /// Forgets stream `id` and sends `end` (a watch's `Unwatch`) without waiting for it: at
    /// once if the connection's queue has room, else from a task of its own, so that a full
    /// queue does not leave the node's watcher running for the connection's life.
    fn end_stream(&self, id: u64, end: Frame) {
        self.pending.lock().unwrap().remove(&id);
        if let Err(mpsc::error::TrySendError::Full(bytes)) =
            self.frames.try_send(frame::encode(&end))
        {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let frames = self.frames.clone();
                runtime.spawn(async move {
                    let _ = frames.send(bytes).await;
                });
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream takes [`STREAM_MIN_ANSWERS`] answers whatever their size (the two frames of
    /// one change arrive back to back, before its caller can take the first), then only as
    /// many bytes as its bound; answers taken make room again.
    #[tokio::test]
    async fn a_stream_takes_a_few_answers_whatever_their_size_then_only_its_bytes() {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let held = Arc::new(AtomicUsize::new(0));
        let sender = StreamSender {
            answers: tx,
            held: held.clone(),
            most: 1 << 20,
        };
        let mut answers = StreamAnswers { answers: rx, held };
        let answer = || {
            Frame::Request(ClientRequest {
                id: 1,
                body: RequestBody::Ping,
            })
        };
        // `n` answers of `size` bytes pass, and one more does not.
        let takes_then_refuses = |n: usize, size: usize| {
            for i in 0..n {
                assert!(
                    sender.offer(answer(), size),
                    "answer {i} of {size} B refused"
                );
            }
            assert!(
                !sender.offer(answer(), size),
                "answer {n} of {size} B taken"
            );
        };
        takes_then_refuses(STREAM_MIN_ANSWERS, 700 << 10);
        for _ in 0..STREAM_MIN_ANSWERS {
            answers.recv().await.expect("an answer");
        }
        // Small answers pass up to the bound: ten of 100 KiB are 1,024,000 bytes of 1 MiB.
        takes_then_refuses(10, 100 << 10);
    }
}
