//! One page of a listing, with no IO (argued in `actors::list`, which sends the scans and runs
//! the read rounds; the simulation, `paxos::sim`, drives the same [`PageScan`] through its
//! faults): the voters' scan pages merged by key ([`KeyMerge`]), each key's state taken from
//! the scanned records where they show it chosen, exactly as the quick read takes it from its
//! acceptors' answers (`paxos::proposer::read_answers`), and read with a Paxos round by the
//! caller where they do not; the page bounded in keys and bytes ([`PageBuilder`]).

use crate::error::{Error, Result};
use crate::messages::{ListItem, ListPage, SyncRecord};
use crate::paxos::membership::RESERVED_PREFIX;
use crate::paxos::merge::{KeyMerge, MergedKey};
use crate::paxos::proposer::{read_answers_of, Answer, QuickReadOf};
use crate::paxos::quorum::Quorums;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{Ballot, Key, Register};

/// Does a voter answer a list's scan: only at the caller's epoch (the scan's quorums are that
/// epoch's voters) and only from a store confirmed intact (a wiped, rolled back or unconfirmed
/// store may lack states it voted for, and its "no such key" would count)?
pub fn serves_scan(epoch: u64, caller_epoch: u64, store_confirmed_intact: bool) -> bool {
    epoch == caller_epoch && store_confirmed_intact
}

/// Did enough voters answer a scan for its merge to hold every key chosen before it: a
/// classic quorum of the epoch's voters (any two quorums meet)?
pub fn scan_is_complete(answered: usize, quorums: Quorums) -> bool {
    answered >= quorums.classic()
}

/// A key's value (`None`: deleted, or never written) and version, deleted keys' included.
pub type Versioned = (Option<Vec<u8>>, u64);

/// A scanned record counts as a whole answer (its remembered writes tell states at the fast
/// ballot apart).
impl Answer for AcceptorRecord {
    fn accepted(&self) -> Ballot {
        self.accepted
    }
    fn state(&self) -> &Register {
        &self.state
    }
    fn fast_unknown(&self) -> bool {
        self.fast_unknown
    }
    fn full(&self) -> bool {
        true
    }
}

/// The state of a key if the records of the voters whose scan covered it show it chosen
/// (`Some(None)`: chosen with no value); `None` if they do not (read it with a round). One
/// item per covering voter: its record of the key, or `None` if it holds none (as a record
/// with nothing accepted). `voters` is the epoch's number of voters (those not covering count
/// as not answered). The records are read where they lie
/// (`paxos::proposer::read_answers_of`), only the chosen value copied: a listing decides
/// thousands of keys a page, each from up to five.
pub fn chosen<'a>(
    covering: impl Iterator<Item = Option<&'a AcceptorRecord>> + Clone,
    voters: usize,
    quorums: Quorums,
) -> Option<Versioned> {
    let none = AcceptorRecord::default();
    let answers = covering.clone().map(|r| r.unwrap_or(&none));
    match read_answers_of(answers, voters, quorums.classic(), quorums.fast(), None) {
        QuickReadOf::Chosen(_, state) => Some((state.value.clone(), state.version)),
        QuickReadOf::Undecided | QuickReadOf::Impossible => None,
    }
}

/// What a page of a listing asks: the request's part that shapes the page.
#[derive(Debug, Clone)]
pub struct PageSpec {
    pub prefix: Key,
    pub after: Option<Key>,
    /// Items at most (already capped by the caller's limits).
    pub limit: usize,
    /// Bytes of items at most (keys, values and 16 each); the first item is taken whatever
    /// its size.
    pub max_bytes: usize,
    pub keys_only: bool,
    /// Deleted keys too, as items with no value.
    pub with_deleted: bool,
    /// Keys of the cluster's own (`RESERVED_PREFIX`) listed too (the leases' keeper).
    pub reserved: bool,
}

/// How much each voter is asked for per scan page: what the page can still hold plus `slack`
/// (deleted and reserved keys take room and are not listed), at most `most`; and how many keys
/// the page passes over (examined and not listed: deleted keys, keys of the cluster's own) at
/// most: once it has passed over `skipped` keys, the page ends at the key where it did, with
/// that key as its `next`, whatever room it has left. A page's work is then bounded by its
/// limit, `skipped` and one batch of the merge, not by how many deleted keys its prefix holds.
#[derive(Debug, Clone, Copy)]
pub struct ScanSizes {
    pub slack: usize,
    pub most: usize,
    pub skipped: usize,
}

/// A scan page to ask of voter `voter` (the index in the epoch's voters): its records under
/// the prefix after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanAsk {
    pub voter: usize,
    pub after: Option<Key>,
    pub limit: u32,
}

/// Keys of a scan in order, each with its state where the scanned records show it chosen
/// (`None`: to be read with a round).
pub type Batch = Vec<(Key, Option<Versioned>)>;

/// One page of a listing as a state machine: the caller sends [`PageScan::asks`], gives each
/// answer (or its failure) to [`PageScan::answered`], takes the next keys from
/// [`PageScan::batch`], reads those it leaves undecided with a round, and offers every key's
/// state in order to [`PageScan::offer`] until that returns the page; a batch of `None`
/// means the prefix is exhausted ([`PageScan::finish`]).
pub struct PageScan {
    spec: PageSpec,
    voters: usize,
    quorums: Quorums,
    sizes: ScanSizes,
    merge: KeyMerge<SyncRecord>,
    /// Per voter (by index): still scanned.
    alive: Vec<bool>,
    /// Per voter: the last key its pages reached; `None` once it sent its last page.
    reached: Vec<Option<Key>>,
    started: bool,
    last_error: Option<String>,
    page: PageBuilder,
    /// Keys of the last batch not offered yet.
    unoffered: usize,
    /// Keys passed over so far (`ScanSizes::skipped`).
    skipped: usize,
    /// The key where the page passed over its last key, once it has: every key up to it is
    /// decided, the batch was cut there, and the page ends after the batch with it as `next`.
    stopped_at: Option<Key>,
}

impl PageScan {
    /// A page of `spec` over an epoch of `voters` voters.
    pub fn new(spec: PageSpec, voters: usize, quorums: Quorums, sizes: ScanSizes) -> PageScan {
        PageScan {
            merge: KeyMerge::new(voters, spec.after.clone()),
            alive: vec![true; voters],
            reached: vec![spec.after.clone(); voters],
            page: PageBuilder::new(
                spec.limit,
                spec.max_bytes,
                spec.keys_only,
                spec.with_deleted,
            ),
            spec,
            voters,
            quorums,
            sizes,
            started: false,
            last_error: None,
            unoffered: 0,
            skipped: 0,
            stopped_at: None,
        }
    }

    pub fn spec(&self) -> &PageSpec {
        &self.spec
    }

    /// Was the page cut where it passed over its last key, with every voter's scan already
    /// sent to the prefix's end? (For the simulation's counts: the case where only the cut
    /// says that keys follow.)
    pub fn cut_with_the_prefix_scanned(&self) -> bool {
        self.stopped_at.is_some() && self.merge.is_done()
    }

    /// The scan pages to ask for before the next batch: each voter whose last page is used
    /// up and that has more, for what the page can still hold (records past the page's end
    /// are scanned, sent and decoded for nothing, and the next page scans them again).
    pub fn asks(&self) -> Vec<ScanAsk> {
        if self.stopped_at.is_some() {
            // The page ends after the batch it cut: no voter is asked for more (a voter that
            // failed to answer an ask it did not need would fail a page already decided).
            return Vec::new();
        }
        let limit = (self.page.room() + self.sizes.slack).min(self.sizes.most) as u32;
        self.merge
            .wanting()
            .into_iter()
            .map(|(voter, after)| ScanAsk {
                voter,
                after,
                limit,
            })
            .collect()
    }

    /// Voter `voter`'s answer to its ask: its records and whether it has more, or why it gave
    /// none (it is dropped from the scan: the keys after its last page are merged from the
    /// others). An answer no correct voter sends drops it too ([`PageScan::check_answer`]).
    pub fn answered(
        &mut self,
        voter: usize,
        answer: std::result::Result<(Vec<SyncRecord>, bool), String>,
    ) {
        let answer = answer.and_then(|(records, more)| {
            self.check_answer(&records, more)?;
            Ok((records, more))
        });
        let error = match answer {
            Ok((records, more)) => {
                let reached = match (more, records.last()) {
                    (true, Some(last)) => Some(last.key.clone()),
                    _ => None,
                };
                match self.merge.take(voter, records, more) {
                    Ok(()) => {
                        self.reached[voter] = reached;
                        return;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        self.last_error = Some(error);
        self.alive[voter] = false;
        self.merge.drop_source(voter);
    }

    /// What every correct voter's answer is: records of keys under the prefix (a key outside
    /// it would be listed), no more of them than an ask asks for, each within the bounds and
    /// invariants a record keeps (`SyncRecord::check`: a broken record would be counted as a
    /// vote), and not empty when it says it has more (the voter's "more" without a key would
    /// be taken as its last page, and every key after the ask counted as one it holds no
    /// record of). Key order is the merge's check.
    fn check_answer(&self, records: &[SyncRecord], more: bool) -> std::result::Result<(), String> {
        if records.len() > self.sizes.most {
            return Err(format!(
                "{} records, more than any ask asks for ({})",
                records.len(),
                self.sizes.most
            ));
        }
        if more && records.is_empty() {
            return Err("an empty scan page that says it has more".into());
        }
        for r in records {
            if !r.key.starts_with(&self.spec.prefix) {
                return Err(format!(
                    "a record of {:?}, outside the prefix",
                    String::from_utf8_lossy(&r.key)
                ));
            }
            r.check().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Once every ask is answered: the next keys in order, each with its state where the
    /// records show it chosen (`None`: read it with a round); `Ok(None)` once the prefix is
    /// exhausted. Fails when fewer than a classic quorum of voters still answer.
    pub fn batch(&mut self) -> Result<Option<Batch>> {
        // The quorum first: voters dropped by the last asks leave the merge with no source
        // that has more, which is no proof that the prefix is exhausted.
        let alive = self.alive.iter().filter(|a| **a).count();
        if !scan_is_complete(alive, self.quorums) {
            return Err(Error::Unavailable(format!(
                "{alive} of {} voters answered the scan (last error: {})",
                self.voters,
                self.last_error.clone().unwrap_or_default()
            )));
        }
        if self.stopped_at.is_some() || (self.started && self.merge.is_done()) {
            return Ok(None);
        }
        self.started = true;
        let mut batch = Batch::new();
        for k in self.merge.next_batch() {
            if !self.spec.reserved && k.key.starts_with(RESERVED_PREFIX) {
                // Passed over; the keys after the one that reaches the bound are cut from this
                // page (the next one scans them again after its `next`).
                if self.passed_over() {
                    self.stopped_at = Some(k.key);
                    break;
                }
                continue;
            }
            batch.push(self.chosen(k));
        }
        self.unoffered = batch.len();
        Ok(Some(batch))
    }

    /// Counts a key passed over; true once the page has passed over as many as it may.
    fn passed_over(&mut self) -> bool {
        self.skipped += 1;
        self.skipped >= self.sizes.skipped
    }

    /// Do keys follow the last one offered: in the batch, in the merge, or cut from the batch
    /// when the page passed over its last key?
    fn more_follow(&self) -> bool {
        self.unoffered > 0 || self.stopped_at.is_some() || !self.merge.is_done()
    }

    /// The next key of the last batch, in order, with its state: the page once it is
    /// complete (it ends at its last item, before an item that would take it past its bytes,
    /// or at the key it passes over last, `ScanSizes::skipped`).
    pub fn offer(&mut self, key: Key, state: Versioned) -> Option<ListPage> {
        self.unoffered = self.unoffered.saturating_sub(1);
        if !self.page.lists(&state) {
            if self.passed_over() && self.more_follow() {
                return Some(self.page.finish_at(key));
            }
            return None;
        }
        if self.page.is_full_before(&key, &state) {
            return Some(self.page.finish(true));
        }
        if self.page.add(key, state) {
            let more = self.more_follow();
            return Some(self.page.finish(more));
        }
        None
    }

    /// The page, once [`PageScan::batch`] said the prefix is exhausted, or that the page
    /// passed over its last key (its `next` is then that key).
    pub fn finish(mut self) -> ListPage {
        match self.stopped_at.take() {
            Some(key) => self.page.finish_at(key),
            None => self.page.finish(false),
        }
    }

    /// Did voter `voter`'s scan cover `key` (so that holding no record of it is an answer)?
    fn covered(&self, voter: usize, key: &Key) -> bool {
        if self.alive[voter] {
            return true; // its pages reach at least the horizon, or it sent them all
        }
        match &self.reached[voter] {
            Some(reached) => key <= reached,
            None => false,
        }
    }

    /// `k`'s key, and its state if the scanned records show it chosen (`Some(None)`: chosen
    /// with no value): [`chosen`], over the voters whose scan covered it.
    fn chosen(&self, k: MergedKey<SyncRecord>) -> (Key, Option<Versioned>) {
        let covering = (0..self.voters).filter_map(|voter| {
            match k.sources.iter().position(|source| *source == voter) {
                Some(i) => Some(Some(&k.entries[i].record)),
                None => self.covered(voter, &k.key).then_some(None),
            }
        });
        let state = chosen(covering, self.voters, self.quorums);
        (k.key, state)
    }
}

/// A page of items, bounded in count and bytes.
struct PageBuilder {
    items: Vec<ListItem>,
    limit: usize,
    bytes: usize,
    max_bytes: usize,
    keys_only: bool,
    with_deleted: bool,
}

impl PageBuilder {
    fn new(limit: usize, max_bytes: usize, keys_only: bool, with_deleted: bool) -> PageBuilder {
        PageBuilder {
            items: Vec::new(),
            limit,
            bytes: 0,
            max_bytes,
            keys_only,
            with_deleted,
        }
    }

    /// About how many more keys the page can hold: by count, and by bytes at the mean size of
    /// its items so far (a guess until it holds one: then by count alone).
    fn room(&self) -> usize {
        let by_count = self.limit.saturating_sub(self.items.len());
        match self.bytes.checked_div(self.items.len()) {
            Some(mean) if mean > 0 => {
                by_count.min(self.max_bytes.saturating_sub(self.bytes) / mean + 1)
            }
            _ => by_count,
        }
    }

    /// Is `state` an item of the page (live, or any with `with_deleted`)?
    fn lists(&self, state: &Versioned) -> bool {
        state.0.is_some() || self.with_deleted
    }

    /// Would `key` take the page past its bytes (a page that holds something ends before
    /// it, as a scan page does)?
    fn is_full_before(&self, key: &Key, state: &Versioned) -> bool {
        if !self.lists(state) {
            return false;
        }
        let value_bytes = match (&state.0, self.keys_only) {
            (Some(value), false) => value.len(),
            _ => 0,
        };
        !self.items.is_empty() && self.bytes + key.len() + value_bytes + 16 > self.max_bytes
    }

    /// Adds `key` if the page lists it; true once the page is full.
    fn add(&mut self, key: Key, state: Versioned) -> bool {
        if !self.lists(&state) {
            return false;
        }
        let (value, version) = state;
        let value = value.filter(|_| !self.keys_only);
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len) + 16;
        self.items.push(ListItem {
            key,
            value,
            version,
        });
        self.items.len() >= self.limit || self.bytes >= self.max_bytes
    }

    /// The page's items, and its `next` (its last key) if `more` follow.
    fn finish(&mut self, more: bool) -> ListPage {
        let items = std::mem::take(&mut self.items);
        let next = more.then(|| items.last().map(|i| i.key.clone())).flatten();
        ListPage { items, next }
    }

    /// The page's items, and `next` as its `next`: the last key the page examined, at or after
    /// its last item (every key up to it decided by this page).
    fn finish_at(&mut self, next: Key) -> ListPage {
        ListPage {
            items: std::mem::take(&mut self.items),
            next: Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PageSpec {
        PageSpec {
            prefix: b"p/".to_vec(),
            after: None,
            limit: 100,
            max_bytes: 1 << 20,
            keys_only: false,
            with_deleted: false,
            reserved: false,
        }
    }

    /// `key` chosen at a classic ballot with `value`, as a voter's scan sends it.
    fn chosen(key: &str, value: &str) -> SyncRecord {
        let ballot = Ballot::new(2, 1);
        SyncRecord {
            key: key.as_bytes().to_vec(),
            record: AcceptorRecord {
                promised: ballot,
                accepted: ballot,
                state: Register {
                    version: 1,
                    value: Some(value.as_bytes().to_vec()),
                    ..Register::default()
                },
                fast_unknown: false,
            },
        }
    }

    /// `key` deleted at a classic ballot, as a voter's scan sends it.
    fn deleted(key: &str) -> SyncRecord {
        let mut record = chosen(key, "");
        record.record.state.value = None;
        record.record.state.version = 2;
        record
    }

    /// One page of `spec` over three voters that each hold `records` and send them in one
    /// scan page, every key decided by the records.
    fn page_of(spec: PageSpec, skipped: usize, records: &[SyncRecord]) -> ListPage {
        let sizes = ScanSizes {
            slack: 4,
            most: 100,
            skipped,
        };
        let mut scan = PageScan::new(spec, 3, Quorums::new(3), sizes);
        loop {
            for ask in scan.asks() {
                let after = ask.after.clone();
                let sent: Vec<SyncRecord> = records
                    .iter()
                    .filter(|r| r.key.starts_with(&scan.spec().prefix))
                    .filter(|r| after.as_ref().is_none_or(|a| r.key > *a))
                    .cloned()
                    .collect();
                scan.answered(ask.voter, Ok((sent, false)));
            }
            let Some(batch) = scan.batch().unwrap() else {
                return scan.finish();
            };
            for (key, state) in batch {
                let state = state.expect("decided by the records");
                if let Some(page) = scan.offer(key, state) {
                    return page;
                }
            }
        }
    }

    fn keys(page: &ListPage) -> Vec<String> {
        page.items
            .iter()
            .map(|i| String::from_utf8_lossy(&i.key).into_owned())
            .collect()
    }

    fn next(page: &ListPage) -> Option<String> {
        page.next
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// A page that has passed over its bound of deleted keys ends at the one where it did,
    /// with fewer items than it may hold, and that key as its `next`; the page after it goes
    /// on from there, and the two together list every live key once.
    #[test]
    fn a_page_ends_where_it_passed_over_its_last_deleted_key() {
        let records = [
            chosen("p/a", "1"),
            deleted("p/b"),
            deleted("p/c"),
            deleted("p/d"),
            deleted("p/e"),
            chosen("p/f", "2"),
        ];
        let page = page_of(spec(), 3, &records);
        assert_eq!(keys(&page), vec!["p/a"]);
        assert_eq!(next(&page).as_deref(), Some("p/d"));
        let after = PageSpec {
            after: page.next,
            ..spec()
        };
        let page = page_of(after, 3, &records);
        assert_eq!(keys(&page), vec!["p/f"]);
        assert_eq!(next(&page), None);
        // Within the bound, one page holds them all.
        let page = page_of(spec(), 5, &records);
        assert_eq!(keys(&page), vec!["p/a", "p/f"]);
        assert_eq!(next(&page), None);
    }

    /// The cluster's own keys count as passed over too (the empty prefix meets them first):
    /// the batch is cut at the one that reaches the bound, the page ends there, and a page
    /// that fills just before the cut still says that keys follow (the merge itself is done:
    /// the keys after the cut are scanned again by the next page).
    #[test]
    fn a_page_cut_among_the_clusters_own_keys_goes_on_after_them() {
        let own = |i: u32| {
            let mut key = RESERVED_PREFIX.to_vec();
            key.extend_from_slice(format!("lease/{i}").as_bytes());
            SyncRecord {
                key,
                ..chosen("", "lease")
            }
        };
        let records = [
            chosen("\0a", "before"),
            own(1),
            own(2),
            own(3),
            chosen("z", "after"),
        ];
        let all = PageSpec {
            prefix: Vec::new(),
            ..spec()
        };
        // The page fills at its last item before the cut: it must not say the prefix ends.
        let page = page_of(
            PageSpec {
                limit: 1,
                ..all.clone()
            },
            1,
            &records,
        );
        assert_eq!(keys(&page), vec!["\0a"]);
        assert_eq!(next(&page).as_deref(), Some("\0a"));
        // Pages cut among the cluster's keys: their `next` is one of them, the keys after it
        // come in the next page, and every live key is listed once.
        let mut listed = Vec::new();
        let mut nexts = Vec::new();
        let mut after = None;
        loop {
            let page = page_of(
                PageSpec {
                    after,
                    ..all.clone()
                },
                2,
                &records,
            );
            listed.extend(keys(&page));
            nexts.push(page.next.clone());
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, vec!["\0a", "z"]);
        assert_eq!(nexts, vec![Some(own(2).key), None]);
        // Cut at the first of them: the page holds nothing and goes on after it.
        let page = page_of(
            PageSpec {
                after: Some(b"\0a".to_vec()),
                ..all
            },
            1,
            &records,
        );
        assert!(page.items.is_empty());
        assert_eq!(page.next, Some(own(1).key));
    }

    /// A page cut while its voters have more asks none of them for it: every key up to the
    /// cut is decided, and a voter that failed an ask the page does not need would fail it.
    #[test]
    fn a_cut_page_asks_no_voter_for_more() {
        let own = |name: &str| {
            let mut key = RESERVED_PREFIX.to_vec();
            key.extend_from_slice(name.as_bytes());
            SyncRecord {
                key,
                ..chosen("", "lease")
            }
        };
        let all = PageSpec {
            prefix: Vec::new(),
            ..spec()
        };
        let sizes = ScanSizes {
            slack: 0,
            most: 2,
            skipped: 1,
        };
        let mut scan = PageScan::new(all, 3, Quorums::new(3), sizes);
        for voter in 0..3 {
            scan.answered(voter, Ok((vec![own("a"), own("b")], true)));
        }
        assert_eq!(scan.batch().unwrap(), Some(Vec::new()), "cut at the first");
        assert!(scan.asks().is_empty(), "{:?}", scan.asks());
        assert_eq!(scan.batch().unwrap(), None);
        let page = scan.finish();
        assert!(page.items.is_empty());
        assert_eq!(page.next, Some(own("a").key));
    }

    const SIZES: ScanSizes = ScanSizes {
        slack: 4,
        most: 8,
        skipped: 1000,
    };

    /// An answer no correct voter sends drops its voter, as a voter that did not answer: its
    /// records are never merged (a key outside the prefix is not listed, a broken record is
    /// not counted as a vote), and a voter that says "more" with no key does not end the scan
    /// for the keys after its ask. With two of three voters dropped, the page is unavailable,
    /// naming the last reason.
    #[test]
    fn an_answer_no_correct_voter_sends_drops_its_voter() {
        let good = || vec![chosen("p/a", "1"), chosen("p/b", "2")];
        let mut broken_record = chosen("p/a", "1");
        broken_record.record.accepted = Ballot::ZERO; // a state nobody accepted
        let mut past_the_rounds = chosen("p/a", "1");
        past_the_rounds.record.promised = Ballot::new(u64::MAX, 1);
        let bad: Vec<(&str, (Vec<SyncRecord>, bool))> = vec![
            (
                "outside the prefix",
                (vec![chosen("p/a", "1"), chosen("q/x", "X")], false),
            ),
            (
                "an empty scan page that says it has more",
                (Vec::new(), true),
            ),
            (
                "a state without an accepted ballot",
                (vec![broken_record], false),
            ),
            ("above the protocol's limit", (vec![past_the_rounds], false)),
            (
                "more than any ask asks for",
                (
                    (0..9).map(|i| chosen(&format!("p/{i}"), "v")).collect(),
                    false,
                ),
            ),
        ];
        for (why, answer) in bad {
            // One bad voter of three: the page comes from the other two.
            let mut scan = PageScan::new(spec(), 3, Quorums::new(3), SIZES);
            assert_eq!(scan.asks().len(), 3);
            scan.answered(0, Ok(answer.clone()));
            scan.answered(1, Ok((good(), false)));
            scan.answered(2, Ok((good(), false)));
            let batch = scan
                .batch()
                .unwrap()
                .unwrap_or_else(|| panic!("{why}: no batch"));
            let keys: Vec<&[u8]> = batch.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(keys, vec![&b"p/a"[..], b"p/b"], "{why}");
            assert!(
                batch.iter().all(|(_, state)| state.is_some()),
                "{why}: {batch:?}"
            );
            // Two bad voters of three: no quorum, and the reason is given.
            let mut scan = PageScan::new(spec(), 3, Quorums::new(3), SIZES);
            scan.answered(0, Ok(answer.clone()));
            scan.answered(1, Ok(answer));
            scan.answered(2, Ok((good(), false)));
            let error = scan.batch().unwrap_err().to_string();
            assert!(
                error.contains("1 of 3 voters") && error.contains(why),
                "{why}: {error}"
            );
        }
    }
}
