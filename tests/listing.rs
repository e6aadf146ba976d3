//! Listing keys by prefix (`paxkv list`, `Client::list`, argued in `actors::list`): the live
//! keys of a prefix in byte order with their versions, page by page, each key once; served
//! with a minority down and through nodes that missed writes; unavailable, not wrong, when a
//! majority cannot be scanned.

use paxkv_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;

use paxkv::client::Client;
use paxkv::error::Error;
use paxkv::messages::{ListItem, ListPage};

use support::{Cluster, TestCluster};

/// Every page of `prefix`, `limit` keys at a time, concatenated.
async fn list_all(client: &Client, prefix: &[u8], limit: u32) -> Vec<ListItem> {
    let mut items = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let ListPage { items: page, next } = client
            .list(prefix, after.as_deref(), limit, false)
            .await
            .expect("a page");
        assert!(
            page.len() <= limit as usize,
            "a page of {} over {limit}",
            page.len()
        );
        items.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return items,
        }
    }
}

fn item(key: &str, value: &str, version: u64) -> ListItem {
    ListItem {
        key: key.as_bytes().to_vec(),
        value: Some(value.as_bytes().to_vec()),
        version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_returns_the_live_keys_of_its_prefix_in_byte_order_with_their_versions() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    for key in ["app/b", "app/a", "app/c", "apple", "other", "app/d"] {
        client.put(key.as_bytes(), b"v1").await.unwrap();
    }
    client.put(b"app/a", b"v2").await.unwrap();
    client.delete(b"app/c").await.unwrap();
    client.put(b"app/\xff", b"\x00\xfe").await.unwrap();
    let page = client.list(b"app/", None, 0, false).await.unwrap();
    let mut binary = item("", "", 1);
    binary.key = b"app/\xff".to_vec();
    binary.value = Some(b"\x00\xfe".to_vec());
    let expected = vec![
        item("app/a", "v2", 2),
        item("app/b", "v1", 1),
        item("app/d", "v1", 1),
        binary,
    ];
    assert_eq!(
        page.items, expected,
        "deleted app/c and keys of other prefixes left out"
    );
    assert_eq!(page.next, None);
    // Keys only; and every key, the cluster's own membership register never among them.
    let keys_only = client.list(b"", None, 0, true).await.unwrap();
    let keys: Vec<&[u8]> = keys_only.items.iter().map(|i| i.key.as_slice()).collect();
    assert_eq!(
        keys,
        vec![
            &b"app/a"[..],
            b"app/b",
            b"app/d",
            b"app/\xff",
            b"apple",
            b"other"
        ]
    );
    assert!(keys_only.items.iter().all(|i| i.value.is_none()));
    // A page of two says where the next begins.
    let first = client.list(b"app/", None, 2, false).await.unwrap();
    assert_eq!(first.items, expected[..2].to_vec());
    assert_eq!(first.next, Some(b"app/b".to_vec()));
    let second = client
        .list(b"app/", Some(b"app/b"), 2, false)
        .await
        .unwrap();
    assert_eq!(second.items, expected[2..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_refuses_the_reserved_prefix_and_a_prefix_over_the_key_limit_not_a_long_after() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    for prefix in [&b"\0paxkv/"[..], &[b'k'; 257][..]] {
        match client.list(prefix, None, 0, false).await {
            Err(Error::BadRequest(_)) => {}
            other => panic!("a list of {:?}: {other:?}", String::from_utf8_lossy(prefix)),
        }
    }
    // `after` is a stored key, which may be longer than the key limit (a page's `next` may be
    // one: written before the limit was lowered, or one of the cluster's own): the listing
    // goes on past it, through the voters' scans. Over LMDB's 511 bytes nothing is stored,
    // and it is refused.
    client.put(b"m", b"1").await.unwrap();
    let page = client
        .list(b"", Some(&[b'l'; 300]), 0, false)
        .await
        .unwrap();
    let keys: Vec<&[u8]> = page.items.iter().map(|i| i.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"m"[..]]);
    match client.list(b"", Some(&[b'l'; 512]), 0, false).await {
        Err(Error::BadRequest(_)) => {}
        other => panic!("a list after a 512-byte key: {other:?}"),
    }
}

/// 2,000 keys, paged 97 at a time, while other keys are written and deleted: each key that
/// was live for the whole listing comes exactly once, in order; a key never written never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_return_each_live_key_once_while_writes_and_deletes_go_on() {
    let cluster = TestCluster::start();
    let client = cluster.client();
    let stable: BTreeSet<Vec<u8>> = (0..2_000)
        .map(|i| format!("p/{i:05}").into_bytes())
        .collect();
    let writes = stable.iter().map(|key| {
        let client = client.clone();
        let key = key.clone();
        async move { client.put(&key, b"stable").await.unwrap() }
    });
    // 64 at a time: 2,000 at once kept a debug build's nodes busy past the request timeout
    // on a slow machine (a put answered "outcome unknown", failing the set-up).
    futures_util::stream::iter(writes)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    // Churn: keys between the stable ones, put and deleted over and over during the listing.
    let churn = tokio::spawn({
        let client = client.clone();
        async move {
            for round in 0..u64::MAX {
                let key = format!("p/{:05}x", (round * 37) % 2_000).into_bytes();
                let _ = client.put(&key, b"churn").await;
                let _ = client.delete(&key).await;
            }
        }
    });
    let items = list_all(&client, b"p/", 97).await;
    churn.abort();
    let mut seen = BTreeMap::new();
    for item in &items {
        *seen.entry(item.key.clone()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a key listed twice");
    let keys: Vec<&Vec<u8>> = items.iter().map(|i| &i.key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
    let listed: BTreeSet<Vec<u8>> = seen.into_keys().collect();
    let missing: Vec<_> = stable.difference(&listed).collect();
    assert!(missing.is_empty(), "{} stable keys missing", missing.len());
    let strangers = listed
        .iter()
        .filter(|k| !stable.contains(*k) && !k.ends_with(b"x"))
        .count();
    assert_eq!(strangers, 0, "a key never written was listed");
    assert!(items
        .iter()
        .filter(|i| stable.contains(&i.key))
        .all(|i| i.value.as_deref() == Some(&b"stable"[..]) && i.version == 1));
}

/// Served with two nodes down; with three down, unavailable, never a page from the two left,
/// even where those two hold none of the keys: keys written while 4 and 5 were down, then 4 and
/// 5 back (intact, confirmed) and 1, 2 and 3 down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_served_with_two_nodes_down_and_unavailable_with_three() {
    let mut cluster = TestCluster::start();
    let client = cluster.client();
    for i in 0..50 {
        client
            .put(format!("k/{i:02}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    cluster.stop(4).await;
    cluster.stop(5).await;
    let up = cluster.client_with(
        (1..=3).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    for i in 0..30 {
        up.put(format!("k/late-{i:02}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let items = list_all(&up, b"k/", 20).await;
    assert_eq!(items.len(), 80);
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    for id in 1..=3 {
        cluster.stop(id).await;
    }
    let few = cluster.client_with(
        (4..=5).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(3),
    );
    match few.list(b"k/late-", None, 0, false).await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("a list from the two nodes that missed the writes: {other:?}"),
    }
}

/// Nodes 4 and 5 miss an update of every key (cut off, anti-entropy idle), then node 1 stops:
/// of the four voters scanned, two hold the new states and two the old, so no quorum shows a
/// state chosen and every key goes through a read round. The list, asked of node 4 (whose own
/// store holds only old states), returns every new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_through_a_node_that_missed_writes_returns_their_latest_states() {
    let mut cluster = TestCluster::start();
    let client = cluster.client();
    for i in 0..40 {
        client
            .put(format!("s/{i:02}").as_bytes(), b"old")
            .await
            .unwrap();
    }
    cluster.cut_between(&[4, 5], &[1, 2, 3]).await;
    let majority = cluster.client_with(
        (1..=3).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    for i in 0..40 {
        majority
            .put(format!("s/{i:02}").as_bytes(), b"new")
            .await
            .unwrap();
    }
    cluster.heal().await;
    cluster.stop(1).await;
    let via4 = cluster.client_with(vec![cluster.addr(4)], true, Duration::from_secs(20));
    let items = list_all(&via4, b"s/", 15).await;
    assert_eq!(items.len(), 40);
    for item in &items {
        assert_eq!(
            (item.value.as_deref(), item.version),
            (Some(&b"new"[..]), 2),
            "{}",
            String::from_utf8_lossy(&item.key)
        );
    }
}

/// A wiped store answers no scan: its empty disk would count as "no such key" beside two
/// nodes that missed the writes, and the three of them would list nothing of what a majority
/// acknowledged. Keys written by {1, 2, 3}; node 3 wiped (refused); 4 and 5, which missed
/// the writes, restarted (intact, confirmed by 1 and 2); then 1 and 2 stop. The list is
/// unavailable, not empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_answers_no_scan_so_a_list_is_unavailable_rather_than_incomplete() {
    let mut cluster = TestCluster::start();
    cluster.stop(4).await;
    cluster.stop(5).await;
    let client = cluster.client_with(
        (1..=3).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    for i in 0..20 {
        client
            .put(format!("w/{i:02}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    cluster.stop(3).await;
    cluster.wipe(3);
    cluster.restart(3);
    cluster.wait_store_refused(3).await;
    cluster.restart(4);
    cluster.restart(5);
    cluster.wait_voting(&[4, 5]).await;
    cluster.stop(1).await;
    cluster.stop(2).await;
    let rest = cluster.client_with(
        (3..=5).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(3),
    );
    match rest.list(b"w/", None, 0, false).await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("a list from a wiped store and two that missed the writes: {other:?}"),
    }
}

/// A page's work is bounded by the page, not by the prefix (`actors::list`): a page that has
/// passed over `limits.list_max_skipped` deleted keys ends at the one where it did, with fewer
/// items than asked and that key as its `next`; paging on from there lists every live key
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_passed_over_its_bound_of_deleted_keys_ends_early_and_goes_on() {
    let cluster = TestCluster::start_with(|c| c.limits.list_max_skipped = 10);
    let client = cluster.client();
    client.put(b"d/a", b"1").await.unwrap();
    for i in 0..25 {
        let key = format!("d/b{i:02}");
        client.put(key.as_bytes(), b"x").await.unwrap();
        client.delete(key.as_bytes()).await.unwrap();
    }
    client.put(b"d/c", b"2").await.unwrap();
    let page = client.list(b"d/", None, 100, false).await.unwrap();
    assert_eq!(page.items, vec![item("d/a", "1", 1)]);
    assert_eq!(page.next, Some(b"d/b09".to_vec()), "the tenth deleted key");
    let page = client
        .list(b"d/", Some(b"d/b09"), 100, false)
        .await
        .unwrap();
    assert!(page.items.is_empty(), "{page:?}");
    assert_eq!(page.next, Some(b"d/b19".to_vec()));
    assert_eq!(
        list_all(&client, b"d/", 100).await,
        vec![item("d/a", "1", 1), item("d/c", "2", 1)]
    );
}
