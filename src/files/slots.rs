//! Slots for file streams served at once: `files.max_streams` in all, and at most
//! `files.max_streams_per_peer` for any one peer, so that one peer opening streams as fast
//! as it can takes its share and no more; everyone else is still served.
//!
//! A slot is held by a [`StreamSlot`] for as long as its stream is served and is given back
//! when that is dropped. The lock is held only to count, never across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Every slot of the node is taken.
    Full,
    /// This peer holds its whole share.
    PeerShare,
}

impl NoSlot {
    /// The reason sent in the `busy` refusal.
    pub fn reason(self) -> &'static str {
        match self {
            NoSlot::Full => "busy: too many file streams at this node; try again",
            NoSlot::PeerShare => {
                "busy: this peer has its whole share of file streams at this node open; try again"
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts<P> {
    used: usize,
    by_peer: BTreeMap<P, usize>,
}

/// The node's stream slots (see the module docs).
#[derive(Debug)]
pub struct StreamSlots<P: Ord> {
    total: usize,
    per_peer: usize,
    counts: Mutex<Counts<P>>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot<P: Ord + Clone> {
    slots: Arc<StreamSlots<P>>,
    peer: P,
}

impl<P: Ord + Clone> StreamSlots<P> {
    /// `total` slots (at least 1), at most `per_peer` (at least 1) for one peer.
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_peer: per_peer.max(1),
            counts: Mutex::new(Counts {
                used: 0,
                by_peer: BTreeMap::new(),
            }),
        })
    }

    /// A slot for a stream from `peer`, if the node and the peer's share have room.
    pub fn try_take(self: &Arc<Self>, peer: &P) -> Result<StreamSlot<P>, NoSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.used >= self.total {
            return Err(NoSlot::Full);
        }
        let held = counts.by_peer.get(peer).copied().unwrap_or(0);
        if held >= self.per_peer {
            return Err(NoSlot::PeerShare);
        }
        counts.used += 1;
        counts.by_peer.insert(peer.clone(), held + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            peer: peer.clone(),
        })
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .used
    }
}

impl<P: Ord + Clone> Drop for StreamSlot<P> {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.used = counts.used.saturating_sub(1);
        if let Some(held) = counts.by_peer.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                counts.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_takes_its_share_and_others_are_still_served() {
        let slots = StreamSlots::new(4, 2);
        let greedy: Vec<_> = (0..2)
            .map(|_| slots.try_take(&"greedy").expect("share"))
            .collect();
        assert_eq!(slots.try_take(&"greedy").err(), Some(NoSlot::PeerShare));
        let other = slots.try_take(&"other").expect("room for another peer");
        assert_eq!(slots.used(), 3);
        drop(greedy);
        drop(other);
        assert_eq!(slots.used(), 0);
        assert!(slots.counts.lock().expect("lock").by_peer.is_empty());
    }

    #[test]
    fn the_node_total_bounds_every_peer_together() {
        let slots = StreamSlots::new(3, 2);
        let _held: Vec<_> = ["a", "a", "b"]
            .iter()
            .map(|p| slots.try_take(p).expect("room"))
            .collect();
        assert_eq!(slots.try_take(&"c").err(), Some(NoSlot::Full));
    }

    #[test]
    fn a_slot_given_back_is_taken_again() {
        let slots = StreamSlots::new(1, 1);
        let first = slots.try_take(&7).expect("free");
        assert_eq!(slots.try_take(&8).err(), Some(NoSlot::Full));
        drop(first);
        assert!(slots.try_take(&8).is_ok());
    }
}
