//! Groups that size themselves (`groups = 0`): the node feeds its group's size to its
//! [`StructureState`](crate::structure::StructureState), hears the structures other nodes
//! send, and when its structure changes re-sorts what it knows under the new one.
//!
//! * A **split** (one level deeper): members whose group is now the sibling leave the view and
//!   become contacts of that group; the tuples of the sibling's names stay until the
//!   transition ends (lookups under the old structure still reach this node), then go.
//! * A **merge** (one level up): contacts of the sibling join the view (a relay may introduce a
//!   member), and a sync starts at once so the sibling's tuples arrive.
//! * Every contact is filed again under its group at the new level (two groups' contacts
//!   become one group's at a merge, the surplus is dropped as `Restructured`).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ContactRemoval, Event, Kelips, Source};
use crate::Millis;
use crate::contacts::Offered;
use crate::id::Grouping;
use crate::id::NodeId;
use crate::message::StructureNote;
use crate::message::{Message, SyncPush};
use crate::structure::{Change, Structure};

/// Estimates heard above this are clamped (a hostile or broken peer cannot push every
/// estimate towards infinity): 2^40 nodes.
const MAX_HEARD_ESTIMATE: u64 = 1 << 40;

impl<I: NodeId> Kelips<I> {
    /// A structure note on a message from a peer of this network.
    pub(super) fn hear_structure(&mut self, now: Millis, note: StructureNote) {
        let joined = self.is_joined();
        let Some(state) = self.structure.as_mut() else {
            return;
        };
        let heard = Structure {
            epoch: note.epoch,
            level: note.level,
        };
        let estimate = (note.estimate > 0).then_some(note.estimate.min(MAX_HEARD_ESTIMATE));
        // A node that has not joined takes the structure of the network it joins, however far
        // from its own (it starts at one group and knows nothing yet).
        let change = state.heard(now, heard, estimate, joined);
        if let Some(change) = change {
            self.restructure(now, change);
        }
    }

    /// Whether `id` is in the sibling of this node's group (the other half of the group one
    /// level up), in a network whose groups size themselves.
    pub(super) fn is_sibling(&self, id: &I) -> bool {
        match self.grouping() {
            Grouping::Prefix(level) if level > 0 => {
                let parent = Grouping::Prefix(level - 1);
                parent.id_facts(id).group == parent.id_facts(&self.me.id).group
            }
            _ => false,
        }
    }

    /// One ration of the tuples that left the group at a split, pushed to a contact of the
    /// sibling group (which may lack those announced just before the split).
    fn hand_over(&mut self) {
        if self.handover.is_empty() {
            return;
        }
        let sibling = self.facts.group ^ 1;
        let contacts = self.contacts.of_group(sibling);
        if contacts.is_empty() {
            return;
        }
        let pick = rand::Rng::random_range(&mut self.rng, 0..contacts.len());
        let to = contacts[pick].entry.id.clone();
        let count = self.config.sync_ration.min(self.handover.len());
        let tuples: Vec<Arc<_>> = self.handover.drain(..count).collect();
        self.send(to, Message::SyncPush(SyncPush { tuples }));
    }

    /// Once per gossip round: the own group's live size into the rule (joined nodes only).
    pub(super) fn observe_structure(&mut self, now: Millis) {
        self.hand_over();
        if let Some(at) = self.trim_tuples_at
            && now >= at
            && self.handover.is_empty()
        {
            self.trim_tuples_at = None;
            let grouping = self.grouping();
            let own = self.facts.group;
            self.tuples
                .retain_fingerprints(|fp| grouping.group_of_fingerprint(fp) == Some(own));
        }
        if !self.is_joined() {
            return;
        }
        let live = self.view.live().count() as u64 + 1;
        let Some(change) = self.structure.as_mut().and_then(|s| s.observe(now, live)) else {
            return;
        };
        self.restructure(now, change);
    }

    /// Re-sorts the view, the contacts and (at the transition's end) the tuples under the
    /// structure just adopted.
    fn restructure(&mut self, now: Millis, change: Change) {
        let grouping = self.grouping();
        self.facts = grouping.id_facts(&self.me.id);
        let own = self.facts.group;
        let t_contact = self.t_contact();
        // Members of the sibling group (a split) leave the view.
        let leaving: Vec<I> = self
            .view
            .iter()
            .filter(|m| grouping.id_facts(&m.entry.id).group != own)
            .map(|m| m.entry.id.clone())
            .collect();
        let mut candidates = Vec::new();
        for id in leaving {
            if let Some(member) = self.view.remove(&id) {
                self.emit(Event::MemberRemoved(id));
                if !member.failed {
                    candidates.push((member.entry, member.rtt_us, true));
                }
            }
        }
        // Every contact is filed again; those of the own group now (a merge) join the view.
        let drained = self.contacts.drain();
        let previous: BTreeSet<I> = drained.iter().map(|c| c.entry.id.clone()).collect();
        for contact in drained {
            let fresh = !contact.is_stale(now, t_contact);
            candidates.push((contact.entry, contact.rtt_us, fresh));
        }
        for (entry, rtt, fresh) in candidates {
            let facts = grouping.id_facts(&entry.id);
            if facts.group == own {
                self.learn(now, &entry, Source::Relay);
                continue;
            }
            let offered =
                self.contacts
                    .offer(&entry, facts.group, facts.short, now, fresh, rtt, t_contact);
            if matches!(offered, Offered::Added { .. }) && !previous.contains(&entry.id) {
                self.emit(Event::ContactAdded {
                    group: facts.group,
                    id: entry.id.clone(),
                });
            }
        }
        for id in previous {
            if self.contacts.group_of(&id).is_none() && self.view.get(&id).is_none() {
                self.emit(Event::ContactRemoved {
                    group: grouping.id_facts(&id).group,
                    id,
                    reason: ContactRemoval::Restructured,
                });
            }
        }
        if change.to.level > change.from.level {
            self.trim_tuples_at = Some(now.saturating_add(self.config.structure_transition_ms));
            self.handover = self
                .tuples
                .iter()
                .filter(|t| grouping.name_facts(&t.name).0 != own)
                .cloned()
                .collect();
        } else {
            // The sibling's tuples: sync with a member now rather than at the next period.
            self.trim_tuples_at = None;
            self.handover.clear();
            self.start_sync(None);
        }
        self.emit(Event::StructureChanged(change));
    }
}
