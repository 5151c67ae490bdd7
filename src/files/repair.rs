//! Keeping R copies: every repair period a node looks at the names it holds.
//!
//! * A holder without the bytes (a corrupt copy was deleted, or a copy was never made)
//!   fetches them from another live holder.
//! * One leader per name, the live holder ranked first by rendezvous hash (BLAKE3 of name and
//!   PeerId), restores R copies when holders failed and trims copies beyond R, publishing the
//!   exact new holder set under the next epoch.
//! * Blobs that no held tuple names any more are deleted once they stayed unnamed for the
//!   orphan grace period.
//! * Held blobs are re-hashed round-robin, at most `scrub_bytes_per_s` (a scrub); a corrupt
//!   copy is deleted and fetched again from another holder.
//!
//! Holder sets change and unnamed blobs are deleted only while the node is settled: joined,
//! awake and hearing its network for a while ([`super::health`]). A node that just restarted
//! or was paused would otherwise act on a view in which every other holder looks dead.
//!
//! At a clean stop, [`hand_off`] copies every held name to another member first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::handle::HeldTuple;
use super::health::LocalHealth;
use super::service::{FilesCounters, FilesService, open_stream};
use super::wire::{
    BLOB_PROTOCOL, BlobRequest, BlobResponse, ChunkReader, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    WireError, read_message, write_message,
};
use crate::blobs::{Hash, to_hex};

/// Rendezvous rank of `peer` for `name`: the highest ranked live holder leads the repair.
pub fn rank(name: &str, peer: &PeerId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(&peer.to_bytes());
    *hasher.finalize().as_bytes()
}

/// Settings of the repair loop (from the `[files]` configuration).
#[derive(Debug, Clone, Copy)]
pub struct RepairConfig {
    /// How often the held names are checked.
    pub period: Duration,
    /// Repairs at once.
    pub max_repairs: usize,
    /// Unnamed blobs are deleted after this.
    pub orphan_grace: Duration,
    /// Bytes of stored blobs re-hashed per second at most.
    pub scrub_bytes_per_s: u64,
}

/// Runs the repair loop until the node stops.
pub async fn run(service: Arc<FilesService>, config: RepairConfig) {
    let RepairConfig {
        period,
        max_repairs,
        orphan_grace,
        scrub_bytes_per_s,
    } = config;
    let mut scrub = Scrubber {
        cursor: None,
        credit: 0,
        per_round: (scrub_bytes_per_s as u128 * period.as_millis() / 1000) as u64,
    };
    let repairs = Arc::new(Semaphore::new(max_repairs));
    let mut orphans: BTreeMap<Hash, Instant> = BTreeMap::new();
    let busy: Arc<std::sync::Mutex<BTreeSet<Arc<str>>>> = Default::default();
    let mut tick = tokio::time::interval(period);
    let mut last_started: Option<Arc<str>> = None;
    let mut health = LocalHealth::new(period);
    let mut was_settled = false;
    loop {
        tick.tick().await;
        let Ok(node) = service.handle.health().await else {
            return;
        };
        let Ok(held) = service.handle.held().await else {
            return;
        };
        // Only a settled node acts on its view (see `health`): before that, holder sets are
        // left alone and no unnamed blob is deleted.
        let settled = health.observe(Instant::now(), node);
        match (&settled, was_settled) {
            (Ok(()), false) => tracing::info!("repair settled: acting on the group view"),
            (Err(why), true) => {
                tracing::info!("repair holds back until the view is fresh again: {why}");
                FilesCounters::add(&service.counters.repair_holds, 1);
            }
            _ => {}
        }
        was_settled = settled.is_ok();
        remember_versions(&service, &held).await;
        if was_settled {
            collect_orphans(&service, &held, &mut orphans, orphan_grace).await;
        } else {
            // Unnamed blobs wait a whole grace period after the node settles.
            orphans.clear();
        }
        scrub.round(&service, &held).await;
        // Only names that need work take a repair slot, starting after the last one served
        // so that no name waits behind others forever.
        let mut work = Vec::new();
        for item in held {
            if needs_work(&service, &item, was_settled).await {
                work.push(item);
            }
        }
        let start = work
            .iter()
            .position(|i| last_started.as_ref().is_some_and(|l| i.tuple.name > *l))
            .unwrap_or(0);
        work.rotate_left(start);
        for item in work {
            let name = item.tuple.name.clone();
            if busy.lock().map(|b| b.contains(&name)).unwrap_or(true) {
                continue;
            }
            let Ok(permit) = repairs.clone().try_acquire_owned() else {
                break;
            };
            if let Ok(mut b) = busy.lock() {
                b.insert(name.clone());
            }
            last_started = Some(name.clone());
            let service = service.clone();
            let busy = busy.clone();
            let limit = service.timeouts.put_deadline + service.timeouts.io;
            let settled = was_settled;
            tokio::spawn(async move {
                let _permit = permit;
                let started = Instant::now();
                let repair = repair_one(&service, &item, settled);
                match tokio::time::timeout(limit, repair).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::info!("repair of {:?}: {e}", item.tuple.name),
                    Err(_) => tracing::warn!("repair of {:?} timed out", item.tuple.name),
                }
                let took = started.elapsed();
                if took > Duration::from_secs(1) {
                    tracing::info!("repair of {:?} took {took:?}", item.tuple.name);
                }
                if let Ok(mut b) = busy.lock() {
                    b.remove(&name);
                }
            });
        }
    }
}

/// Whether this node has something to do for `item`: fetch missing bytes, or, as its leader
/// and only when `settled`, change the holder set (too few or too many live holders, or
/// failed ones still listed).
async fn needs_work(service: &FilesService, item: &HeldTuple, settled: bool) -> bool {
    let tuple = &item.tuple;
    if !service.blobs.contains(&tuple.version.blake3).await {
        return true;
    }
    if !settled {
        return false;
    }
    let leader = item.live.iter().max_by_key(|p| rank(&tuple.name, p));
    leader == Some(&service.handle.me)
        && (item.live.len() != service.handle.replication || tuple.holders.len() != item.live.len())
}

async fn repair_one(service: &FilesService, item: &HeldTuple, settled: bool) -> Result<(), String> {
    let tuple = &item.tuple;
    let me = service.handle.me;
    let hash = tuple.version.blake3;
    if !service.blobs.contains(&hash).await {
        return fetch(service, tuple, &item.live).await;
    }
    if !settled {
        return Ok(());
    }
    let leader = item.live.iter().max_by_key(|p| rank(&tuple.name, p));
    if leader != Some(&me) {
        return Ok(());
    }
    let r = service.handle.replication.min(item.group_live);
    let mut live = item.live.clone();
    if live.len() > r {
        live.sort_by_key(|p| std::cmp::Reverse(rank(&tuple.name, p)));
        live.truncate(r);
        tracing::info!("trimming {:?} to {r} holders", tuple.name);
    } else if live.len() < r {
        let deadline = Instant::now() + service.timeouts.put_deadline;
        match service
            .copy_to(tuple, Vec::new(), r - live.len(), deadline)
            .await
        {
            Ok(copies) => live.extend(copies),
            Err(e) => {
                // Partial copies still count; the next round tries again.
                tracing::debug!("repair of {:?} incomplete: {e}", tuple.name);
            }
        }
    }
    let mut next: Vec<Peer> = live.into_iter().map(Peer).collect();
    next.sort();
    if next == tuple.holders {
        return Ok(());
    }
    tracing::info!(
        "{:?}: {} holders listed, {} after repair",
        tuple.name,
        tuple.holders.len(),
        next.len()
    );
    let updated = FileTuple {
        holders: next,
        epoch: tuple.epoch + 1,
        ..FileTuple::clone(tuple)
    };
    FilesCounters::add(&service.counters.holder_sets_published, 1);
    service
        .handle
        .publish(updated)
        .await
        .map_err(|e| e.to_string())?
}

/// Fetches a held tuple's bytes from another live holder.
async fn fetch(
    service: &FilesService,
    tuple: &FileTuple<Peer>,
    live: &[PeerId],
) -> Result<(), String> {
    let mut last = String::from("no other live holder");
    for peer in live.iter().filter(|p| **p != service.handle.me) {
        match fetch_from(service, *peer, tuple).await {
            Ok(Ok(())) => {
                tracing::info!("fetched {:?} from {peer}", tuple.name);
                FilesCounters::add(&service.counters.repairs_fetched, 1);
                return Ok(());
            }
            Ok(Err(reason)) => last = format!("{peer}: {reason}"),
            Err(e) => last = format!("{peer}: {e}"),
        }
    }
    Err(last)
}

async fn fetch_from(
    service: &FilesService,
    peer: PeerId,
    tuple: &FileTuple<Peer>,
) -> Result<Result<(), String>, WireError> {
    let io = service.timeouts.io;
    let hash = tuple.version.blake3;
    service.relay.check(peer, tuple.size)?;
    let mut stream = open_stream(&service.control, peer, BLOB_PROTOCOL, io).await?;
    write_message(
        &mut stream,
        &BlobRequest::Get { blake3: hash },
        MAX_REQUEST_BYTES,
        io,
    )
    .await?;
    let size = match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await? {
        BlobResponse::Sending { size } => size,
        BlobResponse::NotFound => return Ok(Err("not found".into())),
        BlobResponse::Refused { reason } => return Ok(Err(reason)),
        other => return Ok(Err(format!("unexpected answer {other:?}"))),
    };
    let mut writer = match service.blobs.create(size).await {
        Ok(writer) => writer,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut chunks = ChunkReader::new(size);
    while let Some(chunk) = chunks.next(&mut stream, io).await? {
        if let Err(e) = writer.write(chunk).await {
            return Ok(Err(e.to_string()));
        }
    }
    Ok(writer
        .finish(Some(hash))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()))
}

/// Re-hashes held blobs round-robin within a byte budget per round (a scrub); a corrupt
/// copy is deleted, and the next round fetches a good one from another holder.
struct Scrubber {
    cursor: Option<Hash>,
    /// Bytes that may be hashed now.
    credit: u64,
    /// Bytes added to the credit each round.
    per_round: u64,
}

impl Scrubber {
    async fn round(&mut self, service: &FilesService, held: &[HeldTuple]) {
        let sizes: BTreeMap<Hash, u64> = held
            .iter()
            .map(|h| (h.tuple.version.blake3, h.tuple.size))
            .collect();
        let largest = sizes.values().copied().max().unwrap_or(0);
        // The credit may grow up to the largest blob, so every blob is scrubbed in time.
        self.credit = (self.credit + self.per_round).min(largest.max(self.per_round));
        loop {
            let next = self
                .cursor
                .and_then(|a| {
                    sizes
                        .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                        .next()
                })
                .or_else(|| sizes.iter().next())
                .map(|(hash, size)| (*hash, *size));
            let Some((hash, size)) = next else { return };
            if size > self.credit {
                return;
            }
            self.credit -= size;
            self.cursor = Some(hash);
            match service.blobs.verify(&hash).await {
                Ok(true) => {}
                Ok(false) => {
                    if service.blobs.contains(&hash).await {
                        tracing::warn!("blob {} is corrupt on disk: deleted", to_hex(&hash));
                        FilesCounters::add(&service.counters.corrupt_found, 1);
                        let _ = service.blobs.remove(&hash).await;
                    }
                }
                Err(e) => tracing::warn!("cannot verify blob {}: {e}", to_hex(&hash)),
            }
            if sizes.len() == 1 || self.credit == 0 {
                return;
            }
        }
    }
}

/// Records every held version, drops versions too old to keep and deleted names, and persists
/// the list when it changed.
async fn remember_versions(service: &FilesService, held: &[HeldTuple]) {
    let names: Vec<String> = match service.kept.lock() {
        Ok(kept) => kept.names().cloned().collect(),
        Err(_) => return,
    };
    let Ok(newest) = service.handle.newest(names.clone()).await else {
        return;
    };
    let mut changed = false;
    if let Ok(mut kept) = service.kept.lock() {
        for (name, newest) in names.iter().zip(newest) {
            match newest {
                Some(n) if n.deleted => changed |= kept.forget(name),
                Some(n) => {
                    changed |= kept.prune(name, n.lamport);
                    if !n.held {
                        changed |= kept.forget_version(name, n.lamport);
                    }
                }
                None => {}
            }
        }
    }
    if changed {
        service.save_kept();
    }
    service.keep_versions(held.iter().map(|h| &*h.tuple));
}

async fn collect_orphans(
    service: &FilesService,
    held: &[HeldTuple],
    orphans: &mut BTreeMap<Hash, Instant>,
    grace: Duration,
) {
    let Ok(stored) = service.blobs.list().await else {
        return;
    };
    let mut named: BTreeSet<Hash> = held.iter().map(|h| h.tuple.version.blake3).collect();
    named.extend(service.kept.lock().map(|k| k.hashes()).unwrap_or_default());
    let now = Instant::now();
    orphans.retain(|hash, _| stored.contains(hash) && !named.contains(hash));
    for hash in stored {
        if named.contains(&hash) {
            continue;
        }
        let since = *orphans.entry(hash).or_insert(now);
        if now.duration_since(since) >= grace {
            tracing::info!("deleting unnamed blob {}", to_hex(&hash));
            if let Err(e) = service.blobs.remove(&hash).await {
                tracing::warn!("cannot delete blob {}: {e}", to_hex(&hash));
            }
            orphans.remove(&hash);
        }
    }
}

/// Before a clean stop: copies every held name to another member of the group and publishes
/// the holder set without this node, within `timeout`. The caller keeps the node running a
/// few gossip periods more so the new sets spread.
pub async fn hand_off(service: &FilesService, timeout: Duration) -> usize {
    let Ok(held) = service.handle.held().await else {
        return 0;
    };
    let deadline = Instant::now() + timeout;
    let me = Peer(service.handle.me);
    let mut handed = 0;
    for item in held {
        if Instant::now() >= deadline {
            break;
        }
        let tuple = &item.tuple;
        let copies = match service.copy_to(tuple, Vec::new(), 1, deadline).await {
            Ok(copies) => copies,
            Err(e) => {
                tracing::warn!("cannot hand off {:?}: {e}", tuple.name);
                continue;
            }
        };
        let mut holders: Vec<Peer> = item
            .live
            .iter()
            .copied()
            .map(Peer)
            .filter(|p| *p != me)
            .collect();
        holders.extend(copies.into_iter().map(Peer));
        let updated = FileTuple {
            holders,
            epoch: tuple.epoch + 1,
            ..FileTuple::clone(tuple)
        };
        if let Ok(Ok(())) = service.handle.publish(updated).await {
            handed += 1;
        }
    }
    handed
}
