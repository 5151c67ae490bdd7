//! Encoding and decoding of [`Envelope`]s with the real wire codec (CBOR, cbor4ii), with the
//! size bound checked before anything is decoded.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::MAX_MESSAGE_BYTES;
use crate::message::Envelope;

/// Why bytes could not become a message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("undecodable message: {0}")]
    Malformed(String),
}

/// Encodes an envelope; refuses one over the size limit.
pub fn encode<I: Serialize>(envelope: &Envelope<I>) -> Result<Vec<u8>, CodecError> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), envelope)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes an envelope; the length is checked first.
pub fn decode<I: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<I>, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    cbor4ii::serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// A sink that only counts bytes.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The encoded size of a value, computed with the real encoder without allocating the bytes.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    match cbor4ii::serde::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// The answer to every request on `/quickstore/kelips/2.0.0`: the message was taken in, or
/// refused with a reason (wrong network, wrong group, over a bound, undecodable…).
///
/// CBOR: the text string `"ack"`, or a map `{"refused": "<reason>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Taken in.
    Ack,
    /// Refused, with a human-readable reason.
    Refused(String),
}

/// Largest encoded [`Reply`], in bytes; longer reasons are cut to fit.
pub const MAX_REPLY_BYTES: usize = 1024;

impl Reply {
    /// A refusal whose reason is cut (at a character boundary) so the reply fits
    /// [`MAX_REPLY_BYTES`].
    pub fn refused(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        let room = MAX_REPLY_BYTES - 32;
        if reason.len() > room {
            let mut cut = room;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Reply::Refused(reason)
    }
}

/// Appends `value` as an unsigned LEB128 varint (the length prefix of every frame).
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A frame: varint length, then the bytes.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5);
    put_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}
