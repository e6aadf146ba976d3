//! The domain types of the protocol: node ids, ballots, the replicated register of one key,
//! the commands applied to it and what they did. Plain serde data; they travel inside the
//! wire messages of [`crate::messages`] and inside the acceptor records on disk, so the
//! postcard rule applies to them too: **add enum variants at the end, never reorder**.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::paxos::recent::{RecentWrites, Remembered, RequestId, WriteOutcome};

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

    /// The highest round a ballot from another node may carry (`messages::Envelope::validate`
    /// and the record checks refuse the rest). Rounds grow by one per Prepare of one key:
    /// at a million Prepares a second on one key, 2^62 lasts 146,000 years, so no correct
    /// node sends more. Without the bound, one frame promising round `u64::MAX` (a corrupt or
    /// forged peer) would leave the key's proposers no round above it: `next_for` would
    /// overflow (a panic with overflow checks, a wrap to round 0, below every promise,
    /// without), and the key would stay unwritable forever, its promise copied to every
    /// replica by anti-entropy. Below the bound, a proposer's own `+ 1`s cannot reach
    /// `u64::MAX` either.
    pub const MAX_ROUND: u64 = 1 << 62;

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

/// A write remembered by a register, in the form builds before the compact encoding
/// ([`crate::paxos::recent`]) kept and wrote it: read from their records only
/// (`paxos::record::AcceptorRecordV2`).
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
    /// [`crate::paxos::register::RECENT_WRITES`] of them, in their compact encoding
    /// ([`crate::paxos::recent`]).
    pub recent: RecentWrites,
    /// Per client, the highest sequence of a write this register applied and forgot
    /// (least recently raised first, at most [`crate::paxos::register::CLIENT_FLOORS`]). A
    /// write that may have been applied before, is not in `recent` and is at or below its
    /// client's floor is refused ("outcome unknown") rather than risk applying it twice.
    pub floors: Vec<ClientFloor>,
    /// Some client's floor was itself forgotten (more than `CLIENT_FLOORS` clients had
    /// writes forgotten): a write that may have been applied before, from a client with no
    /// floor here, is then refused too.
    pub floors_overflowed: bool,
    /// The lease this key's value is attached to (`paxos::lease`): deleted with it. Set by a
    /// [`Command::LeasedWrite`], cleared by every other write.
    pub lease: Option<u64>,
    /// Raised by one on every write that changes the version, and by every
    /// [`Command::Release`] (a lease that listed this key ended): a [`Command::LeasedWrite`]
    /// names the fence it read before it attached the key to its lease and is refused if it
    /// moved, so that a write delayed past its lease's end cannot leave a key attached to a
    /// lease that is gone, and no one leased write applies twice (`paxos::lease`,
    /// `paxos::register`).
    pub fence: u64,
}

/// What a read sees of a register: all of it but the writes it remembers for
/// de-duplication (`recent`, `floors`), which can make up most of a busy key's state (32
/// writes take about 100 bytes in their compact encoding, `paxos::recent`, and 480 took
/// before it, against a 100-byte value) and which no read needs. An
/// acceptor answers a read with this (`PeerMessage::ReadReply`), never a proposer's Accept:
/// a state without its remembered writes, accepted, would apply a retried write twice
/// (`paxos::proposer`, "Reads that carry no remembered writes").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Seen {
    pub version: u64,
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    pub lease: Option<u64>,
    pub fence: u64,
}

impl Register {
    /// The highest `version` and `fence` a state from another node may carry, for the
    /// reason of [`Ballot::MAX_ROUND`]: each grows by one per write, and `+ 1` on a forged
    /// `u64::MAX` would panic or wrap (a version that goes down).
    pub const MAX_VERSION: u64 = 1 << 62;

    /// What a read sees of this state.
    pub fn seen(&self) -> Seen {
        Seen {
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
            fence: self.fence,
        }
    }
}

impl Seen {
    /// A register holding what was seen and remembering no writes: enough to answer a get or
    /// an inspect ([`crate::paxos::register::apply`]), and never to be accepted.
    pub fn forgetful(self) -> Register {
        Register {
            version: self.version,
            value: self.value,
            lease: self.lease,
            fence: self.fence,
            ..Register::default()
        }
    }
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
    /// Remove the value if there is one and the version is `expect` (HTTP's `DELETE` with
    /// `If-Match`). Answered as a `Delete`: `deleted: false` with the current version when it
    /// does not match (or there was no value). Last of the variants: postcard numbers them.
    DeleteIf { expect: u64 },
    /// Raise the version by one, the value unchanged, if there is a value (a lease's
    /// keepalive: `paxos::lease`). Answered as a `Cas`: `swapped: false` with the current
    /// version when there is no value.
    Touch,
    /// A put (`expect: None`) or a compare-and-set (`Some(expect)`, as [`Command::Cas`])
    /// that attaches the key to `lease`, if the key's [`Register::fence`] is still `fence`;
    /// answered as a `Put` or a `Cas`, or [`Outcome::Fenced`] (nothing done). Only a node
    /// sends it, after it recorded the key in the lease (`actors::lease`). `retried`: the
    /// client sent this write before (`RequestBody::LeasedWrite::maybe_applied`): the
    /// register's de-duplication rules apply in full (`paxos::register`).
    ///
    /// Boxed, as [`Outcome::Inspect`]: a command is held in queues and batches, and the
    /// other variants fit in 32 bytes (postcard writes a box's contents, so the bytes are
    /// those of a variant with these fields).
    LeasedWrite(Box<LeasedWrite>),
    /// Lease `lease` ended and listed this key: delete the value if it is attached to that
    /// lease, and raise the fence whatever it is attached to. Answered as a `Delete`.
    Release { lease: u64 },
    /// On a lease's register: record `key` among the lease's keys, if the lease is live and
    /// holds fewer than `max_keys` keys (or holds this one already); the version goes up by
    /// one (a keepalive too). Answered as a `Cas`.
    LeaseAttach {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        max_keys: u32,
    },
    /// On a lease's register: end the lease (expiry, or revoke with `expect == 0`) if it is
    /// live and at version `expect`; its keys stay listed until they are released. Answered
    /// as a `Delete`.
    LeaseEnd { expect: u64 },
    /// Read the register with its lease and fence: [`Outcome::Inspect`].
    Inspect,
}

impl Command {
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::Get | Command::Inspect)
    }

    /// May a client send it in a `RequestBody::Kv`? The others are the lease machinery's,
    /// which keeps their order (`actors::lease`).
    pub fn is_for_clients(&self) -> bool {
        matches!(
            self,
            Command::Get
                | Command::Put { .. }
                | Command::Delete
                | Command::Cas { .. }
                | Command::DeleteIf { .. }
        )
    }

    /// Bytes of value the command carries.
    pub fn value_len(&self) -> usize {
        match self {
            Command::Put { value } | Command::Cas { value, .. } => value.len(),
            Command::LeasedWrite(w) => w.value.len(),
            Command::LeaseAttach { key, .. } => key.len(),
            Command::Get
            | Command::Delete
            | Command::DeleteIf { .. }
            | Command::Touch
            | Command::Release { .. }
            | Command::LeaseEnd { .. }
            | Command::Inspect => 0,
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
    /// A `LeasedWrite` refused: the key's fence is `fence`, not the one it named.
    Fenced { fence: u64 },
    /// The register as `Inspect` read it. Boxed: a register remembers the outcomes of its
    /// last writes (`AppliedWrite`, up to 128 in a record of an older build), and the other
    /// variants fit in 32 bytes.
    Inspect(Box<Inspected>),
}

impl Outcome {
    /// A write's outcome in the form a register remembers it; `None` for a read's.
    pub fn as_write(&self) -> Option<WriteOutcome> {
        Some(match *self {
            Outcome::Put { version } => WriteOutcome::Put { version },
            Outcome::Delete { deleted, version } => WriteOutcome::Delete { deleted, version },
            Outcome::Cas { swapped, version } => WriteOutcome::Cas { swapped, version },
            Outcome::Fenced { fence } => WriteOutcome::Fenced { fence },
            Outcome::Get { .. } | Outcome::Inspect(_) => return None,
        })
    }
}

impl From<WriteOutcome> for Outcome {
    fn from(w: WriteOutcome) -> Outcome {
        match w {
            WriteOutcome::Put { version } => Outcome::Put { version },
            WriteOutcome::Delete { deleted, version } => Outcome::Delete { deleted, version },
            WriteOutcome::Cas { swapped, version } => Outcome::Cas { swapped, version },
            WriteOutcome::Fenced { fence } => Outcome::Fenced { fence },
        }
    }
}

/// [`Command::LeasedWrite`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedWrite {
    pub expect: Option<u64>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: u64,
    pub fence: u64,
    pub retried: bool,
}

/// [`Outcome::Inspect`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected {
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    pub version: u64,
    pub lease: Option<u64>,
    pub fence: u64,
}

/// One change of a key's register, as a watch delivers it: the version it made and the value
/// it left (`None`: deleted). Versions of one key go up by one per change
/// ([`Register::version`]), so a watcher that sees version `v + 2` after `v` knows it missed
/// one (`actors::watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub version: u64,
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
}

impl KeyChange {
    /// The change a command made, from its outcome (a retried write's recorded outcome
    /// included): `None` for a read or a command that changed nothing.
    pub fn of(command: &Command, outcome: &Outcome) -> Option<KeyChange> {
        let version = match outcome {
            Outcome::Put { version }
            | Outcome::Delete {
                deleted: true,
                version,
            }
            | Outcome::Cas {
                swapped: true,
                version,
            } => *version,
            Outcome::Get { .. }
            | Outcome::Delete { .. }
            | Outcome::Cas { .. }
            | Outcome::Fenced { .. }
            | Outcome::Inspect { .. } => return None,
        };
        let value = match command {
            Command::Put { value } | Command::Cas { value, .. } => Some(value.clone()),
            Command::LeasedWrite(w) => Some(w.value.clone()),
            Command::Delete
            | Command::DeleteIf { .. }
            | Command::Release { .. }
            | Command::Get
            | Command::Inspect => None,
            // A lease's own register: its value is not in the command, and no watch may
            // have its key (the reserved prefix, `paxos::lease`).
            Command::Touch | Command::LeaseAttach { .. } | Command::LeaseEnd { .. } => return None,
        };
        Some(KeyChange { version, value })
    }

    /// Bytes it holds, for the watch buffers' budgets.
    pub fn bytes(&self) -> usize {
        16 + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// serde helper: `Option<Vec<u8>>` as an optional byte string (compact in postcard).
pub(crate) mod opt_bytes {
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

/// The one hash of a key (64-bit FNV-1a: fast on short keys, stable across builds and
/// machines). The client picks a key's home node with it, the supervisor seeds the key's
/// proposer RNG with it. Not a defence against chosen keys: nothing here depends on keys
/// spreading evenly.
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Mints the [`RequestId`]s of one writer: a client process, or a node for writes that came
/// without one. One 64-bit client id per mint, drawn at random by its owner (two mints never
/// share one), then a sequence that only goes up.
#[derive(Debug)]
pub struct WriteIdMint {
    client: u64,
    next_seq: std::sync::atomic::AtomicU64,
}

impl WriteIdMint {
    pub fn new(client: u64) -> WriteIdMint {
        WriteIdMint {
            client,
            next_seq: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The next write id.
    pub fn mint(&self) -> RequestId {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RequestId {
            client: self.client,
            seq,
        }
    }
}
