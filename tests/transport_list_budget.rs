//! A list holds its scan pages within its connection's byte budget (`actors::network`'s
//! `reserved_for`: five frames per list). In a test binary of its own: it measures the
//! resident memory of its process, which another test running beside it would disturb.

use paxkv_testkit as support;

use std::time::Duration;

use paxkv::frame;
use paxkv::messages::{ClientRequest, Frame, RequestBody};
use paxkv::tls::Role;
use support::Cluster;
use support::{eventually, tls_dial, tls_identity, TestCluster};
use tokio::io::AsyncWriteExt;

/// A connection asks a thousand times for a page of large values and never reads an answer.
/// Each list, while it builds its page, holds a scan page of each voter (half a frame each)
/// besides the page: the connection's budget (64 MiB) counts them, so at most a few lists
/// build at once and the process grows by less than the budget and a fixed allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_that_are_never_read_hold_at_most_their_connections_byte_budget() {
    const BUDGET: usize = 64 << 20;
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls_and(3, certs.path(), |c| {
        c.limits.max_connection_bytes = BUDGET;
        c.limits.slow_reader_timeout_ms = 5_000;
    });
    let value = vec![7u8; 200 << 10];
    for i in 0..40 {
        let key = format!("big/{i:02}");
        cluster.client().put(key.as_bytes(), &value).await.unwrap();
    }
    let page = cluster
        .client()
        .list(b"big/", None, 0, false)
        .await
        .unwrap();
    assert!(
        !page.items.is_empty() && page.next.is_some(),
        "pages end at half a frame"
    );
    let before = support::resident_bytes();
    let ca = certs.path().join("ca.pem");
    let client = tls_identity(certs.path(), &ca, "client", Role::Client);
    let mut stream = tls_dial(cluster.addr(1), Some(&client)).await.unwrap();
    let mut requests = Vec::new();
    for id in 0..1_000u64 {
        let list = Frame::Request(ClientRequest {
            id,
            body: RequestBody::List {
                prefix: b"big/".to_vec(),
                after: None,
                limit: 0,
                keys_only: false,
            },
        });
        requests.extend_from_slice(&frame::encode(&list));
    }
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&requests).await;
        stream
    });
    let bound = (BUDGET + (32 << 20)) as u64;
    let peak = std::sync::atomic::AtomicU64::new(0);
    let cluster = &cluster;
    eventually(
        "the connection's budget is spent (or memory is over the bound)",
        Duration::from_secs(60),
        || {
            let now = support::resident_bytes().saturating_sub(before);
            let grown = peak
                .fetch_max(now, std::sync::atomic::Ordering::Relaxed)
                .max(now);
            async move {
                grown >= bound
                    || cluster
                        .metric(1, "paxkv_limited_total{limit=\"connection_bytes\"}")
                        .await
                        .is_some_and(|n| n > 0.0)
            }
        },
    )
    .await;
    let mut grown = peak.into_inner();
    for _ in 0..20 {
        grown = grown.max(support::resident_bytes().saturating_sub(before));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("resident memory grew by {} MiB", grown >> 20);
    assert!(
        grown < bound,
        "resident memory grew by {} MiB with a budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    writer.abort();
}
