//! A lease's keys are an answer as large as a value: a connection that asks for them and
//! never reads holds them within its byte budget (`actors::network`'s `reserved_for`). In a
//! test binary of its own: it measures the resident memory of its process, which another
//! test running beside it would disturb.

use paxkv_testkit as support;

use paxkv::messages::RequestBody;
use support::{Cluster, TestCluster};

/// A lease lists 1,000 keys of 250 bytes (a 250 KB answer). A connection asks a thousand
/// times for them and never reads an answer. Before, such a request was reserved a small
/// answer's 64 KiB: some 250 of them were served at once into a 16 MiB budget, about 60 MiB
/// of answers. Each is now reserved a frame, as a get is: the process grows by less than the
/// budget and a fixed allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keys_never_read_hold_at_most_their_connections_byte_budget() {
    const BUDGET: usize = 16 << 20;
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls_and(3, certs.path(), |c| {
        c.limits.max_connection_bytes = BUDGET;
        c.limits.slow_reader_timeout_ms = 5_000;
    });
    let client = cluster.client();
    let lease = client
        .lease_grant(std::time::Duration::from_secs(600))
        .await
        .unwrap()
        .id;
    for i in 0..1_000 {
        let key = format!("lk/{i:04}/{}", "x".repeat(240));
        client
            .put_leased(key.as_bytes(), b"v", None, lease)
            .await
            .unwrap();
    }
    let keys = client.lease_keys(lease).await.unwrap().expect("the lease");
    assert_eq!(keys.len(), 1_000);
    let bound = (BUDGET + (32 << 20)) as u64;
    let (grown, writer) = support::growth_of_a_connection_that_never_reads(
        &cluster,
        certs.path(),
        |_| RequestBody::LeaseKeys { id: lease },
        bound,
    )
    .await;
    assert!(
        grown < bound,
        "resident memory grew by {} MiB with a budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    writer.abort();
}
