//! Encoding and decoding of [`Envelope`]s with the real wire codec (CBOR, cbor4ii), with the
//! size bound checked before anything is decoded.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
/// refused with a code for programs and a reason for people.
///
/// CBOR: the text string `"ack"`, or a map `{"refused": {"code": "<code>", "reason":
/// "<reason>"}}`. The older form `{"refused": "<reason>"}` is still read (code `other`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Taken in.
    Ack,
    /// Refused.
    Refused(#[serde(deserialize_with = "refused_either_form")] Refused),
}

/// Why a message was refused: what a program acts on (the reason is for people and is never
/// parsed). CBOR: the snake_case name as a text string; a name this version does not know
/// reads as [`RefusalCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The envelope's network id is not the receiver's (name, k or protocol version).
    WrongNetwork,
    /// A group-only message from a peer of another group.
    WrongGroup,
    /// A sender entry that is not the authenticated peer's.
    ForgedSender,
    /// A list over its bound.
    OverABound,
    /// A frame whose length prefix is over the limit (its body is not read).
    FrameTooLarge,
    /// Not an envelope.
    Undecodable,
    /// Anything else: a code from a newer version, or a refusal in the older text-only form.
    Other,
}

impl RefusalCode {
    /// Every code, in the order PROTOCOL.md lists them.
    pub const ALL: [RefusalCode; 7] = [
        RefusalCode::WrongNetwork,
        RefusalCode::WrongGroup,
        RefusalCode::ForgedSender,
        RefusalCode::OverABound,
        RefusalCode::FrameTooLarge,
        RefusalCode::Undecodable,
        RefusalCode::Other,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            RefusalCode::WrongNetwork => "wrong_network",
            RefusalCode::WrongGroup => "wrong_group",
            RefusalCode::ForgedSender => "forged_sender",
            RefusalCode::OverABound => "over_a_bound",
            RefusalCode::FrameTooLarge => "frame_too_large",
            RefusalCode::Undecodable => "undecodable",
            RefusalCode::Other => "other",
        }
    }

    /// The code named `name`; [`RefusalCode::Other`] for a name not known here.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|code| code.name() == name)
            .unwrap_or(RefusalCode::Other)
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for RefusalCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for RefusalCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
}

/// A refusal: its code and a human-readable reason (cut to fit [`MAX_REPLY_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// What a program acts on.
    pub code: RefusalCode,
    /// For people; never parsed.
    pub reason: String,
}

/// Reads a refusal in the present form (a map with `code` and `reason`) or in the older one
/// (the reason alone, code [`RefusalCode::Other`]).
fn refused_either_form<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Refused, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        Typed(Refused),
        Text(String),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Typed(refused) => refused,
        Either::Text(reason) => Refused {
            code: RefusalCode::Other,
            reason,
        },
    })
}

/// Largest encoded [`Reply`], in bytes; longer reasons are cut to fit.
pub const MAX_REPLY_BYTES: usize = 1024;

impl Reply {
    /// A refusal with `code`, whose reason is cut (at a character boundary) so the reply
    /// fits [`MAX_REPLY_BYTES`].
    pub fn refused(code: RefusalCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        let room = MAX_REPLY_BYTES - 32;
        if reason.len() > room {
            let mut cut = room;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Reply::Refused(Refused { code, reason })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
        cbor4ii::serde::to_vec(Vec::new(), value).expect("encodes")
    }

    fn read(bytes: &[u8]) -> Reply {
        cbor4ii::serde::from_slice(bytes).expect("a reply")
    }

    #[test]
    fn a_refusal_carries_its_code_both_ways() {
        let reply = Reply::refused(RefusalCode::WrongGroup, "sender belongs to group 3, not 13");
        assert_eq!(read(&cbor(&reply)), reply);
    }

    #[test]
    fn the_older_text_only_refusal_reads_as_code_other() {
        #[derive(Serialize)]
        #[serde(rename_all = "lowercase")]
        enum OlderReply {
            Refused(String),
        }
        let older = cbor(&OlderReply::Refused(
            "wrong network: expected a, got b".into(),
        ));
        assert_eq!(
            read(&older),
            Reply::Refused(Refused {
                code: RefusalCode::Other,
                reason: "wrong network: expected a, got b".into(),
            })
        );
    }

    #[test]
    fn a_code_not_known_here_reads_as_other() {
        #[derive(Serialize)]
        struct Newer {
            code: &'static str,
            reason: &'static str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "lowercase")]
        enum NewerReply {
            Refused(Newer),
        }
        let newer = cbor(&NewerReply::Refused(Newer {
            code: "rate_limited",
            reason: "slow down",
        }));
        assert!(matches!(
            read(&newer),
            Reply::Refused(Refused {
                code: RefusalCode::Other,
                ..
            })
        ));
        for code in RefusalCode::ALL {
            assert_eq!(RefusalCode::from_name(code.name()), code);
        }
    }
}
