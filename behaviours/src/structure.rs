//! Groups that size themselves: the rule every node applies alike to choose how many affinity
//! groups the network has. [`crate::Kelips`] runs it when its config says `groups = 0`
//! (`node/restructure.rs` re-sorts the view, contacts and tuples at each change).
//!
//! * **Groups as prefixes.** At level `b` there are `k = 2^b` groups and the group of a node or
//!   a name is the first `b` bits of its SHA-1 ([`prefix_group`]). Going up a level splits
//!   every group in two (the next bit says which half); going down merges each pair of
//!   siblings. Nothing else moves: a name's group at level `b + 1` lies inside its group at
//!   level `b`.
//! * **The estimate.** A node estimates the network's size from the other live members of its
//!   own group: `others · 2^b + 1` ([`estimate`]). For a node taken at random, `others` is
//!   binomial with mean `(N - 1) / 2^b`, so the estimate is unbiased; counting the node itself
//!   too would not be (a node is likelier to sit in a big group: at 4 per group that bias
//!   was +10 to +40%). Groups
//!   are not even (binomial: at N = 10⁴ and 64 groups they run from 121 to 184), so each node
//!   gossips its estimate and blends what it hears into its own (an average with weight ⅛ per
//!   sample): every node then acts on nearly the network's mean instead of its group's.
//! * **The rule** ([`LevelRule::next`]): with `g` the group size, Kelips wants `g ≈ √N`, so
//!   `r² = g / 2^b = N / 4^b` should stay near 1. Up a level when `r > 1.5` and each half
//!   would still hold `3R` members; down when `r < ½` or the group holds fewer than `R`. A
//!   split at `r` just over 1.5 lands at 0.75 and a merge at just under ½ lands at 1, so one
//!   change never calls for the opposite one. Settled groups hold ½ to 1.5 × √N: the band
//!   leans below √N because a node's gossip grows with its group (the heartbeat digest of
//!   every member, every round) while its contact traffic does not grow with the number of
//!   groups (a fixed number of verifications a round).
//! * **Agreement** ([`Structure`], [`StructureState`]): a level travels with an epoch; the
//!   greater `(epoch, level)` wins everywhere. A node proposes a change (epoch + 1) only when
//!   its estimate has been out of band for `hold_ms` without a break, and adopts any heard
//!   structure that supersedes its own and lies within one level of it.
//! * **Transitions**: for `transition_ms` after a change the previous structure is kept, and
//!   [`StructureState::lookup_groups`] names both groups of a name, so lookups try the group
//!   under the new structure and then under the old one while tuples and blobs move.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// The deepest level: 2^16 = 65,536 groups (enough for 4·10⁹ nodes at √N per group).
pub const MAX_LEVEL: u8 = 16;

/// The first `level` bits of `digest` (big-endian), the group at that level; 0 at level 0.
pub fn prefix_group(digest: &[u8], level: u8) -> u32 {
    let level = level.min(MAX_LEVEL);
    if level == 0 {
        return 0;
    }
    let mut top = [0u8; 4];
    for (slot, byte) in top.iter_mut().zip(digest) {
        *slot = *byte;
    }
    u32::from_be_bytes(top) >> (32 - u32::from(level))
}

/// The network size a node at `level` estimates from the live members of its group (itself
/// included): `(live_in_group - 1) · 2^level + 1`, unbiased over the nodes of a network (see
/// the module docs).
pub fn estimate(live_in_group: u64, level: u64) -> u64 {
    live_in_group
        .saturating_sub(1)
        .saturating_mul(1u64 << level.min(u64::from(MAX_LEVEL)))
        .saturating_add(1)
}

/// The level and the epoch at which it was chosen: the greater pair wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Structure {
    /// Bumped by each change; compared first.
    pub epoch: u32,
    /// `b`: the network has `2^b` groups.
    pub level: u8,
}

impl Structure {
    /// One group, epoch 0: how every network starts.
    pub const SINGLE: Structure = Structure { epoch: 0, level: 0 };

    /// The number of groups, `2^level`.
    pub fn groups(&self) -> u32 {
        1 << self.level.min(MAX_LEVEL)
    }

    /// The group of `digest` (a node's or a name's SHA-1) under this structure.
    pub fn group_of(&self, digest: &[u8]) -> u32 {
        prefix_group(digest, self.level)
    }

    /// Whether a node holding `self` adopts `heard`: greater, a valid level, and at most one
    /// level away (a change is one split or one merge; anything further is a stale or
    /// hostile claim, ignored until the levels between have been passed).
    pub fn is_superseded_by(&self, heard: &Structure) -> bool {
        heard > self && heard.level <= MAX_LEVEL && heard.level.abs_diff(self.level) <= 1
    }
}

/// When to go up or down a level (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelRule {
    /// R, the copies kept of each file: a group must be able to hold them.
    pub replication: u64,
    /// The deepest level this network goes to (at most [`MAX_LEVEL`]).
    pub max_level: u8,
}

impl LevelRule {
    /// The level a node at `level` wants for an estimated network of `estimate` nodes:
    /// `level + 1`, `level - 1` or `level`.
    pub fn next(&self, level: u8, estimate: u64) -> u8 {
        let groups = 1u64 << level.min(MAX_LEVEL);
        let squared = groups.saturating_mul(groups);
        let r = self.replication.max(1);
        // r² = N / 4^b > 9/4, and each of the 2^(b+1) halves would hold ≥ 3R on average
        // (prefix halves are binomially uneven: at 2R one in 25 splits of 12 nodes leaves a
        // half below R, at 3R about one in 800 splits of 18).
        let up = estimate.saturating_mul(4) > squared.saturating_mul(9)
            && estimate >= groups.saturating_mul(2).saturating_mul(3 * r);
        // r² < ¼, or fewer than R per group.
        let down = level > 0 && (estimate.saturating_mul(4) < squared || estimate < groups * r);
        if up && level < self.max_level.min(MAX_LEVEL) {
            level + 1
        } else if down {
            level - 1
        } else {
            level
        }
    }

    /// The smallest estimate for which a network at `level` goes up a level.
    pub fn split_size(&self, level: u8) -> u64 {
        let groups = 1u64 << level.min(MAX_LEVEL);
        let by_ratio = groups.saturating_mul(groups).saturating_mul(9) / 4 + 1;
        let by_replication = groups.saturating_mul(6 * self.replication.max(1));
        by_ratio.max(by_replication)
    }

    /// The level the rule settles at for a network of `estimate` nodes, from level 0 up (the
    /// level a network that grew to this size holds).
    pub fn settled(&self, estimate: u64) -> u8 {
        let mut level = 0;
        loop {
            let next = self.next(level, estimate);
            if next <= level {
                return level;
            }
            level = next;
        }
    }
}

/// How a node's structure changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The structure before.
    pub from: Structure,
    /// The structure now.
    pub to: Structure,
    /// Whether this node proposed it (else it adopted it from a peer).
    pub proposed: bool,
}

/// One node's structure: the current one, the previous one while a transition lasts, and
/// how long its estimate has been out of band.
#[derive(Debug, Clone)]
pub struct StructureState {
    rule: LevelRule,
    hold_ms: Millis,
    transition_ms: Millis,
    current: Structure,
    previous: Option<(Structure, Millis)>,
    /// Since when the estimate has asked for `wanted` without a break.
    out_of_band: Option<(u8, Millis)>,
    /// The blended estimate of N, in 1/1024 nodes (none before the first sample).
    blended: Option<u64>,
    /// After a merge from a level: that level and the estimate below which this node does
    /// not propose to split back into it (half again the estimate at the merge). The same
    /// prefix groups would come back as uneven as they went.
    split_floor: Option<(u8, u64)>,
}

/// The blended estimate's fixed-point scale.
const SCALE: u64 = 1024;

impl StructureState {
    /// A node starting at `start` (persisted, or [`Structure::SINGLE`] for a new network) that
    /// proposes a change after `hold_ms` out of band and keeps the previous structure for
    /// `transition_ms` after each change.
    pub fn new(rule: LevelRule, start: Structure, hold_ms: Millis, transition_ms: Millis) -> Self {
        Self {
            rule,
            hold_ms,
            transition_ms,
            current: start,
            previous: None,
            out_of_band: None,
            blended: None,
            split_floor: None,
        }
    }

    /// The estimate of N this node acts on and gossips: its own samples and those heard,
    /// blended.
    pub fn estimate(&self) -> u64 {
        self.blended.map_or(0, |b| b.div_ceil(SCALE))
    }

    fn blend(&mut self, sample: u64) {
        let sample = sample.saturating_mul(SCALE);
        self.blended = Some(match self.blended {
            None => sample,
            Some(b) => (b.saturating_mul(7).saturating_add(sample)) / 8,
        });
    }

    /// The structure in force.
    pub fn current(&self) -> Structure {
        self.current
    }

    /// The structure before the last change, while its transition lasts.
    pub fn previous(&self, now: Millis) -> Option<Structure> {
        self.previous
            .filter(|(_, until)| now < *until)
            .map(|(structure, _)| structure)
    }

    /// Where a lookup that found nothing in `group` asks next while a transition lasts:
    /// after a split, the sibling group (the other half of the name's group before it),
    /// whose members held the name until the hand-over reached `group`. After a merge the
    /// old groups are both inside the new one: nowhere else to ask.
    pub fn fallback_group(&self, now: Millis, group: u32) -> Option<u32> {
        let previous = self.previous(now)?;
        (previous.level < self.current.level && self.current.level > 0).then_some(group ^ 1)
    }

    /// Feeds the number of live members of the own group (itself included) at `now`; returns
    /// the change this node proposes, once it has asked for it for `hold_ms`: the level the
    /// blended estimate calls for, but a merge when the own group has fewer than R live
    /// members (an uneven split, or failures in one group: the group could not keep R
    /// copies), and no split back into a level merged from until the estimate has grown by
    /// half.
    pub fn observe(&mut self, now: Millis, live_in_group: u64) -> Option<Change> {
        let level = self.current.level;
        self.blend(estimate(live_in_group, u64::from(level)));
        let estimate = self.estimate();
        let mut wanted = self.rule.next(level, estimate);
        if level > 0 && live_in_group < self.rule.replication {
            wanted = level - 1;
        }
        if wanted > level
            && self
                .split_floor
                .is_some_and(|(from, floor)| from == wanted && estimate < floor)
        {
            wanted = level;
        }
        if wanted == level {
            self.out_of_band = None;
            return None;
        }
        match self.out_of_band {
            Some((asked, since)) if asked == wanted => {
                if now.saturating_sub(since) < self.hold_ms {
                    return None;
                }
            }
            _ => {
                self.out_of_band = Some((wanted, now));
                return None;
            }
        }
        let to = Structure {
            epoch: self.current.epoch.saturating_add(1),
            level: wanted,
        };
        Some(self.change(now, to, true))
    }

    /// A structure and estimate heard from a peer at `now`; returns the change if this node
    /// adopts the structure. The estimate is blended into this node's (none: not known). A
    /// node that has `joined` takes only a structure within one level of its own
    /// ([`Structure::is_superseded_by`]); one that has not takes any valid greater structure,
    /// however many levels away (it starts at one group and knows nothing of the network it
    /// joins).
    pub fn heard(
        &mut self,
        now: Millis,
        heard: Structure,
        estimate: Option<u64>,
        joined: bool,
    ) -> Option<Change> {
        if let Some(estimate) = estimate {
            self.blend(estimate);
        }
        let adopted = if joined {
            self.current.is_superseded_by(&heard)
        } else {
            heard > self.current && heard.level <= self.rule.max_level.min(MAX_LEVEL)
        };
        adopted.then(|| self.change(now, heard, false))
    }

    fn change(&mut self, now: Millis, to: Structure, proposed: bool) -> Change {
        let from = self.current;
        self.current = to;
        self.out_of_band = None;
        if from.level != to.level {
            self.previous = Some((from, now.saturating_add(self.transition_ms)));
        }
        if to.level < from.level {
            // A node of the small group merged on a local count, its estimate dragged down
            // by its own samples: the floor is at least half again the size that split.
            let base = self.estimate().max(self.rule.split_size(to.level));
            self.split_floor = Some((from.level, base.saturating_mul(3).div_ceil(2)));
        }
        Change { from, to, proposed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: LevelRule = LevelRule {
        replication: 3,
        max_level: MAX_LEVEL,
    };

    fn state() -> StructureState {
        StructureState::new(RULE, Structure::SINGLE, 1_000, 10_000)
    }

    #[test]
    fn a_prefix_group_is_the_first_bits_and_splits_into_its_two_halves() {
        let digest = [0b1011_0010, 0xff, 0, 0, 0];
        assert_eq!(prefix_group(&digest, 0), 0);
        assert_eq!(prefix_group(&digest, 1), 1);
        assert_eq!(prefix_group(&digest, 4), 0b1011);
        assert_eq!(prefix_group(&digest, 12), 0b1011_0010_1111);
        for level in 0..MAX_LEVEL {
            let parent = prefix_group(&digest, level);
            let child = prefix_group(&digest, level + 1);
            assert_eq!(child >> 1, parent, "level {level}");
        }
        assert_eq!(
            prefix_group(&[0xff], 16),
            0xff00,
            "short digests read as zero-padded"
        );
    }

    #[test]
    fn one_node_and_small_networks_keep_one_group() {
        for n in 1..18 {
            assert_eq!(RULE.settled(n), 0, "{n} nodes");
        }
        assert_eq!(RULE.settled(18), 1, "18 nodes: two groups of 9 = 3R");
    }

    #[test]
    fn settled_groups_hold_half_to_one_and_a_half_times_the_square_root() {
        // From 72 nodes on; below, the 3R margin for uneven halves holds splits back (71
        // nodes in 4 groups: 2.1 × √N).
        for n in 72..=300_000u64 {
            let level = RULE.settled(n);
            let group = n as f64 / f64::from(1u32 << level);
            let ratio = group / (n as f64).sqrt();
            assert!(
                (0.5..=1.5).contains(&ratio),
                "{n} nodes: level {level}, ratio {ratio}"
            );
        }
        assert_eq!(RULE.settled(10_000), 7, "10,000 nodes: 128 groups of 78");
    }

    #[test]
    fn every_group_holds_r_members_when_the_network_does() {
        for n in 3..5_000u64 {
            let level = RULE.settled(n);
            assert!(n >> level >= 3, "{n} nodes at level {level}");
        }
    }

    #[test]
    fn one_change_never_calls_for_the_opposite_one() {
        for n in 1..20_000u64 {
            for level in 0..10 {
                let next = RULE.next(level, n);
                if next != level {
                    // Same network, seen from the new level: it stays or goes on the same way.
                    let after = RULE.next(next, n);
                    assert_ne!(after, level, "{n} nodes, {level} -> {next} -> {after}");
                }
            }
        }
    }

    #[test]
    fn a_change_is_proposed_only_after_the_estimate_held_out_of_band() {
        let mut s = state();
        assert_eq!(
            s.observe(0, 30),
            None,
            "first out-of-band sample starts the hold"
        );
        assert_eq!(s.observe(500, 30), None);
        // Back in band (the blend of 30 and six samples of 1 is below 18): the hold restarts.
        for t in 600..606 {
            s.observe(t, 1);
        }
        assert!(s.estimate() < 18, "{}", s.estimate());
        assert_eq!(s.observe(800, 30), None);
        while s.estimate() < 18 {
            assert_eq!(s.observe(900, 30), None);
        }
        assert_eq!(s.observe(1_800, 30), None, "900 ms held of 1,000");
        let change = s.observe(1_900, 30).expect("held 1,000 ms");
        assert!(change.proposed);
        assert_eq!(change.to, Structure { epoch: 1, level: 1 });
        assert_eq!(
            s.observe(2_000, 10),
            None,
            "10 per group at level 1 is in band"
        );
    }

    #[test]
    fn the_greater_epoch_wins_and_levels_more_than_one_away_are_ignored() {
        let mut s = state();
        let far = Structure { epoch: 9, level: 3 };
        assert_eq!(s.heard(0, far, None, true), None);
        let mut joining = state();
        assert!(
            joining.heard(0, far, None, false).is_some(),
            "a joiner takes any"
        );
        let next = Structure { epoch: 1, level: 1 };
        assert!(s.heard(0, next, None, true).is_some());
        assert_eq!(
            s.heard(0, next, None, true),
            None,
            "heard again: nothing new"
        );
        assert_eq!(
            s.heard(0, Structure { epoch: 0, level: 2 }, None, true),
            None,
            "older epoch"
        );
        let back = Structure { epoch: 2, level: 0 };
        assert_eq!(s.heard(0, back, None, true).map(|c| c.to), Some(back));
    }

    #[test]
    fn heard_estimates_pull_a_node_towards_the_network_mean() {
        let mut s = state();
        s.observe(0, 150);
        for _ in 0..64 {
            s.heard(0, Structure::SINGLE, Some(100), true);
        }
        assert!((100..=101).contains(&s.estimate()), "{}", s.estimate());
        s.heard(0, Structure::SINGLE, None, true);
        assert!((100..=101).contains(&s.estimate()), "none blends nothing");
    }

    #[test]
    fn a_group_below_r_asks_for_a_merge_and_the_split_waits_for_growth() {
        let mut s = state();
        s.heard(0, Structure { epoch: 1, level: 1 }, Some(19), true);
        // Nineteen nodes, but this half holds two: R = 3 copies cannot be kept in it.
        let mut merged = None;
        for t in 1..=30 {
            merged = merged.or(s.observe(t * 100, 2));
        }
        let merged = merged.expect("a merge is proposed after the hold");
        assert_eq!(merged.to, Structure { epoch: 2, level: 0 });
        // Back in one group of 19: the rule alone would split again at once.
        assert_eq!(RULE.next(0, 19), 1);
        for t in 31..=200 {
            assert_eq!(s.observe(t * 100, 19), None, "no split back at {t}");
        }
        for level in 0..8 {
            let size = RULE.split_size(level);
            assert_eq!(
                RULE.next(level, size - 1),
                level,
                "below the split size of {level}"
            );
            assert_eq!(
                RULE.next(level, size),
                level + 1,
                "at the split size of {level}"
            );
        }
        // Grown by half of the size that splits: the split comes.
        let mut split = None;
        for t in 201..=400 {
            split = split.or(s.observe(t * 100, 28));
        }
        assert_eq!(split.map(|c| c.to.level), Some(1));
    }

    #[test]
    fn lookups_ask_the_sibling_group_while_a_split_lasts() {
        let mut s = state();
        assert_eq!(s.fallback_group(0, 0), None, "no transition");
        s.heard(100, Structure { epoch: 1, level: 1 }, None, true);
        assert_eq!(s.fallback_group(200, 1), Some(0));
        assert_eq!(s.fallback_group(200, 0), Some(1));
        assert_eq!(s.fallback_group(10_100, 1), None, "transition over");
        s.heard(20_000, Structure { epoch: 2, level: 0 }, None, true);
        assert_eq!(
            s.fallback_group(20_100, 0),
            None,
            "a merge leaves nowhere else"
        );
    }
}
