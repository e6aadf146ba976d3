//! Recovery: nodes that missed writes catch up in the background (anti-entropy), and nodes
//! that lost their disk (wiped, or replaced with an older copy) never vote with it: they
//! rejoin as new members (`member remove`, then `member add`; see `paxos::membership`).

use paxkv_testkit as support;

use std::time::{Duration, Instant};

use paxkv::messages::{FaultPlan, LinkFaults, MemberChangeRequest};
use paxkv::paxos::types::{Ballot, Outcome};
use paxkv::Error;
use support::Cluster;
use support::{eventually, got, TestCluster};

/// The operator's path for a node whose store was lost: remove it (through `via`), give it
/// an empty directory, start it, add it again; it then holds every key's state.
async fn rejoin(cluster: &mut TestCluster, id: u32, via: &[u32]) {
    cluster
        .change_until_done(
            via,
            MemberChangeRequest::Remove { id },
            Duration::from_secs(60),
        )
        .await;
    cluster.stop(id).await;
    cluster.wipe(id);
    cluster.restart(id);
    let add = MemberChangeRequest::Add {
        id,
        addr: cluster.addr(id).to_string(),
    };
    cluster
        .change_until_done(via, add, Duration::from_secs(60))
        .await;
    cluster.wait_voting(&[id]).await;
}

/// With only two other nodes up, a node that lost its state must not vote: the three of them
/// must not form a majority (they would, if it voted from an empty disk).
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
async fn a_wiped_node_never_votes_and_holds_every_write_once_it_rejoined() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    cluster.stop(4).await;
    cluster.stop(5).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    // node 1 holds every write with 2 and 3; now its disk is gone
    cluster.stop(1).await;
    cluster.wipe(1);
    cluster.restart(1);
    cluster.wait_store_refused(1).await;
    assert_no_majority_forms(&cluster).await;

    // 4 and 5 come back; node 1 rejoins as a new member
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    rejoin(&mut cluster, 1, &[2, 3]).await;
    // {1,4,5} is now a majority without 2 and 3: it must still hold every write
    cluster.stop(2).await;
    cluster.stop(3).await;
    let client = cluster.client();
    for i in 0..50 {
        assert_eq!(
            client.get(format!("k{i}").as_bytes()).await.unwrap(),
            got("v", 1)
        );
    }
}

#[tokio::test]
async fn a_node_on_an_older_copy_of_its_data_never_votes_with_it() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    let client = cluster.client();
    client.put(b"k", b"v1").await.unwrap();
    cluster.stop(1).await;
    let backup = cluster.dir.path().join("node-1-backup");
    cluster.copy_disk(1, &backup);
    cluster.restart(1);
    cluster.wait_voting(&[1]).await;

    cluster.stop(4).await;
    cluster.stop(5).await;
    client.put(b"k", b"v2").await.unwrap();
    client.put(b"k", b"v3").await.unwrap();
    // node 1 goes back to the copy taken before v2 and v3
    cluster.stop(1).await;
    cluster.roll_back(1, &backup);
    cluster.restart(1);
    cluster.wait_store_refused(1).await;
    assert_no_majority_forms(&cluster).await;

    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    rejoin(&mut cluster, 1, &[2, 3]).await;
    cluster.stop(2).await;
    cluster.stop(3).await;
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
            let Ok(page) = node5.sync_digest(0, None, 1_000).await else {
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
        let Ok(page) = client.sync_digest(0, after.clone(), 4_096).await else {
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

/// A new cluster's first start, one node late, with a client writing through the late node
/// from its first moment. Four of five are not enough to found it (`paxos::bootstrap`: a
/// majority could found it again after a wiped disk): they wait, with no membership, as
/// long as node 5 does not run (observed for several of their rounds of asks; the rule
/// itself is tested in `paxos::bootstrap` and the simulation of starts). Once node 5 starts,
/// the cluster is founded, every node records its store and votes; writes through the late
/// node succeed, and every node answers them.
#[tokio::test]
async fn a_new_cluster_is_founded_once_its_late_node_starts_and_client_writes_through_it() {
    let mut cluster = TestCluster::configured_with(|c| c.paxos.request_timeout_ms = 500);
    cluster.unbind(5);
    for id in 1..=4 {
        cluster.restart(id);
    }
    let founds = paxkv::paxos::bootstrap::Founding::founds(cluster.config.founding(1).as_ref());
    assert_ne!(founds, 0);
    // Several of their rounds of asks (one every 300 ms), none founding.
    assert_none_founds(&cluster, 1..=4, |_| founds).await;
    cluster.restart(5);
    let writer = {
        let client = cluster.client_with(vec![cluster.addr(5)], true, Duration::from_millis(500));
        tokio::spawn(async move {
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
        .expect("writes through node 5 succeed once it votes")
        .unwrap();
    for id in 1..=5 {
        let outcome = cluster.client_for(id).get(b"first").await.unwrap();
        assert!(
            matches!(&outcome, Outcome::Get { value: Some(v), .. } if v == b"write"),
            "node {id}: {outcome:?}"
        );
    }
    cluster.wait_bootstrapped(5).await;
}

/// Issue 8, bug 1, with the procedure of issue 10. Keys written once are chosen at the fast
/// ballot by exactly four nodes (the fifth is down). Then two of those four lose their disks
/// one after the other (one wiped, one rolled back to a copy from before the writes); each is
/// refused and rejoins as a new member before the next is lost. Every key must still read
/// back. The writers' own settle and the anti-entropy sweeps are off, so the membership
/// change alone (its close-fast step settles every key a majority holds at the fast ballot,
/// counted against the old voters) must carry the fast-ballot votes.
#[tokio::test]
async fn a_key_written_once_at_the_fast_ballot_survives_two_disk_losses_one_after_the_other() {
    let mut cluster = TestCluster::start_with(|c| {
        c.paxos.request_timeout_ms = 2_000;
        c.paxos.settle_fast_writes = false;
        c.paxos.sync_interval_ms = 0;
    });
    cluster.stop(3).await;
    let backup = cluster.dir.path().join("node-3-backup");
    cluster.copy_disk(3, &backup);
    cluster.restart(3);
    cluster.wait_voting(&[3]).await;

    cluster.stop(5).await;
    let client = cluster.client();
    let keys: Vec<(String, String)> = (0..20)
        .map(|i| (format!("once-{i}"), format!("value-{i}")))
        .collect();
    for (key, value) in &keys {
        let put = client.put(key.as_bytes(), value.as_bytes()).await.unwrap();
        assert_eq!(put, Outcome::Put { version: 1 });
    }
    cluster.restart(5);
    cluster.wait_voting(&[5]).await;

    cluster.stop(2).await;
    cluster.wipe(2);
    cluster.restart(2);
    rejoin(&mut cluster, 2, &[1, 4]).await;

    cluster.stop(3).await;
    cluster.roll_back(3, &backup);
    cluster.restart(3);
    cluster.wait_store_refused(3).await;
    rejoin(&mut cluster, 3, &[1, 4]).await;

    for (key, value) in &keys {
        let read = client.get(key.as_bytes()).await.unwrap();
        assert_eq!(read, got(value, 1), "{key}");
    }
}

/// Issue 17, item 3 (mismatched bootstrap configs): node 3's config names the same nodes
/// under another `[cluster] token`. Before, every node counted every empty answer: nodes 1
/// and 2 founded one cluster and node 3 founded another at the same addresses, for good.
/// Now nobody founds while the configs differ (each node says what its config founds, and
/// the others name it in their log); once node 3 runs with the right config, the one
/// cluster is founded and all three vote in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_configs_differ_found_no_cluster_until_they_agree() {
    let mut cluster = TestCluster::configured_n(3, |c| c.paxos.request_timeout_ms = 500);
    let mut other = (*cluster.config).clone();
    other.cluster.token = "staging".into();
    let other = std::sync::Arc::new(other);
    cluster.restart(1);
    cluster.restart(2);
    cluster.restart_with_config(3, other.clone());
    let ours = paxkv::paxos::bootstrap::Founding::founds(cluster.config.founding(1).as_ref());
    let theirs = paxkv::paxos::bootstrap::Founding::founds(other.founding(3).as_ref());
    assert_ne!(ours, theirs);
    // Several rounds of asks (one every 300 ms) of every node, none founding.
    assert_none_founds(&cluster, 1..=3, |id| if id == 3 { theirs } else { ours }).await;
    cluster.stop(3).await;
    cluster.restart(3);
    cluster.wait_voting(&[1, 2, 3]).await;
    for id in 1..=3 {
        assert_eq!(cluster.membership(id).await.cluster, ours, "node {id}");
    }
    cluster.client_for(3).put(b"k", b"v").await.unwrap();
}

/// For 1.5 s (several rounds of every node's asks, one each 300 ms), each of `ids` has no
/// membership and says it would found `founds(id)`: a bounded observation of a node *not*
/// founding (the rule itself is tested in `paxos::bootstrap` and the simulation of starts).
async fn assert_none_founds(
    cluster: &TestCluster,
    ids: std::ops::RangeInclusive<paxkv::paxos::types::NodeId>,
    founds: impl Fn(paxkv::paxos::types::NodeId) -> u64,
) {
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_millis(1_500) {
        for id in ids.clone() {
            let info = cluster.members_of(id).await;
            assert!(
                info.membership.is_none(),
                "node {id} founded a cluster: {info:?}"
            );
            assert_eq!(info.founds, founds(id), "node {id}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
