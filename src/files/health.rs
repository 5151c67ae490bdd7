//! Local health: whether this node's own view of its group is fresh enough to act on.
//!
//! The repair loop shrinks holder sets, trims copies and deletes unnamed blobs on what the
//! node's view says. A view can be wrong without anyone having died:
//!
//! * **Not joined**: a node that just (re)started has an empty or remembered view; every
//!   other holder looks absent.
//! * **Stalled**: a node that was paused (`SIGSTOP`, a laptop lid, a long GC pause) or whose
//!   CPU starved wakes up with every member's heartbeat older than `t_fail`: all look failed.
//!   Seen as a repair tick that came more than `period + t_fail / 2` after the one before.
//! * **Deaf**: a node that hears no Kelips message at all for `t_fail / 2` (its link is down)
//!   sees its members fail one by one.
//!
//! Any of these makes the node **unsettled**; it settles once it has been joined, awake and
//! hearing messages for [`SETTLE_T_FAILS`] × `t_fail` without a break, so that a member it
//! then sees as failed stayed silent while this node was listening. Only a settled node
//! changes holder sets or deletes unnamed blobs. Fetching its own missing bytes and scrubbing
//! stay allowed: they act on local evidence.
//!
//! No clock inside: the caller passes the time of each observation.

use std::time::Duration;

use tokio::time::Instant;

/// A node settles after this many `t_fail` of health.
pub const SETTLE_T_FAILS: u32 = 2;

/// What the swarm task reports of the node's state at one repair tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    /// The Kelips join finished.
    pub joined: bool,
    /// Kelips messages received so far (rises while the node hears its network).
    pub messages_in: u64,
    /// The failure timeout, `t_fail`.
    pub t_fail: Duration,
}

/// Why the node does not act on its view now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsettled {
    /// The join has not finished.
    NotJoined,
    /// The last tick came this late: the node was paused or starved.
    Stalled(Duration),
    /// No message heard for this long.
    Deaf(Duration),
    /// Healthy, but not yet for long enough (since how long).
    Settling(Duration),
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::NotJoined => write!(f, "not joined yet"),
            Unsettled::Stalled(gap) => write!(f, "stalled: a repair tick came {gap:?} late"),
            Unsettled::Deaf(quiet) => write!(f, "no message heard for {quiet:?}"),
            Unsettled::Settling(since) => write!(f, "settling: healthy for {since:?}"),
        }
    }
}

/// The health tracker of one repair loop.
#[derive(Debug)]
pub struct LocalHealth {
    /// The repair period: ticks are expected this far apart.
    period: Duration,
    last_tick: Option<Instant>,
    /// `messages_in` and when it last rose.
    heard: Option<(u64, Instant)>,
    /// Healthy without a break since then.
    healthy_since: Option<Instant>,
}

impl LocalHealth {
    /// A tracker for a loop ticking every `period`; unsettled until observed healthy.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last_tick: None,
            heard: None,
            healthy_since: None,
        }
    }

    /// Observes the node at a tick at `now`: `Ok(())` when it is settled and may act on its
    /// view, else why not.
    pub fn observe(&mut self, now: Instant, node: NodeHealth) -> Result<(), Unsettled> {
        let late = self
            .last_tick
            .replace(now)
            .map(|before| now.saturating_duration_since(before))
            .filter(|gap| *gap > self.period + node.t_fail / 2);
        let quiet = match self.heard {
            Some((count, _)) if node.messages_in > count => {
                self.heard = Some((node.messages_in, now));
                Duration::ZERO
            }
            Some((_, since)) => now.saturating_duration_since(since),
            None => {
                self.heard = Some((node.messages_in, now));
                Duration::ZERO
            }
        };
        let broken = if !node.joined {
            Some(Unsettled::NotJoined)
        } else if let Some(gap) = late {
            Some(Unsettled::Stalled(gap))
        } else if quiet > node.t_fail / 2 {
            Some(Unsettled::Deaf(quiet))
        } else {
            None
        };
        if let Some(why) = broken {
            // Healthy again from the next observation at the earliest.
            self.healthy_since = None;
            return Err(why);
        }
        let since = *self.healthy_since.get_or_insert(now);
        let healthy = now.saturating_duration_since(since);
        if healthy >= node.t_fail * SETTLE_T_FAILS {
            Ok(())
        } else {
            Err(Unsettled::Settling(healthy))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(300);
    const T_FAIL: Duration = Duration::from_millis(1500);

    fn node(joined: bool, messages_in: u64) -> NodeHealth {
        NodeHealth {
            joined,
            messages_in,
            t_fail: T_FAIL,
        }
    }

    /// Ticks every period from `start` for `span`, the node hearing a message per tick;
    /// returns the last verdict and the tick time.
    fn run(
        health: &mut LocalHealth,
        start: Instant,
        span: Duration,
        heard: &mut u64,
    ) -> (Result<(), Unsettled>, Instant) {
        let mut now = start;
        let mut verdict = Err(Unsettled::NotJoined);
        while now <= start + span {
            *heard += 1;
            verdict = health.observe(now, node(true, *heard));
            now += PERIOD;
        }
        (verdict, now)
    }

    #[test]
    fn a_node_that_has_not_joined_does_not_act() {
        let mut health = LocalHealth::new(PERIOD);
        let start = Instant::now();
        for i in 0..100 {
            let now = start + PERIOD * i;
            assert_eq!(
                health.observe(now, node(false, i.into())),
                Err(Unsettled::NotJoined)
            );
        }
    }

    #[test]
    fn a_joined_node_settles_after_two_t_fail_of_health() {
        let mut health = LocalHealth::new(PERIOD);
        let start = Instant::now();
        let mut heard = 0;
        let (verdict, _) = run(&mut health, start, T_FAIL, &mut heard);
        assert!(
            matches!(verdict, Err(Unsettled::Settling(_))),
            "{verdict:?}"
        );
        let (verdict, _) = run(&mut health, start + T_FAIL + PERIOD, T_FAIL, &mut heard);
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn a_paused_node_is_unsettled_on_waking_and_settles_again_later() {
        let mut health = LocalHealth::new(PERIOD);
        let start = Instant::now();
        let mut heard = 0;
        let (verdict, next) = run(&mut health, start, 3 * T_FAIL, &mut heard);
        assert_eq!(verdict, Ok(()));
        // Paused for 3 t_fail: the first tick after it is late; messages queued during the
        // pause arrive at once, which does not make the view fresh.
        let woke = next + 3 * T_FAIL;
        heard += 50;
        let verdict = health.observe(woke, node(true, heard));
        assert!(matches!(verdict, Err(Unsettled::Stalled(_))), "{verdict:?}");
        let (verdict, _) = run(&mut health, woke + PERIOD, T_FAIL, &mut heard);
        assert!(
            matches!(verdict, Err(Unsettled::Settling(_))),
            "{verdict:?}"
        );
        let (verdict, _) = run(&mut health, woke + T_FAIL + 2 * PERIOD, T_FAIL, &mut heard);
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn a_node_that_hears_nothing_is_unsettled() {
        let mut health = LocalHealth::new(PERIOD);
        let start = Instant::now();
        let mut heard = 0;
        let (verdict, mut now) = run(&mut health, start, 3 * T_FAIL, &mut heard);
        assert_eq!(verdict, Ok(()));
        let mut last = Ok(());
        for _ in 0..10 {
            last = health.observe(now, node(true, heard));
            now += PERIOD;
        }
        assert!(matches!(last, Err(Unsettled::Deaf(_))), "{last:?}");
    }

    #[test]
    fn a_tick_a_little_late_is_not_a_stall() {
        let mut health = LocalHealth::new(PERIOD);
        let start = Instant::now();
        let mut heard = 0;
        let (verdict, next) = run(&mut health, start, 3 * T_FAIL, &mut heard);
        assert_eq!(verdict, Ok(()));
        heard += 1;
        let verdict = health.observe(next + T_FAIL / 4, node(true, heard));
        assert_eq!(verdict, Ok(()));
    }
}
