//! Fetching a blob's pieces from every source at once: one `pieces` stream per source,
//! [`DEPTH`] requests in flight on each, work handed out and stolen by the [`PiecePlan`],
//! every piece verified before a byte of it is written in place, and the resume record saved
//! beside the sources' work rather than in their way.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use tokio::sync::Notify;

use super::plan::{Delivery, PiecePlan, SourceId, SourceTally};
use super::resume::{self, ResumeRecord};
use positioned_io::WriteAt;

use super::verified::{Piece, PieceError, decode_piece};
use crate::blobs::Hash;
use crate::bulk_io::{AlignedBuf, RangeWriter};
use crate::files::wire::{
    BlobRequest, BlobResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PieceRequest, WireError,
    read_chunk, read_message, write_message,
};

/// Piece requests in flight on one stream, so a source never idles between pieces. 4 rather
/// than 2: a 1 GiB one-holder get on loopback took 2.2–3.5 s instead of 3.0–3.6 s. It once
/// cost an interrupted get's rerun up to 4 pieces per holder, but that waste came from
/// stealing while busy; with steals only when idle the rerun sent 1 MiB beyond what it
/// lacked (BENCHMARKS.md).
const DEPTH: usize = 4;

/// What is fetched, and how long each read or write may take.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// BLAKE3 of the blob.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
    /// Timeout of each open, read and write.
    pub io: Duration,
}

/// Where verified pieces go: the file they are written into at their offsets, and the
/// resume record that lists them, if the fetch can be resumed.
pub struct Sink {
    /// The file (as long as the blob).
    pub file: Arc<RangeWriter>,
    /// The record and where it is kept.
    pub record: Option<(PathBuf, tokio::sync::Mutex<ResumeRecord>)>,
}

/// Why a fetch stopped before every piece was verified.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every source failed or was dropped.
    #[error("no source could serve the rest: {0}")]
    NoSource(String),
    /// Writing the target failed.
    #[error("{0}")]
    Write(io::Error),
}

/// How one source's work ended.
enum SourceEnd {
    /// Nothing more to fetch.
    Done,
    /// It cannot serve (its stream failed): its pieces go to others.
    Lost(String),
    /// It does not hold the blob.
    Missing,
    /// It served a piece that failed verification.
    Bad(String),
    /// The target cannot be written: the whole fetch stops.
    Fatal(io::Error),
}

struct Shared<'a> {
    job: Job,
    plan: Mutex<PiecePlan>,
    changed: Notify,
    sink: &'a Sink,
    progress: &'a (dyn Fn(u64) + Sync),
    /// A piece was entered in the resume record: the record keeper saves it.
    recorded: Notify,
    /// The sources are done: the record keeper saves once more and ends.
    finished: AtomicBool,
}

impl Shared<'_> {
    fn plan(&self) -> MutexGuard<'_, PiecePlan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fetches every piece `plan` still misses from `sources` (futures that open a stream on
/// `/quickstore/blob/1.1.0` to each), writing them into `sink`. Returns what each source
/// did, or why the pieces could not all be had (verified ones stay written and recorded).
pub async fn fetch_pieces<S, O>(
    job: Job,
    plan: PiecePlan,
    sources: Vec<O>,
    sink: &Sink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<SourceTally>, (FetchError, Vec<SourceTally>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Future<Output = anyhow::Result<S>>,
{
    let shared = Shared {
        job,
        plan: Mutex::new(plan),
        changed: Notify::new(),
        sink,
        progress,
        recorded: Notify::new(),
        finished: AtomicBool::new(false),
    };
    let work = async {
        let mut fatal = None;
        if !shared.plan().is_complete() {
            let mut workers: FuturesUnordered<_> = sources
                .into_iter()
                .enumerate()
                .map(|(id, open)| run_source(&shared, id, open))
                .collect();
            while let Some(end) = workers.next().await {
                if let SourceEnd::Fatal(e) = end {
                    fatal = Some(e);
                    break;
                }
                if shared.plan().is_complete() {
                    break;
                }
            }
        }
        shared.finished.store(true, Ordering::Release);
        shared.recorded.notify_one();
        fatal
    };
    let (fatal, ()) = futures::join!(work, keep_record(&shared));
    let plan = shared
        .plan
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let tallies = plan.tallies().to_vec();
    if let Some(e) = fatal {
        return Err((FetchError::Write(e), tallies));
    }
    if plan.is_complete() {
        return Ok(tallies);
    }
    let why = tallies
        .iter()
        .filter_map(|t| t.dropped.clone())
        .collect::<Vec<_>>()
        .join("; ");
    Err((FetchError::NoSource(why), tallies))
}

/// Saves the resume record whenever pieces were entered in it, off the sources' path: the
/// pieces entered while one save runs go in the next (so the record on disk lags the
/// verified pieces by at most those of one save), and once more when the sources are done.
async fn keep_record(shared: &Shared<'_>) {
    let Some((path, record)) = &shared.sink.record else {
        return;
    };
    loop {
        shared.recorded.notified().await;
        let last = shared.finished.load(Ordering::Acquire);
        let snapshot = record.lock().await.clone();
        if let Err(e) = resume::save(path, &snapshot).await {
            tracing::debug!("cannot write the resume record {}: {e}", path.display());
        }
        if last {
            return;
        }
    }
}

/// One source's loop; whatever ends it is entered in the plan.
async fn run_source<S, O>(shared: &Shared<'_>, id: SourceId, open: O) -> SourceEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    O: Future<Output = anyhow::Result<S>>,
{
    let end = match open.await {
        Ok(stream) => serve_from(shared, id, stream).await,
        Err(e) => SourceEnd::Lost(format!("{e:#}")),
    };
    match &end {
        SourceEnd::Lost(why) => shared.plan().lost(id, why),
        SourceEnd::Missing => shared.plan().lacks(id),
        SourceEnd::Bad(why) => shared.plan().rejected(id, why),
        SourceEnd::Done | SourceEnd::Fatal(_) => {}
    }
    shared.changed.notify_waiters();
    end
}

async fn serve_from<S>(shared: &Shared<'_>, id: SourceId, mut stream: S) -> SourceEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let job = shared.job;
    let lost = |e: WireError| SourceEnd::Lost(e.to_string());
    let request = BlobRequest::Pieces { blake3: job.hash };
    if let Err(e) = write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io).await {
        return lost(e);
    }
    match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, job.io).await {
        Ok(BlobResponse::Serving { size }) if size == job.size => {}
        Ok(BlobResponse::Serving { size }) => {
            return SourceEnd::Bad(format!("offers {size} bytes, the tuple says {}", job.size));
        }
        Ok(BlobResponse::NotFound) => return SourceEnd::Missing,
        Ok(BlobResponse::Refused { reason }) => {
            return SourceEnd::Lost(format!("refused: {reason}"));
        }
        Ok(other) => return SourceEnd::Lost(format!("unexpected answer {other:?}")),
        Err(e) => return lost(e),
    }
    let mut asked: VecDeque<usize> = VecDeque::new();
    let mut decoding: VecDeque<Decoding> = VecDeque::new();
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        while asked.len() < DEPTH {
            let Some(index) = shared.plan().assign(id) else {
                break;
            };
            let piece = shared.plan().piece(index);
            let request = PieceRequest {
                start: piece.start,
                end: piece.end,
            };
            if let Err(e) = write_message(&mut stream, &request, MAX_REQUEST_BYTES, job.io).await {
                return lost(e); // the plan hands its pieces to the others
            }
            asked.push_back(index);
        }
        // Settle the decodes that are done, and the oldest when enough wait (or nothing else
        // is left to read): the next piece streams in while the last one is checked.
        while let Some(oldest) = decoding.front() {
            if !(oldest.task.is_finished() || decoding.len() >= MAX_DECODING || asked.is_empty()) {
                break;
            }
            let Some(done) = decoding.pop_front() else {
                break;
            };
            if let Some(end) = settle(shared, id, done).await {
                return end;
            }
        }
        let Some(index) = asked.pop_front() else {
            if shared.plan().is_complete() || shared.plan().tallies()[id].dropped.is_some() {
                return SourceEnd::Done;
            }
            changed.await;
            continue;
        };
        let piece = shared.plan().piece(index);
        let len = match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, job.io).await
        {
            Ok(BlobResponse::Sending { size }) if size <= piece.max_encoded_len() => size,
            Ok(BlobResponse::Sending { size }) => {
                return SourceEnd::Bad(format!(
                    "a {size}-byte answer for a {}-byte piece",
                    piece.len()
                ));
            }
            Ok(BlobResponse::Refused { reason }) => {
                return SourceEnd::Lost(format!("refused: {reason}"));
            }
            Ok(other) => return SourceEnd::Lost(format!("unexpected answer {other:?}")),
            Err(e) => return lost(e),
        };
        let mut buffer = vec![0u8; len as usize];
        match read_chunk(&mut stream, &mut buffer, job.io).await {
            Ok(n) if n == buffer.len() => {}
            Ok(n) => {
                return SourceEnd::Lost(format!("stream ended {} bytes early", len - n as u64));
            }
            Err(e) => return lost(e),
        }
        if shared.plan().is_done(index) {
            shared.plan().delivered(index, id);
            continue;
        }
        let file = Arc::clone(&shared.sink.file);
        let (root, size) = (job.hash, job.size);
        let task = tokio::task::spawn_blocking(move || {
            // Checked into an aligned buffer, then written in one go (around the page cache
            // where allowed): nothing unchecked reaches the file.
            let mut checked = AlignedBuf::with_capacity(piece.len() as usize);
            let mut window = AlignedWindow {
                start: piece.start,
                buf: &mut checked,
            };
            decode_piece(&root, size, piece, &buffer, &mut window)?;
            file.write(piece.start, checked.as_slice())?;
            Ok(())
        });
        decoding.push_back(Decoding { index, piece, task });
    }
}

/// The checked bytes of one piece, gathered in order into an aligned buffer.
struct AlignedWindow<'a> {
    start: u64,
    buf: &'a mut AlignedBuf,
}

impl WriteAt for AlignedWindow<'_> {
    fn write_at(&mut self, pos: u64, data: &[u8]) -> io::Result<usize> {
        if pos != self.start + self.buf.len() as u64 {
            return Err(io::Error::other("a piece's bytes out of order"));
        }
        let n = self.buf.extend(data);
        if n < data.len() {
            return Err(io::Error::other("more bytes than the piece"));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pieces one source's stream has read and is checking, at most this many at once.
const MAX_DECODING: usize = 2;

/// A piece being checked and written on a blocking thread.
struct Decoding {
    index: usize,
    piece: Piece,
    task: tokio::task::JoinHandle<Result<(), PieceError>>,
}

/// Waits for a piece's check; enters it in the plan and the resume record. `Some` when the
/// source must stop (a bad piece, or the target cannot be written).
async fn settle(shared: &Shared<'_>, id: SourceId, done: Decoding) -> Option<SourceEnd> {
    let Decoding { index, piece, task } = done;
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(PieceError::Io(e))) => return Some(SourceEnd::Fatal(e)),
        Ok(Err(e)) => {
            return Some(SourceEnd::Bad(format!(
                "bytes {}..{}: {e}",
                piece.start, piece.end
            )));
        }
        Err(e) => return Some(SourceEnd::Fatal(io::Error::other(e))),
    }
    let first = shared.plan().delivered(index, id) == Delivery::First;
    shared.changed.notify_waiters();
    if first {
        (shared.progress)(piece.len());
        if let Some((_, record)) = &shared.sink.record {
            record.lock().await.add(piece);
            shared.recorded.notify_one();
        }
    }
    None
}
