//! The node's side of the file protocols: one task per incoming stream behind a limit, the
//! put pipeline (`put.rs`, decided by the files core through [`super::driver`]), replica
//! copies and blob reads.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use quickstore_behaviours::auth::{WritePolicy, admits};
use quickstore_behaviours::id::Grouping;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use quickstore_behaviours::{FileTuple, LookupResult, Version};
use tokio::sync::{Semaphore, watch};

use super::handle::{NodeGone, NodeHandle};
use super::slots::{NoSlot, StreamSlot, StreamSlots};
use super::source::FileSource;
use super::versions::KeptVersions;
use super::wire::{
    BLOB_PIECES_PROTOCOL, BLOB_PROTOCOL, BlobRequest, BlobResponse, ChunkReader, FILES_PROTOCOL,
    FilesRequest, FilesResponse, MAX_BUSY_REFUSALS, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    PeerInfo, SignedDelete, WireError, read_message, write_chunk, write_message,
};
use crate::blobs::{BlobError, BlobStore, BlobWriter, Hash, is_disk_full, to_hex};
use crate::store::NodeStore;

/// Contacts of a foreign group a forwarded request tries at most.
const FORWARD_TRIES: usize = 3;
/// Members asked at most when looking for an older version.
pub(super) const MAX_GROUP_ASKED: usize = 64;

/// Timeouts of the file protocols.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Every open, read and write.
    pub io: Duration,
    /// A put's replicas must all be durable within this.
    pub put_deadline: Duration,
}

/// Counters of the file protocols, for metrics and status.
#[derive(Debug, Default)]
pub struct FilesCounters {
    /// Puts this node acknowledged as first home.
    pub puts_stored: AtomicU64,
    /// Puts this node refused or failed as first home.
    pub puts_failed: AtomicU64,
    /// Copies this node stored for another home (forwarded or replicated).
    pub copies_stored: AtomicU64,
    /// Blobs sent in full (gets, copies).
    pub blobs_sent: AtomicU64,
    /// Verified pieces sent (`pieces` streams).
    pub pieces_sent: AtomicU64,
    /// File bytes sent.
    pub bytes_sent: AtomicU64,
    /// File bytes received.
    pub bytes_received: AtomicU64,
    /// Copies fetched by the repair loop.
    pub repairs_fetched: AtomicU64,
    /// Holder sets published by repair leaders.
    pub holder_sets_published: AtomicU64,
    /// Times the repair loop stopped acting on the group view because the node was not
    /// settled (paused, starved, deaf; the files core's local health).
    pub repair_holds: AtomicU64,
    /// Holders a first home could not tell a new tuple before the ack (they learn it by
    /// gossip).
    pub commits_missed: AtomicU64,
    /// Stored blobs found corrupt.
    pub corrupt_found: AtomicU64,
    /// Control requests refused.
    pub control_refused: AtomicU64,
    /// File streams dropped because a newer stream needed the slot while they still waited
    /// for their request (see `slots`).
    pub streams_evicted: AtomicU64,
}

impl FilesCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("puts_stored", get(&self.puts_stored)),
            ("puts_failed", get(&self.puts_failed)),
            ("copies_stored", get(&self.copies_stored)),
            ("blobs_sent", get(&self.blobs_sent)),
            ("pieces_sent", get(&self.pieces_sent)),
            ("file_bytes_sent", get(&self.bytes_sent)),
            ("file_bytes_received", get(&self.bytes_received)),
            ("repairs_fetched", get(&self.repairs_fetched)),
            ("holder_sets_published", get(&self.holder_sets_published)),
            ("repair_holds", get(&self.repair_holds)),
            ("commits_missed", get(&self.commits_missed)),
            ("corrupt_blobs_found", get(&self.corrupt_found)),
            ("file_requests_refused", get(&self.control_refused)),
            ("file_streams_evicted", get(&self.streams_evicted)),
        ]
    }
}

/// What serving the file protocols needs.
pub struct FilesService {
    /// The swarm task.
    pub handle: NodeHandle,
    /// The files core's driver (puts and commits are decided there).
    pub driver: super::driver::DriverHandle,
    /// What the files core is doing, as of the driver's last tick (for `status`).
    pub state: std::sync::Mutex<crate::status::FilesView>,
    /// Blob files.
    pub blobs: Arc<BlobStore>,
    /// Opens streams.
    pub control: libp2p_stream::Control,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Streams served at once, in all and per peer.
    pub streams: Arc<StreamSlots<PeerId>>,
    /// The versions this node keeps (for `get --version`).
    pub kept: std::sync::Mutex<KeptVersions>,
    /// Takes the latest kept versions to the node store (see [`spawn_kept_writer`]).
    pub kept_writer: KeptWriter,
    /// Counters.
    pub counters: FilesCounters,
    /// When bytes may go to another node over a relay.
    pub relay: RelayGate,
    /// Who may write names (`network.writes`).
    pub writes: WritePolicy,
}

/// When this node may move file bytes to or from another node over a relay: the paths to
/// connected peers (refreshed by the swarm task) and `nat.relay_transfers`,
/// `nat.relay_circuit_bytes`.
#[derive(Debug, Clone, Default)]
pub struct RelayGate {
    /// How each connected peer is reached.
    pub paths: Arc<std::sync::Mutex<std::collections::BTreeMap<PeerId, crate::reach::Path>>>,
    /// Whether relayed transfers are allowed at all.
    pub allowed: bool,
    /// The largest file a relay circuit carries.
    pub max_bytes: u64,
}

impl RelayGate {
    /// Refuses a transfer of `size` bytes with `peer` when it is reached only through a relay
    /// and the policy does not allow it; peers not connected yet pass (their path is unknown).
    pub fn check(&self, peer: PeerId, size: u64) -> Result<(), WireError> {
        let relayed = self
            .paths
            .lock()
            .map(|p| p.get(&peer) == Some(&crate::reach::Path::Relay))
            .unwrap_or(false);
        if !relayed {
            return Ok(());
        }
        if !self.allowed {
            return Err(WireError::Relay(format!(
                "{peer} is reachable only through a relay and nat.relay_transfers is off"
            )));
        }
        if size > self.max_bytes {
            return Err(WireError::Relay(format!(
                "{peer} is reachable only through a relay and {size} bytes exceed its circuit limit of {} bytes (nat.relay_circuit_bytes)",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// What [`FilesService::receive`] got.
pub(super) enum Received {
    /// All the bytes, in a blob not finished yet (boxed: a writer holds its buffers' state).
    Done(Box<BlobWriter>),
    /// Refused before any byte moved; the refusal has been sent.
    Refused,
    /// Storing failed on the way; every byte was read, this refusal is still to be sent.
    Failed(BlobResponse),
}

/// Kept versions encoded for the node store: (name, CBOR list).
pub type KeptRows = Vec<(String, Vec<u8>)>;
/// Where [`FilesService::save_kept`] hands the latest rows.
pub type KeptWriter = watch::Sender<Option<KeptRows>>;

/// One task writes the kept versions to `store`, always the latest list and in order (writes
/// racing on the blocking pool could store an older list last).
pub fn spawn_kept_writer(store: Arc<NodeStore>) -> KeptWriter {
    let (sender, mut receiver) = watch::channel(None::<KeptRows>);
    tokio::spawn(async move {
        while receiver.changed().await.is_ok() {
            let latest = receiver.borrow_and_update().clone();
            let Some(rows) = latest else { continue };
            let store = store.clone();
            let saved = tokio::task::spawn_blocking(move || store.save_versions(&rows)).await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot save kept versions: {e}"),
                Err(e) => tracing::warn!("cannot save kept versions: {e}"),
            }
        }
    });
    sender
}

/// Opens a stream to `peer` with a timeout (libp2p-stream has none).
pub async fn open_stream(
    control: &libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    timeout: Duration,
) -> Result<Stream, WireError> {
    let mut control = control.clone();
    match tokio::time::timeout(timeout, control.open_stream(peer, protocol)).await {
        Err(_) => Err(WireError::Timeout(timeout)),
        Ok(Err(e)) => Err(WireError::Io(io::Error::other(e.to_string()))),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// How many times a control request is sent again when its stream ends before any answer.
///
/// libp2p-stream hands a node's accept loop one pending inbound stream per protocol and
/// drops one that arrives before the loop took the previous: a stream opened right behind
/// another (by this client or anyone) can end unanswered. Every control request is safe to
/// repeat (a lookup, a placement, a page, a tuple merged again).
const DROPPED_STREAM_RETRIES: u32 = 2;

/// Sends one control request to `peer` and reads the answer; a stream that ends before any
/// answer is tried again, [`DROPPED_STREAM_RETRIES`] times at most.
pub async fn files_request(
    control: &libp2p_stream::Control,
    peer: PeerId,
    request: &FilesRequest,
    timeout: Duration,
) -> Result<FilesResponse, WireError> {
    let mut retries = 0;
    loop {
        let answer = async {
            let mut stream = open_stream(control, peer, FILES_PROTOCOL, timeout).await?;
            write_message(&mut stream, request, MAX_REQUEST_BYTES, timeout).await?;
            read_message(&mut stream, MAX_RESPONSE_BYTES, timeout).await
        }
        .await;
        match answer {
            Err(WireError::Io(e)) if retries < DROPPED_STREAM_RETRIES && ended_unanswered(&e) => {
                retries += 1;
                tracing::debug!("files stream to {peer} ended unanswered ({e}); again");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(retries))).await;
            }
            other => return other,
        }
    }
}

/// Whether a stream error says the other side closed or reset it (not a dial failure or a
/// timeout).
fn ended_unanswered(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::WriteZero
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
    )
}

/// How long a `busy` refusal may take to write and close.
const BUSY_REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn refused(reason: impl ToString) -> FilesResponse {
    FilesResponse::Refused {
        reason: reason.to_string(),
    }
}

pub(super) fn blob_refused(reason: impl ToString) -> BlobResponse {
    BlobResponse::Refused {
        reason: reason.to_string(),
    }
}

pub(super) fn gone(e: NodeGone) -> WireError {
    WireError::Io(io::Error::other(e))
}

impl FilesService {
    /// Starts accepting both protocols; each stream gets a task while fewer than the limit run.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut control = self.control.clone();
        let files = control
            .accept(FILES_PROTOCOL)
            .map_err(|e| anyhow::anyhow!("{FILES_PROTOCOL}: {e}"))?;
        let blobs = control
            .accept(BLOB_PROTOCOL)
            .map_err(|e| anyhow::anyhow!("{BLOB_PROTOCOL}: {e}"))?;
        let pieces = control
            .accept(BLOB_PIECES_PROTOCOL)
            .map_err(|e| anyhow::anyhow!("{BLOB_PIECES_PROTOCOL}: {e}"))?;
        let service = self.clone();
        tokio::spawn(async move {
            let mut files = files;
            while let Some((peer, stream)) = files.next().await {
                service.spawn_stream(peer, stream, false);
            }
        });
        for mut incoming in [blobs, pieces] {
            let service = self.clone();
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    service.spawn_stream(peer, stream, true);
                }
            });
        }
        Ok(())
    }

    fn spawn_stream(self: &Arc<Self>, peer: PeerId, stream: Stream, blob: bool) {
        let (slot, eviction) = match self.streams.try_take(&peer) {
            Ok(taken) => taken,
            Err(no_slot) => {
                self.refuse_busy(peer, stream, blob, no_slot);
                return;
            }
        };
        let service = self.clone();
        tokio::spawn(async move {
            let serve = async {
                if blob {
                    service.serve_blob(peer, stream, &slot).await
                } else {
                    service.serve_files(peer, stream, &slot).await
                }
            };
            // A stream still waiting for its request when a newer one needs its slot is
            // dropped (see `slots`): an idle stream cannot hold a slot against real requests.
            let result = tokio::select! {
                result = serve => result,
                () = eviction.evicted() => {
                    FilesCounters::add(&service.counters.streams_evicted, 1);
                    tracing::debug!("file stream from {peer} evicted before its request came");
                    Ok(())
                }
            };
            drop(slot);
            if let Err(e) = result {
                tracing::debug!("file stream from {peer}: {e}");
            }
        });
    }

    /// Answers a stream over `files.max_streams` (or over its peer's
    /// `files.max_streams_per_peer`) with a refusal, without reading its request, while fewer
    /// than [`MAX_BUSY_REFUSALS`] such answers are being written; drops it beyond.
    fn refuse_busy(&self, peer: PeerId, mut stream: Stream, blob: bool, no_slot: NoSlot) {
        // One budget per process (in-process test networks share it).
        static REFUSING: Semaphore = Semaphore::const_new(MAX_BUSY_REFUSALS);
        let Ok(permit) = REFUSING.try_acquire() else {
            tracing::warn!("file stream from {peer} dropped: too many streams");
            return;
        };
        tracing::debug!("file stream from {peer} refused: {no_slot:?}");
        let io = self.timeouts.io.min(BUSY_REFUSAL_TIMEOUT);
        tokio::spawn(async move {
            let _permit = permit;
            let reason = no_slot.reason();
            let written = if blob {
                write_message(&mut stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await
            } else {
                write_message(&mut stream, &refused(reason), MAX_RESPONSE_BYTES, io).await
            };
            if written.is_ok() {
                let _ = crate::files::wire::timed(io, stream.close()).await;
            }
        });
    }

    // ---- control ---------------------------------------------------------------------------

    async fn serve_files(
        &self,
        peer: PeerId,
        mut stream: Stream,
        slot: &StreamSlot<PeerId>,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        let read = read_message::<FilesRequest>(&mut stream, MAX_REQUEST_BYTES, io).await;
        slot.started();
        let response = match read {
            Ok(request) => {
                tracing::debug!("{peer} asks {request:?}");
                self.answer(request).await?
            }
            Err(WireError::Malformed(reason)) => refused(reason),
            Err(e) => return Err(e),
        };
        if matches!(response, FilesResponse::Refused { .. }) {
            FilesCounters::add(&self.counters.control_refused, 1);
        }
        write_message(&mut stream, &response, MAX_RESPONSE_BYTES, io).await?;
        crate::files::wire::timed(io, stream.close()).await
    }

    async fn answer(&self, request: FilesRequest) -> Result<FilesResponse, WireError> {
        match request {
            FilesRequest::Locate { name } => self.locate(&name).await,
            FilesRequest::Place {
                name,
                size,
                forwarded,
            } => self.place(name, size, forwarded).await,
            FilesRequest::List {
                group,
                after,
                limit,
                forwarded,
            } => self.list(group, after, limit, forwarded).await,
            FilesRequest::Delete {
                name,
                forwarded,
                signed,
            } => self.delete(name, forwarded, signed).await,
            FilesRequest::Version {
                name,
                lamport,
                forwarded,
            } => self.find_version(name, lamport, forwarded).await,
            FilesRequest::HasVersion { name, lamport } => Ok(match check_name(&name) {
                Err(e) => refused(e),
                Ok(()) => self.has_version(&name, lamport),
            }),
            FilesRequest::Versions { name, forwarded } => self.versions(name, forwarded).await,
            FilesRequest::Commit { tuple } => self.take_commit(tuple).await,
            FilesRequest::Kept { name } => Ok(match check_name(&name) {
                Err(e) => refused(e),
                Ok(()) => self.kept_of(&name),
            }),
            FilesRequest::Site {} => Ok(FilesResponse::Site {
                ip: self.handle.site().map(|ip| ip.to_string()),
            }),
        }
    }

    async fn locate(&self, name: &str) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(name) {
            return Ok(refused(e));
        }
        let outcome = match self.handle.lookup(name).await.map_err(gone)? {
            Ok(outcome) => outcome,
            Err(reason) => return Ok(refused(reason)),
        };
        Ok(match outcome.result {
            LookupResult::Found { tuple, .. } | LookupResult::Unavailable { tuple }
                if tuple.deleted =>
            {
                FilesResponse::NotFound
            }
            // Known, but no holder is live: the tuple with no holders ("unavailable").
            LookupResult::Unavailable { tuple } => FilesResponse::Located {
                tuple: FileTuple::clone(&tuple),
                holders: Vec::new(),
                hops: outcome.hops,
            },
            LookupResult::Found { tuple, holders } => FilesResponse::Located {
                tuple: FileTuple::clone(&tuple),
                holders: holders
                    .iter()
                    .map(|e| PeerInfo {
                        peer: e.id,
                        record: e.address.clone(),
                    })
                    .collect(),
                hops: outcome.hops,
            },
            LookupResult::NotFound => FilesResponse::NotFound,
            LookupResult::Unreachable => FilesResponse::Unreachable {
                reason: format!(
                    "no node of group {} could be reached",
                    self.handle.place_now().group_of(name)
                ),
            },
        })
    }

    async fn place(
        &self,
        name: String,
        size: u64,
        forwarded: bool,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&name) {
            return Ok(refused(e));
        }
        if size > self.blobs.max_file_size() {
            return Ok(refused(crate::blobs::BlobError::TooLarge {
                size,
                max: self.blobs.max_file_size(),
            }));
        }
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if group == place.group {
            let (homes, live) = self
                .handle
                .place(size, Vec::new(), self.handle.replication)
                .await
                .map_err(gone)?;
            return Ok(if homes.is_empty() {
                refused(format!(
                    "no member of group {group} has {size} bytes of storage free"
                ))
            } else {
                let known = self.handle.tuple(&name).await.map_err(gone)?;
                FilesResponse::Placed {
                    homes,
                    group_size: live as u32,
                    newest: known.as_ref().map_or(0, |t| t.version.lamport),
                    replication: self.handle.replication as u32,
                    owner: known.and_then(|t| t.auth.as_ref().map(|a| a.owner)),
                }
            });
        }
        self.forward(
            group,
            forwarded,
            FilesRequest::Place {
                name,
                size,
                forwarded: true,
            },
        )
        .await
    }

    async fn list(
        &self,
        group: u32,
        after: Option<String>,
        limit: u32,
        forwarded: bool,
    ) -> Result<FilesResponse, WireError> {
        let place = self.handle.place_now();
        if group >= place.groups() {
            return Ok(refused(format!(
                "group {group} does not exist (k = {})",
                place.groups()
            )));
        }
        if group == place.group {
            let (tuples, next) = self
                .handle
                .list(after, limit as usize)
                .await
                .map_err(gone)?;
            return Ok(FilesResponse::Listing {
                tuples,
                next,
                groups: place.groups(),
            });
        }
        self.forward(
            group,
            forwarded,
            FilesRequest::List {
                group,
                after,
                limit,
                forwarded: true,
            },
        )
        .await
    }

    async fn delete(
        &self,
        name: String,
        forwarded: bool,
        signed: Option<SignedDelete>,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&name) {
            return Ok(refused(e));
        }
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if group != place.group {
            return self
                .forward(
                    group,
                    forwarded,
                    FilesRequest::Delete {
                        name,
                        forwarded: true,
                        signed,
                    },
                )
                .await;
        }
        let current = match self.handle.lookup(&name).await.map_err(gone)? {
            Ok(outcome) => match outcome.result {
                LookupResult::Found { tuple, .. } | LookupResult::Unavailable { tuple }
                    if !tuple.deleted =>
                {
                    tuple
                }
                LookupResult::Found { .. }
                | LookupResult::Unavailable { .. }
                | LookupResult::NotFound => {
                    return Ok(FilesResponse::NotFound);
                }
                LookupResult::Unreachable => {
                    return Ok(FilesResponse::Unreachable {
                        reason: format!("no node of group {group} could be reached"),
                    });
                }
            },
            Err(reason) => return Ok(refused(reason)),
        };
        let (lamport, auth) = match signed {
            Some(signed) if signed.lamport <= current.version.lamport => {
                return Ok(refused(format!(
                    "stale delete: version {} of {name:?} is newer than the signed tombstone \
                     ({}); look the name up again",
                    current.version.lamport, signed.lamport
                )));
            }
            Some(signed) => (signed.lamport, Some(Arc::new(signed.auth))),
            None if self.writes == WritePolicy::Signed => {
                return Ok(refused(
                    "this network requires signed writes; the delete is not signed",
                ));
            }
            None => (current.version.lamport + 1, None),
        };
        let tombstone = FileTuple {
            name: name.into(),
            version: Version {
                lamport,
                blake3: [0; 32],
            },
            size: 0,
            holders: vec![Peer(self.handle.me)],
            epoch: 0,
            deleted: true,
            auth,
        };
        if let Err(e) = admits(self.writes, Some(&current), &tombstone) {
            return Ok(refused(format!("delete refused: {e}")));
        }
        Ok(
            match self.handle.publish(tombstone.clone()).await.map_err(gone)? {
                Ok(()) => FilesResponse::Deleted { tuple: tombstone },
                Err(reason) => refused(reason),
            },
        )
    }

    /// Whether a version another node sends (a commit, a copy) may be taken here: its
    /// signature and owner under `network.writes`, against the version this node knows.
    pub(super) async fn authorized(
        &self,
        tuple: &FileTuple<Peer>,
    ) -> Result<Result<(), quickstore_behaviours::auth::AuthError>, WireError> {
        if self.writes == WritePolicy::Open {
            return Ok(Ok(()));
        }
        let known = self.handle.tuple(&tuple.name).await.map_err(gone)?;
        Ok(admits(self.writes, known.as_ref(), tuple))
    }

    /// Persists the kept versions: hands the latest list to the one writer task.
    pub fn save_kept(&self) {
        if let Ok(rows) = self.kept.lock().map(|k| super::versions::encode(&k)) {
            self.kept_writer.send_replace(Some(rows));
        }
    }

    /// Sends a request for `group` to its contacts, best first, until one answers.
    pub(super) async fn forward(
        &self,
        group: u32,
        forwarded: bool,
        request: FilesRequest,
    ) -> Result<FilesResponse, WireError> {
        let place = self.handle.place_now();
        if forwarded {
            return Ok(refused(format!(
                "forwarded request for group {group} reached a node of group {}",
                place.group
            )));
        }
        let contacts = self.handle.contacts(group).await.map_err(gone)?;
        let mut last = match place.grouping {
            Grouping::Prefix(_) => format!(
                "no node of group {group} of {} is known yet (the groups may be splitting or \
                 merging: try again in a moment)",
                place.groups()
            ),
            Grouping::Fixed(k) => format!(
                "no node of group {group} is known; a network with fewer nodes than its {k} \
                 groups leaves groups empty (every node of a small network wants the same \
                 smaller --groups)"
            ),
        };
        for contact in contacts.iter().take(FORWARD_TRIES) {
            match files_request(&self.control, contact.peer.0, &request, self.timeouts.io).await {
                Ok(FilesResponse::Unreachable { reason }) => last = reason,
                Ok(response) => return Ok(response),
                Err(e) => last = format!("contact {} of group {group}: {e}", contact.peer),
            }
        }
        Ok(FilesResponse::Unreachable { reason: last })
    }

    // ---- bytes -----------------------------------------------------------------------------

    async fn serve_blob(
        &self,
        peer: PeerId,
        mut stream: Stream,
        slot: &StreamSlot<PeerId>,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        let read = read_message::<BlobRequest>(&mut stream, MAX_REQUEST_BYTES, io).await;
        slot.started();
        let request = match read {
            Ok(request) => request,
            Err(WireError::Malformed(reason)) => {
                write_message(&mut stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await?;
                // Closed like every other answer, so the requester reads the refusal and a
                // clean end rather than a reset.
                return crate::files::wire::timed(io, stream.close()).await;
            }
            Err(e) => return Err(e),
        };
        match request {
            BlobRequest::Put {
                name,
                size,
                homes,
                after,
                signed,
            } => {
                tracing::debug!("{peer} puts {name:?} ({size} bytes)");
                let request = super::put::PutRequest {
                    name,
                    size,
                    homes,
                    after,
                    signed,
                };
                self.put(&mut stream, request).await
            }
            BlobRequest::Replicate { tuple } => self.take_replica(&mut stream, tuple).await,
            BlobRequest::Forward { name, size } => self.take_forward(&mut stream, name, size).await,
            BlobRequest::Get { blake3 } => self.send_blob(&mut stream, &blake3).await,
            BlobRequest::Pieces { blake3 } => self.serve_pieces(&mut stream, &blake3).await,
            BlobRequest::Pull { tuple } => self.take_pull(peer, &mut stream, tuple).await,
        }?;
        crate::files::wire::timed(io, stream.close()).await
    }

    /// Receives `size` bytes into a new blob, refusing before any byte moves when they do
    /// not fit ([`Received::Refused`], the refusal has been sent). A write that fails on the
    /// way (the disk filled up) drops the partial blob and reads the rest of the bytes, so
    /// that the sender, still sending, hears why ([`Received::Failed`]) instead of seeing its
    /// stream reset.
    pub(super) async fn receive(
        &self,
        stream: &mut Stream,
        size: u64,
        ready: BlobResponse,
    ) -> Result<Received, WireError> {
        let io = self.timeouts.io;
        let writer = match self.blobs.create(size).await {
            Ok(writer) => writer,
            Err(e) => {
                write_message(stream, &self.storage_refusal(&e), MAX_RESPONSE_BYTES, io).await?;
                return Ok(Received::Refused);
            }
        };
        write_message(stream, &ready, MAX_RESPONSE_BYTES, io).await?;
        let mut writer = Ok(writer);
        let mut chunks = ChunkReader::new(size);
        while let Some(chunk) = chunks.next(stream, io).await? {
            if let Ok(w) = &mut writer
                && let Err(e) = w.write(chunk).await
            {
                tracing::warn!("cannot store a blob of {size} bytes: {e}");
                writer = Err(self.storage_refusal(&e));
            }
            FilesCounters::add(&self.counters.bytes_received, chunk.len() as u64);
        }
        Ok(match writer {
            Ok(writer) => Received::Done(Box::new(writer)),
            Err(refusal) => Received::Failed(refusal),
        })
    }

    /// How a failure to store is told to the peer: a full disk (or quota) and a lack of room
    /// name this node, so the user sees which node ran out.
    pub(super) fn storage_refusal(&self, error: &BlobError) -> BlobResponse {
        let me = self.handle.me;
        blob_refused(match error {
            BlobError::Io(e) if is_disk_full(e) => {
                format!("no space left on device at node {me}")
            }
            BlobError::NoSpace { .. } => format!("{error} at node {me}"),
            other => other.to_string(),
        })
    }

    /// Has `peer` (a member of the own group) take a copy of `tuple` by pulling its pieces
    /// from this node and every other holder at once (`pull`); a node that does not speak
    /// `/quickstore/blob/1.1.0` gets the bytes pushed ([`FilesService::replicate`]).
    pub async fn copy_by_pull(&self, peer: PeerId, tuple: &FileTuple<Peer>) -> Result<(), String> {
        let io = self.timeouts.io;
        if let Err(e) = self.relay.check(peer, tuple.size) {
            return Err(e.to_string());
        }
        let mut stream = match open_stream(&self.control, peer, BLOB_PIECES_PROTOCOL, io).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("{peer} takes no pull ({e}); pushing the copy");
                return self.replicate(peer, tuple).await;
            }
        };
        let request = BlobRequest::Pull {
            tuple: tuple.clone(),
        };
        let asked = async {
            write_message(&mut stream, &request, MAX_REQUEST_BYTES, io).await?;
            // The copy is fetched before the answer comes: wait as long as a put's copies may.
            let wait = io + self.timeouts.put_deadline;
            read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, wait).await
        };
        match asked.await {
            Ok(BlobResponse::Stored { .. }) => Ok(()),
            Ok(BlobResponse::Refused { reason }) => Err(reason),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Copies the blob of `tuple` to `peer` (a member of the own group).
    pub async fn replicate(&self, peer: PeerId, tuple: &FileTuple<Peer>) -> Result<(), String> {
        let io = self.timeouts.io;
        let run = async {
            self.relay.check(peer, tuple.size)?;
            let mut stream = open_stream(&self.control, peer, BLOB_PROTOCOL, io).await?;
            let request = BlobRequest::Replicate {
                tuple: tuple.clone(),
            };
            write_message(&mut stream, &request, MAX_REQUEST_BYTES, io).await?;
            match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await? {
                BlobResponse::Ready => {}
                BlobResponse::Stored { .. } => return Ok(Ok(())),
                BlobResponse::Refused { reason } => return Ok(Err(reason)),
                other => return Ok(Err(format!("unexpected answer {other:?}"))),
            }
            let sent = self
                .send_bytes(&mut stream, &tuple.version.blake3, false)
                .await?;
            if sent != Some(tuple.size) {
                return Ok(Err("the local copy is missing or changed".to_string()));
            }
            match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await? {
                BlobResponse::Stored { .. } => Ok(Ok(())),
                BlobResponse::Refused { reason } => Ok(Err(reason)),
                other => Ok(Err(format!("unexpected answer {other:?}"))),
            }
        };
        let result: Result<Result<(), String>, WireError> = run.await;
        match result {
            Ok(result) => result,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether this node takes a copy of `tuple`: a valid, live version of a name of its own
    /// group that its writer may write. `Err` with the reason to refuse it.
    async fn takes_copy(
        &self,
        tuple: FileTuple<Peer>,
    ) -> Result<Result<FileTuple<Peer>, String>, WireError> {
        let tuple = match tuple.normalize() {
            Ok(tuple) => tuple,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let place = self.handle.place_now();
        let group = place.group_of(&tuple.name);
        if group != place.group || tuple.deleted {
            return Ok(Err(format!("not a copy for group {}", place.group)));
        }
        if let Err(e) = self.authorized(&tuple).await? {
            return Ok(Err(e.to_string()));
        }
        Ok(Ok(tuple))
    }

    /// Takes a copy of `tuple` by fetching it in pieces from `asker` and every other listed
    /// holder, then answers `stored` (or `refused`).
    async fn take_pull(
        &self,
        asker: PeerId,
        stream: &mut Stream,
        tuple: FileTuple<Peer>,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        let tuple = match self.takes_copy(tuple).await? {
            Ok(tuple) => tuple,
            Err(e) => return write_message(stream, &blob_refused(e), MAX_RESPONSE_BYTES, io).await,
        };
        if !self.blobs.contains(&tuple.version.blake3).await {
            if let Err((_, why)) = super::repair::fetch_from(self, asker, &tuple).await {
                let refusal = blob_refused(format!("cannot fetch the copy: {why}"));
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
            FilesCounters::add(&self.counters.copies_stored, 1);
        }
        let stored = BlobResponse::Stored { tuple };
        write_message(stream, &stored, MAX_RESPONSE_BYTES, io).await
    }

    async fn take_replica(
        &self,
        stream: &mut Stream,
        tuple: FileTuple<Peer>,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        let tuple = match self.takes_copy(tuple).await? {
            Ok(tuple) => tuple,
            Err(e) => return write_message(stream, &blob_refused(e), MAX_RESPONSE_BYTES, io).await,
        };
        let hash = tuple.version.blake3;
        if !self.blobs.contains(&hash).await {
            let writer = match self
                .receive(stream, tuple.size, BlobResponse::Ready)
                .await?
            {
                Received::Done(writer) => *writer,
                Received::Refused => return Ok(()),
                Received::Failed(refusal) => {
                    return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
                }
            };
            if let Err(e) = writer.finish(Some(hash)).await {
                let refusal = self.storage_refusal(&e);
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
            FilesCounters::add(&self.counters.copies_stored, 1);
        }
        write_message(
            stream,
            &BlobResponse::Stored { tuple },
            MAX_RESPONSE_BYTES,
            io,
        )
        .await
    }

    async fn send_blob(&self, stream: &mut Stream, hash: &Hash) -> Result<(), WireError> {
        if self.send_bytes(stream, hash, true).await?.is_none() {
            let io = self.timeouts.io;
            write_message(stream, &BlobResponse::NotFound, MAX_RESPONSE_BYTES, io).await?;
        }
        Ok(())
    }

    /// Streams a stored blob, hashing as it goes; with `header`, a `Sending` frame first.
    /// A copy whose hash turns out wrong is deleted (the repair loop fetches a good one).
    /// `None` when the blob is not here.
    async fn send_bytes(
        &self,
        stream: &mut Stream,
        hash: &Hash,
        header: bool,
    ) -> Result<Option<u64>, WireError> {
        let io = self.timeouts.io;
        let Some((file, size)) = self
            .blobs
            .open_blob(hash)
            .await
            .map_err(|e| WireError::Io(io::Error::other(e)))?
        else {
            return Ok(None);
        };
        if header {
            write_message(
                stream,
                &BlobResponse::Sending { size },
                MAX_RESPONSE_BYTES,
                io,
            )
            .await?;
        }
        let mut source = FileSource::start(file.into_std().await, size);
        while let Some(chunk) = source.next().await {
            write_chunk(stream, chunk, io).await?;
        }
        let sent = source.finish().await?;
        crate::files::wire::timed(io, stream.flush()).await?;
        if sent != *hash {
            tracing::warn!("blob {} is corrupt on disk: deleted", to_hex(hash));
            FilesCounters::add(&self.counters.corrupt_found, 1);
            let _ = self.blobs.remove(hash).await;
        }
        FilesCounters::add(&self.counters.blobs_sent, 1);
        FilesCounters::add(&self.counters.bytes_sent, size);
        Ok(Some(size))
    }
}
