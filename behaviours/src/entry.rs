//! Membership entries: what a node says about itself and what others relay about it.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_ADDRESS_RECORD_BYTES;

/// Liveness stamp of a node: the incarnation (persisted, bumped at every start) and the
/// heartbeat counter within it, ordered in that order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Beat {
    /// Bumped at every start of the node.
    pub incarnation: u64,
    /// Bumped every heartbeat period within one incarnation.
    pub heartbeat: u64,
}

impl Beat {
    /// A stamp from its two parts.
    pub const fn new(incarnation: u64, heartbeat: u64) -> Self {
        Self {
            incarnation,
            heartbeat,
        }
    }
}

/// The opaque, bounded address record a node publishes about itself (on libp2p: a signed peer
/// record). The core relays it unchanged and never looks inside.
#[derive(Clone, Eq, PartialOrd, Ord, Default)]
pub struct AddressRecord(Arc<[u8]>);

impl PartialEq for AddressRecord {
    fn eq(&self, other: &Self) -> bool {
        // Relayed records are mostly the very bytes already held: skip the comparison then.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::hash::Hash for AddressRecord {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The bytes, as equality compares them.
        self.0.hash(state);
    }
}

impl AddressRecord {
    /// Wraps `bytes`, or refuses them if longer than [`MAX_ADDRESS_RECORD_BYTES`].
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Result<Self, AddressRecordTooLong> {
        let bytes = bytes.into();
        if bytes.len() > MAX_ADDRESS_RECORD_BYTES {
            return Err(AddressRecordTooLong(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The record's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AddressRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AddressRecord({} bytes)", self.0.len())
    }
}

/// An address record over the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("address record of {0} bytes exceeds {MAX_ADDRESS_RECORD_BYTES}")]
pub struct AddressRecordTooLong(pub usize);

impl Serialize for AddressRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for AddressRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        AddressRecord::new(bytes.into_vec()).map_err(serde::de::Error::custom)
    }
}

/// Smallest change of free space that is news on its own: a member re-announces its entry
/// (and members pass it on) when its free space moves by more than this or by more than a
/// sixteenth, or reaches or leaves zero; smaller drift waits for the next such change.
pub const FREE_SPACE_NEWS_BYTES: u64 = 16 << 20;

/// Whether free space going from `before` to `after` bytes is news (see
/// [`FREE_SPACE_NEWS_BYTES`]).
pub fn free_space_news(before: u64, after: u64) -> bool {
    if (before == 0) != (after == 0) {
        return true;
    }
    before.abs_diff(after) > FREE_SPACE_NEWS_BYTES.max(before.max(after) / 16)
}

/// A full membership entry, as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<I> {
    /// Who.
    #[serde(rename = "p")]
    pub id: I,
    /// Incarnation of the node.
    #[serde(rename = "i")]
    pub incarnation: u64,
    /// Heartbeat counter within the incarnation.
    #[serde(rename = "h")]
    pub heartbeat: u64,
    /// The node's own address record, relayed unchanged.
    #[serde(rename = "a")]
    pub address: AddressRecord,
    /// Free storage space the node reports, in bytes (for placement).
    #[serde(rename = "f")]
    pub free_space: u64,
}

impl<I: Ord> Entry<I> {
    /// The liveness stamp.
    pub fn beat(&self) -> Beat {
        Beat::new(self.incarnation, self.heartbeat)
    }

    /// Total order of two entries about the same node: the stamp first, then the address
    /// record, then the free space. [`Entry::merge`] keeps the greater, which makes merging
    /// commutative, associative, idempotent and never backwards.
    pub fn newness(&self, other: &Self) -> Ordering {
        self.beat()
            .cmp(&other.beat())
            .then_with(|| self.address.cmp(&other.address))
            .then_with(|| self.free_space.cmp(&other.free_space))
    }

    /// Merges `other` (about the same node) into `self`; returns whether `self` changed.
    pub fn merge(&mut self, other: &Self) -> bool
    where
        I: Clone,
    {
        debug_assert!(self.id == other.id);
        if other.newness(self) == Ordering::Greater {
            self.clone_from(other);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_address_records_are_refused() {
        assert!(AddressRecord::new(vec![0u8; MAX_ADDRESS_RECORD_BYTES]).is_ok());
        assert_eq!(
            AddressRecord::new(vec![0u8; MAX_ADDRESS_RECORD_BYTES + 1]),
            Err(AddressRecordTooLong(MAX_ADDRESS_RECORD_BYTES + 1))
        );
        let too_long = serde_bytes::ByteBuf::from(vec![0u8; MAX_ADDRESS_RECORD_BYTES + 1]);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &too_long).unwrap();
        assert!(cbor4ii::serde::from_slice::<AddressRecord>(&bytes).is_err());
    }
}
