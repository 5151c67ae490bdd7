//! The file tuples of one group: fresh tuples are announced by fingerprint (receivers pull
//! the ones they lack), and a bucket digest lets anti-entropy find what gossip missed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::Rng;

use crate::Millis;
use crate::id::NodeId;
use crate::limits::SYNC_BUCKETS;
use crate::lookup_map::{LookupMap, lookup_map};
use crate::tuple::{FileTuple, TupleError};

/// Key of a tuple: the name's 64-bit fingerprint (first, so that a sync bucket is a key range),
/// then the name.
pub type TupleKey = (u64, Arc<str>);

/// Bucket of a name fingerprint: its top six bits.
pub fn bucket_of(fp: u64) -> usize {
    (fp >> 58) as usize
}

fn mix(mut x: u64) -> u64 {
    // SplitMix64 finaliser: spreads every input bit over the output.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The fingerprint of a tuple: name fingerprint, version, holder-set epoch, tombstone flag
/// and holder set mixed into 64 bits. It is what fresh-tuple announcements carry and what the
/// sync buckets XOR together. The holders are in it because two holder sets of one epoch
/// merge by union (a re-add, or two leaders during a split): were they left out, gossip and
/// anti-entropy would take the two sets for one and never bring them together.
pub fn tuple_fingerprint<I: NodeId>(fp: u64, tuple: &FileTuple<I>) -> u64 {
    let mut hash8 = [0u8; 8];
    hash8.copy_from_slice(&tuple.version.blake3[..8]);
    let rewrite = (u64::from(tuple.epoch) << 1) | u64::from(tuple.deleted);
    let rewrite = if rewrite == 0 { 0 } else { mix(rewrite) };
    let holders = holders_digest(&tuple.holders);
    mix(fp ^ mix(tuple.version.lamport ^ mix(u64::from_le_bytes(hash8) ^ rewrite ^ holders)))
}

/// The XOR over `holders` of the first 8 bytes (little-endian) of BLAKE3 of each one's
/// canonical bytes: the same for a set in any order.
pub fn holders_digest<I: NodeId>(holders: &[I]) -> u64 {
    holders.iter().fold(0, |digest, holder| {
        let hash = blake3::hash(&holder.to_bytes());
        let mut first8 = [0u8; 8];
        first8.copy_from_slice(&hash.as_bytes()[..8]);
        digest ^ u64::from_le_bytes(first8)
    })
}

/// A tuple waiting to be sent in rations.
struct Fresh {
    key: TupleKey,
    rounds_left: u8,
}

/// Most tuples queued as fresh; beyond it, anti-entropy carries them.
const MAX_FRESH: usize = 4096;

/// The tuples of one group.
pub struct TupleStore<I> {
    tuples: BTreeMap<TupleKey, Arc<FileTuple<I>>>,
    by_fingerprint: LookupMap<u64, TupleKey>,
    wanted: LookupMap<u64, Millis>,
    buckets: [u64; SYNC_BUCKETS],
    fresh: VecDeque<Fresh>,
    max_tuples: usize,
    sweep_cursor: Option<TupleKey>,
    /// Holders may have left since the last full pass: keep sweeping until one completes.
    sweep_pending: bool,
    /// Holders left while a pass was under way: one more full pass after it.
    sweep_again: bool,
    /// Tuples none of whose holders was present at the last look, and since when.
    orphaned: BTreeMap<TupleKey, Millis>,
    /// Orphans dropped within the last TTL (oldest first), so that a member whose own
    /// timer started later cannot hand the same tuple back by gossip or sync and keep it
    /// circulating for ever: [`was_dropped`](Self::was_dropped).
    dropped: VecDeque<(Millis, TupleKey)>,
    dropped_keys: BTreeSet<TupleKey>,
    /// The empty name, the smallest name of a fingerprint: lookups by (fingerprint, name)
    /// search from it without allocating a key.
    no_name: Arc<str>,
}

/// What merging a tuple did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The name was new here.
    Inserted,
    /// A newer version or more holders.
    Updated,
    /// Nothing new.
    Unchanged,
}

impl<I: NodeId> TupleStore<I> {
    /// An empty store holding at most `max_tuples`; `hash_seed` keys its lookup maps.
    pub fn new(max_tuples: usize, hash_seed: u64) -> Self {
        Self {
            tuples: BTreeMap::new(),
            by_fingerprint: lookup_map(hash_seed),
            wanted: lookup_map(hash_seed),
            no_name: Arc::from(""),
            buckets: [0; SYNC_BUCKETS],
            fresh: VecDeque::new(),
            max_tuples,
            sweep_cursor: None,
            sweep_pending: false,
            sweep_again: false,
            orphaned: BTreeMap::new(),
            dropped: VecDeque::new(),
            dropped_keys: BTreeSet::new(),
        }
    }

    /// Number of tuples.
    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }

    /// The tuple of `name` (whose fingerprint is `fp`), if known.
    pub fn get(&self, fp: u64, name: &str) -> Option<&Arc<FileTuple<I>>> {
        // Names of one fingerprint are few (usually one): scan them from the smallest key.
        self.tuples
            .range((fp, self.no_name.clone())..)
            .take_while(|((f, _), _)| *f == fp)
            .find(|((_, n), _)| &**n == name)
            .map(|(_, tuple)| tuple)
    }

    /// All tuples, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<FileTuple<I>>> {
        self.tuples.values()
    }

    /// At most `limit` tuples in key order (the name's fingerprint, then the name) after the
    /// key `after` (from the start when `None`; the key need not be stored), and whether more
    /// follow. A range of the ordered map: a page costs O(log n + limit) however many tuples
    /// the store holds.
    pub fn page_after(
        &self,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> (Vec<&Arc<FileTuple<I>>>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some((fp, name)) => Bound::Excluded((fp, Arc::<str>::from(name))),
            None => Bound::Unbounded,
        };
        let mut page: Vec<&Arc<FileTuple<I>>> = self
            .tuples
            .range((start, Bound::Unbounded))
            .map(|(_, tuple)| tuple)
            .take(limit.saturating_add(1))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Merges a checked tuple whose name has fingerprint `fp`; a change makes it fresh for
    /// `fresh_rounds` rounds.
    pub fn merge(
        &mut self,
        fp: u64,
        tuple: &Arc<FileTuple<I>>,
        fresh_rounds: u8,
    ) -> Result<Merged, TupleError> {
        let key: TupleKey = (fp, tuple.name.clone());
        let bucket = bucket_of(fp);
        let merged = match self.tuples.get_mut(&key) {
            Some(current) => {
                if !current.merge_changes(tuple) {
                    return Ok(Merged::Unchanged);
                }
                let before = tuple_fingerprint(fp, current);
                let mut updated = FileTuple::clone(current);
                if !updated.merge(tuple) {
                    return Ok(Merged::Unchanged);
                }
                let after = tuple_fingerprint(fp, &updated);
                self.buckets[bucket] ^= before ^ after;
                *current = Arc::new(updated);
                self.by_fingerprint.remove(&before);
                self.by_fingerprint.insert(after, key.clone());
                Merged::Updated
            }
            None => {
                if self.tuples.len() >= self.max_tuples {
                    return Err(TupleError::StoreFull(self.max_tuples));
                }
                let fingerprint = tuple_fingerprint(fp, tuple);
                self.buckets[bucket] ^= fingerprint;
                self.tuples.insert(key.clone(), tuple.clone());
                self.by_fingerprint.insert(fingerprint, key.clone());
                Merged::Inserted
            }
        };
        if self.fresh.len() < MAX_FRESH {
            self.fresh.push_back(Fresh {
                key,
                rounds_left: fresh_rounds,
            });
        }
        Ok(merged)
    }

    fn remove(&mut self, key: &TupleKey) {
        self.orphaned.remove(key);
        if let Some(tuple) = self.tuples.remove(key) {
            let fingerprint = tuple_fingerprint(key.0, &tuple);
            self.buckets[bucket_of(key.0)] ^= fingerprint;
            self.by_fingerprint.remove(&fingerprint);
        }
    }

    /// Fingerprints of up to `ration` fresh tuples to announce this round; each announcement
    /// spends one of the tuple's fresh rounds.
    pub fn fresh_ration(&mut self, ration: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut requeue = Vec::new();
        while out.len() < ration {
            let Some(mut fresh) = self.fresh.pop_front() else {
                break;
            };
            let Some(tuple) = self.tuples.get(&fresh.key) else {
                continue;
            };
            let fingerprint = tuple_fingerprint(fresh.key.0, tuple);
            if out.contains(&fingerprint) {
                requeue.push(fresh);
                continue;
            }
            out.push(fingerprint);
            fresh.rounds_left -= 1;
            if fresh.rounds_left > 0 {
                requeue.push(fresh);
            }
        }
        self.fresh.extend(requeue);
        out
    }

    /// Of the announced `fingerprints`, those this node lacks and has not asked for since
    /// `now - retry_after`; they count as asked for now.
    pub fn to_pull(&mut self, fingerprints: &[u64], now: Millis, retry_after: Millis) -> Vec<u64> {
        let mut out = Vec::new();
        for fingerprint in fingerprints {
            if self.by_fingerprint.contains_key(fingerprint) {
                continue;
            }
            let recently = self
                .wanted
                .get(fingerprint)
                .is_some_and(|asked| now.saturating_sub(*asked) < retry_after);
            if recently || self.wanted.len() >= MAX_FRESH {
                continue;
            }
            self.wanted.insert(*fingerprint, now);
            out.push(*fingerprint);
        }
        out
    }

    /// Forgets pulls older than `retry_after` (once a round, not per message).
    pub fn expire_pulls(&mut self, now: Millis, retry_after: Millis) {
        self.wanted
            .retain(|_, asked| now.saturating_sub(*asked) < retry_after);
    }

    /// The tuples with these fingerprints that this node holds.
    pub fn by_fingerprints(&self, fingerprints: &[u64]) -> Vec<Arc<FileTuple<I>>> {
        fingerprints
            .iter()
            .filter_map(|f| self.by_fingerprint.get(f))
            .filter_map(|key| self.tuples.get(key).cloned())
            .collect()
    }

    /// Some holders left the view: the next sweeps make one full pass.
    pub fn holders_left(&mut self) {
        self.sweep_again |= self.sweep_cursor.is_some();
        self.sweep_pending = true;
    }

    /// Whether the tuple of `name` (fingerprint `fp`) was dropped as an orphan within the last
    /// TTL: a copy of it that still lists no present holder is not taken in again.
    pub fn was_dropped(&self, fp: u64, name: &Arc<str>) -> bool {
        !self.dropped_keys.is_empty() && self.dropped_keys.contains(&(fp, name.clone()))
    }

    /// Drops tuples none of whose holders has been present for `ttl` ms at `now` (at once
    /// when `ttl` is 0), looking at no more than `budget` tuples (round-robin over calls),
    /// while a pass is due: since holders left, and as long as such tuples are kept. Returns
    /// how many were dropped.
    pub fn sweep(
        &mut self,
        budget: usize,
        now: Millis,
        ttl: Millis,
        present: impl Fn(&I) -> bool,
    ) -> usize {
        while let Some((at, key)) = self.dropped.front()
            && now.saturating_sub(*at) >= ttl
        {
            self.dropped_keys.remove(key);
            self.dropped.pop_front();
        }
        if !self.sweep_pending {
            return 0;
        }
        let start = self.sweep_cursor.take();
        let mut visited = 0;
        let mut dead = Vec::new();
        let mut last = None;
        let range = match &start {
            Some(key) => self.tuples.range((
                std::ops::Bound::Excluded(key.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => self.tuples.range(..),
        };
        for (key, tuple) in range {
            if visited == budget {
                break;
            }
            visited += 1;
            last = Some(key.clone());
            if tuple.holders.iter().any(&present) {
                self.orphaned.remove(key);
                continue;
            }
            let since = *self.orphaned.entry(key.clone()).or_insert(now);
            if now.saturating_sub(since) >= ttl {
                dead.push(key.clone());
            }
        }
        // Stopping early leaves the cursor for the next call; reaching the end ends the pass.
        if visited == budget {
            self.sweep_cursor = last;
        } else {
            self.sweep_cursor = None;
            self.sweep_pending = std::mem::take(&mut self.sweep_again);
        }
        for key in &dead {
            self.remove(key);
            if ttl > 0 && self.dropped_keys.insert(key.clone()) {
                self.dropped.push_back((now, key.clone()));
                if self.dropped.len() > self.max_tuples
                    && let Some((_, oldest)) = self.dropped.pop_front()
                {
                    self.dropped_keys.remove(&oldest);
                }
            }
        }
        // Kept orphans are looked at again until they expire or a holder is back.
        self.sweep_pending |= !self.orphaned.is_empty();
        dead.len()
    }

    /// Drops the tuples whose name fingerprint `keep` refuses (the names left the group when
    /// it split); returns how many.
    pub fn retain_fingerprints(&mut self, keep: impl Fn(u64) -> bool) -> usize {
        let gone: Vec<TupleKey> = self
            .tuples
            .keys()
            .filter(|(fp, _)| !keep(*fp))
            .cloned()
            .collect();
        for key in &gone {
            self.remove(key);
        }
        gone.len()
    }

    /// The anti-entropy digest: per bucket, the XOR of the fingerprints of its tuples.
    pub fn bucket_digest(&self) -> Vec<u64> {
        self.buckets.to_vec()
    }

    /// Buckets whose fingerprint differs from `theirs`.
    pub fn differing_buckets(&self, theirs: &[u64]) -> Vec<u8> {
        (0..SYNC_BUCKETS)
            .filter(|&b| theirs.get(b).copied().unwrap_or(0) != self.buckets[b])
            .map(|b| b as u8)
            .collect()
    }

    /// Tuples of the given buckets, at most `limit`, starting at a random bucket so that
    /// repeated exchanges cover everything. The flag says whether all of them fit.
    pub fn tuples_in_buckets(
        &self,
        buckets: &[u8],
        limit: usize,
        rng: &mut impl Rng,
    ) -> (Vec<Arc<FileTuple<I>>>, bool) {
        let mut out = Vec::new();
        if buckets.is_empty() {
            return (out, true);
        }
        let start = rng.random_range(0..buckets.len());
        for step in 0..buckets.len() {
            let bucket = u64::from(buckets[(start + step) % buckets.len()]);
            let low = bucket << 58;
            let range = self
                .tuples
                .range((low, self.no_name.clone())..)
                .take_while(|((fp, _), _)| (*fp >> 58) == bucket);
            for (_, tuple) in range {
                if out.len() == limit {
                    return (out, false);
                }
                out.push(tuple.clone());
            }
        }
        (out, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{SimId, name_facts};
    use crate::tuple::Version;
    use rand::SeedableRng;

    fn tuple(name: &str, lamport: u64, holders: Vec<u32>) -> (u64, Arc<FileTuple<SimId>>) {
        let (_, fp) = name_facts(name, 1);
        let t = FileTuple {
            name: name.into(),
            version: Version {
                lamport,
                blake3: [lamport as u8; 32],
            },
            size: 1,
            holders: holders.into_iter().map(SimId).collect(),
            epoch: 0,
            deleted: false,
            auth: None,
        };
        (fp, Arc::new(t))
    }

    #[test]
    fn pages_walk_every_tuple_once_in_key_order_even_past_a_removed_cursor() {
        let mut store = TupleStore::new(1000, 0);
        for i in 0..100 {
            let (fp, t) = tuple(&format!("n{i}"), 1, vec![1]);
            store.merge(fp, &t, 0).expect("room");
        }
        let mut walked: Vec<(u64, Arc<str>)> = Vec::new();
        let mut after: Option<(u64, Arc<str>)> = None;
        loop {
            let (page, more) = store.page_after(after.as_ref().map(|(f, n)| (*f, &**n)), 7);
            assert!(page.len() <= 7);
            let keys: Vec<(u64, Arc<str>)> = page
                .iter()
                .map(|t| (name_facts(&t.name, 1).1, t.name.clone()))
                .collect();
            walked.extend(keys.iter().cloned());
            if !more {
                break;
            }
            after = keys.last().cloned();
            // The cursor's own tuple goes between pages: the walk goes on after its place.
            if walked.len() == 21
                && let Some(key) = &after
            {
                store.remove(key);
            }
        }
        let mut expected: Vec<(u64, Arc<str>)> = store.tuples.keys().cloned().collect();
        let removed = walked[20].clone();
        expected.push(removed);
        expected.sort();
        assert_eq!(walked, expected, "each tuple once, in key order");
        assert_eq!(store.page_after(None, 0), (Vec::new(), true));
    }

    #[test]
    fn digests_match_after_merging_in_any_order() {
        let mut a = TupleStore::new(100, 0);
        let mut b = TupleStore::new(100, 0);
        let items: Vec<_> = (0..20)
            .map(|i| tuple(&format!("f{i}"), i % 3, vec![i as u32]))
            .collect();
        for (fp, t) in &items {
            a.merge(*fp, t, 1).unwrap();
        }
        for (fp, t) in items.iter().rev() {
            b.merge(*fp, t, 1).unwrap();
        }
        assert_eq!(a.bucket_digest(), b.bucket_digest());
        let (fp, newer) = tuple("f3", 9, vec![7]);
        assert_eq!(a.merge(fp, &newer, 1), Ok(Merged::Updated));
        let differing = a.differing_buckets(&b.bucket_digest());
        assert_eq!(differing, vec![bucket_of(fp) as u8]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (sent, complete) = a.tuples_in_buckets(&differing, 64, &mut rng);
        assert!(complete);
        for t in &sent {
            let (_, fp) = name_facts(&t.name, 1);
            b.merge(fp, t, 1).unwrap();
        }
        assert_eq!(a.bucket_digest(), b.bucket_digest());
    }

    #[test]
    fn sweep_drops_tuples_without_present_holders_and_full_store_refuses() {
        let mut store = TupleStore::new(3, 0);
        for i in 0..3u32 {
            let (fp, t) = tuple(&format!("n{i}"), 1, vec![i]);
            store.merge(fp, &t, 1).unwrap();
        }
        let (fp, t) = tuple("overflow", 1, vec![0]);
        assert_eq!(store.merge(fp, &t, 1), Err(TupleError::StoreFull(3)));
        // No holder left yet: nothing to sweep.
        assert_eq!(store.sweep(10, 0, 0, |holder| holder.0 != 1), 0);
        assert_eq!(store.len(), 3);
        store.holders_left();
        let mut dropped = 0;
        for _ in 0..3 {
            dropped += store.sweep(1, 0, 0, |holder| holder.0 != 1);
        }
        assert_eq!(dropped, 1);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_tuple_whose_holders_left_is_kept_for_its_ttl_unless_a_holder_returns() {
        let mut store = TupleStore::new(10, 0);
        let (fp, gone) = tuple("gone", 1, vec![1]);
        store.merge(fp, &gone, 1).unwrap();
        let (fp, back) = tuple("back", 1, vec![2]);
        store.merge(fp, &back, 1).unwrap();
        store.holders_left();
        // Holders 1 and 2 left at 1,000: both tuples are kept, not dropped.
        assert_eq!(store.sweep(10, 1_000, 5_000, |_| false), 0);
        assert_eq!(store.len(), 2);
        // Holder 2 is back before the TTL: its tuple is no orphan any more.
        assert_eq!(store.sweep(10, 3_000, 5_000, |h| h.0 == 2), 0);
        // At 6,000 the orphan of holder 1 has been kept 5 s: dropped; the other stays, even
        // though its holder is gone again (its clock restarted).
        assert_eq!(store.sweep(10, 6_000, 5_000, |_| false), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.sweep(10, 10_000, 5_000, |_| false), 0);
        assert_eq!(store.sweep(10, 11_000, 5_000, |_| false), 1);
        assert_eq!(store.len(), 0);
        // A dropped orphan is remembered for a TTL, so gossip cannot bring it back, then
        // forgotten.
        assert!(store.was_dropped(fp, &back.name));
        assert_eq!(store.sweep(10, 16_000, 5_000, |_| false), 0);
        assert!(!store.was_dropped(fp, &back.name));
    }

    #[test]
    fn fresh_ration_sends_each_tuple_for_its_rounds() {
        let mut store = TupleStore::new(10, 0);
        for i in 0..3 {
            let (fp, t) = tuple(&format!("n{i}"), 1, vec![0]);
            store.merge(fp, &t, 2).unwrap();
        }
        let mut sent = Vec::new();
        for _ in 0..10 {
            sent.extend(store.fresh_ration(2));
        }
        assert_eq!(sent.len(), 6);
        // Every announced fingerprint resolves to a tuple; a peer lacking them pulls each once.
        assert_eq!(store.by_fingerprints(&sent).len(), 6);
        let mut empty: TupleStore<SimId> = TupleStore::new(10, 0);
        assert_eq!(empty.to_pull(&sent[..3], 0, 1000).len(), 3);
        assert!(empty.to_pull(&sent[..3], 500, 1000).is_empty());
        assert_eq!(empty.to_pull(&sent[..3], 1500, 1000).len(), 3);
        assert!(store.to_pull(&sent, 0, 1000).is_empty());
    }

    #[test]
    fn two_holder_sets_of_one_epoch_reach_each_other_and_become_their_union() {
        let (fp, first) = tuple("split/f", 1, vec![1, 2, 3]);
        let (_, second) = tuple("split/f", 1, vec![3, 4, 5]);
        assert_ne!(
            tuple_fingerprint(fp, &first),
            tuple_fingerprint(fp, &second),
            "sets of one epoch differ in their fingerprints"
        );
        let mut a = TupleStore::new(10, 0);
        let mut b = TupleStore::new(10, 0);
        a.merge(fp, &first, 2).unwrap();
        b.merge(fp, &second, 2).unwrap();
        // Anti-entropy sees the difference.
        assert_eq!(a.differing_buckets(&b.bucket_digest()).len(), 1);
        // A announces; B lacks that fingerprint, pulls it and merges it: the union.
        let announced = a.fresh_ration(4);
        let wanted = b.to_pull(&announced, 0, 1000);
        assert_eq!(wanted.len(), 1);
        for t in a.by_fingerprints(&wanted) {
            b.merge(fp, &t, 2).unwrap();
        }
        let union: Vec<SimId> = [1, 2, 3, 4, 5].into_iter().map(SimId).collect();
        assert_eq!(b.get(fp, "split/f").unwrap().holders, union);
        // B's union is fresh news; A pulls it back and both agree.
        let announced = b.fresh_ration(4);
        let wanted = a.to_pull(&announced, 0, 1000);
        for t in b.by_fingerprints(&wanted) {
            a.merge(fp, &t, 2).unwrap();
        }
        assert_eq!(a.get(fp, "split/f").unwrap().holders, union);
        assert!(a.differing_buckets(&b.bucket_digest()).is_empty());
        // The digest of a holder set does not depend on its order.
        let reversed: Vec<SimId> = union.iter().rev().copied().collect();
        assert_eq!(holders_digest(&union), holders_digest(&reversed));
    }
}
