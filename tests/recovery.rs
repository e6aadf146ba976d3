//! Recovery: nodes that missed writes catch up, and nodes that lost their disk (wiped, or
//! replaced with an older copy) do not vote until they have rebuilt their state from a
//! majority (see `src/actors/anti_entropy.rs` for why).

mod support;

use std::time::{Duration, Instant};

use paxkv::messages::{FaultPlan, LinkFaults};
use paxkv::paxos::types::{Ballot, Outcome};
use paxkv::Error;
use support::{copy_dir, eventually, TestCluster};

fn got(value: &str, version: u64) -> Outcome {
    Outcome::Get {
        value: Some(value.as_bytes().to_vec()),
        version,
    }
}

/// With only two other nodes to learn from, a node that lost its state must not vote: the
/// three of them must not form a majority (they would, if it voted from an empty disk).
async fn assert_no_majority_forms(cluster: &TestCluster) {
    let client = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(2));
    let result = client.put(b"probe", b"x").await;
    assert!(
        matches!(result, Err(Error::Unavailable(_) | Error::Unknown(_))),
        "a majority formed with a node that lost its state: {result:?}"
    );
    let status = cluster.status(1).await;
    assert!(!status.voting, "{status:?}");
    assert!(status.dropped_not_voting > 0, "{status:?}");
}

#[tokio::test]
async fn a_wiped_node_does_not_vote_until_it_has_rebuilt_its_state_from_a_majority() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    cluster.stop(4);
    cluster.stop(5);
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    // node 1 holds every write with 2 and 3; now its disk is gone
    cluster.stop(1);
    std::fs::remove_dir_all(cluster.node_dir(1)).unwrap();
    cluster.restart(1);
    assert_no_majority_forms(&cluster).await;

    // 4 and 5 come back; everyone can now recover from three trustworthy peers
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[1, 4, 5]).await;
    assert!(cluster.status(1).await.records_adopted >= 50);
    // {1,4,5} is now a majority without 2 and 3: it must still hold every write
    cluster.stop(2);
    cluster.stop(3);
    let client = cluster.client();
    for i in 0..50 {
        assert_eq!(
            client.get(format!("k{i}").as_bytes()).await.unwrap(),
            got("v", 1)
        );
    }
}

#[tokio::test]
async fn a_node_on_an_older_copy_of_its_data_does_not_vote_until_it_has_caught_up() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    let client = cluster.client();
    client.put(b"k", b"v1").await.unwrap();
    cluster.stop(1);
    let backup = cluster.dir.path().join("node-1-backup");
    copy_dir(&cluster.node_dir(1), &backup);
    cluster.restart(1);
    cluster.wait_voting(&[1]).await;

    cluster.stop(4);
    cluster.stop(5);
    client.put(b"k", b"v2").await.unwrap();
    client.put(b"k", b"v3").await.unwrap();
    // node 1 goes back to the copy taken before v2 and v3
    cluster.stop(1);
    std::fs::remove_dir_all(cluster.node_dir(1)).unwrap();
    copy_dir(&backup, &cluster.node_dir(1));
    cluster.restart(1);
    assert_no_majority_forms(&cluster).await;

    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[1, 4, 5]).await;
    cluster.stop(2);
    cluster.stop(3);
    assert_eq!(cluster.client().get(b"k").await.unwrap(), got("v3", 3));
}

#[tokio::test]
async fn a_node_cut_off_while_writes_happened_catches_up_in_the_background() {
    let cluster = TestCluster::start_with(|c| c.paxos.sync_interval_ms = 300);
    // node 5 hears nothing and says nothing
    let cut = FaultPlan {
        default: LinkFaults {
            cut: true,
            ..LinkFaults::default()
        },
        ..FaultPlan::default()
    };
    cluster.node(5).set_faults(cut.clone());
    for id in 1..=4 {
        let mut plan = FaultPlan::default();
        plan.links.insert(
            5,
            LinkFaults {
                cut: true,
                ..LinkFaults::default()
            },
        );
        cluster.node(id).set_faults(plan);
    }
    let client = cluster.client_with(
        (1..=4).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    for i in 0..300 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    assert_eq!(cluster.status(5).await.records_adopted, 0);
    for id in 1..=5 {
        cluster.node(id).set_faults(FaultPlan::default());
    }
    // No client touches those keys: anti-entropy alone (its pulls, and its sweeps, which
    // settle the keys written at the fast ballot) brings node 5 up to date. Node 5 holds
    // every write it missed once its own records show each key at a classic ballot.
    let node5 = cluster.client_for(5);
    eventually(
        "node 5 holds every write it missed",
        Duration::from_secs(20),
        || async {
            let Ok(page) = node5.sync_digest(0, None, 1_000).await else {
                return false;
            };
            let settled = page.entries.iter().filter(|e| e.accepted > Ballot::FAST);
            settled.count() >= 300
        },
    )
    .await;
    assert!(cluster.status(5).await.records_adopted > 0);
}

/// Catch-up time for a node that was down while `PAXKV_CATCHUP_KEYS` keys (default 2,000)
/// were written: from its restart until it votes with every one of them. Prints the figure
/// (docs/TESTING.md reports it for 100,000 keys).
#[tokio::test]
async fn a_restarted_node_that_missed_many_writes_catches_up_before_it_votes() {
    let keys: usize = std::env::var("PAXKV_CATCHUP_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut cluster = TestCluster::start_with(|c| c.storage.map_size_mb = 2_048);
    cluster.stop(5);
    let client = cluster.client();
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..keys).step_by(64) {
                client
                    .put(format!("key-{i:08}").as_bytes(), &[b'x'; 100])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let started = Instant::now();
    cluster.restart(5);
    cluster.wait_voting(&[5]).await;
    let took = started.elapsed();
    let adopted = cluster.status(5).await.records_adopted;
    println!(
        "catch-up: node 5 adopted {adopted} records ({keys} keys missed) and voted {:.2}s after \
         its restart ({:.0} records/s)",
        took.as_secs_f64(),
        adopted as f64 / took.as_secs_f64()
    );
    assert!(adopted >= keys as u64, "adopted {adopted} of {keys}");
    let store_check = cluster.client_for(5);
    assert!(matches!(
        store_check
            .get(format!("key-{:08}", keys - 1).as_bytes())
            .await
            .unwrap(),
        Outcome::Get { version: 1, .. }
    ));
}

/// A new cluster's first start, with a client writing through the last node to come up from
/// its first moment. That node finds every store empty and bootstraps at once; the other four
/// were up earlier and retry a moment later. If it voted right away, the client's first
/// request would leave a promise on its disk, and the other four would then see neither a
/// cluster of empty stores (to bootstrap) nor three recovered peers (to learn from): stuck
/// for good. It votes only once a majority has bootstrapped, so all five end up voting.
#[tokio::test]
async fn a_new_cluster_bootstraps_with_client_writes_from_the_first_moment() {
    let mut cluster = TestCluster::configured_with(|c| c.paxos.request_timeout_ms = 500);
    cluster.unbind(5);
    for id in 1..=4 {
        cluster.restart(id);
    }
    // Nodes 1-4 answer, and cannot bootstrap without node 5.
    for id in 1..=4 {
        let client = cluster.client_for(id);
        eventually(
            &format!("node {id} answers"),
            Duration::from_secs(10),
            || async { client.status(0).await.is_ok() },
        )
        .await;
    }
    for id in 1..=4 {
        assert!(!cluster.status(id).await.voting, "node {id} votes alone");
    }
    cluster.restart(5);
    let writer = {
        let client = cluster.client_with(vec![cluster.addr(5)], true, Duration::from_millis(500));
        tokio::spawn(async move {
            // Write the moment node 5 votes (polled every millisecond), while the other four
            // are still between two of their bootstrap attempts.
            let mut poll = tokio::time::interval(Duration::from_millis(1));
            while !matches!(client.status(0).await, Ok(s) if s.voting) {
                poll.tick().await;
            }
            let mut acknowledged = 0u32;
            while acknowledged < 20 {
                if client.put(b"first", b"write").await.is_ok() {
                    acknowledged += 1;
                }
            }
        })
    };
    cluster.wait_voting(&[1, 2, 3, 4, 5]).await;
    tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("writes through node 5 succeed once the cluster votes")
        .unwrap();
    for id in 1..=5 {
        let outcome = cluster.client_for(id).get(b"first").await.unwrap();
        assert!(
            matches!(&outcome, Outcome::Get { value: Some(v), .. } if v == b"write"),
            "node {id}: {outcome:?}"
        );
    }
}

/// Issue 8, bug 1. Keys written once are chosen at the fast ballot by exactly four nodes (the
/// fifth is down). Then two of those four lose their disks one after the other (one wiped,
/// one rolled back to a copy from before the writes), each voting again before the next is
/// lost (once the previous one is repaired). Every key must still read back. Recovery used to
/// skip fast-ballot votes when it merged peers' records, so each lost disk came back saying
/// "accepted nothing" and, after two, a classic round no longer saw the keys as chosen. The
/// writers' own settle and the anti-entropy sweeps are off, so recovery alone (its
/// `fast_unknown` marks, and its repair) must carry the fast-ballot votes.
#[tokio::test]
async fn a_key_written_once_at_the_fast_ballot_survives_two_disk_losses_one_after_the_other() {
    let mut cluster = TestCluster::start_with(|c| {
        c.paxos.request_timeout_ms = 2_000;
        c.paxos.settle_fast_writes = false;
        c.paxos.sync_interval_ms = 0;
    });
    cluster.stop(3);
    let backup = cluster.dir.path().join("node-3-backup");
    copy_dir(&cluster.node_dir(3), &backup);
    cluster.restart(3);
    cluster.wait_voting(&[3]).await;

    cluster.stop(5);
    let client = cluster.client();
    let keys: Vec<(String, String)> = (0..20)
        .map(|i| (format!("once-{i}"), format!("value-{i}")))
        .collect();
    for (key, value) in &keys {
        let put = client.put(key.as_bytes(), value.as_bytes()).await.unwrap();
        assert_eq!(put, Outcome::Put { version: 1 });
    }
    cluster.restart(5);
    cluster.wait_repaired(&[5]).await;

    cluster.stop(2);
    std::fs::remove_dir_all(cluster.node_dir(2)).unwrap();
    cluster.restart(2);
    cluster.wait_repaired(&[2]).await;

    cluster.stop(3);
    std::fs::remove_dir_all(cluster.node_dir(3)).unwrap();
    copy_dir(&backup, &cluster.node_dir(3));
    cluster.restart(3);
    cluster.wait_repaired(&[3]).await;

    for (key, value) in &keys {
        let read = client.get(key.as_bytes()).await.unwrap();
        assert_eq!(read, got(value, 1), "{key}");
    }
}
