//! Catching up: a node restarted on its intact disk votes at once (even with two other nodes
//! down) and then catches up on what it missed, and a node cut off while writes happened
//! catches up by anti-entropy alone (`actors::anti_entropy`).

use paxkv_testkit as support;

use std::time::{Duration, Instant};

use paxkv::messages::{FaultPlan, LinkFaults};
use paxkv::paxos::types::{Ballot, Outcome};

use support::{eventually, Cluster, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_restart_votes_at_once_while_two_other_nodes_are_down() {
    let mut cluster = TestCluster::start_with(|_| {});
    cluster.client().put(b"k", b"v").await.unwrap();
    cluster.stop(4).await;
    cluster.stop(5).await;
    cluster.stop(1).await;
    cluster.restart(1);
    cluster.wait_voting(&[1]).await;
    let client = cluster.client_with(
        vec![cluster.addr(1), cluster.addr(2), cluster.addr(3)],
        false,
        Duration::from_secs(10),
    );
    client.put(b"k", b"w").await.unwrap();
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
    // (Node 5 adopted the membership register's records before the cut, at bootstrap.)
    let adopted_before = cluster.status(5).await.records_adopted;
    for i in 0..300 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    assert_eq!(cluster.status(5).await.records_adopted, adopted_before);
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
            let Ok(page) = node5.digest_page(0, None, 1_000).await else {
                return false;
            };
            let settled = page.entries.iter().filter(|e| e.accepted > Ballot::FAST);
            settled.count() >= 300
        },
    )
    .await;
    // (How many came by its own pulls and how many by the others' settle rounds, whose
    // Accepts reach it too, varies; both are anti-entropy.)
}

/// How many keys with `prefix` the node behind `client` holds at a classic ballot.
async fn settled_keys(client: &paxkv::client::Client, prefix: &[u8]) -> usize {
    let mut after = None;
    let mut count = 0;
    loop {
        let Ok(page) = client.digest_page(0, after.clone(), 4_096).await else {
            return 0;
        };
        count += page
            .entries
            .iter()
            .filter(|e| e.key.starts_with(prefix) && e.accepted > Ballot::FAST)
            .count();
        after = page.entries.last().map(|e| e.key.clone());
        if !page.more || after.is_none() {
            return count;
        }
    }
}

/// Catch-up time for a node that was down while `PAXKV_CATCHUP_KEYS` keys (default 2,000)
/// were written: it votes at once on its intact disk, and anti-entropy brings it every key it
/// missed in the background; the figure is from its restart until its store holds every one
/// (docs/TESTING.md reports it for 100,000 keys).
#[tokio::test]
async fn a_restarted_node_votes_at_once_and_catches_up_on_many_missed_writes() {
    let keys: usize = std::env::var("PAXKV_CATCHUP_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut cluster = TestCluster::start_with(|c| {
        c.storage.map_size_mb = 2_048;
        c.paxos.sync_interval_ms = 200;
    });
    cluster.stop(5).await;
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
    let voted = started.elapsed();
    let node5 = cluster.client_for(5);
    eventually(
        "node 5 holds every key it missed",
        Duration::from_secs(120),
        || async { settled_keys(&node5, b"key-").await >= keys },
    )
    .await;
    let took = started.elapsed();
    // Both ways count: records pulled by anti-entropy, and the other nodes' sweeps settling
    // their fast-ballot keys, whose classic Accepts reach node 5 too.
    let s = cluster.status(5).await;
    println!(
        "catch-up: node 5 voted {:.2}s after its restart and held all {keys} keys it missed \
         at a classic ballot {:.2}s after it ({:.0} keys/s; {} records adopted, {} written)",
        voted.as_secs_f64(),
        took.as_secs_f64(),
        keys as f64 / took.as_secs_f64(),
        s.records_adopted,
        s.records_written
    );
    assert!(matches!(
        node5
            .get(format!("key-{:08}", keys - 1).as_bytes())
            .await
            .unwrap(),
        Outcome::Get { version: 1, .. }
    ));
}
