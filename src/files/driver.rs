//! The files core's driver: one task that owns this node's [`FilesCore`] and feeds it what the
//! node observes, then carries out what it asks.
//!
//! Every tick (at most every second, and at most every `files.repair_period_ms`) the driver
//! asks the swarm task for a [`FilesSnapshot`] — the Kelips view of the own group, whether the
//! node has joined, how many messages it has heard — and feeds it to the core
//! (`handle_view`, `handle_joined`, `handle_heard`), then calls `handle_tick`. Before a repair
//! round it also refreshes the blob inventory from disk and feeds the tuples the core cares
//! about (those listing this node, naming one of its blobs, or a name it tracks). The core's
//! commands become tasks that only move bytes and report back on a bounded channel: copies
//! (`replicate`), fetches ([`repair::fetch_from`]), deletions, and publications into the local
//! Kelips core. Its events become log lines and counters.
//!
//! So the rules — the leader, restore, trim, re-add, garbage, versions, hand-off, and local
//! health before acting — are the ones the simulator runs and `files_core/tests.rs` checks
//! one by one (see `ALGORITHM.md`, "The files core"). The put pipeline is still driven by
//! `put.rs`; its outcome reaches the core as the tuples it publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use quickstore_behaviours::Millis;
use quickstore_behaviours::files_core::{
    Command, CopyPurpose, Event, FetchFailure, FilesConfig, FilesCore, KeptVersions, Output,
};
use quickstore_behaviours::net::Peer;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::handle::{FilesSnapshot, NodeGone, TupleQuery};
use super::repair;
use super::service::{FilesCounters, FilesService};
use crate::blobs::{Hash, to_hex};

/// Reports from transfer tasks queued at most (tasks wait when it is full).
const MAX_REPORTS: usize = 64;
/// The driver ticks at least this often.
const MAX_TICK: Duration = Duration::from_secs(1);

/// How the driver runs its core.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's parameters.
    pub core: FilesConfig,
    /// How often the driver feeds the view and ticks the core.
    pub tick: Duration,
    /// Bytes of stored blobs re-hashed per second at most (`files.scrub_bytes_per_s`).
    pub scrub_bytes_per_s: u64,
    /// A copy or fetch is abandoned after this.
    pub transfer_timeout: Duration,
}

impl DriverConfig {
    /// From the node's `[files]` section and the Kelips `t_fail_ms`. The driver ticks every
    /// second or every repair period, whichever is shorter; a gap of more than a tick plus
    /// `t_fail / 2` between inputs means the node was paused or starved. A node settles after
    /// `2 · t_fail` of health and counts an absent holder as dead after `4 · t_fail`.
    pub fn new(files: &crate::config::FilesConfig, replication: usize, t_fail_ms: u64) -> Self {
        let tick = Duration::from_millis(files.repair_period_ms.max(1)).min(MAX_TICK);
        let tick_ms = tick.as_millis() as u64;
        DriverConfig {
            core: FilesConfig {
                replication,
                repair_period_ms: files.repair_period_ms,
                max_repairs: files.max_repairs,
                orphan_grace_ms: files.orphan_grace_ms,
                keep_versions: files.keep_versions,
                put_deadline_ms: files.put_deadline_ms,
                t_fail_ms,
                max_input_gap_ms: tick_ms + t_fail_ms / 2,
                settle_ms: 2 * t_fail_ms,
                absent_after_ms: 4 * t_fail_ms,
            },
            tick,
            scrub_bytes_per_s: files.scrub_bytes_per_s,
            transfer_timeout: Duration::from_millis(files.put_deadline_ms + files.io_timeout_ms),
        }
    }
}

/// What a transfer task reports.
#[derive(Debug)]
enum Report {
    Copy {
        name: Arc<str>,
        to: PeerId,
        purpose: CopyPurpose,
        result: Result<(), String>,
    },
    Fetch {
        name: Arc<str>,
        from: PeerId,
        result: Result<(), (FetchFailure, String)>,
    },
    Deleted {
        hash: Hash,
    },
    Corrupt {
        hash: Hash,
    },
}

/// The node's side: asks the driver for a hand-off at a clean stop.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    hand_off: mpsc::Sender<oneshot::Sender<usize>>,
}

impl DriverHandle {
    /// Hands every held name to another member (see the core's `hand_off`); returns how
    /// many were handed off once every copy has ended, or 0 if the driver is gone.
    pub async fn hand_off(&self) -> usize {
        let (reply, answer) = oneshot::channel();
        if self.hand_off.send(reply).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }
}

/// A hand-off in progress.
struct HandOff {
    reply: oneshot::Sender<usize>,
    asked: usize,
    handed: usize,
    failed: usize,
}

/// Starts the driver (and the scrub) for `service`; `kept` are the versions the node saved.
pub fn spawn(
    service: Arc<FilesService>,
    config: DriverConfig,
    kept: KeptVersions,
) -> Result<DriverHandle, quickstore_behaviours::files_core::FilesConfigError> {
    let me = Peer(service.handle.me);
    let seed = u64::from_le_bytes(rand::random());
    let mut core = FilesCore::new(me, config.core.clone(), seed)?;
    core.restore_kept(kept);
    let (reports_tx, reports) = mpsc::channel(MAX_REPORTS);
    let (hand_off_tx, hand_off) = mpsc::channel(1);
    let (corrupt_tx, corrupt) = mpsc::channel(MAX_REPORTS);
    tokio::spawn(repair::scrub(
        service.clone(),
        Duration::from_millis(config.core.repair_period_ms),
        config.scrub_bytes_per_s,
        corrupt_tx,
    ));
    let driver = Driver {
        transfers: Arc::new(Semaphore::new(config.core.max_repairs)),
        config,
        service,
        core,
        clock: None,
        joined: false,
        messages_in: 0,
        inventory: BTreeMap::new(),
        reports_tx,
        hand_off: None,
    };
    tokio::spawn(driver.run(reports, hand_off, corrupt));
    Ok(DriverHandle {
        hand_off: hand_off_tx,
    })
}

struct Driver {
    config: DriverConfig,
    service: Arc<FilesService>,
    core: FilesCore<Peer>,
    /// The Kelips clock at the last snapshot and when it was taken.
    clock: Option<(Millis, Instant)>,
    joined: bool,
    messages_in: u64,
    /// The blobs on disk at the last look, and their sizes.
    inventory: BTreeMap<Hash, u64>,
    reports_tx: mpsc::Sender<Report>,
    /// Copies and fetches running at once.
    transfers: Arc<Semaphore>,
    hand_off: Option<HandOff>,
}

impl Driver {
    async fn run(
        mut self,
        mut reports: mpsc::Receiver<Report>,
        mut hand_off: mpsc::Receiver<oneshot::Sender<usize>>,
        mut corrupt: mpsc::Receiver<Hash>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                _ = tick.tick() => self.tick().await,
                Some(report) = reports.recv() => {
                    self.on_report(report);
                    Ok(())
                }
                Some(hash) = corrupt.recv() => {
                    self.on_report(Report::Corrupt { hash });
                    Ok(())
                }
                Some(reply) = hand_off.recv() => {
                    self.start_hand_off(reply);
                    Ok(())
                }
            };
            if step.is_err() || self.drain().await.is_err() {
                return;
            }
        }
    }

    /// The caller's clock for the core: the Kelips clock of the last snapshot plus the time
    /// since (a pause shows as a gap).
    fn now(&self) -> Millis {
        match self.clock {
            Some((at, taken)) => at + taken.elapsed().as_millis() as Millis,
            None => 0,
        }
    }

    async fn tick(&mut self) -> Result<(), NodeGone> {
        let due = self.clock.is_some() && self.core.repair_due(self.now());
        let query = if due {
            self.refresh_inventory().await;
            Some(TupleQuery {
                blobs: Arc::new(self.inventory.keys().copied().collect::<BTreeSet<_>>()),
                names: self.core.tracked_names().cloned().collect(),
            })
        } else {
            None
        };
        let snapshot: FilesSnapshot = self.service.handle.snapshot(query).await?;
        let now = snapshot.now_ms.max(self.now());
        self.clock = Some((now, Instant::now()));
        if snapshot.joined && !self.joined {
            self.joined = true;
            self.core.handle_joined(now);
        }
        if snapshot.messages_in > self.messages_in {
            self.messages_in = snapshot.messages_in;
            self.core.handle_heard(now);
        }
        self.core.handle_view(now, snapshot.members);
        self.core.set_free_space(self.service.blobs.free());
        for old in &snapshot.superseded {
            self.core.handle_version_superseded(now, old);
        }
        for tuple in snapshot.tuples {
            self.core.handle_tuple(now, tuple);
        }
        self.core.handle_tick(now);
        self.mirror_kept();
        Ok(())
    }

    /// Reads the blobs on disk and tells the core what appeared (a put, a copy received) and
    /// what went (deleted, or found corrupt while sent).
    async fn refresh_inventory(&mut self) {
        let stored = match self.service.blobs.list_sized().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("cannot list the blob store: {e}");
                return;
            }
        };
        let stored: BTreeMap<Hash, u64> = stored.into_iter().collect();
        let now = self.now();
        for hash in self.inventory.keys() {
            if !stored.contains_key(hash) {
                self.core.handle_blob_removed(now, *hash);
            }
        }
        for (hash, size) in &stored {
            if self.inventory.get(hash) != Some(size) {
                self.core.handle_blob_stored(now, *hash, *size);
            }
        }
        self.inventory = stored;
    }

    /// The service answers `kept` and `get --version` from the core's kept versions; a change
    /// is persisted.
    fn mirror_kept(&self) {
        let changed = match self.service.kept.lock() {
            Ok(mut kept) if *kept != *self.core.kept() => {
                *kept = self.core.kept().clone();
                true
            }
            _ => false,
        };
        if changed {
            self.service.save_kept();
        }
    }

    fn on_report(&mut self, report: Report) {
        let now = self.now();
        match report {
            Report::Copy {
                name,
                to,
                purpose,
                result,
            } => match result {
                Ok(()) => self.core.handle_copy_done(now, &name, Peer(to), purpose),
                Err(e) => {
                    tracing::info!("copy of {name:?} to {to} failed: {e}");
                    if purpose == CopyPurpose::HandOff
                        && let Some(h) = &mut self.hand_off
                    {
                        h.failed += 1;
                    }
                    self.core.handle_copy_failed(now, &name, Peer(to), purpose);
                }
            },
            Report::Fetch { name, from, result } => match result {
                Ok(()) => {
                    tracing::info!("fetched {name:?} from {from}");
                    FilesCounters::add(&self.service.counters.repairs_fetched, 1);
                    self.core.handle_fetch_done(now, &name, Peer(from));
                }
                Err((why, e)) => {
                    tracing::info!("fetching {name:?} from {from} failed: {e}");
                    self.core.handle_fetch_failed(now, &name, Peer(from), why);
                }
            },
            Report::Deleted { hash } => {
                self.inventory.remove(&hash);
                self.core.handle_blob_removed(now, hash);
            }
            Report::Corrupt { hash } => {
                self.inventory.remove(&hash);
                self.core.handle_blob_corrupt(now, hash);
            }
        }
        self.finish_hand_off();
    }

    fn start_hand_off(&mut self, reply: oneshot::Sender<usize>) {
        let asked = self.core.hand_off(self.now());
        tracing::info!("handing off {asked} names");
        self.hand_off = Some(HandOff {
            reply,
            asked,
            handed: 0,
            failed: 0,
        });
        self.finish_hand_off();
    }

    fn finish_hand_off(&mut self) {
        if self
            .hand_off
            .as_ref()
            .is_some_and(|h| h.handed + h.failed >= h.asked)
            && let Some(h) = self.hand_off.take()
        {
            let _ = h.reply.send(h.handed);
        }
    }

    /// Carries out the core's commands and reports its events.
    async fn drain(&mut self) -> Result<(), NodeGone> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Command(command) => self.execute(command).await?,
                Output::Event(event) => self.on_event(event),
            }
        }
        self.finish_hand_off();
        Ok(())
    }

    async fn execute(&mut self, command: Command<Peer>) -> Result<(), NodeGone> {
        match command {
            Command::Publish { tuple } => {
                if let Err(e) = self.service.handle.publish(tuple).await? {
                    tracing::warn!("holder set not published: {e}");
                }
            }
            Command::CopyTo { tuple, to, purpose } => {
                let service = self.service.clone();
                let timed_out = Report::Copy {
                    name: tuple.name.clone(),
                    to: to.0,
                    purpose,
                    result: Err("timed out".into()),
                };
                self.spawn_transfer(timed_out, async move {
                    let result = service.replicate(to.0, &tuple).await;
                    Report::Copy {
                        name: tuple.name.clone(),
                        to: to.0,
                        purpose,
                        result,
                    }
                });
            }
            Command::FetchFrom { tuple, from } => {
                let service = self.service.clone();
                let timed_out = Report::Fetch {
                    name: tuple.name.clone(),
                    from: from.0,
                    result: Err((FetchFailure::Unreachable, "timed out".into())),
                };
                self.spawn_transfer(timed_out, async move {
                    let result = repair::fetch_from(&service, from.0, &tuple).await;
                    Report::Fetch {
                        name: tuple.name.clone(),
                        from: from.0,
                        result,
                    }
                });
            }
            Command::Delete { hash } => {
                let service = self.service.clone();
                let reports = self.reports_tx.clone();
                tokio::spawn(async move {
                    tracing::info!("deleting blob {}", to_hex(&hash));
                    if let Err(e) = service.blobs.remove(&hash).await {
                        tracing::warn!("cannot delete blob {}: {e}", to_hex(&hash));
                    }
                    let _ = reports.send(Report::Deleted { hash }).await;
                });
            }
            Command::SendCommit { put, to, .. } => {
                // Puts run in `put.rs`, not through the core: nothing sends this yet.
                self.core.handle_commit_failed(self.now(), put, to);
            }
        }
        Ok(())
    }

    /// Runs a copy or fetch behind the transfer limit and the transfer timeout; its report
    /// (or `timed_out`) comes back on the channel, so the core always learns the outcome.
    fn spawn_transfer(
        &self,
        timed_out: Report,
        transfer: impl std::future::Future<Output = Report> + Send + 'static,
    ) {
        let permits = self.transfers.clone();
        let reports = self.reports_tx.clone();
        let limit = self.config.transfer_timeout;
        tokio::spawn(async move {
            let report = match permits.acquire_owned().await {
                Ok(_permit) => tokio::time::timeout(limit, transfer)
                    .await
                    .unwrap_or(timed_out),
                Err(_) => timed_out,
            };
            let _ = reports.send(report).await;
        });
    }

    fn on_event(&mut self, event: Event<Peer>) {
        let counters = &self.service.counters;
        match event {
            Event::HolderSetPublished {
                name,
                before,
                after,
            } => {
                tracing::info!("{name:?}: {before} holders listed, {after} after repair");
                FilesCounters::add(&counters.holder_sets_published, 1);
            }
            Event::ShrinkDeferred { name } => {
                tracing::debug!("{name:?}: holder set change held back until settled");
            }
            Event::CopiesLost { name, version } => tracing::warn!(
                "every listed holder of {name:?} (version {}) lacks its bytes: it is lost",
                version.lamport
            ),
            Event::HandedOff { name, to } => {
                tracing::info!("handed {name:?} to {to}");
                if let Some(h) = &mut self.hand_off {
                    h.handed += 1;
                }
            }
            Event::HealthLost { gap_ms } => {
                if gap_ms > 0 {
                    tracing::info!(
                        "repair holds back until the view is fresh again: stalled, inputs came \
                         {gap_ms} ms apart"
                    );
                } else {
                    tracing::info!(
                        "repair holds back until the view is fresh again: nothing heard from \
                         the group for t_fail"
                    );
                }
                FilesCounters::add(&counters.repair_holds, 1);
            }
            Event::Settled => tracing::info!("repair settled: acting on the group view"),
            Event::PutAcknowledged { .. } | Event::PutFailed { .. } => {}
        }
    }
}
