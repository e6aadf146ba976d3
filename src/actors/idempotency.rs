//! `Idempotency-Key` on the HTTP API's writes: a retry with the same key takes effect once.
//!
//! paxkv's registers already de-duplicate retries of one write: a write carries a write id
//! (`RequestId`: a client's id and a sequence number), a register remembers the outcomes of
//! its last writes and, per client, the highest sequence number it forgot
//! (`paxos::register::apply`), and a retry marked `maybe_applied` is answered the recorded
//! outcome (or refused as too late, never applied twice). What an HTTP client lacks is the
//! write id: it retries a request, not an id. This table gives it one: the first request
//! with a key is given a fresh write id of this node's HTTP API (one client id per node
//! process, [`WriteIdMint`]), remembered under the key; a later request with the same key
//! and the same request (method, path, conditions and body, by a hash) is sent with that
//! write id and `maybe_applied`, so the register answers what the first one did. The same
//! key with another request is refused (422): it is a client's bug, and guessing which one
//! it meant could lose a write.
//!
//! What it holds, and what it does not:
//! - **One node's table, in memory.** A retry must reach the node that took the first
//!   attempt, and before that node restarts; a retry elsewhere is a new write. Deriving the
//!   write id from the key instead (so that every node would agree) would give every key a
//!   client id of its own, and each would take a slot of the registers' per-client floors
//!   (64 per key, `CLIENT_FLOORS`) when its write is forgotten: they would overflow on any busy key,
//!   after which every client's retries there are refused as too late.
//! - **The last `limits.http_idempotency_keys` keys**: the oldest is forgotten first (a retry
//!   of it is a new write). Each holds its key (at most [`MAX_KEY_BYTES`]) and two words.
//! - **Concurrent attempts** with one key are safe: they carry one write id, and a register
//!   applies one write id once, whichever arrives first.
//! - **A retry long after** its write was applied, once the register has forgotten it (128
//!   later writes of that key), is refused as too late: 504, "it took effect at most once".

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::paxos::types::{RequestId, WriteIdMint};

/// The longest `Idempotency-Key` taken (a longer one is refused with 400).
pub const MAX_KEY_BYTES: usize = 255;

/// The write id a request is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub write_id: RequestId,
    /// Not the key's first request: the write may have been applied.
    pub retry: bool,
}

/// The key was used before for another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reused;

/// The table of one node's HTTP API.
pub struct Idempotency {
    mint: WriteIdMint,
    /// Hashes the requests (its keys are this process's own).
    hasher: std::collections::hash_map::RandomState,
    capacity: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<String, (RequestId, u64)>,
    /// Keys, oldest first: what is forgotten when the table is full.
    order: VecDeque<String>,
}

impl Idempotency {
    /// A table of at most `capacity` keys, with a client id of its own.
    pub fn new(capacity: usize) -> Idempotency {
        Idempotency {
            mint: WriteIdMint::new(rand::random()),
            hasher: Default::default(),
            capacity: capacity.max(1),
            table: Default::default(),
        }
    }

    /// The write id of a request with this `key`; `request` is every part of the request
    /// that must be the same in a retry.
    pub fn attempt(&self, key: &str, request: &[&[u8]]) -> Result<Attempt, Reused> {
        let fingerprint = self.hasher.hash_one(request);
        let mut table = self.table.lock().expect("the idempotency table");
        if let Some(&(write_id, seen)) = table.by_key.get(key) {
            if seen != fingerprint {
                return Err(Reused);
            }
            return Ok(Attempt {
                write_id,
                retry: true,
            });
        }
        if table.order.len() >= self.capacity {
            if let Some(oldest) = table.order.pop_front() {
                table.by_key.remove(&oldest);
            }
        }
        let write_id = self.mint.mint();
        table
            .by_key
            .insert(key.to_string(), (write_id, fingerprint));
        table.order.push_back(key.to_string());
        Ok(Attempt {
            write_id,
            retry: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_the_first_write_id_and_another_request_is_refused() {
        let table = Idempotency::new(10);
        let first = table.attempt("k", &[b"PUT", b"/v1/kv/a", b"1"]).unwrap();
        assert!(!first.retry);
        let again = table.attempt("k", &[b"PUT", b"/v1/kv/a", b"1"]).unwrap();
        assert_eq!(again.write_id, first.write_id);
        assert!(again.retry);
        assert_eq!(
            table.attempt("k", &[b"PUT", b"/v1/kv/a", b"2"]),
            Err(Reused)
        );
        let other = table.attempt("l", &[b"PUT", b"/v1/kv/a", b"1"]).unwrap();
        assert_ne!(other.write_id, first.write_id);
        assert!(!other.retry);
    }

    #[test]
    fn the_oldest_key_is_forgotten_when_the_table_is_full() {
        let table = Idempotency::new(2);
        let request: &[&[u8]] = &[b"x"];
        let a = table.attempt("a", request).unwrap();
        table.attempt("b", request).unwrap();
        table.attempt("c", request).unwrap();
        assert!(table.attempt("c", request).unwrap().retry);
        let a_again = table.attempt("a", request).unwrap();
        assert!(!a_again.retry);
        assert_ne!(a_again.write_id, a.write_id);
        assert_eq!(table.table.lock().unwrap().by_key.len(), 2);
    }
}
