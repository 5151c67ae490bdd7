//! Holder knowledge and the holder-set rules.
//!
//! Tuples replace a holder set wholesale under a higher epoch, so one bad set (a restarted
//! node publishing itself alone) used to hide every other copy. The files core therefore
//! keeps, per name and version, every holder it has seen listed under any epoch (`known`),
//! and the holders known to lack the bytes (`missing`). A new set replaces the known ones
//! only when it lists at least `target` live holders (a trim or a completed repair);
//! otherwise it is merged in. A leader's next set ([`plan`]) keeps every known copy that it
//! has no evidence against, and [`keeps_copies`] checks, before anything is published, that
//! the set never lists fewer holders than the copies known to exist (up to R).

use std::collections::BTreeSet;

use crate::id::NodeId;
use crate::limits::MAX_HOLDERS;
use crate::tuple::{FileTuple, Version};

use super::rank::by_rank;

/// What this node knows of the copies of one version of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderKnowledge<I> {
    /// The version.
    pub version: Version,
    /// Holders seen listed under any epoch of this version, or that confirmed a copy.
    pub known: BTreeSet<I>,
    /// Holders known to lack the bytes (they said so, sent corrupt bytes, or are this node
    /// without a copy).
    pub missing: BTreeSet<I>,
}

impl<I: NodeId> HolderKnowledge<I> {
    /// Knowledge from a first tuple.
    pub fn new(tuple: &FileTuple<I>) -> Self {
        Self {
            version: tuple.version,
            known: tuple.holders.iter().cloned().collect(),
            missing: BTreeSet::new(),
        }
    }

    /// Takes in `tuple` (the newest of its name). A new version starts afresh; within one
    /// version the holders are merged in, unless `replaces` (the set lists at least `target`
    /// live holders: a trim or a completed repair), which replaces them.
    pub fn observe(&mut self, tuple: &FileTuple<I>, replaces: bool) {
        if tuple.version != self.version {
            *self = Self::new(tuple);
            return;
        }
        if replaces {
            self.known = tuple.holders.iter().cloned().collect();
        } else {
            self.known.extend(tuple.holders.iter().cloned());
        }
    }

    /// `id` stored the bytes (a copy was confirmed).
    pub fn copy_made(&mut self, id: &I) {
        self.known.insert(id.clone());
        self.missing.remove(id);
    }

    /// `id` lacks the bytes.
    pub fn copy_missing(&mut self, id: &I) {
        self.missing.insert(id.clone());
    }

    /// Known holders not known to lack the bytes.
    pub fn copies(&self) -> impl Iterator<Item = &I> {
        self.known.iter().filter(|id| !self.missing.contains(*id))
    }
}

/// A leader's decision for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<I> {
    /// The holder set to list (sorted).
    pub next: Vec<I>,
    /// Copies to make (beyond those in flight) to reach the target.
    pub copies_needed: usize,
    /// Copies this node has no evidence against (listed or known, not missing, not dead).
    pub alive: Vec<I>,
    /// Whether `next` trims live copies beyond the target.
    pub trims: bool,
}

/// The leader's next holder set: every copy not known missing and not evidenced dead
/// (`is_dead`) is kept — a holder merely absent or failed in an unsettled view stays listed —
/// and when more than `target` of them are live, the `target` ranked highest for the name are
/// kept (a trim). At most [`MAX_HOLDERS`] are listed, live ones first.
pub fn plan<I: NodeId>(
    name: &str,
    knowledge: &HolderKnowledge<I>,
    listed: &[I],
    target: usize,
    is_live: impl Fn(&I) -> bool,
    is_dead: impl Fn(&I) -> bool,
) -> Plan<I> {
    let mut candidates: BTreeSet<I> = knowledge.known.clone();
    candidates.extend(listed.iter().cloned());
    let alive: Vec<I> = candidates
        .into_iter()
        .filter(|id| !knowledge.missing.contains(id) && !is_dead(id))
        .collect();
    let live: Vec<I> = alive.iter().filter(|id| is_live(id)).cloned().collect();
    let copies_needed = target.saturating_sub(live.len());
    let trims = live.len() > target;
    let mut next = if trims {
        by_rank(name, live)
            .into_iter()
            .take(target)
            .collect::<Vec<_>>()
    } else {
        let (mut first, rest): (Vec<I>, Vec<I>) = alive.iter().cloned().partition(|id| is_live(id));
        first = by_rank(name, first);
        first.extend(by_rank(name, rest));
        first.truncate(MAX_HOLDERS);
        first
    };
    next.sort();
    Plan {
        next,
        copies_needed,
        alive,
        trims,
    }
}

/// Rule (c): a set may be published only if it lists at least min(R, copies known to
/// exist) holders, and drops a copy not evidenced dead only to trim down to R live ones.
pub fn keeps_copies<I: NodeId>(
    next: &[I],
    alive: &[I],
    replication: usize,
    is_live: impl Fn(&I) -> bool,
) -> bool {
    if next.len() < replication.min(alive.len()) {
        return false;
    }
    let dropped = alive.iter().any(|id| !next.contains(id));
    if !dropped {
        return true;
    }
    // Only a trim (or the MAX_HOLDERS cap) drops a possible copy: R live ones must remain.
    next.iter().filter(|id| is_live(id)).count() >= replication.min(MAX_HOLDERS)
}
