//! The two file protocols on the wire: `/quickstore/files/1.0.0` (control: locate, place, list,
//! delete, version lookups, kept versions, commit, site) and `/quickstore/blob/1.0.0` (bytes:
//! put, replicate, forward, get).
//!
//! One request per stream. Every control message is a frame: an unsigned-varint length, then
//! that many bytes of CBOR, checked against a limit before any byte is read. File bytes travel
//! raw, between frames, exactly as many as announced. Every open, read and write has a timeout.
//! `docs/PROTOCOL.md` has the field-by-field description.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use quickstore_behaviours::auth::{KeyBytes, WriteAuth};
use quickstore_behaviours::codec::frame;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::net::protocol::read_frame;
use quickstore_behaviours::{AddressRecord, FileTuple};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The control protocol.
pub const FILES_PROTOCOL: StreamProtocol = StreamProtocol::new("/quickstore/files/1.0.0");
/// The bytes protocol.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/quickstore/blob/1.0.0");
/// The bytes protocol with verified pieces: every request of 1.0.0, plus
/// [`BlobRequest::Pieces`]. A node answers both ids.
pub const BLOB_PIECES_PROTOCOL: StreamProtocol = StreamProtocol::new("/quickstore/blob/1.1.0");
/// Largest request frame, in bytes (a name of 1024 bytes and up to 8 peers with records).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024;
/// Largest response frame, in bytes (a page of listed tuples).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Versions of one name in a [`FilesResponse::KeptVersions`] at most (each holder keeps the
/// newest and `files.keep_versions` older ones, 1 by default).
pub const MAX_VERSIONS_LISTED: usize = 32;
/// Streams over `files.max_streams` that are still answered with a refusal (`busy`) at once;
/// beyond these, a flood's streams are dropped unanswered.
pub const MAX_BUSY_REFUSALS: usize = 16;
/// File bytes move in chunks of this size.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A peer and its own signed address record, relayed unchanged: the receiver verifies it
/// before dialling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Who.
    #[serde(rename = "p")]
    pub peer: Peer,
    /// Its signed peer record (libp2p signed envelope).
    #[serde(rename = "a")]
    pub record: AddressRecord,
}

/// A request on `/quickstore/files/1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesRequest {
    /// Resolve a name to its newest tuple and live holders (the entry node runs the lookup).
    #[serde(rename = "locate")]
    Locate {
        /// The name.
        name: String,
    },
    /// Choose home nodes for a new file of `size` bytes. An entry node outside the name's
    /// group forwards it (with `forwarded`) to a contact in the group.
    #[serde(rename = "place")]
    Place {
        /// The name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Set by the entry node when it forwards; a forwarded request is never forwarded again.
        forwarded: bool,
    },
    /// A page of the tuples of `group`, in name order after `after`.
    #[serde(rename = "list")]
    List {
        /// The group.
        group: u32,
        /// Names after this one (exclusive); none for the first page.
        after: Option<String>,
        /// Tuples in the page at most (capped by the server).
        limit: u32,
        /// Set when forwarded.
        forwarded: bool,
    },
    /// Find holders of an older version of `name` (Lamport counter `lamport`) that they still
    /// keep. A member of the name's group asks the other members; an entry node of another
    /// group forwards it.
    #[serde(rename = "version")]
    Version {
        /// The name.
        name: String,
        /// The version's Lamport counter.
        lamport: u64,
        /// Set when forwarded.
        forwarded: bool,
    },
    /// Whether this node keeps that version (answered from its own store, never forwarded).
    #[serde(rename = "has_version")]
    HasVersion {
        /// The name.
        name: String,
        /// The version's Lamport counter.
        lamport: u64,
    },
    /// The first home of a put tells each other home the tuple it is about to acknowledge,
    /// so that every holder knows the name before the client is told it is stored: the
    /// home checks that it holds the bytes and is listed, and publishes the tuple too.
    #[serde(rename = "commit")]
    Commit {
        /// The new version with its holders.
        tuple: FileTuple<Peer>,
    },
    /// The versions of `name` that the members of its group keep (for `ls --versions`). A
    /// member asks the others with [`FilesRequest::Kept`]; an entry node of another group
    /// forwards it.
    #[serde(rename = "versions")]
    Versions {
        /// The name.
        name: String,
        /// Set when forwarded.
        forwarded: bool,
    },
    /// The versions of `name` this node keeps (answered from its own store, never
    /// forwarded).
    #[serde(rename = "kept")]
    Kept {
        /// The name.
        name: String,
    },
    /// The public IP the answering node is seen from (the site of its LAN), so a client on
    /// its LAN dials other nodes' LAN addresses only when they are of the same site.
    #[serde(rename = "site")]
    Site {},
    /// Publish a tombstone for `name`.
    #[serde(rename = "delete")]
    Delete {
        /// The name.
        name: String,
        /// Set when forwarded.
        forwarded: bool,
        /// A tombstone the client signed: its Lamport counter (one above the version it
        /// deletes) and signature. Omitted when unsigned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed: Option<SignedDelete>,
    },
}

/// A tombstone's Lamport counter and the writer's signature of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDelete {
    /// The tombstone's Lamport counter.
    #[serde(rename = "l")]
    pub lamport: u64,
    /// The signature.
    #[serde(rename = "a")]
    pub auth: WriteAuth,
}

/// An answer on `/quickstore/files/1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesResponse {
    /// The newest tuple and its live holders, nearest first.
    #[serde(rename = "located")]
    Located {
        /// The tuple.
        tuple: FileTuple<Peer>,
        /// Live holders with their records.
        holders: Vec<PeerInfo>,
        /// Kelips lookup rounds the entry node needed (0: answered from its own store).
        hops: u32,
    },
    /// Home nodes for a put, the first one to stream to first.
    #[serde(rename = "placed")]
    Placed {
        /// The homes.
        homes: Vec<PeerInfo>,
        /// Live members of the group (fewer homes than the replication only when this is).
        group_size: u32,
        /// The newest Lamport counter the placing member knows for the name (0: none).
        #[serde(default)]
        newest: u64,
        /// R, the copies the network keeps of a file (0: not said, from an older node).
        #[serde(default)]
        replication: u32,
        /// The owner key of the name's newest version, when signed. Omitted otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
        owner: Option<KeyBytes>,
    },
    /// A page of tuples.
    #[serde(rename = "listing")]
    Listing {
        /// The tuples.
        tuples: Vec<FileTuple<Peer>>,
        /// The last name of the page when more follow.
        next: Option<String>,
        /// k, the number of groups (so a client can walk them all).
        groups: u32,
    },
    /// The tombstone published.
    #[serde(rename = "deleted")]
    Deleted {
        /// It.
        tuple: FileTuple<Peer>,
    },
    /// The answer to `commit`: the home published the tuple.
    #[serde(rename = "committed")]
    Committed {},
    /// The kept versions of a name, newest first; each tuple names the members that keep
    /// that version (its `holders`). Empty when no member keeps one.
    #[serde(rename = "kept_versions")]
    KeptVersions {
        /// The versions, at most [`MAX_VERSIONS_LISTED`].
        versions: Vec<FileTuple<Peer>>,
    },
    /// The answer to `site`.
    #[serde(rename = "site")]
    Site {
        /// The IP as text (`198.51.100.11`, `2001:db8::1`), when the node knows it.
        ip: Option<String>,
    },
    /// Nobody knows the name.
    #[serde(rename = "not_found")]
    NotFound,
    /// Nobody able to answer could be reached.
    #[serde(rename = "unreachable")]
    Unreachable {
        /// Why.
        reason: String,
    },
    /// The request was refused.
    #[serde(rename = "refused")]
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request on `/quickstore/blob/1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobRequest {
    /// A client puts a new file at its first home node: after [`BlobResponse::Ready`],
    /// `size` bytes, then a [`BlobTrailer`]; the answer is [`BlobResponse::Stored`] once
    /// every home holds the bytes durably.
    #[serde(rename = "put")]
    Put {
        /// The name.
        name: String,
        /// Bytes that follow.
        size: u64,
        /// The other homes the placement chose.
        homes: Vec<PeerInfo>,
        /// The newest Lamport counter the client was told of (the placement's `newest`); the
        /// new version is numbered above it and above what the first home knows.
        #[serde(default)]
        after: u64,
        /// The client signs the version: the home answers [`BlobResponse::ReadyAt`] with its
        /// Lamport counter, and the trailer carries the signature. Omitted when false.
        #[serde(default, skip_serializing_if = "is_false")]
        signed: bool,
    },
    /// A home node copies a version to another member of its group: after
    /// [`BlobResponse::Ready`], `tuple.size` bytes whose BLAKE3 is the tuple's.
    #[serde(rename = "replicate")]
    Replicate {
        /// The version being copied.
        tuple: FileTuple<Peer>,
    },
    /// The first home of a put streams the bytes on to another home as they arrive: after
    /// [`BlobResponse::Ready`], `size` bytes, then a [`BlobTrailer`]; the answer is
    /// [`BlobResponse::Stored`] once the copy is durable.
    #[serde(rename = "forward")]
    Forward {
        /// The name.
        name: String,
        /// Bytes that follow.
        size: u64,
    },
    /// Fetch the bytes of a blob: [`BlobResponse::Sending`], then the bytes.
    #[serde(rename = "get")]
    Get {
        /// BLAKE3 of the bytes.
        #[serde(with = "serde_bytes")]
        blake3: [u8; 32],
    },
    /// Fetch verified pieces of a blob (`/quickstore/blob/1.1.0` only):
    /// [`BlobResponse::Serving`], then any number of [`PieceRequest`]s, each answered with
    /// [`BlobResponse::Sending`] and the piece's encoding, until the requester closes its
    /// side.
    #[serde(rename = "pieces")]
    Pieces {
        /// BLAKE3 of the bytes.
        #[serde(with = "serde_bytes")]
        blake3: [u8; 32],
    },
    /// A holder asks another member of its group to take a copy of a version by fetching
    /// its pieces from the asker and every other listed holder at once (repair and hand-off,
    /// `/quickstore/blob/1.1.0` only): [`BlobResponse::Stored`] once the copy is durable,
    /// or [`BlobResponse::Refused`].
    #[serde(rename = "pull")]
    Pull {
        /// The version to copy, with its holders.
        tuple: FileTuple<Peer>,
    },
}

/// One piece asked for on a `pieces` stream: bytes `start..end` of the blob, `start` a
/// multiple of 16 KiB, `end` one too or the blob's end, at most 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRequest {
    /// First byte.
    #[serde(rename = "s")]
    pub start: u64,
    /// One past the last byte.
    #[serde(rename = "e")]
    pub end: u64,
}

/// An answer on `/quickstore/blob/1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// Send the bytes now (the size and the space were accepted).
    #[serde(rename = "ready")]
    Ready,
    /// Send the bytes now; answered to `forward`, with the newest Lamport counter this home
    /// knows for the name (0: none), so the first home numbers the version above it.
    #[serde(rename = "ready_after")]
    ReadyAfter {
        /// The newest Lamport counter known here.
        newest: u64,
    },
    /// Send the bytes now, and sign version `lamport` in the trailer; answered to a `put`
    /// that is `signed`.
    #[serde(rename = "ready_at")]
    ReadyAt {
        /// The Lamport counter of the new version.
        lamport: u64,
    },
    /// The put or copy is durable; for a put, on every home listed.
    #[serde(rename = "stored")]
    Stored {
        /// The version with its holders.
        tuple: FileTuple<Peer>,
    },
    /// The blob is here and pieces of it may be asked for; answered to `pieces`.
    #[serde(rename = "serving")]
    Serving {
        /// The blob's size in bytes.
        size: u64,
    },
    /// This many bytes follow.
    #[serde(rename = "sending")]
    Sending {
        /// Bytes.
        size: u64,
    },
    /// No such blob here.
    #[serde(rename = "not_found")]
    NotFound,
    /// Refused, with the reason.
    #[serde(rename = "refused")]
    Refused {
        /// Why.
        reason: String,
    },
}

/// What a client sends after the bytes of a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobTrailer {
    /// BLAKE3 of the bytes sent.
    #[serde(with = "serde_bytes")]
    pub blake3: [u8; 32],
    /// The writer's signature of the version (a `signed` put). Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WriteAuth>,
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// Why a stream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No progress within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something unreadable or oversized.
    #[error("bad message: {0}")]
    Malformed(String),
    /// The peer is reachable only through a relay, which may not carry these bytes.
    #[error("{0}")]
    Relay(String),
}

/// Runs `future` with `timeout`.
pub async fn timed<T, E: Into<WireError>>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, WireError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(WireError::Timeout(timeout)),
    }
}

/// Reads one CBOR frame of at most `limit` bytes.
pub async fn read_message<T: DeserializeOwned>(
    io: &mut (impl AsyncRead + Unpin),
    limit: usize,
    timeout: Duration,
) -> Result<T, WireError> {
    let bytes = timed(timeout, read_frame(io, limit))
        .await?
        .map_err(WireError::Malformed)?;
    cbor4ii::serde::from_slice(&bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Writes one CBOR frame (refusing to send more than `limit` bytes) and flushes; the stream
/// stays open for what follows.
pub async fn write_message<T: Serialize>(
    io: &mut (impl AsyncWrite + Unpin),
    value: &T,
    limit: usize,
    timeout: Duration,
) -> Result<(), WireError> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), value)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > limit {
        return Err(WireError::Malformed(format!(
            "message of {} bytes exceeds {limit}",
            bytes.len()
        )));
    }
    timed(timeout, async {
        io.write_all(&frame(&bytes)).await?;
        io.flush().await
    })
    .await
}

/// Reads exactly `buf.len()` bytes unless the stream ends first; returns how many were read.
pub async fn read_chunk(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, WireError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = timed(timeout, io.read(&mut buf[filled..])).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Reads exactly `size` announced bytes from a stream, a chunk at a time; a stream that ends
/// early is an error.
pub struct ChunkReader {
    buf: Vec<u8>,
    left: u64,
}

impl ChunkReader {
    /// A reader of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            buf: vec![0u8; CHUNK_BYTES.min(size.max(1) as usize)],
            left: size,
        }
    }

    /// The next chunk (at most [`CHUNK_BYTES`]), or `None` once every byte was read.
    pub async fn next(
        &mut self,
        io: &mut (impl AsyncRead + Unpin),
        timeout: Duration,
    ) -> Result<Option<&[u8]>, WireError> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = self.left.min(self.buf.len() as u64) as usize;
        let n = read_chunk(io, &mut self.buf[..want], timeout).await?;
        if n < want {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended {} bytes early", self.left - n as u64),
            )));
        }
        self.left -= n as u64;
        Ok(Some(&self.buf[..n]))
    }
}

/// Writes all of `buf`.
pub async fn write_chunk(
    io: &mut (impl AsyncWrite + Unpin),
    buf: &[u8],
    timeout: Duration,
) -> Result<(), WireError> {
    timed(timeout, io.write_all(buf)).await
}
