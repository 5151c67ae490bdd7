//! Contacts: up to `c` members of every foreign group, learned from cross-group gossip.
//!
//! A contact is *heard* when a message or reply comes from it, or when gossip brings it a
//! higher stamp. One not heard for `t_contact` is *stale*: it is probed first and any fresh
//! candidate replaces it. One that cannot be reached is removed at once. When a group is full,
//! a candidate with a measured RTT evicts the farthest contact if it is clearly closer: by a
//! quarter of its own RTT and by at least [`RTT_MARGIN_US`]. (Any improvement used to do: on
//! a LAN, where every RTT is a fraction of a millisecond, contacts then changed on noise, a
//! few times a minute per node, each change a log line.)

use std::collections::BTreeMap;

use crate::Millis;
use crate::entry::Entry;
use crate::lookup_map::{LookupMap, lookup_map};
use crate::view::smooth_rtt;

/// The least RTT gain, in microseconds, for which a candidate evicts a contact (besides a
/// quarter of its own RTT).
pub const RTT_MARGIN_US: u32 = 1000;

/// One contact.
#[derive(Debug, Clone)]
pub struct Contact<I> {
    /// Newest entry known.
    pub entry: Entry<I>,
    /// Short id of the contact (as in its group's digests), to ask its group about it.
    pub short: u32,
    /// Local time of the last proof of life.
    pub last_heard: Millis,
    /// Smoothed RTT in microseconds, once sampled.
    pub rtt_us: Option<u32>,
}

impl<I> Contact<I> {
    /// Whether the contact has not been heard for `t_contact`.
    pub fn is_stale(&self, now: Millis, t_contact: Millis) -> bool {
        now.saturating_sub(self.last_heard) > t_contact
    }
}

/// What offering a candidate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered<I> {
    /// Nothing changed in the table.
    Unchanged,
    /// Already a contact; its entry or liveness was refreshed.
    Refreshed,
    /// Added, possibly evicting another contact.
    Added {
        /// The contact it replaced, if any.
        evicted: Option<I>,
    },
}

/// Contacts of all foreign groups.
pub struct Contacts<I> {
    /// Contacts by group (index), empty for a group without any; as long as the largest
    /// group that ever had a contact.
    groups: Vec<Vec<Contact<I>>>,
    group_of: LookupMap<I, u32>,
    /// When each group (index) was last picked for verification; 0: never, or not since it
    /// last had no contacts at a [`Contacts::groups_to_verify`].
    verified: Vec<Millis>,
    /// Contacts dropped as dead, with their stamp and when: relayed copies no newer than that
    /// stamp are refused for `t_contact`, so stale relays do not bring a dead contact back.
    dropped: BTreeMap<I, (crate::entry::Beat, Millis)>,
    per_group: usize,
}

/// Dead contacts remembered at most.
const MAX_DROPPED: usize = 4096;

impl<I: Ord + Clone + std::hash::Hash> Contacts<I> {
    /// An empty table keeping `per_group` contacts per group; `hash_seed` keys its lookup map.
    pub fn new(per_group: usize, hash_seed: u64) -> Self {
        Self {
            groups: Vec::new(),
            group_of: lookup_map(hash_seed),
            verified: Vec::new(),
            dropped: BTreeMap::new(),
            per_group,
        }
    }

    /// Takes every contact out (the group structure changed: they are offered again under
    /// the new one); the memory of dead contacts stays.
    pub fn drain(&mut self) -> Vec<Contact<I>> {
        self.group_of.clear();
        self.verified.clear();
        std::mem::take(&mut self.groups)
            .into_iter()
            .flatten()
            .collect()
    }

    /// Total number of contacts.
    pub fn len(&self) -> usize {
        self.group_of.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.group_of.is_empty()
    }

    /// Contacts of `group`.
    pub fn of_group(&self, group: u32) -> &[Contact<I>] {
        self.groups
            .get(group as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Groups with at least one contact, with their contacts.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[Contact<I>])> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .map(|(g, c)| (g as u32, c.as_slice()))
    }

    /// All contacts.
    pub fn all(&self) -> impl Iterator<Item = &Contact<I>> {
        self.groups.iter().flatten()
    }

    /// The group of contact `id`, if it is one.
    pub fn group_of(&self, id: &I) -> Option<u32> {
        self.group_of.get(id).copied()
    }

    /// Contact `id`, if it is one.
    pub fn get(&self, id: &I) -> Option<&Contact<I>> {
        let group = *self.group_of.get(id)?;
        self.groups
            .get(group as usize)?
            .iter()
            .find(|c| c.entry.id == *id)
    }

    fn find_mut(&mut self, id: &I) -> Option<&mut Contact<I>> {
        let group = *self.group_of.get(id)?;
        self.groups
            .get_mut(group as usize)?
            .iter_mut()
            .find(|c| c.entry.id == *id)
    }

    /// Offers `entry` of foreign `group` (`short` is its short id). `heard` says whether the
    /// entry comes with a proof of life (it is the sender); `rtt_us` is a known RTT. A relayed
    /// candidate counts as heard half a `t_contact` ago.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        entry: &Entry<I>,
        group: u32,
        short: u32,
        now: Millis,
        heard: bool,
        rtt_us: Option<u32>,
        t_contact: Millis,
    ) -> Offered<I> {
        if let Some(contact) = self.find_mut(&entry.id) {
            let rose = entry.beat() > contact.entry.beat();
            let changed = contact.entry.merge(entry);
            if heard || rose {
                contact.last_heard = now;
            }
            if let Some(rtt) = rtt_us {
                contact.rtt_us = Some(smooth_rtt(contact.rtt_us, rtt));
            }
            return if changed || heard || rose {
                Offered::Refreshed
            } else {
                Offered::Unchanged
            };
        }
        if let Some((beat, at)) = self.dropped.get(&entry.id) {
            let recent = now.saturating_sub(*at) <= t_contact;
            if !heard && recent && entry.beat() <= *beat {
                return Offered::Unchanged;
            }
            self.dropped.remove(&entry.id);
        }
        let per_group = self.per_group;
        if self.groups.len() <= group as usize {
            self.groups.resize_with(group as usize + 1, Vec::new);
        }
        let slot = &mut self.groups[group as usize];
        let candidate = Contact {
            entry: entry.clone(),
            short,
            last_heard: if heard {
                now
            } else {
                now.saturating_sub(t_contact / 2)
            },
            rtt_us,
        };
        if slot.len() < per_group {
            slot.push(candidate);
            self.group_of.insert(entry.id.clone(), group);
            return Offered::Added { evicted: None };
        }
        // Full: replace the stalest stale contact, else the farthest by a closer candidate.
        let victim = slot
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_stale(now, t_contact))
            .min_by_key(|(_, c)| c.last_heard)
            .map(|(i, _)| i)
            .or_else(|| {
                let rtt = rtt_us?;
                let worse_than = rtt.saturating_add((rtt / 4).max(RTT_MARGIN_US));
                slot.iter()
                    .enumerate()
                    .filter(|(_, c)| c.rtt_us.is_some_and(|theirs| theirs > worse_than))
                    .max_by_key(|(_, c)| c.rtt_us)
                    .map(|(i, _)| i)
            });
        let Some(victim) = victim else {
            return Offered::Unchanged;
        };
        let evicted = std::mem::replace(&mut slot[victim], candidate);
        self.group_of.remove(&evicted.entry.id);
        self.group_of.insert(entry.id.clone(), group);
        Offered::Added {
            evicted: Some(evicted.entry.id),
        }
    }

    /// Records a proof of life from contact `id`.
    pub fn heard(&mut self, id: &I, now: Millis) -> bool {
        match self.find_mut(id) {
            Some(contact) => {
                contact.last_heard = now;
                true
            }
            None => false,
        }
    }

    /// Makes contact `id` stale (it did not answer in time): probed and replaced first.
    pub fn mark_stale(&mut self, id: &I) {
        if let Some(contact) = self.find_mut(id) {
            contact.last_heard = 0;
        }
    }

    /// Records an RTT sample for contact `id`.
    pub fn record_rtt(&mut self, id: &I, rtt_us: u32) -> bool {
        match self.find_mut(id) {
            Some(contact) => {
                contact.rtt_us = Some(smooth_rtt(contact.rtt_us, rtt_us));
                true
            }
            None => false,
        }
    }

    /// Removes contact `id` (unreachable, or found in the own group); returns its entry.
    pub fn remove(&mut self, id: &I) -> Option<Entry<I>> {
        let group = self.group_of.remove(id)?;
        let slot = self.groups.get_mut(group as usize)?;
        let index = slot.iter().position(|c| c.entry.id == *id)?;
        let contact = slot.swap_remove(index);
        Some(contact.entry)
    }

    /// Removes contact `id` found dead (unreachable, or not vouched for by its group) and
    /// remembers its stamp, so relayed copies no newer are refused for a while.
    pub fn drop_dead(&mut self, id: &I, now: Millis, t_contact: Millis) -> Option<Entry<I>> {
        let entry = self.remove(id)?;
        if self.dropped.len() >= MAX_DROPPED {
            self.dropped
                .retain(|_, (_, at)| now.saturating_sub(*at) <= t_contact);
        }
        if self.dropped.len() < MAX_DROPPED {
            self.dropped.insert(id.clone(), (entry.beat(), now));
        }
        Some(entry)
    }

    /// Marks contact `id` heard now with a stamp vouched for by a member of its group.
    pub fn vouched(&mut self, id: &I, beat: crate::entry::Beat, now: Millis) {
        if let Some(contact) = self.find_mut(id) {
            if beat.incarnation == contact.entry.incarnation
                && beat.heartbeat > contact.entry.heartbeat
            {
                contact.entry.heartbeat = beat.heartbeat;
            }
            contact.last_heard = now;
        }
    }

    /// Up to `count` groups with contacts, those verified longest ago first; they count as
    /// verified `now`. Cycling through them keeps every contact checked every
    /// `groups / count` rounds.
    pub fn groups_to_verify(&mut self, count: usize, now: Millis) -> Vec<u32> {
        // A group without contacts loses its mark: it counts as never verified once it
        // has contacts again.
        let mut order: Vec<(Millis, u32)> = Vec::with_capacity(self.groups.len());
        self.verified.resize(self.groups.len(), 0);
        for (group, (slot, at)) in self.groups.iter().zip(self.verified.iter_mut()).enumerate() {
            if slot.is_empty() {
                *at = 0;
            } else {
                order.push((*at, group as u32));
            }
        }
        if count < order.len() {
            order.select_nth_unstable(count);
            order.truncate(count);
        }
        order.sort_unstable();
        let chosen: Vec<u32> = order.into_iter().map(|(_, g)| g).collect();
        for g in &chosen {
            self.verified[*g as usize] = now;
        }
        chosen
    }

    /// The contact of `group` to talk to: fresh before stale, then nearest.
    pub fn best_of_group(&self, group: u32, now: Millis, t_contact: Millis) -> Option<&Contact<I>> {
        self.of_group(group).iter().min_by_key(|c| {
            (
                c.is_stale(now, t_contact),
                c.rtt_us.unwrap_or(u32::MAX),
                &c.entry.id,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::AddressRecord;

    fn entry(id: u32, heartbeat: u64) -> Entry<u32> {
        Entry {
            id,
            incarnation: 1,
            heartbeat,
            address: AddressRecord::default(),
            free_space: 0,
        }
    }

    #[test]
    fn full_groups_evict_stale_then_farthest() {
        let mut contacts = Contacts::new(2, 0);
        let t = 1000;
        assert_eq!(
            contacts.offer(&entry(1, 0), 5, 1, 0, true, Some(10_000), t),
            Offered::Added { evicted: None }
        );
        contacts.offer(&entry(2, 0), 5, 2, 0, true, Some(50_000), t);
        // Full, no RTT, nobody stale: refused.
        assert_eq!(
            contacts.offer(&entry(3, 0), 5, 3, 10, true, None, t),
            Offered::Unchanged
        );
        // A candidate closer only by noise does not: 50 ms against 45 ms (less than a
        // quarter), nor 0.3 ms against 0.2 ms on a LAN (less than the margin).
        assert_eq!(
            contacts.offer(&entry(7, 0), 5, 7, 20, false, Some(45_000), t),
            Offered::Unchanged
        );
        let mut lan = Contacts::new(1, 0);
        lan.offer(&entry(8, 0), 5, 8, 0, true, Some(300), t);
        assert_eq!(
            lan.offer(&entry(9, 0), 5, 9, 0, false, Some(200), t),
            Offered::Unchanged
        );
        // A clearly closer candidate evicts the farthest.
        assert_eq!(
            contacts.offer(&entry(4, 0), 5, 4, 20, false, Some(20_000), t),
            Offered::Added { evicted: Some(2) }
        );
        // Once contact 1 is stale, any candidate replaces it.
        contacts.heard(&4, 1500);
        assert_eq!(
            contacts.offer(&entry(6, 0), 5, 6, 1500, false, None, t),
            Offered::Added { evicted: Some(1) }
        );
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts.group_of(&6), Some(5));
        assert!(contacts.remove(&6).is_some());
        assert!(contacts.remove(&4).is_some());
        assert!(contacts.is_empty());
        assert!(contacts.of_group(5).is_empty());
    }
}
