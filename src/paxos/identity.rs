//! Store identity at start: the decisions that keep a store which lost what it voted for (a
//! wiped disk, an older copy of the directory) from voting again. Plain data and decisions,
//! no IO: `storage` keeps what a node remembers of its peers' stores and calls
//! [`judge_hello`] inside one write transaction, and keeps the node's own round
//! ([`begin_round`]); `actors::membership` and the simulation send the `Hello`s and feed the
//! answers to a [`Confirmation`].
//!
//! # The generation check
//! Every store has an identity (a random id drawn when it is created) and a generation. A
//! node's start says `Hello` to its peers in rounds; a round is a generation and a call (a
//! random id), and each peer remembers, **per store of each node**, the highest generation
//! it was told, the call that told it and what it answered. An intact store's disk always
//! holds a generation at least as high as any it ever sent, so its next fresh round is higher
//! than anything a peer remembers; an older copy of the directory holds a lower one, so a
//! peer that saw a later run answers that it saw as much or more, and the node refuses to
//! vote.
//!
//! **A lost answer, and a round nobody answered** ([`begin_round`], [`Confirmation`]). A
//! round stays pending on the node's disk until some peer answers it, and every later round
//! of the run, and every later start, sends the *same* round again; a peer asked again by the
//! call it last took answers as it did the first time ([`judge_hello`]). So a lost answer
//! refuses nothing, and a generation is raised only once the round before it was answered.
//! Before (issue 17, first session) every round and every start raised the generation: an
//! older copy restored while cut off from its peers (or restarted by an orchestrator while
//! its `Hello`s went unanswered) climbed past what its peers had seen and was confirmed once
//! it reconnected (the simulation, through its faulty network, seed 804: rounds at 16, 17,
//! 18, 19 unanswered, 20 confirmed by peers that had seen 19). A start that finds a pending
//! round retries it first, and votes only on the confirmations of a fresh round begun after
//! it: a copy taken while a round was pending cannot borrow the confirmations the real store
//! earned with that round.
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
//! store votes on the membership register only (`InstalledMembership::admits_key`), so no client
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
/// with, the call that said it, and what that call was answered (so that the same call,
/// retried, is answered the same). Three big-endian u64 on disk; a record of one (before
/// the calls) is a generation alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeenStore {
    pub generation: u64,
    pub call: u64,
    pub before: u64,
}

impl SeenStore {
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8..16].copy_from_slice(&self.call.to_be_bytes());
        out[16..].copy_from_slice(&self.before.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SeenStore> {
        let word = |i: usize| Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
        match bytes.len() {
            8 => Some(SeenStore {
                generation: word(0)?,
                ..SeenStore::default()
            }),
            24 => Some(SeenStore {
                generation: word(0)?,
                call: word(8)?,
                before: word(16)?,
            }),
            _ => None,
        }
    }
}

/// A round of `Hello`s: the store's generation and the call (a random nonzero id drawn for
/// the round) that says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub generation: u64,
    pub call: u64,
}

/// The round a node begins, given its durable generation and the round still unanswered on
/// its disk (`pending`, if any): that round again, else a fresh one at the next generation
/// with `call`. Returns the round and whether it is fresh; the caller stores a fresh round as
/// the generation and as pending, durably, before sending it.
pub fn begin_round(generation: u64, pending: Option<Round>, call: u64) -> (Round, bool) {
    match pending {
        Some(round) => (round, false),
        None => (
            Round {
                generation: generation + 1,
                call,
            },
            true,
        ),
    }
}

/// A peer's decision on a store's `Hello` at `generation` by `call`, given what it
/// remembers of that store: the answer (the generation seen before, 0 for none) and what to
/// remember from now on (`None`: nothing changes). The call it last took, asked again, is
/// answered as it was the first time (a retry whose answer was lost, or a restart that
/// retries its round).
pub fn judge_hello(
    seen: Option<SeenStore>,
    generation: u64,
    call: u64,
) -> (u64, Option<SeenStore>) {
    let seen = seen.unwrap_or_default();
    if call != 0 && seen.call == call && seen.generation == generation {
        return (seen.before, None);
    }
    let before = seen.generation;
    let remember = (generation > before).then_some(SeenStore {
        generation,
        call,
        before,
    });
    (before, remember)
}

/// Does a peer's answer `seen` to our `Hello` at `generation` refuse this store? (It saw this
/// store at `generation` or later: this directory is an older copy.)
pub fn refuses(generation: u64, seen: u64) -> bool {
    seen >= generation
}

/// A node's start after its membership is installed: rounds of `Hello`s until `q - 1`
/// voters confirmed a **fresh** round of this run (a majority with itself). Plain state:
/// `actors::membership` and the simulation send the rounds and feed the answers in.
///
/// **A generation is raised only once the round before it was confirmed** by `q - 1` voters
/// (the simulation, seed 804: an older copy restarted, or retrying, while cut off from its
/// peers raised its generation at every round and start, past what its peers had seen, and
/// was confirmed; seed 29: the same one answer at a time, from the one peer that had not
/// seen the later run). A round stays pending on the node's disk until then; until then every
/// round, and every start, sends it again, the same call, which a peer that took it answers
/// as it did the first time (`judge_hello`), so a lost answer refuses nothing. A start that
/// finds a pending round retries it first: once answered (not refused), it begins a fresh
/// round, and votes only on that one's confirmations. So a copy restored from a stop whose
/// round was pending cannot borrow the confirmations the real store earned with that round
/// in its next run: the real store voted only after a fresher round, which the peers
/// remember above the copy's.
///
/// Only answers to the round in progress count: a round's calls end with it, so an answer
/// to an earlier round is one that came too late and is dropped, whatever it says.
#[derive(Debug, Clone, Default)]
pub struct Confirmation {
    /// The round in progress, and whether it is fresh (begun in this run).
    round: Option<(Round, bool)>,
    /// The peers that answered the round in progress without refusing it.
    answered: BTreeSet<NodeId>,
    /// The round in progress was confirmed and cleared as pending.
    cleared: bool,
    /// The peers that confirmed this run's fresh round.
    confirmed: BTreeSet<NodeId>,
}

impl Confirmation {
    /// Does the node need to begin a round (`begin_round`) before it sends one? At the
    /// start, and once a retried round was confirmed by `q - 1` voters of `m`.
    pub fn needs_round(&self, m: Option<&Membership>) -> bool {
        match self.round {
            None => true,
            Some((_, fresh)) => !fresh && m.is_some_and(|m| self.enough(&self.answered, m)),
        }
    }

    /// A round begins (`begin_round`'s answer, made durable by the caller).
    pub fn begin(&mut self, round: Round, fresh: bool) {
        self.round = Some((round, fresh));
        self.answered.clear();
        self.cleared = false;
    }

    /// The round in progress.
    pub fn round(&self) -> Option<Round> {
        self.round.map(|(r, _)| r)
    }

    /// `peer` answered the `Hello` of `round` with `seen`, the generation it had seen of
    /// this store before. `Err`: this store is an older copy, refused for good.
    pub fn on_answer(&mut self, peer: NodeId, round: Round, seen: u64) -> Result<(), String> {
        let Some((current, fresh)) = self.round else {
            return Ok(());
        };
        if round != current {
            return Ok(());
        }
        if refuses(round.generation, seen) {
            return Err(format!(
                "node {peer} saw generation {seen} of this store, which now starts as \
                 generation {}: this data directory is an older copy",
                round.generation
            ));
        }
        self.answered.insert(peer);
        if fresh {
            self.confirmed.insert(peer);
        }
        Ok(())
    }

    /// The round in progress, once (the first time `q - 1` voters of `m` answered it without
    /// refusing): the caller clears it as pending, durably, so that the next start begins a
    /// fresh one. Not before: one peer's answer says nothing of the peers that saw a later
    /// run (the simulation, seed 29: an older copy whose rounds were answered by the one peer
    /// that had not seen the later run climbed past the three that had, one start at a time).
    pub fn to_clear(&mut self, m: &Membership) -> Option<Round> {
        if self.cleared || !self.enough(&self.answered, m) {
            return None;
        }
        self.cleared = true;
        self.round()
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
        self.enough(&self.confirmed, m)
    }

    fn enough(&self, peers: &BTreeSet<NodeId>, m: &Membership) -> bool {
        let voters = peers.iter().filter(|p| m.is_voter(**p)).count();
        voters >= m.quorums().classic().saturating_sub(1)
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

    fn seen(generation: u64, call: u64, before: u64) -> Option<SeenStore> {
        Some(SeenStore {
            generation,
            call,
            before,
        })
    }

    fn round(generation: u64, call: u64) -> Round {
        Round { generation, call }
    }

    #[test]
    fn a_higher_generation_is_confirmed_and_remembered() {
        assert_eq!(judge_hello(seen(3, 30, 2), 4, 40), (3, seen(4, 40, 3)));
        assert_eq!(judge_hello(None, 1, 10), (0, seen(1, 10, 0)));
        assert!(!refuses(4, 3));
    }

    #[test]
    fn an_older_copy_is_refused_and_a_late_hello_changes_nothing() {
        let (answer, remember) = judge_hello(seen(5, 50, 4), 5, 51);
        assert!(
            refuses(5, answer),
            "the same generation by another call: a copy"
        );
        assert_eq!(remember, None);
        // A late Hello of an earlier round is answered "seen more" and changes nothing: the
        // next round, at a higher generation, is confirmed.
        assert_eq!(judge_hello(seen(7, 70, 6), 6, 60), (7, None));
        assert_eq!(judge_hello(seen(7, 70, 6), 8, 80), (7, seen(8, 80, 7)));
    }

    #[test]
    fn the_same_call_asked_again_is_answered_as_the_first_time() {
        let (first, remember) = judge_hello(seen(3, 30, 2), 4, 40);
        let again = judge_hello(remember, 4, 40);
        assert_eq!(again, (first, None));
        assert!(
            !refuses(4, again.0),
            "a retry whose answer was lost is no older copy"
        );
        // A legacy record (a generation alone) matches no call.
        assert!(refuses(4, judge_hello(seen(4, 0, 0), 4, 0).0));
    }

    #[test]
    fn a_round_is_begun_again_until_answered_and_a_generation_is_never_raised_before() {
        // Nothing pending: a fresh round at the next generation.
        assert_eq!(begin_round(7, None, 99), (round(8, 99), true));
        // A pending round (unanswered, from this run or an earlier one): the same again,
        // however often the node restarts or retries.
        for call in [100, 101, 102] {
            assert_eq!(
                begin_round(8, Some(round(8, 99)), call),
                (round(8, 99), false)
            );
        }
    }

    #[test]
    fn an_older_copy_cut_off_and_restarted_never_climbs_past_its_peers() {
        // The real store ran on to generation 9 (call 90), seen by the peer; the copy holds
        // generation 7 and nothing pending. Cut off, it restarts five times.
        let peer = seen(9, 90, 8);
        let (first, fresh) = begin_round(7, None, 71);
        assert!(fresh);
        let mut pending = Some(first);
        for call in 72..77 {
            let (again, fresh) = begin_round(first.generation, pending, call);
            assert_eq!((again, fresh), (first, false));
            pending = Some(again);
        }
        // Reconnected: its round is refused.
        let (answer, _) = judge_hello(peer, first.generation, first.call);
        let mut c = Confirmation::default();
        c.begin(first, true);
        assert!(c.on_answer(2, first, answer).is_err());
    }

    #[test]
    fn a_retried_round_confirms_nothing_and_leads_to_a_fresh_one() {
        let m = five();
        let mut c = Confirmation::default();
        assert!(c.needs_round(Some(&m)));
        c.begin(round(4, 40), false);
        assert!(!c.needs_round(Some(&m)));
        assert_eq!(c.on_answer(2, round(4, 40), 3), Ok(()));
        assert!(
            !c.needs_round(Some(&m)),
            "one answer says nothing of the others"
        );
        assert_eq!(c.to_clear(&m), None);
        assert_eq!(c.on_answer(3, round(4, 40), 3), Ok(()));
        assert_eq!(c.voters_confirmed(&m), 0, "a retried round confirms nobody");
        assert_eq!(c.to_clear(&m), Some(round(4, 40)));
        assert_eq!(c.to_clear(&m), None, "cleared once");
        assert!(c.needs_round(Some(&m)), "confirmed: now a fresh round");
        c.begin(round(5, 50), true);
        assert_eq!(c.on_answer(2, round(5, 50), 4), Ok(()));
        assert_eq!(c.on_answer(3, round(5, 50), 4), Ok(()));
        assert!(c.is_confirmed(&m));
        assert!(!c.needs_round(Some(&m)));
    }

    #[test]
    fn an_older_copy_answered_by_the_one_peer_that_missed_the_later_run_never_climbs() {
        // Seed 29: the later run (generation 2) was seen by 1, 2 and 5, not by 3. The copy
        // (generation 1) starts again and again; only 3's answers arrive before each restart.
        let m = five();
        let mut pending = None;
        let mut generation = 1;
        let mut peer3 = None;
        for call in 10..15 {
            let (r, fresh) = begin_round(generation, pending, call);
            if fresh {
                generation = r.generation;
                pending = Some(r);
            }
            let mut c = Confirmation::default();
            c.begin(r, fresh);
            let (seen, remember) = judge_hello(peer3, r.generation, r.call);
            if remember.is_some() {
                peer3 = remember;
            }
            assert_eq!(c.on_answer(3, r, seen), Ok(()));
            if c.to_clear(&m).is_some() {
                pending = None;
            }
        }
        assert_eq!(generation, 2, "never past what 1, 2 and 5 saw");
        let (seen, _) = judge_hello(seen(2, 20, 1), generation, pending.unwrap().call);
        assert!(refuses(generation, seen));
    }

    #[test]
    fn a_node_with_too_many_stores_forgets_the_oldest_but_never_the_members() {
        let many: Vec<(u64, SeenStore)> = (0..MAX_STORES_PER_NODE as u64)
            .map(|store| {
                (
                    store,
                    SeenStore {
                        generation: 100 - store,
                        ..SeenStore::default()
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
        c.begin(round(4, 40), true);
        assert_eq!(c.on_answer(2, round(4, 40), 3), Ok(()));
        assert!(!c.is_confirmed(&m));
        assert_eq!(c.on_answer(3, round(4, 40), 0), Ok(()));
        assert!(
            c.is_confirmed(&m),
            "two voters and this node are a majority of five"
        );
        assert_eq!(c.unconfirmed(&m, 1), vec![4, 5]);
        assert!(
            c.on_answer(4, round(4, 40), 4).is_err(),
            "a peer saw this generation already"
        );
    }

    #[test]
    fn an_answer_to_an_earlier_round_counts_for_nothing() {
        let m = five();
        let mut c = Confirmation::default();
        c.begin(round(4, 40), false);
        c.begin(round(5, 50), true);
        // Round 4's Hello arrived after round 5's: "seen 5", which refuses nothing now.
        assert_eq!(c.on_answer(2, round(4, 40), 5), Ok(()));
        assert_eq!(c.voters_confirmed(&m), 0, "nor confirms anything");
        assert_eq!(c.on_answer(2, round(5, 50), 3), Ok(()));
        assert_eq!(c.voters_confirmed(&m), 1);
    }

    #[test]
    fn a_seen_store_survives_its_encoding_and_garbage_is_not_one() {
        let s = SeenStore {
            generation: 1 << 40,
            call: 7,
            before: 3,
        };
        assert_eq!(SeenStore::decode(&s.encode()), Some(s));
        assert_eq!(
            SeenStore::decode(&(5u64).to_be_bytes()),
            seen(5, 0, 0),
            "a record written before the calls"
        );
        assert_eq!(SeenStore::decode(&[1, 2, 3]), None);
    }
}
