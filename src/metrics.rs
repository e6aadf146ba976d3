//! The series recorded where things happen ([`NodeMetrics`], part of a node's
//! `actors::Stats`): requests by operation and outcome, Paxos rounds by kind, commit latency
//! and group-commit sizes. Each node has its own (nodes in one process, as in the tests,
//! never share). Everything else `GET /metrics` shows is read at scrape time from the
//! counters a node keeps anyway; the endpoint is `actors::metrics`. README.md lists every
//! series.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts};

pub use crate::paxos::proposer::RoundKind;

/// The series recorded where things happen.
pub struct NodeMetrics {
    pub request_seconds: HistogramVec,
    pub rounds: IntCounterVec,
    pub commit_seconds: Histogram,
    pub group_commit_records: Histogram,
    /// Connections refused, closed or held back by a limit, by limit (`[limits]`).
    pub limited: IntCounterVec,
    /// Commits that waited for more writes, by reason (`actors::linger`).
    pub commit_lingers: IntCounterVec,
}

/// The labels of `paxkv_commit_lingers_total`: after a large group, or while the machine is
/// busy with work that does not wait on commits (`actors::linger`).
pub const LINGER_REASONS: [&str; 2] = ["many_writers", "among_reads"];

/// The labels of `paxkv_limited_total`, one per limit that refuses, closes or holds back.
pub const LIMITS: [&str; 8] = [
    "handshakes",
    "handshakes_per_source",
    "handshake_timeout",
    "connections",
    "connection_bytes",
    "node_bytes",
    "inbox_bytes",
    "slow_reader",
];

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

/// The upper bounds of `paxkv_request_duration_seconds`' buckets, seconds; a status's
/// `request_buckets` count the requests at or under each (the console's p99 is read from
/// them).
pub const REQUEST_BUCKET_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Default for NodeMetrics {
    fn default() -> Self {
        let seconds = REQUEST_BUCKET_SECONDS.to_vec();
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "paxkv_request_duration_seconds",
                "Time to serve a client request, by operation and outcome (its _count is the \
                 number of requests)",
            )
            .buckets(seconds.clone()),
            &["op", "outcome"],
        )
        .expect("valid metric");
        let rounds = IntCounterVec::new(
            Opts::new(
                "paxkv_paxos_rounds_total",
                "Paxos rounds this node's proposers started, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in RoundKind::ALL {
            rounds.with_label_values(&[kind.label()]);
        }
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "paxkv_commit_duration_seconds",
                "Time of one LMDB write transaction, fsync included",
            )
            .buckets(seconds),
        )
        .expect("valid metric");
        let group_commit_records = Histogram::with_opts(
            HistogramOpts::new(
                "paxkv_group_commit_records",
                "Acceptor records written by one transaction (one fsync)",
            )
            .buckets(prometheus::exponential_buckets(1.0, 4.0, 8).expect("valid buckets")),
        )
        .expect("valid metric");
        let limited = IntCounterVec::new(
            Opts::new(
                "paxkv_limited_total",
                "Connections refused or closed, and requests held back, by the limit that did it",
            ),
            &["limit"],
        )
        .expect("valid metric");
        for limit in LIMITS {
            limited.with_label_values(&[limit]);
        }
        let commit_lingers = IntCounterVec::new(
            Opts::new(
                "paxkv_commit_lingers_total",
                "Commits that waited for more writes to share their fsync, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in LINGER_REASONS {
            commit_lingers.with_label_values(&[reason]);
        }
        NodeMetrics {
            request_seconds,
            rounds,
            commit_seconds,
            group_commit_records,
            limited,
            commit_lingers,
        }
    }
}

impl NodeMetrics {
    /// One request of `op` that ended with `outcome` after `elapsed` (the histogram's
    /// `_count` counts requests: no separate counter to update on the hot path).
    pub fn request(&self, op: &str, outcome: &str, elapsed: Duration) {
        self.request_seconds
            .with_label_values(&[op, outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// Every request served so far, of every operation and outcome, and how many of them
    /// took at most each of [`REQUEST_BUCKET_SECONDS`] (cumulative, as Prometheus counts).
    /// Read on a status request, never on the hot path.
    pub fn request_latency(&self) -> (u64, Vec<u64>) {
        use prometheus::core::Collector;
        let mut total = 0;
        let mut buckets = vec![0; REQUEST_BUCKET_SECONDS.len()];
        for family in self.request_seconds.collect() {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                total += histogram.get_sample_count();
                for (sum, bucket) in buckets.iter_mut().zip(histogram.get_bucket()) {
                    *sum += bucket.cumulative_count();
                }
            }
        }
        (total, buckets)
    }

    pub fn round(&self, kind: RoundKind, n: u64) {
        if n > 0 {
            self.rounds.with_label_values(&[kind.label()]).inc_by(n);
        }
    }
}
