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
//! Puts and commits come to the driver as requests from the stream tasks (`put.rs`): the core
//! starts a put (`start_put`: how many copies, where the bytes are forwarded), the put task
//! reports what each home did, and the core decides the replacements, the commits and the
//! ack (`PutAcknowledged`/`PutFailed`), which the driver hands back to the put task.
//!
//! So the rules — the ack rule, the leader, restore, trim, re-add, garbage, versions,
//! hand-off, and local health before acting — are the ones the simulator runs and
//! `files_core/tests.rs` checks one by one (see `ALGORITHM.md`, "The files core").

mod config;
mod handle;

pub use config::DriverConfig;
pub use handle::{DriverGone, DriverHandle, DriverInbox, PutHome, PutOutcome, PutStarted, channel};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use quickstore_behaviours::files_core::{
    Command, CopyPurpose, Event, FetchFailure, FilesCore, KeptVersions, Output, PutId,
};
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::{FileTuple, LookupResult, Millis};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::handle::{FilesSnapshot, LOOKUP_TIMEOUT, NodeGone, TupleQuery};
use super::repair;
use super::service::{FilesCounters, FilesService, files_request};
use super::wire::{FilesRequest, FilesResponse};
use crate::blobs::{Hash, to_hex};
use handle::Request;

/// Reports from transfer tasks queued at most (tasks wait when it is full).
const MAX_REPORTS: usize = 64;

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
    Commit {
        put: PutId,
        to: PeerId,
        recorded: bool,
    },
    Deleted {
        hash: Hash,
    },
    Confirmed {
        name: Arc<str>,
        found: Option<FileTuple<Peer>>,
    },
    Corrupt {
        hash: Hash,
    },
}

/// A copy or fetch waiting for a permit: its report if it times out, and the transfer.
type WaitingTransfer = (Report, Pin<Box<dyn Future<Output = Report> + Send>>);

/// A hand-off in progress.
struct HandOff {
    reply: oneshot::Sender<usize>,
    asked: usize,
    handed: usize,
    failed: usize,
}

/// Starts the driver (and the scrub) for `service`; `kept` are the versions the node saved,
/// `inbox` the other end of the handle in `service`.
pub fn spawn(
    service: Arc<FilesService>,
    config: DriverConfig,
    kept: KeptVersions,
    inbox: DriverInbox,
) -> Result<(), quickstore_behaviours::files_core::FilesConfigError> {
    let me = Peer(service.handle.me);
    let seed = u64::from_le_bytes(rand::random());
    let mut core = FilesCore::new(me, config.core.clone(), seed)?;
    core.restore_kept(kept);
    let (reports_tx, reports) = mpsc::channel(MAX_REPORTS);
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
        waiting: VecDeque::new(),
        hand_off: None,
        puts: BTreeMap::new(),
    };
    tokio::spawn(driver.run(reports, inbox.requests, corrupt));
    Ok(())
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
    /// Copies and fetches waiting for a permit, in the order the core asked for them (it
    /// asks for the most endangered names first; tasks spawned at once would take permits
    /// in no promised order). At most as long as what the core has in flight.
    waiting: VecDeque<WaitingTransfer>,
    hand_off: Option<HandOff>,
    /// Where each put's outcome goes.
    puts: BTreeMap<PutId, oneshot::Sender<PutOutcome>>,
}

impl Driver {
    async fn run(
        mut self,
        mut reports: mpsc::Receiver<Report>,
        mut requests: mpsc::Receiver<Request>,
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
                Some(request) = requests.recv() => self.on_request(request).await,
            };
            if step.is_err() || self.drain().await.is_err() {
                return;
            }
            self.show_state();
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
        let now = self.feed(query).await?;
        self.core.handle_tick(now);
        self.mirror_kept();
        Ok(())
    }

    /// Asks the swarm task for a snapshot and feeds it to the core; returns the time fed.
    async fn feed(&mut self, query: Option<TupleQuery>) -> Result<Millis, NodeGone> {
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
        if let Some(place) = snapshot.place {
            // A change needs no feeding here: the tuple query below finds foreign sets.
            let _ = self.core.handle_structure(now, place.grouping, place.group);
        }
        self.core.handle_view(now, snapshot.members);
        self.core.set_free_space(self.service.blobs.free());
        for old in &snapshot.superseded {
            self.core.handle_version_superseded(now, old);
        }
        for tuple in snapshot.tuples {
            self.core.handle_tuple(now, tuple);
        }
        Ok(now)
    }

    async fn on_request(&mut self, request: Request) -> Result<(), NodeGone> {
        match request {
            Request::HandOff { reply } => self.start_hand_off(reply),
            Request::StartPut {
                name,
                size,
                homes,
                after,
                reply,
            } => {
                // A fresh view first: the put's copies are min(R, live members) now, and a
                // node that joined a moment ago is known to have.
                let now = self.feed(None).await?;
                let homes: Vec<Peer> = homes.into_iter().map(Peer).collect();
                let started = self.core.start_put(now, &name, size, &homes, after);
                let answer = started.map(|start| {
                    let (outcome, wait) = oneshot::channel();
                    self.puts.insert(start.put, outcome);
                    (start, wait)
                });
                let _ = reply.send(answer);
            }
            Request::PutHome { put, home } => {
                let now = self.now();
                match home {
                    PutHome::Ready { newest } => self.core.handle_put_home_ready(now, put, newest),
                    PutHome::Stored { home, hash } => {
                        self.core.handle_put_stored(now, put, Peer(home), hash)
                    }
                    PutHome::Failed { home } => {
                        self.core.handle_put_home_failed(now, put, Peer(home))
                    }
                }
            }
            Request::FixLamport { put, reply } => {
                let now = self.now();
                let _ = reply.send(self.core.fix_put_lamport(now, put));
            }
            Request::SignPut { put, auth } => {
                let now = self.now();
                self.core.sign_put(now, put, auth);
            }
            Request::Commit { tuple, reply } => {
                let now = self.now();
                // The bytes came by the put's pipeline a moment ago: the inventory may not
                // have them yet.
                let hash = tuple.version.blake3;
                if self.service.blobs.contains(&hash).await {
                    self.core.handle_blob_stored(now, hash, tuple.size);
                }
                let result = self.core.handle_commit(now, tuple);
                // The tuple is published here before the first home hears so.
                self.drain().await?;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// What `status` shows of the core, as of now.
    fn show_state(&self) {
        let state = crate::status::FilesView {
            settled: self.core.is_settled(self.now()),
            names_tracked: self.core.names_tracked() as u64,
            transfers_in_flight: self.core.transfers_in_flight() as u64,
            puts_in_progress: self.core.puts_in_progress() as u64,
        };
        if let Ok(mut shown) = self.service.state.lock() {
            *shown = state;
        }
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
        self.start_waiting();
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
                    // A failed hand-off copy is tried on another member; the core says
                    // when it gives up (`HandOffFailed`).
                    tracing::info!("copy of {name:?} to {to} failed: {e}");
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
            Report::Commit { put, to, recorded } => {
                if recorded {
                    self.core.handle_commit_recorded(now, put, Peer(to));
                } else {
                    self.core.handle_commit_failed(now, put, Peer(to));
                }
            }
            Report::Deleted { hash } => {
                self.inventory.remove(&hash);
                self.core.handle_blob_removed(now, hash);
            }
            Report::Confirmed { name, found } => self.core.handle_confirmed(now, &name, found),
            Report::Corrupt { hash } => {
                self.inventory.remove(&hash);
                self.core.handle_blob_corrupt(now, hash);
            }
        }
        self.finish_hand_off();
    }

    fn start_hand_off(&mut self, reply: oneshot::Sender<usize>) {
        let start = self.core.hand_off(self.now());
        let asked = start.asked;
        tracing::info!("handing off {asked} names");
        if start.without_member > 0 {
            tracing::warn!(
                "{} names have no other member to take them (every member holds them or \
                 lacks room): they keep one copy fewer until repair finds a member",
                start.without_member
            );
        }
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
                    // Repair and hand-off copies are pulled from every holder at once; a
                    // put's copy is pushed by its first home, the one holder so far.
                    let result = match purpose {
                        CopyPurpose::Put(_) => service.replicate(to.0, &tuple).await,
                        CopyPurpose::Repair | CopyPurpose::HandOff => {
                            service.copy_by_pull(to.0, &tuple).await
                        }
                    };
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
            Command::Confirm { name } => {
                let service = self.service.clone();
                let reports = self.reports_tx.clone();
                tokio::spawn(async move {
                    let found =
                        match tokio::time::timeout(LOOKUP_TIMEOUT, service.handle.lookup(&name))
                            .await
                        {
                            Ok(Ok(Ok(outcome))) => match outcome.result {
                                LookupResult::Found { tuple, .. }
                                | LookupResult::Unavailable { tuple } => {
                                    Some(FileTuple::clone(&tuple))
                                }
                                LookupResult::NotFound | LookupResult::Unreachable => None,
                            },
                            _ => None,
                        };
                    let _ = reports.send(Report::Confirmed { name, found }).await;
                });
            }
            Command::SendCommit { put, to, tuple } => {
                let service = self.service.clone();
                let reports = self.reports_tx.clone();
                tokio::spawn(async move {
                    let request = FilesRequest::Commit {
                        tuple: FileTuple::clone(&tuple),
                    };
                    let io = service.timeouts.io;
                    let answer = files_request(&service.control, to.0, &request, io).await;
                    let recorded = matches!(answer, Ok(FilesResponse::Committed {}));
                    if !recorded {
                        tracing::info!(
                            "holder {to} did not take the tuple of {:?}: {answer:?}",
                            tuple.name
                        );
                        FilesCounters::add(&service.counters.commits_missed, 1);
                    }
                    let _ = reports
                        .send(Report::Commit {
                            put,
                            to: to.0,
                            recorded,
                        })
                        .await;
                });
            }
        }
        Ok(())
    }

    /// Runs a copy or fetch behind the transfer limit and the transfer timeout; its report
    /// (or `timed_out`) comes back on the channel, so the core always learns the outcome.
    fn spawn_transfer(
        &mut self,
        timed_out: Report,
        transfer: impl Future<Output = Report> + Send + 'static,
    ) {
        self.waiting.push_back((timed_out, Box::pin(transfer)));
        self.start_waiting();
    }

    /// Starts waiting transfers, first asked first, while permits are free. (A transfer
    /// frees its permit before it reports, and every report calls this.)
    fn start_waiting(&mut self) {
        while !self.waiting.is_empty() {
            let Ok(permit) = self.transfers.clone().try_acquire_owned() else {
                return;
            };
            let Some((timed_out, transfer)) = self.waiting.pop_front() else {
                return;
            };
            let reports = self.reports_tx.clone();
            let limit = self.config.transfer_timeout;
            tokio::spawn(async move {
                let report = tokio::time::timeout(limit, transfer)
                    .await
                    .unwrap_or(timed_out);
                drop(permit);
                let _ = reports.send(report).await;
            });
        }
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
            Event::HandOffFailed { name } => {
                tracing::warn!(
                    "could not hand {name:?} off: every member tried failed; its group \
                     restores the copy after this node has gone"
                );
                if let Some(h) = &mut self.hand_off {
                    h.failed += 1;
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
            Event::Emigrated { name, holders } => tracing::info!(
                "{name:?} moved to its new group ({holders} holders there): this copy is garbage"
            ),
            Event::PutAcknowledged { put, tuple, .. } => {
                FilesCounters::add(&counters.puts_stored, 1);
                if let Some(outcome) = self.puts.remove(&put) {
                    let _ = outcome.send(Ok(tuple));
                }
            }
            Event::PutFailed { put, reason } => {
                FilesCounters::add(&counters.puts_failed, 1);
                if let Some(outcome) = self.puts.remove(&put) {
                    let _ = outcome.send(Err(reason));
                }
            }
        }
    }
}
