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
//! - peers remember each store of a node apart, so no other store's `Hello` erases what they
//!   know of this one;
//! - a peer that refuses a store marks it refused for good, and answers every later `Hello`
//!   of it with [`REFUSED`], whatever its generation;
//! - the refused node marks its own store refused on its disk too, and never votes with it
//!   again (an operator removes the node and adds it back on an empty directory, which is a
//!   new store).
//!
//! # A new store while none is recorded (item 4)
//! A new cluster's membership records no store (0) until each node records its own. In that
//! window a peer that has seen *another* store of the same node answers [`REFUSED`]: the node's
//! disk was replaced after it said `Hello` (and so may have voted). Beside this, a store that
//! is not recorded votes on the membership register only (`MembershipView::admits_key`).
//!
//! # What this cannot catch
//! A `Hello` round needs `q - 1` confirmations, so a peer set that saw a run and one that
//! confirms the next start may be disjoint when `2(q - 1) <= n - 1` (5 nodes: two saw it, the
//! two others confirm the restored copy while the first two are down). Named assumption, as
//! before: **a data directory is never restored from a copy in place while the peers that saw
//! its later runs are down**; operators restore through `member remove` and `member add`.
//! A copy taken during the node's latest run holds that run's generation and is not told.

use crate::paxos::types::NodeId;

/// The answer to a `Hello` that refuses the store for good (`SyncReply::Hello { seen }`:
/// above every generation, so older nodes read it as "an older copy" too).
pub const REFUSED: u64 = u64::MAX;

/// What a node remembers of one store of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeenStore {
    /// The highest generation the store said `Hello` with.
    pub generation: u64,
    /// The store was refused: it is never confirmed again.
    pub refused: bool,
}

impl SeenStore {
    /// Bytes on disk: the generation (big-endian), then 1 if refused.
    pub fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8] = u8::from(self.refused);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SeenStore> {
        let (generation, refused) = match bytes.len() {
            9 => (&bytes[..8], bytes[8] == 1),
            _ => return None,
        };
        Some(SeenStore {
            generation: u64::from_be_bytes(generation.try_into().ok()?),
            refused,
        })
    }
}

/// What a peer knows when `node`'s store says `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloContext {
    /// What it remembers of this store (`None`: never heard of it).
    pub seen: Option<SeenStore>,
    /// It has heard of another store of the same node.
    pub other_store_seen: bool,
    /// The store its installed membership records for the node (`None`: not a member, or no
    /// membership; `Some(0)`: the bootstrap's "not recorded yet").
    pub recorded: Option<u64>,
}

/// A peer's decision on `Hello { node, store, generation }`: the answer (the generation seen
/// before, or [`REFUSED`]) and what to remember of the store from now on (`None`: nothing
/// changes).
pub fn judge_hello(context: HelloContext, generation: u64) -> (u64, Option<SeenStore>) {
    let seen = context.seen.unwrap_or_default();
    if seen.refused {
        return (REFUSED, None);
    }
    let replaced_in_bootstrap =
        context.recorded == Some(0) && context.seen.is_none() && context.other_store_seen;
    if replaced_in_bootstrap || (context.seen.is_some() && generation <= seen.generation) {
        let refused = SeenStore {
            generation: seen.generation.max(generation),
            refused: true,
        };
        return (REFUSED, Some(refused));
    }
    let next = SeenStore {
        generation,
        refused: false,
    };
    (seen.generation, Some(next))
}

/// Does a peer's answer `seen` to our `Hello` at `generation` refuse this store?
pub fn refuses(generation: u64, seen: u64) -> bool {
    seen >= generation
}

/// The meta key under which a node remembers `node`'s store `store`.
pub fn seen_store_key(prefix: &[u8], node: NodeId, store: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&node.to_be_bytes());
    key.extend_from_slice(&store.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(seen: Option<SeenStore>) -> HelloContext {
        HelloContext {
            seen,
            other_store_seen: false,
            recorded: Some(7),
        }
    }

    fn seen(generation: u64) -> Option<SeenStore> {
        Some(SeenStore {
            generation,
            refused: false,
        })
    }

    #[test]
    fn a_higher_generation_is_confirmed_and_remembered() {
        assert_eq!(
            judge_hello(context(seen(3)), 4),
            (
                3,
                Some(SeenStore {
                    generation: 4,
                    refused: false
                })
            )
        );
        assert_eq!(
            judge_hello(context(None), 1),
            (
                0,
                Some(SeenStore {
                    generation: 1,
                    refused: false
                })
            )
        );
    }

    #[test]
    fn an_older_copy_is_refused_and_stays_refused_at_any_later_generation() {
        let (answer, remember) = judge_hello(context(seen(5)), 5);
        assert_eq!(answer, REFUSED);
        let remembered = remember.unwrap();
        assert!(remembered.refused);
        assert!(refuses(5, answer));
        // Restarted again (a generation above anything seen): still refused.
        for generation in [6, 7, 1_000] {
            let (answer, change) = judge_hello(context(Some(remembered)), generation);
            assert_eq!((answer, change), (REFUSED, None));
        }
    }

    #[test]
    fn another_store_of_a_node_whose_store_is_not_recorded_is_refused() {
        let bootstrap = HelloContext {
            seen: None,
            other_store_seen: true,
            recorded: Some(0),
        };
        assert_eq!(judge_hello(bootstrap, 1).0, REFUSED);
        // Once the membership records a store, a new one is told by the membership instead
        // (it is not the member's store and never votes), and may say Hello.
        let recorded = HelloContext {
            recorded: Some(7),
            ..bootstrap
        };
        assert_eq!(judge_hello(recorded, 1).0, 0);
        // The first store of a node at bootstrap is confirmed.
        let first = HelloContext {
            other_store_seen: false,
            ..bootstrap
        };
        assert_eq!(judge_hello(first, 1).0, 0);
    }

    #[test]
    fn a_seen_store_survives_its_encoding_and_garbage_is_not_one() {
        let s = SeenStore {
            generation: 1 << 40,
            refused: true,
        };
        assert_eq!(SeenStore::decode(&s.encode()), Some(s));
        assert_eq!(SeenStore::decode(&[1, 2, 3]), None);
    }
}
