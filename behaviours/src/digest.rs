//! The heartbeat digest: (short id, incarnation, heartbeat) of every live member of a group,
//! packed as one byte string — van Renesse's basic gossip, O(group size) bytes.
//!
//! Wire form: a CBOR byte string holding, per member in strictly increasing short-id order,
//! the short id (4 bytes, big-endian), then the incarnation and the heartbeat as unsigned LEB128.

use serde::{Deserialize, Serialize};

use crate::entry::Beat;
use crate::limits::MAX_DIGEST_ITEMS;

/// One member's stamp in a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestItem {
    /// The member's short id (first four bytes of the SHA-1 of its id).
    pub short: u32,
    /// Its newest stamp known to the sender.
    pub beat: Beat,
}

/// The stamps of all live members of the sender's group, sorted by short id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatDigest {
    items: Vec<DigestItem>,
}

/// Why a digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// More items than [`MAX_DIGEST_ITEMS`].
    #[error("digest of more than {MAX_DIGEST_ITEMS} members")]
    TooLong,
    /// Short ids not strictly increasing.
    #[error("digest short ids are not strictly increasing")]
    Unsorted,
    /// The bytes end inside an item or a number overflows.
    #[error("digest bytes are truncated or malformed")]
    Malformed,
}

impl HeartbeatDigest {
    /// A digest from items that must be sorted by short id without repeats.
    pub fn from_sorted(items: Vec<DigestItem>) -> Result<Self, DigestError> {
        if items.len() > MAX_DIGEST_ITEMS {
            return Err(DigestError::TooLong);
        }
        if items.windows(2).any(|pair| pair[0].short >= pair[1].short) {
            return Err(DigestError::Unsorted);
        }
        Ok(Self { items })
    }

    /// The items, sorted by short id.
    pub fn items(&self) -> &[DigestItem] {
        &self.items
    }

    /// Number of members in the digest.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the digest is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The packed wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.items.len() * 8);
        for item in &self.items {
            out.extend_from_slice(&item.short.to_be_bytes());
            crate::codec::put_varint(item.beat.incarnation, &mut out);
            crate::codec::put_varint(item.beat.heartbeat, &mut out);
        }
        out
    }

    /// Parses packed wire bytes.
    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self, DigestError> {
        let mut items = Vec::new();
        while !bytes.is_empty() {
            if items.len() == MAX_DIGEST_ITEMS {
                return Err(DigestError::TooLong);
            }
            let (short, rest) = bytes
                .split_first_chunk::<4>()
                .ok_or(DigestError::Malformed)?;
            let (incarnation, rest) = take_leb128(rest)?;
            let (heartbeat, rest) = take_leb128(rest)?;
            items.push(DigestItem {
                short: u32::from_be_bytes(*short),
                beat: Beat::new(incarnation, heartbeat),
            });
            bytes = rest;
        }
        Self::from_sorted(items)
    }
}

fn take_leb128(bytes: &[u8]) -> Result<(u64, &[u8]), DigestError> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * index as u32;
        if shift == 63 && bits > 1 {
            return Err(DigestError::Malformed);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                // A redundant zero group: not the shortest form, which is the only one.
                return Err(DigestError::Malformed);
            }
            return Ok((value, &bytes[index + 1..]));
        }
    }
    Err(DigestError::Malformed)
}

impl Serialize for HeartbeatDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for HeartbeatDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        HeartbeatDigest::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(short: u32, incarnation: u64, heartbeat: u64) -> DigestItem {
        DigestItem {
            short,
            beat: Beat::new(incarnation, heartbeat),
        }
    }

    #[test]
    fn packs_and_parses() {
        let digest =
            HeartbeatDigest::from_sorted(vec![item(1, 0, 127), item(0xdead_beef, 3, 300)]).unwrap();
        let bytes = digest.to_bytes();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 1, 0x00, 0x7f, 0xde, 0xad, 0xbe, 0xef, 0x03, 0xac, 0x02
            ]
        );
        assert_eq!(HeartbeatDigest::from_bytes(&bytes).unwrap(), digest);
        let max = HeartbeatDigest::from_sorted(vec![item(0, u64::MAX, u64::MAX)]).unwrap();
        assert_eq!(HeartbeatDigest::from_bytes(&max.to_bytes()).unwrap(), max);
    }

    #[test]
    fn refuses_bad_digests() {
        assert_eq!(
            HeartbeatDigest::from_bytes(&[0, 0, 0, 1, 0x80]),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            HeartbeatDigest::from_bytes(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0]),
            Err(DigestError::Unsorted)
        );
        let overflow = [
            0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0,
        ];
        assert_eq!(
            HeartbeatDigest::from_bytes(&overflow),
            Err(DigestError::Malformed)
        );
        // Incarnation 1 written as `81 00`: the value is fine, the form is not the shortest.
        assert_eq!(
            HeartbeatDigest::from_bytes(&[0, 0, 0, 1, 0x81, 0x00, 5]),
            Err(DigestError::Malformed)
        );
        assert!(HeartbeatDigest::from_bytes(&[0, 0, 0, 1, 0x01, 5]).is_ok());
    }
}
