//! [`InOrder`]: which piece each source fetches next when the bytes must go out in order
//! (an HTTP body), as a state machine with no I/O.
//!
//! Rules (one test each below):
//! * Sources take the first piece nobody has taken, but never further than [`InOrder::window`]
//!   pieces past the first piece not yet sent: what waits to be sent is bounded.
//! * A source that fails gives its pieces back; they are taken again before any new one.
//! * A source with nothing to take fetches the piece the output waits for, if only one
//!   source fetches it: a slow source cannot hold the whole body up. The first verified copy
//!   counts; a late one is dropped.
//! * Pieces go out in order, each once.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// A source's index.
pub type SourceId = usize;

/// The pieces of one body, by index, and who fetches what.
#[derive(Debug)]
pub struct InOrder {
    count: usize,
    window: usize,
    /// The first piece never taken.
    next_new: usize,
    /// Pieces given back, taken again first.
    returned: BTreeSet<usize>,
    /// Who fetches each piece taken and not yet delivered.
    fetching: BTreeMap<usize, Vec<SourceId>>,
    /// Verified pieces waiting for their turn.
    ready: BTreeMap<usize, Bytes>,
    /// The next piece to send.
    next_out: usize,
}

impl InOrder {
    /// `count` pieces, at most `window` (≥ 1) taken past the next one to send.
    pub fn new(count: usize, window: usize) -> Self {
        Self {
            count,
            window: window.max(1),
            next_new: 0,
            returned: BTreeSet::new(),
            fetching: BTreeMap::new(),
            ready: BTreeMap::new(),
            next_out: 0,
        }
    }

    /// Every piece has gone out.
    pub fn is_done(&self) -> bool {
        self.next_out >= self.count
    }

    /// The piece `source` should fetch next, if any.
    pub fn take(&mut self, source: SourceId) -> Option<usize> {
        let index = if let Some(i) = self.returned.pop_first() {
            i
        } else if self.next_new < self.count && self.next_new < self.next_out + self.window {
            self.next_new += 1;
            self.next_new - 1
        } else {
            // The piece the output waits for, fetched by one other source only.
            let head = self.next_out;
            let fetchers = self.fetching.get(&head)?;
            if fetchers.len() != 1 || fetchers.contains(&source) {
                return None;
            }
            head
        };
        self.fetching.entry(index).or_default().push(source);
        Some(index)
    }

    /// `source` delivered the verified piece `index`; false when it was late (delivered or
    /// sent already).
    pub fn delivered(&mut self, index: usize, source: SourceId, bytes: Bytes) -> bool {
        let Some(fetchers) = self.fetching.get_mut(&index) else {
            return false;
        };
        fetchers.retain(|s| *s != source);
        if index < self.next_out || self.ready.contains_key(&index) {
            if fetchers.is_empty() {
                self.fetching.remove(&index);
            }
            return false;
        }
        self.fetching.remove(&index);
        self.ready.insert(index, bytes);
        true
    }

    /// `source` failed: the pieces it fetched alone are taken again first.
    pub fn failed(&mut self, source: SourceId) {
        let mut orphans = Vec::new();
        for (index, fetchers) in &mut self.fetching {
            if fetchers.contains(&source) {
                fetchers.retain(|s| *s != source);
                if fetchers.is_empty() {
                    orphans.push(*index);
                }
            }
        }
        for index in orphans {
            self.fetching.remove(&index);
            self.returned.insert(index);
        }
    }

    /// The next piece to send, when it is ready.
    pub fn next_out(&mut self) -> Option<(usize, Bytes)> {
        let index = self.next_out;
        let bytes = self.ready.remove(&index)?;
        self.next_out += 1;
        // A copy of it still being fetched is late when it comes.
        Some((index, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(i: u8) -> Bytes {
        Bytes::from(vec![i])
    }

    #[test]
    fn sources_take_new_pieces_in_order_within_the_window() {
        let mut plan = InOrder::new(10, 3);
        assert_eq!(plan.take(0), Some(0));
        assert_eq!(plan.take(1), Some(1));
        assert_eq!(plan.take(0), Some(2));
        // Three taken from piece 0, which has not gone out: no new one (source 1 may only
        // fetch piece 0 as well, which the output waits for).
        assert_eq!(plan.take(1), Some(0));
        assert_eq!(plan.take(1), None);
        assert!(plan.delivered(0, 0, piece(0)));
        assert_eq!(plan.next_out(), Some((0, piece(0))));
        assert_eq!(plan.take(1), Some(3));
    }

    #[test]
    fn pieces_go_out_in_order_each_once() {
        let mut plan = InOrder::new(3, 3);
        for source in 0..3 {
            assert_eq!(plan.take(source), Some(source));
        }
        assert!(plan.delivered(2, 2, piece(2)));
        assert!(plan.delivered(1, 1, piece(1)));
        assert_eq!(plan.next_out(), None, "piece 0 is not in yet");
        assert!(plan.delivered(0, 0, piece(0)));
        let out: Vec<usize> = std::iter::from_fn(|| plan.next_out().map(|(i, _)| i)).collect();
        assert_eq!(out, vec![0, 1, 2]);
        assert!(plan.is_done());
    }

    #[test]
    fn a_failed_sources_pieces_are_taken_again_first() {
        let mut plan = InOrder::new(10, 4);
        assert_eq!(plan.take(0), Some(0));
        assert_eq!(plan.take(0), Some(1));
        assert_eq!(plan.take(1), Some(2));
        plan.failed(0);
        assert_eq!(plan.take(1), Some(0));
        assert_eq!(plan.take(1), Some(1));
        assert_eq!(plan.take(1), Some(3));
    }

    #[test]
    fn an_idle_source_fetches_the_piece_the_output_waits_for_and_the_first_copy_counts() {
        let mut plan = InOrder::new(10, 2);
        assert_eq!(plan.take(0), Some(0)); // a slow source
        assert_eq!(plan.take(1), Some(1));
        assert_eq!(plan.take(1), Some(0), "the head, stolen");
        assert_eq!(plan.take(2), None, "two fetch it already");
        assert!(plan.delivered(0, 1, piece(0)));
        assert!(!plan.delivered(0, 0, piece(9)), "the slow copy is late");
        assert_eq!(plan.next_out(), Some((0, piece(0))));
        assert_eq!(plan.next_out(), None);
    }

    #[test]
    fn a_copy_delivered_after_its_piece_went_out_is_late() {
        let mut plan = InOrder::new(2, 2);
        assert_eq!(plan.take(0), Some(0));
        assert_eq!(plan.take(1), Some(1));
        assert_eq!(plan.take(1), Some(0));
        assert!(plan.delivered(0, 1, piece(0)));
        assert_eq!(plan.next_out(), Some((0, piece(0))));
        assert!(!plan.delivered(0, 0, piece(0)));
        assert!(plan.delivered(1, 1, piece(1)));
        assert_eq!(plan.next_out(), Some((1, piece(1))));
        assert!(plan.is_done());
    }
}
