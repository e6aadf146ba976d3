//! A node's start before it has a membership: take the one a running cluster has, found a
//! new cluster from the config, or wait. A plain function ([`decide`]) of what the node was
//! told by the nodes it asked, called by `actors::membership::start::run` and by the
//! simulation of starts (`paxos::sim_start`); and what a node with a membership needs before
//! it votes ([`standing`]), the rule of the runtime's start loop and of both simulations.
//!
//! # The bootstrap
//! A node of the config with an empty store asks every node of its config (and its `--join`
//! addresses, if any) for its membership. Each answers with the membership it installed, or, if it has
//! none, with the identity of the cluster *its* config would found ([`Answer::Empty`]:
//! `cluster_id` of its `[cluster] token` and node list; 0 if it would found none: a node
//! its config does not list, which joins a running cluster). The node then:
//! 1. takes a membership if any node answered one ([`Membership::pick_pulled`]: of one
//!    cluster only);
//! 2. else founds its config's cluster if **every** node of its config said it is empty and
//!    would found the same cluster (as Consul's `bootstrap_expect` waits for every expected
//!    server);
//! 3. else waits, and says why (a node that would found another cluster is named).
//!
//! **Why every node, not a majority.** A founding is decided by counting nodes that say they
//! are empty, and a wiped disk says so too. Founded by a majority, a cluster could be founded
//! again: five nodes, 1, 2 and 3 found it while 4 and 5 are not up yet, writes are acknowledged
//! by {1, 2, 3}; 4 and 5 start, and their requests are lost; node 1's disk is wiped and node 2
//! is down (two faults of five); node 1 asks again and node 3's answer is lost: 1, 4 and 5 are
//! three empty nodes of the config, a majority, and found the same cluster identity again, at
//! epoch 1 with no records, where every acknowledged write reads "not found" (found while
//! writing this module, before the simulation of starts existed). In general, a founding
//! counted by `F` empty nodes meets the `q` holders of any later chosen value in at least
//! `F + q - n` nodes, each of which must then have been wiped; with up to `n - q` wiped
//! disks, that stays impossible only if `F + q - n > n - q`, that is `F = n` for an odd `n`
//! (`n - 1` for an even one; paxkv asks for every node in both).
//! With `F = n`: a second founding of a cluster needs every node empty, so every holder of
//! every chosen value (at least `q`) wiped: beyond the fault model; and if nothing was chosen
//! in between (the founder wiped before anyone else installed), the second founding writes
//! the same epoch-1 membership as the first (it is a function of the config).
//!
//! **Mismatched configs.** Before issue 17 an empty answer counted whatever the answering
//! node's config said: two configs that differ only in the token founded two clusters at the
//! same addresses (node 1, config A, counted nodes 2 and 3 as empty; node 3, config B,
//! counted 1 and 2), and a client that asked node 1 and then node 3 read two histories.
//! Counted by the founding identity and over every node, a cluster is founded only when
//! every node of its list *holds* that config (a node's config is its file: one answer, the
//! same to every asker, whenever it is sent). So two clusters are founded only from node
//! lists with no address in common, and then they are simply two clusters: **whatever the
//! network does**, since the argument counts answers, not their timing. An answer naming
//! another identity also makes the node wait and log both, as etcd refuses a peer of another
//! cluster id: the operator fixes the config rather than find out later who founded what.
//!
//! **The cost** is liveness at the very first start only: a new cluster is founded once every
//! node of its config runs (a node that cannot come up is taken out of the config's list
//! before the first start, or added later with `paxkv member add`). Restarts, wiped disks
//! and joins never found anything: they install what a running cluster answers.
//!
//! A node of another cluster that already runs (a membership in the answers) is taken only
//! if every membership answered names one cluster; a node never installs two identities
//! ([`Membership::installs_over`]).
//!
//! # Standing
//! With a membership installed, a node votes only as a voter of it, with its own store
//! recorded ([`standing`]). A store recorded as 0 (the bootstrap's "not yet") records itself
//! first, through the membership register (`actors::membership`); until then it votes on the
//! register only ([`Membership::admits_vote`]). A member whose recorded store is another
//! (wiped, replaced disk) never votes with this one: it is removed and added again.

use std::collections::BTreeSet;

use crate::paxos::membership::{cluster_id, Membership};
use crate::paxos::types::NodeId;

/// What a node asked for its membership answered (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It has installed this membership.
    Holds(Membership),
    /// It has none; its config would found this cluster (0: none, it waits to be added).
    Empty { founds: u64 },
}

/// What a node of the config would found: the bootstrap membership's identity and nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Founding {
    /// The node that would found.
    pub me: NodeId,
    pub cluster: u64,
    pub token: String,
    pub nodes: Vec<(NodeId, String)>,
}

impl Founding {
    /// The founding of node `me` with this config, if any: `None` when the config does not
    /// list it (a node that joins a running cluster, started with `--addr` and `--join`,
    /// never founds one; `--join` given to a listed node only adds places to look).
    pub fn of(me: NodeId, token: &str, nodes: &[(NodeId, String)]) -> Option<Self> {
        nodes.iter().any(|(id, _)| *id == me).then(|| Founding {
            me,
            cluster: cluster_id(token, nodes),
            token: token.to_string(),
            nodes: nodes.to_vec(),
        })
    }

    /// What this node answers a peer's request for its membership while it has none.
    pub fn founds(founding: Option<&Founding>) -> u64 {
        founding.map_or(0, |f| f.cluster)
    }

    pub fn membership(&self) -> Membership {
        Membership::bootstrap(self.nodes.iter().cloned(), &self.token)
    }
}

/// What a node with no membership does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Install this membership, answered by a running cluster.
    Install(Membership),
    /// Found a new cluster with this (epoch 1) membership.
    Found(Membership),
    /// Ask again later; why, for the log.
    Wait(String),
}

/// The decision of a node with no membership, given the answers of the other nodes it
/// asked: for each that answered, the node of the config at the address asked (0 if the
/// address is not the config's: `--join`), and its answer. See the module's doc.
pub fn decide(founding: Option<&Founding>, answers: &[(NodeId, Answer)]) -> Start {
    let held = answers.iter().filter_map(|(_, a)| match a {
        Answer::Holds(m) => Some(m.clone()),
        Answer::Empty { .. } => None,
    });
    match Membership::pick_pulled(0, held) {
        Ok(Some(m)) => return Start::Install(m),
        Ok(None) => {}
        Err(why) => return Start::Wait(why),
    }
    let Some(founding) = founding else {
        return Start::Wait(
            "no membership yet (a node joining a running cluster needs `--join ADDR,...` of \
             its members, and `paxkv member add`)"
                .to_string(),
        );
    };
    let others: BTreeSet<(NodeId, u64)> = answers
        .iter()
        .filter_map(|(node, a)| match a {
            Answer::Empty { founds } if *founds != 0 && *founds != founding.cluster => {
                Some((*node, *founds))
            }
            _ => None,
        })
        .collect();
    if !others.is_empty() {
        let named: Vec<String> = others
            .iter()
            .map(|(node, c)| format!("node {node}: {c:x}"))
            .collect();
        return Start::Wait(format!(
            "the config founds cluster {:x}, but nodes it lists would found another ({}): their \
             `[cluster] token` or node list differs; give every node of the new cluster the \
             same config",
            founding.cluster,
            named.join(", ")
        ));
    }
    // Every node of the config but this one (whose own store is empty: it asks), each
    // counted once, whatever duplicates the network delivered.
    let empty: BTreeSet<NodeId> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Empty { founds } if *founds == founding.cluster))
        .map(|(node, _)| *node)
        .collect();
    let missing: Vec<NodeId> = founding
        .nodes
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != founding.me && !empty.contains(id))
        .collect();
    if missing.is_empty() {
        Start::Found(founding.membership())
    } else {
        Start::Wait(format!(
            "no membership yet: a new cluster is founded once every node of the config runs, \
             empty, with this config; not yet heard as such: node{} {} (a node joining a \
             running cluster needs `--join ADDR,...` of its members)",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Where a node stands in its installed membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A voter with this store recorded: it votes once its start is confirmed.
    Voter,
    /// A voter whose store is not recorded yet (the bootstrap's 0): it records it first.
    Unrecorded,
    /// A voter whose recorded store is another (a wiped or replaced disk): never votes with
    /// this one.
    OtherStore(u64),
    /// Not a voter (not a member, or joining): waits for `member add`.
    NotAVoter,
}

/// How node `me`, running store `store`, stands in `m`.
pub fn standing(m: &Membership, me: NodeId, store: u64) -> Standing {
    match m.member(me).map(|x| x.store) {
        _ if !m.is_voter(me) => Standing::NotAVoter,
        Some(0) => Standing::Unrecorded,
        Some(recorded) if recorded == store => Standing::Voter,
        Some(recorded) => Standing::OtherStore(recorded),
        None => Standing::NotAVoter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[NodeId]) -> Vec<(NodeId, String)> {
        ids.iter().map(|&n| (n, format!("n{n}"))).collect()
    }

    fn founding(me: NodeId, token: &str, ids: &[NodeId]) -> Founding {
        Founding::of(me, token, &nodes(ids)).expect("listed")
    }

    fn empty(node: NodeId, f: &Founding) -> (NodeId, Answer) {
        (node, Answer::Empty { founds: f.cluster })
    }

    #[test]
    fn every_node_of_the_config_new_and_of_the_same_config_founds_it() {
        let f = founding(1, "t", &[1, 2, 3, 4, 5]);
        let all: Vec<_> = (2..=5).map(|n| empty(n, &f)).collect();
        match decide(Some(&f), &all) {
            Start::Found(m) => {
                assert_eq!(m.epoch, 1);
                assert_eq!(m.cluster, f.cluster);
                assert_eq!(m.voters(), vec![1, 2, 3, 4, 5]);
            }
            other => panic!("{other:?}"),
        }
        // A majority is not enough (a wiped node and two that never installed would found
        // the cluster again), nor is one node's answer delivered twice.
        match decide(Some(&f), &all[..3]) {
            Start::Wait(why) => assert!(why.contains("node 5"), "{why}"),
            other => panic!("{other:?}"),
        }
        let twice = [empty(2, &f), empty(3, &f), empty(4, &f), empty(4, &f)];
        assert!(matches!(decide(Some(&f), &twice), Start::Wait(_)));
        // A single-node cluster founds on its own.
        let alone = founding(1, "t", &[1]);
        assert!(matches!(decide(Some(&alone), &[]), Start::Found(_)));
    }

    #[test]
    fn empty_nodes_of_another_config_neither_count_nor_let_it_found() {
        let a = founding(1, "a", &[1, 2, 3]);
        let b = founding(3, "b", &[1, 2, 3]);
        // Node 1 hears node 2 (config a) and node 3 (config b): a mismatch, said.
        match decide(Some(&a), &[empty(2, &a), empty(3, &b)]) {
            Start::Wait(why) => assert!(why.contains("node 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Node 3 (config b) hearing only node 2 (config a) must not count it.
        assert!(matches!(decide(Some(&b), &[empty(2, &a)]), Start::Wait(_)));
        // A node that waits to be added (founds 0) counts for nobody, and is no mismatch.
        let waiting = (2, Answer::Empty { founds: 0 });
        assert!(matches!(
            decide(Some(&a), &[waiting.clone(), empty(3, &a)]),
            Start::Wait(_)
        ));
        assert!(matches!(
            decide(Some(&a), &[empty(2, &a), empty(3, &a)]),
            Start::Found(_)
        ));
    }

    #[test]
    fn a_running_cluster_is_joined_not_founded_again() {
        let f = founding(1, "t", &[1, 2, 3]);
        let mut running = f.membership();
        running.epoch = 9;
        assert_eq!(
            decide(
                Some(&f),
                &[empty(2, &f), (3, Answer::Holds(running.clone()))]
            ),
            Start::Install(running.clone())
        );
        // Answers of two clusters: wait, take neither.
        let other = founding(1, "other", &[1, 2, 3]).membership();
        assert!(matches!(
            decide(
                Some(&f),
                &[
                    (2, Answer::Holds(running)),
                    (3, Answer::Holds(other.clone()))
                ]
            ),
            Start::Wait(_)
        ));
        // A node that does not found (joining) takes what it is given, and never founds.
        assert_eq!(
            decide(None, &[(0, Answer::Holds(other.clone()))]),
            Start::Install(other)
        );
        assert!(matches!(
            decide(None, &[empty(2, &f), empty(3, &f)]),
            Start::Wait(_)
        ));
    }

    #[test]
    fn only_a_listed_node_founds() {
        assert!(Founding::of(4, "t", &nodes(&[1, 2, 3])).is_none());
        assert_eq!(Founding::founds(None), 0);
        let f = founding(2, "t", &[1, 2, 3]);
        assert_eq!(
            Founding::founds(Some(&f)),
            cluster_id("t", &nodes(&[1, 2, 3]))
        );
    }

    #[test]
    fn standing_in_a_membership() {
        let mut m = founding(1, "t", &[1, 2, 3]).membership();
        assert_eq!(standing(&m, 1, 7), Standing::Unrecorded);
        m.members[0].store = 7;
        assert_eq!(standing(&m, 1, 7), Standing::Voter);
        assert_eq!(standing(&m, 1, 8), Standing::OtherStore(7));
        assert_eq!(standing(&m, 4, 7), Standing::NotAVoter);
    }
}
