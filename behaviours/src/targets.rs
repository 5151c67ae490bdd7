//! Spatial gossip target choice (Kelips): some targets uniformly at random (at least one), the
//! others with probability ∝ 1/rtt², RTT floored at 1 ms. A peer without an RTT sample weighs as the mean
//! of the sampled ones (as uniform when nobody is sampled).

use rand::Rng;

/// RTT floor, in microseconds.
pub const RTT_FLOOR_US: u32 = 1000;

/// Picks up to `count` distinct indexes of `rtts` (one RTT per candidate, `None` when not
/// sampled): `uniform` of them (at least one) uniformly, the rest weighted by 1/rtt² without
/// replacement.
pub fn choose(
    rtts: &[Option<u32>],
    count: usize,
    uniform: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let n = rtts.len();
    if n == 0 || count == 0 {
        return Vec::new();
    }
    if count >= n {
        return (0..n).collect();
    }
    let weight = |rtt: u32| {
        let ms = f64::from(rtt.max(RTT_FLOOR_US)) / 1000.0;
        1.0 / (ms * ms)
    };
    let (sum, sampled) = rtts
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, c), &rtt| (s + weight(rtt), c + 1));
    let unknown = if sampled == 0 {
        1.0
    } else {
        sum / sampled as f64
    };
    let weights: Vec<f64> = rtts.iter().map(|r| r.map_or(unknown, weight)).collect();

    let uniform = uniform.clamp(1, count);
    let mut chosen: Vec<usize> = rand::seq::index::sample(rng, n, uniform).into_vec();
    // Efraimidis–Spirakis: keep the largest u^(1/w), i.e. ln(u)/w, for weighted sampling
    // without replacement in one pass.
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .filter(|&(i, _)| !chosen.contains(&i))
        .map(|(i, &w)| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.ln() / w, i)
        })
        .collect();
    let take = count - uniform;
    if take == 0 {
        return chosen;
    }
    let pivot = take.saturating_sub(1).min(keyed.len() - 1);
    keyed.select_nth_unstable_by(pivot, |a, b| b.0.total_cmp(&a.0));
    chosen.extend(keyed[..take].iter().map(|&(_, i)| i));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn picks_distinct_targets_and_prefers_near_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Index 0 is 1 ms away, the other 9 are 100 ms away: weight ratio 10 000.
        let mut rtts = vec![Some(1_000)];
        rtts.extend(std::iter::repeat_n(Some(100_000), 9));
        let mut near = 0;
        for _ in 0..1000 {
            let picked = choose(&rtts, 2, 1, &mut rng);
            assert_eq!(picked.len(), 2);
            assert_ne!(picked[0], picked[1]);
            near += usize::from(picked.contains(&0));
        }
        // Uniform pair choice would include index 0 in 20% of rounds.
        assert!(near > 950, "near peer chosen in {near} of 1000 rounds");
    }

    #[test]
    fn unsampled_peers_weigh_as_uniform() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let rtts = vec![None; 10];
        let mut hits = [0usize; 10];
        for _ in 0..10_000 {
            for i in choose(&rtts, 3, 1, &mut rng) {
                hits[i] += 1;
            }
        }
        assert!(hits.iter().all(|&h| (2500..3500).contains(&h)), "{hits:?}");
        assert_eq!(choose(&rtts, 20, 1, &mut rng).len(), 10);
        assert_eq!(choose(&rtts, 3, 3, &mut rng).len(), 3);
        assert!(choose(&[], 3, 1, &mut rng).is_empty());
    }
}
