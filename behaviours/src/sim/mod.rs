//! A deterministic simulator: N [`Kelips`] cores on a plane, one virtual clock, seeded loss,
//! partitions, kills and restarts.
//!
//! * Nodes sit uniformly on a square; the RTT between two is their distance in milliseconds,
//!   floored at twice [`SimConfig::min_delay_ms`] (4 ms by default). A message arrives half an
//!   RTT after it is sent; with one delivery in
//!   [`RTT_SAMPLE_EVERY`] the receiver also gets an RTT sample of the sender, as libp2p ping on
//!   the connection would give it now and then.
//! * Each message is lost with probability `loss`, silently. A message to a dead node, or across
//!   a partition, comes back to the sender as unreachable (after one RTT for a dead node — the
//!   connection is refused — and after `request_timeout_ms` across a partition).
//! * Sizes are measured with the real codec ([`crate::codec::encoded_len`]); one gossip message
//!   shared by several targets is measured once.
//! * Everything is ordered and seeded: the same seed gives the same trace ([`Simulator::trace`]).
//! * Time advances in windows of [`SimConfig::min_delay_ms`] milliseconds. Nothing one node
//!   does in a window can reach another before the next (no message is faster), so the nodes
//!   with events in a window run them, in time order, on worker threads; loss, scheduling and
//!   the trace are then settled in a fixed order, and the outcome does not depend on the number
//!   of threads.

mod links;
pub mod measure;
pub mod phases;
mod queue;
pub mod report;
pub mod scenario;
pub mod store;
mod workers;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Millis;
use crate::codec::encoded_len;
use crate::config::Config;
use crate::entry::AddressRecord;
use crate::files_core::{self, Command as FilesCommand, FilesCore, MemberState};
use crate::id::{SimId, id_facts};
use crate::message::{Envelope, Message};
use crate::node::{Event, Kelips, Output};
use crate::tuple::FileTuple;
use queue::EventQueue;
use workers::{Item, Workers};

/// One delivery in this many comes with an RTT sample for the receiver.
pub const RTT_SAMPLE_EVERY: u64 = 4;

/// Simulator parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of node slots.
    pub nodes: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Side of the square the nodes sit on, in milliseconds of RTT.
    pub plane_ms: f64,
    /// Bytes of each node's opaque address record (a signed peer record is ~150).
    pub address_record_bytes: usize,
    /// Kelips parameters of every node.
    pub kelips: Config,
    /// Worker threads; 0: one per core. 1 runs everything on the calling thread. The
    /// outcome, trace included, is the same for any number.
    pub threads: usize,
    /// Windows in which at least this many nodes have events run them in parallel; fewer
    /// are not worth the hand-off. Default 16.
    pub parallel_min_nodes: usize,
    /// Smallest one-way delay of a message, in milliseconds (at least 1); RTTs are floored at
    /// twice it. It is also the length of the windows the nodes run in between two
    /// synchronizations, so a larger value runs faster and models near peers less finely.
    /// Default 2.
    pub min_delay_ms: Millis,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 100,
            seed: 1,
            loss: 0.0,
            plane_ms: 100.0,
            address_record_bytes: 150,
            kelips: Config::default(),
            threads: 0,
            parallel_min_nodes: 16,
            min_delay_ms: 2,
        }
    }
}

/// Traffic counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent (encoded envelopes).
    pub bytes: u64,
    /// Largest encoded envelope.
    pub max_message_bytes: usize,
    /// Messages lost on purpose.
    pub lost: u64,
    /// Messages refused by their receiver.
    pub refused: u64,
}

enum SimEvent {
    Tick {
        node: u32,
    },
    Deliver {
        from: u32,
        to: u32,
        envelope: Envelope<SimId>,
    },
    Unreachable {
        node: u32,
        peer: u32,
        generation: u32,
    },
}

struct SimNode {
    core: Option<Box<Kelips<SimId>>>,
    position: (f64, f64),
    incarnation: u64,
    generation: u32,
    scheduled_tick: Option<Millis>,
    last_bump: Millis,
    group: u32,
    address: AddressRecord,
    remembered: Vec<SimId>,
    /// Index of this node's work in the batch being taken.
    in_batch: Option<u32>,
    /// The files core running beside the Kelips core, if any.
    files: Option<Box<FilesCore<SimId>>>,
    /// When the files core's timer is next due.
    files_due: Millis,
    /// Paused (it executes nothing) until then.
    paused_until: Option<Millis>,
}

/// One output of a node's files core that the simulator does not handle itself (everything
/// but `Publish`, which goes straight into the node's Kelips core).
pub type FilesOutput = files_core::Output<SimId>;

/// The simulator.
pub struct Simulator {
    config: SimConfig,
    now: Millis,
    nodes: Vec<SimNode>,
    queue: EventQueue<SimEvent>,
    /// The events of the window being taken (kept for its capacity).
    taken: Vec<(Millis, u64, SimEvent)>,
    seq: u64,
    rng: ChaCha8Rng,
    partition: Option<Vec<u8>>,
    events: Vec<(Millis, u32, Event<SimId>)>,
    traffic: Traffic,
    by_kind: BTreeMap<&'static str, (u64, u64)>,
    trace: u64,
    files_out: Vec<(Millis, u32, FilesOutput)>,
    /// Worker threads beside this one (none with `threads` = 1).
    workers: Option<Workers<NodeWork>>,
}

impl Simulator {
    /// A simulator with `config.nodes` slots, none running yet.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let workers = (threads > 1).then(|| Workers::new(threads - 1));
        let groups = config.kelips.groups;
        let nodes = (0..config.nodes as u32)
            .map(|i| {
                let position = (
                    rng.random_range(0.0..config.plane_ms),
                    rng.random_range(0.0..config.plane_ms),
                );
                let mut record = vec![0u8; config.address_record_bytes];
                rng.fill(&mut record[..]);
                SimNode {
                    core: None,
                    position,
                    incarnation: 0,
                    generation: 0,
                    scheduled_tick: None,
                    last_bump: 0,
                    group: id_facts(&SimId(i), groups).group,
                    address: AddressRecord::new(record).unwrap_or_default(),
                    remembered: Vec::new(),
                    in_batch: None,
                    files: None,
                    files_due: 0,
                    paused_until: None,
                }
            })
            .collect();
        Self {
            config,
            now: 0,
            nodes,
            queue: EventQueue::new(),
            taken: Vec::new(),
            seq: 0,
            rng,
            partition: None,
            events: Vec::new(),
            traffic: Traffic::default(),
            by_kind: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            files_out: Vec::new(),
            workers,
        }
    }

    /// Virtual time, in milliseconds.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Threads the simulator runs on, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.as_ref().map_or(1, |workers| workers.len() + 1)
    }

    /// The simulator's parameters.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The core of node `i`, if running.
    pub fn node(&self, i: u32) -> Option<&Kelips<SimId>> {
        self.nodes.get(i as usize)?.core.as_deref()
    }

    /// Mutable core of node `i`, if running (outputs it queues are collected at the next
    /// simulator step).
    pub fn node_mut(&mut self, i: u32) -> Option<&mut Kelips<SimId>> {
        self.nodes.get_mut(i as usize)?.core.as_deref_mut()
    }

    /// Whether node `i` runs.
    pub fn is_alive(&self, i: u32) -> bool {
        self.node(i).is_some()
    }

    /// The group of node `i` (ground truth).
    pub fn group_of(&self, i: u32) -> u32 {
        self.nodes[i as usize].group
    }

    /// Local time at which node `i` last bumped its heartbeat.
    pub fn last_bump(&self, i: u32) -> Millis {
        self.nodes[i as usize].last_bump
    }

    /// RTT between two nodes, in microseconds (floored at twice the smallest one-way delay).
    pub fn rtt_us(&self, a: u32, b: u32) -> u32 {
        let (pa, pb) = (
            self.nodes[a as usize].position,
            self.nodes[b as usize].position,
        );
        let distance = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt();
        ((distance * 1000.0) as u32).max(self.min_rtt_us())
    }

    fn min_rtt_us(&self) -> u32 {
        u32::try_from(self.min_delay() * 2000).unwrap_or(u32::MAX)
    }

    fn min_delay(&self) -> Millis {
        self.config.min_delay_ms.max(1)
    }

    /// One-way delay from `a` to `b`, in whole milliseconds (at least the smallest delay).
    fn delay(&self, a: u32, b: u32) -> Millis {
        u64::from(self.rtt_us(a, b) / 2000).max(self.min_delay())
    }

    /// Traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Messages and bytes sent per message kind.
    pub fn traffic_by_kind(&self) -> &BTreeMap<&'static str, (u64, u64)> {
        &self.by_kind
    }

    /// A hash of every delivery so far: equal traces, equal hashes.
    pub fn trace(&self) -> u64 {
        self.trace
    }

    /// Takes the events the cores reported since the last call: (time, node, event).
    pub fn take_events(&mut self) -> Vec<(Millis, u32, Event<SimId>)> {
        std::mem::take(&mut self.events)
    }

    /// Starts node `i` now (a restart if it ran before: incarnation + 1, remembered peers
    /// kept, as a real node keeps them on disk) and joins through `bootstraps`.
    pub fn start(&mut self, i: u32, bootstraps: &[u32]) {
        let seed = self.rng.random();
        let node = &mut self.nodes[i as usize];
        node.incarnation += 1;
        node.generation += 1;
        node.scheduled_tick = None;
        node.last_bump = self.now;
        // Tuples whose holders all left are dropped at once, as before the node kept them
        // for `orphan_tuple_ttl_ms`: the simulator counts such lookups as not found either
        // way, and its traces stay comparable with the recorded ones.
        let kelips = Config {
            orphan_tuple_ttl_ms: 0,
            ..self.config.kelips.clone()
        };
        let core = Kelips::new(
            SimId(i),
            node.incarnation,
            node.address.clone(),
            kelips,
            seed,
            self.now,
        );
        let Ok(mut core) = core else {
            return;
        };
        let mut peers: Vec<SimId> = bootstraps.iter().map(|b| SimId(*b)).collect();
        peers.extend(node.remembered.iter().copied());
        core.join(self.now, peers);
        node.core = Some(Box::new(core));
        self.after_input(i);
    }

    /// Kills node `i` at once (crash stop: no goodbye, state lost but for what a node
    /// persists).
    pub fn kill(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        if let Some(core) = node.core.take() {
            node.remembered = core.remembered().map(|(id, _)| *id).collect();
        }
        node.scheduled_tick = None;
        node.files = None;
        node.paused_until = None;
    }

    /// Gives node `i` a files core (before [`start`](Self::start), so it hears the join).
    /// It runs beside the Kelips core until the node is killed: it gets the view, the
    /// messages heard, the own group's tuples it receives and its timer; its `Publish`
    /// commands go into the Kelips core, its other outputs to
    /// [`take_files_outputs`](Self::take_files_outputs).
    pub fn set_files(&mut self, i: u32, files: FilesCore<SimId>) {
        let node = &mut self.nodes[i as usize];
        node.files = Some(Box::new(files));
        node.files_due = self.now;
    }

    /// The files core of node `i`, if it runs.
    pub fn files(&self, i: u32) -> Option<&FilesCore<SimId>> {
        self.nodes.get(i as usize)?.files.as_deref()
    }

    /// Runs `input` on node `i`'s files core now (a transfer's outcome, a commit), then
    /// collects what it produced. None when the node has no files core or is paused.
    pub fn files_input<T>(
        &mut self,
        i: u32,
        input: impl FnOnce(&mut FilesCore<SimId>, Millis) -> T,
    ) -> Option<T> {
        let now = self.now;
        let node = self.nodes.get_mut(i as usize)?;
        if node.paused_until.is_some() {
            return None;
        }
        let files = node.files.as_deref_mut()?;
        let out = input(files, now);
        self.after_input(i);
        Some(out)
    }

    /// Sets the free space node `i` advertises (Kelips entry and files core).
    pub fn set_free_space(&mut self, i: u32, bytes: u64) {
        let node = &mut self.nodes[i as usize];
        if let Some(core) = node.core.as_deref_mut() {
            core.set_free_space(bytes);
        }
        if let Some(files) = node.files.as_deref_mut() {
            files.set_free_space(bytes);
        }
    }

    /// Takes the files cores' outputs since the last call: (time, node, output).
    pub fn take_files_outputs(&mut self) -> Vec<(Millis, u32, FilesOutput)> {
        std::mem::take(&mut self.files_out)
    }

    /// Pauses node `i` until `until`: it executes nothing (messages to it are lost, its
    /// timers wait), then resumes with the view it had.
    pub fn pause(&mut self, i: u32, until: Millis) {
        let node = &mut self.nodes[i as usize];
        if node.core.is_none() || until <= self.now {
            return;
        }
        node.paused_until = Some(until);
        node.scheduled_tick = Some(until);
        self.schedule(until, SimEvent::Tick { node: i });
    }

    /// Whether node `i` is paused.
    pub fn is_paused(&self, i: u32) -> bool {
        self.nodes[i as usize].paused_until.is_some()
    }

    /// When node `i`'s pause ends, if paused.
    pub fn paused_until(&self, i: u32) -> Option<Millis> {
        self.nodes[i as usize].paused_until
    }

    /// Whether node `i` runs and is not paused.
    pub fn is_running(&self, i: u32) -> bool {
        self.is_alive(i) && !self.is_paused(i)
    }

    /// How many times node `i` was started (a restart is a new generation).
    pub fn generation(&self, i: u32) -> u32 {
        self.nodes[i as usize].generation
    }

    /// Whether `a` and `b` can reach each other (no partition between them).
    pub fn can_reach(&self, a: u32, b: u32) -> bool {
        self.reachable(a, b)
    }

    /// One-way delay between two nodes, ms.
    pub fn one_way_ms(&self, a: u32, b: u32) -> Millis {
        self.delay(a, b)
    }

    /// Splits the network: nodes with different labels cannot reach each other.
    pub fn partition(&mut self, labels: Vec<u8>) {
        self.partition = Some(labels);
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        match &self.partition {
            Some(labels) => labels.get(a as usize) == labels.get(b as usize),
            None => true,
        }
    }

    /// Publishes `tuple` at node `i` (a home node of a put).
    pub fn publish(&mut self, i: u32, tuple: FileTuple<SimId>) -> bool {
        let Some(core) = self.node_mut(i) else {
            return false;
        };
        let ok = core.publish(tuple).is_ok();
        self.after_input(i);
        ok
    }

    /// Starts a lookup of `name` at node `i`; its outcome arrives as an event.
    pub fn lookup(&mut self, i: u32, name: &str) -> Option<u64> {
        let now = self.now;
        let query = self.node_mut(i)?.lookup(now, name).ok();
        self.after_input(i);
        query
    }

    /// Runs every event up to and including `until`.
    ///
    /// Events are taken one window of `min_delay_ms` at a time. Within a window nodes cannot
    /// affect each other (no message is faster), so each node's events of the window run, in
    /// time order, on a worker thread while the shared bookkeeping — loss, the trace,
    /// scheduling — runs afterwards in a fixed order. The outcome does not depend on the
    /// number of threads.
    pub fn run_until(&mut self, until: Millis) {
        while let Some(time) = self.queue.next_due(until) {
            let end = (time + self.min_delay() - 1).min(until);
            let batch = self.take_batch(time, end);
            self.run_batch(time, end, batch);
        }
        self.now = self.now.max(until);
    }

    /// Pops every event due by `end`, settles those that reach no core (messages to dead or
    /// partitioned nodes, stale unreachability notices), and groups the rest by node, in
    /// the order of each node's first event; each node's inputs stay in time order.
    fn take_batch(&mut self, start: Millis, end: Millis) -> Vec<NodeWork> {
        let mut batch: Vec<NodeWork> = Vec::new();
        let mut events = std::mem::take(&mut self.taken);
        for at in start..=end {
            self.queue.take_into(at, &mut events);
        }
        for (at, seq, event) in events.drain(..) {
            let Some((node, input)) = self.settle(at, seq, event) else {
                continue;
            };
            let sim_node = &mut self.nodes[node as usize];
            let index = match sim_node.in_batch {
                Some(index) => index as usize,
                None => {
                    sim_node.in_batch = u32::try_from(batch.len()).ok();
                    batch.push(NodeWork {
                        node,
                        core: None,
                        files: None,
                        files_due: 0,
                        scheduled_tick: None,
                        inputs: Vec::new(),
                        drained: Drained::default(),
                    });
                    batch.len() - 1
                }
            };
            batch[index].inputs.push((at, input));
        }
        self.taken = events;
        for work in &mut batch {
            let node = &mut self.nodes[work.node as usize];
            node.in_batch = None;
            work.core = node.core.take();
            work.files = node.files.take();
            work.files_due = node.files_due;
            work.scheduled_tick = node.scheduled_tick;
        }
        batch
    }

    /// The sequential part of taking one event, due at `now`: what reaches a core becomes its
    /// input.
    fn settle(&mut self, now: Millis, seq: u64, event: SimEvent) -> Option<(u32, Input)> {
        match event {
            SimEvent::Tick { node } => {
                let sim_node = &mut self.nodes[node as usize];
                if sim_node.scheduled_tick != Some(now) {
                    return None;
                }
                match sim_node.paused_until {
                    Some(until) if until > now => return None,
                    Some(_) => sim_node.paused_until = None,
                    None => {}
                }
                Some((node, Input::Tick))
            }
            SimEvent::Deliver { from, to, .. } if self.is_paused(to) && self.node(to).is_some() => {
                // A paused process reads nothing: the message is lost.
                let _ = from;
                None
            }
            SimEvent::Deliver { from, to, envelope } => {
                if self.node(to).is_none() || !self.reachable(from, to) {
                    let back = if self.node(to).is_none() {
                        self.delay(from, to)
                    } else {
                        self.config.kelips.request_timeout_ms
                    };
                    let generation = self.nodes[from as usize].generation;
                    self.schedule(
                        now + back,
                        SimEvent::Unreachable {
                            node: from,
                            peer: to,
                            generation,
                        },
                    );
                    return None;
                }
                self.trace = fold(self.trace, now ^ (u64::from(from) << 32) ^ u64::from(to));
                let rtt_us = seq
                    .is_multiple_of(RTT_SAMPLE_EVERY)
                    .then(|| self.rtt_us(from, to));
                Some((
                    to,
                    Input::Deliver {
                        from,
                        envelope,
                        rtt_us,
                    },
                ))
            }
            SimEvent::Unreachable {
                node,
                peer,
                generation,
            } => {
                let current = &self.nodes[node as usize];
                (current.generation == generation
                    && current.core.is_some()
                    && current.paused_until.is_none())
                .then_some((node, Input::Unreachable { peer }))
            }
        }
    }

    /// Runs each node's inputs of the window `start..=end` (in parallel when there are
    /// enough nodes), then applies what they produced in batch order.
    fn run_batch(&mut self, start: Millis, end: Millis, mut batch: Vec<NodeWork>) {
        match &self.workers {
            Some(workers) if batch.len() >= self.config.parallel_min_nodes => {
                batch = workers.run(batch, (start, end));
            }
            _ => batch.iter_mut().for_each(|work| work.run((start, end))),
        }
        self.now = end;
        for work in batch {
            let node = &mut self.nodes[work.node as usize];
            node.core = work.core;
            node.files = work.files;
            node.files_due = work.files_due;
            node.scheduled_tick = work.scheduled_tick;
            if let Some(at) = work.drained.bumped_at {
                node.last_bump = at;
            }
            self.traffic.refused += work.drained.refused;
            self.apply(work.node, work.drained);
        }
    }

    fn schedule(&mut self, at: Millis, event: SimEvent) {
        self.seq += 1;
        self.queue.push(at, self.seq, event);
    }

    /// Collects a node's outputs after a command and reschedules its timer.
    fn after_input(&mut self, i: u32) {
        let now = self.now;
        let node = &mut self.nodes[i as usize];
        if node.paused_until.is_some() {
            return;
        }
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let mut drained = Drained::default();
        pump(core, node.files.as_deref_mut(), now, &mut drained);
        let deadline = node_deadline(core, node.files.as_deref(), node.files_due);
        drained.tick_at = reschedule(&mut node.scheduled_tick, deadline.max(now));
        self.apply(i, drained);
    }

    /// The shared part of a node's outputs: traffic counters, loss, delivery times, events
    /// and its next tick.
    fn apply(&mut self, i: u32, drained: Drained) {
        for (at, event) in drained.events {
            self.events.push((at, i, event));
        }
        for (at, output) in drained.files {
            self.files_out.push((at, i, output));
        }
        for (sent, to, envelope, size) in drained.sends {
            let kind = self.by_kind.entry(envelope.message.kind()).or_default();
            kind.0 += 1;
            kind.1 += size as u64;
            self.traffic.messages += 1;
            self.traffic.bytes += size as u64;
            self.traffic.max_message_bytes = self.traffic.max_message_bytes.max(size);
            if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss) {
                self.traffic.lost += 1;
                continue;
            }
            let delay = self.delay(i, to);
            self.schedule(
                sent + delay,
                SimEvent::Deliver {
                    from: i,
                    to,
                    envelope,
                },
            );
        }
        if let Some(at) = drained.tick_at {
            self.schedule(at, SimEvent::Tick { node: i });
        }
    }
}

/// What reaches a core within a window.
enum Input {
    Tick,
    Deliver {
        from: u32,
        envelope: Envelope<SimId>,
        rtt_us: Option<u32>,
    },
    Unreachable {
        peer: u32,
    },
}

/// One node's share of a window: its core (taken out of the simulator while it runs), its
/// inputs with their times, and what they produced.
struct NodeWork {
    node: u32,
    core: Option<Box<Kelips<SimId>>>,
    files: Option<Box<FilesCore<SimId>>>,
    files_due: Millis,
    scheduled_tick: Option<Millis>,
    inputs: Vec<(Millis, Input)>,
    drained: Drained,
}

/// A node's outputs with the time each was produced, messages with their encoded sizes
/// measured where they were produced.
#[derive(Default)]
struct Drained {
    sends: Vec<(Millis, u32, Envelope<SimId>, usize)>,
    events: Vec<(Millis, Event<SimId>)>,
    files: Vec<(Millis, FilesOutput)>,
    refused: u64,
    /// When the heartbeat last changed.
    bumped_at: Option<Millis>,
    tick_at: Option<Millis>,
}

impl workers::Item for NodeWork {
    /// The window: first and last millisecond.
    type Round = (Millis, Millis);

    /// Runs the inputs of the window `start..=end` in time order, and the core's timer
    /// whenever it falls due in the window: at most one tick per millisecond.
    fn run(&mut self, (start, end): (Millis, Millis)) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let mut files = self.files.as_deref_mut();
        let mut beat = core.beat();
        let mut inputs = std::mem::take(&mut self.inputs).into_iter().peekable();
        let mut now = start;
        loop {
            let mut ticked = false;
            while let Some((_, input)) = inputs.next_if(|(at, _)| *at == now) {
                match input {
                    Input::Tick => {
                        if self.scheduled_tick != Some(now) {
                            continue;
                        }
                        self.scheduled_tick = None;
                        core.handle_tick(now);
                        ticked = true;
                    }
                    Input::Deliver {
                        from,
                        envelope,
                        rtt_us,
                    } => {
                        if let Some(rtt) = rtt_us {
                            core.handle_rtt(&SimId(from), rtt);
                        }
                        let tuples = match (&files, &envelope.message) {
                            (Some(_), Message::SyncPush(push)) => push.tuples.clone(),
                            (Some(_), Message::SyncReply(reply)) => reply.tuples.clone(),
                            _ => Vec::new(),
                        };
                        if core.handle_message(now, SimId(from), envelope).is_err() {
                            self.drained.refused += 1;
                        } else if let Some(files) = files.as_deref_mut() {
                            files.handle_heard(now);
                            for tuple in tuples {
                                files.handle_tuple(now, tuple);
                            }
                        }
                    }
                    Input::Unreachable { peer } => core.handle_unreachable(now, &SimId(peer)),
                }
                pump(core, files.as_deref_mut(), now, &mut self.drained);
            }
            if !ticked && core.next_deadline() <= now {
                // Due now: run it here (nothing from another node arrives within the window).
                self.scheduled_tick = None;
                core.handle_tick(now);
                pump(core, files.as_deref_mut(), now, &mut self.drained);
                ticked = true;
            }
            if let Some(files) = files.as_deref_mut()
                && self.files_due <= now
            {
                if core.config().self_sizing() {
                    let changed = files.handle_structure(now, core.grouping(), core.group());
                    if changed || files.repair_due(now) {
                        // As the node's driver does before each repair round: the own group's
                        // sets whose holders are all of other groups (a split brought the
                        // name here), whichever message brought them.
                        feed_foreign_sets(core, files, now);
                    }
                }
                files.handle_view(now, view_of(core));
                files.handle_tick(now);
                self.files_due = files.next_deadline(now).max(now + 1);
                pump(core, Some(files), now, &mut self.drained);
            }
            if core.beat() != beat {
                beat = core.beat();
                self.drained.bumped_at = Some(now);
            }
            let mut deadline = node_deadline(core, files.as_deref(), self.files_due).max(now);
            if ticked && deadline == now {
                // A core must not be asked for the same instant twice.
                deadline = now + 1;
            }
            let next_input = inputs.peek().map(|(at, _)| *at);
            let next = next_input.map_or(deadline, |at| at.min(deadline));
            if next > end {
                self.drained.tick_at = reschedule(&mut self.scheduled_tick, deadline);
                return;
            }
            now = next;
        }
    }
}

/// The own group as a files core takes it: every member but the node, live or failed. In
/// id order (the files core keeps it in a tree by id; the view, never larger than the files
/// core's cap, is in short-id order), which makes building that tree cheaper.
fn view_of(core: &Kelips<SimId>) -> Vec<MemberState<SimId>> {
    let mut members: Vec<MemberState<SimId>> = core.view().iter().map(MemberState::of).collect();
    members.sort_unstable_by_key(|m| m.id);
    members
}

/// Feeds `files` the own group's tuples none of whose holders is of the own group.
fn feed_foreign_sets(core: &Kelips<SimId>, files: &mut FilesCore<SimId>, now: Millis) {
    let grouping = core.grouping();
    let own = core.group();
    for tuple in core.tuples().iter() {
        let foreign = !tuple.deleted
            && tuple
                .holders
                .iter()
                .all(|h| grouping.id_facts(h).group != own);
        if foreign {
            files.handle_tuple(now, tuple.clone());
        }
    }
}

/// The earlier of the Kelips core's deadline and the files core's.
fn node_deadline(
    core: &Kelips<SimId>,
    files: Option<&FilesCore<SimId>>,
    files_due: Millis,
) -> Millis {
    let kelips = core.next_deadline();
    match files {
        Some(_) => kelips.min(files_due),
        None => kelips,
    }
}

/// Takes both cores' pending outputs: the join goes to the files core, the files core's
/// tuples into the Kelips core, and the rest to `drained`.
fn pump(
    core: &mut Kelips<SimId>,
    mut files: Option<&mut FilesCore<SimId>>,
    now: Millis,
    drained: &mut Drained,
) {
    loop {
        let events_before = drained.events.len();
        drain(core, now, drained);
        let Some(files) = files.as_deref_mut() else {
            return;
        };
        for (_, event) in &drained.events[events_before..] {
            if matches!(event, Event::Joined { .. }) {
                files.handle_joined(now);
            }
        }
        let mut published = false;
        while let Some(output) = files.poll_output() {
            match output {
                files_core::Output::Command(FilesCommand::Publish { tuple }) => {
                    let _ = core.publish(tuple);
                    published = true;
                }
                other => drained.files.push((now, other)),
            }
        }
        if !published {
            return;
        }
    }
}

/// Moves a node's timer to `deadline` if that is earlier than the one scheduled; returns the
/// new time to schedule, if any (a later timer already queued is then ignored when it fires).
fn reschedule(scheduled: &mut Option<Millis>, deadline: Millis) -> Option<Millis> {
    if scheduled.is_none_or(|t| deadline < t) {
        *scheduled = Some(deadline);
        Some(deadline)
    } else {
        None
    }
}

/// Takes a core's pending outputs, measuring each message with the real codec (one group
/// gossip shared by several targets is measured once).
fn drain(core: &mut Kelips<SimId>, now: Millis, drained: &mut Drained) {
    let mut last_group: Option<(*const (), usize)> = None;
    while let Some(output) = core.poll_output() {
        match output {
            Output::Event(event) => drained.events.push((now, event)),
            Output::Send { to, envelope } => {
                let size = match &envelope.message {
                    Message::Group(gossip) => {
                        let key = Arc::as_ptr(gossip) as *const ();
                        match last_group {
                            Some((k, size)) if k == key => size,
                            _ => {
                                let size = encoded_len(&envelope);
                                last_group = Some((key, size));
                                size
                            }
                        }
                    }
                    _ => encoded_len(&envelope),
                };
                drained.sends.push((now, to.0, envelope, size));
            }
        }
    }
}

fn fold(hash: u64, value: u64) -> u64 {
    (hash ^ value).wrapping_mul(0x0000_0100_0000_01b3)
}
