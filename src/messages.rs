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

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{opt_bytes, Ballot, Command, Key, NodeId, Outcome, Register, RequestId};

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
    pub result: Result<Reply, Error>,
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
    pub record: AcceptorRecord,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{AppliedWrite, ClientFloor};

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
