//! `paxkv lock` in the spirit of Jepsen's lock tests: several processes run `paxkv lock L --
//! sh -c SCRIPT` in a loop, where SCRIPT is a non-atomic read-modify-write of a counter stored
//! in paxkv (`get`, then `cas` on the version read), guarded by the fencing token: the counter
//! holds `COUNT TOKEN` (the token of its last writer), and a script that reads a token above
//! its own refuses to write (`cli::lock` has the recipe and what a lock cannot promise). Five
//! real node processes are killed, paused and partitioned meanwhile (a majority always up).
//!
//! Checked:
//! - **No increment lost, none invented**: the final count is at least the increments whose
//!   write was acknowledged, and at most those plus the ones whose outcome is unknown.
//! - **No two holders overlap while their leases hold**: every script that ran to its end
//!   under a lock never lost (`paxkv lock` exit 0) ran within its own interval, disjoint from
//!   every other's, and tokens grow with time; a script whose write found the counter moved
//!   since its read (another holder between) is allowed only where some lock was lost.
//! - **A holder paused past its TTL is refused by the fencing check**: its lease expires,
//!   another takes the lock and writes, and the paused one's write, when it resumes, is
//!   refused; `paxkv lock` then exits 4 (the lock was lost) and its command gets SIGTERM.
//!
//! `PAXKV_LOCK_SECS` sets the length of the fault schedule (default 20); `PAXKV_LOCK_SEED`
//! replays its faults.

use paxkv_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::paxos::types::{NodeId, Outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::processes::{ProcessCluster, NODE_COUNT};
use support::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_paxkv");
/// The two tests take turns: each starts five node processes, and two cores run them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Processes contending for the lock.
const WORKERS: usize = 4;
/// The lock's lease: short, so that a holder cut off by the faults loses it within the run.
const TTL_S: u64 = 2;
/// Holds that kept their lock throughout (exit 0) a nemesis run needs to prove anything.
const ENOUGH_HOLDS: u64 = 10;

/// The read-modify-write each holder runs. Exit codes: 0 incremented; 73 the write's outcome
/// is unknown; 74 the read failed (nothing written); 75 refused by the fencing check (the
/// counter holds a newer token); 76 the counter moved between the read and the write (another
/// holder wrote in between: the write was refused). Each increment logs `HOLD TOKEN START
/// END` (nanoseconds: the script's start, the write's end) once its write succeeded.
const SCRIPT: &str = r#"
set -u
t0=$(date +%s%N)
got=$("$PAXKV" --config /nonexistent --nodes "$NODES" --timeout-ms 4000 --json get counter) || exit 74
version=$(printf '%s' "$got" | sed -n 's/.*"version":\([0-9]*\).*/\1/p')
value=$(printf '%s' "$got" | sed -n 's/.*"value":"\([0-9]*\) \([0-9]*\)".*/\1 \2/p')
count=${value% *}
token=${value#* }
[ "$token" -gt "$PAXKV_FENCING_TOKEN" ] && exit 75
"$PAXKV" --config /nonexistent --nodes "$NODES" --timeout-ms 4000 cas counter "$((count + 1)) $PAXKV_FENCING_TOKEN" --expect-version "$version" > /dev/null
case $? in
  0) ;;
  1) exit 76 ;;
  *) exit 73 ;;
esac
echo "$HOLD $PAXKV_FENCING_TOKEN $t0 $(date +%s%N)" >> "$LOG"
"#;

/// How long one holder's run may take, waiting included, before the test calls it stuck.
const HOLD_BOUND: Duration = Duration::from_secs(120);

/// One holder's run: `paxkv lock` and its exit code. Its stderr is kept in `log` +
/// `.stderr` (the last run's), printed if it took longer than [`HOLD_BOUND`].
async fn hold(nodes: &str, log: &Path, script: &str, ttl_s: u64, hold_id: u64) -> i32 {
    let stderr_path = log.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--config",
            "/nonexistent",
            "--nodes",
            nodes,
            "--timeout-ms",
            "4000",
        ])
        .args([
            "lock",
            "L",
            "--ttl",
            &ttl_s.to_string(),
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("PAXKV", BIN)
        .env("NODES", nodes)
        .env("LOG", log)
        .env("HOLD", hold_id.to_string())
        .env("RUST_LOG", "paxkv=info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("paxkv lock runs");
    match tokio::time::timeout(HOLD_BOUND, child.wait()).await {
        Ok(status) => status.unwrap().code().unwrap_or(-1),
        Err(_) => panic!(
            "a paxkv lock ran for {HOLD_BOUND:?}; its stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        ),
    }
}

fn nodes_arg(cluster: &ProcessCluster) -> String {
    let addrs: Vec<String> = cluster.addrs().iter().map(|a| a.to_string()).collect();
    addrs.join(",")
}

/// The counter's `(count, token)` and version.
async fn counter(cluster: &ProcessCluster) -> ((u64, u64), u64) {
    match cluster.client().get(b"counter").await.unwrap() {
        Outcome::Get {
            value: Some(value),
            version,
        } => {
            let text = String::from_utf8(value).unwrap();
            let (count, token) = text.split_once(' ').expect("COUNT TOKEN");
            ((count.parse().unwrap(), token.parse().unwrap()), version)
        }
        other => panic!("the counter: {other:?}"),
    }
}

/// `(hold, token, start, end)` of every increment, from the workers' logs, by token.
fn increments(logs: &[PathBuf]) -> Vec<(u64, u64, u128, u128)> {
    let mut out = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<u128> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            out.push((f[0] as u64, f[1] as u64, f[2], f[3]));
        }
    }
    out.sort_by_key(|i| i.1);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holders_never_overlap_and_no_increment_is_lost_under_faults() {
    let _turn = SERIAL.lock().await;
    let seed = support::seed_from_env("PAXKV_LOCK_SEED");
    let run_for = support::secs_from_env("PAXKV_LOCK_SECS", 20);
    println!("lock nemesis seed: {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = ProcessCluster::start().await;
    cluster.client().put(b"counter", b"0 0").await.unwrap();
    let nodes = nodes_arg(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<PathBuf> = (0..WORKERS)
        .map(|w| dir.path().join(format!("worker-{w}.log")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let held_throughout = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(w, log)| {
            let (nodes, log, stop) = (nodes.clone(), log.clone(), stop.clone());
            let held_throughout = held_throughout.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let hold_id = (w as u64) << 32 | codes.len() as u64;
                    let code = hold(&nodes, &log, SCRIPT, TTL_S, hold_id).await;
                    if started.elapsed() > Duration::from_secs(5) {
                        println!("a hold took {:?} (exit {code})", started.elapsed());
                    }
                    if code == 0 {
                        held_throughout.fetch_add(1, Ordering::Relaxed);
                    }
                    codes.push((hold_id, code));
                }
                codes
            })
        })
        .collect();

    // Faults: one at a time, each held 1-4 s, a majority always up.
    let ids: Vec<NodeId> = (1..=NODE_COUNT).collect();
    let until = Instant::now() + run_for;
    while Instant::now() < until {
        let victim = ids[rng.random_range(0..ids.len())];
        let hold_for = Duration::from_millis(rng.random_range(1_000..4_000));
        match rng.random_range(0..3) {
            0 => {
                println!("kill node {victim} for {hold_for:?}");
                cluster.stop(victim).await;
                tokio::time::sleep(hold_for).await;
                cluster.restart(victim);
            }
            1 => {
                println!("pause node {victim} for {hold_for:?}");
                cluster.pause(victim);
                tokio::time::sleep(hold_for).await;
                cluster.resume(victim);
            }
            _ => {
                let rest: Vec<NodeId> = ids.iter().copied().filter(|i| *i != victim).collect();
                println!("cut node {victim} off for {hold_for:?}");
                cluster.partition(&[&[victim], &rest]).await;
                tokio::time::sleep(hold_for).await;
                cluster.heal().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_000))).await;
    }
    let faults_ended = Instant::now();
    cluster.heal_all().await;
    println!("healed in {:?}", faults_ended.elapsed());
    // Enough holds to judge, however slow the machine (each hold is three debug processes):
    // the workers go on after the faults until there are, for up to two minutes. Too few
    // fails the test, after the safety checks below (a broken lock shows there first).
    let judged_by = Instant::now() + Duration::from_secs(120);
    while held_throughout.load(Ordering::Relaxed) < ENOUGH_HOLDS && Instant::now() < judged_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut codes = Vec::new();
    for worker in workers {
        codes.extend(worker.await.unwrap());
    }
    println!("workers done {:?} after the faults", faults_ended.elapsed());
    let count_of = |code: i32| codes.iter().filter(|(_, c)| *c == code).count() as u64;
    let (ok, unknown, lost) = (count_of(0), count_of(73), count_of(4));
    let (fenced, moved) = (count_of(75), count_of(76));
    let ((count, _), _) = counter(&cluster).await;
    println!(
        "{} holds: {ok} increments, {unknown} unknown, {fenced} fenced, {moved} found the counter \
         moved, {lost} locks lost, {} other; the counter is {count}",
        codes.len(),
        codes.len() as u64 - ok - unknown - lost - fenced - moved,
    );
    // An increment is logged once its write succeeded; a script whose lock was lost (exit 4)
    // may be stopped between its write and its log line, and a write of unknown outcome
    // (exit 73) may have been applied.
    let logged = increments(&logs);
    let done = logged.len() as u64;
    assert!(
        (done..=done + unknown + lost).contains(&count),
        "{done} increments logged, {unknown} writes of unknown outcome, {lost} locks lost, but \
         the counter is {count}"
    );
    assert!(
        moved <= lost,
        "{moved} holders found the counter written by another between their read and their \
         write, but only {lost} locks were lost"
    );
    // The increments of holders whose lock was held throughout (exit 0): disjoint, in token
    // order.
    let exit_of: std::collections::HashMap<u64, i32> = codes.iter().copied().collect();
    let held: Vec<_> = logged
        .iter()
        .filter(|(hold, ..)| exit_of.get(hold) == Some(&0))
        .collect();
    assert_eq!(
        held.len() as u64,
        ok,
        "every hold that exited 0 incremented"
    );
    for pair in held.windows(2) {
        let ((_, t1, _, end1), (_, t2, start2, _)) = (pair[0], pair[1]);
        assert!(
            end1 < start2,
            "holders with tokens {t1} and {t2} overlapped ({} ms)",
            (end1 - start2) / 1_000_000
        );
    }
    assert!(ok >= ENOUGH_HOLDS, "too few increments to judge: {ok}");
}

/// Kleppmann's case: a holder that reads the counter and is then paused past its lease's
/// TTL (here its `paxkv lock` is stopped, so no keepalive is sent, while its command sleeps)
/// writes after another holder took the lock and wrote. The write is refused: it is
/// conditional on what it read, which the newer holder changed. Its `paxkv lock` exits 4 when
/// it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_ttl_is_refused_by_the_fencing_check() {
    let _turn = SERIAL.lock().await;
    let cluster = ProcessCluster::start().await;
    cluster.client().put(b"counter", b"0 0").await.unwrap();
    let nodes = nodes_arg(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let read_done = dir.path().join("read");
    // A's command writes once the test says so (after B's hold), not after a fixed sleep
    // (B's hold starts three debug processes, which a slow machine may take seconds for).
    let go = dir.path().join("go");
    let outcome = dir.path().join("outcome");
    // A: read, say so, sleep past the TTL, write on the version read.
    let paused_script = format!(
        r#"
got=$("$PAXKV" --config /nonexistent --nodes "$NODES" --json get counter) || exit 74
version=$(printf '%s' "$got" | sed -n 's/.*"version":\([0-9]*\).*/\1/p')
touch {read}
i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"$PAXKV" --config /nonexistent --nodes "$NODES" cas counter "1 $PAXKV_FENCING_TOKEN" --expect-version "$version" > /dev/null
echo $? > {outcome}
"#,
        read = read_done.display(),
        go = go.display(),
        outcome = outcome.display()
    );
    let mut a = std::process::Command::new(BIN)
        .args(["--config", "/nonexistent", "--nodes", &nodes])
        .args(["lock", "L", "--ttl", "1", "--", "sh", "-c", &paused_script])
        .env("PAXKV", BIN)
        .env("NODES", &nodes)
        .spawn()
        .unwrap();
    support::eventually("A read the counter", Duration::from_secs(20), || async {
        read_done.exists()
    })
    .await;
    // A's lock process stops (its command, asleep, does not).
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe {
        libc::kill(a.id() as libc::pid_t, libc::SIGSTOP);
    }
    let log = dir.path().join("b.log");
    let b = hold(&nodes, &log, SCRIPT, TTL_S, 1).await;
    assert_eq!(
        b, 0,
        "B took the lock once A's lease expired, and incremented"
    );
    let ((count, b_token), _) = counter(&cluster).await;
    assert_eq!(count, 1);
    // A's command wakes and writes: refused, the counter moved.
    std::fs::write(&go, b"").unwrap();
    support::eventually("A's write done", Duration::from_secs(20), || async {
        outcome.exists()
    })
    .await;
    let a_write = std::fs::read_to_string(&outcome).unwrap();
    assert_eq!(
        a_write.trim(),
        "1",
        "A's stale write was refused (not swapped)"
    );
    assert_eq!(counter(&cluster).await.0, (1, b_token), "B's write stands");
    // SAFETY: as above.
    unsafe {
        libc::kill(a.id() as libc::pid_t, libc::SIGCONT);
    }
    let a_status = a.wait().unwrap();
    assert_eq!(
        a_status.code(),
        Some(4),
        "A's paxkv lock says the lock was lost"
    );
}
