//! Message-by-message tests of the proposer, driving it by hand against in-memory acceptors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;

use super::*;
use crate::paxos::acceptor::Acceptor;
use crate::paxos::record::AcceptorRecord;

const NODES: [NodeId; 5] = [1, 2, 3, 4, 5];

fn config(node: NodeId) -> ProposerConfig {
    ProposerConfig {
        epoch: 1,
        member: true,
        joining: vec![],
        node,
        nodes: NODES.to_vec(),
        phase_timeout: Duration::from_millis(100),
        read_grace: Duration::from_millis(10),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        max_batch: 16,
        max_queue: 4,
        fast_path: false,
        settle_fast_writes: true,
        thrifty: false,
        spread: 0,
    }
}

fn proposer(node: NodeId) -> Proposer {
    Proposer::new(config(node), SmallRng::seed_from_u64(node as u64))
}

fn put(v: &str) -> Command {
    Command::Put {
        value: v.as_bytes().to_vec(),
    }
}

fn id(seq: u64) -> Option<RequestId> {
    Some(RequestId { client: 1, seq })
}

/// The messages in `out` addressed to `node`, and the replies.
/// Submits `command` with a deadline a second away; returns the effects.
fn submit(
    p: &mut Proposer,
    now: Instant,
    token: Token,
    command: Command,
    write_id: Option<RequestId>,
) -> Vec<Effect> {
    let mut out = Vec::new();
    p.submit(
        now,
        token,
        command,
        write_id,
        false,
        now + Duration::from_secs(1),
        &mut out,
    );
    out
}

/// The outcome of a read that found `value` at `version`.
fn read(value: &str, version: u64) -> Result<Outcome, Error> {
    Ok(Outcome::Get {
        value: Some(value.as_bytes().to_vec()),
        version,
    })
}

fn sent_to(out: &[Effect], node: NodeId) -> Vec<PeerMessage> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) => Some(m.clone()),
            Effect::Multicast(to, m) if to.contains(&node) => Some(m.clone()),
            Effect::Send(to, m) if *to == node => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn replies(out: &[Effect]) -> Vec<(Token, Result<Outcome, Error>)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Reply(t, r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

/// Delivers every message in `out` to the acceptors in `reachable` and feeds their answers
/// back; returns the effects of the answers.
fn exchange(
    p: &mut Proposer,
    acceptors: &mut [Acceptor],
    reachable: &[NodeId],
    now: Instant,
    out: Vec<Effect>,
) -> Vec<Effect> {
    let mut next = Vec::new();
    for &node in reachable {
        for msg in sent_to(&out, node) {
            let reply = acceptors[node as usize - 1].step(msg).reply;
            p.on_message(now, node, p.id(), reply, &mut next);
        }
    }
    next
}

/// Exchanges messages and advances the clock 10 ms at a time until the proposer answers.
fn drive(
    p: &mut Proposer,
    acceptors: &mut [Acceptor],
    reachable: &[NodeId],
    start: Instant,
    mut out: Vec<Effect>,
) -> Vec<(Token, Result<Outcome, Error>)> {
    let mut now = start;
    loop {
        let answers = replies(&out);
        if !answers.is_empty() {
            return answers;
        }
        assert!(now < start + Duration::from_secs(5), "no answer");
        let mut next = exchange(p, acceptors, reachable, now, out);
        if next.is_empty() {
            now += Duration::from_millis(10);
            p.tick(now, &mut next);
        }
        out = next;
    }
}

fn acceptors() -> Vec<Acceptor> {
    (0..5).map(|_| Acceptor::default()).collect()
}

#[test]
fn a_write_with_a_majority_takes_two_round_trips_then_one() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let out = submit(&mut p, now, 1, put("a"), id(1));
    assert!(matches!(sent_to(&out, 2)[0], PeerMessage::Prepare { .. }));
    let out = exchange(&mut p, &mut accs, &[1, 2, 3], now, out);
    assert!(matches!(sent_to(&out, 1)[0], PeerMessage::Accept { .. }));
    let out = exchange(&mut p, &mut accs, &[1, 2, 3], now, out);
    assert_eq!(replies(&out), vec![(1, Ok(Outcome::Put { version: 1 }))]);

    // §2.2.1: the majority promised the next ballot in the same write, so no Prepare now.
    let out = submit(&mut p, now, 2, put("b"), id(2));
    assert!(matches!(sent_to(&out, 1)[0], PeerMessage::Accept { .. }));
    let out = exchange(&mut p, &mut accs, &[1, 2, 3], now, out);
    assert_eq!(replies(&out), vec![(2, Ok(Outcome::Put { version: 2 }))]);
}

#[test]
fn the_state_with_the_highest_accepted_ballot_is_carried_forward() {
    let now = Instant::now();
    let mut accs = acceptors();
    // Proposer 1 gets "a" chosen on {1,2,3}.
    let mut p1 = proposer(1);
    let out = submit(&mut p1, now, 1, put("a"), id(1));
    let out = exchange(&mut p1, &mut accs, &[1, 2, 3], now, out);
    exchange(&mut p1, &mut accs, &[1, 2, 3], now, out);
    // Proposer 2 only reaches {3,4,5}: node 3 carries the chosen state forward.
    let mut p2 = proposer(2);
    let out = submit(&mut p2, now, 7, Command::Get, None);
    // the quick read cannot agree ({4,5} never accepted anything, {1,2} do not answer), so
    // at the phase timeout it falls back to a full round
    let out = exchange(&mut p2, &mut accs, &[3, 4, 5], now, out);
    assert!(replies(&out).is_empty());
    let now = now + Duration::from_millis(100);
    let mut out = Vec::new();
    p2.tick(now, &mut out);
    assert!(matches!(sent_to(&out, 3)[0], PeerMessage::Prepare { .. }));
    // node 3 promised proposer 1's next ballot, so the first Prepare is rejected; the retry
    // goes above it
    assert_eq!(
        drive(&mut p2, &mut accs, &[3, 4, 5], now, out),
        vec![(7, read("a", 1))]
    );
}

#[test]
fn a_rejection_drops_the_cached_promise_and_the_retry_goes_above_the_rival() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p1 = proposer(1);
    let out = submit(&mut p1, t0, 1, put("a"), id(1));
    let out = exchange(&mut p1, &mut accs, &NODES, t0, out);
    exchange(&mut p1, &mut accs, &NODES, t0, out);
    // A rival prepares a much higher ballot on every acceptor.
    for a in &mut accs {
        a.step(PeerMessage::Prepare {
            ballot: Ballot::new(50, 2),
        });
    }
    let out = submit(&mut p1, t0, 2, put("b"), id(2));
    let out = exchange(&mut p1, &mut accs, &NODES, t0, out);
    assert!(replies(&out).is_empty(), "no answer without a majority");
    // After the backoff the retry prepares above the rival's ballot and succeeds.
    let t1 = t0 + Duration::from_millis(30);
    let mut out = Vec::new();
    p1.tick(t1, &mut out);
    let prepare = sent_to(&out, 1);
    assert!(
        matches!(prepare[0], PeerMessage::Prepare { ballot } if ballot > Ballot::new(50, 2)),
        "{prepare:?}"
    );
    let out = exchange(&mut p1, &mut accs, &NODES, t1, out);
    let out = exchange(&mut p1, &mut accs, &NODES, t1, out);
    assert_eq!(replies(&out), vec![(2, Ok(Outcome::Put { version: 2 }))]);
}

#[test]
fn without_a_majority_a_request_ends_unavailable_or_unknown_at_its_deadline() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let mut out = Vec::new();
    p.submit(
        t0,
        1,
        put("a"),
        id(1),
        false,
        t0 + Duration::from_millis(500),
        &mut out,
    );
    // Only two acceptors reachable: the Prepare never gets a majority.
    let out = exchange(&mut p, &mut accs, &[1, 2], t0, out);
    assert!(replies(&out).is_empty());
    let mut out = Vec::new();
    let mut t = t0;
    while replies(&out).is_empty() {
        t += Duration::from_millis(10);
        let mut step = Vec::new();
        p.tick(t, &mut step);
        let answers = exchange(&mut p, &mut accs, &[1, 2], t, step.clone());
        out.extend(step);
        out.extend(answers);
        assert!(t < t0 + Duration::from_secs(2), "no answer at the deadline");
    }
    assert!(t >= t0 + Duration::from_millis(500));
    assert!(matches!(replies(&out)[0].1, Err(Error::Unavailable(_))));

    // An Accept that went out but never gathered a majority: outcome unknown.
    let mut p = proposer(3);
    let mut accs = acceptors();
    let mut out = Vec::new();
    p.submit(
        t,
        2,
        put("b"),
        id(2),
        false,
        t + Duration::from_millis(100),
        &mut out,
    );
    let accept = exchange(&mut p, &mut accs, &[1, 2, 3], t, out);
    exchange(&mut p, &mut accs, &[1], t, accept);
    let mut out = Vec::new();
    p.tick(t + Duration::from_millis(100), &mut out);
    assert!(matches!(replies(&out)[0].1, Err(Error::Unknown(_))));
}

#[test]
fn a_batch_retried_after_a_lost_accepted_does_not_apply_twice() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let mut out = Vec::new();
    p.submit(
        t0,
        1,
        put("a"),
        id(1),
        false,
        t0 + Duration::from_secs(5),
        &mut out,
    );
    let accept = exchange(&mut p, &mut accs, &NODES, t0, out);
    // Every acceptor takes the Accept, but all the Accepted replies are lost.
    for a in &mut accs {
        for m in sent_to(&accept, 1) {
            a.step(m);
        }
    }
    // The phase times out and the batch is retried with a fresh Prepare.
    let mut t = t0;
    let mut answered = Vec::new();
    while answered.is_empty() {
        t += Duration::from_millis(20);
        let mut out = Vec::new();
        p.tick(t, &mut out);
        let out = exchange(&mut p, &mut accs, &NODES, t, out);
        let out = exchange(&mut p, &mut accs, &NODES, t, out);
        answered = replies(&out);
        assert!(t < t0 + Duration::from_secs(2));
    }
    assert_eq!(answered, vec![(1, Ok(Outcome::Put { version: 1 }))]);
    assert_eq!(accs[0].record().state.version, 1, "applied once");
}

#[test]
fn duplicated_and_reordered_replies_are_counted_once() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let out = submit(&mut p, now, 1, put("a"), id(1));
    let prepare = sent_to(&out, 1)[0].clone();
    let promise = accs[0].step(prepare.clone()).reply;
    // the same promise three times is still one vote
    let mut out = Vec::new();
    for _ in 0..3 {
        p.on_message(now, 1, p.id(), promise.clone(), &mut out);
    }
    // a duplicated Prepare draws a Reject from the acceptor that already promised: ignored
    let dup = accs[0].step(prepare.clone()).reply;
    assert!(matches!(dup, PeerMessage::Reject { .. }));
    p.on_message(now, 1, p.id(), dup, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // two more acceptors make a majority
    for node in [2, 3] {
        let promise = accs[node as usize - 1].step(prepare.clone()).reply;
        p.on_message(now, node, p.id(), promise, &mut out);
    }
    assert!(matches!(sent_to(&out, 1)[0], PeerMessage::Accept { .. }));
}

#[test]
fn requests_queued_behind_a_round_are_batched_into_the_next_one() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let mut out = Vec::new();
    let deadline = now + Duration::from_secs(1);
    p.submit(now, 1, put("a"), id(1), false, deadline, &mut out);
    p.submit(now, 2, put("b"), id(2), false, deadline, &mut Vec::new());
    p.submit(now, 3, Command::Get, None, false, deadline, &mut Vec::new());
    p.submit(
        now,
        4,
        Command::Delete,
        id(4),
        false,
        deadline,
        &mut Vec::new(),
    );
    let mut rejected = Vec::new();
    p.submit(
        now,
        5,
        Command::Delete,
        id(5),
        false,
        deadline,
        &mut rejected,
    );
    let mut rejected = Vec::new();
    p.submit(
        now,
        6,
        Command::Delete,
        id(6),
        false,
        deadline,
        &mut rejected,
    );
    assert!(
        matches!(replies(&rejected)[0], (6, Err(Error::Busy(_)))),
        "the queue is bounded"
    );
    let out = exchange(&mut p, &mut accs, &NODES, now, out);
    // the first round carries "a" alone; its completion starts one Accept for the rest
    let out = exchange(&mut p, &mut accs, &NODES, now, out);
    let accepts: Vec<_> = sent_to(&out, 1)
        .into_iter()
        .filter(|m| matches!(m, PeerMessage::Accept { .. }))
        .collect();
    assert_eq!(accepts.len(), 1, "one round for the queued four");
    let out = exchange(&mut p, &mut accs, &NODES, now, out);
    assert_eq!(
        replies(&out),
        vec![
            (2, Ok(Outcome::Put { version: 2 })),
            (3, read("b", 2)),
            (
                4,
                Ok(Outcome::Delete {
                    deleted: true,
                    version: 3
                })
            ),
            (
                5,
                Ok(Outcome::Delete {
                    deleted: false,
                    version: 3
                })
            ),
        ]
    );
}

/// A quick read asks with `Read`, whose answers carry no remembered writes: it answers the
/// get from them, but never sends such a state in an Accept. Seeing an acceptor behind, it
/// asks with `Query` (full states) next time, and repairs from that.
#[test]
fn a_quick_read_answers_in_one_round_trip_and_repairs_a_stale_acceptor() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p1 = proposer(1);
    let out = submit(&mut p1, now, 1, put("a"), id(1));
    let out = exchange(&mut p1, &mut accs, &[1, 2, 3, 4], now, out);
    exchange(&mut p1, &mut accs, &[1, 2, 3, 4], now, out);
    assert_eq!(accs[0].record().state.recent.len(), 1);
    // node 5 missed the write
    let mut p2 = proposer(2);
    let out = submit(&mut p2, now, 9, Command::Get, None);
    assert!(matches!(sent_to(&out, 5)[0], PeerMessage::Read { .. }));
    assert!(
        matches!(
            accs[0].step(PeerMessage::Read { read: 99 }).reply,
            PeerMessage::ReadReply { .. }
        ),
        "answered without the remembered writes"
    );
    let out = exchange(&mut p2, &mut accs, &[5, 1, 2, 3], now, out);
    assert_eq!(replies(&out), vec![(9, read("a", 1))]);
    assert!(sent_to(&out, 5).is_empty(), "repaired from a light state");
    // the next read asks for full states, and repairs node 5 with the whole state
    let out = submit(&mut p2, now, 10, Command::Get, None);
    assert!(matches!(sent_to(&out, 5)[0], PeerMessage::Query { .. }));
    let out = exchange(&mut p2, &mut accs, &[5, 1, 2, 3], now, out);
    assert_eq!(replies(&out), vec![(10, read("a", 1))]);
    let repair = sent_to(&out, 5);
    assert!(
        matches!(repair[0], PeerMessage::Accept { next: None, .. }),
        "{repair:?}"
    );
    accs[4].step(repair[0].clone());
    assert_eq!(
        accs[4].record().state,
        accs[0].record().state,
        "node 5 repaired"
    );
    // and once nothing is behind, reads go back to `Read`
    let out = submit(&mut p2, now, 11, Command::Get, None);
    assert!(matches!(sent_to(&out, 5)[0], PeerMessage::Read { .. }));
    assert!(accs
        .iter()
        .all(|a| a.record().accepted == accs[0].record().accepted));
}

/// The last of the three guards against counting answers without their writes at the fast
/// ballot (module doc, "Reads that carry no remembered writes"): even four alike, a fast
/// quorum of five, they show nothing chosen; the same states whole do.
#[test]
fn light_states_at_the_fast_ballot_are_never_counted_as_chosen() {
    let light = Vote {
        accepted: Ballot::FAST,
        state: Register {
            version: 1,
            value: Some(b"v".to_vec()),
            ..Register::default()
        },
        fast_unknown: false,
        full: false,
    };
    let replies: BTreeMap<NodeId, Vote> = (1..=4).map(|n| (n, light.clone())).collect();
    assert!(!matches!(
        read_answers(&replies, 5, 3, 4, None),
        QuickRead::Chosen(..)
    ));
    let whole: BTreeMap<NodeId, Vote> = replies
        .into_iter()
        .map(|(n, v)| (n, Vote { full: true, ..v }))
        .collect();
    assert!(matches!(
        read_answers(&whole, 5, 3, 4, None),
        QuickRead::Chosen(b, _) if b == Ballot::FAST
    ));
}

/// A state this proposer saw chosen at the fast ballot (module doc): a majority holding it
/// answers a thrifty read through that proposer at once, with no widening. (Mutant
/// `known-fast-never-used` fails the first read.)
#[test]
fn the_writer_of_a_state_chosen_at_the_fast_ballot_reads_it_from_a_majority() {
    let now = Instant::now();
    let mut accs = acceptors();
    let cfg = ProposerConfig {
        fast_path: true,
        settle_fast_writes: false,
        thrifty: true,
        ..config(1)
    };
    let mut writer = Proposer::new(cfg, SmallRng::seed_from_u64(1));
    let out = submit(&mut writer, now, 1, put("a"), id(1));
    let done = exchange(&mut writer, &mut accs, &[1, 2, 3, 4], now, out);
    assert_eq!(replies(&done), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    assert!(accs
        .iter()
        .take(4)
        .all(|a| a.record().accepted == Ballot::FAST));
    writer.take_rounds();
    // The key's majority (spread 0: nodes 1, 2, 3) holds it at the fast ballot; 4 and 5 are
    // silent. The writer answers from the three.
    let out = submit(&mut writer, now, 2, Command::Get, None);
    assert_eq!(addressed(&out), vec![1, 2, 3]);
    let answered = exchange(&mut writer, &mut accs, &[1, 2, 3], now, out);
    assert_eq!(replies(&answered), vec![(2, read("a", 1))]);
    let rounds = writer.take_rounds();
    assert_eq!(rounds[RoundKind::KnownFastRead.index()].1, 1);
    assert_eq!(rounds[RoundKind::Widened.index()].1, 0, "asked no one else");
    // Another proposer knows nothing of it: the same three prove nothing there.
    let mut other = thrifty(2, 0);
    let out = submit(&mut other, now, 3, Command::Get, None);
    let partial = exchange(&mut other, &mut accs, &[1, 2, 3], now, out);
    assert!(
        replies(&partial).is_empty(),
        "three fast acceptances prove nothing"
    );
}

/// What the known state may never be counted from: another state at the fast ballot with the
/// same value (another write), a state without its remembered writes, a reply that may have
/// lost a fast vote, or fewer than a majority.
#[test]
fn a_known_fast_state_counts_only_whole_equal_states_on_a_majority() {
    let write = |client| crate::paxos::types::Remembered {
        id: RequestId { client, seq: 1 },
        outcome: crate::paxos::types::WriteOutcome::Put { version: 1 },
    };
    let state = |client| Register {
        version: 1,
        value: Some(b"v".to_vec()),
        recent: crate::paxos::types::RecentWrites::from_writes(&[write(client)]).unwrap(),
        ..Register::default()
    };
    let vote = |client, full, fast_unknown| Vote {
        accepted: Ballot::FAST,
        state: state(client),
        fast_unknown,
        full,
    };
    let known = state(7);
    let chosen = |replies: &[(NodeId, Vote)]| {
        let replies: BTreeMap<NodeId, Vote> = replies.iter().cloned().collect();
        matches!(
            read_answers(&replies, 5, 3, 4, Some(&known)),
            QuickRead::Chosen(b, s) if b == Ballot::FAST && s == known
        )
    };
    let k = || vote(7, true, false);
    assert!(chosen(&[(1, k()), (2, k()), (3, k())]));
    assert!(!chosen(&[(1, k()), (2, k())]), "two of five");
    assert!(
        !chosen(&[(1, k()), (2, k()), (3, vote(8, true, false))]),
        "another write with the same value"
    );
    assert!(
        !chosen(&[(1, k()), (2, k()), (3, vote(7, false, false))]),
        "a light state"
    );
    assert!(
        !chosen(&[(1, k()), (2, k()), (3, vote(7, true, true))]),
        "a reply that may have lost a fast vote"
    );
}

fn fast_proposer(node: NodeId) -> Proposer {
    let cfg = ProposerConfig {
        epoch: 1,
        fast_path: true,
        ..config(node)
    };
    Proposer::new(cfg, SmallRng::seed_from_u64(node as u64))
}

/// Review of 2026-12-06: the fast Accept's `next` is (1, node) for every proposer instance
/// of a node. An instance that cached it used it for a write that reached one acceptor, then
/// retired; the first write's client retried it through the same node, whose new instance's
/// fast Accept was a duplicate at the others. Had their answers confirmed the promise of
/// (1, node) they hold (the predecessor's), the new instance would have taken that ballot for
/// its next write: two states at (1, node), and a read could return the one never chosen.
#[test]
fn a_repeated_fast_accept_never_lends_a_new_instance_its_predecessors_ballot() {
    let now = Instant::now();
    let mut accs = acceptors();
    let unsettled = |node, seed| {
        let cfg = ProposerConfig {
            epoch: 1,
            fast_path: true,
            settle_fast_writes: false,
            ..config(node)
        };
        Proposer::new(cfg, SmallRng::seed_from_u64(seed))
    };
    let mut p1 = unsettled(1, 1);
    let out = submit(&mut p1, now, 1, put("a"), id(1));
    let done = exchange(&mut p1, &mut accs, &NODES, now, out);
    assert_eq!(replies(&done), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    // the next write takes the cached (1, 1) at once; its Accept reaches node 2 alone
    let out = submit(&mut p1, now, 2, put("b"), id(2));
    assert!(matches!(
        &sent_to(&out, 2)[..],
        [PeerMessage::Accept { ballot, .. }] if *ballot == Ballot::new(1, 1)
    ));
    exchange(&mut p1, &mut accs, &[2], now, out);
    // a new instance on node 1, and the first write retried through it
    let mut p2 = unsettled(1, 2);
    assert_ne!(p2.id(), p1.id());
    let out = submit(&mut p2, now, 3, put("a"), id(1));
    let done = exchange(&mut p2, &mut accs, &[1, 3, 4, 5], now, out);
    assert_eq!(replies(&done), vec![(3, Ok(Outcome::Put { version: 1 }))]);
    let out = submit(&mut p2, now, 4, put("c"), id(3));
    assert!(
        !sent_to(&out, 3).iter().any(
            |m| matches!(m, PeerMessage::Accept { ballot, .. } if *ballot == Ballot::new(1, 1))
        ),
        "the predecessor's ballot taken without a Prepare: {out:?}"
    );
    let answers = drive(&mut p2, &mut accs, &NODES, now, out);
    assert!(
        matches!(answers[..], [(4, Ok(Outcome::Put { .. }))]),
        "{answers:?}"
    );
    for a in &accs {
        for b in &accs {
            if a.record().accepted == b.record().accepted {
                assert_eq!(
                    a.record().state,
                    b.record().state,
                    "two states at one ballot"
                );
            }
        }
    }
}

#[test]
fn a_first_write_on_a_fresh_key_takes_one_round_trip_at_the_fast_ballot() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p = fast_proposer(1);
    let out = submit(&mut p, now, 1, put("a"), id(1));
    assert!(
        matches!(sent_to(&out, 2)[0], PeerMessage::Accept { ballot, .. } if ballot == Ballot::FAST),
        "no Prepare before a fast Accept"
    );
    // a classic majority is not enough at the fast ballot
    let partial = exchange(&mut p, &mut accs, &[1, 2, 3], now, out.clone());
    assert!(replies(&partial).is_empty());
    let done = exchange(&mut p, &mut accs, &[4], now, out);
    assert_eq!(replies(&done), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    // at once the chosen state is settled at the classic ballot the fast Accept's `next`
    // promised, with no Prepare (issue 8: a key must not stay at the fast ballot)
    let settle = sent_to(&done, 1);
    assert!(
        matches!(&settle[..], [PeerMessage::Accept { ballot, state, .. }]
            if *ballot == Ballot::new(1, 1) && state.version == 1),
        "{settle:?}"
    );
    let settled = exchange(&mut p, &mut accs, &[1, 2, 3, 4, 5], now, done);
    assert!(replies(&settled).is_empty(), "nobody waits for a settle");
    assert!(accs
        .iter()
        .all(|a| a.record().accepted == Ballot::new(1, 1)));
    // and the next write skips Prepare too (the settle carried the next promise)
    let out = submit(&mut p, now, 2, put("b"), id(2));
    assert!(
        matches!(sent_to(&out, 1)[0], PeerMessage::Accept { ballot, .. } if ballot > Ballot::new(1, 1))
    );
}

#[test]
fn a_fast_write_short_of_a_fast_quorum_falls_back_to_a_classic_round() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut p = fast_proposer(1);
    let out = submit(&mut p, now, 1, put("a"), id(1));
    // nodes 4 and 5 are down: three fast acceptances, then the grace, then a classic round
    assert_eq!(
        drive(&mut p, &mut accs, &[1, 2, 3], now, out),
        vec![(1, Ok(Outcome::Put { version: 1 }))]
    );
    assert!(
        accs[0].record().accepted > Ballot::FAST,
        "settled at a classic ballot"
    );
}

/// Fast Paxos recovery: two proposers raced at the fast ballot. Where one state reached a
/// fast quorum it was chosen, and a classic round must carry it forward, even when the
/// classic quorum it reads holds the other state too.
#[test]
fn a_state_chosen_at_the_fast_ballot_is_recovered_by_the_next_classic_round() {
    let now = Instant::now();
    let mut accs = acceptors();
    let (mut p1, mut p2) = (fast_proposer(1), fast_proposer(2));
    let out1 = submit(&mut p1, now, 1, put("one"), id(1));
    let out2 = submit(&mut p2, now, 2, put("two"), id(2));
    // "one" reaches acceptors 1-4 (a fast quorum: chosen), "two" only acceptor 5
    let done = exchange(&mut p1, &mut accs, &[1, 2, 3, 4], now, out1);
    assert_eq!(replies(&done), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    exchange(&mut p2, &mut accs, &[5], now, out2);
    // a third proposer reads through {3,4,5}: "one" twice, "two" once
    let mut p3 = proposer(3);
    let out = submit(&mut p3, now, 9, Command::Get, None);
    assert_eq!(
        drive(&mut p3, &mut accs, &[3, 4, 5], now, out),
        vec![(9, read("one", 1))]
    );
}

#[test]
fn a_quick_read_answers_a_state_chosen_at_the_fast_ballot_only_from_a_fast_quorum() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut writer = fast_proposer(1);
    let out = submit(&mut writer, now, 1, put("a"), id(1));
    // acceptors 1-4 take it (chosen at the fast ballot); 5 never hears of it
    exchange(&mut writer, &mut accs, &[1, 2, 3, 4], now, out);
    let mut reader = proposer(2);
    let out = submit(&mut reader, now, 9, Command::Get, None);
    let answered = exchange(&mut reader, &mut accs, &NODES, now, out.clone());
    assert_eq!(
        replies(&answered),
        vec![(9, read("a", 1))],
        "four equal states at the fast ballot answer at once"
    );
    // three of them do not: with 4 and 5 silent, the read settles with a full round
    let mut reader = proposer(3);
    let out = submit(&mut reader, now, 10, Command::Get, None);
    let partial = exchange(&mut reader, &mut accs, &[1, 2, 3], now, out);
    assert!(
        replies(&partial).is_empty(),
        "three fast acceptances prove nothing"
    );
}

#[test]
fn acceptors_that_cannot_write_end_the_phase_early_and_are_named_in_the_error() {
    let t0 = Instant::now();
    let mut p = proposer(1);
    let out = submit(&mut p, t0, 1, put("a"), id(1));
    let Some(PeerMessage::Prepare { ballot }) = sent_to(&out, 1).first().cloned() else {
        panic!("no Prepare: {out:?}");
    };
    let failed = |node: NodeId| PeerMessage::Failed {
        ballot,
        reason: format!("node {node}: storage: MDB_MAP_FULL"),
    };
    // Two failures leave three acceptors: a quorum may still answer, so the phase goes on.
    let mut out = Vec::new();
    p.on_message(t0, 1, p.id(), failed(1), &mut out);
    p.on_message(t0, 2, p.id(), failed(2), &mut out);
    let phase_end = t0 + p.config().phase_timeout;
    assert_eq!(p.next_wakeup(), Some(phase_end));
    // A late duplicate or a failure for another ballot changes nothing.
    p.on_message(t0, 2, p.id(), failed(2), &mut out);
    let stale = PeerMessage::Failed {
        ballot: Ballot::new(ballot.round + 7, 9),
        reason: "stale".into(),
    };
    p.on_message(t0, 3, p.id(), stale, &mut out);
    assert_eq!(p.next_wakeup(), Some(phase_end));
    // The third leaves no quorum: the proposer backs off now instead of at the phase timeout.
    p.on_message(t0, 3, p.id(), failed(3), &mut out);
    assert!(
        p.next_wakeup().unwrap() < phase_end,
        "still waiting out the phase"
    );
    assert!(replies(&out).is_empty());

    // At the deadline, the error says why.
    let mut out = Vec::new();
    p.tick(t0 + Duration::from_secs(1), &mut out);
    let answered = replies(&out);
    assert_eq!(answered.len(), 1, "{out:?}");
    let Err(Error::Unavailable(why)) = &answered[0].1 else {
        panic!("{answered:?}");
    };
    assert!(
        why.contains("storage failed on node(s) 1, 2, 3: node 1: storage: MDB_MAP_FULL"),
        "{why}"
    );
}

/// Issue 8, bugs 2 and 3: a new proposer instance on the same node (after a crash or a
/// retirement) reuses the fast ballot and restarts its read numbers at 1, so late replies to
/// its predecessor look like its own. They carry the predecessor's id and change nothing.
#[test]
fn replies_to_an_earlier_proposer_instance_are_never_counted_by_its_successor() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut old = fast_proposer(1);
    let out = submit(&mut old, now, 1, put("old"), id(1));
    // acceptors 1-4 take the predecessor's fast Accept; their replies are late
    let late: Vec<(NodeId, PeerMessage)> = (1..=4)
        .map(|n| {
            (
                n,
                accs[n as usize - 1].step(sent_to(&out, n)[0].clone()).reply,
            )
        })
        .collect();
    let old_read = old_read_replies(&mut accs);
    // the successor (another seed, another id) tries the fast ballot for another write
    let mut new = Proposer::new(
        ProposerConfig {
            epoch: 1,
            fast_path: true,
            ..config(1)
        },
        SmallRng::seed_from_u64(99),
    );
    assert_ne!(new.id(), old.id());
    let out = submit(&mut new, now, 2, put("new"), id(2));
    assert!(
        matches!(sent_to(&out, 5)[0], PeerMessage::Accept { ballot, .. } if ballot == Ballot::FAST)
    );
    let mut effects = Vec::new();
    for (node, reply) in late {
        new.on_message(now, node, old.id(), reply, &mut effects);
    }
    assert!(effects.is_empty(), "late replies were counted: {effects:?}");
    // and a read of the successor ignores the predecessor's read replies (both are read 1)
    let mut reader = Proposer::new(config(1), SmallRng::seed_from_u64(7));
    let out = submit(&mut reader, now, 3, Command::Get, None);
    assert!(matches!(sent_to(&out, 1)[0], PeerMessage::Read { read: 1 }));
    let mut effects = Vec::new();
    for (node, reply) in old_read {
        reader.on_message(now, node, old.id(), reply, &mut effects);
    }
    assert!(
        replies(&effects).is_empty(),
        "a read answered from late replies"
    );
}

/// Answers to a read numbered 1 (`ReadReply` and `QueryReply`), as a predecessor instance
/// would have received.
fn old_read_replies(accs: &mut [Acceptor]) -> Vec<(NodeId, PeerMessage)> {
    let mut replies = Vec::new();
    for request in [
        PeerMessage::Read { read: 1 },
        PeerMessage::Query { read: 1 },
    ] {
        for n in 1..=5 {
            let reply = accs[n as usize - 1].step(request.clone()).reply;
            replies.push((n, reply));
        }
    }
    replies
}

/// Issue 8, bug 4: a command whose deadline passed while its round was still preparing is
/// answered "unavailable" ("certainly did not take effect"), so no later Accept may carry it,
/// even when its batch goes on with other commands.
#[test]
fn a_command_answered_unavailable_is_never_applied_by_a_later_accept() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p = proposer(1);
    let mut out = Vec::new();
    let short = t0 + Duration::from_millis(50);
    p.submit(t0, 1, put("short"), id(1), false, short, &mut out);
    p.submit(
        t0,
        2,
        put("long"),
        id(2),
        false,
        t0 + Duration::from_secs(5),
        &mut Vec::new(),
    );
    // The Prepare reaches no one yet: the first command's deadline passes while preparing.
    let mut expired = Vec::new();
    p.tick(short, &mut expired);
    assert!(matches!(
        &replies(&expired)[..],
        [(1, Err(Error::Unavailable(_)))]
    ));
    // Now a majority answers the Prepare (and, from then on, everything).
    let answers = drive(&mut p, &mut accs, &NODES, short, out);
    assert_eq!(answers, vec![(2, Ok(Outcome::Put { version: 1 }))]);
    for a in &accs {
        let state = &a.record().state;
        assert_eq!(state.value.as_deref(), Some(&b"long"[..]), "{state:?}");
        assert_eq!(
            state.version, 1,
            "the unavailable put was applied: {state:?}"
        );
    }
}

/// Issue 8, bug 1: `s` was chosen at the fast ballot by acceptors 1-4, and acceptor 5 took a
/// competing `t` there. Acceptor 2 then lost its store and came back marked `fast_unknown`. A
/// classic round that first hears from 1 (`s`), 2 (marked) and 5 (`t`) must not take that for
/// "neither was chosen" (and pick `t`): counting the mark, both may have been, so it waits,
/// and once 3 and 4 answer it carries `s`.
#[test]
fn a_fast_ballot_state_is_carried_past_an_acceptor_that_lost_its_vote() {
    let now = Instant::now();
    let fast = |v: &str| AcceptorRecord {
        promised: Ballot::FAST,
        accepted: Ballot::FAST,
        state: Register {
            version: 1,
            value: Some(v.as_bytes().to_vec()),
            ..Register::default()
        },
        fast_unknown: false,
    };
    let lost = AcceptorRecord {
        promised: Ballot::FAST,
        fast_unknown: true,
        ..AcceptorRecord::default()
    };
    let mut accs: Vec<Acceptor> = [fast("s"), lost, fast("s"), fast("s"), fast("t")]
        .into_iter()
        .map(Acceptor::new)
        .collect();
    let mut p = proposer(2);
    let mut out = Vec::new();
    p.settle(now, 1, now + Duration::from_secs(1), &mut out);
    let first = exchange(&mut p, &mut accs, &[1, 2, 5], now, out.clone());
    let accepts = |effects: &[Effect]| -> Vec<Option<Vec<u8>>> {
        sent_to(effects, 1)
            .into_iter()
            .filter_map(|m| match m {
                PeerMessage::Accept { state, .. } => Some(state.value),
                _ => None,
            })
            .collect()
    };
    assert!(
        matches!(&first[..], []),
        "decided (or was refused) from 1, 2 and 5: {first:?}"
    );
    let rest = exchange(&mut p, &mut accs, &[3, 4], now, out);
    assert_eq!(accepts(&rest), vec![Some(b"s".to_vec())]);
}

/// A settle needs this node's own acceptor (its purpose is to put the state there), but the
/// client commands batched with it do not: once the settle is answered (its deadline passed
/// with this node's acceptor silent: a full disk, a crash), the batch ends with the majority
/// that accepted it, at that tick, and the put is answered ok. Before, every round of the
/// batch waited for this node's acceptor until the put's deadline, and a write that was
/// chosen was answered "outcome unknown"; and then (second review) a round whose majority
/// had accepted before the settle's deadline still waited out its timeout and a new round.
#[test]
fn a_batch_holding_an_answered_settle_ends_with_any_majority() {
    let t0 = Instant::now();
    let mut p = proposer(1);
    let mut accs = acceptors();
    let mut out = Vec::new();
    p.settle(t0, 1, t0 + Duration::from_millis(250), &mut out);
    out.extend(submit(&mut p, t0, 2, put("v"), id(1)));
    let settled_by = t0 + Duration::from_millis(250);
    let mut now = t0;
    let mut answers = Vec::new();
    while !answers.iter().any(|(token, _)| *token == 2) {
        assert!(now < t0 + Duration::from_secs(2), "no answer to the put");
        // Node 1's own acceptor never answers.
        let mut next = exchange(&mut p, &mut accs, &[2, 3, 4, 5], now, out);
        if next.is_empty() {
            now += Duration::from_millis(10);
            p.tick(now, &mut next);
        }
        answers.extend(replies(&next));
        out = next;
    }
    let put = answers.iter().find(|(token, _)| *token == 2).unwrap();
    assert!(
        matches!(put.1, Ok(Outcome::Put { version: 1 })),
        "{answers:?}"
    );
    // At the tick that answered the settle (the harness ticks every 10 ms).
    assert!(
        now < settled_by + Duration::from_millis(10),
        "answered {:?} after the settle's deadline",
        now - settled_by
    );
    let settle = answers.iter().find(|(token, _)| *token == 1);
    assert!(
        settle.is_some_and(|(_, r)| r.is_err()),
        "the settle is answered unavailable: {answers:?}"
    );
}

/// A rescan's settle during an add (`paxos::membership`, the rescan step) ends only once the
/// joining voter accepted too, not at the first quorum: `member add` returns once the new node
/// holds every key's state. (Mutant `settle-ignores-the-joining-node` fails this test.)
#[test]
fn a_settle_ends_only_once_the_joining_voter_accepted() {
    let now = Instant::now();
    let cfg = ProposerConfig {
        nodes: vec![1, 2, 3, 4, 5, 6],
        joining: vec![6],
        ..config(1)
    };
    let mut p = Proposer::new(cfg, SmallRng::seed_from_u64(1));
    let mut accs: Vec<Acceptor> = (0..6).map(|_| Acceptor::default()).collect();
    let mut out = Vec::new();
    p.settle(now, 1, now + Duration::from_secs(1), &mut out);
    // Promises, then Accepted, from the four old voters: a quorum of six, without node 6.
    let accept = exchange(&mut p, &mut accs, &[1, 2, 3, 4], now, out);
    assert!(
        accept
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(PeerMessage::Accept { .. }))),
        "{accept:?}"
    );
    let after_quorum = exchange(&mut p, &mut accs, &[1, 2, 3, 4], now, accept.clone());
    assert!(
        replies(&after_quorum).is_empty(),
        "ended without the joining voter"
    );
    let after_joining = exchange(&mut p, &mut accs, &[6], now, accept);
    assert_eq!(replies(&after_joining).len(), 1, "{after_joining:?}");
    assert!(accs[5].record().accepted > Ballot::FAST);
}

/// The replies a proposer gave, and the changes it announced.
type Driven = (Vec<(Token, Result<Outcome, Error>)>, Vec<KeyChange>);

/// What `drive` does, also collecting every announced change.
fn drive_announced(
    p: &mut Proposer,
    acceptors: &mut [Acceptor],
    start: Instant,
    mut out: Vec<Effect>,
) -> Driven {
    let mut now = start;
    let mut announced = Vec::new();
    loop {
        for e in &out {
            if let Effect::Chosen(changes) = e {
                announced.extend(changes.iter().cloned());
            }
        }
        let answers = replies(&out);
        if !answers.is_empty() {
            return (answers, announced);
        }
        assert!(now < start + Duration::from_secs(5), "no answer");
        let mut next = exchange(p, acceptors, &[1, 2, 3, 4, 5], now, out);
        if next.is_empty() {
            now += Duration::from_millis(10);
            p.tick(now, &mut next);
        }
        out = next;
    }
}

#[test]
fn a_write_id_reused_with_another_value_is_never_announced_with_that_value() {
    let now = Instant::now();
    let mut acceptors = acceptors();
    let mut p1 = proposer(1);
    p1.set_announcing(true);
    let out = submit(&mut p1, now, 1, put("a"), id(1));
    let (_, announced) = drive_announced(&mut p1, &mut acceptors, now, out);
    assert_eq!(announced.iter().map(|c| c.version).collect::<Vec<_>>(), [1]);
    let out = submit(&mut p1, now, 2, put("b"), id(2));
    drive_announced(&mut p1, &mut acceptors, now, out);
    // Another node's proposer gets write id 1 again, with another value: the register answers
    // the recorded outcome (version 1), which this proposer never sent.
    let mut p2 = proposer(2);
    p2.set_announcing(true);
    let out = submit(&mut p2, now, 3, put("EVIL"), id(1));
    let (answers, announced) = drive_announced(&mut p2, &mut acceptors, now, out);
    assert_eq!(answers, vec![(3, Ok(Outcome::Put { version: 1 }))]);
    assert!(
        announced
            .iter()
            .all(|c| c.value.as_deref() != Some(&b"EVIL"[..])),
        "announced {announced:?}"
    );
}

fn thrifty(node: NodeId, spread: u64) -> Proposer {
    let cfg = ProposerConfig {
        thrifty: true,
        spread,
        ..config(node)
    };
    Proposer::new(cfg, SmallRng::seed_from_u64(node as u64))
}

/// The acceptors `out` sends a request to, with each one's count.
fn addressed(out: &[Effect]) -> Vec<NodeId> {
    let mut to: Vec<NodeId> = NODES
        .iter()
        .filter(|n| !sent_to(out, **n).is_empty())
        .copied()
        .collect();
    to.sort_unstable();
    to
}

/// Thrifty rounds: a write's Accepts and a read's Queries go to the key's majority alone,
/// the same one on every node, and a read on another node is answered by it without asking
/// the others. (Mutant `thrifty-first-majority-by-node` fails the second assertion.)
#[test]
fn thrifty_rounds_ask_the_keys_majority_alone_while_it_answers() {
    let now = Instant::now();
    let mut accs = acceptors();
    let mut writer = thrifty(1, 3);
    let out = submit(&mut writer, now, 1, put("a"), id(1));
    let out = exchange(&mut writer, &mut accs, &NODES, now, out);
    // Prepare goes to every acceptor; the Accept only to positions 3, 4, 0 of the ring.
    assert_eq!(addressed(&out), vec![1, 4, 5]);
    let out = exchange(&mut writer, &mut accs, &NODES, now, out);
    assert_eq!(replies(&out), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    // The next write reuses the cached promise and asks the same three.
    let out = submit(&mut writer, now, 2, put("b"), id(2));
    assert_eq!(addressed(&out), vec![1, 4, 5]);
    let out = exchange(&mut writer, &mut accs, &NODES, now, out);
    assert_eq!(replies(&out), vec![(2, Ok(Outcome::Put { version: 2 }))]);
    assert_eq!(accs[1].record().accepted, Ballot::ZERO, "node 2 was asked");

    let mut reader = thrifty(3, 3);
    let out = submit(&mut reader, now, 7, Command::Get, None);
    assert_eq!(addressed(&out), vec![1, 4, 5]);
    let out = exchange(&mut reader, &mut accs, &NODES, now, out);
    assert_eq!(replies(&out), vec![(7, read("b", 2))]);
    assert_eq!(reader.take_rounds()[RoundKind::Widened.index()].1, 0);
}

/// A thrifty round whose majority has one silent acceptor asks the rest after `read_grace`,
/// and the node then suspects it: the rounds of the keys whose majority holds it ask
/// everyone at once, with no wait. (Mutant `thrifty-never-widens` fails the first write.)
#[test]
fn a_thrifty_round_asks_the_rest_when_one_of_its_majority_is_silent_and_suspects_it() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p = thrifty(2, 0);
    let up = [1, 2, 3, 4];
    let out = submit(&mut p, t0, 1, put("a"), id(1));
    let out = exchange(&mut p, &mut accs, &up, t0, out);
    assert_eq!(addressed(&out), vec![1, 2, 3]);
    // Node 3 answers nothing: no quorum within the grace...
    let out = exchange(&mut p, &mut accs, &[1, 2], t0, out);
    assert!(replies(&out).is_empty());
    let mut out = Vec::new();
    p.tick(t0 + Duration::from_millis(9), &mut out);
    assert!(out.is_empty(), "asked the rest before read_grace: {out:?}");
    // ...then the rest are asked, and node 3 is suspected.
    let t1 = t0 + Duration::from_millis(10);
    p.tick(t1, &mut out);
    assert!(out.contains(&Effect::Suspect(3)), "{out:?}");
    assert_eq!(addressed(&out), vec![4, 5]);
    let out = exchange(&mut p, &mut accs, &up, t1, out);
    assert_eq!(replies(&out), vec![(1, Ok(Outcome::Put { version: 1 }))]);

    // The node's suspects: another key whose majority holds node 3 asks everyone at once;
    // one whose majority does not stays thrifty.
    let mut suspects = Suspects::default();
    suspects.mark(3, t1);
    let mut accs = acceptors();
    let up = [1, 2, 4, 5];
    let mut other = thrifty(2, 1);
    other.avoid(&suspects, t1);
    let out = submit(&mut other, t1, 1, put("x"), id(1));
    let out = exchange(&mut other, &mut accs, &up, t1, out);
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Broadcast(PeerMessage::Accept { .. }))),
        "{out:?}"
    );
    let out = exchange(&mut other, &mut accs, &up, t1, out);
    assert_eq!(replies(&out), vec![(1, Ok(Outcome::Put { version: 1 }))]);
    let mut clear = thrifty(2, 3);
    clear.avoid(&suspects, t1);
    let out = submit(&mut clear, t1, 1, put("y"), id(1));
    let out = exchange(&mut clear, &mut acceptors(), &up, t1, out);
    assert_eq!(addressed(&out), vec![1, 4, 5]);
    // Once `Suspects::FOR` has passed, node 3's keys are thrifty again.
    other.avoid(&suspects, t1 + Suspects::FOR);
    let out = submit(&mut other, t1 + Suspects::FOR, 2, put("z"), id(2));
    assert_eq!(addressed(&out), vec![2, 3, 4]);
}

/// Two silent members of a thrifty round's majority: the round asks the rest after
/// `read_grace`, but suspects no one (this node may be the slow one).
#[test]
fn a_thrifty_round_with_two_silent_members_suspects_no_one() {
    let t0 = Instant::now();
    let mut accs = acceptors();
    let mut p = thrifty(1, 0);
    let out = submit(&mut p, t0, 1, put("a"), id(1));
    let out = exchange(&mut p, &mut accs, &NODES, t0, out);
    assert_eq!(addressed(&out), vec![1, 2, 3]);
    let out = exchange(&mut p, &mut accs, &[1], t0, out);
    assert!(replies(&out).is_empty());
    let mut out = Vec::new();
    let t1 = t0 + Duration::from_millis(10);
    p.tick(t1, &mut out);
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Suspect(_))),
        "{out:?}"
    );
    assert_eq!(addressed(&out), vec![4, 5]);
    let out = exchange(&mut p, &mut accs, &[1, 4, 5], t1, out);
    assert_eq!(replies(&out), vec![(1, Ok(Outcome::Put { version: 1 }))]);
}

/// A thrifty read whose majority disagrees (a write landed on part of it) asks the rest at
/// once, and the read still returns the latest chosen state.
#[test]
fn a_thrifty_read_whose_majority_disagrees_asks_the_rest() {
    let now = Instant::now();
    let mut accs = acceptors();
    // "a" chosen on every acceptor, then "b" on {1, 2, 3} only.
    let mut w = proposer(1);
    let out = submit(&mut w, now, 1, put("a"), id(1));
    let out = exchange(&mut w, &mut accs, &NODES, now, out);
    exchange(&mut w, &mut accs, &NODES, now, out);
    let out = submit(&mut w, now, 2, put("b"), id(2));
    exchange(&mut w, &mut accs, &[1, 2, 3], now, out);
    // The key's majority is {3, 4, 5}: 3 says "b", 4 and 5 say "a".
    let mut r = thrifty(4, 2);
    let out = submit(&mut r, now, 7, Command::Get, None);
    assert_eq!(addressed(&out), vec![3, 4, 5]);
    let out = exchange(&mut r, &mut accs, &[3, 4, 5], now, out);
    assert_eq!(addressed(&out), vec![1, 2], "the rest asked at once");
    assert!(!out.iter().any(|e| matches!(e, Effect::Suspect(_))));
    let out = exchange(&mut r, &mut accs, &NODES, now, out);
    assert_eq!(replies(&out), vec![(7, read("b", 2))]);
}

/// A silent acceptor is suspected only if no proposer of the node heard from it for as long
/// as the round waited: a loaded node answers late now and then, a paused one not at all.
#[test]
fn an_acceptor_heard_from_lately_is_not_suspected_for_one_late_answer() {
    let t0 = Instant::now();
    let quiet = Duration::from_millis(20);
    let mut s = Suspects::default();
    let mut now = Vec::new();
    s.heard(3, t0);
    assert!(!s.silent(3, t0 + Duration::from_millis(19), quiet));
    s.current(t0 + Duration::from_millis(19), &mut now);
    assert!(now.is_empty());
    assert!(s.silent(3, t0 + quiet, quiet));
    assert!(s.silent(4, t0, quiet), "never heard of");
    s.current(t0 + quiet, &mut now);
    assert_eq!(now, vec![3, 4]);
    s.current(t0 + quiet + Suspects::FOR, &mut now);
    assert!(now.is_empty());
}

/// A node with no membership installed (epoch 0) answers every command and settle at once,
/// unavailable, and sends nothing: every peer refuses a Paxos frame of epoch 0
/// (`Envelope::validate`), so a round could only wait out its deadline. Once a membership
/// is installed the same proposer serves.
#[test]
fn a_proposer_with_no_membership_installed_answers_unavailable_at_once_and_sends_nothing() {
    let now = Instant::now();
    let mut p = Proposer::new(
        ProposerConfig {
            epoch: 0,
            ..config(1)
        },
        SmallRng::seed_from_u64(1),
    );
    refuses_at_once_until_listed(&mut p, now, "no membership installed", 1);
}

/// `p` answers a command and a settle at once, unavailable (saying `why`), and queues
/// nothing; then, listed at `epoch`, it sends a write's Prepare.
fn refuses_at_once_until_listed(p: &mut Proposer, now: Instant, why: &str, epoch: u64) {
    let out = submit(p, now, 1, put("v"), id(1));
    match &out[..] {
        [Effect::Reply(1, Err(Error::NotThisNode(said)))] => assert!(said.contains(why), "{said}"),
        _ => panic!("{out:?}"),
    }
    let mut out = Vec::new();
    p.settle(now, 2, now + Duration::from_secs(1), &mut out);
    assert!(
        matches!(&out[..], [Effect::Reply(2, Err(Error::NotThisNode(_)))]),
        "{out:?}"
    );
    assert_eq!(p.next_wakeup(), None, "nothing queued");
    p.reconfigure(now, NODES.to_vec(), vec![], epoch, true, false);
    let out = submit(p, now, 3, put("v"), id(3));
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Broadcast(PeerMessage::Prepare { .. }))),
        "{out:?}"
    );
}

/// A node that is no member of the membership it has installed (started and never added,
/// or removed and told so) answers every new command at once, unavailable, and sends
/// nothing: every member's network drops its Paxos frames ("not a member"), so a round
/// could only wait out its deadline while each frame counts as a bad frame on every member.
/// A round already in flight when the node learns it was removed is not answered
/// unavailable: its write may have been accepted. Once a membership lists the node, it
/// serves again.
#[test]
fn a_proposer_of_a_node_that_is_no_member_answers_unavailable_at_once_and_sends_nothing() {
    let now = Instant::now();
    let mut p = Proposer::new(
        ProposerConfig {
            epoch: 3,
            member: false,
            ..config(1)
        },
        SmallRng::seed_from_u64(1),
    );
    // Listed again, it serves: its write (token 3) goes out.
    refuses_at_once_until_listed(&mut p, now, "not a member", 4);
    // Removed with that write in flight: the write is not answered unavailable (it may yet
    // be chosen); a new command is.
    p.reconfigure(now, NODES.to_vec(), vec![], 5, false, false);
    let out = submit(&mut p, now, 4, Command::Get, None);
    assert!(
        matches!(&out[..], [Effect::Reply(4, Err(Error::NotThisNode(_)))]),
        "{out:?}"
    );
    let mut out = Vec::new();
    p.tick(now + Duration::from_millis(50), &mut out);
    assert!(
        !out.iter().any(|e| matches!(
            e,
            Effect::Reply(3, Err(Error::Unavailable(_) | Error::NotThisNode(_)))
        )),
        "a write in flight answered unavailable: {out:?}"
    );
    assert!(p.next_wakeup().is_some(), "the write in flight goes on");
}

/// A message of [`on_slow_disks`] between a proposer (`instance`) and an acceptor.
struct OnTheWire {
    to_acceptor: bool,
    to: NodeId,
    from: NodeId,
    instance: u64,
    msg: PeerMessage,
}

/// Acceptors on slow disks, in simulated time: each takes its messages one at a time in the
/// order they arrive (its actor holds its mailbox while a write is made durable), a message
/// that changes its record is answered `disk` after the acceptor got to it, any other at once;
/// every message takes 1 ms each way. Drives `proposers` (each with one put, deadline 60 s
/// away) until every put is answered or `until` passes; returns each proposer's answer and
/// when it came.
fn on_slow_disks(
    proposers: &mut [Proposer],
    disk: Duration,
    until: Duration,
) -> Vec<Option<(Duration, Result<Outcome, Error>)>> {
    let t0 = Instant::now();
    let net = Duration::from_millis(1);
    let voters: Vec<NodeId> = proposers[0].config().nodes.clone();
    let mut accs: BTreeMap<NodeId, (Acceptor, Instant)> = voters
        .iter()
        .map(|&n| (n, (Acceptor::default(), t0)))
        .collect();
    let mut wire: BTreeMap<(Instant, u64), OnTheWire> = BTreeMap::new();
    let mut seq = 0u64;
    let mut answers = vec![None; proposers.len()];
    let mut send = |wire: &mut BTreeMap<_, _>, at: Instant, item| {
        seq += 1;
        wire.insert((at, seq), item);
    };
    let mut effects: Vec<(usize, Vec<Effect>)> = Vec::new();
    for (i, p) in proposers.iter_mut().enumerate() {
        let mut out = Vec::new();
        p.submit(
            t0,
            i as Token,
            put(&format!("p{i}")),
            Some(RequestId {
                client: i as u64 + 1,
                seq: 1,
            }),
            false,
            t0 + Duration::from_secs(60),
            &mut out,
        );
        effects.push((i, out));
    }
    let mut now = t0;
    loop {
        for (i, out) in effects.drain(..) {
            let (node, instance) = (proposers[i].config().node, proposers[i].id());
            for &to in &voters {
                for msg in sent_to(&out, to) {
                    let item = OnTheWire {
                        to_acceptor: true,
                        to,
                        from: node,
                        instance,
                        msg,
                    };
                    send(&mut wire, now + net, item);
                }
            }
            for (_, answer) in replies(&out) {
                answers[i].get_or_insert((now - t0, answer));
            }
        }
        if answers.iter().all(Option::is_some) || now >= t0 + until {
            return answers;
        }
        let wakeup = proposers.iter().filter_map(Proposer::next_wakeup).min();
        let delivery = wire.keys().next().map(|(at, _)| *at);
        now = match (wakeup, delivery) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).expect("something to do"),
        };
        while let Some(entry) = wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let OnTheWire {
                to_acceptor,
                to,
                from,
                instance,
                msg,
            } = entry.remove();
            if to_acceptor {
                let (acceptor, free_at) = accs.get_mut(&to).expect("a voter");
                let start = now.max(*free_at);
                let step = acceptor.step(msg);
                let done = if step.persist.is_some() {
                    start + disk
                } else {
                    start
                };
                *free_at = done;
                send(
                    &mut wire,
                    done + net,
                    OnTheWire {
                        to_acceptor: false,
                        to: from,
                        from: to,
                        instance,
                        msg: step.reply,
                    },
                );
            } else {
                let i = proposers
                    .iter()
                    .position(|p| p.config().node == to)
                    .expect("a proposer");
                let mut out = Vec::new();
                proposers[i].on_message(now, from, instance, msg, &mut out);
                effects.push((i, out));
            }
        }
        for (i, p) in proposers.iter_mut().enumerate() {
            if p.next_wakeup().is_some_and(|t| t <= now) {
                let mut out = Vec::new();
                p.tick(now, &mut out);
                effects.push((i, out));
            }
        }
    }
}

fn on_three_voters(node: NodeId) -> Proposer {
    let cfg = ProposerConfig {
        nodes: vec![1, 2, 3],
        ..config(node)
    };
    Proposer::new(cfg, SmallRng::seed_from_u64(node as u64))
}

/// Acceptors that answer more slowly than `phase_timeout` slow rounds down but never stop
/// them: writes of 250 ms (2.5 times the timeout: a slow or overloaded disk, or the tests'
/// `commit_delay_ms`), and writes of 80 ms, under the timeout, that three proposers' Prepares
/// queued at each acceptor make longer than it. Before (`paxos::proposer`, "Paced by its
/// acceptors"), a phase timed out before any acceptor's promise could be durable, and its
/// retry at a higher ballot queued behind the write it gave up on, so that no round ever
/// ended: one proposer alone was never answered at 250 ms, nor were three writing one key
/// from three nodes at either speed in most seeds (a cluster's start recording its stores,
/// CI of 2026-12-07). At 80 ms the backoff matters too: with its ceiling at `backoff_max`
/// (20 ms here) instead of a phase's length, three proposers keep colliding.
#[test]
fn a_disk_slower_than_the_phase_timeout_slows_rounds_but_never_stops_them() {
    for ms in [80, 250] {
        let disk = Duration::from_millis(ms);
        let mut alone = [on_three_voters(1)];
        let answers = on_slow_disks(&mut alone, disk, Duration::from_secs(30));
        assert!(
            matches!(&answers[..], [Some((_, Ok(Outcome::Put { .. })))]),
            "{ms} ms, one proposer: {answers:?}"
        );
        let mut dueling = [on_three_voters(1), on_three_voters(2), on_three_voters(3)];
        let answers = on_slow_disks(&mut dueling, disk, Duration::from_secs(30));
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Some((_, Ok(Outcome::Put { .. }))))),
            "{ms} ms, three proposers on one key: {answers:?}"
        );
    }
}

/// Late answers teach the pace only what they can tell: a phase given up on after a majority
/// had answered it (a settle waiting for its own acceptor, a fast Accept short of a fast
/// quorum) did not wait for a majority, so one more answer (a slow minority's, or a
/// duplicate) teaches nothing; and a Prepare and the Accept after it share a ballot, so late
/// or duplicated `Promise`s of that ballot say nothing of how long the Accept took
/// (review, 2026-12-08: both lengthened the timeout).
#[test]
fn late_answers_teach_the_pace_only_of_the_phase_they_answer() {
    let floor = Duration::from_millis(100);
    let t0 = Instant::now();
    let late = t0 + Duration::from_millis(700);
    let ballot = |round| Ballot { round, node: 1 };
    let phase = |round, accept, answered| Abandoned {
        ballot: ballot(round),
        accept,
        started: t0,
        answered,
    };
    let mut pace = Pace::default();
    // Given up with two of three answered: a third answer, then a duplicate, teach nothing.
    pace.gave_up(phase(1, true, 0b011), 2, t0 + floor, floor);
    assert!(!pace.answered(ballot(1), Some(true), 2, 2, late, floor));
    assert!(!pace.answered(ballot(1), Some(true), 0, 2, late, floor));
    assert_eq!(pace.timeout(floor), floor);
    // An Accept given up on with none answered: late Promises of its ballot (the Prepare's,
    // duplicated) do not count for it; its own Accepteds do.
    pace.gave_up(phase(2, true, 0), 2, t0 + floor, floor);
    assert!(!pace.answered(ballot(2), Some(false), 0, 2, late, floor));
    assert!(!pace.answered(ballot(2), Some(false), 1, 2, late, floor));
    assert_eq!(
        pace.timeout(floor),
        floor,
        "a Prepare's answers timed the Accept"
    );
    assert!(!pace.answered(ballot(2), Some(true), 0, 2, late, floor));
    assert!(pace.answered(ballot(2), Some(true), 1, 2, late, floor));
    assert_eq!(pace.timeout(floor), Duration::from_millis(1_400));
    // A refusal does not say which phase it answers: it counts for either.
    pace.gave_up(phase(3, false, 0b001), 2, t0 + floor, floor);
    assert!(pace.answered(ballot(3), None, 2, 2, late, floor));
}

/// A phase is timed by its answers, never by its silence: a proposer whose phases a majority
/// never answers (cut off, or most acceptors down) keeps the least phase timeout, so it
/// retries at once when the network heals; so does one whose phases only a minority answers
/// late. Once a majority answers a phase it gave up on, the timeout covers how long that took.
#[test]
fn only_a_majoritys_late_answers_lengthen_the_phase_timeout() {
    let t0 = Instant::now();
    let mut p = on_three_voters(1);
    let floor = p.config().phase_timeout;
    let mut out = submit(&mut p, t0, 1, put("v"), id(1));
    let mut ballots = Vec::new();
    for _ in 0..5 {
        let prepare = sent_to(&out, 2).into_iter().find_map(|m| match m {
            PeerMessage::Prepare { ballot } => Some(ballot),
            _ => None,
        });
        ballots.extend(prepare);
        let now = p.next_wakeup().expect("a round in flight");
        out.clear();
        p.tick(now, &mut out);
        assert_eq!(p.phase_timeout(), floor, "silence lengthened the timeout");
    }
    assert!(ballots.len() >= 2, "{ballots:?}");
    // One acceptor answers the first Prepare given up on, 500 ms after it was sent: a
    // minority.
    let promise = |ballot| PeerMessage::Promise {
        ballot,
        accepted: Ballot::ZERO,
        state: Register::default(),
        fast_unknown: false,
    };
    let late = t0 + Duration::from_millis(500);
    p.on_message(late, 2, p.id(), promise(ballots[0]), &mut out);
    assert_eq!(p.phase_timeout(), floor, "a minority's late answer");
    // A second one: a majority of three answered that phase, 500 ms after it began; the
    // timeout is twice that.
    p.on_message(late, 3, p.id(), promise(ballots[0]), &mut out);
    assert_eq!(p.phase_timeout(), Duration::from_secs(1));
    // Counted, for the metrics and the simulation's coverage: once.
    let paced = |p: &mut Proposer| p.take_rounds()[RoundKind::Paced.index()].1;
    assert_eq!(paced(&mut p), 1);
    // Capped: never more than `Pace::CEILING` times the floor, however late.
    p.on_message(
        t0 + Duration::from_secs(3600),
        2,
        p.id(),
        promise(ballots[1]),
        &mut out,
    );
    p.on_message(
        t0 + Duration::from_secs(3600),
        3,
        p.id(),
        promise(ballots[1]),
        &mut out,
    );
    assert_eq!(paced(&mut p), 1);
    assert!(
        p.phase_timeout() <= floor * Pace::CEILING,
        "{:?}",
        p.phase_timeout()
    );
}
