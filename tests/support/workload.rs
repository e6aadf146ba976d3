//! A checked concurrent workload for the process-level tests: tasks doing random gets, puts,
//! deletes and compare-and-sets on a few hot keys, beside tasks writing keys once each; at the
//! end every write-once key is read back (through the same history), and the whole history
//! must be linearizable, which includes every acknowledged write being there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::client::Client;
use paxkv::paxos::types::{Command, Outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{write_once_keys, History, Kv};

pub const HOT_KEYS: usize = 3;

pub struct Workload {
    history: History,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkloadStats>,
    hot: Vec<tokio::task::JoinHandle<()>>,
    once: Vec<tokio::task::JoinHandle<Vec<Vec<u8>>>>,
}

/// What a finished workload did.
#[derive(Debug)]
pub struct Checked {
    pub operations: usize,
    pub unknown: usize,
    pub write_once_keys: usize,
}

pub fn hot_key(k: usize) -> Vec<u8> {
    format!("hot-{k}").into_bytes()
}

/// The version an outcome reports (the register's, after the operation).
fn version_of(outcome: &Outcome) -> u64 {
    match *outcome {
        Outcome::Get { version, .. }
        | Outcome::Put { version }
        | Outcome::Delete { version, .. }
        | Outcome::Cas { version, .. } => version,
        Outcome::Inspect(ref found) => found.version,
        Outcome::Fenced { .. } => 0,
    }
}

/// Operations acknowledged and failed, counted by the hot-key tasks.
#[derive(Default)]
pub struct WorkloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// One client of the workload: random gets, puts, deletes and cases on the hot keys, every
/// written value unique, until `stop`.
pub async fn hot_key_task(
    task: u64,
    client: impl Kv,
    history: History,
    mut rng: SmallRng,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkloadStats>,
) {
    // The last version this task saw of each key: what its cas operations expect.
    let mut seen = [0u64; HOT_KEYS];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.random_range(0..HOT_KEYS);
        n += 1;
        let value = format!("t{task}-{n}").into_bytes();
        let command = match rng.random_range(0..100) {
            0..=29 => Command::Get,
            30..=54 => Command::Put { value },
            55..=62 => Command::Delete,
            63..=69 => Command::DeleteIf { expect: seen[k] },
            _ => Command::Cas {
                expect: if rng.random_bool(0.2) { 0 } else { seen[k] },
                value,
            },
        };
        match history.run(task, &client, &hot_key(k), command).await {
            Ok(outcome) => {
                seen[k] = version_of(&outcome);
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Workload {
    /// One hot-key task per client of `hot`, one write-once task per client of `once`.
    pub fn start(hot: Vec<Client>, once: Vec<Client>, seed: u64) -> Workload {
        let history = History::default();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WorkloadStats::default());
        let hot = hot
            .into_iter()
            .enumerate()
            .map(|(task, client)| {
                let rng = SmallRng::seed_from_u64(seed ^ (task as u64 + 1));
                tokio::spawn(hot_key_task(
                    task as u64,
                    client,
                    history.clone(),
                    rng,
                    stop.clone(),
                    stats.clone(),
                ))
            })
            .collect::<Vec<_>>();
        let first_once = hot.len() as u64;
        let once = once
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let id = first_once + i as u64;
                tokio::spawn(write_once_keys(
                    id,
                    client,
                    history.clone(),
                    format!("once-{id}"),
                    stop.clone(),
                ))
            })
            .collect();
        Workload {
            history,
            stop,
            stats,
            hot,
            once,
        }
    }

    /// Hot-key operations acknowledged so far.
    fn ok_ops(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more hot-key operations are acknowledged; panics after `deadline`
    /// saying `what` did not make progress.
    pub async fn progress(&self, n: u64, deadline: Duration, what: &str) {
        let target = self.ok_ops() + n;
        let until = Instant::now() + deadline;
        while self.ok_ops() < target {
            assert!(
                Instant::now() < until,
                "the workload made no progress ({} of {n} operations) within {deadline:?}: {what}",
                n - (target - self.ok_ops()).min(n)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the tasks, reads every write-once key back through `reader`, and checks the
    /// whole history.
    pub async fn finish(self, reader: Client, name: &str) -> Checked {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.hot {
            task.await.expect("a workload task");
        }
        let mut keys = Vec::new();
        for task in self.once {
            keys.extend(task.await.expect("a write-once task"));
        }
        let reader_id = 1_000;
        for key in &keys {
            self.history
                .run(reader_id, &reader, key, Command::Get)
                .await
                .unwrap_or_else(|e| panic!("reading back {}: {e}", String::from_utf8_lossy(key)));
        }
        self.history.assert_linearizable(name);
        let ops = self.history.operations();
        Checked {
            operations: ops.len(),
            unknown: ops.iter().filter(|o| o.is_unknown()).count(),
            write_once_keys: keys.len(),
        }
    }
}
