//! The node's side of a `pieces` stream (`/quickstore/blob/1.1.0`): after `serving`, each
//! [`PieceRequest`] is answered with `sending` and the piece's encoding, until the requester
//! closes its side. The blob's outboard is made the first time its pieces are asked for.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bao_tree::io::outboard::PreOrderOutboard;
use futures::AsyncWriteExt;
use libp2p::Stream;

use super::verified::{Piece, PieceError, encode_piece, open_outboard};
use crate::blobs::{Hash, to_hex};
use crate::files::service::{FilesCounters, FilesService, blob_refused};
use crate::files::wire::{
    BlobResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PieceRequest, WireError, read_message,
    timed, write_chunk, write_message,
};

/// A blob open for serving pieces, with its outboard.
struct Serving {
    blob: File,
    outboard: PreOrderOutboard<File>,
}

impl FilesService {
    /// Serves pieces of the blob `hash` until the requester closes its side of `stream`.
    pub(in crate::files) async fn serve_pieces(
        &self,
        stream: &mut Stream,
        hash: &Hash,
    ) -> Result<(), WireError> {
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
        let mut buffer = Vec::new();
        loop {
            let asked = match read_message::<PieceRequest>(stream, MAX_REQUEST_BYTES, io).await {
                Ok(asked) => asked,
                // The requester closed its side: it has what it wanted.
                Err(WireError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let piece = Piece {
                start: asked.start,
                end: asked.end,
            };
            if let Err(e) = piece.check(size) {
                let refusal = blob_refused(e);
                return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
            }
            let shared = Arc::clone(&serving);
            let mut taken = std::mem::take(&mut buffer);
            let encoded = tokio::task::spawn_blocking(move || {
                taken.clear();
                let result = encode_piece(&shared.blob, &shared.outboard, piece, &mut taken);
                result.map(|()| taken)
            })
            .await
            .map_err(|e| WireError::Io(io::Error::other(e)))?;
            let encoded = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    tracing::warn!("cannot serve {piece:?} of blob {}: {e}", to_hex(hash));
                    let refusal = blob_refused(format!("cannot read the blob: {e}"));
                    return write_message(stream, &refusal, MAX_RESPONSE_BYTES, io).await;
                }
            };
            let header = BlobResponse::Sending {
                size: encoded.len() as u64,
            };
            write_message(stream, &header, MAX_RESPONSE_BYTES, io).await?;
            for chunk in encoded.chunks(crate::files::wire::CHUNK_BYTES) {
                write_chunk(stream, chunk, io).await?;
            }
            timed(io, stream.flush()).await?;
            FilesCounters::add(&self.counters.pieces_sent, 1);
            FilesCounters::add(&self.counters.bytes_sent, piece.len());
            buffer = encoded;
        }
    }

    /// The blob `hash` and its outboard (made now if missing), or `None` when the blob is not
    /// here. A blob whose bytes no longer match its hash is deleted (the repair loop fetches
    /// a good copy) and reported as not here.
    async fn open_serving(&self, hash: &Hash) -> Result<Option<Serving>, String> {
        let Some((blob, size)) = self
            .blobs
            .open_blob(hash)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let blob = blob.into_std().await;
        let (blob_path, outboard_path) =
            (self.blobs.path_of(hash), self.blobs.outboard_path_of(hash));
        let root = *hash;
        let opened = tokio::task::spawn_blocking(move || {
            open_outboard(&blob_path, &outboard_path, size, &root)
        })
        .await
        .map_err(|e| e.to_string())?;
        match opened {
            Ok(outboard) => Ok(Some(Serving { blob, outboard })),
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
