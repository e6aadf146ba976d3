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
}

/// The request of one operation on key number `k`.
fn request(args: &Args, k: u64, value: &[u8]) -> Request<Full<Bytes>> {
    let key = format!("k{k:08}");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (method, path, body) = match (args.target, args.op) {
        (Target::Paxkv, Op::Put) => (Method::PUT, format!("/v1/kv/{key}"), value.to_vec()),
        (Target::Paxkv, Op::Get) => (Method::GET, format!("/v1/kv/{key}"), Vec::new()),
        (Target::Etcd, Op::Put) => (
            Method::POST,
            "/v3/kv/put".to_string(),
            serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value)})
                .to_string()
                .into_bytes(),
        ),
        (Target::Etcd, Op::Get) => (
            Method::POST,
            "/v3/kv/range".to_string(),
            serde_json::json!({"key": b64(key.as_bytes())})
                .to_string()
                .into_bytes(),
        ),
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Arc::new(Args::parse());
    assert!(!args.endpoints.is_empty(), "--endpoints: at least one");
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("a histogram"),
    ));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (args, next, errors, latencies) = (
                args.clone(),
                next.clone(),
                errors.clone(),
                latencies.clone(),
            );
            tokio::spawn(async move {
                let addr = args.endpoints[w as usize % args.endpoints.len()];
                let value = vec![b'v'; args.value_size];
                let mut rng_state = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut sender: Option<Sender> = None;
                let mut mine = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                while next.fetch_add(1, Ordering::Relaxed) < args.ops {
                    // xorshift: a key uniform over --keys, different per worker.
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    let k = rng_state % args.keys;
                    let began = Instant::now();
                    if sender.is_none() {
                        sender = connect(addr).await;
                    }
                    let ok = match sender.as_mut() {
                        Some(s) => match s.send_request(request(&args, k, &value)).await {
                            Ok(answer) => {
                                let status = answer.status();
                                let body = answer.into_body().collect().await;
                                body.is_ok() && succeeded(status)
                            }
                            Err(_) => {
                                sender = None;
                                false
                            }
                        },
                        None => false,
                    };
                    if ok {
                        let micros = began.elapsed().as_micros() as u64;
                        mine.record(micros.max(1)).expect("within bounds");
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
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
    let h = latencies.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "ops_per_s": (h.len() as f64 / elapsed).round(),
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": h.max() as f64 / 1000.0,
            "ok": h.len(),
            "errors": errors.load(Ordering::Relaxed),
        })
    );
}
