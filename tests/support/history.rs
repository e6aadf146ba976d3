//! The history of a test's client operations, for the linearizability checker, and the
//! client workloads that fill it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paxkv::client::Client;
use paxkv::messages::ListPage;
use paxkv::paxos::types::{Command, Outcome};

use crate::convert;
use crate::http_kv::Kv;
use crate::linearizability::{self, Input, Operation, Output};

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

    /// Runs `command` on `key` through `client` (paxkv's client, or the HTTP API), recording
    /// it.
    pub async fn run(
        &self,
        client_id: u64,
        client: &impl Kv,
        key: &[u8],
        command: Command,
    ) -> paxkv::Result<Outcome> {
        let input = convert::input_of(&command);
        let call = self.now();
        let result = client.execute(key, command).await;
        self.record(client_id, key, input, call, &result);
        result
    }

    /// Records an operation called at `call` that just ended with `result`.
    fn record(
        &self,
        client: u64,
        key: &[u8],
        input: Input,
        call: u64,
        result: &paxkv::Result<Outcome>,
    ) {
        let (ret, output) = match result {
            Ok(outcome) => (Some(self.now()), Some(convert::output_of(outcome.clone()))),
            // Recorded exactly: these certainly did not take effect, so the operation is left
            // out of the history (if it did take effect after all, its value shows up in a read
            // that no recorded write explains, and the check fails).
            Err(e) if !e.may_have_applied() => return,
            // May have taken effect, at any time after it was invoked, or never.
            Err(_) => (None, None),
        };
        self.ops.lock().unwrap().push(Operation {
            client,
            key: key.to_vec(),
            input,
            call,
            ret,
            output,
        });
    }

    /// Lists one page of `prefix` after `after` through `client`, recording each listed key
    /// as a read of its state, and each key of the prefix this history knows of that the page
    /// covers and left out as absent (`Input::Absent`), all at the list's call and return. A
    /// failed list is not recorded (it changed nothing).
    pub async fn list(
        &self,
        client_id: u64,
        client: &Client,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
    ) -> paxkv::Result<ListPage> {
        let call = self.now();
        let page = client.list(prefix, after, limit, false).await?;
        let ret = self.now();
        check_page(&page, prefix, after, limit);
        let op = |key: &[u8], input, output| Operation {
            client: client_id,
            key: key.to_vec(),
            input,
            call,
            ret: Some(ret),
            output: Some(output),
        };
        let mut ops = self.ops.lock().unwrap();
        let covered = |key: &[u8]| {
            key.starts_with(prefix)
                && after.is_none_or(|a| key > a)
                && page.next.as_deref().is_none_or(|n| key <= n)
        };
        let listed: BTreeSet<&[u8]> = page.items.iter().map(|i| i.key.as_slice()).collect();
        let absent: BTreeSet<Vec<u8>> = ops
            .iter()
            .filter(|o| covered(&o.key) && !listed.contains(o.key.as_slice()))
            .map(|o| o.key.clone())
            .collect();
        for item in &page.items {
            let output = Output::Get {
                value: item.value.clone(),
                version: item.version,
            };
            ops.push(op(&item.key, Input::Get, output));
        }
        for key in absent {
            ops.push(op(&key, Input::Absent, Output::Absent { live: false }));
        }
        drop(ops);
        Ok(page)
    }

    /// This history's time of `instant` (0 for one before the history began).
    pub fn at(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Runs a client's put of `key` attached to `lease` (the node reads the fence itself:
    /// recorded with none), recording it as [`History::run`] does.
    pub async fn put_leased(
        &self,
        client_id: u64,
        client: &Client,
        key: &[u8],
        value: &[u8],
        lease: u64,
    ) -> paxkv::Result<Outcome> {
        let call = self.now();
        let result = client.put_leased(key, value, None, lease).await;
        let input = Input::LeasedWrite {
            expect: None,
            value: value.to_vec(),
            lease,
            fence: None,
        };
        self.record(client_id, key, input, call, &result);
        result
    }

    /// The delete of `key` by the end of `lease`, which cannot happen before `earliest` (TTL
    /// after the last keepalive that succeeded was sent, or the revoke's call): an operation
    /// of unknown outcome called then, so that the checker places it anywhere after, or
    /// nowhere, but never before (`Input::Release`).
    pub fn lease_ended(&self, client_id: u64, key: &[u8], lease: u64, earliest: Instant) {
        self.ops.lock().unwrap().push(Operation {
            client: client_id,
            key: key.to_vec(),
            input: Input::Release { lease },
            call: self.at(earliest),
            ret: None,
            output: None,
        });
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

/// A page's own promises (3 of `actors::list`): keys of the prefix after `after`, strictly
/// increasing, at most `limit`, and `next` (if any) its last key or, for a page that ended
/// once it had passed over `limits.list_max_skipped` keys it does not list, a key of the prefix
/// after it (every key up to `next` is decided by the page: `History::list` records the
/// others as absent).
fn check_page(page: &ListPage, prefix: &[u8], after: Option<&[u8]>, limit: u32) {
    let keys: Vec<&[u8]> = page.items.iter().map(|i| i.key.as_slice()).collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with(prefix) && after.is_none_or(|a| *k > a)),
        "a page holds a key outside its range: {keys:?}"
    );
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "a page out of order or with a key twice"
    );
    assert!(
        keys.len() <= limit as usize,
        "a page of {} over {limit}",
        keys.len()
    );
    if let Some(next) = &page.next {
        assert!(
            next.starts_with(prefix) && keys.last().is_none_or(|last| next.as_slice() >= *last),
            "next {next:?} is outside the prefix or before the page's last key"
        );
    }
}

/// A list client beside a workload: pages through each of `prefixes` (`limit` keys a page)
/// over and over until `stop`, every page in `history` (`History::list`). Returns how many
/// pages it got.
pub async fn list_pages(
    client_id: u64,
    client: Client,
    history: History,
    prefixes: Vec<Vec<u8>>,
    limit: u32,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut pages = 0;
    while !stop.load(Ordering::Relaxed) {
        for prefix in &prefixes {
            let mut after: Option<Vec<u8>> = None;
            while !stop.load(Ordering::Relaxed) {
                match history
                    .list(client_id, &client, prefix, after.as_deref(), limit)
                    .await
                {
                    Ok(page) => {
                        pages += 1;
                        match page.next {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                    // Unavailable (a majority not scanned) or timed out: changed nothing;
                    // this prefix again from its start.
                    Err(_) => break,
                }
            }
        }
    }
    pages
}

/// A random command of the concurrent workloads: 40 % get, 30 % put, 5 % delete, 5 % delete
/// of a version below `max_expect`, 20 % cas expecting one; writes carry `value`.
pub fn random_command(rng: &mut impl rand::Rng, value: Vec<u8>, max_expect: u64) -> Command {
    match rng.random_range(0..20) {
        0..=7 => Command::Get,
        8..=13 => Command::Put { value },
        14 => Command::Delete,
        15 => Command::DeleteIf {
            expect: rng.random_range(0..max_expect.max(1)),
        },
        _ => Command::Cas {
            expect: rng.random_range(0..max_expect.max(1)),
            value,
        },
    }
}
