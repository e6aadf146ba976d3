//! The first start of a new cluster (`paxos::bootstrap`): it is founded only once every node
//! of its config answers empty and of the same config, so a late node holds the founding up
//! (and a client writes through it from the first moment), and nodes whose configs differ
//! found nothing until they agree.

use paxkv_testkit as support;

use std::time::{Duration, Instant};

use paxkv::paxos::types::Outcome;

use support::{Cluster, TestCluster};

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
