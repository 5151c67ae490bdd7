//! Node identities, network ids and the SHA-1 group functions.
//!
//! A node's group is `SHA-1(id bytes) mod k` and a file's group is `SHA-1(UTF-8 name) mod k`,
//! the 20-byte digest read as a big-endian integer. Anyone can recompute both, so a claim that a
//! node belongs to a group is checked, never trusted.

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// Version of the Kelips wire protocol; part of the network id.
pub const PROTOCOL_VERSION: u16 = 2;
/// The libp2p protocol name of Kelips control messages.
pub const PROTOCOL_NAME: &str = "/quickstore/kelips/2.0.0";

/// An identity the core can work with: the node uses libp2p `PeerId`s, the simulator compact
/// integers that encode like PeerIds.
pub trait NodeId:
    Clone + Ord + Eq + Hash + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The canonical bytes hashed for the group (for a PeerId: `PeerId::to_bytes()`, the
    /// multihash).
    fn to_bytes(&self) -> Vec<u8>;

    /// Whether `record` may stand as this node's address record. On libp2p: a signed peer
    /// record of this PeerId (or none). Records that fail are refused with their entry, so a
    /// third party cannot aim the network at an address the node never signed. Default: any.
    fn accepts_record(&self, _record: &crate::entry::AddressRecord) -> bool {
        true
    }

    /// Whether [`accepts_record`](NodeId::accepts_record) accepts every record (the
    /// default's behaviour): the core then neither checks records nor remembers which it
    /// checked. Only an implementation that keeps the default may say so.
    const ACCEPTS_EVERY_RECORD: bool = false;

    /// What the hash of this id tells for a network of `groups` groups: [`hash_facts`] of
    /// [`to_bytes`](NodeId::to_bytes). An implementation may remember the answers (the
    /// simulator's ids do), never change them.
    fn facts(&self, groups: u32) -> IdFacts {
        hash_facts(&self.to_bytes(), groups)
    }
}

/// What the hash of an id tells: its group and its short id in heartbeat digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdFacts {
    /// `SHA-1(bytes) mod k`.
    pub group: u32,
    /// The first four bytes of `SHA-1(bytes)`, big-endian: the member's id in digests.
    pub short: u32,
}

/// Hashes `id` for a network of `groups` groups ([`NodeId::facts`]).
pub fn id_facts<I: NodeId>(id: &I, groups: u32) -> IdFacts {
    id.facts(groups)
}

/// The group and short id of the id whose canonical bytes are `bytes`.
pub fn hash_facts(bytes: &[u8], groups: u32) -> IdFacts {
    let digest = Sha1::digest(bytes);
    IdFacts {
        group: digest_mod(&digest, groups),
        short: u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
    }
}

/// The group of a file name: `SHA-1(UTF-8 name) mod k`.
pub fn name_group(name: &str, groups: u32) -> u32 {
    digest_mod(&Sha1::digest(name.as_bytes()), groups)
}

/// A 64-bit fingerprint of a name (the first eight bytes of its SHA-1, big-endian) and its group.
pub fn name_facts(name: &str, groups: u32) -> (u32, u64) {
    let digest = Sha1::digest(name.as_bytes());
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&digest[..8]);
    (digest_mod(&digest, groups), u64::from_be_bytes(fp))
}

/// How a network chooses groups: a fixed `k` (`SHA-1 mod k`, the network id says which) or,
/// in a network whose groups size themselves ([`crate::structure`]), the first `level` bits of
/// the SHA-1 (`k = 2^level`). The short id and the name fingerprint are the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// `k` groups, `SHA-1 mod k`.
    Fixed(u32),
    /// `2^level` groups, the first `level` bits of the SHA-1.
    Prefix(u8),
}

impl Grouping {
    /// The number of groups.
    pub fn groups(&self) -> u32 {
        match *self {
            Grouping::Fixed(k) => k.max(1),
            Grouping::Prefix(level) => 1 << level.min(crate::structure::MAX_LEVEL),
        }
    }

    /// The group and short id of `id`.
    pub fn id_facts<I: NodeId>(&self, id: &I) -> IdFacts {
        match *self {
            Grouping::Fixed(k) => id.facts(k),
            Grouping::Prefix(level) => {
                let short = id.facts(1).short;
                IdFacts {
                    group: crate::structure::prefix_group(&short.to_be_bytes(), level),
                    short,
                }
            }
        }
    }

    /// The group and 64-bit fingerprint of a file name.
    pub fn name_facts(&self, name: &str) -> (u32, u64) {
        match *self {
            Grouping::Fixed(k) => name_facts(name, k),
            Grouping::Prefix(level) => {
                let (_, fp) = name_facts(name, 1);
                (crate::structure::prefix_group(&fp.to_be_bytes(), level), fp)
            }
        }
    }

    /// Whether groups `a` and `b` are siblings: the two halves of one group of the level above
    /// (prefix grouping below level 0 only), where a split moves names and copies.
    pub fn are_siblings(&self, a: u32, b: u32) -> bool {
        matches!(*self, Grouping::Prefix(level) if level > 0) && a ^ b == 1
    }

    /// The group of a name whose fingerprint is `fp` (prefix grouping only: a fixed `k` needs
    /// the whole SHA-1, and gives `None`).
    pub fn group_of_fingerprint(&self, fp: u64) -> Option<u32> {
        match *self {
            Grouping::Fixed(_) => None,
            Grouping::Prefix(level) => {
                Some(crate::structure::prefix_group(&fp.to_be_bytes(), level))
            }
        }
    }
}

/// A big-endian integer modulo `k`.
fn digest_mod(digest: &[u8], k: u32) -> u32 {
    let k = u64::from(k.max(1));
    let mut rem = 0u64;
    for &byte in digest {
        rem = ((rem << 8) | u64::from(byte)) % k;
    }
    rem as u32
}

/// The id of a network: the first 8 bytes of
/// `SHA-1("quickstore-network" ‖ version (u16 BE) ‖ k (u32 BE) ‖ name)`. It travels in every
/// message, so nodes of another network are refused with a reason instead of polluting views.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetworkId(#[serde(with = "serde_bytes")] pub [u8; 8]);

impl NetworkId {
    /// The id of the network called `name` with `groups` groups.
    pub fn new(name: &str, groups: u32) -> Self {
        let mut hasher = Sha1::new();
        hasher.update(b"quickstore-network");
        hasher.update(PROTOCOL_VERSION.to_be_bytes());
        hasher.update(groups.to_be_bytes());
        hasher.update(name.as_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl Debug for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(self, f)
    }
}

/// A compact simulator id that hashes and encodes like an ed25519 libp2p PeerId: 38 bytes, the
/// identity-multihash prefix `00 24 08 01 12 20` followed by the index (u32 BE) and zeros. Sizes
/// measured with it are the sizes real nodes send.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SimId(pub u32);

const SIM_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
const SIM_ID_LEN: usize = 38;

/// Simulator ids below this have their facts remembered (per thread).
const SIM_FACTS_REMEMBERED: u32 = 1 << 20;

impl NodeId for SimId {
    const ACCEPTS_EVERY_RECORD: bool = true;

    /// Remembered per thread: the simulator asks for the same few thousand ids all the time.
    fn facts(&self, groups: u32) -> IdFacts {
        thread_local! {
            static KNOWN: std::cell::RefCell<(u32, Vec<Option<IdFacts>>)> =
                const { std::cell::RefCell::new((0, Vec::new())) };
        }
        if self.0 >= SIM_FACTS_REMEMBERED {
            return hash_facts(&self.to_bytes(), groups);
        }
        KNOWN.with_borrow_mut(|(known_groups, known)| {
            if *known_groups != groups {
                *known_groups = groups;
                known.clear();
            }
            let index = self.0 as usize;
            if let Some(Some(facts)) = known.get(index) {
                return *facts;
            }
            let facts = hash_facts(&self.to_bytes(), groups);
            if known.len() <= index {
                known.resize(index + 1, None);
            }
            known[index] = Some(facts);
            facts
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SIM_ID_LEN);
        bytes.extend_from_slice(&SIM_ID_PREFIX);
        bytes.extend_from_slice(&self.0.to_be_bytes());
        bytes.resize(SIM_ID_LEN, 0);
        bytes
    }
}

impl Serialize for SimId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for SimId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        if bytes.len() != SIM_ID_LEN || bytes[..6] != SIM_ID_PREFIX {
            return Err(serde::de::Error::custom("not a simulator id"));
        }
        let index = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        Ok(SimId(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_mod_matches_big_integer_arithmetic() {
        // 0x0102 = 258; 258 mod 7 = 6.
        assert_eq!(digest_mod(&[0x01, 0x02], 7), 6);
        // The last byte alone decides the group when k divides 256.
        let mut digest = [0xffu8; 20];
        digest[19] = 0x13;
        assert_eq!(digest_mod(&digest, 16), 3);
    }

    #[test]
    fn name_group_vectors() {
        // SHA-1("") = da39a3ee…0709; its last byte 0x09 gives group 9 of 16.
        assert_eq!(name_group("", 16), 9);
        // SHA-1("abc") = a9993e36…9cd0d89d; 0x9d = 157, 157 mod 16 = 13.
        assert_eq!(name_group("abc", 16), 13);
    }

    #[test]
    fn sim_ids_round_trip_and_look_like_peer_ids() {
        let id = SimId(123_456);
        assert_eq!(id.to_bytes().len(), 38);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &id).unwrap();
        assert_eq!(bytes.len(), 2 + 38);
        let back: SimId = cbor4ii::serde::from_slice(&bytes).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn network_id_depends_on_name_and_groups() {
        let a = NetworkId::new("quickstore", 16);
        assert_ne!(a, NetworkId::new("quickstore", 17));
        assert_ne!(a, NetworkId::new("other", 16));
        assert_eq!(a, NetworkId::new("quickstore", 16));
    }
}
