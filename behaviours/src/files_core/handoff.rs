//! Hand-off at a clean stop: before exiting, a node copies each name it holds to another
//! member (placed like a repair copy, excluding every known holder; names with the fewest
//! live copies first, then the smallest) and, once that copy is
//! durable, publishes the set without itself and with the new holder under the next epoch.
//! The count of copies never drops: the set loses this node only after gaining the new one,
//! and every other holder stays listed. The driver keeps gossiping a few periods after the
//! last `HandedOff` so the sets spread. A stopping node starts no more repairs. A hand-off
//! copy that fails (the member went too, or is full) is tried on another member, up to
//! [`MAX_HAND_OFF_ATTEMPTS`] in all; then `HandOffFailed` says this node stays listed.
//! A name that no other member can take (every member already holds it, as in a group of
//! R members, or none has room) is counted in [`HandOffStart::without_member`]: it stays
//! one copy short once this node goes, until repair finds a member for it.

use std::sync::Arc;

use crate::Millis;
use crate::id::NodeId;
use crate::limits::MAX_HOLDERS;
use crate::tuple::FileTuple;

use super::FilesCore;
use super::limits::MAX_HAND_OFF_ATTEMPTS;
use super::output::{Command, CopyPurpose, Event};
use super::placement::place;

/// What [`FilesCore::hand_off`] started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandOffStart {
    /// Hand-off copies asked for; each ends with `Event::HandedOff` or `HandOffFailed`.
    pub asked: usize,
    /// Held names no other member could take (every member holds it already or lacks
    /// room): they lose a copy when this node goes.
    pub without_member: usize,
}

impl<I: NodeId> FilesCore<I> {
    /// Starts handing off every held name at `now`. Each copy asked for ends with
    /// `Event::HandedOff` when it is durable.
    pub fn hand_off(&mut self, now: Millis) -> HandOffStart {
        self.input(now);
        self.stopping = true;
        let mut held: Vec<Arc<FileTuple<I>>> = self
            .names
            .values()
            .filter(|t| {
                !t.tuple.deleted
                    && t.tuple.holders.contains(&self.me)
                    && self.blobs.contains_key(&t.tuple.version.blake3)
                    && t.copying.is_empty()
            })
            .map(|t| t.tuple.clone())
            .collect();
        // The driver serves copies in the order asked, and a stop has little time: names
        // with the fewest other live copies first, then the smallest.
        held.sort_by_cached_key(|t| (self.live_copies(&t.name), t.size));
        let mut start = HandOffStart::default();
        for tuple in held {
            if self.send_hand_off(&tuple) {
                start.asked += 1;
            } else {
                start.without_member += 1;
            }
        }
        start
    }

    /// Sends the hand-off copy of `tuple` to a member that is not a known holder and has
    /// not failed a copy of it; returns whether one was found.
    fn send_hand_off(&mut self, tuple: &Arc<FileTuple<I>>) -> bool {
        let mut exclude: Vec<I> = tuple.holders.clone();
        if let Some(t) = self.names.get(&tuple.name) {
            exclude.extend(t.knowledge.known.iter().cloned());
            exclude.extend(t.copy_failed.iter().cloned());
        }
        let picked = place(
            &mut self.rng,
            &self.me,
            0,
            &self.view,
            tuple.size,
            &exclude,
            1,
        );
        let Some(to) = picked.into_iter().next() else {
            return false;
        };
        if !self.command(Command::CopyTo {
            tuple: tuple.clone(),
            to: to.clone(),
            purpose: CopyPurpose::HandOff,
        }) {
            return false;
        }
        self.in_flight += 1;
        self.stats.copies_started += 1;
        if let Some(t) = self.names.get_mut(&tuple.name) {
            t.copying.insert(to);
        }
        true
    }

    /// A hand-off copy of `name` failed (its member is in `copy_failed` now): another
    /// member is tried, or the hand-off of `name` gives up.
    pub(crate) fn retry_hand_off(&mut self, _now: Millis, name: &str) {
        let Some(tracked) = self.names.get(name) else {
            return;
        };
        let tuple = tracked.tuple.clone();
        let tried = tracked.copy_failed.len();
        if tried < MAX_HAND_OFF_ATTEMPTS && self.send_hand_off(&tuple) {
            return;
        }
        self.emit(Event::HandOffFailed {
            name: tuple.name.clone(),
        });
    }

    /// The hand-off copy of `name` to `to` is durable: publish the set without this node.
    pub(crate) fn finish_hand_off(&mut self, _now: Millis, name: &Arc<str>, to: I) {
        let Some(tracked) = self.names.get(name) else {
            return;
        };
        let tuple = tracked.tuple.clone();
        let mut holders: Vec<I> = tracked
            .knowledge
            .copies()
            .filter(|h| **h != self.me)
            .cloned()
            .collect();
        holders.extend(tuple.holders.iter().filter(|h| **h != self.me).cloned());
        holders.push(to.clone());
        holders.sort();
        holders.dedup();
        // Live holders first if the cap bites.
        if holders.len() > MAX_HOLDERS {
            holders.sort_by_key(|h| !self.view.is_live(h));
            holders.truncate(MAX_HOLDERS);
            holders.sort();
        }
        let before = tuple.holders.len();
        let after = holders.len();
        let next = FileTuple {
            holders,
            epoch: tuple.epoch + 1,
            ..FileTuple::clone(&tuple)
        };
        self.stats.holder_sets_published += 1;
        self.emit(Event::HolderSetPublished {
            name: name.clone(),
            before,
            after,
        });
        self.emit(Event::HandedOff {
            name: name.clone(),
            to,
        });
        self.publish(next);
    }
}
