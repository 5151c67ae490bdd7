//! Figures per phase of a run: `grow` (the joins), `hold`, `leave` (the kill window) and
//! `after`. The run marks its cumulative counters at the end of each phase; a phase's
//! figures are the differences between two marks.

use serde::Serialize;

use crate::Millis;

/// A run's cumulative counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub lookups: u64,
    pub found: u64,
    pub one_hop: u64,
    /// Kelips bytes sent.
    pub bytes: u64,
    /// Running node-milliseconds.
    pub node_ms: u128,
    pub gets: u64,
    pub gets_ok: u64,
    pub repair_bytes: u64,
    pub transition_bytes: u64,
    /// Running nodes now (not cumulative).
    pub running: u64,
}

/// The figures of one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseFigures {
    /// `grow`, `hold`, `leave` or `after`.
    pub phase: &'static str,
    /// Virtual seconds.
    pub from_s: f64,
    /// …
    pub to_s: f64,
    /// Running nodes at the start and at the end.
    pub nodes_at_start: u64,
    /// …
    pub nodes_at_end: u64,
    /// Lookups answered in the phase, and the shares found and found in one hop.
    pub lookups: u64,
    /// …
    pub lookup_success_ratio: f64,
    /// …
    pub lookup_one_hop_ratio: f64,
    /// Gets in the phase and the share served.
    pub gets: u64,
    /// …
    pub get_success_ratio: f64,
    /// Kelips bytes per running node per second.
    pub bytes_per_node_per_s: f64,
    /// Repair bytes (copies and fetches) per running node per second.
    pub repair_bytes_per_node_per_s: f64,
    /// Bytes fetched across groups (names a split moved) per node: divided by the larger
    /// of the running nodes at the start and at the end.
    pub transition_bytes_per_node: f64,
}

/// The phases of a run and the counters marked at the end of each.
pub(crate) struct Phases {
    /// Each phase's name and end, in order.
    ends: Vec<(&'static str, Millis)>,
    /// The counters at the start, then at the end of each phase marked so far.
    marks: Vec<(Millis, Counters)>,
}

impl Phases {
    /// Phases of a run of `end` ms whose joins end at `join_end` and whose departures (if
    /// any) start at `kill_at` and last `kill_window` ms. Empty phases are left out.
    pub fn new(join_end: Millis, departures: Option<(Millis, Millis)>, end: Millis) -> Self {
        let mut ends = vec![("grow", join_end.min(end))];
        match departures {
            Some((at, window)) => {
                ends.push(("hold", at.min(end)));
                ends.push(("leave", (at + window).min(end)));
                ends.push(("after", end));
            }
            None => ends.push(("hold", end)),
        }
        let mut start = 0;
        ends.retain(|&(_, to)| {
            let keep = to > start;
            start = start.max(to);
            keep
        });
        Self {
            ends,
            marks: vec![(0, Counters::default())],
        }
    }

    /// Whether the next phase not marked yet has ended by `t`.
    pub fn due(&self, t: Millis) -> bool {
        self.ends
            .get(self.marks.len() - 1)
            .is_some_and(|&(_, to)| t >= to)
    }

    /// Marks the end of the next phase with the counters at `t`.
    pub fn mark(&mut self, t: Millis, counters: Counters) {
        self.marks.push((t, counters));
    }

    /// The figures of every phase marked.
    pub fn figures(&self) -> Vec<PhaseFigures> {
        let ratio = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        self.ends
            .iter()
            .zip(self.marks.windows(2))
            .map(|(&(phase, _), pair)| {
                let ((from, a), (to, b)) = (pair[0], pair[1]);
                let node_s = ((b.node_ms - a.node_ms) as f64 / 1000.0).max(1.0);
                let lookups = b.lookups - a.lookups;
                let gets = b.gets - a.gets;
                PhaseFigures {
                    phase,
                    from_s: from as f64 / 1000.0,
                    to_s: to as f64 / 1000.0,
                    nodes_at_start: a.running,
                    nodes_at_end: b.running,
                    lookups,
                    lookup_success_ratio: ratio(b.found - a.found, lookups),
                    lookup_one_hop_ratio: ratio(b.one_hop - a.one_hop, lookups),
                    gets,
                    get_success_ratio: ratio(b.gets_ok - a.gets_ok, gets),
                    bytes_per_node_per_s: (b.bytes - a.bytes) as f64 / node_s,
                    repair_bytes_per_node_per_s: (b.repair_bytes - a.repair_bytes) as f64 / node_s,
                    transition_bytes_per_node: (b.transition_bytes - a.transition_bytes) as f64
                        / a.running.max(b.running).max(1) as f64,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lookups: u64, found: u64, node_ms: u128, running: u64) -> Counters {
        Counters {
            lookups,
            found,
            one_hop: found,
            node_ms,
            running,
            ..Counters::default()
        }
    }

    #[test]
    fn a_phase_counts_only_what_happened_in_it() {
        let mut phases = Phases::new(10_000, Some((20_000, 5_000)), 30_000);
        assert!(!phases.due(9_900));
        assert!(phases.due(10_000));
        phases.mark(10_000, at(100, 90, 50_000, 10));
        assert!(!phases.due(19_900));
        phases.mark(20_000, at(300, 290, 150_000, 10));
        phases.mark(25_000, at(350, 330, 180_000, 2));
        assert!(phases.due(30_000));
        phases.mark(30_000, at(360, 340, 190_000, 2));
        assert!(!phases.due(40_000), "every phase marked");
        let figures = phases.figures();
        let names: Vec<&str> = figures.iter().map(|f| f.phase).collect();
        assert_eq!(names, ["grow", "hold", "leave", "after"]);
        assert_eq!(figures[1].lookups, 200);
        assert_eq!(figures[1].lookup_success_ratio, 1.0);
        assert_eq!(figures[2].lookup_success_ratio, 40.0 / 50.0);
        assert_eq!(
            (figures[2].nodes_at_start, figures[2].nodes_at_end),
            (10, 2)
        );
    }

    #[test]
    fn empty_phases_are_left_out() {
        // No departures, and joins that end at once: one phase.
        let phases = Phases::new(0, None, 30_000);
        assert_eq!(phases.ends, vec![("hold", 30_000)]);
        // Departures all at once: no leave phase.
        let phases = Phases::new(10_000, Some((20_000, 0)), 30_000);
        let names: Vec<&str> = phases.ends.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["grow", "hold", "after"]);
    }
}
