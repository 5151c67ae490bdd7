//! Verified bytes of a blob in order, from every holder's `pieces` stream at once: for
//! readers that take bytes only in order (an HTTP response body, a `Range` of it).
//!
//! Every piece overlapping the range is asked for (two in flight per holder, as
//! [`super::fetch`] does), checked against the blob's BLAKE3 before a byte of it goes out,
//! and cut to the range. Which holder fetches which piece is an [`InOrder`] plan: a bounded
//! window past the next piece to send, failed holders' pieces taken again, and the piece
//! the body waits for fetched twice when a holder is idle.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use positioned_io::WriteAt;
use tokio::sync::{Notify, mpsc};

use super::PIECE_BYTES;
use super::fetch::Job;
use super::in_order::{InOrder, SourceId};
use super::verified::{Piece, decode_piece, pieces_of};
use crate::files::wire::{
    BlobRequest, BlobResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PieceRequest, WireError,
    read_chunk, read_message, write_message,
};

/// Piece requests in flight on the stream (as in [`super::fetch`]).
const DEPTH: usize = 2;

/// Why bytes stopped before the end of the range.
#[derive(Debug, thiserror::Error)]
pub enum OrderedError {
    /// Every source failed (stream failed, refused, no longer holds the blob, served bytes
    /// that fail verification): each one's reason.
    #[error("{0}")]
    Source(String),
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

/// Sends the verified bytes `from..to` of `job`'s blob into `out`, in order, fetched from
/// every source that opens: `sources` are futures that name a holder and open a stream on
/// `/quickstore/blob/1.1.0` to it. Pieces are handed out by an [`InOrder`] plan of
/// [`WINDOW`] pieces; a source that fails or serves a bad piece is dropped and its pieces
/// go to the others. Fails when every source has failed before the last byte went out.
pub async fn send_in_order<S, O>(
    sources: Vec<O>,
    job: Job,
    from: u64,
    to: u64,
    out: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), OrderedError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Future<Output = (String, anyhow::Result<S>)>,
{
    let pieces = pieces_covering(job.size, from, to);
    let shared = Shared {
        job,
        plan: Mutex::new(InOrder::new(pieces.len(), WINDOW)),
        pieces,
        changed: Notify::new(),
    };
    let shared = &shared;
    let mut workers: FuturesUnordered<_> = sources
        .into_iter()
        .enumerate()
        .map(|(id, open)| async move {
            let (label, opened) = open.await;
            let end = match opened {
                Ok(stream) => fetch_from(shared, id, stream).await,
                Err(e) => Err(format!("{e:#}")),
            };
            (id, label, end)
        })
        .collect();
    let sending = send_all(shared, from, to, out);
    tokio::pin!(sending);
    let mut failures = Vec::new();
    loop {
        tokio::select! {
            biased;
            sent = &mut sending => return sent,
            Some((id, label, end)) = workers.next() => {
                if let Err(why) = end {
                    tracing::info!("holder {label} stopped serving: {why}");
                    failures.push(format!("{label}: {why}"));
                    shared.plan().failed(id);
                    shared.changed.notify_waiters();
                }
                if workers.is_empty() && !shared.plan().is_done() {
                    return Err(OrderedError::Source(failures.join("; ")));
                }
            }
        }
    }
}

/// Pieces taken past the next one to send, at most: enough to keep three holders busy
/// (each has the next piece asked for while it sends one). With 1 MiB pieces a body holds
/// at most about twice this many MiB (encoded ones being read, checked ones waiting).
pub const WINDOW: usize = 6;

struct Shared {
    job: Job,
    pieces: Vec<Piece>,
    plan: Mutex<InOrder>,
    changed: Notify,
}

impl Shared {
    fn plan(&self) -> MutexGuard<'_, InOrder> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the pieces out in order, cut to `from..to`, as they are verified.
async fn send_all(
    shared: &Shared,
    from: u64,
    to: u64,
    out: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), OrderedError> {
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let next = shared.plan().next_out();
        match next {
            Some((index, bytes)) => {
                shared.changed.notify_waiters(); // the window moved
                let piece = shared.pieces[index];
                let start = from.max(piece.start) - piece.start;
                let end = to.min(piece.end) - piece.start;
                send(
                    out,
                    bytes.slice(start as usize..end as usize),
                    shared.job.io,
                )
                .await?;
            }
            None if shared.plan().is_done() => return Ok(()),
            None => changed.await,
        }
    }
}

/// One source's loop: takes pieces, asks for them (two in flight), checks and delivers
/// them. `Err` says why the source cannot serve (its pieces go back to the plan).
async fn fetch_from<S>(shared: &Shared, id: SourceId, mut stream: S) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let job = shared.job;
    let wire = |e: WireError| e.to_string();
    let request = BlobRequest::Pieces { blake3: job.hash };
    write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io)
        .await
        .map_err(wire)?;
    match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, job.io)
        .await
        .map_err(wire)?
    {
        BlobResponse::Serving { size } if size == job.size => {}
        BlobResponse::Serving { size } => {
            return Err(format!(
                "served bytes that fail verification: offers {size} bytes, the tuple says {}",
                job.size
            ));
        }
        BlobResponse::NotFound => return Err("no longer has the bytes".into()),
        BlobResponse::Refused { reason } => return Err(format!("refused: {reason}")),
        other => return Err(format!("unexpected answer {other:?}")),
    }
    let mut asked: VecDeque<usize> = VecDeque::new();
    // One buffer for the encodings this source reads, used again for each piece.
    let mut encoded = Vec::new();
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        while asked.len() < DEPTH {
            let Some(index) = shared.plan().take(id) else {
                break;
            };
            let piece = shared.pieces[index];
            let request = PieceRequest {
                start: piece.start,
                end: piece.end,
            };
            asked.push_back(index);
            write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io)
                .await
                .map_err(wire)?;
        }
        let Some(&index) = asked.front() else {
            if shared.plan().is_done() {
                return Ok(());
            }
            changed.await;
            continue;
        };
        let piece = shared.pieces[index];
        let bytes = read_piece(&mut stream, job, piece, &mut encoded).await?;
        asked.pop_front();
        shared.plan().delivered(index, id, bytes);
        shared.changed.notify_waiters();
    }
}

/// Reads the answer to a request for `piece` and checks it: its bytes.
async fn read_piece<S>(
    stream: &mut S,
    job: Job,
    piece: Piece,
    encoded: &mut Vec<u8>,
) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let wire = |e: WireError| e.to_string();
    let len = match read_message::<BlobResponse>(stream, MAX_RESPONSE_BYTES, job.io)
        .await
        .map_err(wire)?
    {
        BlobResponse::Sending { size } if size <= piece.max_encoded_len() => size,
        BlobResponse::Sending { size } => {
            return Err(format!(
                "served bytes that fail verification: a {size}-byte answer for a {}-byte piece",
                piece.len()
            ));
        }
        BlobResponse::Refused { reason } => return Err(format!("refused: {reason}")),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let mut buffer = std::mem::take(encoded);
    buffer.resize(len as usize, 0);
    let n = read_chunk(stream, &mut buffer, job.io)
        .await
        .map_err(wire)?;
    if n != buffer.len() {
        return Err(format!("stream ended {} bytes early", len - n as u64));
    }
    let (root, size) = (job.hash, job.size);
    // Allocated here, not on the blocking thread: a large buffer freed on another thread
    // than the one that made it stays with that (often idle) thread's heap for a while, and
    // with a blocking thread per piece the node's memory grew by tens of MiB.
    let mut window = PieceBytes {
        start: piece.start,
        bytes: vec![0u8; piece.len() as usize],
    };
    let (buffer, checked) = tokio::task::spawn_blocking(move || {
        let checked = decode_piece(&root, size, piece, &buffer, &mut window).map(|()| window.bytes);
        (buffer, checked)
    })
    .await
    .map_err(|e| format!("the checking thread failed: {e}"))?;
    *encoded = buffer;
    let checked = checked.map_err(|e| {
        format!(
            "served bytes that fail verification: bytes {}..{}: {e}",
            piece.start, piece.end
        )
    })?;
    Ok(Bytes::from(checked))
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
