//! HTTP load generator (`scripts/bench-http.sh` runs it): one closed loop per connection,
//! `--concurrency` keep-alive HTTP/1.1 connections spread over `--endpoints`, sharing `--ops`
//! operations on `k00000000`.. (uniform over `--keys`), `--value-size`-byte values. The same
//! generator drives both systems, so that what differs is the server:
//!
//! - `--target paxkv`: paxkv's HTTP API, `PUT /v1/kv/{key}` with the value as the body, `GET
//!   /v1/kv/{key}` (linearizable);
//! - `--target etcd`: etcd's JSON gateway, `POST /v3/kv/put` `{"key", "value"}` (base64),
//!   `POST /v3/kv/range` `{"key"}` (linearizable, etcd's default).
//!
//! Leases (`--op lease-grant`, `--op lease-keepalive`): grants of `--ttl` seconds (paxkv
//! `POST /v1/leases`, etcd `POST /v3/lease/grant`); keepalives of `--leases` leases granted
//! first (not timed), uniformly (paxkv `POST /v1/leases/{id}/keepalive`, etcd `POST
//! /v3/lease/keepalive`). `--op lease-expiry`: grants `--leases` leases at once, then asks
//! after every one (paxkv `GET /v1/leases/{id}`: 404 when gone; etcd `POST
//! /v3/lease/timetolive`: TTL -1) until all are gone; one JSON line with the time from the
//! last grant to the last lease gone. With `--with-keys`, a key is attached to each lease
//! after the grants (`m00000000`..), and the keys are asked after (paxkv `GET
//! /v1/kv/{key}`: 404; etcd `POST /v3/kv/range`: no `kvs`), timed from the last attach (an
//! attach is a keepalive in paxkv, not in etcd: each system's leases then all end within
//! the attach phase's length of TTL after it).
//!
//! One JSON line on stdout: ops_per_s, p50_ms, p99_ms, max_ms, ok, errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Paxkv,
    Etcd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Put,
    Get,
    LeaseGrant,
    LeaseKeepalive,
    /// Grant `--leases` leases of `--ttl`, then ask after each until every one is gone:
    /// the time from the last grant until the last lease is gone.
    LeaseExpiry,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long, value_enum)]
    op: Op,
    /// host:port of each node's HTTP API, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<std::net::SocketAddr>,
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Leases kept alive by `--op lease-keepalive` (granted first).
    #[arg(long, default_value_t = 10_000)]
    leases: u64,
    /// A lease's TTL, seconds.
    #[arg(long, default_value_t = 60)]
    ttl: u64,
    /// `--op lease-expiry`: attach one key to each lease once all are granted (paxkv `PUT
    /// /v1/kv/{key}?lease=ID`, etcd `POST /v3/kv/put` with `lease`), and time the keys'
    /// deletion rather than the leases'.
    #[arg(long)]
    with_keys: bool,
}

/// The request of one operation on key number `k` (for a keepalive: on lease `k` of `leases`).
fn request(args: &Args, op: Op, k: u64, value: &[u8], leases: &[String]) -> Request<Full<Bytes>> {
    let key = format!("k{k:08}");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let (method, path, body) = match (args.target, op) {
        (Target::Paxkv, Op::Put) => (Method::PUT, format!("/v1/kv/{key}"), value.to_vec()),
        (Target::Paxkv, Op::Get) => (Method::GET, format!("/v1/kv/{key}"), Vec::new()),
        (Target::Etcd, Op::Put) => (
            Method::POST,
            "/v3/kv/put".to_string(),
            json(serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value)})),
        ),
        (Target::Etcd, Op::Get) => (
            Method::POST,
            "/v3/kv/range".to_string(),
            json(serde_json::json!({"key": b64(key.as_bytes())})),
        ),
        (Target::Paxkv, Op::LeaseGrant) => (
            Method::POST,
            "/v1/leases".to_string(),
            json(serde_json::json!({"ttl_s": args.ttl})),
        ),
        (Target::Etcd, Op::LeaseGrant) => (
            Method::POST,
            "/v3/lease/grant".to_string(),
            json(serde_json::json!({"TTL": args.ttl})),
        ),
        (Target::Paxkv, Op::LeaseKeepalive) => (
            Method::POST,
            format!("/v1/leases/{}/keepalive", leases[k as usize]),
            Vec::new(),
        ),
        (Target::Etcd, Op::LeaseKeepalive) => (
            Method::POST,
            "/v3/lease/keepalive".to_string(),
            json(serde_json::json!({"ID": leases[k as usize]})),
        ),
        // `mass_expiry` makes its own requests (`each`).
        (_, Op::LeaseExpiry) => unreachable!("a mass expiry is not a closed loop"),
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// A granted lease's id in a grant's answer (paxkv `{"id"}`, etcd `{"ID"}`).
fn lease_id(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("id")
        .or_else(|| json.get("ID"))
        .and_then(|id| id.as_str())
        .map(str::to_string)
}

/// A success: 2xx, and for paxkv a get of a key never written (404).
fn succeeded(status: hyper::StatusCode) -> bool {
    status.is_success() || status == hyper::StatusCode::NOT_FOUND
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// What one closed-loop run did.
struct Run {
    latencies: Histogram<u64>,
    errors: u64,
    elapsed: f64,
    /// The answers' bodies, when asked for.
    bodies: Vec<Bytes>,
}

/// `ops` operations of `op` from `--concurrency` workers, each on one keep-alive connection;
/// keys uniform over `keys`.
async fn run(
    args: Arc<Args>,
    op: Op,
    ops: u64,
    keys: u64,
    leases: Arc<Vec<String>>,
    keep: bool,
) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("a histogram"),
    ));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (args, next, errors, latencies, bodies, leases) = (
                args.clone(),
                next.clone(),
                errors.clone(),
                latencies.clone(),
                bodies.clone(),
                leases.clone(),
            );
            tokio::spawn(async move {
                let addr = args.endpoints[w as usize % args.endpoints.len()];
                let value = vec![b'v'; args.value_size];
                let mut rng_state = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut sender: Option<Sender> = None;
                let mut mine = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    // xorshift: a key uniform over `keys`, different per worker.
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    let k = rng_state % keys;
                    let began = Instant::now();
                    if sender.is_none() {
                        sender = connect(addr).await;
                    }
                    let answer = match sender.as_mut() {
                        Some(s) => {
                            match s.send_request(request(&args, op, k, &value, &leases)).await {
                                Ok(answer) => {
                                    let status = answer.status();
                                    match answer.into_body().collect().await {
                                        Ok(body) if succeeded(status) => Some(body.to_bytes()),
                                        _ => None,
                                    }
                                }
                                Err(_) => {
                                    sender = None;
                                    None
                                }
                            }
                        }
                        None => None,
                    };
                    match answer {
                        Some(body) => {
                            let micros = began.elapsed().as_micros() as u64;
                            mine.record(micros.max(1)).expect("within bounds");
                            if keep {
                                bodies.lock().unwrap().push(body);
                            }
                        }
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies.lock().unwrap().add(&mine).expect("same bounds");
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = latencies.lock().unwrap().clone();
    let bodies = std::mem::take(&mut *bodies.lock().unwrap());
    Run {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        bodies,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Arc::new(Args::parse());
    assert!(!args.endpoints.is_empty(), "--endpoints: at least one");
    if let Op::LeaseExpiry = args.op {
        return mass_expiry(args).await;
    }
    let leases = match args.op {
        Op::LeaseKeepalive => {
            // Granted first, not timed.
            let granted = run(
                args.clone(),
                Op::LeaseGrant,
                args.leases,
                1,
                Arc::default(),
                true,
            )
            .await;
            let ids: Vec<String> = granted.bodies.iter().filter_map(|b| lease_id(b)).collect();
            assert!(
                !ids.is_empty(),
                "no lease was granted ({} errors)",
                granted.errors
            );
            ids
        }
        _ => Vec::new(),
    };
    let keys = if leases.is_empty() {
        args.keys
    } else {
        leases.len() as u64
    };
    let busy_before = busy_micros();
    let measured = run(
        args.clone(),
        args.op,
        args.ops,
        keys,
        Arc::new(leases),
        false,
    )
    .await;
    let busy = busy_micros()
        .zip(busy_before)
        .map(|(after, before)| after - before);
    let h = &measured.latencies;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "ops_per_s": (h.len() as f64 / measured.elapsed).round(),
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": h.max() as f64 / 1000.0,
            "ok": h.len(),
            "errors": measured.errors,
            // The whole machine's busy CPU over the measured phase only (a keepalive run's
            // grants left out), per successful operation.
            "cpu_us_per_op": busy.map(|b| b / h.len().max(1)),
        })
    );
}

/// The whole machine's busy CPU time so far, microseconds (`/proc/stat`; `None` elsewhere).
fn busy_micros() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    // USER_HZ is 100 on Linux.
    Some(busy * 10_000)
}

/// `--op lease-expiry` (see the module doc).
async fn mass_expiry(args: Arc<Args>) {
    let started = Instant::now();
    let granted = run(
        args.clone(),
        Op::LeaseGrant,
        args.leases,
        1,
        Arc::default(),
        true,
    )
    .await;
    let last_grant = Instant::now();
    let ids: Vec<String> = granted.bodies.iter().filter_map(|b| lease_id(b)).collect();
    let count = ids.len();
    assert!(
        count > 0,
        "no lease was granted ({} errors)",
        granted.errors
    );
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let key = |i: usize| format!("m{i:08}");
    let mut attach_errors = 0;
    let mut last_attach = last_grant;
    if args.with_keys {
        let attached = each(&args, count, |i| match args.target {
            Target::Paxkv => (
                Method::PUT,
                format!("/v1/kv/{}?lease={}", key(i), ids[i]),
                b"v".to_vec(),
            ),
            Target::Etcd => (
                Method::POST,
                "/v3/kv/put".to_string(),
                json(serde_json::json!({"key": b64(key(i).as_bytes()), "value": b64(b"v"), "lease": ids[i]})),
            ),
        }, |status, _| status != hyper::StatusCode::OK)
        .await;
        attach_errors = attached.iter().filter(|failed| **failed).count();
        last_attach = Instant::now();
    }
    // Asked after from the last lease's deadline on (TTL after its last keepalive, which
    // in paxkv is its attach, in etcd its grant), one sweep a second: earlier sweeps could
    // not find every one gone, and would only load the cluster they measure.
    let last_keepalive = match (args.target, args.with_keys) {
        (Target::Paxkv, true) => last_attach,
        _ => last_grant,
    };
    let deadline = last_keepalive + std::time::Duration::from_secs(args.ttl);
    tokio::time::sleep_until(deadline.into()).await;
    // Per item: still there?
    let mut left: Vec<usize> = (0..count).collect();
    let mut sweeps = 0;
    let mut last_gone = last_attach;
    while !left.is_empty() {
        sweeps += 1;
        assert!(
            last_attach.elapsed() < std::time::Duration::from_secs(args.ttl + 900),
            "{} still there {:?} after the last grant or attach",
            left.len(),
            last_attach.elapsed()
        );
        let target = args.target;
        let still = each(
            &args,
            left.len(),
            |n| {
                let i = left[n];
                match (target, args.with_keys) {
                    (Target::Paxkv, true) => {
                        (Method::GET, format!("/v1/kv/{}", key(i)), Vec::new())
                    }
                    (Target::Etcd, true) => (
                        Method::POST,
                        "/v3/kv/range".to_string(),
                        json(serde_json::json!({"key": b64(key(i).as_bytes())})),
                    ),
                    (Target::Paxkv, false) => {
                        (Method::GET, format!("/v1/leases/{}", ids[i]), Vec::new())
                    }
                    (Target::Etcd, false) => (
                        Method::POST,
                        "/v3/lease/timetolive".to_string(),
                        json(serde_json::json!({"ID": ids[i]})),
                    ),
                }
            },
            |status, body| match target {
                Target::Paxkv => status != hyper::StatusCode::NOT_FOUND,
                Target::Etcd => {
                    let gone = serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .map(|j| {
                            if args.with_keys {
                                j.get("kvs").is_none()
                            } else {
                                j["TTL"].as_str() == Some("-1")
                            }
                        });
                    gone != Some(true)
                }
            },
        )
        .await;
        left = left
            .iter()
            .zip(still)
            .filter(|(_, still)| *still)
            .map(|(i, _)| *i)
            .collect();
        if left.is_empty() {
            last_gone = Instant::now();
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    let past_deadline = last_gone.saturating_duration_since(deadline).as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "leases": count,
            "with_keys": args.with_keys,
            "attach_errors": attach_errors,
            "ttl_s": args.ttl,
            "grant_s": (last_grant - started).as_secs_f64(),
            "attach_s": (last_attach - last_grant).as_secs_f64(),
            "all_gone_after_last_grant_or_attach_s": (last_gone - last_attach).as_secs_f64(),
            "last_gone_past_last_deadline_s": past_deadline,
            "sweeps": sweeps,
        })
    );
}

/// Sends the request `make(i)` for `i` in `0..n` over `--concurrency` keep-alive
/// connections (spread over the endpoints), one request in flight on each; `judge(status,
/// body)` of each answer (`true` when the request could not be made).
async fn each(
    args: &Args,
    n: usize,
    make: impl Fn(usize) -> (Method, String, Vec<u8>),
    judge: impl Fn(hyper::StatusCode, &[u8]) -> bool,
) -> Vec<bool> {
    let next = AtomicU64::new(0);
    let results = Mutex::new(vec![true; n]);
    let (make, judge, next, shared) = (&make, &judge, &next, &results);
    let workers = (0..args.concurrency as usize).map(|w| async move {
        let addr = args.endpoints[w % args.endpoints.len()];
        let mut sender: Option<Sender> = None;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            if i >= n {
                return;
            }
            if sender.is_none() {
                sender = connect(addr).await;
            }
            let Some(conn) = sender.as_mut() else {
                continue;
            };
            let (method, path, body) = make(i);
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "bench")
                .body(Full::new(Bytes::from(body)))
                .expect("a valid request");
            let answer = match conn.send_request(request).await {
                Ok(answer) => answer,
                Err(_) => {
                    sender = None;
                    continue;
                }
            };
            let status = answer.status();
            let body = answer.into_body().collect().await.map(|b| b.to_bytes());
            shared.lock().unwrap()[i] = judge(status, body.as_deref().unwrap_or(&[]));
        }
    });
    futures_util::future::join_all(workers).await;
    results.into_inner().unwrap()
}
