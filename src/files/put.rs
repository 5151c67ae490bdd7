//! The first home's side of a put, pipelined: the bytes the client sends are written to the
//! own blob and forwarded, chunk by chunk, to the other homes at once. The decisions are the
//! files core's, through the driver ([`super::driver`]): how many copies, which homes the
//! bytes go to, the replacement of a home that failed (a copy from the own durable blob), and
//! the ack rule — the tuple is published here and sent to every other holder (`commit`, so
//! the name survives this node's death right after the ack) before the put is acknowledged.

use std::sync::Arc;

use futures::AsyncWriteExt;
use futures::future::join_all;
use libp2p::{PeerId, Stream};
use quickstore_behaviours::auth::{WritePolicy, admits};
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use quickstore_behaviours::{FileTuple, Version};

use super::driver::PutHome;
use super::service::{
    FilesCounters, FilesService, Received, blob_refused, gone, open_stream, refused,
};
use super::wire::{
    BLOB_PROTOCOL, BlobRequest, BlobResponse, BlobTrailer, ChunkReader, FilesResponse,
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PeerInfo, WireError, read_message, timed, write_message,
};

/// A home the bytes are being forwarded to.
struct Downstream {
    peer: PeerId,
    stream: Stream,
    /// The newest Lamport counter it knows for the name.
    newest: u64,
}

/// A client's `put`, as read from the wire.
pub(super) struct PutRequest {
    pub name: String,
    pub size: u64,
    /// The other homes the placement chose.
    pub homes: Vec<PeerInfo>,
    /// The newest Lamport counter the client was told of.
    pub after: u64,
    /// The client signs the version in the trailer.
    pub signed: bool,
}

impl FilesService {
    /// Serves `put {name, size, homes}` as the first home. The files core decides (through
    /// the driver) how many copies, where the bytes are forwarded, the replacements of
    /// failed homes, the commits and the ack; this task moves the bytes and reports what each
    /// home did. A `signed` put is told its Lamport counter before the bytes and signs the
    /// version in the trailer; the signature is checked (and the name's owner) before the
    /// copies count.
    pub(super) async fn put(
        &self,
        stream: &mut Stream,
        request: PutRequest,
    ) -> Result<(), WireError> {
        let PutRequest {
            name,
            size,
            homes,
            after,
            signed,
        } = request;
        let io = self.timeouts.io;
        if !signed && self.writes == WritePolicy::Signed {
            let reason = "this network requires signed writes; the put is not signed \
                          (a client older than the node?)";
            return write_message(stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await;
        }
        if let Err(e) = check_name(&name) {
            return write_message(stream, &blob_refused(e), MAX_RESPONSE_BYTES, io).await;
        }
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if group != place.group {
            let reason = format!(
                "{name:?} belongs to group {group}; this node is in group {}",
                place.group
            );
            return write_message(stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await;
        }
        let known = self.handle.tuple(&name).await.map_err(gone)?;
        let after = known.as_ref().map_or(0, |t| t.version.lamport).max(after);
        let homes: Vec<PeerId> = homes.iter().map(|h| h.peer.0).collect();
        let started = self
            .driver
            .start_put(name.clone(), size, homes, after)
            .await
            .map_err(|e| WireError::Io(std::io::Error::other(e)))?;
        let (start, outcome) = match started {
            Ok(started) => started,
            Err(e) => {
                FilesCounters::add(&self.counters.puts_failed, 1);
                return write_message(stream, &blob_refused(e), MAX_RESPONSE_BYTES, io).await;
            }
        };
        let put = start.put;
        let me = self.handle.me;
        tracing::info!(
            "storing {name:?} ({size} bytes) as its first home, forwarding to {} of {} other homes",
            start.forward_to.len(),
            start.wanted.saturating_sub(1)
        );
        let writer = match self.blobs.create(size).await {
            Ok(writer) => writer,
            Err(e) => {
                self.driver
                    .put_home(put, PutHome::Failed { home: me })
                    .await;
                let refusal = self.storage_refusal(&e);
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
        };
        let forward_to: Vec<PeerId> = start.forward_to.iter().map(|p| p.0).collect();
        let mut downstream = self.open_downstream(&name, size, forward_to.clone()).await;
        for peer in &forward_to {
            let home = match downstream.iter().find(|d| d.peer == *peer) {
                Some(d) => PutHome::Ready { newest: d.newest },
                None => PutHome::Failed { home: *peer },
            };
            self.driver.put_home(put, home).await;
        }
        // A signed put is told the Lamport counter it signs.
        let lamport = if signed {
            let fixed = self.driver.fix_lamport(put).await;
            match fixed.map_err(|e| WireError::Io(std::io::Error::other(e)))? {
                Some(lamport) => Some(lamport),
                None => {
                    let refusal = blob_refused("the put ended before its bytes came");
                    return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
                }
            }
        } else {
            None
        };
        let ready = lamport.map_or(BlobResponse::Ready, |lamport| BlobResponse::ReadyAt {
            lamport,
        });
        write_message(stream, &ready, MAX_RESPONSE_BYTES, io).await?;

        // A write that fails (the disk filled up) drops the own partial blob and the
        // downstream homes (their streams end without a trailer: they drop their partial
        // copies), and the rest of the bytes is read so that the client, still sending,
        // hears why instead of seeing its stream reset.
        let mut writer = Ok(writer);
        let mut chunks = ChunkReader::new(size);
        while let Some(chunk) = chunks.next(stream, io).await? {
            if let Ok(w) = &mut writer {
                match w.write(chunk).await {
                    Ok(()) => forward(&mut downstream, chunk, io).await,
                    Err(e) => {
                        tracing::warn!("cannot store {name:?} ({size} bytes): {e}");
                        writer = Err(self.storage_refusal(&e));
                        downstream.clear();
                    }
                }
            }
            FilesCounters::add(&self.counters.bytes_received, chunk.len() as u64);
        }
        let mut trailer: BlobTrailer = read_message(stream, MAX_REQUEST_BYTES, io).await?;
        // The writer's signature, checked before any copy counts: a refused one ends the
        // put here, and the downstream homes, sent no trailer, drop their partial copies.
        let auth = trailer.auth.take().map(Arc::new);
        let writer = match (writer, lamport) {
            (Ok(w), Some(lamport)) => {
                let candidate = FileTuple {
                    name: name.as_str().into(),
                    version: Version {
                        lamport,
                        blake3: trailer.blake3,
                    },
                    size,
                    holders: vec![Peer(me)],
                    epoch: 0,
                    deleted: false,
                    auth: auth.clone(),
                };
                match admits(self.writes, known.as_ref(), &candidate) {
                    Ok(()) => Ok(w),
                    Err(e) => {
                        tracing::info!("put of {name:?} refused: {e}");
                        FilesCounters::add(&self.counters.puts_failed, 1);
                        downstream.clear();
                        Err(blob_refused(format!("put refused: {e}")))
                    }
                }
            }
            (writer, _) => writer,
        };
        if let (Ok(_), Some(auth)) = (&writer, auth) {
            self.driver.sign_put(put, auth).await;
        }
        let finished = match writer {
            Ok(writer) => writer
                .finish(Some(trailer.blake3))
                .await
                .map_err(|e| self.storage_refusal(&e)),
            Err(refusal) => Err(refusal),
        };
        let hash = match finished {
            Ok(hash) => hash,
            Err(refusal) => {
                // The downstream homes see their streams end without a trailer and drop
                // their partial copies.
                self.driver
                    .put_home(put, PutHome::Failed { home: me })
                    .await;
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
        };
        self.driver
            .put_home(put, PutHome::Stored { home: me, hash })
            .await;
        let pipelined: Vec<PeerId> = downstream.iter().map(|d| d.peer).collect();
        let stored = finish_downstream(downstream, &trailer, io).await;
        for peer in pipelined {
            let home = if stored.contains(&peer) {
                PutHome::Stored { home: peer, hash }
            } else {
                PutHome::Failed { home: peer }
            };
            self.driver.put_home(put, home).await;
        }
        // The core replaces failed homes, commits the tuple to every home and acknowledges;
        // its deadline (`put_deadline_ms`) bounds this wait.
        let limit = self.timeouts.put_deadline + io;
        let response = match tokio::time::timeout(limit, outcome).await {
            Ok(Ok(Ok(tuple))) => BlobResponse::Stored {
                tuple: FileTuple::clone(&tuple),
            },
            Ok(Ok(Err(failure))) => {
                tracing::info!("put of {name:?} failed: {failure}");
                blob_refused(failure)
            }
            Ok(Err(_)) => blob_refused("the node is shutting down"),
            Err(_) => blob_refused("the put took longer than its deadline"),
        };
        write_message(stream, &response, MAX_RESPONSE_BYTES, io).await
    }

    /// Serves `commit {tuple}`: publishes a new version this node holds a copy of.
    pub(super) async fn take_commit(
        &self,
        tuple: FileTuple<Peer>,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&tuple.name) {
            return Ok(refused(e));
        }
        let place = self.handle.place_now();
        if place.group_of(&tuple.name) != place.group {
            return Ok(refused(format!("not a name of group {}", place.group)));
        }
        if tuple.deleted || !tuple.holders.contains(&Peer(self.handle.me)) {
            return Ok(refused("this node is not listed as a holder"));
        }
        if let Err(e) = self.authorized(&tuple).await? {
            return Ok(refused(format!("commit refused: {e}")));
        }
        Ok(match self.driver.commit(tuple).await {
            Ok(Ok(())) => FilesResponse::Committed {},
            Ok(Err(e)) => refused(e),
            Err(e) => refused(e),
        })
    }

    /// Opens `forward` streams to the other homes at once; those that cannot be reached or
    /// refuse are left out (and replaced after the bytes are in).
    async fn open_downstream(&self, name: &str, size: u64, peers: Vec<PeerId>) -> Vec<Downstream> {
        let io = self.timeouts.io;
        let opened = join_all(peers.into_iter().map(|peer| async move {
            self.relay.check(peer, size)?;
            let mut stream = open_stream(&self.control, peer, BLOB_PROTOCOL, io).await?;
            let request = BlobRequest::Forward {
                name: name.to_string(),
                size,
            };
            write_message(&mut stream, &request, MAX_REQUEST_BYTES, io).await?;
            match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await? {
                BlobResponse::ReadyAfter { newest } => Ok(Downstream {
                    peer,
                    stream,
                    newest,
                }),
                other => Err(WireError::Malformed(format!("{peer} answered {other:?}"))),
            }
        }))
        .await;
        opened
            .into_iter()
            .filter_map(|r: Result<Downstream, WireError>| {
                r.map_err(|e| tracing::info!("home left out of the pipeline: {e}"))
                    .ok()
            })
            .collect()
    }

    /// Serves `forward {name, size}`: stores the bytes as a copy of a put in progress.
    pub(super) async fn take_forward(
        &self,
        stream: &mut Stream,
        name: String,
        size: u64,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if check_name(&name).is_err() || group != place.group {
            let reason = format!("not a copy for group {}", place.group);
            return write_message(stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await;
        }
        let known = self.handle.tuple(&name).await.map_err(gone)?;
        let ready = BlobResponse::ReadyAfter {
            newest: known.map_or(0, |t| t.version.lamport),
        };
        let writer = match self.receive(stream, size, ready).await? {
            Received::Done(writer) => *writer,
            Received::Refused => return Ok(()),
            Received::Failed(refusal) => {
                let _: BlobTrailer = read_message(stream, MAX_REQUEST_BYTES, io).await?;
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
        };
        let trailer: BlobTrailer = read_message(stream, MAX_REQUEST_BYTES, io).await?;
        let response = match writer.finish(Some(trailer.blake3)).await {
            Ok(hash) => {
                FilesCounters::add(&self.counters.copies_stored, 1);
                BlobResponse::Stored {
                    tuple: FileTuple {
                        name: name.into(),
                        version: Version {
                            lamport: 0,
                            blake3: hash,
                        },
                        size,
                        holders: vec![Peer(self.handle.me)],
                        epoch: 0,
                        deleted: false,
                        auth: None,
                    },
                }
            }
            Err(e) => self.storage_refusal(&e),
        };
        write_message(stream, &response, MAX_RESPONSE_BYTES, io).await
    }
}

/// Writes one chunk to every downstream home; a home whose stream fails is dropped.
async fn forward(downstream: &mut Vec<Downstream>, chunk: &[u8], io: std::time::Duration) {
    let results = join_all(
        downstream
            .iter_mut()
            .map(|d| timed(io, d.stream.write_all(chunk))),
    )
    .await;
    let mut i = 0;
    downstream.retain(|d| {
        let ok = results[i].is_ok();
        if let Err(e) = &results[i] {
            tracing::info!("home {} dropped from the pipeline: {e}", d.peer);
        }
        i += 1;
        ok
    });
}

/// Sends the trailer to every downstream home and returns those that stored the copy.
async fn finish_downstream(
    downstream: Vec<Downstream>,
    trailer: &BlobTrailer,
    io: std::time::Duration,
) -> Vec<PeerId> {
    let results = join_all(downstream.into_iter().map(|mut d| async move {
        write_message(&mut d.stream, trailer, MAX_REQUEST_BYTES, io).await?;
        let answer = read_message::<BlobResponse>(&mut d.stream, MAX_RESPONSE_BYTES, io).await?;
        let _ = timed(io, d.stream.close()).await;
        match answer {
            BlobResponse::Stored { .. } => Ok(d.peer),
            other => Err(WireError::Malformed(format!(
                "{} answered {other:?}",
                d.peer
            ))),
        }
    }))
    .await;
    results
        .into_iter()
        .filter_map(|r| {
            r.map_err(|e| tracing::info!("pipelined copy failed: {e}"))
                .ok()
        })
        .collect()
}
