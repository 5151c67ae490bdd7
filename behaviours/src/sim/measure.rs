//! Measurements taken on a running simulator: convergence, counter staleness, soft state, and
//! the bookkeeping that times failure detection and removal after a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use rand_chacha::ChaCha8Rng;

use super::Simulator;
use super::report::{Histogram, quantile};
use crate::Millis;
use crate::id::SimId;

/// Every live, joined node knows ≥ 99% of its live group and has a live contact in every other
/// group that has live nodes.
pub fn converged(sim: &Simulator, members_of: &[Vec<u32>]) -> bool {
    let live_per_group = live_per_group(sim, members_of);
    // Stops at the first gap: the churn scenarios are rarely converged, and this runs every
    // second until they are.
    split(sim, |nodes| {
        let mut covered = Vec::new();
        nodes
            .into_iter()
            .all(|i| node_gaps(sim, i, &live_per_group, &mut covered) == (false, false))
    })
    .into_iter()
    .all(|done| done)
}

fn live_per_group(sim: &Simulator, members_of: &[Vec<u32>]) -> Vec<usize> {
    members_of
        .iter()
        .map(|m| m.iter().filter(|&&i| sim.is_alive(i)).count())
        .collect()
}

/// Whether live node `i` has a view gap (not joined, or it lacks more than 1% of its live
/// group) and whether it lacks a live contact for some group with live nodes. `covered` is
/// scratch space.
fn node_gaps(
    sim: &Simulator,
    i: u32,
    live_per_group: &[usize],
    covered: &mut Vec<bool>,
) -> (bool, bool) {
    let Some(node) = sim.node(i) else {
        return (false, false);
    };
    if !node.is_joined() {
        return (true, false);
    }
    let own = node.group() as usize;
    let others = live_per_group[own].saturating_sub(1);
    let known = node
        .view()
        .live()
        .filter(|m| sim.is_alive(m.entry.id.0))
        .count();
    let view_gap = (known as f64) < 0.99 * others as f64;
    covered.clear();
    covered.resize(live_per_group.len(), false);
    for (group, contacts) in node.contacts().iter() {
        if let Some(slot) = covered.get_mut(group as usize) {
            *slot = contacts.iter().any(|c| sim.is_alive(c.entry.id.0));
        }
    }
    let uncovered = live_per_group
        .iter()
        .zip(covered.iter())
        .enumerate()
        .any(|(group, (&live, &covered))| group != own && live > 0 && !covered);
    (view_gap, uncovered)
}

/// Live nodes whose view lacks more than 1% of their live group (or who have not joined),
/// and live nodes lacking a live contact for some group.
pub fn convergence_gaps(sim: &Simulator, members_of: &[Vec<u32>]) -> (u64, u64) {
    let live_per_group = live_per_group(sim, members_of);
    let parts = split(sim, |nodes| {
        let (mut views, mut groups) = (0, 0);
        let mut covered = Vec::new();
        for i in nodes {
            let (view_gap, uncovered) = node_gaps(sim, i, &live_per_group, &mut covered);
            views += u64::from(view_gap);
            groups += u64::from(uncovered);
        }
        (views, groups)
    });
    parts
        .into_iter()
        .fold((0, 0), |(v, g), (views, groups)| (v + views, g + groups))
}

/// Adds the ages of the counters members hold for live members of their group (how long ago
/// the member produced the counter value the observer holds) to `staleness`, and, per member,
/// the oldest such age over all its observers to `dissemination`: how long a counter takes to
/// reach the whole group, which is what bounds removal after a death.
pub(crate) fn sample_staleness(
    sim: &Simulator,
    staleness: &mut Histogram,
    dissemination: &mut Histogram,
) {
    let now = sim.now();
    let period = sim.config().kelips.heartbeat_period_ms;
    let parts = split(sim, |observers| {
        let mut ages = Histogram::new();
        let mut oldest: Vec<Option<Millis>> = vec![None; sim.len()];
        for o in observers {
            let Some(node) = sim.node(o) else {
                continue;
            };
            for member in node.view().iter() {
                let SimId(m) = member.entry.id;
                let Some(subject) = sim.node(m) else {
                    continue;
                };
                let truth = subject.beat();
                if truth.incarnation != member.entry.incarnation {
                    continue;
                }
                let behind = truth.heartbeat.saturating_sub(member.entry.heartbeat);
                let age = behind * period + now.saturating_sub(sim.last_bump(m));
                ages.add(age);
                let slot = &mut oldest[m as usize];
                *slot = Some(slot.map_or(age, |old| old.max(age)));
            }
        }
        (ages, oldest)
    });
    let mut oldest: Vec<Option<Millis>> = vec![None; sim.len()];
    for (ages, part) in parts {
        staleness.merge(&ages);
        for (slot, age) in oldest.iter_mut().zip(part) {
            *slot = (*slot).max(age);
        }
    }
    for age in oldest.into_iter().flatten() {
        dissemination.add(age);
    }
}

/// Runs `measure` over the node indices in one range per simulator thread, each range on its
/// own thread, and returns the results in range order.
fn split<T: Send>(sim: &Simulator, measure: impl Fn(Range<u32>) -> T + Sync) -> Vec<T> {
    let len = sim.len() as u32;
    let threads = sim.threads() as u32;
    if threads <= 1 || len < 1000 {
        return vec![measure(0..len)];
    }
    let per = len.div_ceil(threads);
    let measure = &measure;
    std::thread::scope(|scope| {
        let ranges = (0..threads).map(|t| (t * per)..((t + 1) * per).min(len));
        let running: Vec<_> = ranges
            .map(|range| scope.spawn(move || measure(range)))
            .collect();
        running
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Soft state per node, and bytes per entry and per tuple, averaged over up to 50 live nodes.
pub(crate) fn sample_state(sim: &Simulator, rng: &mut ChaCha8Rng) -> (f64, f64, f64) {
    let live: Vec<u32> = (0..sim.len() as u32).filter(|&i| sim.is_alive(i)).collect();
    let picks = rand::seq::index::sample(rng, live.len(), live.len().min(50));
    let (mut entries, mut entry_count, mut tuples, mut tuple_count) = (0, 0, 0, 0);
    let mut sampled = 0;
    for j in picks {
        let Some(node) = sim.node(live[j]) else {
            continue;
        };
        sampled += 1;
        let (bytes, count) = node.entry_state_bytes();
        entries += bytes;
        entry_count += count;
        let (bytes, count) = node.tuple_state_bytes();
        tuples += bytes;
        tuple_count += count;
    }
    if sampled == 0 {
        return (0.0, 0.0, 0.0);
    }
    (
        (entries + tuples) as f64 / f64::from(sampled),
        entries as f64 / entry_count.max(1) as f64,
        tuples as f64 / tuple_count.max(1) as f64,
    )
}

/// Who knew the nodes killed at once, and when each of them stopped knowing.
#[derive(Default)]
pub(crate) struct KillWatch {
    pub(crate) at: Millis,
    pub(crate) dead: BTreeSet<u32>,
    awaiting_failure: BTreeSet<(u32, u32)>,
    awaiting_removal: BTreeSet<(u32, u32)>,
    awaiting_contact_removal: BTreeSet<(u32, u32)>,
    removed_by: BTreeSet<(u32, u32)>,
    detected: BTreeMap<u32, Millis>,
    removed: BTreeMap<u32, Millis>,
    contact_removed: BTreeMap<u32, Millis>,
}

/// Distribution of kill → done times over dead nodes, with how many are not done.
pub(crate) struct Done {
    pub(crate) p50_s: f64,
    pub(crate) p99_s: f64,
    pub(crate) max_s: f64,
    pub(crate) missing: u64,
}

impl KillWatch {
    /// Records, before `dead` die at `at`, which live node holds which of them.
    pub(crate) fn new(sim: &Simulator, at: Millis, dead: BTreeSet<u32>) -> Self {
        let mut watch = KillWatch {
            at,
            ..KillWatch::default()
        };
        for o in (0..sim.len() as u32).filter(|o| !dead.contains(o)) {
            let Some(node) = sim.node(o) else {
                continue;
            };
            for member in node.view().iter() {
                let SimId(d) = member.entry.id;
                if dead.contains(&d) {
                    watch.awaiting_removal.insert((o, d));
                    if !member.failed {
                        watch.awaiting_failure.insert((o, d));
                    }
                }
            }
            for contact in node.contacts().all() {
                let SimId(d) = contact.entry.id;
                if dead.contains(&d) {
                    watch.awaiting_contact_removal.insert((o, d));
                }
            }
        }
        watch.dead = dead;
        watch
    }

    /// `observer` marked `d` failed at `at`. Times only grow, so the last pair to go is the
    /// time every observer had detected it.
    pub(crate) fn failed(&mut self, observer: u32, d: u32, at: Millis) {
        if self.awaiting_failure.remove(&(observer, d)) {
            self.detected.insert(d, at);
        }
    }

    /// `observer` removed `d` from its view at `at`.
    pub(crate) fn removed(&mut self, observer: u32, d: u32, at: Millis) {
        if self.awaiting_removal.remove(&(observer, d)) {
            self.removed.insert(d, at);
        }
        if self.dead.contains(&d) {
            self.removed_by.insert((observer, d));
        }
    }

    /// Whether `observer` adding `d` back is a resurrection.
    pub(crate) fn is_resurrection(&self, observer: u32, d: u32) -> bool {
        self.removed_by.contains(&(observer, d))
    }

    /// `observer` dropped contact `d` at `at`.
    pub(crate) fn contact_dropped(&mut self, observer: u32, d: u32, at: Millis) {
        if self.awaiting_contact_removal.remove(&(observer, d)) {
            self.contact_removed.insert(d, at);
        }
    }

    /// (node, dead contact) pairs left.
    pub(crate) fn dead_contacts_left(&self) -> u64 {
        self.awaiting_contact_removal.len() as u64
    }

    fn done(&self, awaiting: &BTreeSet<(u32, u32)>, times: &BTreeMap<u32, Millis>) -> Done {
        let pending: BTreeSet<u32> = awaiting.iter().map(|(_, d)| *d).collect();
        let mut done: Vec<f64> = times
            .iter()
            .filter(|(d, _)| !pending.contains(d))
            .map(|(_, at)| at.saturating_sub(self.at) as f64 / 1000.0)
            .collect();
        done.sort_by(f64::total_cmp);
        Done {
            p50_s: quantile(&done, 0.5),
            p99_s: quantile(&done, 0.99),
            max_s: done.last().copied().unwrap_or(0.0),
            missing: pending.len() as u64,
        }
    }

    /// Kill → marked failed by every live group member that knew it.
    pub(crate) fn detection(&self) -> Done {
        self.done(&self.awaiting_failure, &self.detected)
    }

    /// Kill → removed from every group view that held it.
    pub(crate) fn removal(&self) -> Done {
        self.done(&self.awaiting_removal, &self.removed)
    }

    /// Kill → dropped by every node holding it as a contact.
    pub(crate) fn contact_removal(&self) -> Done {
        self.done(&self.awaiting_contact_removal, &self.contact_removed)
    }
}
