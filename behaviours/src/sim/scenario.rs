//! The standard scenario behind `examples/simulate.rs` and the cluster tests: join N nodes,
//! insert F names, look names up throughout, kill a fraction at half time, optionally
//! partition and heal, and measure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::measure::{KillWatch, converged, convergence_gaps, sample_staleness, sample_state};
use super::phases::{Counters, Phases};
use super::report::{Histogram, KindTraffic, Report, quantile};
use super::store::{Store, StoreConfig, name_of};
use super::{SimConfig, Simulator};
use crate::Millis;
use crate::config::Config;
use crate::id::{Grouping, SimId};
use crate::node::{Event, LookupOutcome, LookupResult};
use crate::tuple::{FileTuple, Version};

/// Messages and bytes sent, per message kind.
type TrafficByKind = BTreeMap<&'static str, (u64, u64)>;

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes.
    pub nodes: usize,
    /// Names inserted.
    pub files: usize,
    /// Virtual seconds.
    pub seconds: u64,
    /// Message loss probability.
    pub loss: f64,
    /// Fraction of the nodes killed at `kill_at_s` (at once, or spread over
    /// `kill_window_s`).
    pub kill_fraction: f64,
    /// When the killing starts, virtual seconds (None: half time).
    pub kill_at_s: Option<f64>,
    /// The kills are spread evenly over this many virtual seconds (0: all at once, with the
    /// detection and removal figures of a mass failure).
    pub kill_window_s: f64,
    /// Share of the departures of the kill window that are clean stops (Ctrl-C): with files,
    /// the node hands its names off for at most [`HAND_OFF_LIMIT_MS`] (the node's default)
    /// before it goes; the others crash. Either way the node is gone for good.
    pub graceful_fraction: f64,
    /// Names go in from this virtual second (None: when the joins end) until 30 s before the
    /// kill (or the end).
    pub puts_from_s: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Lookups started per virtual second.
    pub lookups_per_s: f64,
    /// Nodes join at random times in `[0, join_window_s)`.
    pub join_window_s: f64,
    /// Optional partition into two random halves: (start, end) in virtual seconds.
    pub partition: Option<(u64, u64)>,
    /// At the end, look up every inserted name that still has a live holder (from a random
    /// live node each) and report how many resolve.
    pub final_sweep: bool,
    /// Kelips parameters (groups included).
    pub kelips: Config,
    /// Simulator threads ([`SimConfig::threads`]: 0 = one per core).
    pub threads: usize,
    /// See [`SimConfig::parallel_min_nodes`].
    pub parallel_min_nodes: usize,
    /// Smallest one-way delay and window length, ms ([`SimConfig::min_delay_ms`]).
    pub min_delay_ms: Millis,
    /// The file layer: a files core beside every Kelips core, names put through it, churn,
    /// pauses and gets. None: tuples are published directly at R random members (the
    /// membership scenarios).
    pub store: Option<StoreScenario>,
}

/// What the file layer runs.
#[derive(Debug, Clone)]
pub struct StoreScenario {
    /// Sizes, links, disks, files cores.
    pub config: StoreConfig,
    /// Churn: median session length (exponentially distributed), seconds. None: no churn.
    pub session_median_s: Option<f64>,
    /// Share of departures that come back (with their disk); the others never do, and a
    /// new node takes their place.
    pub return_fraction: f64,
    /// Median time a departed node stays away before returning (exponential), seconds.
    pub downtime_median_s: f64,
    /// Share of the nodes paused once, at a random time, for `pause_s`.
    pub pause_fraction: f64,
    /// Length of a pause, seconds.
    pub pause_s: f64,
    /// At this virtual second one group loses all but one running member at once (for good).
    pub group_failure_at_s: Option<u64>,
    /// Gets per virtual second.
    pub gets_per_s: f64,
}

impl Default for StoreScenario {
    fn default() -> Self {
        Self {
            config: StoreConfig::default(),
            session_median_s: None,
            return_fraction: 0.9,
            downtime_median_s: 600.0,
            pause_fraction: 0.0,
            pause_s: 30.0,
            group_failure_at_s: None,
            gets_per_s: 20.0,
        }
    }
}

/// A node's change of state, due at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Churn {
    Depart,
    Return,
    Pause,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            nodes: 1000,
            files: 1000,
            seconds: 120,
            loss: 0.0,
            kill_fraction: 0.0,
            kill_at_s: None,
            kill_window_s: 0.0,
            graceful_fraction: 0.0,
            puts_from_s: None,
            seed: 1,
            lookups_per_s: 20.0,
            join_window_s: 10.0,
            partition: None,
            final_sweep: false,
            kelips: Config::default(),
            threads: 0,
            parallel_min_nodes: SimConfig::default().parallel_min_nodes,
            min_delay_ms: SimConfig::default().min_delay_ms,
            store: None,
        }
    }
}

impl Scenario {
    /// Runs the scenario and measures it.
    pub fn run(&self) -> Report {
        let wall = Instant::now();
        let mut run = Run::new(self);
        let end = self.seconds * 1000;
        let mut t = 0;
        while t < end {
            t += STEP_MS;
            run.step(t);
        }
        // Traffic is accounted over the run proper; the sweep's lookups are not part of it.
        let traffic = (run.sim.traffic(), run.sim.traffic_by_kind().clone());
        if self.final_sweep {
            run.final_sweep(end);
        }
        run.traffic = Some(traffic);
        let mut report = run.finish();
        report.wall_s = wall.elapsed().as_secs_f64();
        report
    }

    /// Spare node slots for newcomers replacing nodes that leave for good under churn.
    fn spares(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        let Some(median) = store.session_median_s else {
            return 0;
        };
        let mean = median / std::f64::consts::LN_2;
        let departures = self.nodes as f64 * self.seconds as f64 / mean.max(1.0);
        (departures * (1.0 - store.return_fraction) * 1.5).ceil() as usize + 8
    }

    fn kill_at(&self) -> Millis {
        match self.kill_at_s {
            Some(at) => (at * 1000.0) as Millis,
            None => self.seconds * 1000 / 2,
        }
    }

    fn join_end(&self) -> Millis {
        (self.join_window_s * 1000.0) as Millis
    }
}

/// An exponentially distributed duration with median `median_s` seconds, in ms.
fn exponential_ms(rng: &mut ChaCha8Rng, median_s: f64) -> Millis {
    let mean_ms = median_s * 1000.0 / std::f64::consts::LN_2;
    let u: f64 = rng.random_range(0.0..1.0);
    (-mean_ms * (1.0 - u).ln()) as Millis
}

/// Granularity of the scenario's own actions (the simulator itself runs to the millisecond).
const STEP_MS: Millis = 100;
/// How long a node stopping cleanly hands its names off at most, ms: the node's default
/// (`files.io_timeout_ms`, 30 s).
pub const HAND_OFF_LIMIT_MS: Millis = 30_000;
/// Gossip periods a node that handed everything off keeps running, so the new holder sets
/// spread (as the node's driver does).
const HAND_OFF_LINGER_PERIODS: u64 = 3;
/// Names are looked up only once they are this old.
const LOOKUP_AFTER_MS: Millis = 30_000;

/// A node stopping cleanly.
struct Leaving {
    asked: usize,
    deadline: Millis,
    linger_until: Option<Millis>,
}

/// Ground truth of one inserted name.
struct Inserted {
    name: String,
    at: Millis,
    holders: Vec<u32>,
}

/// Node slots `0..slots` by group under `grouping`.
fn members_by_group(grouping: Grouping, slots: usize) -> Vec<Vec<u32>> {
    let mut members_of = vec![Vec::new(); grouping.groups() as usize];
    for i in 0..slots as u32 {
        members_of[grouping.id_facts(&SimId(i)).group as usize].push(i);
    }
    members_of
}

/// A scenario in progress.
struct Run<'a> {
    scenario: &'a Scenario,
    sim: Simulator,
    rng: ChaCha8Rng,
    /// The ground truth's groups: the fixed k, or (groups that size themselves) the structure
    /// most running nodes hold, followed every second.
    grouping: Grouping,
    members_of: Vec<Vec<u32>>,
    joins: std::iter::Peekable<std::vec::IntoIter<(Millis, u32)>>,
    started: Vec<u32>,
    inserts: std::iter::Peekable<std::vec::IntoIter<Millis>>,
    inserted: Vec<Inserted>,
    asked: BTreeMap<(u32, u64), Millis>,
    lookup_ms: Vec<f64>,
    one_hop: u64,
    found: u64,
    staleness: Histogram,
    dissemination: Histogram,
    kill: Option<KillWatch>,
    /// Nodes to kill over the kill window (fixed when it opens), and killed so far.
    kill_target: Option<usize>,
    killed_gradually: usize,
    /// Nodes stopping cleanly: the hand-offs they asked for, when they go at the latest, and
    /// (once every hand-off is done) when they go.
    leaving: BTreeMap<u32, Leaving>,
    phases: Phases,
    partitioned: bool,
    node_ms: u128,
    lookup_credit: f64,
    traffic: Option<(super::Traffic, TrafficByKind)>,
    report: Report,
    store: Option<Store>,
    churn: BTreeMap<(Millis, u32), Churn>,
    spares: std::ops::Range<u32>,
    get_credit: f64,
    group_failed: bool,
}

impl<'a> Run<'a> {
    fn new(scenario: &'a Scenario) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5eed);
        let spares = scenario.spares();
        let slots = scenario.nodes + spares;
        let mut sim = Simulator::new(SimConfig {
            nodes: slots,
            seed: scenario.seed,
            loss: scenario.loss,
            kelips: scenario.kelips.clone(),
            threads: scenario.threads,
            parallel_min_nodes: scenario.parallel_min_nodes,
            min_delay_ms: scenario.min_delay_ms,
            ..SimConfig::default()
        });
        let k = scenario.kelips.groups;
        let join_end = scenario.join_end().max(1);
        // Node 0 founds at 0; the others join at random times in the window.
        let mut joins: Vec<(Millis, u32)> = (1..scenario.nodes as u32)
            .map(|i| (rng.random_range(0..join_end), i))
            .collect();
        joins.sort_unstable();
        let mut store = scenario.store.as_ref().map(|store| {
            let mut config = store.config.clone();
            config.files.t_fail_ms = scenario.kelips.t_fail_ms;
            config.files.settle_ms = config.files.settle_ms.max(config.files.t_fail_ms);
            config.files.replication = scenario.kelips.replication;
            Store::new(config, slots, scenario.seed)
        });
        if let Some(store) = &mut store {
            sim.set_files(0, store.files_core(0, 0));
        }
        sim.start(0, &[]);
        if let Some(store) = &mut store {
            store.node_started(&mut sim, 0, 0);
        }
        // Names go in between the end of joins (or `puts_from_s`) and 30 s before the kill.
        let insert_start = scenario
            .puts_from_s
            .map_or(join_end, |s| (s * 1000.0) as Millis);
        let insert_end = scenario
            .kill_at()
            .saturating_sub(LOOKUP_AFTER_MS)
            .max(insert_start + 1);
        let mut inserts: Vec<Millis> = (0..scenario.files)
            .map(|_| rng.random_range(insert_start..insert_end))
            .collect();
        inserts.sort_unstable();
        let grouping = if scenario.kelips.self_sizing() {
            Grouping::Prefix(0)
        } else {
            Grouping::Fixed(k)
        };
        let members_of = members_by_group(grouping, slots);
        let report = Report {
            nodes: scenario.nodes,
            groups: k,
            files: scenario.files,
            seconds: scenario.seconds,
            loss: scenario.loss,
            kill_fraction: scenario.kill_fraction,
            seed: scenario.seed,
            t_fail_s: scenario.kelips.t_fail_ms as f64 / 1000.0,
            gossip_period_s: scenario.kelips.gossip_period_ms as f64 / 1000.0,
            ..Report::default()
        };
        let mut churn = BTreeMap::new();
        if let Some(store) = &scenario.store {
            let end = scenario.seconds * 1000;
            let pause_ms = (store.pause_s * 1000.0) as Millis;
            let last = end.saturating_sub(pause_ms).max(join_end + 1);
            let count = (scenario.nodes as f64 * store.pause_fraction).round() as usize;
            for j in rand::seq::index::sample(&mut rng, scenario.nodes, count.min(scenario.nodes)) {
                let at = rng.random_range(join_end..last);
                churn.insert((at, j as u32), Churn::Pause);
            }
        }
        let mut run = Self {
            scenario,
            sim,
            rng,
            grouping,
            members_of,
            joins: joins.into_iter().peekable(),
            started: vec![0],
            inserts: inserts.into_iter().peekable(),
            inserted: Vec::new(),
            asked: BTreeMap::new(),
            lookup_ms: Vec::new(),
            one_hop: 0,
            found: 0,
            staleness: Histogram::new(),
            dissemination: Histogram::new(),
            kill: None,
            kill_target: None,
            killed_gradually: 0,
            leaving: BTreeMap::new(),
            phases: Phases::new(
                join_end,
                (scenario.kill_fraction > 0.0).then(|| {
                    (
                        scenario.kill_at(),
                        (scenario.kill_window_s * 1000.0) as Millis,
                    )
                }),
                scenario.seconds * 1000,
            ),
            partitioned: false,
            node_ms: 0,
            lookup_credit: 0.0,
            traffic: None,
            report,
            store,
            churn,
            spares: scenario.nodes as u32..slots as u32,
            get_credit: 0.0,
            group_failed: false,
        };
        run.schedule_departure(0, 0);
        run
    }

    /// Starts (or restarts) node `i` now, through `bootstraps`, with a files core in store
    /// scenarios; schedules its departure under churn.
    fn start_node(&mut self, i: u32, bootstraps: &[u32]) {
        let now = self.sim.now();
        if let Some(store) = &mut self.store {
            let files = store.files_core(i, now);
            self.sim.set_files(i, files);
        }
        self.sim.start(i, bootstraps);
        if let Some(store) = &mut self.store {
            store.node_started(&mut self.sim, i, now);
        }
        self.schedule_departure(i, now);
    }

    fn schedule_departure(&mut self, i: u32, now: Millis) {
        let Some(median) = self
            .scenario
            .store
            .as_ref()
            .and_then(|s| s.session_median_s)
        else {
            return;
        };
        let at = now + exponential_ms(&mut self.rng, median);
        self.churn.insert((at, i), Churn::Depart);
    }

    /// Three random nodes started before.
    fn bootstraps(&mut self) -> Vec<u32> {
        (0..3)
            .map(|_| self.started[self.rng.random_range(0..self.started.len())])
            .collect()
    }

    /// Departures, returns and pauses due by `t`, and the group failure.
    fn run_churn(&mut self, t: Millis) {
        while let Some(entry) = self.churn.first_entry() {
            let (at, i) = *entry.key();
            if at > t {
                break;
            }
            let what = entry.remove();
            self.sim.run_until(at);
            let Some(store_scenario) = self.scenario.store.as_ref() else {
                continue;
            };
            match what {
                Churn::Depart => {
                    if !self.sim.is_alive(i) {
                        continue;
                    }
                    let permanent = !self.rng.random_bool(store_scenario.return_fraction);
                    self.sim.kill(i);
                    self.report.departures += 1;
                    if let Some(store) = &mut self.store {
                        store.node_died(&self.sim, i, at, permanent);
                    }
                    if permanent {
                        if let Some(spare) = self.spares.next() {
                            let bootstraps = self.bootstraps();
                            self.start_node(spare, &bootstraps);
                            self.started.push(spare);
                            self.report.newcomers += 1;
                        }
                    } else {
                        let back =
                            at + exponential_ms(&mut self.rng, store_scenario.downtime_median_s);
                        self.churn.insert((back, i), Churn::Return);
                    }
                }
                Churn::Return => {
                    if self.sim.is_alive(i) {
                        continue;
                    }
                    let bootstraps = self.bootstraps();
                    self.start_node(i, &bootstraps);
                    self.report.returns += 1;
                }
                Churn::Pause => {
                    if self.sim.is_running(i) {
                        let pause_ms = (store_scenario.pause_s * 1000.0) as Millis;
                        self.sim.pause(i, at + pause_ms);
                        self.report.pauses += 1;
                    }
                }
            }
        }
        if let Some(at) = self
            .scenario
            .store
            .as_ref()
            .and_then(|s| s.group_failure_at_s)
            && !self.group_failed
            && t >= at * 1000
        {
            self.group_failed = true;
            self.fail_group(t);
        }
    }

    /// One group loses all but one running member at once, for good.
    fn fail_group(&mut self, t: Millis) {
        let candidates: Vec<usize> = (0..self.members_of.len())
            .filter(|&g| {
                self.members_of[g]
                    .iter()
                    .filter(|&&i| self.sim.is_running(i))
                    .count()
                    >= 2
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let g = candidates[self.rng.random_range(0..candidates.len())];
        let running: Vec<u32> = self.members_of[g]
            .iter()
            .copied()
            .filter(|&i| self.sim.is_running(i))
            .collect();
        let keep = running[self.rng.random_range(0..running.len())];
        for i in running {
            if i == keep {
                continue;
            }
            self.sim.kill(i);
            self.report.departures += 1;
            if let Some(store) = &mut self.store {
                store.node_died(&self.sim, i, t, true);
            }
        }
    }

    /// Gets due by `t`: acknowledged names at least 30 s old, from random running nodes.
    fn start_gets(&mut self, t: Millis) {
        let Some(rate) = self.scenario.store.as_ref().map(|s| s.gets_per_s) else {
            return;
        };
        self.get_credit += rate * STEP_MS as f64 / 1000.0;
        while self.get_credit >= 1.0 {
            self.get_credit -= 1.0;
            let old_enough = t.saturating_sub(LOOKUP_AFTER_MS);
            let count = self.inserted.partition_point(|n| n.at <= old_enough);
            if count == 0 {
                continue;
            }
            let name = self.inserted[self.rng.random_range(0..count)].name.clone();
            let origin = self.rng.random_range(0..self.sim.len() as u32);
            if !self.sim.is_running(origin) || !self.sim.node(origin).is_some_and(|n| n.is_joined())
            {
                continue;
            }
            if let Some(store) = &mut self.store {
                store.get(&mut self.sim, origin, &name);
            }
        }
    }

    fn step(&mut self, t: Millis) {
        self.start_joiners(t);
        self.run_churn(t);
        self.insert_names(t);
        self.update_partition(t);
        if self.scenario.kill_window_s > 0.0 {
            self.kill_gradually(t);
        } else if self.kill.is_none()
            && self.scenario.kill_fraction > 0.0
            && t >= self.scenario.kill_at()
        {
            self.kill(t);
        }
        self.start_lookups(t);
        self.start_gets(t);
        self.sim.run_until(t);
        if let Some(store) = &mut self.store {
            store.process(&mut self.sim);
            for (name, at, holders) in store.take_acknowledged() {
                self.inserted.push(Inserted { name, at, holders });
            }
        }
        if !self.leaving.is_empty() {
            self.finish_departures(t);
        }
        let live = (0..self.sim.len() as u32)
            .filter(|&i| self.sim.is_alive(i))
            .count();
        self.node_ms += live as u128 * u128::from(STEP_MS);
        while self.phases.due(t) {
            let counters = self.counters(live as u64);
            self.phases.mark(t, counters);
        }
        for (at, node, event) in self.sim.take_events() {
            self.observe(at, node, event);
        }
        if t.is_multiple_of(1000) {
            self.every_second(t);
        }
    }

    /// Nodes due to join by `t`, each through three random nodes started before it.
    fn start_joiners(&mut self, t: Millis) {
        while let Some((at, i)) = self.joins.next_if(|(at, _)| *at <= t) {
            self.sim.run_until(at);
            let bootstraps = self.bootstraps();
            self.start_node(i, &bootstraps);
            self.started.push(i);
        }
    }

    /// Names due by `t`: R holders at random among the live, joined nodes of the name's group;
    /// every holder publishes the tuple, as the home nodes of a put do.
    fn insert_names(&mut self, t: Millis) {
        let grouping = self.grouping;
        if self.store.is_some() {
            while self.inserts.next_if(|at| *at <= t).is_some() {
                let Some(store) = &mut self.store else {
                    return;
                };
                let name = name_of(store.names_len());
                let group = grouping.name_facts(&name).0 as usize;
                store.put(&mut self.sim, &self.members_of[group], t);
            }
            return;
        }
        while let Some(at) = self.inserts.next_if(|at| *at <= t) {
            let name = format!("file-{}", self.inserted.len());
            let sim = &self.sim;
            let live: Vec<u32> = self.members_of[grouping.name_facts(&name).0 as usize]
                .iter()
                .copied()
                .filter(|&i| sim.node(i).is_some_and(|n| n.is_joined()))
                .collect();
            if live.is_empty() {
                continue;
            }
            let count = self.scenario.kelips.replication.min(live.len());
            let holders: Vec<u32> = rand::seq::index::sample(&mut self.rng, live.len(), count)
                .into_iter()
                .map(|j| live[j])
                .collect();
            let mut blake3 = [0u8; 32];
            self.rng.fill(&mut blake3);
            let tuple = FileTuple {
                name: name.as_str().into(),
                version: Version { lamport: 1, blake3 },
                size: self.rng.random_range(0..1 << 30),
                holders: holders.iter().map(|&h| SimId(h)).collect(),
                epoch: 0,
                deleted: false,
                auth: None,
            };
            for &holder in &holders {
                self.sim.publish(holder, tuple.clone());
            }
            self.inserted.push(Inserted { name, at, holders });
        }
    }

    fn update_partition(&mut self, t: Millis) {
        let Some((from, to)) = self.scenario.partition else {
            return;
        };
        if !self.partitioned && t >= from * 1000 && t < to * 1000 {
            let labels = (0..self.scenario.nodes)
                .map(|_| self.rng.random_range(0..2u8))
                .collect();
            self.sim.partition(labels);
            self.partitioned = true;
        } else if self.partitioned && t >= to * 1000 {
            self.sim.heal();
            self.partitioned = false;
        }
    }

    /// Kills spread over the window: by each second, the share of the window elapsed of
    /// the nodes live when it opened (crashes; each dead for good).
    fn kill_gradually(&mut self, t: Millis) {
        let start = self.scenario.kill_at();
        let window = (self.scenario.kill_window_s * 1000.0) as Millis;
        if self.scenario.kill_fraction <= 0.0 || t < start || !t.is_multiple_of(1000) {
            return;
        }
        let target = *self.kill_target.get_or_insert_with(|| {
            let live = (0..self.scenario.nodes as u32)
                .filter(|&i| self.sim.is_alive(i))
                .count();
            ((live as f64) * self.scenario.kill_fraction).round() as usize
        });
        let elapsed = (t - start).min(window);
        let due = (target as u128 * u128::from(elapsed) / u128::from(window.max(1))) as usize;
        while self.killed_gradually < due {
            let live: Vec<u32> = (0..self.scenario.nodes as u32)
                .filter(|&i| self.sim.is_alive(i) && !self.leaving.contains_key(&i))
                .collect();
            if live.is_empty() {
                return;
            }
            let d = live[self.rng.random_range(0..live.len())];
            let fraction = self.scenario.graceful_fraction.clamp(0.0, 1.0);
            if fraction > 0.0 && self.rng.random_bool(fraction) {
                self.depart_cleanly(d, t);
            } else {
                self.crash(d, t);
            }
            self.killed_gradually += 1;
        }
    }

    /// Node `d` crashes at `t`, for good (its disk with it).
    fn crash(&mut self, d: u32, t: Millis) {
        self.sim.kill(d);
        if let Some(store) = &mut self.store {
            store.node_died(&self.sim, d, t, true);
        }
    }

    /// Node `d` stops cleanly at `t`: it hands its names off (with files), then goes.
    fn depart_cleanly(&mut self, d: u32, t: Millis) {
        self.report.departures_clean += 1;
        let start = if self.store.is_some() {
            self.sim
                .files_input(d, |files, now| files.hand_off(now))
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let asked = start.asked;
        self.report.hand_offs_asked += asked as u64;
        self.report.hand_offs_without_member += start.without_member as u64;
        if asked == 0 {
            self.crash(d, t);
            return;
        }
        self.leaving.insert(
            d,
            Leaving {
                asked,
                deadline: t + HAND_OFF_LIMIT_MS,
                linger_until: None,
            },
        );
    }

    /// Nodes stopping cleanly go once their hand-offs are finished (durable or given up, and
    /// the sets had a few gossip periods to spread) or their time is up.
    fn finish_departures(&mut self, t: Millis) {
        let linger = HAND_OFF_LINGER_PERIODS * self.scenario.kelips.gossip_period_ms;
        let mut gone = Vec::new();
        for (&d, leaving) in &mut self.leaving {
            let handed = self.store.as_ref().map_or(0, |s| s.hand_offs_finished(d));
            if handed >= leaving.asked && leaving.linger_until.is_none() {
                leaving.linger_until = Some(t + linger);
            }
            if t >= leaving.deadline || leaving.linger_until.is_some_and(|at| t >= at) {
                gone.push(d);
            }
        }
        for d in gone {
            self.leaving.remove(&d);
            self.crash(d, t);
        }
    }

    fn kill(&mut self, t: Millis) {
        let live: Vec<u32> = (0..self.scenario.nodes as u32)
            .filter(|&i| self.sim.is_alive(i))
            .collect();
        let count = ((live.len() as f64) * self.scenario.kill_fraction).round() as usize;
        let dead: BTreeSet<u32> = rand::seq::index::sample(&mut self.rng, live.len(), count)
            .into_iter()
            .map(|j| live[j])
            .collect();
        let watch = KillWatch::new(&self.sim, t, dead);
        for &d in &watch.dead {
            self.sim.kill(d);
            if let Some(store) = &mut self.store {
                store.node_died(&self.sim, d, t, true);
            }
        }
        self.kill = Some(watch);
    }

    /// Lookups due by `t`, from random live nodes, of names old enough that still have a live
    /// holder.
    fn start_lookups(&mut self, t: Millis) {
        self.lookup_credit += self.scenario.lookups_per_s * STEP_MS as f64 / 1000.0;
        while self.lookup_credit >= 1.0 {
            self.lookup_credit -= 1.0;
            let old_enough = t.saturating_sub(LOOKUP_AFTER_MS);
            let count = self.inserted.partition_point(|n| n.at <= old_enough);
            if count == 0 {
                continue;
            }
            let name = &self.inserted[self.rng.random_range(0..count)];
            if !name.holders.iter().any(|&h| self.sim.is_alive(h)) {
                continue;
            }
            let origin = self.rng.random_range(0..self.scenario.nodes as u32);
            if !self.sim.node(origin).is_some_and(|n| n.is_joined()) || self.sim.is_paused(origin) {
                continue;
            }
            let name = name.name.clone();
            if let Some(query) = self.sim.lookup(origin, &name) {
                self.asked.insert((origin, query), self.sim.now());
            }
        }
    }

    fn observe(&mut self, at: Millis, node: u32, event: Event<SimId>) {
        match event {
            Event::MemberFailed(SimId(d)) => {
                if !self.partitioned && self.sim.is_alive(d) && !self.sim.is_paused(d) {
                    self.report.false_positives += 1;
                }
                if let Some(kill) = &mut self.kill {
                    kill.failed(node, d, at);
                }
            }
            Event::MemberRemoved(SimId(d)) => {
                if let Some(kill) = &mut self.kill {
                    kill.removed(node, d, at);
                }
            }
            Event::MemberAdded(SimId(d)) => {
                let resurrected = self
                    .kill
                    .as_ref()
                    .is_some_and(|kill| kill.is_resurrection(node, d));
                if resurrected && !self.sim.is_alive(d) {
                    self.report.resurrections += 1;
                }
            }
            Event::ContactRemoved { id: SimId(d), .. } => {
                if let Some(kill) = &mut self.kill {
                    kill.contact_dropped(node, d, at);
                }
            }
            Event::Lookup(outcome) => self.lookup_done(at, node, outcome),
            _ => {}
        }
    }

    fn lookup_done(&mut self, at: Millis, node: u32, outcome: LookupOutcome<SimId>) {
        if let Some(store) = &mut self.store {
            let tuple = match &outcome.result {
                LookupResult::Found { tuple, .. } => Some(&**tuple),
                _ => None,
            };
            if store.lookup_done(&mut self.sim, node, outcome.query, tuple) {
                return;
            }
        }
        let Some(started) = self.asked.remove(&(node, outcome.query)) else {
            return;
        };
        self.report.lookups += 1;
        let found = matches!(outcome.result, LookupResult::Found { .. });
        match outcome.result {
            // Counted as before there was an "unavailable": the tuple had no live holder.
            LookupResult::NotFound | LookupResult::Unavailable { .. } => {
                self.report.lookup_not_found += 1
            }
            LookupResult::Unreachable => self.report.lookup_unreachable += 1,
            LookupResult::Found { .. } => {}
        }
        self.found += u64::from(found);
        self.one_hop += u64::from(found && outcome.hops <= 1);
        let dead_first = outcome
            .first_targets
            .iter()
            .any(|SimId(c)| !self.sim.is_alive(*c));
        if dead_first || outcome.hops > 1 || !found {
            self.report.contact_misses += 1;
        }
        self.lookup_ms.push((at - started) as f64);
    }

    /// Looks up every name that still has a live holder, in batches, and counts the answers.
    fn final_sweep(&mut self, end: Millis) {
        self.asked.clear();
        let (found_before, one_hop_before) = (self.found, self.one_hop);
        let (lookups_before, misses_before) = (self.report.lookups, self.report.contact_misses);
        let (not_found_before, unreachable_before) =
            (self.report.lookup_not_found, self.report.lookup_unreachable);
        let lookup_ms_before = self.lookup_ms.len();
        let live: Vec<u32> = (0..self.scenario.nodes as u32)
            .filter(|&i| self.sim.node(i).is_some_and(|n| n.is_joined()))
            .collect();
        let names: Vec<String> = self
            .inserted
            .iter()
            .filter(|n| n.holders.iter().any(|&h| self.sim.is_alive(h)))
            .map(|n| n.name.clone())
            .collect();
        let mut t = end;
        for batch in names.chunks(256) {
            for name in batch {
                let origin = live[self.rng.random_range(0..live.len())];
                if let Some(query) = self.sim.lookup(origin, name) {
                    self.asked.insert((origin, query), self.sim.now());
                }
            }
            // Long enough for every fallback of every lookup of the batch.
            t += 20 * self.scenario.kelips.request_timeout_ms;
            self.sim.run_until(t);
            for (at, node, event) in self.sim.take_events() {
                self.observe(at, node, event);
            }
        }
        self.report.final_lookups = names.len() as u64;
        self.report.final_found = self.found - found_before;
        self.report.final_answered = self.report.lookups - lookups_before;
        // The sweep is not part of the run's lookup statistics.
        self.found = found_before;
        self.one_hop = one_hop_before;
        self.report.lookups = lookups_before;
        self.report.contact_misses = misses_before;
        self.report.lookup_not_found = not_found_before;
        self.report.lookup_unreachable = unreachable_before;
        self.lookup_ms.truncate(lookup_ms_before);
    }

    /// Groups that size themselves: the ground truth follows the structure most running nodes
    /// hold; a sample a minute goes into the report.
    fn follow_structure(&mut self, t: Millis) {
        if !self.scenario.kelips.self_sizing() {
            return;
        }
        let mut held: BTreeMap<crate::structure::Structure, u64> = BTreeMap::new();
        let mut running = 0u64;
        for i in 0..self.sim.len() as u32 {
            if let Some(core) = self.sim.node(i).filter(|_| self.sim.is_running(i))
                && let Some((structure, _)) = core.structure()
            {
                *held.entry(structure).or_default() += 1;
                running += 1;
            }
        }
        let Some((&major, &count)) = held.iter().max_by_key(|(s, n)| (**n, **s)) else {
            return;
        };
        let grouping = Grouping::Prefix(major.level);
        if grouping != self.grouping {
            self.grouping = grouping;
            self.members_of = members_by_group(grouping, self.sim.len());
            self.report.structure_changes += 1;
        }
        if (t / 1000).is_multiple_of(60) {
            let mut sizes: Vec<u64> = self
                .members_of
                .iter()
                .map(|m| m.iter().filter(|&&i| self.sim.is_running(i)).count() as u64)
                .collect();
            sizes.sort_unstable();
            self.report
                .structure_timeline
                .push(crate::sim::report::StructureSample {
                    t_s: t / 1000,
                    nodes: running,
                    sqrt_nodes: (running as f64).sqrt(),
                    groups: grouping.groups(),
                    nodes_elsewhere: running - count,
                    group_min: sizes.first().copied().unwrap_or(0),
                    group_median: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
                    group_max: sizes.last().copied().unwrap_or(0),
                });
        }
    }

    /// The cumulative counters now, for the phase figures.
    fn counters(&self, running: u64) -> Counters {
        let metrics = self.store.as_ref().map(|s| &s.metrics);
        Counters {
            lookups: self.report.lookups,
            found: self.found,
            one_hop: self.one_hop,
            bytes: self.sim.traffic().bytes,
            node_ms: self.node_ms,
            gets: metrics.map_or(0, |m| m.gets),
            gets_ok: metrics.map_or(0, |m| m.gets_ok),
            repair_bytes: metrics.map_or(0, |m| m.repair_bytes),
            transition_bytes: metrics.map_or(0, |m| m.transition_bytes),
            running,
        }
    }

    fn every_second(&mut self, t: Millis) {
        self.follow_structure(t);
        if let Some((_, heal)) = self.scenario.partition
            && self.report.healed_after_s.is_none()
            && t > heal * 1000
            && converged(&self.sim, &self.members_of)
        {
            self.report.healed_after_s = Some((t - heal * 1000) as f64 / 1000.0);
        }
        let report = &mut self.report;
        if report.converged_s.is_none()
            && t >= self.scenario.join_end()
            && converged(&self.sim, &self.members_of)
        {
            report.converged_s = Some(t as f64 / 1000.0);
        }
        if let Some(kill) = &self.kill
            && report.reconverged_after_kill_s.is_none()
            && converged(&self.sim, &self.members_of)
        {
            report.reconverged_after_kill_s = Some((t - kill.at) as f64 / 1000.0);
        }
        if (t / 1000).is_multiple_of(5) && t > self.scenario.join_end() && !self.partitioned {
            sample_staleness(&self.sim, &mut self.staleness, &mut self.dissemination);
        }
        let end = self.scenario.seconds * 1000;
        let sample_at = if self.scenario.kill_fraction > 0.0 {
            self.scenario.kill_at().saturating_sub(1000)
        } else {
            end.saturating_sub(1000)
        };
        if t == sample_at {
            let (state, entry, tuple) = sample_state(&self.sim, &mut self.rng);
            report.state_bytes_per_node = state;
            report.view_entry_bytes = entry;
            report.tuple_bytes = tuple;
        }
    }

    fn finish(mut self) -> Report {
        let mut report = std::mem::take(&mut self.report);
        report.groups = self.grouping.groups();
        if let Some(kill) = &self.kill {
            let detection = kill.detection();
            report.detection_p50_s = detection.p50_s;
            report.detection_p99_s = detection.p99_s;
            report.detection_max_s = detection.max_s;
            let removal = kill.removal();
            report.removal_p99_s = removal.p99_s;
            report.removal_max_s = removal.max_s;
            report.removals_missing = removal.missing;
            report.contact_removal_p99_s = kill.contact_removal().p99_s;
            report.dead_contacts_left = kill.dead_contacts_left();
        }
        report.staleness_p50_s = self.staleness.quantile_s(0.5);
        report.staleness_p99_s = self.staleness.quantile_s(0.99);
        report.staleness_max_s = self.staleness.max_ms as f64 / 1000.0;
        report.dissemination_p99_s = self.dissemination.quantile_s(0.99);
        report.dissemination_max_s = self.dissemination.max_ms as f64 / 1000.0;
        if report.lookups > 0 {
            report.lookup_one_hop_ratio = self.one_hop as f64 / report.lookups as f64;
            report.lookup_success_ratio = self.found as f64 / report.lookups as f64;
        }
        self.lookup_ms.sort_by(f64::total_cmp);
        report.lookup_p50_ms = quantile(&self.lookup_ms, 0.5);
        report.lookup_p99_ms = quantile(&self.lookup_ms, 0.99);
        let (traffic, by_kind) = self
            .traffic
            .take()
            .unwrap_or_else(|| (self.sim.traffic(), self.sim.traffic_by_kind().clone()));
        let node_s = (self.node_ms as f64 / 1000.0).max(1.0);
        report.max_message_bytes = traffic.max_message_bytes;
        report.bytes_per_node_per_s = traffic.bytes as f64 / node_s;
        report.messages_per_node_per_s = traffic.messages as f64 / node_s;
        report.messages_lost = traffic.lost;
        report.messages_refused = traffic.refused;
        report.traffic_by_kind = by_kind
            .iter()
            .map(|(kind, (messages, bytes))| {
                let traffic = KindTraffic {
                    messages: *messages,
                    bytes: *bytes,
                    bytes_per_node_per_s: *bytes as f64 / node_s,
                };
                (*kind, traffic)
            })
            .collect();
        let (views, groups) = convergence_gaps(&self.sim, &self.members_of);
        report.unconverged_views = views;
        report.uncovered_groups = groups;
        report.isolated_nodes = (0..self.scenario.nodes as u32)
            .filter_map(|i| self.sim.node(i))
            .filter(|n| self.scenario.nodes > 1 && n.view().is_empty() && n.contacts().is_empty())
            .count() as u64;
        report.trace = format!("{:016x}", self.sim.trace());
        report.phases = self.phases.figures();
        if let Some(store) = &self.store {
            let end = self.scenario.seconds * 1000;
            let metrics = &store.metrics;
            report.puts_started = metrics.puts_started;
            report.puts_failed = metrics.puts_failed;
            report.names_acknowledged = metrics.names_acknowledged;
            let (lost, unavoidable, degraded) = store.losses(&self.sim, end);
            report.names_lost = lost;
            report.names_lost_all_holders_died = unavoidable;
            report.names_degraded_at_end = degraded;
            report.lost_names = store.lost_detail(&self.sim, end, 20);
            let mut restores = metrics.restore_ms.clone();
            restores.sort_by(f64::total_cmp);
            report.restores = restores.len() as u64;
            report.restore_p50_s = quantile(&restores, 0.5) / 1000.0;
            report.restore_p99_s = quantile(&restores, 0.99) / 1000.0;
            report.restore_max_s = restores.last().copied().unwrap_or(0.0) / 1000.0;
            let files = &store.config().files;
            let (up_low, up_high) = store.config().up_mbps;
            let median_up = (up_low * up_high).sqrt() * 125.0;
            let detect_s = (2 * files.t_fail_ms + files.repair_period_ms) as f64 / 1000.0;
            let largest = store.config().size_max as f64;
            report.restore_bound_s = detect_s + largest / median_up / 1000.0;
            report.restore_bound_slowest_link_s = detect_s + largest / (up_low * 125.0) / 1000.0;
            report.repair_bytes_per_node_per_s = metrics.repair_bytes as f64 / node_s;
            report.transition_bytes_per_node =
                metrics.transition_bytes as f64 / self.scenario.nodes.max(1) as f64;
            report.hand_offs_done = metrics.handed_off;
            report.hand_offs_failed = metrics.hand_offs_failed;
            report.needless_repairs = metrics.needless_repairs;
            report.holder_set_shrinks = metrics.holder_set_shrinks;
            report.gets = metrics.gets;
            if metrics.gets > 0 {
                report.get_success_ratio = metrics.gets_ok as f64 / metrics.gets as f64;
            }
            report.copies_lost_events = metrics.copies_lost_events;
            report.shrinks_deferred = metrics.shrinks_deferred;
            report.health_lost = metrics.health_lost;
        }
        report
    }
}
