//! `quickstore simulate` (and `examples/simulate.rs`): the seeded Kelips simulator from the
//! command line.

use clap::Args;
use quickstore_behaviours::Config;
use quickstore_behaviours::sim::scenario::Scenario;

/// Simulate a Kelips network deterministically from a seed: join N nodes, insert names, kill a
/// fraction at half time, look names up throughout, print what was measured.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Affinity groups k.
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
    /// Fraction of nodes killed at once at half time.
    #[arg(long, default_value_t = 0.0)]
    pub kill_fraction: f64,
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
        Ok(Scenario {
            nodes: self.nodes,
            files: self.files,
            seconds: self.seconds,
            loss: self.loss,
            kill_fraction: self.kill_fraction,
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
        Ok(())
    }
}
