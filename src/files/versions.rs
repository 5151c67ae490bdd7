//! The versions a node keeps of the names it held (for `get --version`): the rules live in the
//! files core ([`KeptVersions`]); this module stores them in the node store and restores them
//! at start, so a restarted node neither forgets an older version nor collects its blob.

use serde::{Deserialize, Serialize};

use crate::blobs::Hash;

pub use quickstore_behaviours::files_core::{KeptVersion, KeptVersions};

/// One kept version as the node store holds it (a CBOR map; the format of earlier releases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StoredVersion {
    lamport: u64,
    #[serde(with = "serde_bytes")]
    blake3: Hash,
    size: u64,
}

/// Encoded for the node store: (name, CBOR list), one row per name.
pub fn encode(kept: &KeptVersions) -> Vec<(String, Vec<u8>)> {
    kept.iter()
        .filter_map(|(name, list)| {
            let list: Vec<StoredVersion> = list
                .iter()
                .map(|v| StoredVersion {
                    lamport: v.lamport,
                    blake3: v.blake3,
                    size: v.size,
                })
                .collect();
            Some((
                name.to_string(),
                cbor4ii::serde::to_vec(Vec::new(), &list).ok()?,
            ))
        })
        .collect()
}

/// Restores rows of the node store into `kept`, skipping undecodable rows (logged).
pub fn decode(kept: &mut KeptVersions, rows: Vec<(String, Vec<u8>)>) {
    for (name, bytes) in rows {
        match cbor4ii::serde::from_slice::<Vec<StoredVersion>>(&bytes) {
            Ok(list) => {
                let name: std::sync::Arc<str> = name.into();
                for v in list {
                    kept.record(
                        &name,
                        KeptVersion {
                            lamport: v.lamport,
                            blake3: v.blake3,
                            size: v.size,
                        },
                    );
                }
            }
            Err(e) => tracing::warn!("kept versions of {name:?} not restored: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lamport: u64) -> KeptVersion {
        KeptVersion {
            lamport,
            blake3: [lamport as u8; 32],
            size: lamport,
        }
    }

    #[test]
    fn kept_versions_survive_the_node_store() {
        let mut kept = KeptVersions::new(1);
        let a: std::sync::Arc<str> = "a".into();
        kept.record(&a, v(2));
        kept.record(&a, v(3));
        let rows = encode(&kept);
        assert_eq!(rows.len(), 1);
        let mut restored = KeptVersions::new(1);
        decode(&mut restored, rows);
        assert_eq!(restored, kept);
        let mut broken = KeptVersions::new(1);
        decode(&mut broken, vec![("b".into(), vec![0xff])]);
        assert!(!broken.contains("b"));
    }
}
