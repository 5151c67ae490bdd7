//! Slots for file streams served at once: `files.max_streams` in all, and at most
//! `files.max_streams_per_peer` for any one peer, so that one peer opening streams as fast
//! as it can takes its share and no more; everyone else is still served.
//!
//! A slot is held by a [`StreamSlot`] for as long as its stream is served and is given back
//! when that is dropped. The lock is held only to count, never across an await.
//!
//! **Eviction.** A stream whose request has not arrived yet ([`StreamSlot::started`] not
//! called) holds its slot for nothing. When every slot is taken, a new stream evicts one such
//! stream: the oldest of the peer with the most streams waiting, if that peer has more than
//! one waiting, else the oldest waiting stream once it has waited the grace (default
//! [`EVICTION_GRACE`]). Its [`Eviction`] fires and its task drops it. So streams opened and
//! left idle by many identities at once (a flood) push each other out, while a client that
//! opens one stream and sends its request at once is served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long a stream may wait for its request before a new stream may evict it. Default
/// 500 ms: a request follows its stream's opening by one round trip.
pub const EVICTION_GRACE: Duration = Duration::from_millis(500);

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

/// A slot whose stream waits for its request.
#[derive(Debug)]
struct Waiting<P> {
    peer: P,
    since: Instant,
    evict: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Counts<P> {
    used: usize,
    by_peer: BTreeMap<P, usize>,
    /// Slots waiting for their request, by slot number (oldest first).
    waiting: BTreeMap<u64, Waiting<P>>,
    /// Slots evicted and already given back (their [`StreamSlot`] must not give back again).
    evicted: std::collections::BTreeSet<u64>,
    next: u64,
    evictions: u64,
}

/// The node's stream slots (see the module docs).
#[derive(Debug)]
pub struct StreamSlots<P: Ord> {
    total: usize,
    per_peer: usize,
    grace: Duration,
    counts: Mutex<Counts<P>>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot<P: Ord + Clone> {
    slots: Arc<StreamSlots<P>>,
    peer: P,
    number: u64,
}

/// Fires when a newer stream evicted this slot's stream before its request came.
#[derive(Debug)]
pub struct Eviction(oneshot::Receiver<()>);

impl Eviction {
    /// Completes when the stream was evicted; never, once its request came.
    pub async fn evicted(self) {
        if self.0.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl<P: Ord + Clone> StreamSlots<P> {
    /// `total` slots (at least 1), at most `per_peer` (at least 1) for one peer.
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Self::with_grace(total, per_peer, EVICTION_GRACE)
    }

    /// [`new`](Self::new) with another eviction grace.
    pub fn with_grace(total: usize, per_peer: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_peer: per_peer.max(1),
            grace,
            counts: Mutex::new(Counts {
                used: 0,
                by_peer: BTreeMap::new(),
                waiting: BTreeMap::new(),
                evicted: Default::default(),
                next: 0,
                evictions: 0,
            }),
        })
    }

    /// A slot for a stream from `peer`, if the peer's share has room and the node has a free
    /// slot or one whose stream has waited for its request longer than the grace (evicted).
    /// The slot waits for its request until [`StreamSlot::started`]; the [`Eviction`] fires
    /// if it is evicted before.
    pub fn try_take(self: &Arc<Self>, peer: &P) -> Result<(StreamSlot<P>, Eviction), NoSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.by_peer.get(peer).copied().unwrap_or(0);
        if held >= self.per_peer {
            return Err(NoSlot::PeerShare);
        }
        // An eviction leaves every peer's share as it was: `held` still holds.
        if counts.used >= self.total && !self.evict_one(&mut counts) {
            return Err(NoSlot::Full);
        }
        counts.used += 1;
        counts.by_peer.insert(peer.clone(), held + 1);
        let number = counts.next;
        counts.next += 1;
        let (evict, eviction) = oneshot::channel();
        counts.waiting.insert(
            number,
            Waiting {
                peer: peer.clone(),
                since: Instant::now(),
                evict,
            },
        );
        let slot = StreamSlot {
            slots: self.clone(),
            peer: peer.clone(),
            number,
        };
        Ok((slot, Eviction(eviction)))
    }

    /// Evicts a slot whose stream waits for its request and gives it back at once (its
    /// [`StreamSlot`] will not give it back again): the oldest stream of the peer with the
    /// most streams waiting, if that peer has more than one waiting or the stream is past the
    /// grace. So a peer that opens streams and leaves them idle loses them first, and a
    /// client's one stream keeps its grace. (When every peer has one waiting, the oldest of
    /// the peer with the most is the oldest of all.)
    fn evict_one(&self, counts: &mut Counts<P>) -> bool {
        let mut waiting_by_peer: BTreeMap<&P, usize> = BTreeMap::new();
        for waiting in counts.waiting.values() {
            *waiting_by_peer.entry(&waiting.peer).or_insert(0) += 1;
        }
        let victim = counts
            .waiting
            .iter()
            .max_by(|(a_number, a), (b_number, b)| {
                waiting_by_peer[&a.peer]
                    .cmp(&waiting_by_peer[&b.peer])
                    .then(b_number.cmp(a_number))
            })
            .filter(|(_, w)| waiting_by_peer[&w.peer] > 1 || w.since.elapsed() >= self.grace)
            .map(|(number, _)| *number);
        let Some((number, waiting)) =
            victim.and_then(|number| Some((number, counts.waiting.remove(&number)?)))
        else {
            return false;
        };
        let _ = waiting.evict.send(());
        counts.evicted.insert(number);
        counts.used = counts.used.saturating_sub(1);
        counts.evictions += 1;
        true
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .used
    }

    /// Streams evicted so far.
    pub fn evictions(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .evictions
    }
}

impl<P: Ord + Clone> StreamSlot<P> {
    /// The stream's request came: it is served to the end and no longer evicted.
    pub fn started(&self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.waiting.remove(&self.number);
    }
}

impl<P: Ord + Clone> Drop for StreamSlot<P> {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.waiting.remove(&self.number);
        // The peer's share counts until the stream is gone, evicted or not.
        if let Some(held) = counts.by_peer.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                counts.by_peer.remove(&self.peer);
            }
        }
        if !counts.evicted.remove(&self.number) {
            counts.used = counts.used.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots with no eviction grace, so tests need not wait.
    fn eager(total: usize, per_peer: usize) -> Arc<StreamSlots<&'static str>> {
        StreamSlots::with_grace(total, per_peer, Duration::ZERO)
    }

    fn take<P: Ord + Clone>(slots: &Arc<StreamSlots<P>>, peer: P) -> StreamSlot<P> {
        slots.try_take(&peer).expect("room").0
    }

    #[tokio::test]
    async fn a_new_stream_evicts_the_one_waiting_longest_for_its_request() {
        let slots = eager(2, 2);
        let (first, first_eviction) = slots.try_take(&"idle").expect("room");
        let (second, _second_eviction) = slots.try_take(&"idle2").expect("room");
        let (third, _) = slots
            .try_take(&"honest")
            .expect("evicts the oldest waiting");
        first_eviction.evicted().await;
        assert_eq!(slots.used(), 2);
        assert_eq!(slots.evictions(), 1);
        // The evicted stream's task drops its slot: nothing is given back twice.
        drop(first);
        assert_eq!(slots.used(), 2);
        drop((second, third));
        assert_eq!(slots.used(), 0);
        assert!(slots.counts.lock().expect("lock").by_peer.is_empty());
    }

    #[tokio::test]
    async fn a_started_stream_is_never_evicted() {
        let slots = eager(1, 1);
        let (serving, eviction) = slots.try_take(&"a").expect("room");
        serving.started();
        assert_eq!(slots.try_take(&"b").err(), Some(NoSlot::Full));
        let fired = tokio::time::timeout(Duration::from_millis(50), eviction.evicted()).await;
        assert!(fired.is_err(), "a started stream must not be evicted");
        drop(serving);
        assert!(slots.try_take(&"b").is_ok());
    }

    #[tokio::test]
    async fn a_peer_with_several_idle_streams_loses_one_even_within_the_grace() {
        let slots = StreamSlots::with_grace(3, 3, Duration::from_secs(60));
        let (_client, client_eviction) = slots.try_take(&"client").expect("room");
        let (_first, _) = slots.try_take(&"flood").expect("room");
        let (_second, second_eviction) = slots.try_take(&"flood").expect("room");
        let (_newcomer, _) = slots.try_take(&"newcomer").expect("evicts a flood stream");
        // The flood's oldest stream went, not the client's older one.
        let fired = tokio::time::timeout(Duration::from_millis(50), client_eviction.evicted());
        assert!(
            fired.await.is_err(),
            "the client's one stream keeps its grace"
        );
        let fired = tokio::time::timeout(Duration::from_millis(50), second_eviction.evicted());
        assert!(fired.await.is_err(), "the flood's newer stream stays");
        assert_eq!(slots.evictions(), 1);
        // Now every peer has one waiting stream, all within the grace: busy.
        assert_eq!(slots.try_take(&"late").err(), Some(NoSlot::Full));
    }

    #[test]
    fn a_stream_within_its_grace_is_not_evicted() {
        let slots = StreamSlots::with_grace(1, 1, Duration::from_secs(60));
        let _waiting = take(&slots, "a");
        assert_eq!(slots.try_take(&"b").err(), Some(NoSlot::Full));
        assert_eq!(slots.evictions(), 0);
    }

    #[test]
    fn one_peer_takes_its_share_and_others_are_still_served() {
        let slots = StreamSlots::new(4, 2);
        let greedy: Vec<_> = (0..2).map(|_| take(&slots, "greedy")).collect();
        assert_eq!(slots.try_take(&"greedy").err(), Some(NoSlot::PeerShare));
        let other = take(&slots, "other");
        assert_eq!(slots.used(), 3);
        drop(greedy);
        drop(other);
        assert_eq!(slots.used(), 0);
        assert!(slots.counts.lock().expect("lock").by_peer.is_empty());
    }

    #[test]
    fn the_node_total_bounds_every_peer_together() {
        let slots = StreamSlots::new(3, 2);
        let held: Vec<_> = ["a", "a", "b"]
            .into_iter()
            .map(|p| take(&slots, p))
            .collect();
        held.iter().for_each(StreamSlot::started);
        assert_eq!(slots.try_take(&"c").err(), Some(NoSlot::Full));
    }

    #[test]
    fn a_slot_given_back_is_taken_again() {
        let slots = StreamSlots::new(1, 1);
        let first = take(&slots, 7);
        first.started();
        assert_eq!(slots.try_take(&8).err(), Some(NoSlot::Full));
        drop(first);
        assert!(slots.try_take(&8).is_ok());
    }
}
