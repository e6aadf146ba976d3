//! Each cluster has an identity (`paxos::membership::cluster_id`, from the bootstrap
//! config): a store that served another cluster is refused by `member add`, another
//! cluster's store put in a member's place never takes over, and another cluster's node calls
//! are refused and counted.

use paxkv_testkit as support;

use std::time::Duration;

use paxkv::messages::MemberChangeRequest;
use paxkv::paxos::types::Outcome;

use support::{eventually, member_add, Cluster, TestCluster};

/// Issue 17, item 3: `member add` refuses a node whose store served another cluster (here a
/// staging cluster with the same key names): before, its records took part in the add's
/// rescan and every key read the staging value. An empty directory is then added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_served_another_cluster_is_refused_by_member_add() {
    let mut staging = TestCluster::start_n(3, |_| {});
    staging.start_new_node(6);
    staging
        .change_until_done(&[1, 2], member_add(&staging, 6), Duration::from_secs(60))
        .await;
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i}").into_bytes()).collect();
    for _ in 0..3 {
        for key in &keys {
            staging.client().put(key, b"staging").await.unwrap();
        }
    }
    staging.stop(6).await;
    let mut production = TestCluster::start();
    for key in &keys {
        production.client().put(key, b"production").await.unwrap();
    }
    production.roll_back(6, &staging.data_dir(6));
    production.start_new_node(6);
    let refused = production.change(1, member_add(&production, 6)).await;
    match refused {
        Err(e) => assert!(
            e.is_bad_input() && e.message().contains("another cluster"),
            "{e}"
        ),
        Ok(m) => panic!("a store of another cluster was added: {m:?}"),
    }
    for key in &keys {
        match production.client().get(key).await.unwrap() {
            Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"production"[..])),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(production.membership(1).await.voters(), vec![1, 2, 3, 4, 5]);
    // On an empty directory, the same node is added and holds production's values.
    production.stop(6).await;
    production.wipe(6);
    production.restart(6);
    production
        .change_until_done(&[1, 2], member_add(&production, 6), Duration::from_secs(60))
        .await;
    for key in &keys {
        match production.client_for(6).get(key).await.unwrap() {
            Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"production"[..])),
            other => panic!("{other:?}"),
        }
    }
}

/// Issue 17, item 3: a data directory of **another cluster** put in a member's place (a
/// machine reimaged from a staging image, a volume attached to the wrong node), whose
/// membership is newer than this cluster's. Before cluster identities, a production node
/// that asked it for the membership (every start does, and every voting node every few
/// seconds) installed the staging one: the production cluster was taken over by staging's
/// member list. Now the foreign store refuses production's frames (counted), production
/// keeps its membership and its values, and the foreign store never votes in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_cluster_in_a_members_place_never_takes_over() {
    let mut staging = TestCluster::start_n(3, |c| c.cluster.token = "staging".into());
    // A few changes, so that staging's membership is newer than production's.
    staging.start_new_node(4);
    staging
        .change_until_done(&[1, 2], member_add(&staging, 4), Duration::from_secs(60))
        .await;
    staging
        .change_until_done(
            &[1, 2],
            MemberChangeRequest::Remove { id: 4 },
            Duration::from_secs(60),
        )
        .await;
    staging.client().put(b"k", b"staging").await.unwrap();
    let foreign = staging.membership(3).await;
    staging.stop(3).await;

    let mut production = TestCluster::start_n(3, |_| {});
    production.client().put(b"k", b"production").await.unwrap();
    let before = production.membership(1).await;
    assert_ne!(before.cluster, foreign.cluster);
    assert!(
        foreign.epoch > before.epoch,
        "staging {} production {}",
        foreign.epoch,
        before.epoch
    );
    production.stop(3).await;
    production.roll_back(3, &staging.data_dir(3));
    production.restart(3);
    // Production's writes keep reaching node 3's address, and node 1's start asks node 3
    // for its (newer) membership first thing.
    for i in 0..20 {
        let value = format!("production-{i}").into_bytes();
        production.client_for(1).put(b"k", &value).await.unwrap();
    }
    production.stop(1).await;
    production.restart(1);
    production.wait_voting(&[1]).await;
    for id in [1, 2] {
        let m = production.membership(id).await;
        assert_eq!(
            (m.cluster, m.epoch, m.voters()),
            (before.cluster, before.epoch, before.voters()),
            "node {id}"
        );
    }
    // Node 3 refuses production's frames. (Production never hears from node 3 since issue
    // 18: node 3 pulls only from the members of its own, staging, membership, no longer
    // from the config's addresses, which are production's.)
    eventually(
        "node 3 refused production's frames",
        Duration::from_secs(20),
        || async { production.status(3).await.foreign_frames > 0 },
    )
    .await;
    assert_eq!(production.membership(3).await.cluster, foreign.cluster);
    match production.client_for(1).get(b"k").await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"production-19"[..])),
        other => panic!("{other:?}"),
    }
}

/// The node calls that change something (`Install`, `Hello`) are taken from callers of the
/// node's own cluster only, and answered "not this node" otherwise: a caller of another
/// cluster, or one that names none (a tool, a node with no membership). Those that change
/// nothing (`Membership`, `Digest`) are answered to a caller that names no cluster (a node
/// that is starting asks for the membership), never to one of another cluster, which would
/// take what it reads for its own. Each refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_calls_of_another_cluster_are_refused_and_counted() {
    use paxkv::client::{Client, ClientOptions};
    use paxkv::error::Error;
    use paxkv::messages::{NodeReply, NodeRequest};
    let cluster = TestCluster::start_n(3, |_| {});
    cluster.client().put(b"k", b"v").await.unwrap();
    let m = cluster.membership(1).await;
    let caller = |id: u64| {
        Client::new(
            vec![cluster.addr(1)],
            ClientOptions {
                pinned: true,
                cluster: id,
                ..ClientOptions::default()
            },
        )
    };
    let hello = || NodeRequest::Hello {
        node: 2,
        store: 77,
        generation: 1,
        call: 1,
    };
    let mut takeover = m.clone();
    takeover.epoch += 5;
    takeover.cluster ^= 1;
    let before = cluster.status(1).await.foreign_frames;
    for id in [0, m.cluster ^ 1] {
        let caller = caller(id);
        for call in [hello(), NodeRequest::Install(takeover.clone())] {
            match caller.node_call(0, call.clone()).await {
                Err(Error::NotThisNode(_)) => {}
                other => panic!("{call:?} from cluster {id:x}: {other:?}"),
            }
        }
    }
    match caller(m.cluster ^ 1)
        .node_call(0, NodeRequest::Membership)
        .await
    {
        Err(Error::NotThisNode(_)) => {}
        other => panic!("a membership read by another cluster: {other:?}"),
    }
    assert_eq!(cluster.status(1).await.foreign_frames, before + 5);
    match caller(0).node_call(0, NodeRequest::Membership).await {
        Ok(NodeReply::Membership(info)) => assert_eq!(info.membership, Some(m.clone())),
        other => panic!("{other:?}"),
    }
    match caller(m.cluster).node_call(0, hello()).await {
        Ok(NodeReply::Hello { seen: 0 }) => {}
        other => panic!("a Hello of the node's own cluster: {other:?}"),
    }
    assert_eq!(cluster.membership(1).await, m);
}
