//! The watcher's side of a watch (`paxkv watch`, [`crate::client::Client::watch`]): where each
//! key's sequence starts, how announced changes are put in version order, and how a gap is
//! said. The node's side (how changes are announced, how watchers are bounded) and what a
//! watch promises are in `actors::watch`.
//!
//! [`Sequencer`] has no IO and reads no clock (`now` is an argument), so the simulation runs
//! it as the client does. Per key it holds the last version delivered and the changes that
//! arrived above the next one:
//! - a change at the next version is delivered, then whatever it unblocks;
//! - a change at or below the last version delivered is dropped (a duplicate, or one the watch
//!   already skipped): versions only go up, none twice;
//! - a change above the next version waits, at most `gap_wait`, for the ones below it (they
//!   may come from another proposer, on another connection); then the watch says
//!   `skipped_to` the lowest change held and goes on from there.
//!
//! Where a key's sequence starts: [`Sequencer::start`] sets it from a linearizable read (a
//! key) or a listing with deleted keys (a prefix), taken after the node confirmed its leases
//! (`WatchEvent::Started`): the watch delivers the changes after that state. `--from-version V`
//! asks for the changes from `V` on instead: when the state read is at `V` or later, it is
//! delivered as a change (after `skipped_to` if it is above `V`: paxkv keeps no history).
//!
//! A state read later (the periodic reconcile, or a resume on another node) is offered as a
//! change: if it is above what was delivered, the versions in between are waited for, then
//! skipped, so a change whose announcement was lost is reported, never silently missed.
//!
//! What a watch holds is bounded in bytes at each stage, by [`WatchOptions::buffer_bytes`]:
//! the answers its connection has read for it (`client::Waiter::Stream`; four answers pass
//! whatever their size, so that a change announced in two frames does not end a watch that
//! keeps up), the changes its sequencer holds for a lower version (one alone may be larger;
//! past it the gaps of the keys holding most are said at once), and the items ready for a
//! caller that has not taken them (one alone may be larger). While it reads where its keys
//! stand, the changes that arrive meanwhile are held up to [`READ_HOLD_FACTOR`] times that.
//! Past a bound the watch never loses a change silently: it stops reading, its node ends it,
//! and it resumes saying the gap. So one watch holds at most about `(3 + READ_HOLD_FACTOR)`
//! times `buffer_bytes`, and, in flight between the stages, about eight of its largest
//! changes more (the answers that pass whatever their size, one per stage, one being
//! written); a process's watches (the HTTP API's: `limits.http_watch_buffer_bytes`) as many
//! times that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::{Client, WatchSession};
use crate::error::{Error, ErrorClass, Result};
use crate::messages::WatchEvent;
use crate::paxos::types::{Key, KeyChange, Outcome};

/// What a watch tells its user, per key, in version order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum WatchItem {
    /// The key changed: its new version and value (`None`: deleted).
    Change {
        key: Key,
        version: u64,
        value: Option<Vec<u8>>,
    },
    /// The key's changes after the last one delivered and below `skipped_to` are lost to
    /// this watch (the next change delivered for the key is `skipped_to`).
    Skipped { key: Key, skipped_to: u64 },
}

/// Changes one key may hold waiting for a lower version; past it the gap is skipped at once.
const HELD_PER_KEY: usize = 1_024;

/// What a watch holds at each stage by default ([`WatchOptions::buffer_bytes`]).
pub const BUFFER_BYTES: usize = 8 << 20;

/// While a watch reads where its keys stand, it holds the changes that arrive meanwhile up to
/// this many times [`WatchOptions::buffer_bytes`] (a listing of a large prefix takes a while,
/// and past the bound the watch starts over: a bound too tight would never let it start).
pub const READ_HOLD_FACTOR: usize = 8;

/// What a held change counts against [`Sequencer`]'s bound.
fn held_bytes(value: &Option<Vec<u8>>) -> usize {
    const OVERHEAD: usize = 32;
    OVERHEAD + value.as_ref().map_or(0, Vec::len)
}

#[derive(Debug, Default)]
struct KeySequence {
    /// The last version delivered (or where the sequence starts).
    last: u64,
    /// Changes above `last + 1`, waiting for the versions below them.
    held: BTreeMap<u64, Option<Vec<u8>>>,
    /// Their bytes ([`held_bytes`]).
    held_bytes: usize,
    /// Since when the lowest held change waits.
    waiting_since: Option<Instant>,
}

/// Keys one watch follows at most by default ([`WatchOptions::max_keys`]; see
/// [`crate::config::WATCH_MAX_KEYS`]).
pub const MAX_WATCH_KEYS: usize = crate::config::WATCH_MAX_KEYS;

/// Puts one watch's changes in version order, key by key (see the module doc).
#[derive(Debug)]
pub struct Sequencer {
    keys: HashMap<Key, KeySequence>,
    /// The keys holding changes that wait for a lower version (`waiting_since` set): what
    /// [`Sequencer::expire`] and [`Sequencer::next_deadline`] look at, so that a change costs
    /// the same whether the watch follows ten keys or a hundred thousand.
    waiting: HashSet<Key>,
    /// Where a key not started explicitly starts (a key never written under a prefix: 0).
    default_last: u64,
    gap_wait: Duration,
    /// Keys followed at most; a change or a state of one more is not taken, and the watch is
    /// [`Sequencer::full`].
    max_keys: usize,
    full: bool,
    /// Bytes of changes held for a lower version, over every key, and their bound (past it the
    /// gap of the key holding most is said at once).
    held_bytes: usize,
    max_held_bytes: usize,
}

impl Sequencer {
    /// `from_version`: deliver the changes from that version on (see the module doc);
    /// `max_keys`: follow at most that many keys.
    pub fn new(gap_wait: Duration, from_version: Option<u64>, max_keys: usize) -> Sequencer {
        Sequencer {
            keys: HashMap::new(),
            waiting: HashSet::new(),
            default_last: from_version.map_or(0, |v| v.saturating_sub(1)),
            gap_wait,
            max_keys,
            full: false,
            held_bytes: 0,
            max_held_bytes: BUFFER_BYTES,
        }
    }

    /// Holds at most `bytes` of changes for a lower version (one change alone may be more).
    pub fn with_max_held_bytes(mut self, bytes: usize) -> Sequencer {
        self.max_held_bytes = bytes;
        self
    }

    /// A key came that would have been one more than `max_keys`: it was not taken, and the
    /// watch cannot go on without losing changes (its caller ends it, saying why).
    pub fn full(&self) -> bool {
        self.full
    }

    /// May `key` be followed: it is already, or there is room. Marks the sequencer full if
    /// not.
    fn admits(&mut self, key: &[u8]) -> bool {
        if self.keys.contains_key(key) || self.keys.len() < self.max_keys {
            return true;
        }
        self.full = true;
        false
    }

    /// Keeps [`Sequencer::waiting`] in step with `key`'s sequence.
    fn track(&mut self, key: &Key) {
        match self.keys.get(key).and_then(|k| k.waiting_since) {
            Some(_) => {
                self.waiting.insert(key.clone());
            }
            None => {
                self.waiting.remove(key);
            }
        }
    }

    /// Starts `key`'s sequence at the state read (`version`, `value`): the changes after it
    /// are delivered; with `from_version`, the state itself too if it is at or above it.
    pub fn start(
        &mut self,
        now: Instant,
        key: Key,
        version: u64,
        value: Option<Vec<u8>>,
        from_version: Option<u64>,
    ) -> Vec<WatchItem> {
        // With `from_version`, the sequence starts below it whatever the state read: changes
        // below the version asked for are not delivered, and the state read is if it is at or
        // above it.
        let last = match from_version {
            None => version,
            Some(from) => from.saturating_sub(1),
        };
        if !self.admits(&key) {
            return Vec::new();
        }
        self.waiting.remove(&key);
        let old = self.keys.insert(
            key.clone(),
            KeySequence {
                last,
                ..Default::default()
            },
        );
        self.held_bytes -= old.map_or(0, |old| old.held_bytes);
        if version > last && from_version.is_some() {
            self.offer(now, key, vec![KeyChange { version, value }])
        } else {
            Vec::new()
        }
    }

    /// Is `key`'s sequence started (or did a change of it come)?
    pub fn knows(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// The last version delivered for `key`, if any came or it was started.
    pub fn last(&self, key: &[u8]) -> Option<u64> {
        self.keys.get(key).map(|k| k.last)
    }

    /// Takes announced (or read) changes of `key`; returns what can be delivered now.
    pub fn offer(&mut self, now: Instant, key: Key, changes: Vec<KeyChange>) -> Vec<WatchItem> {
        if !self.admits(&key) {
            return Vec::new();
        }
        let default_last = self.default_last;
        let seq = self.keys.entry(key.clone()).or_insert_with(|| KeySequence {
            last: default_last,
            ..Default::default()
        });
        let before = seq.held_bytes;
        for c in changes {
            if c.version > seq.last {
                seq.hold(c.version, c.value);
            }
        }
        let mut out = Vec::new();
        seq.release(&key, &mut out);
        if seq.held.len() > HELD_PER_KEY {
            seq.skip(&key, &mut out);
        }
        seq.waiting_since = match (seq.held.is_empty(), seq.waiting_since) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(now),
        };
        self.held_bytes = self.held_bytes - before + seq.held_bytes;
        self.track(&key);
        self.shed(now, &mut out);
        out
    }

    /// Past the bound on the changes held for a lower version (unless one change alone is
    /// held: it may be larger), says the gaps of the keys holding most (ties: the lowest
    /// key), each up to its last held change, which delivers what they held, until at most
    /// half the bound is held. The versions they waited for are then lost to this watch, and
    /// said so, as when they wait out `gap_wait`. Down to half, in one sorted pass: a watch
    /// with many keys waiting (a resume of a large prefix) sorts them once per half a bound
    /// of changes, not once per change (review of this change, 2026-12-08).
    fn shed(&mut self, now: Instant, out: &mut Vec<WatchItem>) {
        let one_change = self.waiting.len() == 1
            && self
                .waiting
                .iter()
                .all(|key| self.keys[key].held.len() == 1);
        if self.held_bytes <= self.max_held_bytes || one_change {
            return;
        }
        let mut heaviest: Vec<(usize, Key)> = self
            .waiting
            .iter()
            .map(|key| (self.keys[key].held_bytes, key.clone()))
            .collect();
        heaviest.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, key) in heaviest {
            if self.held_bytes <= self.max_held_bytes / 2 {
                return;
            }
            while self.keys[&key].waiting_since.is_some() {
                self.skip_key(now, &key, out);
            }
        }
    }

    /// Says `key`'s gap below its lowest held change and delivers from there.
    fn skip_key(&mut self, now: Instant, key: &Key, out: &mut Vec<WatchItem>) {
        let seq = self.keys.get_mut(key).expect("a waiting key is followed");
        let before = seq.held_bytes;
        seq.skip(key, out);
        seq.waiting_since = (!seq.held.is_empty()).then_some(now);
        self.held_bytes = self.held_bytes - before + seq.held_bytes;
        self.track(key);
    }

    /// Skips the gaps that waited `gap_wait`; returns what that delivers.
    pub fn expire(&mut self, now: Instant) -> Vec<WatchItem> {
        let mut out = Vec::new();
        let mut due: Vec<Key> = self
            .waiting
            .iter()
            .filter(|key| {
                self.keys[*key]
                    .waiting_since
                    .is_some_and(|since| now >= since + self.gap_wait)
            })
            .cloned()
            .collect();
        // In key order: what a watch delivers must not depend on a hash map's order.
        due.sort_unstable();
        for key in due {
            self.skip_key(now, &key, &mut out);
        }
        out
    }

    /// When [`Sequencer::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|key| self.keys[key].waiting_since)
            .min()
            .map(|since| since + self.gap_wait)
    }
}

impl KeySequence {
    /// Holds a change above the next version (a duplicate replaces the one held).
    fn hold(&mut self, version: u64, value: Option<Vec<u8>>) {
        self.held_bytes += held_bytes(&value);
        if let Some(old) = self.held.insert(version, value) {
            self.held_bytes -= held_bytes(&old);
        }
    }

    /// Delivers the held changes that follow `last` without a gap.
    fn release(&mut self, key: &Key, out: &mut Vec<WatchItem>) {
        while let Some(value) = self.held.remove(&(self.last + 1)) {
            self.held_bytes -= held_bytes(&value);
            self.last += 1;
            out.push(WatchItem::Change {
                key: key.clone(),
                version: self.last,
                value,
            });
        }
        if self.held.is_empty() {
            self.waiting_since = None;
        }
    }

    /// Says the gap below the lowest held change, then delivers from it.
    fn skip(&mut self, key: &Key, out: &mut Vec<WatchItem>) {
        let Some((&lowest, _)) = self.held.first_key_value() else {
            return;
        };
        out.push(WatchItem::Skipped {
            key: key.clone(),
            skipped_to: lowest,
        });
        self.last = lowest - 1;
        self.release(key, out);
    }
}

/// How a watch runs ([`Client::watch`]).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Watch every key that starts with the key given.
    pub prefix: bool,
    /// Deliver the changes from this version on (per key), not only those after the watch
    /// begins.
    pub from_version: Option<u64>,
    /// How long a change waits for the versions below it before they are skipped.
    pub gap_wait: Duration,
    /// How often the watch reads where its keys stand (a read of the key, or a listing of
    /// the prefix), so that a lost last change is reported even when nothing follows it.
    pub reconcile_every: Duration,
    /// Keys the watch follows at most (its memory, see [`MAX_WATCH_KEYS`]): a watch whose
    /// prefix holds more, or comes to, ends with an error saying so.
    pub max_keys: usize,
    /// Bytes of changes the watch holds at each stage for a caller behind or a gap (see the
    /// module doc; default [`BUFFER_BYTES`]; taken within 1 byte and 512 MiB). Past it a
    /// change is not lost silently: the watch says the gap.
    pub buffer_bytes: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            prefix: false,
            from_version: None,
            gap_wait: Duration::from_secs(1),
            reconcile_every: Duration::from_secs(30),
            max_keys: MAX_WATCH_KEYS,
            buffer_bytes: BUFFER_BYTES,
        }
    }
}

/// A watch's items, in order per key ([`Client::watch`]). Ends with an error when no node
/// could serve the watch; dropping it ends the watch.
pub struct WatchStream {
    /// Each item with its share of [`WatchOptions::buffer_bytes`], given back as the caller
    /// takes it.
    items: mpsc::Receiver<Ready>,
    task: tokio::task::JoinHandle<()>,
}

impl futures_util::Stream for WatchStream {
    type Item = Result<WatchItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items
            .poll_recv(cx)
            .map(|ready| ready.map(|(item, _bytes)| item))
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Items a watch may have ready for a caller that has not taken them (then the watch stops
/// reading its node, the node's buffer for it fills, the node ends it, and it resumes with
/// the gap said).
const READY_ITEMS: usize = 1_024;

/// An item, and its share of [`WatchOptions::buffer_bytes`], which bounds by bytes the items
/// ready for a caller that has not taken them (one item alone may be larger), with the same
/// effect as [`READY_ITEMS`]. Counted by items alone, 1,024 changes of 1 MiB values held
/// 1 GiB for one caller that stopped reading, in this process: the HTTP API's, for each of
/// its watches (review, 2026-12-08).
type Ready = (Result<WatchItem>, Option<tokio::sync::OwnedSemaphorePermit>);

/// What an item counts against [`WatchOptions::buffer_bytes`].
fn ready_bytes(item: &WatchItem) -> usize {
    const OVERHEAD: usize = 32;
    OVERHEAD
        + match item {
            WatchItem::Change { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len),
            WatchItem::Skipped { key, .. } => key.len(),
        }
}

impl Client {
    /// The changes of `key` (with `options.prefix`, of every key under it), in version order
    /// per key, with every gap said (see the module doc and `actors::watch`). Resumes on
    /// another node when the one serving it fails; ends with an error when no node could
    /// serve it for `op_timeout`. Dropping the stream ends the watch. (Here rather than in
    /// `client.rs`: the watch's task uses the client, not the other way round.)
    pub fn watch(&self, key: &[u8], options: WatchOptions) -> WatchStream {
        spawn(self.clone(), key.to_vec(), options)
    }
}

fn spawn(client: Client, key: Key, options: WatchOptions) -> WatchStream {
    let (tx, items) = mpsc::channel(READY_ITEMS);
    let task = tokio::spawn(async move {
        // Bounded as a semaphore's permits are (`Semaphore::MAX_PERMITS`, u32 per take).
        let buffer = options.buffer_bytes.clamp(1, u32::MAX as usize >> 3);
        let mut watch = Watcher {
            seq: Sequencer::new(options.gap_wait, options.from_version, options.max_keys)
                .with_max_held_bytes(buffer),
            client,
            key,
            options: WatchOptions {
                buffer_bytes: buffer,
                ..options
            },
            out: tx,
            ready: std::sync::Arc::new(tokio::sync::Semaphore::new(buffer)),
        };
        if let Err(e) = watch.run().await {
            let _ = watch.out.send((Err(e), None)).await;
        }
    });
    WatchStream { items, task }
}

/// The task behind a [`WatchStream`].
struct Watcher {
    client: Client,
    key: Key,
    options: WatchOptions,
    seq: Sequencer,
    out: mpsc::Sender<Ready>,
    /// [`WatchOptions::buffer_bytes`], less what the caller has not taken yet.
    ready: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The caller dropped the stream.
struct Gone;

impl Watcher {
    /// Watches from node to node until the caller goes (`Ok`) or no node can serve it.
    async fn run(&mut self) -> Result<()> {
        let home = self.client.home_of(&self.key);
        let mut started = false;
        let mut failing_since: Option<(Instant, Error)> = None;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0.. {
            let node = self.client.pick(home, attempt);
            let session = match self.open(node, !started).await {
                Ok(session) => session,
                Err(Ok(e)) if e.class() == ErrorClass::BadInput => return Err(e),
                Err(Ok(e)) => {
                    let (since, _) = failing_since.get_or_insert((Instant::now(), e.clone()));
                    if since.elapsed() >= self.client.options().op_timeout {
                        return Err(Error::Unavailable(format!(
                            "no node could serve the watch for {:?}: {}",
                            self.client.options().op_timeout,
                            e.message()
                        )));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(Err(Gone)) => return Ok(()),
            };
            (started, failing_since, backoff) = (true, None, Duration::from_millis(50));
            match self.follow(session).await {
                Ok(why) => log::info!("watch resuming on another node: {why}"),
                Err(Gone) => return Ok(()),
            }
        }
        unreachable!("the loop ends by returning")
    }

    /// Starts the watch on `node`, then reads where its keys stand (`first`: where their
    /// sequences start; later: a resume, whose gaps are then said).
    async fn open(
        &mut self,
        node: usize,
        first: bool,
    ) -> std::result::Result<WatchSession, std::result::Result<Error, Gone>> {
        let mut session = self
            .client
            .open_watch(
                node,
                &self.key,
                self.options.prefix,
                self.options.buffer_bytes,
            )
            .await
            .map_err(Ok)?;
        match self.read_states_beside(&mut session, first).await? {
            None => Ok(session),
            Some(why) => Err(Ok(Error::Unavailable(format!(
                "the watch ended while it read where its keys stand: {why}"
            )))),
        }
    }

    /// [`Watcher::read_states`], taking the session's changes meanwhile: they are held, then
    /// offered once the read is done (a key read first is started at the state read, and a
    /// change it held at or below that is dropped). A long listing then never lets the
    /// session's answers pile up until the connection drops them, which would end the session
    /// and start another listing, for ever. `Ok(Some(why))`: the session ended meanwhile.
    async fn read_states_beside(
        &mut self,
        session: &mut WatchSession,
        first: bool,
    ) -> std::result::Result<Option<String>, std::result::Result<Error, Gone>> {
        let mut held: Vec<(Key, Vec<KeyChange>)> = Vec::new();
        let mut held_bytes = 0;
        let most = READ_HOLD_FACTOR * self.options.buffer_bytes;
        let mut ended: Option<String> = None;
        let read = {
            let read = self.read_states(first);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    read = &mut read => break read,
                    event = session.next(), if ended.is_none() => match event {
                        Some(Ok(WatchEvent::Changed { key, changes })) => {
                            held_bytes += changes.iter().map(KeyChange::bytes).sum::<usize>();
                            if held_bytes > most {
                                ended = Some(format!(
                                    "over {most} bytes of changes (eight times the watch's \
                                     buffer: limits.http_watch_buffer_bytes for an HTTP \
                                     watch) came while it read where its keys stand"
                                ));
                            } else {
                                held.push((key, changes));
                            }
                        }
                        Some(Ok(WatchEvent::Started { .. })) => {}
                        Some(Ok(WatchEvent::Ended { reason })) => ended = Some(reason),
                        Some(Err(e)) => ended = Some(e.to_string()),
                        None => ended = Some("the connection to the node was lost".into()),
                    },
                }
            }
        };
        read?;
        let now = Instant::now();
        for (key, changes) in held {
            let items = self.seq.offer(now, key, changes);
            self.emit(items).await.map_err(Err)?;
        }
        Ok(ended)
    }

    /// Follows one node's session until it ends (`Ok(why)`: resume elsewhere).
    async fn follow(&mut self, mut session: WatchSession) -> std::result::Result<String, Gone> {
        let every = self.options.reconcile_every;
        let mut reconcile = tokio::time::interval_at((Instant::now() + every).into(), every);
        loop {
            let deadline = self.seq.next_deadline();
            let gap = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = session.next() => match event {
                    Some(Ok(WatchEvent::Changed { key, changes })) => {
                        let items = self.seq.offer(Instant::now(), key, changes);
                        self.emit(items).await?;
                    }
                    Some(Ok(WatchEvent::Started { .. })) => {}
                    Some(Ok(WatchEvent::Ended { reason })) => return Ok(reason),
                    Some(Err(e)) => return Ok(e.to_string()),
                    None => return Ok("the connection to the node was lost".into()),
                },
                _ = gap => {
                    let items = self.seq.expire(Instant::now());
                    self.emit(items).await?;
                }
                _ = reconcile.tick() => match self.read_states_beside(&mut session, false).await {
                    Ok(None) => {}
                    Ok(Some(why)) => return Ok(why),
                    Err(Ok(e)) => return Ok(format!("reconcile failed: {e}")),
                    Err(Err(Gone)) => return Err(Gone),
                },
                _ = self.out.closed() => return Err(Gone),
            }
        }
    }

    /// Reads each watched key's state (linearizable: a get, or a listing with deleted keys)
    /// and starts its sequence there (`first`) or offers it as a change (see the module doc).
    async fn read_states(
        &mut self,
        first: bool,
    ) -> std::result::Result<(), std::result::Result<Error, Gone>> {
        if !self.options.prefix {
            let outcome = self.client.get(&self.key).await.map_err(Ok)?;
            let Outcome::Get { value, version } = outcome else {
                return Err(Ok(Error::Unknown(format!("a get answered {outcome:?}"))));
            };
            let key = self.key.clone();
            return self
                .state_read(key, version, value, first)
                .await
                .map_err(Err);
        }
        let mut after: Option<Key> = None;
        loop {
            let page = self
                .client
                .list_versions(&self.key, after.as_deref(), 0)
                .await
                .map_err(Ok)?;
            for item in page.items {
                self.state_read(item.key, item.version, item.value, first)
                    .await
                    .map_err(Err)?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    async fn state_read(
        &mut self,
        key: Key,
        version: u64,
        value: Option<Vec<u8>>,
        first: bool,
    ) -> std::result::Result<(), Gone> {
        let now = Instant::now();
        // A key read again (a first read that failed midway, a reconcile) is offered: its
        // sequence is never restarted, so nothing is delivered twice and no gap is hidden.
        let items = if first && !self.seq.knows(&key) {
            self.seq
                .start(now, key, version, value, self.options.from_version)
        } else {
            self.seq.offer(now, key, vec![KeyChange { version, value }])
        };
        self.emit(items).await
    }

    /// Sends `items`; then, if a key did not fit ([`Sequencer::full`]), ends the watch with
    /// the error that says so (every seen key's change was taken up to then).
    async fn emit(&self, items: Vec<WatchItem>) -> std::result::Result<(), Gone> {
        for item in items {
            // Waits while the caller is that far behind: the watch then stops reading its
            // node, whose buffer for it fills, and it resumes, saying the gap.
            let bytes = ready_bytes(&item).min(self.options.buffer_bytes) as u32;
            let permit = self.ready.clone().acquire_many_owned(bytes).await;
            let permit = permit.map_err(|_| Gone)?;
            self.out
                .send((Ok(item), Some(permit)))
                .await
                .map_err(|_| Gone)?;
        }
        if self.seq.full() {
            let error = Error::BadRequest(format!(
                "the watch follows {} keys, its most: watch a narrower prefix",
                self.options.max_keys
            ));
            let _ = self.out.send((Err(error), None)).await;
            return Err(Gone);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(version: u64, value: &str) -> KeyChange {
        KeyChange {
            version,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn versions(items: &[WatchItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                WatchItem::Change { version, .. } => version.to_string(),
                WatchItem::Skipped { skipped_to, .. } => format!("skip{skipped_to}"),
            })
            .collect()
    }

    #[test]
    fn changes_in_order_are_delivered_at_once_and_duplicates_dropped() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS);
        assert!(s.start(now, b"k".to_vec(), 3, None, None).is_empty());
        let out = s.offer(now, b"k".to_vec(), vec![change(4, "a"), change(5, "b")]);
        assert_eq!(versions(&out), ["4", "5"]);
        assert!(s
            .offer(now, b"k".to_vec(), vec![change(5, "b"), change(3, "x")])
            .is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_change_out_of_order_waits_for_the_one_below_it() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS);
        s.start(now, b"k".to_vec(), 1, None, None);
        assert!(s.offer(now, b"k".to_vec(), vec![change(3, "c")]).is_empty());
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(1)));
        let out = s.offer(now, b"k".to_vec(), vec![change(2, "b")]);
        assert_eq!(versions(&out), ["2", "3"]);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_gap_that_waited_is_skipped_explicitly_and_late_changes_below_it_dropped() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS);
        s.start(now, b"k".to_vec(), 1, None, None);
        assert!(s
            .offer(now, b"k".to_vec(), vec![change(4, "d"), change(5, "e")])
            .is_empty());
        assert!(s.expire(now + Duration::from_millis(999)).is_empty());
        let out = s.expire(now + Duration::from_secs(1));
        assert_eq!(versions(&out), ["skip4", "4", "5"]);
        assert!(s.offer(now, b"k".to_vec(), vec![change(2, "b")]).is_empty());
        assert_eq!(s.last(b"k"), Some(5));
    }

    /// A watch follows at most `max_keys` keys: a state or a change of one more is not taken
    /// and the sequencer says it is full (the watch then ends, saying why); the keys it
    /// follows go on as before.
    #[test]
    fn a_key_past_the_most_a_watch_follows_is_refused_and_marks_it_full() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(1), None, 2);
        s.start(now, b"a".to_vec(), 1, None, None);
        assert_eq!(
            versions(&s.offer(now, b"b".to_vec(), vec![change(1, "b")])),
            ["1"]
        );
        assert!(!s.full());
        assert!(s.offer(now, b"c".to_vec(), vec![change(1, "c")]).is_empty());
        assert!(s.full() && !s.knows(b"c"));
        assert!(s.start(now, b"d".to_vec(), 4, None, None).is_empty());
        assert!(!s.knows(b"d"));
        assert_eq!(
            versions(&s.offer(now, b"a".to_vec(), vec![change(2, "a")])),
            ["2"]
        );
    }

    /// Only the keys that hold a change waiting are looked at for gaps, and they are skipped in
    /// key order (not a hash map's), whatever the number of keys followed.
    #[test]
    fn gaps_of_many_keys_expire_in_key_order_and_only_waiting_keys_count() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS);
        for i in 0..1_000u32 {
            s.start(now, format!("k{i:04}").into_bytes(), 1, None, None);
        }
        assert_eq!(s.next_deadline(), None);
        for i in [700u32, 3, 42] {
            let key = format!("k{i:04}").into_bytes();
            assert!(s.offer(now, key, vec![change(3, "x")]).is_empty());
        }
        assert_eq!(s.waiting.len(), 3);
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(1)));
        let out = s.expire(now + Duration::from_secs(1));
        let skipped: Vec<&[u8]> = out
            .iter()
            .filter_map(|i| match i {
                WatchItem::Skipped { key, .. } => Some(key.as_slice()),
                WatchItem::Change { .. } => None,
            })
            .collect();
        assert_eq!(skipped, vec![&b"k0003"[..], b"k0042", b"k0700"]);
        assert!(s.waiting.is_empty() && s.next_deadline().is_none());
    }

    /// The changes held for a lower version are bounded by bytes over every key followed:
    /// past the bound the gap of the key holding most is said at once (what it held is
    /// delivered), the others go on waiting; a duplicate is counted once, and what is
    /// delivered, by a gap filled or one said, is no longer counted.
    #[test]
    fn held_changes_past_their_bytes_say_the_gap_of_the_key_holding_most() {
        let now = Instant::now();
        let big = "x".repeat(100); // 132 bytes held
        let mut s =
            Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS).with_max_held_bytes(300);
        s.start(now, b"a".to_vec(), 1, None, None);
        s.start(now, b"b".to_vec(), 1, None, None);
        let a = vec![change(3, &big), change(4, &big), change(4, &big)];
        assert!(s.offer(now, b"a".to_vec(), a).is_empty());
        assert_eq!(s.held_bytes, 264);
        // b's change makes 396: a, holding most, says its gap.
        let out = s.offer(now, b"b".to_vec(), vec![change(5, &big)]);
        assert_eq!(versions(&out), ["skip3", "3", "4"]);
        assert!(out.iter().all(|i| matches!(i,
            WatchItem::Change { key, .. } | WatchItem::Skipped { key, .. } if key == b"a")));
        assert_eq!((s.held_bytes, s.waiting.len()), (132, 1));
        // b's gap filled: nothing held.
        let fill = vec![change(2, "y"), change(3, "y"), change(4, "y")];
        assert_eq!(
            versions(&s.offer(now, b"b".to_vec(), fill)),
            ["2", "3", "4", "5"]
        );
        assert_eq!(s.held_bytes, 0);
        // A gap that waited out `gap_wait` gives its bytes back too.
        assert!(s
            .offer(now, b"a".to_vec(), vec![change(6, &big)])
            .is_empty());
        assert_eq!(
            versions(&s.expire(now + Duration::from_secs(1))),
            ["skip6", "6"]
        );
        assert_eq!((s.held_bytes, s.next_deadline()), (0, None));
        // One change alone may be larger than the bound: it waits out `gap_wait`.
        let mut s =
            Sequencer::new(Duration::from_secs(1), None, MAX_WATCH_KEYS).with_max_held_bytes(100);
        s.start(now, b"a".to_vec(), 1, None, None);
        assert!(s
            .offer(now, b"a".to_vec(), vec![change(3, &big)])
            .is_empty());
        // A second makes it shed: the key says each of its gaps, to its last held change.
        let out = s.offer(now, b"a".to_vec(), vec![change(5, &big)]);
        assert_eq!(versions(&out), ["skip3", "3", "skip5", "5"]);
        assert_eq!((s.held_bytes, s.next_deadline()), (0, None));
    }

    #[test]
    fn from_version_delivers_the_state_read_and_says_what_it_cannot() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::ZERO, Some(3), MAX_WATCH_KEYS);
        let out = s.start(now, b"k".to_vec(), 3, Some(b"v".to_vec()), Some(3));
        assert_eq!(versions(&out), ["3"]);
        let out = s.start(now, b"j".to_vec(), 7, Some(b"v".to_vec()), Some(3));
        assert!(out.is_empty(), "4..6 may still arrive: {out:?}");
        assert_eq!(versions(&s.expire(now)), ["skip7", "7"]);
        // A key under the prefix never read starts below the version asked for.
        let out = s.offer(now, b"new".to_vec(), vec![change(2, "x"), change(3, "y")]);
        assert_eq!(versions(&out), ["3"]);
        // A key read below the version asked for: nothing below it is delivered.
        assert!(s.start(now, b"old".to_vec(), 1, None, Some(3)).is_empty());
        let out = s.offer(now, b"old".to_vec(), vec![change(2, "b"), change(3, "c")]);
        assert_eq!(versions(&out), ["3"]);
    }
}
