//! The wire format, pinned: postcard encodes enum variants by index and struct fields in
//! order, so a variant inserted in the middle, a reordered one or a reordered field changes
//! these bytes and fails here, before two builds of paxkv misread each other. A new variant
//! goes at the end of its enum, with a new line here.

use paxkv::error::Error;
use paxkv::messages::{
    ClientRequest, ClientResponse, DigestEntry, DigestPage, Envelope, FaultPlan, Frame, NodeAnswer,
    NodeCall, NodeReply, NodeRequest, NodeStatus, PeerMessage, Reply, RequestBody, SyncRecord,
};
use paxkv::messages::{
    LeaseInfo, ListItem, ListPage, MemberChangeRequest, MembershipAnswer, WatchEvent,
};
use paxkv::paxos::membership::{Member, MemberState, Membership, Phase};
use paxkv::paxos::record::AcceptorRecord;
use paxkv::paxos::types::{
    Ballot, Command, Inspected, KeyChange, LeasedWrite, Outcome, Register, RequestId, Seen,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b(round: u64, node: u32) -> Ballot {
    Ballot::new(round, node)
}

fn state() -> Register {
    Register {
        version: 2,
        value: Some(b"v".to_vec()),
        ..Register::default()
    }
}

fn peer(body: PeerMessage) -> Frame {
    Frame::Peer(Envelope {
        from: 1,
        proposer: 7,
        epoch: 4,
        cluster: 9,
        key: b"k".to_vec(),
        body,
    })
}

fn request(body: RequestBody) -> Frame {
    Frame::Request(ClientRequest { id: 3, body })
}

fn response(result: Result<Reply, Error>) -> Frame {
    Frame::Response(ClientResponse { id: 3, result })
}

/// One value of every wire variant, by name.
fn samples() -> Vec<(&'static str, Frame)> {
    let e = |s: &str| s.to_string();
    vec![
        (
            "peer prepare",
            peer(PeerMessage::Prepare { ballot: b(1, 1) }),
        ),
        (
            "peer promise",
            peer(PeerMessage::Promise {
                ballot: b(2, 1),
                accepted: b(1, 2),
                state: state(),
                fast_unknown: false,
            }),
        ),
        (
            "peer accept",
            peer(PeerMessage::Accept {
                ballot: b(2, 1),
                state: state(),
                next: Some(b(3, 1)),
            }),
        ),
        (
            "peer accepted",
            peer(PeerMessage::Accepted {
                ballot: b(2, 1),
                promised: b(3, 1),
            }),
        ),
        (
            "peer reject",
            peer(PeerMessage::Reject {
                ballot: b(2, 1),
                seen: b(4, 2),
            }),
        ),
        (
            "peer failed",
            peer(PeerMessage::Failed {
                ballot: b(2, 1),
                reason: e("full"),
            }),
        ),
        ("peer query", peer(PeerMessage::Query { read: 5 })),
        (
            "peer query reply",
            peer(PeerMessage::QueryReply {
                read: 5,
                promised: b(3, 1),
                accepted: b(2, 1),
                state: state(),
                fast_unknown: false,
            }),
        ),
        (
            "request kv",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::Cas {
                    expect: 1,
                    value: b"v".to_vec(),
                },
                write_id: Some(RequestId { client: 9, seq: 1 }),
                maybe_applied: true,
            }),
        ),
        ("request ping", request(RequestBody::Ping)),
        ("request status", request(RequestBody::Status)),
        (
            "request set faults",
            request(RequestBody::SetFaults(FaultPlan::default())),
        ),
        (
            "request retired sync digest",
            request(RequestBody::RetiredSyncDigest {
                after: None,
                limit: 1,
            }),
        ),
        (
            "request retired sync fetch",
            request(RequestBody::RetiredSyncFetch { keys: vec![] }),
        ),
        (
            "response kv get",
            response(Ok(Reply::Kv(Outcome::Get {
                value: Some(b"v".to_vec()),
                version: 2,
            }))),
        ),
        (
            "response kv put",
            response(Ok(Reply::Kv(Outcome::Put { version: 2 }))),
        ),
        (
            "response kv delete",
            response(Ok(Reply::Kv(Outcome::Delete {
                deleted: true,
                version: 3,
            }))),
        ),
        (
            "response kv cas",
            response(Ok(Reply::Kv(Outcome::Cas {
                swapped: false,
                version: 3,
            }))),
        ),
        ("response pong", response(Ok(Reply::Pong { node: 4 }))),
        (
            "response status",
            response(Ok(Reply::Status(NodeStatus::default()))),
        ),
        ("response faults set", response(Ok(Reply::FaultsSet))),
        (
            "response retired sync digest",
            response(Ok(Reply::RetiredSyncDigest(DigestPage {
                voting: false,
                retired: [false; 2],
                entries: vec![],
                more: false,
            }))),
        ),
        (
            "response retired sync records",
            response(Ok(Reply::RetiredSyncRecords(vec![]))),
        ),
        (
            "error unavailable",
            response(Err(Error::Unavailable(e("x")))),
        ),
        ("error unknown", response(Err(Error::Unknown(e("x"))))),
        (
            "error bad request",
            response(Err(Error::BadRequest(e("x")))),
        ),
        ("error busy", response(Err(Error::Busy(e("x"))))),
        ("error frame", response(Err(Error::Frame(e("x"))))),
        ("error config", response(Err(Error::Config(e("x"))))),
        ("error storage", response(Err(Error::Storage(e("x"))))),
        ("error io", response(Err(Error::Io(e("x"))))),
        (
            "sync digest request",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Digest {
                    after: Some(b"k".to_vec()),
                    limit: 10,
                },
            }),
        ),
        (
            "sync fetch request",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Fetch {
                    keys: vec![serde_bytes::ByteBuf::from(b"k".to_vec())],
                },
            }),
        ),
        (
            "sync digest reply",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Digest(DigestPage {
                    voting: true,
                    retired: [true, false],
                    entries: vec![DigestEntry {
                        key: b"k".to_vec(),
                        promised: b(3, 1),
                        accepted: b(2, 1),
                    }],
                    more: false,
                })),
            }),
        ),
        (
            "sync records reply",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Records(vec![SyncRecord {
                    key: b"k".to_vec(),
                    record: AcceptorRecord {
                        promised: b(3, 1),
                        accepted: b(2, 1),
                        state: state(),
                        fast_unknown: false,
                    },
                }])),
            }),
        ),
        (
            "command get",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::Get,
                write_id: None,
                maybe_applied: false,
            }),
        ),
        (
            "command put",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::Put {
                    value: b"v".to_vec(),
                },
                write_id: None,
                maybe_applied: false,
            }),
        ),
        (
            "command delete",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::Delete,
                write_id: None,
                maybe_applied: false,
            }),
        ),
        (
            "command delete if",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::DeleteIf { expect: 3 },
                write_id: None,
                maybe_applied: false,
            }),
        ),
        (
            "command touch",
            request(RequestBody::Kv {
                key: b"k".to_vec(),
                command: Command::Touch,
                write_id: None,
                maybe_applied: false,
            }),
        ),
        ("peer stale", peer(PeerMessage::Stale { epoch: 9 })),
        ("request members", request(RequestBody::Members)),
        (
            "request member add",
            request(RequestBody::MemberChange(MemberChangeRequest::Add {
                id: 6,
                addr: e("a:1"),
            })),
        ),
        (
            "request member remove",
            request(RequestBody::MemberChange(MemberChangeRequest::Remove {
                id: 2,
            })),
        ),
        (
            "response members",
            response(Ok(Reply::Members(MembershipAnswer {
                node: 1,
                membership: Some(membership()),
                store: 5,
                voting: true,
                founds: 0,
            }))),
        ),
        (
            "response member changed",
            response(Ok(Reply::MemberChanged(membership()))),
        ),
        (
            "sync membership request",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Membership,
            }),
        ),
        (
            "sync install request",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Install(membership()),
            }),
        ),
        (
            "sync hello request",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Hello {
                    node: 2,
                    store: 5,
                    generation: 3,
                    call: 4,
                },
            }),
        ),
        (
            "sync membership reply",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Membership(MembershipAnswer {
                    node: 1,
                    membership: None,
                    store: 5,
                    voting: false,
                    founds: 7,
                })),
            }),
        ),
        (
            "sync installed reply",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Installed {
                    epoch: 4,
                    intact: true,
                }),
            }),
        ),
        (
            "sync hello reply",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Hello { seen: 2 }),
            }),
        ),
        (
            "request member change fenced",
            request(RequestBody::MemberChangeFenced {
                change: MemberChangeRequest::Remove { id: 2 },
                epoch: 7,
            }),
        ),
        (
            "error not this node",
            response(Err(Error::NotThisNode(e("x")))),
        ),
        (
            "request list",
            request(RequestBody::List {
                prefix: b"p".to_vec(),
                after: Some(b"pa".to_vec()),
                limit: 10,
                keys_only: true,
            }),
        ),
        (
            "response listed",
            response(Ok(Reply::Listed(ListPage {
                items: vec![
                    ListItem {
                        key: b"pb".to_vec(),
                        value: Some(b"v".to_vec()),
                        version: 3,
                    },
                    ListItem {
                        key: b"pc".to_vec(),
                        value: None,
                        version: 1,
                    },
                ],
                next: Some(b"pc".to_vec()),
            }))),
        ),
        (
            "node scan",
            Frame::Call(NodeCall {
                id: 6,
                cluster: 9,
                body: NodeRequest::Scan {
                    prefix: b"p".to_vec(),
                    after: None,
                    limit: 256,
                    epoch: 4,
                    node: 2,
                },
            }),
        ),
        (
            "node scanned",
            Frame::Answer(NodeAnswer {
                id: 6,
                result: Ok(NodeReply::Scanned {
                    records: vec![],
                    more: true,
                }),
            }),
        ),
        (
            "peer chosen",
            peer(PeerMessage::Chosen {
                changes: vec![
                    KeyChange {
                        version: 4,
                        value: Some(b"v".to_vec()),
                    },
                    KeyChange {
                        version: 5,
                        value: None,
                    },
                ],
            }),
        ),
        (
            "request watch",
            request(RequestBody::Watch {
                key: b"p".to_vec(),
                prefix: true,
            }),
        ),
        (
            "request unwatch",
            request(RequestBody::Unwatch { watch: 7 }),
        ),
        (
            "request list versions",
            request(RequestBody::ListVersions {
                prefix: b"p".to_vec(),
                after: None,
                limit: 0,
            }),
        ),
        (
            "response watch started",
            response(Ok(Reply::Watch(WatchEvent::Started { confirmed: true }))),
        ),
        (
            "response watch changed",
            response(Ok(Reply::Watch(WatchEvent::Changed {
                key: b"k".to_vec(),
                changes: vec![KeyChange {
                    version: 2,
                    value: Some(b"v".to_vec()),
                }],
            }))),
        ),
        (
            "response watch ended",
            response(Ok(Reply::Watch(WatchEvent::Ended { reason: e("slow") }))),
        ),
        ("response unwatched", response(Ok(Reply::Unwatched))),
        (
            "request lease grant",
            request(RequestBody::LeaseGrant {
                ttl_ms: 5_000,
                id: 0xab,
            }),
        ),
        (
            "request lease keepalive",
            request(RequestBody::LeaseKeepAlive { id: 0xab }),
        ),
        (
            "request lease revoke",
            request(RequestBody::LeaseRevoke { id: 1 }),
        ),
        (
            "request lease show",
            request(RequestBody::LeaseShow { id: 2 }),
        ),
        (
            "response lease",
            response(Ok(Reply::Lease(Some(LeaseInfo {
                id: 0xab,
                ttl_ms: 5_000,
                version: 3,
                remaining_ms: Some(700),
            })))),
        ),
        ("response no lease", response(Ok(Reply::Lease(None)))),
        (
            "node watching",
            Frame::Call(NodeCall {
                id: 8,
                cluster: 9,
                body: NodeRequest::Watching {
                    node: 3,
                    lease_ms: 10_000,
                },
            }),
        ),
        (
            "node watching granted",
            Frame::Answer(NodeAnswer {
                id: 8,
                result: Ok(NodeReply::Watching),
            }),
        ),
        (
            "command leased write",
            kv(Command::LeasedWrite(Box::new(LeasedWrite {
                expect: Some(2),
                value: b"v".to_vec(),
                lease: 0xab,
                fence: 3,
                retried: true,
            }))),
        ),
        ("command release", kv(Command::Release { lease: 0xab })),
        (
            "command lease attach",
            kv(Command::LeaseAttach {
                key: b"a".to_vec(),
                max_keys: 1_000,
            }),
        ),
        ("command lease end", kv(Command::LeaseEnd { expect: 4 })),
        ("command inspect", kv(Command::Inspect)),
        (
            "response kv fenced",
            response(Ok(Reply::Kv(Outcome::Fenced { fence: 5 }))),
        ),
        (
            "response kv inspect",
            response(Ok(Reply::Kv(Outcome::Inspect(Box::new(Inspected {
                value: Some(b"v".to_vec()),
                version: 6,
                lease: Some(0xab),
                fence: 2,
            }))))),
        ),
        (
            "request leased write",
            request(RequestBody::LeasedWrite {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                expect: None,
                lease: 0xab,
                write_id: RequestId { client: 7, seq: 8 },
                maybe_applied: false,
            }),
        ),
        (
            "request lease keys",
            request(RequestBody::LeaseKeys { id: 0xab }),
        ),
        (
            "response lease keys",
            response(Ok(Reply::LeaseKeys(Some(vec![
                serde_bytes::ByteBuf::from(b"k".to_vec()),
            ])))),
        ),
        (
            "response not found",
            response(Err(Error::NotFound(e("lease 00000000000000ab not found")))),
        ),
        ("peer read", peer(PeerMessage::Read { read: 5 })),
        (
            "peer read reply",
            peer(PeerMessage::ReadReply {
                read: 5,
                promised: b(3, 1),
                accepted: b(2, 1),
                seen: Seen {
                    version: 2,
                    value: Some(b"v".to_vec()),
                    lease: Some(0xab),
                    fence: 3,
                },
                fast_unknown: false,
            }),
        ),
    ]
}

/// A key's command as a client sends it.
fn kv(command: Command) -> Frame {
    request(RequestBody::Kv {
        key: b"k".to_vec(),
        command,
        write_id: None,
        maybe_applied: false,
    })
}

/// A membership in the middle of a change (every field and state on the wire).
fn membership() -> Membership {
    let member = |id, state| Member {
        id,
        addr: format!("h:{id}"),
        state,
        store: id as u64,
    };
    Membership {
        epoch: 4,
        members: vec![
            member(1, MemberState::Voting),
            member(2, MemberState::Leaving),
        ],
        phase: Some(Phase::CloseFast),
        cluster: 9,
    }
}

/// Printed by `PAXKV_PRINT_GOLDEN=1 cargo test --test wire -- --nocapture`; only ever
/// appended to.
const GOLDEN: &[(&str, &str)] = &[
    ("peer prepare", "0001070409016b000101"),
    (
        "peer promise",
        "0001070409016b010201010202010176000000000000",
    ),
    (
        "peer accept",
        "0001070409016b020201020101760000000000010301",
    ),
    ("peer accepted", "0001070409016b0302010301"),
    ("peer reject", "0001070409016b0402010402"),
    ("peer failed", "0001070409016b0502010466756c6c"),
    ("peer query", "0001070409016b0605"),
    (
        "peer query reply",
        "0001070409016b07050301020102010176000000000000",
    ),
    ("request kv", "010300016b0301017601090101"),
    ("request ping", "010301"),
    ("request status", "010302"),
    ("request set faults", "010303000000000000"),
    ("request retired sync digest", "0103040001"),
    ("request retired sync fetch", "01030500"),
    ("response kv get", "020300000001017602"),
    ("response kv put", "020300000102"),
    ("response kv delete", "02030000020103"),
    ("response kv cas", "02030000030003"),
    ("response pong", "0203000104"),
    (
        "response status",
        "02030002000000000000000000000000000000000000000000000000000000",
    ),
    ("response faults set", "02030003"),
    ("response retired sync digest", "020300040000000000"),
    ("response retired sync records", "0203000500"),
    ("error unavailable", "020301000178"),
    ("error unknown", "020301010178"),
    ("error bad request", "020301020178"),
    ("error busy", "020301030178"),
    ("error frame", "020301040178"),
    ("error config", "020301050178"),
    ("error storage", "020301060178"),
    ("error io", "020301070178"),
    ("sync digest request", "0306090001016b0a"),
    ("sync fetch request", "0306090101016b"),
    ("sync digest reply", "0406000001010001016b0301020100"),
    (
        "sync records reply",
        "0406000101016b0301020102010176000000000000",
    ),
    ("command get", "010300016b000000"),
    ("command put", "010300016b0101760000"),
    ("command delete", "010300016b020000"),
    ("command delete if", "010300016b04030000"),
    ("command touch", "010300016b050000"),
    ("peer stale", "0001070409016b0809"),
    ("request members", "010306"),
    ("request member add", "010307000603613a31"),
    ("request member remove", "0103070102"),
    (
        "response members",
        "02030006010104020103683a3100010203683a320202010009050100",
    ),
    (
        "response member changed",
        "0203000704020103683a3100010203683a320202010009",
    ),
    ("sync membership request", "03060902"),
    (
        "sync install request",
        "0306090304020103683a3100010203683a320202010009",
    ),
    ("sync hello request", "0306090402050304"),
    ("sync membership reply", "040600020100050007"),
    ("sync installed reply", "040600030401"),
    ("sync hello reply", "0406000402"),
    ("request member change fenced", "010308010207"),
    ("error not this node", "020301080178"),
    ("request list", "0103090170010270610a01"),
    (
        "response listed",
        "020300080202706201017603027063000101027063",
    ),
    ("node scan", "0306090501700080020402"),
    ("node scanned", "040600050001"),
    ("peer chosen", "0001070409016b0902040101760500"),
    ("request watch", "01030a017001"),
    ("request unwatch", "01030b07"),
    ("request list versions", "01030c01700000"),
    ("response watch started", "020300090001"),
    ("response watch changed", "0203000901016b0102010176"),
    ("response watch ended", "020300090204736c6f77"),
    ("response unwatched", "0203000a"),
    ("request lease grant", "01030d8827ab01"),
    ("request lease keepalive", "01030eab01"),
    ("request lease revoke", "01030f01"),
    ("request lease show", "01031002"),
    ("response lease", "0203000b01ab0188270301bc05"),
    ("response no lease", "0203000b00"),
    ("node watching", "0308090603904e"),
    ("node watching granted", "04080006"),
    ("command leased write", "010300016b0601020176ab0103010000"),
    ("command release", "010300016b07ab010000"),
    ("command lease attach", "010300016b080161e8070000"),
    ("command lease end", "010300016b09040000"),
    ("command inspect", "010300016b0a0000"),
    ("response kv fenced", "020300000405"),
    ("response kv inspect", "02030000050101760601ab0102"),
    ("request leased write", "010311016b017600ab01070800"),
    ("request lease keys", "010312ab01"),
    ("response lease keys", "0203000c0101016b"),
    (
        "response not found",
        "02030109206c656173652030303030303030303030303030306162206e6f7420666f756e64",
    ),
    ("peer read", "0001070409016b0a05"),
    (
        "peer read reply",
        "0001070409016b0b05030102010201017601ab010300",
    ),
];

#[test]
fn every_wire_variant_keeps_its_postcard_encoding() {
    let samples = samples();
    if std::env::var_os("PAXKV_PRINT_GOLDEN").is_some() {
        for (name, frame) in &samples {
            let bytes = postcard::to_stdvec(frame).unwrap();
            println!("    (\"{name}\", \"{}\"),", hex(&bytes));
        }
    }
    assert_eq!(
        samples.len(),
        GOLDEN.len(),
        "a sample without golden bytes, or the reverse"
    );
    for ((name, frame), (golden_name, golden)) in samples.iter().zip(GOLDEN) {
        assert_eq!(name, golden_name);
        let bytes = postcard::to_stdvec(frame).unwrap();
        assert_eq!(&hex(&bytes), golden, "{name}: the encoding changed");
        let decoded: Frame = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&decoded, frame, "{name}: does not round-trip");
    }
}

/// The protocol version these bytes are (`frame::PROTOCOL_VERSION`), and a digest of
/// [`GOLDEN`]: a changed encoding fails here until someone decides what it means for builds
/// that meet on the wire. Raise the version when a frame's bytes change in a way a build of
/// this version could misread (a field added or reordered, a payload changed); appended
/// variants only are refused by an older build of the same version (undecodable: that one
/// connection closes), which may keep it. Either way, record the new digest.
///
/// Kept at 100 when `NodeStatus::records_stored` was appended: the status is the last thing
/// in its frame, so an older build reads it without the field (postcard stops before
/// trailing bytes), and a newer tool fails to decode an older node's status (refused, not
/// misread), as with the status fields appended before it.
const PINNED: (u32, &str) = (100, "b53ac5d0d5733641");

fn golden_digest() -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, bytes) in GOLDEN {
        ctx.update(name.as_bytes());
        ctx.update(b"\0");
        ctx.update(bytes.as_bytes());
        ctx.update(b"\0");
    }
    hex(&ctx.finish().as_ref()[..8])
}

#[test]
fn the_pinned_bytes_go_with_the_protocol_version_every_frame_starts_with() {
    let (version, digest) = PINNED;
    assert_eq!(
        (paxkv::frame::PROTOCOL_VERSION, golden_digest().as_str()),
        (version, digest),
        "the wire changed, or the version did: decide whether the new bytes need a new \
         frame::PROTOCOL_VERSION (see PINNED), then record both here"
    );
    // On the wire: the length prefix, the version, the frame's bytes as pinned above.
    let (name, frame) = &samples()[0];
    let wire = paxkv::frame::encode(frame);
    let body = hex(&wire[paxkv::frame::LENGTH_PREFIX_BYTES..]);
    let version = hex(&postcard::to_stdvec(&version).unwrap());
    let golden = GOLDEN.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(body, format!("{version}{golden}"), "{name} on the wire");
}
