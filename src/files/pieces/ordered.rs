//! Verified bytes of a blob in order, from one holder's `pieces` stream: for readers that
//! take bytes only in order (an HTTP response body, a `Range` of it).
//!
//! Every piece overlapping the range is asked for (two in flight, as [`super::fetch`]
//! does), checked against the blob's BLAKE3 before a byte of it goes out, and cut to the
//! range. A holder that fails or serves a bad piece ends the call with the position reached,
//! so the caller can continue from there with another holder.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite};
use positioned_io::WriteAt;
use tokio::sync::mpsc;

use super::PIECE_BYTES;
use super::fetch::Job;
use super::verified::{Piece, decode_piece, pieces_of};
use crate::files::wire::{
    BlobRequest, BlobResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PieceRequest, read_chunk,
    read_message, write_message,
};

/// Piece requests in flight on the stream (as in [`super::fetch`]).
const DEPTH: usize = 2;

/// Why bytes stopped before the end of the range.
#[derive(Debug, thiserror::Error)]
pub enum OrderedError {
    /// The holder cannot serve (stream failed, refused, no longer holds the blob): another
    /// may continue from the position reached.
    #[error("{0}")]
    Source(String),
    /// The holder served bytes that fail verification (nothing of them was sent).
    #[error("served bytes that fail verification: {0}")]
    Bad(String),
    /// The reader went away, or took no bytes for longer than the I/O timeout.
    #[error("the reader stopped taking bytes")]
    Reader,
}

/// The pieces of a blob of `size` bytes that hold bytes of `from..to`.
pub fn pieces_covering(size: u64, from: u64, to: u64) -> Vec<Piece> {
    pieces_of(size, PIECE_BYTES)
        .into_iter()
        .filter(|p| from < to && p.end > from && p.start < to)
        .collect()
}

/// Sends the verified bytes `*pos..to` of `job`'s blob, read from `stream` (a fresh stream
/// on `/quickstore/blob/1.1.0`), into `out`, advancing `*pos` as each piece goes out.
pub async fn send_in_order<S>(
    mut stream: S,
    job: Job,
    pos: &mut u64,
    to: u64,
    out: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), OrderedError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let source = |e: crate::files::wire::WireError| OrderedError::Source(e.to_string());
    let request = BlobRequest::Pieces { blake3: job.hash };
    write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io)
        .await
        .map_err(source)?;
    match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, job.io)
        .await
        .map_err(source)?
    {
        BlobResponse::Serving { size } if size == job.size => {}
        BlobResponse::Serving { size } => {
            return Err(OrderedError::Bad(format!(
                "offers {size} bytes, the tuple says {}",
                job.size
            )));
        }
        BlobResponse::NotFound => {
            return Err(OrderedError::Source("no longer has the bytes".into()));
        }
        BlobResponse::Refused { reason } => {
            return Err(OrderedError::Source(format!("refused: {reason}")));
        }
        other => return Err(OrderedError::Source(format!("unexpected answer {other:?}"))),
    }
    let mut wanted: VecDeque<Piece> = pieces_covering(job.size, *pos, to).into();
    let mut asked: VecDeque<Piece> = VecDeque::new();
    while *pos < to {
        while asked.len() < DEPTH {
            let Some(piece) = wanted.pop_front() else {
                break;
            };
            let request = PieceRequest {
                start: piece.start,
                end: piece.end,
            };
            write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io)
                .await
                .map_err(source)?;
            asked.push_back(piece);
        }
        let Some(piece) = asked.pop_front() else {
            break;
        };
        let len = match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, job.io)
            .await
            .map_err(source)?
        {
            BlobResponse::Sending { size } if size <= piece.max_encoded_len() => size,
            BlobResponse::Sending { size } => {
                return Err(OrderedError::Bad(format!(
                    "a {size}-byte answer for a {}-byte piece",
                    piece.len()
                )));
            }
            BlobResponse::Refused { reason } => {
                return Err(OrderedError::Source(format!("refused: {reason}")));
            }
            other => return Err(OrderedError::Source(format!("unexpected answer {other:?}"))),
        };
        let mut encoded = vec![0u8; len as usize];
        let n = read_chunk(&mut stream, &mut encoded, job.io)
            .await
            .map_err(source)?;
        if n != encoded.len() {
            return Err(OrderedError::Source(format!(
                "stream ended {} bytes early",
                len - n as u64
            )));
        }
        let (root, size) = (job.hash, job.size);
        let checked = tokio::task::spawn_blocking(move || {
            let mut window = PieceBytes {
                start: piece.start,
                bytes: vec![0u8; piece.len() as usize],
            };
            decode_piece(&root, size, piece, &encoded, &mut window).map(|()| window.bytes)
        })
        .await
        .map_err(|e| OrderedError::Source(format!("the checking thread failed: {e}")))?
        .map_err(|e| OrderedError::Bad(format!("bytes {}..{}: {e}", piece.start, piece.end)))?;
        let from = (*pos).max(piece.start) - piece.start;
        let until = to.min(piece.end) - piece.start;
        let slice = Bytes::from(checked).slice(from as usize..until as usize);
        send(out, slice, job.io).await?;
        *pos = piece.start + until;
    }
    Ok(())
}

/// Hands `bytes` to the reader, waiting at most `io` for room.
async fn send(
    out: &mpsc::Sender<io::Result<Bytes>>,
    bytes: Bytes,
    io: Duration,
) -> Result<(), OrderedError> {
    match tokio::time::timeout(io, out.send(Ok(bytes))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(OrderedError::Reader),
    }
}

/// One piece's checked bytes, gathered at their offsets within the piece.
struct PieceBytes {
    start: u64,
    bytes: Vec<u8>,
}

impl WriteAt for PieceBytes {
    fn write_at(&mut self, pos: u64, data: &[u8]) -> io::Result<usize> {
        let at = pos
            .checked_sub(self.start)
            .map(|a| a as usize)
            .filter(|a| a + data.len() <= self.bytes.len())
            .ok_or_else(|| io::Error::other("bytes outside the piece"))?;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pieces_covering_a_range_are_those_it_overlaps() {
        let mib = PIECE_BYTES;
        let size = 3 * mib + 10;
        let starts = |from, to| -> Vec<u64> {
            pieces_covering(size, from, to)
                .iter()
                .map(|p| p.start)
                .collect()
        };
        assert_eq!(starts(0, size), vec![0, mib, 2 * mib, 3 * mib]);
        assert_eq!(starts(mib - 1, mib + 1), vec![0, mib]);
        assert_eq!(starts(mib, 2 * mib), vec![mib]);
        assert_eq!(starts(3 * mib + 5, size), vec![3 * mib]);
        assert!(starts(5, 5).is_empty());
    }

    #[test]
    fn a_piece_window_refuses_bytes_outside_the_piece() {
        let mut window = PieceBytes {
            start: 100,
            bytes: vec![0; 10],
        };
        assert!(window.write_at(105, &[1, 2, 3]).is_ok());
        assert_eq!(&window.bytes[5..8], &[1, 2, 3]);
        assert!(window.write_at(99, &[1]).is_err());
        assert!(window.write_at(108, &[1, 2, 3]).is_err());
    }
}
