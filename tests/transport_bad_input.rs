//! Bad input from the network, in process: a contradictory Paxos message, or one from a node
//! no membership lists, is dropped, counted, and changes nothing; garbage on a node's port
//! closes only that connection; keys and values over the limits are refused and nothing is
//! stored.

use paxkv_testkit as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use paxkv::paxos::types::Outcome;
use paxkv::Error;

use support::{got, Cluster, TestCluster};

/// A well-framed Paxos message whose ballots contradict the protocol (an Accept whose
/// `next` is below its ballot, a Prepare at another node's ballot, a state remembering more
/// writes than a register keeps), or a valid Accept from a node that is no member (a removed
/// node's round still in flight, which its proposers no longer start once it knows: see
/// `tests/membership_who_may_vote.rs`), is dropped and counted before it reaches an
/// acceptor; the connection it came on stays open and keeps being served, and no key
/// changes.
#[tokio::test]
async fn a_contradictory_paxos_message_is_dropped_and_counted_and_changes_nothing() {
    use paxkv::messages::{ClientRequest, Envelope, Frame, PeerMessage, RequestBody};
    use paxkv::paxos::types::{Ballot, Register, Remembered, RequestId, WriteOutcome};
    let cluster = TestCluster::start();
    let client = cluster.client_for(1);
    client.put(b"k", b"v").await.unwrap();
    let before = cluster.status(1).await.bad_frames;
    // Of this cluster: only the validation may drop them.
    let id = cluster.status(1).await.cluster;
    let forged = Register {
        version: 999,
        value: Some(b"FORGED".to_vec()),
        ..Register::default()
    };
    let peer_from = |from, body| {
        paxkv::frame::encode(&Frame::Peer(Envelope {
            from,
            proposer: 1,
            epoch: 1,
            cluster: id,
            key: b"k".to_vec(),
            body,
        }))
    };
    let peer = |body| peer_from(2, body);
    let contradictory = [
        peer(PeerMessage::Accept {
            ballot: Ballot::new(999, 2),
            state: forged.clone(),
            next: Some(Ballot::new(5, 2)),
        }),
        peer(PeerMessage::Prepare {
            ballot: Ballot::new(999, 3),
        }),
        peer(PeerMessage::Accept {
            ballot: Ballot::new(999, 2),
            state: Register {
                recent: paxkv::paxos::types::RecentWrites::forged(
                    &(0..=paxkv::paxos::register::RECENT_WRITES as u64)
                        .map(|seq| Remembered {
                            id: RequestId { client: 1, seq },
                            outcome: WriteOutcome::Put { version: 1 },
                        })
                        .collect::<Vec<_>>(),
                ),
                ..forged.clone()
            },
            next: None,
        }),
        // Well formed, from node 9, which no membership of this cluster lists.
        peer_from(
            9,
            PeerMessage::Accept {
                ballot: Ballot::new(999, 9),
                state: forged,
                next: None,
            },
        ),
    ];
    let mut raw = TcpStream::connect(cluster.addr(1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for frame in &contradictory {
        raw.write_all(frame).unwrap();
    }
    // The same connection still answers a request.
    let ping = Frame::Request(ClientRequest {
        id: 42,
        body: RequestBody::Ping,
    });
    raw.write_all(&paxkv::frame::encode(&ping)).unwrap();
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut body).unwrap();
    match paxkv::frame::decode(&body).unwrap() {
        Frame::Response(response) => assert_eq!(response.id, 42),
        other => panic!("expected the ping's answer, got {other:?}"),
    }
    assert_eq!(client.get(b"k").await.unwrap(), got("v", 1));
    let dropped = cluster.status(1).await.bad_frames - before;
    assert_eq!(dropped, contradictory.len() as u64);
}

#[tokio::test]
async fn garbage_on_a_node_port_closes_that_connection_and_disturbs_no_other_client() {
    let cluster = TestCluster::start();
    let client = cluster.client_for(1);
    client.put(b"k", b"v").await.unwrap();
    let addr = cluster.addr(1);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "an oversized length prefix",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        ),
        ("an undecodable body", vec![0, 0, 0, 3, 0xfe, 0xfe, 0xfe]),
        ("a response sent to a node", {
            let frame = paxkv::messages::Frame::Response(paxkv::messages::ClientResponse {
                id: 1,
                result: Err(paxkv::Error::Busy("x".into())),
            });
            paxkv::frame::encode(&frame).to_vec()
        }),
    ];
    for (what, bytes) in &garbage {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(bytes).unwrap();
        let mut buf = [0u8; 16];
        let read = raw.read(&mut buf);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "{what}: the node kept the connection open ({read:?})"
        );
        // the good client on the same node is unaffected
        assert_eq!(client.get(b"k").await.unwrap(), got("v", 1), "{what}");
    }
    // a truncated frame followed by a close: nothing happens but a log line
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&[0, 0, 1, 0, 1, 2]).unwrap();
    drop(raw);
    assert_eq!(
        client.put(b"k", b"w").await.unwrap(),
        Outcome::Put { version: 2 }
    );
    let status = cluster.status(1).await;
    assert!(status.bad_frames >= garbage.len() as u64, "{status:?}");
}

#[tokio::test]
async fn keys_and_values_over_the_limits_are_refused_and_nothing_is_stored() {
    let cluster = TestCluster::start_with(|c| c.limits.max_value_bytes = 1024);
    let client = cluster.client();
    let long_key = vec![b'k'; cluster.config.limits.max_key_bytes + 1];
    match client.put(&long_key, b"v").await {
        Err(Error::BadRequest(m)) => assert!(m.contains("over the limit of 256 bytes"), "{m}"),
        other => panic!("a long key was not refused: {other:?}"),
    }
    match client.put(b"k", &[0u8; 1025]).await {
        Err(Error::BadRequest(m)) => assert!(m.contains("over the limit of 1024 bytes"), "{m}"),
        other => panic!("a large value was not refused: {other:?}"),
    }
    assert!(matches!(client.get(b"").await, Err(Error::BadRequest(_))));
    // The lease machinery's commands are never a client's: a touch would raise a version no
    // watch is told of, a release delete another's key, a leased write skip its lease's
    // record (`paxos::lease`).
    use paxkv::paxos::types::{Command, LeasedWrite};
    let leased = LeasedWrite {
        expect: None,
        value: b"v".to_vec(),
        lease: 7,
        fence: 0,
        retried: false,
    };
    for command in [
        Command::Touch,
        Command::Release { lease: 7 },
        Command::LeaseAttach {
            key: b"x".to_vec(),
            max_keys: 9,
        },
        Command::LeaseEnd { expect: 0 },
        Command::LeasedWrite(Box::new(leased)),
        Command::Inspect,
    ] {
        match client.execute(b"k", command.clone()).await {
            Err(Error::BadRequest(m)) => assert!(m.contains("not a client's"), "{m}"),
            other => panic!("a client's {command:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        client.get(b"k").await.unwrap(),
        Outcome::Get {
            value: None,
            version: 0
        }
    );
    // exactly at the limits is fine
    let max_key = vec![b'k'; cluster.config.limits.max_key_bytes];
    client.put(&max_key, &[7u8; 1024]).await.unwrap();
}
