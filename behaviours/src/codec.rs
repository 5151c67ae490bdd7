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
