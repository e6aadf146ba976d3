//! The metrics endpoint of a node: `GET /metrics` in the Prometheus text format and
//! `GET /health`, on its `metrics_addr` (optional, per `[[node]]`), over plain HTTP/1.1
//! (hyper). A scrape renders the histograms recorded where things happen
//! ([`crate::metrics::NodeMetrics`]) and reads everything else from the counters the node
//! keeps anyway (`Stats`, voting, the membership epoch, the peer queues), so nothing is
//! counted twice.
//!
//! README.md lists every series. The endpoint is read-only and reveals no key or value; it
//! is not TLS: keep `metrics_addr` on an interface only the monitoring network reaches. It
//! serves at most [`MAX_CONNECTIONS`] connections at once, and a request's headers must
//! arrive within [`HEADER_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::actors::http_server;
use crate::actors::membership::InstalledMembership;
use crate::actors::outbox::Outbox;
use crate::actors::storage::{self, StorageActor};
use crate::actors::{Readiness, Stats};
use crate::error::{Error, Result};

/// Connections the endpoint serves at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a request's headers may take to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub stats: Arc<Stats>,
    pub readiness: Arc<Readiness>,
    pub view: Arc<InstalledMembership>,
    pub outbox: Outbox,
    pub refused: Arc<std::sync::atomic::AtomicBool>,
    /// Counts the store's records for `paxkv_records_stored`, at each scrape.
    pub storage: Addr<StorageActor>,
}

fn counter(registry: &Registry, name: &str, help: &str, value: u64) {
    let c = IntCounter::new(name, help).expect("valid metric");
    c.inc_by(value);
    registry.register(Box::new(c)).expect("registered once");
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) {
    let g = IntGauge::new(name, help).expect("valid metric");
    g.set(value);
    registry.register(Box::new(g)).expect("registered once");
}

impl Sources {
    /// Every series, in the Prometheus text format; `records_stored`: the store's count of
    /// its records (`None`: it did not answer, and the series is left out of this scrape).
    pub fn render(&self, records_stored: Option<u64>) -> String {
        let registry = Registry::new();
        if let Some(stored) = records_stored {
            gauge(
                &registry,
                "paxkv_records_stored",
                "Keys this node's store holds a record of, tombstones and the cluster's own keys included (none is collected yet)",
                stored as i64,
            );
        }
        self.register_histograms(&registry);
        self.register_counters(&registry);
        self.register_live_actors(&registry);
        self.register_queue_depths(&registry);
        self.register_gauges(&registry);
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .expect("encoding into memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// The histograms and labelled counters recorded where things happen.
    fn register_histograms(&self, registry: &Registry) {
        let m = &self.stats.metrics;
        for c in [
            Box::new(m.request_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.rounds.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.group_commit_records.clone()),
            Box::new(m.limited.clone()),
            Box::new(m.commit_lingers.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
    }

    /// The counters the node keeps anyway (`Stats`).
    fn register_counters(&self, registry: &Registry) {
        let s = &*self.stats;
        let get = Stats::get;
        let counters = [
            ("paxkv_commits_total", "LMDB write transactions committed (each one fsync)", get(&s.commits)),
            ("paxkv_records_written_total", "Acceptor records those transactions wrote", get(&s.records_written)),
            ("paxkv_peer_frames_dropped_total", "Peer frames dropped: a peer's queue full or the peer unreachable, or this node's supervisor busy", get(&s.peer_frames_dropped)),
            ("paxkv_bad_frames_total", "Frames refused: malformed, oversized, failing validation, or Paxos from a non-member", get(&s.bad_frames)),
            ("paxkv_forged_frames_total", "Frames dropped because the connection's certificate may not send them", get(&s.forged_frames)),
            ("paxkv_foreign_frames_total", "Paxos frames, memberships and node calls of another cluster identity refused", get(&s.foreign_frames)),
            ("paxkv_other_version_frames_total", "Connections closed at a frame of another protocol version: a node or client of another build", get(&s.other_version_frames)),
            ("paxkv_refused_connections_total", "Connections refused before any frame was read (failed TLS handshake, too many connections)", get(&s.refused_connections)),
            ("paxkv_connections_accepted_total", "Connections accepted (TLS handshake done, or plaintext), clients' and peers'", get(&s.accepted_connections)),
            ("paxkv_reads_from_durable_total", "Acceptor reads answered from the record last made durable, without a stop in the acceptor's mailbox", get(&s.reads_from_durable)),
            ("paxkv_stale_refused_total", "Paxos requests refused for an older membership epoch", get(&s.stale_refused)),
            ("paxkv_dropped_not_voting_total", "Paxos requests dropped while this node did not vote", get(&s.dropped_not_voting)),
            ("paxkv_acceptor_restarts_total", "Acceptor actors that crashed and were restarted from disk", get(&s.acceptor_restarts)),
            ("paxkv_proposer_restarts_total", "Proposer actors that crashed and were restarted", get(&s.proposer_restarts)),
            ("paxkv_anti_entropy_rounds_total", "Anti-entropy rounds completed", get(&s.sync_rounds)),
            ("paxkv_records_adopted_total", "Records taken from peers by anti-entropy", get(&s.records_adopted)),
            ("paxkv_keys_settled_total", "Keys settled at a classic ballot (anti-entropy sweeps, membership changes)", get(&s.keys_settled)),
            ("paxkv_announcements_sent_total", "Announcements of chosen changes sent to watching nodes (one per node)", get(&s.announcements)),
            ("paxkv_announcements_received_total", "Announcements of chosen changes received from proposers", get(&s.announcements_received)),
            ("paxkv_watchers_cut_total", "Watches ended because their client read slower than their keys changed", get(&s.watchers_cut)),
            ("paxkv_watch_changes_sent_total", "Changes sent to watchers", get(&s.watch_changes_sent)),
            ("paxkv_proposer_timer_wakeups_total", "Proposers woken by their own timer: rounds slower than read_grace or a phase timeout, backoffs, deadlines", get(&s.proposer_timer_wakeups)),
        ];
        for (name, help, value) in counters {
            counter(registry, name, help, value);
        }
    }

    /// The per-key actors alive now, by kind.
    fn register_live_actors(&self, registry: &Registry) {
        let s = &*self.stats;
        let get = Stats::get;
        let live = IntGaugeVec::new(
            Opts::new("paxkv_live_actors", "Per-key actors alive now, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        live.with_label_values(&["proposer"])
            .set(get(&s.live_proposers) as i64);
        live.with_label_values(&["acceptor"])
            .set(get(&s.live_acceptors) as i64);
        registry.register(Box::new(live)).expect("registered once");
    }

    /// The frames queued for each peer.
    fn register_queue_depths(&self, registry: &Registry) {
        let depth = IntGaugeVec::new(
            Opts::new(
                "paxkv_peer_queue_depth",
                "Frames queued for a peer, by peer node id",
            ),
            &["peer"],
        )
        .expect("valid metric");
        for (peer, queued) in self.outbox.queue_depths() {
            depth
                .with_label_values(&[&peer.to_string()])
                .set(queued as i64);
        }
        registry.register(Box::new(depth)).expect("registered once");
    }

    /// The open connections, and this node's standing: voting, its store refused, its
    /// membership epoch.
    fn register_gauges(&self, registry: &Registry) {
        let s = &*self.stats;
        gauge(
            registry,
            "paxkv_connections_open",
            "Connections served now, clients' and peers'",
            Stats::get(&s.open_connections) as i64,
        );
        gauge(
            registry,
            "paxkv_watchers",
            "Watches this node serves now",
            Stats::get(&s.watchers) as i64,
        );
        gauge(
            registry,
            "paxkv_voting",
            "1 while this node's acceptors vote",
            self.readiness.is_voting() as i64,
        );
        gauge(
            registry,
            "paxkv_store_refused",
            "1 if this node's store is not the one its membership records (wiped, replaced, an older copy)",
            self.refused.load(std::sync::atomic::Ordering::Acquire) as i64,
        );
        gauge(
            registry,
            "paxkv_membership_epoch",
            "The membership epoch installed on this node (0: none yet)",
            self.view.epoch() as i64,
        );
    }

    fn health(&self) -> (StatusCode, String) {
        if self.readiness.is_voting() {
            (StatusCode::OK, "voting\n".into())
        } else if self.refused.load(std::sync::atomic::Ordering::Acquire) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not voting: this store is not the one the membership records (wiped, replaced or an older copy); remove and add the node again\n".into(),
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not voting: not a voter of the installed membership, or still confirming its generation\n".into(),
            )
        }
    }

    async fn answer(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let stored = storage::records_stored(&self.storage, "metrics").await;
                (StatusCode::OK, prometheus::TEXT_FORMAT, self.render(stored))
            }
            (&Method::GET, "/health") => {
                let (status, body) = self.health();
                (status, "text/plain; charset=utf-8", body)
            }
            (&Method::GET, _) => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: GET /metrics or /health\n".into(),
            ),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET\n".into(),
            ),
        };
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    }
}

/// Binds `addr` (an error names it).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("metrics_addr: cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `/metrics` and `/health` on `listener` until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, sources: Sources) {
    let answer = move |request: Request<hyper::body::Incoming>, _| {
        let sources = sources.clone();
        async move { sources.answer(&request).await }
    };
    let endpoint = http_server::Endpoint {
        name: "metrics endpoint",
        max_connections: MAX_CONNECTIONS,
        max_per_source: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
        write_stall: HEADER_TIMEOUT,
        tls: None,
    };
    http_server::serve(listener, endpoint, answer).await
}
