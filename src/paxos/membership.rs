//! Cluster membership: which acceptors count in quorums, and how that set changes online
//! without ever letting a prepare quorum miss a chosen state. Plain data and decisions, no IO;
//! `actors::membership` carries it between nodes and drives a change.
//!
//! # What a membership is
//! A [`Membership`] is numbered by its **epoch**. Every Paxos message carries the epoch of its
//! sender's membership, and an acceptor answers only messages of *its own* epoch: one of an
//! older epoch is refused with `PeerMessage::Stale` naming the current one, one of a newer
//! epoch makes the node fetch that membership first (the message is dropped; the proposer
//! retries). So every reply a proposer counts was produced by an acceptor at the proposer's
//! epoch, and counted against that epoch's voters only. The membership itself is the value of
//! a reserved key ([`MEMBERSHIP_KEY`]), an ordinary CASPaxos register: a change is a
//! compare-and-set on its version, so changes are serialized (one at a time, a concurrent one
//! is refused) and each epoch names exactly one member set. A node installs (durably) only a
//! membership that was chosen in that register.
//!
//! # The change procedure, and why it is safe
//! A change adds or removes **one** voter. It goes through three epochs after the stable
//! epoch `k` (voters `M`, fast ballot allowed):
//!
//! | epoch | voters | fast ballot | entered once |
//! |---|---|---|---|
//! | `k+1` [`Phase::CloseFast`] | `M` | no | (written) |
//! | `k+2` [`Phase::Rescan`] | `M'` | no | a majority of `M` installed `k+1`, and every key a barrier node held at the fast ballot was settled at `k+1` |
//! | `k+3` (stable) | `M'` | yes | a majority of `M` installed `k+2`, and every key of a majority of `M` was rescanned at `k+2` |
//!
//! `M` and `M'` differ by one node, so **a majority of `M` and a majority of `M'` always
//! intersect** (adding: a majority of `n + 1` holds at least `n/2 + 1 - 1 + ...`; the
//! arithmetic is [`Quorums`]' and is checked for 1..=64 members by a test below). Paxos is safe
//! across proposers using different quorum systems as long as every prepare quorum of one
//! meets every accept quorum of the other; so two epochs whose voters differ by at most one
//! node may be live at once. The procedure keeps the live epochs to such pairs, and handles
//! the one thing majorities do not: states chosen at the **fast ballot** are chosen by
//! *counting* (a fast quorum of the epoch's voters), and counting a fast vote cast under `M`
//! against the sizes of `M'` can make a chosen state look unchosen (with `M` = 4 nodes, a
//! state on 3 of them, and `M'` the 3 nodes without one holder, a majority of `M'` can see one
//! holder and one other fast state, and pick the other). Hence:
//!
//! 1. **`k+1` closes the fast ballot.** Acceptors at `k+1` refuse fast Accepts. Once a majority
//!    `B` of `M` has installed `k+1` (made it durable, after every write queued before it), no
//!    state can be chosen at the fast ballot at epoch `k` any more: a fast quorum of `M`
//!    includes a node of `B`, which refuses epoch-`k` messages. A state chosen at the fast
//!    ballot at `k` therefore had a vote on a `B` node *before* it installed `k+1`: it is on
//!    that node's disk when the driver scans it afterwards. The driver settles every such key
//!    (an identity round at a classic ballot, at `k+1`, counted against `M`: the same counting
//!    it was chosen under). Afterwards every state ever chosen at the fast ballot sits at a
//!    classic ballot on a majority of `M`.
//! 2. **`k+2` switches to `M'`.** Proposers at `k` or `k+1` use majorities of `M`, those at
//!    `k+2` majorities of `M'`: they intersect. No fast vote is cast at `k+1` or `k+2`; fast
//!    votes of `k` that remain are of states never chosen, which any choice may replace.
//!    Then the **rescan**: the driver scans every key of a majority of `M` (each node after it
//!    installed `k+2`, so every state chosen under `M` has a copy among them, as in step 1) and
//!    runs an identity round for each at `k+2`. That puts every key's state on a majority of
//!    `M'` at a classic ballot above every ballot prepared at an earlier epoch (the round's
//!    prepare quorum meets theirs), so epochs `k` and `k+1` are dead: no Prepare of theirs can
//!    complete (a majority of `M` refuses their epoch), and their Accepts still in flight are
//!    below a state chosen on a majority of `M'`, which the highest-ballot rule carries
//!    forward. With `add`, the round also waits for the new node's acceptor, so the node holds
//!    every key's state when `member add` returns.
//! 3. **`k+3` opens the fast ballot** for `M'`. Live epochs are now `k+2` and `k+3` (same
//!    voters). A proposer at `k+1` (voters `M`) could still count replies... it cannot: an
//!    acceptor answers only its own epoch, and one at `k+3` never answers a `k+1` message; a
//!    `k+1` proposer that completed a Prepare on a majority of `M` excludes a fast choice at
//!    `k+3` (that majority meets every fast quorum of `M'`; the meeting node either promised
//!    first, and then refuses the fast Accept, or voted fast at `k+3` first, and then refuses
//!    the `k+1` Prepare).
//!
//! The next change starts from a stable epoch only, so at most the two epochs named in each
//! row are ever live together. A step is entered only by a compare-and-set of the register
//! from the previous step, so a driver that crashes (or two drivers) can only resume the same
//! change at the step the register shows; every step is idempotent.
//!
//! # Store identity
//! Each member entry records the identity of the store it votes with (a random 64-bit id
//! drawn when the store was created, [`Member::store`]). A node votes only when its
//! membership lists it as a voter *with its own store*: a wiped disk (a new, empty store) or a
//! disk from another machine never votes with what it has; it is a new store and joins through
//! a membership change (`member remove ID`, then `member add ID ADDR`, which records the new
//! store). An older copy of the *same* store (a rolled-back directory) carries the same id; it
//! is told by its generation (see `actors::membership`).
//!
//! # Cluster identity
//! Every membership carries its cluster's identity ([`Membership::cluster`]), drawn at the
//! bootstrap from the config ([`cluster_id`]: a hash of `[cluster] token` and the configured
//! nodes) and copied by every step, so it is the same at every epoch. Epochs alone cannot tell
//! two clusters apart: two configs that differ (a node bootstrapped from another node list, a
//! staging cluster's disk put in a production node's place, a stale config's nodes founding a
//! second cluster at the same addresses) give memberships whose epochs compare as if they
//! were one history, and a node that took the newer one (a pull, a `Stale` answer and the
//! fetch it causes, an `Install`) or counted the other's votes would merge two clusters'
//! registers (review of issue 17, item 3: production nodes installed a staging membership
//! of a higher epoch, and were taken over by its member list). So a node refuses, at every
//! door, what is not of its own identity:
//! - **Paxos frames**, requests and replies (`Envelope::cluster`,
//!   `paxos::admission::same_cluster`; the delivery of Paxos messages, `actors::routes`, drops
//!   them before any acceptor or proposer sees them);
//! - **installs and pulls** ([`Membership::installs_over`]: a store that installed a
//!   membership serves that cluster for good, whatever the other's epoch; the view, the
//!   store and the simulation all decide by it);
//! - **node calls** (`NodeCall::cluster`): `Install` and `Hello` only from its own cluster;
//!   membership, digest and record reads never across two clusters, so a node never takes
//!   another cluster's membership or records for its own;
//! - **adds**: `member add` refuses a node whose store serves another cluster, or that
//!   installed one of another identity ([`Membership::admits_joining`]).
//!
//! A node with no membership (an empty directory) has no identity yet: it takes the
//! membership of whichever cluster its config's nodes or `--join` name, provided they all
//! name one (addresses that answer for two clusters make it wait and say so), or bootstraps
//! one when every node of its config is empty too, with the same config (`paxos::bootstrap`). **What this cannot tell:** two
//! clusters bootstrapped from the same node list (same ids and addresses) with the same
//! token have the same identity, as two etcd clusters with the same initial members and
//! `initial-cluster-token` do; give every cluster its own token. Identities are not secrets:
//! a node that lies about its cluster is kept out by TLS, not by this.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::paxos::quorum::Quorums;
use crate::paxos::types::NodeId;

/// The reserved key whose register holds the membership. Clients may not write keys with
/// the reserved prefix [`RESERVED_PREFIX`].
pub const MEMBERSHIP_KEY: &[u8] = b"\0paxkv/membership";
/// Keys starting with this byte string are the cluster's own.
pub const RESERVED_PREFIX: &[u8] = b"\0paxkv/";
/// The most members a cluster may have.
pub const MAX_MEMBERS: usize = 64;
/// Epochs above this are refused (a forged one could otherwise wedge a node at the top of
/// the range); three per change, so never reached.
pub const MAX_EPOCH: u64 = 1 << 48;

/// What a member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Counts in every quorum.
    Voting,
    /// Being added: counts in quorums from [`Phase::Rescan`] on.
    Joining,
    /// Being removed: counts in quorums until [`Phase::Rescan`].
    Leaving,
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Voting => "voting",
            MemberState::Joining => "joining",
            MemberState::Leaving => "leaving",
        }
    }
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// `ip:port` the node listens on.
    pub addr: String,
    pub state: MemberState,
    /// The identity of the store this member votes with (0: not recorded yet, the cluster's
    /// bootstrap: the first store that starts as this id and finds no membership on disk).
    pub store: u64,
}

/// What a node that is to be added says of its store (`Membership::admits_joining`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoiningStore {
    /// The membership it has installed, if any.
    pub installed: Option<Membership>,
    /// Its store holds at least one acceptor record.
    pub holds_records: bool,
}

/// The step of a change in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The old voters, fast ballot closed (see the module doc, step 1).
    CloseFast,
    /// The new voters, fast ballot closed; every key is being rescanned (step 2).
    Rescan,
}

/// A membership: epoch and members. The value of [`MEMBERSHIP_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Goes up by one with every step of every change.
    pub epoch: u64,
    /// Ordered by id, ids unique.
    pub members: Vec<Member>,
    /// The change in progress, if any.
    pub phase: Option<Phase>,
    /// The cluster's identity ([`cluster_id`]): fixed at bootstrap, the same at every epoch.
    /// A node takes Paxos frames, installs, `Hello`s and pulled memberships of its own
    /// cluster only (see "Cluster identity" above). Last, so that a membership encoded
    /// before it existed still decodes ([`Membership::decode`]).
    pub cluster: u64,
}

/// What a membership encoded before cluster identities looked like (see
/// [`Membership::decode`]).
#[derive(Deserialize)]
struct LegacyMembership {
    epoch: u64,
    members: Vec<Member>,
    phase: Option<Phase>,
}

/// The cluster identity of a membership written before identities existed: every node of
/// such a cluster decodes the same one, and no bootstrap draws it ([`cluster_id`]).
pub const LEGACY_CLUSTER: u64 = 1;

/// The identity of the cluster a bootstrap founds: the first 8 bytes of a SHA-256 of the
/// configured `[cluster] token` and the configured nodes (ids and addresses, in id order),
/// never 0 (no cluster) nor [`LEGACY_CLUSTER`]. As etcd's cluster id (a hash of its initial
/// members and `initial-cluster-token`), it needs no agreement: every node of one config
/// computes the same, and two configs that differ found clusters that refuse each other.
pub fn cluster_id(token: &str, nodes: &[(NodeId, String)]) -> u64 {
    let mut nodes: Vec<&(NodeId, String)> = nodes.iter().collect();
    nodes.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let encoded = postcard::to_allocvec(&(token, nodes)).expect("encoding into memory");
    ctx.update(b"paxkv cluster v1\0");
    ctx.update(&encoded);
    let digest = ctx.finish();
    let id = u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"));
    if id <= LEGACY_CLUSTER {
        id + 2
    } else {
        id
    }
}

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Make node `id`, at `addr`, running store `store`, a voter.
    Add {
        id: NodeId,
        addr: String,
        store: u64,
    },
    /// Make node `id` count in no quorum, and forget it.
    Remove { id: NodeId },
}

impl Change {
    pub fn node(&self) -> NodeId {
        match self {
            Change::Add { id, .. } | Change::Remove { id } => *id,
        }
    }
}

impl Membership {
    /// The first membership of a new cluster: every configured node a voter, stores not yet
    /// recorded (each node records its own as it starts, see `actors::membership`).
    pub fn bootstrap(nodes: impl IntoIterator<Item = (NodeId, String)>, token: &str) -> Membership {
        let nodes: Vec<(NodeId, String)> = nodes.into_iter().collect();
        let cluster = cluster_id(token, &nodes);
        let mut members: Vec<Member> = nodes
            .into_iter()
            .map(|(id, addr)| Member {
                id,
                addr,
                state: MemberState::Voting,
                store: 0,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Membership {
            epoch: 1,
            members,
            phase: None,
            cluster,
        }
    }

    /// May node `id`, running store `store`, vote on `key` at this membership? Only as a
    /// voter, and only with the store the membership records for it; a store not recorded
    /// yet (0, the bootstrap's) votes on the membership register only, whose compare-and-set
    /// records it: a store that was never recorded never holds a vote on a client key, so
    /// losing it in that window loses no client write (review of issue 11, item 4). The rule
    /// of the view (`InstalledMembership::admits_key` caches it per installed membership) and of
    /// the simulation.
    pub fn admits_vote(&self, id: NodeId, store: u64, key: &[u8]) -> bool {
        if !self.is_voter(id) {
            return false;
        }
        match self.member(id).map(|m| m.store) {
            Some(0) => key == MEMBERSHIP_KEY,
            Some(recorded) => recorded == store,
            None => false,
        }
    }

    /// Is `store` node `id`'s store as far as this membership can tell: the one it records
    /// for `id`, or none is recorded (a bootstrap's 0, or a node that is no member)? A store
    /// that is not may lack states it once voted for (wiped, replaced): it counts in no
    /// barrier and is scanned by no rescan. The rule of the view (`MembershipService::store_intact`)
    /// and of the simulation.
    pub fn holds_store_of(&self, id: NodeId, store: u64) -> bool {
        self.member(id)
            .is_none_or(|m| m.store == store || m.store == 0)
    }

    /// Does a node that installed `installed` install this membership? Only one of the same
    /// cluster identity (whatever its epoch: a store serves one cluster for good), and only
    /// if it is newer (`Ok(false)`: it is not). A node with none installed takes any: it
    /// asked its config's nodes or `--join` for it, or bootstraps it. The one rule of the
    /// view, the store and the simulation.
    pub fn installs_over(&self, installed: Option<&Membership>) -> Result<bool, String> {
        match installed {
            Some(current) if current.cluster != self.cluster => Err(format!(
                "a membership of cluster {:x}, where cluster {:x} is installed",
                self.cluster, current.cluster
            )),
            Some(current) => Ok(self.epoch > current.epoch),
            None => Ok(true),
        }
    }

    /// Which of the memberships some nodes answered a pull with a node takes, whose own
    /// cluster identity is `mine` (0: it has none yet): the newest of its own cluster; with
    /// none, the newest of the one cluster they all name. Answers of two clusters to a node
    /// with none are an error (its config or `--join` mixes two clusters' nodes: taking
    /// either could make it a member of the wrong one).
    pub fn pick_pulled(
        mine: u64,
        answers: impl IntoIterator<Item = Membership>,
    ) -> Result<Option<Membership>, String> {
        let answers: Vec<Membership> = answers
            .into_iter()
            .filter(|m| mine == 0 || m.cluster == mine)
            .collect();
        let clusters: BTreeSet<u64> = answers.iter().map(|m| m.cluster).collect();
        if clusters.len() > 1 {
            let named: Vec<String> = clusters.iter().map(|c| format!("{c:x}")).collect();
            return Err(format!(
                "the nodes asked serve different clusters ({}): fix the config's nodes or \
                 `--join` so that they name one cluster's nodes",
                named.join(", ")
            ));
        }
        Ok(answers.into_iter().max_by_key(|m| m.epoch))
    }

    /// The bytes of this membership (the register's value, the installed one on disk).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding into memory cannot fail")
    }

    /// A membership from its bytes, or one encoded before cluster identities (then of
    /// [`LEGACY_CLUSTER`]). The newer layout is the older one with the identity appended, so
    /// older bytes end where the identity would begin, and never decode as the newer layout.
    /// Checked ([`Membership::check`]): the bytes may come from disk or the network.
    pub fn decode(bytes: &[u8]) -> Result<Membership, String> {
        let m = match postcard::from_bytes::<Membership>(bytes) {
            Ok(m) => m,
            Err(e) => match postcard::take_from_bytes::<LegacyMembership>(bytes) {
                Ok((
                    LegacyMembership {
                        epoch,
                        members,
                        phase,
                    },
                    [],
                )) => Membership {
                    epoch,
                    members,
                    phase,
                    cluster: LEGACY_CLUSTER,
                },
                _ => return Err(format!("undecodable membership: {e}")),
            },
        };
        m.check()?;
        Ok(m)
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The acceptors that count in quorums at this epoch, in id order.
    pub fn voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| {
                matches!(
                    (m.state, self.phase),
                    (MemberState::Voting, _)
                        | (MemberState::Joining, Some(Phase::Rescan))
                        | (MemberState::Leaving, Some(Phase::CloseFast))
                )
            })
            .map(|m| m.id)
            .collect()
    }

    /// Voters being added (during [`Phase::Rescan`]): a rescan's settles wait for them.
    pub fn joining_voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Joining && self.phase == Some(Phase::Rescan))
            .map(|m| m.id)
            .collect()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters().contains(&id)
    }

    pub fn quorums(&self) -> Quorums {
        Quorums::new(self.voters().len().max(1))
    }

    /// May a proposer try the fast ballot, may an acceptor take a fast Accept, at this epoch?
    pub fn fast_allowed(&self) -> bool {
        self.phase.is_none()
    }

    /// The change in progress, as the operator asked for it.
    pub fn change_in_progress(&self) -> Option<Change> {
        self.phase?;
        self.members.iter().find_map(|m| match m.state {
            MemberState::Joining => Some(Change::Add {
                id: m.id,
                addr: m.addr.clone(),
                store: m.store,
            }),
            MemberState::Leaving => Some(Change::Remove { id: m.id }),
            MemberState::Voting => None,
        })
    }

    /// Does `change` merely continue the change in progress (rather than begin one, or give
    /// one up)? A driver's fence applies to everything else (`actors::membership`).
    pub fn continues(&self, change: &Change) -> bool {
        self.change_in_progress()
            .is_some_and(|current| same_change(&current, change))
    }

    /// Every node a message about this membership should reach: all members.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Checks the invariants a membership keeps (it also arrives from the network).
    pub fn check(&self) -> Result<(), String> {
        if self.epoch == 0 || self.epoch > MAX_EPOCH {
            return Err(format!("epoch {} (1..={MAX_EPOCH})", self.epoch));
        }
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return Err(format!("{} members", self.members.len()));
        }
        let ids: BTreeSet<NodeId> = self.members.iter().map(|m| m.id).collect();
        if ids.len() != self.members.len() || ids.contains(&0) {
            return Err("member ids must be unique and non-zero".into());
        }
        if self.members.windows(2).any(|w| w[0].id > w[1].id) {
            return Err("members not in id order".into());
        }
        let changing = self
            .members
            .iter()
            .filter(|m| m.state != MemberState::Voting)
            .count();
        match (self.phase, changing) {
            (None, 0) | (Some(_), 1) => {}
            (None, _) => return Err("a member joining or leaving outside a change".into()),
            (Some(_), _) => return Err("a change must add or remove exactly one member".into()),
        }
        if self.voters().is_empty() {
            return Err("no voter".into());
        }
        if self.cluster == 0 {
            return Err("no cluster identity".into());
        }
        Ok(())
    }

    /// The next step of `change` from this membership, or why there is none. `Ok(None)`: the
    /// change is complete (this membership is stable and already has it).
    pub fn step(&self, change: &Change) -> Result<Option<Membership>, String> {
        match (self.change_in_progress(), self.phase) {
            (None, _) => self.begin(change),
            (Some(Change::Add { id, .. }), Some(phase)) if *change == (Change::Remove { id }) => {
                // Giving up an add (the joining node died, and a rescan waits for it): the
                // add's steps are undone as a removal is done. From CloseFast the voters
                // never changed: back to stable. From Rescan the joining node votes: it
                // becomes Leaving in a CloseFast step (the same voters, fast still closed),
                // and the removal continues from there.
                let mut next = self.clone();
                next.epoch += 1;
                match phase {
                    Phase::CloseFast => {
                        next.members.retain(|m| m.id != id);
                        next.phase = None;
                    }
                    Phase::Rescan => {
                        for m in next.members.iter_mut().filter(|m| m.id == id) {
                            m.state = MemberState::Leaving;
                        }
                        next.phase = Some(Phase::CloseFast);
                    }
                }
                Ok(Some(next))
            }
            (Some(current), Some(phase)) => {
                if !same_change(&current, change) {
                    return Err(format!(
                        "another change is in progress ({}); finish it first by running it \
                         again",
                        describe(&current)
                    ));
                }
                let mut next = self.clone();
                next.epoch += 1;
                match phase {
                    Phase::CloseFast => next.phase = Some(Phase::Rescan),
                    Phase::Rescan => {
                        next.phase = None;
                        next.members.retain(|m| m.state != MemberState::Leaving);
                        for m in &mut next.members {
                            m.state = MemberState::Voting;
                        }
                    }
                }
                Ok(Some(next))
            }
            (Some(_), None) => unreachable!("a change in progress has a phase"),
        }
    }

    /// The work a driver must finish in the step `self` before it writes the step after it
    /// for `change`: settle the keys held at the fast ballot ([`Phase::CloseFast`]), or rescan
    /// every key ([`Phase::Rescan`]); `None` when there is none.
    ///
    /// **Giving up an add skips the add's work.** When `change` removes the node whose add
    /// is in progress, the add's step is left without its work (review of issue 11: the
    /// Rescan of `add j` waits for `j`'s `Accepted` on every key, so a joining node that died
    /// there wedged `member remove j`, and with it every later change, for good). Safe: every
    /// epoch of the sequence `M` (stable), `M` (CloseFast, +j joining), `M+j` (Rescan),
    /// `M+j` (CloseFast, j leaving), `M` (Rescan), `M` (stable) has voters `M` or `M+j`, and
    /// a majority of `M` meets every majority of `M+j` (they differ by one node) as well as
    /// every other majority of `M`; so whichever of these epochs are live at once, every
    /// prepare quorum meets every accept quorum. The fast ballot is closed throughout, except
    /// at the two stable ends, which both count fast votes against `M`: the fast votes of the
    /// first were settled at a classic ballot by the add's CloseFast work if it reached
    /// Rescan (and from CloseFast the give-up goes straight back to `M`, the same voters and
    /// the same counting); the last opens only after the removal's own Rescan, which puts
    /// every key on a majority of `M` at a ballot above every ballot prepared before it. What
    /// the skipped rescan would have added (making epochs of `M` dead before the fast ballot
    /// opens for `M+j`, and giving `j` every key) is not needed: the fast ballot never opens
    /// for `M+j`, and `j` leaves.
    pub fn work_before_next(&self, change: &Change) -> Option<Phase> {
        let phase = self.phase?;
        match self.change_in_progress() {
            Some(Change::Add { id, .. }) if *change == (Change::Remove { id }) => None,
            _ => Some(phase),
        }
    }

    /// May node `id`'s store, as it describes itself, begin to join this membership? Only an
    /// empty one: a store that holds any record served a cluster (another one, with the
    /// same key names, or this one under an earlier membership), and its records would take
    /// part in the add's rescan, where a higher ballot of the other cluster's wins over
    /// this cluster's chosen state (review of issue 11, item 3: 20 of 20 keys read the
    /// staging cluster's values after such an add). Nor one that installed a membership that
    /// cannot be this cluster's: newer than the newest, or of the same epoch and different.
    /// Nor one that installed a membership of another cluster identity.
    pub fn admits_joining(&self, id: NodeId, joining: &JoiningStore) -> Result<(), String> {
        if joining.holds_records {
            return Err(format!(
                "node {id}'s store holds records: it served a cluster before (this one, or \
                 another); start node {id} on an empty data directory and add it again"
            ));
        }
        if let Some(theirs) = &joining.installed {
            if theirs.cluster != self.cluster {
                return Err(format!(
                    "node {id} has installed a membership of another cluster (identity {:x}, \
                     this one is {:x}); start it on an empty data directory with `--join` of \
                     this cluster's nodes",
                    theirs.cluster, self.cluster
                ));
            }
            if theirs.epoch > self.epoch || (theirs.epoch == self.epoch && theirs != self) {
                return Err(format!(
                    "node {id} has installed a membership of another cluster (epoch {}); start \
                     it on an empty data directory with `--join` of this cluster's nodes",
                    theirs.epoch
                ));
            }
        }
        Ok(())
    }

    fn begin(&self, change: &Change) -> Result<Option<Membership>, String> {
        let mut next = self.clone();
        next.epoch += 1;
        next.phase = Some(Phase::CloseFast);
        match change {
            Change::Add { id, addr, store } => {
                if let Some(m) = self.member(*id) {
                    if m.addr == *addr && m.store == *store {
                        return Ok(None);
                    }
                    return Err(format!(
                        "node {id} is already a member (at {}); remove it first",
                        m.addr
                    ));
                }
                if *id == 0 {
                    return Err("node ids are never 0".into());
                }
                if self.members.len() >= MAX_MEMBERS {
                    return Err(format!("a cluster has at most {MAX_MEMBERS} members"));
                }
                if let Some(m) = self.members.iter().find(|m| m.addr == *addr) {
                    return Err(format!("{addr} is the address of node {}", m.id));
                }
                next.members.push(Member {
                    id: *id,
                    addr: addr.clone(),
                    state: MemberState::Joining,
                    store: *store,
                });
                next.members.sort_by_key(|m| m.id);
            }
            Change::Remove { id } => {
                let Some(m) = next.members.iter_mut().find(|m| m.id == *id) else {
                    return Ok(None);
                };
                if self.voters().len() == 1 {
                    return Err("cannot remove the last voter".into());
                }
                m.state = MemberState::Leaving;
            }
        }
        Ok(Some(next))
    }
}

fn same_change(a: &Change, b: &Change) -> bool {
    match (a, b) {
        (
            Change::Add {
                id: x, addr: ax, ..
            },
            Change::Add {
                id: y, addr: ay, ..
            },
        ) => x == y && ax == ay,
        (Change::Remove { id: x }, Change::Remove { id: y }) => x == y,
        _ => false,
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::Add { id, addr, .. } => format!("adding node {id} at {addr}"),
        Change::Remove { id } => format!("removing node {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::bootstrap((1..=3).map(|i| (i, format!("127.0.0.1:{}", 7400 + i))), "")
    }

    fn add(id: NodeId) -> Change {
        Change::Add {
            id,
            addr: format!("127.0.0.1:{}", 7400 + id),
            store: 1000 + id as u64,
        }
    }

    /// Runs `change` to completion, returning every membership it passes through.
    fn run(from: &Membership, change: &Change) -> Vec<Membership> {
        let mut steps = vec![from.clone()];
        while let Some(next) = steps.last().unwrap().step(change).unwrap() {
            next.check().unwrap();
            steps.push(next);
        }
        steps
    }

    /// Two sets of voters whose majorities must intersect.
    fn majorities_intersect(a: &[NodeId], b: &[NodeId]) -> bool {
        // The worst case: the majority of `a` that avoids `b` most, against the majority of
        // `b` that avoids `a` most.
        let (qa, qb) = (
            Quorums::new(a.len()).classic(),
            Quorums::new(b.len()).classic(),
        );
        let only_a = a.iter().filter(|x| !b.contains(x)).count();
        let only_b = b.iter().filter(|x| !a.contains(x)).count();
        let common = a.len() - only_a;
        qa.saturating_sub(only_a) + qb.saturating_sub(only_b) > common
    }

    #[test]
    fn a_change_passes_through_close_fast_and_rescan_one_epoch_each() {
        let steps = run(&three(), &add(4));
        let phases: Vec<_> = steps
            .iter()
            .map(|m| (m.epoch, m.phase, m.voters()))
            .collect();
        assert_eq!(
            phases,
            vec![
                (1, None, vec![1, 2, 3]),
                (2, Some(Phase::CloseFast), vec![1, 2, 3]),
                (3, Some(Phase::Rescan), vec![1, 2, 3, 4]),
                (4, None, vec![1, 2, 3, 4]),
            ]
        );
        assert!(steps[0].fast_allowed() && steps[3].fast_allowed());
        assert!(!steps[1].fast_allowed() && !steps[2].fast_allowed());
        let removed = run(&steps[3], &Change::Remove { id: 2 });
        assert_eq!(removed[1].voters(), vec![1, 2, 3, 4]);
        assert_eq!(removed[2].voters(), vec![1, 3, 4]);
        assert_eq!(removed[3].nodes(), vec![1, 3, 4]);
    }

    /// `Membership::work_before_next`: giving up an add at its Rescan skips the rescan (which
    /// waits for the joining node), and every epoch from the add's start to the removal's end
    /// has majorities that meet each other's (any of them may be live at once) with the fast
    /// ballot closed between the two stable ends.
    #[test]
    fn giving_up_an_add_skips_its_rescan_and_every_epoch_on_the_way_intersects() {
        for n in 1..=9 {
            let from = Membership::bootstrap((1..=n).map(|i| (i, format!("a:{i}"))), "");
            let add_steps = run(&from, &add(n + 1));
            let rescan = &add_steps[2];
            assert_eq!(rescan.phase, Some(Phase::Rescan));
            let give_up = Change::Remove { id: n + 1 };
            assert_eq!(rescan.work_before_next(&give_up), None);
            assert_eq!(rescan.work_before_next(&add(n + 1)), Some(Phase::Rescan));
            assert_eq!(
                add_steps[1].work_before_next(&give_up),
                None,
                "from CloseFast too"
            );
            // The removal still does its own work.
            let back = run(rescan, &give_up);
            assert_eq!(back[1].work_before_next(&give_up), Some(Phase::CloseFast));
            assert_eq!(back[2].work_before_next(&give_up), Some(Phase::Rescan));
            assert_eq!(back.last().unwrap().voters(), from.voters());
            let all: Vec<&Membership> = add_steps[..3].iter().chain(&back[1..]).collect();
            for a in &all {
                for b in &all {
                    assert!(
                        majorities_intersect(&a.voters(), &b.voters()),
                        "{a:?} / {b:?}"
                    );
                }
            }
            let last = all.len() - 1;
            for (i, m) in all.iter().enumerate() {
                assert_eq!(m.fast_allowed(), i == 0 || i == last, "{m:?}");
            }
        }
        // A change with no work: a stable membership.
        assert_eq!(three().work_before_next(&add(4)), None);
    }

    /// The safety argument of the module doc needs, at every step of growing 1 → 64 and
    /// shrinking back, that the voters of every two epochs that may be live together (two
    /// consecutive ones) have intersecting majorities.
    #[test]
    fn consecutive_epochs_have_intersecting_majorities_from_1_to_64_members_and_back() {
        let mut m = Membership::bootstrap([(1, "a:1".to_string())], "");
        let mut history = vec![m.clone()];
        for id in 2..=MAX_MEMBERS as NodeId {
            let steps = run(&m, &add(id));
            m = steps.last().unwrap().clone();
            history.extend(steps.into_iter().skip(1));
        }
        for id in 1..MAX_MEMBERS as NodeId {
            let steps = run(&m, &Change::Remove { id });
            m = steps.last().unwrap().clone();
            history.extend(steps.into_iter().skip(1));
        }
        assert_eq!(m.voters(), vec![MAX_MEMBERS as NodeId]);
        for pair in history.windows(2) {
            let (a, b) = (pair[0].voters(), pair[1].voters());
            assert_eq!(pair[1].epoch, pair[0].epoch + 1);
            assert!(majorities_intersect(&a, &b), "{a:?} / {b:?}");
        }
        // And the check is not vacuous: two epochs apart, a change's voters may not meet.
        let (a, b) = (vec![1, 2, 3], vec![1, 4, 5]);
        assert!(!majorities_intersect(&a, &b));
    }

    #[test]
    fn one_change_at_a_time_and_a_rerun_resumes_it() {
        let m = three().step(&add(4)).unwrap().unwrap();
        let err = m.step(&add(5)).unwrap_err();
        assert!(err.contains("adding node 4"), "{err}");
        assert!(m.step(&Change::Remove { id: 1 }).is_err());
        // the same change again (a rerun after a crash): the next step
        assert_eq!(m.step(&add(4)).unwrap().unwrap().phase, Some(Phase::Rescan));
        // a completed change is a no-op
        let done = run(&three(), &add(4)).pop().unwrap();
        assert_eq!(done.step(&add(4)).unwrap(), None);
        assert_eq!(three().step(&Change::Remove { id: 9 }).unwrap(), None);
    }

    /// An add whose node died can be given up by removing that node, from either step, and
    /// every step still changes the voters by at most one node.
    #[test]
    fn an_add_is_given_up_by_removing_the_joining_node_from_either_step() {
        let remove = Change::Remove { id: 4 };
        let close_fast = three().step(&add(4)).unwrap().unwrap();
        let back = close_fast.step(&remove).unwrap().unwrap();
        assert_eq!((back.phase, back.voters()), (None, vec![1, 2, 3]));
        assert!(back.member(4).is_none());
        let rescan = close_fast.step(&add(4)).unwrap().unwrap();
        assert_eq!(rescan.voters(), vec![1, 2, 3, 4]);
        let mut steps = vec![rescan];
        while let Some(next) = steps.last().unwrap().step(&remove).unwrap() {
            next.check().unwrap();
            steps.push(next);
        }
        let voters: Vec<_> = steps.iter().map(|m| m.voters()).collect();
        assert_eq!(
            voters,
            vec![
                vec![1, 2, 3, 4],
                vec![1, 2, 3, 4],
                vec![1, 2, 3],
                vec![1, 2, 3]
            ]
        );
        assert!(steps
            .iter()
            .skip(1)
            .all(|m| !m.fast_allowed() || m.phase.is_none()));
        assert_eq!(steps.last().unwrap().phase, None);
    }

    #[test]
    fn bad_changes_are_refused_with_a_reason() {
        let m = three();
        assert!(m
            .step(&Change::Add {
                id: 2,
                addr: "x:1".into(),
                store: 5
            })
            .unwrap_err()
            .contains("already a member"));
        assert!(m
            .step(&Change::Add {
                id: 9,
                addr: "127.0.0.1:7401".into(),
                store: 5
            })
            .unwrap_err()
            .contains("address of node 1"));
        let one = Membership::bootstrap([(1, "a:1".to_string())], "");
        assert!(one.step(&Change::Remove { id: 1 }).is_err());
    }

    #[test]
    fn check_refuses_broken_memberships() {
        let mut m = three();
        m.members[1].id = 1;
        assert!(m.check().is_err());
        let mut m = three();
        m.members[0].state = MemberState::Joining;
        assert!(m.check().is_err(), "joining outside a change");
        let mut m = three();
        m.epoch = 0;
        assert!(m.check().is_err());
        assert!(three().check().is_ok());
    }

    #[test]
    fn a_cluster_identity_is_the_configs_own() {
        let nodes = |ports: &[u16]| -> Vec<(NodeId, String)> {
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| (i as NodeId + 1, format!("10.0.0.{i}:{p}")))
                .collect()
        };
        let a = cluster_id("", &nodes(&[1, 2, 3]));
        // Every node of one config computes the same, in whatever order it lists the nodes.
        let mut reversed = nodes(&[1, 2, 3]);
        reversed.reverse();
        assert_eq!(cluster_id("", &reversed), a);
        assert_eq!(Membership::bootstrap(reversed, "").cluster, a);
        // Another token, another node list, another address: another cluster.
        assert_ne!(cluster_id("staging", &nodes(&[1, 2, 3])), a);
        assert_ne!(cluster_id("", &nodes(&[1, 2])), a);
        assert_ne!(cluster_id("", &nodes(&[1, 2, 4])), a);
        assert!(a > LEGACY_CLUSTER);
        // Pinned: a node of this build and one of the next compute the same identity.
        assert_eq!(
            format!(
                "{:x}",
                cluster_id("paxkv-local", &[(1, "127.0.0.1:7401".to_string())])
            ),
            "f38573ddf9cebc08"
        );
    }

    #[test]
    fn a_membership_of_another_cluster_is_never_installed_nor_its_store_added() {
        let mine = three();
        let mut theirs = three();
        theirs.cluster ^= 1;
        theirs.epoch = mine.epoch + 10;
        assert!(theirs.installs_over(Some(&mine)).is_err());
        assert_eq!(theirs.installs_over(None), Ok(true));
        let mut newer = mine.clone();
        newer.epoch += 1;
        assert_eq!(newer.installs_over(Some(&mine)), Ok(true));
        assert_eq!(mine.installs_over(Some(&newer)), Ok(false));
        assert_eq!(mine.installs_over(Some(&mine)), Ok(false));
        // An older membership of the other cluster: refused by its identity alone (an
        // older one of this cluster is taken: the store may have pulled it before the add).
        let mut mine = mine;
        mine.epoch = 5;
        theirs.epoch = 2;
        let joining = JoiningStore {
            installed: Some(theirs),
            holds_records: false,
        };
        let refused = mine.admits_joining(9, &joining).unwrap_err();
        assert!(refused.contains("another cluster"), "{refused}");
        let mut older = mine.clone();
        older.epoch = 2;
        let own = JoiningStore {
            installed: Some(older),
            holds_records: false,
        };
        assert_eq!(mine.admits_joining(9, &own), Ok(()));
    }

    #[test]
    fn a_membership_encoded_before_cluster_identities_still_decodes() {
        let m = three();
        let legacy = postcard::to_allocvec(&(m.epoch, &m.members, m.phase)).unwrap();
        let decoded = Membership::decode(&legacy).unwrap();
        assert_eq!(decoded.cluster, LEGACY_CLUSTER);
        assert_eq!(
            (decoded.epoch, decoded.members),
            (m.epoch, m.members.clone())
        );
        assert_eq!(Membership::decode(&m.encode()), Ok(m.clone()));
        // Neither layout with bytes after it, nor a cut one, nor no identity.
        let mut longer = m.encode();
        longer.push(0);
        assert!(Membership::decode(&longer[..legacy.len() + 1]).is_err());
        assert!(Membership::decode(&legacy[..legacy.len() - 1]).is_err());
        let mut none = m.clone();
        none.cluster = 0;
        assert!(Membership::decode(&none.encode()).is_err());
    }

    #[test]
    fn a_pull_takes_the_newest_of_one_cluster_only() {
        let mine = three();
        let mut newer = mine.clone();
        newer.epoch += 4;
        let mut foreign = three();
        foreign.cluster ^= 1;
        foreign.epoch += 9;
        let all = || vec![mine.clone(), foreign.clone(), newer.clone()];
        // A node of the cluster takes its own newest, never the other's, however new.
        assert_eq!(
            Membership::pick_pulled(mine.cluster, all()),
            Ok(Some(newer.clone()))
        );
        assert_eq!(
            Membership::pick_pulled(mine.cluster, [foreign.clone()]),
            Ok(None)
        );
        // A node with none takes the one cluster they name, and none of two.
        let picked = Membership::pick_pulled(0, [mine.clone(), newer.clone()]);
        assert_eq!(picked, Ok(Some(newer.clone())));
        assert!(Membership::pick_pulled(0, all()).is_err());
        assert_eq!(Membership::pick_pulled(0, []), Ok(None));
    }
}
