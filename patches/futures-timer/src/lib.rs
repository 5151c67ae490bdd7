//! futures-timer 3.0's [`Delay`] on tokio's timer.
//!
//! libp2p arms every timeout (connection upgrades and keep-alive, ping, request-response,
//! identify, the Kelips behaviour's own deadline) with `futures_timer::Delay`. The crates.io
//! implementation keeps all of them on one helper thread: creating, resetting or dropping a
//! `Delay` wakes that thread, and when a timer fires the helper wakes the task on a tokio worker
//! from outside the runtime. With hundreds of nodes in one process that is tens of thousands of
//! cross-thread wake-ups a second (measured: the helper thread alone took 12% of the CPU, kernel
//! task switching another 13%).
//!
//! This crate has the same API (`Delay::new`, `Delay::reset`, `Future<Output = ()>`, `Unpin`)
//! and is patched in for the whole dependency graph. A `Delay` only records its deadline when
//! created; on its first poll inside a tokio runtime it becomes a [`tokio::time::Sleep`] on that
//! runtime's timer, which the worker polling it drives itself. Polled outside any tokio runtime
//! (a `futures::executor::block_on`, say) it falls back to a thread that sleeps until the
//! deadline and wakes the task, so it is always correct, if slower there.
//!
//! Differences from crates.io's futures-timer: tokio's timer has millisecond resolution and
//! follows tokio's clock, so a paused tokio clock (`tokio::time::pause`) pauses these delays too.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A future that completes once a duration has passed since it was created or last reset.
pub struct Delay {
    /// When it completes.
    deadline: Instant,
    /// The tokio timer entry, made on the first poll inside a runtime.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Outside any runtime: the waker a sleeping thread wakes, and the deadline that thread
    /// sleeps to.
    fallback: Option<(Arc<Mutex<Option<Waker>>>, Instant)>,
}

impl Delay {
    /// A delay that completes `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        Delay {
            deadline: deadline_after(dur),
            sleep: None,
            fallback: None,
        }
    }

    /// Moves the deadline to `dur` from now; a completed delay becomes pending again.
    pub fn reset(&mut self, dur: Duration) {
        self.deadline = deadline_after(dur);
        if let Some(sleep) = self.sleep.as_mut() {
            sleep.as_mut().reset(self.deadline.into());
        }
    }

    fn poll_outside_runtime(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        if let Some((waker, armed_for)) = &self.fallback {
            if let Ok(mut slot) = waker.lock() {
                *slot = Some(cx.waker().clone());
            }
            if *armed_for == deadline {
                return Poll::Pending;
            }
        }
        let waker = Arc::new(Mutex::new(Some(cx.waker().clone())));
        let woken = waker.clone();
        let spawned = std::thread::Builder::new()
            .name("futures-timer-fallback".into())
            .spawn(move || {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                if let Some(waker) = woken.lock().ok().and_then(|mut w| w.take()) {
                    waker.wake();
                }
            });
        if spawned.is_err() {
            // No thread to wait on: ask to be polled again rather than never waking.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.fallback = Some((waker, deadline));
        Poll::Pending
    }
}

/// `now + dur`, saturating far in the future instead of overflowing.
fn deadline_after(dur: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(dur)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

impl Future for Delay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(sleep) = this.sleep.as_mut() {
            return sleep.as_mut().poll(cx);
        }
        if Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                let mut sleep = Box::pin(tokio::time::sleep_until(this.deadline.into()));
                let polled = sleep.as_mut().poll(cx);
                this.sleep = Some(sleep);
                polled
            }
            Err(_) => this.poll_outside_runtime(cx),
        }
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delay")
            .field("deadline", &self.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn completes_after_its_duration_on_tokio() {
        let start = Instant::now();
        Delay::new(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_moves_the_deadline_before_and_after_the_first_poll() {
        let start = Instant::now();
        let mut delay = Delay::new(Duration::from_millis(5));
        delay.reset(Duration::from_millis(40));
        assert!(
            (&mut delay).now_or_never().is_none(),
            "reset before any poll"
        );
        delay.reset(Duration::from_millis(60));
        (&mut delay).await;
        assert!(start.elapsed() >= Duration::from_millis(60));
        // A completed delay that is reset waits again.
        let again = Instant::now();
        delay.reset(Duration::from_millis(20));
        assert!((&mut delay).now_or_never().is_none());
        (&mut delay).await;
        assert!(again.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn completes_outside_any_runtime() {
        let start = Instant::now();
        futures::executor::block_on(Delay::new(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let mut delay = Delay::new(Duration::from_millis(10));
        delay.reset(Duration::from_millis(50));
        let reset = Instant::now();
        futures::executor::block_on(delay);
        assert!(reset.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn a_huge_duration_does_not_overflow() {
        let mut delay = Delay::new(Duration::MAX);
        assert!((&mut delay).now_or_never().is_none());
    }

    #[tokio::test]
    async fn a_zero_delay_is_ready_at_once() {
        assert!(Delay::new(Duration::ZERO).now_or_never().is_some());
    }
}
