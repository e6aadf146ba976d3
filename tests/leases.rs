//! Leases (`paxos::lease`, `actors::lease`): what a lease promises, on a real cluster.
//! - A lease kept alive outlives its TTL many times over; once keepalives stop it is never
//!   gone before its TTL has passed since the last keepalive was *sent*, and is gone within
//!   the bound the module states (TTL and margin, two scans, a round).
//! - A keepalive, a revoke or a show of a lease that is gone says so; a keepalive of one
//!   that never existed writes nothing.
//! - A lease whose key's home node is down is expired by another node.
//! - Keys attached to a lease are deleted with it (revoked, or lapsed: never before its TTL),
//!   and only those; an end cut short by a crash is completed by the keepers.

use paxkv_testkit as support;

use std::time::{Duration, Instant};

use paxkv::paxos::lease::{lease_key, wait_before_expiry, SCAN_INTERVAL, STAGGER};
use paxkv::paxos::types::{key_hash, Outcome};
use support::{Cluster, TestCluster};

/// Long against the scan interval, so that expiring at half of it is always seen early.
const TTL: Duration = Duration::from_secs(3);
/// What the machine may add to the module's bound (a loaded two-core CI machine).
const SLACK: Duration = Duration::from_secs(5);

/// Polls the lease until it is gone, checking that no read that *returned* before
/// `not_before` finds it gone; returns when it was first seen gone. Panics after `deadline`.
async fn gone_after(
    client: &paxkv::client::Client,
    id: u64,
    not_before: Instant,
    deadline: Instant,
) -> Instant {
    loop {
        let shown = client.lease_show(id).await;
        // The show's answer is true at some moment before it returned: gone before
        // `not_before` only if it returned before then.
        let returned = Instant::now();
        match shown {
            Ok(Some(_)) => {}
            Ok(None) => {
                assert!(
                    returned >= not_before,
                    "lease {id:016x} gone {:?} before its TTL had passed since the last \
                     keepalive was sent",
                    not_before - returned
                );
                return returned;
            }
            Err(e) => panic!("a show failed: {e}"),
        }
        assert!(Instant::now() < deadline, "lease {id:016x} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lives_while_kept_alive_and_expires_after_its_ttl_never_before() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    let lease = client.lease_grant(TTL).await.unwrap();
    assert_eq!((lease.ttl_ms, lease.version), (3_000, 1));
    // Kept alive for two TTLs: alive throughout.
    let kept_until = Instant::now() + 2 * TTL;
    let mut last_sent = Instant::now();
    while Instant::now() < kept_until {
        let sent = Instant::now();
        let kept = client.lease_keepalive(lease.id).await.unwrap();
        assert!(kept.is_some(), "a lease kept alive every second expired");
        last_sent = sent;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(client.lease_show(lease.id).await.unwrap().is_some());
    }
    // Let go: gone after TTL since the last keepalive was sent, within the bound.
    let bound = wait_before_expiry(TTL, 0) + 2 * SCAN_INTERVAL + SLACK;
    let gone = gone_after(&client, lease.id, last_sent + TTL, last_sent + bound).await;
    eprintln!(
        "gone {:?} after the last keepalive was sent",
        gone - last_sent
    );
    // The client hears that it is gone, from every request.
    assert_eq!(client.lease_keepalive(lease.id).await.unwrap(), None);
    assert_eq!(client.lease_revoke(lease.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_gone_at_once_and_an_unknown_one_never_existed() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    let lease = client.lease_grant(Duration::from_secs(60)).await.unwrap();
    let shown = client.lease_show(lease.id).await.unwrap().expect("granted");
    assert_eq!((shown.id, shown.ttl_ms), (lease.id, 60_000));
    let revoked = client.lease_revoke(lease.id).await.unwrap();
    assert_eq!(revoked.map(|l| l.id), Some(lease.id));
    assert_eq!(client.lease_show(lease.id).await.unwrap(), None);
    assert_eq!(client.lease_keepalive(lease.id).await.unwrap(), None);
    assert_eq!(client.lease_show(lease.id ^ 1).await.unwrap(), None);
    // A TTL out of range is bad input, one whose milliseconds overflow 64 bits too (it must
    // not wrap around into the range: 18,446,744,073,709,562 s is 10,384 ms past 2^64 ms).
    for ttl in [
        Duration::from_millis(10),
        Duration::from_secs(100_000),
        Duration::from_secs(18_446_744_073_709_562),
    ] {
        let e = client.lease_grant(ttl).await.unwrap_err();
        assert!(e.is_bad_input(), "{e}");
    }
}

/// Records written by every node of `cluster` so far (`status`).
async fn records_written(cluster: &TestCluster) -> u64 {
    let mut total = 0;
    for id in cluster.ids() {
        total += cluster.status(id).await.records_written;
    }
    total
}

/// A keepalive of a lease that does not exist answers "gone" and leaves no record behind:
/// a round of its `Touch` would have written its register's key on every voter, so any
/// client could grow the stores by a record per made-up id. A live lease kept alive through
/// a node that did not grant it (it may not track it yet, and reads it first) is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_of_a_lease_that_never_existed_writes_nothing() {
    const MADE_UP: u64 = 64;
    let cluster = TestCluster::start();
    let client = cluster.client();
    // Settled: a write went through, so the cluster's own start-up writes are done.
    client.put(b"settled", b"yes").await.unwrap();
    let before = records_written(&cluster).await;
    for i in 0..MADE_UP {
        let id = 0x6d61_6465_7570_0000 + i;
        assert_eq!(
            client.lease_keepalive(id).await.unwrap(),
            None,
            "lease {id:x}"
        );
    }
    let written = records_written(&cluster).await - before;
    // Each `Touch` round would have written at least a majority's three records.
    assert!(
        written < MADE_UP,
        "{MADE_UP} keepalives of made-up leases wrote {written} records"
    );

    let lease = cluster
        .client_for(1)
        .lease_grant(Duration::from_secs(60))
        .await
        .unwrap();
    let kept = cluster
        .client_for(2)
        .lease_keepalive(lease.id)
        .await
        .unwrap()
        .expect("a live lease kept alive through another node");
    assert_eq!((kept.id, kept.ttl_ms, kept.version), (lease.id, 60_000, 2));
    let shown = client.lease_show(lease.id).await.unwrap().expect("live");
    assert_eq!(shown.version, 2, "the keepalive raised the version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_home_node_is_down_is_expired_by_another() {
    let mut cluster = TestCluster::start();
    let client = cluster.client();
    const TTL: Duration = Duration::from_secs(1);
    let granted = Instant::now();
    let lease = client.lease_grant(TTL).await.unwrap();
    let ids = cluster.ids();
    let home = ids[(key_hash(&lease_key(lease.id)) % ids.len() as u64) as usize];
    cluster.stop(home).await;
    // The next node in the lease's order waits one stagger more than the home would.
    let bound = wait_before_expiry(TTL, 1) + 2 * SCAN_INTERVAL + SLACK;
    let gone = gone_after(&client, lease.id, granted + TTL, granted + bound).await;
    eprintln!(
        "gone {:?} after the grant, its home node {home} down (stagger {STAGGER:?})",
        gone - granted
    );
}

/// A keepalive that lands after a keeper found the lease due and before its expiry is sent
/// (`testing.lease_expiry_delay_ms` holds the expiry back 3 s) wins: the expiry, a delete
/// of the version the keeper saw, does nothing, and the lease lives on. Exactly one of the
/// two takes effect, and the client hears which: here the keepalive, so the lease must be
/// there. (A keeper that deleted whatever version it found would delete it: the mutant
/// `lease-expiry-unconditional`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_after_the_lease_was_found_due_wins_over_its_expiry() {
    keepalive_after_found_due(false).await;
}

/// The same with a key attached: the expiry is then an end of the lease (conditional on the
/// version seen, as the delete is), and the key stays. (The mutant `lease-end-unconditional`
/// ends it whatever its version.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_after_a_keyed_lease_was_found_due_wins_over_its_expiry() {
    keepalive_after_found_due(true).await;
}

async fn keepalive_after_found_due(keyed: bool) {
    const TTL: Duration = Duration::from_secs(1);
    const HELD_BACK: Duration = Duration::from_millis(3_000);
    let cluster = TestCluster::start_with(|config| {
        config.testing.allow_fault_injection = true;
        config.testing.lease_expiry_delay_ms = HELD_BACK.as_millis() as u64;
    });
    let client = cluster.client();
    let granted = Instant::now();
    let lease = client.lease_grant(TTL).await.unwrap();
    if keyed {
        client.put_leased(b"k", b"v", None, lease.id).await.unwrap();
    }
    // The lease's home first lists it within a scan of the grant (at s₁ ≤ 0.5 s), and finds
    // it due at the first scan at least TTL and margin later (s₁ + 1.5 s ≤ 2.0 s); it sends
    // its expiry 3 s after that (4.5 to 5.0 s). Keep it alive at 2.2 s, in between, with
    // over two seconds to spare for a slow machine's keepalive (the other nodes find it due
    // a stagger later, after the keepalive: they see its new version).
    tokio::time::sleep_until((granted + Duration::from_millis(2_200)).into()).await;
    let sent = Instant::now();
    let kept = client.lease_keepalive(lease.id).await.unwrap();
    assert!(
        kept.is_some(),
        "the lease was gone before any expiry was sent"
    );
    // No expiry of the new version can come before sent + TTL and margin + 3 s (~6.2 s
    // after the grant); the held-back one of the old version comes by ~5.0 s.
    let after_stale = granted + Duration::from_millis(5_500);
    let fresh_expiry = sent + wait_before_expiry(TTL, 0) + HELD_BACK;
    while Instant::now() < after_stale {
        let shown = client.lease_show(lease.id).await.unwrap();
        let returned = Instant::now();
        assert!(
            shown.is_some() || returned >= fresh_expiry,
            "the lease was gone {:?} after a keepalive that won",
            returned - sent
        );
        if keyed && returned < fresh_expiry {
            assert!(read(&client, b"k").await.0.is_some(), "its key was deleted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value and version of `key` now.
async fn read(client: &paxkv::client::Client, key: &[u8]) -> (Option<Vec<u8>>, u64) {
    match client.get(key).await.unwrap() {
        Outcome::Get { value, version } => (value, version),
        other => panic!("a get answered {other:?}"),
    }
}

/// Keys attached to a lease go with it, and only those: a key put again without the lease
/// (detached) or attached to another lease stays; a key deleted by the lease's end is
/// deleted like any other (its version up by one). A put naming a lease that is gone
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_attached_to_a_lease_are_deleted_with_it_and_only_those() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    let first = client
        .lease_grant(Duration::from_secs(60))
        .await
        .unwrap()
        .id;
    let second = client
        .lease_grant(Duration::from_secs(60))
        .await
        .unwrap()
        .id;
    for key in ["a", "b", "moved", "detached"] {
        let put = client.put_leased(key.as_bytes(), b"v", None, first).await;
        assert!(matches!(put, Ok(Outcome::Put { version: 1 })), "{put:?}");
    }
    client
        .put_leased(b"moved", b"w", None, second)
        .await
        .unwrap();
    client.put(b"detached", b"w").await.unwrap();
    let created = client.put_leased(b"c", b"v", Some(0), first).await.unwrap();
    assert_eq!(
        created,
        Outcome::Cas {
            swapped: true,
            version: 1
        }
    );
    let refused = client.put_leased(b"c", b"x", Some(0), first).await.unwrap();
    assert_eq!(
        refused,
        Outcome::Cas {
            swapped: false,
            version: 1
        }
    );
    let mut attached = client.lease_keys(first).await.unwrap().expect("the lease");
    attached.sort();
    assert_eq!(attached, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);

    client.lease_revoke(first).await.unwrap().expect("revoked");
    for key in ["a", "b", "c"] {
        assert_eq!(read(&client, key.as_bytes()).await, (None, 2), "{key}");
    }
    assert_eq!(read(&client, b"moved").await, (Some(b"w".to_vec()), 2));
    assert_eq!(read(&client, b"detached").await, (Some(b"w".to_vec()), 2));
    assert_eq!(client.lease_keys(first).await.unwrap(), None);

    // A lease that is gone: not found, nothing written.
    let e = client
        .put_leased(b"late", b"v", None, first)
        .await
        .unwrap_err();
    assert!(matches!(e, paxkv::Error::NotFound(_)), "{e}");
    assert_eq!(read(&client, b"late").await, (None, 0));
}

/// A lease left to expire takes its key with it: never before its TTL has passed since the
/// last keepalive (the put that attached the key is one), and within the module's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_attached_to_a_lapsed_lease_is_deleted_after_its_ttl_never_before() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    let granted = Instant::now();
    let lease = client.lease_grant(TTL).await.unwrap().id;
    client.put_leased(b"k", b"v", None, lease).await.unwrap();
    let bound = wait_before_expiry(TTL, 0) + 2 * SCAN_INTERVAL + SLACK;
    loop {
        let (value, version) = read(&client, b"k").await;
        let returned = Instant::now();
        if value.is_none() {
            assert!(
                returned >= granted + TTL,
                "the key was gone {:?} before its lease's TTL had passed",
                granted + TTL - returned
            );
            assert_eq!(version, 2, "deleted as any delete is");
            eprintln!("key gone {:?} after the grant", returned - granted);
            break;
        }
        assert!(returned < granted + bound, "the key outlived its lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.lease_show(lease).await.unwrap(), None);
}

/// A node that ends a lease and stops there (`testing.lease_stop_after_end`, as if it
/// crashed) leaves an ended lease whose keys are still there: the keepers that find it
/// ended release them. (A keeper that acted only on leases it saw live would leave the keys
/// for ever: the mutant `lease-release-only-inline`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_lease_whose_release_was_cut_short_is_released_by_the_keepers() {
    let cluster = TestCluster::start_with(|config| {
        config.testing.allow_fault_injection = true;
        config.testing.lease_stop_after_end = true;
    });
    let client = cluster.client();
    let lease = client
        .lease_grant(Duration::from_secs(60))
        .await
        .unwrap()
        .id;
    for key in ["x", "y"] {
        client
            .put_leased(key.as_bytes(), b"v", None, lease)
            .await
            .unwrap();
    }
    let revoked = Instant::now();
    client.lease_revoke(lease).await.unwrap().expect("revoked");
    assert_eq!(client.lease_show(lease).await.unwrap(), None, "ended");
    // The first keeper in line acts one stagger after its first scan sees it ended.
    let bound = STAGGER + 2 * SCAN_INTERVAL + SLACK;
    support::eventually("the ended lease's keys released", bound, || async {
        read(&client, b"x").await.0.is_none() && read(&client, b"y").await.0.is_none()
    })
    .await;
    eprintln!("released {:?} after the revoke", revoked.elapsed());
    assert_eq!(read(&client, b"x").await, (None, 2));
}
