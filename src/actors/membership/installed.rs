//! The node's installed membership ([`InstalledMembership`]) and what every actor does with it
//! ([`MembershipService`]): install a newer one, here or on every member, fetch one from a
//! member that has it, answer a peer's `Hello`. The per-key actors hold these.
//!
//! **Installing is a change's barrier.** A node installs a membership only if it is newer than
//! its own, and only one that was chosen in the membership register (the change executor
//! sends what its compare-and-set wrote; a peer answering `NodeRequest::Membership` sends
//! what it installed). The installed epoch is raised *before* the install is queued to
//! storage, and storage commits everything queued before it first ([`Meta`]): every acceptor
//! step that saw the old epoch has its write committed before the install, every later step
//! refuses the old epoch. The install is answered only once durable. Why that barrier makes a
//! change safe is argued in `paxos::membership`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::messages::{Meta, MetaAnswer};
use crate::actors::outbox::Outbox;
use crate::actors::storage::{ask, StorageActor};
use crate::actors::{Readiness, Stats};
use crate::client::{Client, ClientOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::{MembershipAnswer, NodeReply, NodeRequest};
use crate::paxos::bootstrap::{self, Answer, Standing};
use crate::paxos::identity;
use crate::paxos::membership::{Membership, Phase, MEMBERSHIP_KEY};
use crate::paxos::types::NodeId;
use crate::tls::Tls;

/// The node's installed membership, shared by its actors. Reads are cheap: the epoch is an
/// atomic, the membership an `Arc` behind a lock taken only to clone it.
#[derive(Debug)]
pub struct InstalledMembership {
    me: NodeId,
    store: u64,
    epoch: AtomicU64,
    /// The installed membership's cluster identity (0 while none is installed): stamped on
    /// every frame this node sends, and checked on every one it takes.
    cluster: AtomicU64,
    /// The installed membership records this store for this node (not 0, the bootstrap's
    /// "not recorded yet"): see [`InstalledMembership::admits_key`].
    recorded: AtomicBool,
    current: RwLock<Option<Arc<Membership>>>,
    /// The cluster this node's config founds (`paxos::bootstrap::Founding`), said to new
    /// nodes while none is installed.
    founds: AtomicU64,
}

impl InstalledMembership {
    pub fn new(me: NodeId, store: u64, installed: Option<Membership>) -> InstalledMembership {
        InstalledMembership {
            me,
            store,
            epoch: AtomicU64::new(installed.as_ref().map_or(0, |m| m.epoch)),
            cluster: AtomicU64::new(installed.as_ref().map_or(0, |m| m.cluster)),
            recorded: AtomicBool::new(installed.as_ref().is_some_and(|m| records(m, me, store))),
            current: RwLock::new(installed.map(Arc::new)),
            founds: AtomicU64::new(0),
        }
    }

    /// Sets what this node answers new nodes it would found (set once, before it listens).
    pub fn set_founds(&self, cluster: u64) {
        self.founds.store(cluster, Ordering::Release);
    }

    /// May this node's acceptors vote on `key` (given that the node votes at all)? On every
    /// key once the membership records this store; before that (a new cluster's bootstrap
    /// membership records no store) only on the membership register, whose compare-and-set
    /// records it. So a store that was never recorded never holds a vote on a client key:
    /// if its disk is lost in that window, no client write chosen with its vote is lost with
    /// it (review of issue 11, item 4: a wiped store-0 node voting again lost a write chosen
    /// at the fast ballot; and a failed compare-and-set kept the window open for as long as
    /// a change ran). One atomic load on the hot path.
    pub fn admits_key(&self, key: &[u8]) -> bool {
        self.recorded.load(Ordering::Acquire) || key == MEMBERSHIP_KEY
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn store(&self) -> u64 {
        self.store
    }

    /// 0 while none is installed.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Option<Arc<Membership>> {
        self.current.read().expect("membership lock").clone()
    }

    /// The installed membership's cluster identity; 0 while none is installed.
    pub fn cluster(&self) -> u64 {
        self.cluster.load(Ordering::Acquire)
    }

    /// Raises the view to `m` if it is newer; true if it did. A membership of another
    /// cluster than the installed one is refused, whatever its epoch.
    fn raise(&self, m: &Membership) -> Result<bool> {
        let mut current = self.current.write().expect("membership lock");
        let newer = m
            .installs_over(current.as_deref())
            .map_err(|why| Error::NotThisNode(format!("node {}: {why}", self.me)))?;
        if !newer {
            return Ok(false);
        }
        *current = Some(Arc::new(m.clone()));
        self.cluster.store(m.cluster, Ordering::Release);
        self.recorded
            .store(records(m, self.me, self.store), Ordering::Release);
        self.epoch.store(m.epoch, Ordering::Release);
        Ok(true)
    }

    /// Does the view let this node vote: a voter, with its own store (or none recorded yet,
    /// at bootstrap)?
    pub fn lists_me_as_voter(&self) -> bool {
        self.get().is_some_and(|m| {
            matches!(
                bootstrap::standing(&m, self.me, self.store),
                Standing::Voter | Standing::Unrecorded
            )
        })
    }

    fn answer(&self, voting: bool) -> MembershipAnswer {
        MembershipAnswer {
            node: self.me,
            membership: self.get().map(|m| (*m).clone()),
            store: self.store,
            voting,
            founds: self.founds.load(Ordering::Acquire),
        }
    }
}

/// May node `me` with store `store` vote on client keys at `m`
/// ([`Membership::admits_vote`]; cached in [`InstalledMembership::admits_key`] per install).
fn records(m: &Membership, me: NodeId, store: u64) -> bool {
    /// Any key but the membership register's.
    const CLIENT_KEY: &[u8] = b"";
    m.admits_vote(me, store, CLIENT_KEY)
}

/// What every membership task of a node needs. Cheap to clone.
#[derive(Clone)]
pub struct MembershipService {
    pub view: Arc<InstalledMembership>,
    pub(crate) storage: Addr<StorageActor>,
    pub(crate) outbox: Outbox,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) config: Arc<Config>,
    /// Epochs being fetched, so that a burst of `Stale` replies fetches once.
    fetching: Arc<std::sync::Mutex<BTreeMap<NodeId, Instant>>>,
    /// Woken by every install.
    pub(crate) changed: Arc<tokio::sync::Notify>,
    /// This store is not the member's (wiped, replaced) or an older copy: no vote.
    pub(crate) refused: Arc<std::sync::atomic::AtomicBool>,
    /// This run's generation was confirmed by `q - 1` peers (`actors::membership`): until
    /// then an older copy cannot be told from an intact store, and counts as neither.
    pub(crate) confirmed: Arc<std::sync::atomic::AtomicBool>,
    /// The node's certificate for its calls to peers (`None`: plaintext).
    pub(crate) tls: Option<Arc<Tls>>,
}

pub(crate) fn addr_of(m: &Membership, id: NodeId) -> Result<std::net::SocketAddr> {
    let member = m
        .member(id)
        .ok_or_else(|| Error::Unavailable(format!("node {id} is not a member")))?;
    member
        .addr
        .parse()
        .map_err(|e| Error::Config(format!("node {id}'s address {}: {e}", member.addr)))
}

/// The members of `m` but `me`, each with its address (those whose address parses).
pub(crate) fn others_of(m: &Membership, me: NodeId) -> Vec<(NodeId, std::net::SocketAddr)> {
    m.nodes()
        .into_iter()
        .filter(|n| *n != me)
        .filter_map(|n| Some((n, addr_of(m, n).ok()?)))
        .collect()
}

impl MembershipService {
    pub fn new(
        view: Arc<InstalledMembership>,
        storage: Addr<StorageActor>,
        outbox: Outbox,
        readiness: Arc<Readiness>,
        stats: Arc<Stats>,
        config: Arc<Config>,
        tls: Option<Arc<Tls>>,
    ) -> MembershipService {
        MembershipService {
            tls,
            view,
            storage,
            outbox,
            readiness,
            stats,
            config,
            fetching: Default::default(),
            changed: Default::default(),
            refused: Default::default(),
            confirmed: Default::default(),
        }
    }

    /// A client for node-to-node calls to `nodes` (one each call), with this node's
    /// certificate; with TLS, each answer comes from a node whose certificate names the node
    /// asked (not merely one for its IP address, which every node on one host shares).
    pub(crate) fn client_of(&self, nodes: &[(NodeId, std::net::SocketAddr)]) -> Client {
        self.client_with(
            nodes.iter().map(|(_, a)| *a).collect(),
            nodes.iter().map(|(n, _)| *n).collect(),
            |_| {},
        )
    }

    /// A client of the members `nodes` as a whole, as paxkv's CLI is (not pinned: a key's
    /// requests go to its home node, the next when that one fails), with this node's
    /// certificate, whose operations give up (unavailable, or unknown if they may have
    /// taken effect) after `op_timeout`: the HTTP API's.
    pub(crate) fn client_of_members(
        &self,
        nodes: &[(NodeId, std::net::SocketAddr)],
        op_timeout: Duration,
    ) -> Client {
        self.client_with(
            nodes.iter().map(|(_, a)| *a).collect(),
            nodes.iter().map(|(n, _)| *n).collect(),
            |options| {
                options.pinned = false;
                options.op_timeout = op_timeout;
                options.attempt_timeout = options.attempt_timeout.min(op_timeout);
            },
        )
    }

    /// [`MembershipService::client_of`] for addresses whose node is not known yet (the `--join` and
    /// config addresses a node asks for the membership): any node certificate of the CA for
    /// the address's IP is taken.
    pub(crate) fn client_for(&self, addrs: Vec<std::net::SocketAddr>) -> Client {
        self.client_with(addrs, Vec::new(), |_| {})
    }

    fn client_with(
        &self,
        addrs: Vec<std::net::SocketAddr>,
        nodes: Vec<NodeId>,
        tweak: impl FnOnce(&mut ClientOptions),
    ) -> Client {
        let mut options = ClientOptions {
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            pinned: true,
            tls: self.tls.clone(),
            nodes,
            cluster: self.view.cluster(),
            ..ClientOptions::default()
        };
        tweak(&mut options);
        Client::new(addrs, options)
    }

    /// This node's store is the one its membership records for it (or none is recorded: a
    /// bootstrap, or a node not yet added) and no peer found it to be an older copy.
    pub fn store_intact(&self) -> bool {
        let me = self.view.me();
        !self.store_refused()
            && self
                .view
                .get()
                .is_some_and(|m| m.holds_store_of(me, self.view.store()))
    }

    /// [`MembershipService::store_intact`], and this run's generation confirmed by its peers: what a
    /// change's barrier and scan may count on (`NodeReply::Installed::intact`). Before the
    /// confirmation an older copy would answer as intact (review of issue 11).
    pub fn store_confirmed_intact(&self) -> bool {
        self.confirmed.load(Ordering::Acquire) && self.store_intact()
    }

    pub fn store_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// What this node answers a peer or the CLI asking for its membership: the installed
    /// one, this store, whether it votes.
    pub fn answer(&self) -> MembershipAnswer {
        self.view
            .answer(self.readiness.is_voting() && !self.store_refused())
    }

    /// Installs `m` if it is newer than the view: view first, then durably (see the module
    /// doc); answers the epoch installed. Also tells the outbox of new peers, and re-decides
    /// whether this node votes.
    pub async fn install(&self, m: Membership) -> Result<u64> {
        m.check().map_err(Error::BadRequest)?;
        if self.view.raise(&m).inspect_err(|_| {
            Stats::add(&self.stats.foreign_frames, 1);
        })? {
            self.changed.notify_waiters();
            self.outbox.set_peers(&m);
            if !self.view.lists_me_as_voter() && self.readiness.is_voting() {
                log::warn!(
                    "node {}: epoch {}: this node is not a voter of the membership (or not \
                     with this store); it stops voting",
                    self.view.me,
                    m.epoch
                );
                self.readiness.clear_voting();
            }
            log::info!(
                "node {}: installed membership epoch {} (voters {:?}{})",
                self.view.me,
                m.epoch,
                m.voters(),
                match m.phase {
                    Some(Phase::CloseFast) => ", fast ballot closed",
                    Some(Phase::Rescan) => ", rescanning",
                    None => "",
                }
            );
        }
        match ask(&self.storage, Meta::Install(m)).await? {
            MetaAnswer::U64(epoch) => Ok(epoch.max(self.view.epoch())),
            other => Err(Error::Storage(format!("unexpected {other:?}"))),
        }
    }

    /// Installs `m` here and on every member of `m` and of `previous`; answers the nodes whose
    /// intact stores acknowledged it durably (this one included: `paxos::driver::Action::Install`
    /// decides whether that is a barrier).
    pub async fn install_everywhere(
        &self,
        m: &Membership,
        previous: &Membership,
    ) -> Result<Vec<NodeId>> {
        self.install(m.clone()).await?;
        let mut nodes = m.nodes();
        nodes.extend(previous.nodes());
        nodes.sort();
        nodes.dedup();
        // All at once: a node that is down or paused costs one timeout, not one per node.
        let installs = nodes
            .into_iter()
            .filter(|n| *n != self.view.me())
            .filter_map(|node| {
                let addr = addr_of(m, node).or_else(|_| addr_of(previous, node)).ok()?;
                Some(self.install_on(node, addr, m))
            });
        let mut acked: Vec<NodeId> = futures_util::future::join_all(installs)
            .await
            .into_iter()
            .flatten()
            .collect();
        if self.store_confirmed_intact() {
            acked.push(self.view.me());
        }
        Ok(acked)
    }

    /// Installs `m` on `node`: `Some(node)` once its intact store has it durably. A refused
    /// store (wiped, an older copy) may lack what it once voted for, and never counts (review
    /// of issue 10).
    async fn install_on(
        &self,
        node: NodeId,
        addr: std::net::SocketAddr,
        m: &Membership,
    ) -> Option<NodeId> {
        let client = self.client_of(&[(node, addr)]);
        match client.node_call(0, NodeRequest::Install(m.clone())).await {
            Ok(NodeReply::Installed { epoch, intact }) if epoch >= m.epoch && intact => Some(node),
            Ok(other) => {
                log::debug!("install of epoch {} on node {node}: {other:?}", m.epoch);
                None
            }
            Err(e) => {
                log::debug!("install of epoch {} on node {node}: {e}", m.epoch);
                None
            }
        }
    }

    /// A peer answered a request with a newer epoch, or sent one: fetch its membership (at
    /// most once a second per peer).
    pub fn fetch_from(&self, peer: NodeId, epoch: u64) {
        if epoch <= self.view.epoch() {
            return;
        }
        {
            let mut fetching = self.fetching.lock().expect("fetching lock");
            if fetching
                .get(&peer)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return;
            }
            fetching.insert(peer, Instant::now());
        }
        let Some(m) = self.view.get() else { return };
        let Ok(addr) = addr_of(&m, peer) else { return };
        let this = self.clone();
        actix_rt::spawn(async move {
            if let Err(e) = this.fetch_and_install(&[(peer, addr)]).await {
                log::debug!(
                    "node {}: fetching membership of node {peer}: {e}",
                    this.view.me
                );
            }
        });
    }

    /// Asks `targets` for their membership and installs the newest of this node's cluster
    /// ([`Membership::pick_pulled`]). See [`MembershipService::ask_memberships`] for who is asked how.
    pub async fn fetch_and_install(
        &self,
        targets: &[(NodeId, std::net::SocketAddr)],
    ) -> Result<u64> {
        let (answers, last_error) = self.ask_memberships(targets).await;
        self.install_newest(answers, last_error).await
    }

    /// Asks every other member of the installed membership (as it is now, not as a caller
    /// read it earlier), each dialed as that node: the periodic pull, and the
    /// fetch a newer epoch seen on a frame causes. **A membership arrives only from a member
    /// of the membership a node has** (issue 18): never from an address of the config, which
    /// a removed node (or another cluster's node) may still hold.
    pub async fn fetch_from_members(&self) -> Result<u64> {
        let me = self.view.me();
        let m = self
            .view
            .get()
            .ok_or_else(|| Error::Unavailable("no membership installed".into()))?;
        self.fetch_and_install(&others_of(&m, me)).await
    }

    /// Installs the newest membership of this node's cluster among `answers`
    /// ([`Membership::pick_pulled`]); `last_error` says why there was none. An answer of a
    /// node that is no member of the membership installed *now* is dropped: it was asked
    /// while it still was one (a node behind by a change), and it may have been removed
    /// since (issue 18: a removed node's key answered a slow node's pull with a membership
    /// of its own). An answer from an address whose node is not known (0: `--join`) is kept.
    pub async fn install_newest(
        &self,
        answers: Vec<(NodeId, Answer)>,
        last_error: Option<Error>,
    ) -> Result<u64> {
        let current = self.view.get();
        let answers = answers.into_iter().filter(|(node, _)| {
            *node == 0 || current.as_ref().is_none_or(|m| m.member(*node).is_some())
        });
        let held = answers.filter_map(|(_, a)| match a {
            Answer::Holds(m) => Some(m),
            Answer::Empty { .. } => None,
        });
        match Membership::pick_pulled(self.view.cluster(), held) {
            Ok(Some(m)) => self.install(m).await,
            Ok(None) => {
                Err(last_error.unwrap_or_else(|| Error::Unavailable("no membership".into())))
            }
            Err(why) => {
                Stats::add(&self.stats.foreign_frames, 1);
                Err(Error::Config(why))
            }
        }
    }

    /// What `targets` answer a request for their membership (`paxos::bootstrap::Answer`,
    /// one per node that answered), and the last error of those that did not. A target
    /// `(id, addr)` with `id` not 0 is dialed as node `id` (its certificate must name it, its
    /// answer must come from it); `(0, addr)` is an address whose node is not known (the
    /// config's, at a first start; `--join`, given by the operator for this start), dialed by
    /// address, and keyed by the config's node at that address (0 if none).
    pub async fn ask_memberships(
        &self,
        targets: &[(NodeId, std::net::SocketAddr)],
    ) -> (Vec<(NodeId, Answer)>, Option<Error>) {
        // All at once, each bounded: a peer that is paused (or a port that accepts and never
        // answers) costs one timeout, not one per address.
        let asks = targets.iter().map(|&(id, addr)| async move {
            let (client, node) = if id != 0 {
                (self.client_of(&[(id, addr)]), id)
            } else {
                let node = self
                    .config
                    .nodes
                    .iter()
                    .find(|n| n.addr.parse().ok() == Some(addr))
                    .map_or(0, |n| n.id);
                (self.client_for(vec![addr]), node)
            };
            let ask = client.node_call(0, NodeRequest::Membership);
            match tokio::time::timeout(Duration::from_secs(2), ask).await {
                Ok(Ok(NodeReply::Membership(info))) if id != 0 && info.node != id => (
                    node,
                    Err(Error::Frame(format!(
                        "{addr}: asked node {id}, node {} answered",
                        info.node
                    ))),
                ),
                Ok(answer) => (node, answer),
                Err(_) => (
                    node,
                    Err(Error::Unavailable(format!("{addr}: no answer within 2 s"))),
                ),
            }
        });
        let mut answers = Vec::new();
        let mut last_error = None;
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(NodeReply::Membership(info)) => answers.push((
                    node,
                    match info.membership {
                        Some(m) => Answer::Holds(m),
                        None => Answer::Empty {
                            founds: info.founds,
                        },
                    },
                )),
                Ok(other) => last_error = Some(Error::Frame(format!("unexpected {other:?}"))),
                Err(e) => last_error = Some(e),
            }
        }
        (answers, last_error)
    }

    /// Answers a peer's `Hello` (`paxos::identity`): the generation of that store seen
    /// before. A node whose own store is refused does not answer: what it
    /// remembers of its peers may be lost or old, and its answer must not confirm anyone.
    pub async fn hello(&self, node: NodeId, store: u64, generation: u64, call: u64) -> Result<u64> {
        if !self.store_intact() {
            return Err(Error::NotThisNode(format!(
                "node {}: this store is refused; it confirms no peer",
                self.view.me
            )));
        }
        match ask(
            &self.storage,
            Meta::Hello {
                node,
                store,
                generation,
                call,
            },
        )
        .await?
        {
            MetaAnswer::U64(seen) => {
                log::debug!(
                    "node {}: Hello from node {node}, store {store:x} generation {generation} \
                     (answer: {seen})",
                    self.view.me
                );
                if identity::refuses(generation, seen) {
                    log::warn!(
                        "node {}: node {node} started on generation {generation} of store \
                         {store:x}, which ran at generation {seen} before: an older copy",
                        self.view.me
                    );
                }
                Ok(seen)
            }
            other => Err(Error::Storage(format!("unexpected {other:?}"))),
        }
    }
}
