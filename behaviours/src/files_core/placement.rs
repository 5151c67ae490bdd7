//! Where copies go: power-of-two choices on the free space members gossip.

use rand::Rng;

use super::membership::Membership;
use crate::id::NodeId;

/// Chooses up to `count` live members of the own group (this node included, with `own_free`
/// bytes free) that have at least `size` bytes free and are not in `exclude`: each pick
/// draws two candidates at random and takes the one with more free space (power of two
/// choices), without replacement.
pub fn place<I: NodeId>(
    rng: &mut impl Rng,
    me: &I,
    own_free: u64,
    view: &Membership<I>,
    size: u64,
    exclude: &[I],
    count: usize,
) -> Vec<I> {
    let mut candidates: Vec<(&I, u64)> = view
        .live()
        .map(|m| (&m.id, m.free_space))
        .chain(std::iter::once((me, own_free)))
        .filter(|(id, free)| *free >= size && !exclude.contains(id))
        .collect();
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count && !candidates.is_empty() {
        let a = rng.random_range(0..candidates.len());
        let b = rng.random_range(0..candidates.len());
        let pick = if candidates[b].1 > candidates[a].1 {
            b
        } else {
            a
        };
        chosen.push(candidates.swap_remove(pick).0.clone());
    }
    chosen
}
