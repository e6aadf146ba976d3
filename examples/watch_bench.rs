//! Watch benchmark (`scripts/bench-watch.sh` runs it against a local release cluster):
//! opens `--watchers` watches spread over `--keys` keys, puts `--puts` values to those keys
//! from `--concurrency` workers, and reports
//! - put throughput, and the machine's busy CPU per put (`/proc/stat`);
//! - delivery latency, from a put's acknowledgement to each watcher's event of that version
//!   (p50, p99, max: an event that came before the acknowledgement counts 0);
//! - the nodes' resident memory before and after the watches opened, per watcher.
//!
//! One JSON line on stdout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use paxkv::client::{Client, ClientOptions};
use paxkv::config::Config;
use paxkv::paxos::types::Outcome;
use paxkv::watch::{WatchItem, WatchOptions};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "config/cluster.toml")]
    config: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    #[arg(long, default_value_t = 100)]
    keys: usize,
    #[arg(long, default_value_t = 20_000)]
    puts: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
}

fn key(i: usize) -> Vec<u8> {
    format!("wk{i:06}").into_bytes()
}

/// Busy CPU of the whole machine, in microseconds (`/proc/stat`).
fn busy_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let f: Vec<u64> = stat
        .lines()
        .next()
        .expect("a cpu line")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("a number"))
        .collect();
    let ticks = f[..8].iter().sum::<u64>() - f[3] - f[4];
    ticks * 1_000_000 / 100
}

/// Resident bytes of every `paxkv node` process.
fn nodes_rss() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_node = args.first().is_some_and(|a| a.ends_with(b"paxkv"))
            && args.iter().any(|a| *a == b"node");
        if !is_node {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            total += kb * 1024;
        }
    }
    total
}

type Seen = Arc<Mutex<Vec<(usize, u64, Instant)>>>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = Config::load(&args.config).expect("the cluster config");
    let options = ClientOptions {
        op_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let client = Client::new(config.addrs(), options);
    for k in 0..args.keys {
        client.put(&key(k), b"start").await.expect("a first put");
    }
    let rss_before = nodes_rss();
    // The watchers, watcher w on key w % keys; each records (key, version, when) per event.
    let seen: Seen = Arc::default();
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let k = w % args.keys;
        let mut stream = client.watch(&key(k), WatchOptions::default());
        let (seen, started) = (seen.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            while let Some(Ok(item)) = stream.next().await {
                if let WatchItem::Change { version, .. } = item {
                    if first {
                        started.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                    seen.lock().unwrap().push((k, version, Instant::now()));
                }
            }
        }));
    }
    // Every watch has begun once it delivered a change: put each key until all have.
    let until = Instant::now() + Duration::from_secs(300);
    while (started.load(Ordering::Relaxed) as usize) < args.watchers {
        assert!(Instant::now() < until, "the watches did not all begin");
        for k in 0..args.keys {
            client.put(&key(k), b"warm").await.expect("a warm-up put");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_after = nodes_rss();
    seen.lock().unwrap().clear();
    // The puts, timed.
    let acked: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let (t0, cpu0) = (Instant::now(), busy_us());
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, acked, next) = (client.clone(), acked.clone(), next.clone());
            let (puts, keys) = (args.puts, args.keys);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= puts {
                        return;
                    }
                    let k = (i as usize) % keys;
                    if let Ok(Outcome::Put { version }) = client.put(&key(k), b"value").await {
                        acked.lock().unwrap().insert((k, version), Instant::now());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a worker");
    }
    let (elapsed, cpu) = (t0.elapsed(), busy_us() - cpu0);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    // Wait until every watcher saw its key's last version (or 30 s).
    let mut last: HashMap<usize, u64> = HashMap::new();
    for (k, v) in acked.keys() {
        let l = last.entry(*k).or_default();
        *l = (*l).max(*v);
    }
    let expected_events: usize = (0..args.watchers)
        .map(|w| acked.keys().filter(|(k, _)| *k == w % args.keys).count())
        .sum();
    let until = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < expected_events && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (k, v, at) in &seen {
        if let Some(ack) = acked.get(&(*k, *v)) {
            let us = at.saturating_duration_since(*ack).as_micros() as u64;
            latency.record(us.max(1)).expect("in bounds");
        }
    }
    let per_watcher = (rss_after.saturating_sub(rss_before)) / args.watchers.max(1) as u64;
    let report = serde_json::json!({
        "watchers": args.watchers,
        "keys": args.keys,
        "puts": acked.len(),
        "puts_per_s": (acked.len() as f64 / elapsed.as_secs_f64()).round(),
        "machine_cpu_us_per_put": (cpu as f64 / acked.len().max(1) as f64).round(),
        "events_expected": expected_events,
        "events_delivered": latency.len(),
        "latency_ms_p50": latency.value_at_quantile(0.5) as f64 / 1000.0,
        "latency_ms_p99": latency.value_at_quantile(0.99) as f64 / 1000.0,
        "latency_ms_max": latency.max() as f64 / 1000.0,
        "node_rss_mib_before": rss_before >> 20,
        "node_rss_mib_after_watches": rss_after >> 20,
        "node_bytes_per_watcher": per_watcher,
    });
    println!("{report}");
    for t in tasks {
        t.abort();
    }
}
