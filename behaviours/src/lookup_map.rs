//! Hash maps for point lookups inside the core.
//!
//! The core never iterates a hash map in an order that could reach its outputs (that would
//! break reproducible runs); it uses these only to find things by key. They hash with
//! foldhash keyed by a per-node seed: fast (the simulator spends much of its time in these
//! lookups), the same in every run with the same seed, and, on a real node whose seed is
//! random, not open to keys ground to collide (names and PeerIds are chosen by others).

use std::collections::HashMap;

/// The hasher of [`LookupMap`].
pub type LookupState = foldhash::fast::FixedState;

/// A map used only for point lookups (and order-independent `retain`).
pub type LookupMap<K, V> = HashMap<K, V, LookupState>;

/// An empty [`LookupMap`] hashing with `seed`.
pub fn lookup_map<K, V>(seed: u64) -> LookupMap<K, V> {
    HashMap::with_hasher(LookupState::with_seed(seed))
}
