//! Bad input from the network never reaches an assertion: random bytes, valid frames with
//! bytes flipped, and structurally random Paxos messages (any ballots, any states, any
//! sender) go through decoding and validation exactly as a node's connection handler does,
//! and whatever passes is stepped through an acceptor and a proposer in the middle of a
//! round. Zero panics allowed. Bounded (a few thousand cases), so it runs in CI.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use paxkv::config::Config;
use paxkv::frame;
use paxkv::messages::{Envelope, Frame, PeerMessage};
use paxkv::paxos::acceptor::Acceptor;
use paxkv::paxos::proposer::{Proposer, ProposerConfig};
use paxkv::paxos::record::AcceptorRecord;
use paxkv::paxos::types::{
    Ballot, ClientFloor, Command, RecentWrites, Register, Remembered, RequestId, WriteOutcome,
};
use proptest::prelude::*;
use rand::SeedableRng;

fn config() -> Config {
    let addrs: Vec<SocketAddr> = (1..=5)
        .map(|i| format!("127.0.0.1:{}", 7000 + i).parse().unwrap())
        .collect();
    Config::local(&addrs)
}

fn ballot() -> impl Strategy<Value = Ballot> {
    prop_oneof![
        Just(Ballot::ZERO),
        Just(Ballot::FAST),
        (0u64..4, 0u32..7).prop_map(|(r, n)| Ballot::new(r, n)),
        (any::<u64>(), any::<u32>()).prop_map(|(r, n)| Ballot::new(r, n)),
    ]
}

fn register() -> impl Strategy<Value = Register> {
    let write = (any::<u64>(), 0u64..4, 0u64..5).prop_map(|(client, seq, version)| Remembered {
        id: RequestId { client, seq },
        outcome: WriteOutcome::Put { version },
    });
    let floor = (any::<u64>(), any::<u64>()).prop_map(|(client, seq)| ClientFloor { client, seq });
    (
        0u64..6,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec(write, 0..140),
        proptest::collection::vec(floor, 0..70),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(version, value, recent, floors, floors_overflowed, lease, fence)| Register {
                version,
                value,
                // Past the bound too (up to 139): those frames must be refused.
                recent: RecentWrites::forged(&recent),
                floors,
                floors_overflowed,
                lease,
                fence,
            },
        )
}

fn peer_message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        ballot().prop_map(|ballot| PeerMessage::Prepare { ballot }),
        (ballot(), ballot(), register(), any::<bool>()).prop_map(
            |(ballot, accepted, state, fast_unknown)| PeerMessage::Promise {
                ballot,
                accepted,
                state,
                fast_unknown
            }
        ),
        (ballot(), register(), proptest::option::of(ballot())).prop_map(|(ballot, state, next)| {
            PeerMessage::Accept {
                ballot,
                state,
                next,
            }
        }),
        (ballot(), ballot())
            .prop_map(|(ballot, promised)| PeerMessage::Accepted { ballot, promised }),
        (ballot(), ballot()).prop_map(|(ballot, seen)| PeerMessage::Reject { ballot, seen }),
        (ballot(), ".{0,8}").prop_map(|(ballot, reason)| PeerMessage::Failed { ballot, reason }),
        (0u64..4).prop_map(|read| PeerMessage::Query { read }),
        (0u64..4, ballot(), ballot(), register(), any::<bool>()).prop_map(
            |(read, promised, accepted, state, fast_unknown)| PeerMessage::QueryReply {
                read,
                promised,
                accepted,
                state,
                fast_unknown
            }
        ),
        (0u64..4).prop_map(|read| PeerMessage::Read { read }),
        (0u64..4, ballot(), ballot(), register(), any::<bool>()).prop_map(
            |(read, promised, accepted, state, fast_unknown)| PeerMessage::ReadReply {
                read,
                promised,
                accepted,
                seen: state.seen(),
                fast_unknown
            }
        ),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        0u32..7,
        0u64..3,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..4),
        peer_message(),
    )
        .prop_map(|(from, epoch, cluster, key, body)| Envelope {
            from,
            proposer: 0,
            epoch,
            cluster,
            key,
            body,
        })
}

/// A valid record to start an acceptor from.
fn record() -> impl Strategy<Value = AcceptorRecord> {
    (ballot(), ballot(), 0u64..3).prop_map(|(a, p, v)| {
        let accepted = a.min(p);
        AcceptorRecord {
            promised: a.max(p),
            accepted,
            state: if accepted == Ballot::ZERO {
                Register::default()
            } else {
                Register {
                    version: v,
                    ..Register::default()
                }
            },
            fast_unknown: false,
        }
    })
}

/// A proposer of node 1 in the middle of a round: one write submitted, its first messages
/// sent.
fn proposer(fast_path: bool, now: Instant) -> Proposer {
    let cfg = ProposerConfig {
        node: 1,
        nodes: vec![1, 2, 3, 4, 5],
        epoch: 1,
        member: true,
        joining: vec![],
        phase_timeout: Duration::from_millis(100),
        read_grace: Duration::from_millis(10),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        max_batch: 16,
        max_queue: 16,
        fast_path,
        settle_fast_writes: true,
        thrifty: false,
        spread: 0,
    };
    let mut p = Proposer::new(cfg, rand::rngs::SmallRng::seed_from_u64(1));
    let mut out = Vec::new();
    let put = Command::Put {
        value: b"v".to_vec(),
    };
    let id = Some(RequestId { client: 1, seq: 1 });
    p.submit(
        now,
        1,
        put,
        id,
        false,
        now + Duration::from_secs(5),
        &mut out,
    );
    p.submit(
        now,
        2,
        Command::Get,
        None,
        false,
        now + Duration::from_secs(5),
        &mut out,
    );
    p
}

/// What a node does with a frame off the wire, up to the core: decode, validate, step.
fn deliver(
    bytes: &[u8],
    config: &Config,
    acceptor: &mut Acceptor,
    proposer: &mut Proposer,
    now: Instant,
) {
    let Ok(frame) = frame::decode(bytes) else {
        return;
    };
    step(frame, config, acceptor, proposer, now);
}

fn step(
    frame: Frame,
    config: &Config,
    acceptor: &mut Acceptor,
    proposer: &mut Proposer,
    now: Instant,
) {
    if frame.validate(config).is_err() {
        return;
    }
    let Frame::Peer(envelope) = frame else {
        return;
    };
    let mut out = Vec::new();
    if envelope.body.is_request() {
        acceptor.step(envelope.body);
    } else {
        let id = proposer.id();
        proposer.on_message(now, envelope.from, id, envelope.body, &mut out);
        proposer.tick(now + Duration::from_millis(50), &mut out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn random_bytes_never_panic_a_node(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        start in record(),
        fast in any::<bool>(),
    ) {
        let (config, now) = (config(), Instant::now());
        let (mut acceptor, mut proposer) = (Acceptor::new(start), proposer(fast, now));
        deliver(&bytes, &config, &mut acceptor, &mut proposer, now);
        // The same bytes behind this build's protocol version, so that they reach the frame
        // decoder rather than stop at the version (`frame::decode`).
        let versioned = [&postcard::to_stdvec(&frame::PROTOCOL_VERSION).unwrap()[..], &bytes].concat();
        deliver(&versioned, &config, &mut acceptor, &mut proposer, now);
    }

    #[test]
    fn valid_frames_with_flipped_bytes_never_panic_a_node(
        envelope in envelope(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        start in record(),
        fast in any::<bool>(),
    ) {
        let (config, now) = (config(), Instant::now());
        let (mut acceptor, mut proposer) = (Acceptor::new(start), proposer(fast, now));
        let mut bytes = frame::encode(&Frame::Peer(envelope))[frame::LENGTH_PREFIX_BYTES..].to_vec();
        for (at, byte) in flips {
            let len = bytes.len();
            bytes[at % len] ^= byte;
        }
        deliver(&bytes, &config, &mut acceptor, &mut proposer, now);
    }

    /// Structurally random Paxos messages, many in a row against the same acceptor and
    /// proposer (so that some match the round in progress and move it on).
    #[test]
    fn random_paxos_messages_never_panic_an_acceptor_or_a_proposer(
        envelopes in proptest::collection::vec(envelope(), 1..24),
        start in record(),
        fast in any::<bool>(),
    ) {
        let (config, now) = (config(), Instant::now());
        let (mut acceptor, mut proposer) = (Acceptor::new(start), proposer(fast, now));
        for mut envelope in envelopes {
            envelope.key = b"k".to_vec();
            step(Frame::Peer(envelope), &config, &mut acceptor, &mut proposer, now);
        }
    }
}
