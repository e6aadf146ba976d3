//! A list holds its scan pages within its connection's byte budget (`actors::network`'s
//! `reserved_for`: five frames per list). In a test binary of its own: it measures the
//! resident memory of its process, which another test running beside it would disturb.

use paxkv_testkit as support;

use paxkv::messages::RequestBody;
use support::{Cluster, TestCluster};

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
    let bound = (BUDGET + (32 << 20)) as u64;
    let list = |_| RequestBody::List {
        prefix: b"big/".to_vec(),
        after: None,
        limit: 0,
        keys_only: false,
    };
    let (grown, writer) =
        support::growth_of_a_connection_that_never_reads(&cluster, certs.path(), list, bound).await;
    println!("resident memory grew by {} MiB", grown >> 20);
    assert!(
        grown < bound,
        "resident memory grew by {} MiB with a budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    writer.abort();
}
