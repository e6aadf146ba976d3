//! A lease client for the nemesis tests: it grants leases, keeps them alive at random
//! intervals (some later than their TTL, so that some lapse), revokes some, and checks each
//! answer against what a lease promises (`paxos::lease`): **never gone before its TTL has
//! passed since the last keepalive that succeeded was sent** (or the grant, if none). A
//! keepalive or a show that answers "gone" *returns* at some moment; if that moment is
//! before the promise ended, the lease was expired early: a violation. An answer whose
//! outcome is unknown (the keepalive may have been chosen) changes nothing: the promise of
//! the last one that succeeded still holds, and a later one can only push the expiry back.
//!
//! Each lease gets a key attached (`put --lease`), read back at random beside the keepalives
//! and recorded in the test's history with the delete its lease's end makes
//! (`History::lease_ended`: an operation of unknown outcome called at the earliest moment
//! it may happen), so that the linearizability checker finds a key gone before then; and
//! the keys of leases that ended are asked after at the end ([`assert_keys_gone`]).
//!
//! What it cannot see: an answer that returns late (the client's timeouts are longer than
//! a TTL) counts from its return, so an expiry only slightly early is seen only when the
//! answer is fast; requests come every 0.3 to 1.5 TTLs, so an expiry early by less than
//! the gaps between them is seldom seen. A mutant that expires at half the TTL is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::client::Client;
use paxkv::paxos::types::{Command, Outcome};
use rand::rngs::SmallRng;

use crate::History;
use rand::{Rng, SeedableRng};

/// What one lease client saw.
#[derive(Debug, Default)]
pub struct LeaseReport {
    pub granted: u64,
    pub kept_alive: u64,
    /// Leases found gone after their promise ended (lapsed, as meant).
    pub lapsed: u64,
    pub revoked: u64,
    /// Requests that failed or whose outcome is unknown.
    pub failed: u64,
    /// Leases found gone before their promise ended: each a broken promise.
    pub violations: Vec<String>,
    /// Keys attached to leases that ended (lapsed or revoked): each must be gone.
    pub ended_keys: Vec<Vec<u8>>,
}

/// Runs until `stop`, with leases of `ttl`.
pub async fn lease_task(
    client: Client,
    ttl: Duration,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: History,
) -> LeaseReport {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut report = LeaseReport::default();
    let client_id = seed;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let lease = match client.lease_grant(ttl).await {
            Ok(lease) => lease,
            Err(_) => {
                report.failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        report.granted += 1;
        // The promise: not gone before `promised`.
        let mut promised = sent + ttl;
        // Its key, attached at once (an attach is a keepalive too).
        n += 1;
        let key = format!("leased-{seed:x}-{n}").into_bytes();
        let attach_sent = Instant::now();
        let value = format!("{seed:x}-{n}").into_bytes();
        let attached = match history
            .put_leased(client_id, &client, &key, &value, lease.id)
            .await
        {
            Ok(_) => {
                promised = promised.max(attach_sent + ttl);
                true
            }
            // Not written (the lease is gone already, or no node took it).
            Err(e) if !e.may_have_applied() => false,
            Err(_) => true,
        };
        let mut revoke_sent = None;
        for _ in 0..rng.random_range(1..6) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // Keep alive after 0.3 to 1.5 TTLs: past 1.0 it may have lapsed, as meant.
            let pause = ttl.mul_f64(rng.random_range(0.3..1.5));
            tokio::time::sleep(pause).await;
            if attached && rng.random_bool(0.5) {
                // Read back: the checker finds it gone too early, if it is.
                let _ = history.run(client_id, &client, &key, Command::Get).await;
            }
            let sent = Instant::now();
            let answer = if rng.random_bool(0.25) {
                client.lease_show(lease.id).await.map(|l| (l, false))
            } else {
                client.lease_keepalive(lease.id).await.map(|l| (l, true))
            };
            let returned = Instant::now();
            match answer {
                Ok((Some(_), true)) => {
                    report.kept_alive += 1;
                    promised = promised.max(sent + ttl);
                }
                Ok((Some(_), false)) => {}
                Ok((None, _)) if returned < promised => {
                    report.violations.push(format!(
                        "lease {:016x} (TTL {ttl:?}) found gone {:?} before its promise ended",
                        lease.id,
                        promised - returned
                    ));
                    break;
                }
                Ok((None, _)) => {
                    report.lapsed += 1;
                    break;
                }
                Err(_) => report.failed += 1,
            }
        }
        if rng.random_bool(0.3) {
            revoke_sent = Some(Instant::now());
            match client.lease_revoke(lease.id).await {
                Ok(Some(_)) => report.revoked += 1,
                // "There was none" is not checked: it is also the answer of a revoke the
                // client retried inside after its first attempt was applied (a known gap,
                // `paxos::lease`), which a lost answer under faults makes.
                Ok(None) => {}
                Err(_) => report.failed += 1,
            }
        }
        if attached {
            let earliest = revoke_sent.map_or(promised, |r| r.min(promised));
            history.lease_ended(client_id, &key, lease.id, earliest);
            // No keepalive follows: its lease ends, revoked or lapsed.
            report.ended_keys.push(key);
        }
    }
    report
}

/// Every key in `keys` reads gone within `within` (recorded in `history`): their leases
/// ended, so their release must come.
pub async fn assert_keys_gone(
    client: &Client,
    history: &History,
    keys: &[Vec<u8>],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    for key in keys {
        loop {
            match history.run(0, client, key, Command::Get).await {
                Ok(Outcome::Get { value: None, .. }) => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!(
                    "key {} of an ended lease still there {within:?} on: {other:?}",
                    String::from_utf8_lossy(key)
                ),
            }
        }
    }
}
