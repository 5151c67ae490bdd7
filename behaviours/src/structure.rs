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
//!   `r² = g / 2^b = N / 4^b` should stay near 1. Up a level when `r > 2` and each half would
//!   still hold `2R` members; down when `r < ½` or the group holds fewer than `R`. The band
//!   between the two is a factor of 4 in N, so one change never calls for the opposite one.
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
        // r² = N / 4^b > 4, and each of the 2^(b+1) halves would hold ≥ 2R.
        let up = estimate > squared.saturating_mul(4)
            && estimate >= groups.saturating_mul(2).saturating_mul(2 * r);
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

    /// The groups to ask for a name with SHA-1 `digest`: the current one first, then the one
    /// under the previous structure while a transition lasts (if different).
    pub fn lookup_groups(&self, now: Millis, digest: &[u8]) -> Vec<(Structure, u32)> {
        let mut groups = vec![(self.current, self.current.group_of(digest))];
        if let Some(previous) = self.previous(now)
            && previous.level != self.current.level
        {
            groups.push((previous, previous.group_of(digest)));
        }
        groups
    }

    /// Feeds the number of live members of the own group (itself included) at `now`; returns
    /// the change this node proposes, once the blended estimate has asked for it for `hold_ms`.
    pub fn observe(&mut self, now: Millis, live_in_group: u64) -> Option<Change> {
        let level = self.current.level;
        self.blend(estimate(live_in_group, u64::from(level)));
        let wanted = self.rule.next(level, self.estimate());
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
        for n in 1..12 {
            assert_eq!(RULE.settled(n), 0, "{n} nodes");
        }
        assert_eq!(RULE.settled(12), 1, "12 nodes: two groups of 6 = 2R");
    }

    #[test]
    fn settled_groups_stay_within_a_factor_of_two_of_the_square_root() {
        for n in [64u64, 100, 1_000, 5_000, 10_000, 100_000, 1_000_000] {
            let level = RULE.settled(n);
            let group = n as f64 / f64::from(1u32 << level);
            let ratio = group / (n as f64).sqrt();
            assert!(
                (0.5..=2.0).contains(&ratio),
                "{n} nodes: level {level}, ratio {ratio}"
            );
        }
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
            s.observe(0, 20),
            None,
            "first out-of-band sample starts the hold"
        );
        assert_eq!(s.observe(500, 20), None);
        // Back in band (the blend of 20 and six samples of 1 is below 12): the hold restarts.
        for t in 600..606 {
            s.observe(t, 1);
        }
        assert!(s.estimate() < 12, "{}", s.estimate());
        assert_eq!(s.observe(800, 20), None);
        while s.estimate() < 12 {
            assert_eq!(s.observe(900, 20), None);
        }
        assert_eq!(s.observe(1_800, 20), None, "900 ms held of 1,000");
        let change = s.observe(1_900, 20).expect("held 1,000 ms");
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
    fn lookups_try_both_groups_while_a_transition_lasts() {
        let mut s = state();
        let digest = [0b1000_0000, 0, 0, 0];
        assert_eq!(s.lookup_groups(0, &digest).len(), 1);
        s.heard(100, Structure { epoch: 1, level: 1 }, None, true);
        let both = s.lookup_groups(200, &digest);
        assert_eq!(
            both,
            vec![
                (Structure { epoch: 1, level: 1 }, 1),
                (Structure::SINGLE, 0)
            ]
        );
        assert_eq!(s.lookup_groups(10_100, &digest).len(), 1, "transition over");
    }
}
