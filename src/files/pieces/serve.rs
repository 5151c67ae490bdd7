//! The node's side of a `pieces` stream (`/quickstore/blob/1.1.0`): after `serving`, each
//! [`PieceRequest`] is answered with `sending` and the piece's encoding, until the requester
//! closes its side. The blob's outboard is made the first time its pieces are asked for.

use std::fs::File;

use crate::bulk_io::RangeReader;
use std::io;
use std::sync::Arc;

use bao_tree::io::outboard::PreOrderOutboard;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::verified::{Piece, PieceError, encode_piece, open_outboard};
use crate::blobs::{Hash, to_hex};
use crate::files::service::{FilesCounters, FilesService, blob_refused};
use crate::files::wire::{
    BlobRequest, BlobResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PieceRequest, WireError,
    read_message, timed, write_chunk, write_message,
};

/// Answers read ahead of the one being written, at most (each holds one encoded piece, so a
/// stream holds at most 3 MiB of them).
const QUEUED_ANSWERS: usize = 2;

/// The next answer on a `pieces` stream, in the order of the requests.
enum Answer {
    /// A piece being read from disk and encoded.
    Piece(Piece, tokio::task::JoinHandle<Result<Vec<u8>, PieceError>>),
    /// A request that is not a piece of the blob: refused, and the stream ends.
    Refuse(String),
}

/// A blob open for serving pieces, with its outboard.
struct Serving {
    blob: RangeReader,
    outboard: PreOrderOutboard<File>,
}

/// Bytes buffered in the in-memory pipe of a [`FilesService::local_pieces`] stream.
const LOCAL_PIPE_BYTES: usize = 1 << 20;

/// A `pieces` stream to this node itself, in memory.
pub type LocalPieces = tokio_util::compat::Compat<tokio::io::DuplexStream>;

impl FilesService {
    /// A stream to this node's own `pieces` service, in memory: the node's HTTP API reads the
    /// copies this node holds through it, the same protocol and checks as from any holder,
    /// without encrypting its own bytes to itself. The requester speaks first, as on
    /// `/quickstore/blob/1.1.0` (a `pieces` request; anything else closes the stream).
    pub fn local_pieces(self: &Arc<Self>) -> LocalPieces {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (near, far) = tokio::io::duplex(LOCAL_PIPE_BYTES);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let mut far = far.compat();
            let io = service.timeouts.io;
            let asked = read_message::<BlobRequest>(&mut far, MAX_REQUEST_BYTES, io).await;
            if let Ok(BlobRequest::Pieces { blake3 }) = asked
                && let Err(e) = service.serve_pieces(&mut far, &blake3).await
            {
                tracing::debug!("local pieces stream of {}: {e}", to_hex(&blake3));
            }
            let _ = far.close().await;
        });
        near.compat()
    }

    /// Serves pieces of the blob `hash` until the requester closes its side of `stream`.
    pub(in crate::files) async fn serve_pieces<S>(
        &self,
        stream: &mut S,
        hash: &Hash,
    ) -> Result<(), WireError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let io = self.timeouts.io;
        let serving = match self.open_serving(hash).await {
            Ok(Some(serving)) => Arc::new(serving),
            Ok(None) => {
                return write_message(stream, &BlobResponse::NotFound, MAX_RESPONSE_BYTES, io)
                    .await;
            }
            Err(reason) => {
                return write_message(stream, &blob_refused(reason), MAX_RESPONSE_BYTES, io).await;
            }
        };
        let size = serving.outboard.tree.size();
        write_message(
            stream,
            &BlobResponse::Serving { size },
            MAX_RESPONSE_BYTES,
            io,
        )
        .await?;
        // Requests are read and their pieces read from disk while earlier answers are still
        // being written: a bounded queue of answers in order between the two halves.
        let (mut requests, mut answers) = futures::AsyncReadExt::split(&mut *stream);
        let (queue, mut queued) = tokio::sync::mpsc::channel::<Answer>(QUEUED_ANSWERS);
        let reading = async move {
            loop {
                let asked = match read_message::<PieceRequest>(&mut requests, MAX_REQUEST_BYTES, io)
                    .await
                {
                    Ok(asked) => asked,
                    // The requester closed its side: it has what it wanted.
                    Err(WireError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let piece = Piece {
                    start: asked.start,
                    end: asked.end,
                };
                let answer = match piece.check(size) {
                    Ok(()) => {
                        let shared = Arc::clone(&serving);
                        // Made here, where it is freed, not on the blocking thread (see
                        // `ordered::read_piece`).
                        let mut encoded = Vec::with_capacity(piece.max_encoded_len() as usize);
                        Answer::Piece(
                            piece,
                            tokio::task::spawn_blocking(move || {
                                encode_piece(&shared.blob, &shared.outboard, piece, &mut encoded)
                                    .map(|()| encoded)
                            }),
                        )
                    }
                    Err(e) => Answer::Refuse(e.to_string()),
                };
                let refused = matches!(answer, Answer::Refuse(_));
                if queue.send(answer).await.is_err() || refused {
                    return Ok(());
                }
            }
        };
        let writing = async {
            while let Some(answer) = queued.recv().await {
                let encoded = match answer {
                    Answer::Piece(piece, task) => match task.await {
                        Ok(Ok(encoded)) => (piece, encoded),
                        Ok(Err(e)) => {
                            tracing::warn!("cannot serve {piece:?} of blob {}: {e}", to_hex(hash));
                            let refusal = blob_refused(format!("cannot read the blob: {e}"));
                            return write_message(&mut answers, &refusal, MAX_RESPONSE_BYTES, io)
                                .await;
                        }
                        Err(e) => return Err(WireError::Io(io::Error::other(e))),
                    },
                    Answer::Refuse(reason) => {
                        let refusal = blob_refused(reason);
                        return write_message(&mut answers, &refusal, MAX_RESPONSE_BYTES, io).await;
                    }
                };
                let (piece, encoded) = encoded;
                let header = BlobResponse::Sending {
                    size: encoded.len() as u64,
                };
                write_message(&mut answers, &header, MAX_RESPONSE_BYTES, io).await?;
                for chunk in encoded.chunks(crate::files::wire::CHUNK_BYTES) {
                    write_chunk(&mut answers, chunk, io).await?;
                }
                timed(io, answers.flush()).await?;
                FilesCounters::add(&self.counters.pieces_sent, 1);
                FilesCounters::add(&self.counters.bytes_sent, piece.len());
            }
            Ok(())
        };
        // Writing ends once the reading side has ended (its queue closes), or at the first
        // failure or refusal, which drops the reading side.
        let (reading, writing) = (Box::pin(reading), Box::pin(writing));
        match futures::future::select(reading, writing).await {
            futures::future::Either::Left((Ok(()), writing)) => writing.await,
            futures::future::Either::Left((Err(e), _)) => Err(e),
            futures::future::Either::Right((written, _)) => written,
        }
    }

    /// The blob `hash` and its outboard (made now if missing), or `None` when the blob is not
    /// here. A blob whose bytes no longer match its hash is deleted (the repair loop fetches
    /// a good copy) and reported as not here.
    async fn open_serving(&self, hash: &Hash) -> Result<Option<Serving>, String> {
        let (blob_path, outboard_path) =
            (self.blobs.path_of(hash), self.blobs.outboard_path_of(hash));
        let root = *hash;
        let opened = tokio::task::spawn_blocking(move || {
            let size = match std::fs::metadata(&blob_path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(PieceError::Io(e)),
            };
            let blob = RangeReader::open(&blob_path, size)?;
            let outboard = open_outboard(&blob_path, &outboard_path, size, &root)?;
            Ok(Some(Serving { blob, outboard }))
        })
        .await
        .map_err(|e| e.to_string())?;
        match opened {
            Ok(serving) => Ok(serving),
            Err(PieceError::CorruptBlob) => {
                tracing::warn!("blob {} is corrupt on disk: deleted", to_hex(hash));
                FilesCounters::add(&self.counters.corrupt_found, 1);
                let _ = self.blobs.remove(hash).await;
                Ok(None)
            }
            Err(e) => Err(format!("cannot make the blob's outboard: {e}")),
        }
    }
}
