//! TLS with identities (`paxkv::tls`), attacked: a well-formed Accept "from node 3" sent
//! over plaintext, over a certificate of another CA, over node 2's own certificate and over
//! a client's; random and truncated bytes on every port. None changes a key, each refusal is
//! counted in `/metrics`, and the nodes keep serving throughout.

use paxkv_testkit as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use paxkv::actors::messages::InspectAcceptor;
use paxkv::messages::{
    ClientRequest, Envelope, Frame, NodeCall, NodeRequest, PeerMessage, RequestBody,
};
use paxkv::paxos::membership::Membership;
use paxkv::paxos::types::{Ballot, NodeId, Outcome, Register};
use paxkv::tls::{BoxStream, Dial, Role};
use paxkv::{frame, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{eventually, http_get, tls_dial, tls_identity, Cluster, TestCluster};

const KEY: &[u8] = b"color";

/// A frame that would overwrite KEY on any acceptor that took it: an Accept from node 3
/// at a ballot far above any in use, with a value of its own; of the cluster's own identity
/// `cluster`, so that only the certificate's check can stop it.
fn forged_accept(epoch: u64, cluster: u64) -> Frame {
    Frame::Peer(Envelope {
        from: 3,
        proposer: 7,
        epoch,
        cluster,
        key: KEY.to_vec(),
        body: PeerMessage::Accept {
            ballot: Ballot::new(999, 3),
            state: Register {
                version: 999,
                value: Some(b"FORGED".to_vec()),
                ..Register::default()
            },
            next: None,
        },
    })
}

fn ping(id: u64) -> Frame {
    Frame::Request(ClientRequest {
        id,
        body: RequestBody::Ping,
    })
}

/// Reads one frame; `Err` if the connection ends (or fails) first, or within 5 s nothing
/// comes.
async fn read_frame(stream: &mut BoxStream) -> std::io::Result<Frame> {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await?;
        frame::decode(&body).map_err(std::io::Error::other)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))?
}

/// A connection the node must close: whatever it sends, nothing comes back but its end.
async fn assert_closed(mut stream: BoxStream, what: &str) {
    match read_frame(&mut stream).await {
        Err(e) if e.to_string().contains("no answer") => {
            panic!("{what}: the node kept the connection open")
        }
        Err(_) => {}
        Ok(frame) => panic!("{what}: the node answered {frame:?}"),
    }
}

/// No node took the forged Accept: no promise at its ballot, no record holding anything but
/// blue (version 1), and a client reads blue. A record may hold no value yet: an acceptor
/// outside the write's majority that a later round (a settle, the sweep) has asked but not
/// yet sent its Accept (seen once in a full CI run).
async fn assert_unchanged(cluster: &TestCluster, ids: &[NodeId]) {
    for &id in ids {
        let record = cluster
            .node(id)
            .supervisor()
            .send(InspectAcceptor { key: KEY.to_vec() })
            .await
            .unwrap();
        if let Some(record) = record {
            assert!(
                record.promised < Ballot::new(999, 3),
                "node {id} promised the forged ballot: {record:?}"
            );
            assert!(
                matches!(record.state.value.as_deref(), None | Some(b"blue")),
                "node {id}: {record:?}"
            );
            assert!(record.state.version <= 1, "node {id}: {record:?}");
        }
    }
    match cluster.client().get(KEY).await.unwrap() {
        Outcome::Get { value, version } => {
            assert_eq!((value.as_deref(), version), (Some(&b"blue"[..]), 1))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_accept_claiming_node_3_over_plaintext_or_another_cas_certificate_changes_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls(5, certs.path());
    let ids: Vec<NodeId> = (1..=5).collect();
    cluster.client().put(KEY, b"blue").await.unwrap();
    let epoch = cluster.status(1).await.epoch;
    let cluster_id = cluster.status(1).await.cluster;

    // Another CA's certificate for "node 3", presented by a client that trusts the real CA
    // (so that the handshake gets as far as the node's check of the client's certificate).
    let other = tempfile::tempdir().unwrap();
    let nodes = cluster.config.nodes_and_addrs();
    paxkv::certs::write(&nodes, other.path(), true).unwrap();
    let impostor = tls_identity(
        other.path(),
        &certs.path().join("ca.pem"),
        "node-3",
        Role::Node(3),
    );

    for &id in &ids {
        let addr = cluster.addr(id);
        let refused_before = cluster.counted(id, "paxkv_refused_connections_total").await;
        // Plaintext: the node reads a TLS handshake, gets a frame, and hangs up.
        let mut plain: BoxStream = Box::new(TcpStream::connect(addr).await.unwrap());
        plain
            .write_all(&frame::encode(&forged_accept(epoch, cluster_id)))
            .await
            .unwrap();
        assert_closed(plain, &format!("plaintext to node {id}")).await;
        // Another CA: the handshake fails on the node's side (on ours it may look done: in
        // TLS 1.3 the client's certificate is checked after the client has finished).
        match tls_dial(addr, Some(&impostor)).await {
            Err(_) => {}
            Ok(mut stream) => {
                let _ = stream
                    .write_all(&frame::encode(&forged_accept(epoch, cluster_id)))
                    .await;
                assert_closed(stream, &format!("another CA's certificate to node {id}")).await;
            }
        }
        eventually("both refusals counted", Duration::from_secs(5), || async {
            cluster.counted(id, "paxkv_refused_connections_total").await >= refused_before + 2.0
        })
        .await;
    }
    assert_unchanged(&cluster, &ids).await;
    // No frame of theirs was ever decoded, let alone taken for a forgery.
    for &id in &ids {
        assert_eq!(cluster.counted(id, "paxkv_forged_frames_total").await, 0.0);
    }
}

#[tokio::test]
async fn a_peer_with_node_2s_certificate_cannot_speak_for_node_3_nor_a_client_for_any_node() {
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls(5, certs.path());
    let ids: Vec<NodeId> = (1..=5).collect();
    cluster.client().put(KEY, b"blue").await.unwrap();
    let epoch = cluster.status(1).await.epoch;
    let cluster_id = cluster.status(1).await.cluster;
    let ca = certs.path().join("ca.pem");
    let node2 = tls_identity(certs.path(), &ca, "node-2", Role::Node(2));
    let client = tls_identity(certs.path(), &ca, "client", Role::Client);
    // A membership that would make node 1 the sole voter, if a client could install it.
    let mut takeover = Membership::bootstrap([(1, cluster.addr(1).to_string())], "");
    takeover.epoch = epoch + 10;
    takeover.cluster = cluster_id;

    for &id in &ids {
        if id == 2 {
            continue;
        }
        let addr = cluster.addr(id);
        let forged_before = cluster.counted(id, "paxkv_forged_frames_total").await;
        let mut as_node2 = tls_dial(addr, Some(&node2)).await.unwrap();
        as_node2
            .write_all(&frame::encode(&forged_accept(epoch, cluster_id)))
            .await
            .unwrap();
        let hello = Frame::Call(NodeCall {
            id: 1,
            cluster: cluster_id,
            body: NodeRequest::Hello {
                node: 3,
                store: 1,
                generation: u64::MAX,
                call: 1,
            },
        });
        as_node2.write_all(&frame::encode(&hello)).await.unwrap();
        let watching = Frame::Call(NodeCall {
            id: 3,
            cluster: cluster_id,
            body: NodeRequest::Watching {
                node: 3,
                lease_ms: 1_000,
            },
        });
        as_node2.write_all(&frame::encode(&watching)).await.unwrap();
        // The connection goes on: a ping on it is answered.
        as_node2.write_all(&frame::encode(&ping(42))).await.unwrap();
        match read_frame(&mut as_node2).await.unwrap() {
            Frame::Response(r) => assert_eq!(r.id, 42),
            other => panic!("expected the ping's answer, got {other:?}"),
        }

        let mut as_client = tls_dial(addr, Some(&client)).await.unwrap();
        as_client
            .write_all(&frame::encode(&forged_accept(epoch, cluster_id)))
            .await
            .unwrap();
        let install = Frame::Call(NodeCall {
            id: 2,
            cluster: cluster_id,
            body: NodeRequest::Install(takeover.clone()),
        });
        as_client.write_all(&frame::encode(&install)).await.unwrap();
        as_client
            .write_all(&frame::encode(&ping(43)))
            .await
            .unwrap();
        match read_frame(&mut as_client).await.unwrap() {
            Frame::Response(r) => assert_eq!(r.id, 43),
            other => panic!("expected the ping's answer, got {other:?}"),
        }
        eventually("five forgeries counted", Duration::from_secs(5), || async {
            cluster.counted(id, "paxkv_forged_frames_total").await == forged_before + 5.0
        })
        .await;
    }
    assert_unchanged(&cluster, &ids).await;
    for &id in &ids {
        let m = cluster.membership(id).await;
        assert_eq!(m.voters().len(), 5, "node {id}'s membership changed: {m:?}");
    }
}

#[tokio::test]
async fn random_and_truncated_bytes_on_every_port_close_only_that_connection() {
    use rand::{Rng, SeedableRng};
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls(3, certs.path());
    let ids: Vec<NodeId> = (1..=3).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let ca = certs.path().join("ca.pem");
    let client_identity = tls_identity(certs.path(), &ca, "client", Role::Client);
    // A connection that stays up through everything, and must keep being answered.
    let mut bystander = tls_dial(cluster.addr(1), Some(&client_identity))
        .await
        .unwrap();
    let good = frame::encode(&forged_accept(1, cluster.status(1).await.cluster));
    for &id in &ids {
        let refused_before = cluster.counted(id, "paxkv_refused_connections_total").await;
        let bad_before = cluster.counted(id, "paxkv_bad_frames_total").await;
        // The node's port, before the handshake: random bytes, and a truncated frame.
        for n in [1usize, 7, 64, 4096] {
            let mut raw = TcpStream::connect(cluster.addr(id)).await.unwrap();
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            raw.write_all(&bytes).await.unwrap();
            let mut plain: BoxStream = Box::new(raw);
            assert_closed(plain, &format!("{n} random bytes to node {id}")).await;
            plain = Box::new(TcpStream::connect(cluster.addr(id)).await.unwrap());
            plain.write_all(&good[..good.len() / 2]).await.unwrap();
            plain.shutdown().await.unwrap();
            assert_closed(plain, &format!("half a frame to node {id}")).await;
        }
        // After the handshake: random bytes that announce a frame and are not one.
        let mut stream = tls_dial(cluster.addr(id), Some(&client_identity))
            .await
            .unwrap();
        let mut garbage = vec![0, 0, 0, 32];
        garbage.extend((0..32).map(|_| rng.random::<u8>() | 0x80));
        stream.write_all(&garbage).await.unwrap();
        assert_closed(stream, &format!("an undecodable frame to node {id}")).await;
        // The metrics port: garbage instead of HTTP, a request cut short.
        let metrics = cluster.metrics_addr(id).unwrap();
        for bytes in [&b"\x16\x03\x01\x02\x00garbage\r\n\r\n"[..], b"GET /metr"] {
            let mut raw = TcpStream::connect(metrics).await.unwrap();
            raw.write_all(bytes).await.unwrap();
            raw.shutdown().await.unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
                .await
                .expect("the metrics endpoint closes a broken request");
        }
        let (status, _) = http_get(metrics, "/health").await.unwrap();
        assert_eq!(status, 200, "node {id} still healthy");
        eventually("the refusals counted", Duration::from_secs(5), || async {
            cluster.counted(id, "paxkv_refused_connections_total").await >= refused_before + 8.0
                && cluster.counted(id, "paxkv_bad_frames_total").await >= bad_before + 1.0
        })
        .await;
        // The bystander's connection is still served.
        bystander
            .write_all(&frame::encode(&ping(100 + id as u64)))
            .await
            .unwrap();
        match read_frame(&mut bystander).await.unwrap() {
            Frame::Response(r) => assert_eq!(r.id, 100 + id as u64),
            other => panic!("{other:?}"),
        }
    }
    cluster.client().put(b"after", b"garbage").await.unwrap();
}

/// A peer link checks that the node it reaches is the one it dials: a listener presenting
/// node 2's certificate is refused by a link to node 3, and taken by a link to node 2.
#[tokio::test]
async fn a_peer_link_refuses_a_node_whose_certificate_names_another_node() {
    let certs = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = support::free_ports(3);
    let nodes: Vec<_> = (1..=3).zip(addrs).collect();
    paxkv::certs::write(&nodes, certs.path(), true).unwrap();
    let ca = certs.path().join("ca.pem");
    let node1 = tls_identity(certs.path(), &ca, "node-1", Role::Node(1));
    let node2 = tls_identity(certs.path(), &ca, "node-2", Role::Node(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = tls::Peer::accept(Some(&node2), stream).await;
        }
    });
    let as_3 = tls::dial(
        Some(&node1),
        TcpStream::connect(addr).await.unwrap(),
        Dial::Node(3),
    )
    .await;
    let refused = as_3.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("certificate"),
        "a link to node 3 took node 2: {refused:?}"
    );
    let as_2 = tls::dial(
        Some(&node1),
        TcpStream::connect(addr).await.unwrap(),
        Dial::Node(2),
    )
    .await;
    assert!(as_2.is_ok(), "a link to node 2: {:?}", as_2.err());
    // A node's own calls to a peer (anti-entropy, Hello, Install) name the node they are
    // for, too: a client expecting node 3 at this address refuses node 2's certificate.
    let expecting_3 = paxkv::client::Client::new(
        vec![addr],
        paxkv::client::ClientOptions {
            op_timeout: Duration::from_secs(2),
            pinned: true,
            tls: Some(node1.clone()),
            nodes: vec![3],
            ..Default::default()
        },
    );
    let answer = expecting_3.node_call(0, NodeRequest::Membership).await;
    let refused = answer.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("certificate"),
        "node 2 answered for node 3: {refused:?}"
    );
    server.await.unwrap();
}

/// A certificate the cluster's CA issued for a node that is no member (removed, or issued
/// ahead of an add) cannot install a membership: it would make a node stop voting.
#[tokio::test]
async fn an_install_from_a_node_that_is_no_member_is_refused_and_counted() {
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls(3, certs.path());
    let epoch = cluster.status(1).await.epoch;
    let cluster_id = cluster.status(1).await.cluster;
    paxkv::certs::write(&[(9, support::free_port())], certs.path(), false).unwrap();
    let node9 = tls_identity(
        certs.path(),
        &certs.path().join("ca.pem"),
        "node-9",
        Role::Node(9),
    );
    let mut takeover = Membership::bootstrap([(9, "127.0.0.1:1".to_string())], "");
    takeover.epoch = epoch + 10;
    takeover.cluster = cluster_id;
    let forged_before = cluster.counted(1, "paxkv_forged_frames_total").await;
    let mut stream = tls_dial(cluster.addr(1), Some(&node9)).await.unwrap();
    let install = Frame::Call(NodeCall {
        id: 1,
        cluster: cluster_id,
        body: NodeRequest::Install(takeover),
    });
    stream.write_all(&frame::encode(&install)).await.unwrap();
    stream.write_all(&frame::encode(&ping(2))).await.unwrap();
    match read_frame(&mut stream).await.unwrap() {
        Frame::Response(r) => assert_eq!(r.id, 2, "the Install was not answered"),
        other => panic!("expected only the ping's answer, got {other:?}"),
    }
    assert_eq!(
        cluster.counted(1, "paxkv_forged_frames_total").await,
        forged_before + 1.0
    );
    let m = cluster.membership(1).await;
    assert_eq!((m.epoch, m.voters().len()), (epoch, 3), "{m:?}");
    assert_eq!(cluster.metric(1, "paxkv_voting").await, Some(1.0));
}

/// A membership change under TLS: a node added (its certificate issued later from the same
/// CA, `paxkv certs --id`), another removed. The driver's installs pass the rule that an
/// Install comes from a member, and the new node holds the key and serves it.
#[tokio::test]
async fn a_membership_change_completes_with_tls_on() {
    use paxkv::messages::MemberChangeRequest;
    let certs = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::with_tls(3, certs.path());
    cluster.client().put(KEY, b"blue").await.unwrap();
    paxkv::certs::write(&[(4, support::free_port())], certs.path(), false).unwrap();
    let addr = cluster.start_new_node(4);
    let add = MemberChangeRequest::Add {
        id: 4,
        addr: addr.to_string(),
    };
    cluster.change(1, add).await.unwrap();
    cluster
        .change(2, MemberChangeRequest::Remove { id: 1 })
        .await
        .unwrap();
    for id in [2, 3, 4] {
        let m = cluster.membership(id).await;
        assert_eq!(m.voters(), vec![2, 3, 4], "node {id}: {m:?}");
    }
    match cluster.client_for(4).get(KEY).await.unwrap() {
        Outcome::Get { value, .. } => assert_eq!(value.as_deref(), Some(&b"blue"[..])),
        other => panic!("{other:?}"),
    }
    cluster.client_for(4).put(KEY, b"green").await.unwrap();
}

/// Issue 18, item 2: only the operator's certificate (`operator.pem`, `paxkv certs`) may
/// change the membership. A client's certificate, a member node's and a certificate issued
/// for a node that is no member each ask to remove node 3: each is answered "not
/// permitted", counted, and the membership does not change. (Before, `MemberChange` was a
/// client request any certificate of the CA could send.)
#[tokio::test]
async fn a_membership_change_needs_the_operators_certificate() {
    use paxkv::messages::{ClientResponse, MemberChangeRequest};
    let certs = tempfile::tempdir().unwrap();
    let cluster = TestCluster::with_tls(3, certs.path());
    let ca = certs.path().join("ca.pem");
    paxkv::certs::write(&[(9, support::free_port())], certs.path(), false).unwrap();
    let before = cluster.membership(1).await;
    let refused_before = cluster.counted(1, "paxkv_forged_frames_total").await;
    let who = [
        (
            "a client",
            tls_identity(certs.path(), &ca, "client", Role::Client),
        ),
        (
            "node 2",
            tls_identity(certs.path(), &ca, "node-2", Role::Node(2)),
        ),
        (
            "node 9",
            tls_identity(certs.path(), &ca, "node-9", Role::Node(9)),
        ),
    ];
    for (i, (name, id)) in who.iter().enumerate() {
        let mut stream = tls_dial(cluster.addr(1), Some(id)).await.unwrap();
        let remove = Frame::Request(ClientRequest {
            id: 40 + i as u64,
            body: RequestBody::MemberChange(MemberChangeRequest::Remove { id: 3 }),
        });
        stream.write_all(&frame::encode(&remove)).await.unwrap();
        match read_frame(&mut stream).await.unwrap() {
            Frame::Response(ClientResponse {
                result: Err(paxkv::Error::BadRequest(why)),
                ..
            }) => assert!(why.contains("operator"), "{name}: {why}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        // The connection goes on: a read is answered.
        stream.write_all(&frame::encode(&ping(50))).await.unwrap();
        assert!(matches!(
            read_frame(&mut stream).await.unwrap(),
            Frame::Response(r) if r.id == 50
        ));
    }
    assert_eq!(
        cluster.counted(1, "paxkv_forged_frames_total").await,
        refused_before + 3.0
    );
    assert_eq!(cluster.membership(1).await, before);
    // The operator's certificate may.
    let operator = tls_identity(certs.path(), &ca, "operator", Role::Operator);
    let mut stream = tls_dial(cluster.addr(1), Some(&operator)).await.unwrap();
    let remove = Frame::Request(ClientRequest {
        id: 60,
        body: RequestBody::MemberChange(MemberChangeRequest::Remove { id: 3 }),
    });
    stream.write_all(&frame::encode(&remove)).await.unwrap();
    match read_frame(&mut stream).await.unwrap() {
        Frame::Response(ClientResponse { result: Ok(_), .. }) => {}
        other => panic!("the operator's change: {other:?}"),
    }
    assert_eq!(cluster.membership(1).await.voters(), vec![1, 2]);
}

/// Issue 18, item 1: a node pulls the membership only from the members of the one it has,
/// each dialed as that node. Node 4 is removed and stopped; its key holder listens at its
/// config address with node 4's certificate and answers every membership request with a
/// membership of this cluster at a far higher epoch that makes node 4 the only voter. Before,
/// every node asked every config address every few seconds and installed it within a
/// second (and stopped voting). Now nobody asks it, over three pull periods, and nothing
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_key_at_its_config_address_installs_no_membership() {
    let certs = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::with_tls(4, certs.path());
    let m = remove_node_4_everywhere(&mut cluster).await;
    let mut forged = Membership::bootstrap([(4, cluster.addr(4).to_string())], "");
    forged.epoch = m.epoch + 100;
    forged.cluster = m.cluster;
    let node4 = tls_identity(
        certs.path(),
        &certs.path().join("ca.pem"),
        "node-4",
        Role::Node(4),
    );
    let impostor = Impostor::listen(cluster.addr(4), node4, forged).await;
    // Three periods of the pull of a voting node (5 s), the nodes serving throughout.
    let until = std::time::Instant::now() + Duration::from_secs(16);
    let members = cluster.client_with(
        (1..=3).map(|id| cluster.addr(id)).collect(),
        false,
        Duration::from_secs(10),
    );
    while std::time::Instant::now() < until {
        members.put(KEY, b"blue").await.unwrap();
        for id in 1..=3 {
            let now = cluster.membership(id).await;
            assert_eq!(now.epoch, m.epoch, "node {id} installed {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(impostor.asked(), 0, "a node asked a removed node");
    for id in 1..=3 {
        assert_eq!(
            cluster.metric(id, "paxkv_voting").await,
            Some(1.0),
            "node {id}"
        );
    }
}

/// Removes node 4 and stops it; waits until every remaining node installed the removal (a
/// node still at an epoch where node 4 was a member would ask it, dialed as node 4: the one
/// window a removed node's key keeps, README). The membership without node 4.
async fn remove_node_4_everywhere(cluster: &mut TestCluster) -> Membership {
    cluster
        .change(1, paxkv::messages::MemberChangeRequest::Remove { id: 4 })
        .await
        .unwrap();
    cluster.stop(4).await;
    let m = cluster.membership(1).await;
    for id in 2..=3 {
        eventually(
            &format!("node {id} installs the removal"),
            Duration::from_secs(30),
            || async { cluster.membership(id).await.epoch >= m.epoch },
        )
        .await;
    }
    m
}

/// A listener at a removed node's address with its certificate, answering every request for
/// the membership with `forged`, and counting them.
struct Impostor {
    asked: Arc<std::sync::atomic::AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn listen(addr: SocketAddr, identity: Arc<tls::Tls>, forged: Membership) -> Impostor {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = asked.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = identity.acceptor();
                let (forged, asked) = (forged.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    answer_membership_requests(Box::new(stream), forged, asked).await;
                });
            }
        });
        Impostor { asked, server }
    }

    /// How many membership requests it was sent.
    fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Answers every membership request on `stream` with `forged` as node 4's, counting them in
/// `asked`, until the connection ends.
async fn answer_membership_requests(
    mut stream: BoxStream,
    forged: Membership,
    asked: Arc<std::sync::atomic::AtomicU64>,
) {
    use paxkv::messages::{MembershipAnswer, NodeAnswer, NodeReply};
    while let Ok(frame) = read_frame(&mut stream).await {
        let Frame::Call(call) = frame else {
            continue;
        };
        if !matches!(call.body, NodeRequest::Membership) {
            continue;
        }
        asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = Frame::Answer(NodeAnswer {
            id: call.id,
            result: Ok(NodeReply::Membership(MembershipAnswer {
                node: 4,
                membership: Some(forged.clone()),
                store: 1,
                voting: true,
                founds: 0,
            })),
        });
        if stream.write_all(&frame::encode(&answer)).await.is_err() {
            return;
        }
    }
}
