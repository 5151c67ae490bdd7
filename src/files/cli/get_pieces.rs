//! A get into a file from every live holder at once: verified pieces written in place in a
//! partial file beside the target, renamed over it once every piece is in. An interrupted
//! get leaves the partial file and its record; the same get continues from them.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use indicatif::ProgressBar;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;

use super::report::{SourceReport, human_size};
use super::session::Session;
use crate::bulk_io::RangeWriter;
use crate::files::pieces::PIECE_BYTES;
use crate::files::pieces::fetch::{FetchError, Job, Sink, fetch_pieces};
use crate::files::pieces::plan::PiecePlan;
use crate::files::pieces::resume::{self, ResumeRecord};
use crate::files::pieces::verified::pieces_of;
use crate::files::wire::PeerInfo;

/// What a get from several holders did.
pub(super) struct Fetched {
    /// Each holder asked, with what it served.
    pub sources: Vec<SourceReport>,
    /// Verified bytes kept from an earlier get.
    pub resumed_bytes: u64,
}

/// How a get by pieces ended, when it did not fail.
pub(super) enum PiecesOutcome {
    /// The file is in place.
    Done(Fetched),
    /// No holder served a single piece and none was found bad (none speaks
    /// `/quickstore/blob/1.1.0`, or none is reachable): the caller streams the whole blob
    /// the older way, which also says best why no holder could serve.
    NoPieceSource,
}

/// Gets `tuple` into `path` from up to `max_sources` of `holders` (nearest first). With
/// `resume`, verified pieces an earlier get of the same version left are kept.
pub(super) async fn get_pieces(
    session: &Session,
    holders: &[PeerInfo],
    tuple: &FileTuple<Peer>,
    path: &Path,
    resume: bool,
    max_sources: usize,
    bar: &ProgressBar,
) -> anyhow::Result<PiecesOutcome> {
    let (hash, size) = (tuple.version.blake3, tuple.size);
    for abandoned in resume::abandoned(path, &hash) {
        match tokio::fs::remove_file(&abandoned).await {
            Ok(()) => tracing::info!(
                "removed {}, left by a get of another version",
                abandoned.display()
            ),
            Err(e) => tracing::debug!("cannot remove {}: {e}", abandoned.display()),
        }
    }
    let (part, record_path) = resume::resume_paths(path, &hash);
    if !resume {
        resume::discard(&part, &record_path).await;
    }
    let (opened_part, opened_record) = (part.clone(), record_path.clone());
    let (part_file, record) = tokio::task::spawn_blocking(move || {
        open_part(&opened_part, &opened_record, &hash, size, resume)
    })
    .await
    .context("the file thread failed")?
    .with_context(|| format!("cannot write {}", part.display()))?
    .ok_or_else(|| anyhow!("refused: another get is writing {} now", path.display()))?;
    let resumed_bytes = record.bytes();
    bar.inc(resumed_bytes);
    if resumed_bytes > 0 {
        tracing::info!(
            "resuming: {} already verified in {}",
            human_size(resumed_bytes),
            part.display()
        );
    }
    let chosen = &holders[..holders.len().min(max_sources.max(1))];
    let plan = PiecePlan::new(pieces_of(size, PIECE_BYTES), chosen.len(), |p| {
        record.covers(p)
    });
    // `part` keeps the lock until the get ends; pieces go through a writer of their own.
    let writer = RangeWriter::open(&part, size)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let sink = Sink {
        file: Arc::new(writer),
        record: Some((record_path.clone(), tokio::sync::Mutex::new(record))),
    };
    let sources = chosen
        .iter()
        .map(|holder| session.open_pieces(holder, size))
        .collect();
    let job = Job {
        hash,
        size,
        io: session.timeout,
    };
    let progress = |n: u64| bar.inc(n);
    let fetched = fetch_pieces(job, plan, sources, &sink, &progress).await;
    let report = |tallies: &[crate::files::pieces::plan::SourceTally]| -> Vec<SourceReport> {
        chosen
            .iter()
            .zip(tallies)
            .map(|(holder, t)| SourceReport {
                peer: holder.peer.to_string(),
                bytes: t.bytes,
                pieces: t.pieces,
                bad: t.bad,
                dropped: t.dropped.clone(),
            })
            .collect()
    };
    let sources = match fetched {
        Ok(tallies) => report(&tallies),
        Err((FetchError::Write(e), _)) => bail!("cannot write {}: {e}", part.display()),
        Err((FetchError::NoSource(why), tallies)) => {
            let delivered: u64 = tallies.iter().map(|t| t.bytes).sum();
            if delivered == 0 && resumed_bytes == 0 && tallies.iter().all(|t| !t.bad) {
                drop(sink);
                resume::discard(&part, &record_path).await;
                tracing::info!("no holder served pieces ({why}); streaming the whole file");
                return Ok(PiecesOutcome::NoPieceSource);
            }
            for source in report(&tallies).iter().filter(|s| s.bad) {
                eprintln!(
                    "warning: holder {} served bytes that fail verification",
                    source.peer
                );
            }
            bail!(
                "unreachable: no holder can serve the rest ({why}); the {} verified so far \
                 are kept in {}: the same get continues from there",
                human_size(delivered + resumed_bytes),
                part.display()
            );
        }
    };
    let file = Arc::clone(&sink.file);
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .context("the file thread failed")?
        .with_context(|| format!("cannot write {}", part.display()))?;
    drop(sink);
    drop(part_file);
    if resumed_bytes > 0 && super::get::hash_file(&part).await? != hash {
        // Pieces verified before were not all on disk (the machine stopped since).
        resume::discard(&part, &record_path).await;
        bail!(
            "corrupt: the part an earlier get left of {} did not hold what its record says; it \
             was removed: run the get again",
            path.display()
        );
    }
    tokio::fs::rename(&part, path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    resume::discard(&part, &record_path).await; // the part itself was renamed into place
    Ok(PiecesOutcome::Done(Fetched {
        sources,
        resumed_bytes,
    }))
}

/// Opens (or makes) the partial file and takes its lock; with `resume`, takes up the record
/// of what it holds, else (or when there is no usable record) starts it empty at `size`
/// bytes. `None` when another get holds the lock.
fn open_part(
    part: &Path,
    record_path: &Path,
    hash: &[u8; 32],
    size: u64,
    resume: bool,
) -> std::io::Result<Option<(File, ResumeRecord)>> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let kept = if resume {
        resume::load(part, record_path, hash, size)
    } else {
        None
    };
    let record = match kept {
        Some(record) => record,
        None => {
            file.set_len(0)?;
            file.set_len(size)?;
            ResumeRecord::new(hash, size)
        }
    };
    Ok(Some((file, record)))
}
