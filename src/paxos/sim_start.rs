//! A seeded simulation of new clusters' first starts: nodes with empty stores ask each other
//! for a membership through a network that drops, duplicates, delays (past the asker's
//! timeout too) and reorders messages, and is cut in two now and then; and decide with the runtime's own
//! `paxos::bootstrap::decide` whether to take one, found their config's cluster, or wait.
//! `paxos::sim` starts from a founded cluster; this one is the world before it.
//!
//! **Faults**: nodes start late (up to 3 s, and 30 % of them 3 to 10 s; in most seeds of
//! one config (80 %, and 30 % of the others) a minority starts at 2 to 5 s cut off from the others, and once the others hold the
//! membership, one of them is wiped and restarted on the stragglers' side of the cut: a
//! founding counted by a majority would found the cluster again there), crash and restart (an ask in progress is lost;
//! an installed membership is durable), are cut off from everyone for a while, and lose
//! their disks (a minority of the nodes, chosen per seed, so that a founded cluster keeps a
//! majority of intact holders); a node started with `--join` asks some of the others and
//! must never found.
//!
//! **Configs**: uniform (every node the same config), or **mismatched**: each node's file is
//! one of the config (A), the same nodes under another token (B), a stale list one node short
//! (C), a list with one more node that never runs (D), or a list of a bare majority of the
//! nodes (E: its majorities and A's can be disjoint).
//!
//! **Checked at every decision**: at most one cluster identity is ever founded, and a
//! cluster that a majority of its members held at one time (its values may have been
//! chosen) is never founded again by a count that includes a node whose disk was wiped
//! after it held the cluster (such a founding makes a majority of empty stores a cluster
//! again, and every value chosen before reads as never written; founding it again from
//! answers that were merely late is the same epoch-1 membership a pull installs). At the end of
//! a uniform seed, after every fault heals, every node holds the membership.
//! A failing seed replays exactly: `PAXKV_SIM_SEED=<seed> cargo test --lib sim_start`.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::paxos::bootstrap::{decide, Answer, Founding, Start};
use crate::paxos::membership::Membership;
use crate::paxos::quorum::Quorums;
use crate::paxos::types::NodeId;

/// A node that is in some config's list and never runs.
const GHOST: NodeId = 99;
/// A node started with `--join`, in no config.
const JOINER: NodeId = 50;
/// How often a node with no membership asks (ms), and how long it waits for answers.
const ASK_EVERY: u64 = 300;
const ASK_TIMEOUT: u64 = 2_000;
/// Faults for this long (ms), then everything heals for `HEAL`.
const FAULTY: u64 = 20_000;
const HEAL: u64 = 10_000;

struct Node {
    founding: Option<Founding>,
    /// Whom it asks: its config's other nodes, or its `--join` list.
    targets: Vec<NodeId>,
    /// Durable.
    membership: Option<Membership>,
    up: bool,
    /// When a node that is down comes up.
    restart_at: u64,
    round: Option<Round>,
    next_ask: u64,
    wipable: bool,
}

struct Round {
    id: u64,
    asked: BTreeSet<NodeId>,
    answers: Vec<(NodeId, Answer)>,
    deadline: u64,
}

#[derive(Clone)]
enum Msg {
    Ask { round: u64 },
    Reply { round: u64, answer: Answer },
}

struct Flight {
    at: u64,
    from: NodeId,
    to: NodeId,
    msg: Msg,
}

struct World {
    rng: SmallRng,
    now: u64,
    nodes: BTreeMap<NodeId, Node>,
    net: Vec<Flight>,
    isolated: BTreeMap<NodeId, u64>,
    /// A partition: these nodes on one side, everyone else on the other, until then.
    partition: Option<(BTreeSet<NodeId>, u64)>,
    /// Stragglers (a minority of nodes that start late) and when a node that holds the
    /// membership is wiped and restarted on their side of a partition.
    straggle: Option<(Vec<NodeId>, u64)>,
    quiet_until: u64,
    /// Every cluster identity founded, and by whom first.
    founded: BTreeMap<u64, NodeId>,
    /// Clusters a majority of whose members held them at one time.
    operational: BTreeSet<u64>,
    /// Nodes whose disk was wiped after they held a membership.
    lost: BTreeSet<NodeId>,
    next_round: u64,
    faults: BTreeMap<&'static str, u32>,
    trace: Vec<String>,
}

impl Node {
    /// A node that has not started yet, with an empty store.
    fn new(
        founding: Option<Founding>,
        targets: Vec<NodeId>,
        restart_at: u64,
        wipable: bool,
    ) -> Node {
        Node {
            founding,
            targets,
            membership: None,
            up: false,
            restart_at,
            round: None,
            next_ask: 0,
            wipable,
        }
    }
}

fn addrs(ids: &[NodeId]) -> Vec<(NodeId, String)> {
    ids.iter().map(|&n| (n, format!("n{n}"))).collect()
}

/// The configs a node's file may hold (see the module's doc): A, B (another token), C (one
/// node short), D (a node that never runs) and E (a bare majority).
fn configs(all: &[NodeId], short: NodeId) -> Vec<(&'static str, Vec<NodeId>)> {
    vec![
        ("a", all.to_vec()),
        ("b", all.to_vec()),
        ("a", all.iter().copied().filter(|&x| x != short).collect()),
        ("a", all.iter().copied().chain([GHOST]).collect()),
        ("a", all[..Quorums::new(all.len()).classic()].to_vec()),
    ]
}

/// Which of [`configs`] the nodes of a seed are given: A only in uniform seeds.
fn config_kinds(seed: u64) -> &'static [usize] {
    match seed % 5 {
        0 | 1 => &[0],
        2 => &[0, 1],
        3 => &[0, 2, 3],
        _ => &[0, 1, 2, 3, 4],
    }
}

/// When a node first starts (ms): a few much later than the others, so that while they
/// hold no membership, a wiped node and they could count as "empty".
fn first_start(rng: &mut SmallRng) -> u64 {
    if rng.random_bool(0.3) {
        rng.random_range(3_000..10_000)
    } else {
        rng.random_range(0..3_000)
    }
}

/// A minority of the nodes, none of them wipable, to start late.
fn stragglers(
    rng: &mut SmallRng,
    all: &[NodeId],
    wipable: &[NodeId],
    minority: usize,
) -> Vec<NodeId> {
    let mut late: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| !wipable.contains(id))
        .collect();
    late.shuffle(rng);
    late.truncate(minority);
    late
}

/// A node started with `--join` some of the others, in no config.
fn joiner(rng: &mut SmallRng, all: &[NodeId]) -> Node {
    let mut join = all.to_vec();
    join.truncate(rng.random_range(1..=all.len()));
    Node::new(None, join, rng.random_range(0..6_000), false)
}

impl World {
    fn new(seed: u64) -> (World, bool) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n: NodeId = *[3, 4, 5, 5, 7].choose(&mut rng).unwrap();
        let all: Vec<NodeId> = (1..=n).collect();
        let uniform = seed % 5 < 2;
        let short = *all.choose(&mut rng).unwrap();
        let configs = configs(&all, short);
        let kinds = config_kinds(seed);
        let minority = n as usize - Quorums::new(n as usize).classic();
        let mut wipable: Vec<NodeId> = all.clone();
        wipable.shuffle(&mut rng);
        wipable.truncate(minority);
        let mut nodes = BTreeMap::new();
        for &id in &all {
            let (token, list) = &configs[*kinds.choose(&mut rng).unwrap()];
            let founding = Founding::of(id, token, &addrs(list));
            let targets = list.iter().copied().filter(|&x| x != id).collect();
            let start = first_start(&mut rng);
            nodes.insert(
                id,
                Node::new(founding, targets, start, wipable.contains(&id)),
            );
        }
        // The hazard of a founding counted by a majority: a minority starts late, and while
        // it holds nothing, a node that founded with the others is wiped and restarted on
        // the stragglers' side of a partition (two faults of the model: a wiped disk, a cut).
        let straggle =
            (minority > 0 && rng.random_bool(if uniform { 0.8 } else { 0.3 })).then(|| {
                let late = stragglers(&mut rng, &all, &wipable, minority);
                for id in &late {
                    nodes.get_mut(id).unwrap().restart_at = rng.random_range(2_000..5_000);
                }
                (late, 0)
            });
        // The stragglers are cut off from the others (so that they hold nothing) until the
        // wipe, or 12 s.
        let partition = straggle
            .as_ref()
            .map(|(late, _)| (late.iter().copied().collect(), 12_000));
        if rng.random_bool(0.5) {
            nodes.insert(JOINER, joiner(&mut rng, &all));
        }
        let mut trace = Vec::new();
        if let Some((late, _)) = &straggle {
            trace.push(format!("stragglers {late:?}, cut off until the wipe"));
        }
        let world = World {
            rng,
            now: 0,
            nodes,
            net: Vec::new(),
            isolated: BTreeMap::new(),
            partition,
            straggle,
            quiet_until: 0,
            founded: BTreeMap::new(),
            operational: BTreeSet::new(),
            lost: BTreeSet::new(),
            next_round: 0,
            faults: BTreeMap::new(),
            trace,
        };
        (world, uniform)
    }

    fn faulty(&self) -> bool {
        self.now < FAULTY
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.isolated.contains_key(&a)
            || self.isolated.contains_key(&b)
            || self
                .partition
                .as_ref()
                .is_some_and(|(side, _)| side.contains(&a) != side.contains(&b))
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let faulty = self.faulty();
        if faulty && self.rng.random_bool(0.05) {
            return;
        }
        let copies = if faulty && self.rng.random_bool(0.05) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if faulty && self.rng.random_bool(0.05) {
                self.rng.random_range(100..3_000)
            } else {
                self.rng.random_range(1..20)
            };
            let msg = msg.clone();
            self.net.push(Flight {
                at: self.now + delay,
                from,
                to,
                msg,
            });
        }
    }

    fn deliver(&mut self) {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= self.now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.shuffle(&mut self.rng);
        for f in due {
            if self.cut(f.from, f.to) {
                continue;
            }
            let Some(node) = self.nodes.get_mut(&f.to).filter(|n| n.up) else {
                continue;
            };
            match f.msg {
                Msg::Ask { round } => {
                    let answer = match &node.membership {
                        Some(m) => Answer::Holds(m.clone()),
                        None => Answer::Empty {
                            founds: Founding::founds(node.founding.as_ref()),
                        },
                    };
                    self.send(f.to, f.from, Msg::Reply { round, answer });
                }
                Msg::Reply { round, answer } => {
                    // An answer reaches only the call that asked (a process's calls).
                    if let Some(r) = node.round.as_mut().filter(|r| r.id == round) {
                        if r.asked.contains(&f.from) {
                            r.answers.push((f.from, answer));
                        }
                    }
                }
            }
        }
    }

    fn tick_node(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.up || node.membership.is_some() {
            return;
        }
        let Some(round) = &node.round else {
            if now >= node.next_ask {
                self.next_round += 1;
                let round = Round {
                    id: self.next_round,
                    asked: node.targets.iter().copied().collect(),
                    answers: Vec::new(),
                    deadline: now + ASK_TIMEOUT,
                };
                let targets = node.targets.clone();
                node.round = Some(round);
                let r = self.next_round;
                for to in targets {
                    self.send(id, to, Msg::Ask { round: r });
                }
            }
            return;
        };
        let heard: BTreeSet<NodeId> = round.answers.iter().map(|(n, _)| *n).collect();
        if heard.len() < round.asked.len() && now < round.deadline {
            return;
        }
        let round = node.round.take().unwrap();
        node.next_ask = now + ASK_EVERY;
        // The runtime keys each answer by the config's node at the address asked: here
        // the address is the node.
        let decision = decide(node.founding.as_ref(), &round.answers);
        match decision {
            Start::Install(m) => {
                self.trace
                    .push(format!("{now} node {id} installs {:x}", m.cluster));
                node.membership = Some(m);
            }
            Start::Found(m) => {
                self.trace.push(format!(
                    "{now} node {id} founds {:x} hearing {:?}",
                    m.cluster, round.answers
                ));
                // Founding the same membership again is harmless as such (it is the same
                // epoch-1 membership a pull would install); what loses chosen values is a
                // founding counted with a store that lost them.
                let counted: BTreeSet<NodeId> = round
                    .answers
                    .iter()
                    .filter(|(_, a)| matches!(a, Answer::Empty { .. }))
                    .map(|(n, _)| *n)
                    .chain([id])
                    .collect();
                let lost: Vec<&NodeId> = counted.intersection(&self.lost).collect();
                assert!(
                    !self.operational.contains(&m.cluster) || lost.is_empty(),
                    "cluster {:x}, which a majority held, founded again by node {id} counting \
                     wiped nodes {lost:?}:\n{}",
                    m.cluster,
                    self.trace.join("\n")
                );
                self.founded.entry(m.cluster).or_insert(id);
                assert!(
                    self.founded.len() <= 1,
                    "two clusters founded at the same addresses {:?}:\n{}",
                    self.founded,
                    self.trace.join("\n")
                );
                node.membership = Some(m);
            }
            Start::Wait(_) => {}
        }
        self.update_operational();
    }

    fn update_operational(&mut self) {
        for &cluster in self.founded.keys() {
            let Some(m) = self
                .nodes
                .values()
                .filter_map(|n| n.membership.as_ref())
                .find(|m| m.cluster == cluster)
            else {
                continue;
            };
            let holders = m
                .members
                .iter()
                .filter(|x| {
                    self.nodes
                        .get(&x.id)
                        .and_then(|n| n.membership.as_ref())
                        .is_some_and(|h| h.cluster == cluster)
                })
                .count();
            if holders >= Quorums::new(m.members.len()).classic() {
                self.operational.insert(cluster);
            }
        }
    }

    fn fault(&mut self, what: &'static str) {
        *self.faults.entry(what).or_default() += 1;
    }

    fn inject(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let now = self.now;
        self.schedule_straggler_wipe();
        if let Some((late, at)) = self.straggle.clone().filter(|(_, at)| *at == now) {
            self.wipe_beside_stragglers(&late, at);
        }
        // No other fault while the stragglers' side decides (it is the scenario's point).
        if now < self.quiet_until {
            return;
        }
        if self.rng.random_bool(0.0008) {
            self.crash_one(&ids);
        }
        if self.rng.random_bool(0.0005) {
            self.cut_one_off(&ids);
        }
        if self.partition.is_none() && self.rng.random_bool(0.0003) {
            self.partition_at_random(&ids);
        }
    }

    /// Once a majority holds the membership and every straggler runs (and holds nothing):
    /// the wipe beside them, 200 ms later.
    fn schedule_straggler_wipe(&mut self) {
        if let Some((late, at)) = self.straggle.clone() {
            let ready = !self.operational.is_empty()
                && late.iter().all(|id| {
                    let n = &self.nodes[id];
                    n.up && n.membership.is_none()
                });
            if at == 0 && ready {
                self.straggle = Some((late.clone(), self.now + 200));
            }
        }
    }

    /// A node that holds the membership crashes, its disk wiped, and restarts on the
    /// stragglers' side of a partition; no other fault until the partition heals.
    fn wipe_beside_stragglers(&mut self, late: &[NodeId], at: u64) {
        let now = self.now;
        let holder = self
            .nodes
            .iter()
            .find(|(_, n)| n.up && n.wipable && n.membership.is_some())
            .map(|(id, _)| *id);
        if let Some(w) = holder {
            let node = self.nodes.get_mut(&w).unwrap();
            node.up = false;
            node.round = None;
            node.membership = None;
            node.restart_at = at + self.rng.random_range(50..300);
            self.lost.insert(w);
            let side: BTreeSet<NodeId> = late.iter().copied().chain([w]).collect();
            let until = at + self.rng.random_range(1_000..3_000);
            self.trace.push(format!(
                "{now} node {w} crashes, its disk wiped; partition {side:?} | the others, \
                 until {until}"
            ));
            self.isolated.retain(|id, _| !side.contains(id));
            self.partition = Some((side, until));
            self.quiet_until = until;
            self.fault("wipe beside stragglers");
        }
    }

    /// A node of `ids` crashes (if up), its disk wiped 70 % of the time (if wipable and it
    /// holds the membership), for 50 ms to 2 s.
    fn crash_one(&mut self, ids: &[NodeId]) {
        let now = self.now;
        let id = *ids.choose(&mut self.rng).unwrap();
        let wipe = self.rng.random_bool(0.7);
        let until = now + self.rng.random_range(50..2_000);
        let node = self.nodes.get_mut(&id).unwrap();
        if node.up {
            node.up = false;
            node.round = None;
            node.restart_at = until;
            let wiped = wipe && node.wipable && node.membership.is_some();
            if wiped {
                node.membership = None;
                self.lost.insert(id);
            }
            self.trace.push(format!(
                "{now} node {id} crashes{}",
                if wiped { ", its disk wiped" } else { "" }
            ));
            self.fault(if wiped { "wipe" } else { "crash" });
        }
    }

    /// A node of `ids` is cut off from everyone for 200 ms to 4 s.
    fn cut_one_off(&mut self, ids: &[NodeId]) {
        let now = self.now;
        let id = *ids.choose(&mut self.rng).unwrap();
        let until = now + self.rng.random_range(200..4_000);
        self.isolated.insert(id, until);
        self.trace.push(format!("{now} node {id} cut off"));
        self.fault("cut off");
    }

    /// `ids` split in two at random for 500 ms to 5 s.
    fn partition_at_random(&mut self, ids: &[NodeId]) {
        let now = self.now;
        let side: BTreeSet<NodeId> = ids
            .iter()
            .copied()
            .filter(|_| self.rng.random_bool(0.5))
            .collect();
        let until = now + self.rng.random_range(500..5_000);
        self.trace.push(format!(
            "{now} partition {side:?} | the others, until {until}"
        ));
        self.partition = Some((side, until));
        self.fault("partition");
    }

    fn run(&mut self) {
        while self.now < FAULTY + HEAL {
            self.now += 1;
            let now = self.now;
            if self.faulty() {
                self.inject();
            }
            self.isolated
                .retain(|_, until| *until > now && now < FAULTY);
            if self
                .partition
                .as_ref()
                .is_some_and(|(_, until)| *until <= now || now >= FAULTY)
            {
                self.partition = None;
            }
            for node in self.nodes.values_mut() {
                if !node.up && (node.restart_at <= now || now >= FAULTY) {
                    node.up = true;
                    node.next_ask = now;
                }
            }
            self.deliver();
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.tick_node(id);
            }
        }
    }
}

#[test]
fn seeded_first_starts_found_at_most_one_cluster_and_never_found_one_again() {
    let seeds = super::sim::seeds(100);
    let many = seeds.len() > 1;
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut founded, mut uniform_runs) = (0, 0);
    for seed in seeds {
        let (mut world, uniform) = World::new(seed);
        world.run();
        for (fault, n) in &world.faults {
            *faults.entry(fault).or_default() += n;
        }
        if !many {
            eprintln!("{}", world.trace.join("\n"));
        }
        founded += usize::from(!world.founded.is_empty());
        if uniform {
            uniform_runs += 1;
            for (id, node) in &world.nodes {
                assert!(
                    node.membership.is_some(),
                    "seed {seed}: node {id} holds no membership after every fault healed:\n{}",
                    world.trace.join("\n")
                );
            }
        }
    }
    eprintln!(
        "simulation of first starts: {founded} runs founded a cluster ({uniform_runs} with \
         one config); faults: {faults:?}"
    );
    for fault in [
        "crash",
        "wipe",
        "cut off",
        "partition",
        "wipe beside stragglers",
    ] {
        assert!(
            !many || faults.get(fault).is_some_and(|n| *n > 0),
            "no {fault} injected"
        );
    }
}
