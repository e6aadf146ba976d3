//! A lease client for the nemesis tests: it grants leases, keeps them alive at random
//! intervals (some later than their TTL, so that some lapse), revokes some, and checks each
//! answer against what a lease promises (`paxos::lease`): **never gone before its TTL has
//! passed since the last keepalive that succeeded was sent** (or the grant, if none). A
//! keepalive or a show that answers "gone" *returns* at some moment; if that moment is
//! before the promise ended, the lease was expired early: a violation. An answer whose
//! outcome is unknown (the keepalive may have been chosen) changes nothing: the promise of
//! the last one that succeeded still holds, and a later one can only push the expiry back.
//!
//! What it cannot see: an answer that returns late (the client's timeouts are longer than
//! a TTL) counts from its return, so an expiry only slightly early is seen only when the
//! answer is fast; requests come every 0.3 to 1.5 TTLs, so an expiry early by less than
//! the gaps between them is seldom seen. A mutant that expires at half the TTL is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::client::Client;
use rand::rngs::SmallRng;
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
}

/// Runs until `stop`, with leases of `ttl`.
pub async fn lease_task(
    client: Client,
    ttl: Duration,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> LeaseReport {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut report = LeaseReport::default();
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
        for _ in 0..rng.random_range(1..6) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // Keep alive after 0.3 to 1.5 TTLs: past 1.0 it may have lapsed, as meant.
            let pause = ttl.mul_f64(rng.random_range(0.3..1.5));
            tokio::time::sleep(pause).await;
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
            match client.lease_revoke(lease.id).await {
                Ok(Some(_)) => report.revoked += 1,
                // "There was none" is not checked: it is also the answer of a revoke the
                // client retried inside after its first attempt was applied (a known gap,
                // `paxos::lease`), which a lost answer under faults makes.
                Ok(None) => {}
                Err(_) => report.failed += 1,
            }
        }
    }
    report
}
