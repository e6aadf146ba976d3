//! The actix runtime of one node. Each actor only carries messages between the protocol core
//! (`crate::paxos`), the network and storage; none of them decides anything about Paxos.
//!
//! ```text
//!        clients ──┐                 peers ──┐
//!                  ▼                         ▼
//!        ┌──────────────────────────────────────────┐    ┌────────────────────────────┐
//!        │ network (transport): listener, decode,   │    │ outbox: encode once, one   │
//!        │ Frame::validate, route; peer writers     │◀───┤ bounded queue per peer,    │──▶ peers
//!        └──┬──────────────┬────────────────┬───────┘    │ fault plan (tests)         │
//!   Request │  NodeRequest │        Deliver │            └─────────────▲──────────────┘
//!           ▼              ▼                │                          │
//!   ┌────────────┐  ┌───────────────────┐   │                          │
//!   │ router     │  │ anti_entropy:     │   │                          │
//!   │ (requests) │  │ CallServer; the   │   │                          │
//!   └─────┬──────┘  │ AntiEntropy puller│   │                          │
//!         │         └───────┬───────────┘   │                          │
//!  SubmitFor        Adopt,  │ SettleKey     ▼                          │
//!         ▼                 ▼                                          │
//!   ┌──────────────────────────────────────────┐                       │
//!   │ supervisor + routes: key → actors, lazily│ spawns, restarts crashed ones,
//!   │ spawned, idle ones retired               │ retires idle ones; a live key's
//!   │                                          │ messages skip its mailbox
//!   └──────┬──────────────────────┬────────────┘                       │
//!   Submit │ FromAcceptor         │ FromProposer                       │
//!          ▼                      ▼                                    │
//!   ┌──────────────┐      ┌──────────────┐  Persist / Load  ┌──────────┴───────┐
//!   │ proposer(key)│      │ acceptor(key)├─────────────────▶│ storage (own     │
//!   │ paxos::      │      │ paxos::      │◀─── committed ───│ thread): LMDB,   │
//!   │ Proposer     │      │ Acceptor     │                  │ group commit     │
//!   └──────┬───────┘      └──────┬───────┘                  └──────────────────┘
//!          └──── Prepare/Accept/Query out, replies back, through the outbox ──▶
//! ```
//!
//! Crashes: a panic inside a per-key actor's handler is caught at the handler boundary and
//! turned into a stop; the actor tells the supervisor, which starts a new incarnation that
//! loads the key's record from LMDB before it handles anything (`ctx.wait`). Callers waiting on
//! the crashed proposer are answered "outcome unknown".

pub(crate) mod acceptor;
pub(crate) mod anti_entropy;
pub(crate) mod calls;
pub(crate) mod digest_merge;
pub mod http_api;
pub(crate) mod http_server;
pub(crate) mod idempotency;
pub mod lease;
pub(crate) mod linger;
pub(crate) mod list;
pub(crate) mod membership;
pub mod messages;
pub(crate) mod metrics;
pub(crate) mod network;
pub(crate) mod outbox;
pub(crate) mod proposer;
pub(crate) mod router;
pub(crate) mod routes;
pub(crate) mod sources;
pub(crate) mod storage;
pub mod supervisor;
pub(crate) mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters shared by the actors of one node; read by `GetStatus`.
#[derive(Debug, Default)]
pub struct Stats {
    pub live_proposers: AtomicU64,
    pub live_acceptors: AtomicU64,
    pub acceptor_restarts: AtomicU64,
    pub proposer_restarts: AtomicU64,
    pub commits: AtomicU64,
    pub records_written: AtomicU64,
    /// Acceptor answers that wrote nothing (reads, queries, refusals): with `records_written`,
    /// the share of a node's work that does not wait on commits (`actors::linger`).
    pub answers_without_write: AtomicU64,
    /// Of those, reads answered from the record last made durable, without the acceptor's
    /// mailbox (`actors::acceptor::DurableView`).
    pub reads_from_durable: AtomicU64,
    pub peer_frames_dropped: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Frames dropped because the connection's certificate may not send them (`crate::tls`).
    pub forged_frames: AtomicU64,
    /// Frames, memberships and calls of another cluster identity refused
    /// (`paxos::membership::cluster_id`).
    pub foreign_frames: AtomicU64,
    /// Connections closed at a frame of another protocol version (`crate::frame`): a node or
    /// client of another build.
    pub other_version_frames: AtomicU64,
    /// Connections refused before any frame was read: a failed TLS handshake (no certificate,
    /// another CA's, plaintext on a TLS port), or too many connections.
    pub refused_connections: AtomicU64,
    /// Connections accepted (a TLS handshake completed, or plaintext) since the node started.
    pub accepted_connections: AtomicU64,
    /// Connections served now (clients' and peers'): bounded by the limits; a count that
    /// only grows is a peer or client that never closes what it opened.
    pub open_connections: AtomicU64,
    pub records_adopted: AtomicU64,
    pub sync_rounds: AtomicU64,
    pub dropped_not_voting: AtomicU64,
    pub stale_refused: AtomicU64,
    /// Acceptors started for a key while another acceptor of it was still alive: must stay 0
    /// (the supervisor's retirement handshake; counted by the acceptors themselves).
    pub duplicate_acceptors: AtomicU64,
    /// Keys settled at a classic ballot by a membership change's rescan or by the anti-entropy
    /// sweep.
    pub keys_settled: AtomicU64,
    /// Announcements of chosen changes sent to watching nodes (one per node), received from
    /// them, and watches served now, ended for a slow client, changes sent to watchers
    /// (`actors::watch`).
    pub announcements: AtomicU64,
    pub announcements_received: AtomicU64,
    pub watchers: AtomicU64,
    pub watchers_cut: AtomicU64,
    pub watch_changes_sent: AtomicU64,
    /// Proposers woken by their own timer (`actors::proposer`): a round slower than
    /// `read_grace` or a phase timeout, a backoff's end, a deadline. A round that finishes in
    /// time leaves no timer armed, so this counts rounds that needed one, not requests.
    pub proposer_timer_wakeups: AtomicU64,
    /// Histograms and labelled counters, for `GET /metrics` (`crate::metrics`).
    pub metrics: crate::metrics::NodeMetrics,
    /// The keys with a live acceptor, and how many: more than one is a broken invariant.
    pub live_acceptor_keys: std::sync::Mutex<rustc_hash::FxHashMap<Vec<u8>, u32>>,
}

/// Whether this node's acceptors vote (set and cleared by `actors::membership`: a voter of
/// its membership, with its own store, its generation confirmed). Read by the delivery of
/// Paxos messages (`actors::routes`, which drops requests while the node does not vote), by
/// the status report and by peers pulling from this node.
#[derive(Debug, Default)]
pub struct Readiness {
    voting: AtomicBool,
}

impl Readiness {
    pub fn is_voting(&self) -> bool {
        self.voting.load(Ordering::Acquire)
    }

    pub fn set_voting(&self) {
        self.voting.store(true, Ordering::Release);
    }

    /// Stops this node's acceptors from voting (its store turned out not to be the one its
    /// membership records, see `actors::membership`).
    pub fn clear_voting(&self) {
        self.voting.store(false, Ordering::Release);
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` and returns the new count.
    pub fn add_get(counter: &AtomicU64, n: u64) -> u64 {
        counter.fetch_add(n, Ordering::Relaxed) + n
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// An acceptor of `key` started; false (and counted) if another one is still alive.
    pub fn acceptor_started(&self, key: &[u8]) -> bool {
        let mut live = self.live_acceptor_keys.lock().expect("live acceptors lock");
        let count = live.entry(key.to_vec()).or_default();
        *count += 1;
        if *count > 1 {
            Stats::add(&self.duplicate_acceptors, 1);
            return false;
        }
        true
    }

    /// An acceptor of `key` stopped.
    pub fn acceptor_stopped(&self, key: &[u8]) {
        let mut live = self.live_acceptor_keys.lock().expect("live acceptors lock");
        if let Some(count) = live.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                live.remove(key);
            }
        }
    }
}

/// Runs `f`, turning a panic into `Err` with its message: the boundary where a per-key actor
/// decides that it crashed.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// Bytes held of a budget that only refuses, never waits (a peer's queue, the node's inbox):
/// taken if they fit, given back when dropped. One compare-and-swap and one subtract:
/// cheaper on the per-frame path than a semaphore, whose release takes a lock.
#[derive(Debug)]
pub struct HeldBytes {
    used: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
}

impl HeldBytes {
    /// `bytes` more of the budget whose use is `used`, if that stays within `limit`.
    pub fn take(
        used: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        bytes: usize,
        limit: usize,
    ) -> Option<HeldBytes> {
        // A compare-and-swap, not an add undone: an attempt that does not fit never counts,
        // not even for a moment, so it cannot make a concurrent one fail.
        used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now + bytes <= limit).then_some(now + bytes)
        })
        .ok()
        .map(|_| HeldBytes {
            used: used.clone(),
            bytes,
        })
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
