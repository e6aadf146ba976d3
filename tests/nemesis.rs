//! In-process nemesis: a concurrent workload on a few hot keys, many cooler ones, and keys
//! written once (their only write goes at the fast ballot), while a seeded schedule cuts links
//! (majority/minority, a bridge node, one-way), drops, duplicates and delays messages, stops
//! and restarts nodes, and wipes a node's data directory or rolls it back to an older copy
//! (one lost disk at a time; that node votes again before the next). Then everything heals,
//! every key is read back, and the whole history is checked for linearizability (errors
//! recorded exactly: "unavailable" did not take effect, "unknown" may have), every node must
//! agree, and every acknowledged write must be there.
//!
//! `PAXKV_NEMESIS_SEED=<seed>` replays a schedule; `PAXKV_NEMESIS_SECS` (default 12) sets its
//! length, e.g. a soak: `PAXKV_NEMESIS_SECS=600 cargo test --release --test nemesis -- --nocapture`.
//! A failing run leaves its history in `$TMPDIR/paxkv-nemesis-<seed>.history.txt`.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::messages::{FaultPlan, LinkFaults};
use paxkv::paxos::types::{NodeId, Outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{lose_disk, History, TestCluster};

const NODES: [NodeId; 5] = [1, 2, 3, 4, 5];
const KEYS: [&[u8]; 3] = [b"hot-0", b"hot-1", b"hot-2"];

fn cut() -> LinkFaults {
    LinkFaults {
        cut: true,
        ..LinkFaults::default()
    }
}

/// Each node cuts its links to every node outside its own group (nodes in no group keep all
/// their links: that is how a bridge node is made).
fn partition(cluster: &TestCluster, groups: &[&[NodeId]]) {
    for group in groups {
        for &node in *group {
            let mut plan = FaultPlan::default();
            for other in groups.iter().filter(|g| !g.contains(&node)) {
                for &peer in *other {
                    plan.links.insert(peer, cut());
                }
            }
            if cluster.is_running(node) {
                cluster.node(node).set_faults(plan);
            }
        }
    }
}

fn heal(cluster: &TestCluster) {
    for node in NODES.into_iter().filter(|n| cluster.is_running(*n)) {
        cluster.node(node).set_faults(FaultPlan::default());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    MajorityMinority,
    Bridge,
    OneWay,
    MessageChaos,
    CrashOne,
    CrashTwo,
    /// Stop a node, remove its data directory, restart it.
    WipeOne,
    /// Stop a node, put back a copy of its data directory taken at an earlier stop.
    RollbackOne,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_under_partitions_message_faults_and_crashes() {
    let seed: u64 = std::env::var("PAXKV_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let secs: u64 = std::env::var("PAXKV_NEMESIS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    println!("nemesis seed: {seed} ({secs}s)");
    let mut cluster = TestCluster::start_with(|c| {
        c.paxos.request_timeout_ms = 1_000;
        c.paxos.phase_timeout_ms = 200;
        c.paxos.sync_interval_ms = 1_000;
    });
    let history = History::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for client_id in 0..6u64 {
        let client = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(3));
        let (history, stop) = (history.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ (client_id << 32));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Mostly the hot keys; sometimes one of many cooler keys, so that first writes
                // (the fast ballot) happen under faults too.
                let cool;
                let key: &[u8] = if rng.random_bool(0.3) {
                    cool = format!("cool-{}", rng.random_range(0..100));
                    cool.as_bytes()
                } else {
                    KEYS[rng.random_range(0..KEYS.len())]
                };
                let value = format!("c{client_id}-{i}").into_bytes();
                let command = support::random_command(&mut rng, value, i);
                let _ = history.run(client_id, &client, key, command).await;
            }
        }));
    }

    let once_stop = Arc::new(AtomicBool::new(false));
    let once_writer = tokio::spawn(support::write_once_keys(
        99,
        cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(3)),
        history.clone(),
        "once".into(),
        once_stop.clone(),
    ));

    let mut rng = SmallRng::seed_from_u64(seed);
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let copies = cluster.dir.path().join("copies");
    let end = Instant::now() + Duration::from_secs(secs);
    // Faults are dealt from a shuffled deck of every kind, so a short run sees each one.
    let mut deck: Vec<Fault> = Vec::new();
    while Instant::now() < end {
        if deck.is_empty() {
            deck = vec![
                Fault::MajorityMinority,
                Fault::Bridge,
                Fault::OneWay,
                Fault::MessageChaos,
                Fault::CrashOne,
                Fault::CrashTwo,
                Fault::WipeOne,
                Fault::RollbackOne,
            ];
            for i in (1..deck.len()).rev() {
                deck.swap(i, rng.random_range(0..=i));
            }
        }
        let fault = deck.pop().expect("refilled");
        *injected.entry(fault).or_default() += 1;
        let mut order = NODES.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut stopped = Vec::new();
        match fault {
            Fault::MajorityMinority => partition(&cluster, &[&order[..3], &order[3..]]),
            Fault::Bridge => {
                // order[2] hears both sides; the sides do not hear each other
                partition(&cluster, &[&order[..2], &order[3..]]);
            }
            Fault::OneWay => {
                let mut plan = FaultPlan::default();
                plan.links.insert(order[1], cut());
                cluster.node(order[0]).set_faults(plan);
            }
            Fault::MessageChaos => {
                for node in NODES {
                    cluster.node(node).set_faults(FaultPlan {
                        default: LinkFaults {
                            drop_permille: 100,
                            duplicate_permille: 100,
                            delay_min_ms: 0,
                            delay_max_ms: 30,
                            ..LinkFaults::default()
                        },
                        ..FaultPlan::default()
                    });
                }
            }
            Fault::CrashOne | Fault::WipeOne | Fault::RollbackOne => stopped.push(order[0]),
            Fault::CrashTwo => stopped.extend_from_slice(&order[..2]),
        }
        for &node in &stopped {
            cluster.stop(node);
        }
        let copy = copies.join(format!("node-{}", order[0]));
        match fault {
            // a copy of a stopped node's data, for a later rollback
            Fault::CrashOne => {
                lose_disk(&copy, Some(&cluster.node_dir(order[0])));
            }
            Fault::WipeOne => lose_disk(&cluster.node_dir(order[0]), None),
            Fault::RollbackOne => {
                if !copy.exists() {
                    // no copy of this node yet: take one, let writes happen, then stop again
                    lose_disk(&copy, Some(&cluster.node_dir(order[0])));
                    cluster.restart(order[0]);
                    cluster.wait_repaired(&order[..1]).await;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_000))).await;
                    cluster.stop(order[0]);
                }
                lose_disk(&cluster.node_dir(order[0]), Some(&copy));
            }
            _ => {}
        }
        // the fault's duration (not a wait for a condition)
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        for &node in &stopped {
            cluster.restart(node);
        }
        heal(&cluster);
        if matches!(fault, Fault::WipeOne | Fault::RollbackOne) {
            // one lost disk at a time: it rebuilds and is repaired before the next fault
            cluster.wait_repaired(&stopped).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    once_stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let once_keys = once_writer.await.unwrap();
    cluster.wait_voting(&NODES).await;
    println!("faults injected: {injected:?}");

    // Every key read back, through every node in turn (part of the checked history).
    let mut all_keys: Vec<Vec<u8>> = KEYS.iter().map(|k| k.to_vec()).collect();
    all_keys.extend((0..100).map(|i| format!("cool-{i}").into_bytes()));
    all_keys.extend(once_keys.iter().cloned());
    for (i, key) in all_keys.iter().enumerate() {
        let client = cluster.client_for(NODES[i % NODES.len()]);
        history
            .run(1_000, &client, key, paxkv::paxos::types::Command::Get)
            .await
            .expect("a final read");
    }
    println!("keys written once: {}", once_keys.len());

    let ops = history.operations();
    let ok = ops.iter().filter(|o| o.output.is_some()).count();
    println!(
        "operations: {} ({ok} ok, {} unknown)",
        ops.len(),
        ops.len() - ok
    );
    assert!(ok > 100, "only {ok} operations succeeded");
    history.assert_linearizable(&format!("nemesis-{seed}"));

    // Every node agrees, and no acknowledged write is missing.
    for key in KEYS {
        let highest_acked = ops
            .iter()
            .filter(|o| o.key == key)
            .filter_map(|o| match o.output.as_ref()? {
                support::linearizability::Output::Put { version } => Some(*version),
                support::linearizability::Output::Delete { version, .. } => Some(*version),
                support::linearizability::Output::Cas { version, .. } => Some(*version),
                support::linearizability::Output::Get { version, .. } => Some(*version),
            })
            .max()
            .unwrap_or(0);
        let first = cluster.client_for(1).get(key).await.unwrap();
        for node in 2..=5 {
            assert_eq!(
                cluster.client_for(node).get(key).await.unwrap(),
                first,
                "node {node}"
            );
        }
        let Outcome::Get { version, .. } = first else {
            unreachable!()
        };
        assert!(
            version >= highest_acked,
            "{key:?}: version {version} < {highest_acked}"
        );
    }
}
