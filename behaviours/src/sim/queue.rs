//! The simulator's event queue: a timing wheel of one bucket per virtual millisecond.
//!
//! Nearly every event is due within a second (deliveries within ~70 ms, timers within a
//! gossip period), so events go into the bucket of their millisecond in O(1) instead of a heap
//! of hundreds of thousands; the few due later wait in an ordered overflow until the wheel
//! reaches them. Events come out in (time, sequence) order, as a heap would give them.

use std::collections::BTreeMap;

use crate::Millis;

/// Milliseconds the wheel spans (a power of two).
const SPAN: Millis = 4096;

/// Events of type `E`, ordered by due time and then by the sequence number they were pushed
/// with.
pub(super) struct EventQueue<E> {
    buckets: Vec<Vec<(u64, E)>>,
    /// No event is due before this time; the wheel holds those due before `base + SPAN`.
    base: Millis,
    in_wheel: usize,
    overflow: BTreeMap<(Millis, u64), E>,
}

impl<E> EventQueue<E> {
    pub(super) fn new() -> Self {
        Self {
            buckets: (0..SPAN).map(|_| Vec::new()).collect(),
            base: 0,
            in_wheel: 0,
            overflow: BTreeMap::new(),
        }
    }

    fn bucket(&mut self, at: Millis) -> &mut Vec<(u64, E)> {
        &mut self.buckets[(at % SPAN) as usize]
    }

    /// Adds `event` due at `at` (not before the last time taken) with sequence number `seq`.
    pub(super) fn push(&mut self, at: Millis, seq: u64, event: E) {
        let at = at.max(self.base);
        if at < self.base + SPAN {
            self.bucket(at).push((seq, event));
            self.in_wheel += 1;
        } else {
            self.overflow.insert((at, seq), event);
        }
    }

    /// The earliest time an event is due, if one is due by `limit`.
    pub(super) fn next_due(&self, limit: Millis) -> Option<Millis> {
        let overflow = self
            .overflow
            .first_key_value()
            .map(|((at, _), _)| *at)
            .filter(|at| *at <= limit);
        if self.in_wheel == 0 {
            return overflow;
        }
        let last = limit.min(self.base + SPAN - 1);
        let wheel = (self.base..=last).find(|&t| !self.buckets[(t % SPAN) as usize].is_empty());
        match (wheel, overflow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the events due at `at` (no event may be due earlier), in sequence order, to the
    /// end of `out`. The bucket keeps its capacity for the events of later rounds.
    pub(super) fn take_into(&mut self, at: Millis, out: &mut Vec<(Millis, u64, E)>) {
        self.base = self.base.max(at);
        // The wheel now reaches further: bring in what the overflow holds for it.
        while let Some(entry) = self.overflow.first_entry() {
            let (due, seq) = *entry.key();
            if due >= self.base + SPAN {
                break;
            }
            let event = entry.remove();
            self.bucket(due).push((seq, event));
            self.in_wheel += 1;
        }
        let bucket = self.bucket(at);
        // Already in order unless events came in from the overflow.
        if !bucket.is_sorted_by_key(|(seq, _)| *seq) {
            bucket.sort_unstable_by_key(|(seq, _)| *seq);
        }
        let taken = bucket.len();
        out.extend(bucket.drain(..).map(|(seq, event)| (at, seq, event)));
        self.in_wheel -= taken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    /// Against a binary heap, with events due up to 3 spans ahead.
    #[test]
    fn gives_events_in_the_order_a_heap_gives() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut queue = EventQueue::new();
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = 0;
        for _ in 0..20_000 {
            for _ in 0..rng.random_range(0..4) {
                seq += 1;
                let at = now + rng.random_range(0..3 * SPAN);
                queue.push(at, seq, seq);
                heap.push(Reverse((at, seq)));
            }
            let limit = now + rng.random_range(0..50);
            let expected = heap
                .peek()
                .map(|Reverse((at, _))| *at)
                .filter(|at| *at <= limit);
            assert_eq!(queue.next_due(limit), expected);
            if let Some(at) = expected {
                let mut want = Vec::new();
                while let Some(Reverse((due, s))) = heap.peek().copied()
                    && due == at
                {
                    heap.pop();
                    want.push((at, s, s));
                }
                let mut got = Vec::new();
                queue.take_into(at, &mut got);
                assert_eq!(got, want);
                now = at;
            } else {
                now = limit;
            }
        }
    }
}
