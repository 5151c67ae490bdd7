//! Versions kept for `get --version`: per name, the newest version this node held and up to
//! `keep_versions` older ones. Tuples carry only the newest version, so each holder remembers
//! its own history. The rules (as in the node's `files::versions`):
//!
//! * every version this node is listed for is recorded, and so is a version a newer one
//!   replaced while this node held it;
//! * versions more than `keep_versions` Lamport steps below the newest known are dropped;
//! * when this node is not a holder of the newest version, that version is forgotten (repair
//!   and trimming manage those copies);
//! * a tombstone forgets every version of the name;
//! * the garbage collector keeps every blob a kept version names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::output::Hash;

/// One kept version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptVersion {
    /// Lamport counter of the version.
    pub lamport: u64,
    /// BLAKE3 of its bytes.
    pub blake3: Hash,
    /// Its size in bytes.
    pub size: u64,
}

/// Kept versions by name, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptVersions {
    by_name: BTreeMap<Arc<str>, Vec<KeptVersion>>,
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
    pub fn record(&mut self, name: &Arc<str>, version: KeptVersion) -> bool {
        let list = self.by_name.entry(name.clone()).or_default();
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

    /// Drops the versions of `name` more than `keep_older` Lamport steps below `newest`.
    pub fn prune(&mut self, name: &str, newest: u64) -> bool {
        let floor = newest.saturating_sub(self.keep_older as u64);
        self.retain(name, |v| v.lamport >= floor)
    }

    /// Forgets version `lamport` of `name`.
    pub fn forget_version(&mut self, name: &str, lamport: u64) -> bool {
        self.retain(name, |v| v.lamport != lamport)
    }

    fn retain(&mut self, name: &str, keep: impl Fn(&KeptVersion) -> bool) -> bool {
        let Some(list) = self.by_name.get_mut(name) else {
            return false;
        };
        let before = list.len();
        list.retain(keep);
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_name.remove(name);
        }
        changed
    }

    /// Forgets every version of `name` (it was deleted).
    pub fn forget(&mut self, name: &str) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// The kept version of `name` with Lamport counter `lamport`.
    pub fn find(&self, name: &str, lamport: u64) -> Option<KeptVersion> {
        self.by_name
            .get(name)?
            .iter()
            .find(|v| v.lamport == lamport)
            .copied()
    }

    /// Whether anything is kept of `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every blob a kept version names.
    pub fn hashes(&self) -> BTreeSet<Hash> {
        self.by_name
            .values()
            .flat_map(|list| list.iter().map(|v| v.blake3))
            .collect()
    }

    /// The names with kept versions.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.by_name.keys().cloned().collect()
    }

    /// The kept versions of `name`, newest first.
    pub fn of(&self, name: &str) -> &[KeptVersion] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every name and its kept versions, newest first, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &[KeptVersion])> {
        self.by_name
            .iter()
            .map(|(name, list)| (name, list.as_slice()))
    }
}
