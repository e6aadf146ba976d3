//! The messages between the actors of one node: actix messages, never on the wire (the wire
//! protocol is [`crate::messages`]). One banner per receiving actor, in the order a request
//! travels: supervisor, proposer, acceptor, storage.
//!
//! Requests that need an answer from a per-key actor carry a [`ReplyTo`] instead of using
//! actix's reply future: passing the sender along costs no spawned task per hop, and a
//! sender dropped unanswered tells the caller that the actor stopped.

use crate::error::Result;
use crate::messages::{DigestEntry, Envelope, NodeStatus, PeerMessage, SyncRecord};
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{Command, Key, NodeId, Outcome, RequestId};

/// Where a per-key actor answers a request: the caller holds the receiving end. Passing it
/// along with the message (instead of actix's reply future) costs no spawned task per hop.
/// Dropped unanswered, it tells the caller the actor stopped.
pub type ReplyTo<T> = tokio::sync::oneshot::Sender<T>;

/// Which per-key actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Proposer,
    Acceptor,
}

// ---------------------------------------------------------------------------------------------
// To the node supervisor (`actors::supervisor`)
// ---------------------------------------------------------------------------------------------

/// A Paxos message that arrived for this node (from a peer or from this node itself), and,
/// from a peer, the bytes it holds of the node's inbox budget (`limits.max_inbox_bytes`),
/// carried on to the key's acceptor or proposer and given back once that actor has handled
/// it: the mailboxes a peer's frames wait in are bounded in bytes, not only in messages.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Envelope, pub Option<crate::actors::HeldBytes>);

/// Where the network and the outbox hand a [`Deliver`]: the key's live actor, or the
/// supervisor (`actors::routes`). False when it could not be queued (dropped).
pub type Inbound = std::sync::Arc<dyn Fn(Deliver) -> bool + Send + Sync>;

/// A command for a key with no live proposer on this node (the rest go straight to the key's
/// proposer, `actors::routes`, `supervisor::Keys`): the supervisor starts one.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SubmitFor {
    pub key: Key,
    pub submit: Submit,
}

/// Run a full classic round for `key` that changes nothing (an identity write), so that the
/// key's state is chosen at a classic ballot, never only at the fast one (see
/// `paxos::proposer`). Answered with the state read once it is, or with the error that
/// stopped it.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SettleKey {
    pub key: Key,
    pub reply: ReplyTo<Result<Outcome>>,
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

/// Test hook (cargo feature `testing`): make the key's actor of `role` crash as a fault would, so that it
/// is restarted from its durable state. Returns false if no such actor is alive.
#[cfg(feature = "testing")]
#[derive(Debug, actix::Message)]
#[rtype(result = "bool")]
pub struct CrashActor {
    pub key: Key,
    pub role: Role,
}

/// Test hook (cargo feature `testing`): the in-memory record of the key's live acceptor on this node
/// (`None` if no acceptor for the key is alive).
#[cfg(feature = "testing")]
#[derive(Debug, actix::Message)]
#[rtype(result = "Option<AcceptorRecord>")]
pub struct InspectAcceptor {
    pub key: Key,
}

/// Test hook (cargo feature `testing`): how many peers' Paxos messages and commands this
/// node's supervisor has handled (those for keys with no live actor to take them: the rest
/// skip it, `actors::routes`).
#[cfg(feature = "testing")]
#[derive(Debug, actix::Message)]
#[rtype(result = "u64")]
pub struct CountRelayed;

/// Anti-entropy, to the supervisor (which hands each record to the key's live acceptor, or
/// else to storage): merge peers' records into ours. Answers how many changed.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<u64>")]
pub struct Adopt {
    pub records: Vec<SyncRecord>,
}

// ---------------------------------------------------------------------------------------------
// To a per-key proposer (`actors::proposer`)
// ---------------------------------------------------------------------------------------------

/// Run `command` in a Paxos round before `deadline`; the outcome goes to `reply`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Submit {
    /// `None`: settle the key (see [`SettleKey`]).
    pub command: Option<Command>,
    pub write_id: Option<RequestId>,
    pub maybe_applied: bool,
    pub deadline: std::time::Instant,
    pub reply: ReplyTo<Result<Outcome>>,
}

/// An acceptor's reply for this key.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct FromAcceptor {
    pub from: NodeId,
    /// The epoch the acceptor answered at ([`Envelope::epoch`]).
    pub epoch: u64,
    /// The proposer instance the reply is for ([`Envelope::proposer`]).
    pub proposer: u64,
    pub msg: PeerMessage,
    /// The bytes the frame holds of the node's inbox budget ([`Deliver`]), given back when
    /// this message is handled: the per-key mailboxes count against the same budget.
    pub inbox: Option<crate::actors::HeldBytes>,
}

// ---------------------------------------------------------------------------------------------
// To a per-key acceptor (`actors::acceptor`)
// ---------------------------------------------------------------------------------------------

/// A proposer's request for this key.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct FromProposer {
    pub from: NodeId,
    /// The proposer's epoch ([`Envelope::epoch`]).
    pub epoch: u64,
    /// The proposer instance to answer ([`Envelope::proposer`]).
    pub proposer: u64,
    pub msg: PeerMessage,
    /// The bytes the frame holds of the node's inbox budget ([`Deliver`]), given back when
    /// this message is handled: the per-key mailboxes count against the same budget.
    pub inbox: Option<crate::actors::HeldBytes>,
}

/// To a live acceptor: merge a peer's record into its own.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<bool>")]
pub struct AdoptRecord {
    pub record: AcceptorRecord,
}

/// The acceptor's in-memory record (`None` while it is still loading it).
#[cfg(feature = "testing")]
#[derive(Debug, actix::Message)]
#[rtype(result = "Option<AcceptorRecord>")]
pub struct Inspect;

// ---------------------------------------------------------------------------------------------
// To either per-key actor
// ---------------------------------------------------------------------------------------------

/// The key has been idle: stop (the supervisor already forgot this actor).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Fail as a crash would (see [`CrashActor`]).
#[cfg(feature = "testing")]
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Crash;

// ---------------------------------------------------------------------------------------------
// To the storage actor (`actors::storage`)
// ---------------------------------------------------------------------------------------------

/// Make an acceptor record durable; `done` is answered once its transaction is committed
/// (fsynced).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Persist {
    pub key: Key,
    /// Shared with the acceptor's `DurableView`, which publishes it once it is durable.
    pub record: std::sync::Arc<AcceptorRecord>,
    pub done: ReplyTo<Result<()>>,
}

/// Read an acceptor record (after every write queued before this message is committed).
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Option<AcceptorRecord>>")]
pub struct Load {
    pub key: Key,
}

/// Anti-entropy, to the storage actor: the digest of up to `limit` records after `after`.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<DigestScan>")]
pub struct ScanDigest {
    pub after: Option<Key>,
    pub limit: usize,
}

/// A page of this node's digest.
#[derive(Debug)]
pub struct DigestScan {
    pub entries: Vec<DigestEntry>,
    /// More records follow the last entry.
    pub more: bool,
}

/// Anti-entropy, to the storage actor: among up to `limit` records after `after`, the keys
/// not settled at a classic ballot (accepted at the fast ballot, or `fast_unknown`); and the
/// last key scanned, if more records follow.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(Vec<Key>, Option<Key>)>")]
pub struct ScanUnsettled {
    pub after: Option<Key>,
    pub limit: usize,
}

/// Anti-entropy, to the storage actor: which of a peer's digest entries are ahead of ours.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Vec<Key>>")]
pub struct FindBehind {
    pub entries: Vec<DigestEntry>,
}

/// A listing's scan, to the storage actor: the records of the keys that start with `prefix`
/// after `after`, at most `limit` and `max_bytes` (`Store::scan_prefix`); and whether more
/// follow.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(Vec<SyncRecord>, bool)>")]
pub struct ScanPrefix {
    pub prefix: Key,
    pub after: Option<Key>,
    pub limit: usize,
    pub max_bytes: usize,
}

/// Anti-entropy, to the storage actor: the records of `keys`, in order, up to `max_bytes`.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Vec<SyncRecord>>")]
pub struct FetchRecords {
    pub keys: Vec<Key>,
    pub max_bytes: usize,
}

/// To the storage actor: merge records of keys that have no live acceptor, in one commit;
/// `done` gets how many records changed. Sent with `do_send` (never parked by a full
/// mailbox, so queued at once, before any `Load` an acceptor started afterwards sends), with
/// its answer on `done`, as `Persist` is: the supervisor's order of "adopt, then start the
/// key's acceptor" is what keeps a new acceptor from loading the record from before the
/// adoption and writing it back over it (review, 2026-12-08: `Addr::send` holds a message
/// until its future is polled while the sender is parked).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct AdoptRecords {
    pub records: Vec<SyncRecord>,
    pub done: ReplyTo<Result<u64>>,
}

/// How many keys the store holds a record of (`Store::record_count`): committed records
/// only, a group still gathering is not counted. For `status`: it looks up every key logged
/// since the last merge (at most `storage::MERGE_RECORDS`), so it is not for a hot path.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<u64>")]
pub struct CountRecords;

/// The store's own metadata (identity, generation, membership; see `actors::membership`).
/// Handled after every write queued before it is committed, so that a membership installed
/// is durable only after every vote the node cast before it.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<MetaAnswer>")]
pub enum Meta {
    /// The store's identity.
    StoreId,
    /// Begin a round of `Hello`s (`paxos::identity::begin_round`): the round still pending,
    /// else a fresh one at the next generation with `call`, stored as pending; answers
    /// `MetaAnswer::Round`.
    BeginRound { call: u64 },
    /// The round was confirmed by `q - 1` voters: it is pending no more.
    RoundAnswered(crate::paxos::identity::Round),
    /// The installed membership.
    LoadMembership,
    /// Install a membership if newer; answers the installed epoch.
    Install(crate::paxos::membership::Membership),
    /// A peer's store says `Hello` at a generation; answers the highest generation of that
    /// store seen before (`paxos::identity::judge_hello`).
    Hello {
        node: NodeId,
        store: u64,
        generation: u64,
        call: u64,
    },
    /// Mark this store refused for good, with the reason.
    MarkRefused(String),
    /// Why this store was refused, if it was (`MetaAnswer::Refused`).
    Refused,
}

#[derive(Debug)]
pub enum MetaAnswer {
    U64(u64),
    /// A round, and whether it is fresh.
    Round(crate::paxos::identity::Round, bool),
    Membership(Option<crate::paxos::membership::Membership>),
    Refused(Option<String>),
    Done,
}
