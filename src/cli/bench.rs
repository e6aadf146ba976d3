//! `paxkv bench`: a closed-loop load generator, the paxkv side of
//! `../shared/bench/compare-etcd.sh` (its etcd side is `peerbench`, which works the same way).
//!
//! C workers (tokio tasks) share N operations through one atomic counter; each worker issues
//! one request, awaits the reply, records its latency and issues the next. Workers share
//! pipelined connections: one [`Client`] (one connection per node, many requests in flight on
//! it), or `--conns M` independent clients with the workers assigned round-robin. Keys are
//! `k00000000`.. uniform over K keys (a seeded [`SmallRng`] per worker); `--op load` writes each
//! key of 0..K exactly once instead. Errors are counted by kind and are not latency samples.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use paxkv::client::Client;
use paxkv::error::{Error, ErrorClass};
use paxkv::paxos::quorum::Quorums;
use paxkv::paxos::types::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use super::{EXIT_OK, EXIT_UNAVAILABLE};

/// The largest latency recorded exactly (one hour, in microseconds); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Errors printed to stderr as they happen; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;
const PROGRESS_TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Put V-byte values to random keys.
    Put,
    /// Linearizable gets of random keys.
    Get,
    /// Put every key of 0..K exactly once (--ops is ignored).
    Load,
    /// Gets and puts of random keys, --read-ratio of them gets.
    Mixed,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Put => "put",
            BenchOp::Get => "get",
            BenchOp::Load => "load",
            BenchOp::Mixed => "mixed",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    pub op: BenchOp,
    /// Operations in all, shared by the workers (for --op load: --keys).
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Workers, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Distinct keys: k00000000, k00000001, ... (chosen uniformly).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Independent clients (each with its own connection per node); workers are assigned to
    /// them round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub conns: u64,
    /// For --op mixed: the share of gets, 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Seeds the workers' key choices (worker w uses SEED + w).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(_) => Err("must be between 0 and 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes key number `i`, `k{i:08}`, into `buf` (reusing its allocation).
fn write_key(buf: &mut Vec<u8>, i: u64) {
    buf.clear();
    write!(buf, "k{i:08}").expect("writing to a Vec");
}

/// Takes the next operation of `total` from the shared counter: its index, or `None` when all
/// are taken. Each index below `total` is handed out exactly once.
fn claim(next: &AtomicU64, total: u64) -> Option<u64> {
    let i = next.fetch_add(1, Ordering::Relaxed);
    (i < total).then_some(i)
}

/// A V-byte value: a repeating printable pattern.
fn make_value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct ErrorCounts {
    unavailable: u64,
    unknown: u64,
    busy: u64,
    other: u64,
}

impl ErrorCounts {
    fn total(&self) -> u64 {
        self.unavailable + self.unknown + self.busy + self.other
    }

    fn count(&mut self, e: &Error) {
        match e.class() {
            ErrorClass::Retry if matches!(e, Error::Busy(_)) => self.busy += 1,
            ErrorClass::Retry => self.unavailable += 1,
            ErrorClass::MayHaveApplied | ErrorClass::Storage => self.unknown += 1,
            ErrorClass::BadInput => self.other += 1,
        }
    }
}

/// What the workers record, behind one lock (uncontended on the client's single thread).
struct Stats {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: ErrorCounts,
    not_found: u64,
}

struct Shared {
    total: u64,
    next: AtomicU64,
    done: AtomicU64,
    stats: Mutex<Stats>,
    progress: ProgressBar,
}

impl Shared {
    fn new(total: u64, json: bool) -> Shared {
        Shared {
            total,
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            stats: Mutex::new(Stats {
                reads: new_histogram(),
                writes: new_histogram(),
                errors: ErrorCounts::default(),
                not_found: 0,
            }),
            progress: progress_bar(total, json),
        }
    }

    fn record(&self, read: bool, result: paxkv::Result<Outcome>, latency_us: u64) {
        let mut stats = self.stats.lock().unwrap();
        match result {
            Ok(outcome) => {
                if matches!(outcome, Outcome::Get { value: None, .. }) {
                    stats.not_found += 1;
                }
                let h = if read {
                    &mut stats.reads
                } else {
                    &mut stats.writes
                };
                h.saturating_record(latency_us.max(1));
            }
            Err(e) => {
                stats.errors.count(&e);
                let shown = stats.errors.total() <= ERRORS_SHOWN;
                drop(stats);
                if shown {
                    self.progress.suspend(|| eprintln!("error: {e}"));
                }
            }
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The plan every worker follows.
struct Plan {
    op: BenchOp,
    total: u64,
    keys: u64,
    read_ratio: f64,
    seed: u64,
    value: Vec<u8>,
}

async fn worker(w: u64, client: Client, plan: Arc<Plan>, shared: Arc<Shared>) {
    let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(w));
    let mut key = Vec::with_capacity(16);
    while let Some(i) = claim(&shared.next, plan.total) {
        let (k, read) = match plan.op {
            BenchOp::Load => (i, false),
            BenchOp::Put => (rng.random_range(0..plan.keys), false),
            BenchOp::Get => (rng.random_range(0..plan.keys), true),
            BenchOp::Mixed => (
                rng.random_range(0..plan.keys),
                rng.random_bool(plan.read_ratio),
            ),
        };
        write_key(&mut key, k);
        let started = Instant::now();
        let result = if read {
            client.get(&key).await
        } else {
            client.put(&key, &plan.value).await
        };
        let latency_us = started.elapsed().as_micros() as u64;
        shared.record(read, result, latency_us);
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Latency {
    samples: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Microseconds as milliseconds with 3 decimals, a JSON number.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

struct Summary {
    op: BenchOp,
    ops: u64,
    ok: u64,
    errors: ErrorCounts,
    not_found: u64,
    elapsed_s: f64,
    concurrency: u64,
    conns: u64,
    keys: u64,
    value_size: usize,
    read_ratio: f64,
    latency: Latency,
    /// For `mixed`: gets and puts apart.
    reads: Latency,
    writes: Latency,
    /// The node processes' own CPU over the run, microseconds (`None`: some node did not
    /// say: a node down, or a build before `NodeStatus::cpu_us`).
    node_cpu_us: Option<u64>,
}

impl Summary {
    /// The run's figures: `ops` operations of `args` on `conns` clients in `elapsed_s`.
    fn of(
        stats: &Stats,
        args: &BenchArgs,
        conns: u64,
        ops: u64,
        elapsed_s: f64,
        node_cpu_us: Option<u64>,
    ) -> Summary {
        let mut all = stats.reads.clone();
        all.add(&stats.writes)
            .expect("histograms with the same bounds");
        Summary {
            op: args.op,
            ops,
            ok: all.len(),
            errors: stats.errors,
            not_found: stats.not_found,
            elapsed_s,
            concurrency: args.concurrency,
            conns,
            keys: args.keys,
            value_size: args.value_size,
            read_ratio: args.read_ratio,
            latency: Latency::of(&all),
            reads: Latency::of(&stats.reads),
            writes: Latency::of(&stats.writes),
            node_cpu_us,
        }
    }

    /// The nodes' own CPU per successful operation, microseconds.
    fn node_cpu_us_per_op(&self) -> Option<f64> {
        let cpu = self.node_cpu_us?;
        (self.ok > 0).then(|| cpu as f64 / self.ok as f64)
    }

    fn ops_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.ok as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let l = &self.latency;
        let mut v = serde_json::json!({
            "op": self.op.name(),
            "ops": self.ops,
            "ok": self.ok,
            "errors": self.errors.total(),
            "errors_unavailable": self.errors.unavailable,
            "errors_unknown": self.errors.unknown,
            "errors_busy": self.errors.busy,
            "errors_other": self.errors.other,
            "not_found": self.not_found,
            "elapsed_s": round(self.elapsed_s, 3),
            "ops_per_s": round(self.ops_per_s(), 1),
            "p50_ms": ms(l.p50),
            "p90_ms": ms(l.p90),
            "p99_ms": ms(l.p99),
            "p999_ms": ms(l.p999),
            "max_ms": ms(l.max),
            "concurrency": self.concurrency,
            "conns": self.conns,
            "keys": self.keys,
            "value_size": self.value_size,
            "node_cpu_us_per_op": self.node_cpu_us_per_op().map(|c| round(c, 1)),
        });
        if self.op == BenchOp::Mixed {
            let o = v.as_object_mut().expect("an object");
            o.insert("read_ratio".into(), self.read_ratio.into());
            for (prefix, l) in [("get", &self.reads), ("put", &self.writes)] {
                o.insert(format!("{prefix}_ok"), l.samples.into());
                o.insert(format!("{prefix}_p50_ms"), ms(l.p50).into());
                o.insert(format!("{prefix}_p99_ms"), ms(l.p99).into());
                o.insert(format!("{prefix}_max_ms"), ms(l.max).into());
            }
        }
        v
    }

    fn table(&self) -> String {
        let e = &self.errors;
        let lat = |l: &Latency| {
            format!(
                "{:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            )
        };
        let mut t = format!(
            "op           {op}\n\
             concurrency  {c} workers on {conns} client(s); {keys} keys, {vs}-byte values\n\
             ops          {ops}\n\
             ok           {ok}{nf}\n\
             errors       {errors} (unavailable {u}, unknown {unk}, busy {b}, other {o})\n\
             elapsed      {el:.3} s\n\
             throughput   {tp:.1} ops/s\n\
             node CPU     {cpu} per op (the node processes' own, all nodes)\n\
             latency ms         p50       p90       p99     p99.9       max\n\
             {all:<13}{l}\n",
            op = self.op.name(),
            c = self.concurrency,
            conns = self.conns,
            keys = self.keys,
            vs = self.value_size,
            ops = self.ops,
            ok = self.ok,
            nf = if self.not_found > 0 {
                format!(" ({} gets found no value)", self.not_found)
            } else {
                String::new()
            },
            errors = e.total(),
            u = e.unavailable,
            unk = e.unknown,
            b = e.busy,
            o = e.other,
            el = self.elapsed_s,
            tp = self.ops_per_s(),
            cpu = self
                .node_cpu_us_per_op()
                .map_or("unknown".to_string(), |c| format!("{c:.1} µs")),
            all = "  all",
            l = lat(&self.latency),
        );
        if self.op == BenchOp::Mixed {
            t.push_str(&format!("{:<13}{}\n", "  get", lat(&self.reads)));
            t.push_str(&format!("{:<13}{}\n", "  put", lat(&self.writes)));
        }
        t
    }
}

/// Opens every client's connection to every node before the clock starts, as etcd's client
/// does on connect. Returns how many nodes answered the first client; a node that does not
/// answer is left to the operations to find out.
async fn warm_up(clients: &[Client]) -> usize {
    let mut pings = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..client.addrs().len() {
            let client = client.clone();
            pings.push((c, tokio::spawn(async move { client.ping(i).await })));
        }
    }
    let mut answered = 0;
    for (c, ping) in pings {
        if matches!(ping.await, Ok(Ok(()))) && c == 0 {
            answered += 1;
        }
    }
    answered
}

fn progress_bar(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("a valid progress template"),
    );
    bar
}

/// Runs the benchmark on `clients` (one per `--conns`) and returns the exit code.
pub async fn run(clients: Vec<Client>, args: BenchArgs, json: bool) -> i32 {
    assert!(!clients.is_empty(), "bench needs a client");
    let total = match args.op {
        BenchOp::Load => args.keys,
        _ => args.ops,
    };
    let plan = Arc::new(Plan {
        op: args.op,
        total,
        keys: args.keys,
        read_ratio: args.read_ratio,
        seed: args.seed,
        value: make_value(args.value_size),
    });
    let shared = Arc::new(Shared::new(total, json));
    let nodes = clients[0].addrs().len();
    let answered = warm_up(&clients).await;
    if answered < Quorums::new(nodes).classic() {
        // Every operation would wait out its timeout: say so at once instead.
        eprintln!("error: unavailable: {answered} of {nodes} nodes answer; a majority is needed");
        return EXIT_UNAVAILABLE;
    }

    let cpu_before = nodes_cpu_us(&clients[0]).await;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let client = clients[(w % clients.len() as u64) as usize].clone();
            tokio::spawn(worker(w, client, plan.clone(), shared.clone()))
        })
        .collect();
    let ticker = spawn_progress_ticker(shared.clone());
    for w in workers {
        w.await.expect("a bench worker panicked");
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_after = nodes_cpu_us(&clients[0]).await;
    let node_cpu_us = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.saturating_sub(before));
    ticker.abort();
    shared.progress.finish_and_clear();

    let stats = shared.stats.lock().unwrap();
    let summary = Summary::of(
        &stats,
        &args,
        clients.len() as u64,
        total,
        elapsed_s,
        node_cpu_us,
    );
    if json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.table());
    }
    if summary.errors.total() > 0 {
        EXIT_UNAVAILABLE
    } else {
        EXIT_OK
    }
}

/// The CPU time every node's process used so far, summed, from their statuses (`None`: a
/// node did not answer, or says 0: a build before it was counted).
async fn nodes_cpu_us(client: &Client) -> Option<u64> {
    let mut total = 0;
    for i in 0..client.addrs().len() {
        match client.status(i).await {
            Ok(status) if status.cpu_us > 0 => total += status.cpu_us,
            _ => return None,
        }
    }
    Some(total)
}

/// Moves the progress bar to the operations done, every [`PROGRESS_TICK`], until all are.
fn spawn_progress_ticker(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        loop {
            tick.tick().await;
            let done = shared.done.load(Ordering::Relaxed);
            shared.progress.set_position(done);
            if done >= shared.total {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_k_and_eight_digits() {
        let mut buf = Vec::new();
        write_key(&mut buf, 0);
        assert_eq!(buf, b"k00000000");
        write_key(&mut buf, 42);
        assert_eq!(buf, b"k00000042");
        write_key(&mut buf, 99_999_999);
        assert_eq!(buf, b"k99999999");
        for i in [0, 7, 12_345, 9_999_999] {
            write_key(&mut buf, i);
            assert_eq!(buf, format!("k{i:08}").as_bytes());
        }
    }

    /// `--op load`: workers claiming from the shared counter write every key of 0..K exactly
    /// once between them, whatever the interleaving.
    #[test]
    fn load_claims_cover_every_key_exactly_once() {
        for (keys, workers) in [(1u64, 4usize), (10_000, 7), (1_000, 256), (5, 1)] {
            let next = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..workers)
                .map(|_| {
                    let next = next.clone();
                    std::thread::spawn(move || {
                        let mut mine = Vec::new();
                        while let Some(i) = claim(&next, keys) {
                            mine.push(i);
                        }
                        mine
                    })
                })
                .collect();
            let mut seen = vec![0u32; keys as usize];
            for t in threads {
                for i in t.join().unwrap() {
                    seen[i as usize] += 1;
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "keys {keys}, workers {workers}"
            );
            // Finished workers keep getting None.
            assert_eq!(claim(&next, keys), None);
        }
    }

    #[test]
    fn values_have_the_size_and_are_not_zeros() {
        assert_eq!(make_value(0).len(), 0);
        let v = make_value(100);
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(|&b| b != 0));
    }

    #[test]
    fn read_ratio_is_between_0_and_1() {
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert_eq!(parse_ratio("1"), Ok(1.0));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("x").is_err());
    }

    fn summary(op: BenchOp) -> Summary {
        let mut h = new_histogram();
        for us in [1_234, 2_000, 3_500, 120_777] {
            h.record(us).unwrap();
        }
        let latency = Latency::of(&h);
        Summary {
            op,
            ops: 5,
            ok: 4,
            errors: ErrorCounts {
                unavailable: 1,
                ..ErrorCounts::default()
            },
            not_found: 0,
            elapsed_s: 2.0,
            concurrency: 16,
            conns: 1,
            keys: 100,
            value_size: 10,
            read_ratio: 0.5,
            latency,
            reads: latency,
            writes: Latency::default(),
            node_cpu_us: Some(600),
        }
    }

    #[test]
    fn json_has_the_fields_the_compare_script_reads() {
        let line = summary(BenchOp::Put).to_json().to_string();
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["op"], "put");
        for field in [
            "ops",
            "ok",
            "errors",
            "elapsed_s",
            "ops_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "concurrency",
            "keys",
            "value_size",
        ] {
            assert!(v[field].is_number(), "{field} is a number in {line}");
        }
        assert_eq!(v["ops"], 5);
        assert_eq!(v["ok"], 4);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["errors_unavailable"], 1);
        assert_eq!(v["ops_per_s"], 2.0);
        assert_eq!(v["p50_ms"], 2.0);
        assert_eq!(v["max_ms"].as_f64().unwrap(), 120.831);
        assert!(v.get("get_p50_ms").is_none());
        assert_eq!(
            v["node_cpu_us_per_op"], 150.0,
            "600 µs of the nodes over 4 ops"
        );
        let unknown = Summary {
            node_cpu_us: None,
            ..summary(BenchOp::Put)
        };
        assert!(unknown.to_json()["node_cpu_us_per_op"].is_null());
        assert!(unknown.table().contains("node CPU     unknown"));
        assert!(summary(BenchOp::Put).table().contains("150.0 µs per op"));

        let mixed = summary(BenchOp::Mixed).to_json();
        assert_eq!(mixed["op"], "mixed");
        assert!(mixed["get_p99_ms"].is_number());
        assert!(mixed["put_p99_ms"].is_number());
        assert!(summary(BenchOp::Mixed).table().contains("  get"));
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let mut e = ErrorCounts::default();
        e.count(&Error::Unavailable("x".into()));
        e.count(&Error::Unknown("x".into()));
        e.count(&Error::Unknown("x".into()));
        e.count(&Error::Busy("x".into()));
        e.count(&Error::BadRequest("x".into()));
        assert_eq!(
            e,
            ErrorCounts {
                unavailable: 1,
                unknown: 2,
                busy: 1,
                other: 1
            }
        );
        assert_eq!(e.total(), 5);
    }
}
