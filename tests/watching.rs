//! Watching keys (`paxkv watch`, `Client::watch`, argued in `actors::watch` and
//! `paxkv::watch`): every change of a hot key with many writers arrives in order with no gap
//! while nothing fails; a prefix watch starts each key where it stands, deleted keys included;
//! a watch survives the death of the node serving it, and every change it cannot deliver is
//! said (`skipped_to`), checked against the writes' acknowledged versions; a watcher that does
//! not read is ended, not buffered without end; watches are limited per connection and per
//! node.

use paxkv_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paxkv::client::Client;
use paxkv::paxos::types::Outcome;
use paxkv::watch::{WatchItem, WatchOptions, WatchStream};

use support::watching::{version_of, KeyWrites};
use support::{Cluster, TestCluster};

/// Puts `key` until the watch delivers a change of it (the watch has then begun: changes
/// after its start are delivered); returns that change.
async fn wait_started(client: &Client, stream: &mut WatchStream, key: &[u8]) -> WatchItem {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < until, "the watch never delivered a change");
        client.put(key, b"marker").await.unwrap();
        if let Ok(Some(item)) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        {
            return item.expect("a watch item");
        }
    }
}

/// Takes items until `done` says so (or panics at the deadline).
async fn take_until(
    stream: &mut WatchStream,
    deadline: Duration,
    mut done: impl FnMut(&[WatchItem]) -> bool,
) -> Vec<WatchItem> {
    let until = Instant::now() + deadline;
    let mut items = Vec::new();
    while !done(&items) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(item)) => items.push(item.expect("a watch item")),
            Ok(None) => panic!("the watch ended; versions: {:?}", versions(&items)),
            Err(_) => panic!(
                "timed out after {deadline:?}; versions: {:?}",
                versions(&items)
            ),
        }
    }
    items
}

/// What each item brings its key to (a skip: `skip` and the version below `skipped_to`).
fn versions(items: &[WatchItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            WatchItem::Change { version, .. } => version.to_string(),
            WatchItem::Skipped { skipped_to, .. } => format!("skip to {skipped_to}"),
        })
        .collect()
}

/// The stream of key `k` checked against its acknowledged writes (`acked`: version → value),
/// with the kit's watch check; returns the skips.
fn check_stream(
    items: &[WatchItem],
    acked: &BTreeMap<u64, Option<Vec<u8>>>,
    unknown: &BTreeSet<Option<Vec<u8>>>,
) -> usize {
    // The markers `wait_started` put are writes whose versions nobody kept.
    let mut maybe = unknown.clone();
    maybe.insert(Some(b"marker".to_vec()));
    let writes = KeyWrites {
        acked: acked.clone(),
        maybe,
    };
    let key = match &items[0] {
        WatchItem::Change { key, .. } | WatchItem::Skipped { key, .. } => key.clone(),
    };
    support::watching::check_watch(items, &BTreeMap::from([(key, writes)])).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_to_a_hot_key_with_many_writers_arrives_in_order_with_no_gap() {
    let cluster = TestCluster::start();
    // A change waits up to 5 s for the one below it: a proposer whose round another one
    // carried forward announces its batch's middle versions only when it retries.
    let options = WatchOptions {
        gap_wait: Duration::from_secs(5),
        ..WatchOptions::default()
    };
    let mut stream = cluster.client().watch(b"hot", options);
    let first = wait_started(&cluster.client(), &mut stream, b"hot").await;
    // Eight writers, each through its own node (so proposers on every node contend).
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let unknown = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let client = cluster.client_for(w % 5 + 1);
            let (acked, unknown) = (acked.clone(), unknown.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let value = format!("w{w}-{i}").into_bytes();
                    // A write may end "outcome unknown" under this contention (its retry found
                    // the key had forgotten it): it is then in no check.
                    match client.put(b"hot", &value).await {
                        Ok(Outcome::Put { version }) => {
                            acked.lock().unwrap().insert(version, Some(value));
                        }
                        Ok(other) => panic!("a put answered {other:?}"),
                        Err(e) => {
                            eprintln!("a write failed: {e}");
                            unknown.lock().unwrap().insert(Some(value));
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let last = *acked.keys().last().unwrap();
    assert!(
        acked.len() >= 300,
        "{} of 320 writes acknowledged",
        acked.len()
    );
    let mut items = vec![first];
    items.extend(
        take_until(&mut stream, Duration::from_secs(30), |items| {
            items.last().is_some_and(|i| version_of(i) >= last)
        })
        .await,
    );
    check_stream(&items, &acked, &unknown.lock().unwrap());
    // Every acknowledged write is delivered, none skipped. A skip may only cover a write
    // that failed "outcome unknown" (its proposer lost track of it, and so nobody announced
    // it: that write's failure is the fault).
    let delivered: BTreeMap<u64, &WatchItem> = items
        .iter()
        .filter(|i| matches!(i, WatchItem::Change { .. }))
        .map(|i| (version_of(i), i))
        .collect();
    let from = version_of(&items[0]);
    let missing: Vec<u64> = acked
        .keys()
        .filter(|v| **v >= from && !delivered.contains_key(v))
        .copied()
        .collect();
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "acknowledged writes never delivered"
    );
    if acked.len() == 320 {
        let skipped: Vec<&WatchItem> = items
            .iter()
            .filter(|i| matches!(i, WatchItem::Skipped { .. }))
            .collect();
        assert!(
            skipped.is_empty(),
            "no gap while nothing fails: {skipped:?}"
        );
    }
}

/// A watch follows at most `max_keys` keys (its memory is a version per key): within it,
/// the changes come as always; a key of the prefix past it ends the watch with an error that
/// names the limit, after every change taken before it, and a prefix that holds more keys
/// than that from the start ends its watch at once, with nothing delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_with_an_error_at_the_most_keys_it_follows() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    client.put(b"p/a", b"a1").await.unwrap();
    let options = WatchOptions {
        prefix: true,
        max_keys: 2,
        ..WatchOptions::default()
    };
    let mut stream = client.watch(b"p/", options.clone());
    // The marker is the second key: within the most.
    let marker = wait_started(&client, &mut stream, b"p/marker").await;
    assert!(matches!(marker, WatchItem::Change { ref key, .. } if key == b"p/marker"));
    client.put(b"p/a", b"a2").await.unwrap();
    client.put(b"p/c", b"the third key").await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let mut items = Vec::new();
    let error = loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(item))) => items.push(item),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the watch ended without an error: {items:?}"),
            Err(_) => panic!("no error within 30 s: {items:?}"),
        }
    };
    assert!(error.is_bad_input(), "{error}");
    assert!(
        error.to_string().contains("follows 2 keys, its most"),
        "{error}"
    );
    let a2 = WatchItem::Change {
        key: b"p/a".to_vec(),
        version: 2,
        value: Some(b"a2".to_vec()),
    };
    assert!(items.contains(&a2), "{items:?}");
    assert!(
        items
            .iter()
            .all(|i| !matches!(i, WatchItem::Change { key, .. } if key == b"p/c")),
        "{items:?}"
    );
    assert!(
        stream.next().await.is_none(),
        "the watch goes on after its error"
    );
    // Three keys already under the prefix: the watch ends before it delivers anything.
    let mut stream = client.watch(b"p/", options);
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the watch said nothing in 30 s");
    match first {
        Some(Err(e)) => assert!(e.to_string().contains("its most"), "{e}"),
        other => panic!("expected the limit's error first, got {other:?}"),
    }
}

/// The next item of `stream`, within `deadline`.
async fn next_within(
    stream: &mut WatchStream,
    deadline: Duration,
) -> Option<Result<WatchItem, paxkv::Error>> {
    tokio::time::timeout(deadline, stream.next())
        .await
        .expect("the watch said nothing within its deadline")
}

/// A node serves at most `limits.max_watchers` watches and one client connection holds at
/// most `limits.max_watchers_per_connection` of them: one more is refused with an error that
/// names the limit (the client's watch retries it until its operation timeout, then ends with
/// that error), and a watch that ends gives its slot back. Without the per-connection limit
/// one connection could take every watch a node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_limited_per_connection_and_per_node_and_give_their_slots_back() {
    let cluster = TestCluster::start_with(|c| {
        c.limits.max_watchers = 4;
        c.limits.max_watchers_per_connection = 2;
    });
    let writer = cluster.client();
    // Each client is pinned to node 1, with one connection to it; its operation timeout is
    // how long a refused watch retries (5 s: its attempts, 4 s each, must not time out on a
    // loaded machine while the node confirms a watch).
    let connection = || cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(5));
    let (first, second, third) = (connection(), connection(), connection());
    let mut held = Vec::new();
    for (i, client) in [&first, &first, &second, &second].into_iter().enumerate() {
        let key = format!("w{i}");
        let mut stream = client.watch(key.as_bytes(), WatchOptions::default());
        wait_started(&writer, &mut stream, key.as_bytes()).await;
        held.push(stream);
    }
    // A third on the first connection: its connection's limit.
    let mut refused = first.watch(b"w-more", WatchOptions::default());
    match next_within(&mut refused, Duration::from_secs(30)).await {
        Some(Err(e)) => assert!(
            e.to_string().contains("limits.max_watchers_per_connection"),
            "{e}"
        ),
        other => panic!("a third watch on one connection: {other:?}"),
    }
    // A first on a third connection: the node's limit.
    let mut refused = third.watch(b"w-more", WatchOptions::default());
    match next_within(&mut refused, Duration::from_secs(30)).await {
        Some(Err(e)) => assert!(e.to_string().contains("limits.max_watchers)"), "{e}"),
        other => panic!("a fifth watch on the node: {other:?}"),
    }
    // One watch ends (its connection stays): its slot is given back, and a watch on another
    // connection, retrying for up to 30 s, starts.
    drop(held.remove(0));
    let patient = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(30));
    let mut stream = patient.watch(b"w-after", WatchOptions::default());
    wait_started(&writer, &mut stream, b"w-after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_starts_every_key_where_it_stands_deleted_keys_included() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    client.put(b"p/a", b"a1").await.unwrap();
    client.put(b"p/b", b"b1").await.unwrap();
    client.delete(b"p/b").await.unwrap(); // p/b is deleted at version 2
    let options = WatchOptions {
        prefix: true,
        ..WatchOptions::default()
    };
    let mut stream = client.watch(b"p/", options);
    let marker = wait_started(&client, &mut stream, b"p/marker").await;
    assert!(matches!(marker, WatchItem::Change { ref key, .. } if key == b"p/marker"));
    client.put(b"p/b", b"b3").await.unwrap();
    client.put(b"q/x", b"other prefix").await.unwrap();
    client.put(b"p/\xff", b"\x00").await.unwrap();
    client.delete(b"p/a").await.unwrap();
    let items = take_until(&mut stream, Duration::from_secs(30), |items| {
        items
            .iter()
            .any(|i| matches!(i, WatchItem::Change { key, .. } if key == b"p/a"))
    })
    .await;
    let change = |key: &[u8], version, value: Option<&[u8]>| WatchItem::Change {
        key: key.to_vec(),
        version,
        value: value.map(<[u8]>::to_vec),
    };
    // Markers put before the first one delivered may follow; the rest in order, no skip.
    let items: Vec<WatchItem> = items
        .into_iter()
        .filter(|i| !matches!(i, WatchItem::Change { key, .. } if key == b"p/marker"))
        .collect();
    assert_eq!(
        items,
        vec![
            change(b"p/b", 3, Some(b"b3")),
            change(b"p/\xff", 1, Some(b"\x00")),
            change(b"p/a", 2, None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_node_and_says_every_change_it_missed() {
    let mut cluster = TestCluster::start();
    let options = WatchOptions {
        gap_wait: Duration::from_millis(300),
        reconcile_every: Duration::from_secs(1),
        ..WatchOptions::default()
    };
    let mut stream = cluster.client().watch(b"k", options);
    let first = wait_started(&cluster.client(), &mut stream, b"k").await;
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (cluster.client(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let value = format!("v{i}").into_bytes();
                if let Ok(Outcome::Put { version }) = client.put(b"k", &value).await {
                    acked.lock().unwrap().insert(version, Some(value));
                }
            }
        })
    };
    // Every node in turn is stopped while the writes go on: one of them serves the watch.
    let items = Arc::new(Mutex::new(vec![first]));
    let reader = {
        let items = items.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                items.lock().unwrap().push(item.expect("a watch item"));
            }
        })
    };
    for id in 1..=5 {
        let before = acked.lock().unwrap().len();
        cluster.stop(id).await;
        support::eventually(
            "writes go on with a node down",
            Duration::from_secs(30),
            || {
                let now = acked.lock().unwrap().len();
                async move { now >= before + 20 }
            },
        )
        .await;
        cluster.restart(id);
        cluster.wait_voting(&[id]).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let Outcome::Put { version: last } = cluster.client().put(b"k", b"last").await.unwrap() else {
        panic!("a put")
    };
    acked.lock().unwrap().insert(last, Some(b"last".to_vec()));
    support::eventually(
        "the last write is delivered",
        Duration::from_secs(30),
        || {
            let reached = items
                .lock()
                .unwrap()
                .last()
                .is_some_and(|i| version_of(i) >= last);
            async move { reached }
        },
    )
    .await;
    reader.abort();
    let items = items.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let skips = check_stream(&items, &acked, &BTreeSet::new());
    let delivered = items
        .iter()
        .filter(|i| matches!(i, WatchItem::Change { .. }))
        .count();
    eprintln!(
        "{delivered} changes delivered, {skips} skips, {} writes",
        acked.len()
    );
    assert!(
        delivered >= 100,
        "the watch went on across the stops: {delivered} changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_ended_and_holds_no_more_than_its_budgets() {
    use paxkv::messages::{ClientRequest, Frame, RequestBody};
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::start_with(|config| {
        let ports = support::free_ports(config.nodes.len());
        for (node, port) in config.nodes.iter_mut().zip(ports) {
            node.metrics_addr = Some(port.to_string());
        }
        config.limits.max_connection_bytes = 4 << 20;
        config.limits.watch_buffer_bytes = 256 << 10;
    });
    // One connection asks for a watch of "big" and never reads.
    let mut raw = tokio::net::TcpStream::connect(cluster.addr(1))
        .await
        .unwrap();
    let watch = Frame::Request(ClientRequest {
        id: 1,
        body: RequestBody::Watch {
            key: b"big".to_vec(),
            prefix: false,
        },
    });
    raw.write_all(&paxkv::frame::encode(&watch)).await.unwrap();
    support::eventually(
        "the watch is registered",
        Duration::from_secs(10),
        || async { cluster.metric(1, "paxkv_watchers").await == Some(1.0) },
    )
    .await;
    let client = cluster.client_for(1);
    let value = vec![7u8; 128 << 10];
    for _ in 0..100 {
        client.put(b"big", &value).await.unwrap();
        if cluster.metric(1, "paxkv_watchers_cut_total").await >= Some(1.0) {
            break;
        }
    }
    assert_eq!(
        cluster.metric(1, "paxkv_watchers_cut_total").await,
        Some(1.0),
        "12.5 MiB of changes to a watcher that reads nothing, over a 4 MiB connection budget \
         and a 256 KiB watch buffer: it is ended"
    );
    assert_eq!(cluster.metric(1, "paxkv_watchers").await, Some(0.0));
    // The node serves on.
    client.put(b"after", b"ok").await.unwrap();
    drop(raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_announcement_was_lost_is_delivered_by_the_reconcile() {
    use paxkv::messages::FaultPlan;
    let cluster = TestCluster::start();
    // The watch is served by node 1; the write goes through node 2, whose link to node 1 is
    // cut: the write is chosen by the other four, and its announcement to node 1 is lost.
    let watcher = cluster.client_for(1);
    let options = WatchOptions {
        reconcile_every: Duration::from_secs(1),
        ..WatchOptions::default()
    };
    let mut stream = watcher.watch(b"lost", options);
    let first = wait_started(&watcher, &mut stream, b"lost").await;
    // The markers are all delivered before the cut (each one a change after the first).
    let before = watcher.get(b"lost").await.unwrap();
    let Outcome::Get { version, .. } = before else {
        panic!("a get")
    };
    if version_of(&first) < version {
        take_until(&mut stream, Duration::from_secs(10), |items| {
            items.last().is_some_and(|i| version_of(i) >= version)
        })
        .await;
    }
    let plan = FaultPlan {
        links: std::collections::BTreeMap::from([(1, support::cut())]),
        ..FaultPlan::default()
    };
    cluster.set_faults(2, plan).await;
    let Outcome::Put { version: lost } = cluster.client_for(2).put(b"lost", b"v").await.unwrap()
    else {
        panic!("a put")
    };
    let items = take_until(&mut stream, Duration::from_secs(10), |items| {
        items.last().is_some_and(|i| version_of(i) >= lost)
    })
    .await;
    assert_eq!(
        items,
        vec![WatchItem::Change {
            key: b"lost".to_vec(),
            version: lost,
            value: Some(b"v".to_vec()),
        }],
        "read by the reconcile, it is the next version: delivered as it is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_large_values_are_announced_within_the_frame_limit() {
    // 700 KiB values: a put through a node whose proposer holds no promise announces the
    // state its Prepare read and its own change, 1.4 MiB together, over a peer frame (one key,
    // one value). They go in two frames; one frame would close the link to the watch's node,
    // and the watch would see the change only as a gap at its next reconcile.
    let cluster = TestCluster::start();
    let watcher = cluster.client_for(1);
    // With the HTTP API's 1 MiB at each stage: the two frames of one change, arriving back to
    // back, must not end the stream of a caller that keeps up (`client::STREAM_MIN_ANSWERS`).
    let options = WatchOptions {
        reconcile_every: Duration::from_secs(600),
        buffer_bytes: 1 << 20,
        ..WatchOptions::default()
    };
    let mut stream = watcher.watch(b"large", options);
    wait_started(&watcher, &mut stream, b"large").await;
    let value = |b: u8| vec![b; 700 << 10];
    let mut acked = BTreeMap::new();
    for (node, b) in [(2, 1u8), (3, 2), (4, 3)] {
        let Outcome::Put { version } = cluster
            .client_for(node)
            .put(b"large", &value(b))
            .await
            .unwrap()
        else {
            panic!("a put")
        };
        acked.insert(version, Some(value(b)));
    }
    let last = *acked.keys().last().unwrap();
    let items = take_until(&mut stream, Duration::from_secs(20), |items| {
        items.last().is_some_and(|i| version_of(i) >= last)
    })
    .await;
    let items: Vec<WatchItem> = items
        .into_iter()
        .filter(|i| version_of(i) >= *acked.keys().next().unwrap() - 1)
        .collect();
    assert_eq!(check_stream(&items, &acked, &BTreeSet::new()), 0, "no gap");
    assert!(
        items.iter().all(|i| matches!(i, WatchItem::Change { .. })),
        "every change delivered as it was announced"
    );
}

/// A caller that stops taking its watch's items holds a bounded backlog in its own process,
/// by bytes as well as by count: with 1 MB values, the stream falls behind after a few
/// megabytes (`WatchOptions::buffer_bytes` of answers on the connection and of items ready),
/// resumes, and says the gap, instead of buffering every change (counted by items alone,
/// 4,096 answers and 1,024 items of 1 MiB each: 5 GiB for one watch, in the HTTP API's
/// process for each of its watches; review, 2026-12-08). Then the bound is the watch's own:
/// nine changes of 1 MB make a gap in a watch of 2 MiB at each stage, and none in one of the
/// default 8 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_taking_its_watch_holds_a_bounded_backlog_and_is_told_the_gap() {
    // The node side holds far more than the 40 MB (its own bounds are another test's), so
    // that a gap can only come from the client's.
    let cluster = TestCluster::start_with(|config| {
        config.limits.watch_buffer_bytes = 256 << 20;
        config.limits.max_connection_bytes = 256 << 20;
    });
    let client = cluster.client();
    let mut stream = client.watch(b"big", WatchOptions::default());
    wait_started(&client, &mut stream, b"big").await;
    // 40 MB of changes while the caller takes nothing.
    let value = vec![7u8; 1_000_000];
    let mut last = 0;
    for _ in 0..40 {
        let Outcome::Put { version } = client.put(b"big", &value).await.unwrap() else {
            panic!("a put answered something else");
        };
        last = version;
    }
    let items = take_until(&mut stream, Duration::from_secs(60), |items| {
        items
            .iter()
            .any(|i| matches!(i, WatchItem::Change { version, .. } if *version == last))
    })
    .await;
    let changes = items
        .iter()
        .filter(|i| matches!(i, WatchItem::Change { .. }))
        .count();
    assert!(
        items.iter().any(|i| matches!(i, WatchItem::Skipped { .. })),
        "every change was held for the caller ({changes} changes): {:?}",
        versions(&items)
    );
    assert!(changes < 40, "{:?}", versions(&items));

    // Nine changes of 1 MB to each of two keys while neither caller takes anything: the
    // watch of 2 MiB at each stage says a gap, the default's holds them all.
    let narrow_options = WatchOptions {
        buffer_bytes: 2 << 20,
        ..WatchOptions::default()
    };
    let mut narrow = client.watch(b"narrow", narrow_options);
    let mut wide = client.watch(b"wide", WatchOptions::default());
    wait_started(&client, &mut narrow, b"narrow").await;
    wait_started(&client, &mut wide, b"wide").await;
    let mut lasts = [0, 0];
    for _ in 0..9 {
        for (key, last) in [&b"narrow"[..], b"wide"].into_iter().zip(&mut lasts) {
            let Outcome::Put { version } = client.put(key, &value).await.unwrap() else {
                panic!("a put answered something else");
            };
            *last = version;
        }
    }
    for (stream, last, gap) in [(&mut narrow, lasts[0], true), (&mut wide, lasts[1], false)] {
        let items = take_until(stream, Duration::from_secs(60), |items| {
            items
                .iter()
                .any(|i| matches!(i, WatchItem::Change { version, .. } if *version == last))
        })
        .await;
        let skipped = items.iter().any(|i| matches!(i, WatchItem::Skipped { .. }));
        assert_eq!(skipped, gap, "a gap said: {:?}", versions(&items));
    }
}
