//! The wire of `/quickstore/kelips/2.0.0`: one request per stream, a varint-length-prefixed
//! CBOR [`Envelope`], answered by a varint-length-prefixed CBOR [`Reply`] (`docs/PROTOCOL.md`).
//!
//! Unlike libp2p's built-in CBOR codec, this one checks the announced length against
//! [`MAX_MESSAGE_BYTES`] before reading the body, never truncates, and turns an oversized or
//! undecodable request into an [`Inbound::Invalid`] the behaviour answers with
//! "refused: reason" instead of silently dropping the stream.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::peer::Peer;
use crate::codec::{self, MAX_REPLY_BYTES, RefusalCode, Reply};
use crate::limits::MAX_MESSAGE_BYTES;
use crate::message::Envelope;

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(crate::id::PROTOCOL_NAME);

/// A request as read off a stream.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A decodable envelope.
    Valid(Box<Envelope<Peer>>),
    /// Bytes that were refused before or while decoding, with the code and reason sent back.
    Invalid(RefusalCode, String),
}

/// Bytes of Kelips frames read and written, shared by every stream's codec.
#[derive(Debug, Default)]
pub struct WireCounters {
    /// Frame bytes read (requests and replies).
    pub bytes_in: AtomicU64,
    /// Frame bytes written.
    pub bytes_out: AtomicU64,
}

/// The request-response codec of `/quickstore/kelips/2.0.0`.
#[derive(Debug, Clone, Default)]
pub struct KelipsCodec {
    /// Shared byte counters.
    pub counters: Arc<WireCounters>,
}

/// Reads a length prefix: a multiformats `unsigned-varint`, LEB128 in its shortest form and at
/// most 9 bytes long. A redundant trailing zero group (`81 00` for 1) or a longer prefix is
/// invalid data, so every length has exactly one encoding on the wire.
async fn read_varint<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u64> {
    let mut value: u64 = 0;
    for index in 0..MAX_VARINT_BYTES {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        let [byte] = byte;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "length prefix not in its shortest form",
                ));
            }
            return Ok(value);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "length prefix longer than 9 bytes",
    ))
}

/// Bytes of the longest `unsigned-varint` (63 bits).
const MAX_VARINT_BYTES: u32 = 9;

/// Reads one frame (varint length, then the bytes) of at most `limit` bytes; `Ok(Err(reason))`
/// when the announced length is refused, before any of the body is read.
pub async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    limit: usize,
) -> io::Result<Result<Vec<u8>, String>> {
    let len = read_varint(io).await?;
    if len > limit as u64 {
        return Ok(Err(format!(
            "message of {len} bytes exceeds the {limit}-byte limit"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    io.read_exact(&mut bytes).await?;
    Ok(Ok(bytes))
}

/// Writes one frame and closes the stream's write side.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&codec::frame(bytes)).await?;
    io.close().await
}

impl KelipsCodec {
    fn count_in(&self, len: usize) {
        self.counters
            .bytes_in
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn count_out(&self, len: usize) {
        self.counters
            .bytes_out
            .fetch_add(len as u64, Ordering::Relaxed);
    }
}

impl request_response::Codec for KelipsCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Reply;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        let frame = read_frame(io, MAX_MESSAGE_BYTES).await?;
        if let Ok(bytes) = &frame {
            self.count_in(bytes.len());
        }
        Ok(match frame {
            Err(reason) => Inbound::Invalid(RefusalCode::FrameTooLarge, reason),
            Ok(bytes) => match codec::decode::<Peer>(&bytes) {
                Ok(envelope) => Inbound::Valid(Box::new(envelope)),
                Err(e @ codec::CodecError::TooLarge(_)) => {
                    Inbound::Invalid(RefusalCode::FrameTooLarge, e.to_string())
                }
                Err(e) => Inbound::Invalid(RefusalCode::Undecodable, e.to_string()),
            },
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Reply>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, MAX_REPLY_BYTES)
            .await?
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
        self.count_in(bytes.len());
        cbor4ii::serde::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}")))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Inbound,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Inbound::Valid(envelope) = request else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an invalid request is never sent",
            ));
        };
        let bytes = codec::encode(&envelope)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.count_out(bytes.len());
        write_frame(io, &bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        reply: Reply,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &reply)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.count_out(bytes.len());
        write_frame(io, &bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> io::Result<u64> {
        futures::executor::block_on(read_varint(&mut &bytes[..]))
    }

    #[test]
    fn length_prefixes_have_one_encoding() {
        assert_eq!(read(&[0x00]).unwrap(), 0);
        assert_eq!(read(&[0x01]).unwrap(), 1);
        assert_eq!(read(&[0x80, 0x01]).unwrap(), 128);
        assert_eq!(read(&[0xff, 0xff, 0x0f]).unwrap(), 262_143);
        let longest = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(read(&longest).unwrap(), u64::MAX >> 1);
        for redundant in [&[0x81, 0x00][..], &[0x80, 0x80, 0x00], &[0xff, 0x80, 0x00]] {
            let error = read(redundant).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{redundant:02x?}");
            assert!(error.to_string().contains("shortest form"));
        }
        let too_long = [0x80; 10];
        assert!(read(&too_long).unwrap_err().to_string().contains("9 bytes"));
        // A prefix cut short is an early end of the stream, not a length.
        assert_eq!(
            read(&[0x80]).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
