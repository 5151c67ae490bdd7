//! The file layer's decisions as a sans-I/O state machine, beside the Kelips core.
//!
//! [`FilesCore`] is one node's file logic: where a put's copies go and when it is
//! acknowledged, who leads a name's repair, when copies are made, trimmed, handed off,
//! collected as garbage, which versions are kept, and what a lookup may answer. Inputs carry
//! the caller's clock ([`Millis`]): the Kelips view, tuples, disk state and the outcomes of
//! transfers. Outputs are [`Command`]s (copy to, fetch from, send a commit, publish a tuple,
//! delete a blob) and [`Event`]s, queued in a bounded outbox the driver drains with
//! [`FilesCore::poll_output`]. No tasks, clock, filesystem or global RNG: placement draws from
//! a ChaCha8 generator seeded by the caller, so the simulator can run it reproducibly.
//!
//! One concept per module: [`config`] (parameters), [`limits`] (bounds), [`output`]
//! (commands, events), [`rank`] (leader choice), [`placement`], [`health`] (local health
//! before acting), [`membership`] (the view and death evidence), [`holders`] (holder
//! knowledge and the no-shrink rule), [`put`] (the ack rule), [`repair`] (fetch, restore,
//! trim, re-add), [`handoff`], [`versions`], [`orphans`], [`availability`]. The rules are
//! described in `ALGORITHM.md` ("The files core").

pub mod availability;
pub mod config;
pub mod handoff;
pub mod health;
pub mod holders;
pub mod limits;
pub mod membership;
pub mod orphans;
pub mod output;
pub mod placement;
pub mod put;
pub mod rank;
pub mod repair;
pub mod tombstone;
pub mod transition;
pub mod versions;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Millis;
use crate::id::NodeId;
use crate::tuple::{FileTuple, Version};

pub use availability::Availability;
pub use config::{FilesConfig, FilesConfigError};
pub use handoff::HandOffStart;
pub use health::Health;
pub use holders::HolderKnowledge;
pub use membership::{MemberState, Membership};
pub use output::{Command, CopyPurpose, Event, Hash, Output, PutFailure, PutId};
pub use put::{CommitError, PutError, PutStart};
pub use repair::FetchFailure;
pub use tombstone::DeleteError;
pub use transition::GroupPlace;
pub use versions::{KeptVersion, KeptVersions};

use health::HealthChange;
use limits::{MAX_BLOBS, MAX_TRACKED_NAMES};
use orphans::Orphans;
use output::Outbox;
use put::PutState;

/// Counters for metrics and the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Puts acknowledged as first home.
    pub puts_acknowledged: u64,
    /// Puts failed as first home.
    pub puts_failed: u64,
    /// Holder sets published (repair, trim, hand-off, re-add).
    pub holder_sets_published: u64,
    /// Shrinks, trims or deletions held back because the node was not settled.
    pub shrinks_deferred: u64,
    /// Holder sets not published because they would list fewer holders than known copies.
    pub shrinks_refused: u64,
    /// Copies asked for (repair and hand-off).
    pub copies_started: u64,
    /// Fetches asked for.
    pub fetches_started: u64,
    /// Blobs deleted (garbage and corrupt copies).
    pub blobs_deleted: u64,
    /// Names not tracked because [`MAX_TRACKED_NAMES`] were.
    pub names_untracked: u64,
    /// Outputs dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Confirmations asked of a name's new group (after a split).
    pub confirms_started: u64,
    /// Names forgotten because their new group holds them.
    pub names_emigrated: u64,
}

/// A fetch in flight for a name.
#[derive(Debug, Clone)]
pub(crate) struct Fetch<I> {
    from: I,
    tried: BTreeSet<I>,
}

/// What this node tracks of one name.
#[derive(Debug, Clone)]
pub(crate) struct Tracked<I> {
    tuple: Arc<FileTuple<I>>,
    knowledge: HolderKnowledge<I>,
    fetch: Option<Fetch<I>>,
    /// Copies being made by this node for repair or hand-off.
    copying: BTreeSet<I>,
    /// Holders that failed a copy this round (not asked again until the next round).
    copy_failed: BTreeSet<I>,
    /// `CopiesLost` was reported for this version.
    lost_reported: bool,
}

/// One node's file logic. See the [module documentation](self).
#[derive(Debug)]
pub struct FilesCore<I: NodeId> {
    me: I,
    config: FilesConfig,
    rng: ChaCha8Rng,
    health: Health,
    view: Membership<I>,
    own_free: u64,
    /// Intact blobs on disk and their sizes.
    blobs: BTreeMap<Hash, u64>,
    names: BTreeMap<Arc<str>, Tracked<I>>,
    puts: BTreeMap<PutId, PutState<I>>,
    next_put: u64,
    kept: KeptVersions,
    orphans: Orphans,
    /// Repairs (copies, fetches) in flight.
    in_flight: usize,
    /// The name after which the next repair round starts (round-robin).
    cursor: Option<Arc<str>>,
    next_repair: Millis,
    stopping: bool,
    /// The structure, when groups size themselves (see [`transition`]).
    place: Option<GroupPlace>,
    /// Names of other groups whose confirmation is asked for.
    confirming: BTreeSet<Arc<str>>,
    /// Names that moved to their new group, with the version handed on: a tuple of that
    /// version (still listing this node, or naming its blob) does not bring them back.
    /// Forgotten at the next structure change; at most `MAX_TRACKED_NAMES`.
    emigrated: BTreeMap<Arc<str>, Version>,
    outbox: Outbox<I>,
    stats: Stats,
}

impl<I: NodeId> FilesCore<I> {
    /// A node `me` that has not joined yet (a fresh start or a restart: unhealthy until it
    /// joins and settles). `seed` seeds placement.
    pub fn new(me: I, config: FilesConfig, seed: u64) -> Result<Self, FilesConfigError> {
        config.validate()?;
        let kept = KeptVersions::new(config.keep_versions);
        Ok(Self {
            me,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            health: Health::new(),
            view: Membership::default(),
            own_free: 0,
            blobs: BTreeMap::new(),
            names: BTreeMap::new(),
            puts: BTreeMap::new(),
            next_put: 0,
            kept,
            orphans: Orphans::default(),
            in_flight: 0,
            cursor: None,
            next_repair: 0,
            stopping: false,
            place: None,
            confirming: BTreeSet::new(),
            emigrated: BTreeMap::new(),
            outbox: Outbox::default(),
            stats: Stats::default(),
        })
    }

    // ---- queries -----------------------------------------------------------------------

    /// This node.
    pub fn id(&self) -> &I {
        &self.me
    }

    /// The parameters.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            outbox_dropped: self.outbox.dropped(),
            ..self.stats
        }
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<Output<I>> {
        self.outbox.pop()
    }

    /// When [`handle_tick`](Self::handle_tick) is next due: the next repair round, and at
    /// least every `max_input_gap_ms / 5` (so a healthy driver never looks stalled).
    pub fn next_deadline(&self, now: Millis) -> Millis {
        self.next_repair
            .min(now + (self.config.max_input_gap_ms / 5).max(1))
    }

    /// Whether the node may shrink holder sets, trim or delete at `now`.
    pub fn is_settled(&self, now: Millis) -> bool {
        self.health.settled(now, self.config.settle_ms)
    }

    /// The tracked tuple of `name`.
    pub fn tuple(&self, name: &str) -> Option<&Arc<FileTuple<I>>> {
        self.names.get(name).map(|t| &t.tuple)
    }

    /// What this node knows of the copies of `name`.
    pub fn knowledge(&self, name: &str) -> Option<&HolderKnowledge<I>> {
        self.names.get(name).map(|t| &t.knowledge)
    }

    /// Whether an intact blob `hash` is on disk here.
    pub fn has_blob(&self, hash: &Hash) -> bool {
        self.blobs.contains_key(hash)
    }

    /// The kept version `lamport` of `name` (for `get --version`).
    pub fn kept_version(&self, name: &str, lamport: u64) -> Option<KeptVersion> {
        self.kept.find(name, lamport)
    }

    /// The versions this node keeps (for `get --version` and the garbage collector).
    pub fn kept(&self) -> &KeptVersions {
        &self.kept
    }

    /// Restores the kept versions a node saved before it stopped (at start, before any
    /// input): their blobs are not garbage.
    pub fn restore_kept(&mut self, kept: KeptVersions) {
        self.kept = kept;
    }

    /// The names this node tracks: the driver feeds their newest tuples back with
    /// [`handle_tuple`](Self::handle_tuple), with every tuple that lists this node or names
    /// one of its blobs.
    pub fn tracked_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.names.keys()
    }

    /// Whether [`handle_tick`](Self::handle_tick) at `now` runs a repair round (the driver
    /// refreshes tuples and the blob inventory just before).
    pub fn repair_due(&self, now: Millis) -> bool {
        now >= self.next_repair
    }

    /// Copies and fetches in flight.
    pub fn transfers_in_flight(&self) -> usize {
        self.in_flight
    }

    /// Names tracked.
    pub fn names_tracked(&self) -> usize {
        self.names.len()
    }

    /// Puts in progress with this node as first home.
    pub fn puts_in_progress(&self) -> usize {
        self.puts.len()
    }

    /// min(R, live members of the own group, this node included).
    pub fn target(&self) -> usize {
        self.config.replication.min(self.view.live().count() + 1)
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Every input passes here first: a gap since the previous input means this node's
    /// timers fired late.
    fn input(&mut self, now: Millis) {
        if let HealthChange::Lost(gap) = self.health.input(now, self.config.max_input_gap_ms) {
            self.emit(Event::HealthLost { gap_ms: gap });
        }
    }

    /// The Kelips join finished (`Event::Joined`).
    pub fn handle_joined(&mut self, now: Millis) {
        self.input(now);
        self.health.joined(now);
    }

    /// A message of any kind was received at `now` (the node is not deaf).
    pub fn handle_heard(&mut self, now: Millis) {
        self.input(now);
        self.health.heard(now);
    }

    /// The own group's view at `now` (every member but this node).
    pub fn handle_view(&mut self, now: Millis, members: Vec<MemberState<I>>) {
        self.input(now);
        let settled = self.is_settled(now);
        self.view.update(now, members, settled);
        self.check_group(now);
    }

    fn check_group(&mut self, now: Millis) {
        let change = self.health.group(
            now,
            self.view.len(),
            self.view.last_heard(),
            self.config.t_fail_ms,
        );
        if let HealthChange::Lost(gap) = change {
            self.emit(Event::HealthLost { gap_ms: gap });
        }
        if self.health.take_settled_report(now, self.config.settle_ms) {
            self.emit(Event::Settled);
        }
    }

    /// The free space this node advertises, in bytes (placement counts it for itself).
    pub fn set_free_space(&mut self, bytes: u64) {
        self.own_free = bytes;
    }

    /// An intact blob of `size` bytes is on disk (at start, for every stored blob; later,
    /// for every one stored).
    pub fn handle_blob_stored(&mut self, now: Millis, hash: Hash, size: u64) {
        self.input(now);
        if self.blobs.len() < MAX_BLOBS || self.blobs.contains_key(&hash) {
            self.blobs.insert(hash, size);
        }
    }

    /// A blob is gone from disk (deleted, or found missing).
    pub fn handle_blob_removed(&mut self, now: Millis, hash: Hash) {
        self.input(now);
        self.blobs.remove(&hash);
        self.orphans.named(&hash);
    }

    /// A stored blob failed its BLAKE3 check (scrub, or while sending): it is not a copy. It
    /// is deleted at once — corrupt bytes are no copy, whatever the node's health — and this
    /// node counts as missing for the names it holds with it, so repair fetches a good one.
    pub fn handle_blob_corrupt(&mut self, now: Millis, hash: Hash) {
        self.input(now);
        self.blobs.remove(&hash);
        self.command(Command::Delete { hash });
        self.stats.blobs_deleted += 1;
        let me = self.me.clone();
        for tracked in self.names.values_mut() {
            if tracked.tuple.version.blake3 == hash {
                tracked.knowledge.copy_missing(&me);
            }
        }
    }

    /// A version of a name was replaced in the local Kelips store by a newer one (Kelips
    /// `Event::VersionSuperseded`): kept for `get --version` if this node held it, even when
    /// the core never saw that version tracked (a second put right after the first).
    pub fn handle_version_superseded(&mut self, now: Millis, old: &FileTuple<I>) {
        self.input(now);
        if !old.deleted && old.holders.contains(&self.me) {
            self.kept.record(
                &old.name,
                KeptVersion {
                    lamport: old.version.lamport,
                    blake3: old.version.blake3,
                    size: old.size,
                },
            );
        }
    }

    /// A tuple of the own group, new or changed in the local Kelips store (or learned in a
    /// commit). Tracked when it concerns this node.
    pub fn handle_tuple(&mut self, now: Millis, tuple: Arc<FileTuple<I>>) {
        self.input(now);
        self.track(&tuple);
    }

    pub(crate) fn track(&mut self, tuple: &Arc<FileTuple<I>>) {
        let relevant = tuple.holders.contains(&self.me)
            || self.blobs.contains_key(&tuple.version.blake3)
            || self.names.contains_key(&tuple.name)
            || self.kept.contains(&tuple.name)
            || (!tuple.deleted && self.is_own_name(&tuple.name) && self.is_foreign_set(tuple));
        if !relevant || self.has_emigrated(tuple) {
            return;
        }
        let target = self.target();
        let live_listed = tuple
            .holders
            .iter()
            .filter(|h| **h == self.me || self.view.is_live(h))
            .count();
        // A set replaces the known holders only when it lists enough live ones *by a
        // settled view*: a stale view's target (its members all failed) proves nothing.
        let replaces = live_listed >= target && self.is_settled(self.health.last_input());
        match self.names.get_mut(&tuple.name) {
            Some(tracked) => {
                let before = tracked.tuple.clone();
                let mut merged = FileTuple::clone(&before);
                if merged.merge(tuple) {
                    if merged.version != before.version
                        && !before.deleted
                        && before.holders.contains(&self.me)
                        && self.blobs.contains_key(&before.version.blake3)
                    {
                        // A version this node held was superseded: keep it a while.
                        self.kept.record(
                            &before.name,
                            KeptVersion {
                                lamport: before.version.lamport,
                                blake3: before.version.blake3,
                                size: before.size,
                            },
                        );
                    }
                    if merged.version != before.version {
                        // Transfers of the old version are forgotten: their slots are free
                        // again (their completions find nothing to account).
                        let dropped = usize::from(tracked.fetch.take().is_some())
                            + std::mem::take(&mut tracked.copying).len();
                        self.in_flight = self.in_flight.saturating_sub(dropped);
                        tracked.lost_reported = false;
                    }
                    tracked.tuple = Arc::new(merged);
                }
                if tuple.version == tracked.tuple.version {
                    // Holders of an older epoch are merged in; the newest epoch replaces the
                    // known ones only when it lists enough live holders.
                    let newest_epoch = tuple.rank() == tracked.tuple.rank();
                    tracked.knowledge.observe(tuple, replaces && newest_epoch);
                } else if tracked.knowledge.version != tracked.tuple.version {
                    let newest = tracked.tuple.clone();
                    tracked.knowledge.observe(&newest, false);
                }
            }
            None => {
                if self.names.len() >= MAX_TRACKED_NAMES {
                    self.stats.names_untracked += 1;
                    return;
                }
                self.names.insert(
                    tuple.name.clone(),
                    Tracked {
                        tuple: tuple.clone(),
                        knowledge: HolderKnowledge::new(tuple),
                        fetch: None,
                        copying: BTreeSet::new(),
                        copy_failed: BTreeSet::new(),
                        lost_reported: false,
                    },
                );
            }
        }
    }

    /// Runs what is due at `now`: health, put deadlines, and every `repair_period_ms` a
    /// repair round (versions, garbage, then the names that need work).
    pub fn handle_tick(&mut self, now: Millis) {
        self.input(now);
        self.check_group(now);
        self.expire_puts(now);
        if now >= self.next_repair {
            self.next_repair = now + self.config.repair_period_ms;
            self.repair_round(now);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    fn emit(&mut self, event: Event<I>) {
        self.outbox.push(Output::Event(event));
    }

    /// Queues a command; false when the outbox is full (the caller does not mark anything
    /// in flight then, so the next round issues it again).
    fn command(&mut self, command: Command<I>) -> bool {
        self.outbox.push(Output::Command(command))
    }

    /// Publishes `tuple` locally and tracks it.
    fn publish(&mut self, tuple: FileTuple<I>) {
        let tuple = Arc::new(tuple);
        self.track(&tuple);
        self.command(Command::Publish {
            tuple: FileTuple::clone(&tuple),
        });
    }

    fn is_live(&self, id: &I) -> bool {
        *id == self.me || self.view.is_live(id)
    }

    fn is_dead(&self, now: Millis, id: &I) -> bool {
        if *id == self.me {
            return false;
        }
        let settled = self.is_settled(now);
        let absent =
            self.health.settled_for(now, self.config.settle_ms) >= self.config.absent_after_ms;
        self.view.is_dead(id, settled, absent)
    }
}
