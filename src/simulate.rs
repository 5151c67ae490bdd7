//! `quickstore simulate` (and `examples/simulate.rs`): the seeded Kelips simulator from the
//! command line.

use clap::Args;
use quickstore_behaviours::Config;
use quickstore_behaviours::sim::scenario::{Scenario, StoreScenario};
use quickstore_behaviours::sim::store::StoreConfig;

/// Simulate a Kelips network deterministically from a seed: join N nodes, insert names, kill a
/// fraction at half time, look names up throughout, print what was measured.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Affinity groups k; 0: groups that size themselves (k = 2^b follows the network's size).
    #[arg(long, default_value_t = 32)]
    pub groups: u32,
    /// Names inserted (R holders each, at random in the name's group).
    #[arg(long, default_value_t = 10_000)]
    pub files: usize,
    /// Virtual seconds to run.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Fraction of nodes killed at once at half time (or from --kill-at-s, over
    /// --kill-window-s).
    #[arg(long, default_value_t = 0.0)]
    pub kill_fraction: f64,
    /// When the killing starts, virtual seconds (default: half time).
    #[arg(long)]
    pub kill_at_s: Option<f64>,
    /// Spread the kills evenly over this many virtual seconds (default 0: all at once).
    #[arg(long, default_value_t = 0.0)]
    pub kill_window_s: f64,
    /// Share of the departures of the kill window that are clean stops: with --store the
    /// node hands its names off (at most 30 s, as Ctrl-C does) before it goes.
    #[arg(long, default_value_t = 0.0)]
    pub graceful_fraction: f64,
    /// Names go in from this virtual second (default: when the joins end) until 30 s before
    /// the kills.
    #[arg(long)]
    pub puts_from_s: Option<f64>,
    /// Seed: same seed, same trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups per virtual second.
    #[arg(long, default_value_t = 20.0)]
    pub lookups_per_s: f64,
    /// Nodes join at random times within this many virtual seconds (default: N/200, 10 to 60).
    #[arg(long)]
    pub join_window_s: Option<f64>,
    /// Partition the nodes in two random halves from this virtual second…
    #[arg(long, requires = "partition_end")]
    pub partition_start: Option<u64>,
    /// …to this one.
    #[arg(long)]
    pub partition_end: Option<u64>,
    /// Failure timeout t_fail, milliseconds.
    #[arg(long)]
    pub t_fail_ms: Option<u64>,
    /// Gossip period, milliseconds.
    #[arg(long)]
    pub gossip_period_ms: Option<u64>,
    /// Group members gossiped to per round.
    #[arg(long)]
    pub fanout: Option<usize>,
    /// Of those, how many are drawn uniformly (the rest ∝ 1/rtt²).
    #[arg(long)]
    pub uniform_targets: Option<usize>,
    /// Contacts gossiped to per round.
    #[arg(long)]
    pub contact_fanout: Option<usize>,
    /// Contacts per foreign group.
    #[arg(long)]
    pub contacts_per_group: Option<usize>,
    /// Full entries per group message.
    #[arg(long)]
    pub entry_ration: Option<usize>,
    /// Older entries picked at random per group message.
    #[arg(long)]
    pub random_entry_ration: Option<usize>,
    /// Own-group entries per hello.
    #[arg(long)]
    pub cross_entry_ration: Option<usize>,
    /// Contacts relayed per hello.
    #[arg(long)]
    pub cross_contact_ration: Option<usize>,
    /// Contacts asked in parallel in a lookup's first round.
    #[arg(long)]
    pub lookup_parallelism: Option<usize>,
    /// Contact staleness timeout t_contact, milliseconds.
    #[arg(long)]
    pub t_contact_ms: Option<u64>,
    /// At the end, look up every name that still has a live holder.
    #[arg(long)]
    pub final_sweep: bool,
    /// Worker threads (0: one per core). Any number gives the same result and trace.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Smallest one-way delay of a message, ms; RTTs are floored at twice it. The simulator
    /// synchronizes its threads once per this many virtual ms, so larger runs faster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_delay_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// After the report, draw group sizes against √N over time (`--groups 0`; on stderr
    /// with `--json`).
    #[arg(long)]
    pub plot: bool,
    /// The file layer's flags.
    #[command(flatten)]
    pub store: Box<StoreArgs>,
}

/// The file layer of `simulate`: files cores, churn, pauses, gets.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Run the files core beside every Kelips core: names with sizes put through it,
    /// transfers over links with bandwidths, disks, repair; gets; durability measured
    /// (names_lost, restore_p99_s, …). Implied by any of the churn and pause flags below.
    #[arg(long)]
    pub store: bool,
    /// Churn: median session length in virtual seconds (exponentially distributed);
    /// departures are crashes.
    #[arg(long)]
    pub session_median_s: Option<f64>,
    /// Share of departed nodes that come back with their disk; the others never do and a
    /// new node joins in their place.
    #[arg(long, default_value_t = 0.9)]
    pub return_fraction: f64,
    /// Median time a departed node stays away (exponential), virtual seconds.
    #[arg(long, default_value_t = 600.0)]
    pub downtime_median_s: f64,
    /// Share of the nodes paused once (they execute nothing, then resume with a stale view).
    #[arg(long, default_value_t = 0.0)]
    pub pause_fraction: f64,
    /// Length of a pause, virtual seconds.
    #[arg(long, default_value_t = 30.0)]
    pub pause_s: f64,
    /// At this virtual second one group loses all but one running member at once.
    #[arg(long)]
    pub group_failure_at_s: Option<u64>,
    /// Gets per virtual second (lookups of acknowledged names, served by a listed holder).
    #[arg(long, default_value_t = 20.0)]
    pub gets_per_s: f64,
    /// Smallest name size, bytes (sizes are log-uniform).
    #[arg(long, default_value_t = 1 << 10)]
    pub size_min_bytes: u64,
    /// Largest name size, bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub size_max_bytes: u64,
    /// Download bandwidth of a node, Mbit/s: log-uniform from this…
    #[arg(long, default_value_t = 50.0)]
    pub down_mbps_min: f64,
    /// …to this.
    #[arg(long, default_value_t = 1000.0)]
    pub down_mbps_max: f64,
    /// Upload bandwidth of a node, Mbit/s: log-uniform from this…
    #[arg(long, default_value_t = 10.0)]
    pub up_mbps_min: f64,
    /// …to this.
    #[arg(long, default_value_t = 500.0)]
    pub up_mbps_max: f64,
    /// Disk capacity of every node, GiB.
    #[arg(long, default_value_t = 256)]
    pub disk_gib: u64,
    /// Restores (repair, hand-off, fetches of a listed holder) copy from one holder, as
    /// nodes did before they pulled pieces from every holder at once (for comparisons).
    #[arg(long)]
    pub single_source_restores: bool,
}

impl SimulateArgs {
    /// The scenario these arguments describe, or the configuration key they break.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let defaults = Config::default();
        let kelips = Config {
            groups: self.groups,
            t_fail_ms: self.t_fail_ms.unwrap_or(defaults.t_fail_ms),
            gossip_period_ms: self.gossip_period_ms.unwrap_or(defaults.gossip_period_ms),
            fanout: self.fanout.unwrap_or(defaults.fanout),
            uniform_targets: self.uniform_targets.unwrap_or(defaults.uniform_targets),
            contact_fanout: self.contact_fanout.unwrap_or(defaults.contact_fanout),
            contacts_per_group: self
                .contacts_per_group
                .unwrap_or(defaults.contacts_per_group),
            entry_ration: self.entry_ration.unwrap_or(defaults.entry_ration),
            random_entry_ration: self
                .random_entry_ration
                .unwrap_or(defaults.random_entry_ration),
            t_contact_ms: self.t_contact_ms.unwrap_or(defaults.t_contact_ms),
            cross_entry_ration: self
                .cross_entry_ration
                .unwrap_or(defaults.cross_entry_ration),
            cross_contact_ration: self
                .cross_contact_ration
                .unwrap_or(defaults.cross_contact_ration),
            lookup_parallelism: self
                .lookup_parallelism
                .unwrap_or(defaults.lookup_parallelism),
            ..defaults
        };
        kelips.validate()?;
        let flags = &*self.store;
        let store = flags.store
            || flags.session_median_s.is_some()
            || flags.pause_fraction > 0.0
            || flags.group_failure_at_s.is_some();
        anyhow::ensure!(
            flags.size_min_bytes > 0
                && [
                    flags.down_mbps_min,
                    flags.down_mbps_max,
                    flags.up_mbps_min,
                    flags.up_mbps_max
                ]
                .iter()
                .all(|mbps| mbps.is_finite() && *mbps > 0.0),
            "sizes and bandwidths must be positive"
        );
        let store = store.then(|| StoreScenario {
            config: StoreConfig {
                size_min: flags.size_min_bytes,
                size_max: flags.size_max_bytes.max(flags.size_min_bytes),
                down_mbps: (flags.down_mbps_min, flags.down_mbps_max),
                up_mbps: (flags.up_mbps_min, flags.up_mbps_max),
                disk_bytes: flags.disk_gib << 30,
                single_source_restores: flags.single_source_restores,
                ..StoreConfig::default()
            },
            session_median_s: flags.session_median_s,
            return_fraction: flags.return_fraction.clamp(0.0, 1.0),
            downtime_median_s: flags.downtime_median_s,
            pause_fraction: flags.pause_fraction.clamp(0.0, 1.0),
            pause_s: flags.pause_s,
            group_failure_at_s: flags.group_failure_at_s,
            gets_per_s: flags.gets_per_s,
        });
        Ok(Scenario {
            nodes: self.nodes,
            files: self.files,
            seconds: self.seconds,
            loss: self.loss,
            kill_fraction: self.kill_fraction,
            kill_at_s: self.kill_at_s,
            kill_window_s: self.kill_window_s,
            graceful_fraction: self.graceful_fraction.clamp(0.0, 1.0),
            puts_from_s: self.puts_from_s,
            seed: self.seed,
            lookups_per_s: self.lookups_per_s,
            join_window_s: self
                .join_window_s
                .unwrap_or_else(|| (self.nodes as f64 / 200.0).clamp(10.0, 60.0)),
            partition: self.partition_start.zip(self.partition_end),
            final_sweep: self.final_sweep,
            kelips,
            threads: self.threads,
            min_delay_ms: self.min_delay_ms,
            store,
            ..Scenario::default()
        })
    }

    /// Runs the simulation and prints the report.
    pub fn run(&self) -> anyhow::Result<()> {
        let report = self.scenario()?.run();
        let value = serde_json::to_value(&report)?;
        if self.json {
            println!("{}", serde_json::to_string(&value)?);
        } else if let serde_json::Value::Object(fields) = value {
            for (key, value) in fields {
                println!("{key:<28} {value}");
            }
        }
        if self.plot {
            let plot = report.structure_plot(72);
            if self.json {
                eprint!("{plot}");
            } else {
                print!("{plot}");
            }
        }
        Ok(())
    }
}
