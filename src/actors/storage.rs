//! The storage actor: the only writer to LMDB. It runs on its own arbiter (thread), so the
//! blocking commit and fsync never stall the node's network or per-key actors.
//!
//! Group commit: `Persist` messages are queued; a `Flush` runs once the mailbox is drained
//! (actix handles every queued message before it polls the actor's own futures), so every
//! write that arrived while the previous commit was running shares the next transaction and
//! its one fsync. Each requester is answered only after that commit returns. A failed commit
//! answers every write in it with a storage error; nothing of it is kept.
//!
//! A commit may wait for more writes before it runs, once: 300 µs after a group of eight or
//! more (many writers), and `storage.commit_wait_among_reads_us` (1 ms) while the machine is
//! busy with work that does not wait on commits (`actors::linger` argues when that pays).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::linger::LingerSignal;
use crate::actors::messages::{
    AdoptRecords, CountRecords, DigestScan, FetchRecords, FindBehind, Load, Meta, MetaAnswer,
    Persist, ReplyTo, ScanDigest, ScanPrefix, ScanUnsettled,
};
use crate::actors::Stats;
use crate::config::DEFAULT_COMMIT_WAIT_US;
use crate::error::{Error, Result};
use crate::messages::{DigestEntry, SyncRecord};
use crate::paxos::acceptor::Acceptor;
use crate::paxos::record::{is_behind, AcceptorRecord};
use crate::paxos::types::Key;
use crate::storage::Store;

/// Messages that may wait in the mailbox; senders wait beyond that. (`Persist` is sent without
/// waiting: each acceptor has at most one in flight, so live acceptors bound those.)
const STORAGE_MAILBOX_CAPACITY: usize = 65_536;

type Waiter = ReplyTo<Result<()>>;

/// A commit lingers this long for more writes when the last group had at least
/// [`LINGER_MIN_GROUP`] records (a sign of many concurrent writers).
const LINGER: Duration = Duration::from_micros(300);
const LINGER_MIN_GROUP: usize = 8;

pub struct StorageActor {
    store: Store,
    pending: Vec<(Key, Arc<AcceptorRecord>, Waiter)>,
    /// The keys in `pending`.
    pending_keys: HashSet<Key>,
    flush_scheduled: bool,
    /// Records in the last flush, and whether the pending flush already lingered.
    last_group: usize,
    lingered: bool,
    linger_signal: LingerSignal,
    /// `storage.commit_wait_among_reads_us`: zero, the signal is never consulted.
    wait_among_reads: Duration,
    max_group_commit: usize,
    stats: Arc<Stats>,
    /// Tests only (`testing.commit_delay_ms`): a slow disk.
    commit_delay: Duration,
}

impl StorageActor {
    pub fn new(store: Store, max_group_commit: usize, stats: Arc<Stats>) -> StorageActor {
        StorageActor {
            store,
            pending: Vec::new(),
            pending_keys: HashSet::new(),
            flush_scheduled: false,
            last_group: 0,
            lingered: false,
            linger_signal: LingerSignal::new(&stats),
            wait_among_reads: Duration::from_micros(DEFAULT_COMMIT_WAIT_US),
            max_group_commit,
            stats,
            commit_delay: Duration::ZERO,
        }
    }

    /// How long a commit waits for company while reads keep the machine busy
    /// (`storage.commit_wait_among_reads_us`; zero: never for that reason).
    pub fn with_wait_among_reads(mut self, wait: Duration) -> StorageActor {
        self.wait_among_reads = wait;
        self
    }

    /// Sleeps this long before every commit (tests: a slow disk).
    pub fn with_commit_delay(mut self, delay: Duration) -> StorageActor {
        self.commit_delay = delay;
        self
    }

    /// Tests: the linger rule's signal, fixed.
    #[cfg(test)]
    pub fn with_linger_signal(mut self, signal: LingerSignal) -> StorageActor {
        self.linger_signal = signal;
        self
    }

    /// Commits everything pending, `max_group_commit` records per transaction.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        self.pending_keys.clear();
        self.last_group = self.pending.len();
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.max_group_commit);
            let group: Vec<_> = self.pending.drain(..n).collect();
            let records: Vec<(&[u8], &AcceptorRecord)> =
                group.iter().map(|(k, r, _)| (k.as_slice(), &**r)).collect();
            if !self.commit_delay.is_zero() {
                std::thread::sleep(self.commit_delay);
            }
            let started = std::time::Instant::now();
            let result = self.store.write(&records);
            match &result {
                Ok(()) => {
                    Stats::add(&self.stats.commits, 1);
                    Stats::add(&self.stats.records_written, group.len() as u64);
                    let metrics = &self.stats.metrics;
                    metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics.group_commit_records.observe(group.len() as f64);
                }
                Err(e) => log::error!("storage: commit of {} records failed: {e}", group.len()),
            }
            for (_, _, waiter) in group {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(Error::Storage(why)) => Err(Error::Storage(why.clone())),
                    Err(e) => Err(Error::Storage(e.to_string())),
                };
                let _ = waiter.send(answer);
            }
        }
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(STORAGE_MAILBOX_CAPACITY);
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.flush();
        Running::Stop
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Persist> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        self.pending_keys.insert(msg.key.clone());
        self.pending.push((msg.key, msg.record, msg.done));
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }
}

impl Handler<Flush> for StorageActor {
    type Result = ();

    /// A commit lingers once, so that the writes arriving meanwhile share it (fewer fsyncs
    /// for the same writes): briefly under many writers (the last group was large), longer
    /// while the machine is busy with work that does not wait on commits (`actors::linger`).
    /// This thread does nothing but storage: a wait delays only storage requests (a cold key's
    /// `Load`, scans, anti-entropy), by at most that wait.
    ///
    /// A `Flush` may find nothing pending: another handler (a `Load` of a pending key, an
    /// adoption) committed the group after this `Flush` was queued. It then neither waits
    /// nor commits an empty group (which would also forget the last group's size).
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            self.lingered = false;
            return;
        }
        if !self.lingered && self.pending.len() < self.max_group_commit {
            let among_reads = !self.wait_among_reads.is_zero();
            let linger = if among_reads && self.linger_signal.on(&self.stats) {
                Some((self.wait_among_reads, "among_reads"))
            } else {
                (self.last_group >= LINGER_MIN_GROUP).then_some((LINGER, "many_writers"))
            };
            if let Some((linger, reason)) = linger {
                let lingers = &self.stats.metrics.commit_lingers;
                lingers.with_label_values(&[reason]).inc();
                self.lingered = true;
                std::thread::sleep(linger);
                ctx.notify(Flush);
                return;
            }
        }
        self.lingered = false;
        self.flush();
    }
}

impl Handler<Load> for StorageActor {
    type Result = Result<Option<AcceptorRecord>>;

    fn handle(&mut self, msg: Load, _: &mut Context<Self>) -> Self::Result {
        // A load sees every write queued before it: commit first only if one is for its key
        // (a load of a fresh key must not break up the group being gathered).
        if self.pending_keys.contains(&msg.key) {
            self.flush();
        }
        self.store.load(&msg.key)
    }
}

impl Handler<ScanDigest> for StorageActor {
    type Result = Result<DigestScan>;

    fn handle(&mut self, msg: ScanDigest, _: &mut Context<Self>) -> Self::Result {
        let mut records = self.store.scan_heads(msg.after.as_deref(), msg.limit + 1)?;
        let more = records.len() > msg.limit;
        records.truncate(msg.limit);
        let entries = records
            .into_iter()
            .map(|(key, r)| DigestEntry {
                key,
                promised: r.promised,
                accepted: r.accepted,
            })
            .collect();
        Ok(DigestScan { entries, more })
    }
}

impl Handler<ScanUnsettled> for StorageActor {
    type Result = Result<(Vec<Key>, Option<Key>)>;

    fn handle(&mut self, msg: ScanUnsettled, _: &mut Context<Self>) -> Self::Result {
        let mut records = self.store.scan_heads(msg.after.as_deref(), msg.limit + 1)?;
        let more = records.len() > msg.limit;
        records.truncate(msg.limit);
        let last = more
            .then(|| records.last().map(|(k, _)| k.clone()))
            .flatten();
        let keys = records
            .into_iter()
            .filter(|(_, r)| r.unsettled)
            .map(|(k, _)| k)
            .collect();
        Ok((keys, last))
    }
}

impl Handler<FindBehind> for StorageActor {
    type Result = Result<Vec<Key>>;

    fn handle(&mut self, msg: FindBehind, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let keys: Vec<Key> = msg.entries.iter().map(|e| e.key.clone()).collect();
        let ours = self.store.load_heads(&keys)?;
        Ok(msg
            .entries
            .into_iter()
            .zip(ours)
            .filter(|(e, ours)| {
                let ours = ours.map(|h| (h.promised, h.accepted));
                is_behind(ours, e.promised, e.accepted)
            })
            .map(|(e, _)| e.key)
            .collect())
    }
}

impl Handler<FetchRecords> for StorageActor {
    type Result = Result<Vec<SyncRecord>>;

    fn handle(&mut self, msg: FetchRecords, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let records = self.store.fetch(&msg.keys, msg.max_bytes)?;
        Ok(records
            .into_iter()
            .map(|(key, record)| SyncRecord { key, record })
            .collect())
    }
}

impl Handler<ScanPrefix> for StorageActor {
    type Result = Result<(Vec<SyncRecord>, bool)>;

    fn handle(&mut self, msg: ScanPrefix, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let (records, more) =
            self.store
                .scan_prefix(&msg.prefix, msg.after.as_deref(), msg.limit, msg.max_bytes)?;
        let records = records
            .into_iter()
            .map(|(key, record)| SyncRecord { key, record })
            .collect();
        Ok((records, more))
    }
}

impl Handler<AdoptRecords> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: AdoptRecords, _: &mut Context<Self>) {
        let _ = msg.done.send(self.adopt(msg.records));
    }
}

impl StorageActor {
    /// Merges peers' records into ours (the rule is `paxos::acceptor::Acceptor::merge`),
    /// written like any other batch: one transaction. A broken peer record is skipped.
    fn adopt(&mut self, records: Vec<SyncRecord>) -> Result<u64> {
        self.flush();
        let records: Vec<&SyncRecord> = records
            .iter()
            .filter(|r| match r.record.check() {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("storage: a peer sent a broken record, skipped: {e}");
                    false
                }
            })
            .collect();
        let keys: Vec<Key> = records.iter().map(|r| r.key.clone()).collect();
        let ours = self.store.load_many(&keys)?;
        let mut merged = Vec::new();
        for (SyncRecord { key, record }, ours) in records.into_iter().zip(ours) {
            if let Some(record) = Acceptor::new(ours.unwrap_or_default()).adopt(record) {
                merged.push((key.as_slice(), record));
            }
        }
        let batch: Vec<(&[u8], &AcceptorRecord)> = merged.iter().map(|(k, r)| (*k, &**r)).collect();
        if !batch.is_empty() {
            self.store.write(&batch)?;
        }
        let changed = batch.len() as u64;
        Stats::add(&self.stats.commits, 1);
        Stats::add(&self.stats.records_written, changed);
        Ok(changed)
    }
}

impl Handler<CountRecords> for StorageActor {
    type Result = Result<u64>;

    fn handle(&mut self, _: CountRecords, _: &mut Context<Self>) -> Self::Result {
        self.store.record_count()
    }
}

impl Handler<Meta> for StorageActor {
    type Result = Result<MetaAnswer>;

    fn handle(&mut self, msg: Meta, _: &mut Context<Self>) -> Self::Result {
        // Everything queued before is committed first (the membership barrier relies on it).
        self.flush();
        Ok(match msg {
            Meta::StoreId => MetaAnswer::U64(self.store.store_id()?),
            Meta::BeginRound { call } => {
                let (round, fresh) = self.store.begin_round(call)?;
                MetaAnswer::Round(round, fresh)
            }
            Meta::RoundAnswered(round) => {
                self.store.round_answered(round)?;
                MetaAnswer::Done
            }
            Meta::LoadMembership => MetaAnswer::Membership(self.store.membership()?),
            Meta::Install(m) => MetaAnswer::U64(self.store.install_membership(&m)?),
            Meta::Hello {
                node,
                store,
                generation,
                call,
            } => MetaAnswer::U64(self.store.hello(node, store, generation, call)?),
            Meta::MarkRefused(why) => {
                self.store.mark_refused(&why)?;
                MetaAnswer::Done
            }
            Meta::Refused => MetaAnswer::Refused(self.store.refused()?),
        })
    }
}

/// How long `status` and a scrape wait for the store's count of its records: a storage
/// actor held up (a stalled disk, a long merge) must not hold up the tools an operator
/// looks at the node with.
const COUNT_WAIT: Duration = Duration::from_secs(1);

/// The store's count of its records (`CountRecords`), for `status` and `/metrics`; `None`
/// when the storage actor does not answer within [`COUNT_WAIT`] (a failure is logged,
/// naming `for_what`).
pub(crate) async fn records_stored(storage: &Addr<StorageActor>, for_what: &str) -> Option<u64> {
    match tokio::time::timeout(COUNT_WAIT, storage.send(CountRecords)).await {
        Ok(Ok(Ok(count))) => Some(count),
        Ok(Ok(Err(e))) => {
            log::warn!("{for_what}: counting the store's records failed: {e}");
            None
        }
        Ok(Err(_)) => None,
        Err(_) => {
            log::warn!("{for_what}: the storage actor did not count its records in {COUNT_WAIT:?}");
            None
        }
    }
}

/// Sends `msg` to the storage actor and waits for its answer.
pub(crate) async fn ask<M, T>(storage: &Addr<StorageActor>, msg: M) -> Result<T>
where
    M: Message<Result = Result<T>> + Send + 'static,
    T: Send + 'static,
    StorageActor: Handler<M>,
{
    storage
        .send(msg)
        .await
        .map_err(|e| Error::Storage(format!("storage actor: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::storage::tests::record;

    fn persist(storage: &Addr<StorageActor>, key: &str) -> oneshot::Receiver<Result<()>> {
        let (done, durable) = oneshot::channel();
        storage.do_send(Persist {
            key: key.as_bytes().to_vec(),
            record: Arc::new(record(1)),
            done,
        });
        durable
    }

    /// The default wait among reads.
    const LINGER_WAIT: Duration = Duration::from_micros(DEFAULT_COMMIT_WAIT_US);

    /// A storage actor on a fresh store whose wait-among-reads signal is forced on, waiting
    /// `wait` (zero: the rule off).
    fn storage_waiting_among_reads(
        wait: Duration,
    ) -> (tempfile::TempDir, Arc<Stats>, Addr<StorageActor>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let stats = Arc::new(Stats::default());
        let storage = StorageActor::new(store, 64, stats.clone())
            .with_linger_signal(LingerSignal::forced(true))
            .with_wait_among_reads(wait)
            .start();
        (dir, stats, storage)
    }

    /// Commits that waited among reads so far.
    fn waits_among_reads(stats: &Stats) -> u64 {
        let lingers = &stats.metrics.commit_lingers;
        lingers.with_label_values(&["among_reads"]).get()
    }

    /// Waits (at most 10 s) for a write's answer, which must be "committed".
    async fn answered(rx: oneshot::Receiver<Result<()>>) {
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("answered")
            .expect("not dropped")
            .expect("committed")
    }

    /// A lone writer and a burst larger than one transaction (`max_group_commit` 16) are all
    /// answered, in groups, and a load afterwards sees what they wrote.
    #[actix_rt::test]
    async fn every_writer_is_answered_after_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let stats = Arc::new(Stats::default());
        let storage = StorageActor::new(store, 16, stats.clone()).start();
        answered(persist(&storage, "lone")).await;
        let burst: Vec<_> = (0..200)
            .map(|i| persist(&storage, &format!("k{i:03}")))
            .collect();
        for rx in burst {
            answered(rx).await;
        }
        let commits = Stats::get(&stats.commits);
        assert_eq!(Stats::get(&stats.records_written), 201);
        assert!((1 + 200 / 16..=201).contains(&commits), "{commits} commits");
        for key in ["lone", "k000", "k199"] {
            let key = key.as_bytes().to_vec();
            let loaded = storage.send(Load { key }).await.unwrap().unwrap();
            assert_eq!(loaded, Some(record(1)));
        }
    }

    /// While commits linger among reads (`actors::linger`), a lone writer is still answered
    /// (after one wait, not forever), writers share commits, and none is answered before the
    /// commit holding its record returned.
    #[actix_rt::test]
    async fn commits_that_linger_among_reads_answer_each_writer_after_its_commit() {
        let (_dir, stats, storage) = storage_waiting_among_reads(LINGER_WAIT);
        answered(persist(&storage, "lone")).await;
        assert_eq!(Stats::get(&stats.records_written), 1);
        assert_eq!(
            waits_among_reads(&stats),
            1,
            "the lone write's commit waited once"
        );
        let writers: Vec<_> = (0..50)
            .map(|i| persist(&storage, &format!("k{i:02}")))
            .collect();
        for (i, rx) in writers.into_iter().enumerate() {
            answered(rx).await;
            let written = Stats::get(&stats.records_written);
            assert!(
                written >= 2 + i as u64,
                "writer {i} answered with {written} written"
            );
        }
        assert_eq!(Stats::get(&stats.records_written), 51);
        let commits = Stats::get(&stats.commits);
        assert!(
            commits < 51,
            "{commits} commits for 51 records: nothing shared"
        );
        assert!(waits_among_reads(&stats) >= 2);
    }

    /// A `Flush` queued for a group that a `Load` of one of its keys committed first finds
    /// nothing pending: it neither waits nor commits (before, it waited 1 ms for nothing and
    /// queued itself again).
    #[actix_rt::test]
    async fn a_flush_that_finds_its_group_committed_does_not_wait() {
        let (_dir, stats, storage) = storage_waiting_among_reads(LINGER_WAIT);
        // Both land in the mailbox before the actor runs: the Load commits the group, then
        // the Flush the Persist queued finds it gone.
        let durable = persist(&storage, "k");
        let load = storage.send(Load { key: b"k".to_vec() });
        assert_eq!(load.await.unwrap().unwrap(), Some(record(1)));
        answered(durable).await;
        let again = storage.send(Load { key: b"k".to_vec() });
        assert_eq!(again.await.unwrap().unwrap(), Some(record(1)));
        assert_eq!(Stats::get(&stats.commits), 1);
        assert_eq!(waits_among_reads(&stats), 0, "a wait with nothing pending");
    }

    /// `storage.commit_wait_among_reads_us = 0` turns the rule off, whatever its signal says.
    #[actix_rt::test]
    async fn a_zero_wait_among_reads_never_lingers_for_reads() {
        let (_dir, stats, storage) = storage_waiting_among_reads(Duration::ZERO);
        answered(persist(&storage, "lone")).await;
        assert_eq!(waits_among_reads(&stats), 0);
        assert_eq!(Stats::get(&stats.commits), 1);
    }

    /// `status` and a scrape do not wait for a held-up storage actor: while a commit takes
    /// 3 s (a stalled disk), the count of records is given up after `COUNT_WAIT` and reported
    /// as unknown; once the commit returned, it is counted again.
    #[actix_rt::test]
    async fn the_count_of_records_is_given_up_while_a_commit_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let stats = Arc::new(Stats::default());
        // Its own thread, as in a node: the stalled commit must not stall the caller's.
        let arbiter = actix::Arbiter::new();
        let storage = StorageActor::start_in_arbiter(&arbiter.handle(), move |_| {
            StorageActor::new(store, 64, stats).with_commit_delay(Duration::from_secs(3))
        });
        // The Load commits the pending record (its key is in the group) before the actor
        // takes the next message: the count queues behind a 3 s commit.
        let durable = persist(&storage, "k");
        let load = storage.send(Load { key: b"k".to_vec() });
        assert_eq!(records_stored(&storage, "test").await, None);
        assert_eq!(load.await.unwrap().unwrap(), Some(record(1)));
        answered(durable).await;
        assert_eq!(records_stored(&storage, "test").await, Some(1));
        arbiter.stop();
    }

    /// Anti-entropy between two stores through their actors: the digest of the one ahead
    /// shows what the other misses; fetched and adopted, it is no longer behind.
    #[actix_rt::test]
    async fn a_store_behind_a_peer_finds_what_it_misses_and_adopts_it() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let stats = Arc::new(Stats::default());
        let mut ahead = Store::open(dir_a.path(), 64 << 20, 1).unwrap();
        let mut behind = Store::open(dir_b.path(), 64 << 20, 2).unwrap();
        ahead
            .write(&[(b"a".as_slice(), &record(3)), (b"b".as_slice(), &record(1))])
            .unwrap();
        behind.write(&[(b"b".as_slice(), &record(1))]).unwrap();
        let ahead = StorageActor::new(ahead, 16, stats.clone()).start();
        let behind = StorageActor::new(behind, 16, stats).start();
        let scan = ahead
            .send(ScanDigest {
                after: None,
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!scan.more && !scan.entries.is_empty());
        let find = || FindBehind {
            entries: scan.entries.clone(),
        };
        let missing = behind.send(find()).await.unwrap().unwrap();
        assert_eq!(missing, vec![b"a".to_vec()]);
        let records = ahead
            .send(FetchRecords {
                keys: missing,
                max_bytes: 1 << 20,
            })
            .await
            .unwrap()
            .unwrap();
        let (done, adopted) = tokio::sync::oneshot::channel();
        behind.do_send(AdoptRecords { records, done });
        assert_eq!(adopted.await.unwrap().unwrap(), 1);
        let loaded = behind.send(Load { key: b"a".to_vec() }).await.unwrap();
        assert_eq!(loaded.unwrap(), Some(record(3)));
        assert!(behind.send(find()).await.unwrap().unwrap().is_empty());
    }
}
