//! The byte-moving side of repair: fetching a held name's bytes from another holder, and the
//! scrub that re-hashes stored blobs within a byte budget. Every decision (who fetches, who
//! leads, what is copied, trimmed or deleted) is the files core's; its driver
//! ([`super::driver`]) calls these and reports the outcomes back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::files_core::FetchFailure;
use quickstore_behaviours::net::Peer;

use super::pieces::PIECE_BYTES;
use super::pieces::fetch::{FetchError, Job, Sink, fetch_pieces};
use super::pieces::plan::PiecePlan;
use super::pieces::verified::pieces_of;
use super::service::{FilesCounters, FilesService, open_stream};
use super::wire::{
    BLOB_PIECES_PROTOCOL, BLOB_PROTOCOL, BlobRequest, BlobResponse, ChunkReader, MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES, WireError, read_message, write_message,
};
use crate::blobs::{BlobError, Hash, to_hex};

/// Rendezvous rank of `peer` for `name`: the highest ranked live holder with a copy leads the
/// repair (the files core's `rank`).
pub fn rank(name: &str, peer: &PeerId) -> [u8; 32] {
    quickstore_behaviours::files_core::rank::rank(name, &Peer(*peer))
}

/// Fetches the blob of `tuple` and stores it intact here: in verified pieces from `peer` (the
/// source the files core chose) and every other holder the tuple lists at once, or, when none
/// of them serves pieces (older nodes), as one stream from `peer`.
pub async fn fetch_from(
    service: &FilesService,
    peer: PeerId,
    tuple: &FileTuple<Peer>,
) -> Result<(), (FetchFailure, String)> {
    let unreachable = |e: WireError| (FetchFailure::Unreachable, e.to_string());
    service.relay.check(peer, tuple.size).map_err(unreachable)?;
    if tuple.size > 0 {
        match fetch_pieces_from(service, peer, tuple).await {
            Some(result) => return result,
            None => tracing::debug!("no holder of {:?} served pieces; one stream", tuple.name),
        }
    }
    fetch_whole(service, peer, tuple).await
}

/// [`fetch_from`] in pieces; `None` when no source served a piece and none was bad (try the
/// whole stream).
async fn fetch_pieces_from(
    service: &FilesService,
    peer: PeerId,
    tuple: &FileTuple<Peer>,
) -> Option<Result<(), (FetchFailure, String)>> {
    let (hash, size, io) = (tuple.version.blake3, tuple.size, service.timeouts.io);
    let local = |e: BlobError| (FetchFailure::Unreachable, e.to_string());
    let mut peers = vec![peer];
    peers.extend(
        tuple
            .holders
            .iter()
            .map(|h| h.0)
            .filter(|h| *h != peer && *h != service.handle.me)
            .filter(|h| service.relay.check(*h, size).is_ok()),
    );
    let writer = match service.blobs.create_in_pieces(size).await {
        Ok(writer) => writer,
        Err(e) => return Some(Err(local(e))),
    };
    let sink = Sink {
        file: writer.file(),
        record: None,
    };
    let plan = PiecePlan::new(pieces_of(size, PIECE_BYTES), peers.len(), |_| false);
    let sources = peers
        .iter()
        .map(|p| async move {
            open_stream(&service.control, *p, BLOB_PIECES_PROTOCOL, io)
                .await
                .map_err(anyhow::Error::from)
        })
        .collect();
    let job = Job { hash, size, io };
    let progress = |n: u64| FilesCounters::add(&service.counters.bytes_received, n);
    let tallies = match fetch_pieces(job, plan, sources, &sink, &progress).await {
        Ok(_) => {
            drop(sink);
            return Some(writer.finish(hash).await.map_err(local));
        }
        Err((FetchError::Write(e), _)) => return Some(Err(local(BlobError::Io(e)))),
        Err((FetchError::NoSource(_), tallies)) => tallies,
    };
    if tallies.iter().all(|t| t.bytes == 0 && !t.bad) {
        return None;
    }
    let chosen = &tallies[0];
    let why = chosen.dropped.clone().unwrap_or_default();
    Some(Err(if chosen.bad {
        (FetchFailure::Corrupt, why)
    } else if chosen.missing {
        (FetchFailure::Missing, why)
    } else {
        (FetchFailure::Unreachable, why)
    }))
}

/// [`fetch_from`] as one stream from `peer`, hashed on the way.
async fn fetch_whole(
    service: &FilesService,
    peer: PeerId,
    tuple: &FileTuple<Peer>,
) -> Result<(), (FetchFailure, String)> {
    let unreachable = |e: WireError| (FetchFailure::Unreachable, e.to_string());
    let io = service.timeouts.io;
    let hash = tuple.version.blake3;
    let mut stream = open_stream(&service.control, peer, BLOB_PROTOCOL, io)
        .await
        .map_err(unreachable)?;
    write_message(
        &mut stream,
        &BlobRequest::Get { blake3: hash },
        MAX_REQUEST_BYTES,
        io,
    )
    .await
    .map_err(unreachable)?;
    let answer = read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io)
        .await
        .map_err(unreachable)?;
    let size = match answer {
        BlobResponse::Sending { size } => size,
        BlobResponse::NotFound => return Err((FetchFailure::Missing, "not found".into())),
        BlobResponse::Refused { reason } => return Err((FetchFailure::Unreachable, reason)),
        other => {
            let why = format!("unexpected answer {other:?}");
            return Err((FetchFailure::Unreachable, why));
        }
    };
    if size != tuple.size {
        let why = format!("sends {size} bytes, the tuple says {}", tuple.size);
        return Err((FetchFailure::Corrupt, why));
    }
    // A local failure (no space) says nothing about the holder's copy.
    let local = |e: BlobError| (FetchFailure::Unreachable, e.to_string());
    let mut writer = service.blobs.create(size).await.map_err(local)?;
    let mut chunks = ChunkReader::new(size);
    while let Some(chunk) = chunks.next(&mut stream, io).await.map_err(unreachable)? {
        writer.write(chunk).await.map_err(local)?;
    }
    match writer.finish(Some(hash)).await {
        Ok(_) => Ok(()),
        Err(e @ BlobError::HashMismatch { .. }) => Err((FetchFailure::Corrupt, e.to_string())),
        Err(e) => Err(local(e)),
    }
}

/// Re-hashes stored blobs round-robin within a byte budget per round (a scrub), off the
/// driver's loop; each corrupt blob found is handed to `corrupt`.
pub async fn scrub(
    service: Arc<FilesService>,
    period: Duration,
    bytes_per_s: u64,
    corrupt: tokio::sync::mpsc::Sender<Hash>,
) {
    let per_round = (bytes_per_s as u128 * period.as_millis() / 1000) as u64;
    let mut budget = ScrubBudget::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if corrupt.is_closed() {
            return;
        }
        let Ok(stored) = service.blobs.list_sized().await else {
            continue;
        };
        let sizes: BTreeMap<Hash, u64> = stored.into_iter().collect();
        for hash in budget.round(&sizes, per_round) {
            match service.blobs.verify(&hash).await {
                Ok(true) => {}
                Ok(false) => {
                    if service.blobs.contains(&hash).await {
                        tracing::warn!("blob {} is corrupt on disk", to_hex(&hash));
                        FilesCounters::add(&service.counters.corrupt_found, 1);
                        if corrupt.send(hash).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot verify blob {}: {e}", to_hex(&hash)),
            }
        }
    }
}

/// Where the scrub is and the bytes it may still hash.
#[derive(Debug, Default)]
struct ScrubBudget {
    /// The last blob verified; the next round goes on after it.
    cursor: Option<Hash>,
    /// Bytes that may be hashed; grows by the per-round budget up to the largest blob, so
    /// every blob is verified in time.
    credit: u64,
}

impl ScrubBudget {
    /// The blobs of `sizes` to verify this round, in order, within the credit after adding
    /// `per_round`: each at most once a round, however small. (A round used to go round
    /// the store until the credit ran out: a node holding a few kilobytes re-hashed them
    /// thousands of times a round, and ten such processes on two cores starved the rest.)
    fn round(&mut self, sizes: &BTreeMap<Hash, u64>, per_round: u64) -> Vec<Hash> {
        let largest = sizes.values().copied().max().unwrap_or(0);
        self.credit = (self.credit + per_round).min(largest.max(per_round));
        // From after the cursor to the end, then from the start up to the cursor: one pass.
        let start = self.cursor;
        let after = start.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let order = sizes.range((after, std::ops::Bound::Unbounded)).chain(
            sizes
                .iter()
                .take_while(move |(h, _)| start.is_some_and(|c| **h <= c)),
        );
        let mut chosen = Vec::new();
        for (hash, size) in order {
            if *size > self.credit {
                break;
            }
            self.credit -= size;
            self.cursor = Some(*hash);
            chosen.push(*hash);
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u8) -> Hash {
        [i; 32]
    }

    #[test]
    fn a_scrub_round_verifies_each_blob_at_most_once_within_its_budget() {
        // Tiny blobs: a budget of a million bytes still verifies each once a round.
        let tiny: BTreeMap<Hash, u64> = [(hash(1), 0), (hash(2), 2), (hash(3), 1000)].into();
        let mut budget = ScrubBudget::default();
        assert_eq!(
            budget.round(&tiny, 1_000_000),
            vec![hash(1), hash(2), hash(3)]
        );
        assert_eq!(
            budget.round(&tiny, 1_000_000),
            vec![hash(1), hash(2), hash(3)]
        );
        let empty: BTreeMap<Hash, u64> = [(hash(1), 0), (hash(2), 0)].into();
        assert_eq!(ScrubBudget::default().round(&empty, 10).len(), 2);
        // A blob larger than a round's budget waits for the credit to grow, then goes on
        // from where the last round stopped.
        let mixed: BTreeMap<Hash, u64> = [(hash(1), 10), (hash(2), 100), (hash(3), 10)].into();
        let mut budget = ScrubBudget::default();
        assert_eq!(budget.round(&mixed, 40), vec![hash(1)]);
        assert_eq!(budget.round(&mixed, 40), Vec::<Hash>::new());
        assert_eq!(budget.round(&mixed, 40), vec![hash(2)]);
        // The rest of the budget goes on past the end of the store, round to the start.
        assert_eq!(budget.round(&mixed, 40), vec![hash(3), hash(1)]);
    }
}
