//! What a connection may cost a node (issue 18): idle sockets from one host shut out neither
//! new clients nor a restarted node's links, and peers' frames waiting for a slow acceptor
//! hold at most the node's inbox budget. (A connection that never reads is
//! `transport_byte_budget.rs`, alone in its binary.)

use paxkv_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use paxkv::frame;
use paxkv::messages::{Envelope, Frame, PeerMessage};
use paxkv::paxos::types::{Ballot, Register};
use paxkv::tls::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{eventually, tls_dial, tls_identity, Cluster, TestCluster};

const KEY: &[u8] = b"color";

/// Sockets from 127.0.0.2 that connect to node 1 and never say anything (no TLS handshake),
/// each reopened 10 ms after the node closes it, `count` of them at once, until aborted.
fn idle_sockets(target: SocketAddr, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            tokio::spawn(async move {
                loop {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                    if let Ok(mut stream) = socket.connect(target).await {
                        let mut buf = [0u8; 64];
                        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

/// Issue 18, item 3: idle sockets that never begin a TLS handshake, 256 and then 1,000 of
/// them from one host, each reopened as soon as it is closed, while authenticated clients
/// keep opening new connections and a node restarts (its peer links connect again). Before,
/// 256 such sockets took every handshake slot for 5 s each, and 47 of 48 new connections
/// were refused. Now one source address holds at most `max_handshakes_per_source` of them:
/// every new client connection is served, the restarted node votes again, and the refusals
/// are counted by limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_host_shut_out_neither_clients_nor_peer_links() {
    let certs = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::with_tls(3, certs.path());
    for count in [256, 1_000] {
        let attack = idle_sockets(cluster.addr(1), count);
        // Let the sockets pile up at node 1.
        let refused = cluster.counted(1, "paxkv_refused_connections_total").await;
        eventually(
            "node 1 refuses idle sockets",
            Duration::from_secs(20),
            || async {
                cluster.counted(1, "paxkv_refused_connections_total").await >= refused + 16.0
            },
        )
        .await;
        for i in 0..48u32 {
            // A new client, so a new connection and a new handshake, each time.
            let client = cluster.client_with(vec![cluster.addr(1)], true, Duration::from_secs(5));
            client
                .put(format!("k{i}").as_bytes(), b"v")
                .await
                .unwrap_or_else(|e| panic!("{count} idle sockets: connection {i}: {e}"));
        }
        // A peer restarts: its links to node 1 and node 1's to it connect again.
        cluster.stop(2).await;
        cluster.restart(2);
        cluster.wait_voting(&[2]).await;
        cluster
            .client_for(2)
            .put(b"after", b"restart")
            .await
            .unwrap();
        for task in attack {
            task.abort();
        }
    }
    assert!(
        cluster
            .counted(1, "paxkv_limited_total{limit=\"handshakes_per_source\"}")
            .await
            > 0.0
    );
}

/// Issue 18: the mailboxes a peer's frames wait in are bounded in bytes
/// (`limits.max_inbox_bytes`, here its least: two frames). Every commit takes 300 ms (a slow
/// disk), so node 1's acceptor of one key holds its mailbox while each Accept is made
/// durable; member node 2's certificate sends it 20 Accepts of 1 MiB at once. Those that do
/// not fit are dropped (Paxos treats them as lost) and counted, and the node keeps serving.
/// Before, they waited in the mailboxes whatever their size (1,024 per acceptor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_frames_waiting_for_a_slow_acceptor_hold_at_most_the_inbox_budget() {
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls_and(3, certs.path(), |c| {
        c.limits.max_inbox_bytes = 2 * c.frame_limit();
        c.testing.allow_fault_injection = true;
        c.testing.commit_delay_ms = 300;
    });
    let status = cluster.status(1).await;
    let node2 = tls_identity(
        certs.path(),
        &certs.path().join("ca.pem"),
        "node-2",
        Role::Node(2),
    );
    let mut stream = tls_dial(cluster.addr(1), Some(&node2)).await.unwrap();
    let mut burst = Vec::new();
    for round in 0..20u64 {
        let accept = Frame::Peer(Envelope {
            from: 2,
            proposer: 11,
            epoch: status.epoch,
            cluster: status.cluster,
            key: b"inbox".to_vec(),
            body: PeerMessage::Accept {
                ballot: Ballot::new(100 + round, 2),
                state: Register {
                    version: round + 1,
                    value: Some(vec![round as u8; 1 << 20]),
                    ..Register::default()
                },
                next: None,
            },
        });
        burst.extend_from_slice(&frame::encode(&accept));
    }
    stream.write_all(&burst).await.unwrap();
    support::until_limited(
        &cluster,
        1,
        "inbox_bytes",
        "node 1 drops the Accepts over its inbox budget",
    )
    .await;
    cluster.client().put(KEY, b"blue").await.unwrap();
}
