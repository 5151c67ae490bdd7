//! File tuples: name → newest version, size, BLAKE3 hash and holders.
//!
//! A version is (Lamport counter, BLAKE3 hash), ordered in that order; the highest wins. Within
//! one version, the holder-set `epoch` orders rewrites of the holder list (repair and trimming
//! publish the exact new set under the next epoch); two tuples of the same version and epoch
//! merge their holder sets. These rules make merging commutative, associative, idempotent and
//! monotone, so gossip in any order converges. A tombstone (`deleted`) is a version like any
//! other: the newest one hides the name.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::WriteAuth;
use crate::limits::{MAX_HOLDERS, MAX_NAME_BYTES};

/// The version of a file: a Lamport counter assigned by the first home node, then the BLAKE3
/// hash of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Lamport counter: max known + 1 at the first home node.
    #[serde(rename = "l")]
    pub lamport: u64,
    /// BLAKE3 hash of the file's bytes.
    #[serde(rename = "b", with = "serde_bytes")]
    pub blake3: [u8; 32],
}

/// What the network knows of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTuple<I> {
    /// The name: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 without NUL. A key, never a path.
    #[serde(rename = "n")]
    pub name: Arc<str>,
    /// Newest version.
    #[serde(rename = "v")]
    pub version: Version,
    /// Size in bytes.
    #[serde(rename = "s")]
    pub size: u64,
    /// Nodes holding the bytes, sorted, without repeats, at most [`MAX_HOLDERS`].
    #[serde(rename = "o")]
    pub holders: Vec<I>,
    /// Generation of the holder set within this version: 0 at the put, one more each time a
    /// repair leader publishes an exact new set. Omitted on the wire when 0.
    #[serde(rename = "e", default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
    /// This version deletes the name (a tombstone: size 0, hash of no bytes). Omitted on the
    /// wire when false.
    #[serde(rename = "d", default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Who wrote this version, signed ([`crate::auth`]); omitted on the wire in networks open
    /// to all writers.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Arc<WriteAuth>>,
}

fn is_zero(epoch: &u32) -> bool {
    *epoch == 0
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// Why a name or tuple was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    /// Empty name.
    #[error("file name is empty")]
    EmptyName,
    /// Name over the limit.
    #[error("file name of {0} bytes exceeds {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    /// Name with a NUL byte.
    #[error("file name contains a NUL byte")]
    NulInName,
    /// No holder, or too many.
    #[error("a tuple needs 1 to {MAX_HOLDERS} holders, got {0}")]
    Holders(usize),
    /// Name of another group.
    #[error("file name belongs to group {actual}, not {expected}")]
    WrongGroup {
        /// The group this node serves.
        expected: u32,
        /// The name's group.
        actual: u32,
    },
    /// The store is full.
    #[error("tuple store full ({0} tuples)")]
    StoreFull(usize),
    /// The version's signature or owner was refused.
    #[error(transparent)]
    Unauthorized(#[from] crate::auth::AuthError),
}

/// Checks a file name: 1 to 1024 bytes of UTF-8 without NUL.
pub fn check_name(name: &str) -> Result<(), TupleError> {
    if name.is_empty() {
        Err(TupleError::EmptyName)
    } else if name.len() > MAX_NAME_BYTES {
        Err(TupleError::NameTooLong(name.len()))
    } else if name.contains('\0') {
        Err(TupleError::NulInName)
    } else {
        Ok(())
    }
}

impl<I: Ord + Clone> FileTuple<I> {
    /// Checks the name and the holder count, and puts the holders in canonical order.
    pub fn normalize(mut self) -> Result<Self, TupleError> {
        check_name(&self.name)?;
        self.holders.sort();
        self.holders.dedup();
        if self.holders.is_empty() || self.holders.len() > MAX_HOLDERS {
            return Err(TupleError::Holders(self.holders.len()));
        }
        Ok(self)
    }

    /// Whether the tuple is already in the form [`normalize`](Self::normalize) gives: a valid
    /// name and 1 to [`MAX_HOLDERS`] holders, sorted, without repeats. Checked without copying.
    pub fn is_normal(&self) -> bool {
        check_name(&self.name).is_ok()
            && (1..=MAX_HOLDERS).contains(&self.holders.len())
            && self.holders.windows(2).all(|pair| pair[0] < pair[1])
    }

    /// Whether [`merge`](Self::merge)ing `other` would change `self`, found without copying:
    /// most tuples gossip brings are ones a node already has.
    pub fn merge_changes(&self, other: &Self) -> bool {
        match other.rank().cmp(&self.rank()) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => {
                if other.size > self.size {
                    return true;
                }
                let canonical = self.holders.len() <= MAX_HOLDERS
                    && self.holders.windows(2).all(|pair| pair[0] < pair[1]);
                if canonical && other.holders.iter().all(|h| self.holders.contains(h)) {
                    return false;
                }
                self.holder_union(other) != self.holders
            }
        }
    }

    /// Both holder sets, sorted, without repeats, the [`MAX_HOLDERS`] smallest.
    fn holder_union(&self, other: &Self) -> Vec<I> {
        let mut union = self.holders.clone();
        union.extend(other.holders.iter().cloned());
        union.sort();
        union.dedup();
        union.truncate(MAX_HOLDERS);
        union
    }

    /// The order of merging: version, then holder-set epoch, then the tombstone flag.
    pub fn rank(&self) -> (Version, u32, bool) {
        (self.version, self.epoch, self.deleted)
    }

    /// Merges `other` (same name) into `self`; returns whether `self` changed. The higher
    /// [`rank`](Self::rank) wins; equal ranks take the larger size and the union of holders,
    /// keeping the [`MAX_HOLDERS`] smallest.
    pub fn merge(&mut self, other: &Self) -> bool {
        debug_assert_eq!(self.name, other.name);
        match other.rank().cmp(&self.rank()) {
            Ordering::Greater => {
                self.clone_from(other);
                true
            }
            Ordering::Less => false,
            Ordering::Equal => {
                let mut changed = false;
                if other.size > self.size {
                    self.size = other.size;
                    changed = true;
                }
                let union = self.holder_union(other);
                if union != self.holders {
                    self.holders = union;
                    changed = true;
                }
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(""), Err(TupleError::EmptyName));
        assert_eq!(check_name("a\0b"), Err(TupleError::NulInName));
        assert!(check_name("../../etc/passwd").is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert_eq!(
            check_name(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(TupleError::NameTooLong(MAX_NAME_BYTES + 1))
        );
    }
}
