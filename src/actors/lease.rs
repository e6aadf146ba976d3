//! The leases of this node (`paxos::lease` has the design and its argument): the lease
//! requests (grant, keepalive, revoke, show), each a command on the lease's register run
//! through this node's proposer, and the keeper, which scans the lease prefix every
//! `paxos::lease::SCAN_INTERVAL` and expires what lapsed.
//!
//! A client sends a lease's requests to the home node of the lease's key (`Client`), so its
//! writes usually come from one proposer; any node may serve them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::actors::list::{ListRequest, Lister};
use crate::actors::membership::MembershipService;
use crate::actors::supervisor::{run_command, run_command_as, Keys};
use crate::error::{Error, Result};
use crate::messages::LeaseInfo;
use crate::paxos::lease::{
    lease_key, lease_of_key, lease_prefix, place, Call, Due, Expiry, Keepalive, LeaseId,
    LeaseRecord, Next, Served, Tracker, MAX_TTL, MIN_TTL, SCAN_INTERVAL,
};
use crate::paxos::types::{Command, LeasedWrite, Outcome, RequestId, WriteIdMint};

/// Mixed into a lease's id to make its grant's client id (so that it is not the id itself).
const GRANT_CLIENT_SALT: u64 = 0x6772_616e_7421_0001;

/// Expiries a keeper has in flight at once (each a few rounds one after the other: an end,
/// a read of the keys, their releases, a delete).
const EXPIRIES_IN_FLIGHT: usize = 256;

/// Releases (or reads) of one lease's keys in flight at once.
const RELEASES_IN_FLIGHT: usize = 16;

/// Times a write attached to a lease reads the key's fence again after a release moved it.
const FENCE_ATTEMPTS: usize = 4;

/// Lease ids a grant tries before it gives up (a taken id is 2⁻⁶⁴ likely: this is for a
/// broken random source, not for luck).
const GRANT_ATTEMPTS: usize = 3;

/// This node's leases. Cheap to clone.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Shared>,
}

struct Shared {
    keys: Keys,
    lister: Lister,
    members: MembershipService,
    write_ids: WriteIdMint,
    tracker: Mutex<Tracker>,
}

impl Leases {
    pub fn new(keys: Keys, lister: Lister, members: MembershipService) -> Leases {
        Leases {
            inner: Arc::new(Shared {
                keys,
                lister,
                members,
                write_ids: WriteIdMint::new(rand::random()),
                tracker: Default::default(),
            }),
        }
    }

    /// A new lease of `ttl_ms`, with id `id` (0: one picked here).
    ///
    /// A client's grant is retried (a lost answer) under the same id, maybe on another node:
    /// its write id is derived from the lease's id, the same on every node, so that the
    /// register answers a retry what the first attempt did rather than "taken" (the lease's
    /// register has this one client id; `paxos::register`).
    pub async fn grant(&self, ttl_ms: u64, id: LeaseId) -> Result<LeaseInfo> {
        let ttl = Duration::from_millis(ttl_ms);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::BadRequest(format!(
                "a lease's TTL is {} to {} seconds",
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        let max_leases = self.inner.members.config.limits.max_leases;
        if self.inner.tracker.lock().expect("the lease tracker").len() >= max_leases {
            return Err(Error::Busy(format!(
                "{max_leases} leases are live (limits.max_leases): revoke some, or wait for \
                 some to expire"
            )));
        }
        let record = LeaseRecord::new(ttl);
        let command = || Command::Cas {
            expect: 0,
            value: record.encode(),
        };
        if id != 0 {
            let write_id = RequestId {
                client: id ^ GRANT_CLIENT_SALT,
                seq: 1,
            };
            return match run_command(&self.inner.keys, lease_key(id), command(), Some(write_id))
                .await?
            {
                Outcome::Cas {
                    swapped: true,
                    version,
                } => {
                    self.served(id, version, Served::Grant { ttl });
                    Ok(self.info(id, &record, version))
                }
                Outcome::Cas { .. } => Err(Error::BadRequest(format!(
                    "lease id {id:016x} is taken: pick another"
                ))),
                other => Err(unexpected(other)),
            };
        }
        for _ in 0..GRANT_ATTEMPTS {
            let id: LeaseId = rand::random();
            match self.run(id, command()).await? {
                Outcome::Cas {
                    swapped: true,
                    version,
                } => {
                    self.served(id, version, Served::Grant { ttl });
                    return Ok(self.info(id, &record, version));
                }
                Outcome::Cas { .. } => continue,
                other => return Err(unexpected(other)),
            }
        }
        Err(Error::Storage(
            "three random lease ids were all taken: is the random source broken?".into(),
        ))
    }

    /// Keeps lease `id` alive (`None`: it is gone). A lease this node does not track is read
    /// first, and one that is not live answered "gone" without a round: the argument is
    /// `paxos::lease::Keepalive`'s.
    pub async fn keepalive(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        let start = self
            .inner
            .tracker
            .lock()
            .expect("the tracker")
            .keepalive(id);
        let ttl = match start {
            Keepalive::Touch { ttl } => ttl,
            Keepalive::Read => match self.run(id, Command::Get).await? {
                Outcome::Get { value, .. } => match Keepalive::read(value.as_deref()) {
                    Ok(Some(ttl)) => ttl,
                    Ok(None) => return Ok(None),
                    Err(why) => return Err(Error::Storage(format!("lease {id:016x}: {why}"))),
                },
                other => return Err(unexpected(other)),
            },
        };
        match self.run(id, Command::Touch).await? {
            Outcome::Cas {
                swapped: true,
                version,
            } => {
                self.served(id, version, Served::Keepalive { ttl });
                Ok(Some(self.info(id, &LeaseRecord::new(ttl), version)))
            }
            Outcome::Cas { swapped: false, .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes lease `id` and deletes its keys: the lease it was (`None`: there was none, or
    /// it had ended already).
    pub async fn revoke(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        let Some(info) = self.show(id).await? else {
            return Ok(None);
        };
        match self.run(id, Command::LeaseEnd { expect: 0 }).await? {
            Outcome::Delete { deleted: true, .. } => {
                if !self.test_stop_after_end() {
                    let (release, first) = Expiry::release(id);
                    self.drive(release, first).await?;
                }
                Ok(Some(info))
            }
            Outcome::Delete { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Lease `id` as it is now (a linearizable read; `None`: there is none, or it ended).
    pub async fn show(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        Ok(self
            .read(id)
            .await?
            .filter(|(record, _)| !record.ended)
            .map(|(record, version)| self.info(id, &record, version)))
    }

    /// The keys attached to lease `id` now: those it lists that a linearizable read finds
    /// still attached to it (`None`: the lease is gone).
    pub async fn keys(&self, id: LeaseId) -> Result<Option<Vec<Vec<u8>>>> {
        let Some((record, _)) = self.read(id).await?.filter(|(r, _)| !r.ended) else {
            return Ok(None);
        };
        let keys = &self.inner.keys;
        let attached: Vec<Result<Option<Vec<u8>>>> =
            futures_util::stream::iter(record.keys.into_iter().map(|k| k.into_vec()))
                .map(|key| async move {
                    match run_command(keys, key.clone(), Command::Inspect, None).await? {
                        Outcome::Inspect(found) => {
                            Ok((found.lease == Some(id) && found.value.is_some()).then_some(key))
                        }
                        other => Err(unexpected(other)),
                    }
                })
                .buffered(RELEASES_IN_FLIGHT)
                .collect()
                .await;
        attached
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Writes `key` (a put, or a compare-and-set with `expect`) attached to lease `lease`
    /// (`paxos::lease`, "Attached keys"): the key's fence read, the key recorded in the
    /// lease, the write made if the fence did not move. `Error::NotFound` when the lease is
    /// gone (nothing written).
    pub async fn write(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        expect: Option<u64>,
        lease: LeaseId,
        write_id: RequestId,
        maybe_applied: bool,
    ) -> Result<Outcome> {
        let keys = &self.inner.keys;
        let max_keys = self.inner.members.config.limits.keys_per_lease() as u32;
        for _ in 0..FENCE_ATTEMPTS {
            let fence = match run_command(keys, key.clone(), Command::Inspect, None).await? {
                Outcome::Inspect(found) => found.fence,
                other => return Err(unexpected(other)),
            };
            let attach = Command::LeaseAttach {
                key: key.clone(),
                max_keys,
            };
            match self.run(lease, attach).await? {
                Outcome::Cas {
                    swapped: true,
                    version,
                } => self.served(lease, version, Served::Attach),
                Outcome::Cas { .. } => {
                    return Err(match self.show(lease).await? {
                        None => Error::NotFound(format!("lease {lease:016x} not found")),
                        Some(_) => Error::BadRequest(format!(
                            "lease {lease:016x} lists {max_keys} keys \
                             (limits.max_keys_per_lease)"
                        )),
                    })
                }
                other => return Err(unexpected(other)),
            }
            let command = Command::LeasedWrite(Box::new(LeasedWrite {
                expect,
                value: value.clone(),
                lease,
                fence,
                retried: maybe_applied,
            }));
            match run_command_as(keys, key.clone(), command, Some(write_id), maybe_applied).await? {
                // A lease that listed the key ended since its fence was read: its release
                // may have come before this write, so the write would outlive the lease.
                // Again, from the fence.
                Outcome::Fenced { .. } => continue,
                outcome => return Ok(outcome),
            }
        }
        Err(Error::Unavailable(format!(
            "leases listing this key kept ending while it was attached ({FENCE_ATTEMPTS} \
             tries)"
        )))
    }

    /// Lease `id`'s record and version (`None`: no lease there).
    async fn read(&self, id: LeaseId) -> Result<Option<(LeaseRecord, u64)>> {
        match self.run(id, Command::Get).await? {
            Outcome::Get {
                value: Some(bytes),
                version,
            } => match LeaseRecord::decode(&bytes) {
                Some(record) => Ok(Some((record, version))),
                None => Err(Error::Storage(format!(
                    "lease {id:016x}: not a lease record"
                ))),
            },
            Outcome::Get { value: None, .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `expiry` (`paxos::lease::Expiry`) from its first call until it is done (`Ok`)
    /// or a call failed: each step's calls at once, `RELEASES_IN_FLIGHT` in flight. Every
    /// step may be repeated by another node or a later attempt: a release of a released key
    /// deletes nothing.
    async fn drive(&self, mut expiry: Expiry, first: Call) -> Result<()> {
        let keys = &self.inner.keys;
        let write_ids = &self.inner.write_ids;
        let mut calls = vec![first];
        loop {
            let answers: Vec<Result<Outcome>> = futures_util::stream::iter(calls)
                .map(|(key, command)| async move {
                    let write_id = command.is_write().then(|| write_ids.mint());
                    run_command(keys, key, command, write_id).await
                })
                .buffer_unordered(RELEASES_IN_FLIGHT)
                .collect()
                .await;
            let (mut next, mut error) = (Next::Wait, None);
            for answer in answers {
                next = match answer {
                    Ok(outcome) => expiry.answered(Some(&outcome)),
                    Err(e) => {
                        error.get_or_insert(e);
                        expiry.answered(None)
                    }
                };
            }
            match next {
                Next::Run(more) => {
                    if expiry.ended_here() && matches!(more[..], [(_, Command::Get)]) {
                        log::debug!("lease {:016x} ended", expiry.lease());
                        if self.test_stop_after_end() {
                            return Ok(());
                        }
                    }
                    calls = more;
                }
                Next::Done => return Ok(()),
                Next::Failed(why) => return Err(error.unwrap_or(Error::Storage(why))),
                Next::Wait => {
                    return Err(Error::Storage(format!(
                        "lease {:016x}: its expiry waits for an answer no call will give",
                        expiry.lease()
                    )))
                }
            }
        }
    }

    /// Tracks what a grant, keepalive or attach served here left (chosen before now: its
    /// answer came), so that this node's expiry does not wait for a scan
    /// (`paxos::lease::Tracker::served` decides which track their lease).
    fn served(&self, id: LeaseId, version: u64, how: Served) {
        if let Some(place) = self.place_of(&lease_key(id)) {
            let now = Instant::now();
            let mut tracker = self.inner.tracker.lock().expect("the lease tracker");
            tracker.served(id, version, how, place, now);
        }
    }

    /// This node's place in `key`'s order of nodes (its home first, as a client picks it);
    /// `None` while it has no membership or is not in it.
    fn place_of(&self, key: &[u8]) -> Option<usize> {
        let m = self.inner.members.view.get()?;
        place(&m.nodes(), self.inner.members.view.me(), key)
    }

    fn info(&self, id: LeaseId, record: &LeaseRecord, version: u64) -> LeaseInfo {
        let tracker = self.inner.tracker.lock().expect("the lease tracker");
        LeaseInfo {
            id,
            ttl_ms: record.ttl_ms,
            version,
            remaining_ms: tracker
                .remaining(id, Instant::now())
                .map(|r| r.as_millis() as u64),
        }
    }

    /// Runs `command` on lease `id`'s register through this node's proposer.
    async fn run(&self, id: LeaseId, command: Command) -> Result<Outcome> {
        let write_id = command.is_write().then(|| self.inner.write_ids.mint());
        run_command(&self.inner.keys, lease_key(id), command, write_id).await
    }

    /// The keeper: scans the lease prefix and expires each lease that stayed at one version
    /// for its TTL and margin (`paxos::lease`), until the runtime stops. Scans run in a task
    /// of their own, `scan_interval` apart: `SCAN_INTERVAL`, or more when a scan takes long
    /// (many leases). What is due is expired every `SCAN_INTERVAL` whatever the scans'
    /// spacing and length (the leases
    /// served here are tracked without one).
    pub async fn keep(self) {
        // Scans run on their own, so that a long scan (many leases) never holds back the
        // expiries that are due meanwhile (the leases served here are tracked without one).
        let scanner = self.clone();
        let scans = actix_rt::spawn(async move {
            let mut scans = 0u64;
            loop {
                scans += 1;
                let started = Instant::now();
                if let Err(e) = scanner.scan(scans).await {
                    log::debug!("lease scan {scans}: {e}");
                }
                tokio::time::sleep_until((started + scan_interval(started.elapsed())).into()).await;
            }
        });
        let _stop_scans_with_the_keeper = AbortOnDrop(scans);
        let mut ticks = tokio::time::interval(SCAN_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.expire_due().await;
        }
    }

    /// One scan of the lease prefix into the tracker. A scan that fails midway forgets
    /// nothing (its leases keep the time they were first seen).
    async fn scan(&self, scan: u64) -> Result<()> {
        let mut after = None;
        loop {
            let request = ListRequest {
                prefix: lease_prefix(),
                after: after.clone(),
                limit: 0,
                keys_only: false,
                with_deleted: false,
                reserved: true,
            };
            let page = self.inner.lister.list(request).await?;
            let listed_at = Instant::now();
            let listed: Vec<_> = page
                .items
                .iter()
                .filter_map(|item| {
                    let id = lease_of_key(&item.key)?;
                    let record = item.value.as_deref().and_then(LeaseRecord::decode)?;
                    Some((id, item.version, record, self.place_of(&item.key)?))
                })
                .collect();
            let mut tracker = self.inner.tracker.lock().expect("the lease tracker");
            for (id, version, record, place) in listed {
                tracker.saw(id, version, &record, place, listed_at, scan);
            }
            drop(tracker);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        self.inner
            .tracker
            .lock()
            .expect("the lease tracker")
            .forget_unlisted(scan);
        Ok(())
    }

    /// Expires every lease due: an end of the version this node saw, which does nothing if
    /// a keepalive came since, then the release of its keys; and releases the keys of every
    /// lease found ended for long enough.
    async fn expire_due(&self) {
        let due = self
            .inner
            .tracker
            .lock()
            .expect("the lease tracker")
            .due(Instant::now());
        if !due.is_empty() {
            self.test_delay().await;
        }
        // Many at once (a mass expiry is many keys' rounds, which need not wait for each
        // other), a bounded number in flight.
        futures_util::stream::iter(due)
            .for_each_concurrent(EXPIRIES_IN_FLIGHT, |due| async move {
                let id = due.id;
                match self.expire(due).await {
                    Ok(()) => self.inner.tracker.lock().expect("the tracker").forget(id),
                    Err(e) => {
                        log::debug!("lease {id:016x}: expiry not done: {e}");
                        let now = Instant::now();
                        self.inner
                            .tracker
                            .lock()
                            .expect("the tracker")
                            .postpone(id, now);
                    }
                }
            })
            .await;
    }

    /// Acts on one lease due. Done (`Ok`) when the lease is gone, or was kept alive since:
    /// either way it is forgotten until a scan (or a request served here) says where it
    /// stands now.
    async fn expire(&self, due: Due) -> Result<()> {
        let (expiry, first) = Expiry::start(due);
        self.drive(expiry, first).await
    }
}

impl Leases {
    /// Test builds only (`testing.lease_expiry_delay_ms`): a pause between finding leases due
    /// and expiring them.
    #[cfg(feature = "testing")]
    async fn test_delay(&self) {
        let testing = &self.inner.members.config.testing;
        if testing.allow_fault_injection && testing.lease_expiry_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(testing.lease_expiry_delay_ms)).await;
        }
    }

    #[cfg(not(feature = "testing"))]
    async fn test_delay(&self) {}

    /// Test builds only (`testing.lease_stop_after_end`): does this node stop after it
    /// ended a lease, as if it crashed there?
    #[cfg(feature = "testing")]
    fn test_stop_after_end(&self) -> bool {
        let testing = &self.inner.members.config.testing;
        testing.allow_fault_injection && testing.lease_stop_after_end
    }

    #[cfg(not(feature = "testing"))]
    fn test_stop_after_end(&self) -> bool {
        false
    }
}

/// Aborts its task when dropped (the keeper's scans end with the keeper).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When the next scan starts after one that took `took`: `SCAN_INTERVAL`, or
/// `SCAN_SHARE_DIVISOR` times the scan's own time if that is longer, so that scanning takes
/// at most about a tenth of a node's time however many leases there are (expiry is later
/// by as much: the bound of `paxos::lease` counts scans).
pub fn scan_interval(took: Duration) -> Duration {
    SCAN_INTERVAL.max(took * SCAN_SHARE_DIVISOR)
}

/// See [`scan_interval`].
const SCAN_SHARE_DIVISOR: u32 = 10;

fn unexpected(outcome: Outcome) -> Error {
    Error::Storage(format!("a lease's register answered {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_are_spaced_to_take_at_most_a_tenth_of_the_time() {
        assert_eq!(scan_interval(Duration::from_millis(10)), SCAN_INTERVAL);
        assert_eq!(
            scan_interval(Duration::from_millis(200)),
            Duration::from_secs(2)
        );
    }
}
