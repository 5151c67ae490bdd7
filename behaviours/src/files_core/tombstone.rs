//! Deleting a name: a tombstone is a version like any other — Lamport counter one above the
//! current version's, no bytes (size 0, hash of zeros), this node as its holder — so it
//! outranks every copy of older versions wherever it meets them. Once a node tracks the
//! tombstone, the name is no longer held: its kept versions are forgotten and its blobs are
//! garbage, deleted after the orphan grace period (by a settled node). A put racing the
//! delete with a higher counter wins, as any newer version does.

use crate::Millis;
use crate::id::NodeId;
use crate::tuple::{FileTuple, TupleError, Version};

use super::FilesCore;

/// Why a name could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// The newest version is already a tombstone.
    #[error("already deleted")]
    AlreadyDeleted,
    /// A bad name.
    #[error(transparent)]
    Tuple(#[from] TupleError),
}

impl<I: NodeId> FilesCore<I> {
    /// Deletes the name whose newest version is `current` (from a lookup): publishes and
    /// returns the tombstone.
    pub fn delete(
        &mut self,
        now: Millis,
        current: &FileTuple<I>,
    ) -> Result<FileTuple<I>, DeleteError> {
        self.input(now);
        if current.deleted {
            return Err(DeleteError::AlreadyDeleted);
        }
        let tombstone = FileTuple {
            name: current.name.clone(),
            version: Version {
                lamport: current.version.lamport + 1,
                blake3: [0; 32],
            },
            size: 0,
            holders: vec![self.me.clone()],
            epoch: 0,
            deleted: true,
            auth: None,
        }
        .normalize()?;
        // Track it even when this node held nothing of the name (it is the tombstone's
        // holder).
        self.publish(tombstone.clone());
        Ok(tombstone)
    }
}
