//! A watch checked against a history: the watch client the nemesis tests run beside their
//! workload, and the check of its stream (`paxkv::watch`, argued in `actors::watch`).
//!
//! Per key: versions strictly increase, none twice; a delivered change's value is the value
//! of the write acknowledged with that version (or, for a version no write was acknowledged
//! with, the value of some write to the key whose outcome is unknown); every acknowledged
//! version between the first and the last delivered is delivered or covered by a
//! `skipped_to`. Acknowledged writes the watch never reached are waited for
//! ([`WatchClient::finish`]): a lost last change must be reported by the reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use paxkv::client::Client;
use paxkv::watch::{WatchItem, WatchOptions};

use crate::linearizability::{Input, Operation, Output};

/// The version a watch item brings its key to (a skip: the one below `skipped_to`).
pub fn version_of(item: &WatchItem) -> u64 {
    match item {
        WatchItem::Change { version, .. } => *version,
        WatchItem::Skipped { skipped_to, .. } => *skipped_to - 1,
    }
}

fn key_of(item: &WatchItem) -> &[u8] {
    match item {
        WatchItem::Change { key, .. } | WatchItem::Skipped { key, .. } => key,
    }
}

/// The version a write's answer says it made (`None`: it changed nothing, or it is a read).
pub fn version_made(output: &Output) -> Option<u64> {
    match output {
        Output::Put { version }
        | Output::Delete {
            deleted: true,
            version,
        }
        | Output::Cas {
            swapped: true,
            version,
        } => Some(*version),
        _ => None,
    }
}

/// What the history says of one key's writes.
#[derive(Default)]
pub struct KeyWrites {
    /// version → the value the acknowledged write left (`None`: deleted).
    pub acked: BTreeMap<u64, Option<Vec<u8>>>,
    /// Values of writes whose outcome is unknown (they may hold any version).
    pub maybe: BTreeSet<Option<Vec<u8>>>,
}

/// The writes of `ops`, by key.
pub fn writes_of(ops: &[Operation]) -> BTreeMap<Vec<u8>, KeyWrites> {
    let mut keys: BTreeMap<Vec<u8>, KeyWrites> = BTreeMap::new();
    for op in ops {
        let value = match &op.input {
            Input::Put { value } | Input::Cas { value, .. } | Input::LeasedWrite { value, .. } => {
                Some(value.clone())
            }
            Input::Delete | Input::DeleteIf { .. } | Input::Release { .. } => None,
            // A touch (a lease's keepalive) is not announced: a watch sees its version as a gap.
            Input::Get
            | Input::Absent
            | Input::Touch
            | Input::Inspect
            | Input::LeaseAttach { .. }
            | Input::LeaseEnd { .. } => continue,
        };
        let writes = keys.entry(op.key.clone()).or_default();
        match &op.output {
            Some(output) => {
                if let Some(version) = version_made(output) {
                    writes.acked.insert(version, value);
                }
            }
            None => {
                writes.maybe.insert(value);
            }
        }
    }
    keys
}

/// Checks one watch's items against the writes (see the module doc); returns the changes
/// delivered and the skips.
pub fn check_watch(items: &[WatchItem], writes: &BTreeMap<Vec<u8>, KeyWrites>) -> (usize, usize) {
    let mut by_key: BTreeMap<&[u8], Vec<&WatchItem>> = BTreeMap::new();
    for item in items {
        by_key.entry(key_of(item)).or_default().push(item);
    }
    let (mut changes, mut skips) = (0, 0);
    let none = KeyWrites::default();
    for (key, items) in by_key {
        let writes = writes.get(key).unwrap_or(&none);
        let name = String::from_utf8_lossy(key);
        let mut last: Option<u64> = None;
        let mut covered = BTreeSet::new();
        for item in &items {
            let v = version_of(item);
            if let Some(last) = last {
                let moves_on = v > last || matches!(item, WatchItem::Skipped { .. }) && v >= last;
                assert!(moves_on, "{name}: {item:?} after version {last}");
            }
            match item {
                WatchItem::Change { version, value, .. } => {
                    changes += 1;
                    match writes.acked.get(version) {
                        Some(written) => assert_eq!(
                            value, written,
                            "{name}: version {version} delivered with another value"
                        ),
                        None => assert!(
                            writes.maybe.contains(value),
                            "{name}: version {version} delivered with {value:?}, which no \
                             write of unknown outcome wrote"
                        ),
                    }
                    covered.insert(*version);
                }
                WatchItem::Skipped { skipped_to, .. } => {
                    skips += 1;
                    covered.extend(last.map_or(0, |l| l + 1)..*skipped_to);
                }
            }
            last = Some(v);
        }
        let first = version_of(items[0]);
        let last = last.expect("items");
        for version in writes.acked.keys().filter(|v| (first..=last).contains(*v)) {
            assert!(
                covered.contains(version),
                "{name}: version {version} was acknowledged, never delivered, and no skip \
                 covers it"
            );
        }
    }
    (changes, skips)
}

/// The key a [`WatchClient`] puts until its watch delivers it (the watch has then begun:
/// every later write is one it must deliver or report).
const MARKER: &[u8] = b"watch-marker";

/// A watch of every key, run beside a workload, collecting its items.
pub struct WatchClient {
    items: Arc<Mutex<Vec<WatchItem>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchClient {
    /// Watches every key through `client` until [`WatchClient::finish`] (reconciling every
    /// three seconds, so that the gaps the faults make are reported soon); returns once the
    /// watch has begun. Start it before the workload writes anything.
    pub async fn start(client: Client) -> WatchClient {
        let options = WatchOptions {
            prefix: true,
            gap_wait: Duration::from_millis(500),
            reconcile_every: Duration::from_secs(3),
            ..WatchOptions::default()
        };
        let items: Arc<Mutex<Vec<WatchItem>>> = Arc::default();
        let mut stream = client.watch(b"", options);
        let (collected, begun) = (items.clone(), Arc::new(AtomicBool::new(false)));
        let seen = begun.clone();
        let task = tokio::spawn(async move {
            // An error (no node could serve it for `op_timeout`) ends the stream; the check
            // then finds the writes it never reached.
            while let Some(Ok(item)) = stream.next().await {
                if key_of(&item) == MARKER {
                    seen.store(true, Ordering::Relaxed);
                } else {
                    collected.lock().unwrap().push(item);
                }
            }
        });
        crate::eventually("the watch begins", Duration::from_secs(30), || async {
            let _ = client.put(MARKER, b"").await;
            begun.load(Ordering::Relaxed)
        })
        .await;
        WatchClient { items, task }
    }

    /// Waits (with a deadline) until the watch reached every key's last acknowledged write,
    /// then checks its items against the writes of `ops`; returns (changes, skips).
    pub async fn finish(self, ops: &[Operation]) -> (usize, usize) {
        let writes = writes_of(ops);
        let reached = |items: &[WatchItem]| {
            let mut last: BTreeMap<&[u8], u64> = BTreeMap::new();
            for item in items {
                last.insert(key_of(item), version_of(item));
            }
            writes.iter().all(|(key, w)| match w.acked.keys().last() {
                Some(v) => last.get(key.as_slice()).is_some_and(|l| l >= v),
                None => true,
            })
        };
        crate::eventually(
            "the watch reaches every key's last acknowledged write",
            Duration::from_secs(60),
            || {
                let done = reached(&self.items.lock().unwrap());
                async move { done }
            },
        )
        .await;
        self.task.abort();
        let items = self.items.lock().unwrap().clone();
        check_watch(&items, &writes)
    }
}
