//! Frames on a connection, for client and node alike: a 4-byte big-endian length, then a
//! postcard-encoded [`Frame`] of at most the reader's limit.
//!
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

/// Encodes a frame with its length prefix.
pub fn encode(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(64).writer();
    buf.get_mut().put_u32(0);
    postcard::to_io(frame, &mut buf).expect("encoding into memory cannot fail");
    let mut buf = buf.into_inner();
    let len = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
    buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Decodes a frame's body (the bytes after the length prefix).
pub fn decode(body: &[u8]) -> Result<Frame> {
    postcard::from_bytes(body).map_err(|e| Error::Frame(format!("undecodable frame: {e}")))
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
