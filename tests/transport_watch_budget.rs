//! Watches whose client never reads hold at most their connection's byte budget, and are ended
//! (`actors::watch`: each watcher's buffer is bounded in bytes, and the watch's answers take
//! the connection's budget as any answer does). In a test binary of its own: it measures the
//! resident memory of its process, which another test running beside it would disturb.

use paxkv_testkit as support;

use paxkv::messages::RequestBody;
use support::{Cluster, TestCluster};

/// A connection asks for a thousand watches of one key and never reads, while 256 KiB values
/// are put to the key: every put is a 256 KiB answer for each of the thousand watches (256 MiB
/// a put). The process grows by less than the connection's budget and a fixed allowance, and
/// the watches are ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_that_are_never_read_hold_at_most_their_connections_byte_budget() {
    const BUDGET: usize = 64 << 20;
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls_and(3, certs.path(), |c| {
        c.limits.max_connection_bytes = BUDGET;
        c.limits.slow_reader_timeout_ms = 5_000;
        // The store's log is merged at an eighth of the map: the test clusters' 256 MiB would
        // merge it during the puts, and a merge maps the log's pages into the process's
        // resident memory (file-backed, reclaimable, but counted here: 123 MiB measured
        // where the watches' own growth is 83-88 MiB). The default map keeps the merge past
        // this test's writes, as on a node of the default config.
        c.storage.map_size_mb = 4_096;
    });
    let client = cluster.client();
    let puts = tokio::spawn(async move {
        let value = vec![7u8; 256 << 10];
        loop {
            let _ = client.put(b"big", &value).await;
        }
    });
    let bound = (BUDGET + (32 << 20)) as u64;
    let watch = |_| RequestBody::Watch {
        key: b"big".to_vec(),
        prefix: false,
    };
    let (grown, writer) =
        support::growth_of_a_connection_that_never_reads(&cluster, certs.path(), watch, bound)
            .await;
    println!("resident memory grew by {} MiB", grown >> 20);
    assert!(
        grown < bound,
        "resident memory grew by {} MiB with a budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    support::eventually(
        "the watches that are not read are ended",
        std::time::Duration::from_secs(30),
        || async { cluster.metric(1, "paxkv_watchers_cut_total").await >= Some(1.0) },
    )
    .await;
    puts.abort();
    writer.abort();
}
