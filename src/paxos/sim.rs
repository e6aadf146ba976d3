//! A seeded simulation of one key's Paxos: five acceptors, three proposers and a network that
//! drops, duplicates, delays and reorders messages, with acceptor crashes (restart from the
//! durable record) and a partition. After every step the invariants below are checked; at the
//! end the clients' history is checked for linearizability. A failing seed replays exactly:
//! `PAXKV_SIM_SEED=<seed> cargo test --lib sim`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::messages::{Ballot, Command, NodeId, Outcome, PeerMessage, Register, RequestId};
use crate::paxos::acceptor::{Acceptor, AcceptorRecord};
use crate::paxos::proposer::{Effect, Proposer, ProposerConfig};

#[path = "../../tests/support/convert.rs"]
mod convert;
#[path = "../../tests/support/linearizability.rs"]
mod linearizability;
use linearizability::{check_operations, describe, CheckResult, Input, Operation, Output};

const ACCEPTORS: [NodeId; 5] = [1, 2, 3, 4, 5];
const PROPOSERS: [NodeId; 3] = [1, 3, 5];

struct InFlight {
    from: NodeId,
    to: NodeId,
    msg: PeerMessage,
}

struct Sim {
    rng: SmallRng,
    now: Instant,
    start: Instant,
    acceptors: BTreeMap<NodeId, Acceptor>,
    durable: BTreeMap<NodeId, AcceptorRecord>,
    proposers: BTreeMap<NodeId, Proposer>,
    net: Vec<InFlight>,
    /// Nodes cut off from everyone else, both ways.
    isolated: Vec<NodeId>,
    /// Every state ever accepted, by ballot: one ballot must carry one state.
    accepted: BTreeMap<Ballot, Register>,
    history: Vec<Operation>,
    /// token → index into `history`
    open: BTreeMap<u64, usize>,
    /// token → the node whose proposer holds it
    owner: BTreeMap<u64, NodeId>,
    next_token: u64,
    drop_rate: f64,
    dup_rate: f64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let now = Instant::now();
        let proposers = PROPOSERS
            .iter()
            .map(|&node| {
                let cfg = ProposerConfig {
                    node,
                    nodes: ACCEPTORS.to_vec(),
                    phase_timeout: Duration::from_millis(40),
                    read_grace: Duration::from_millis(5),
                    backoff_min: Duration::from_millis(1),
                    backoff_max: Duration::from_millis(30),
                    max_batch: 8,
                    max_queue: 64,
                    fast_path: true,
                };
                (
                    node,
                    Proposer::new(cfg, SmallRng::seed_from_u64(seed ^ node as u64)),
                )
            })
            .collect();
        Sim {
            rng: SmallRng::seed_from_u64(seed),
            now,
            start: now,
            acceptors: ACCEPTORS
                .iter()
                .map(|&n| (n, Acceptor::default()))
                .collect(),
            durable: ACCEPTORS
                .iter()
                .map(|&n| (n, AcceptorRecord::default()))
                .collect(),
            proposers,
            net: Vec::new(),
            isolated: Vec::new(),
            accepted: BTreeMap::new(),
            history: Vec::new(),
            open: BTreeMap::new(),
            owner: BTreeMap::new(),
            next_token: 0,
            drop_rate: 0.05,
            dup_rate: 0.05,
        }
    }

    fn elapsed(&self) -> u64 {
        self.now.duration_since(self.start).as_micros() as u64
    }

    fn submit(&mut self, node: NodeId, command: Command) {
        self.next_token += 1;
        let token = self.next_token;
        let input = convert::input_of(&command);
        self.open.insert(token, self.history.len());
        self.owner.insert(token, node);
        self.history.push(Operation {
            client: token,
            key: b"k".to_vec(),
            input,
            call: self.elapsed(),
            ret: None,
            output: None,
        });
        let id = Some(RequestId {
            issued_ms: token,
            client: node as u64,
            seq: token,
        });
        let deadline = self.now + Duration::from_millis(400);
        let mut out = Vec::new();
        let p = self.proposers.get_mut(&node).unwrap();
        p.submit(self.now, token, command, id, deadline, &mut out);
        self.effects(node, out);
    }

    fn effects(&mut self, from: NodeId, out: Vec<Effect>) {
        for e in out {
            match e {
                Effect::Broadcast(msg) => {
                    for &to in &ACCEPTORS {
                        self.net.push(InFlight {
                            from,
                            to,
                            msg: msg.clone(),
                        });
                    }
                }
                Effect::Send(to, msg) => self.net.push(InFlight { from, to, msg }),
                Effect::Reply(token, result) => {
                    let i = self.open.remove(&token).expect("one reply per request");
                    self.owner.remove(&token);
                    if let Ok(outcome) = result {
                        self.history[i].ret = Some(self.elapsed());
                        self.history[i].output = Some(convert::output_of(outcome));
                    }
                    // An error leaves the outcome unknown, which the checker allows for.
                }
            }
        }
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        a != b && (self.isolated.contains(&a) || self.isolated.contains(&b))
    }

    /// Delivers (or drops, or duplicates) one message chosen at random: reordering for free.
    fn deliver_one(&mut self) {
        if self.net.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.net.len());
        let m = self.net.swap_remove(i);
        if self.cut(m.from, m.to) || self.rng.random_bool(self.drop_rate) {
            return;
        }
        if self.rng.random_bool(self.dup_rate) {
            self.net.push(InFlight {
                from: m.from,
                to: m.to,
                msg: m.msg.clone(),
            });
        }
        if m.msg.is_request() {
            let acceptor = self.acceptors.get_mut(&m.to).unwrap();
            let step = acceptor.step(m.msg);
            if let Some(record) = step.persist {
                if record.accepted != Ballot::FAST {
                    self.accepted
                        .entry(record.accepted)
                        .or_insert_with(|| record.state.clone());
                }
                self.durable.insert(m.to, record);
            }
            self.net.push(InFlight {
                from: m.to,
                to: m.from,
                msg: step.reply,
            });
        } else if let Some(p) = self.proposers.get_mut(&m.to) {
            let mut out = Vec::new();
            p.on_message(self.now, m.from, m.msg, &mut out);
            self.effects(m.to, out);
        }
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(1);
        for node in PROPOSERS {
            let mut out = Vec::new();
            self.proposers
                .get_mut(&node)
                .unwrap()
                .tick(self.now, &mut out);
            self.effects(node, out);
        }
    }

    fn crash_acceptor(&mut self, node: NodeId) {
        self.acceptors
            .insert(node, Acceptor::new(self.durable[&node].clone()));
    }

    /// Invariants that must hold after every step.
    fn check_invariants(&self) {
        for (node, a) in &self.acceptors {
            let rec = a.record();
            // One ballot carries one state, except the fast ballot, where several may be
            // accepted (and at most one chosen).
            if rec.accepted != Ballot::ZERO && rec.accepted != Ballot::FAST {
                assert_eq!(
                    self.accepted.get(&rec.accepted),
                    Some(&rec.state),
                    "acceptor {node} holds a second state for ballot {}",
                    rec.accepted
                );
            }
            assert_eq!(
                rec, &self.durable[node],
                "acceptor {node} answered from memory only"
            );
        }
        // Versions grow with ballots: a state accepted at a higher ballot never has a lower
        // version than one chosen below it (held by a majority at a classic ballot, or by a
        // fast quorum at the fast ballot).
        let mut holders: BTreeMap<Ballot, usize> = BTreeMap::new();
        let mut fast_holders: Vec<(&Register, usize)> = Vec::new();
        for a in self.acceptors.values() {
            let rec = a.record();
            if rec.accepted == Ballot::FAST {
                match fast_holders.iter_mut().find(|(s, _)| **s == rec.state) {
                    Some((_, n)) => *n += 1,
                    None => fast_holders.push((&rec.state, 1)),
                }
            } else {
                *holders.entry(rec.accepted).or_default() += 1;
            }
        }
        let mut chosen: Vec<(Ballot, u64)> = holders
            .iter()
            .filter(|(b, c)| **c >= 3 && **b != Ballot::ZERO)
            .map(|(b, _)| (*b, self.accepted[b].version))
            .collect();
        chosen.extend(
            fast_holders
                .iter()
                .filter(|(_, n)| *n >= 4)
                .map(|(s, _)| (Ballot::FAST, s.version)),
        );
        for (b, v) in chosen {
            for (higher, s) in self.accepted.range(b..) {
                assert!(
                    s.version >= v,
                    "ballot {higher} lost the version chosen at {b}"
                );
            }
        }
    }

    /// Replaces a proposer with a fresh one (a crash): its waiting callers never hear back,
    /// which the history records as unknown outcomes.
    fn restart_proposer(&mut self, node: NodeId, seed: u64) {
        let cfg = self.proposers[&node].config().clone();
        self.proposers
            .insert(node, Proposer::new(cfg, SmallRng::seed_from_u64(seed)));
        let lost: Vec<u64> = self
            .owner
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(t, _)| *t)
            .collect();
        for token in lost {
            self.owner.remove(&token);
            self.open.remove(&token);
        }
    }
}

fn run(seed: u64) {
    let mut sim = Sim::new(seed);
    let mut value = 0u64;
    for step in 0..6000u32 {
        if step % 500 == 250 {
            sim.isolated = vec![*ACCEPTORS.get(sim.rng.random_range(0..5)).unwrap()];
        }
        if step % 500 == 450 {
            sim.isolated.clear();
        }
        if sim.rng.random_bool(0.01) {
            let node = ACCEPTORS[sim.rng.random_range(0..5)];
            sim.crash_acceptor(node);
        }
        if sim.rng.random_bool(0.004) {
            // a fresh proposer tries the fast ballot again
            let node = PROPOSERS[sim.rng.random_range(0..PROPOSERS.len())];
            let seed = sim.rng.random();
            sim.restart_proposer(node, seed);
        }
        if step < 5000 && sim.rng.random_bool(0.08) {
            let node = PROPOSERS[sim.rng.random_range(0..PROPOSERS.len())];
            value += 1;
            let v = value.to_string().into_bytes();
            let command = match sim.rng.random_range(0..4) {
                0 => Command::Get,
                1 => Command::Put { value: v },
                2 => Command::Delete,
                _ => Command::Cas {
                    expect: sim.rng.random_range(0..4),
                    value: v,
                },
            };
            sim.submit(node, command);
        }
        for _ in 0..3 {
            sim.deliver_one();
        }
        if step % 2 == 0 {
            sim.tick();
        }
        sim.check_invariants();
    }
    // Heal and let everything finish.
    sim.isolated.clear();
    sim.drop_rate = 0.0;
    for _ in 0..20_000 {
        if sim.open.is_empty() && sim.net.is_empty() {
            break;
        }
        sim.deliver_one();
        sim.tick();
        sim.check_invariants();
    }
    assert!(sim.open.is_empty(), "seed {seed}: requests never answered");
    let completed = sim.history.iter().filter(|o| o.output.is_some()).count();
    assert!(
        completed > 50,
        "seed {seed}: only {completed} operations completed"
    );
    let result = check_operations(&sim.history, Duration::from_secs(20));
    assert!(
        matches!(result, CheckResult::Ok),
        "seed {seed}: not linearizable\n{}",
        describe(&sim.history, &result)
    );
}

#[test]
fn seeded_runs_with_message_faults_and_crashes_stay_linearizable() {
    let seeds: Vec<u64> = match std::env::var("PAXKV_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("PAXKV_SIM_SEED is a number")],
        Err(_) => (1..=24).collect(),
    };
    for seed in seeds {
        run(seed);
    }
}
