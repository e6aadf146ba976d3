//! Membership changes on a running cluster (see `paxos::membership`): growing and shrinking
//! under a checked workload, replacing a dead node by one at a new address, a joining node
//! lost during its add, a driver stopped in the middle of a change, a stale change after the
//! operator moved on, the fast ballot closed across a change of voters, epochs on every
//! message, and a node whose old peers are all gone learning the membership through `--join`.

use paxkv_testkit as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paxkv::messages::MemberChangeRequest;
use paxkv::paxos::membership::MemberState;
use paxkv::paxos::types::{Ballot, Command, NodeId, Outcome};
use paxkv::storage::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use support::{eventually, member_add, Cluster, History, TestCluster};

const HOT: [&[u8]; 3] = [b"hot-0", b"hot-1", b"hot-2"];

/// Clients writing hot keys and keys written once, recorded in `history`, until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    once: tokio::task::JoinHandle<Vec<Vec<u8>>>,
}

impl Workload {
    fn start(cluster: &TestCluster, history: &History, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<_> = cluster.config.addrs();
        let mut workers = Vec::new();
        for client_id in 0..3u64 {
            let client = cluster.client_with(addrs.clone(), false, Duration::from_secs(3));
            let (history, stop) = (history.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed ^ (client_id << 32));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = HOT[rng.random_range(0..HOT.len())];
                    let value = format!("c{client_id}-{i}").into_bytes();
                    let command = support::random_command(&mut rng, value, i);
                    let _ = history.run(client_id, &client, key, command).await;
                }
            }));
        }
        let once = tokio::spawn(support::write_once_keys(
            99,
            cluster.client_with(addrs, false, Duration::from_secs(3)),
            history.clone(),
            "once".into(),
            stop.clone(),
        ));
        Workload {
            stop,
            workers,
            once,
        }
    }

    async fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        self.once.await.unwrap()
    }
}

/// Reads every key back through every node of `members` (into the history), checks the
/// history, and that every member answers the same.
async fn check_everything(
    cluster: &TestCluster,
    history: &History,
    members: &[NodeId],
    keys: &[Vec<u8>],
    name: &str,
) {
    for key in keys {
        let mut answers = Vec::new();
        for &node in members {
            let client = cluster.client_for(node);
            answers.push(
                history
                    .run(1_000 + node as u64, &client, key, Command::Get)
                    .await
                    .expect("a final read"),
            );
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{key:?}: members {members:?} answer {answers:?}"
        );
    }
    let ok = history
        .operations()
        .iter()
        .filter(|o| o.output.is_some())
        .count();
    assert!(ok > 50, "only {ok} operations succeeded");
    history.assert_linearizable(name);
}

fn all_keys(once: &[Vec<u8>]) -> Vec<Vec<u8>> {
    HOT.iter()
        .map(|k| k.to_vec())
        .chain(once.iter().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_3_to_5_to_7_and_shrink_7_to_5_to_3_under_a_checked_workload() {
    let mut cluster = TestCluster::start_n(3, |c| {
        c.paxos.request_timeout_ms = 2_000;
        c.paxos.sync_interval_ms = 2_000;
    });
    let history = History::default();
    let workload = Workload::start(&cluster, &history, 7);
    tokio::time::sleep(Duration::from_millis(300)).await; // some writes before the first change
    for id in 4..=7 {
        cluster.start_new_node(id);
        let m = cluster
            .change_until_done(
                &[1, 2, 3],
                member_add(&cluster, id),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(m.voters().len(), id as usize, "{m:?}");
        cluster.wait_voting(&[id]).await;
    }
    // Shrink, removing two of the first nodes too; each change through a node that stays.
    for id in [1, 6, 2, 7] {
        let m = cluster
            .change_until_done(
                &[3, 4, 5],
                MemberChangeRequest::Remove { id },
                Duration::from_secs(60),
            )
            .await;
        assert!(m.member(id).is_none(), "{m:?}");
    }
    let once = workload.finish().await;
    let members = [3, 4, 5];
    for &node in &members {
        let m = cluster.membership(node).await;
        assert_eq!(m.voters(), members.to_vec());
        assert!(m.members.iter().all(|x| x.state == MemberState::Voting));
    }
    for id in [1, 2, 6, 7] {
        // (A removed node learns it from the last step's install, or from its next fetch of
        // the membership; every member refuses its frames meanwhile.)
        let probe = cluster.client_for(id);
        eventually(
            &format!("removed node {id} stops voting"),
            Duration::from_secs(15),
            || async { matches!(probe.status(0).await, Ok(s) if !s.voting) },
        )
        .await;
    }
    println!("keys written once: {}", once.len());
    assert!(!once.is_empty());
    check_everything(
        &cluster,
        &history,
        &members,
        &all_keys(&once),
        "grow-shrink",
    )
    .await;
}

/// The records of `keys` on a stopped node's store: every key there, at a classic ballot.
fn assert_store_holds(cluster: &TestCluster, id: NodeId, keys: &[Vec<u8>]) {
    let store = Store::open(&cluster.data_dir(id), 256 << 20, id).unwrap();
    for key in keys {
        let record = store
            .load(key)
            .unwrap()
            .unwrap_or_else(|| panic!("node {id} has no record of {key:?}"));
        assert!(
            record.accepted > Ballot::FAST,
            "node {id}: {key:?} accepted at {}",
            record.accepted
        );
        assert!(
            record.state.value.is_some(),
            "node {id}: {key:?} has no value"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_a_new_one_at_a_new_address_that_holds_every_key() {
    let mut cluster = TestCluster::start_with(|_| {});
    let client = cluster.client();
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
    for key in &keys {
        client.put(key, b"v").await.unwrap();
    }
    cluster.stop(3).await; // dead
    let addr = cluster.start_new_node(6);
    assert_ne!(addr, cluster.addr(3));
    cluster
        .change_until_done(&[1, 2], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    let m = cluster
        .change_until_done(
            &[1, 2],
            MemberChangeRequest::Remove { id: 3 },
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(m.voters(), vec![1, 2, 4, 5, 6]);
    // The new node holds every key written before it joined (the rescan waited for it).
    cluster.stop(6).await;
    assert_store_holds(&cluster, 6, &keys);
    cluster.restart(6);
    cluster.wait_voting(&[6]).await;
    // Two of the remaining original nodes down: node 6 is needed for a quorum.
    cluster.stop(1).await;
    cluster.stop(2).await;
    let client = cluster.client_with(
        vec![cluster.addr(4), cluster.addr(5), cluster.addr(6)],
        false,
        Duration::from_secs(10),
    );
    for key in keys.iter().take(20) {
        match client.get(key).await.unwrap() {
            Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"v"[..])),
            other => panic!("{other:?}"),
        }
    }
    client.put(b"after", b"x").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_driver_stops_midway_is_completed_by_a_rerun_elsewhere() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    let client = cluster.client();
    for i in 0..300 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    cluster.start_new_node(6);
    let request = member_add(&cluster, 6);
    let driver = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(60));
    let change = tokio::spawn(async move {
        driver
            .request(0, paxkv::messages::RequestBody::MemberChange(request))
            .await
    });
    // Stop the driver as soon as the change is under way (a step written), before it ends.
    support::wait_for_a_change_under_way(&cluster, 2, Duration::from_secs(20)).await;
    cluster.stop(1).await;
    assert!(
        change.await.unwrap().is_err(),
        "the stopped driver cannot answer ok"
    );
    // A second, different change is refused while this one is in progress.
    let other = cluster
        .change(2, MemberChangeRequest::Remove { id: 5 })
        .await;
    assert!(
        matches!(&other, Err(e) if e.message().contains("in progress")),
        "{other:?}"
    );
    let m = cluster
        .change_until_done(&[2, 3], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    assert_eq!(m.voters(), vec![1, 2, 3, 4, 5, 6]);
    assert!(m.phase.is_none());
    cluster.restart(1);
    cluster.wait_voting(&[1, 6]).await;
}

/// Why a change first settles the keys held at the fast ballot under the *old* voters (the
/// close-fast step of `paxos::membership`): with four voters a state is chosen at the fast
/// ballot by three of them (here v on 1, 2, 3, while 4 holds another state w). Counted
/// against the three voters left after removing node 1, the two states look alike (one vote
/// each among {3, 4}, node 2 down) and a classic round may pick w. Settled first, under the
/// four, v is carried forward. (Mutant `close-fast-settles-nothing` fails this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_chosen_at_the_fast_ballot_survives_a_change_of_the_voters_that_would_miscount_it()
{
    use paxkv::messages::{FaultPlan, LinkFaults};
    let mut cluster = TestCluster::start_n(4, |c| {
        c.paxos.settle_fast_writes = false;
        c.paxos.sync_interval_ms = 0;
        c.paxos.request_timeout_ms = 1_000;
    });
    let cut = |to: &[NodeId]| {
        let mut plan = FaultPlan::default();
        for &n in to {
            plan.links.insert(
                n,
                LinkFaults {
                    cut: true,
                    ..LinkFaults::default()
                },
            );
        }
        plan
    };
    // v through node 1, which does not reach node 4: chosen at the fast ballot by 1, 2, 3.
    cluster.node(1).set_faults(cut(&[4]));
    let put = cluster.client_for(1).put(b"split", b"v").await.unwrap();
    assert_eq!(put, Outcome::Put { version: 1 });
    cluster.node(1).set_faults(FaultPlan::default());
    // w through node 4, which reaches nobody: only node 4's acceptor takes it.
    cluster.node(4).set_faults(cut(&[1, 2, 3]));
    let short = cluster.client_with(vec![cluster.addr(4)], true, Duration::from_millis(800));
    assert!(short.put(b"split", b"w").await.is_err());
    cluster.node(4).set_faults(FaultPlan::default());
    // Node 2 down; remove node 1 through node 3.
    cluster.stop(2).await;
    cluster
        .change_until_done(
            &[3],
            MemberChangeRequest::Remove { id: 1 },
            Duration::from_secs(60),
        )
        .await;
    match cluster.client_for(3).get(b"split").await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"v"[..])),
        other => panic!("{other:?}"),
    }
    cluster.restart(2);
    cluster.wait_voting(&[2]).await;
    match cluster.client_for(2).get(b"split").await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"v"[..])),
        other => panic!("{other:?}"),
    }
}

/// An acceptor answers only requests of its own epoch and cluster: a well-formed Prepare at
/// an older epoch (a node that missed a change, or a delayed message) promises nothing, is
/// answered `Stale` and counted; one of the current epoch from another cluster identity (a
/// node bootstrapped from another config, at an address of this cluster's) promises nothing
/// and is counted; at the current epoch and cluster the same Prepare is promised; a Read of the
/// older epoch is refused too. (Mutants `acceptor-answers-older-epochs`,
/// `foreign-frames-taken` and `durable-read-ignores-epoch` fail this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_of_an_older_epoch_or_another_cluster_promises_nothing() {
    use paxkv::actors::messages::InspectAcceptor;
    use paxkv::messages::{Envelope, Frame, PeerMessage};
    use std::io::Write;
    let cluster = TestCluster::start_with(|_| {});
    cluster.client_for(1).put(b"k", b"v").await.unwrap();
    let m = cluster.membership(1).await;
    let epoch = m.epoch;
    assert!(epoch > 1, "stores recorded: epoch {epoch}");
    let promised = || async {
        cluster
            .node(1)
            .supervisor()
            .send(InspectAcceptor { key: b"k".to_vec() })
            .await
            .unwrap()
            .map(|r| r.promised)
    };
    let prepare = |epoch, cluster, round| {
        paxkv::frame::encode(&Frame::Peer(Envelope {
            from: 2,
            proposer: 7,
            epoch,
            cluster,
            key: b"k".to_vec(),
            body: PeerMessage::Prepare {
                ballot: Ballot::new(round, 2),
            },
        }))
    };
    let before = cluster.status(1).await;
    let mut raw = std::net::TcpStream::connect(cluster.addr(1)).unwrap();
    raw.write_all(&prepare(epoch - 1, m.cluster, 1_000))
        .unwrap();
    raw.write_all(&prepare(epoch, m.cluster ^ 1, 1_500))
        .unwrap();
    let status = cluster.client_for(1);
    eventually(
        "the stale and the foreign Prepare counted",
        Duration::from_secs(5),
        || async {
            matches!(status.status(0).await, Ok(s) if s.stale_refused > before.stale_refused
                && s.foreign_frames > before.foreign_frames)
        },
    )
    .await;
    assert!(promised().await.is_some_and(|p| p < Ballot::new(1_000, 2)));
    raw.write_all(&prepare(epoch, m.cluster, 2_000)).unwrap();
    eventually(
        "the current Prepare promised",
        Duration::from_secs(5),
        || async { promised().await == Some(Ballot::new(2_000, 2)) },
    )
    .await;
    // A read of the older epoch, for the key whose acceptor is now live and has published
    // its durable record: refused as well, not answered from that record (`actors::routes`,
    // mutant `durable-read-ignores-epoch`).
    let before = cluster.status(1).await;
    let read = paxkv::frame::encode(&Frame::Peer(Envelope {
        from: 2,
        proposer: 7,
        epoch: epoch - 1,
        cluster: m.cluster,
        key: b"k".to_vec(),
        body: PeerMessage::Read { read: 1 },
    }));
    raw.write_all(&read).unwrap();
    eventually(
        "the stale Read refused and counted",
        Duration::from_secs(5),
        || async {
            matches!(status.status(0).await, Ok(s) if s.stale_refused > before.stale_refused)
        },
    )
    .await;
}

/// A key chosen on a bare majority {1, 2, 3}, one of whose holders (1) then loses its disk
/// and is replaced by node 6: the rescan, sourced from intact stores only, puts the key on
/// node 6, and the majority {4, 5, 6} without the two other holders still reads it. (With
/// 2 and 3 down the change cannot even start: the register needs a quorum of voting nodes.)
/// The review scenario this guards (install replies of 2 and 3 delayed, so that the refused
/// node 1 completes a barrier with 4 and 5) needs delays on the membership calls, which the
/// fault plan does not inject: that rule (`NodeReply::Installed::intact`) has no mutant test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_a_bare_majority_survives_the_replacement_of_a_wiped_holder() {
    use paxkv::messages::{FaultPlan, LinkFaults};
    let mut cluster = TestCluster::start_with(|c| {
        c.paxos.sync_interval_ms = 0;
        c.paxos.request_timeout_ms = 1_000;
    });
    let mut plan = FaultPlan::default();
    for n in [4, 5] {
        plan.links.insert(
            n,
            LinkFaults {
                cut: true,
                ..LinkFaults::default()
            },
        );
    }
    cluster.node(1).set_faults(plan);
    cluster.client_for(1).put(b"K", b"chosen").await.unwrap();
    cluster.node(1).set_faults(FaultPlan::default());
    cluster.stop(1).await;
    cluster.wipe(1);
    cluster.restart(1);
    cluster.wait_store_refused(1).await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    cluster.start_new_node(6);
    let early = cluster.change(4, member_add(&cluster, 6)).await;
    assert!(early.is_err(), "no quorum of voting nodes, yet: {early:?}");
    cluster.restart(2);
    cluster.restart(3);
    cluster.wait_voting(&[2, 3]).await;
    cluster
        .change_until_done(&[4, 5], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    cluster
        .change_until_done(
            &[4, 5],
            MemberChangeRequest::Remove { id: 1 },
            Duration::from_secs(60),
        )
        .await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    match cluster.client_for(4).get(b"K").await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"chosen"[..])),
        other => panic!("{other:?}"),
    }
}

/// Issue 17, item 2: a joining node lost during the Rescan of its add (where every settle
/// waits for its `Accepted`) must not wedge the membership: `member remove` of it completes
/// (`Membership::work_before_next` skips the add's rescan), the cluster is back to stable with
/// the fast ballot open, and later changes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_lost_during_its_rescan_is_given_up_by_removing_it() {
    let mut cluster = TestCluster::start();
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
    }
    let before_add = cluster.membership(1).await.epoch;
    cluster.start_new_node(6);
    // Node 6's Paxos replies never arrive: the add's rescan waits for them.
    cluster.node(6).set_faults(support::outgoing_paxos_cut());
    let driver = {
        let client = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(120));
        let change = member_add(&cluster, 6);
        tokio::spawn(async move {
            client
                .request(0, paxkv::messages::RequestBody::MemberChange(change))
                .await
        })
    };
    eventually(
        "the add of node 6 at its Rescan",
        Duration::from_secs(30),
        || async {
            let m = cluster.membership(1).await;
            m.phase == Some(paxkv::paxos::membership::Phase::Rescan)
                && m.member(6).is_some_and(|x| x.state == MemberState::Joining)
        },
    )
    .await;
    cluster.stop(6).await;
    // A give-up fenced at an epoch from before the add (a stale request) does nothing.
    let stale = cluster
        .client_with(vec![cluster.addr(2)], true, Duration::from_secs(60))
        .request(
            0,
            paxkv::messages::RequestBody::MemberChangeFenced {
                change: MemberChangeRequest::Remove { id: 6 },
                epoch: before_add,
            },
        )
        .await;
    assert!(
        matches!(&stale, Err(e) if e.message().contains("membership changed since")),
        "{stale:?}"
    );
    let m = cluster
        .change_until_done(
            &[2, 3],
            MemberChangeRequest::Remove { id: 6 },
            Duration::from_secs(60),
        )
        .await;
    assert_eq!((m.phase, m.voters()), (None, vec![1, 2, 3, 4, 5]), "{m:?}");
    // The add's driver gives up (it sees another change) instead of resuming it.
    let answer = tokio::time::timeout(Duration::from_secs(120), driver)
        .await
        .expect("the add's driver answers")
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    assert_eq!(cluster.membership(2).await.voters(), vec![1, 2, 3, 4, 5]);
    // Stable again: a later change goes through, and every key reads back.
    cluster
        .change_until_done(
            &[2, 3],
            MemberChangeRequest::Remove { id: 5 },
            Duration::from_secs(60),
        )
        .await;
    for i in 0..50 {
        match client.get(format!("k{i}").as_bytes()).await.unwrap() {
            Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"v"[..])),
            other => panic!("{other:?}"),
        }
    }
}

/// Issue 17, item 5: a change never begins again on its own. A `remove 6` fenced at the
/// epoch its client read, delivered after the operator removed node 6 and added it back
/// (as a request left behind in a paused node is), does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_member_change_does_nothing_after_the_operator_moved_on() {
    let mut cluster = TestCluster::start();
    cluster.start_new_node(6);
    cluster
        .change_until_done(&[1, 2], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    let seen = cluster.membership(1).await.epoch;
    cluster
        .change_until_done(
            &[2],
            MemberChangeRequest::Remove { id: 6 },
            Duration::from_secs(60),
        )
        .await;
    // Added back on an empty directory (a store with records is refused).
    cluster.stop(6).await;
    cluster.wipe(6);
    cluster.restart(6);
    cluster
        .change_until_done(&[2], member_add(&cluster, 6), Duration::from_secs(60))
        .await;
    let stale = paxkv::messages::RequestBody::MemberChangeFenced {
        change: MemberChangeRequest::Remove { id: 6 },
        epoch: seen,
    };
    let answer = cluster
        .client_with(vec![cluster.addr(1)], true, Duration::from_secs(60))
        .request(0, stale)
        .await;
    match answer {
        Err(e) => assert!(
            e.is_bad_input() && e.message().contains("membership changed"),
            "{e}"
        ),
        Ok(other) => panic!("the stale remove ran: {other:?}"),
    }
    let m = cluster.membership(1).await;
    assert!(m.is_voter(6) && m.phase.is_none(), "{m:?}");
    // Fenced at the current epoch, the same request is carried out.
    let current = paxkv::messages::RequestBody::MemberChangeFenced {
        change: MemberChangeRequest::Remove { id: 6 },
        epoch: m.epoch,
    };
    let done = cluster
        .client_with(vec![cluster.addr(1)], true, Duration::from_secs(60))
        .request(0, current)
        .await
        .unwrap();
    assert!(
        matches!(done, paxkv::messages::Reply::MemberChanged(ref m) if m.member(6).is_none()),
        "{done:?}"
    );
}

/// Issue 17, item 5: a node restarted after every peer it knew was removed and stopped
/// learns the new membership from its `--join` addresses (they were ignored once a
/// membership was on disk), and votes in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_old_peers_are_all_gone_learns_the_membership_through_join() {
    let mut cluster = TestCluster::start_n(3, |_| {});
    cluster.stop(3).await;
    for id in [4, 5] {
        cluster.start_new_node(id);
        cluster
            .change_until_done(&[1, 2], member_add(&cluster, id), Duration::from_secs(60))
            .await;
    }
    for id in [1, 2] {
        cluster
            .change_until_done(
                &[4, 5],
                MemberChangeRequest::Remove { id },
                Duration::from_secs(60),
            )
            .await;
        cluster.stop(id).await;
    }
    let epoch = cluster.membership(4).await.epoch;
    cluster.restart(3);
    eventually(
        "node 3 learns the membership",
        Duration::from_secs(30),
        || async { cluster.membership(3).await.epoch >= epoch },
    )
    .await;
    cluster.wait_voting(&[3]).await;
    cluster.client_for(3).put(b"k", b"v").await.unwrap();
}
