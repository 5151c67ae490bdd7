//! The versions a node keeps of the names it held: the newest it holds and up to
//! `keep_versions` older ones, so `get --version V` can fetch an older version while it is
//! kept. Tuples carry only the newest version, so each holder remembers its own history; the
//! repair loop records every held version, drops names that were deleted, and the garbage
//! collector keeps every blob named here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::blobs::Hash;

/// One kept version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    /// Lamport counter of the version.
    pub lamport: u64,
    /// BLAKE3 of its bytes.
    #[serde(with = "serde_bytes")]
    pub blake3: Hash,
    /// Its size in bytes.
    pub size: u64,
}

/// Kept versions by name, newest first.
#[derive(Debug, Default)]
pub struct KeptVersions {
    by_name: BTreeMap<String, Vec<KeptVersion>>,
    keep_older: usize,
}

impl KeptVersions {
    /// Keeps, per name, the newest version held and `keep_older` older ones.
    pub fn new(keep_older: usize) -> Self {
        Self {
            by_name: BTreeMap::new(),
            keep_older,
        }
    }

    /// Records that `version` of `name` is held; returns whether anything changed.
    pub fn record(&mut self, name: &str, version: KeptVersion) -> bool {
        let list = self.by_name.entry(name.to_string()).or_default();
        if list
            .iter()
            .any(|v| v.lamport == version.lamport && v.blake3 == version.blake3)
        {
            return false;
        }
        list.push(version);
        list.sort_by_key(|v| std::cmp::Reverse((v.lamport, v.blake3)));
        list.truncate(self.keep_older + 1);
        true
    }

    /// Drops the versions of `name` more than `keep_older` Lamport steps below `newest` (the
    /// newest version the group knows; Lamport counters of one name rise by one per put);
    /// returns whether anything changed.
    pub fn prune(&mut self, name: &str, newest: u64) -> bool {
        let floor = newest.saturating_sub(self.keep_older as u64);
        let Some(list) = self.by_name.get_mut(name) else {
            return false;
        };
        let before = list.len();
        list.retain(|v| v.lamport >= floor);
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_name.remove(name);
        }
        changed
    }

    /// Forgets version `lamport` of `name` (this node is no longer a holder of the newest
    /// version: repair and trimming manage those copies); returns whether anything changed.
    pub fn forget_version(&mut self, name: &str, lamport: u64) -> bool {
        let Some(list) = self.by_name.get_mut(name) else {
            return false;
        };
        let before = list.len();
        list.retain(|v| v.lamport != lamport);
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_name.remove(name);
        }
        changed
    }

    /// Forgets every version of `name` (it was deleted); returns whether anything changed.
    pub fn forget(&mut self, name: &str) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// The kept versions of `name`, newest first.
    pub fn of(&self, name: &str) -> &[KeptVersion] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The kept version of `name` with Lamport counter `lamport`.
    pub fn find(&self, name: &str, lamport: u64) -> Option<KeptVersion> {
        self.by_name
            .get(name)?
            .iter()
            .find(|v| v.lamport == lamport)
            .copied()
    }

    /// Every blob a kept version names.
    pub fn hashes(&self) -> BTreeSet<Hash> {
        self.by_name
            .values()
            .flat_map(|list| list.iter().map(|v| v.blake3))
            .collect()
    }

    /// The names with kept versions.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    /// Encoded for the node store: (name, CBOR list).
    pub fn encode(&self) -> Vec<(String, Vec<u8>)> {
        self.by_name
            .iter()
            .filter_map(|(name, list)| {
                Some((name.clone(), cbor4ii::serde::to_vec(Vec::new(), list).ok()?))
            })
            .collect()
    }

    /// Restores from the node store, skipping undecodable rows.
    pub fn decode(&mut self, rows: Vec<(String, Vec<u8>)>) {
        for (name, bytes) in rows {
            match cbor4ii::serde::from_slice::<Vec<KeptVersion>>(&bytes) {
                Ok(list) => {
                    for version in list {
                        self.record(&name, version);
                    }
                }
                Err(e) => tracing::warn!("kept versions of {name:?} not restored: {e}"),
            }
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
    fn keeps_the_newest_and_as_many_older_as_configured() {
        let mut kept = KeptVersions::new(1);
        assert!(kept.record("a", v(1)));
        assert!(!kept.record("a", v(1)));
        assert!(kept.record("a", v(3)));
        assert!(kept.record("a", v(2)));
        assert_eq!(kept.find("a", 1), None);
        assert_eq!(kept.find("a", 2), Some(v(2)));
        assert_eq!(kept.find("a", 3), Some(v(3)));
        assert_eq!(kept.hashes().len(), 2);
        let mut restored = KeptVersions::new(1);
        restored.decode(kept.encode());
        assert_eq!(restored.find("a", 2), Some(v(2)));
        assert!(!kept.prune("a", 3));
        assert!(kept.prune("a", 4));
        assert_eq!(kept.find("a", 2), None);
        assert!(kept.forget("a"));
        assert!(kept.hashes().is_empty());
    }
}
