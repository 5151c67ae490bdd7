//! What a scenario run measured, and the small statistics helpers behind it.

use std::collections::BTreeMap;

use serde::Serialize;

/// The group structure at one moment of a run whose groups size themselves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StructureSample {
    /// Virtual seconds.
    pub t_s: u64,
    /// Running nodes.
    pub nodes: u64,
    /// √nodes.
    pub sqrt_nodes: f64,
    /// Groups of the structure most running nodes hold.
    pub groups: u32,
    /// Running nodes on another structure.
    pub nodes_elsewhere: u64,
    /// Running members of the smallest, median and largest group.
    pub group_min: u64,
    /// …
    pub group_median: u64,
    /// …
    pub group_max: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a run measured. Times in seconds of virtual time unless named otherwise.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Groups `k` (at the end, when groups size themselves).
    pub groups: u32,
    /// Groups that size themselves: changes of the structure most running nodes hold.
    #[serde(skip_serializing_if = "is_zero")]
    pub structure_changes: u64,
    /// Groups that size themselves: one sample a minute of the structure most running nodes
    /// hold against the network's size.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub structure_timeline: Vec<StructureSample>,
    /// Names inserted.
    pub files: usize,
    /// Virtual seconds run.
    pub seconds: u64,
    /// Message loss probability.
    pub loss: f64,
    /// Fraction killed at half time.
    pub kill_fraction: f64,
    /// Seed.
    pub seed: u64,
    /// `t_fail`.
    pub t_fail_s: f64,
    /// Gossip period.
    pub gossip_period_s: f64,
    /// Until every live node knows ≥ 99% of its live group and has a live contact for every
    /// group (None: never).
    pub converged_s: Option<f64>,
    /// The same after the kill, counted from the kill.
    pub reconverged_after_kill_s: Option<f64>,
    /// Live group members marked failed by a member of their group (outside partitions).
    pub false_positives: u64,
    /// Dead nodes added back to a view by a node that had removed them.
    pub resurrections: u64,
    /// Lookups whose first round hit a dead contact or did not resolve.
    pub contact_misses: u64,
    /// Median age of the freshest counter a member holds for a live member of its group.
    pub staleness_p50_s: f64,
    /// 99th percentile of that age.
    pub staleness_p99_s: f64,
    /// Largest such age.
    pub staleness_max_s: f64,
    /// 99th percentile of the age of the oldest counter any member holds for a live member:
    /// how long a heartbeat takes to reach the whole group (sampled every 5 s).
    pub dissemination_p99_s: f64,
    /// Largest such age seen.
    pub dissemination_max_s: f64,
    /// Kill → marked failed by every live group member that knew the node: median.
    pub detection_p50_s: f64,
    /// … 99th percentile.
    pub detection_p99_s: f64,
    /// … largest.
    pub detection_max_s: f64,
    /// Kill → removed from every group view: 99th percentile.
    pub removal_p99_s: f64,
    /// … largest.
    pub removal_max_s: f64,
    /// Dead nodes still in some group view at the end.
    pub removals_missing: u64,
    /// Kill → dropped by every node holding it as a contact: 99th percentile (of those done).
    pub contact_removal_p99_s: f64,
    /// (node, dead contact) pairs left at the end.
    pub dead_contacts_left: u64,
    /// Lookups measured (names ≥ 30 s old with a live holder).
    pub lookups: u64,
    /// Share answered in one hop (0 when local).
    pub lookup_one_hop_ratio: f64,
    /// Share that found the tuple.
    pub lookup_success_ratio: f64,
    /// Lookups that ended "not found".
    pub lookup_not_found: u64,
    /// Lookups that reached nobody able to answer.
    pub lookup_unreachable: u64,
    /// Live nodes at the end knowing < 99% of their live group.
    pub unconverged_views: u64,
    /// Live nodes at the end without a live contact for some group with live nodes.
    pub uncovered_groups: u64,
    /// Final sweep: names with a live holder looked up.
    pub final_lookups: u64,
    /// Final sweep: lookups that finished (found, not found or unreachable).
    pub final_answered: u64,
    /// Final sweep: names found.
    pub final_found: u64,
    /// After a partition ends, until views and contacts have converged again.
    pub healed_after_s: Option<f64>,
    /// Median lookup time, milliseconds.
    pub lookup_p50_ms: f64,
    /// 99th percentile lookup time, milliseconds.
    pub lookup_p99_ms: f64,
    /// Largest encoded message.
    pub max_message_bytes: usize,
    /// Bytes sent per live node per second.
    pub bytes_per_node_per_s: f64,
    /// Messages sent per live node per second.
    pub messages_per_node_per_s: f64,
    /// Messages lost on purpose.
    pub messages_lost: u64,
    /// Messages refused by receivers.
    pub messages_refused: u64,
    /// Soft state per node (sampled before the kill), bytes.
    pub state_bytes_per_node: f64,
    /// Bytes per view or contact entry (encoded + bookkeeping).
    pub view_entry_bytes: f64,
    /// Bytes per file tuple (encoded + bookkeeping).
    pub tuple_bytes: f64,
    /// Live nodes with neither group members nor contacts at the end.
    pub isolated_nodes: u64,
    /// File layer (`store` scenarios): puts started at a first home.
    pub puts_started: u64,
    /// Puts that failed (no ack).
    pub puts_failed: u64,
    /// Names whose put was acknowledged.
    pub names_acknowledged: u64,
    /// Acknowledged names with no live, intact copy at the end, not counting those below.
    pub names_lost: u64,
    /// Acknowledged names with no live copy at the end whose live copies went from below R
    /// to none within one repair window (2·t_fail + repair period + the file's transfer
    /// time at the median upload bandwidth): no repair could have saved them.
    pub names_lost_all_holders_died: u64,
    /// Acknowledged names with a live copy but fewer than R at the end.
    pub names_degraded_at_end: u64,
    /// Restores (a name's live copies fell below R and came back to R).
    pub restores: u64,
    /// From the loss of a copy to R live copies again: median, seconds.
    pub restore_p50_s: f64,
    /// … 99th percentile.
    pub restore_p99_s: f64,
    /// … largest.
    pub restore_max_s: f64,
    /// 2·t_fail + the transfer time of the largest file at the median upload bandwidth +
    /// one repair period, seconds.
    pub restore_bound_s: f64,
    /// The same bound with the largest file sent at the slowest upload bandwidth of the run's
    /// range (a transfer's time depends on its link: from this to the median form).
    pub restore_bound_slowest_link_s: f64,
    /// Bytes moved by repair copies and fetches per live node per second.
    pub repair_bytes_per_node_per_s: f64,
    /// Groups that size themselves: bytes fetched from another group (names a split moved
    /// into their new group) per node of the run; the copies that then restore R inside the
    /// new group count as repair bytes.
    pub transition_bytes_per_node: f64,
    /// Repair copies started while R listed holders were alive with intact copies.
    pub needless_repairs: u64,
    /// Holder sets published smaller than before and than min(R, live copies).
    pub holder_set_shrinks: u64,
    /// Gets (lookups of acknowledged names ≥ 30 s old, served by a listed holder).
    pub gets: u64,
    /// Share of gets that found a running, reachable listed holder with the bytes.
    pub get_success_ratio: f64,
    /// `CopiesLost` events reported by files cores.
    pub copies_lost_events: u64,
    /// Shrinks, trims or deletions held back by unsettled nodes (`ShrinkDeferred`).
    pub shrinks_deferred: u64,
    /// Files cores that lost local health (a stall or a silent group).
    pub health_lost: u64,
    /// Up to 20 lost names (either kind), described.
    pub lost_names: Vec<String>,
    /// Churn: departures (crashes), returns with the disk, newcomers replacing nodes gone
    /// for good, pauses.
    pub departures: u64,
    /// …
    pub returns: u64,
    /// …
    pub newcomers: u64,
    /// …
    pub pauses: u64,
    /// Departures of the kill window that were clean stops (`graceful_fraction`).
    pub departures_clean: u64,
    /// Hand-off copies those nodes asked for, made durable before they went, and given up
    /// (every member tried failed).
    pub hand_offs_asked: u64,
    /// …
    pub hand_offs_done: u64,
    /// …
    pub hand_offs_failed: u64,
    /// Held names a stopping node found no member to hand to (every other member held
    /// them already, as in a group of R, or lacked room): each loses a copy at the stop.
    pub hand_offs_without_member: u64,
    /// Figures per phase: `grow` (joins), `hold`, `leave` (the kill window), `after`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<crate::sim::phases::PhaseFigures>,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Messages and bytes sent per message kind.
    pub traffic_by_kind: BTreeMap<&'static str, KindTraffic>,
    /// Hash of the delivery trace (same seed, same trace).
    pub trace: String,
}

impl Report {
    /// The `structure_timeline` as a text chart, one line per sample: the smallest to the
    /// largest group drawn with `-`, the median group `M`, and √N `*` (where √N and a group
    /// size fall on one column, `#`), on a scale `width` columns wide. Empty without a
    /// timeline.
    pub fn structure_plot(&self, width: usize) -> String {
        let timeline = &self.structure_timeline;
        let top = timeline
            .iter()
            .map(|s| (s.group_max as f64).max(s.sqrt_nodes))
            .fold(1.0, f64::max);
        let width = width.max(10);
        let column = |v: f64| ((v / top) * (width - 1) as f64).round() as usize;
        let mut out = String::new();
        if timeline.is_empty() {
            return out;
        }
        out.push_str(&format!(
            "{:>6} {:>6} {:>6}  group sizes 0 … {top:.0} (- smallest to largest, M median, * √N)\n",
            "t (s)", "nodes", "groups"
        ));
        for sample in timeline {
            let mut line = vec![' '; width];
            let (low, high) = (
                column(sample.group_min as f64),
                column(sample.group_max as f64),
            );
            for cell in &mut line[low..=high.max(low)] {
                *cell = '-';
            }
            line[column(sample.group_median as f64)] = 'M';
            let root = column(sample.sqrt_nodes);
            line[root] = if line[root] == ' ' { '*' } else { '#' };
            let line: String = line.into_iter().collect();
            out.push_str(&format!(
                "{:>6} {:>6} {:>6}  |{}|\n",
                sample.t_s,
                sample.nodes,
                sample.groups,
                line.trim_end()
            ));
        }
        out
    }
}

/// Traffic of one message kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindTraffic {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Bytes per live node per second.
    pub bytes_per_node_per_s: f64,
}

/// Bins of 10 ms up to a maximum, for distributions with many samples.
pub(crate) struct Histogram {
    bins: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) max_ms: u64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            bins: vec![0; 60_001],
            count: 0,
            max_ms: 0,
        }
    }

    pub(crate) fn add(&mut self, ms: u64) {
        let bin = (ms / 10).min(60_000) as usize;
        self.bins[bin] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (bin, n) in self.bins.iter_mut().zip(&other.bins) {
            *bin += n;
        }
        self.count += other.count;
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    pub(crate) fn quantile_s(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bin, n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= target {
                return (bin as f64 * 10.0 + 10.0) / 1000.0;
            }
        }
        self.max_ms as f64 / 1000.0
    }
}

pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structure_plot_draws_group_sizes_against_the_root_of_n() {
        let sample = |t_s, nodes: u64, groups, min, median, max| StructureSample {
            t_s,
            nodes,
            sqrt_nodes: (nodes as f64).sqrt(),
            groups,
            nodes_elsewhere: 0,
            group_min: min,
            group_median: median,
            group_max: max,
        };
        let report = Report {
            structure_timeline: vec![
                sample(60, 100, 8, 9, 12, 16),
                sample(120, 400, 16, 18, 25, 30),
            ],
            ..Report::default()
        };
        let plot = report.structure_plot(31);
        let lines: Vec<&str> = plot.lines().collect();
        assert_eq!(lines.len(), 3, "{plot}");
        assert!(lines[0].contains("group sizes 0 … 30"), "{plot}");
        // 400 nodes: √N = 20 inside the span 18..30, median 25; the largest at the edge.
        let bar = lines[2].split('|').nth(1).expect("a bar");
        assert_eq!(bar.find('#'), Some(20), "{plot}");
        assert_eq!(bar.find('M'), Some(25), "{plot}");
        assert_eq!(bar.len(), 31, "{plot}");
        assert!(Report::default().structure_plot(40).is_empty());
    }
}
