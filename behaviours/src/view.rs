//! The group view: every member of the node's own affinity group, with the local facts the
//! failure detector needs (when the stamp last rose on the local clock, RTT, failed flag).

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;

use crate::Millis;
use crate::digest::{DigestItem, HeartbeatDigest};
use crate::entry::{Beat, Entry};
use crate::lookup_map::{LookupMap, lookup_map};

/// One member of the group, as this node sees it.
#[derive(Debug, Clone)]
pub struct Member<I> {
    /// Newest entry known.
    pub entry: Entry<I>,
    /// Short id (first four bytes of the SHA-1 of the id).
    pub short: u32,
    /// Local time at which the stamp last rose.
    pub last_increase: Millis,
    /// Smoothed round-trip time in microseconds, once sampled.
    pub rtt_us: Option<u32>,
    /// No rise for `t_fail`: not gossiped, targeted or used as a holder.
    pub failed: bool,
    /// Rounds left during which the entry is sent in rations before older ones.
    pub fresh_rounds: u8,
    /// Local time at which a message to it could not be delivered (the connection was
    /// refused, say). Until its stamp rises again it is not a gossip target; failure
    /// detection still waits for `t_fail`.
    pub unreachable_at: Option<Millis>,
}

impl<I> Member<I> {
    /// Whether it is worth gossiping to: not failed, and reachable since its last rise.
    pub fn is_target(&self) -> bool {
        !self.failed && self.unreachable_at.is_none_or(|at| self.last_increase > at)
    }
}

/// What merging news about a member did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing new.
    None,
    /// First seen (or seen again after removal).
    Added,
    /// Stamp rose.
    Refreshed,
    /// Stamp rose on a member marked failed.
    Recovered,
    /// Refused: a tombstone holds a same or newer stamp, the view is full, or the jump is
    /// implausible.
    Refused,
}

/// Outcome of applying a heartbeat digest.
#[derive(Debug)]
pub struct DigestOutcome<I> {
    /// Short ids this node does not know (or knows at an older incarnation): worth a `Want`.
    pub unknown: Vec<u32>,
    /// Members whose stamp rose while they were marked failed.
    pub recovered: Vec<I>,
}

/// Failure-detector transitions found by a sweep.
#[derive(Debug)]
pub struct Sweep<I> {
    /// Newly marked failed.
    pub failed: Vec<I>,
    /// Removed (`T_cleanup` without a rise).
    pub removed: Vec<Entry<I>>,
}

/// What is left of a removed member for a while: a stamp it could have had when it was
/// removed never brings it back.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    /// The last stamp known, plus the slack given at removal.
    beat: Beat,
    short: u32,
    until: Millis,
}

/// The members of the own group, sorted by (short id, id) so that a sorted digest is applied
/// in one merge pass. A sorted vector rather than a tree: the view is read (digests, rations,
/// sweeps, lookups) every round and changes only when members come and go.
pub struct GroupView<I> {
    members: Vec<Member<I>>,
    shorts: LookupMap<I, u32>,
    tombstones: BTreeMap<I, Tombstone>,
    tombstone_order: VecDeque<I>,
    max_members: usize,
}

impl<I: Ord + Clone + std::hash::Hash> GroupView<I> {
    /// An empty view holding at most `max_members` others; `hash_seed` keys its lookup map.
    pub fn new(max_members: usize, hash_seed: u64) -> Self {
        Self {
            members: Vec::new(),
            shorts: lookup_map(hash_seed),
            tombstones: BTreeMap::new(),
            tombstone_order: VecDeque::new(),
            max_members,
        }
    }

    /// Members, live or failed (not the node itself).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the view holds nobody.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All members in (short, id) order.
    pub fn iter(&self) -> impl Iterator<Item = &Member<I>> {
        self.members.iter()
    }

    /// Members not marked failed.
    pub fn live(&self) -> impl Iterator<Item = &Member<I>> {
        self.members.iter().filter(|m| !m.failed)
    }

    /// Where (short, id) is, or would be inserted.
    fn position(&self, short: u32, id: &I) -> Result<usize, usize> {
        self.members
            .binary_search_by(|m| (m.short, &m.entry.id).cmp(&(short, id)))
    }

    fn index_of(&self, id: &I) -> Option<usize> {
        let short = *self.shorts.get(id)?;
        self.position(short, id).ok()
    }

    /// Where member `id` is in [`iter`](Self::iter)'s order, if present; valid until the
    /// view changes.
    pub fn find(&self, id: &I) -> Option<usize> {
        self.index_of(id)
    }

    /// The member at `index` (from [`find`](Self::find)).
    pub fn at(&self, index: usize) -> &Member<I> {
        &self.members[index]
    }

    /// The member `id`, if present.
    pub fn get(&self, id: &I) -> Option<&Member<I>> {
        self.index_of(id).map(|index| &self.members[index])
    }

    /// Notes that a message to member `id` could not be delivered `now`.
    pub fn mark_unreachable(&mut self, id: &I, now: Millis) -> bool {
        match self.get_mut(id) {
            Some(member) => {
                member.unreachable_at = Some(now);
                true
            }
            None => false,
        }
    }

    fn get_mut(&mut self, id: &I) -> Option<&mut Member<I>> {
        self.index_of(id).map(|index| &mut self.members[index])
    }

    /// Whether `id` is present and not failed.
    pub fn is_live(&self, id: &I) -> bool {
        self.get(id).is_some_and(|m| !m.failed)
    }

    /// Merges a full entry whose group has been checked. `max_jump` bounds how far the
    /// heartbeat of a known incarnation may rise in one step.
    pub fn merge_entry(
        &mut self,
        entry: &Entry<I>,
        short: u32,
        now: Millis,
        fresh_rounds: u8,
        max_jump: u64,
    ) -> Change {
        let found = self.index_of(&entry.id);
        self.merge_entry_found(found, entry, short, now, fresh_rounds, max_jump)
    }

    /// [`merge_entry`](Self::merge_entry) with `found`, what [`find`](Self::find) gives for
    /// the entry's id in the view as it is.
    pub fn merge_entry_found(
        &mut self,
        found: Option<usize>,
        entry: &Entry<I>,
        short: u32,
        now: Millis,
        fresh_rounds: u8,
        max_jump: u64,
    ) -> Change {
        if let Some(index) = found {
            let member = &mut self.members[index];
            let before = member.entry.beat();
            if entry.incarnation == before.incarnation
                && entry.heartbeat > before.heartbeat.saturating_add(max_jump)
            {
                return Change::Refused;
            }
            let address_before = member.entry.address.clone();
            let free_before = member.entry.free_space;
            if !member.entry.merge(entry) {
                return Change::None;
            }
            // A new incarnation, address record or free space is news worth fresh rations; a
            // heartbeat rise travels in digests.
            if member.entry.incarnation != before.incarnation
                || member.entry.address != address_before
                || crate::entry::free_space_news(free_before, member.entry.free_space)
            {
                member.fresh_rounds = fresh_rounds;
            }
            if member.entry.beat() == before {
                return Change::None;
            }
            member.last_increase = now;
            if member.failed {
                member.failed = false;
                return Change::Recovered;
            }
            return Change::Refreshed;
        }
        if self
            .tombstones
            .get(&entry.id)
            .is_some_and(|tombstone| entry.beat() <= tombstone.beat)
        {
            return Change::Refused;
        }
        if self.members.len() >= self.max_members {
            return Change::Refused;
        }
        self.tombstones.remove(&entry.id);
        self.shorts.insert(entry.id.clone(), short);
        let (Ok(index) | Err(index)) = self.position(short, &entry.id);
        self.members.insert(
            index,
            Member {
                entry: entry.clone(),
                short,
                last_increase: now,
                rtt_us: None,
                failed: false,
                fresh_rounds,
                unreachable_at: None,
            },
        );
        Change::Added
    }

    /// Applies a digest in one merge pass over the view. Items whose short id is shared by
    /// two known members are ambiguous and skipped.
    pub fn apply_digest(
        &mut self,
        digest: &HeartbeatDigest,
        own_short: u32,
        now: Millis,
        max_jump: u64,
    ) -> DigestOutcome<I> {
        let mut outcome = DigestOutcome {
            unknown: Vec::new(),
            recovered: Vec::new(),
        };
        let tombstones = &self.tombstones;
        let mut members = self.members.iter_mut().peekable();
        for item in digest.items() {
            if item.short == own_short {
                continue;
            }
            while members.next_if(|m| m.short < item.short).is_some() {}
            let Some(member) = members.next_if(|m| m.short == item.short) else {
                if !covered_by_tombstone(tombstones, item) {
                    outcome.unknown.push(item.short);
                }
                continue;
            };
            if members.peek().is_some_and(|m| m.short == item.short) {
                while members.next_if(|m| m.short == item.short).is_some() {}
                continue;
            }
            let known = member.entry.beat();
            if item.beat.incarnation > known.incarnation {
                outcome.unknown.push(item.short);
            } else if item.beat.incarnation == known.incarnation
                && item.beat.heartbeat > known.heartbeat
                && item.beat.heartbeat <= known.heartbeat.saturating_add(max_jump)
            {
                member.entry.heartbeat = item.beat.heartbeat;
                member.last_increase = now;
                if member.failed {
                    member.failed = false;
                    outcome.recovered.push(member.entry.id.clone());
                }
            }
        }
        outcome
    }

    /// Marks members failed after `t_fail` without a rise and removes them after
    /// `t_cleanup`. A removed member leaves a tombstone for `tombstone_for` that refuses any
    /// stamp of the same incarnation up to `slack` heartbeats above the last one known: others
    /// may hold a slightly newer stamp of a dead node, but a live one has moved further.
    pub fn sweep(
        &mut self,
        now: Millis,
        t_fail: Millis,
        t_cleanup: Millis,
        tombstone_for: Millis,
        slack: u64,
    ) -> Sweep<I> {
        let mut sweep = Sweep {
            failed: Vec::new(),
            removed: Vec::new(),
        };
        let removed: Vec<Member<I>> = self
            .members
            .extract_if(.., |member| {
                let silent = now.saturating_sub(member.last_increase);
                if silent > t_cleanup {
                    return true;
                }
                if silent > t_fail && !member.failed {
                    member.failed = true;
                    sweep.failed.push(member.entry.id.clone());
                }
                false
            })
            .collect();
        for member in removed {
            self.shorts.remove(&member.entry.id);
            self.add_tombstone(&member, now + tombstone_for, slack);
            sweep.removed.push(member.entry);
        }
        while let Some(id) = self.tombstone_order.front() {
            match self.tombstones.get(id) {
                Some(tombstone) if tombstone.until > now => break,
                Some(_) => {
                    self.tombstones.remove(id);
                    self.tombstone_order.pop_front();
                }
                None => {
                    self.tombstone_order.pop_front();
                }
            }
        }
        sweep
    }

    fn add_tombstone(&mut self, member: &Member<I>, until: Millis, slack: u64) {
        if self.tombstones.len() >= self.max_members
            && let Some(oldest) = self.tombstone_order.pop_front()
        {
            self.tombstones.remove(&oldest);
        }
        let known = member.entry.beat();
        let tombstone = Tombstone {
            beat: Beat::new(known.incarnation, known.heartbeat.saturating_add(slack)),
            short: member.short,
            until,
        };
        self.tombstones.insert(member.entry.id.clone(), tombstone);
        self.tombstone_order.push_back(member.entry.id.clone());
    }

    /// Removes a member at once (it left cleanly, or it is this node's own id).
    pub fn remove(&mut self, id: &I) -> Option<Member<I>> {
        let index = self.index_of(id)?;
        self.shorts.remove(id);
        Some(self.members.remove(index))
    }

    /// Records an RTT sample (microseconds) with a 1/8 moving average.
    pub fn record_rtt(&mut self, id: &I, rtt_us: u32) -> bool {
        match self.get_mut(id) {
            Some(member) => {
                member.rtt_us = Some(smooth_rtt(member.rtt_us, rtt_us));
                true
            }
            None => false,
        }
    }

    /// The digest of all live members plus the node itself. Short ids shared by two of them
    /// are left out, since a receiver could not tell them apart; their ids are returned so
    /// that their full entries go in every ration instead.
    pub fn digest(&self, own_short: u32, own_beat: Beat) -> (HeartbeatDigest, Vec<I>) {
        let mut all: Vec<(DigestItem, Option<&I>)> = Vec::with_capacity(self.members.len() + 1);
        let own = DigestItem {
            short: own_short,
            beat: own_beat,
        };
        let mut own_placed = false;
        for member in self.live() {
            if !own_placed && own_short <= member.short {
                all.push((own, None));
                own_placed = true;
            }
            let item = DigestItem {
                short: member.short,
                beat: member.entry.beat(),
            };
            all.push((item, Some(&member.entry.id)));
        }
        if !own_placed {
            all.push((own, None));
        }
        let mut items = Vec::with_capacity(all.len());
        let mut clashing = Vec::new();
        for run in all.chunk_by(|a, b| a.0.short == b.0.short) {
            if let [(item, _)] = run {
                items.push(*item);
            } else {
                clashing.extend(run.iter().filter_map(|(_, id)| id.cloned()));
            }
        }
        let digest = HeartbeatDigest::from_sorted(items).unwrap_or_default();
        (digest, clashing)
    }

    /// Entries for one gossip ration: fresh ones first (each spends a fresh round), then up
    /// to `random` older live ones at random, `total` at most.
    pub fn ration(&mut self, total: usize, random: usize, rng: &mut impl Rng) -> Vec<Entry<I>> {
        let mut out = Vec::new();
        for member in &mut self.members {
            if out.len() == total {
                break;
            }
            if member.fresh_rounds > 0 && !member.failed {
                member.fresh_rounds -= 1;
                out.push(member.entry.clone());
            }
        }
        let live = self.live().count();
        let mut attempts = 0;
        let wanted = out.len() + random.min(total - out.len());
        while out.len() < wanted && live > 0 && attempts < 2 * random + 2 {
            attempts += 1;
            let pick = rng.random_range(0..live);
            if let Some(member) = self.live().nth(pick)
                && !out.iter().any(|e| e.id == member.entry.id)
            {
                out.push(member.entry.clone());
            }
        }
        out
    }

    /// Live entries whose short id is in `shorts` (answer to a `Want`), at most `limit`.
    pub fn entries_for_shorts(&self, shorts: &[u32], limit: usize) -> Vec<Entry<I>> {
        let mut wanted = shorts.to_vec();
        wanted.sort_unstable();
        self.live()
            .filter(|member| wanted.binary_search(&member.short).is_ok())
            .take(limit)
            .map(|member| member.entry.clone())
            .collect()
    }

    /// Up to `limit` live entries picked uniformly at random.
    pub fn random_live(&self, limit: usize, rng: &mut impl Rng) -> Vec<Entry<I>> {
        if self.members.iter().all(|m| !m.failed) {
            // Nobody failed (the usual case): the live members are the members.
            let members = &self.members;
            if members.len() <= limit {
                return members.iter().map(|m| m.entry.clone()).collect();
            }
            return rand::seq::index::sample(rng, members.len(), limit)
                .into_iter()
                .map(|i| members[i].entry.clone())
                .collect();
        }
        let mut live: Vec<&Member<I>> = Vec::with_capacity(self.members.len());
        live.extend(self.live());
        if live.len() <= limit {
            return live.into_iter().map(|m| m.entry.clone()).collect();
        }
        rand::seq::index::sample(rng, live.len(), limit)
            .into_iter()
            .map(|i| live[i].entry.clone())
            .collect()
    }
}

/// Whether a digest item is about a removed member at a stamp its tombstone covers. The
/// tombstones are few (removals of the last `t_fail`), so a scan is fine.
fn covered_by_tombstone<I>(tombstones: &BTreeMap<I, Tombstone>, item: &DigestItem) -> bool {
    tombstones
        .values()
        .any(|tombstone| tombstone.short == item.short && item.beat <= tombstone.beat)
}

/// 1/8 exponentially weighted moving average of RTT samples, as TCP smooths RTT.
pub fn smooth_rtt(previous: Option<u32>, sample: u32) -> u32 {
    match previous {
        None => sample,
        Some(old) => ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32,
    }
}
