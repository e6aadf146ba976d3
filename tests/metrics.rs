//! `/metrics` and `/health` of every node (TLS on, a metrics port per node): the series are
//! exactly the README's table, requests are counted by op and outcome, and `/health` follows
//! voting (503 with the reason for a wiped node).

use paxkv_testkit as support;

use std::time::Duration;

use support::{eventually, http_get, metric_in, Cluster, TestCluster};

/// `/metrics` carries every series the README documents, and counts requests by operation
/// and outcome; `/health` is 200 exactly while the node votes.
#[tokio::test]
async fn metrics_name_every_documented_series_and_health_follows_voting() {
    let certs = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::with_tls(3, certs.path());
    let client = cluster.client_for(1);
    client.put(b"m", b"1").await.unwrap();
    client.get(b"m").await.unwrap();
    client.get(b"m").await.unwrap();
    let _ = client.cas(b"m", b"2", 7).await;
    let metrics = cluster.metrics_addr(1).unwrap();
    let (status, text) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `paxkv_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(
        documented.len() >= 20,
        "the README's metrics table: {documented:?}"
    );
    for name in &documented {
        let name = format!("paxkv_{name}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} "))),
            "/metrics has no {name}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE paxkv_")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            documented.iter().any(|d| format!("paxkv_{d}") == name),
            "{name} is not documented in the README"
        );
    }
    let get_ok = metric_in(
        &text,
        "paxkv_request_duration_seconds_count{op=\"get\",outcome=\"ok\"}",
    );
    assert_eq!(get_ok, Some(2.0), "{text}");
    assert_eq!(
        metric_in(
            &text,
            "paxkv_request_duration_seconds_count{op=\"put\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
    assert!(metric_in(&text, "paxkv_paxos_rounds_total{kind=\"quick_read\"}").unwrap() >= 2.0);
    // Each get's majority meets the put's in a node whose acceptor is live, and answers
    // there from the record that acceptor made durable (`actors::acceptor::DurableView`).
    let mut from_durable = 0.0;
    for id in 1..=3 {
        from_durable += cluster
            .metric(id, "paxkv_reads_from_durable_total")
            .await
            .unwrap();
    }
    assert!(
        from_durable >= 2.0,
        "{from_durable} reads from durable records"
    );
    assert!(metric_in(&text, "paxkv_commit_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(metric_in(&text, "paxkv_voting"), Some(1.0));
    // The key "m" and the cluster's own record, as `status` counts them (asked after the
    // scrape: the count only grows, by anti-entropy's copies too).
    let scraped = metric_in(&text, "paxkv_records_stored").expect("paxkv_records_stored");
    let stored = cluster.status(1).await.records_stored;
    assert!(
        scraped >= 2.0 && stored.is_some_and(|n| n as f64 >= scraped),
        "scraped {scraped}, status {stored:?}"
    );
    assert!(metric_in(&text, "paxkv_membership_epoch").unwrap() >= 1.0);
    assert_eq!(http_get(metrics, "/health").await.unwrap().0, 200);
    assert_eq!(http_get(metrics, "/nothing").await.unwrap().0, 404);

    // A wiped node is refused: it serves /health, with 503 and the reason.
    cluster.stop(3).await;
    cluster.wipe(3);
    cluster.restart(3);
    let metrics3 = cluster.metrics_addr(3).unwrap();
    eventually(
        "the wiped node's health says why it does not vote",
        Duration::from_secs(30),
        || async {
            matches!(http_get(metrics3, "/health").await, Ok((503, body)) if body.contains("store"))
        },
    )
    .await;
    assert_eq!(cluster.metric(3, "paxkv_voting").await, Some(0.0));
    assert_eq!(cluster.metric(3, "paxkv_store_refused").await, Some(1.0));
}
