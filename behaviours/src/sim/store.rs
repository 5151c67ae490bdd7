//! The simulator's file layer: what the files cores ([`FilesCore`]) ask for, carried out on
//! simulated disks and links, and the ground truth their durability is measured against.
//!
//! * **Names** have sizes drawn log-uniformly between `size_min` and `size_max`; every name
//!   is put once (one version), its bytes named by a hash that encodes its index.
//! * **Links** ([`links`](super::links)). Every node has an upload and a download bandwidth
//!   (log-uniform in their ranges). A transfer from `a` to `b` takes one RTT plus its bytes
//!   at its rate, the smaller of its equal shares of `a`'s upload and `b`'s download; the
//!   shares are worked out again whenever a transfer starts or ends on either link. A
//!   node's death cuts its transfers (their partners' links are freed).
//! * **Disks** have a capacity; a copy that does not fit fails. A disk outlives a crash: a
//!   node that returns finds its blobs again; a node that leaves for good loses them.
//! * **Puts** enter at a first home (a live member of the name's group), which forwards the
//!   bytes to the other homes as they arrive; the client's own link is not modelled.
//! * **Commits** and transfer outcomes take one-way delays; a dead peer answers "refused"
//!   after one RTT, a partitioned one times out after `request_timeout_ms`. A paused node
//!   neither sends nor receives: transfers involving it wait for it to resume.
//!
//! Ground truth: per name, the nodes whose disk holds its bytes. A copy is *live* while its
//! node runs or is paused. A name is *degraded* while it has fewer than R live copies; the
//! time back to R is a restore sample. At the end a name with no live copy is lost, and
//! counted as *all holders died* when its live copies went from below R to none within one
//! repair window (2·`t_fail` + one repair period + the file's transfer time at the median
//! upload bandwidth): no repair could have saved it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::links::{FlowId, Links};
use super::{FilesOutput, Simulator};
use crate::Millis;
use crate::files_core::{
    Command, CopyPurpose, Event, FetchFailure, FilesConfig, FilesCore, Hash, PutId,
};
use crate::id::SimId;
use crate::tuple::FileTuple;

/// Parameters of the file layer.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The files cores' parameters (R, repair period, grace periods…).
    pub files: FilesConfig,
    /// Smallest name size, bytes (default 1 KiB).
    pub size_min: u64,
    /// Largest name size, bytes (default 1 GiB).
    pub size_max: u64,
    /// Download bandwidth range of a node, Mbit/s (log-uniform; default 50 to 1000).
    pub down_mbps: (f64, f64),
    /// Upload bandwidth range of a node, Mbit/s (log-uniform; default 10 to 500).
    pub up_mbps: (f64, f64),
    /// Disk capacity of every node, bytes (default 256 GiB).
    pub disk_bytes: u64,
    /// Restores copy from one holder (the chosen source, or the asker), as real nodes did
    /// before they pulled pieces from every listed holder at once (default false).
    pub single_source_restores: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            files: FilesConfig::default(),
            size_min: 1 << 10,
            size_max: 1 << 30,
            down_mbps: (50.0, 1000.0),
            up_mbps: (10.0, 500.0),
            disk_bytes: 256 << 30,
            single_source_restores: false,
        }
    }
}

/// What the file layer measured.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Puts started at a first home.
    pub puts_started: u64,
    /// Puts acknowledged.
    pub names_acknowledged: u64,
    /// Puts failed.
    pub puts_failed: u64,
    /// Degraded → R live copies again, ms.
    pub restore_ms: Vec<f64>,
    /// Bytes moved by repair copies and fetches.
    pub repair_bytes: u64,
    /// Of those, bytes fetched from a node of another group (groups that size themselves:
    /// a split's names fetched into their new group).
    pub transition_bytes: u64,
    /// Hand-off copies made durable (`HandedOff`) by nodes stopping cleanly.
    pub handed_off: u64,
    /// Hand-offs given up (`HandOffFailed`: every member tried failed).
    pub hand_offs_failed: u64,
    /// Repair copies started while R listed holders were alive with intact copies.
    pub needless_repairs: u64,
    /// Holder sets published smaller than before and than min(R, live copies).
    pub holder_set_shrinks: u64,
    /// Gets asked (lookups of acknowledged names, then the bytes from a listed holder).
    pub gets: u64,
    /// Gets that found a running, reachable listed holder with the bytes.
    pub gets_ok: u64,
    /// `CopiesLost` events.
    pub copies_lost_events: u64,
    /// `ShrinkDeferred` events.
    pub shrinks_deferred: u64,
    /// `HealthLost` events.
    pub health_lost: u64,
}

/// Ground truth of one name.
struct Truth {
    size: u64,
    acked_at: Option<Millis>,
    /// Nodes whose disk holds the bytes (running, paused or down).
    copies: BTreeSet<u32>,
    degraded_since: Option<Millis>,
    lost_at: Option<Millis>,
}

#[derive(Default)]
struct Disk {
    blobs: BTreeSet<Hash>,
    used: u64,
}

/// Something due later: the end of a transfer, an answer.
enum Job {
    PutStored {
        put: PutId,
        first: u32,
        first_gen: u32,
        home: u32,
        home_gen: u32,
        name: usize,
    },
    Copy {
        from: u32,
        from_gen: u32,
        to: u32,
        /// Where `to` pulls the bytes from: `from` alone for a put's copy (pushed), `from`
        /// and every other listed holder for repair and hand-off.
        sources: Vec<u32>,
        tuple: Arc<FileTuple<SimId>>,
        purpose: CopyPurpose,
    },
    CopyFailed {
        from: u32,
        from_gen: u32,
        to: u32,
        name: Arc<str>,
        purpose: CopyPurpose,
    },
    Fetch {
        node: u32,
        node_gen: u32,
        from: u32,
        /// `from` and every other listed holder that has the bytes.
        sources: Vec<u32>,
        tuple: Arc<FileTuple<SimId>>,
    },
    FetchFailed {
        node: u32,
        node_gen: u32,
        from: u32,
        name: Arc<str>,
        why: FetchFailure,
    },
    Commit {
        from: u32,
        from_gen: u32,
        to: u32,
        put: PutId,
        tuple: Arc<FileTuple<SimId>>,
    },
    CommitAnswer {
        node: u32,
        node_gen: u32,
        put: PutId,
        home: u32,
        ok: bool,
    },
}

impl Job {
    /// The node the job reports to with the life (generation) it must still be in, and the
    /// nodes whose pause makes it wait. (A commit waits on its receiver's pause only once
    /// the receiver is known reachable: its arm checks that.)
    fn gate(&self) -> (u32, u32, [Option<u32>; 2]) {
        match *self {
            Job::PutStored {
                first,
                first_gen,
                home,
                ..
            } => (first, first_gen, [Some(first), Some(home)]),
            Job::Copy {
                from, from_gen, to, ..
            } => (from, from_gen, [Some(from), Some(to)]),
            Job::CopyFailed { from, from_gen, .. } => (from, from_gen, [Some(from), None]),
            // A paused source holds up a fetch only when it is the only one.
            Job::Fetch {
                node,
                node_gen,
                from,
                ref sources,
                ..
            } => (
                node,
                node_gen,
                [Some(node), (sources.len() <= 1).then_some(from)],
            ),
            Job::FetchFailed { node, node_gen, .. } | Job::CommitAnswer { node, node_gen, .. } => {
                (node, node_gen, [Some(node), None])
            }
            Job::Commit { from, from_gen, .. } => (from, from_gen, [None, None]),
        }
    }
}

/// The bytes of one transfer.
struct Transfer {
    /// The senders, all at once; none: a put's client (outside the simulation).
    from: Vec<u32>,
    to: u32,
    size: u64,
    /// Round trips on top of the bytes.
    latency_ms: Millis,
    /// The earliest its job may run.
    not_before: Millis,
}

/// The file layer of one simulation.
pub struct Store {
    config: StoreConfig,
    rng: ChaCha8Rng,
    disks: Vec<Disk>,
    /// Every node's links and the transfers on them.
    links: Links,
    median_up: f64,
    names: Vec<Truth>,
    /// Jobs by when they are due, each with the transfer it waits for.
    jobs: BTreeMap<(Millis, u64), (Job, Option<FlowId>)>,
    /// Where the job of each running transfer is scheduled, and the earliest it may run.
    flow_jobs: BTreeMap<FlowId, ((Millis, u64), Millis)>,
    seq: u64,
    gets: BTreeMap<(u32, u64), usize>,
    /// Lookups a files core asked for to confirm a name's new group holds it, by (node,
    /// query): the name and the node's generation.
    confirms: BTreeMap<(u32, u64), (Arc<str>, u32)>,
    /// Names acknowledged since the last [`take_acknowledged`](Self::take_acknowledged):
    /// (name, when, holders).
    acknowledged: Vec<(String, Millis, Vec<u32>)>,
    /// Hand-offs finished (durable or given up) by each node stopping cleanly.
    handed: BTreeMap<u32, usize>,
    /// What was measured.
    pub metrics: StoreMetrics,
}

/// Bytes per ms of `mbps` megabits per second.
fn bytes_per_ms(mbps: f64) -> f64 {
    mbps * 125.0
}

fn log_uniform(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    if high <= low {
        return low;
    }
    (rng.random_range(low.ln()..high.ln())).exp()
}

/// The name of index `n`.
pub fn name_of(n: usize) -> String {
    format!("file-{n}")
}

fn index_of_name(name: &str) -> Option<usize> {
    name.strip_prefix("file-")?.parse().ok()
}

fn hash_of(n: usize) -> Hash {
    let mut hash = [0x5a; 32];
    hash[..8].copy_from_slice(&(n as u64).to_le_bytes());
    hash
}

fn index_of_hash(hash: &Hash) -> usize {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(bytes) as usize
}

impl Store {
    /// A file layer for `slots` node slots.
    pub fn new(config: StoreConfig, slots: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf11e);
        let mut up = Vec::with_capacity(slots);
        let mut down = Vec::with_capacity(slots);
        for _ in 0..slots {
            up.push(bytes_per_ms(log_uniform(&mut rng, config.up_mbps)));
            down.push(bytes_per_ms(log_uniform(&mut rng, config.down_mbps)));
        }
        let median_up = bytes_per_ms((config.up_mbps.0 * config.up_mbps.1).sqrt());
        Self {
            config,
            rng,
            disks: (0..slots).map(|_| Disk::default()).collect(),
            links: Links::new(up, down),
            median_up,
            names: Vec::new(),
            jobs: BTreeMap::new(),
            flow_jobs: BTreeMap::new(),
            seq: 0,
            gets: BTreeMap::new(),
            confirms: BTreeMap::new(),
            acknowledged: Vec::new(),
            handed: BTreeMap::new(),
            metrics: StoreMetrics::default(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn replication(&self) -> usize {
        self.config.files.replication
    }

    fn free(&self, i: u32) -> u64 {
        self.config
            .disk_bytes
            .saturating_sub(self.disks[i as usize].used)
    }

    /// A files core for node `i` about to start (or return), knowing the blobs on its disk.
    /// Give it to [`Simulator::set_files`] before [`Simulator::start`].
    pub fn files_core(&mut self, i: u32, now: Millis) -> FilesCore<SimId> {
        let seed = self.rng.random();
        let mut core = FilesCore::new(SimId(i), self.config.files.clone(), seed)
            .expect("files configuration checked by the scenario");
        core.set_free_space(self.free(i));
        for hash in &self.disks[i as usize].blobs {
            let size = self.names[index_of_hash(hash)].size;
            core.handle_blob_stored(now, *hash, size);
        }
        core
    }

    /// Node `i` started or returned at `now` (its copies are live again).
    pub fn node_started(&mut self, sim: &mut Simulator, i: u32, now: Millis) {
        let free = self.free(i);
        sim.set_free_space(i, free);
        let held: Vec<usize> = self.disks[i as usize]
            .blobs
            .iter()
            .map(index_of_hash)
            .collect();
        for n in held {
            self.recheck(sim, n, now);
        }
    }

    /// Hand-offs node `i` finished (durable or given up) since it started stopping cleanly.
    pub fn hand_offs_finished(&self, i: u32) -> usize {
        self.handed.get(&i).copied().unwrap_or(0)
    }

    /// Whether `node` and `from` are of different groups under `node`'s structure (none
    /// with a fixed k).
    fn across_groups(sim: &Simulator, node: u32, from: u32) -> bool {
        let Some((structure, _)) = sim.node(node).and_then(|n| n.structure()) else {
            return false;
        };
        let grouping = crate::id::Grouping::Prefix(structure.level);
        grouping.id_facts(&SimId(node)).group != grouping.id_facts(&SimId(from)).group
    }

    /// Node `i` died at `now` (after [`Simulator::kill`]); `permanent`: its disk is gone.
    pub fn node_died(&mut self, sim: &Simulator, i: u32, now: Millis, permanent: bool) {
        self.handed.remove(&i);
        // Its transfers stop; their jobs stay where they were due (they fail then).
        let (cut, moved) = self.links.cut_node(i, now);
        for id in cut {
            if let Some((key, _)) = self.flow_jobs.remove(&id)
                && let Some((_, flow)) = self.jobs.get_mut(&key)
            {
                *flow = None;
            }
        }
        self.move_jobs(moved);
        let disk = &mut self.disks[i as usize];
        let held: Vec<usize> = disk.blobs.iter().map(index_of_hash).collect();
        if permanent {
            *disk = Disk::default();
        }
        for n in held {
            if permanent {
                self.names[n].copies.remove(&i);
            }
            self.recheck(sim, n, now);
        }
    }

    /// Names acknowledged since the last call: (name, when, holders).
    pub fn take_acknowledged(&mut self) -> Vec<(String, Millis, Vec<u32>)> {
        std::mem::take(&mut self.acknowledged)
    }

    /// Names put so far (the next put's name is [`name_of`] this).
    pub fn names_len(&self) -> usize {
        self.names.len()
    }

    /// Live copies of name `n`.
    fn live_copies(&self, sim: &Simulator, n: usize) -> usize {
        self.names[n]
            .copies
            .iter()
            .filter(|&&h| sim.is_alive(h))
            .count()
    }

    fn recheck(&mut self, sim: &Simulator, n: usize, now: Millis) {
        let live = self.live_copies(sim, n);
        let r = self.replication();
        let truth = &mut self.names[n];
        if truth.acked_at.is_none() {
            return;
        }
        if live < r {
            truth.degraded_since.get_or_insert(now);
            if live == 0 {
                truth.lost_at.get_or_insert(now);
            } else {
                truth.lost_at = None;
            }
        } else {
            truth.lost_at = None;
            if let Some(since) = truth.degraded_since.take() {
                self.metrics
                    .restore_ms
                    .push(now.saturating_sub(since) as f64);
            }
        }
    }

    fn store_blob(&mut self, sim: &mut Simulator, i: u32, n: usize, now: Millis) -> bool {
        let hash = hash_of(n);
        let size = self.names[n].size;
        let disk = &mut self.disks[i as usize];
        if !disk.blobs.contains(&hash) {
            if disk.used + size > self.config.disk_bytes {
                return false;
            }
            disk.blobs.insert(hash);
            disk.used += size;
            self.names[n].copies.insert(i);
            let free = self.free(i);
            sim.set_free_space(i, free);
            self.recheck(sim, n, now);
        }
        true
    }

    fn remove_blob(&mut self, sim: &mut Simulator, i: u32, hash: &Hash, now: Millis) {
        let disk = &mut self.disks[i as usize];
        if disk.blobs.remove(hash) {
            let n = index_of_hash(hash);
            disk.used = disk.used.saturating_sub(self.names[n].size);
            self.names[n].copies.remove(&i);
            let free = self.free(i);
            sim.set_free_space(i, free);
            self.recheck(sim, n, now);
        }
    }

    /// Whether `source` can send name `n`'s bytes to `to` now.
    fn can_send(&self, sim: &Simulator, source: u32, to: u32, n: usize) -> bool {
        source != to
            && sim.is_alive(source)
            && sim.can_reach(to, source)
            && self.has_blob(source, n)
    }

    /// Whether any of `sources` can still send name `n`'s bytes to `to` (a pull ends well
    /// while one of its senders lives).
    fn any_source(&self, sim: &Simulator, to: u32, sources: &[u32], n: usize) -> bool {
        sources.iter().any(|&s| self.can_send(sim, s, to, n))
    }

    /// Where `to` pulls `tuple`'s bytes from: `first` and then every other listed holder,
    /// those that can send them now (a real holder without them drops out at once).
    fn pull_sources(
        &self,
        sim: &Simulator,
        to: u32,
        first: u32,
        tuple: &FileTuple<SimId>,
    ) -> Vec<u32> {
        let n = index_of_hash(&tuple.version.blake3);
        let mut sources: Vec<u32> = Vec::new();
        let listed = tuple.holders.iter().map(|SimId(h)| *h);
        let others = if self.config.single_source_restores {
            0
        } else {
            tuple.holders.len()
        };
        for h in std::iter::once(first).chain(listed.take(others)) {
            if !sources.contains(&h) && self.can_send(sim, h, to, n) {
                sources.push(h);
            }
        }
        sources
    }

    fn has_blob(&self, i: u32, n: usize) -> bool {
        self.disks[i as usize].blobs.contains(&hash_of(n))
    }

    fn schedule(&mut self, at: Millis, job: Job) {
        self.seq += 1;
        self.jobs.insert((at, self.seq), (job, None));
    }

    /// Starts `transfer` at `now` and schedules `job` at its end, but not before
    /// `transfer.not_before`; returns when that is as things stand (later starts and ends
    /// on its links move it).
    fn transfer(&mut self, transfer: Transfer, now: Millis, job: Job) -> Millis {
        let Transfer {
            from,
            to,
            size,
            latency_ms,
            not_before,
        } = transfer;
        let (id, end, moved) = self.links.start(&from, to, size, latency_ms, now);
        self.move_jobs(moved);
        self.seq += 1;
        let key = (end.max(not_before), self.seq);
        self.jobs.insert(key, (job, Some(id)));
        self.flow_jobs.insert(id, (key, not_before));
        end
    }

    /// Moves the jobs of transfers whose end moved.
    fn move_jobs(&mut self, moved: Vec<(FlowId, Millis)>) {
        for (id, end) in moved {
            let Some((key, not_before)) = self.flow_jobs.get(&id).copied() else {
                continue;
            };
            let Some(job) = self.jobs.remove(&key) else {
                continue;
            };
            let new_key = (end.max(not_before), key.1);
            self.jobs.insert(new_key, job);
            self.flow_jobs.insert(id, (new_key, not_before));
        }
    }

    /// Puts a new name of random size at a random live member of its group (`members`),
    /// forwarding to homes chosen by power of two choices on free space. Returns whether it
    /// started.
    pub fn put(&mut self, sim: &mut Simulator, members: &[u32], now: Millis) -> bool {
        let live: Vec<u32> = members
            .iter()
            .copied()
            .filter(|&i| {
                sim.is_running(i)
                    && sim.node(i).is_some_and(|n| n.is_joined())
                    && sim.files(i).is_some()
            })
            .collect();
        if live.is_empty() {
            return false;
        }
        let size = log_uniform(
            &mut self.rng,
            (self.config.size_min as f64, self.config.size_max as f64),
        ) as u64;
        let first = live[self.rng.random_range(0..live.len())];
        let mut candidates: Vec<u32> = live.iter().copied().filter(|&i| i != first).collect();
        let mut homes = vec![first];
        while homes.len() < self.replication() && !candidates.is_empty() {
            let a = self.rng.random_range(0..candidates.len());
            let b = self.rng.random_range(0..candidates.len());
            let pick = if self.free(candidates[b]) > self.free(candidates[a]) {
                b
            } else {
                a
            };
            homes.push(candidates.swap_remove(pick));
        }
        let n = self.names.len();
        self.names.push(Truth {
            size,
            acked_at: None,
            copies: BTreeSet::new(),
            degraded_since: None,
            lost_at: None,
        });
        let name = name_of(n);
        let ids: Vec<SimId> = homes.iter().map(|&h| SimId(h)).collect();
        let started = sim.files_input(first, |files, now| {
            files.start_put(now, &name, size, &ids, 0)
        });
        let Some(Ok(start)) = started else {
            return false;
        };
        self.metrics.puts_started += 1;
        let first_gen = sim.generation(first);
        // The client streams to the first home; it forwards to the others as bytes arrive
        // (a forward ends no sooner than the client's stream did when the put began).
        let own = Transfer {
            from: Vec::new(),
            to: first,
            size,
            latency_ms: 0,
            not_before: 0,
        };
        let own_end = self.transfer(
            own,
            now,
            Job::PutStored {
                put: start.put,
                first,
                first_gen,
                home: first,
                home_gen: first_gen,
                name: n,
            },
        );
        for SimId(home) in start.forward_to {
            let home_gen = sim.generation(home);
            let latency = 2 * sim.one_way_ms(first, home);
            let forward = Transfer {
                from: vec![first],
                to: home,
                size,
                latency_ms: latency,
                not_before: own_end,
            };
            self.transfer(
                forward,
                now,
                Job::PutStored {
                    put: start.put,
                    first,
                    first_gen,
                    home,
                    home_gen,
                    name: n,
                },
            );
        }
        true
    }

    /// Starts a get of a random name acknowledged by `acked_before`, from `origin`: a lookup
    /// whose outcome goes to [`lookup_done`](Self::lookup_done).
    pub fn get(&mut self, sim: &mut Simulator, origin: u32, name: &str) -> bool {
        let Some(n) = index_of_name(name) else {
            return false;
        };
        match sim.lookup(origin, name) {
            Some(query) => {
                self.gets.insert((origin, query), n);
                true
            }
            None => false,
        }
    }

    /// A lookup finished at `node`; returns true when it was a get (counted here).
    pub fn lookup_done(
        &mut self,
        sim: &mut Simulator,
        node: u32,
        query: u64,
        tuple: Option<&FileTuple<SimId>>,
    ) -> bool {
        if let Some((name, generation)) = self.confirms.remove(&(node, query)) {
            if sim.generation(node) == generation {
                let found = tuple.cloned();
                sim.files_input(node, |files, now| files.handle_confirmed(now, &name, found));
            }
            return true;
        }
        let Some(n) = self.gets.remove(&(node, query)) else {
            return false;
        };
        self.metrics.gets += 1;
        let ok = tuple.is_some_and(|t| {
            t.version.blake3 == hash_of(n)
                && t.holders.iter().any(|SimId(h)| {
                    sim.is_running(*h) && sim.can_reach(node, *h) && self.has_blob(*h, n)
                })
        });
        self.metrics.gets_ok += u64::from(ok);
        true
    }

    /// Handles the files cores' outputs and the jobs due by the simulator's `now`, until
    /// neither is left.
    pub fn process(&mut self, sim: &mut Simulator) {
        loop {
            let outputs = sim.take_files_outputs();
            let now = sim.now();
            let due = self
                .jobs
                .first_key_value()
                .is_some_and(|((at, _), _)| *at <= now);
            if outputs.is_empty() && !due {
                return;
            }
            for (at, node, output) in outputs {
                self.output(sim, at, node, output);
            }
            while let Some(entry) = self.jobs.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (job, flow) = entry.remove();
                if let Some(id) = flow {
                    self.flow_jobs.remove(&id);
                    let moved = self.links.finish(id, now);
                    self.move_jobs(moved);
                }
                self.run_job(sim, job, now);
            }
        }
    }

    fn alive(sim: &Simulator, i: u32, generation: u32) -> bool {
        sim.is_alive(i) && sim.generation(i) == generation
    }

    fn output(&mut self, sim: &mut Simulator, at: Millis, i: u32, output: FilesOutput) {
        let now = sim.now().max(at);
        let generation = sim.generation(i);
        match output {
            crate::files_core::Output::Command(command) => match command {
                Command::CopyTo { tuple, to, purpose } => {
                    let SimId(to) = to;
                    let n = index_of_hash(&tuple.version.blake3);
                    if purpose == CopyPurpose::Repair {
                        let intact = tuple
                            .holders
                            .iter()
                            .filter(|SimId(h)| sim.is_alive(*h) && self.has_blob(*h, n))
                            .count();
                        if intact >= self.replication() {
                            self.metrics.needless_repairs += 1;
                        }
                    }
                    if !sim.is_alive(to) || !sim.can_reach(i, to) {
                        let wait = if sim.is_alive(to) {
                            sim.config().kelips.request_timeout_ms
                        } else {
                            2 * sim.one_way_ms(i, to)
                        };
                        self.schedule(
                            now + wait,
                            Job::CopyFailed {
                                from: i,
                                from_gen: generation,
                                to,
                                name: tuple.name.clone(),
                                purpose,
                            },
                        );
                        return;
                    }
                    // Repair and hand-off copies are pulled by `to` from this node and every
                    // other listed holder; a put's replacement copy is pushed.
                    let sources = match purpose {
                        CopyPurpose::Put(_) => vec![i],
                        CopyPurpose::Repair | CopyPurpose::HandOff => {
                            let mut sources = self.pull_sources(sim, to, i, &tuple);
                            if sources.is_empty() {
                                sources.push(i);
                            }
                            sources
                        }
                    };
                    let copy = Transfer {
                        from: sources.clone(),
                        to,
                        size: tuple.size,
                        latency_ms: 2 * sim.one_way_ms(i, to),
                        not_before: 0,
                    };
                    self.transfer(
                        copy,
                        now,
                        Job::Copy {
                            from: i,
                            from_gen: generation,
                            to,
                            sources,
                            tuple,
                            purpose,
                        },
                    );
                }
                Command::FetchFrom { tuple, from } => {
                    let SimId(from) = from;
                    // The node pulls from `from` and every other listed holder at once.
                    let sources = self.pull_sources(sim, i, from, &tuple);
                    let why = if !sources.is_empty() {
                        None
                    } else if !sim.is_alive(from) || !sim.can_reach(i, from) {
                        Some(FetchFailure::Unreachable)
                    } else {
                        Some(FetchFailure::Missing)
                    };
                    match why {
                        Some(why) => self.schedule(
                            now + 2 * sim.one_way_ms(i, from),
                            Job::FetchFailed {
                                node: i,
                                node_gen: generation,
                                from,
                                name: tuple.name.clone(),
                                why,
                            },
                        ),
                        None => {
                            let fetch = Transfer {
                                from: sources.clone(),
                                to: i,
                                size: tuple.size,
                                latency_ms: 2 * sim.one_way_ms(i, from),
                                not_before: 0,
                            };
                            self.transfer(
                                fetch,
                                now,
                                Job::Fetch {
                                    node: i,
                                    node_gen: generation,
                                    from,
                                    sources,
                                    tuple,
                                },
                            );
                        }
                    }
                }
                Command::SendCommit { put, to, tuple } => {
                    let SimId(to) = to;
                    self.schedule(
                        now + sim.one_way_ms(i, to),
                        Job::Commit {
                            from: i,
                            from_gen: generation,
                            to,
                            put,
                            tuple,
                        },
                    );
                }
                Command::Delete { hash } => {
                    self.remove_blob(sim, i, &hash, now);
                    sim.files_input(i, |files, now| files.handle_blob_removed(now, hash));
                }
                Command::Publish { .. } => {}
                Command::Confirm { name } => match sim.lookup(i, &name) {
                    Some(query) => {
                        self.confirms.insert((i, query), (name, generation));
                    }
                    None => {
                        sim.files_input(i, |files, now| files.handle_confirmed(now, &name, None));
                    }
                },
            },
            crate::files_core::Output::Event(event) => match event {
                Event::PutAcknowledged { tuple, .. } => {
                    let n = index_of_hash(&tuple.version.blake3);
                    if self.names[n].acked_at.is_none() {
                        self.names[n].acked_at = Some(now);
                        self.metrics.names_acknowledged += 1;
                        let holders = tuple.holders.iter().map(|SimId(h)| *h).collect();
                        self.acknowledged
                            .push((tuple.name.to_string(), now, holders));
                        self.recheck(sim, n, now);
                    }
                }
                Event::PutFailed { .. } => self.metrics.puts_failed += 1,
                Event::HolderSetPublished {
                    name,
                    before,
                    after,
                } => {
                    if let Some(n) = index_of_name(&name) {
                        let live = self.live_copies(sim, n);
                        if after < before && after < self.replication().min(live) {
                            self.metrics.holder_set_shrinks += 1;
                        }
                    }
                }
                Event::CopiesLost { .. } => self.metrics.copies_lost_events += 1,
                Event::ShrinkDeferred { .. } => self.metrics.shrinks_deferred += 1,
                Event::HealthLost { .. } => self.metrics.health_lost += 1,
                Event::HandedOff { .. } => {
                    self.metrics.handed_off += 1;
                    *self.handed.entry(i).or_default() += 1;
                }
                Event::HandOffFailed { .. } => {
                    self.metrics.hand_offs_failed += 1;
                    *self.handed.entry(i).or_default() += 1;
                }
                Event::Emigrated { .. } | Event::Settled => {}
            },
        }
    }

    /// Defers `job` to when `node` resumes, if it is paused; true if deferred.
    fn defer_if_paused(&mut self, sim: &Simulator, nodes: &[u32], job: Job) -> Option<Job> {
        let resume = nodes.iter().filter_map(|&i| sim.paused_until(i)).max();
        match resume {
            Some(at) => {
                self.schedule(at.max(sim.now() + 1), job);
                None
            }
            None => Some(job),
        }
    }

    fn run_job(&mut self, sim: &mut Simulator, job: Job, now: Millis) {
        // A job matters only while the node it reports to runs the same life, and waits
        // while any node it involves is paused.
        let (owner, generation, waits_on) = job.gate();
        if !Self::alive(sim, owner, generation) {
            return;
        }
        let waits_on: Vec<u32> = waits_on.into_iter().flatten().collect();
        let Some(job) = self.defer_if_paused(sim, &waits_on, job) else {
            return;
        };
        match job {
            Job::PutStored {
                put,
                first,
                home,
                home_gen,
                name,
                ..
            } => {
                let hash = hash_of(name);
                let size = self.names[name].size;
                let stored = Self::alive(sim, home, home_gen)
                    && sim.can_reach(first, home)
                    && self.store_blob(sim, home, name, now);
                if stored {
                    if home != first {
                        sim.files_input(home, |files, now| {
                            files.handle_blob_stored(now, hash, size)
                        });
                    }
                    sim.files_input(first, |files, now| {
                        files.handle_put_stored(now, put, SimId(home), hash)
                    });
                } else {
                    sim.files_input(first, |files, now| {
                        files.handle_put_home_failed(now, put, SimId(home))
                    });
                }
            }
            Job::Copy {
                from,
                to,
                sources,
                tuple,
                purpose,
                ..
            } => {
                let n = index_of_hash(&tuple.version.blake3);
                let ok = sim.is_alive(to)
                    && sim.can_reach(from, to)
                    && self.any_source(sim, to, &sources, n)
                    && self.store_blob(sim, to, n, now);
                let name = tuple.name.clone();
                if ok {
                    if purpose == CopyPurpose::Repair {
                        self.metrics.repair_bytes += tuple.size;
                    }
                    let (hash, size) = (tuple.version.blake3, tuple.size);
                    sim.files_input(to, |files, now| files.handle_blob_stored(now, hash, size));
                    sim.files_input(from, |files, now| {
                        files.handle_copy_done(now, &name, SimId(to), purpose)
                    });
                } else {
                    sim.files_input(from, |files, now| {
                        files.handle_copy_failed(now, &name, SimId(to), purpose)
                    });
                }
            }
            Job::CopyFailed {
                from,
                to,
                name,
                purpose,
                ..
            } => {
                sim.files_input(from, |files, now| {
                    files.handle_copy_failed(now, &name, SimId(to), purpose)
                });
            }
            Job::Fetch {
                node,
                from,
                sources,
                tuple,
                ..
            } => {
                let n = index_of_hash(&tuple.version.blake3);
                let name = tuple.name.clone();
                let ok =
                    self.any_source(sim, node, &sources, n) && self.store_blob(sim, node, n, now);
                if ok {
                    self.metrics.repair_bytes += tuple.size;
                    if Self::across_groups(sim, node, from) {
                        self.metrics.transition_bytes += tuple.size;
                    }
                    let (hash, size) = (tuple.version.blake3, tuple.size);
                    sim.files_input(node, |files, now| {
                        files.handle_blob_stored(now, hash, size);
                        files.handle_fetch_done(now, &name, SimId(from));
                    });
                } else {
                    sim.files_input(node, |files, now| {
                        files.handle_fetch_failed(
                            now,
                            &name,
                            SimId(from),
                            FetchFailure::Unreachable,
                        )
                    });
                }
            }
            Job::FetchFailed {
                node,
                from,
                name,
                why,
                ..
            } => {
                sim.files_input(node, |files, now| {
                    files.handle_fetch_failed(now, &name, SimId(from), why)
                });
            }
            Job::Commit {
                from,
                from_gen,
                to,
                put,
                tuple,
            } => {
                if !sim.is_alive(to) || !sim.can_reach(from, to) {
                    let wait = sim.config().kelips.request_timeout_ms;
                    self.schedule(
                        now + wait,
                        Job::CommitAnswer {
                            node: from,
                            node_gen: from_gen,
                            put,
                            home: to,
                            ok: false,
                        },
                    );
                    return;
                }
                // The receiver's pause counts only once it is known to be reachable.
                let Some(Job::Commit { tuple, .. }) = self.defer_if_paused(
                    sim,
                    &[to],
                    Job::Commit {
                        from,
                        from_gen,
                        to,
                        put,
                        tuple,
                    },
                ) else {
                    return;
                };
                let ok = sim
                    .files_input(to, |files, now| {
                        files.handle_commit(now, FileTuple::clone(&tuple))
                    })
                    .is_some_and(|result| result.is_ok());
                self.schedule(
                    now + sim.one_way_ms(to, from),
                    Job::CommitAnswer {
                        node: from,
                        node_gen: from_gen,
                        put,
                        home: to,
                        ok,
                    },
                );
            }
            Job::CommitAnswer {
                node,
                put,
                home,
                ok,
                ..
            } => {
                sim.files_input(node, |files, now| {
                    if ok {
                        files.handle_commit_recorded(now, put, SimId(home));
                    } else {
                        files.handle_commit_failed(now, put, SimId(home));
                    }
                });
            }
        }
    }

    /// Up to `limit` lost names (either kind), described: size, when the name fell below R
    /// live copies, when it had none, copies on disks of nodes that are down.
    pub fn lost_detail(&self, sim: &Simulator, now: Millis, limit: usize) -> Vec<String> {
        let files = &self.config.files;
        let base = 2 * files.t_fail_ms + files.repair_period_ms;
        self.names
            .iter()
            .enumerate()
            .filter(|(n, truth)| truth.acked_at.is_some() && self.live_copies(sim, *n) == 0)
            .take(limit)
            .map(|(n, truth)| {
                let window = base + (truth.size as f64 / self.median_up) as Millis;
                format!(
                    "{}: {} bytes, acknowledged at {:.1} s, below R from {:.1} s, none live from \
                     {:.1} s (window {:.1} s), {} copies on down disks",
                    name_of(n),
                    truth.size,
                    truth.acked_at.unwrap_or(0) as f64 / 1000.0,
                    truth.degraded_since.unwrap_or(now) as f64 / 1000.0,
                    truth.lost_at.unwrap_or(now) as f64 / 1000.0,
                    window as f64 / 1000.0,
                    truth.copies.len(),
                )
            })
            .collect()
    }

    /// The end of the run at `now`: (names lost, names lost with all holders dead within
    /// one repair window, names still below R live copies).
    pub fn losses(&self, sim: &Simulator, now: Millis) -> (u64, u64, u64) {
        let files = &self.config.files;
        let base = 2 * files.t_fail_ms + files.repair_period_ms;
        let (mut lost, mut unavoidable, mut degraded) = (0, 0, 0);
        for (n, truth) in self.names.iter().enumerate() {
            if truth.acked_at.is_none() {
                continue;
            }
            if self.live_copies(sim, n) > 0 {
                degraded += u64::from(truth.degraded_since.is_some());
                continue;
            }
            let window = base + (truth.size as f64 / self.median_up) as Millis;
            let since = truth.degraded_since.unwrap_or(now);
            let gone = truth.lost_at.unwrap_or(now);
            if gone.saturating_sub(since) <= window {
                unavoidable += 1;
            } else {
                lost += 1;
            }
        }
        (lost, unavoidable, degraded)
    }
}
