//! Frames on a connection, for client and node alike: a 4-byte big-endian length, then the
//! body, of at most the reader's limit: the wire protocol's version ([`PROTOCOL_VERSION`], a
//! postcard varint) and a postcard-encoded [`Frame`].
//!
//! - **The version comes first, and is checked before the frame is decoded.** postcard is
//!   positional and ignores trailing bytes: a frame of another build can decode as the wrong
//!   message instead of failing (ARCHITECTURE.md, "Mixed versions": one build read the
//!   cluster identity's bytes as a key's length). A body of another version is refused by
//!   [`decode`] whatever follows it, and [`other_version`] tells the network why, so that it
//!   answers with [`version_refusal`] and closes: the other side learns the version this
//!   side speaks, and nothing of the frame is acted on. Versions start at 100 so that the
//!   builds before versions, whose bodies start with the index of a `Frame` variant (0 to 4),
//!   refuse a versioned body too (no variant 100), instead of reading it as one of theirs.
//! - A reader refuses a frame longer than its limit from the length prefix alone, before it
//!   allocates anything for it ([`codec`]); a node's limit is one key, one value and the
//!   protocol around them (`Config::frame_limit`).
//! - A body that does not decode is an [`Error::Frame`]; what a decoded frame *means* is
//!   checked by `messages::Frame::validate` before anything acts on it.
//! - Writers coalesce: [`write_queue`] is the one loop that turns a queue of encoded frames
//!   into as few `write` calls as possible (peer links, client connections and a node's
//!   responses all use it).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

use crate::error::{Error, Result};
use crate::messages::Frame;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes gathered from a queue into one write.
pub const MAX_COALESCED_BYTES: usize = 256 * 1024;

/// The wire protocol this build speaks: every frame's body starts with it. **Raise it with
/// any change of a frame's bytes that a build of this version could misread** (a field
/// added, a variant's payload changed); `tests/wire.rs` pins the bytes of every frame
/// variant together with this number, so that a changed encoding fails there until it is
/// raised. Variants appended at the end of an enum are read by no older build (they fail to
/// decode) and need no new version, but the pinned bytes ask for the decision.
pub const PROTOCOL_VERSION: u32 = 100;

/// The first versioned build's version: a body that starts with a smaller number is a build
/// before versions (a `Frame` variant's index).
const FIRST_PROTOCOL_VERSION: u32 = 100;

/// Encodes a frame with its length prefix and the protocol version.
pub fn encode(frame: &Frame) -> Bytes {
    framed(Some(frame))
}

/// The length prefix, the protocol version, and `frame` if there is one.
fn framed(frame: Option<&Frame>) -> Bytes {
    let mut buf = BytesMut::with_capacity(64).writer();
    buf.get_mut().put_u32(0);
    postcard::to_io(&PROTOCOL_VERSION, &mut buf).expect("encoding into memory cannot fail");
    if let Some(frame) = frame {
        postcard::to_io(frame, &mut buf).expect("encoding into memory cannot fail");
    }
    let mut buf = buf.into_inner();
    let len = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
    buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Decodes a frame's body (the bytes after the length prefix): its version, then, only if
/// it is [`PROTOCOL_VERSION`], the frame.
pub fn decode(body: &[u8]) -> Result<Frame> {
    let (version, frame) = postcard::take_from_bytes::<u32>(body)
        .map_err(|e| Error::Frame(format!("undecodable frame: no protocol version: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Frame(mismatch(version)));
    }
    postcard::from_bytes(frame).map_err(|e| Error::Frame(format!("undecodable frame: {e}")))
}

/// The version a body that [`decode`] refused speaks, if it is another one than this
/// build's (a body of this version that does not decode is a bad frame, not a mismatch).
pub fn other_version(body: &[u8]) -> Option<u32> {
    let (version, _) = postcard::take_from_bytes::<u32>(body).ok()?;
    (version != PROTOCOL_VERSION).then_some(version)
}

/// What a refused body of `version` is told: both versions, and why they do not mix.
pub fn mismatch(version: u32) -> String {
    let theirs = if version < FIRST_PROTOCOL_VERSION {
        format!(
            "protocol version {version} (below {FIRST_PROTOCOL_VERSION}: a build before \
             protocol versions)"
        )
    } else {
        format!("protocol version {version}")
    };
    format!(
        "the other side speaks {theirs}, this build {PROTOCOL_VERSION}: nodes and clients of \
         different protocol versions do not talk to each other (ARCHITECTURE.md, \"Mixed \
         versions\")"
    )
}

/// The frame a node answers a body of another version with before it closes the connection:
/// this build's version and nothing else, which a reader of any versioned build refuses
/// with both versions named ([`decode`]), and a reader of this version as undecodable.
pub fn version_refusal() -> Bytes {
    framed(None)
}

/// The codec for reading frames of at most `max_frame_bytes`.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_PREFIX_BYTES)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Writes everything `queue` carries into `writer` until the queue closes (`Ok`) or a write
/// fails (`Err`; what was gathered for that write is lost). Woken by a frame, it yields once
/// to the runtime and then takes everything queued, up to [`MAX_COALESCED_BYTES`], into one
/// `write`: the other ready tasks (actors stepping through their mailboxes, requests
/// finishing) queue theirs first. On the put path that made 0.9 `send` calls per put out of
/// 4.5 (BENCHMARKS.md). Each item is dropped once it is written (an item may carry what it
/// holds of a budget: `actors::network`, `actors::outbox`). A write that makes no progress
/// for `stall` (a reader that stopped reading) fails with `TimedOut`.
pub async fn write_queue<W: AsyncWrite + Unpin, T: AsRef<[u8]>>(
    writer: &mut W,
    queue: &mut mpsc::Receiver<T>,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    while let Some(first) = queue.recv().await {
        buf.extend_from_slice(first.as_ref());
        items.push(first);
        tokio::task::yield_now().await;
        while buf.len() < MAX_COALESCED_BYTES {
            match queue.try_recv() {
                Ok(more) => {
                    buf.extend_from_slice(more.as_ref());
                    items.push(more);
                }
                Err(_) => break,
            }
        }
        let written = match stall {
            Some(stall) => write_all_or_stall(writer, &buf, stall).await,
            None => writer.write_all(&buf).await,
        };
        buf.clear();
        items.clear();
        written?;
    }
    Ok(())
}

/// `write_all`, failing with `TimedOut` once a single `write` has waited `stall`.
async fn write_all_or_stall<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut buf: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        // The usual case, a socket with room, costs no timer: a first attempt polled once.
        let written = match futures_util::FutureExt::now_or_never(writer.write(buf)) {
            Some(written) => written,
            None => tokio::time::timeout(stall, writer.write(buf))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the reader took nothing for {stall:?}"),
                    )
                })?,
        };
        match written? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::messages::{Envelope, PeerMessage};
    use crate::paxos::types::Ballot;

    #[test]
    fn an_encoded_frame_decodes_through_the_codec() {
        let frame = Frame::Peer(Envelope {
            from: 2,
            proposer: 9,
            epoch: 1,
            cluster: 3,
            key: b"key".to_vec(),
            body: PeerMessage::Prepare {
                ballot: Ballot::new(1, 2),
            },
        });
        let mut bytes = BytesMut::from(&encode(&frame)[..]);
        let body = codec(1024).decode(&mut bytes).unwrap().unwrap();
        assert_eq!(decode(&body).unwrap(), frame);
    }

    fn body(bytes: &Bytes) -> BytesMut {
        let mut bytes = BytesMut::from(&bytes[..]);
        codec(1024).decode(&mut bytes).unwrap().unwrap()
    }

    fn ping() -> Frame {
        Frame::Request(crate::messages::ClientRequest {
            id: 7,
            body: crate::messages::RequestBody::Ping,
        })
    }

    /// A body of another version is refused whatever follows it, with both versions named,
    /// and told apart from a bad frame of this version.
    #[test]
    fn a_frame_of_another_protocol_version_is_refused_before_it_is_decoded() {
        let ours = body(&encode(&ping()));
        assert_eq!(other_version(&ours), None);
        // The same frame behind another version: refused, though the rest would decode.
        let mut theirs = BytesMut::new();
        theirs.extend_from_slice(&postcard::to_stdvec(&(PROTOCOL_VERSION + 1)).unwrap());
        theirs.extend_from_slice(&postcard::to_stdvec(&ping()).unwrap());
        let refused = decode(&theirs).unwrap_err().to_string();
        assert!(refused.contains("protocol version 101") && refused.contains("this build 100"));
        assert_eq!(other_version(&theirs), Some(PROTOCOL_VERSION + 1));
        // A build before versions sends the frame alone: its variant's index reads as a
        // version below 100.
        let unversioned = postcard::to_stdvec(&ping()).unwrap();
        let refused = decode(&unversioned).unwrap_err().to_string();
        assert!(
            refused.contains("a build before protocol versions"),
            "{refused}"
        );
        assert_eq!(other_version(&unversioned), Some(1));
        // Every version from the first on is a versioned build's, whatever this one is.
        assert!(!mismatch(FIRST_PROTOCOL_VERSION).contains("before protocol versions"));
        // A bad frame of this version is no mismatch.
        let bad = [&ours[..1], &[0xff, 0xff, 0xff]].concat();
        assert!(decode(&bad).is_err());
        assert_eq!(other_version(&bad), None);
    }

    /// What the builds before versions do with a versioned body: fail to decode it (no
    /// `Frame` variant 100), never read it as a frame of theirs. The refusal carries the
    /// version alone.
    #[test]
    fn a_build_before_versions_cannot_read_a_versioned_frame_and_the_refusal_is_the_version() {
        let versioned = body(&encode(&ping()));
        assert!(postcard::from_bytes::<Frame>(&versioned).is_err());
        let refusal = body(&version_refusal());
        assert_eq!(
            &refusal[..],
            &postcard::to_stdvec(&PROTOCOL_VERSION).unwrap()[..]
        );
        assert!(postcard::from_bytes::<Frame>(&refusal).is_err());
        assert_eq!(other_version(&refusal), None);
        assert!(decode(&refusal).is_err());
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_reading_the_body() {
        let mut bytes = BytesMut::new();
        bytes.put_u32(10_000_000);
        bytes.put_slice(&[0; 16]);
        assert!(codec(1024).decode(&mut bytes).is_err());
    }

    #[tokio::test]
    async fn queued_frames_are_written_in_order_and_the_writer_ends_with_its_queue() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0u8..10 {
            tx.send(Bytes::from(vec![i; 3])).await.unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_queue(&mut out, &mut rx, None).await.unwrap();
        let expected: Vec<u8> = (0u8..10).flat_map(|i| [i; 3]).collect();
        assert_eq!(out, expected);
    }
}
