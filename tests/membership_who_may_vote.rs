//! Who may vote: a node votes only when the membership lists it as a voter with the store it
//! holds, and its peers confirmed that store's latest run (`paxos::identity`). A wiped disk,
//! an older copy of the directory (however often it restarts, and after the membership
//! changed or an empty start) and a removed node that returns on its old data never vote, and a
//! store the membership does not record yet votes on no client key; a node left waiting costs its
//! peers nothing; the operator's runbook (remove the node, add it back on an empty
//! directory) works through any node, and keys written once at the fast ballot survive two
//! disk losses one after the other.

use paxkv_testkit as support;

use std::time::Duration;

use paxkv::messages::MemberChangeRequest;
use paxkv::paxos::types::Outcome;
use paxkv::Error;

use support::{eventually, got, member_add, rejoin, Cluster, TestCluster};

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

/// A wiped node is refused and never votes: with only two other nodes up no majority forms
/// (it would, if it voted from an empty disk), and while the others write it keeps refusing
/// and its acceptors drop what they get. The operator removes it and adds it again (same id
/// and address, the new store): it votes, holds what was written before, and the majority it
/// then forms without the two nodes that held the writes serves every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_votes_and_rejoins_as_a_new_member_holding_every_write() {
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

    // It keeps not voting: with 4 and 5 back, writes go on without it and its acceptors drop
    // what they get.
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    let dropped_before = cluster.status(1).await.dropped_not_voting;
    for i in 0..20 {
        client.put(format!("w{i}").as_bytes(), b"x").await.unwrap();
    }
    let s = cluster.status(1).await;
    assert!(!s.voting && s.dropped_not_voting > dropped_before, "{s:?}");

    // The operator's path: remove it, add it again (same id and address, new store).
    cluster
        .change_until_done(
            &[2, 3],
            MemberChangeRequest::Remove { id: 1 },
            Duration::from_secs(60),
        )
        .await;
    cluster
        .change_until_done(&[2, 3], member_add(&cluster, 1), Duration::from_secs(60))
        .await;
    cluster.wait_voting(&[1]).await;
    assert!(!cluster.status(1).await.store_refused);
    assert_eq!(cluster.membership(2).await.voters(), vec![1, 2, 3, 4, 5]);
    assert_eq!(cluster.client_for(1).get(b"k0").await.unwrap(), got("v", 1));

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

/// A node put back on a copy of its directory from before its later run (whose generation
/// its peers saw) is told so and never votes: with only two other nodes up no majority forms.
/// Once it rejoined as a new member, the majority it forms without the nodes that held the
/// later writes serves the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_an_older_copy_of_its_data_is_told_and_never_votes() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    let client = cluster.client();
    client.put(b"k", b"v1").await.unwrap();
    cluster.stop(1).await;
    let backup = cluster.dir.path().join("node-1-backup");
    cluster.copy_disk(1, &backup);
    cluster.restart(1); // a later run: its generation reaches the peers
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
    let s = cluster.status(1).await;
    assert!(!s.voting, "{s:?}");
    assert_no_majority_forms(&cluster).await;

    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    rejoin(&mut cluster, 1, &[2, 3]).await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    assert_eq!(cluster.client().get(b"k").await.unwrap(), got("v3", 3));
}

/// The rollback of `a_node_on_an_older_copy...` after the membership changed (node 6 added,
/// node 1 removed and stopped): still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_is_refused_after_the_membership_changed() {
    let mut cluster = TestCluster::start_with(|_| {});
    cluster.start_new_node(6);
    cluster
        .change_until_done(&[2, 3], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    cluster.stop(1).await;
    cluster
        .change_until_done(
            &[2, 3],
            MemberChangeRequest::Remove { id: 1 },
            Duration::from_secs(60),
        )
        .await;
    cluster.stop(3).await;
    let copy = cluster.dir.path().join("copy-3");
    cluster.copy_disk(3, &copy);
    cluster.restart(3);
    // Voting means its peers confirmed this run's generation: the copy is now older.
    cluster.wait_voting(&[3]).await;
    cluster.stop(3).await;
    cluster.roll_back(3, &copy);
    cluster.restart(3);
    cluster.wait_store_refused(3).await;
}

/// Item 1 (a): node 3 runs on, a write is acknowledged by {1, 2, 3} while 4 and 5 are down,
/// node 3's directory is replaced by a copy from before, and it is restarted again and again
/// (an operator, or an orchestrator reacting to `/health`'s 503). It stays refused; and with
/// 1 and 2 down, {3, 4, 5} never answers that the write does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_stays_refused_however_often_it_restarts_and_no_acknowledged_write_is_lost() {
    let mut cluster = TestCluster::start();
    cluster.stop(3).await;
    let copy = cluster.dir.path().join("copy-3");
    cluster.copy_disk(3, &copy);
    // A later run while 4 and 5 are down: its generation reaches 1 and 2 only, so that at
    // the end, with 1 and 2 down, only the copy's own refusal mark keeps it from voting (4
    // and 5 never saw the later run).
    cluster.stop(4).await;
    cluster.stop(5).await;
    cluster.restart(3);
    cluster.wait_voting(&[3]).await;
    let client = cluster.client();
    let written = client.put(b"K", b"acknowledged").await.unwrap();
    assert!(
        matches!(written, Outcome::Put { version: 1 }),
        "{written:?}"
    );
    cluster.stop(3).await;
    cluster.roll_back(3, &copy);
    for _ in 0..3 {
        cluster.restart(3);
        cluster.wait_store_refused(3).await;
        cluster.stop(3).await;
    }
    cluster.stop(1).await;
    cluster.stop(2).await;
    cluster.restart(3);
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_store_refused(3).await;
    let minority = cluster.client_with(
        vec![cluster.addr(3), cluster.addr(4), cluster.addr(5)],
        false,
        Duration::from_secs(3),
    );
    match minority.get(b"K").await {
        Err(e) => assert!(!e.may_have_applied(), "{e}"),
        Ok(Outcome::Get { value, version }) => assert_eq!(
            (value.as_deref(), version),
            (Some(&b"acknowledged"[..]), 1),
            "a stale read"
        ),
        Ok(other) => panic!("{other:?}"),
    }
}

/// Item 1 (b): between the copy and its restore, the node once started on an empty
/// directory (a new store, refused as not the member's). Its `Hello` must not erase what the
/// peers know of the real store: the restored copy is refused at its first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_is_refused_even_after_the_node_once_started_on_an_empty_directory() {
    let mut cluster = TestCluster::start();
    cluster.stop(3).await;
    let copy = cluster.dir.path().join("copy-3");
    cluster.copy_disk(3, &copy);
    cluster.restart(3);
    cluster.wait_voting(&[3]).await;
    cluster.client().put(b"K", b"v").await.unwrap();
    cluster.stop(3).await;
    cluster.wipe(3);
    cluster.restart(3);
    cluster.wait_store_refused(3).await;
    cluster.stop(3).await;
    cluster.roll_back(3, &copy);
    cluster.restart(3);
    cluster.wait_store_refused(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_returns_on_its_old_data_changes_nothing() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.sync_interval_ms = 500);
    let client = cluster.client();
    client.put(b"k", b"before").await.unwrap();
    cluster.stop(5).await;
    cluster
        .change_until_done(
            &[1, 2],
            MemberChangeRequest::Remove { id: 5 },
            Duration::from_secs(60),
        )
        .await;
    client.put(b"k", b"after").await.unwrap();
    cluster.restart(5); // on its old data, with the old membership
                        // It sends (its anti-entropy and its proposers would), learns it is removed, never votes.
    let removed = cluster.client_for(5);
    eventually(
        "node 5 learns it was removed",
        Duration::from_secs(10),
        || async {
            match removed
                .request(0, paxkv::messages::RequestBody::Members)
                .await
            {
                Ok(paxkv::messages::Reply::Members(info)) => {
                    info.membership.is_some_and(|m| m.member(5).is_none())
                }
                _ => false,
            }
        },
    )
    .await;
    // A write through the removed node, which knows it: refused at once, nothing sent
    // (`Proposer::enqueue`; were its frames sent, every member would drop them as a
    // non-member's, `tests/transport_bad_input.rs`). Through the others, writes work.
    // The client is pinned to node 5 (10 s per operation): told at once, not after asking
    // node 5 again until its deadline.
    let asked = std::time::Instant::now();
    match removed.put(b"k", b"from-removed").await {
        Err(Error::NotThisNode(why)) => assert!(why.contains("not a member"), "{why}"),
        other => panic!("a write through the removed node: {other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(9),
        "the pinned client asked the removed node until its deadline"
    );
    assert!(!cluster.status(5).await.voting);
    for id in 1..=4 {
        match cluster.client_for(id).get(b"k").await.unwrap() {
            Outcome::Get { value, .. } => {
                assert_eq!(value.as_deref(), Some(&b"after"[..]), "node {id}")
            }
            other => panic!("{other:?}"),
        }
    }
    let m = cluster.membership(1).await;
    assert_eq!(m.voters(), vec![1, 2, 3, 4]);
}

/// A new cluster whose node 5 went down right after the founding, before it installed the
/// membership: nodes 1-4 vote with their stores recorded, node 5's entry records none yet,
/// and node 5 is not running.
async fn node_5_not_recorded() -> TestCluster {
    let mut cluster = TestCluster::configured_with(|_| {});
    cluster.founded_without(&[5]);
    for id in 1..=4 {
        cluster.restart(id);
    }
    cluster.wait_voting(&[1, 2, 3, 4]).await;
    eventually("nodes 1-4 recorded", Duration::from_secs(60), || async {
        let m = cluster.membership(1).await;
        (1..=4).all(|id| m.member(id).is_some_and(|x| x.store != 0))
    })
    .await;
    cluster
}

/// Item 4: a store the membership does not record yet (node 5 went down at the founding,
/// and its own compare-and-set that would record it cannot get through: its outgoing Paxos
/// messages are cut) votes on the membership register only, never on a client key: a wiped
/// disk in that window loses no client write. Once it is recorded, it votes on every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_not_yet_recorded_votes_on_no_client_key() {
    use paxkv::actors::messages::InspectAcceptor;
    use paxkv::messages::FaultPlan;

    let mut cluster = node_5_not_recorded().await;
    assert_eq!(cluster.membership(1).await.member(5).unwrap().store, 0);
    cluster.restart(5);
    cluster.node(5).set_faults(support::outgoing_paxos_cut());
    cluster.wait_voting(&[5]).await;
    let client = cluster.client_with(
        (1..=4).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    for i in 0..20 {
        client.put(format!("w{i}").as_bytes(), b"x").await.unwrap();
    }
    assert_eq!(cluster.membership(1).await.member(5).unwrap().store, 0);
    let supervisor = cluster.node(5).supervisor().clone();
    for i in 0..20 {
        let record = supervisor
            .send(InspectAcceptor {
                key: format!("w{i}").into_bytes(),
            })
            .await
            .unwrap();
        assert!(
            record.as_ref().is_none_or(|r| r.state.value.is_none()),
            "node 5 voted on w{i} with a store the membership does not record: {record:?}"
        );
    }
    assert!(cluster.status(5).await.dropped_not_voting > 0);
    // Its messages flow again: it records its store, and then votes on client keys.
    cluster.node(5).set_faults(FaultPlan::default());
    eventually("node 5 recorded", Duration::from_secs(60), || async {
        cluster
            .membership(1)
            .await
            .member(5)
            .is_some_and(|x| x.store != 0)
    })
    .await;
    cluster.stop(1).await;
    cluster.stop(2).await;
    let survivors = cluster.client_with(
        vec![cluster.addr(3), cluster.addr(4), cluster.addr(5)],
        false,
        Duration::from_secs(20),
    );
    survivors.put(b"after", b"recorded").await.unwrap();
}

/// A store that was not recorded at the bootstrap records itself even while a membership
/// change is in progress (a record step changes no voter: `Start::record_store`); before,
/// it waited for the change to end, which could need its votes on client keys for ever.
/// Here the change is an add held at its Rescan (node 6's replies never arrive), and the
/// store is recorded in the middle of it; then the add is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_recorded_even_while_a_change_is_in_progress() {
    use paxkv::messages::{MemberChangeRequest, RequestBody};
    use paxkv::paxos::membership::Phase;

    let mut cluster = node_5_not_recorded().await;
    cluster.start_new_node(6);
    cluster.node(6).set_faults(support::outgoing_paxos_cut());
    let add = MemberChangeRequest::Add {
        id: 6,
        addr: cluster.addr(6).to_string(),
    };
    let driver = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(120));
    let adding =
        tokio::spawn(async move { driver.request(0, RequestBody::MemberChange(add)).await });
    eventually("the add at its Rescan", Duration::from_secs(30), || async {
        cluster.membership(1).await.phase == Some(Phase::Rescan)
    })
    .await;
    cluster.restart(5);
    eventually(
        "node 5 recorded during the change",
        Duration::from_secs(60),
        || async {
            let m = cluster.membership(1).await;
            m.phase.is_some() && m.member(5).is_some_and(|x| x.store != 0)
        },
    )
    .await;
    cluster.stop(6).await;
    cluster
        .change_until_done(
            &[2, 3],
            MemberChangeRequest::Remove { id: 6 },
            Duration::from_secs(60),
        )
        .await;
    let _ = adding.await;
    let m = cluster.membership(2).await;
    assert_eq!((m.phase, m.voters()), (None, vec![1, 2, 3, 4, 5]), "{m:?}");
    assert!(m.members.iter().all(|x| x.store != 0), "{m:?}");
}

/// Item 6: a node whose store is refused waits for the operator, and keeps asking its peers
/// for the membership. Every connection it opens is closed again: with a connection limit
/// of 32, after it opened more than twice that many to node 1, node 1 holds few open and a
/// new client is served (before, each ask leaked a connection, and the peers ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_node_left_waiting_leaves_no_connection_open_and_clients_keep_working() {
    const LIMIT: usize = 32;
    let mut cluster = TestCluster::start_with(|config| {
        config.limits.max_client_connections = LIMIT;
        let ports = support::free_ports(config.nodes.len());
        for (node, port) in config.nodes.iter_mut().zip(ports) {
            node.metrics_addr = Some(port.to_string());
        }
    });
    cluster.stop(5).await;
    cluster.wipe(5);
    cluster.restart(5);
    cluster.wait_store_refused(5).await;
    let accepted = "paxkv_connections_accepted_total";
    let before = cluster.metric(1, accepted).await.expect("the series");
    eventually(
        "node 5 opened twice the connection limit to node 1",
        Duration::from_secs(120),
        || async {
            cluster
                .metric(1, accepted)
                .await
                .is_some_and(|n| n >= before + 2.0 * LIMIT as f64)
        },
    )
    .await;
    let open = cluster
        .metric(1, "paxkv_connections_open")
        .await
        .expect("the series");
    assert!(
        open < LIMIT as f64 / 2.0,
        "{open} connections open on node 1 (limit {LIMIT})"
    );
    let fresh = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(10));
    fresh.put(b"still", b"served").await.unwrap();
    assert_eq!(
        cluster.metric(1, "paxkv_refused_connections_total").await,
        Some(0.0)
    );
}

/// Item 7: the README's runbook for a lost disk, run with the CLI against a config whose
/// first node is the wiped one: `member remove 1` and `member add 1` are taken by the next
/// node (the wiped one answers "not this node"), and node 1 votes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_for_a_wiped_node_works_when_the_config_names_it_first() {
    let mut cluster = TestCluster::start();
    cluster.client().put(b"k", b"before").await.unwrap();
    cluster.stop(1).await;
    cluster.wipe(1);
    cluster.restart(1);
    cluster.wait_store_refused(1).await;
    let config = cluster.dir.path().join("client.toml");
    let text = support::nodes_toml(&cluster.config.nodes_and_addrs(), None);
    std::fs::write(&config, text).unwrap();
    let addr1 = cluster.addr(1).to_string();
    for args in [
        vec!["member".to_string(), "remove".into(), "1".into()],
        vec![
            "member".to_string(),
            "add".into(),
            "1".into(),
            addr1.clone(),
        ],
    ] {
        let config = config.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_paxkv"))
                .arg("--config")
                .arg(&config)
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster.wait_voting(&[1]).await;
    match cluster.client_for(1).get(b"k").await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"before"[..])),
        other => panic!("{other:?}"),
    }
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
