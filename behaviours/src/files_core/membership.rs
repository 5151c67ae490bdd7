//! The own group as the files core sees it: a snapshot of the Kelips view each tick, and the
//! members whose death this node has evidence of.
//!
//! Evidence of death is asked for only by a settled node (see [`health`](super::health)):
//! a member the view marks failed, or one that left the view after it was seen failed while
//! this node was settled, or — once the node has been settled for `absent_after_ms` — one
//! that is simply absent (a live member would have been learned by then). A member absent
//! from a view that has just been rebuilt (a restart) is *unknown*, not dead.

use std::collections::{BTreeMap, VecDeque};

use crate::Millis;
use crate::id::NodeId;

use super::limits::{MAX_DEAD_REMEMBERED, MAX_VIEW_MEMBERS};

/// One member of the own group, from the Kelips view (`GroupView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState<I> {
    /// Who.
    pub id: I,
    /// Not marked failed (its stamp rose within `t_fail`).
    pub live: bool,
    /// Local time its stamp last rose (`Member::last_increase`), in ms.
    pub last_heard: Millis,
    /// Free storage it reports, in bytes.
    pub free_space: u64,
}

impl<I: Clone> MemberState<I> {
    /// A member of the Kelips view as the files core takes it: live unless failed, heard
    /// when its stamp last rose, with the free space it gossips.
    pub fn of(member: &crate::view::Member<I>) -> Self {
        MemberState {
            id: member.entry.id.clone(),
            live: !member.failed,
            last_heard: member.last_increase,
            free_space: member.entry.free_space,
        }
    }
}

/// The view snapshot and the death evidence.
#[derive(Debug, Clone)]
pub struct Membership<I> {
    members: BTreeMap<I, MemberState<I>>,
    dead: BTreeMap<I, Millis>,
    dead_order: VecDeque<I>,
}

impl<I> Default for Membership<I> {
    fn default() -> Self {
        Self {
            members: BTreeMap::new(),
            dead: BTreeMap::new(),
            dead_order: VecDeque::new(),
        }
    }
}

impl<I: NodeId> Membership<I> {
    /// Replaces the snapshot (at most [`MAX_VIEW_MEMBERS`] members). A member that left it
    /// after being seen failed is remembered as dead when `settled`; one that is live again
    /// is forgotten as dead.
    pub fn update(&mut self, now: Millis, snapshot: Vec<MemberState<I>>, settled: bool) {
        let mut next: BTreeMap<I, MemberState<I>> = BTreeMap::new();
        for member in snapshot.into_iter().take(MAX_VIEW_MEMBERS) {
            next.insert(member.id.clone(), member);
        }
        let before = std::mem::take(&mut self.members);
        for (id, old) in before {
            if !next.contains_key(&id) && !old.live && settled {
                self.remember_dead(id, now);
            }
        }
        for member in next.values() {
            if member.live {
                self.dead.remove(&member.id);
            }
        }
        self.members = next;
    }

    fn remember_dead(&mut self, id: I, now: Millis) {
        if self.dead.insert(id.clone(), now).is_none() {
            self.dead_order.push_back(id);
        }
        while self.dead.len() > MAX_DEAD_REMEMBERED {
            match self.dead_order.pop_front() {
                Some(oldest) => {
                    self.dead.remove(&oldest);
                }
                None => break,
            }
        }
        self.dead_order.retain(|id| self.dead.contains_key(id));
    }

    /// Live members (not this node).
    pub fn live(&self) -> impl Iterator<Item = &MemberState<I>> {
        self.members.values().filter(|m| m.live)
    }

    /// Members in the snapshot, live or failed.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the snapshot is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `id` is in the snapshot and live.
    pub fn is_live(&self, id: &I) -> bool {
        self.members.get(id).is_some_and(|m| m.live)
    }

    /// The latest time any member's stamp rose.
    pub fn last_heard(&self) -> Option<Millis> {
        self.members.values().map(|m| m.last_heard).max()
    }

    /// Whether this node has evidence that `id` died. Never without `settled`; an absent
    /// member counts only with `absent_is_dead`.
    pub fn is_dead(&self, id: &I, settled: bool, absent_is_dead: bool) -> bool {
        if !settled {
            return false;
        }
        match self.members.get(id) {
            Some(member) => !member.live,
            None => self.dead.contains_key(id) || absent_is_dead,
        }
    }
}
