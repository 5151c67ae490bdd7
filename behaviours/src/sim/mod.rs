//! A deterministic simulator: N [`Kelips`] cores on a plane, one virtual clock, seeded loss,
//! partitions, kills and restarts.
//!
//! * Nodes sit uniformly on a square; the RTT between two is their distance in milliseconds
//!   (floored at 1 ms). A message arrives half an RTT after it is sent; with one delivery in
//!   [`RTT_SAMPLE_EVERY`] the receiver also gets an RTT sample of the sender, as libp2p ping on
//!   the connection would give it now and then.
//! * Each message is lost with probability `loss`, silently. A message to a dead node, or across
//!   a partition, comes back to the sender as unreachable (after one RTT for a dead node — the
//!   connection is refused — and after `request_timeout_ms` across a partition).
//! * Sizes are measured with the real codec ([`crate::codec::encoded_len`]); one gossip message
//!   shared by several targets is measured once.
//! * Everything is ordered and seeded: the same seed gives the same trace ([`Simulator::trace`]).
//! * Time advances one millisecond at a time. Nothing one node does in a millisecond can reach
//!   another before the next (a message takes at least 1 ms), so the nodes with events in a
//!   millisecond run them on worker threads; loss, scheduling and the trace are then settled in
//!   a fixed order, and the outcome does not depend on the number of threads.

pub mod measure;
pub mod report;
pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::Millis;
use crate::codec::encoded_len;
use crate::config::Config;
use crate::entry::AddressRecord;
use crate::id::{SimId, id_facts};
use crate::message::{Envelope, Message};
use crate::node::{Event, Kelips, Output};
use crate::tuple::FileTuple;

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
    /// Milliseconds in which at least this many nodes have events run them in parallel;
    /// fewer are not worth the hand-off. Default 16.
    pub parallel_min_nodes: usize,
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
}

/// The simulator.
pub struct Simulator {
    config: SimConfig,
    now: Millis,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(Millis, u64, usize)>>,
    slots: Vec<Option<SimEvent>>,
    free_slots: Vec<usize>,
    seq: u64,
    rng: ChaCha8Rng,
    partition: Option<Vec<u8>>,
    events: Vec<(Millis, u32, Event<SimId>)>,
    traffic: Traffic,
    by_kind: BTreeMap<&'static str, (u64, u64)>,
    trace: u64,
    /// Worker threads (none if the pool could not be built: everything runs here).
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Simulator {
    /// A simulator with `config.nodes` slots, none running yet.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let pool = (config.threads != 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.threads)
                    .build()
                    .ok()
                    .map(Arc::new)
            })
            .flatten();
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
                }
            })
            .collect();
        Self {
            config,
            now: 0,
            nodes,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            seq: 0,
            rng,
            partition: None,
            events: Vec::new(),
            traffic: Traffic::default(),
            by_kind: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            pool,
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

    /// RTT between two nodes, in microseconds (floored at 1 ms).
    pub fn rtt_us(&self, a: u32, b: u32) -> u32 {
        let (pa, pb) = (
            self.nodes[a as usize].position,
            self.nodes[b as usize].position,
        );
        let distance = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt();
        ((distance * 1000.0) as u32).max(1000)
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
        let core = Kelips::new(
            SimId(i),
            node.incarnation,
            node.address.clone(),
            self.config.kelips.clone(),
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
    /// Events are taken one virtual millisecond at a time. Within one millisecond nodes cannot
    /// affect each other (every message takes at least 1 ms), so each node's events of that
    /// millisecond run on a worker thread (rayon) while the shared bookkeeping — loss, the
    /// trace, scheduling — runs afterwards in a fixed order. The outcome does not depend on
    /// the number of threads.
    pub fn run_until(&mut self, until: Millis) {
        // On a pool thread, so that this thread works on batches too instead of handing each
        // millisecond to the pool and sleeping until it is done.
        match self.pool.clone() {
            Some(pool) => pool.install(|| self.run_batches(until)),
            None => self.run_batches(until),
        }
    }

    fn run_batches(&mut self, until: Millis) {
        while let Some(Reverse((time, _, _))) = self.queue.peek().copied() {
            if time > until {
                break;
            }
            self.now = time;
            let batch = self.take_batch(time);
            self.run_batch(batch);
        }
        self.now = self.now.max(until);
    }

    /// Pops every event due at `time`, settles those that reach no core (messages to dead or
    /// partitioned nodes, stale unreachability notices), and groups the rest by node, in
    /// the order of each node's first event.
    fn take_batch(&mut self, time: Millis) -> Vec<NodeWork> {
        let mut batch: Vec<NodeWork> = Vec::new();
        let mut index_of: BTreeMap<u32, usize> = BTreeMap::new();
        while let Some(Reverse((at, seq, slot))) = self.queue.peek().copied() {
            if at != time {
                break;
            }
            self.queue.pop();
            let Some(event) = self.slots[slot].take() else {
                continue;
            };
            self.free_slots.push(slot);
            let Some((node, input)) = self.settle(seq, event) else {
                continue;
            };
            let index = *index_of.entry(node).or_insert_with(|| {
                batch.push(NodeWork {
                    node,
                    core: None,
                    scheduled_tick: None,
                    inputs: Vec::new(),
                    drained: Drained::default(),
                });
                batch.len() - 1
            });
            batch[index].inputs.push(input);
        }
        for work in &mut batch {
            let node = &mut self.nodes[work.node as usize];
            work.core = node.core.take();
            work.scheduled_tick = node.scheduled_tick;
        }
        batch
    }

    /// The sequential part of taking one event: what reaches a core becomes its input.
    fn settle(&mut self, seq: u64, event: SimEvent) -> Option<(u32, Input)> {
        let now = self.now;
        match event {
            SimEvent::Tick { node } => (self.nodes[node as usize].scheduled_tick == Some(now))
                .then_some((node, Input::Tick)),
            SimEvent::Deliver { from, to, envelope } => {
                if self.node(to).is_none() || !self.reachable(from, to) {
                    let back = if self.node(to).is_none() {
                        u64::from(self.rtt_us(from, to) / 2000).max(1)
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
                (current.generation == generation && current.core.is_some())
                    .then_some((node, Input::Unreachable { peer }))
            }
        }
    }

    /// Runs each node's inputs (in parallel when there are enough), then applies what they
    /// produced in batch order.
    fn run_batch(&mut self, mut batch: Vec<NodeWork>) {
        let now = self.now;
        if self.pool.is_some() && batch.len() >= self.config.parallel_min_nodes {
            batch
                .par_iter_mut()
                .with_max_len(1)
                .for_each(|work| work.run(now));
        } else {
            batch.iter_mut().for_each(|work| work.run(now));
        }
        for work in batch {
            let node = &mut self.nodes[work.node as usize];
            node.core = work.core;
            node.scheduled_tick = work.scheduled_tick;
            if work.drained.bumped {
                node.last_bump = now;
            }
            self.traffic.refused += work.drained.refused;
            self.apply(work.node, work.drained);
        }
    }

    fn schedule(&mut self, at: Millis, event: SimEvent) {
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(event);
                slot
            }
            None => {
                self.slots.push(Some(event));
                self.slots.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Collects a node's outputs after a command and reschedules its timer.
    fn after_input(&mut self, i: u32) {
        let now = self.now;
        let node = &mut self.nodes[i as usize];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let mut drained = Drained::default();
        drain(core, &mut drained);
        drained.tick_at = reschedule(&mut node.scheduled_tick, core.next_deadline().max(now));
        self.apply(i, drained);
    }

    /// The shared part of a node's outputs: traffic counters, loss, delivery times, events
    /// and its next tick.
    fn apply(&mut self, i: u32, drained: Drained) {
        let now = self.now;
        for event in drained.events {
            self.events.push((now, i, event));
        }
        for (to, envelope, size) in drained.sends {
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
            let delay = u64::from(self.rtt_us(i, to) / 2000).max(1);
            self.schedule(
                now + delay,
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

/// What reaches a core within one millisecond.
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

/// One node's share of a millisecond: its core (taken out of the simulator while it runs),
/// its inputs, and what they produced.
struct NodeWork {
    node: u32,
    core: Option<Box<Kelips<SimId>>>,
    scheduled_tick: Option<Millis>,
    inputs: Vec<Input>,
    drained: Drained,
}

/// A node's outputs, with encoded sizes measured where they were produced.
#[derive(Default)]
struct Drained {
    sends: Vec<(u32, Envelope<SimId>, usize)>,
    events: Vec<Event<SimId>>,
    refused: u64,
    bumped: bool,
    tick_at: Option<Millis>,
}

impl NodeWork {
    /// Runs the inputs in order, then any timer due in the same millisecond.
    fn run(&mut self, now: Millis) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let before = core.beat();
        let mut ticked = false;
        for input in std::mem::take(&mut self.inputs) {
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
                    if core.handle_message(now, SimId(from), envelope).is_err() {
                        self.drained.refused += 1;
                    }
                }
                Input::Unreachable { peer } => core.handle_unreachable(now, &SimId(peer)),
            }
            drain(core, &mut self.drained);
        }
        let mut deadline = core.next_deadline().max(now);
        if deadline == now && !ticked {
            // Due now: run it here (messages cannot arrive within the same millisecond).
            self.scheduled_tick = None;
            core.handle_tick(now);
            drain(core, &mut self.drained);
            deadline = core.next_deadline().max(now);
        }
        if deadline == now {
            // A tick ran this millisecond, and a core must not ask for the same instant again.
            deadline = now + 1;
        }
        self.drained.tick_at = reschedule(&mut self.scheduled_tick, deadline);
        self.drained.bumped = core.beat() != before;
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
fn drain(core: &mut Kelips<SimId>, drained: &mut Drained) {
    let mut last_group: Option<(*const (), usize)> = None;
    while let Some(output) = core.poll_output() {
        match output {
            Output::Event(event) => drained.events.push(event),
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
                drained.sends.push((to.0, envelope, size));
            }
        }
    }
}

fn fold(hash: u64, value: u64) -> u64 {
    (hash ^ value).wrapping_mul(0x0000_0100_0000_01b3)
}
