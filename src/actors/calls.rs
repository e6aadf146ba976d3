//! The answers to other nodes' calls (`Frame::Call`, a frame of its own, apart from client
//! requests): anti-entropy's digests and records (`actors::anti_entropy` pulls them), the
//! membership and installs (`actors::membership`), the start's `Hello` (`paxos::identity`).
//! Every call names its caller's cluster; one of another cluster is refused
//! (`paxos::admission::serves_call`).

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::membership::{InstalledMembership, MembershipService};
use crate::actors::messages::{FetchRecords, ScanDigest, ScanPrefix};
use crate::actors::storage::{ask, StorageActor};
use crate::actors::{Readiness, Stats};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::{
    DigestPage, NodeAnswer, NodeCall, NodeReply, NodeRequest, DIGEST_PAGE_ENTRIES,
};
use crate::paxos::admission;
use crate::paxos::listing;
use crate::paxos::types::{Key, NodeId};

/// Answers other nodes' calls. Cheap to clone.
#[derive(Clone)]
pub struct CallServer {
    storage: Addr<StorageActor>,
    readiness: Arc<Readiness>,
    members: MembershipService,
    /// Half a frame of records per answer leaves room for the framing around them.
    max_fetch_bytes: usize,
}

impl CallServer {
    pub fn new(
        storage: Addr<StorageActor>,
        readiness: Arc<Readiness>,
        config: &Config,
        members: MembershipService,
    ) -> CallServer {
        CallServer {
            storage,
            readiness,
            members,
            max_fetch_bytes: config.frame_limit() / 2,
        }
    }

    /// The node's membership view (the network checks senders against it).
    pub fn view(&self) -> Arc<InstalledMembership> {
        self.members.view.clone()
    }

    /// The node's TLS state (the network accepts and dials with it).
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.members.tls.clone()
    }

    pub async fn serve(&self, call: NodeCall) -> NodeAnswer {
        let mine = self.members.view.cluster();
        let changes_nothing = matches!(
            call.body,
            NodeRequest::Membership
                | NodeRequest::Digest { .. }
                | NodeRequest::Fetch { .. }
                | NodeRequest::Scan { .. }
        );
        if !admission::serves_call(mine, call.cluster, changes_nothing) {
            Stats::add(&self.members.stats.foreign_frames, 1);
            return NodeAnswer {
                id: call.id,
                result: Err(Error::NotThisNode(format!(
                    "node {} serves cluster {mine:x}, not {:x}",
                    self.members.view.me(),
                    call.cluster
                ))),
            };
        }
        let result = match call.body {
            NodeRequest::Digest { after, limit } => {
                let limit = (limit as usize).min(DIGEST_PAGE_ENTRIES);
                self.digest(after, limit).await.map(NodeReply::Digest)
            }
            NodeRequest::Fetch { keys } => {
                let keys = keys.into_iter().map(|k| k.into_vec()).collect();
                let max_bytes = self.max_fetch_bytes;
                ask(&self.storage, FetchRecords { keys, max_bytes })
                    .await
                    .map(NodeReply::Records)
            }
            NodeRequest::Membership => Ok(NodeReply::Membership(self.members.answer())),
            NodeRequest::Scan {
                prefix,
                after,
                limit,
                epoch,
                node,
            } => self.scan(prefix, after, limit, epoch, node).await,
            NodeRequest::Install(m) => {
                self.members
                    .install(m)
                    .await
                    .map(|epoch| NodeReply::Installed {
                        epoch,
                        intact: self.members.store_confirmed_intact(),
                    })
            }
            NodeRequest::Hello {
                node,
                store,
                generation,
                call,
            } => self
                .members
                .hello(node, store, generation, call)
                .await
                .map(|seen| NodeReply::Hello { seen }),
            NodeRequest::Watching { node, lease_ms } => {
                // Announcements go to members only (the network takes Paxos frames from
                // members only, and a lease for an address nobody serves is work for nothing).
                if self
                    .members
                    .view
                    .get()
                    .is_some_and(|m| m.member(node).is_some())
                {
                    let lease = std::time::Duration::from_millis(lease_ms as u64);
                    self.members.outbox.grant_watch(node, lease);
                    Ok(NodeReply::Watching)
                } else {
                    Err(Error::BadRequest(format!("node {node} is not a member")))
                }
            }
        };
        NodeAnswer {
            id: call.id,
            result,
        }
    }

    /// A page of a listing's scan (`actors::list`): only at the caller's epoch (the scan's
    /// quorums are that epoch's voters), and only from a store confirmed intact (a refused
    /// or unconfirmed store may lack states it once voted for).
    async fn scan(
        &self,
        prefix: Key,
        after: Option<Key>,
        limit: u32,
        epoch: u64,
        node: NodeId,
    ) -> Result<NodeReply> {
        let (me, mine) = (self.members.view.me(), self.members.view.epoch());
        if node != me {
            return Err(Error::NotThisNode(format!(
                "a scan for node {node} reached node {me}"
            )));
        }
        let intact = self.members.store_confirmed_intact();
        if !listing::serves_scan(mine, epoch, intact) {
            return Err(Error::Unavailable(format!(
                "node {me} serves no scan: at epoch {mine} (the scan at {epoch}), its store \
                 {} confirmed intact",
                if intact { "is" } else { "is not" }
            )));
        }
        let scan = ScanPrefix {
            prefix,
            after,
            limit: (limit as usize).min(DIGEST_PAGE_ENTRIES),
            max_bytes: self.max_fetch_bytes,
        };
        let (records, more) = ask(&self.storage, scan).await?;
        // Read at the caller's epoch: an acceptor steps at a newer one only once the view is
        // raised, so an epoch unchanged after the read shows nothing newer was in it.
        if self.members.view.epoch() != epoch {
            return Err(Error::Unavailable(format!(
                "node {me} moved past epoch {epoch} during the scan"
            )));
        }
        Ok(NodeReply::Scanned { records, more })
    }

    async fn digest(&self, after: Option<Key>, limit: usize) -> Result<DigestPage> {
        let scan = ask(&self.storage, ScanDigest { after, limit }).await?;
        Ok(DigestPage {
            voting: self.readiness.is_voting(),
            retired: [false; 2],
            entries: scan.entries,
            more: scan.more,
        })
    }
}
