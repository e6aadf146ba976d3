//! The history of a test's client operations, for the linearizability checker, and the
//! client workloads that fill it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paxkv::client::Client;
use paxkv::paxos::types::{Command, Outcome};

use crate::convert;
use crate::linearizability::{self, Operation};

/// Records every client operation with its invocation and completion times, for the
/// linearizability checker.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Runs `command` on `key` through `client`, recording it.
    pub async fn run(
        &self,
        client_id: u64,
        client: &Client,
        key: &[u8],
        command: Command,
    ) -> paxkv::Result<Outcome> {
        let input = convert::input_of(&command);
        let call = self.now();
        let result = client.execute(key, command).await;
        let (ret, output) = match &result {
            Ok(outcome) => (Some(self.now()), Some(convert::output_of(outcome.clone()))),
            // Recorded exactly: these certainly did not take effect, so the operation is left
            // out of the history (if it did take effect after all, its value shows up in a read
            // that no recorded write explains, and the check fails).
            Err(e) if !e.may_have_applied() => {
                return result;
            }
            // May have taken effect, at any time after it was invoked, or never.
            Err(_) => (None, None),
        };
        self.ops.lock().unwrap().push(Operation {
            client: client_id,
            key: key.to_vec(),
            input,
            call,
            ret,
            output,
        });
        result
    }

    pub fn operations(&self) -> Vec<Operation> {
        self.ops.lock().unwrap().clone()
    }

    /// Checks the history; on failure writes it to a file and panics with the explanation.
    pub fn assert_linearizable(&self, name: &str) {
        let ops = self.operations();
        let result = linearizability::check_operations(&ops, Duration::from_secs(60));
        if !matches!(result, linearizability::CheckResult::Ok) {
            let path = std::env::temp_dir().join(format!("paxkv-{name}.history.txt"));
            let _ = linearizability::write_history(&path, &ops);
            panic!(
                "history is not linearizable (written to {}):\n{}",
                path.display(),
                linearizability::describe(&ops, &result)
            );
        }
    }
}

/// Puts keys `{prefix}-{i}` once each, with unique values, until `stop`; every put is in
/// `history`. Returns the keys it wrote, to read back at the end.
pub async fn write_once_keys(
    client_id: u64,
    client: Client,
    history: History,
    prefix: String,
    stop: Arc<AtomicBool>,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{prefix}-{}", keys.len()).into_bytes();
        let value = format!("{prefix}-value-{}", keys.len()).into_bytes();
        let _ = history
            .run(client_id, &client, &key, Command::Put { value })
            .await;
        keys.push(key);
    }
    keys
}

/// A random command of the concurrent workloads: 40 % get, 30 % put, 10 % delete, 20 % cas
/// expecting a version below `max_expect`; writes carry `value`.
pub fn random_command(rng: &mut impl rand::Rng, value: Vec<u8>, max_expect: u64) -> Command {
    match rng.random_range(0..10) {
        0..=3 => Command::Get,
        4..=6 => Command::Put { value },
        7 => Command::Delete,
        _ => Command::Cas {
            expect: rng.random_range(0..max_expect.max(1)),
            value,
        },
    }
}
