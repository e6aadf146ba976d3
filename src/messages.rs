//! Every message paxkv sends: on the wire between nodes and clients, and between the actors of
//! one node.
//!
//! Wire messages are plain serde data encoded with postcard inside length-prefixed frames
//! (see [`crate::actors::network`]). **postcard encodes enum variants by their index: add new
//! variants at the end of an enum, never in the middle, and never reorder or remove one**, or
//! nodes of different builds will misread each other.
//!
//! The protocol is CASPaxos (Rystsov 2018, arXiv 1802.07000): every key is its own rewritable
//! register, agreed by a Paxos round of Prepare/Promise then Accept/Accepted (§2.1), with the
//! one-round-trip optimisation of §2.2.1 (an Accept carries the promise for the proposer's next
//! ballot) and a quorum read that needs no Accept phase when a majority already agrees.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster configuration. Unique, never zero.
pub type NodeId = u32;

/// A key's bytes. At most `limits.max_key_bytes` long (see [`crate::config`]).
pub type Key = Vec<u8>;

/// A ballot `(round, node)`, ordered lexicographically. Unique per proposer: two proposers on
/// different nodes never share one, and a proposer never reuses one (acceptors only promise a
/// ballot strictly above everything they have seen, so a restarted proposer that picks a stale
/// round is rejected and jumps past it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Compared first.
    pub round: u64,
    /// Breaks ties between proposers on different nodes.
    pub node: NodeId,
}

impl Ballot {
    /// Below every ballot a proposer can use: what an acceptor that never voted holds.
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };

    /// The fast ballot (Fast Paxos, Lamport 2006): above `ZERO`, below every classic ballot
    /// (classic rounds start at 1). Any proposer may send an Accept at it, without a Prepare,
    /// for a key it has never seen; an acceptor takes it only if it holds no record of the key
    /// at all. Several states may be accepted at it; a state is chosen at it only when a fast
    /// quorum (`n - n/4`: 4 of 5) accepted it, and a classic round that finds it recovers the
    /// one state that may have been (see `paxos::proposer`).
    pub const FAST: Ballot = Ballot {
        round: 0,
        node: NodeId::MAX,
    };

    pub fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { round, node }
    }

    /// The smallest ballot of `node` that is above `self`.
    pub fn next_for(self, node: NodeId) -> Ballot {
        Ballot::new(self.round + 1, node)
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// Identifies one client write across retries: a retried write carries the same id, and a
/// register remembers the outcomes of its last writes by id, so a write whose reply was lost
/// never takes effect twice. No clock is involved: a client's ids are ordered by its own
/// sequence only, and one client's ids are never compared with another's (see
/// [`Register::floors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Chosen at random by each client process (64 bits: two clients never share one).
    pub client: u64,
    /// Increases with every write of that client.
    pub seq: u64,
}

/// A write remembered by a register, so that a retry of it answers the first outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedWrite {
    pub id: RequestId,
    pub outcome: Outcome,
}

/// The highest sequence of one client's writes that a register applied and then forgot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFloor {
    pub client: u64,
    pub seq: u64,
}

/// The replicated state of one key (the CASPaxos register).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Register {
    /// 0 while the key was never written; +1 on every put, every delete of a present value and
    /// every swapping cas. Never goes down, never repeats.
    pub version: u64,
    /// `None`: never written, or deleted.
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    /// The most recent writes applied to this register, oldest first, at most
    /// [`crate::paxos::register::RECENT_WRITES`] of them.
    pub recent: Vec<AppliedWrite>,
    /// Per client, the highest sequence of a write this register applied and forgot
    /// (least recently raised first, at most [`crate::paxos::register::CLIENT_FLOORS`]). A
    /// write that may have been applied before, is not in `recent` and is at or below its
    /// client's floor is refused ("outcome unknown") rather than risk applying it twice.
    pub floors: Vec<ClientFloor>,
    /// Some client's floor was itself forgotten (more than `CLIENT_FLOORS` clients had
    /// writes forgotten): a write that may have been applied before, from a client with no
    /// floor here, is then refused too.
    pub floors_overflowed: bool,
}

/// A change function applied to a register by a Paxos round (CASPaxos §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The identity: read the register.
    Get,
    /// Set the value.
    Put {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove the value, if there is one.
    Delete,
    /// Set the value if the version is `expect` (`expect == 0`: if there is no value).
    Cas {
        expect: u64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl Command {
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::Get)
    }

    /// Bytes of value the command carries.
    pub fn value_len(&self) -> usize {
        match self {
            Command::Put { value } | Command::Cas { value, .. } => value.len(),
            Command::Get | Command::Delete => 0,
        }
    }
}

/// What a command did, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The register as read.
    Get {
        #[serde(with = "opt_bytes")]
        value: Option<Vec<u8>>,
        version: u64,
    },
    /// The version the put created.
    Put { version: u64 },
    /// `deleted`: there was a value and it is gone, `version` is the new one; otherwise nothing
    /// changed and `version` is the current one.
    Delete { deleted: bool, version: u64 },
    /// `swapped`: the value was set and `version` is the new one; otherwise nothing changed
    /// and `version` is the current one.
    Cas { swapped: bool, version: u64 },
}

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
    /// The key whose register this is about.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    pub body: PeerMessage,
}

/// The per-key Paxos messages. Proposer → acceptor: `Prepare`, `Accept`, `Query`;
/// acceptor → proposer: `Promise`, `Accepted`, `Reject`, `Failed`, `QueryReply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Phase 1a: asks the acceptor to promise `ballot`. Answered with `Promise` only if
    /// `ballot` is above every ballot the acceptor promised or accepted, and only after that
    /// promise is durable; otherwise with `Reject`.
    Prepare { ballot: Ballot },
    /// Phase 1b: the acceptor durably promised `ballot` and never accepts below it; `accepted`
    /// is the highest ballot it accepted (`Ballot::ZERO` if none) and `state` what it accepted.
    /// `fast_unknown`: it holds no vote but may have accepted *some* state at the fast ballot
    /// that it no longer holds (its store was lost and rebuilt; see
    /// `AcceptorRecord::fast_unknown`): Fast Paxos recovery counts it as a possible holder of
    /// any state, like an acceptor that did not answer.
    Promise {
        ballot: Ballot,
        accepted: Ballot,
        state: Register,
        fast_unknown: bool,
    },
    /// Phase 2a: asks the acceptor to accept `state` at `ballot`. `next`, if set, is above
    /// `ballot` and asks the acceptor to promise it in the same write (CASPaxos §2.2.1). An
    /// Accept without `next` is also how a proposer repairs a stale acceptor with a state it
    /// knows to be chosen.
    Accept {
        ballot: Ballot,
        state: Register,
        next: Option<Ballot>,
    },
    /// Phase 2b: the acceptor durably accepted `ballot`; `promised` is the promise it holds
    /// after that write (the Accept's `next` if it took it).
    Accepted { ballot: Ballot, promised: Ballot },
    /// The acceptor refused the Prepare or Accept for `ballot` because it has promised or
    /// accepted `seen`, which is at least as high. The proposer retries above `seen`.
    Reject { ballot: Ballot, seen: Ballot },
    /// The acceptor could not make its answer to `ballot` durable (a storage error, such as
    /// a full disk or LMDB map); it holds no promise or accept from that request, and it
    /// reloads its record from disk. The proposer stops counting on it for this phase, and
    /// names `reason` if the request fails.
    Failed { ballot: Ballot, reason: String },
    /// A read: asks for the acceptor's current record without changing or persisting it.
    Query { read: u64 },
    /// The answer to `Query { read }`: the acceptor's durable record (`fast_unknown` as in
    /// `Promise`: such a reply confirms no state).
    QueryReply {
        read: u64,
        promised: Ballot,
        accepted: Ballot,
        state: Register,
        fast_unknown: bool,
    },
}

impl PeerMessage {
    /// Requests go to the key's acceptor, replies to the key's proposer.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            PeerMessage::Prepare { .. } | PeerMessage::Accept { .. } | PeerMessage::Query { .. }
        )
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
    pub id: u64,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Apply `command` to `key`. `write_id` identifies a write across retries (required for
    /// writes, ignored for gets).
    Kv {
        #[serde(with = "serde_bytes")]
        key: Key,
        command: Command,
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
    /// Anti-entropy, node to node: the (key, promised, accepted) digest of up to `limit`
    /// records with keys after `after`, in key order. `limit = 0` asks only for the
    /// [`SyncSource`] state.
    SyncDigest {
        #[serde(with = "opt_bytes")]
        after: Option<Key>,
        limit: u32,
    },
    /// Anti-entropy: the records of these keys (as many, in order, as fit one frame).
    SyncFetch { keys: Vec<serde_bytes::ByteBuf> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub id: u64,
    pub result: Result<Reply, ErrorReply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Kv(Outcome),
    Pong {
        node: NodeId,
    },
    Status(NodeStatus),
    /// `SetFaults` took effect.
    FaultsSet,
    SyncDigest(SyncDigestPage),
    SyncRecords(Vec<SyncRecord>),
}

/// Whether a node's records may be trusted by a node that is rebuilding its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncSource {
    /// The node votes as an acceptor (it finished its own recovery since it started).
    pub voting: bool,
    /// The node's store completed a recovery (or a cluster bootstrap) at least once: it is
    /// not a freshly created or wiped store.
    pub synced_once: bool,
    /// The node holds no record at all.
    pub empty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDigestPage {
    pub source: SyncSource,
    pub entries: Vec<DigestEntry>,
    /// More records follow the last entry.
    pub more: bool,
}

/// One key's ballots, enough to tell whether the asking node is behind on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    #[serde(with = "serde_bytes")]
    pub key: Key,
    pub promised: Ballot,
    pub accepted: Ballot,
}

/// A key's acceptor record, as one node sends it to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    #[serde(with = "serde_bytes")]
    pub key: Key,
    pub record: crate::paxos::acceptor::AcceptorRecord,
}

/// A node's counters, for operators and for the tests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    /// Per-key proposer and acceptor actors alive now.
    pub live_proposers: u64,
    pub live_acceptors: u64,
    /// Acceptor actors that crashed and were restarted from disk since the node started.
    pub acceptor_restarts: u64,
    pub proposer_restarts: u64,
    /// Write transactions committed (each one fsync) and records they wrote.
    pub commits: u64,
    pub records_written: u64,
    /// Peer frames dropped because a peer's queue was full or it was unreachable.
    pub peer_frames_dropped: u64,
    /// Connections closed for a malformed or oversized frame.
    pub bad_frames: u64,
    /// Resident memory of the node process, bytes (0 where unknown).
    pub rss_bytes: u64,
    /// The node's acceptors vote: it has rebuilt its state from a majority since it started.
    pub voting: bool,
    /// Records this node took from peers by anti-entropy, and completed sync rounds.
    pub records_adopted: u64,
    pub sync_rounds: u64,
    /// Paxos requests dropped because the node was not voting yet.
    pub dropped_not_voting: u64,
    /// The node finished the repair that follows its recovery (see `actors::sync`): from
    /// then on it holds, at a classic ballot, every state its sources held when it
    /// recovered. Another node may lose its disk safely only once this one is repaired.
    pub repaired: bool,
    /// Acceptors started while another acceptor of the same key was alive (must be 0).
    pub duplicate_acceptors: u64,
    /// Keys this node settled at a classic ballot (recovery and anti-entropy sweeps).
    pub keys_settled: u64,
}

/// Why a request failed. What a client may retry is kept apart from what it must not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorReply {
    /// No quorum before the deadline, and the request certainly did not take effect. Retry.
    Unavailable(String),
    /// The request may or may not have taken effect (an Accept was sent but no quorum
    /// answered before the deadline). Retrying a write with the same `write_id` is safe.
    Unknown(String),
    /// The request is malformed or over a limit; retrying it will fail the same way.
    BadRequest(String),
    /// The node is over a limit (live keys, requests in flight). Retry later or elsewhere.
    Busy(String),
}

/// Everything one connection carries, in either direction. A connection from a peer carries
/// `Peer` frames; a connection from a client carries `Request` frames one way and `Response`
/// frames the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Peer(Envelope),
    Request(ClientRequest),
    Response(ClientResponse),
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
    pub default: LinkFaults,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkFaults {
    /// Drop everything.
    pub cut: bool,
    /// Drop each message with this probability, per thousand.
    pub drop_permille: u16,
    /// Send each message twice with this probability, per thousand.
    pub duplicate_permille: u16,
    /// Delay each message by a uniform draw from this range (0 = no delay).
    pub delay_min_ms: u64,
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
// Between the actors of one node (actix messages; never on the wire)
// ---------------------------------------------------------------------------------------------

/// Which per-key actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Proposer,
    Acceptor,
}

// ---- to the node supervisor (`actors::supervisor`) ----

/// A Paxos message that arrived for this node (from a peer or from this node itself).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Envelope);

/// Where a per-key actor answers a request: the caller holds the receiving end. Passing it
/// along with the message (instead of actix's reply future) costs no spawned task per hop.
/// Dropped unanswered, it tells the caller the actor stopped.
pub type ReplyTo<T> = tokio::sync::oneshot::Sender<T>;

/// A client's command for one key, to be run by that key's proposer on this node.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ClientCommand {
    pub key: Key,
    pub command: Command,
    /// Set for every write (the node assigns one when the client did not).
    pub write_id: Option<RequestId>,
    /// See [`RequestBody::Kv`].
    pub maybe_applied: bool,
    pub reply: ReplyTo<crate::Result<Outcome>>,
}

/// Run a full classic round for `key` that changes nothing (an identity write), so that the
/// key's state is chosen at a classic ballot, never only at the fast one (see
/// `paxos::proposer`). Answered with the state read once it is, or with the error that
/// stopped it.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SettleKey {
    pub key: Key,
    pub reply: ReplyTo<crate::Result<Outcome>>,
}

/// A per-key actor stopped: crashed (the supervisor restarts it from disk) or retired idle.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ActorStopped {
    pub key: Key,
    pub role: Role,
    /// Distinguishes incarnations, so a late notice never removes a newer actor.
    pub incarnation: u64,
    pub crashed: bool,
}

/// The node's counters.
#[derive(Debug, actix::Message)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// Test and operator hook: make the key's actor of `role` crash as a fault would, so that it
/// is restarted from its durable state. Returns false if no such actor is alive.
#[derive(Debug, actix::Message)]
#[rtype(result = "bool")]
pub struct CrashActor {
    pub key: Key,
    pub role: Role,
}

/// Test and operator hook: the in-memory record of the key's live acceptor on this node
/// (`None` if no acceptor for the key is alive).
#[derive(Debug, actix::Message)]
#[rtype(result = "Option<crate::paxos::acceptor::AcceptorRecord>")]
pub struct InspectAcceptor {
    pub key: Key,
}

/// The acceptor's in-memory record (`None` while it is still loading it).
#[derive(Debug, actix::Message)]
#[rtype(result = "Option<crate::paxos::acceptor::AcceptorRecord>")]
pub struct Inspect;

// ---- to a per-key proposer (`actors::proposer`) ----

/// Run `command` in a Paxos round before `deadline`; the outcome goes to `reply`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Submit {
    /// `None`: settle the key (see [`SettleKey`]).
    pub command: Option<Command>,
    pub write_id: Option<RequestId>,
    pub maybe_applied: bool,
    pub deadline: std::time::Instant,
    pub reply: ReplyTo<crate::Result<Outcome>>,
}

/// An acceptor's reply for this key.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct FromAcceptor {
    pub from: NodeId,
    /// The proposer instance the reply is for ([`Envelope::proposer`]).
    pub proposer: u64,
    pub msg: PeerMessage,
}

// ---- to a per-key acceptor (`actors::acceptor`) ----

/// A proposer's request for this key.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct FromProposer {
    pub from: NodeId,
    /// The proposer instance to answer ([`Envelope::proposer`]).
    pub proposer: u64,
    pub msg: PeerMessage,
}

// ---- to either per-key actor ----

/// The key has been idle: stop (the supervisor already forgot this actor).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Fail as a crash would (see [`CrashActor`]).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Crash;

// ---- to the storage actor (`actors::storage`) ----

/// Make an acceptor record durable; `done` is answered once its transaction is committed
/// (fsynced).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Persist {
    pub key: Key,
    pub record: crate::paxos::acceptor::AcceptorRecord,
    pub done: ReplyTo<crate::Result<()>>,
}

/// Anti-entropy, to the storage actor: the digest of up to `limit` records after `after`.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<SyncDigestPage>")]
pub struct ScanDigest {
    pub after: Option<Key>,
    pub limit: usize,
}

/// Anti-entropy, to the storage actor: among up to `limit` records after `after`, the keys
/// not settled at a classic ballot (accepted at the fast ballot, or `fast_unknown`); and the
/// last key scanned, if more records follow.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<(Vec<Key>, Option<Key>)>")]
pub struct ScanUnsettled {
    pub after: Option<Key>,
    pub limit: usize,
}

/// Anti-entropy, to the storage actor: which of a peer's digest entries are ahead of ours.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<Vec<Key>>")]
pub struct FindBehind {
    pub entries: Vec<DigestEntry>,
    /// Only the keys where the peer accepted a higher classic ballot (recovery's repair),
    /// not also those where it only promised a higher one.
    pub accepted_only: bool,
}

/// Anti-entropy, to the storage actor: the records of `keys`, in order, up to `max_bytes`.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<Vec<SyncRecord>>")]
pub struct FetchRecords {
    pub keys: Vec<Key>,
    pub max_bytes: usize,
}

/// Anti-entropy, to the supervisor (which hands each record to the key's live acceptor, or
/// else to storage): merge peers' records into ours. Answers how many changed.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<u64>")]
pub struct Adopt {
    pub records: Vec<SyncRecord>,
    /// This node is rebuilding its store ([`crate::paxos::acceptor::Acceptor::recover_from`]),
    /// not catching up.
    pub recovery: bool,
}

/// To the storage actor: merge records of keys that have no live acceptor, in one commit.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<u64>")]
pub struct AdoptRecords {
    pub records: Vec<SyncRecord>,
    pub recovery: bool,
}

/// To a live acceptor: merge a peer's record into its own.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<bool>")]
pub struct AdoptRecord {
    pub record: crate::paxos::acceptor::AcceptorRecord,
    pub recovery: bool,
}

/// To the storage actor: this node finished a recovery; remember it across restarts.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<()>")]
pub struct MarkSynced;

/// Read an acceptor record (after every write queued before this message is committed).
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::Result<Option<crate::paxos::acceptor::AcceptorRecord>>")]
pub struct Load {
    pub key: Key,
}

/// serde helper: `Option<Vec<u8>>` as an optional byte string (compact in postcard).
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(serde_bytes::Bytes::new(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        Ok(v.map(serde_bytes::ByteBuf::into_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            key: b"k".to_vec(),
            body: PeerMessage::Promise {
                ballot: Ballot::new(4, 3),
                accepted: Ballot::new(2, 1),
                fast_unknown: false,
                state: Register {
                    version: 9,
                    value: Some(vec![1, 2, 3]),
                    recent: vec![AppliedWrite {
                        id: RequestId { client: 1, seq: 2 },
                        outcome: Outcome::Put { version: 9 },
                    }],
                    floors: vec![ClientFloor { client: 1, seq: 1 }],
                    floors_overflowed: false,
                },
            },
        });
        let bytes = postcard::to_stdvec(&frame).unwrap();
        assert_eq!(postcard::from_bytes::<Frame>(&bytes).unwrap(), frame);
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
