//! [`Peer`]: a libp2p [`PeerId`] as a Kelips node id, and the signed address record check.

use std::fmt;

use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::entry::AddressRecord;
use crate::id::NodeId;

/// A libp2p [`PeerId`] as the core's node id. On the wire it is a CBOR byte string holding
/// `PeerId::to_bytes()` (the multihash: 38 bytes for an ed25519 key), the same bytes SHA-1
/// hashes for the group.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer(pub PeerId);

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<PeerId> for Peer {
    fn from(id: PeerId) -> Self {
        Peer(id)
    }
}

impl Serialize for Peer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        if bytes.len() > crate::limits::MAX_ID_BYTES {
            return Err(serde::de::Error::custom(format!(
                "peer id of {} bytes exceeds {}",
                bytes.len(),
                crate::limits::MAX_ID_BYTES
            )));
        }
        PeerId::from_bytes(&bytes)
            .map(Peer)
            .map_err(|e| serde::de::Error::custom(format!("bad peer id: {e}")))
    }
}

impl NodeId for Peer {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    fn accepts_record(&self, record: &AddressRecord) -> bool {
        record.as_bytes().is_empty() || verified_addresses(self.0, record).is_some()
    }
}

/// Signs `addresses` as `keypair`'s peer record, in the bytes an [`AddressRecord`] carries:
/// a libp2p signed envelope (protobuf) in the format other libp2p implementations use
/// (domain `libp2p-peer-record`, payload type `0x0301`).
pub fn sign_record(
    keypair: &libp2p::identity::Keypair,
    addresses: Vec<Multiaddr>,
) -> Result<AddressRecord, RecordError> {
    let record =
        PeerRecord::new_interop(keypair, addresses).map_err(|e| RecordError(e.to_string()))?;
    let bytes = record.into_signed_envelope().into_protobuf_encoding();
    AddressRecord::new(bytes).map_err(|e| RecordError(e.to_string()))
}

/// The addresses in `record` if it is a valid signed peer record of `peer` (the standard
/// format, or rust-libp2p's older one).
pub fn verified_addresses(peer: PeerId, record: &AddressRecord) -> Option<Vec<Multiaddr>> {
    let envelope = SignedEnvelope::from_protobuf_encoding(record.as_bytes()).ok()?;
    let record = PeerRecord::from_signed_envelope_interop(envelope.clone())
        .or_else(|_| PeerRecord::from_signed_envelope(envelope))
        .ok()?;
    (record.peer_id() == peer).then(|| record.addresses().to_vec())
}

/// An address record could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign address record: {0}")]
pub struct RecordError(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_round_trip_and_oversized_ones_are_refused() {
        let id = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &Peer(id)).unwrap();
        let back: Peer = cbor4ii::serde::from_slice(&bytes).unwrap();
        assert_eq!(back, Peer(id));
        let long = serde_bytes::ByteBuf::from(vec![0u8; crate::limits::MAX_ID_BYTES + 1]);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &long).unwrap();
        let err = cbor4ii::serde::from_slice::<Peer>(&bytes).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
