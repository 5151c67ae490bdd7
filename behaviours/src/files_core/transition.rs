//! Names that change group when groups size themselves (`ALGORITHM.md`, "Files when groups
//! split and merge").
//!
//! A split sends about half of a group's names to the sibling group, whose members never
//! listed them; a merge brings the sibling's names and members together, so nothing moves.
//! The files core learns the structure with [`FilesCore::handle_structure`] and then:
//!
//! * **Immigration.** A name of the own group whose listed holders are all of other groups
//!   (a *foreign set*: its copies stayed where the name lived before the split) is fetched by
//!   the own group's member ranked first for the name among the live members and this node.
//!   That copy re-adds itself to the set, and the usual leader rules restore R copies in the
//!   own group. Once R live copies of the own group are listed, the foreign holders leave the
//!   set (a leader's publication): they are not dead, they are elsewhere.
//! * **Emigration.** A copy of a name of another group is kept, listed or not, and neither
//!   led nor repaired here. Each repair round the node asks the name's group for its newest
//!   tuple ([`Command::Confirm`], at most `max_repairs` at once). When that tuple lists R
//!   holders of the name's group besides this node, or a newer version, the name is
//!   forgotten here and its blob becomes garbage (deleted after `orphan_grace_ms`, only
//!   while settled). No copy goes before its new holders have theirs durably: a leader
//!   lists a holder only once its copy is confirmed.

use std::sync::Arc;

use crate::Millis;
use crate::id::{Grouping, NodeId};
use crate::tuple::FileTuple;

use super::FilesCore;
use super::limits::MAX_TRACKED_NAMES;
use super::output::{Command, Event};
use super::rank::leader;

/// The structure as the files core knows it: how groups are chosen and this node's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPlace {
    /// How groups are chosen now.
    pub grouping: Grouping,
    /// This node's group under it.
    pub group: u32,
}

impl GroupPlace {
    /// The group of a file name.
    pub fn group_of(&self, name: &str) -> u32 {
        self.grouping.name_facts(name).0
    }

    /// The number of groups.
    pub fn groups(&self) -> u32 {
        self.grouping.groups()
    }
}

impl<I: NodeId> FilesCore<I> {
    /// The structure now (each tick, before [`handle_view`](Self::handle_view)). Without it
    /// every name counts as the own group's (a fixed k, where names never move). Returns
    /// whether it changed: the driver then feeds the own group's tuples again
    /// ([`handle_tuple`](Self::handle_tuple)), since a set that was the group's own before
    /// may be foreign now.
    pub fn handle_structure(&mut self, now: Millis, grouping: Grouping, group: u32) -> bool {
        self.input(now);
        let place = GroupPlace { grouping, group };
        if self.place == Some(place) {
            return false;
        }
        self.place = Some(place);
        // Confirmations asked under the old structure may answer for the wrong group, and a
        // name that left may be the own group's again.
        self.confirming.clear();
        self.emigrated.clear();
        true
    }

    /// Whether `name` belongs to this node's group.
    pub fn is_own_name(&self, name: &str) -> bool {
        self.place
            .is_none_or(|p| p.grouping.name_facts(name).0 == p.group)
    }

    /// Whether `id` is of this node's group (by its id, not by the view: a member absent
    /// from the view for a moment is not foreign).
    pub(crate) fn is_own_member(&self, id: &I) -> bool {
        *id == self.me
            || self
                .place
                .is_none_or(|p| p.grouping.id_facts(id).group == p.group)
    }

    /// Whether `id` is of `name`'s group.
    fn is_of_group_of(&self, name: &str, id: &I) -> bool {
        self.place
            .is_none_or(|p| p.grouping.id_facts(id).group == p.grouping.name_facts(name).0)
    }

    /// A set of holders none of which is of the own group (nor this node).
    pub(crate) fn is_foreign_set(&self, tuple: &FileTuple<I>) -> bool {
        self.place.is_some()
            && !tuple.holders.is_empty()
            && tuple.holders.iter().all(|h| !self.is_own_member(h))
    }

    /// Whether `id` may be fetched from: live in the view, or of another group (the view
    /// says nothing of those; a failed fetch says it).
    pub(crate) fn is_fetch_source(&self, id: &I) -> bool {
        *id != self.me && (self.view.is_live(id) || !self.is_own_member(id))
    }

    /// Whether this node fetches the foreign set of `name`: ranked first among the live
    /// members of the own group and itself.
    pub(crate) fn leads_immigration(&self, name: &str) -> bool {
        let live = self.view.live().map(|m| &m.id);
        leader(name, live.chain(std::iter::once(&self.me))) == Some(&self.me)
    }

    /// Emigration: asks the name's group whether it holds R copies of its own.
    pub(crate) fn emigrate(&mut self, name: &Arc<str>) -> bool {
        let Some(tracked) = self.names.get(name) else {
            return false;
        };
        let tuple = tracked.tuple.clone();
        let have = self.blobs.contains_key(&tuple.version.blake3);
        if tuple.deleted || !have {
            // Nothing of ours to hand on: the name's group keeps its own record.
            self.forget(name);
            return false;
        }
        if self.confirming.contains(name) || self.confirming.len() >= self.config.max_repairs {
            return false;
        }
        if self.command(Command::Confirm { name: name.clone() }) {
            self.confirming.insert(name.clone());
            self.stats.confirms_started += 1;
        }
        false
    }

    /// The answer to [`Command::Confirm`]: the newest tuple of `name` its group knows, or
    /// none (not found, or the group could not be reached).
    pub fn handle_confirmed(&mut self, now: Millis, name: &str, found: Option<FileTuple<I>>) {
        self.input(now);
        let Some(key) = self.confirming.take(name) else {
            return;
        };
        if self.is_own_name(name) {
            return;
        }
        let Some(tracked) = self.names.get(name) else {
            return;
        };
        let Some(found) = found.filter(|t| *t.name == *name) else {
            return;
        };
        let ours = tracked.tuple.version;
        let newer = found.version > ours;
        let settled_there = found.version == ours
            && !found.deleted
            && found
                .holders
                .iter()
                .filter(|h| **h != self.me && self.is_of_group_of(name, h))
                .count()
                >= self.config.replication;
        if newer || settled_there {
            if self.emigrated.len() < MAX_TRACKED_NAMES {
                self.emigrated.insert(key.clone(), ours);
            }
            self.emit(Event::Emigrated {
                name: key,
                holders: found.holders.len(),
            });
            self.stats.names_emigrated += 1;
            self.forget(name);
        }
    }

    /// Whether `tuple` is of a name that moved to its new group at this version: the
    /// tuples the node still has (listing it, or naming its blob, until the transition
    /// ends) must not start the confirmation over each round.
    pub(crate) fn has_emigrated(&self, tuple: &FileTuple<I>) -> bool {
        !self.is_own_name(&tuple.name)
            && self
                .emigrated
                .get(&tuple.name)
                .is_some_and(|v| *v == tuple.version)
    }

    /// Stops tracking `name` (its blob is garbage unless something else names it).
    fn forget(&mut self, name: &str) {
        if let Some(tracked) = self.names.remove(name) {
            let dropped = usize::from(tracked.fetch.is_some()) + tracked.copying.len();
            self.in_flight = self.in_flight.saturating_sub(dropped);
        }
        self.kept.forget(name);
        self.confirming.remove(name);
    }
}
