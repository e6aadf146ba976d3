//! Anti-entropy: how a node that was down or cut off becomes a full replica again without
//! clients touching every key. This module owns both sides: [`AntiEntropy`] pulls from
//! peers every `sync_interval_ms`, and [`CallServer`] answers their pulls and the membership
//! calls (`Frame::Call`, a frame of its own, apart from client requests). What a record
//! means (is this node behind a peer's digest entry, how a peer's record merges into ours) is
//! decided in `paxos::record` and `paxos::acceptor`; storage only reads and writes.
//!
//! **No recovery before voting.** A node restarted on its intact store votes at once (the
//! identity and generation checks of `actors::membership` decide that); a node whose store
//! was lost (wiped, replaced, an older copy) never votes with it and rejoins as a new member
//! (`paxos::membership`). The in-place recovery of earlier builds (merge the records of
//! `n - q + 1` peers, then vote) is gone: the records it read said what peers hold *now*, not
//! what the node promised or accepted just before losing its disk to a round still running
//! (the race of issue 10).
//!
//! **Catch-up.** Every `sync_interval_ms` the node pulls from every voting peer: it pages
//! through the peer's (key, promised, accepted) digest, asks storage which keys are behind,
//! fetches only those records, and merges them with [`Acceptor::adopt`] (through the key's
//! acceptor if it is alive). Adopting is always safe: it takes a peer's classic state only
//! where an Accept of it would be taken (a delayed copy of an Accept that was sent), never a
//! state at the fast ballot (how many acceptors took one is what tells whether it was
//! chosen), and raises promises, which is always safe.
//!
//! **Settling.** The same sweep settles every key this node holds at the fast ballot (or as
//! `fast_unknown`, left by older builds): a classic identity round through its own proposer
//! (see `paxos::proposer`), after which a majority holds the key's state at a classic ballot.
//! A key so leaves the fast ballot within one sweep even when its writer's own settle was lost
//! with its proposer. (A membership change settles such keys first anyway, see
//! `paxos::membership`.)
//!
//! [`Acceptor::adopt`]: crate::paxos::acceptor::Acceptor::adopt

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::membership::{InstalledMembership, MembershipService};
use crate::actors::messages::{Adopt, FindBehind, ScanUnsettled, SettleKey};
use crate::actors::outbox::Outbox;
use crate::actors::storage::{ask, StorageActor};
use crate::actors::supervisor::NodeSupervisor;
use crate::actors::{Readiness, Stats};
use crate::client::{Client, ClientOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::{DigestPage, DIGEST_PAGE_ENTRIES};
use crate::paxos::types::{Key, NodeId};

/// Digest entries asked for per page (also the most keys one fetch asks for).
const DIGEST_PAGE: u32 = DIGEST_PAGE_ENTRIES as u32;
/// Settle rounds in flight at once.
const SETTLE_CONCURRENCY: usize = 64;

/// The anti-entropy actor: runs one `Puller` task for the node's lifetime.
pub struct AntiEntropy {
    puller: Option<Puller>,
}

impl AntiEntropy {
    pub fn new(members: &MembershipService, supervisor: Addr<NodeSupervisor>) -> AntiEntropy {
        AntiEntropy {
            puller: Some(Puller {
                node: members.view.me(),
                outbox: members.outbox.clone(),
                config: members.config.clone(),
                storage: members.storage.clone(),
                supervisor,
                stats: members.stats.clone(),
                readiness: members.readiness.clone(),
                view: members.view.clone(),
                tls: members.tls.clone(),
            }),
        }
    }
}

impl Actor for AntiEntropy {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let puller = self.puller.take().expect("started once");
        ctx.spawn(puller.run().into_actor(self));
    }
}

/// The anti-entropy task: a pull from every voting peer, then a sweep, every interval.
struct Puller {
    node: NodeId,
    outbox: Outbox,
    config: Arc<Config>,
    storage: Addr<StorageActor>,
    supervisor: Addr<NodeSupervisor>,
    stats: Arc<Stats>,
    readiness: Arc<Readiness>,
    view: Arc<InstalledMembership>,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
}

impl Puller {
    async fn run(self) {
        // Voting is decided by `actors::membership` (identity and generation checks); the
        // sweeps start once the node votes.
        while !self.readiness.is_voting() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let interval = self.config.paxos.sync_interval_ms;
        if interval == 0 {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(interval)).await;
            let Some(m) = self.view.get() else { continue };
            let peers: Vec<NodeId> = m.voters().into_iter().filter(|n| *n != self.node).collect();
            let Ok(addrs) = peers
                .iter()
                .map(|p| {
                    m.member(*p)
                        .map(|x| x.addr.parse())
                        .ok_or(())
                        .and_then(|r| r.map_err(|_| ()))
                })
                .collect::<std::result::Result<Vec<std::net::SocketAddr>, ()>>()
            else {
                continue;
            };
            let client = Client::new(
                addrs,
                ClientOptions {
                    attempt_timeout: Duration::from_secs(10),
                    connect_timeout: Duration::from_millis(500),
                    pinned: true,
                    tls: self.tls.clone(),
                    nodes: peers.clone(),
                    cluster: m.cluster,
                    ..ClientOptions::default()
                },
            );
            for (index, peer) in peers.iter().enumerate() {
                if self.outbox.is_cut(*peer) {
                    continue;
                }
                match client.digest_page(index, None, 0).await {
                    Ok(page) if page.voting => {
                        if let Err(e) = self.pull_from(&client, index).await {
                            log::debug!(
                                "node {}: anti-entropy from node {}: {e}",
                                self.node,
                                peers[index]
                            );
                        }
                    }
                    _ => {}
                }
            }
            let everything = Stats::get(&self.stats.sync_rounds) % 4 == 3;
            if let Err(e) = self.settle_own_fast_keys(everything).await {
                log::debug!("node {}: settling fast-ballot keys: {e}", self.node);
            }
            Stats::add(&self.stats.sync_rounds, 1);
        }
    }

    /// Settles every key this node's store holds at the fast ballot or as `fast_unknown`.
    ///
    /// Each voter settles the keys it is home for (the key's hash among the voters), so that
    /// five nodes do not race five settle rounds per key (after a bulk load of first writes
    /// that was most of their work); every fourth sweep (`everything`) it settles the others
    /// too, in case their home node is down. A sweep stops while a membership change is in
    /// progress: the change settles every such key itself, and racing it only slows it down.
    async fn settle_own_fast_keys(&self, everything: bool) -> Result<()> {
        let mut after = None;
        loop {
            let Some(m) = self.view.get() else {
                return Ok(());
            };
            if m.phase.is_some() {
                return Ok(());
            }
            let voters = m.voters();
            let mine = voters.iter().position(|v| *v == self.node);
            let limit = DIGEST_PAGE as usize;
            let (keys, last) = ask(&self.storage, ScanUnsettled { after, limit }).await?;
            let keys: Vec<Key> = keys
                .into_iter()
                .filter(|k| {
                    everything
                        || mine.is_none_or(|i| {
                            (crate::paxos::types::key_hash(k) % voters.len() as u64) as usize == i
                        })
                })
                .collect();
            self.settle(keys).await?;
            match last {
                Some(last) => after = Some(last),
                None => return Ok(()),
            }
        }
    }

    /// Runs a settle round for each key (see `paxos::proposer`), at most
    /// [`SETTLE_CONCURRENCY`] at once; fails if any one fails.
    async fn settle(&self, keys: Vec<Key>) -> Result<()> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        let count = keys.len() as u64;
        stream::iter(keys.into_iter().map(|key| async move {
            let (reply, settled) = tokio::sync::oneshot::channel();
            self.supervisor
                .send(SettleKey { key, reply })
                .await
                .map_err(|e| Error::Unavailable(format!("node supervisor: {e}")))?;
            settled
                .await
                .map_err(|_| Error::Unavailable("the key's proposer stopped".into()))?
                .map(|_| ())
        }))
        .buffer_unordered(SETTLE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        Stats::add(&self.stats.keys_settled, count);
        Ok(())
    }

    /// A page of peer `index`'s digest after `after`, and the last key it holds, without the
    /// entries that fail validation (counted): what a peer sends is checked like any frame.
    /// A page must go forward, its keys increasing and past `after`; one that does not fails
    /// this peer's pull (a peer that sent one page again held the puller for good, and no
    /// other peer was pulled: review, 2026-12-08). The last key is taken before the invalid
    /// entries go, so that the next page starts past them.
    async fn digest_page(
        &self,
        client: &Client,
        index: usize,
        after: Option<Key>,
    ) -> Result<(DigestPage, Option<Key>)> {
        let mut page = client
            .digest_page(index, after.clone(), DIGEST_PAGE)
            .await?;
        if !goes_forward(after.as_deref(), &page.entries) {
            Stats::add(&self.stats.bad_frames, 1);
            return Err(Error::Unavailable(format!(
                "{} sent a digest page whose keys do not go forward",
                client.addrs()[index]
            )));
        }
        let last = page.entries.last().map(|e| e.key.clone());
        let before = page.entries.len();
        page.entries.retain(|e| e.validate(&self.config).is_ok());
        let dropped = before - page.entries.len();
        if dropped > 0 {
            Stats::add(&self.stats.bad_frames, dropped as u64);
            log::warn!(
                "node {}: dropped {dropped} invalid digest entries from {}",
                self.node,
                client.addrs()[index]
            );
        }
        Ok((page, last))
    }

    /// Pages through peer `index`'s digest, fetching and merging what this node is behind on.
    async fn pull_from(&self, client: &Client, index: usize) -> Result<u64> {
        let mut after = None;
        let mut adopted = 0;
        loop {
            let (page, last) = self.digest_page(client, index, after.clone()).await?;
            after = last;
            let more = page.more;
            let entries = page.entries;
            let behind = ask(&self.storage, FindBehind { entries }).await?;
            let mut wanted = &behind[..];
            while !wanted.is_empty() {
                let records = client.fetch_records(index, wanted).await?;
                if records.is_empty() {
                    break; // the peer no longer has them (cannot happen: records are never removed)
                }
                let fetched = records.len();
                // What a peer sends is checked like any frame before it is merged: a bad
                // record is dropped (and counted), the others still are merged.
                let (records, bad): (Vec<_>, Vec<_>) = records
                    .into_iter()
                    .partition(|r| r.validate(&self.config).is_ok());
                if !bad.is_empty() {
                    Stats::add(&self.stats.bad_frames, bad.len() as u64);
                    log::warn!(
                        "node {}: dropped {} invalid records from {}",
                        self.node,
                        bad.len(),
                        client.addrs()[index]
                    );
                }
                adopted += self
                    .supervisor
                    .send(Adopt { records })
                    .await
                    .map_err(|e| Error::Storage(e.to_string()))??;
                wanted = &wanted[fetched.min(wanted.len())..];
            }
            if !more || after.is_none() {
                return Ok(adopted);
            }
        }
    }
}

/// A digest page goes forward: its keys strictly increasing, the first past `after`.
fn goes_forward(after: Option<&[u8]>, entries: &[crate::messages::DigestEntry]) -> bool {
    let increasing = entries.windows(2).all(|w| w[0].key < w[1].key);
    let past_after = match (after, entries.first()) {
        (Some(after), Some(first)) => first.key.as_slice() > after,
        _ => true,
    };
    increasing && past_after
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's digest page must go forward (`goes_forward`): one that repeats the last page
    /// or whose keys are out of order fails the pull from that peer.
    #[test]
    fn a_digest_page_must_go_forward() {
        use crate::messages::DigestEntry;
        use crate::paxos::types::Ballot;
        let page = |keys: &[&str]| -> Vec<DigestEntry> {
            keys.iter()
                .map(|k| DigestEntry {
                    key: k.as_bytes().to_vec(),
                    promised: Ballot::ZERO,
                    accepted: Ballot::ZERO,
                })
                .collect()
        };
        assert!(goes_forward(None, &page(&["a", "b"])));
        assert!(goes_forward(Some(b"a"), &page(&["b", "c"])));
        assert!(goes_forward(Some(b"z"), &page(&[])));
        assert!(
            !goes_forward(Some(b"b"), &page(&["a", "b"])),
            "the page again"
        );
        assert!(
            !goes_forward(Some(b"b"), &page(&["b", "c"])),
            "not past after"
        );
        assert!(!goes_forward(None, &page(&["b", "a"])), "out of order");
        assert!(!goes_forward(None, &page(&["a", "a"])), "a key twice");
    }
}
