//! Group traffic: the gossip round, group gossip with its digest and rations, and the
//! `Want`/`Entries` pull of members a digest names but this node does not know.

use std::sync::Arc;

use super::{Event, Kelips, Refusal, Source};
use crate::Millis;
use crate::entry::Entry;
use crate::id::NodeId;
use crate::limits::{MAX_RATION_ENTRIES, MAX_RATION_TUPLES, MAX_REPLY_ENTRIES, MAX_WANTED};
use crate::message::{Entries, GroupGossip, Message, TuplePull, Want};
use crate::targets;
use crate::tuple::FileTuple;

/// This round's group gossip and where it went, so that a target found unreachable can be
/// replaced.
pub(super) struct RoundGossip<I> {
    gossip: Arc<GroupGossip<I>>,
    targets: Vec<I>,
    retargets_left: usize,
}

impl<I: NodeId> Kelips<I> {
    /// One gossip round: failure detection, group gossip, cross-group gossip, and a slice of
    /// the tuple liveness sweep.
    pub(super) fn gossip_round(&mut self, now: Millis) {
        self.detect_failures(now);
        self.gossip_to_group(now);
        self.gossip_to_contacts(now);
        let view = &self.view;
        let me = &self.me.id;
        let ttl = self.config.orphan_tuple_ttl_ms;
        // Where groups size themselves, a split can leave a name's holders in the sibling
        // group: the view cannot tell whether they live, so they do not make a tuple an
        // orphan (the files layer copies the bytes into the name's group and the holder set
        // then lists members).
        let grouping = self.grouping();
        let own = self.facts.group;
        let sizing = self.structure.is_some();
        self.tuples
            .sweep(super::TUPLE_SWEEP_BUDGET, now, ttl, |holder| {
                holder == me
                    || view.get(holder).is_some()
                    || (sizing && grouping.id_facts(holder).group != own)
            });
        self.tuples
            .expire_pulls(now, self.config.request_timeout_ms);
    }

    fn detect_failures(&mut self, now: Millis) {
        let t_fail = self.config.t_fail_ms;
        let tombstone_for = 2 * t_fail + self.t_contact();
        let slack = t_fail / self.config.heartbeat_period_ms;
        let sweep = self.view.sweep(
            now,
            t_fail,
            self.config.t_cleanup_ms(),
            tombstone_for,
            slack,
        );
        for id in sweep.failed {
            self.stats.failures_detected += 1;
            self.emit(Event::MemberFailed(id));
        }
        if !sweep.removed.is_empty() {
            self.tuples.holders_left();
        }
        for entry in sweep.removed {
            self.stats.members_removed += 1;
            self.remember(entry.id.clone(), now);
            self.emit(Event::MemberRemoved(entry.id));
        }
    }

    /// Sends one group message, shared by `fanout` targets drawn ∝ 1/rtt² (one uniformly).
    /// Members whose stamp has not risen for half of `t_fail` (most likely dead) are skipped
    /// while enough others are left: after a mass failure, gossip sent to the dead is gossip
    /// the living miss, and their counters age towards false detection.
    fn gossip_to_group(&mut self, now: Millis) {
        self.round_gossip = None;
        let mut live = self.gossip_candidates(now, &[]);
        if live.len() < self.config.fanout {
            live = self
                .view
                .live()
                .map(|m| (m.entry.id.clone(), m.rtt_us))
                .collect();
        }
        if live.is_empty() {
            return;
        }
        let rtts: Vec<Option<u32>> = live.iter().map(|(_, rtt)| *rtt).collect();
        let chosen = targets::choose(
            &rtts,
            self.config.fanout,
            self.config.uniform_targets,
            &mut self.rng,
        );
        let (digest, clashing) = self.view.digest(self.facts.short, self.me.beat());
        let mut entries = Vec::new();
        if self.own_fresh_rounds > 0 {
            self.own_fresh_rounds -= 1;
            entries.push(self.me.clone());
        }
        for id in clashing.into_iter().take(MAX_RATION_ENTRIES / 2) {
            if let Some(member) = self.view.get(&id) {
                entries.push(member.entry.clone());
            }
        }
        let room = self.config.entry_ration.saturating_sub(entries.len());
        let random = self.config.random_entry_ration.min(room);
        entries.extend(self.view.ration(room, random, &mut self.rng));
        entries.truncate(MAX_RATION_ENTRIES);
        let news = self
            .tuples
            .fresh_ration(self.config.tuple_ration.min(MAX_RATION_TUPLES));
        let gossip = Arc::new(GroupGossip {
            digest,
            entries,
            news,
        });
        let targets: Vec<I> = chosen.into_iter().map(|i| live[i].0.clone()).collect();
        for target in &targets {
            self.send(target.clone(), Message::Group(gossip.clone()));
        }
        self.round_gossip = Some(RoundGossip {
            gossip,
            targets,
            retargets_left: self.config.fanout,
        });
    }

    /// A member of the group could not be reached: it is no gossip target until its stamp
    /// rises again, and if this round's group gossip went to it, the gossip goes to another
    /// member instead (at most `fanout` times a round). After a mass failure, half the
    /// gossip would otherwise reach nobody until the dead are detected, and news of the
    /// dead — their last counters — would spread half as fast.
    pub(super) fn member_unreachable(&mut self, now: Millis, peer: &I) {
        if !self.view.mark_unreachable(peer, now) {
            return;
        }
        let Some(mut round) = self.round_gossip.take() else {
            return;
        };
        if round.retargets_left > 0 && round.targets.contains(peer) {
            let candidates = self.gossip_candidates(now, &round.targets);
            let rtts: Vec<Option<u32>> = candidates.iter().map(|(_, rtt)| *rtt).collect();
            if let Some(&index) = targets::choose(&rtts, 1, 0, &mut self.rng).first() {
                round.retargets_left -= 1;
                let target = candidates[index].0.clone();
                round.targets.push(target.clone());
                self.send(target, Message::Group(round.gossip.clone()));
            }
        }
        self.round_gossip = Some(round);
    }

    /// Live members worth gossiping to, with their RTTs: reachable, their stamp risen within
    /// `t_fail / 2`, and not in `except`.
    fn gossip_candidates(&self, now: Millis, except: &[I]) -> Vec<(I, Option<u32>)> {
        let quiet = self.config.t_fail_ms / 2;
        self.view
            .live()
            .filter(|m| m.is_target() && now.saturating_sub(m.last_increase) <= quiet)
            .filter(|m| !except.contains(&m.entry.id))
            .map(|m| (m.entry.id.clone(), m.rtt_us))
            .collect()
    }

    pub(super) fn on_group(
        &mut self,
        now: Millis,
        from: I,
        gossip: &GroupGossip<I>,
    ) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if gossip.entries.len() > MAX_RATION_ENTRIES || gossip.news.len() > MAX_RATION_TUPLES {
            return Err(Refusal::OverBound("ration"));
        }
        let outcome =
            self.view
                .apply_digest(&gossip.digest, self.facts.short, now, self.max_jump());
        for id in outcome.recovered {
            self.emit(Event::MemberRecovered(id));
        }
        for entry in &gossip.entries {
            self.learn_member(now, entry, Source::Member);
        }
        let pull = self
            .tuples
            .to_pull(&gossip.news, now, self.config.request_timeout_ms);
        if !pull.is_empty() {
            let pull = TuplePull { fingerprints: pull };
            self.send(from.clone(), Message::TuplePull(pull));
        }
        if !outcome.unknown.is_empty() {
            let mut shorts = outcome.unknown;
            shorts.truncate(MAX_WANTED);
            self.send(from, Message::Want(Want { shorts }));
        }
        Ok(())
    }

    /// Merges an entry that must belong to the own group.
    pub(super) fn learn_member(&mut self, now: Millis, entry: &Entry<I>, source: Source) {
        if entry.id == self.me.id {
            self.learn(now, entry, source);
            return;
        }
        let (found, facts) = self.look_up(&entry.id);
        if facts.group != self.facts.group {
            self.stats.refused_items += 1;
            return;
        }
        self.learn_looked_up(now, entry, source, found, facts);
    }

    /// Merges a tuple that must belong to the own group and be well formed.
    pub(super) fn learn_tuple(&mut self, tuple: &Arc<FileTuple<I>>) {
        let (group, fp) = self.grouping().name_facts(&tuple.name);
        let valid = group == self.facts.group && tuple.is_normal();
        if !valid || self.merge_tuple(fp, tuple).is_err() {
            self.stats.refused_items += 1;
        }
    }

    /// Refuses a group-only message from outside the group.
    pub(super) fn check_member(&self, from: &I) -> Result<(), Refusal> {
        let group = self.facts_of(from).group;
        if group != self.facts.group {
            return Err(Refusal::WrongGroup {
                expected: self.facts.group,
                actual: group,
            });
        }
        Ok(())
    }

    pub(super) fn on_want(&mut self, from: I, want: Want) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if want.shorts.len() > MAX_WANTED {
            return Err(Refusal::OverBound("want"));
        }
        let mut entries = self
            .view
            .entries_for_shorts(&want.shorts, MAX_REPLY_ENTRIES - 1);
        if want.shorts.contains(&self.facts.short) {
            entries.push(self.me.clone());
        }
        if !entries.is_empty() {
            self.send(from, Message::Entries(Entries { entries }));
        }
        Ok(())
    }

    pub(super) fn on_entries(
        &mut self,
        now: Millis,
        from: I,
        entries: Entries<I>,
    ) -> Result<(), Refusal> {
        self.check_member(&from)?;
        if entries.entries.len() > MAX_REPLY_ENTRIES {
            return Err(Refusal::OverBound("entries"));
        }
        for entry in &entries.entries {
            self.learn_member(now, entry, Source::Member);
        }
        Ok(())
    }
}
