//! Leader choice by rendezvous hashing: every member ranks a name's holders the same way
//! without talking, so at most one live holder leads its repair.

use crate::id::NodeId;

/// Rendezvous rank of `id` for `name`: BLAKE3(UTF-8 name ‖ id bytes) (for a PeerId, its
/// multihash bytes), compared as bytes; higher ranks first. The same function as the node's
/// `files::repair::rank`, so old and new nodes agree on leaders.
pub fn rank<I: NodeId>(name: &str, id: &I) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(&id.to_bytes());
    *hasher.finalize().as_bytes()
}

/// The leader among `candidates`: the one ranked highest for `name`.
pub fn leader<'a, I: NodeId>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a I>,
) -> Option<&'a I> {
    candidates.into_iter().max_by_key(|id| rank(name, *id))
}

/// `ids` sorted by rank for `name`, highest first (the ones a trim keeps come first).
pub fn by_rank<I: NodeId>(name: &str, mut ids: Vec<I>) -> Vec<I> {
    ids.sort_by_cached_key(|id| std::cmp::Reverse(rank(name, id)));
    ids
}
