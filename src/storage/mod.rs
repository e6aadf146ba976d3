//! LMDB through heed, behind a small interface: the acceptors' durable records, one per key,
//! and the node's identity.
//!
//! - Every record is encoded with postcard and followed by a CRC32 of those bytes, XORed
//!   with [`FORMAT_SALT`] (a plain CRC32 marks a record an older build wrote, read in its
//!   form: `record::decode_legacy`); a record is checked before it is written and again
//!   when it is read back ([`AcceptorRecord::check`]).
//! - [`Store::write`] writes a batch of records in one transaction; its commit is the fsync
//!   that makes them durable (LMDB's default flags: no `NO_SYNC`, `NO_META_SYNC` or
//!   `MAP_ASYNC`, which [`Store::is_fully_durable`] asserts).
//! - Write-ahead log: a batch is appended to the `log` database under increasing sequence
//!   numbers (its pages fill in order, so a commit dirties a few pages rather than one B-tree
//!   leaf per record), and kept in memory (`overlay`) until a merge moves every logged record
//!   into `acceptors` and empties the log, in one transaction. A merge runs when the log
//!   holds [`MERGE_RECORDS`] entries or [`MERGE_LOG_BYTES`] since the last one, or the overlay
//!   (one record per key, in memory) [`MERGE_BYTES`]; on open, the log is replayed and
//!   merged. The log's bound is also at most an eighth of the map ([`Store::merge_log_bytes`]),
//!   so that a merge, which needs free pages for what it moves before it frees the log's,
//!   finds them unless the acceptors' records themselves fill the map: with a fixed 512 MiB,
//!   a map of 256 MiB filled with the log of a few keys with large values (review,
//!   2026-12-08). Reads look in the overlay first. A record is durable once its log commit
//!   returns.
//!   (Until issue 23 the merge was due by the overlay's size alone: a keyspace smaller than
//!   [`MERGE_RECORDS`] keys and [`MERGE_BYTES`] was never merged, and its log grew with every
//!   write, 0.85 KB a put on every node, until the map was full.)
//! - A merge that fails (the map or the disk is full: a merge needs free pages before it
//!   frees the log's) changes nothing: the records stay durable in the log and readable from
//!   the overlay, the write that triggered it still succeeds, and the merge is tried again once
//!   the log has grown by half. Opening a store whose merge fails opens it all the same.
//!   Past [`MAX_OVERLAY_BYTES`] unmerged, new writes are refused (with the merge's error), so
//!   memory stays bounded; what was acknowledged stays readable. A refused write first tries
//!   the merge again, at most once per [`MERGE_RETRY_INTERVAL`]: the log no longer grows
//!   then, and the node would stay refused after the disk had room again until it
//!   restarted. A write whose commit fails (the map full) with records in the log tries a
//!   merge (at most once per [`MERGE_RETRY_INTERVAL`] while merges fail), and if that merge
//!   went through, the write once more: nothing of the failed transaction was kept, so the
//!   retry writes it whole.
//! - The map size is set explicitly; when the map is full a write fails with a storage error
//!   and nothing of that transaction is kept.
//! - Read transactions are opened and closed within one call, never held across messages.

use std::ops::Bound;
use std::path::Path;

use std::collections::BTreeMap;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

use crate::error::{Error, Result};
use crate::paxos::identity::{self, SeenStore};
use crate::paxos::membership::Membership;
use crate::paxos::record::{self, AcceptorRecord};
use crate::paxos::types::{Ballot, Key, NodeId};

/// Database names, in one place.
mod db_name {
    pub const ACCEPTORS: &str = "acceptors";
    pub const LOG: &str = "log";
    pub const META: &str = "meta";
}

/// Logged records kept in memory before they are merged into `acceptors`.
pub const MERGE_RECORDS: usize = 8_192;
/// ... and the most bytes of them.
pub const MERGE_BYTES: usize = 16 << 20;
/// Logged bytes past which a merge is due however few entries the log holds and however
/// small the overlay is (big values on few keys), and at most an eighth of the map
/// ([`Store::merge_log_bytes`]). High on purpose: a merge of a large log brings its pages
/// into the process's resident memory (file-backed, reclaimable, but counted), so merging
/// every 16 MiB of log of 256 KiB values made a node look 60 MiB larger
/// (`tests/transport_watch_budget.rs`, which runs with the default map for that reason).
pub const MERGE_LOG_BYTES: usize = 512 << 20;
/// Unmerged bytes past which writes are refused while merges fail.
pub const MAX_OVERLAY_BYTES: usize = 4 * MERGE_BYTES;
/// How often a write refused while merges fail tries the merge again.
pub const MERGE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Records with their keys, in key order.
pub type Records = Vec<(Vec<u8>, AcceptorRecord)>;

/// Keys of the meta database.
///
/// Reserved, never to be reused: `synced`, the mark of the in-place recovery removed in issue
/// 10, still present (and unread) on stores of older builds.
mod meta_key {
    pub const NODE_ID: &[u8] = b"node_id";
    /// The store's identity: a random u64, drawn when the store was created.
    pub const STORE_ID: &[u8] = b"store_id";
    /// The store's generation: raised for each fresh round of `Hello`s
    /// (`paxos::identity::begin_round`).
    pub const GENERATION: &[u8] = b"generation";
    /// The call of the round of `Hello`s at `GENERATION` until `q - 1` voters confirmed it
    /// (absent: confirmed, or none): begun again at the next start.
    pub const PENDING_CALL: &[u8] = b"pending_call";
    /// The installed membership (postcard).
    pub const MEMBERSHIP: &[u8] = b"membership";
    /// `peer_generation/<node id, big-endian>`: the highest generation of that node's store
    /// that this node has seen, and the store it was of (two big-endian u64). Written before
    /// issue 17 (one store per node); read only, as what is known of that one store.
    pub const PEER_GENERATION: &[u8] = b"peer_generation/";
    /// `peer_store/<node id><store id>` (big-endian): what this node remembers of that store
    /// of that node (`paxos::identity::SeenStore`: the highest generation it said `Hello` with).
    pub const PEER_STORE: &[u8] = b"peer_store/";
    /// Present (with the reason, UTF-8) once this store was found to be an older copy: it
    /// never votes again (`paxos::identity`).
    pub const REFUSED: &[u8] = b"refused";
}

const CRC_BYTES: usize = 4;

/// XORed into the CRC of every record this build writes: it tells a record of the current
/// form from one an older build wrote (its CRC is plain), exactly, as the two checksums of
/// one body always differ (`record::AcceptorRecordV2`). Postcard's bytes say nothing of their
/// type, and an older record could otherwise be read as a newer one.
const FORMAT_SALT: u32 = 0x5EC2_3A11;

pub struct Store {
    env: Env,
    acceptors: Database<Bytes, Bytes>,
    /// Sequence number (big-endian) → u16 key length, key, encoded record.
    log: Database<U64<BigEndian>, Bytes>,
    meta: Database<Bytes, Bytes>,
    /// Encoded records committed to the log and not merged yet, by key (ordered: scans
    /// read it beside `acceptors`).
    overlay: BTreeMap<Vec<u8>, Vec<u8>>,
    overlay_bytes: usize,
    /// The log's next sequence number: how many entries it holds since the last merge.
    next_seq: u64,
    /// The bytes of those entries.
    log_bytes: usize,
    /// The last merge failed with this error, at that moment; the next is tried once the
    /// log holds that many entries (or a refused write tries it, [`MERGE_RETRY_INTERVAL`]
    /// after the last).
    merge_failure: Option<(String, u64, std::time::Instant)>,
    /// Logged bytes past which a merge is due: [`MERGE_LOG_BYTES`], at most an eighth of the
    /// map (see the module doc).
    merge_log_bytes: usize,
    #[cfg(test)]
    fail_merges: bool,
    /// Test hook: this many appends fail before they write anything.
    #[cfg(test)]
    fail_appends: usize,
    /// Test count: the merges tried by [`Store::try_merge`].
    #[cfg(test)]
    merges_tried: u64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` for node `node`. Refuses a directory that
    /// belongs to another node.
    pub fn open(dir: &Path, map_size_bytes: usize, node: NodeId) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("data dir {}: {e}", dir.display())))?;
        // SAFETY: the environment is opened once per process and directory (heed refuses a
        // second open of the same path), with LMDB's default, fully durable flags.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map_size_bytes)
                .max_dbs(4)
                .max_readers(64)
                .open(dir)
        }
        .map_err(|e| Error::Config(format!("data dir {}: {e}", dir.display())))?;
        let mut wtxn = env.write_txn()?;
        let acceptors = env.create_database(&mut wtxn, Some(db_name::ACCEPTORS))?;
        let log = env.create_database(&mut wtxn, Some(db_name::LOG))?;
        let meta: Database<Bytes, Bytes> = env.create_database(&mut wtxn, Some(db_name::META))?;
        if meta.get(&wtxn, meta_key::STORE_ID)?.is_none() {
            // A new store: its identity, never zero (0 means "not recorded" in a membership).
            let id: u64 = rand::random::<u64>().max(1);
            meta.put(&mut wtxn, meta_key::STORE_ID, &id.to_be_bytes())?;
        }
        match meta.get(&wtxn, meta_key::NODE_ID)? {
            None => meta.put(&mut wtxn, meta_key::NODE_ID, &node.to_be_bytes())?,
            Some(found) if found == node.to_be_bytes() => {}
            Some(found) => {
                return Err(Error::Config(format!(
                    "data dir {} belongs to node {:?}, not node {node}",
                    dir.display(),
                    found
                )))
            }
        }
        wtxn.commit()?;
        let mut store = Store {
            env,
            acceptors,
            log,
            meta,
            overlay: BTreeMap::new(),
            overlay_bytes: 0,
            next_seq: 0,
            log_bytes: 0,
            merge_failure: None,
            merge_log_bytes: MERGE_LOG_BYTES.min(map_size_bytes / 8),
            #[cfg(test)]
            fail_merges: FAIL_MERGES.with(|f| f.get()),
            #[cfg(test)]
            fail_appends: 0,
            #[cfg(test)]
            merges_tried: 0,
        };
        store.replay_log()?;
        store.try_merge();
        Ok(store)
    }

    /// Loads what the log holds (records committed but not merged before a stop or a crash).
    fn replay_log(&mut self) -> Result<()> {
        let rtxn = self.env.read_txn()?;
        let mut replayed = Vec::new();
        for entry in self.log.iter(&rtxn)? {
            let (seq, bytes) = entry?;
            let (key, record) = split_log_entry(bytes)?;
            decode(key, record)?;
            replayed.push((key.to_vec(), record.to_vec()));
            self.next_seq = seq + 1;
            self.log_bytes += bytes.len();
        }
        drop(rtxn);
        for (key, record) in replayed {
            self.remember(key, record);
        }
        Ok(())
    }

    fn remember(&mut self, key: Vec<u8>, record: Vec<u8>) {
        let key_len = key.len();
        self.overlay_bytes += key_len + record.len();
        if let Some(old) = self.overlay.insert(key, record) {
            // The key was counted when it came first.
            self.overlay_bytes -= key_len + old.len();
        }
    }

    /// Merges, and on failure remembers why and when to try again (see the module doc).
    fn try_merge(&mut self) {
        #[cfg(test)]
        {
            self.merges_tried += 1;
        }
        if let Err(e) = self.merge() {
            let retry_at = self.next_seq + self.next_seq / 2 + 1;
            log::warn!(
                "storage: merging {} logged records failed ({e}); they stay durable in the \
                 log, next try at {retry_at} log entries",
                self.overlay.len()
            );
            let now = std::time::Instant::now();
            self.merge_failure = Some((e.to_string(), retry_at, now));
        } else {
            self.merge_failure = None;
        }
    }

    /// Moves every logged record into `acceptors` and empties the log, in one transaction.
    pub fn merge(&mut self) -> Result<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.fail_merges {
            return Err(Error::Storage("MDB_MAP_FULL (injected)".into()));
        }
        let mut wtxn = self.env.write_txn()?;
        for (key, record) in &self.overlay {
            self.acceptors.put(&mut wtxn, key, record)?;
        }
        self.log.clear(&mut wtxn)?;
        wtxn.commit()?;
        self.overlay.clear();
        self.overlay_bytes = 0;
        self.next_seq = 0;
        self.log_bytes = 0;
        Ok(())
    }

    /// True when none of LMDB's flags that trade durability for speed is set.
    pub fn is_fully_durable(&self) -> Result<bool> {
        let flags = self.env.get_flags()?;
        let unsafe_flags = EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC | EnvFlags::MAP_ASYNC;
        Ok(flags & unsafe_flags.bits() == 0)
    }

    /// Writes every record in one transaction (appended to the log); returns once it is
    /// committed and fsynced.
    pub fn write(&mut self, records: &[(&[u8], &AcceptorRecord)]) -> Result<()> {
        if let Some((_, _, failed_at)) = &self.merge_failure {
            if self.overlay_bytes >= MAX_OVERLAY_BYTES
                && failed_at.elapsed() >= MERGE_RETRY_INTERVAL
            {
                self.try_merge();
            }
        }
        if let Some((why, _, _)) = &self.merge_failure {
            if self.overlay_bytes >= MAX_OVERLAY_BYTES {
                return Err(Error::Storage(format!(
                    "{} MiB of logged records cannot be merged: {why}",
                    self.overlay_bytes >> 20
                )));
            }
        }
        let merge_may_run = self
            .merge_failure
            .as_ref()
            .is_none_or(|(_, _, failed_at)| failed_at.elapsed() >= MERGE_RETRY_INTERVAL);
        match self.append(records) {
            Err(e) if !self.overlay.is_empty() && merge_may_run => {
                // The map may be full of log: a merge frees it (nothing of the failed
                // transaction was kept, so the write is tried whole once more).
                log::warn!("storage: a write failed ({e}); merging the log and trying again");
                self.try_merge();
                if self.merge_failure.is_some() {
                    return Err(e);
                }
                self.append(records)?;
            }
            result => result?,
        }
        // The records are durable now, whatever the merge does.
        let due = match &self.merge_failure {
            None => {
                self.next_seq >= MERGE_RECORDS as u64
                    || self.overlay_bytes >= MERGE_BYTES
                    || self.log_bytes >= self.merge_log_bytes
            }
            Some((_, retry_at, _)) => self.next_seq >= *retry_at,
        };
        if due {
            self.try_merge();
        }
        Ok(())
    }

    /// Appends `records` to the log in one transaction, committed and fsynced, and remembers
    /// them; nothing of it is kept if it fails.
    fn append(&mut self, records: &[(&[u8], &AcceptorRecord)]) -> Result<()> {
        #[cfg(test)]
        if self.fail_appends > 0 {
            self.fail_appends -= 1;
            return Err(Error::Storage("MDB_MAP_FULL (injected)".into()));
        }
        let mut wtxn = self.env.write_txn()?;
        let mut logged = Vec::with_capacity(records.len());
        let mut entry = Vec::new();
        let mut seq = self.next_seq;
        let mut log_bytes = self.log_bytes;
        for (key, record) in records {
            let mut encoded = Vec::new();
            encode(record, &mut encoded)?;
            entry.clear();
            entry.extend_from_slice(&(key.len() as u16).to_be_bytes());
            entry.extend_from_slice(key);
            entry.extend_from_slice(&encoded);
            self.log.put(&mut wtxn, &seq, &entry)?;
            seq += 1;
            log_bytes += entry.len();
            logged.push((key.to_vec(), encoded));
        }
        wtxn.commit()?;
        self.next_seq = seq;
        self.log_bytes = log_bytes;
        for (key, encoded) in logged {
            self.remember(key, encoded);
        }
        Ok(())
    }

    /// The record of `key`, or `None` if this node never wrote one.
    pub fn load(&self, key: &[u8]) -> Result<Option<AcceptorRecord>> {
        let rtxn = self.env.read_txn()?;
        match self.encoded(&rtxn, key)? {
            None => Ok(None),
            Some(bytes) => decode(key, bytes).map(Some),
        }
    }

    /// Number of keys with a record.
    pub fn record_count(&self) -> Result<u64> {
        let rtxn = self.env.read_txn()?;
        let mut len = self.acceptors.len(&rtxn)?;
        for key in self.overlay.keys() {
            if self.acceptors.get(&rtxn, key)?.is_none() {
                len += 1;
            }
        }
        Ok(len)
    }

    /// Up to `limit` records with keys after `after` (all keys if `None`), in key order:
    /// `acceptors` and the overlay read side by side (the overlay's record wins), so a scan
    /// needs no merge.
    pub fn scan(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, AcceptorRecord)>> {
        match after {
            None => self.scan_from(Bound::Unbounded, limit),
            Some(after) => self.scan_from(Bound::Excluded(after), limit),
        }
    }

    /// The records of the keys that start with `prefix`, after `after` (`None`: from the
    /// first such key), in key order: at most `limit`, and no more than `max_bytes` of keys
    /// and values (at least one record); and whether more of the prefix follow.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Records, bool)> {
        // LMDB takes no empty key, not even as a bound.
        let lower = match after {
            Some(after) if after >= prefix && !after.is_empty() => Bound::Excluded(after),
            _ if prefix.is_empty() => Bound::Unbounded,
            _ => Bound::Included(prefix),
        };
        // Each record is decoded only if it is taken, or is the one that shows more follow:
        // the walk stops at the prefix's end (its keys are one range), at `limit`, and at the
        // first record over `max_bytes` (the first is taken whatever its size).
        let (mut records, mut bytes, mut more) = (Vec::new(), 0, false);
        self.scan_each(lower, |key, raw| {
            if !key.starts_with(prefix) {
                return Ok(false);
            }
            if records.len() == limit {
                more = true;
                return Ok(false);
            }
            let record = decode(key, raw)?;
            // The record as it travels: its value, and the register's memory of recent
            // writes and clients' floors, which can outweigh the value.
            let size = key.len() + postcard::experimental::serialized_size(&record).unwrap_or(0);
            if !records.is_empty() && bytes + size > max_bytes {
                more = true;
                return Ok(false);
            }
            bytes += size;
            records.push((key.to_vec(), record));
            Ok(true)
        })?;
        Ok((records, more))
    }

    /// Up to `limit` records with keys after `after` (all keys if `None`), in key order, as
    /// [`Store::scan`] but each read only as far as anti-entropy needs ([`RecordHead`]): its
    /// digests and its search for unsettled keys page through every record of the store,
    /// every `sync_interval_ms`, for each peer.
    pub fn scan_heads(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, RecordHead)>> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.scan_from_as(lower, limit, decode_head)
    }

    /// Up to `limit` records from `lower` on, in key order (see [`Store::scan`]).
    fn scan_from(
        &self,
        lower: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, AcceptorRecord)>> {
        self.scan_from_as(lower, limit, decode)
    }

    /// [`Store::scan_from`], each record read by `read`.
    fn scan_from_as<T>(
        &self,
        lower: Bound<&[u8]>,
        limit: usize,
        read: impl Fn(&[u8], &[u8]) -> Result<T>,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Stops at the `limit`-th record, without reading the one after it.
        self.scan_each(lower, |key, bytes| {
            out.push((key.to_vec(), read(key, bytes)?));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Visits the stored records from `lower` on, in key order, each as its key and its
    /// stored bytes (the log's newer record shadowing the table's), until `visit` says stop.
    fn scan_each(
        &self,
        lower: Bound<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let rtxn = self.env.read_txn()?;
        let bounds = (lower, Bound::Unbounded);
        let mut stored = self.acceptors.range(&rtxn, &bounds)?.peekable();
        let logged_bounds = (lower.map(<[u8]>::to_vec), Bound::Unbounded);
        let mut logged = self.overlay.range(logged_bounds).peekable();
        loop {
            let next_stored = match stored.peek() {
                Some(Ok((key, _))) => Some(*key),
                Some(Err(_)) => return Err(stored.next().expect("peeked").unwrap_err().into()),
                None => None,
            };
            let take_logged = match (logged.peek(), next_stored) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((lk, _)), Some(sk)) => lk.as_slice() <= sk,
            };
            let go_on = if take_logged {
                let (key, bytes) = logged.next().expect("peeked");
                if next_stored == Some(key.as_slice()) {
                    stored.next(); // shadowed by the newer logged record
                }
                visit(key, bytes)?
            } else {
                let (key, bytes) = stored.next().expect("peeked")?;
                visit(key, bytes)?
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    /// This store's identity (see `paxos::membership`).
    pub fn store_id(&self) -> Result<u64> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta_u64(&rtxn, meta_key::STORE_ID)?.unwrap_or(0))
    }

    /// Begins a round of `Hello`s (`paxos::identity::begin_round`): the pending one again,
    /// else a fresh one at the next generation with `call`, stored (durably) as the
    /// generation and as pending. Returns it, and whether it is fresh.
    pub fn begin_round(&self, call: u64) -> Result<(identity::Round, bool)> {
        let mut wtxn = self.env.write_txn()?;
        let generation = self.meta_u64(&wtxn, meta_key::GENERATION)?.unwrap_or(0);
        let pending = self
            .meta_u64(&wtxn, meta_key::PENDING_CALL)?
            .filter(|call| *call != 0)
            .map(|call| identity::Round { generation, call });
        let (round, fresh) = identity::begin_round(generation, pending, call);
        if fresh {
            self.meta.put(
                &mut wtxn,
                meta_key::GENERATION,
                &round.generation.to_be_bytes(),
            )?;
            self.meta
                .put(&mut wtxn, meta_key::PENDING_CALL, &round.call.to_be_bytes())?;
            wtxn.commit()?;
        }
        Ok((round, fresh))
    }

    /// `round` was confirmed (`paxos::identity::Confirmation::to_clear`): it is pending no
    /// more (the next start begins a fresh one).
    pub fn round_answered(&self, round: identity::Round) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let generation = self.meta_u64(&wtxn, meta_key::GENERATION)?.unwrap_or(0);
        let pending = self.meta_u64(&wtxn, meta_key::PENDING_CALL)?.unwrap_or(0);
        if generation == round.generation && pending == round.call {
            self.meta.delete(&mut wtxn, meta_key::PENDING_CALL)?;
            wtxn.commit()?;
        }
        Ok(())
    }

    fn meta_u64(&self, txn: &heed::RoTxn, key: &[u8]) -> Result<Option<u64>> {
        match self.meta.get(txn, key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(u64::from_be_bytes(bytes.try_into().map_err(
                |_| Error::Storage(format!("meta {}: not a u64", String::from_utf8_lossy(key))),
            )?))),
        }
    }

    /// The installed membership, if any.
    pub fn membership(&self) -> Result<Option<Membership>> {
        let rtxn = self.env.read_txn()?;
        self.membership_in(&rtxn)
    }

    fn membership_in(&self, rtxn: &heed::RoTxn) -> Result<Option<Membership>> {
        match self.meta.get(rtxn, meta_key::MEMBERSHIP)? {
            None => Ok(None),
            Some(bytes) => Membership::decode(bytes)
                .map(Some)
                .map_err(|e| Error::Storage(format!("the stored membership: {e}"))),
        }
    }

    /// Installs `membership` (durably) if it is newer than the installed one; returns the
    /// epoch installed afterwards. A store that installed a membership serves that cluster
    /// for good: one of another cluster identity is refused (`Error::NotThisNode`), whatever
    /// its epoch.
    pub fn install_membership(&self, membership: &Membership) -> Result<u64> {
        let mut wtxn = self.env.write_txn()?;
        let current = self.membership_in(&wtxn)?;
        match membership.installs_over(current.as_ref()) {
            Err(why) => return Err(Error::NotThisNode(why)),
            Ok(false) => return Ok(current.map_or(0, |c| c.epoch)),
            Ok(true) => {}
        }
        self.meta
            .put(&mut wtxn, meta_key::MEMBERSHIP, &membership.encode())?;
        wtxn.commit()?;
        Ok(membership.epoch)
    }

    /// Answers `node`'s store `store` saying `Hello` at `generation` (the decision is
    /// `paxos::identity::judge_hello`), remembering what it decides, in one transaction: the
    /// generation of that store seen before (0: none). At most
    /// `identity::MAX_STORES_PER_NODE` stores of a node are remembered.
    pub fn hello(&self, node: NodeId, store: u64, generation: u64, call: u64) -> Result<u64> {
        let key = identity::seen_store_key(meta_key::PEER_STORE, node, store);
        let mut wtxn = self.env.write_txn()?;
        let corrupt = || {
            Error::Storage(format!(
                "what this node knows of node {node}'s stores: corrupt"
            ))
        };
        let seen = match self.meta.get(&wtxn, &key)? {
            Some(bytes) => Some(SeenStore::decode(bytes).ok_or_else(corrupt)?),
            None => self.legacy_seen(&wtxn, node, store)?,
        };
        let (answer, remember) = identity::judge_hello(seen, generation, call);
        let Some(remember) = remember else {
            return Ok(answer);
        };
        let prefix = identity::seen_node_prefix(meta_key::PEER_STORE, node);
        let mut remembered = Vec::new();
        for entry in self.meta.prefix_iter(&wtxn, &prefix)? {
            let (k, v) = entry?;
            let other = u64::from_be_bytes(k[prefix.len()..].try_into().map_err(|_| corrupt())?);
            if other != store {
                remembered.push((other, SeenStore::decode(v).ok_or_else(corrupt)?));
            }
        }
        let recorded = self
            .membership_in(&wtxn)?
            .and_then(|m| m.member(node).map(|x| x.store));
        if let Some(forget) = identity::store_to_forget(&remembered, recorded) {
            let forget = identity::seen_store_key(meta_key::PEER_STORE, node, forget);
            self.meta.delete(&mut wtxn, &forget)?;
        }
        self.meta.put(&mut wtxn, &key, &remember.encode())?;
        wtxn.commit()?;
        Ok(answer)
    }

    /// What the one-store-per-node record of before issue 17 says of `store`.
    fn legacy_seen(
        &self,
        txn: &heed::RoTxn,
        node: NodeId,
        store: u64,
    ) -> Result<Option<SeenStore>> {
        let mut key = meta_key::PEER_GENERATION.to_vec();
        key.extend_from_slice(&node.to_be_bytes());
        Ok(match self.meta.get(txn, &key)? {
            Some(b) if b.len() == 16 && b[..8] == store.to_be_bytes() => SeenStore::decode(&b[8..]),
            _ => None,
        })
    }

    /// Marks this store refused for good (`paxos::identity`), with the reason.
    pub fn mark_refused(&self, why: &str) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        self.meta
            .put(&mut wtxn, meta_key::REFUSED, why.as_bytes())?;
        wtxn.commit()?;
        Ok(())
    }

    /// Why this store was refused, if it was.
    pub fn refused(&self) -> Result<Option<String>> {
        let rtxn = self.env.read_txn()?;
        Ok(self
            .meta
            .get(&rtxn, meta_key::REFUSED)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// The records of `keys`, in order, stopping before `max_bytes` of values (always at
    /// least one record, if any exists).
    pub fn fetch(&self, keys: &[Vec<u8>], max_bytes: usize) -> Result<Vec<(Key, AcceptorRecord)>> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for key in keys {
            if let Some(raw) = self.encoded(&rtxn, key)? {
                bytes += raw.len() + key.len();
                if bytes > max_bytes && !out.is_empty() {
                    break;
                }
                out.push((key.clone(), decode(key, raw)?));
            }
        }
        Ok(out)
    }

    /// The records of `keys` (`None` where there is none), in order, from one read
    /// transaction.
    pub fn load_many(&self, keys: &[Key]) -> Result<Vec<Option<AcceptorRecord>>> {
        self.load_many_as(keys, decode)
    }

    /// The [`RecordHead`]s of `keys` (`None`: no record), as anti-entropy compares them with a
    /// peer's digest: read only as far as that needs.
    pub fn load_heads(&self, keys: &[Key]) -> Result<Vec<Option<RecordHead>>> {
        self.load_many_as(keys, decode_head)
    }

    /// The records of `keys` in one read transaction, each read by `read`.
    fn load_many_as<T>(
        &self,
        keys: &[Key],
        read: impl Fn(&[u8], &[u8]) -> Result<T>,
    ) -> Result<Vec<Option<T>>> {
        let rtxn = self.env.read_txn()?;
        keys.iter()
            .map(|key| match self.encoded(&rtxn, key)? {
                Some(raw) => Ok(Some(read(key, raw)?)),
                None => Ok(None),
            })
            .collect()
    }

    /// The encoded record of `key`: the logged one if it is not merged yet, else the stored one.
    fn encoded<'a>(&'a self, rtxn: &'a heed::RoTxn, key: &[u8]) -> Result<Option<&'a [u8]>> {
        match self.overlay.get(key) {
            Some(record) => Ok(Some(record.as_slice())),
            None => Ok(self.acceptors.get(rtxn, key)?),
        }
    }
}

fn encode(record: &AcceptorRecord, buf: &mut Vec<u8>) -> Result<()> {
    record
        .check()
        .map_err(|e| Error::Storage(format!("refusing to write a broken record: {e}")))?;
    buf.clear();
    postcard::to_io(record, &mut *buf).map_err(|e| Error::Storage(e.to_string()))?;
    let crc = crc32fast::hash(buf) ^ FORMAT_SALT;
    buf.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A log entry's key and encoded record.
fn split_log_entry(entry: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || Error::Storage("a log entry is corrupt".into());
    let len_bytes: [u8; 2] = entry
        .get(..2)
        .ok_or_else(corrupt)?
        .try_into()
        .expect("two bytes");
    let key_len = u16::from_be_bytes(len_bytes) as usize;
    let key = entry.get(2..2 + key_len).ok_or_else(corrupt)?;
    Ok((key, &entry[2 + key_len..]))
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<AcceptorRecord> {
    let corrupt = corruption(key);
    let (body, current) = checked_body(key, bytes)?;
    let record: AcceptorRecord = if current {
        postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?
    } else {
        // Written by a build before the compact remembered writes (`record::decode_legacy`).
        record::decode_legacy(body).map_err(&corrupt)?
    };
    record.check().map_err(&corrupt)?;
    Ok(record)
}

/// What anti-entropy reads of a record ([`Store::scan_heads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead {
    pub promised: Ballot,
    pub accepted: Ballot,
    /// [`AcceptorRecord::is_unsettled`].
    pub unsettled: bool,
}

impl From<&AcceptorRecord> for RecordHead {
    fn from(r: &AcceptorRecord) -> RecordHead {
        RecordHead {
            promised: r.promised,
            accepted: r.accepted,
            unsettled: r.is_unsettled(),
        }
    }
}

/// A record's [`RecordHead`], its checksum checked, without decoding its state: every form
/// of a record (this build's and the legacy ones, `record::decode_legacy`) begins with its
/// promised and accepted ballots. Whether it is unsettled takes the rest only when nothing
/// was accepted (`fast_unknown` is the record's last field; with nothing accepted its state
/// is empty, `AcceptorRecord::check`, so that decode is short). A digest scan used to decode
/// every record whole, with its value and remembered writes: about 90 % of an idle node's
/// allocations (BENCHMARKS.md, issue 23).
///
/// What it does not check that a whole read does: the rest of `AcceptorRecord::check` (a
/// state without an accepted ballot, a lost fast vote beside an accepted state). A record
/// whose checksum holds was checked when it was written (`encode` refuses a broken one), and
/// every read that acts on a record (a load, a fetch for a peer, a merge) reads it whole and
/// checks it again; a head only decides which keys anti-entropy looks at.
fn decode_head(key: &[u8], bytes: &[u8]) -> Result<RecordHead> {
    let (body, _) = checked_body(key, bytes)?;
    let ((promised, accepted), _): ((Ballot, Ballot), _) =
        postcard::take_from_bytes(body).map_err(|e| corruption(key)(e.to_string()))?;
    if accepted > promised {
        return Err(corruption(key)(format!(
            "accepted {accepted} above promised {promised}"
        )));
    }
    let unsettled = match accepted {
        Ballot::FAST => true,
        Ballot::ZERO => decode(key, bytes)?.fast_unknown,
        _ => false,
    };
    Ok(RecordHead {
        promised,
        accepted,
        unsettled,
    })
}

/// A stored record's body, its checksum checked; `true` if this build's form wrote it (a
/// salted checksum), `false` for an older build's (a plain one).
fn checked_body<'a>(key: &[u8], bytes: &'a [u8]) -> Result<(&'a [u8], bool)> {
    if bytes.len() < CRC_BYTES {
        return Err(corruption(key)("too short".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let crc = u32::from_le_bytes(crc.try_into().expect("CRC_BYTES"));
    let computed = crc32fast::hash(body);
    if crc == computed ^ FORMAT_SALT {
        Ok((body, true))
    } else if crc == computed {
        Ok((body, false))
    } else {
        Err(corruption(key)("checksum mismatch".into()))
    }
}

fn corruption(key: &[u8]) -> impl Fn(String) -> Error + '_ {
    move |why| {
        Error::Storage(format!(
            "record of key {:?} is corrupt: {why}",
            String::from_utf8_lossy(key)
        ))
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: stores opened on this thread fail every merge.
    pub(crate) static FAIL_MERGES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::paxos::types::{Ballot, Register};

    /// A valid record whose state is at `version` (for tests of storage and its actor).
    pub(crate) fn record(version: u64) -> AcceptorRecord {
        AcceptorRecord {
            promised: Ballot::new(version + 1, 1),
            accepted: Ballot::new(version, 1),
            state: Register {
                version,
                value: Some(format!("v{version}").into_bytes()),
                ..Register::default()
            },
            fast_unknown: false,
        }
    }

    #[test]
    fn lmdb_is_opened_without_any_flag_that_skips_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        assert!(store.is_fully_durable().unwrap());
        let flags = store.env.get_flags().unwrap();
        for flag in [
            EnvFlags::NO_SYNC,
            EnvFlags::NO_META_SYNC,
            EnvFlags::MAP_ASYNC,
        ] {
            assert_eq!(flags & flag.bits(), 0, "{flag:?} is set");
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
            store
                .write(&[(b"a".as_slice(), &record(1)), (b"b".as_slice(), &record(2))])
                .unwrap();
        }
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        assert_eq!(store.load(b"a").unwrap(), Some(record(1)));
        assert_eq!(store.load(b"c").unwrap(), None);
        assert_eq!(store.record_count().unwrap(), 2);
        let scanned = store.scan(Some(b"a"), 10).unwrap();
        assert_eq!(scanned, vec![(b"b".to_vec(), record(2))]);
    }

    #[test]
    fn the_latest_logged_record_wins_before_and_after_a_merge_or_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
            store.write(&[(b"a".as_slice(), &record(1))]).unwrap();
            store.write(&[(b"a".as_slice(), &record(2))]).unwrap();
            assert_eq!(store.load(b"a").unwrap(), Some(record(2)));
            // dropped without a merge: the log is all there is
        }
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        assert_eq!(store.load(b"a").unwrap(), Some(record(2)));
        // enough distinct keys to force a merge in the middle
        let keys: Vec<Vec<u8>> = (0..MERGE_RECORDS + 10)
            .map(|i| format!("k{i:06}").into_bytes())
            .collect();
        for chunk in keys.chunks(1000) {
            let r = record(3);
            let batch: Vec<(&[u8], &AcceptorRecord)> =
                chunk.iter().map(|k| (k.as_slice(), &r)).collect();
            store.write(&batch).unwrap();
        }
        assert!(store.overlay.len() < MERGE_RECORDS, "a merge ran");
        for key in &keys {
            assert_eq!(store.load(key).unwrap(), Some(record(3)));
        }
        assert_eq!(store.record_count().unwrap(), keys.len() as u64 + 1);
    }

    /// A scan's keys, and whether it said more follow.
    fn keys_of((records, more): (Records, bool)) -> (Vec<Vec<u8>>, bool) {
        (records.into_iter().map(|(k, _)| k).collect(), more)
    }

    /// Stores under `key`, in the table, a record whose checksum does not match.
    fn put_corrupt(store: &Store, key: &[u8]) {
        let mut wtxn = store.env.write_txn().unwrap();
        let mut buf = Vec::new();
        encode(&record(3), &mut buf).unwrap();
        buf[2] ^= 0xff;
        store.acceptors.put(&mut wtxn, key, &buf).unwrap();
        wtxn.commit().unwrap();
    }

    #[test]
    fn a_prefix_scan_pages_in_key_order_within_its_prefix_and_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let keys: [&[u8]; 6] = [b"a", b"p/1", b"p/2", b"p/3", b"p\xff", b"q"];
        let batch: Vec<(&[u8], AcceptorRecord)> = keys.iter().map(|k| (*k, record(1))).collect();
        let refs: Vec<(&[u8], &AcceptorRecord)> = batch.iter().map(|(k, r)| (*k, r)).collect();
        store.write(&refs).unwrap();
        let scan = |prefix: &[u8], after: Option<&[u8]>, limit, bytes| {
            keys_of(store.scan_prefix(prefix, after, limit, bytes).unwrap())
        };
        let k = |s: &[u8]| s.to_vec();
        assert_eq!(
            scan(b"p/", None, 10, 1 << 20),
            (vec![k(b"p/1"), k(b"p/2"), k(b"p/3")], false)
        );
        assert_eq!(
            scan(b"p/", None, 2, 1 << 20),
            (vec![k(b"p/1"), k(b"p/2")], true)
        );
        assert_eq!(
            scan(b"p/", Some(b"p/2"), 2, 1 << 20),
            (vec![k(b"p/3")], false)
        );
        // `after` before the prefix starts at the prefix; after it, nothing is left.
        assert_eq!(scan(b"p/", Some(b"a"), 1, 1 << 20), (vec![k(b"p/1")], true));
        assert_eq!(scan(b"p/", Some(b"p0"), 5, 1 << 20), (vec![], false));
        // The empty prefix is every key (LMDB takes no empty bound).
        assert_eq!(scan(b"", None, 10, 1 << 20).0.len(), 6);
        // A byte budget smaller than one record still returns one.
        assert_eq!(scan(b"p", None, 10, 1), (vec![k(b"p/1")], true));
    }

    /// A scan decodes no record it does not return, but the one that shows more follow
    /// within the byte budget: not the one past `limit`, nor one past the prefix's end (a
    /// corrupt record there fails nothing).
    #[test]
    fn a_prefix_scan_decodes_no_record_past_its_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let r = record(1);
        store
            .write(&[
                (b"o/1".as_slice(), &r),
                (b"p/1".as_slice(), &r),
                (b"p/2".as_slice(), &r),
            ])
            .unwrap();
        put_corrupt(&store, b"p/3");
        let k = |s: &[u8]| s.to_vec();
        assert_eq!(
            keys_of(store.scan_prefix(b"o/", None, 10, 1 << 20).unwrap()),
            (vec![k(b"o/1")], false)
        );
        assert_eq!(
            keys_of(store.scan_prefix(b"p/", None, 2, 1 << 20).unwrap()),
            (vec![k(b"p/1"), k(b"p/2")], true)
        );
        assert_eq!(
            keys_of(store.scan_prefix(b"p/", None, 10, 1).unwrap()),
            (vec![k(b"p/1")], true)
        );
        let err = store.scan_prefix(b"p/", None, 3, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), 64 << 20, 1).unwrap());
        let err = Store::open(dir.path(), 64 << 20, 2).err().unwrap();
        assert!(err.to_string().contains("belongs to node"), "{err}");
    }

    #[test]
    fn a_corrupt_record_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        put_corrupt(&store, b"k");
        let err = store.load(b"k").unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    /// A record an older build wrote (remembered writes as a list, plain checksum) reads
    /// back with the same writes: merged, and from the log replayed on open; one of the
    /// previous form again (no lease, no fence) too. One of the current form is
    /// told from it by its salted checksum alone: the same body under the other checksum is
    /// read as the other form or refused, never silently mixed up.
    #[test]
    fn a_record_of_the_form_before_the_compact_writes_reads_back_with_the_same_writes() {
        use crate::paxos::types::{AppliedWrite, Outcome, RecentWrites, Remembered, RequestId};
        #[derive(serde::Serialize)]
        struct OldRegister<'a> {
            version: u64,
            #[serde(with = "crate::paxos::types::opt_bytes")]
            value: Option<Vec<u8>>,
            recent: &'a [AppliedWrite],
            floors: &'a [crate::paxos::types::ClientFloor],
            floors_overflowed: bool,
            lease: Option<u64>,
            fence: u64,
        }
        #[derive(serde::Serialize)]
        struct Old<'a> {
            promised: Ballot,
            accepted: Ballot,
            state: OldRegister<'a>,
            fast_unknown: bool,
        }
        let writes: Vec<AppliedWrite> = (1..=40)
            .map(|seq| AppliedWrite {
                // A client's random 64-bit id, a sequence well into a long run.
                id: RequestId {
                    client: 0x9e37_79b9_7f4a_7c15,
                    seq: 1_000_000 + 7 * seq,
                },
                outcome: Outcome::Put { version: seq },
            })
            .collect();
        let b = Ballot::new(41, 2);
        let old = Old {
            promised: b,
            accepted: b,
            state: OldRegister {
                version: 40,
                value: Some(b"v".to_vec()),
                recent: &writes,
                floors: &[],
                floors_overflowed: false,
                lease: Some(3),
                fence: 40,
            },
            fast_unknown: false,
        };
        let mut body = postcard::to_allocvec(&old).unwrap();
        body.extend_from_slice(&crc32fast::hash(&body[..]).to_le_bytes());
        let expected = AcceptorRecord {
            promised: b,
            accepted: b,
            state: Register {
                version: 40,
                value: Some(b"v".to_vec()),
                recent: RecentWrites::from_writes(
                    &writes
                        .iter()
                        .map(|w| Remembered {
                            id: w.id,
                            outcome: w.outcome.as_write().unwrap(),
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
                lease: Some(3),
                fence: 40,
                ..Register::default()
            },
            fast_unknown: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let mut wtxn = store.env.write_txn().unwrap();
        store.acceptors.put(&mut wtxn, b"old", &body).unwrap();
        wtxn.commit().unwrap();
        assert_eq!(store.load(b"old").unwrap(), Some(expected.clone()));
        // An older build's log entry, not merged before it stopped: replayed on open.
        let mut entry = vec![0, 6];
        entry.extend_from_slice(b"in-log");
        entry.extend_from_slice(&body);
        let mut wtxn = store.env.write_txn().unwrap();
        store.log.put(&mut wtxn, &0, &entry).unwrap();
        wtxn.commit().unwrap();
        drop(store);
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        assert_eq!(store.load(b"in-log").unwrap(), Some(expected.clone()));
        // Written again by this build: the current form, read back the same.
        store.write(&[(b"old".as_slice(), &expected)]).unwrap();
        store.merge().unwrap();
        assert_eq!(store.load(b"old").unwrap(), Some(expected.clone()));
        let mut current = Vec::new();
        encode(&expected, &mut current).unwrap();
        assert!(
            current.len() < body.len() / 2,
            "{} against {}",
            current.len(),
            body.len()
        );
        // The form before that (no lease, no fence): the same writes, attached to nothing.
        #[derive(serde::Serialize)]
        struct V1Register<'a> {
            version: u64,
            #[serde(with = "crate::paxos::types::opt_bytes")]
            value: Option<Vec<u8>>,
            recent: &'a [AppliedWrite],
            floors: &'a [crate::paxos::types::ClientFloor],
            floors_overflowed: bool,
        }
        let v1 = (
            b,
            b,
            V1Register {
                version: 40,
                value: Some(b"v".to_vec()),
                recent: &writes,
                floors: &[],
                floors_overflowed: false,
            },
            false,
        );
        let mut v1 = postcard::to_allocvec(&v1).unwrap();
        v1.extend_from_slice(&crc32fast::hash(&v1[..]).to_le_bytes());
        let mut unattached = expected.clone();
        (unattached.state.lease, unattached.state.fence) = (None, 0);
        assert_eq!(decode(b"v1", &v1).unwrap(), unattached);
        // Each body under the other form's checksum: not read as this record.
        let n = current.len() - CRC_BYTES;
        let plain = crc32fast::hash(&current[..n]).to_le_bytes();
        current[n..].copy_from_slice(&plain);
        let m = body.len() - CRC_BYTES;
        let salted = (crc32fast::hash(&body[..m]) ^ FORMAT_SALT).to_le_bytes();
        body[m..].copy_from_slice(&salted);
        for (key, bytes) in [(b"a", &current), (b"b", &body)] {
            let read = decode(key, bytes);
            assert!(read.as_ref().map_or(true, |r| *r != expected), "{read:?}");
        }
    }

    #[test]
    fn a_broken_record_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let mut bad = record(3);
        bad.promised = Ballot::ZERO;
        assert!(store.write(&[(b"k".as_slice(), &bad)]).is_err());
        assert_eq!(store.load(b"k").unwrap(), None);
    }

    #[test]
    fn a_full_map_fails_the_write_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1 << 20, 1).unwrap();
        store.write(&[(b"first".as_slice(), &record(1))]).unwrap();
        let mut big = record(2);
        big.state.value = Some(vec![7; 4 << 20]);
        let err = store.write(&[(b"big".as_slice(), &big)]).unwrap_err();
        assert!(matches!(err, Error::Storage(_)), "{err}");
        assert_eq!(store.load(b"first").unwrap(), Some(record(1)));
        assert_eq!(store.load(b"big").unwrap(), None);
    }

    /// A small keyspace written many times: the log is merged by its own length, not only
    /// once the overlay (one record per key) is large, so the store does not grow with every
    /// write (it grew by 0.85 KB a put on every node before, BENCHMARKS.md, issue 23).
    #[test]
    fn a_few_keys_written_many_times_are_merged_and_the_log_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
        for version in 1..=(3 * MERGE_RECORDS as u64 / keys.len() as u64) {
            let r = record(version);
            let batch: Vec<(&[u8], &AcceptorRecord)> =
                keys.iter().map(|k| (k.as_slice(), &r)).collect();
            store.write(&batch).unwrap();
        }
        let rtxn = store.env.read_txn().unwrap();
        let logged = store.log.len(&rtxn).unwrap();
        let merged = store.acceptors.len(&rtxn).unwrap();
        drop(rtxn);
        assert!(logged < MERGE_RECORDS as u64, "{logged} log entries");
        assert_eq!(merged, keys.len() as u64, "merged into the records");
        let last = 3 * MERGE_RECORDS as u64 / keys.len() as u64;
        assert_eq!(store.load(&keys[9]).unwrap(), Some(record(last)));
        drop(store);
        let store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        assert_eq!(store.load(&keys[0]).unwrap(), Some(record(last)));
    }

    /// Issue 8, bug 6: a merge that failed after the log commit was durable made the write
    /// report failure, failed every later write, and left a store that would not reopen.
    #[test]
    fn a_failed_merge_loses_nothing_fails_no_write_and_the_store_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = (0..MERGE_RECORDS * 2)
            .map(|i| format!("k{i:06}").into_bytes())
            .collect();
        FAIL_MERGES.with(|f| f.set(true));
        {
            let mut store = Store::open(dir.path(), 256 << 20, 1).unwrap();
            for (i, chunk) in keys.chunks(1000).enumerate() {
                let r = record(i as u64 + 1);
                let batch: Vec<(&[u8], &AcceptorRecord)> =
                    chunk.iter().map(|k| (k.as_slice(), &r)).collect();
                store.write(&batch).expect("a durable write succeeds");
            }
            assert!(store.merge_failure.is_some(), "merges failed");
            assert_eq!(store.load(&keys[0]).unwrap(), Some(record(1)));
            assert_eq!(store.record_count().unwrap(), keys.len() as u64);
            assert_eq!(store.scan(None, usize::MAX).unwrap().len(), keys.len());
        }
        // reopened while merges still fail: everything is read back from the log
        let store = Store::open(dir.path(), 256 << 20, 1).expect("reopens");
        assert_eq!(
            store
                .load(&keys[keys.len() - 1])
                .unwrap()
                .unwrap()
                .state
                .version,
            17
        );
        drop(store);
        // and once merges work again, the log is merged on open
        FAIL_MERGES.with(|f| f.set(false));
        let store = Store::open(dir.path(), 256 << 20, 1).unwrap();
        assert!(store.overlay.is_empty(), "merged on open");
        assert_eq!(store.scan(None, usize::MAX).unwrap().len(), keys.len());
        assert_eq!(store.load(&keys[0]).unwrap(), Some(record(1)));
    }

    /// A record of `len` bytes of value.
    fn big_record(version: u64, len: usize) -> AcceptorRecord {
        let mut r = record(version);
        r.state.value = Some(vec![version as u8; len]);
        r
    }

    /// A map of 8 MiB, written 40 MB of 100 KiB values on four keys: the log is merged each
    /// time it holds an eighth of the map, so every write goes through and the latest records
    /// are read back. With the fixed 512 MiB bound the log filled the map after some 70
    /// writes, and every write failed from then on (review, 2026-12-08).
    #[test]
    fn a_small_map_merges_its_log_before_the_log_fills_it() {
        let dir = tempfile::tempdir().unwrap();
        let map = 8 << 20;
        let mut store = Store::open(dir.path(), map, 1).unwrap();
        let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("k{i}").into_bytes()).collect();
        for i in 0..400u64 {
            let key = &keys[i as usize % keys.len()];
            let r = big_record(i + 1, 100 << 10);
            store
                .write(&[(key.as_slice(), &r)])
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
            assert!(
                store.log_bytes <= map / 8,
                "{} bytes of log",
                store.log_bytes
            );
        }
        for (i, key) in keys.iter().enumerate() {
            let version = store.load(key).unwrap().unwrap().state.version;
            assert_eq!(version, 397 + i as u64);
        } // A key written again is counted once in the overlay's bytes.
        for version in [1_000, 1_001] {
            for key in &keys {
                store.write(&[(key.as_slice(), &record(version))]).unwrap();
            }
        }
        let counted: usize = store.overlay.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(store.overlay_bytes, counted);
    }

    /// A write whose commit fails while the log holds records merges the log and is tried
    /// once more: the map may be full of log, which the merge frees.
    #[test]
    fn a_failed_write_merges_the_log_and_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        store.write(&[(b"a".as_slice(), &record(1))]).unwrap();
        store.fail_appends = 1;
        store
            .write(&[(b"b".as_slice(), &record(2))])
            .expect("tried again");
        assert_eq!(
            store.next_seq, 1,
            "merged, then written: {}",
            store.next_seq
        );
        assert_eq!(store.load(b"a").unwrap(), Some(record(1)));
        assert_eq!(store.load(b"b").unwrap(), Some(record(2)));
        // With an empty log there is nothing to merge: the failure is the write's.
        store.merge().unwrap();
        store.fail_appends = 1;
        assert!(store.write(&[(b"c".as_slice(), &record(3))]).is_err());
        assert_eq!(store.load(b"c").unwrap(), None);
        // While merges fail, a failed write tries one at most once per MERGE_RETRY_INTERVAL.
        store.write(&[(b"d".as_slice(), &record(4))]).unwrap();
        store.fail_merges = true;
        let before = store.merges_tried;
        for key in [b"e", b"f"] {
            store.fail_appends = 1;
            assert!(store.write(&[(key.as_slice(), &record(5))]).is_err());
        }
        assert_eq!(
            store.merges_tried - before,
            1,
            "merges tried within the interval"
        );
    }

    /// Writes refused while merges fail (the overlay at its bound) try the merge again, once
    /// per `MERGE_RETRY_INTERVAL`: once it goes through (the disk has room again), writes are
    /// taken again without a restart. Before, no merge was tried while writes were refused,
    /// and the node stayed refused until it restarted (review, 2026-12-08).
    #[test]
    fn writes_refused_while_merges_fail_are_taken_again_once_a_merge_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 256 << 20, 1).unwrap();
        store.fail_merges = true;
        let r = big_record(1, 1 << 20);
        let mut i = 0;
        let refused = loop {
            let key = format!("k{i}").into_bytes();
            match store.write(&[(key.as_slice(), &r)]) {
                Ok(()) => i += 1,
                Err(e) => break e,
            }
            assert!(i < 100, "never refused");
        };
        assert!(
            refused.to_string().contains("cannot be merged"),
            "{refused}"
        );
        // Merges work again; a write within the interval is still refused, one after it is
        // taken, the log merged.
        store.fail_merges = false;
        assert!(store.write(&[(b"x".as_slice(), &r)]).is_err());
        if let Some((_, _, failed_at)) = store.merge_failure.as_mut() {
            *failed_at -= MERGE_RETRY_INTERVAL;
        }
        store.write(&[(b"x".as_slice(), &r)]).expect("taken again");
        assert!(store.merge_failure.is_none() && store.next_seq == 1);
        assert_eq!(store.record_count().unwrap(), i as u64 + 1);
    }

    #[test]
    fn a_scan_reads_logged_and_merged_records_in_key_order_the_logged_one_winning() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        store
            .write(&[(b"b".as_slice(), &record(1)), (b"d".as_slice(), &record(1))])
            .unwrap();
        store.merge().unwrap();
        store
            .write(&[(b"a".as_slice(), &record(2)), (b"d".as_slice(), &record(3))])
            .unwrap();
        let scanned: Vec<(Vec<u8>, u64)> = store
            .scan(None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, r)| (k, r.state.version))
            .collect();
        assert_eq!(
            scanned,
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 1), (b"d".to_vec(), 3)]
        );
        let after_a: Vec<Vec<u8>> = store
            .scan(Some(b"a"), 1)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after_a, vec![b"b".to_vec()]);
    }

    /// Anti-entropy's head-only reads (a scan, a lookup) read what the whole decode reads,
    /// for every kind of record (accepted at a classic ballot, at the fast ballot, nothing
    /// accepted with and without a lost fast vote, only a promise), merged or still in the
    /// log, in this build's form and an older build's, and refuse a corrupt record as the
    /// whole decode does.
    #[test]
    fn a_head_scan_reads_the_ballots_and_settledness_a_whole_decode_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 64 << 20, 1).unwrap();
        let b = Ballot::new(4, 2);
        let nothing = |promised, fast_unknown| AcceptorRecord {
            promised,
            accepted: Ballot::ZERO,
            state: Register::default(),
            fast_unknown,
        };
        let fast = AcceptorRecord {
            promised: Ballot::FAST,
            accepted: Ballot::FAST,
            ..record(1)
        };
        let records = [
            (b"a".as_slice(), record(3)),
            (b"b".as_slice(), fast),
            (b"c".as_slice(), nothing(Ballot::ZERO, true)),
            (b"d".as_slice(), nothing(Ballot::ZERO, false)),
            (b"e".as_slice(), nothing(b, false)),
        ];
        let (merged, logged) = records.split_at(2);
        let batch = |rs: &[(&'static [u8], AcceptorRecord)]| {
            rs.iter().map(|(k, r)| (*k, r.clone())).collect::<Vec<_>>()
        };
        let write = |store: &mut Store, rs: Vec<(&[u8], AcceptorRecord)>| {
            let rs: Vec<(&[u8], &AcceptorRecord)> = rs.iter().map(|(k, r)| (*k, r)).collect();
            store.write(&rs).unwrap();
        };
        write(&mut store, batch(merged));
        store.merge().unwrap();
        write(&mut store, batch(logged));
        let whole: Vec<(Vec<u8>, RecordHead)> = store
            .scan(None, 10)
            .unwrap()
            .iter()
            .map(|(k, r)| (k.clone(), RecordHead::from(r)))
            .collect();
        assert_eq!(store.scan_heads(None, 10).unwrap(), whole);
        let unsettled: Vec<&[u8]> = whole
            .iter()
            .filter(|(_, h)| h.unsettled)
            .map(|(k, _)| k.as_slice())
            .collect();
        assert_eq!(unsettled, vec![b"b".as_slice(), b"c".as_slice()]);
        assert_eq!(store.scan_heads(Some(b"c"), 1).unwrap(), whole[3..4]);
        let keys: Vec<Key> = vec![b"e".to_vec(), b"zz".to_vec(), b"b".to_vec()];
        let loaded: Vec<Option<RecordHead>> = store
            .load_many(&keys)
            .unwrap()
            .iter()
            .map(|r| r.as_ref().map(RecordHead::from))
            .collect();
        assert_eq!(store.load_heads(&keys).unwrap(), loaded);
        assert_eq!(loaded[1], None);

        // A record an older build wrote (its oldest form, a plain checksum): the same head.
        let body = record::older_form(b, Ballot::new(3, 2), 7, b"old");
        let mut bytes = body.clone();
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let mut wtxn = store.env.write_txn().unwrap();
        store.acceptors.put(&mut wtxn, b"f", &bytes).unwrap();
        wtxn.commit().unwrap();
        let old = store.scan(Some(b"e"), 1).unwrap();
        assert_eq!(old[0].1.state.version, 7, "read as the older form");
        let head = RecordHead::from(&old[0].1);
        assert_eq!(
            store.scan_heads(Some(b"e"), 1).unwrap(),
            vec![(b"f".to_vec(), head)]
        );
        assert_eq!(
            store.load_heads(&[b"f".to_vec()]).unwrap(),
            vec![Some(head)]
        );

        // A flipped byte in a merged record's ballots: both scans refuse it.
        let mut wtxn = store.env.write_txn().unwrap();
        let mut bytes = store.acceptors.get(&wtxn, b"a").unwrap().unwrap().to_vec();
        bytes[1] ^= 0x40;
        store.acceptors.put(&mut wtxn, b"a", &bytes).unwrap();
        wtxn.commit().unwrap();
        assert!(store.scan(None, 10).is_err());
        assert!(store.scan_heads(None, 10).is_err());
    }
}
