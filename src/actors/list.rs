//! Listing keys by prefix (`paxkv list`): a scan of the prefix on a majority of the voters,
//! merged by key, each key's state taken where the scanned records show it chosen (the quick
//! read's rule, `paxos::proposer::read_answers`) and read with a Paxos round where they do
//! not. One page per call, bounded in keys and bytes; the client asks again after its `next`.
//!
//! **What a page promises.** Per key, not across keys (not an atomic snapshot: a page may
//! show key `a` before a write and key `b` after it, as etcd's paginated reads across
//! revisions would):
//! 1. *Every item is a state that was the key's latest chosen state at some moment within the
//!    call.* Either the scanned records show it chosen: a classic quorum of the epoch's voters
//!    report the same classic ballot `B` as the highest they accepted (or a fast quorum the
//!    same state at the fast ballot). Each record was read from a voter's durable store after
//!    the call began, so the state at `B` was chosen by then, and no higher state had been
//!    chosen before the call began (a majority would hold it, and meet ours): the argument of
//!    the quick read (`paxos::proposer`, module doc), which holds record by record whatever
//!    the order the voters were scanned in. Or a read round, linearizable, ran within the
//!    call. (At the fast ballot, a voter read early may show a state `S` whose successor is
//!    chosen before the last vote is read: `S` is then linearized between the call's start and
//!    that successor, as the quick read's answer is.)
//! 2. *No key is missing whose latest chosen state before the call began was live and that
//!    was not deleted during the call.* That state was accepted by a quorum of the voters of
//!    its epoch; a scan at a later epoch meets it because a membership change's consecutive
//!    epochs have intersecting majorities (`paxos::membership`), and its rescan leaves every
//!    state chosen before it on a majority of the new voters before the next step. (A
//!    coordinator whose epoch is old is refused by the voters of newer ones; one answered by a
//!    majority at epoch `k` knows nothing was chosen at `k + 2` before the call began, which
//!    needed a majority at `k + 1`.) The scan covers every key of the
//!    prefix on at least a classic quorum of voters (a page fails "unavailable" when fewer
//!    answer), and only stores that are at the caller's epoch and confirmed intact answer (a
//!    wiped, rolled back or unconfirmed store may lack what it voted for: `actors::calls`).
//!    Two quorums meet, and accepted ballots only grow, so a scanned voter holds a record of
//!    the key: the key is in the merge. Its state is then decided as in 1; a state chosen
//!    within the call of a key not deleted during it is live (only a delete makes it not), so
//!    it is listed.
//! 3. *In order, each key once per page*, from the k-way merge (`actors::digest_merge`); a
//!    page's `next` is its last key, so a key live for the whole listing appears in exactly
//!    one page.
//!
//! What could go wrong, and why it cannot: a voter scanned while it is cut off answers with
//! old records; it is one vote, and a state is taken from the records only where a quorum
//! agrees (an old record drags a key into a read round, never into a stale answer). A voter
//! that stops answering midway is dropped; the keys after its last page are merged from the
//! others, and the page fails if fewer than a quorum are left. A change of epoch midway makes
//! the voters of the new epoch refuse the scan: the page fails and the client retries it. A
//! pause of the coordinator between scan and answer makes its answer old, never wrong: each
//! item was the latest at some moment within the call, which the pause only lengthens.
//!
//! **Partitioned keyspaces (later).** Nothing here needs one set of voters for all keys: a
//! keyspace partitioned over replica sets is listed by scanning each partition that overlaps
//! the prefix on a quorum of its own replicas, with its own epoch, and merging the partitions
//! by key (they hold disjoint keys); 1 and 2 hold partition by partition.
//!
//! **Deleted keys** keep their record (a tombstone: the version, and the register's memory of
//! recent writes) and are never listed. They are not collected: a collected key restarts at
//! version 0, and a client holding version 3 of it would then see a version go backwards (or
//! a compare-and-set on version 1 succeed twice). Collecting them safely needs a floor of
//! versions per range (as etcd's compaction keeps revisions monotonic); not done.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::actors::digest_merge::{KeyMerge, MergedKey};
use crate::actors::membership::installed::addr_of;
use crate::actors::membership::MembershipService;
use crate::actors::supervisor::{run_command, Keys};
use crate::client::Client;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::messages::{
    ListItem, ListPage, NodeReply, NodeRequest, SyncRecord, DIGEST_PAGE_ENTRIES,
};
use crate::paxos::listing::{self, Versioned};
use crate::paxos::membership::RESERVED_PREFIX;
use crate::paxos::quorum::Quorums;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::{Command, Key, NodeId, Outcome};

/// How long a voter may take to answer one page of a scan before it is dropped from it.
const SCAN_PAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Records a voter is asked for per scan page beyond the list's page size (deleted keys and
/// keys of the cluster's own take room and are not listed); at most `DIGEST_PAGE_ENTRIES`, and
/// half a frame of bytes.
const SCAN_SLACK: usize = 64;

/// Read rounds a page runs at once, for keys the records do not decide.
const READ_ROUNDS_IN_FLIGHT: usize = 64;

/// Lists keys from this node. Cheap to clone.
#[derive(Clone)]
pub struct Lister {
    members: MembershipService,
    keys: Keys,
}

/// What a list asks.
pub struct ListRequest {
    pub prefix: Key,
    pub after: Option<Key>,
    pub limit: u32,
    pub keys_only: bool,
    /// Deleted keys too, as items with no value (`RequestBody::ListVersions`).
    pub with_deleted: bool,
    /// A prefix of the reserved keys, listed by the node itself (the leases' keeper,
    /// `actors::lease`); never from a client.
    pub reserved: bool,
}

impl Lister {
    pub fn new(members: MembershipService, keys: Keys) -> Lister {
        Lister { members, keys }
    }

    /// One page of the listing (see the module doc).
    pub async fn list(&self, request: ListRequest) -> Result<ListPage> {
        check_list(&request, &self.members.config.limits)?;
        let limits = &self.members.config.limits;
        let limit = page_size(request.limit, limits);
        let max_bytes = self.members.config.frame_limit() / 2;
        let m = self
            .members
            .view
            .get()
            .ok_or_else(|| Error::Unavailable("no membership installed".into()))?;
        let voters = m.voters();
        let addrs = voters
            .iter()
            .map(|&v| Ok((v, addr_of(&m, v)?)))
            .collect::<Result<Vec<_>>>()?;
        let client = self.members.client_of(&addrs);
        let mut scan = Scan::new(&client, &request, &voters, m.epoch, m.quorums());
        let mut page = PageBuilder::new(limit, max_bytes, request.keys_only, request.with_deleted);
        loop {
            // Each voter is asked for what the page can still hold (and some slack): records
            // past the page's end are scanned, sent and decoded for nothing, and the next page
            // scans them again.
            scan.per_scan = (page.room() + SCAN_SLACK).min(DIGEST_PAGE_ENTRIES) as u32;
            let Some(batch) = scan.next_batch().await? else {
                break;
            };
            let keys = batch.len();
            // Key by key, in order, a few read rounds ahead: the page stops at its last key,
            // and no key after it is read (or can fail it).
            let mut states = std::pin::pin!(self.decide(batch, &scan, &voters, request.reserved));
            let mut taken = 0;
            while let Some(decided) = states.next().await {
                let (key, state) = decided?;
                taken += 1;
                if page.is_full_before(&key, &state) {
                    return Ok(page.finish(true));
                }
                if page.add(key, state) {
                    let more = taken < keys || !scan.is_done();
                    return Ok(page.finish(more));
                }
            }
        }
        Ok(page.finish(false))
    }

    /// Each key's state, in key order (`None`: no value), from the records where a quorum
    /// shows it chosen, else from a read round (a few run ahead of the key taken).
    fn decide<'a>(
        &'a self,
        batch: Vec<MergedKey<SyncRecord>>,
        scan: &Scan<'_>,
        voters: &[NodeId],
        reserved: bool,
    ) -> impl futures_util::Stream<Item = Result<(Key, Versioned)>> + 'a {
        let decided: Vec<(Key, Option<Versioned>)> = batch
            .into_iter()
            .filter(|k| reserved || !k.key.starts_with(RESERVED_PREFIX))
            .map(|k| scan.chosen(k, voters))
            .collect();
        let undecided = decided.iter().filter(|(_, quick)| quick.is_none()).count();
        if undecided > 0 {
            log::debug!(
                "a list batch of {} keys: {undecided} undecided by the records, read with rounds",
                decided.len()
            );
        }
        stream::iter(decided)
            .map(move |(key, quick)| async move {
                let state = match quick {
                    Some(state) => state,
                    None => self.read_round(&key).await?,
                };
                Ok((key, state))
            })
            .buffered(READ_ROUNDS_IN_FLIGHT)
    }

    /// A linearizable read of `key` through its proposer: its value and version.
    async fn read_round(&self, key: &Key) -> Result<Versioned> {
        match run_command(&self.keys, key.clone(), Command::Get, None).await? {
            Outcome::Get { value, version } => Ok((value, version)),
            other => Err(Error::Storage(format!("a read answered {other:?}"))),
        }
    }
}

/// A list's prefix and `after` are keys like any other: within the key limit, never in the
/// reserved prefix.
fn check_list(request: &ListRequest, limits: &Limits) -> Result<()> {
    let too_long = |what: &str, key: &[u8]| {
        (key.len() > limits.max_key_bytes).then(|| {
            Error::BadRequest(format!(
                "{what} of {} bytes is over the key limit of {} bytes",
                key.len(),
                limits.max_key_bytes
            ))
        })
    };
    if let Some(e) = too_long("the prefix", &request.prefix) {
        return Err(e);
    }
    if let Some(e) = request.after.as_ref().and_then(|a| too_long("after", a)) {
        return Err(e);
    }
    if request.prefix.starts_with(RESERVED_PREFIX) != request.reserved {
        return Err(Error::BadRequest(
            "keys starting with \\0paxkv/ are the cluster's own (its membership)".into(),
        ));
    }
    Ok(())
}

/// The page size a list asked for (0: the default), capped at the limit.
fn page_size(asked: u32, limits: &Limits) -> usize {
    match asked as usize {
        0 => limits.list_default_limit,
        n => n.min(limits.list_max_limit),
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

    fn finish(self, more: bool) -> ListPage {
        let next = more
            .then(|| self.items.last().map(|i| i.key.clone()))
            .flatten();
        ListPage {
            items: self.items,
            next,
        }
    }
}

/// The scan of a prefix on the voters of one epoch: a page of each at a time, merged.
struct Scan<'a> {
    client: &'a Client,
    prefix: Key,
    /// The epoch's voters, by the client's index.
    voters: Vec<NodeId>,
    epoch: u64,
    quorums: Quorums,
    /// Records asked of each voter for its next scan page (set before each batch).
    per_scan: u32,
    merge: KeyMerge<SyncRecord>,
    /// Per voter (by the client's index): still scanned.
    alive: Vec<bool>,
    /// Per voter: the last key its pages reached; `None` once it sent its last page.
    reached: Vec<Option<Key>>,
    started: bool,
}

impl<'a> Scan<'a> {
    fn new(
        client: &'a Client,
        request: &ListRequest,
        voters: &[NodeId],
        epoch: u64,
        quorums: Quorums,
    ) -> Self {
        let n = voters.len();
        Scan {
            client,
            voters: voters.to_vec(),
            per_scan: DIGEST_PAGE_ENTRIES as u32,
            prefix: request.prefix.clone(),
            epoch,
            quorums,
            merge: KeyMerge::new(n, request.after.clone()),
            alive: vec![true; n],
            reached: vec![request.after.clone(); n],
            started: false,
        }
    }

    fn is_done(&self) -> bool {
        self.started && self.merge.is_done()
    }

    /// The next keys, in order, each once; `None` once the prefix is exhausted. Fails when
    /// fewer than a classic quorum of voters still answer.
    async fn next_batch(&mut self) -> Result<Option<Vec<MergedKey<SyncRecord>>>> {
        if self.is_done() {
            return Ok(None);
        }
        let asks = self.merge.wanting().into_iter().map(|(index, after)| {
            let body = NodeRequest::Scan {
                prefix: self.prefix.clone(),
                after,
                limit: self.per_scan,
                epoch: self.epoch,
                node: self.voters[index],
            };
            let call = self.client.node_call(index, body);
            async move { (index, tokio::time::timeout(SCAN_PAGE_TIMEOUT, call).await) }
        });
        let mut last_error = None;
        for (index, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(Ok(NodeReply::Scanned { records, more })) => {
                    let reached = match (more, records.last()) {
                        (true, Some(last)) => Some(last.key.clone()),
                        _ => None,
                    };
                    match self.merge.take(index, records, more) {
                        Ok(()) => self.reached[index] = reached,
                        Err(e) => {
                            last_error = Some(e);
                            self.drop_voter(index);
                        }
                    }
                }
                failed => {
                    last_error = Some(match failed {
                        Ok(Ok(other)) => format!("unexpected {other:?}"),
                        Ok(Err(e)) => e.message().to_string(),
                        Err(_) => format!("no answer within {SCAN_PAGE_TIMEOUT:?}"),
                    });
                    self.drop_voter(index);
                }
            }
        }
        self.started = true;
        let alive = self.alive.iter().filter(|a| **a).count();
        if !listing::scan_is_complete(alive, self.quorums) {
            return Err(Error::Unavailable(format!(
                "{alive} of {} voters answered the scan (last error: {})",
                self.alive.len(),
                last_error.unwrap_or_default()
            )));
        }
        Ok(Some(self.merge.next_batch()))
    }

    /// Voter `index` answers no more of this scan: the keys after its last page are merged
    /// from the others.
    fn drop_voter(&mut self, index: usize) {
        self.alive[index] = false;
        self.merge.drop_source(index);
    }

    /// Did voter `index`'s scan cover `key` (so that holding no record of it is an answer)?
    fn covered(&self, index: usize, key: &Key) -> bool {
        if self.alive[index] {
            return true; // its pages reach at least the horizon, or it sent them all
        }
        match &self.reached[index] {
            Some(reached) => key <= reached,
            None => false,
        }
    }

    /// `k`'s key, and its state if the scanned records show it chosen (`Some(None)`: chosen
    /// with no value): `paxos::listing::chosen_versioned`, over the voters whose scan covered
    /// it, its records taken.
    fn chosen(&self, k: MergedKey<SyncRecord>, voters: &[NodeId]) -> (Key, Option<Versioned>) {
        let mut covering: Vec<Option<Option<AcceptorRecord>>> = (0..voters.len())
            .map(|index| self.covered(index, &k.key).then_some(None))
            .collect();
        for (source, entry) in k.sources.into_iter().zip(k.entries) {
            covering[source] = Some(Some(entry.record));
        }
        let state =
            listing::chosen_versioned(covering.into_iter().flatten(), voters.len(), self.quorums);
        (k.key, state)
    }
}
