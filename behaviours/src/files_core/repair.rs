//! Keeping R copies: every `repair_period_ms` a node looks at the names it tracks.
//!
//! * **Fetch.** A listed holder without the bytes (its copy was corrupt, or never made)
//!   fetches them from the other live listed holders, one at a time; a holder that answers
//!   "not found" or sends corrupt bytes is known missing. When every other listed holder is
//!   known missing, the version is lost (`CopiesLost`).
//! * **Leader.** The live listed holder with a copy ranked first by
//!   [`rank`](super::rank::rank) leads the name. Only a *settled* leader acts: it restores
//!   `target` = min(R, live members) live copies (placing new ones with power of two
//!   choices), or trims to the `target` highest ranked live copies, and publishes the exact
//!   new set under the next epoch — never fewer holders than the copies known to exist
//!   ([`holders`](super::holders)). Holders with no evidence of death stay listed.
//! * **Re-add.** A node with an intact copy of the current version that the set does not
//!   list, while fewer than `target` live holders are listed, adds itself back at the same
//!   epoch (holder sets of equal rank merge by union). A set shrunk by mistake heals so.
//! * **Garbage** ([`orphans`](super::orphans)) and **versions**
//!   ([`versions`](super::versions)) are kept up in the same round.
//!
//! At most `max_repairs` copies and fetches are in flight; names with the fewest live copies
//! are served first, and round-robin among equals.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::Millis;
use crate::id::NodeId;
use crate::limits::MAX_HOLDERS;
use crate::tuple::FileTuple;

use super::holders::{keeps_copies, plan};
use super::output::{Command, CopyPurpose, Event, Hash};
use super::placement::place;
use super::rank::leader;
use super::versions::KeptVersion;
use super::{Fetch, FilesCore};

/// Why a fetch from a holder failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// The holder answered that it does not have the bytes.
    Missing,
    /// The bytes did not match the BLAKE3 hash.
    Corrupt,
    /// The holder could not be reached (says nothing about its copy).
    Unreachable,
}

impl<I: NodeId> FilesCore<I> {
    /// One repair round at `now`.
    pub(crate) fn repair_round(&mut self, now: Millis) {
        self.keep_versions();
        self.collect_garbage(now);
        if self.stopping || !self.health.is_joined() {
            // (a) A node that has not joined (a restart) neither repairs nor publishes.
            return;
        }
        let mut names: Vec<Arc<str>> = self.names.keys().cloned().collect();
        if let Some(cursor) = &self.cursor {
            let start = names.partition_point(|n| n <= cursor);
            names.rotate_left(start);
        }
        // Fewest live copies first: with `max_repairs` slots, a name down to its last copy
        // must not wait behind names down to two (the sort is stable: round-robin within).
        names.sort_by_cached_key(|name| self.live_copies(name));
        for name in names {
            if self.in_flight >= self.config.max_repairs {
                break;
            }
            if self.repair_name(now, &name) {
                self.cursor = Some(name);
            }
        }
        for tracked in self.names.values_mut() {
            tracked.copy_failed.clear();
        }
    }

    /// Live listed holders of `name` not known to lack the bytes, at most `target`
    /// (names with enough copies all rank alike).
    pub(crate) fn live_copies(&self, name: &str) -> usize {
        let Some(tracked) = self.names.get(name) else {
            return usize::MAX;
        };
        tracked
            .tuple
            .holders
            .iter()
            .filter(|h| self.is_live(h) && !tracked.knowledge.missing.contains(*h))
            .take(self.target())
            .count()
    }

    /// Looks at one name; returns whether it started a transfer.
    fn repair_name(&mut self, now: Millis, name: &Arc<str>) -> bool {
        let Some(tracked) = self.names.get(name) else {
            return false;
        };
        let tuple = tracked.tuple.clone();
        if tuple.deleted {
            return false;
        }
        if !self.is_own_name(name) {
            // The name left this group (a split): its new group takes it over.
            return self.emigrate(name);
        }
        let hash = tuple.version.blake3;
        let have = self.blobs.contains_key(&hash);
        if !tuple.holders.contains(&self.me) {
            if have {
                self.readd(now, name);
            } else if self.is_foreign_set(&tuple) && self.leads_immigration(name) {
                // Its copies are all in the group it left: fetch one here.
                return self.fetch_next(now, name);
            }
            return false;
        }
        if !have {
            return self.fetch_next(now, name);
        }
        self.lead(now, name)
    }

    /// Re-add: a copy not listed while the set lists too few live holders.
    fn readd(&mut self, _now: Millis, name: &Arc<str>) {
        let target = self.target();
        let Some(tracked) = self.names.get(name) else {
            return;
        };
        let tuple = &tracked.tuple;
        let live_listed = tuple
            .holders
            .iter()
            .filter(|h| self.view.is_live(h) && !tracked.knowledge.missing.contains(*h))
            .count();
        if live_listed >= target || tuple.holders.len() >= MAX_HOLDERS {
            return;
        }
        let before = tuple.holders.len();
        let mut next = FileTuple::clone(tuple);
        next.holders.push(self.me.clone());
        next.holders.sort();
        let me = self.me.clone();
        if let Some(tracked) = self.names.get_mut(name) {
            tracked.knowledge.copy_made(&me);
        }
        self.stats.holder_sets_published += 1;
        self.emit(Event::HolderSetPublished {
            name: name.clone(),
            before,
            after: before + 1,
        });
        self.publish(next);
    }

    /// Fetches the missing bytes from the next live listed holder not tried yet.
    fn fetch_next(&mut self, _now: Millis, name: &Arc<str>) -> bool {
        let Some(tracked) = self.names.get(name) else {
            return false;
        };
        if tracked.fetch.is_some() {
            return false;
        }
        let tuple = tracked.tuple.clone();
        let others: Vec<I> = tuple
            .holders
            .iter()
            .filter(|h| **h != self.me)
            .cloned()
            .collect();
        let tried: BTreeSet<I> = BTreeSet::new();
        let next = others
            .iter()
            .find(|h| self.is_fetch_source(h) && !tracked.knowledge.missing.contains(*h))
            .cloned();
        match next {
            Some(from) => {
                if self.command(Command::FetchFrom {
                    tuple,
                    from: from.clone(),
                }) {
                    let tracked = self.names.get_mut(name).expect("present");
                    let mut tried = tried;
                    tried.insert(from.clone());
                    tracked.fetch = Some(Fetch { from, tried });
                    self.in_flight += 1;
                    self.stats.fetches_started += 1;
                    return true;
                }
                false
            }
            None => {
                self.check_lost(name);
                false
            }
        }
    }

    /// Reports a version whose every listed holder is known to lack the bytes.
    fn check_lost(&mut self, name: &Arc<str>) {
        let me = self.me.clone();
        let have_own = |hash: &Hash| self.blobs.contains_key(hash);
        let Some(tracked) = self.names.get(name) else {
            return;
        };
        let lost = !have_own(&tracked.tuple.version.blake3)
            && tracked
                .tuple
                .holders
                .iter()
                .all(|h| *h == me || tracked.knowledge.missing.contains(h));
        if lost && !tracked.lost_reported {
            let version = tracked.tuple.version;
            let tracked = self.names.get_mut(name).expect("present");
            tracked.lost_reported = true;
            tracked.knowledge.copy_missing(&me);
            self.emit(Event::CopiesLost {
                name: name.clone(),
                version,
            });
        }
    }

    /// The leader's part: restore, trim, publish.
    fn lead(&mut self, now: Millis, name: &Arc<str>) -> bool {
        let target = self.target();
        let Some(tracked) = self.names.get(name) else {
            return false;
        };
        let tuple = tracked.tuple.clone();
        let candidates: Vec<&I> = tuple
            .holders
            .iter()
            .filter(|h| self.is_live(h) && !tracked.knowledge.missing.contains(*h))
            .collect();
        if leader(&tuple.name, candidates) != Some(&self.me) {
            return false;
        }
        let settled = self.is_settled(now);
        let mut decision = plan(
            &tuple.name,
            &tracked.knowledge,
            &tuple.holders,
            target,
            |id| self.is_live(id),
            |id| self.is_dead(now, id),
        );
        if decision.next.iter().filter(|h| self.is_live(h)).count() >= target {
            // Holders of other groups (the name came here in a split) leave the set once the
            // own group lists enough live copies: they are not dead, they are elsewhere.
            decision.next.retain(|h| self.is_own_member(h));
        }
        let in_flight = tracked.copying.len();
        if !settled {
            // (b) Local health before acting: nothing that could shrink, trim or copy on
            // the word of a stale view.
            let shrinks = tuple.holders.iter().any(|h| !decision.next.contains(h));
            if shrinks || decision.copies_needed > 0 {
                self.stats.shrinks_deferred += 1;
                self.emit(Event::ShrinkDeferred { name: name.clone() });
            }
            return false;
        }
        let mut started = false;
        if decision.copies_needed > in_flight {
            let mut exclude: Vec<I> = decision.alive.clone();
            exclude.extend(tuple.holders.iter().cloned());
            exclude.extend(tracked.copying.iter().cloned());
            exclude.extend(tracked.copy_failed.iter().cloned());
            let room = self.config.max_repairs.saturating_sub(self.in_flight);
            let want = (decision.copies_needed - in_flight).min(room);
            let picked = place(
                &mut self.rng,
                &self.me,
                self.own_free,
                &self.view,
                tuple.size,
                &exclude,
                want,
            );
            for to in picked {
                if self.command(Command::CopyTo {
                    tuple: tuple.clone(),
                    to: to.clone(),
                    purpose: CopyPurpose::Repair,
                }) {
                    self.in_flight += 1;
                    self.stats.copies_started += 1;
                    started = true;
                    if let Some(tracked) = self.names.get_mut(name) {
                        tracked.copying.insert(to);
                    }
                }
            }
        }
        let copying = self.names.get(name).is_some_and(|t| !t.copying.is_empty());
        if copying || decision.next == tuple.holders {
            // Publish once the copies in flight are done: one epoch per repair.
            return started;
        }
        if !keeps_copies(
            &decision.next,
            &decision.alive,
            self.config.replication,
            |id| self.is_live(id),
        ) {
            self.stats.shrinks_refused += 1;
            return started;
        }
        let before = tuple.holders.len();
        let after = decision.next.len();
        let next = FileTuple {
            holders: decision.next,
            epoch: tuple.epoch + 1,
            ..FileTuple::clone(&tuple)
        };
        self.stats.holder_sets_published += 1;
        self.emit(Event::HolderSetPublished {
            name: name.clone(),
            before,
            after,
        });
        self.publish(next);
        started
    }

    /// A copy (repair, hand-off or put replacement) of `name` to `to` is durable there.
    pub fn handle_copy_done(&mut self, now: Millis, name: &str, to: I, purpose: CopyPurpose) {
        self.input(now);
        match purpose {
            CopyPurpose::Put(put) => self.put_copy_done(now, put, to),
            CopyPurpose::Repair | CopyPurpose::HandOff => {
                let Some(tracked) = self.names.get_mut(name) else {
                    return;
                };
                if tracked.copying.remove(&to) {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                tracked.knowledge.copy_made(&to);
                let name = tracked.tuple.name.clone();
                if purpose == CopyPurpose::HandOff {
                    self.finish_hand_off(now, &name, to);
                } else {
                    self.lead(now, &name);
                }
            }
        }
    }

    /// A copy of `name` to `to` failed.
    pub fn handle_copy_failed(&mut self, now: Millis, name: &str, to: I, purpose: CopyPurpose) {
        self.input(now);
        match purpose {
            CopyPurpose::Put(put) => self.put_copy_failed(now, put, to),
            CopyPurpose::Repair | CopyPurpose::HandOff => {
                if let Some(tracked) = self.names.get_mut(name)
                    && tracked.copying.remove(&to)
                {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    tracked.copy_failed.insert(to);
                    if purpose == CopyPurpose::HandOff {
                        self.retry_hand_off(now, name);
                    }
                }
            }
        }
    }

    /// The bytes of `name` were fetched from `from` and stored intact here.
    pub fn handle_fetch_done(&mut self, now: Millis, name: &str, from: I) {
        self.input(now);
        let me = self.me.clone();
        let Some(tracked) = self.names.get_mut(name) else {
            return;
        };
        if tracked.fetch.take().is_some() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        tracked.knowledge.copy_made(&from);
        tracked.knowledge.copy_made(&me);
        let (hash, size) = (tracked.tuple.version.blake3, tracked.tuple.size);
        self.blobs.insert(hash, size);
    }

    /// Fetching `name` from `from` failed; the next live holder is tried at once.
    pub fn handle_fetch_failed(&mut self, now: Millis, name: &str, from: I, why: FetchFailure) {
        self.input(now);
        let Some(tracked) = self.names.get_mut(name) else {
            return;
        };
        if matches!(why, FetchFailure::Missing | FetchFailure::Corrupt) {
            tracked.knowledge.copy_missing(&from);
        }
        let Some(mut fetch) = tracked.fetch.take() else {
            return;
        };
        fetch.tried.insert(from);
        let tuple = tracked.tuple.clone();
        let missing = tracked.knowledge.missing.clone();
        self.in_flight = self.in_flight.saturating_sub(1);
        let next = tuple
            .holders
            .iter()
            .find(|h| !fetch.tried.contains(*h) && self.is_fetch_source(h) && !missing.contains(*h))
            .cloned();
        let name: Arc<str> = tuple.name.clone();
        match next {
            Some(from) if self.in_flight < self.config.max_repairs => {
                if self.command(Command::FetchFrom {
                    tuple,
                    from: from.clone(),
                }) {
                    fetch.tried.insert(from.clone());
                    fetch.from = from;
                    self.in_flight += 1;
                    self.stats.fetches_started += 1;
                    if let Some(tracked) = self.names.get_mut(&name) {
                        tracked.fetch = Some(fetch);
                    }
                }
            }
            Some(_) => {}
            None => self.check_lost(&name),
        }
    }

    /// Versions kept for `get --version`: record held versions, prune old ones, forget
    /// deleted names.
    fn keep_versions(&mut self) {
        for name in self.kept.names() {
            let Some(tracked) = self.names.get(&name) else {
                continue;
            };
            let tuple = &tracked.tuple;
            if tuple.deleted {
                self.kept.forget(&name);
                continue;
            }
            self.kept.prune(&name, tuple.version.lamport);
            if !tuple.holders.contains(&self.me) {
                self.kept.forget_version(&name, tuple.version.lamport);
            }
        }
        for tracked in self.names.values() {
            let tuple = &tracked.tuple;
            if !tuple.deleted && tuple.holders.contains(&self.me) {
                self.kept.record(
                    &tuple.name,
                    KeptVersion {
                        lamport: tuple.version.lamport,
                        blake3: tuple.version.blake3,
                        size: tuple.size,
                    },
                );
            }
        }
    }

    /// Deletes blobs unnamed for `orphan_grace_ms`, only while settled.
    fn collect_garbage(&mut self, now: Millis) {
        let target = self.target();
        let mut named: BTreeSet<Hash> = self.kept.hashes();
        named.extend(self.put_hashes());
        // Current versions not listing this node: deletable only with enough live holders.
        let mut unlisted_current: BTreeSet<Hash> = BTreeSet::new();
        for tracked in self.names.values() {
            let tuple = &tracked.tuple;
            if tuple.deleted {
                continue;
            }
            let hash = tuple.version.blake3;
            if tuple.holders.contains(&self.me) || tracked.fetch.is_some() {
                named.insert(hash);
                continue;
            }
            let live_listed = tuple
                .holders
                .iter()
                .filter(|h| self.view.is_live(h) && !tracked.knowledge.missing.contains(*h))
                .count();
            if live_listed < target {
                unlisted_current.insert(hash);
            }
        }
        let settled = self.is_settled(now);
        let grace = self.config.orphan_grace_ms;
        let stored: Vec<Hash> = self.blobs.keys().copied().collect();
        self.orphans.retain(|h| self.blobs.contains_key(h));
        for hash in stored {
            if named.contains(&hash) {
                self.orphans.named(&hash);
                continue;
            }
            if !self.orphans.unnamed(hash, now, grace) {
                continue;
            }
            if !settled || unlisted_current.contains(&hash) {
                // (b) No deletion on a stale view; never the copy a too-small set lacks.
                self.stats.shrinks_deferred += u64::from(!settled);
                continue;
            }
            if self.command(Command::Delete { hash }) {
                self.blobs.remove(&hash);
                self.orphans.named(&hash);
                self.stats.blobs_deleted += 1;
            }
        }
    }
}
