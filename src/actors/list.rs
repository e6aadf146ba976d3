//! Listing keys by prefix (`paxkv list`): a scan of the prefix on a majority of the voters,
//! merged by key, each key's state taken where the scanned records show it chosen (the quick
//! read's rule, `paxos::proposer::read_answers`) and read with a Paxos round where they do
//! not. One page per call, bounded in keys and bytes; the client asks again after its `next`.
//! The page's logic is `paxos::listing::PageScan`, with no IO; this module sends its scan
//! asks and runs its read rounds, and the simulation (`paxos::sim`) drives the same
//! `PageScan` through its faults, with pages and scan pages down to one key.
//!
//! **What a page promises.** Per key, not across keys (not an atomic snapshot: a page may
//! show key `a` before a write and key `b` after it, as etcd's paginated reads across
//! revisions would):
//! 1. *Every item is a state of the key's chain of chosen states that a read within the call
//!    may return*: chosen by the end of the call, and no state after it in the chain chosen
//!    before the call began. Either the scanned records show it chosen: a classic quorum of
//!    the epoch's voters report the same classic ballot `B` as the highest they accepted (or a
//!    fast quorum the same state at the fast ballot). Each record was read from a voter's
//!    durable store after the call began, so the state at `B` was chosen by the last of them,
//!    and no higher state had been chosen before the call began (a majority would hold it,
//!    and meet ours); a later state may have been chosen meanwhile, and the item is then
//!    ordered between the two, within the call: the argument of
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
//! 3. *In order, each key once per page*, from the k-way merge (`paxos::merge`); a
//!    page's `next` is its last key, or the last key it examined past its last item (below),
//!    and every key up to `next` is decided by the page: the pages of a listing cover
//!    consecutive ranges of keys, so a key live for the whole listing appears in exactly one
//!    page.
//!
//! **A page's work is bounded by the page, not by the prefix.** Deleted keys keep their
//! records and are examined, not listed; so are the cluster's own keys (the leases' registers
//! sort first, under `\0paxkv/`, for the empty prefix). A page that has passed over
//! `limits.list_max_skipped` of them (16,384) ends at the one where it did, however few items
//! it holds, with that key as `next` (an empty page with a `next` is a page like any other:
//! ask again after it). Without the bound, a page of one key after a million deletes would
//! scan, send and merge a million records on a majority of the voters before it answered.
//! `next` is then a key that is not listed, possibly one of the cluster's own: a position, to
//! be passed back as `after`, nothing more. The cut is in `PageScan` (the simulation runs it,
//! with the bound down to one key, and checks that each page decides every key up to its
//! `next`).
//!
//! What could go wrong, and why it cannot: a voter scanned while it is cut off answers with
//! old records; it is one vote, and a state is taken from the records only where a quorum
//! agrees (an old record drags a key into a read round, never into a stale answer). A voter
//! that stops answering midway is dropped; the keys after its last page are merged from the
//! others, and the page fails if fewer than a quorum are left (checked before anything else:
//! voters dropped by the last asks leave the merge with no source that has more, which must
//! not read as "the prefix is exhausted"; the simulation found that order wrong in the first
//! draft of `PageScan`, and mutant `list-exhausted-when-its-voters-drop-sim` restores it). A
//! voter dropped midway counts as having answered only up to the last key its pages reached: its
//! silence about a later key is no vote. A change of epoch midway makes
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

use crate::actors::membership::installed::addr_of;
use crate::actors::membership::MembershipService;
use crate::actors::supervisor::{run_command, Keys};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::messages::{ListPage, NodeReply, NodeRequest, DIGEST_PAGE_ENTRIES};
use crate::paxos::listing::{Batch, PageScan, PageSpec, ScanSizes, Versioned};
use crate::paxos::membership::RESERVED_PREFIX;
use crate::paxos::types::{Command, Key, Outcome};

/// How long a voter may take to answer one page of a scan before it is dropped from it.
const SCAN_PAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a voter is asked for per scan page: what the list's page can still hold, 64 more
/// (deleted keys and keys of the cluster's own take room and are not listed), at most
/// `DIGEST_PAGE_ENTRIES` (and the voter stops at half a frame of bytes); and the keys a page
/// passes over at most, `limits.list_max_skipped`.
fn scan_sizes(limits: &Limits) -> ScanSizes {
    ScanSizes {
        slack: 64,
        most: DIGEST_PAGE_ENTRIES,
        skipped: limits.list_max_skipped,
    }
}

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

    /// One page of the listing (see the module doc): `paxos::listing::PageScan` driven over
    /// the network and the key's proposers.
    pub async fn list(&self, request: ListRequest) -> Result<ListPage> {
        check_list(&request, &self.members.config.limits)?;
        let limits = &self.members.config.limits;
        let spec = PageSpec {
            limit: page_size(request.limit, limits),
            max_bytes: self.members.config.frame_limit() / 2,
            prefix: request.prefix,
            after: request.after,
            keys_only: request.keys_only,
            with_deleted: request.with_deleted,
            reserved: request.reserved,
        };
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
        let mut scan = PageScan::new(spec, voters.len(), m.quorums(), scan_sizes(limits));
        loop {
            let asks = scan.asks().into_iter().map(|ask| {
                let body = NodeRequest::Scan {
                    prefix: scan.spec().prefix.clone(),
                    after: ask.after,
                    limit: ask.limit,
                    epoch: m.epoch,
                    node: voters[ask.voter],
                };
                let call = client.node_call(ask.voter, body);
                async move {
                    (
                        ask.voter,
                        tokio::time::timeout(SCAN_PAGE_TIMEOUT, call).await,
                    )
                }
            });
            for (voter, answer) in futures_util::future::join_all(asks).await {
                scan.answered(
                    voter,
                    match answer {
                        Ok(Ok(NodeReply::Scanned { records, more })) => Ok((records, more)),
                        Ok(Ok(other)) => Err(format!("unexpected {other:?}")),
                        Ok(Err(e)) => Err(e.message().to_string()),
                        Err(_) => Err(format!("no answer within {SCAN_PAGE_TIMEOUT:?}")),
                    },
                );
            }
            let Some(batch) = scan.batch()? else {
                return Ok(scan.finish());
            };
            // Key by key, in order, a few read rounds ahead: the page stops at its last key,
            // and no key after it is read (or can fail it).
            let mut states = std::pin::pin!(self.decide(batch));
            while let Some(decided) = states.next().await {
                let (key, state) = decided?;
                if let Some(page) = scan.offer(key, state) {
                    return Ok(page);
                }
            }
        }
    }

    /// Each key's state, in key order (`None`: no value): as the records decided it, else
    /// from a read round (a few run ahead of the key taken).
    fn decide(
        &self,
        batch: Batch,
    ) -> impl futures_util::Stream<Item = Result<(Key, Versioned)>> + '_ {
        let undecided = batch.iter().filter(|(_, quick)| quick.is_none()).count();
        if undecided > 0 {
            log::debug!(
                "a list batch of {} keys: {undecided} undecided by the records, read with rounds",
                batch.len()
            );
        }
        stream::iter(batch)
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

/// A list's prefix is a key like any other: within the key limit, never in the reserved
/// prefix. Its `after` is within the limit of a stored key (LMDB's): a page's `next` may be a
/// key longer than `limits.max_key_bytes` (one written before the limit was lowered, or, when
/// the page passed over many, one of the cluster's own), and the listing must go on past it
/// (review, 2026-12-08: it was refused, and the listing could never get past that key).
fn check_list(request: &ListRequest, limits: &Limits) -> Result<()> {
    let too_long = |what: &str, key: &[u8], most: usize| {
        (key.len() > most).then(|| {
            Error::BadRequest(format!(
                "{what} of {} bytes is over the key limit of {most} bytes",
                key.len()
            ))
        })
    };
    if let Some(e) = too_long("the prefix", &request.prefix, limits.max_key_bytes) {
        return Err(e);
    }
    let stored = crate::config::LMDB_MAX_KEY_BYTES;
    if let Some(e) = request
        .after
        .as_ref()
        .and_then(|a| too_long("after", a, stored))
    {
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
