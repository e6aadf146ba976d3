//! The node's start: a membership (fetched from the nodes it knows, or a new cluster founded
//! from the config, as `paxos::bootstrap` decides), then whether this store may vote.
//!
//! **Whether it votes.** The node votes only once its installed membership lists it as a voter
//! *with its own store* (`Member::store`): a wiped store (new identity) or a foreign one
//! never votes; the log says to remove and re-add the node. A bootstrap membership records no
//! stores (0); until a node's store is recorded (through the register, during a change too)
//! it votes on the membership register only (`InstalledMembership::admits_key`).
//!
//! **Rolled-back stores (older copies)**, decided in `paxos::identity`. The node reads its
//! store's refusal mark first (a store refused once never votes again), then says `Hello` to
//! its peers in rounds, each at a new, durable generation; each peer remembers the highest
//! generation of each store of each node and answers the one it had seen before. A node whose
//! generation is not above what a peer had seen runs on an older copy of its directory: it
//! marks its store refused, stops voting and says so. It votes once `q - 1` voters (a majority
//! with itself) confirmed it, so an intact restart votes at once even with two of five nodes
//! down.
//! **What this cannot catch.** (1) A copy taken *during* the node's latest run (a snapshot of
//! a running node, a VM image) holds that run's generation; restored after a crash it bumps
//! past it and looks intact to every peer. Nothing short of a consensus write per run (or per
//! vote) could tell it, and that write would need a quorum the restarting node is part of.
//! (2) A copy whose later runs were seen only by peers that are down at the restored start:
//! the `q - 1` peers that confirmed a run and the `q - 1` that answer the next start may be
//! disjoint when `2(q - 1) <= n - 1`, as with 5 nodes, and no scheme that lets a restart vote
//! with `q - 1` answers avoids that. Named assumption: **a data directory is never restored
//! from a copy in place**; operators restore a node through `member remove` and `member add`
//! (as with etcd). Wiped and replaced disks need no assumption: a new store is always told.
//!
//! **Its store recorded.** A bootstrap membership records no store (0); a node records its
//! own through the register before it votes on client keys ([`Start::record_store`], argued
//! there).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::ConstantBuilder;

use crate::actors::membership::installed::{addr_of, others_of};
use crate::actors::membership::{retry, Failure, MembershipService, Register};
use crate::actors::messages::{Meta, MetaAnswer};
use crate::actors::storage::ask;
use crate::error::{Error, Result};
use crate::messages::{NodeReply, NodeRequest};
use crate::paxos::bootstrap::{self, Standing, Start as Decision};
use crate::paxos::identity::Confirmation;
use crate::paxos::membership::Membership;
use crate::paxos::types::NodeId;

/// The pause after a round of `Hello`s that left peers unconfirmed, doubling to the most.
const HELLO_BACKOFF_MIN: Duration = Duration::from_millis(200);
const HELLO_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Compare-and-set attempts of the write that records this store, when others win them.
const RECORD_ATTEMPTS: usize = 50;

/// The pause before checking again while nothing lets this node go on.
const WAIT_STEP: Duration = Duration::from_millis(300);

/// Runs until this node votes: a membership installed (fetched from the nodes it knows and
/// `join`, or a cluster founded from the config), this store recorded in it, the generation
/// confirmed by `q - 1` peers. Then keeps checking later `Hello` answers and newer
/// memberships, for the node's lifetime.
pub async fn run(members: MembershipService, register: Register, join: Vec<SocketAddr>) {
    let mut start = Start {
        members,
        register,
        started: Instant::now(),
        complained: None,
    };
    // A store refused once is refused for good (`paxos::identity`), before it answers any
    // peer's `Hello` (a refused store confirms nobody). If that cannot be read, the store is
    // taken as refused: it votes on nothing it cannot vouch for.
    match ask(&start.members.storage, Meta::Refused).await {
        Ok(MetaAnswer::Refused(None)) => {}
        Ok(MetaAnswer::Refused(Some(why))) => return start.refuse_for_good(&why, false).await,
        other => {
            let why = format!("cannot read whether this store was refused: {other:?}");
            return start.refuse_for_good(&why, false).await;
        }
    }
    start.find_membership(&join).await;
    start.vote_once_confirmed().await;
}

/// The state of a node's start.
struct Start {
    members: MembershipService,
    register: Register,
    started: Instant,
    /// When the start last said why the node does not vote yet (said every 5 s at most).
    complained: Option<Instant>,
}

impl Start {
    fn me(&self) -> NodeId {
        self.members.view.me()
    }

    fn complain(&mut self, what: String) {
        if self
            .complained
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            log::warn!("node {}: not voting yet: {what}", self.me());
            self.complained = Some(Instant::now());
        }
    }

    /// A membership: the newest any reachable node has (an intact restart learns what changed
    /// while it was down; a wiped store of a running cluster learns it is not the member's
    /// store), or a new cluster founded from the config: `paxos::bootstrap` decides, from
    /// what the nodes asked answer. A node with a membership asks once (a restart whose old
    /// peers are all gone learns the new one through `--join`); one with none, until it has
    /// one.
    async fn find_membership(&mut self, join: &[SocketAddr]) {
        let me = self.me();
        let founding = self.members.config.founding(me);
        let targets = self.start_targets(join);
        log::debug!("node {me}: starting; asking {targets:?} for the membership");
        let mut first = true;
        while first || self.members.view.get().is_none() {
            first = false;
            let (answers, last_error) = self.members.ask_memberships(&targets).await;
            if self.members.view.get().is_some() {
                // Installed meanwhile (an executor's `Install`), or before this start: only a
                // newer membership of its own cluster.
                if let Err(e) = self.members.install_newest(answers, last_error).await {
                    log::debug!("node {me}: no newer membership at start: {e}");
                }
                return;
            }
            let why = match bootstrap::decide(founding.as_ref(), &answers) {
                Decision::Install(m) | Decision::Found(m) => match self.members.install(m).await {
                    Ok(_) => continue,
                    Err(e) => format!("installing the membership: {e}"),
                },
                Decision::Wait(why) => match last_error {
                    Some(e) => format!("{why}; last error: {}", e.message()),
                    None => why,
                },
            };
            self.complain(why);
            self.wait_for_change(WAIT_STEP).await;
        }
    }

    /// Whom a start asks for the membership (see `MembershipService::ask_memberships`): with
    /// one installed, its other members, each dialed as that node, and the `--join` addresses
    /// (given by the operator for this start: a node restarted after its old peers were all
    /// replaced learns the new membership through them, review of issue 11); with none, the
    /// config's other nodes and `--join`, by address (a first start, or a wiped store).
    /// Config addresses never serve a node that has a membership (issue 18: a removed node
    /// may still hold one).
    fn start_targets(&self, join: &[SocketAddr]) -> Vec<(NodeId, SocketAddr)> {
        let me = self.me();
        let config = &self.members.config;
        let own = config.node(me).ok().and_then(|n| n.addr.parse().ok());
        let mut targets: Vec<(NodeId, SocketAddr)> = match self.members.view.get() {
            Some(m) => others_of(&m, me),
            None => config.addrs().into_iter().map(|a| (0, a)).collect(),
        };
        targets.extend(join.iter().map(|a| (0, *a)));
        targets.retain(|(_, a)| Some(*a) != own);
        // One target per address, a member (dialed as that node) before an address.
        targets.sort_by_key(|(id, a)| (*a, std::cmp::Reverse(*id)));
        targets.dedup_by_key(|(_, a)| *a);
        targets
    }

    /// The generation, confirmed by `q - 1` peers one `Hello` round at a time; this store
    /// recorded; then the node votes, for as long as its membership lists it with this store.
    async fn vote_once_confirmed(&mut self) {
        let me = self.me();
        let mut confirmation = Confirmation::default();
        let mut hellos = HelloSchedule::default();
        let mut voting = false;
        loop {
            let Some(m) = self.members.view.get() else {
                return;
            };
            if let Err(why) = self.hello_if_due(&m, &mut confirmation, &mut hellos).await {
                return self.refuse_for_good(&why, true).await;
            }
            // Confirmed by `q - 1` voters: not an older copy. Said as soon as it is known, a
            // joining node included (a change's barrier may need its `Installed` before it
            // votes).
            let confirmed = confirmation.is_confirmed(&m);
            if confirmed {
                self.members.confirmed.store(true, Ordering::Release);
            }
            if let Some(why) = self.why_not_a_voter(&m) {
                self.complain(why);
                voting = false; // removed, or its store replaced: `install` cleared it
                let _ = self.members.fetch_from_members().await;
                self.wait_for_change(WAIT_STEP).await;
                continue;
            }
            if !voting && confirmed {
                if let Err(e) = self.record_store(&m).await {
                    self.complain(format!("recording this store: {e}"));
                    self.wait_for_change(WAIT_STEP).await;
                    continue;
                }
                voting = true;
                self.begin_voting(&m, &confirmation);
            }
            if voting {
                // Keep up with changes made while this node's links were down.
                let _ = self.members.fetch_from_members().await;
            }
            let wait = if voting && confirmation.unconfirmed(&m, me).is_empty() {
                Duration::from_secs(5)
            } else if voting {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(100)
            };
            self.wait_for_change(wait).await;
        }
    }

    /// Why `m` does not let this node vote with this store (`None`: it does, or will once the
    /// store is recorded). Another store recorded marks this one refused.
    fn why_not_a_voter(&self, m: &Membership) -> Option<String> {
        let me = self.me();
        match bootstrap::standing(m, me, self.members.view.store()) {
            Standing::Voter | Standing::Unrecorded => None,
            Standing::OtherStore(recorded) => {
                self.members.refused.store(true, Ordering::Release);
                Some(format!(
                    "the membership records store {recorded:x} for node {me}, this is store \
                     {:x} (a wiped or replaced disk): remove this node and add it again \
                     (`paxkv member remove {me}`, `paxkv member add {me} ADDR`)",
                    self.members.view.store()
                ))
            }
            Standing::NotAVoter => Some(format!(
                "not a voter at epoch {} (waiting for `member add`)",
                m.epoch
            )),
        }
    }

    fn begin_voting(&self, m: &Membership, confirmation: &Confirmation) {
        self.members.refused.store(false, Ordering::Release);
        self.members.readiness.set_voting();
        log::info!(
            "node {}: voting at epoch {} (confirmed by {} peers) {:.2}s after start",
            self.me(),
            self.members.view.epoch(),
            confirmation.voters_confirmed(m),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A round of `Hello`s to the peers not confirmed yet, if one is due.
    async fn hello_if_due(
        &self,
        m: &Membership,
        confirmation: &mut Confirmation,
        hellos: &mut HelloSchedule,
    ) -> std::result::Result<(), String> {
        let unconfirmed = confirmation.unconfirmed(m, self.me());
        if unconfirmed.is_empty() || Instant::now() < hellos.next {
            return Ok(());
        }
        self.hello_round(m, &unconfirmed, confirmation).await?;
        hellos.sent();
        Ok(())
    }

    /// One round of `Hello`s to `peers`, all at once, of the round in progress, or of a
    /// round begun now (`paxos::identity::begin_round`: the round still pending on disk,
    /// else a fresh one at the next generation, made durable before it is sent), the answers
    /// fed to `confirmation`. Once `q - 1` voters confirmed it, the round is cleared as
    /// pending. `Err`: why this store is refused.
    async fn hello_round(
        &self,
        m: &Membership,
        peers: &[NodeId],
        confirmation: &mut Confirmation,
    ) -> std::result::Result<(), String> {
        let me = self.me();
        if confirmation.needs_round(Some(m)) {
            let call = rand::random::<u64>().max(1);
            match ask(&self.members.storage, Meta::BeginRound { call }).await {
                Ok(MetaAnswer::Round(round, fresh)) => confirmation.begin(round, fresh),
                other => {
                    log::warn!("node {me}: cannot begin a round of Hellos: {other:?}");
                    return Ok(());
                }
            }
        }
        let Some(round) = confirmation.round() else {
            return Ok(());
        };
        let hellos = peers.iter().filter_map(|&peer| {
            let addr = addr_of(m, peer).ok()?;
            let client = self.members.client_of(&[(peer, addr)]);
            let hello = NodeRequest::Hello {
                node: me,
                store: self.members.view.store(),
                generation: round.generation,
                call: round.call,
            };
            Some(async move { (peer, client.node_call(0, hello).await) })
        });
        for (peer, answer) in futures_util::future::join_all(hellos).await {
            if let Ok(NodeReply::Hello { seen }) = answer {
                confirmation.on_answer(peer, round, seen)?;
            }
        }
        if let Some(round) = confirmation.to_clear(m) {
            if let Err(e) = ask(&self.members.storage, Meta::RoundAnswered(round)).await {
                log::warn!("node {me}: recording that round {round:?} was confirmed: {e}");
            }
        }
        Ok(())
    }

    /// This store never votes again (`paxos::identity`): said once, remembered on disk when
    /// it is news (`record`), and the node waits for the operator.
    async fn refuse_for_good(&self, why: &str, record: bool) {
        let me = self.me();
        self.members.readiness.clear_voting();
        self.members.refused.store(true, Ordering::Release);
        log::error!(
            "node {me}: {why}. This node never votes with this store; remove it and add it \
             again on an empty directory (`paxkv member remove {me}`, then `paxkv member add \
             {me} ADDR`)."
        );
        if record {
            if let Err(e) = ask(&self.members.storage, Meta::MarkRefused(why.to_string())).await {
                log::error!("node {me}: recording the refusal: {e}");
            }
        }
    }

    /// Waits until a membership is installed, or `at_most`.
    async fn wait_for_change(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.members.changed.notified()).await;
    }

    /// At bootstrap the membership records no store; a node records its own (a step that
    /// changes no voter, through the register) before it votes on client keys. Until then
    /// its store votes on the membership register only (`InstalledMembership::admits_key`).
    /// Its acceptors vote for that write (this store is brand new: a bootstrap record of 0),
    /// and stop voting if another store is recorded or the register kept changing.
    ///
    /// **Recorded during a change too.** A record step changes no voter, no member's state
    /// and no phase: it only turns a store 0 into this store's id, at the next epoch. Two
    /// consecutive epochs with the same voters have the same quorums; the new epoch is
    /// installed with the same barrier as any step (acceptors answer only their own epoch);
    /// and the executor of the change, whose compare-and-set then fails, reads the register
    /// again and redoes its step's work at the new epoch, where the argument of
    /// `paxos::membership` holds as it did at the old one (it depends on the voters and the
    /// phase, not on the epoch's number). Refusing it (as before) could wedge a cluster: a
    /// node down at the bootstrap, a change begun, another node lost, and the change's
    /// quorums needing the unrecorded node's votes on client keys (review of this change).
    ///
    /// **Retried at once, without a delay.** An attempt is retried only after its
    /// compare-and-set lost (`Failure::Again`), that is after another write of the register
    /// was chosen: each retry follows progress, so retries with no delay cannot livelock, and
    /// `RECORD_ATTEMPTS` bounds them. A write that could not finish (no majority, a slow disk)
    /// is `Failure::Final`: the start loop tries again after `WAIT_STEP` or at the next
    /// membership change, whichever comes first.
    async fn record_store(&self, m: &Membership) -> Result<()> {
        let (me, store) = (self.me(), self.members.view.store());
        if m.member(me).is_some_and(|x| x.store == store) {
            return Ok(());
        }
        self.members.readiness.set_voting();
        let backoff = ConstantBuilder::default()
            .with_delay(Duration::ZERO)
            .with_max_times(RECORD_ATTEMPTS - 1);
        match retry(backoff, || self.record_store_once()).await {
            Ok(()) => Ok(()),
            Err(Failure::Again(e)) => {
                self.members.readiness.clear_voting();
                Err(e)
            }
            Err(Failure::Final(e)) => Err(e),
        }
    }

    /// One read and compare-and-set of the register recording this store (and every other
    /// store not recorded yet); `Failure::Again` when another write won.
    async fn record_store_once(&self) -> std::result::Result<(), Failure> {
        let (me, store) = (self.me(), self.members.view.store());
        let (current, version) = self
            .register
            .read_or_installed(&self.members.view)
            .await
            .map_err(Failure::Final)?;
        if current.member(me).is_some_and(|x| x.store == store) {
            self.members
                .install(current)
                .await
                .map_err(Failure::Final)?;
            return Ok(());
        }
        let mut next = current.clone();
        next.epoch += 1;
        match next.members.iter_mut().find(|x| x.id == me) {
            Some(x) if x.store == 0 => x.store = store,
            _ => {
                self.members.readiness.clear_voting();
                return Err(Failure::Final(Error::Unavailable(
                    "the membership records another store for this node".into(),
                )));
            }
        }
        self.ask_unrecorded_stores(&mut next).await;
        if !self
            .register
            .cas(version, &next)
            .await
            .map_err(Failure::Final)?
        {
            return Err(Failure::Again(Error::Unavailable(
                "the membership register kept changing".into(),
            )));
        }
        self.members
            .install(next.clone())
            .await
            .map_err(Failure::Final)?;
        // Tell everyone now rather than through their next stale round.
        let _ = self.members.install_everywhere(&next, &current).await;
        Ok(())
    }

    /// Every other store not recorded in `next` yet, in the same write (at a new cluster's
    /// start all five would otherwise write one after the other, each a new epoch): asked of
    /// each such node, as it answers now.
    async fn ask_unrecorded_stores(&self, next: &mut Membership) {
        for x in next.members.iter_mut().filter(|x| x.store == 0) {
            let Ok(addr) = x.addr.parse() else { continue };
            let client = self.members.client_of(&[(x.id, addr)]);
            let ask = client.node_call(0, NodeRequest::Membership);
            if let Ok(Ok(NodeReply::Membership(info))) =
                tokio::time::timeout(Duration::from_millis(500), ask).await
            {
                if info.node == x.id && info.store != 0 {
                    x.store = info.store;
                }
            }
        }
    }
}

/// When the next round of `Hello`s may go: rounds back off while peers stay unconfirmed (each
/// round is a durable write here and, at a new generation, at every peer that answers: on a
/// slow disk, rounds every 100 ms starved the cluster's first writes).
struct HelloSchedule {
    next: Instant,
    backoff: Duration,
}

impl Default for HelloSchedule {
    fn default() -> HelloSchedule {
        HelloSchedule {
            next: Instant::now(),
            backoff: HELLO_BACKOFF_MIN,
        }
    }
}

impl HelloSchedule {
    fn sent(&mut self) {
        self.next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(HELLO_BACKOFF_MAX);
    }
}
