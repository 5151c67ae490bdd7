//! The first home's side of a put, pipelined: the bytes the client sends are written to the
//! own blob and forwarded, chunk by chunk, to the other homes at once. A home that fails
//! while the bytes flow is dropped from the pipeline and replaced afterwards by a copy from
//! the own durable blob ([`FilesService::copy_to`]), before the put deadline. Only when every
//! copy is durable is the tuple published, sent to every other holder (`commit`, so the
//! name survives this node's death right after the ack) and the put acknowledged.

use futures::AsyncWriteExt;
use futures::future::join_all;
use libp2p::{PeerId, Stream};
use quickstore_behaviours::id::name_facts;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use quickstore_behaviours::{FileTuple, Version};
use tokio::time::Instant;

use super::service::{
    FilesCounters, FilesService, Received, blob_refused, files_request, gone, open_stream, refused,
};
use super::wire::{
    BLOB_PROTOCOL, BlobRequest, BlobResponse, BlobTrailer, ChunkReader, FilesRequest,
    FilesResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PeerInfo, WireError, read_message, timed,
    write_message,
};

/// A home the bytes are being forwarded to.
struct Downstream {
    peer: PeerId,
    stream: Stream,
    /// The newest Lamport counter it knows for the name.
    newest: u64,
}

impl FilesService {
    /// Serves `put {name, size, homes}` as the first home.
    pub(super) async fn put(
        &self,
        stream: &mut Stream,
        name: String,
        size: u64,
        homes: Vec<PeerInfo>,
        after: u64,
    ) -> Result<(), WireError> {
        let io = self.timeouts.io;
        if let Err(e) = check_name(&name) {
            return write_message(stream, &blob_refused(e), MAX_RESPONSE_BYTES, io).await;
        }
        let group = name_facts(&name, self.handle.groups).0;
        if group != self.handle.group {
            let reason = format!(
                "{name:?} belongs to group {group}; this node is in group {}",
                self.handle.group
            );
            return write_message(stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await;
        }
        // R copies, or as many as the group has live members.
        let (_, live) = self.handle.place(0, Vec::new(), 0).await.map_err(gone)?;
        let want = self.handle.replication.min(live).saturating_sub(1);
        let others: Vec<PeerId> = homes
            .iter()
            .map(|h| h.peer.0)
            .filter(|p| *p != self.handle.me)
            .take(want)
            .collect();
        tracing::info!(
            "storing {name:?} ({size} bytes) as its first home, forwarding to {} of {want} other homes",
            others.len()
        );
        let writer = match self.blobs.create(size).await {
            Ok(writer) => writer,
            Err(e) => {
                FilesCounters::add(&self.counters.puts_failed, 1);
                let refusal = self.storage_refusal(&e);
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
        };
        let mut downstream = self.open_downstream(&name, size, others).await;
        let after = downstream.iter().map(|d| d.newest).fold(after, u64::max);
        write_message(stream, &BlobResponse::Ready, MAX_RESPONSE_BYTES, io).await?;

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
        let trailer: BlobTrailer = read_message(stream, MAX_REQUEST_BYTES, io).await?;
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
                FilesCounters::add(&self.counters.puts_failed, 1);
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
        };
        let stored = finish_downstream(downstream, &trailer, io).await;

        let known = self.handle.tuple(&name).await.map_err(gone)?;
        let lamport = known.map_or(0, |t| t.version.lamport).max(after) + 1;
        let mut tuple = FileTuple {
            name: name.into(),
            version: Version {
                lamport,
                blake3: hash,
            },
            size,
            holders: vec![Peer(self.handle.me)],
            epoch: 0,
            deleted: false,
        };
        tuple.holders.extend(stored.iter().copied().map(Peer));
        let missing = want.saturating_sub(stored.len());
        let deadline = Instant::now() + self.timeouts.put_deadline;
        let copies = if missing == 0 {
            Ok(Vec::new())
        } else {
            self.copy_to(&tuple, Vec::new(), missing, deadline).await
        };
        let response = match copies {
            Ok(copies) => {
                tuple.holders.extend(copies.into_iter().map(Peer));
                tuple.holders.sort();
                match self.handle.publish(tuple.clone()).await.map_err(gone)? {
                    Ok(()) => {
                        self.commit_to_holders(&tuple).await;
                        FilesCounters::add(&self.counters.puts_stored, 1);
                        BlobResponse::Stored { tuple }
                    }
                    Err(reason) => {
                        FilesCounters::add(&self.counters.puts_failed, 1);
                        blob_refused(reason)
                    }
                }
            }
            Err(reason) => {
                FilesCounters::add(&self.counters.puts_failed, 1);
                self.drop_if_unheld(&hash).await;
                blob_refused(reason)
            }
        };
        write_message(stream, &response, MAX_RESPONSE_BYTES, io).await
    }

    /// Before the ack: tells every other holder the tuple (`commit`), so that the name
    /// survives this node's death right after the ack, before gossip has spread it. A holder
    /// that cannot be told now learns the tuple by gossip like any member.
    async fn commit_to_holders(&self, tuple: &FileTuple<Peer>) {
        let io = self.timeouts.io;
        let others = tuple.holders.iter().filter(|p| p.0 != self.handle.me);
        let told = join_all(others.map(|holder| async move {
            let request = FilesRequest::Commit {
                tuple: tuple.clone(),
            };
            let answer = files_request(&self.control, holder.0, &request, io).await;
            match answer {
                Ok(FilesResponse::Committed {}) => true,
                other => {
                    tracing::info!(
                        "holder {holder} did not take the tuple of {:?}: {other:?}",
                        tuple.name
                    );
                    false
                }
            }
        }))
        .await;
        let missed = told.iter().filter(|ok| !**ok).count();
        if missed > 0 {
            FilesCounters::add(&self.counters.commits_missed, missed as u64);
        }
    }

    /// Serves `commit {tuple}`: publishes a new version this node holds a copy of.
    pub(super) async fn take_commit(
        &self,
        tuple: FileTuple<Peer>,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&tuple.name) {
            return Ok(refused(e));
        }
        if name_facts(&tuple.name, self.handle.groups).0 != self.handle.group {
            return Ok(refused(format!(
                "not a name of group {}",
                self.handle.group
            )));
        }
        if tuple.deleted || !tuple.holders.contains(&Peer(self.handle.me)) {
            return Ok(refused("this node is not listed as a holder"));
        }
        if !self.blobs.contains(&tuple.version.blake3).await {
            return Ok(refused("this node holds no copy of that version"));
        }
        Ok(match self.handle.publish(tuple).await.map_err(gone)? {
            Ok(()) => FilesResponse::Committed {},
            Err(reason) => refused(reason),
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
        let group = name_facts(&name, self.handle.groups).0;
        if check_name(&name).is_err() || group != self.handle.group {
            let reason = format!("not a copy for group {}", self.handle.group);
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
