//! Issue 18, item 4: memory per connection is bounded in bytes. In a test binary of its own:
//! it measures the resident memory of its process, which another test running beside it
//! (the test harness runs a binary's tests in parallel) would disturb.

use paxkv_testkit as support;

use paxkv::messages::RequestBody;
use paxkv::paxos::types::Outcome;
use support::Cluster;
use support::{until_limited, TestCluster};

const KEY: &[u8] = b"color";

/// Issue 18, item 4: a connection asks a thousand times for a 1 MiB value (15 KB of
/// requests) and never reads an answer. Before, the node buffered every answer: +859 MiB
/// resident. Now the connection holds at most its byte budget (`max_connection_bytes`, here
/// 16 MiB): it is not read further once the budget is spent, the process's resident memory
/// grows by less than the budget and a fixed allowance (32 MiB: allocator, buffers), the
/// connection is closed once its answers wait `slow_reader_timeout_ms`, and a reader that
/// reads is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_reads_holds_at_most_its_byte_budget() {
    const BUDGET: usize = 16 << 20;
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls_and(3, certs.path(), |c| {
        c.limits.max_connection_bytes = BUDGET;
        c.limits.slow_reader_timeout_ms = 3_000;
    });
    let big = vec![7u8; 1 << 20];
    cluster.client().put(KEY, &big).await.unwrap();
    cluster.client().get(KEY).await.unwrap();
    let bound = (BUDGET + (32 << 20)) as u64;
    let get = |_| RequestBody::Kv {
        key: KEY.to_vec(),
        command: paxkv::paxos::types::Command::Get,
        write_id: None,
        maybe_applied: false,
    };
    let (grown, writer) =
        support::growth_of_a_connection_that_never_reads(&cluster, certs.path(), get, bound).await;
    assert!(
        grown < bound,
        "resident memory grew by {} MiB with a budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    // A reader that reads is served meanwhile.
    match cluster.client_for(1).get(KEY).await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.map(|v| v.len()), Some(1 << 20)),
        other => panic!("{other:?}"),
    }
    until_limited(
        &cluster,
        1,
        "slow_reader",
        "the connection that does not read is closed",
    )
    .await;
    writer.abort();
}
