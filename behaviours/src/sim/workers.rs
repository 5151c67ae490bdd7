//! The simulator's worker threads: they run one window's node work beside the calling thread.
//!
//! A window holds ~100 nodes' work of ~1 ms in all, and windows follow each other after
//! ~0.1 ms of sequential bookkeeping, tens of thousands of times per virtual minute. A pool
//! whose idle threads sleep in the kernel (rayon's) loses a wake-up per window. These workers
//! spin briefly between windows, then yield, and only then sleep on a condition variable, so
//! a window is picked up within a microsecond while the simulator runs, and nothing burns a
//! core for long while it does not.
//!
//! Work items are claimed one at a time from a shared counter, so a few large items (a node
//! answering a join) do not leave a thread idle. Items come back in their original order.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

/// Spin iterations before a waiting worker starts yielding.
const SPINS: u32 = 4_000;
/// Yields before a waiting worker sleeps.
const YIELDS: u32 = 2_000;

/// Work that can be split into items run independently.
pub(super) trait Item: Send + 'static {
    /// What every item of one round needs to know.
    type Round: Copy + Send + Sync + Default + 'static;
    /// Runs this item.
    fn run(&mut self, round: Self::Round);
}

/// A fixed set of worker threads running rounds of items with the calling thread.
pub(super) struct Workers<T: Item> {
    shared: Arc<Shared<T>>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared<T: Item> {
    round: RwLock<Round<T>>,
    /// Next item to claim.
    next: AtomicUsize,
    /// Items finished this round.
    done: AtomicUsize,
    /// Bumped when a round is published.
    epoch: AtomicU64,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

struct Round<T: Item> {
    items: Vec<Mutex<T>>,
    input: T::Round,
}

impl<T: Item> Workers<T> {
    /// `threads` workers beside the caller (none: everything runs on the caller).
    pub(super) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            round: RwLock::new(Round {
                items: Vec::new(),
                input: T::Round::default(),
            }),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let threads = (0..threads)
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("sim-worker-{i}"))
                    .spawn(move || shared.work())
                    .ok()
            })
            .collect();
        Self { shared, threads }
    }

    /// Worker threads running (the caller not counted).
    pub(super) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Runs every item with `input`, on the workers and the calling thread; returns the
    /// items in their original order once all have run.
    pub(super) fn run(&self, items: Vec<T>, input: T::Round) -> Vec<T> {
        let shared = &self.shared;
        let count = items.len();
        {
            let mut round = shared.round.write().unwrap_or_else(PoisonError::into_inner);
            round.items = items.into_iter().map(Mutex::new).collect();
            round.input = input;
            shared.next.store(0, Ordering::Relaxed);
            shared.done.store(0, Ordering::Relaxed);
        }
        shared.epoch.fetch_add(1, Ordering::Release);
        if shared.sleepers.load(Ordering::Acquire) > 0 {
            let _guard = shared.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            shared.wake.notify_all();
        }
        shared.claim_and_run();
        let mut waited = 0u32;
        while shared.done.load(Ordering::Acquire) < count {
            // A worker is finishing its last item (or was preempted while running it).
            waited = waited.saturating_add(1);
            if waited < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let mut round = shared.round.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut round.items)
            .into_iter()
            .map(|item| item.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }
}

impl<T: Item> Shared<T> {
    fn work(&self) {
        let mut seen = 0;
        loop {
            let mut waited = 0u32;
            loop {
                let epoch = self.epoch.load(Ordering::Acquire);
                if epoch != seen {
                    seen = epoch;
                    break;
                }
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                waited = waited.saturating_add(1);
                if waited < SPINS {
                    std::hint::spin_loop();
                } else if waited < SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    self.sleep_unless(seen);
                }
            }
            self.claim_and_run();
        }
    }

    /// Sleeps until woken, unless a round newer than `seen` is out or the pool shuts down.
    fn sleep_unless(&self, seen: u64) {
        let guard = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        if self.epoch.load(Ordering::Acquire) == seen && !self.shutdown.load(Ordering::Acquire) {
            let timeout = std::time::Duration::from_millis(50);
            drop(self.wake.wait_timeout(guard, timeout));
        }
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Claims and runs items of the current round until none is left.
    fn claim_and_run(&self) {
        let round = self.round.read().unwrap_or_else(PoisonError::into_inner);
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = round.items.get(index) else {
                return;
            };
            item.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .run(round.input);
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

impl<T: Item> Drop for Workers<T> {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _guard = self
                .shared
                .sleep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Square(u64, u64);

    impl Item for Square {
        type Round = u64;
        fn run(&mut self, add: u64) {
            self.1 = self.0 * self.0 + add;
        }
    }

    #[test]
    fn every_item_runs_once_and_comes_back_in_order() {
        let workers = Workers::new(3);
        for round in 0..2000u64 {
            let items: Vec<Square> = (0..(round % 97)).map(|i| Square(i, 0)).collect();
            let out = workers.run(items, round);
            assert_eq!(out.len() as u64, round % 97);
            for (i, item) in out.iter().enumerate() {
                assert_eq!(item.0, i as u64);
                assert_eq!(item.1, item.0 * item.0 + round);
            }
        }
    }
}
