//! The wire protocol: every message that crosses a connection, between nodes and between
//! clients and nodes. Plain serde data, encoded with postcard inside length-prefixed frames
//! ([`crate::frame`]); no actix, no tokio. The domain types they carry (ballots, registers,
//! commands) are in [`crate::paxos::types`]; the messages between the actors of one node are
//! in `crate::actors::messages`.
//!
//! **postcard encodes enum variants by their index: add new variants at the end of an enum,
//! never in the middle, and never reorder or remove one**, or nodes of different builds will
//! misread each other. `tests/wire.rs` pins every variant's index with golden bytes.
//!
//! The protocol is CASPaxos (Rystsov 2018, arXiv 1802.07000): every key is its own rewritable
//! register, agreed by a Paxos round of Prepare/Promise then Accept/Accepted (§2.1), with the
//! one-round-trip optimisation of §2.2.1 (an Accept carries the promise for the proposer's next
//! ballot) and a quorum read that needs no Accept phase when a majority already agrees.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;
use crate::paxos::membership::Membership;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::register::{CLIENT_FLOORS, RECENT_WRITES};
use crate::paxos::types::{
    opt_bytes, Ballot, Command, Key, KeyChange, NodeId, Outcome, Register, RequestId, Seen,
};

// ---------------------------------------------------------------------------------------------
// Between nodes
// ---------------------------------------------------------------------------------------------

/// A Paxos message about one key, from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender; replies go back to it.
    pub from: NodeId,
    /// The proposer instance a request comes from, and that a reply is for: drawn at random
    /// (64 bits) by every proposer instance when it starts, echoed by the acceptor. A proposer
    /// counts only replies carrying its own id, so a reply to an instance that stopped (a
    /// crash, a retirement, a restart of the node) is never counted by its successor, which
    /// reuses the fast ballot and its read numbers (see `paxos::proposer`).
    pub proposer: u64,
    /// The sender's membership epoch (see `paxos::membership`): an acceptor answers only
    /// messages of its own epoch, and refuses older ones with `Stale`.
    pub epoch: u64,
    /// The sender's cluster identity (`paxos::membership::cluster_id`): a node takes
    /// messages of its own cluster only, requests and replies alike.
    pub cluster: u64,
    /// The key whose register this is about.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// The Paxos message itself.
    pub body: PeerMessage,
}

/// The per-key Paxos messages. Proposer → acceptor: `Prepare`, `Accept`, `Query`;
/// acceptor → proposer: `Promise`, `Accepted`, `Reject`, `Failed`, `QueryReply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Phase 1a: asks the acceptor to promise `ballot`. Answered with `Promise` only if
    /// `ballot` is above every ballot the acceptor promised or accepted, and only after that
    /// promise is durable; otherwise with `Reject`.
    Prepare {
        /// A classic ballot of the sender's (`ballot.node == from`).
        ballot: Ballot,
    },
    /// Phase 1b: the acceptor durably promised `ballot` and never accepts below it; `accepted`
    /// is the highest ballot it accepted (`Ballot::ZERO` if none) and `state` what it accepted.
    /// `fast_unknown`: it holds no vote but may have accepted *some* state at the fast ballot
    /// that it no longer holds (its store was rebuilt by the in-place recovery of builds
    /// before issue 10; see `AcceptorRecord::fast_unknown`): Fast Paxos recovery counts it as
    /// a possible holder of any state, like an acceptor that did not answer.
    Promise {
        /// The Prepare's ballot, now promised.
        ballot: Ballot,
        /// The highest ballot the acceptor accepted; always below `ballot`.
        accepted: Ballot,
        /// What it accepted at `accepted` (the empty register if nothing).
        state: Register,
        /// It may have lost a fast-ballot vote (see above).
        fast_unknown: bool,
    },
    /// Phase 2a: asks the acceptor to accept `state` at `ballot`. `next`, if set, is above
    /// `ballot` and asks the acceptor to promise it in the same write (CASPaxos §2.2.1). An
    /// Accept without `next` is also how a proposer repairs a stale acceptor with a state it
    /// knows to be chosen.
    Accept {
        /// The ballot to accept at: the fast ballot, the sender's promised classic ballot, or
        /// (a repair, without `next`) the ballot a state was chosen at.
        ballot: Ballot,
        /// The state to accept: the register after the batch's change functions.
        state: Register,
        /// The sender's next ballot, to be promised in the same write (§2.2.1).
        next: Option<Ballot>,
    },
    /// Phase 2b: the acceptor durably accepted `ballot`; `promised` is the promise it holds
    /// after that write (the Accept's `next` if it took it), except for a repeated fast
    /// Accept, answered with `promised` at the fast ballot: it confirms the vote, and no
    /// promise (`paxos::acceptor`).
    Accepted {
        /// The Accept's ballot.
        ballot: Ballot,
        /// The acceptor's promise after the write (at least `ballot`).
        promised: Ballot,
    },
    /// The acceptor refused the Prepare or Accept for `ballot` because it has promised or
    /// accepted `seen`, which is at least as high. The proposer retries above `seen`.
    Reject {
        /// The refused request's ballot.
        ballot: Ballot,
        /// The highest ballot the acceptor promised or accepted (at least `ballot`).
        seen: Ballot,
    },
    /// The acceptor could not make its answer to `ballot` durable (a storage error, such as
    /// a full disk or LMDB map); it holds no promise or accept from that request, and it
    /// reloads its record from disk. The proposer stops counting on it for this phase, and
    /// names `reason` if the request fails.
    Failed {
        /// The request's ballot.
        ballot: Ballot,
        /// The storage error, for the client's error message.
        reason: String,
    },
    /// A read: asks for the acceptor's current record without changing or persisting it.
    Query {
        /// Numbers the reads of one proposer instance (only grows); echoed by the reply.
        read: u64,
    },
    /// The answer to `Query { read }`: the acceptor's durable record (`fast_unknown` as in
    /// `Promise`: such a reply confirms no state).
    QueryReply {
        /// The `Query`'s number.
        read: u64,
        /// The acceptor's promise.
        promised: Ballot,
        /// The highest ballot it accepted (at most `promised`).
        accepted: Ballot,
        /// What it accepted at `accepted`.
        state: Register,
        /// As in `Promise`.
        fast_unknown: bool,
    },
    /// The acceptor refused a request of an older membership epoch; `epoch` is its own. The
    /// proposer's node fetches that membership from the acceptor's node and retries.
    Stale {
        /// The acceptor's epoch (above the request's).
        epoch: u64,
    },
    /// Proposer → the nodes that watch: `changes` of the envelope's key were chosen, in
    /// version order (a round's batch, and the state it was applied to when a Prepare read
    /// it). Sent only to nodes that asked for announcements (`NodeRequest::Watching`), best
    /// effort: a lost one is a gap its watchers detect (`actors::watch`).
    Chosen {
        /// At most `RECENT_WRITES + 1`, versions strictly increasing.
        changes: Vec<KeyChange>,
    },
    /// A read that needs only what a get answers: as `Query`, but an acceptor whose state is
    /// at a classic ballot answers with `ReadReply`, which leaves out the writes the state
    /// remembers. At the fast ballot (where states are told apart by their writes, not by
    /// their ballot) it answers `QueryReply`, in full.
    Read {
        /// As in `Query`.
        read: u64,
    },
    /// The answer to `Read { read }` of an acceptor that accepted nothing or accepted at a
    /// classic ballot: its record, with what a read sees of the state in place of the state.
    /// One classic ballot names one state (a proposer proposes one state per ballot), so the
    /// ballot identifies what `seen` was seen of.
    ReadReply {
        /// The `Read`'s number.
        read: u64,
        /// The acceptor's promise.
        promised: Ballot,
        /// The highest ballot it accepted (at most `promised`, never the fast ballot).
        accepted: Ballot,
        /// What a read sees of the state it accepted at `accepted`.
        seen: Seen,
        /// As in `Promise`.
        fast_unknown: bool,
    },
}

impl PeerMessage {
    /// Requests go to the key's acceptor, replies to the key's proposer.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            PeerMessage::Prepare { .. }
                | PeerMessage::Accept { .. }
                | PeerMessage::Query { .. }
                | PeerMessage::Read { .. }
        )
    }

    /// Reads (`Query`, `Read`) change nothing at the acceptor: answered from its durable
    /// record, without its mailbox (`actors::acceptor::DurableView`), in the simulation too.
    pub fn is_read(&self) -> bool {
        matches!(self, PeerMessage::Query { .. } | PeerMessage::Read { .. })
    }

    /// Every ballot the message carries (`Ballot::ZERO` in the slots it does not use), for
    /// [`Envelope::validate`]'s bound on rounds.
    fn ballots(&self) -> [Ballot; 2] {
        match self {
            PeerMessage::Prepare { ballot } | PeerMessage::Failed { ballot, .. } => {
                [*ballot, Ballot::ZERO]
            }
            PeerMessage::Accept { ballot, next, .. } => [*ballot, next.unwrap_or(Ballot::ZERO)],
            PeerMessage::Promise {
                ballot, accepted, ..
            } => [*ballot, *accepted],
            PeerMessage::Accepted { ballot, promised } => [*ballot, *promised],
            PeerMessage::Reject { ballot, seen } => [*ballot, *seen],
            PeerMessage::ReadReply {
                promised, accepted, ..
            }
            | PeerMessage::QueryReply {
                promised, accepted, ..
            } => [*promised, *accepted],
            PeerMessage::Query { .. }
            | PeerMessage::Read { .. }
            | PeerMessage::Stale { .. }
            | PeerMessage::Chosen { .. } => [Ballot::ZERO; 2],
        }
    }

    /// The ballot a Prepare or an Accept asks for.
    pub fn requested_ballot(&self) -> Option<Ballot> {
        match self {
            PeerMessage::Prepare { ballot } | PeerMessage::Accept { ballot, .. } => Some(*ballot),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Between clients and nodes
// ---------------------------------------------------------------------------------------------

/// A client request. `id` is chosen by the client and unique among its requests in flight on
/// one connection; the response carries it back (responses may come in any order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Matches the response to the request.
    pub id: u64,
    /// What the client asks.
    pub body: RequestBody,
}

/// What a client asks a node. A new operation is a new variant, at the end (ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Apply `command` to `key`. `write_id` identifies a write across retries (required for
    /// writes, ignored for gets).
    Kv {
        /// The key, within `limits.max_key_bytes`, not empty.
        #[serde(with = "serde_bytes")]
        key: Key,
        /// What to do to the key's register.
        command: Command,
        /// The write's id, the same on every retry (the node mints one if it is missing).
        write_id: Option<RequestId>,
        /// An earlier attempt of this write may have taken effect (it was lost, or answered
        /// "outcome unknown"). `false` promises that no attempt with this `write_id` was
        /// ever applied, which lets a register apply it even after forgetting the client.
        maybe_applied: bool,
    },
    /// Liveness probe: answered by the node itself, without the cluster.
    Ping,
    /// The node's counters.
    Status,
    /// Replace the faults this node injects on its outgoing Paxos messages (tests only).
    SetFaults(FaultPlan),
    /// Retired: anti-entropy's digest request before it moved to `Frame::Call`. Kept
    /// so that its index is never reused; answered `BadRequest`.
    RetiredSyncDigest {
        /// As in `NodeRequest::Digest`.
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        /// As in `NodeRequest::Digest`.
        limit: u32,
    },
    /// Retired, as `RetiredSyncDigest`: the old fetch.
    RetiredSyncFetch {
        /// As in `NodeRequest::Fetch`.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// The cluster's membership, as this node has it installed (`paxkv member list`).
    Members,
    /// Drive one membership change to completion (`paxkv member add|remove`); answered once
    /// it is complete, or with why it cannot complete (safe to ask again).
    MemberChange(MemberChangeRequest),
    /// [`RequestBody::MemberChange`], fenced: the change may *begin* only from the
    /// membership of `epoch` (the one the client read before asking); from any other, the
    /// node answers `BadRequest` and does nothing. A change already in progress is continued
    /// as with `MemberChange`. So a request that waited (a paused node, a client that gave
    /// up and moved on) never carries out a change the operator made moot since (review of
    /// issue 11: a stale `remove` came back after the node was removed and re-added).
    MemberChangeFenced {
        /// The change.
        change: MemberChangeRequest,
        /// The membership epoch the client saw.
        epoch: u64,
    },
    /// The live keys that start with `prefix`, after `after`, in byte order: one page of at
    /// most `limit` (0: the config's default; capped at its maximum). Each item is a state
    /// chosen at some moment within the call (`actors::list`).
    List {
        /// Only keys that start with these bytes (empty: every key).
        #[serde(with = "serde_bytes")]
        prefix: Key,
        /// Only keys after this one (the previous page's `next`).
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        /// At most this many items (0: the default page size).
        limit: u32,
        /// Leave the values out.
        keys_only: bool,
    },
    /// Stream the changes of `key` (with `prefix`: of every key that starts with it) as
    /// `Reply::Watch` answers carrying this request's id, until `Unwatch`, the connection's
    /// end, or the node ends it (`WatchEvent::Ended`). What a watch promises is in
    /// `actors::watch`.
    Watch {
        /// The key, or the prefix.
        #[serde(with = "serde_bytes")]
        key: Key,
        /// Watch every key that starts with `key`.
        prefix: bool,
    },
    /// End the watch of this connection whose request id is `watch`.
    Unwatch {
        /// The `Watch` request's id.
        watch: u64,
    },
    /// As `List`, with deleted keys too (`value: None`), so that each key's version is
    /// known: what a prefix watch starts from.
    ListVersions {
        /// As in `List`.
        #[serde(with = "serde_bytes")]
        prefix: Key,
        /// As in `List`.
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        /// As in `List`.
        limit: u32,
    },
    /// Grant a new lease of this time to live (`paxos::lease`): `Reply::Lease(Some(..))`.
    LeaseGrant {
        /// Its time to live, milliseconds.
        ttl_ms: u64,
        /// Its id, chosen at random by the client so that it sends the grant to the home
        /// node of the lease's key (whose keeper then tracks it at once); 0: the node picks.
        id: u64,
    },
    /// Keep lease `id` alive: `Reply::Lease(Some(..))` with its new version, or
    /// `Reply::Lease(None)` when it is gone (expired, revoked, or never granted).
    LeaseKeepAlive {
        /// The lease.
        id: u64,
    },
    /// Revoke lease `id`: `Reply::Lease` with the lease it was (`None`: there was none).
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Lease `id` as it is: `Reply::Lease` (`None`: there is none).
    LeaseShow {
        /// The lease.
        id: u64,
    },
    /// A put (`expect: None`) or compare-and-set of `key` that attaches it to lease `lease`
    /// (`paxos::lease`): `Reply::Kv`, or `Error::NotFound` when the lease is gone (nothing
    /// written). `write_id` and `maybe_applied` as in `Kv`.
    LeasedWrite {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Key,
        /// Its new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// `None`: a put; `Some(v)`: only if the key is at version `v` (0: has no value).
        expect: Option<u64>,
        /// The lease to attach it to.
        lease: u64,
        /// The write's id, the same across the client's retries.
        write_id: RequestId,
        /// As in `Kv`.
        maybe_applied: bool,
    },
    /// The keys attached to lease `id`: `Reply::LeaseKeys` (`None`: there is no lease).
    LeaseKeys {
        /// The lease.
        id: u64,
    },
}

impl RequestBody {
    /// Does this request change the membership (the operator's alone, `tls::Peer::admits`)?
    pub fn is_member_change(&self) -> bool {
        matches!(
            self,
            RequestBody::MemberChange(_) | RequestBody::MemberChangeFenced { .. }
        )
    }
}

/// What `paxkv member add|remove` asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChangeRequest {
    /// Make node `id`, listening at `addr`, a voting member.
    Add {
        /// The node's id.
        id: NodeId,
        /// Its `ip:port`.
        addr: String,
    },
    /// Make node `id` count in no quorum, and forget it.
    Remove {
        /// The node's id.
        id: NodeId,
    },
}

/// A node's answer to one [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    /// The request's id.
    pub id: u64,
    /// The answer, or why there is none (classified by `Error::class`).
    pub result: Result<Reply, Error>,
}

/// What a node answers, by request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// To `Kv`: what the command did (linearizable).
    Kv(Outcome),
    /// To `Ping`.
    Pong {
        /// The answering node.
        node: NodeId,
    },
    /// To `Status`.
    Status(NodeStatus),
    /// `SetFaults` took effect.
    FaultsSet,
    /// Retired (never sent): the old answer to a digest request. Kept so that its index is
    /// never reused.
    RetiredSyncDigest(DigestPage),
    /// Retired (never sent): the old answer to a fetch.
    RetiredSyncRecords(Vec<SyncRecord>),
    /// To `Members`.
    Members(MembershipAnswer),
    /// To `MemberChange`: the change is complete; the membership after it.
    MemberChanged(Membership),
    /// To `List`: one page.
    Listed(ListPage),
    /// To `Watch`: one of its answers (the stream goes on until `WatchEvent::Ended`).
    Watch(WatchEvent),
    /// To `Unwatch`: the watch is ended (or was not there).
    Unwatched,
    /// To the lease requests: the lease (`None`: there is none).
    Lease(Option<LeaseInfo>),
    /// To `LeaseKeys`: the keys attached to the lease (`None`: there is no lease).
    LeaseKeys(Option<Vec<serde_bytes::ByteBuf>>),
}

/// A lease, as the lease requests answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Its id (`paxkv lease` shows 16 hex digits).
    pub id: u64,
    /// Its time to live, milliseconds.
    pub ttl_ms: u64,
    /// Its register's version: 1 at the grant, one more for every keepalive.
    pub version: u64,
    /// How long until the answering node would expire it if no keepalive comes, as that
    /// node sees it (`None`: it has not watched it yet; other nodes' views differ by up to
    /// a scan interval): an estimate, not a promise. A client counts its lease from the
    /// moment it sent its last keepalive.
    pub remaining_ms: Option<u64>,
}

/// One answer of a watch's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// The watch is registered. `confirmed`: every member of the node's epoch said it will
    /// announce what it chooses to this node; otherwise some may not, and their changes reach
    /// the watch only as gaps (see `actors::watch`).
    Started {
        /// Every member confirmed.
        confirmed: bool,
    },
    /// Changes of one key, in version order.
    Changed {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Key,
        /// Its changes.
        changes: Vec<KeyChange>,
    },
    /// The watch ended, and why; nothing more comes with its id.
    Ended {
        /// Why.
        reason: String,
    },
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// The live keys of the page, in byte order.
    pub items: Vec<ListItem>,
    /// Ask again with `after: next` for the next page (`None`: this was the last).
    #[serde(with = "opt_bytes")]
    pub next: Option<Key>,
}

/// One live key of a listing: its value (`None` when the list asked for keys only) and
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// Its value.
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    /// Its version.
    pub version: u64,
}

/// A node's view of the membership, and of itself in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipAnswer {
    /// The answering node.
    pub node: NodeId,
    /// The membership it has installed (`None`: it has none yet, a node waiting to join).
    pub membership: Option<Membership>,
    /// The identity of the node's store (see `paxos::membership`).
    pub store: u64,
    /// The node votes (it is a voter of its membership, with its own store).
    pub voting: bool,
    /// The cluster this node's config would found (`paxos::bootstrap`: the identity of its
    /// `[cluster] token` and node list; 0: it founds none, its config does not list it). Counted by a new node deciding whether to found a cluster.
    pub founds: u64,
}

/// A node's counters, for operators and for the tests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node: NodeId,
    /// Per-key proposer actors alive now.
    pub live_proposers: u64,
    /// Per-key acceptor actors alive now.
    pub live_acceptors: u64,
    /// Acceptor actors that crashed and were restarted from disk since the node started.
    pub acceptor_restarts: u64,
    /// Proposer actors that crashed and were restarted since the node started.
    pub proposer_restarts: u64,
    /// Write transactions committed (each one fsync).
    pub commits: u64,
    /// Records those transactions wrote.
    pub records_written: u64,
    /// Peer frames dropped because a peer's queue was full or it was unreachable.
    pub peer_frames_dropped: u64,
    /// Frames refused: connections closed for a malformed or oversized frame, frames and peer
    /// records dropped for failing validation.
    pub bad_frames: u64,
    /// Resident memory of the node process, bytes (0 where unknown).
    pub rss_bytes: u64,
    /// The node's acceptors vote: a voter of its membership, with its own store, its start
    /// confirmed by its peers (`actors::membership`).
    pub voting: bool,
    /// Records this node took from peers by anti-entropy.
    pub records_adopted: u64,
    /// Completed anti-entropy rounds.
    pub sync_rounds: u64,
    /// Paxos requests dropped because the node was not voting yet.
    pub dropped_not_voting: u64,
    /// Retired (the repair that followed the in-place recovery removed in issue 10): sent
    /// equal to `voting` for tools of older builds; kept because postcard is positional, and
    /// named `repaired` in `status --json` as before.
    #[serde(rename = "repaired")]
    pub retired_repaired: bool,
    /// Acceptors started while another acceptor of the same key was alive (must be 0).
    pub duplicate_acceptors: u64,
    /// Keys this node settled at a classic ballot (membership changes' rescans and
    /// anti-entropy sweeps).
    pub keys_settled: u64,
    /// The node's membership epoch (0: none installed yet).
    pub epoch: u64,
    /// Paxos requests refused for an older epoch (`PeerMessage::Stale`).
    pub stale_refused: u64,
    /// This node's store is not the one its membership records (a wiped or replaced disk)
    /// or is an older copy of it (a rolled-back directory): it does not vote, and will not
    /// until it is removed and added again (see `paxos::membership`).
    pub store_refused: bool,
    /// Frames, memberships and node calls of another cluster identity refused.
    pub foreign_frames: u64,
    /// The installed membership's cluster identity (0: none installed yet).
    pub cluster: u64,
    /// Client requests this node has served since it started, of every kind and outcome.
    pub requests: u64,
    /// How many of them took at most each of `metrics::REQUEST_BUCKET_SECONDS`
    /// (cumulative): two statuses a while apart give the rate and the latency percentiles
    /// of the requests between them (the console's charts).
    pub request_buckets: Vec<u64>,
    /// CPU time the node process used since it started, user and system, microseconds
    /// (0 where unknown): two statuses around a run give the node's own CPU per operation
    /// (`paxkv bench`). Appended last, as every field added since: an older reader stops
    /// before it.
    pub cpu_us: u64,
    /// Proposers woken by their own timer since the node started (`Stats`): rounds that
    /// needed one (slower than `read_grace` or a phase timeout), not requests.
    pub proposer_timer_wakeups: u64,
    /// Keys this node's store holds a record of, deleted keys' tombstones and the cluster's own
    /// keys included (`None`: the store did not answer within a second). Nothing collects
    /// records yet, so this only grows: every key ever written, deleted or compare-and-set on,
    /// and every lease ever granted, keeps one on every voter that took it.
    pub records_stored: Option<u64>,
}

/// Everything one connection carries, in either direction. A connection from a peer carries
/// `Peer` frames; a connection from a client carries `Request` frames one way and `Response`
/// frames the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A Paxos message, node to node.
    Peer(Envelope),
    /// A client request, client (or operator tool) to node.
    Request(ClientRequest),
    /// The answer to a `Request`, node to client.
    Response(ClientResponse),
    /// A call of one node to another: anti-entropy's digests and records, the membership,
    /// the start's `Hello` (answered by `actors::calls`).
    Call(NodeCall),
    /// The answer to a `Call`.
    Answer(NodeAnswer),
}

// ---------------------------------------------------------------------------------------------
// Calls between nodes: anti-entropy, the membership, the start (`actors::calls`)
// ---------------------------------------------------------------------------------------------

/// One node's call to another. `id` matches the answer, as for [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCall {
    /// Matches the answer to the request.
    pub id: u64,
    /// The caller's cluster identity (`paxos::membership::cluster_id`; 0: a node with no
    /// membership yet, or a tool). `Install` and `Hello` are taken from a caller of the
    /// node's own cluster only. `Membership`, `Digest` and `Fetch`, which change nothing,
    /// are answered to a caller that names no cluster, and by a node that has none (it has
    /// nothing to tell), never across two clusters: a node pulling with its own identity
    /// never reads another cluster's membership or records as its own.
    pub cluster: u64,
    /// What the pulling node asks.
    pub body: NodeRequest,
}

/// What a node asks a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// The (key, promised, accepted) digest of up to `limit` records with keys after
    /// `after`, in key order (`limit = 0`: whether the node votes, and no entry).
    Digest {
        /// The last key of the previous page (`None`: from the first key).
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        /// At most this many entries (capped at [`DIGEST_PAGE_ENTRIES`]).
        limit: u32,
    },
    /// The records of these keys (as many, in order, as fit one frame).
    Fetch {
        /// At most [`DIGEST_PAGE_ENTRIES`] keys.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// The answering node's installed membership and store identity.
    Membership,
    /// Install this membership (one chosen in the membership register) if it is newer than
    /// the node's; answered with the node's epoch once that is durable.
    Install(Membership),
    /// A node that just started tells its store's identity and generation; the answer is
    /// the highest generation of that store the peer had seen before (see
    /// `actors::membership`).
    Hello {
        /// The starting node.
        node: NodeId,
        /// Its store's identity.
        store: u64,
        /// Its store's generation, raised for this round (`paxos::identity::Round`).
        generation: u64,
        /// The round's call: the same call asked again is answered the same.
        call: u64,
    },
    /// The records of the keys that start with `prefix`, after `after` (`None`: from the
    /// first such key), in key order: at most `limit`, and as many as fit half a frame. Only
    /// a node at `epoch` whose store is confirmed intact answers (`actors::list`).
    Scan {
        /// Only keys that start with these bytes.
        #[serde(with = "serde_bytes")]
        prefix: Key,
        /// The last key of the previous page.
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        /// At most this many records (capped at [`DIGEST_PAGE_ENTRIES`]).
        limit: u32,
        /// The caller's membership epoch.
        epoch: u64,
        /// The voter asked: another node answering on its address (an address taken over)
        /// refuses, so that no node's records count for two voters.
        node: NodeId,
    },
    /// Node `node` has watchers: announce to it what this node's proposers choose
    /// (`PeerMessage::Chosen`) for `lease_ms`; asked again before that ends while it has
    /// watchers.
    Watching {
        /// The watching node.
        node: NodeId,
        /// How long, in milliseconds (at most `WATCH_LEASE_MAX_MS`).
        lease_ms: u32,
    },
}

/// A node's answer to one [`NodeCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// The call's id.
    pub id: u64,
    /// The answer, or why there is none.
    pub result: Result<NodeReply, Error>,
}

/// What a node answers a peer's call with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeReply {
    /// To `Digest`.
    Digest(DigestPage),
    /// To `Fetch`: the records found, in the order asked.
    Records(Vec<SyncRecord>),
    /// To `Membership`.
    Membership(MembershipAnswer),
    /// To `Install`: the node's epoch, durable.
    Installed {
        /// The node's epoch after the install (at least the one sent).
        epoch: u64,
        /// The node's store is the one the membership records for it (or none is recorded
        /// yet) and was not found to be an older copy: it may count in a change's barrier
        /// and serve as a source of its scan (a refused store does neither).
        intact: bool,
    },
    /// To `Hello`: the highest generation of that node's store this peer had seen (0: none).
    Hello {
        /// The highest generation seen before this Hello.
        seen: u64,
    },
    /// To `Scan`: records in key order, and whether more of the prefix follow.
    Scanned {
        /// The records.
        records: Vec<SyncRecord>,
        /// More records of the prefix follow the last one.
        more: bool,
    },
    /// To `Watching`: this node announces to the caller until the lease ends.
    Watching,
}

/// The longest lease `NodeRequest::Watching` may ask.
pub const WATCH_LEASE_MAX_MS: u32 = 60_000;

/// One page of a node's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestPage {
    /// The answering node votes: a puller takes records only from a voting peer.
    pub voting: bool,
    /// Two flags of the in-place recovery removed in issue 10 (the store had recovered once;
    /// it held no record). Sent `false`, never read; kept because postcard is positional and
    /// the page's bytes do not change.
    pub retired: [bool; 2],
    /// Its records' ballots, in key order.
    pub entries: Vec<DigestEntry>,
    /// More records follow the last entry.
    pub more: bool,
}

/// One key's ballots, enough to tell whether the asking node is behind on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// The peer's promise for it.
    pub promised: Ballot,
    /// The highest ballot the peer accepted for it.
    pub accepted: Ballot,
}

/// A key's acceptor record, as one node sends it to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// The peer's durable record of it.
    pub record: AcceptorRecord,
}

// ---------------------------------------------------------------------------------------------
// Fault injection (tests only; refused unless the config sets testing.allow_fault_injection)
// ---------------------------------------------------------------------------------------------

/// Faults a node injects on its own outgoing Paxos messages. A partition is a `cut` on both
/// sides of a link; a one-way cut on one side only. Delays are drawn per message, so a delay
/// range also reorders.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultPlan {
    /// For messages to the nodes listed; every other destination (this node included) uses
    /// `default`.
    pub links: std::collections::BTreeMap<NodeId, LinkFaults>,
    /// The faults on every other link.
    pub default: LinkFaults,
}

/// The faults on one link (one direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkFaults {
    /// Drop everything.
    pub cut: bool,
    /// Drop each message with this probability, per thousand.
    pub drop_permille: u16,
    /// Send each message twice with this probability, per thousand.
    pub duplicate_permille: u16,
    /// Delay each message by a uniform draw from `delay_min_ms..=delay_max_ms`.
    pub delay_min_ms: u64,
    /// The top of the delay range (0 = no delay).
    pub delay_max_ms: u64,
}

impl FaultPlan {
    /// No fault anywhere.
    pub fn is_none(&self) -> bool {
        self.default == LinkFaults::default()
            && self.links.values().all(|l| *l == LinkFaults::default())
    }

    /// The faults on messages to `to`.
    pub fn link(&self, to: NodeId) -> LinkFaults {
        self.links.get(&to).copied().unwrap_or(self.default)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: every decoded frame passes here before anything acts on it
// ---------------------------------------------------------------------------------------------

/// The most entries one anti-entropy page carries, and the most keys one
/// `NodeRequest::Fetch` may name or one `NodeReply::Records` may carry.
pub const DIGEST_PAGE_ENTRIES: usize = 4_096;

fn invalid(what: impl Into<String>) -> Error {
    Error::Frame(what.into())
}

impl Frame {
    /// Checks what a frame says against the protocol and the node's limits, so that nothing
    /// from the network reaches the core unchecked: a Paxos message whose ballots contradict
    /// each other, a state over the limits, a sender that is not a member. What this cannot
    /// check (that `from` really sent it) needs authenticated connections (issue 11).
    /// Client requests' keys and values are checked by the router, which answers
    /// `BadRequest` instead of dropping them.
    pub fn validate(&self, config: &Config) -> Result<(), Error> {
        match self {
            Frame::Peer(envelope) => envelope.validate(config),
            Frame::Request(_) | Frame::Response(_) => Ok(()),
            Frame::Answer(answer) => answer.validate(),
            Frame::Call(call) => match &call.body {
                NodeRequest::Digest { after, .. } => match after {
                    Some(after) => check_stored_key(after),
                    None => Ok(()),
                },
                NodeRequest::Fetch { keys } => {
                    if keys.len() > DIGEST_PAGE_ENTRIES {
                        return Err(invalid(format!("a fetch of {} keys", keys.len())));
                    }
                    keys.iter().try_for_each(|k| check_stored_key(k))
                }
                NodeRequest::Install(membership) => membership
                    .check()
                    .map_err(|e| invalid(format!("a broken membership: {e}"))),
                NodeRequest::Scan { prefix, after, .. } => {
                    if prefix.len() > config.limits.max_key_bytes {
                        return Err(invalid(format!("a {}-byte prefix", prefix.len())));
                    }
                    after.as_ref().map_or(Ok(()), |a| check_stored_key(a))
                }
                NodeRequest::Watching { lease_ms, .. } => {
                    if *lease_ms > WATCH_LEASE_MAX_MS {
                        return Err(invalid(format!("a watch lease of {lease_ms} ms")));
                    }
                    Ok(())
                }
                NodeRequest::Membership | NodeRequest::Hello { .. } => Ok(()),
            },
        }
    }
}

impl NodeAnswer {
    /// Checks a peer's answer to a node's call as [`Frame::validate`] checks what a node is
    /// sent: a node's own calls run their answers through it (`client::Client::node_call`),
    /// since a peer's answer is network input as much as its requests are (review, 2026-12-08:
    /// the answers were decoded and acted on unchecked, and a membership rescan's digest
    /// entries went as they came into settle rounds, an empty or overlong key included).
    /// What no intact store can send is refused here, the whole answer: more items than a
    /// page holds, a key a store cannot hold ([`check_stored_key`]: empty, or over LMDB's
    /// limit), a broken membership. Each item's own checks (a record's invariants, its
    /// ballots, a key over `limits.max_key_bytes`) are its user's, which drops that item
    /// alone (anti-entropy) or the voter's page (a listing, `paxos::listing`), as before: one
    /// bad record does not cost a whole page of good ones.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.result {
            Ok(NodeReply::Records(records) | NodeReply::Scanned { records, .. }) => {
                if records.len() > DIGEST_PAGE_ENTRIES {
                    return Err(invalid(format!("{} records in one answer", records.len())));
                }
                records.iter().try_for_each(|r| check_stored_key(&r.key))
            }
            Ok(NodeReply::Digest(page)) => {
                if page.entries.len() > DIGEST_PAGE_ENTRIES {
                    return Err(invalid(format!("{} digest entries", page.entries.len())));
                }
                page.entries
                    .iter()
                    .try_for_each(|e| check_stored_key(&e.key))
            }
            Ok(NodeReply::Membership(info)) => match &info.membership {
                Some(m) => m
                    .check()
                    .map_err(|e| invalid(format!("a broken membership: {e}"))),
                None => Ok(()),
            },
            Ok(NodeReply::Installed { .. } | NodeReply::Hello { .. } | NodeReply::Watching)
            | Err(_) => Ok(()),
        }
    }
}

/// A key as a store may hold it: not empty, within LMDB's key limit. Not
/// `limits.max_key_bytes`: a key written before that limit was lowered, or one of the
/// cluster's own (`\0paxkv/lease/...`, 29 bytes), is still stored and scanned, and a
/// listing's or a digest's `next`, which a caller sends back as `after`, may be one (review,
/// 2026-12-08: such an `after` was refused, and the listing could never pass it). (Such a
/// key is not repaired or written: anti-entropy and Paxos frames keep to the limit.)
fn check_stored_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() || key.len() > crate::config::LMDB_MAX_KEY_BYTES {
        return Err(invalid(format!("a stored key of {} bytes", key.len())));
    }
    Ok(())
}

fn check_key_len(key: &[u8], config: &Config) -> Result<(), Error> {
    if key.is_empty() || key.len() > config.limits.max_key_bytes {
        return Err(invalid(format!("a {}-byte key", key.len())));
    }
    Ok(())
}

/// The bounds every register keeps. Not the value limit: the frame limit already bounds a
/// value, and a value written before `limits.max_value_bytes` was lowered must stay readable.
fn check_state(state: &Register) -> Result<(), Error> {
    if state.recent.len() > RECENT_WRITES || state.floors.len() > CLIENT_FLOORS {
        return Err(invalid(format!(
            "a state remembering {} writes and {} client floors",
            state.recent.len(),
            state.floors.len()
        )));
    }
    check_versions(state.version, state.fence)
}

/// A version and a fence within [`Register::MAX_VERSION`].
fn check_versions(version: u64, fence: u64) -> Result<(), Error> {
    if version.max(fence) > Register::MAX_VERSION {
        return Err(invalid(format!(
            "a state of version {version} and fence {fence}, above the protocol's limit \
             (2^62)"
        )));
    }
    Ok(())
}

/// Ballots within [`Ballot::MAX_ROUND`].
fn check_rounds(ballots: &[Ballot]) -> Result<(), Error> {
    match ballots.iter().find(|b| b.round > Ballot::MAX_ROUND) {
        Some(b) => Err(invalid(format!(
            "a ballot of round {}, above the protocol's limit (2^62)",
            b.round
        ))),
        None => Ok(()),
    }
}

impl DigestEntry {
    /// A peer's digest entry, before this node looks its key up: the key within the limits,
    /// its ballots within [`Ballot::MAX_ROUND`].
    pub fn validate(&self, config: &Config) -> Result<(), Error> {
        check_key_len(&self.key, config)?;
        check_rounds(&[self.promised, self.accepted])
    }
}

impl SyncRecord {
    /// A peer's record, before this node merges it: its key within the limits, its state
    /// within the register's bounds, the acceptor record's invariants.
    pub fn validate(&self, config: &Config) -> Result<(), Error> {
        check_key_len(&self.key, config)?;
        self.check()
    }

    /// [`SyncRecord::validate`] but for the key's length: the state within the register's
    /// bounds, the ballots within [`Ballot::MAX_ROUND`], the acceptor record's invariants.
    pub fn check(&self) -> Result<(), Error> {
        check_state(&self.record.state)?;
        check_rounds(&[self.record.promised, self.record.accepted])?;
        self.record
            .check()
            .map_err(|e| invalid(format!("a broken record of a peer: {e}")))
    }
}

impl Envelope {
    /// See [`Frame::validate`]. The ballot rules are the acceptor's and proposer's own
    /// invariants, stated on the message: a ballot a proposer asks for is classic and its
    /// own (the fast ballot only in an Accept); an Accept's `next` is above its ballot; a
    /// reply's ballots are ordered as the acceptor that wrote it must have them.
    /// Whether the sender is a member is the network's check, against the node's current
    /// membership (`actors::network`).
    pub fn validate(&self, config: &Config) -> Result<(), Error> {
        if self.from == 0 || self.epoch == 0 {
            return Err(invalid("a peer frame from node 0 or of epoch 0"));
        }
        check_key_len(&self.key, config)?;
        check_rounds(&self.body.ballots())?;
        let own_classic = |b: Ballot| b > Ballot::FAST && b.node == self.from;
        let broken = match &self.body {
            PeerMessage::Prepare { ballot } => (!own_classic(*ballot)).then_some("prepare"),
            PeerMessage::Accept {
                ballot,
                state,
                next,
            } => {
                check_state(state)?;
                // Without `next` an Accept may repair a stale acceptor with a state chosen
                // at another proposer's ballot.
                let next_ok = next.is_none_or(|n| n > *ballot && own_classic(n));
                (*ballot == Ballot::ZERO || !next_ok).then_some("accept")
            }
            PeerMessage::Promise {
                ballot,
                accepted,
                state,
                fast_unknown,
            } => {
                check_state(state)?;
                let record = (*accepted, state, *fast_unknown);
                (*ballot <= Ballot::FAST || accepted >= ballot || !record_ok(record))
                    .then_some("promise")
            }
            PeerMessage::Accepted { ballot, promised } => {
                (*ballot == Ballot::ZERO || promised < ballot).then_some("accepted")
            }
            PeerMessage::Reject { ballot, seen } => (seen < ballot).then_some("reject"),
            PeerMessage::Failed { ballot, .. } => (*ballot == Ballot::ZERO).then_some("failed"),
            PeerMessage::Query { .. } | PeerMessage::Read { .. } => None,
            PeerMessage::ReadReply {
                promised,
                accepted,
                seen,
                fast_unknown,
                ..
            } => {
                check_versions(seen.version, seen.fence)?;
                // An acceptor at the fast ballot answers in full: a reply that claims it
                // without the state's writes could count two different fast writes of one
                // value as one.
                let nothing_accepted = *accepted == Ballot::ZERO;
                (accepted > promised
                    || *accepted == Ballot::FAST
                    || (nothing_accepted && *seen != Seen::default())
                    || (*fast_unknown && !nothing_accepted))
                    .then_some("read reply")
            }
            PeerMessage::Stale { epoch } => (*epoch <= self.epoch).then_some("stale"),
            PeerMessage::Chosen { changes } => {
                let ordered = changes.windows(2).all(|w| w[0].version < w[1].version);
                let bounded = !changes.is_empty() && changes.len() <= RECENT_WRITES + 1;
                check_versions(changes.last().map_or(0, |c| c.version), 0)?;
                (!ordered || !bounded || changes[0].version == 0).then_some("announcement")
            }
            PeerMessage::QueryReply {
                promised,
                accepted,
                state,
                fast_unknown,
                ..
            } => {
                check_state(state)?;
                let record = (*accepted, state, *fast_unknown);
                (accepted > promised || !record_ok(record)).then_some("query reply")
            }
        };
        match broken {
            Some(what) => Err(invalid(format!(
                "a contradictory {what} from node {}: {:?}",
                self.from, self.body
            ))),
            None => Ok(()),
        }
    }
}

/// An acceptor record's own invariants ([`AcceptorRecord::check`]) on the parts a reply
/// carries: no state without an accepted ballot, `fast_unknown` only without one.
fn record_ok((accepted, state, fast_unknown): (Ballot, &Register, bool)) -> bool {
    let nothing_accepted = accepted == Ballot::ZERO;
    (!nothing_accepted || *state == Register::default()) && (!fast_unknown || nothing_accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{ClientFloor, RecentWrites, Remembered, WriteOutcome};

    #[test]
    fn ballots_order_by_round_then_node() {
        assert!(Ballot::new(2, 1) > Ballot::new(1, 5));
        assert!(Ballot::new(1, 2) > Ballot::new(1, 1));
        assert!(Ballot::ZERO < Ballot::new(0, 1));
        assert_eq!(Ballot::new(7, 3).next_for(1), Ballot::new(8, 1));
    }

    #[test]
    fn frames_round_trip_through_postcard() {
        let frame = Frame::Peer(Envelope {
            from: 3,
            proposer: 77,
            epoch: 3,
            cluster: 5,
            key: b"k".to_vec(),
            body: PeerMessage::Promise {
                ballot: Ballot::new(4, 3),
                accepted: Ballot::new(2, 1),
                fast_unknown: false,
                state: Register {
                    version: 9,
                    value: Some(vec![1, 2, 3]),
                    recent: RecentWrites::from_writes(&[Remembered {
                        id: RequestId { client: 1, seq: 2 },
                        outcome: WriteOutcome::Put { version: 9 },
                    }])
                    .unwrap(),
                    floors: vec![ClientFloor { client: 1, seq: 1 }],
                    floors_overflowed: false,
                    lease: Some(7),
                    fence: 2,
                },
            },
        });
        let bytes = postcard::to_stdvec(&frame).unwrap();
        assert_eq!(postcard::from_bytes::<Frame>(&bytes).unwrap(), frame);
    }

    /// A `ReadReply` names its state by a classic ballot: one at the fast ballot (where two
    /// states of one value are told apart only by their writes), or a seen state without an
    /// accepted ballot, contradicts the acceptor that would have sent it.
    #[test]
    fn a_read_reply_at_the_fast_ballot_or_of_a_state_nobody_accepted_is_refused() {
        let addrs: Vec<std::net::SocketAddr> = (1..=3)
            .map(|i| format!("127.0.0.1:{}", 7000 + i).parse().unwrap())
            .collect();
        let config = Config::local(&addrs);
        let seen = Seen {
            version: 1,
            value: Some(b"v".to_vec()),
            ..Seen::default()
        };
        let reply = |accepted: Ballot, seen: &Seen, fast_unknown: bool| Envelope {
            from: 2,
            proposer: 7,
            epoch: 1,
            cluster: 5,
            key: b"k".to_vec(),
            body: PeerMessage::ReadReply {
                read: 1,
                promised: Ballot::new(9, 1),
                accepted,
                seen: seen.clone(),
                fast_unknown,
            },
        };
        let classic = Ballot::new(3, 1);
        assert!(reply(classic, &seen, false).validate(&config).is_ok());
        assert!(reply(Ballot::ZERO, &Seen::default(), true)
            .validate(&config)
            .is_ok());
        for broken in [
            reply(Ballot::FAST, &seen, false),
            reply(Ballot::ZERO, &seen, false),
            reply(classic, &seen, true),
            reply(Ballot::new(10, 1), &seen, false),
        ] {
            let error = broken.validate(&config).unwrap_err().to_string();
            assert!(error.contains("contradictory read reply"), "{error}");
        }
    }

    /// Every ballot, version and fence a peer sends is within the protocol's bounds: a round
    /// at `Ballot::MAX_ROUND` passes, one above it is refused wherever it stands, so that no
    /// frame can leave a key's proposers without a round above its promise.
    #[test]
    fn rounds_versions_and_fences_past_the_protocols_limit_are_refused() {
        let addrs: Vec<std::net::SocketAddr> = (1..=3)
            .map(|i| format!("127.0.0.1:{}", 7000 + i).parse().unwrap())
            .collect();
        let config = Config::local(&addrs);
        let envelope = |body| Envelope {
            from: 2,
            proposer: 7,
            epoch: 1,
            cluster: 5,
            key: b"k".to_vec(),
            body,
        };
        let state = |version, fence| Register {
            version,
            fence,
            value: Some(b"v".to_vec()),
            ..Register::default()
        };
        let messages = |round: u64, version: u64| {
            let b = Ballot::new(round, 2);
            let low = Ballot::new(1, 2);
            vec![
                PeerMessage::Prepare { ballot: b },
                PeerMessage::Accept {
                    ballot: b,
                    state: state(1, 1),
                    next: None,
                },
                PeerMessage::Accept {
                    ballot: low,
                    state: state(1, 1),
                    next: Some(b),
                },
                PeerMessage::Accept {
                    ballot: low,
                    state: state(version, 1),
                    next: None,
                },
                PeerMessage::Accept {
                    ballot: low,
                    state: state(1, version),
                    next: None,
                },
                PeerMessage::Promise {
                    ballot: b,
                    accepted: low,
                    state: state(1, 1),
                    fast_unknown: false,
                },
                PeerMessage::Accepted {
                    ballot: low,
                    promised: b,
                },
                PeerMessage::Reject {
                    ballot: low,
                    seen: b,
                },
                PeerMessage::Failed {
                    ballot: b,
                    reason: "x".into(),
                },
                PeerMessage::QueryReply {
                    read: 1,
                    promised: b,
                    accepted: low,
                    state: state(1, 1),
                    fast_unknown: false,
                },
                PeerMessage::ReadReply {
                    read: 1,
                    promised: b,
                    accepted: low,
                    seen: Seen {
                        version: 1,
                        ..Seen::default()
                    },
                    fast_unknown: false,
                },
                PeerMessage::ReadReply {
                    read: 1,
                    promised: low,
                    accepted: low,
                    seen: Seen {
                        version,
                        fence: 1,
                        ..Seen::default()
                    },
                    fast_unknown: false,
                },
                PeerMessage::Chosen {
                    changes: vec![KeyChange {
                        version,
                        value: None,
                    }],
                },
            ]
        };
        for message in messages(Ballot::MAX_ROUND, Register::MAX_VERSION) {
            let within = envelope(message.clone()).validate(&config);
            assert!(within.is_ok(), "{message:?}: {within:?}");
        }
        for (at_limit, past) in messages(Ballot::MAX_ROUND, Register::MAX_VERSION)
            .into_iter()
            .zip(messages(u64::MAX, u64::MAX))
        {
            if at_limit == past {
                continue; // the message carries neither a round nor a version
            }
            let error = envelope(past.clone()).validate(&config).unwrap_err();
            assert!(
                error.to_string().contains("above the protocol's limit"),
                "{past:?}: {error}"
            );
        }
        // The same bounds on what anti-entropy exchanges.
        let record = |promised: u64, version: u64| SyncRecord {
            key: b"k".to_vec(),
            record: AcceptorRecord {
                promised: Ballot::new(promised, 1),
                accepted: Ballot::new(1, 1),
                state: state(version, 1),
                fast_unknown: false,
            },
        };
        assert!(record(Ballot::MAX_ROUND, Register::MAX_VERSION)
            .validate(&config)
            .is_ok());
        assert!(record(u64::MAX, 1).validate(&config).is_err());
        assert!(record(2, u64::MAX).validate(&config).is_err());
        let entry = |round| DigestEntry {
            key: b"k".to_vec(),
            promised: Ballot::new(round, 1),
            accepted: Ballot::ZERO,
        };
        assert!(entry(Ballot::MAX_ROUND).validate(&config).is_ok());
        assert!(entry(u64::MAX).validate(&config).is_err());
    }

    #[test]
    fn byte_strings_are_encoded_compactly() {
        let cmd = Command::Put {
            value: vec![0xff; 1000],
        };
        // variant index + varint length + the bytes themselves
        assert!(postcard::to_stdvec(&cmd).unwrap().len() <= 1000 + 4);
    }
}
