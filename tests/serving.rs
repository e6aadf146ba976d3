//! Five nodes in one process serve reads and writes: every node answers the same, concurrent
//! writers are linearizable, two nodes down the cluster serves and three down every request
//! is unavailable within its deadline, a restarted node and a crashed per-key actor answer from
//! their durable state, a retried write takes effect once, a full store loses nothing, idle
//! per-key actors are retired (never two live copies of one acceptor), an unwritable data
//! directory is refused at start, and a node that stops answering is skipped by a client
//! until it answers again.

use paxkv_testkit as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paxkv::actors::messages::{CrashActor, InspectAcceptor, Role};
use paxkv::client::{Client, ClientOptions};
use paxkv::frame;
use paxkv::messages::{Frame, RequestBody};
use paxkv::paxos::types::{key_hash, Command, Outcome};
use paxkv::Error;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use support::{eventually, got, Cluster, History, TestCluster};

#[tokio::test]
async fn a_put_on_one_node_is_read_with_the_same_value_and_version_on_every_other() {
    let cluster = TestCluster::start();
    let put = cluster.client_for(1).put(b"k", b"v1").await.unwrap();
    assert_eq!(put, Outcome::Put { version: 1 });
    for id in 2..=5 {
        assert_eq!(
            cluster.client_for(id).get(b"k").await.unwrap(),
            got("v1", 1),
            "node {id}"
        );
    }
    // and a key never written has version 0 and no value, everywhere
    for id in 1..=5 {
        assert_eq!(
            cluster.client_for(id).get(b"never").await.unwrap(),
            Outcome::Get {
                value: None,
                version: 0
            }
        );
    }
}

#[tokio::test]
async fn concurrent_writers_through_all_five_nodes_agree_and_are_linearizable() {
    let cluster = TestCluster::start();
    let history = History::default();
    let keys: [&[u8]; 2] = [b"hot-a", b"hot-b"];
    let mut tasks = Vec::new();
    for client_id in 0..10u64 {
        let client = cluster.client_for(client_id as u32 % 5 + 1);
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(client_id);
            for i in 0..40u64 {
                let key = keys[rng.random_range(0..keys.len())];
                let value = format!("c{client_id}-{i}").into_bytes();
                let command = support::random_command(&mut rng, value, 6);
                // Under this much contention a write may end "outcome unknown" (a proposer
                // starved for longer than the key's de-duplication window refuses rather than
                // risk applying a retry twice); the checker allows for unknown outcomes.
                let _ = history.run(client_id, &client, key, command).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ops = history.operations();
    assert_eq!(ops.len(), 400);
    let ok = ops.iter().filter(|o| o.output.is_some()).count();
    assert!(ok >= 380, "only {ok} of 400 operations succeeded");
    history.assert_linearizable("concurrent-writers");
    // every node now reads the same value and version
    for key in keys {
        let first = cluster.client_for(1).get(key).await.unwrap();
        for id in 2..=5 {
            assert_eq!(cluster.client_for(id).get(key).await.unwrap(), first);
        }
    }
}

#[tokio::test]
async fn two_nodes_down_the_cluster_serves_and_three_down_every_request_is_unavailable_in_time() {
    let mut cluster = TestCluster::start_with(|c| c.paxos.request_timeout_ms = 1_000);
    let client = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(3));
    client.put(b"k", b"v1").await.unwrap();
    cluster.stop(4).await;
    cluster.stop(5).await;
    assert_eq!(
        client.put(b"k", b"v2").await.unwrap(),
        Outcome::Put { version: 2 }
    );
    assert_eq!(client.get(b"k").await.unwrap(), got("v2", 2));
    assert!(matches!(
        client.cas(b"k", b"v3", 2).await.unwrap(),
        Outcome::Cas { swapped: true, .. }
    ));

    cluster.stop(3).await;
    let requests: Vec<(&str, Command)> = vec![
        ("get", Command::Get),
        (
            "put",
            Command::Put {
                value: b"x".to_vec(),
            },
        ),
        ("delete", Command::Delete),
        (
            "cas",
            Command::Cas {
                expect: 3,
                value: b"y".to_vec(),
            },
        ),
    ];
    for (name, command) in requests {
        let started = Instant::now();
        let result = client.execute(b"k", command).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::Unavailable(_) | Error::Unknown(_))),
            "{name} without a majority answered {result:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{name} took {took:?}, past its deadline"
        );
    }
    // the two survivors never claimed anything: once a majority is back, the last
    // acknowledged state is what everyone reads
    cluster.restart(3);
    cluster.restart(4);
    cluster.wait_voting(&[3, 4]).await;
    let value = cluster.client_for(1).get(b"k").await.unwrap();
    assert!(
        matches!(&value, Outcome::Get { version, .. } if *version >= 3),
        "lost an acknowledged write: {value:?}"
    );
}

/// Writes land only on {1,2,3} (4 and 5 are down). Node 1's data directory, read directly
/// after it stops, holds every one of them; restarted on it, node 1 serves them all, and so
/// does the majority {1,4,5} once 2 and 3 are gone (4 and 5 missed every write).
#[tokio::test]
async fn a_node_restarted_on_its_data_directory_serves_every_earlier_write() {
    let mut cluster = TestCluster::start();
    cluster.stop(4).await;
    cluster.stop(5).await;
    let client = cluster.client();
    for i in 0..100 {
        let key = format!("key-{i}");
        client
            .put(key.as_bytes(), format!("value-{i}").as_bytes())
            .await
            .unwrap();
    }
    cluster.stop(1).await;
    {
        let store = paxkv::storage::Store::open(&cluster.data_dir(1), 256 << 20, 1).unwrap();
        for i in 0..100 {
            let record = store.load(format!("key-{i}").as_bytes()).unwrap();
            let state = record.expect("a record on node 1's disk").state;
            assert_eq!(
                state.value,
                Some(format!("value-{i}").into_bytes()),
                "key-{i}"
            );
        }
    }
    // A restarted node votes only once it has merged the records of three other nodes (see
    // actors::anti_entropy), so 4 and 5 come back with it.
    cluster.restart(1);
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[1, 4, 5]).await;
    let node1 = cluster.client_for(1);
    for i in 0..100 {
        let key = format!("key-{i}");
        assert_eq!(
            node1.get(key.as_bytes()).await.unwrap(),
            got(&format!("value-{i}"), 1)
        );
    }
    cluster.stop(2).await;
    cluster.stop(3).await;
    let client = cluster.client();
    for i in 0..100 {
        let key = format!("key-{i}");
        assert_eq!(
            client.get(key.as_bytes()).await.unwrap(),
            got(&format!("value-{i}"), 1),
            "{key}"
        );
    }
}

/// The key's acceptor actor on node 1 crashes; the supervisor restarts it, and the new
/// incarnation's record is the durable one. The proposer crashes too, and the next write
/// through node 1 still lands once.
#[tokio::test]
async fn a_crashed_per_key_actor_is_restarted_and_answers_from_its_durable_state() {
    let cluster = TestCluster::start();
    let node1 = cluster.client_for(1);
    node1.put(b"k", b"durable").await.unwrap();
    let supervisor = cluster.node(1).supervisor();
    let before = supervisor
        .send(InspectAcceptor { key: b"k".to_vec() })
        .await
        .unwrap()
        .expect("node 1 has a live acceptor for k");
    assert_eq!(before.state.value.as_deref(), Some(&b"durable"[..]));

    let crash = CrashActor {
        key: b"k".to_vec(),
        role: Role::Acceptor,
    };
    assert!(
        supervisor.send(crash).await.unwrap(),
        "node 1 had no acceptor for k"
    );
    eventually(
        "node 1 restarts the crashed acceptor",
        Duration::from_secs(5),
        || async { cluster.status(1).await.acceptor_restarts == 1 },
    )
    .await;
    let inspect = || async {
        supervisor
            .send(InspectAcceptor { key: b"k".to_vec() })
            .await
            .unwrap()
    };
    eventually(
        "the new acceptor has loaded its record",
        Duration::from_secs(5),
        || async { inspect().await.is_some() },
    )
    .await;
    let after = inspect().await;
    assert_eq!(
        after.unwrap(),
        before,
        "the restarted acceptor lost its durable record"
    );

    let crash = CrashActor {
        key: b"k".to_vec(),
        role: Role::Proposer,
    };
    assert!(supervisor.send(crash).await.unwrap());
    eventually(
        "node 1 restarts the crashed proposer",
        Duration::from_secs(5),
        || async { cluster.status(1).await.proposer_restarts == 1 },
    )
    .await;
    assert_eq!(
        node1.put(b"k", b"again").await.unwrap(),
        Outcome::Put { version: 2 }
    );
    assert_eq!(
        cluster.client_for(4).get(b"k").await.unwrap(),
        got("again", 2)
    );
}

#[tokio::test]
async fn idle_per_key_actors_are_stopped_and_live_keys_stay_under_the_limit() {
    let cluster = TestCluster::start_with(|c| {
        c.paxos.request_timeout_ms = 1_000;
        c.limits.idle_timeout_ms = 1_500;
        c.limits.max_live_keys = 8;
    });
    let client = cluster.client();
    for i in 0..40 {
        client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        for id in 1..=5 {
            let s = cluster.status(id).await;
            assert!(
                s.live_acceptors <= 8 && s.live_proposers <= 8,
                "node {id}: {s:?}"
            );
        }
    }
    eventually(
        "every per-key actor retired",
        Duration::from_secs(10),
        || async {
            let mut idle = true;
            for id in 1..=5 {
                let s = cluster.status(id).await;
                idle &= s.live_acceptors == 0 && s.live_proposers == 0;
            }
            idle
        },
    )
    .await;
    // retired keys come back from disk
    for i in 0..40 {
        assert_eq!(
            client.get(format!("k{i}").as_bytes()).await.unwrap(),
            got("v", 1)
        );
    }
}

#[test]
fn a_node_refuses_an_unwritable_data_directory_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = vec![
        listener.local_addr().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    ];
    let config = std::sync::Arc::new(paxkv::config::Config::local(&addrs));
    let data_dir = file.join("node-1");
    let err = paxkv::node::NodeHandle::start(config, 1, &data_dir, Some(listener))
        .err()
        .expect("an unwritable data dir is refused");
    assert!(err.to_string().contains("data dir"), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// A write whose reply was lost is retried with the same write id, through another node: it
/// answers the first outcome and does not take effect again.
#[tokio::test]
async fn a_retried_write_answers_its_first_outcome_and_takes_effect_once() {
    use paxkv::messages::{Reply, RequestBody};
    use paxkv::paxos::types::RequestId;
    let cluster = TestCluster::start();
    let client = cluster.client();
    client.put(b"k", b"v1").await.unwrap();
    let id = RequestId { client: 42, seq: 1 };
    let body = |maybe_applied| RequestBody::Kv {
        key: b"k".to_vec(),
        command: Command::Put {
            value: b"once".to_vec(),
        },
        write_id: Some(id),
        maybe_applied,
    };
    let first = client.request(0, body(false)).await.unwrap();
    assert_eq!(first, Reply::Kv(Outcome::Put { version: 2 }));
    for node in 1..5 {
        let again = client.request(node, body(true)).await.unwrap();
        assert_eq!(
            again,
            first,
            "the retry through node {} applied again",
            node + 1
        );
    }
    assert_eq!(client.get(b"k").await.unwrap(), got("once", 2));
}

/// Every node's LMDB map fills up (to paxkv the same as a full disk): the write that no longer
/// fits fails with an error that names the cause, no acknowledged write is lost, and every node
/// keeps serving reads.
#[tokio::test]
async fn a_full_store_fails_writes_with_an_error_naming_it_and_loses_nothing() {
    let cluster = TestCluster::start_with(|c| {
        c.storage.map_size_mb = 16;
        c.paxos.request_timeout_ms = 1_000;
    });
    let client = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(3));
    let value = vec![b'v'; 256 * 1024];
    let mut acknowledged = Vec::new();
    let error = loop {
        let key = format!("big-{:03}", acknowledged.len());
        match client.put(key.as_bytes(), &value).await {
            Ok(_) => acknowledged.push(key),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 200, "a 16 MiB map took 50 MiB");
    };
    let why = error.to_string();
    println!("after {} writes: {why}", acknowledged.len());
    assert!(
        why.contains("storage failed on node(s)") && why.contains("MDB_MAP_FULL"),
        "after {} writes: {why}",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
    for id in 1..=5 {
        let node = cluster.client_for(id);
        for key in &acknowledged {
            match node.get(key.as_bytes()).await {
                Ok(Outcome::Get { value: Some(v), .. }) => assert_eq!(v, value, "{key}"),
                other => panic!("node {id}, {key}: {other:?}"),
            }
        }
        assert!(cluster.status(id).await.voting, "node {id}");
    }
}

/// Issue 8, bug 7. A key idle for `idle_timeout_ms` is retired, but its acceptor may still be
/// waiting for a slow commit (here every commit takes 500 ms). A new acceptor for the key
/// must not start before the old one has stopped, or two copies of one acceptor answer, the
/// new one from a record that misses the old one's last promise. Each acceptor counts a
/// second live copy of its key when it starts; every node's count must stay 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_acceptor_is_never_replaced_while_it_still_runs() {
    // Founded without the delay, then every node restarted with it: a first start records
    // each store with a register write, which cannot finish in a 300 ms request when every
    // commit takes 500 ms (it got through only when a retry happened to find the earlier
    // attempt durable: the test failed, now and then, waiting 120 s for the cluster).
    let mut cluster = TestCluster::start_with(|c| {
        c.testing.allow_fault_injection = true;
        c.paxos.request_timeout_ms = 300;
        c.limits.idle_timeout_ms = 400;
    });
    let mut delayed = (*cluster.config).clone();
    delayed.testing.commit_delay_ms = 500;
    let delayed = std::sync::Arc::new(delayed);
    for id in 1..=5 {
        cluster.stop(id).await;
        cluster.restart_with_config(id, delayed.clone());
    }
    cluster.wait_voting(&[1, 2, 3, 4, 5]).await;
    let history = History::default();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let client = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(1));
        let history = history.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker);
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                let key = format!("k{}", rng.random_range(0..8));
                let value = format!("w{worker}-{i}").into_bytes();
                let command = support::random_command(&mut rng, value, 4);
                let _ = history.run(worker, &client, key.as_bytes(), command).await;
                // spread over time: keys go idle and are retired between their messages
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    history.assert_linearizable("retirement");
    for id in 1..=5 {
        let status = cluster.status(id).await;
        assert_eq!(status.duplicate_acceptors, 0, "node {id}: {status:?}");
    }
}

/// A disk whose every commit takes longer than the phase timeout (300 ms against a 200 ms
/// timeout, as a disk slower than 500 ms per commit is against the default) slows writes
/// down but never stops them (`paxos::proposer`, "Paced by its acceptors"). A cluster founded on that disk
/// records its stores (the start that stalled a CI run on 2026-12-07, with 300 ms commits on
/// a loaded machine), then a writer pinned to each node puts one key twice, all at once, and
/// a key of its own: every put is answered ok, and what they wrote reads back. Before, no
/// round on that disk ever ended: a phase gave up before any promise was durable, and its
/// retry queued behind the write it gave up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_slower_than_the_phase_timeout_slows_writes_but_never_stops_them() {
    let cluster = TestCluster::start_n(3, |c| {
        c.testing.allow_fault_injection = true;
        c.testing.commit_delay_ms = 300;
        c.paxos.phase_timeout_ms = 200;
    });
    cluster.wait_bootstrapped(1).await;
    let mut writers = Vec::new();
    for id in 1..=3 {
        let client = cluster.client_with(vec![cluster.addr(id)], true, Duration::from_secs(60));
        writers.push(tokio::spawn(async move {
            for i in 0..2 {
                let value = format!("w{id}-{i}");
                client
                    .put(b"hot", value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("node {id}: put {i} of hot: {e}"));
            }
            client
                .put(format!("own-{id}").as_bytes(), b"once")
                .await
                .unwrap_or_else(|e| panic!("node {id}: its own key: {e}"));
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let reader = cluster.client_with(cluster.config.addrs(), false, Duration::from_secs(60));
    match reader.get(b"hot").await.unwrap() {
        Outcome::Get {
            value: Some(v),
            version: 6,
        } => assert!(v.ends_with(b"-1"), "{}", String::from_utf8_lossy(&v)),
        other => panic!("hot: {other:?}"),
    }
    for id in 1..=3 {
        let key = format!("own-{id}");
        assert_eq!(
            reader.get(key.as_bytes()).await.unwrap(),
            got("once", 1),
            "{key}"
        );
    }
}

/// Once a key's actors are live, its Paxos messages go from the connection (or the node's own
/// outbox) straight to them, and clients' commands from the router straight to its proposer
/// (`actors::routes`): the supervisor sees only what starts an actor. A hundred operations on
/// one key, through every node, reach the supervisors fewer than 50 times in all (through
/// them, each operation would take at least seven: its command, three requests and three
/// replies).
#[tokio::test]
async fn a_live_keys_messages_skip_the_supervisor() {
    use paxkv::actors::messages::CountRelayed;
    let cluster = TestCluster::start();
    let delivered = || async {
        let mut all = 0;
        for id in 1..=5 {
            all += cluster
                .node(id)
                .supervisor()
                .send(CountRelayed)
                .await
                .unwrap();
        }
        all
    };
    let clients: Vec<_> = (1..=5).map(|id| cluster.client_for(id)).collect();
    // Every node's acceptor (and proposer) of the key starts.
    for client in &clients {
        client.put(b"k", b"v0").await.unwrap();
    }
    let before = delivered().await;
    for i in 0..50 {
        let client = &clients[i % 5];
        client.put(b"k", format!("v{i}").as_bytes()).await.unwrap();
        match client.get(b"k").await.unwrap() {
            Outcome::Get { value, .. } => assert_eq!(value, Some(format!("v{i}").into_bytes())),
            other => panic!("{other:?}"),
        }
    }
    let through = delivered().await - before;
    assert!(
        through < 50,
        "{through} messages went through the supervisors"
    );
}

/// A proposer whose round finished in time leaves no timer armed: nothing wakes it later.
/// Before, every round armed one for `read_grace` after it started and left it when it
/// finished, so nearly every get and put woke its proposer once more, for nothing.
///
/// The check waits three times `read_grace` after the gets: it looks for wakeups that must
/// not come, and a timer left armed would have fired by then (it is due `read_grace` after
/// its round began). Rounds slower than `read_grace` (a loaded machine) do wake their
/// proposer, legitimately, so the bound is half the gets, not zero; the old behaviour woke
/// one per get. `read_grace` is 150 ms here, not the default 20 ms, so that a slow machine's
/// rounds stay within it (at 20 ms, half the gets of a loaded debug build could outlast it).
#[tokio::test]
async fn a_round_that_finishes_in_time_leaves_its_proposer_no_timer() {
    const GRACE_MS: u64 = 150;
    let cluster = TestCluster::start_with(|c| c.paxos.read_grace_ms = GRACE_MS);
    let client = cluster.client_for(1);
    let wakeups = || async {
        let mut all = 0;
        for id in 1..=5 {
            all += cluster.status(id).await.proposer_timer_wakeups;
        }
        all
    };
    const GETS: u64 = 100;
    let before = wakeups().await;
    for i in 0..GETS {
        // Distinct keys: every get is its key's only round, on a proposer of its own.
        client.get(format!("quiet-{i}").as_bytes()).await.unwrap();
    }
    tokio::time::sleep(3 * Duration::from_millis(GRACE_MS)).await;
    let woken = wakeups().await - before;
    assert!(
        woken < GETS / 2,
        "{woken} proposer timer wakeups for {GETS} gets that each finished in one round"
    );
}

/// A node that stops answering (paused: its connections stay open and nothing comes back)
/// is noticed long before the attempt timeout (its connection pings it and gives up), and
/// costs a client that once, not once per second for as long as it is gone: the client skips
/// it until it answers a ping again, then sends it its keys again.
#[tokio::test]
async fn a_node_that_stops_answering_is_skipped_until_it_answers_a_ping_again() {
    let cluster = TestCluster::start();
    let mut addrs = cluster.config.addrs();
    let gate = Gate::open(addrs[4]).await;
    addrs[4] = gate.addr;
    let client = Client::new(
        addrs,
        ClientOptions {
            op_timeout: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        },
    );
    // Keys whose home is the gated node (the client's fifth address).
    let keys: Vec<Vec<u8>> = (0..)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| key_hash(k) % 5 == 4)
        .take(20)
        .collect();
    client.put(&keys[0], b"v").await.unwrap();
    assert_eq!(gate.requests(), 1, "the key's home node took its put");

    gate.pause();
    // The first put finds the node silent, and ends well within the attempt timeout (the
    // silence is noticed in about 1.5 s).
    let soon = Duration::from_secs(15);
    let put = tokio::time::timeout(soon, client.put(&keys[0], b"w")).await;
    assert!(
        matches!(put, Ok(Ok(_))),
        "the put that found the node silent: {put:?}"
    );
    // Then, for longer than two of the client's avoid times (1 s): writes and reads of its
    // keys, none sent to the silent node.
    let until = Instant::now() + Duration::from_millis(2_500);
    let mut done = 0;
    while Instant::now() < until {
        let key = &keys[done % keys.len()];
        let put = tokio::time::timeout(soon, client.put(key, b"w")).await;
        assert!(matches!(put, Ok(Ok(_))), "put {done}: {put:?}");
        let get = tokio::time::timeout(soon, client.get(key)).await;
        assert!(matches!(get, Ok(Ok(_))), "get {done}: {get:?}");
        done += 1;
    }
    assert_eq!(
        gate.requests(),
        2,
        "while it was silent the node was sent only the request that found it so ({done} \
         puts and gets went elsewhere)"
    );
    assert!(gate.pings() >= 1, "pinged {} times", gate.pings());

    gate.resume();
    let before = gate.requests();
    eventually(
        "the node gets its keys again",
        Duration::from_secs(10),
        || {
            let (client, key) = (client.clone(), keys[1].clone());
            let gate = &gate;
            async move {
                client.get(&key).await.unwrap();
                gate.requests() > before
            }
        },
    )
    .await;
}

/// A proxy in front of a node that can stop forwarding both ways (as a paused node: the
/// connection stays open, what is sent is held), counting the client requests it is sent.
struct Gate {
    addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
    requests: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
}

impl Gate {
    async fn open(node: SocketAddr) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (open, watch) = tokio::sync::watch::channel(true);
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            open,
            requests: Arc::default(),
            pings: Arc::default(),
        };
        let (requests, pings) = (gate.requests.clone(), gate.pings.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(node).await.unwrap();
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (requests, pings) = (requests.clone(), pings.clone());
                // Counted as they arrive, forwarded while open.
                let (held, mut forward) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    let mut frames = FramedRead::new(client_read, frame::codec(1 << 24));
                    while let Some(Ok(body)) = frames.next().await {
                        match frame::decode(&body) {
                            Ok(Frame::Request(r)) if r.body == RequestBody::Ping => {
                                pings.fetch_add(1, Ordering::SeqCst)
                            }
                            _ => requests.fetch_add(1, Ordering::SeqCst),
                        };
                        if held.send(body).is_err() {
                            return;
                        }
                    }
                });
                let mut watch_in = watch.clone();
                tokio::spawn(async move {
                    while let Some(body) = forward.recv().await {
                        let _ = watch_in.wait_for(|open| *open).await;
                        let length = (body.len() as u32).to_be_bytes();
                        if server_write.write_all(&length).await.is_err()
                            || server_write.write_all(&body).await.is_err()
                        {
                            return;
                        }
                    }
                });
                let mut watch_out = watch.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        let _ = watch_out.wait_for(|open| *open).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        gate
    }

    fn pause(&self) {
        self.open.send_replace(false);
    }

    fn resume(&self) {
        self.open.send_replace(true);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }
}

/// CI once saw a node refuse to start, its `metrics_addr` "already in use": the test kit had
/// handed out a port of the kernel's ephemeral range, bound and released, and something else
/// (an outgoing connection, another `bind(0)`) took it before the node bound it. The kit's
/// ports now come from below that range, where only an explicit bind takes one, and a
/// process never gets the same one twice.
#[test]
fn the_test_kits_ports_are_never_assigned_by_the_kernel_nor_handed_out_twice() {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut ports: Vec<u16> = (0..300)
        .flat_map(|_| support::free_ports(3))
        .chain(
            support::bound_ports(5)
                .iter()
                .map(|l| l.local_addr().unwrap()),
        )
        .map(|addr| addr.port())
        .collect();
    assert!(
        ports.iter().all(|&port| port < ephemeral_start),
        "a port of the ephemeral range (from {ephemeral_start}): {ports:?}"
    );
    let handed_out = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), handed_out, "a port handed out twice");
}

/// `status` counts the records each store holds: every key written raises it on the voters
/// that took the write (a majority at least), and a delete leaves its key's record (a
/// tombstone: nothing collects records yet, README "Limits"). Counted through the log not
/// yet merged into the store's table (a merge comes every 8,192 records), so a count that
/// read the table alone would not move here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_records_each_store_holds_and_a_delete_keeps_its_record() {
    const KEYS: u64 = 40;
    let cluster = TestCluster::start();
    let client = cluster.client();
    // Settled: a write went through, so the cluster's own start-up writes are done.
    client.put(b"settled", b"yes").await.unwrap();
    let stored = || async {
        let mut stored = Vec::new();
        for id in cluster.ids() {
            let count = cluster.status(id).await.records_stored;
            stored.push(count.expect("the store counted its records"));
        }
        stored
    };
    let before = stored().await;
    for i in 0..KEYS {
        client
            .put(format!("counted-{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let written = stored().await;
    let grown: Vec<u64> = written.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("records stored before {before:?}, grown by {grown:?} with {KEYS} new keys");
    assert!(
        grown.iter().sum::<u64>() >= 3 * KEYS && grown.iter().all(|&g| g <= KEYS),
        "{KEYS} new keys on five nodes: records stored grew by {grown:?} (before {before:?})"
    );
    for i in 0..KEYS {
        let key = format!("counted-{i}");
        client.delete(key.as_bytes()).await.unwrap();
        assert!(
            matches!(
                client.get(key.as_bytes()).await.unwrap(),
                Outcome::Get { value: None, .. }
            ),
            "{key} deleted"
        );
    }
    let deleted = stored().await;
    assert!(
        deleted.iter().zip(&written).all(|(d, w)| d >= w),
        "deletes removed records: {written:?} before, {deleted:?} after"
    );
}
