//! Local health: whether this node's own view can be trusted to shrink holder sets, trim or
//! delete.
//!
//! A node's failure detector measures silence on its own clock. A node that was paused
//! (SIGSTOP, a laptop lid, a GC pause), whose timers fired late (a starved CPU), or that
//! stopped hearing anything (its link went down) sees every member "fail" at once, and a
//! node that just restarted sees an empty view. Neither is evidence that anyone died. So:
//!
//! * **Not joined** (a restart, before the Kelips join finished): unhealthy.
//! * **Stall**: two inputs more than `max_input_gap_ms` apart; healthy again from the later
//!   one.
//! * **Deaf**: the own group has members, none heard for `t_fail_ms`, and nothing else heard
//!   either for `t_fail_ms`: healthy again from the moment the group is heard.
//! * **Settled**: healthy continuously for `settle_ms` (≥ `t_fail_ms`), so a failed flag is
//!   one earned in a healthy window. Only a settled node shrinks, trims or deletes.

use crate::Millis;

/// The health tracker.
#[derive(Debug, Clone, Default)]
pub struct Health {
    joined: bool,
    last_input: Option<Millis>,
    /// Healthy since then; `None` while unhealthy.
    healthy_since: Option<Millis>,
    deaf: bool,
    /// Last time anything at all was heard (a message of any group).
    last_heard_any: Option<Millis>,
    /// Whether a `Settled` event was reported for the current healthy stretch.
    reported_settled: bool,
}

/// What an observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// Nothing.
    None,
    /// Health was lost: a stall of this many ms (0 when the group went silent).
    Lost(u64),
}

impl Health {
    /// A node that has not joined yet: unhealthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an input at `now`; a gap over `max_gap` since the last one is a stall.
    pub fn input(&mut self, now: Millis, max_gap: Millis) -> HealthChange {
        let previous = self
            .last_input
            .replace(now.max(self.last_input.unwrap_or(0)));
        match previous {
            Some(before) if now.saturating_sub(before) > max_gap => {
                if self.joined && !self.deaf {
                    self.healthy_since = Some(now);
                }
                self.reported_settled = false;
                HealthChange::Lost(now - before)
            }
            _ => HealthChange::None,
        }
    }

    /// The time of the latest input (0 before any).
    pub fn last_input(&self) -> Millis {
        self.last_input.unwrap_or(0)
    }

    /// The Kelips join finished at `now`.
    pub fn joined(&mut self, now: Millis) {
        if !self.joined {
            self.joined = true;
            self.healthy_since = Some(now);
            self.reported_settled = false;
        }
    }

    /// Whether the Kelips join finished.
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Something (any message) was heard at `now`.
    pub fn heard(&mut self, now: Millis) {
        self.last_heard_any = Some(self.last_heard_any.map_or(now, |t| t.max(now)));
    }

    /// The own group as of `now`: `members` others, the latest heard at `last_heard` (the
    /// local time a member's stamp last rose).
    pub fn group(
        &mut self,
        now: Millis,
        members: usize,
        last_heard: Option<Millis>,
        t_fail: Millis,
    ) -> HealthChange {
        let silent = |t: Option<Millis>| t.is_none_or(|t| now.saturating_sub(t) > t_fail);
        let deaf = members > 0 && silent(last_heard) && silent(self.last_heard_any);
        if deaf && !self.deaf {
            self.deaf = true;
            self.healthy_since = None;
            self.reported_settled = false;
            return HealthChange::Lost(0);
        }
        if !deaf && self.deaf {
            self.deaf = false;
            if self.joined {
                self.healthy_since = Some(now);
            }
        }
        HealthChange::None
    }

    /// Whether the node has been healthy for `settle` by `now`.
    pub fn settled(&self, now: Millis, settle: Millis) -> bool {
        self.joined
            && !self.deaf
            && self
                .healthy_since
                .is_some_and(|since| now >= since.saturating_add(settle))
    }

    /// How long the node has been settled by `now` (0 when it is not).
    pub fn settled_for(&self, now: Millis, settle: Millis) -> Millis {
        if !self.settled(now, settle) {
            return 0;
        }
        self.healthy_since
            .map_or(0, |since| now - since.saturating_add(settle))
    }

    /// Whether a `Settled` event is due (first call after settling returns true once).
    pub fn take_settled_report(&mut self, now: Millis, settle: Millis) -> bool {
        if self.settled(now, settle) && !self.reported_settled {
            self.reported_settled = true;
            return true;
        }
        false
    }
}
