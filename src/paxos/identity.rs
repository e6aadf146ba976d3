//! Store identity at start: the decisions that keep a store which lost what it voted for (a
//! wiped disk, an older copy of the directory) from voting again. Plain data and decisions,
//! no IO: `storage` keeps what a node remembers of its peers' stores and calls
//! [`judge_hello`] inside one write transaction; `actors::membership` sends the `Hello`s and
//! calls [`refuses`] on the answers.
//!
//! # The generation check
//! Every store has an identity (a random id drawn when it is created) and a generation, which
//! the node raises durably before each round of `Hello`s to its peers. Each peer remembers,
//! **per store of each node**, the highest generation it was told. An intact store's disk
//! always holds a generation at least as high as any it ever sent, so its next one is higher
//! than anything a peer remembers; an older copy of the directory holds a lower one, so a
//! peer that saw a later run answers that it saw as much or more, and the node refuses to
//! vote. A lost answer costs nothing: the next round has a new generation.
//!
//! # A refusal sticks (review of issue 11, item 1)
//! Before, a refused copy restarted once more (by an operator, or by an orchestrator reacting
//! to `/health`'s 503) started one generation higher, above what peers had recorded, and
//! voted; and a node that once started on an empty directory overwrote what peers remembered
//! of its real store (one entry per node), so a copy of the real store restored afterwards
//! voted at its first start. Now:
//! - peers remember each store of a node apart ([`seen_store_key`]), so no other store's
//!   `Hello` erases what they know of this one;
//! - the refused node marks its own store refused on its disk, and never votes with it again,
//!   whatever its generation (an operator removes the node and adds it back on an empty
//!   directory, which is a new store). A copy restored once more (without the mark) starts at
//!   its old generation again and is refused again by the same peers.
//!
//! **A peer does not remember a refusal.** It answers each `Hello` by the generations alone,
//! because a `Hello` can arrive late: a round that timed out may be delivered after the next
//! round's, whose generation the peer already recorded; it is then answered "seen more", and
//! that answer goes nowhere (its round is over). Had the peer remembered it as a refusal of the
//! store, one slow message would have refused an intact store for good (found by the
//! in-process nemesis, seed 33, and by a review of this change). The sticky part is the
//! refused store's own mark, written only on the evidence of a generation.
//!
//! # A store the membership does not record yet (item 4)
//! A new cluster's membership records no store (0) until each node records its own. Such a
//! store votes on the membership register only (`MembershipView::admits_key`), so no client
//! write is ever chosen with its vote.
//!
//! # What this cannot catch
//! A `Hello` round needs `q - 1` confirmations, so a peer set that saw a run and one that
//! confirms the next start may be disjoint when `2(q - 1) <= n - 1` (5 nodes: two saw it, the
//! two others confirm the restored copy while the first two are down). Named assumption, as
//! before: **a data directory is never restored from a copy in place while the peers that saw
//! its later runs are down**; operators restore through `member remove` and `member add`.
//! A copy taken during the node's latest run holds that run's generation and is not told.

use std::collections::BTreeSet;

use crate::paxos::membership::Membership;
use crate::paxos::types::NodeId;

/// The most stores of one node a peer remembers (a node's disks over its life). Past it the
/// store with the lowest generation is forgotten first, never the one the membership records.
pub const MAX_STORES_PER_NODE: usize = 16;

/// What a node remembers of one store of one peer: the highest generation it said `Hello`
/// with. Big-endian on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeenStore {
    pub generation: u64,
}

impl SeenStore {
    pub fn encode(&self) -> [u8; 8] {
        self.generation.to_be_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<SeenStore> {
        Some(SeenStore {
            generation: u64::from_be_bytes(bytes.try_into().ok()?),
        })
    }
}

/// A peer's decision on a store's `Hello` at `generation`, given what it remembers of that
/// store: the answer (the generation seen before, 0 for none) and what to remember from now
/// on (`None`: nothing changes).
pub fn judge_hello(seen: Option<SeenStore>, generation: u64) -> (u64, Option<SeenStore>) {
    let before = seen.unwrap_or_default().generation;
    let remember = (generation > before).then_some(SeenStore { generation });
    (before, remember)
}

/// Does a peer's answer `seen` to our `Hello` at `generation` refuse this store? (It saw this
/// store at `generation` or later: this directory is an older copy.)
pub fn refuses(generation: u64, seen: u64) -> bool {
    seen >= generation
}

/// A node's start after its membership is installed: rounds of `Hello`s, each at a new
/// generation the node raised durably first, until `q - 1` voters confirmed it (a majority
/// with itself). Plain state: `actors::membership` and the simulation send the rounds and
/// feed the answers in.
///
/// Only answers to the round in progress count: a round's calls end with it (the runtime
/// waits for all of them or their timeouts before the next), so an answer to an earlier
/// round is one that came too late and is dropped, whatever it says.
#[derive(Debug, Clone, Default)]
pub struct Confirmation {
    /// The generation of the round in progress (0: none yet).
    round: u64,
    /// The peers that confirmed this run (in any of its rounds).
    confirmed: BTreeSet<NodeId>,
}

impl Confirmation {
    /// A round begins at `generation` (raised and made durable by the caller).
    pub fn begin_round(&mut self, generation: u64) {
        self.round = generation;
    }

    /// The generation of the round in progress.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// `peer` answered a `Hello` at `generation` with `seen`, the generation it had seen of
    /// this store before. `Err`: this store is an older copy, refused for good.
    pub fn on_answer(&mut self, peer: NodeId, generation: u64, seen: u64) -> Result<(), String> {
        if generation != self.round {
            return Ok(());
        }
        if refuses(generation, seen) {
            return Err(format!(
                "node {peer} saw generation {seen} of this store, which now starts as \
                 generation {generation}: this data directory is an older copy"
            ));
        }
        self.confirmed.insert(peer);
        Ok(())
    }

    /// The peers of `m` (`me` left out) that did not confirm this run yet.
    pub fn unconfirmed(&self, m: &Membership, me: NodeId) -> Vec<NodeId> {
        m.nodes()
            .into_iter()
            .filter(|p| *p != me && !self.confirmed.contains(p))
            .collect()
    }

    /// How many voters of `m` confirmed this run.
    pub fn voters_confirmed(&self, m: &Membership) -> usize {
        self.confirmed.iter().filter(|p| m.is_voter(**p)).count()
    }

    /// Did enough voters of `m` confirm this run (`q - 1`, a majority with this node) for
    /// its store to count as intact?
    pub fn is_confirmed(&self, m: &Membership) -> bool {
        self.voters_confirmed(m) >= m.quorums().classic().saturating_sub(1)
    }
}

/// The meta key under which a node remembers `node`'s store `store`.
pub fn seen_store_key(prefix: &[u8], node: NodeId, store: u64) -> Vec<u8> {
    let mut key = seen_node_prefix(prefix, node);
    key.extend_from_slice(&store.to_be_bytes());
    key
}

/// The prefix of every [`seen_store_key`] of `node`.
pub fn seen_node_prefix(prefix: &[u8], node: NodeId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&node.to_be_bytes());
    key
}

/// Which remembered store of a node to forget to make room for a new one, if the node has
/// [`MAX_STORES_PER_NODE`]: the lowest generation, never `keep` (the membership's store).
pub fn store_to_forget(remembered: &[(u64, SeenStore)], keep: Option<u64>) -> Option<u64> {
    if remembered.len() < MAX_STORES_PER_NODE {
        return None;
    }
    remembered
        .iter()
        .filter(|(store, _)| Some(*store) != keep)
        .min_by_key(|(_, seen)| seen.generation)
        .map(|(store, _)| *store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(generation: u64) -> Option<SeenStore> {
        Some(SeenStore { generation })
    }

    #[test]
    fn a_higher_generation_is_confirmed_and_remembered() {
        assert_eq!(judge_hello(seen(3), 4), (3, seen(4)));
        assert_eq!(judge_hello(None, 1), (0, seen(1)));
        assert!(!refuses(4, 3));
    }

    #[test]
    fn an_older_copy_is_refused_and_a_late_hello_changes_nothing() {
        let (answer, remember) = judge_hello(seen(5), 5);
        assert!(refuses(5, answer));
        assert_eq!(remember, None);
        // A late Hello of an earlier round is answered "seen more" and changes nothing: the
        // next round, at a higher generation, is confirmed.
        assert_eq!(judge_hello(seen(7), 6), (7, None));
        assert_eq!(judge_hello(seen(7), 8), (7, seen(8)));
    }

    #[test]
    fn a_node_with_too_many_stores_forgets_the_oldest_but_never_the_members() {
        let many: Vec<(u64, SeenStore)> = (0..MAX_STORES_PER_NODE as u64)
            .map(|store| {
                (
                    store,
                    SeenStore {
                        generation: 100 - store,
                    },
                )
            })
            .collect();
        assert_eq!(store_to_forget(&many[1..], None), None);
        let last = MAX_STORES_PER_NODE as u64 - 1;
        assert_eq!(store_to_forget(&many, None), Some(last));
        assert_eq!(store_to_forget(&many, Some(last)), Some(last - 1));
    }

    fn five() -> Membership {
        Membership::bootstrap((1..=5).map(|i| (i, format!("n{i}"))), "")
    }

    #[test]
    fn a_start_is_confirmed_by_two_voters_of_five_and_refused_by_one_answer() {
        let m = five();
        let mut c = Confirmation::default();
        c.begin_round(4);
        assert_eq!(c.on_answer(2, 4, 3), Ok(()));
        assert!(!c.is_confirmed(&m));
        assert_eq!(c.on_answer(3, 4, 0), Ok(()));
        assert!(
            c.is_confirmed(&m),
            "two voters and this node are a majority of five"
        );
        assert_eq!(c.unconfirmed(&m, 1), vec![4, 5]);
        assert!(
            c.on_answer(4, 4, 4).is_err(),
            "a peer saw this generation already"
        );
    }

    #[test]
    fn an_answer_to_an_earlier_round_counts_for_nothing() {
        let m = five();
        let mut c = Confirmation::default();
        c.begin_round(4);
        c.begin_round(5);
        // Round 4's Hello arrived after round 5's: "seen 5", which refuses nothing now.
        assert_eq!(c.on_answer(2, 4, 5), Ok(()));
        assert_eq!(c.voters_confirmed(&m), 0, "nor confirms anything");
        assert_eq!(c.on_answer(2, 5, 3), Ok(()));
        assert_eq!(c.voters_confirmed(&m), 1);
    }

    #[test]
    fn a_seen_store_survives_its_encoding_and_garbage_is_not_one() {
        let s = SeenStore {
            generation: 1 << 40,
        };
        assert_eq!(SeenStore::decode(&s.encode()), Some(s));
        assert_eq!(SeenStore::decode(&[1, 2, 3]), None);
    }
}
