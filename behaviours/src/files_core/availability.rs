//! What a lookup or a listing may say about a name (hazard (e) of issue 14).
//!
//! * No tuple: **not found**. A tombstone: **deleted** (the user sees "not found").
//! * The holders that may have a copy are the listed ones minus those known to lack the bytes
//!   (they said so, sent corrupt bytes, or are this node without a copy). None left: the
//!   file is **lost**, and is listed with no holders.
//! * Some of them live (this node counts as live): **available** from those.
//! * None of them live: **unavailable** — the bytes may sit on those nodes' disks, so the
//!   answer is never "not found".

use crate::id::NodeId;
use crate::tuple::FileTuple;

use super::FilesCore;

/// The answer for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability<I> {
    /// No tuple is known.
    NotFound,
    /// The newest version is a tombstone.
    Deleted,
    /// Every listed holder is known to lack the bytes.
    Lost,
    /// Holders that may have a copy exist, but none is live.
    Unavailable {
        /// The holders (down).
        holders: Vec<I>,
    },
    /// Live holders that may have a copy.
    Available {
        /// Them, in the tuple's order.
        holders: Vec<I>,
    },
}

impl<I: NodeId> FilesCore<I> {
    /// The holders of `tuple` that may have a copy: listed, not known to lack the bytes
    /// (what `ls` shows as holders and copies).
    pub fn listed_holders(&self, tuple: &FileTuple<I>) -> Vec<I> {
        let knowledge = self
            .names
            .get(&tuple.name)
            .map(|t| &t.knowledge)
            .filter(|k| k.version == tuple.version);
        tuple
            .holders
            .iter()
            .filter(|h| {
                if **h == self.me {
                    return self.blobs.contains_key(&tuple.version.blake3);
                }
                knowledge.is_none_or(|k| !k.missing.contains(*h))
            })
            .cloned()
            .collect()
    }

    /// The answer for a name whose newest known tuple is `tuple`.
    pub fn availability(&self, tuple: Option<&FileTuple<I>>) -> Availability<I> {
        let Some(tuple) = tuple else {
            return Availability::NotFound;
        };
        if tuple.deleted {
            return Availability::Deleted;
        }
        let holders = self.listed_holders(tuple);
        if holders.is_empty() {
            return Availability::Lost;
        }
        let live: Vec<I> = holders
            .iter()
            .filter(|h| self.is_live(h))
            .cloned()
            .collect();
        if live.is_empty() {
            Availability::Unavailable { holders }
        } else {
            Availability::Available { holders: live }
        }
    }
}
