//! Garbage: blobs on disk that nothing names.
//!
//! A blob is *named* when it is the current version of a tracked name that lists this node,
//! a kept older version, the bytes of a put in progress or of a fetch in flight. Any other
//! blob is an orphan (a failed put, a trimmed copy, a superseded or deleted version) and is
//! deleted once it stayed unnamed for `orphan_grace_ms` — and only by a settled node, and,
//! when it is the current version of a name that no longer lists this node, only while that
//! name's listed live holders (others than this node) reach the target. A copy dropped from
//! a set by mistake is thus never the one deleted.

use std::collections::BTreeMap;

use crate::Millis;

use super::output::Hash;

/// When each unnamed blob was first seen unnamed.
#[derive(Debug, Clone, Default)]
pub struct Orphans {
    since: BTreeMap<Hash, Millis>,
}

impl Orphans {
    /// Forgets `hash` (it is named again, or gone).
    pub fn named(&mut self, hash: &Hash) {
        self.since.remove(hash);
    }

    /// Notes that `hash` is unnamed at `now`; returns whether it has been for `grace`.
    pub fn unnamed(&mut self, hash: Hash, now: Millis, grace: Millis) -> bool {
        let since = *self.since.entry(hash).or_insert(now);
        now.saturating_sub(since) >= grace
    }

    /// Keeps only the blobs `keep` says are still on disk.
    pub fn retain(&mut self, keep: impl Fn(&Hash) -> bool) {
        self.since.retain(|hash, _| keep(hash));
    }
}
