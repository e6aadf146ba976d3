//! The writes a register remembers for de-duplication
//! ([`Register::recent`](crate::paxos::types::Register::recent)), held in one
//! compact encoding: the same bytes in memory, in every frame and in every record.
//!
//! **Why.** A busy key's register remembers its last
//! [`REMEMBERED_WRITES`](crate::paxos::register::REMEMBERED_WRITES) writes, and that memory
//! travels with the state: in every Accept, every promise that reports a state, every
//! acceptor record and every log entry. Held as a `Vec` of `AppliedWrite`s (each with a
//! whole `Outcome`), 32 of them were about 480 of a 600-byte state (for a 100-byte value),
//! and every hop serialized,
//! parsed, cloned and dropped them one field at a time: a put on a key written 30 times
//! cost 1.45x the CPU of a put on a key remembering one write (BENCHMARKS.md, issue 23,
//! "the remembered writes in one compact encoding"). Here they are one byte string, which a
//! hop copies whole; only [`crate::paxos::register::apply`] reads it entry by entry, once
//! per write applied. It takes about 3 bytes a write when one or a few clients write the key;
//! each further client costs its 64-bit id once (about 13-15 bytes), so a key written by
//! as many clients as it remembers writes takes nearly what the list took.
//!
//! **Encoding.** The writes, oldest first, each as:
//! - `head`, a varint: `kind + KINDS * client`, where `kind` names the outcome (`Put`,
//!   `Delete` not deleted / deleted, `Cas` not swapped / swapped, `Fenced`) and `client` is
//!   0 for a client not named before in the string (its 64-bit id follows, as a varint) or
//!   `i` for the `i`-th distinct client named so far (1-based);
//! - the write's sequence: for a new client, a varint of it; for one named before, a zigzag
//!   varint of its difference from that client's previous sequence in the string
//!   (wrapping);
//! - the outcome's number (the version, or a `Fenced` outcome's fence): a zigzag varint of
//!   its difference from the previous entry's number (0 before the first; wrapping).
//!
//! **Canonical.** Decoding accepts exactly what the encoder (`RecentWrites::encode`, behind
//! [`RecentWrites::from_writes`]) produces for some list of up to 255 writes, and nothing
//! else: a varint must be minimal, a client named before must be referred to (not
//! named again), a reference must name a client named before, and nothing may follow the
//! last entry. So two registers remember the same writes if and only if they hold the same
//! bytes, and comparing states
//! (an acceptor's duplicate Accept, a fast-ballot vote count, a known-fast read) means what
//! it meant when the writes were a `Vec`. A forged or broken string is refused where the
//! frame or the record is decoded, with the rest of it.
//!
//! Nothing from the network reaches an `expect` unvalidated: the iterator's `expect`s hold
//! because every `RecentWrites` was built by the encoder or passed [`validate`].

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// How many applied writes a register may remember: the bound a peer's frame or record is
/// checked against (`messages::check_state`; a record read from this node's disk is only
/// held to 255, `MAX_DECODED`), which records written by older builds (which kept 128)
/// meet, and the most commands one round applies (`paxos.max_batch`). How many it keeps is
/// [`REMEMBERED_WRITES`](crate::paxos::register::REMEMBERED_WRITES).
pub const RECENT_WRITES: usize = 128;

/// The most writes a string decodes to. Past [`RECENT_WRITES`] it is well formed but not a
/// state any register holds: a peer's frame carrying one is refused as contradictory by
/// its validation (`messages::check_state`), with the connection kept.
const MAX_DECODED: usize = u8::MAX as usize;

/// The outcome kinds an entry's head names.
const KINDS: u64 = 6;

/// Identifies one client write across retries: a retried write carries the same id, and a
/// register remembers the outcomes of its last writes by id, so a write whose reply was lost
/// never takes effect twice. No clock is involved: a client's ids are ordered by its own
/// sequence only, and one client's ids are never compared with another's (see
/// [`Register::floors`](crate::paxos::types::Register::floors)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Chosen at random by each client process (64 bits: two clients never share one).
    pub client: u64,
    /// Increases with every write of that client.
    pub seq: u64,
}

/// What a remembered write did: a write's outcome, as the client saw it (a read's is never
/// remembered). [`crate::paxos::types::Outcome`] converts to and from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Put { version: u64 },
    Delete { deleted: bool, version: u64 },
    Cas { swapped: bool, version: u64 },
    Fenced { fence: u64 },
}

/// A write a register remembers, so that a retry of it answers the first outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub id: RequestId,
    pub outcome: WriteOutcome,
}

/// The writes a register remembers, oldest first (see the module doc).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RecentWrites {
    bytes: Vec<u8>,
    len: u8,
}

const _: () = assert!(RECENT_WRITES <= MAX_DECODED);

impl RecentWrites {
    /// How many writes are remembered.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoding's size.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The writes, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            rest: &self.bytes,
            clients: Vec::new(),
            number: 0,
        }
    }

    pub fn to_vec(&self) -> Vec<Remembered> {
        self.iter().collect()
    }

    /// Encodes `writes` (oldest first). Refused: more than [`RECENT_WRITES`] of them.
    pub fn from_writes(writes: &[Remembered]) -> Result<RecentWrites, String> {
        if writes.len() > RECENT_WRITES {
            return Err(format!("{} remembered writes", writes.len()));
        }
        Ok(RecentWrites::encode(writes))
    }

    /// Encodes `writes` past the bound, as a forger could (tests of bad frames only: every
    /// receiver refuses more than [`RECENT_WRITES`]).
    #[cfg(feature = "testing")]
    pub fn forged(writes: &[Remembered]) -> RecentWrites {
        assert!(writes.len() <= MAX_DECODED);
        RecentWrites::encode(writes)
    }

    fn encode(writes: &[Remembered]) -> RecentWrites {
        let mut bytes = Vec::with_capacity(writes.len() * 4 + 8);
        let mut clients: Vec<(u64, u64)> = Vec::new(); // (client, its last sequence)
        let mut last_number = 0u64;
        for w in writes {
            let (kind, number) = kind_of(w.outcome);
            match clients.iter().position(|(c, _)| *c == w.id.client) {
                Some(i) => {
                    put_varint(&mut bytes, kind + KINDS * (i as u64 + 1));
                    put_varint(&mut bytes, zigzag(w.id.seq.wrapping_sub(clients[i].1)));
                    clients[i].1 = w.id.seq;
                }
                None => {
                    put_varint(&mut bytes, kind);
                    put_varint(&mut bytes, w.id.client);
                    put_varint(&mut bytes, w.id.seq);
                    clients.push((w.id.client, w.id.seq));
                }
            }
            put_varint(&mut bytes, zigzag(number.wrapping_sub(last_number)));
            last_number = number;
        }
        RecentWrites {
            bytes,
            len: writes.len() as u8,
        }
    }
}

/// Checks that `bytes` is a canonical encoding (module doc) and counts its writes.
pub fn validate(bytes: &[u8]) -> Result<u8, String> {
    let mut rest = bytes;
    let mut clients: Vec<u64> = Vec::new();
    let mut count = 0usize;
    while !rest.is_empty() {
        if count == MAX_DECODED {
            return Err(format!("more than {MAX_DECODED} remembered writes"));
        }
        // Every kind below KINDS exists: the head's only constraint is its reference.
        let client = take_varint(&mut rest)? / KINDS;
        if client == 0 {
            let id = take_varint(&mut rest)?;
            if clients.contains(&id) {
                return Err("a client named twice".into());
            }
            clients.push(id);
        } else if client > clients.len() as u64 {
            return Err("a reference to a client never named".into());
        }
        take_varint(&mut rest)?; // the sequence, or its difference
        take_varint(&mut rest)?; // the number's difference
        count += 1;
    }
    Ok(count as u8)
}

/// The writes of a [`RecentWrites`], oldest first.
pub struct Iter<'a> {
    rest: &'a [u8],
    clients: Vec<(u64, u64)>,
    number: u64,
}

impl Iterator for Iter<'_> {
    type Item = Remembered;

    fn next(&mut self) -> Option<Remembered> {
        if self.rest.is_empty() {
            return None;
        }
        // Valid by construction (module doc).
        let mut take = || take_varint(&mut self.rest).expect("a validated encoding");
        let head = take();
        let (kind, client) = (head % KINDS, head / KINDS);
        let id = if client == 0 {
            let client = take();
            let seq = take();
            self.clients.push((client, seq));
            RequestId { client, seq }
        } else {
            let delta = unzigzag(take());
            let slot = &mut self.clients[client as usize - 1];
            slot.1 = slot.1.wrapping_add(delta);
            RequestId {
                client: slot.0,
                seq: slot.1,
            }
        };
        self.number = self.number.wrapping_add(unzigzag(take()));
        let version = self.number;
        let outcome = match kind {
            0 => WriteOutcome::Put { version },
            1 | 2 => WriteOutcome::Delete {
                deleted: kind == 2,
                version,
            },
            3 | 4 => WriteOutcome::Cas {
                swapped: kind == 4,
                version,
            },
            _ => WriteOutcome::Fenced { fence: version },
        };
        Some(Remembered { id, outcome })
    }
}

/// An outcome's kind and number.
fn kind_of(outcome: WriteOutcome) -> (u64, u64) {
    match outcome {
        WriteOutcome::Put { version } => (0, version),
        WriteOutcome::Delete { deleted, version } => (1 + deleted as u64, version),
        WriteOutcome::Cas { swapped, version } => (3 + swapped as u64, version),
        WriteOutcome::Fenced { fence } => (5, fence),
    }
}

fn zigzag(delta: u64) -> u64 {
    let d = delta as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    ((z >> 1) as i64 ^ -((z & 1) as i64)) as u64
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A minimal LEB128 varint of at most 64 bits.
fn take_varint(rest: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&b, tail)) = rest.split_first() else {
            return Err("a remembered write cut short".into());
        };
        *rest = tail;
        if i == 9 && b > 1 {
            return Err("a varint beyond 64 bits".into());
        }
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err("a varint not in its shortest form".into());
            }
            return Ok(v);
        }
    }
    Err("a varint beyond 64 bits".into())
}

impl fmt::Debug for RecentWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for RecentWrites {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for RecentWrites {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecentWrites, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = RecentWrites;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a register's remembered writes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<RecentWrites, E> {
                let len = validate(bytes).map_err(E::custom)?;
                Ok(RecentWrites {
                    bytes: bytes.to_vec(),
                    len,
                })
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<RecentWrites, E> {
                let len = validate(&bytes).map_err(E::custom)?;
                Ok(RecentWrites { bytes, len })
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(client: u64, seq: u64, outcome: WriteOutcome) -> Remembered {
        Remembered {
            id: RequestId { client, seq },
            outcome,
        }
    }

    fn outcome() -> impl Strategy<Value = WriteOutcome> {
        prop_oneof![
            any::<u64>().prop_map(|version| WriteOutcome::Put { version }),
            (any::<bool>(), any::<u64>())
                .prop_map(|(deleted, version)| WriteOutcome::Delete { deleted, version }),
            (any::<bool>(), any::<u64>())
                .prop_map(|(swapped, version)| WriteOutcome::Cas { swapped, version }),
            any::<u64>().prop_map(|fence| WriteOutcome::Fenced { fence }),
        ]
    }

    fn writes(max: usize) -> impl Strategy<Value = Vec<Remembered>> {
        // Few clients, so that references are exercised; any sequence and number.
        let client = prop_oneof![0u64..4, any::<u64>()];
        proptest::collection::vec(
            (client, any::<u64>(), outcome()).prop_map(|(c, s, o)| w(c, s, o)),
            0..=max,
        )
    }

    #[test]
    fn a_busy_keys_writes_take_a_few_bytes_each() {
        let client = 0x9e37_79b9_7f4a_7c15;
        let list: Vec<_> = (0..32)
            .map(|i| {
                w(
                    client,
                    20_000 + 3 * i,
                    WriteOutcome::Put { version: 100 + i },
                )
            })
            .collect();
        let recent = RecentWrites::from_writes(&list).unwrap();
        assert_eq!(recent.to_vec(), list);
        // The first names the client and both numbers in full; the others take three bytes.
        assert!(
            recent.encoded_len() <= 16 + 31 * 3,
            "{}",
            recent.encoded_len()
        );
        let vec_form: Vec<_> = list
            .iter()
            .map(|w| crate::paxos::types::AppliedWrite {
                id: w.id,
                outcome: w.outcome.into(),
            })
            .collect();
        let vec_form = postcard::to_allocvec(&vec_form).unwrap().len();
        assert!(recent.encoded_len() * 4 < vec_form, "{vec_form}");
    }

    #[test]
    fn non_canonical_strings_are_refused() {
        let one = RecentWrites::from_writes(&[w(5, 9, WriteOutcome::Put { version: 2 })]).unwrap();
        assert_eq!(validate(&one.bytes), Ok(1));
        // head 0 (Put, new client), client 5, seq 9, number +2 (zigzag 4)
        assert_eq!(one.bytes, vec![0, 5, 9, 4]);
        let bad: &[&[u8]] = &[
            &[0x80, 0x00, 5, 9, 4],     // head not in its shortest form
            &[0, 5, 9],                 // cut short
            &[6, 9, 4],                 // a reference to a client never named
            &[0, 5, 9, 4, 0, 5, 10, 2], // client 5 named twice
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 5, 9, 4,
            ], // 65 bits
        ];
        for b in bad {
            assert!(validate(b).is_err(), "{b:?}");
            assert!(postcard::from_bytes::<RecentWrites>(
                &postcard::to_allocvec(&serde_bytes::Bytes::new(b)).unwrap()
            )
            .is_err());
        }
        // One more than a register may hold: never encoded, decoded (for the frame's
        // validation to refuse); past what a string may decode to: refused.
        let many: Vec<_> = (0..=MAX_DECODED as u64)
            .map(|s| w(1, s, WriteOutcome::Put { version: s }))
            .collect();
        assert!(RecentWrites::from_writes(&many[..=RECENT_WRITES]).is_err());
        let over = RecentWrites::encode(&many[..=RECENT_WRITES]);
        assert_eq!(validate(&over.bytes), Ok(RECENT_WRITES as u8 + 1));
        let mut bytes = RecentWrites::encode(&many[..MAX_DECODED]).bytes;
        assert_eq!(validate(&bytes), Ok(MAX_DECODED as u8));
        bytes.extend_from_slice(&[6, 2, 2]);
        assert!(validate(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn writes_round_trip_through_the_encoding_and_postcard(list in writes(RECENT_WRITES)) {
            let recent = RecentWrites::from_writes(&list).unwrap();
            prop_assert_eq!(recent.len(), list.len());
            prop_assert_eq!(recent.to_vec(), list.clone());
            let wire = postcard::to_allocvec(&recent).unwrap();
            let back: RecentWrites = postcard::from_bytes(&wire).unwrap();
            prop_assert_eq!(&back, &recent);
        }

        /// Canonical: any string that decodes is the encoding of what it decodes to, so equal
        /// writes are equal bytes.
        #[test]
        fn whatever_decodes_encodes_back_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(len) = validate(&bytes) {
                let recent = RecentWrites { bytes: bytes.clone(), len };
                let again = RecentWrites::from_writes(&recent.to_vec()).unwrap();
                prop_assert_eq!(again.bytes, bytes);
            }
        }

        #[test]
        fn an_encoding_of_mutated_writes_decodes_only_to_them(list in writes(8), flip in any::<(usize, u8)>()) {
            let recent = RecentWrites::from_writes(&list).unwrap();
            let mut bytes = recent.bytes.clone();
            if !bytes.is_empty() {
                let i = flip.0 % bytes.len();
                bytes[i] ^= flip.1.max(1);
                if let Ok(len) = validate(&bytes) {
                    let other = RecentWrites { bytes, len };
                    prop_assert_ne!(other.to_vec(), list);
                }
            }
        }
    }
}
