//! The proposer role of one key (CASPaxos §2), with no IO: it takes client commands and
//! acceptor replies, reads no clock (`now` is an argument) and draws its backoff from a seeded
//! RNG, and it returns [`Effect`]s for the actor to carry out.
//!
//! A round takes a batch of queued commands (in arrival order, at most `max_batch`) and:
//! - **reads** (a batch of gets only) first try one round trip with no disk write: ask every
//!   acceptor for its record (one majority first, see "Thrifty rounds"; without the state's
//!   remembered writes, see "Reads that carry no remembered writes"); if a majority reports the same
//!   accepted ballot `B`, the state accepted at `B` is
//!   chosen by the time the answers are in (a majority holds it), and it is not older than
//!   anything chosen before the read began: any write that completed before the get started
//!   was accepted by a majority at some ballot `W`, that majority meets ours, and accepted
//!   ballots only grow, so `B >= W`; and no state above `B` can have been chosen before the get
//!   began, or a majority would hold it and meet ours. So the read is ordered within its own
//!   interval, after the state at `B` and before any state after it in the key's chain. (That
//!   state need not have been chosen when the read began, and a later one may be chosen while
//!   the answers come in: an acceptor that answered `B` early, a higher round chosen from it,
//!   then `B`'s delayed Accepts reaching the other two that answer. The read still falls
//!   between the two in the chain and within its interval. A higher *promise* at some
//!   acceptor does not matter either: a proposer that holds it has not completed a write yet,
//!   so the read may be ordered before that write.) At the
//!   fast ballot a majority proves nothing (several states may be accepted there): it takes a
//!   fast quorum reporting the same state, which is then chosen, and no classic write can
//!   have completed (its majority would meet the fast quorum). One exception, "A state this
//!   proposer saw chosen at the fast ballot" below. Otherwise the batch falls back to a full
//!   identity round.
//! - a **first write** from a proposer that holds no promise goes at the fast ballot, with no
//!   Prepare (Fast Paxos): chosen by a fast quorum, or settled by a classic round that
//!   recovers what the fast attempt may have chosen ([`Ballot::FAST`]).
//! - **writes** run Prepare/Promise, apply the batch's change functions to the state with the
//!   highest accepted ballot, then Accept/Accepted. An Accept asks every acceptor to also
//!   promise the proposer's next ballot (§2.2.1); when a majority did, the proposer caches that
//!   promise with the chosen state and the next write skips Prepare. Any rejection drops the
//!   cache.
//!
//! **Thrifty rounds.** With `thrifty` (the default), a quick read's Queries and a classic
//! Accept go first to one majority of the key's acceptors only: the same for every node (a
//! ring of the sorted voters, from the key's hash on), so that a key's reads ask the acceptors
//! its writes went to, and the other acceptors do no work at all for it. Three of five nodes
//! then write, send and answer for a put instead of five. The round **widens** (the same
//! request, to the rest) when that majority cannot do it alone: one of it is silent for
//! `read_grace`, answers `Failed`, or (a read) the answers disagree or show the fast ballot.
//! Prepare, the fast ballot's Accept and a settle always go to everyone.
//!
//! Why nothing else changes:
//! - *Safety.* Whom a request goes to is not part of Paxos' safety: a request not sent is a
//!   request lost, which the asynchronous model already allows. What is counted is
//!   unchanged: a quorum is a majority (or a fast quorum) of the voters' answers to this very
//!   request, and a widened request is the same request (same ballot, state and `next`, or
//!   the same read number), so an answer counts the same whichever message carried it. The
//!   quick read's argument above never asked which acceptors answered, only that a classic
//!   quorum reports one accepted ballot.
//! - *The fast ballot.* It needs a fast quorum, so its Accept goes to everyone; recovery reads
//!   the promises of a Prepare, which goes to everyone, so no acceptor counts as `doubtful`
//!   for not having been asked. A read that sees the fast ballot widens at once.
//! - *Settles and membership changes* need particular acceptors (this node's, a joining
//!   one's): they ask everyone, and while a change has a joining voter no round is thrifty.
//! - *Durability* is what it was: "ok" always meant a durable majority, never five copies.
//!   The acceptors left out hold an older state of the key until a later round, a read
//!   repair or anti-entropy's pull brings them up (each the delayed copy of an Accept).
//!
//! What it costs, and the timing it names: a round with a silent acceptor in its majority
//! waits `read_grace` before asking the rest. That wait is a performance assumption only (a
//! late answer is still counted, an early widening only asks more). So that one paused node
//! does not make every key wait, a proposer that widens because one member of its majority
//! is silent while the others answered (or one answered `Failed`) reports that acceptor
//! ([`Effect::Suspect`]), and for [`Suspects::FOR`] the node's proposers ask every acceptor
//! at once for the keys whose majority holds it: what every round did before thrifty rounds.
//! A suspect is not swapped for another acceptor: a key's majority never moves, so its reads
//! keep asking where its writes went (a first version that moved it measured reads that
//! disagreed and fell back to full rounds, see BENCHMARKS.md). Several silent members
//! suspect no one: then this node, or its network, may be the slow one. Reads and writes
//! stay linearizable throughout; only their latency and cost move.
//!
//! **Reads that carry no remembered writes.** A quick read asks with `Read`, not `Query`: an
//! acceptor whose state is at a classic ballot answers `ReadReply`, which carries what a get
//! or an inspect needs (value, version, lease, fence: [`Seen`](crate::paxos::types::Seen))
//! and not the writes the state remembers for de-duplication, most of a busy key's state
//! (about 600 of 700 bytes once 32 writes are remembered; BENCHMARKS.md, issue 23). Why the
//! argument above still holds, and what such a state must never do:
//! - *Counting.* At a classic ballot the read counts ballots, never states: a proposer
//!   proposes one state per ballot (a widened or repairing Accept is the same state at the
//!   same ballot, and a new instance never takes its predecessor's ballot: a repeated fast
//!   Accept confirms no promise, `paxos::acceptor`), so the ballot names the state and any
//!   reply at it shows its value.
//! - *The fast ballot* is the exception: several proposers' states share it, and two first
//!   writes of the same value differ only in the write they remember. Counted by value, two
//!   such states split over a fast quorum would look chosen when neither is, and recovery may
//!   choose a third. So an acceptor at the fast ballot answers a `Read` in full
//!   (`QueryReply`), `Envelope::validate` refuses a `ReadReply` that claims the fast ballot,
//!   and [`read_answers`] counts only full states there.
//! - *Never accepted.* A state without its remembered writes, accepted at its ballot by a
//!   stale acceptor (read repair), would be a second state at that ballot, and a later round
//!   that took it would apply a retried write a second time. So a read repairs only from a
//!   full state (`chosen` is only ever set from one); when it saw acceptors behind and had
//!   none, its proposer's next read asks with `Query` and repairs from that. Until then the
//!   laggards are what they were without read repair: behind, as the asynchronous model
//!   allows, brought up by the next write, read or anti-entropy.
//!
//! **A state this proposer saw chosen at the fast ballot.** A key written once stays at the
//! fast ballot until a sweep settles it (below), and a read of it needs four equal whole
//! states of five: it asks everyone, and reads 25-35 % slower than a key at a classic ballot
//! (BENCHMARKS.md, issue 23). The proposer whose first write was chosen there knows more
//! than the counting does: its own Accept was taken by a fast quorum, so that state `S` is
//! chosen (`fast_chosen`). A read through it then takes a majority reporting exactly `S` (a
//! whole state, equal to the one it proposed, remembered writes included) accepted at the
//! fast ballot as it takes a majority at one classic ballot. The argument above carries over
//! word for word, with "chosen" known instead of counted: `S` was chosen before the read
//! began (the proposer learned it before it started the read); a write that completed before
//! the read began was accepted by a majority at a classic ballot, above the fast one, and
//! that majority meets ours, whose member would then report that ballot, not the fast one
//! (an acceptor never accepts below what it accepted or promised); so `S` was the latest
//! chosen state when the read began. What could go wrong, and why it cannot:
//! - *Other states at the fast ballot.* The argument needs only that no reply of the
//!   majority shows a classic ballot; losers of the fast race may sit there too. The rule
//!   asks more: every counted reply holds `S` itself, whole (states at the fast ballot are
//!   told apart by the write they remember, unique per write, and every reply there carries
//!   it in full, see above), so the answer is one a majority shows, not only one the
//!   proposer remembers. (Hence the mutant that drops the equality is caught by the unit
//!   test alone: it is no less safe.)
//! - *A vote that was lost.* An acceptor whose record was wiped or rolled back does not vote
//!   (`paxos::identity`), and one that may have lost a fast vote reports `fast_unknown` and is
//!   not counted.
//! - *Another epoch.* Replies are of the proposer's own epoch; a change settles every key at
//!   the fast ballot (`paxos::membership`), and `S`, once chosen, stays chosen.
//! - *Another instance.* `fast_chosen` belongs to the instance that saw its own Accept taken
//!   (replies are matched to the instance, below); a new one starts without it.
//!
//! With it, an answer at the fast ballot that equals `S` does not make a thrifty read widen.
//! Counted as [`RoundKind::KnownFastRead`].
//!
//! **Leaving the fast ballot.** A state chosen at the fast ballot is chosen only by *how many*
//! acceptors hold it (a fast quorum); a classic round recovers it by counting. That count is
//! fragile: an acceptor that loses its record (a wiped or rolled-back disk) lowers it, and a
//! state chosen at the fast ballot can then look "not chosen" to a later round, which would
//! replace it. So a key must not stay there: the node's anti-entropy sweep settles every key
//! it holds at the fast ballot (see `actors::anti_entropy`; a lost fast vote left as
//! `fast_unknown` by older builds is settled the same way, see `paxos::acceptor`). With `settle_fast_writes`, the proposer that saw
//! its write chosen at the fast ballot queues a **settle** (an identity write) ahead of
//! everything else instead: its next
//! round Accepts the same state at a classic ballot (at once when the promise for `next` is
//! cached: the §2.2.1 promise of a majority that just accepted that state, so no other state
//! can be chosen below `next`), after which a majority holds it at a classic ballot and it is
//! carried forward by the ordinary highest-ballot rule. A proposer that stops before its
//! settle leaves the key at the fast ballot; the node's sweeps settle such keys
//! ([`Proposer::settle`], called by anti-entropy and by a membership change's rescan, see
//! `actors::anti_entropy` and `actors::membership`).
//!
//! **Announcing what is chosen** (for watches, `actors::watch`). While some node watches
//! ([`Proposer::set_announcing`], looked at when the quorum is seen, not when the round
//! began: a watch that begins mid-round still hears of it), a round whose Accept a quorum
//! took ends with
//! [`Effect::Chosen`]: the change each command of the batch made (its version, from its
//! outcome, and the value the command wrote), and, when the round's state came from a
//! Prepare, that state's own last change ahead of them. Why each announced change is a
//! change of the key's linearized history: the round's state is chosen, its batch's commands
//! were applied to the state the round started from, in order, each taking the next version;
//! a retried write's recorded outcome is that write's own earlier change when this proposer
//! sent that very command before (a recorded outcome of a write id it never sent is announced
//! only as the state read: a client may reuse an id with another value), and the state a
//! Prepare read is the one the chosen state was made from. A round that no quorum took announces nothing (its state may never be chosen, and another
//! with the same version may be). Nothing is announced from a read: a read changes no
//! version. What is not announced (a proposer that stops between the quorum and the
//! announcement, a batch's middle versions when another proposer carried the batch's state
//! forward) is a gap the watcher sees by the version it skips.
//!
//! **Replies are matched to the instance that asked.** Every request carries this instance's
//! random 64-bit id and every reply echoes it ([`crate::messages::Envelope::proposer`]);
//! replies for another id are ignored. Without it a new instance on the same node (after a
//! crash, a retirement or a restart) counts late replies to its predecessor: it tries the same
//! fast ballot first, so an `Accepted` of another state would count towards its own ("ok"
//! for a state no acceptor holds), and its read numbers restart at 1, so an old `QueryReply`
//! would answer a new read with an old state. Within one instance, classic ballots never
//! repeat (every Prepare takes a new round, every cached Accept the promised `next`) and read
//! numbers only grow.
//!
//! **"Unavailable" means it did not happen.** A command whose deadline passes before any
//! Accept carried it is answered `Unavailable` and removed from the batch, so no later round
//! applies it; one that an Accept carried is answered `Unknown` and stays in the batch (that
//! Accept may be chosen; its id de-duplicates the retry).
//!
//! On a rejection or a phase timeout the batch is retried at a higher ballot after a
//! randomised, bounded backoff, until each request's deadline. So it is once acceptors that
//! could not write (`Failed`: a full disk or map) leave too few for a quorum; their reasons go
//! into the error of a request that runs out of time. A retried batch is safe even if
//! its Accept reached some acceptors: every write carries a [`RequestId`] and a register
//! answers a write it has already applied with the recorded outcome. At its deadline a
//! request is answered `Unavailable` if no Accept carrying it was ever sent, and `Unknown`
//! otherwise: never "ok" without a majority of Accepted.
//!
//! **Paced by its acceptors** ([`Pace`]). How long a phase waits for a majority, and how long a
//! proposer backs off after a conflict at most, follow how long this key's Prepares and
//! Accepts have lately taken to be answered (each needs a durable write at every acceptor that
//! answers); the config's `phase_timeout` and `backoff_max` are only their floors. Before,
//! both were fixed, and once answers took longer than the timeout (a slow or overloaded disk;
//! the tests' `commit_delay_ms`; one acceptor's queue of writes from several proposers), no
//! round ever ended: a phase timed out before a majority's promises could be durable, its
//! retry at a higher ballot queued at each acceptor behind the write it gave up on, and so on,
//! until the request's deadline. One proposer alone was never answered; three nodes recording
//! their stores in the membership register at a cluster's start, with 300 ms commits on a
//! loaded machine, never were (CI of 2026-12-07;
//! `proposer_tests::a_disk_slower_than_the_phase_timeout_slows_rounds_but_never_stops_them`).
//!
//! *Safety* does not depend on it: a phase may be given up at any moment and its batch
//! retried at a higher ballot (the paragraphs above), so a timeout or a backoff of any length
//! changes only when rounds happen, never what they may decide.
//!
//! *Liveness*, the timing assumption named: from some moment on, a majority of the key's
//! acceptors answers each Prepare or Accept within some bound `D` (their queues and disks
//! included), unknown to the proposer but below `Pace::CEILING / 2` times `phase_timeout`
//! (8 s at the default 500 ms). A phase that reached its majority after `d` raises the
//! estimate of the slowest phase to `d` (it decays by half at each faster one). A phase given
//! up on at its timeout before a majority answered it is remembered by its ballot and kind
//! (the Accept that follows a Prepare has its ballot; no other phase of this proposer uses
//! it), and once a majority has answered it anyway, the estimate rises to how long that took.
//! The phase timeout is twice the estimate, so it grows with those answers until it covers
//! `D`; phases then end by their majority, not their timeout. The backoff's ceiling is the
//! mean of the same durations (or `backoff_max`, if longer), so proposers that collide spread
//! their retries over as long as a phase takes, not over 50 ms that end within the very phase
//! they yield to; the mean, not the slowest, because on a loaded node one phase in many takes
//! several times the usual, and a ceiling raised to that showed in the put p99 (`Pace::mean`).
//! A phase is timed only by a majority's answers, never by silence or by one slow acceptor: a
//! proposer cut off from its acceptors keeps the timeout it had (the floors, unless a slow
//! period raised it), so it retries within that timeout when the network heals, as before at
//! the floor; a paused acceptor of a minority changes nothing. A timeout raised by a slow
//! period comes down by half at each phase that ends faster; a cut-off proposer whose timeout
//! a slow period had raised waits it out (at most `Pace::CEILING` times the floor) before its
//! next retry, as TCP waits out its retransmission timeout (review, 2026-12-08).
//!
//! Measured in simulated time (the test's harness: three voters, `phase_timeout` 100 ms,
//! `backoff_max` 20 ms, 30 seeds), the time by which the last of three proposers writing one
//! key at once is answered, median (most): writes of 60 ms, 0.91 s (0.91); 80 ms, 2.7 s (3.2);
//! 150 ms, 2.4 s (2.6); 250 ms, 5.3 s (5.8); 400 ms, 11.7 s (12.5). Before, from 60 ms on,
//! most seeds had not answered all three after 30 s; one proposer alone, from 150 ms on,
//! never was (now 0.45 s at 150 ms, 1.0 s at 250). Both halves are needed: with the timeout
//! paced and the backoff's ceiling fixed, three proposers at 80 ms were never all answered.
//! On a fast disk nothing changes: the estimate stays below both floors.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::Rng;

use crate::error::Error;
use crate::messages::PeerMessage;
use crate::paxos::quorum::{most, tally, Quorums};
use crate::paxos::register::{apply, TooLate, RECENT_WRITES};
use crate::paxos::types::{Ballot, Command, KeyChange, NodeId, Outcome, Register, RequestId};

/// Identifies a waiting caller to the actor that owns the proposer.
pub type Token = u64;

#[derive(Debug, Clone)]
pub struct ProposerConfig {
    pub node: NodeId,
    /// The acceptors that count at `epoch` (the membership's voters; this node need not be
    /// one). Replies from any other node are ignored.
    pub nodes: Vec<NodeId>,
    /// The membership epoch these acceptors are of (see `paxos::membership`); the actor
    /// stamps it on every request.
    pub epoch: u64,
    /// This node is a member (in any state) of `epoch`'s membership. Every node's network
    /// takes Paxos frames only from members (`actors::network::deliver_peer_frame`), so a
    /// proposer of a node that is none (not added yet, or removed) answers at once instead
    /// of sending ([`Proposer::enqueue`]).
    pub member: bool,
    /// Acceptors a settle must reach besides a quorum: a node joining the voters (a rescan
    /// leaves every key's state on it, see `paxos::membership`).
    pub joining: Vec<NodeId>,
    /// A phase without a majority of answers after this long is retried: the least phase
    /// timeout, raised while this key's acceptors answer more slowly ([`Pace`]).
    pub phase_timeout: Duration,
    /// How long a quick read waits for more answers once a majority answered but disagreed.
    pub read_grace: Duration,
    pub backoff_min: Duration,
    /// The backoff's ceiling, raised to how long a phase takes on average while that is
    /// longer ([`Pace`]).
    pub backoff_max: Duration,
    /// Commands applied in one round, at most [`RECENT_WRITES`].
    pub max_batch: usize,
    /// Commands waiting for a round; more are refused with `Busy`.
    pub max_queue: usize,
    /// Try a key's first write at the fast ballot (one round trip instead of two).
    pub fast_path: bool,
    /// Settle a key at a classic ballot right after a write was chosen at the fast one.
    pub settle_fast_writes: bool,
    /// Thrifty rounds: a quick read's Queries and a classic Accept go to one majority first
    /// (see the module doc, "Thrifty rounds"); `false`: to every acceptor.
    pub thrifty: bool,
    /// Where the key's first-asked majority starts among its sorted acceptors: the key's hash
    /// ([`crate::paxos::types::key_hash`]), the same on every node, so that every node's
    /// reads ask the majority every node's writes went to.
    pub spread: u64,
}

impl ProposerConfig {
    /// The quorums of this key's acceptors (see `paxos::quorum`).
    pub fn quorums(&self) -> Quorums {
        Quorums::new(self.nodes.len())
    }

    /// How long none of a node's proposers may have heard from an acceptor before a silent
    /// round suspects it ([`Suspects::silent`]): half a phase timeout. Much longer than
    /// `read_grace`, because a loaded node stalls now and then for longer than that (a slow
    /// group commit holds every answer), and a false suspect makes its keys ask everyone.
    pub fn suspect_after(&self) -> Duration {
        self.phase_timeout / 2
    }
}

/// The kinds of Paxos round a proposer starts, counted for the metrics
/// (`paxkv_paxos_rounds_total{kind}`, [`Proposer::take_rounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundKind {
    /// A read answered by a quorum's accepted states, without a ballot (`Query`).
    QuickRead,
    /// A write that reuses the promise of the proposer's previous round: one round trip.
    OneRoundTrip,
    /// A key's first write through this node, at the fast ballot.
    FastBallot,
    /// Prepare, then Accept.
    FullRound,
    /// A round given up (a conflict, a timeout) and retried after a backoff.
    ConflictRetry,
    /// Not a round of its own: a thrifty round that had to ask the acceptors beyond its
    /// first majority (one was silent, failed, or they disagreed).
    Widened,
    /// Not a round of its own: a quick read answered with the state this proposer saw
    /// chosen at the fast ballot (module doc; by a majority holding it, or a fast quorum).
    KnownFastRead,
    /// Not a round of its own: a phase given up on at its timeout that a majority answered
    /// later, which lengthened this key's phase timeout (its acceptors answer more slowly
    /// than `phase_timeout`: module doc, "Paced by its acceptors").
    Paced,
}

impl RoundKind {
    pub const ALL: [RoundKind; 8] = [
        RoundKind::QuickRead,
        RoundKind::OneRoundTrip,
        RoundKind::FastBallot,
        RoundKind::FullRound,
        RoundKind::ConflictRetry,
        RoundKind::Widened,
        RoundKind::KnownFastRead,
        RoundKind::Paced,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            RoundKind::QuickRead => "quick_read",
            RoundKind::OneRoundTrip => "one_round_trip",
            RoundKind::FastBallot => "fast_ballot",
            RoundKind::FullRound => "full_round",
            RoundKind::ConflictRetry => "conflict_retry",
            RoundKind::Widened => "widened",
            RoundKind::KnownFastRead => "known_fast_read",
            RoundKind::Paced => "paced",
        }
    }
}

/// What the actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to every acceptor, this node's included.
    Broadcast(PeerMessage),
    /// Send to these acceptors (a thrifty round's first majority, or the rest of them).
    Multicast(Vec<NodeId>, PeerMessage),
    /// Send to one acceptor.
    Send(NodeId, PeerMessage),
    /// This acceptor alone of a thrifty round's majority did not answer within `read_grace`:
    /// unless the node heard from it lately ([`Suspects::silent`]), for a while the node's
    /// proposers ask everyone at once for the keys whose majority holds it ([`Suspects`],
    /// [`Proposer::avoid`]). A hint for liveness only.
    Suspect(NodeId),
    /// This acceptor could not write: suspected at once ([`Suspects::mark`]).
    Failing(NodeId),
    /// Answer a caller.
    Reply(Token, Result<Outcome, Error>),
    /// These changes of the key were chosen, in version order: announce them to the nodes
    /// that watch (only while [`Proposer::set_announcing`] is on; see `actors::watch`).
    Chosen(Vec<KeyChange>),
}

/// What one acceptor reports of a key, in a promise or a read answer.
#[derive(Debug, Clone)]
pub(crate) struct Vote {
    /// The highest ballot it accepted (`Ballot::ZERO`: none).
    pub accepted: Ballot,
    /// The state it accepted at that ballot.
    pub state: Register,
    /// It may have lost a vote at the fast ballot (`AcceptorRecord::fast_unknown`).
    pub fast_unknown: bool,
    /// `state` is the whole state. `false`: what a read sees of it, from a `ReadReply`,
    /// which remembers no writes: it answers gets, and is never accepted or counted at the
    /// fast ballot.
    pub full: bool,
}

/// What a caller asks of the proposer, before any round carries it.
#[derive(Debug, Clone)]
struct Ask {
    /// `None`: nobody waits (a settle round the proposer started itself).
    token: Option<Token>,
    command: Command,
    id: Option<RequestId>,
    /// The client says an earlier attempt of this write may have taken effect.
    maybe_applied: bool,
    /// An identity write: forces a classic Accept (see [`Proposer::settle`]).
    settle: bool,
    deadline: Instant,
}

/// An [`Ask`] waiting in the queue or carried by the round in flight.
#[derive(Debug, Clone)]
struct Pending {
    ask: Ask,
    /// An Accept carrying this command was sent: from now on its outcome may be decided.
    accept_sent: bool,
    /// Already answered (its deadline passed while its round was in flight).
    answered: bool,
}

impl Pending {
    fn new(ask: Ask) -> Pending {
        Pending {
            ask,
            accept_sent: false,
            answered: false,
        }
    }
}

// One per live proposer, replaced at every step of a round: boxing `Accepting`'s register
// would cost an allocation per round to save a couple of hundred bytes per key.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    Idle,
    Backoff {
        until: Instant,
    },
    Reading {
        read: u64,
        started: Instant,
        replies: BTreeMap<NodeId, Vote>,
        /// Set once a majority answered without agreeing: wait for the others until then,
        /// then read with a full round.
        grace_until: Option<Instant>,
        /// Every acceptor was asked (not only a thrifty round's first majority).
        widened: bool,
        /// The thrifty round's first majority (bit `i`: `cfg.nodes[i]`); 0 if none.
        first: u64,
        /// It asks with `Query` (full states), not `Read`.
        full: bool,
    },
    Preparing {
        ballot: Ballot,
        started: Instant,
        promises: BTreeMap<NodeId, Vote>,
    },
    Accepting {
        ballot: Ballot,
        next: Ballot,
        started: Instant,
        /// At the fast ballot: set once a classic quorum accepted; if no fast quorum has by
        /// then, the write goes through a classic round.
        grace_until: Option<Instant>,
        state: Register,
        outcomes: Vec<Result<Outcome, Error>>,
        /// acceptor → the promise it holds after accepting
        acks: BTreeMap<NodeId, Ballot>,
        /// The last change of the state a Prepare read (announced ahead of the batch's).
        pred: Option<KeyChange>,
        /// Bit `i`: command `i` of the batch may be announced with its own value (see
        /// `accept`; a batch holds at most `RECENT_WRITES`, 128, commands).
        own: u128,
        /// Every acceptor was asked (not only a thrifty round's first majority).
        widened: bool,
        /// The thrifty round's first majority (bit `i`: `cfg.nodes[i]`); 0 if none.
        first: u64,
    },
}

/// A majority's promise for `ballot`, with the state chosen just below it.
#[derive(Debug, Clone)]
struct Cached {
    ballot: Ballot,
    state: Register,
}

/// How long this key's phases take at its acceptors, learned from its own rounds: it sets the
/// phase timeout and the backoff's ceiling (module doc, "Paced by its acceptors").
#[derive(Debug, Default)]
struct Pace {
    /// How long the slowest Prepare or Accept phase lately took to reach its majority: raised
    /// to each one that took longer, halved at each that took less. The timeout covers it.
    slowest: Duration,
    /// How long such a phase takes on average (each new one weighs 1/8, as TCP's smoothed
    /// round-trip time): the backoff's ceiling. Not `slowest`: on a loaded node a phase now
    /// and then takes several times the usual, and a ceiling raised to that kept colliding
    /// proposers waiting longer than their rivals' rounds took (put p99 at 256 clients, 3 to
    /// 5 ms higher in 19 of 24 paired runs: BENCHMARKS.md, "Phases paced by their acceptors").
    mean: Duration,
    /// The phases given up on at their timeout lately, before a majority answered them.
    /// Once a majority did, each tells how long its phase took.
    abandoned: VecDeque<Abandoned>,
}

/// A phase given up on at its timeout ([`Pace`]).
#[derive(Debug)]
struct Abandoned {
    ballot: Ballot,
    /// An Accept phase (else a Prepare): a Prepare and the Accept that follows it share a
    /// ballot, and a late or duplicated `Promise` says nothing of how long the Accept took.
    accept: bool,
    started: Instant,
    /// The acceptors that answered it so far (bit `i`: `nodes[i]`; a membership has at most
    /// `MAX_MEMBERS`, 64).
    answered: u64,
}

impl Pace {
    /// How many phases given up on are remembered: the oldest, which the acceptors answer
    /// first (each takes its messages in order), until a majority answered it. One older
    /// than half the ceiling is dropped when the next is given up on; an answer that comes
    /// later than that counts as that long.
    const ABANDONED: usize = 8;
    /// The phase timeout never exceeds this many times the config's (16 s at the default
    /// 500 ms): acceptors slower than half that leave the key unavailable.
    const CEILING: u32 = 32;

    /// A Prepare or Accept phase reached its majority `took` after it began.
    fn took(&mut self, took: Duration, floor: Duration) {
        let took = took.min(floor * (Self::CEILING / 2));
        self.slowest = took.max(self.slowest / 2);
        self.sample(took);
    }

    /// Moves the mean 1/8 of the way to `took`.
    fn sample(&mut self, took: Duration) {
        self.mean = (self.mean * 7 + took) / 8;
    }

    /// `phase` was given up on at its timeout; `answered` holds the acceptors that had
    /// answered it. One a majority had answered already (a settle waiting for its own
    /// acceptor, a fast Accept short of a fast quorum) is not remembered: it did not wait for
    /// a majority, and one more answer would say nothing of how long a majority takes.
    fn gave_up(&mut self, phase: Abandoned, quorum: usize, now: Instant, floor: Duration) {
        let forgotten = floor * (Self::CEILING / 2);
        self.abandoned
            .retain(|a| now.saturating_duration_since(a.started) < forgotten);
        if phase.answered.count_ones() as usize >= quorum {
            return;
        }
        if self.abandoned.len() < Self::ABANDONED {
            self.abandoned.push_back(phase);
        }
    }

    /// The acceptor at `index` of `nodes` answered `ballot` at `now`, to an Accept if
    /// `accept` is `Some(true)`, to a Prepare if `Some(false)` (`None`: a refusal, which
    /// does not say): if that was a phase given up on, and this answer makes a majority
    /// (`quorum`) of them, the phase took that long, and this returns true. (Not one late
    /// answer alone: a minority's paused acceptor says nothing of how long a phase takes,
    /// and its phases end by the majority.)
    fn answered(
        &mut self,
        ballot: Ballot,
        accept: Option<bool>,
        index: usize,
        quorum: usize,
        now: Instant,
        floor: Duration,
    ) -> bool {
        let Some(i) = self
            .abandoned
            .iter()
            .position(|a| a.ballot == ballot && accept.is_none_or(|k| k == a.accept))
        else {
            return false;
        };
        let Abandoned {
            started, answered, ..
        } = &mut self.abandoned[i];
        *answered |= 1 << index;
        if answered.count_ones() as usize >= quorum {
            let took = now
                .saturating_duration_since(*started)
                .min(floor * (Self::CEILING / 2));
            self.slowest = self.slowest.max(took);
            self.sample(took);
            self.abandoned.remove(i);
            return true;
        }
        false
    }

    /// How long a phase waits for its majority.
    fn timeout(&self, floor: Duration) -> Duration {
        (self.slowest * 2).clamp(floor, floor * Self::CEILING)
    }

    /// The longest backoff after a conflict: `floor` (`backoff_max`), or as long as a phase
    /// takes on average if that is longer.
    fn backoff_ceiling(&self, floor: Duration) -> Duration {
        self.mean.max(floor)
    }
}

pub struct Proposer {
    cfg: ProposerConfig,
    /// This instance's id, carried by every request it sends and echoed by every reply
    /// ([`crate::messages::Envelope::proposer`]); replies with another id are not for it.
    id: u64,
    rng: SmallRng,
    /// The highest round this proposer used or saw in a rejection.
    round: u64,
    cache: Option<Cached>,
    queue: VecDeque<Pending>,
    batch: Vec<Pending>,
    phase: Phase,
    backoff: Duration,
    /// Rounds that failed since the last success.
    failures: u32,
    /// How long this key's phases take ([`Pace`]).
    pace: Pace,
    /// Acceptors that could not make their answer durable since the last success, and why:
    /// named in the error of a request that fails.
    storage_failures: BTreeMap<NodeId, (Ballot, String)>,
    /// This proposer has not tried the fast ballot yet (it tries it once, for its first
    /// write, when it holds no promise).
    fast_allowed: bool,
    reads: u64,
    /// The last state this proposer saw chosen, to repair acceptors that answer late. Only
    /// ever a full state: never one a `ReadReply` carried (module doc).
    chosen: Option<(Ballot, Register)>,
    /// The state this instance's own first write was chosen with at the fast ballot (a fast
    /// quorum took its Accept): a quick read counts a majority holding it (module doc).
    fast_chosen: Option<Register>,
    /// The next quick read asks with `Query` (full states), not `Read`: the last one saw
    /// acceptors behind the chosen ballot and held no full state to repair them with.
    full_reads: bool,
    /// Rounds started since the last [`Proposer::take_rounds`], by [`RoundKind`].
    rounds: [u64; RoundKind::ALL.len()],
    /// Some node watches: announce what is chosen ([`Effect::Chosen`]).
    announcing: bool,
    /// Acceptors this node suspects: a key whose majority holds one asks everyone at once
    /// ([`Proposer::avoid`]).
    avoid: Vec<NodeId>,
}

/// The acceptors a node's proposers suspect: each one that alone of a thrifty round's
/// majority left its request unanswered for `read_grace`, or could not write, for
/// [`Suspects::FOR`] after it did. One per node, shared by its proposers, so that one key's
/// silence spares the others the wait. Only a hint for whom to ask first: whatever it holds,
/// every round still counts the same quorums.
///
/// A round's silence alone is a poor sign on a loaded node: answers then take longer than
/// `read_grace` now and then, and a false suspect makes its keys ask everyone. So a silent
/// acceptor is suspected only if none of this node's proposers heard from it for
/// [`ProposerConfig::suspect_after`] ([`Suspects::heard`], [`Suspects::silent`]): a paused or
/// cut-off node, not a busy one. Until then each round that meets it widens after
/// `read_grace`.
#[derive(Debug, Default, Clone)]
pub struct Suspects {
    until: Vec<(NodeId, Instant)>,
    /// When some proposer of this node last had an answer from each acceptor.
    heard: Vec<(NodeId, Instant)>,
}

impl Suspects {
    /// How long a suspect makes its keys ask everyone; then they are thrifty again.
    pub const FOR: Duration = Duration::from_secs(1);

    /// `node` failed at `now` (it answered, but could not write): suspected at once.
    pub fn mark(&mut self, node: NodeId, now: Instant) {
        self.until.retain(|(n, t)| *n != node && *t > now);
        self.until.push((node, now + Self::FOR));
    }

    /// A proposer of this node had an answer from `node` at `now`.
    pub fn heard(&mut self, node: NodeId, now: Instant) {
        match self.heard.iter_mut().find(|(n, _)| *n == node) {
            Some((_, at)) => *at = (*at).max(now),
            None => self.heard.push((node, now)),
        }
    }

    /// `node` left a round unanswered for `quiet` ([`Effect::Suspect`]): suspected if no
    /// proposer of this node heard from it for as long either. True if it now is.
    pub fn silent(&mut self, node: NodeId, now: Instant, quiet: Duration) -> bool {
        let heard = self.heard.iter().find(|(n, _)| *n == node).map(|(_, t)| *t);
        if heard.is_some_and(|t| now.saturating_duration_since(t) < quiet) {
            return false;
        }
        self.mark(node, now);
        true
    }

    /// The acceptors suspected at `now`, into `into` (cleared first).
    pub fn current(&self, now: Instant, into: &mut Vec<NodeId>) {
        into.clear();
        into.extend(self.until.iter().filter(|(_, t)| *t > now).map(|(n, _)| *n));
    }
}

impl Proposer {
    pub fn new(mut cfg: ProposerConfig, mut rng: SmallRng) -> Proposer {
        assert!(
            (1..=RECENT_WRITES).contains(&cfg.max_batch),
            "max_batch must be within 1..={RECENT_WRITES}"
        );
        assert!(!cfg.nodes.is_empty(), "a proposer needs acceptors");
        // Sorted, so that every node's proposers place a key's first majority alike.
        cfg.nodes.sort_unstable();
        Proposer {
            id: rng.random(),
            backoff: cfg.backoff_min,
            failures: 0,
            pace: Pace::default(),
            storage_failures: BTreeMap::new(),
            fast_allowed: cfg.fast_path,
            cfg,
            rng,
            round: 0,
            cache: None,
            queue: VecDeque::new(),
            batch: Vec::new(),
            phase: Phase::Idle,
            reads: 0,
            chosen: None,
            fast_chosen: None,
            full_reads: false,
            rounds: [0; RoundKind::ALL.len()],
            announcing: false,
            avoid: Vec::new(),
        }
    }

    /// The acceptors `suspects` holds at `now`: a round of a key whose majority holds one asks
    /// every acceptor at once (looked at when a round starts).
    pub fn avoid(&mut self, suspects: &Suspects, now: Instant) {
        suspects.current(now, &mut self.avoid);
    }

    /// Announce what this proposer sees chosen from now on ([`Effect::Chosen`]): on while
    /// some node watches. Off, a round computes nothing for it.
    pub fn set_announcing(&mut self, on: bool) {
        self.announcing = on;
    }

    /// The rounds started since the last call, by kind (and starts counting again).
    pub fn take_rounds(&mut self) -> [(RoundKind, u64); RoundKind::ALL.len()] {
        let counts = std::mem::take(&mut self.rounds);
        RoundKind::ALL.map(|kind| (kind, counts[kind.index()]))
    }

    fn count(&mut self, kind: RoundKind) {
        self.rounds[kind.index()] += 1;
    }

    pub fn config(&self) -> &ProposerConfig {
        &self.cfg
    }

    /// `nodes` as bits of their places in `cfg.nodes`.
    fn answered_bits<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> u64 {
        nodes
            .filter_map(|n| self.cfg.nodes.iter().position(|m| m == n))
            .fold(0, |bits, i| bits | 1 << i)
    }

    /// The acceptors that answered the Prepare or Accept in flight, as [`Self::answered_bits`].
    fn answered_so_far(&self) -> u64 {
        match &self.phase {
            Phase::Preparing { promises, .. } => self.answered_bits(promises.keys()),
            Phase::Accepting { acks, .. } => self.answered_bits(acks.keys()),
            _ => 0,
        }
    }

    /// How long a phase waits for its majority: `phase_timeout`, or more while this key's
    /// acceptors answer more slowly ([`Pace`]).
    pub fn phase_timeout(&self) -> Duration {
        self.pace.timeout(self.cfg.phase_timeout)
    }

    /// The membership changed (see `paxos::membership`): from now on count `nodes` at
    /// `epoch`, and try the fast ballot only if `fast` (and the config allows it). The round
    /// in flight is given up and retried at the new epoch, and the cached promise dropped
    /// (it was counted against the old acceptors).
    pub fn reconfigure(
        &mut self,
        now: Instant,
        nodes: Vec<NodeId>,
        joining: Vec<NodeId>,
        epoch: u64,
        member: bool,
        fast: bool,
    ) {
        assert!(!nodes.is_empty(), "a proposer needs acceptors");
        self.abandon_round(now);
        self.cfg.nodes = nodes;
        self.cfg.nodes.sort_unstable();
        self.cfg.joining = joining;
        self.cfg.epoch = epoch;
        self.cfg.member = member;
        if !fast {
            self.fast_allowed = false;
        }
    }

    /// This instance's id (see [`crate::messages::Envelope::proposer`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Nothing queued and no round in flight.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.queue.is_empty() && self.batch.is_empty()
    }

    /// Queues a command; `id` identifies a write across retries, and `maybe_applied` says
    /// whether an earlier attempt of it may have taken effect (see `paxos::register`).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        now: Instant,
        token: Token,
        command: Command,
        id: Option<RequestId>,
        maybe_applied: bool,
        deadline: Instant,
        out: &mut Vec<Effect>,
    ) {
        let ask = Ask {
            token: Some(token),
            command,
            id,
            maybe_applied,
            settle: false,
            deadline,
        };
        self.enqueue(now, ask, out);
    }

    /// Queues an identity write: a round that changes nothing but is always accepted at a
    /// classic ballot, so that whatever state the key has is then chosen at a classic
    /// ballot on a majority that includes this node's acceptor (the round ends only once it
    /// accepted). That is how a key leaves the fast ballot for good, and how a membership
    /// change puts a key's chosen state on its new voters (see the module doc,
    /// `actors::anti_entropy` and `paxos::membership`). Answered like a get.
    pub fn settle(&mut self, now: Instant, token: Token, deadline: Instant, out: &mut Vec<Effect>) {
        let ask = Ask {
            token: Some(token),
            command: Command::Get,
            id: None,
            maybe_applied: false,
            settle: true,
            deadline,
        };
        self.enqueue(now, ask, out);
    }

    fn enqueue(&mut self, now: Instant, ask: Ask, out: &mut Vec<Effect>) {
        // No membership installed on this node (epoch 0: a node added but not installed
        // yet, or one whose first start has not found its cluster): every peer's network
        // refuses a Paxos frame of epoch 0 as malformed (`Envelope::validate`), so a round
        // could only wait out its deadline while each of its frames counts as a bad frame
        // on every peer. Answered at once, with nothing sent (`Error::NotThisNode`, "not
        // this node": it did not happen, another node may serve it), so that the client asks
        // another node now, and a client pinned to this node is told so at once instead of
        // retrying it until its deadline (`client::Client::retrying`). The simulation holds every
        // message it delivers to those checks (`sim::over_the_wire`): it found this.
        //
        // The same for a node that is no member of the membership it has installed (started
        // and not added, or removed and told so): every member's network refuses its frames
        // ("not a member", `deliver_peer_frame`), and counts each as a bad frame.
        //
        // Why nothing is lost by not sending. Safety: "not this node" is exact, nothing was
        // sent, so nothing can have happened. Liveness: a node that is no member of its own
        // membership cannot learn a newer one from its rounds either, since members drop
        // its frames unanswered (no `Stale` comes back); it learns it from its own pull,
        // which asks the members at least every 300 ms while the node does not vote
        // (`actors::membership::start`, `WAIT_STEP`). A node that is a member of a newer
        // epoch but has not installed it yet answers "not this node" until its pull installs
        // it, where its rounds would have been refused until then too (older epoch: the
        // acceptors answer `Stale`, which makes the node fetch the newer membership at
        // once; without rounds, the pull does that within 300 ms). Only new commands are
        // refused: a round already in flight when the node learns that it was removed goes
        // on to its deadline as before, so that a write that may have been accepted is
        // answered "unknown", never "not this node".
        let refusal = match (self.cfg.epoch, self.cfg.member) {
            (0, _) => Some(
                "this node has no membership installed yet (joining, or not started): \
                 ask another node"
                    .to_string(),
            ),
            (epoch, false) => Some(format!(
                "this node is not a member of the cluster's membership (epoch {epoch}): not \
                 added yet, or removed; ask a member"
            )),
            _ => None,
        };
        if let Some(why) = refusal {
            if let Some(token) = ask.token {
                out.push(Effect::Reply(token, Err(Error::NotThisNode(why))));
            }
            return;
        }
        if self.queue.len() >= self.cfg.max_queue {
            if let Some(token) = ask.token {
                out.push(Effect::Reply(
                    token,
                    Err(Error::Busy(format!(
                        "{} requests already queued for this key",
                        self.queue.len()
                    ))),
                ));
            }
            return;
        }
        self.queue.push_back(Pending::new(ask));
        if matches!(self.phase, Phase::Idle) {
            self.start_round(now, out);
        }
    }

    /// Handles an acceptor's reply to proposer instance `to`; a reply for another instance
    /// (one that stopped before this one started) is ignored. Panics on a request (those go
    /// to acceptors).
    pub fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        to: u64,
        msg: PeerMessage,
        out: &mut Vec<Effect>,
    ) {
        if to != self.id || !self.cfg.nodes.contains(&from) {
            return;
        }
        let answer = match &msg {
            PeerMessage::Promise { ballot, .. } => Some((*ballot, Some(false))),
            PeerMessage::Accepted { ballot, .. } => Some((*ballot, Some(true))),
            PeerMessage::Reject { ballot, .. } | PeerMessage::Failed { ballot, .. } => {
                Some((*ballot, None))
            }
            _ => None,
        };
        if let Some((ballot, accept)) = answer {
            if !self.pace.abandoned.is_empty() {
                let index = self.cfg.nodes.iter().position(|n| *n == from);
                let quorum = self.cfg.quorums().classic();
                let floor = self.cfg.phase_timeout;
                if let Some(index) = index {
                    if self
                        .pace
                        .answered(ballot, accept, index, quorum, now, floor)
                    {
                        self.count(RoundKind::Paced);
                    }
                }
            }
        }
        match msg {
            PeerMessage::QueryReply {
                read,
                accepted,
                state,
                fast_unknown,
                ..
            } => {
                let vote = Vote {
                    accepted,
                    state,
                    fast_unknown,
                    full: true,
                };
                self.on_query_reply(now, from, read, vote, out)
            }
            PeerMessage::ReadReply {
                read,
                accepted,
                seen,
                fast_unknown,
                ..
            } => {
                let vote = Vote {
                    accepted,
                    state: seen.forgetful(),
                    fast_unknown,
                    full: false,
                };
                self.on_query_reply(now, from, read, vote, out)
            }
            PeerMessage::Promise {
                ballot,
                accepted,
                state,
                fast_unknown,
            } => {
                let vote = Vote {
                    accepted,
                    state,
                    fast_unknown,
                    full: true,
                };
                self.on_promise(now, from, ballot, vote, out)
            }
            PeerMessage::Accepted { ballot, promised } => {
                self.on_accepted(now, from, ballot, promised, out)
            }
            PeerMessage::Reject { ballot, seen } => self.on_reject(now, from, ballot, seen, out),
            PeerMessage::Failed { ballot, reason } => {
                self.on_failed(now, from, ballot, reason, out)
            }
            // The actor fetches the newer membership; the round retries once it reconfigures.
            PeerMessage::Stale { .. } => {}
            request => panic!("a proposer received a request: {request:?}"),
        }
    }

    /// Advances timers: deadlines, phase timeouts, the end of a backoff.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.expire(now, out);
        self.end_accept_if_done(now, out);
        let timeout = self.phase_timeout();
        // A thrifty round whose first majority has not done it within `read_grace` asks the
        // rest (an acceptor of that majority is down, paused or slow).
        let silent = match &self.phase {
            Phase::Reading {
                started, widened, ..
            }
            | Phase::Accepting {
                started, widened, ..
            } => !widened && now.duration_since(*started) >= self.cfg.read_grace,
            _ => false,
        };
        if silent {
            self.widen(true, out);
        }
        match &self.phase {
            Phase::Reading {
                started,
                grace_until,
                ..
            } => {
                // Too few acceptors agree (or answer) for a quick read: settle it with a full
                // identity round, which also brings the laggards up to date.
                let graced = grace_until.is_some_and(|t| now >= t);
                if graced || now.duration_since(*started) >= timeout {
                    self.prepare(now, out);
                }
            }
            Phase::Accepting {
                grace_until: Some(t),
                ..
            } if now >= *t => {
                // A classic quorum took the fast Accept but no fast quorum did (an acceptor
                // is down or saw the key): go through a classic round at once, which
                // recovers whatever the fast attempt may have chosen.
                self.retry_later(now);
            }
            Phase::Preparing {
                started, ballot, ..
            }
            | Phase::Accepting {
                started, ballot, ..
            } => {
                if now.duration_since(*started) >= timeout {
                    let phase = Abandoned {
                        ballot: *ballot,
                        accept: matches!(self.phase, Phase::Accepting { .. }),
                        started: *started,
                        answered: self.answered_so_far(),
                    };
                    let quorum = self.cfg.quorums().classic();
                    self.pace
                        .gave_up(phase, quorum, now, self.cfg.phase_timeout);
                    self.cache = None;
                    self.retry_later(now);
                }
            }
            Phase::Backoff { until } => {
                if now >= *until {
                    self.phase = Phase::Idle;
                }
            }
            Phase::Idle => {}
        }
        if matches!(self.phase, Phase::Idle) && !(self.batch.is_empty() && self.queue.is_empty()) {
            self.start_round(now, out);
        }
    }

    /// The batch holds a settle not answered yet: its round must reach this node's own
    /// acceptor (and a joining one), where a settle puts the state. Not a settle answered
    /// already (its deadline passed): nothing waits any more for where it put the state, and
    /// the client commands batched with it need only a majority, as in any round (review,
    /// 2026-12-08: a settle whose own acceptor was silent held them until their deadlines,
    /// answered "outcome unknown" though chosen). (A settle after a fast write has no caller;
    /// it counts until its deadline all the same.)
    fn settle_waits(&self) -> bool {
        self.batch.iter().any(|p| p.ask.settle && !p.answered)
    }

    /// Answers every request whose deadline has passed.
    fn expire(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let expired = |p: &Pending| p.ask.deadline <= now;
        if self.batch.iter().any(|p| !p.answered && expired(p)) || self.queue.iter().any(expired) {
            self.answer_expired(now, out);
        }
        // A batch whose every caller has given up is dropped between rounds, never in the
        // middle of one (the round's outcomes are matched to the batch by position).
        let between_rounds = matches!(self.phase, Phase::Idle | Phase::Backoff { .. });
        if between_rounds && self.batch.iter().all(|p| p.answered) {
            self.batch.clear();
            self.phase = Phase::Idle;
        }
    }

    /// A command that no Accept carried yet is answered `Unavailable` and leaves the batch:
    /// it must never be applied after that answer ("certainly did not take effect"). One
    /// that an Accept carried is answered `Unknown` and stays, because that Accept may have
    /// been chosen; retrying the round with it is safe (its id de-duplicates it).
    fn answer_expired(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let errors = [self.deadline_error(false), self.deadline_error(true)];
        let reply = |p: &Pending, out: &mut Vec<Effect>| {
            if let Some(token) = p.ask.token {
                let error = errors[usize::from(p.accept_sent)].clone();
                out.push(Effect::Reply(token, Err(error)));
            }
        };
        self.batch.retain_mut(|p| {
            if p.answered || p.ask.deadline > now {
                return true;
            }
            reply(p, out);
            p.answered = true;
            p.accept_sent
        });
        self.queue.retain(|p| {
            let keep = p.ask.deadline > now;
            if !keep {
                reply(p, out);
            }
            keep
        });
    }

    fn start_round(&mut self, now: Instant, out: &mut Vec<Effect>) {
        debug_assert!(matches!(self.phase, Phase::Idle));
        self.expire(now, out);
        while self.batch.len() < self.cfg.max_batch {
            match self.queue.pop_front() {
                Some(p) => self.batch.push(p),
                None => break,
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let writes = self
            .batch
            .iter()
            .any(|p| p.ask.command.is_write() || p.ask.settle);
        let settles = self.batch.iter().any(|p| p.ask.settle);
        match (&self.cache, writes) {
            (_, false) => {
                self.count(RoundKind::QuickRead);
                self.reads += 1;
                let full = std::mem::take(&mut self.full_reads);
                let query = read_request(self.reads, full);
                let first = self.ask_first(true, query, out);
                self.phase = Phase::Reading {
                    read: self.reads,
                    started: now,
                    replies: BTreeMap::new(),
                    grace_until: None,
                    widened: first == 0,
                    first,
                    full,
                };
            }
            (Some(cached), true) => {
                let (ballot, state) = (cached.ballot, cached.state.clone());
                self.count(RoundKind::OneRoundTrip);
                self.accept(now, ballot, state, false, out);
            }
            (None, true) if self.fast_allowed && !settles => {
                self.fast_allowed = false;
                self.count(RoundKind::FastBallot);
                self.accept(now, Ballot::FAST, Register::default(), false, out);
            }
            (None, true) => self.prepare(now, out),
        }
    }

    fn prepare(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.count(RoundKind::FullRound);
        self.round += 1;
        let ballot = Ballot::new(self.round, self.cfg.node);
        self.phase = Phase::Preparing {
            ballot,
            started: now,
            promises: BTreeMap::new(),
        };
        out.push(Effect::Broadcast(PeerMessage::Prepare { ballot }));
    }

    /// Applies the batch to `state` (chosen below `ballot`) and sends it for acceptance.
    /// `read`: `state` came from a Prepare's promises (another proposer may have made it), so
    /// its own last change is announced too, ahead of the batch's.
    fn accept(
        &mut self,
        now: Instant,
        ballot: Ballot,
        mut state: Register,
        read: bool,
        out: &mut Vec<Effect>,
    ) {
        // Kept whether or not anyone watches now: a watch may begin before this round's state
        // is chosen, and the read state is part of what is then announced.
        let pred = (read && state.version > 0).then(|| KeyChange {
            version: state.version,
            value: state.value.clone(),
        });
        let mut outcomes = Vec::with_capacity(self.batch.len());
        // Per command: may its change be announced with the value it carries? Yes if this
        // round applied it, or if this proposer sent this very command in an earlier Accept
        // (its recorded outcome is then this command's own). A recorded outcome of a write id
        // this proposer never sent may come from a client that reused the id with another
        // value: its change is announced only from the state read (see `changes_made`).
        // A bit per command, not a vector: no allocation on the write path.
        let mut own = 0u128;
        for (i, p) in self.batch.iter().enumerate() {
            let before = state.version;
            let maybe_applied = p.ask.maybe_applied || p.accept_sent;
            outcomes
                .push(apply(&mut state, &p.ask.command, p.ask.id, maybe_applied).map_err(too_late));
            if state.version > before || p.accept_sent {
                own |= 1 << i;
            }
        }
        let next = ballot.next_for(self.cfg.node);
        self.round = self.round.max(next.round);
        for p in &mut self.batch {
            p.accept_sent = true;
        }
        // The fast ballot needs more than a majority, and a settle its own acceptor's vote:
        // both ask everyone.
        let thrifty = ballot != Ballot::FAST && !self.settle_waits();
        let accept = PeerMessage::Accept {
            ballot,
            state: state.clone(),
            next: Some(next),
        };
        let first = self.ask_first(thrifty, accept, out);
        self.phase = Phase::Accepting {
            ballot,
            next,
            started: now,
            grace_until: None,
            state,
            outcomes,
            acks: BTreeMap::new(),
            pred,
            own,
            widened: first == 0,
            first,
        };
    }

    /// The acceptors a thrifty round asks first (bit `i`: `cfg.nodes[i]`, sorted): the key's
    /// majority, from its place (`spread`) on. `None` when every acceptor is asked at once:
    /// thrifty rounds are off, a majority is everyone, a membership change is under way (a
    /// joining acceptor must take every settle and rescan), or this node suspects one of the
    /// key's majority ([`Proposer::avoid`]). A suspect is not replaced by another acceptor:
    /// the key's state is on its own majority, and a read that asked another one would
    /// disagree and fall back to a full round.
    fn first_asked(&self) -> Option<u64> {
        let n = self.cfg.nodes.len();
        let quorum = self.cfg.quorums().classic();
        if !self.cfg.thrifty || quorum >= n || !self.cfg.joining.is_empty() {
            return None;
        }
        let first = first_majority(n, quorum, self.cfg.spread);
        if first
            .clone()
            .any(|i| self.avoid.contains(&self.cfg.nodes[i]))
        {
            return None;
        }
        Some(first.fold(0, |mask, i| mask | 1 << i))
    }

    /// The acceptors of a mask of `cfg.nodes`' positions.
    fn members(&self, mask: u64) -> Vec<NodeId> {
        self.cfg
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> i & 1 == 1)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Sends a round's request to its first majority (`thrifty`, and a majority is fewer than
    /// all), or to every acceptor; returns the first majority's mask, 0 if everyone was asked.
    fn ask_first(&self, thrifty: bool, msg: PeerMessage, out: &mut Vec<Effect>) -> u64 {
        match self.first_asked().filter(|_| thrifty) {
            Some(first) => {
                out.push(Effect::Multicast(self.members(first), msg));
                first
            }
            None => {
                out.push(Effect::Broadcast(msg));
                0
            }
        }
    }

    /// A thrifty read or Accept asks the acceptors beyond its first majority: one of that
    /// majority was silent for `read_grace` (`silent`: each one that has not answered is
    /// reported, [`Effect::Suspect`]), could not write, or they disagreed. The same request
    /// goes to them, so everything said of a round that asked everyone at once holds from
    /// here on.
    fn widen(&mut self, silent: bool, out: &mut Vec<Effect>) {
        let (msg, first, answered) = match &mut self.phase {
            Phase::Reading {
                read,
                widened,
                first,
                replies,
                full,
                ..
            } if !*widened => {
                *widened = true;
                let answered: Vec<NodeId> = replies.keys().copied().collect();
                (read_request(*read, *full), *first, answered)
            }
            Phase::Accepting {
                ballot,
                next,
                state,
                widened,
                first,
                acks,
                ..
            } if !*widened => {
                *widened = true;
                let again = PeerMessage::Accept {
                    ballot: *ballot,
                    state: state.clone(),
                    next: Some(*next),
                };
                (again, *first, acks.keys().copied().collect())
            }
            _ => return,
        };
        self.count(RoundKind::Widened);
        // Suspected: the one member of the majority that is silent while the others
        // answered. When more are silent, this node (or the network) may be the slow one.
        let silent: Vec<NodeId> = self
            .members(first)
            .into_iter()
            .filter(|n| silent && !answered.contains(n))
            .collect();
        if let [node] = silent[..] {
            out.push(Effect::Suspect(node));
        }
        let everyone = u64::MAX >> (64 - self.cfg.nodes.len());
        out.push(Effect::Multicast(self.members(everyone & !first), msg));
    }

    fn on_query_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        read: u64,
        reply: Vote,
        out: &mut Vec<Effect>,
    ) {
        let accepted = reply.accepted;
        let quorums = self.cfg.quorums();
        let n = self.cfg.nodes.len();
        let read_grace = self.cfg.read_grace;
        let Phase::Reading {
            read: current,
            replies,
            grace_until,
            widened,
            ..
        } = &mut self.phase
        else {
            self.repair_if_stale(from, accepted, out);
            return;
        };
        if read != *current {
            self.repair_if_stale(from, accepted, out);
            return;
        }
        replies.entry(from).or_insert(reply);
        // A thrifty read asks the rest as soon as its first majority cannot show a state
        // chosen by itself: it disagrees, or a key at the fast ballot needs a fast quorum
        // (unless it holds the state this proposer saw chosen there).
        let known = self.fast_chosen.as_ref();
        let widen = !*widened
            && (replies.len() >= quorums.classic()
                || replies.values().any(|v| {
                    v.fast_unknown || (v.accepted == Ballot::FAST && !is_known_fast(v, known))
                }));
        match read_answers(replies, n, quorums.classic(), quorums.fast(), known) {
            QuickRead::Chosen(ballot, state) => {
                if ballot == Ballot::FAST && known == Some(&state) {
                    // (`count`, on the one field it touches: the phase is borrowed)
                    self.rounds[RoundKind::KnownFastRead.index()] += 1;
                }
                if ballot != Ballot::FAST {
                    let stale: Vec<NodeId> = replies
                        .iter()
                        .filter(|(_, v)| v.accepted < ballot)
                        .map(|(n, _)| *n)
                        .collect();
                    // Repair sends the state in an Accept: only a full one (module doc).
                    let full = replies
                        .values()
                        .find(|v| v.accepted == ballot && v.full)
                        .map(|v| v.state.clone());
                    match full {
                        Some(full) => {
                            self.chosen = Some((ballot, full));
                            for node in stale {
                                self.repair_if_stale(node, Ballot::ZERO, out);
                            }
                        }
                        None => self.full_reads = !stale.is_empty(),
                    }
                }
                let outcomes = self
                    .batch
                    .iter()
                    .map(|p| {
                        apply(&mut state.clone(), &p.ask.command, p.ask.id, true).map_err(too_late)
                    })
                    .collect();
                self.finish(now, outcomes, out);
            }
            // No state can be shown chosen any more: settle it with a full identity round.
            QuickRead::Impossible => self.prepare(now, out),
            QuickRead::Undecided => {
                if replies.len() >= quorums.classic() && grace_until.is_none() {
                    // A majority answered but disagrees: give the rest a moment (a write is
                    // probably landing), then settle it with a full round rather than wait
                    // for the phase timeout when some acceptors are down.
                    *grace_until = Some(now + read_grace);
                }
                if widen {
                    self.widen(false, out);
                }
            }
        }
    }

    /// Sends the last chosen state to an acceptor that reported an older accepted ballot
    /// (read repair). Accepting a chosen state at its own ballot is always safe: it is exactly
    /// a delayed copy of the original Accept.
    fn repair_if_stale(&self, node: NodeId, accepted: Ballot, out: &mut Vec<Effect>) {
        if let Some((ballot, state)) = &self.chosen {
            if accepted < *ballot {
                out.push(Effect::Send(
                    node,
                    PeerMessage::Accept {
                        ballot: *ballot,
                        state: state.clone(),
                        next: None,
                    },
                ));
            }
        }
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        promise: Vote,
        out: &mut Vec<Effect>,
    ) {
        let quorum = self.cfg.quorums().classic();
        let Phase::Preparing {
            ballot: current,
            promises,
            started,
        } = &mut self.phase
        else {
            return;
        };
        // An acceptor promises only above what it accepted: a promise that says otherwise is
        // broken (or forged) and is not counted.
        if ballot != *current || promise.accepted >= ballot {
            return;
        }
        promises.entry(from).or_insert(promise);
        if promises.len() < quorum {
            return;
        }
        let started = *started;
        // CASPaxos §2.1: take the state with the highest accepted ballot among the majority.
        let Vote {
            accepted: highest,
            state,
            ..
        } = promises
            .values()
            .max_by_key(|v| v.accepted)
            .cloned()
            .expect("a majority of promises");
        let state = if highest > Ballot::FAST {
            state
        } else {
            match self.recover_fast() {
                Some(state) => state,
                // Not decidable from these promises: wait for more (or the phase timeout).
                None => return,
            }
        };
        self.pace.took(now - started, self.cfg.phase_timeout);
        self.accept(now, ballot, state, true, out);
    }

    /// Fast Paxos recovery, when no promise reports a classic ballot: several states may have
    /// been accepted at the fast ballot, and at most one chosen (by a fast quorum). A state was
    /// possibly chosen if the acceptors that report it, those that did not answer and those
    /// that may have lost a fast vote (`fast_unknown`, at most one) make a fast quorum; that state must be
    /// carried forward. If none was, any state is safe; the most reported one is taken (its
    /// writer may be waiting), or the empty register. `None` when the promises cannot tell:
    /// two states possibly chosen, or so many unknowns and silent acceptors that a state no
    /// promise reports may have been chosen (more answers settle it; with at most a minority
    /// of lost stores and every acceptor answering, it never happens).
    fn recover_fast(&self) -> Option<Register> {
        let Phase::Preparing { promises, .. } = &self.phase else {
            unreachable!("recovery runs while preparing")
        };
        // At most one acceptor can really have lost a fast vote: paxkv tolerates one lost
        // store at a time, each repaired (its marks settled away) before the next. The other
        // marks come from intact restarts, which cannot tell themselves from a rollback and
        // mark too; counting them all would leave such a key undecidable for good (a whole
        // cluster restarted at once marks every key one node holds at the fast ballot).
        let unknown = promises.values().filter(|v| v.fast_unknown).count().min(1);
        let doubtful = self.cfg.nodes.len() - promises.len() + unknown;
        let fast_quorum = self.cfg.quorums().fast();
        if doubtful >= fast_quorum {
            return None;
        }
        let counts = tally(
            promises
                .values()
                .filter(|v| v.accepted == Ballot::FAST)
                .map(|v| &v.state),
        );
        let possibly_chosen: Vec<&Register> = counts
            .iter()
            .filter(|(_, n)| n + doubtful >= fast_quorum)
            .map(|(s, _)| *s)
            .collect();
        if possibly_chosen.len() > 1 {
            return None;
        }
        Some(
            possibly_chosen
                .first()
                .copied()
                .or_else(|| most(&counts).map(|(s, _)| *s))
                .cloned()
                .unwrap_or_default(),
        )
    }

    fn on_accepted(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        promised: Ballot,
        out: &mut Vec<Effect>,
    ) {
        let Phase::Accepting {
            ballot: current,
            acks,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if ballot != *current {
            return;
        }
        acks.entry(from).or_insert(promised);
        self.end_accept_if_done(now, out);
    }

    /// Ends the Accept phase once its ballot is chosen (a quorum for it accepted) and, while
    /// a settle waits, this node's own acceptor and a joining one accepted too. Run at each
    /// Accepted, and at each tick: a settle answered at its deadline frees a round whose
    /// majority had accepted already, and no more answers may come (review, 2026-12-08).
    fn end_accept_if_done(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let quorum = self.cfg.quorums().classic();
        let read_grace = self.cfg.read_grace;
        let settle_waits = self.settle_waits();
        let Phase::Accepting {
            ballot,
            acks,
            grace_until,
            ..
        } = &mut self.phase
        else {
            return;
        };
        let ballot = *ballot;
        let needed = self.cfg.quorums().for_ballot(ballot == Ballot::FAST);
        // A settle also puts the state on this node's own acceptor (if it votes) and on a
        // joining one (a rescan counts on it): it ends only once those accepted too.
        let cfg = &self.cfg;
        let here = !settle_waits
            || std::iter::once(&cfg.node)
                .chain(cfg.joining.iter())
                .filter(|n| cfg.nodes.contains(n))
                .all(|n| acks.contains_key(n));
        if acks.len() < needed || !here {
            if ballot == Ballot::FAST && acks.len() >= quorum && grace_until.is_none() {
                *grace_until = Some(now + read_grace);
            }
            return;
        }
        let Phase::Accepting {
            ballot,
            next,
            state,
            outcomes,
            acks,
            pred,
            own,
            started,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!()
        };
        self.pace.took(now - started, self.cfg.phase_timeout);
        let promised_next = acks.values().filter(|p| **p == next).count();
        self.cache = (promised_next >= quorum).then(|| Cached {
            ballot: next,
            state: state.clone(),
        });
        if ballot == Ballot::FAST {
            self.fast_chosen = Some(state.clone());
        }
        if ballot == Ballot::FAST && self.cfg.settle_fast_writes {
            // Chosen at the fast ballot: settle it at a classic one before anything else
            // (the next round; one Accept when the promise for `next` is cached), so that
            // the key does not stay at the fast ballot, where a lost acceptor state loses it.
            // It is never repaired onto other acceptors at the fast ballot: how many took it
            // is what a classic round reads to recover it.
            let deadline = now + self.phase_timeout() * 4;
            let settle = Pending::new(Ask {
                token: None,
                command: Command::Get,
                id: None,
                maybe_applied: false,
                settle: true,
                deadline,
            });
            self.queue.push_front(settle);
        } else if ballot != Ballot::FAST {
            self.chosen = Some((ballot, state));
        }
        if self.announcing {
            let changes = self.changes_made(pred, &outcomes, own);
            if !changes.is_empty() {
                out.push(Effect::Chosen(changes));
            }
        }
        self.finish(now, outcomes, out);
    }

    /// The changes a chosen round made, in version order: the read state's last one, then
    /// each command's (see the module doc, "Announcing what is chosen").
    fn changes_made(
        &self,
        pred: Option<KeyChange>,
        outcomes: &[Result<Outcome, Error>],
        own: u128,
    ) -> Vec<KeyChange> {
        let mut changes: Vec<KeyChange> = pred.into_iter().collect();
        changes.extend(
            self.batch
                .iter()
                .zip(outcomes)
                .enumerate()
                .filter(|(i, _)| own >> i & 1 == 1)
                .filter_map(|(_, (p, outcome))| {
                    KeyChange::of(&p.ask.command, outcome.as_ref().ok()?)
                }),
        );
        // A retried write's recorded outcome may repeat the read state's change, or lie below
        // it (its first round was carried forward by another proposer, which announced only
        // the batch's last version): every one is a change of the history, so all are kept,
        // in version order, each once.
        changes.sort_by_key(|c| c.version);
        changes.dedup_by_key(|c| c.version);
        changes
    }

    fn on_reject(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        seen: Ballot,
        _out: &mut Vec<Effect>,
    ) {
        self.round = self.round.max(seen.round);
        if !self.is_first_answer(from, ballot) {
            return;
        }
        self.cache = None;
        self.retry_later(now);
    }

    /// Is this a reply to the ballot of the current Prepare or Accept, from an acceptor that
    /// has not answered it yet? (Anything else is late or a duplicate.)
    fn is_first_answer(&self, from: NodeId, ballot: Ballot) -> bool {
        match &self.phase {
            Phase::Preparing {
                ballot: current,
                promises,
                ..
            } => ballot == *current && !promises.contains_key(&from),
            Phase::Accepting {
                ballot: current,
                acks,
                ..
            } => ballot == *current && !acks.contains_key(&from),
            _ => false,
        }
    }

    /// An acceptor could not make its answer to `ballot` durable. Once so many have failed
    /// that the rest cannot make a quorum, the phase is retried after a backoff rather than
    /// waited out; the reasons go into the error of a request that runs out of time.
    fn on_failed(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        reason: String,
        out: &mut Vec<Effect>,
    ) {
        if !self.is_first_answer(from, ballot) {
            return;
        }
        self.storage_failures.insert(from, (ballot, reason));
        // A thrifty Accept's first majority is short of one: ask the rest at once, and
        // suspect it (its keys ask everyone for a while).
        out.push(Effect::Failing(from));
        self.widen(false, out);
        let needed = self.cfg.quorums().for_ballot(ballot == Ballot::FAST);
        let failed = self
            .storage_failures
            .values()
            .filter(|(b, _)| *b == ballot)
            .count();
        if self.cfg.nodes.len().saturating_sub(failed) < needed {
            self.cache = None;
            self.retry_later(now);
        }
    }

    /// Why a request that runs out of time failed: no majority, and which acceptors could not
    /// write, if any.
    fn deadline_error(&self, accept_sent: bool) -> Error {
        let storage = if self.storage_failures.is_empty() {
            String::new()
        } else {
            let nodes: Vec<String> = self
                .storage_failures
                .keys()
                .map(|n| n.to_string())
                .collect();
            let (_, first) = self.storage_failures.values().next().expect("not empty");
            format!("; storage failed on node(s) {}: {first}", nodes.join(", "))
        };
        // Who answered the round in progress: an operator (and a rescan that keeps failing)
        // can tell a node that never answers from a quorum that is not there.
        let answered = match &self.phase {
            Phase::Accepting { acks, .. } => format!(
                " (accepted by {:?} of voters {:?}{})",
                acks.keys().collect::<Vec<_>>(),
                self.cfg.nodes,
                if self.cfg.joining.is_empty() {
                    String::new()
                } else {
                    format!(", joining {:?}", self.cfg.joining)
                }
            ),
            _ => String::new(),
        };
        if accept_sent {
            Error::Unknown(format!(
                "no majority answered the Accept before the deadline{answered}{storage}"
            ))
        } else {
            Error::Unavailable(format!("no majority answered before the deadline{storage}"))
        }
    }

    /// Gives up the current phase and schedules the batch again after a random backoff.
    ///
    /// The first retry after a success goes at once: most first rejections only tell a fresh
    /// proposer the ballot it must climb above. Later ones back off at random, doubling up to
    /// `backoff_max`, so that dueling proposers on different nodes stop colliding.
    fn retry_later(&mut self, now: Instant) {
        let wait = if self.failures == 0 {
            Duration::ZERO
        } else {
            let ms = self.backoff.as_micros() as u64;
            let min = self.cfg.backoff_min.as_micros() as u64;
            let ceiling = self.pace.backoff_ceiling(self.cfg.backoff_max);
            self.backoff = (self.backoff * 2).min(ceiling);
            Duration::from_micros(self.rng.random_range(min..=ms.max(min)))
        };
        self.failures += 1;
        self.count(RoundKind::ConflictRetry);
        self.phase = Phase::Backoff { until: now + wait };
    }

    /// Gives up the phase in flight and the cached promise, as a phase timeout would (the
    /// batch is retried; what an Accept already carried stays "may have taken effect"). Safe
    /// at any moment. Its caller is `reconfigure` (a membership change: the round's quorum
    /// was counted against the old acceptors); the simulation's membership changes run it.
    fn abandon_round(&mut self, now: Instant) {
        if matches!(
            self.phase,
            Phase::Reading { .. } | Phase::Preparing { .. } | Phase::Accepting { .. }
        ) {
            self.retry_later(now);
        }
        self.cache = None;
    }

    /// When [`Proposer::tick`] next has something to do: the end of a backoff or a phase, or a
    /// request's deadline. `None` when idle.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Idle => None,
            Phase::Backoff { until } => Some(*until),
            Phase::Reading {
                started,
                grace_until,
                widened,
                ..
            }
            | Phase::Accepting {
                started,
                grace_until,
                widened,
                ..
            } => {
                let end = grace_until.unwrap_or(*started + self.phase_timeout());
                Some(if *widened {
                    end
                } else {
                    end.min(*started + self.cfg.read_grace)
                })
            }
            Phase::Preparing { started, .. } => Some(*started + self.phase_timeout()),
        };
        let deadlines = self
            .batch
            .iter()
            .filter(|p| !p.answered)
            .chain(self.queue.iter())
            .map(|p| p.ask.deadline)
            .min();
        match (phase, deadlines) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The batch's round succeeded: answer everyone and start the next round.
    fn finish(
        &mut self,
        now: Instant,
        outcomes: Vec<Result<Outcome, Error>>,
        out: &mut Vec<Effect>,
    ) {
        assert_eq!(outcomes.len(), self.batch.len(), "one outcome per command");
        for (p, outcome) in self.batch.drain(..).zip(outcomes) {
            if let (false, Some(token)) = (p.answered, p.ask.token) {
                out.push(Effect::Reply(token, outcome));
            }
        }
        self.backoff = self.cfg.backoff_min;
        self.failures = 0;
        self.storage_failures.clear();
        self.phase = Phase::Idle;
        if !self.queue.is_empty() {
            self.start_round(now, out);
        }
    }
}

/// What the read answers of `replies` (out of `n` acceptors) tell.
pub(crate) enum QuickRead {
    /// A state shown chosen: at a classic ballot by a classic quorum of equal ballots, or at
    /// the fast ballot by a fast quorum of equal states.
    Chosen(Ballot, Register),
    /// Not yet: the acceptors still to answer could show one.
    Undecided,
    /// No state can be shown chosen whatever the others answer.
    Impossible,
}

/// The positions, among `n` voters in id order, of a key's thrifty majority: `quorum` of them
/// in a ring from the key's hash (`spread`). The same on every node.
pub(crate) fn first_majority(
    n: usize,
    quorum: usize,
    spread: u64,
) -> impl Iterator<Item = usize> + Clone {
    let start = (spread % n as u64) as usize;
    (0..quorum).map(move |i| (start + i) % n)
}

/// What the quick read's rule reads of one acceptor's answer: a [`Vote`], or a record a
/// listing scanned (`paxos::listing`, which borrows the records instead of moving each into a
/// `Vote`).
pub(crate) trait Answer {
    /// The highest ballot it accepted (`Ballot::ZERO`: none).
    fn accepted(&self) -> Ballot;
    /// The state it accepted at that ballot.
    fn state(&self) -> &Register;
    /// It may have lost a vote at the fast ballot.
    fn fast_unknown(&self) -> bool;
    /// The state is whole ([`Vote::full`]).
    fn full(&self) -> bool;
}

impl Answer for Vote {
    fn accepted(&self) -> Ballot {
        self.accepted
    }
    fn state(&self) -> &Register {
        &self.state
    }
    fn fast_unknown(&self) -> bool {
        self.fast_unknown
    }
    fn full(&self) -> bool {
        self.full
    }
}

/// [`QuickRead`], its state borrowed from the answer that holds it.
pub(crate) enum QuickReadOf<'a> {
    Chosen(Ballot, &'a Register),
    Undecided,
    Impossible,
}

/// The quick read's rule (see the module doc): a state is read from the acceptors' answers
/// alone only where they show it chosen. A reply that may have lost a fast vote confirms
/// nothing.
pub(crate) fn read_answers(
    replies: &BTreeMap<NodeId, Vote>,
    n: usize,
    quorum: usize,
    fast_quorum: usize,
    known_fast: Option<&Register>,
) -> QuickRead {
    match read_answers_of(replies.values(), n, quorum, fast_quorum, known_fast) {
        QuickReadOf::Chosen(ballot, state) => QuickRead::Chosen(ballot, state.clone()),
        QuickReadOf::Undecided => QuickRead::Undecided,
        QuickReadOf::Impossible => QuickRead::Impossible,
    }
}

/// [`read_answers`] over the answers `replies` yields (at most one per acceptor, `n` of
/// them in all), the state it shows chosen borrowed.
pub(crate) fn read_answers_of<'a, A: Answer + 'a>(
    replies: impl Iterator<Item = &'a A> + Clone,
    n: usize,
    quorum: usize,
    fast_quorum: usize,
    known_fast: Option<&'a Register>,
) -> QuickReadOf<'a> {
    let missing = n - replies.clone().count();
    // The best classic ballot: how many report it.
    let ballots = tally(
        replies
            .clone()
            .filter(|v| v.accepted() != Ballot::FAST && !v.fast_unknown())
            .map(|v| v.accepted()),
    );
    let classic = most(&ballots).map(|(b, c)| (*b, c));
    // The most reported state at the fast ballot: chosen only with a fast quorum. States
    // there are told apart by the writes they remember, so only full ones count (an acceptor
    // answers a `Read` in full at the fast ballot, and a `ReadReply` claiming it is refused
    // by `Envelope::validate`; this is the last line).
    let states = tally(
        replies
            .clone()
            .filter(|v| v.accepted() == Ballot::FAST && v.full())
            .map(|v| v.state()),
    );
    let fast = most(&states).map(|(s, c)| (*s, c));
    match (classic, fast) {
        (_, Some((state, c))) if c >= fast_quorum => {
            return QuickReadOf::Chosen(Ballot::FAST, state)
        }
        (Some((ballot, c)), _) if c >= quorum => {
            let state = replies
                .clone()
                .find(|v| v.accepted() == ballot && !v.fast_unknown())
                .map(|v| v.state())
                .expect("a counted ballot has a reply");
            return QuickReadOf::Chosen(ballot, state);
        }
        _ => {}
    }
    // The state this proposer saw chosen at the fast ballot, on a majority: the latest chosen
    // (module doc, "A state this proposer saw chosen at the fast ballot").
    if let Some(known) = known_fast {
        let holding = replies.filter(|v| is_known_fast(*v, Some(known))).count();
        if holding >= quorum {
            return QuickReadOf::Chosen(Ballot::FAST, known);
        }
    }
    let classic_possible = classic.map_or(0, |(_, c)| c) + missing >= quorum;
    let fast_possible = fast.map_or(0, |(_, c)| c) + missing >= fast_quorum;
    if classic_possible || fast_possible {
        QuickReadOf::Undecided
    } else {
        QuickReadOf::Impossible
    }
}

/// Does `v` report, in full, the state this proposer saw chosen at the fast ballot?
fn is_known_fast(v: &impl Answer, known: Option<&Register>) -> bool {
    v.accepted() == Ballot::FAST && v.full() && !v.fast_unknown() && known == Some(v.state())
}

/// A quick read's request: `Read` (answered without the writes a state remembers at a
/// classic ballot), or `Query` when the read wants full states to repair with.
fn read_request(read: u64, full: bool) -> PeerMessage {
    if full {
        PeerMessage::Query { read }
    } else {
        PeerMessage::Read { read }
    }
}

fn too_late(_: TooLate) -> Error {
    Error::Unknown(
        "the write was retried after the key forgot whether it had applied it; \
         it took effect at most once"
            .into(),
    )
}

#[cfg(test)]
#[path = "proposer_tests.rs"]
mod tests;
