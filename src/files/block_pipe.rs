//! [`block_pipe`]: a fixed set of [`AlignedBuf`]s that circulate between an async task and a
//! blocking thread. The [`Producer`] fills empty buffers and sends them on; the [`Consumer`]
//! takes full buffers and hands them back empty.
//!
//! Memory is bounded by the set (count × capacity), nothing is allocated or zeroed per block,
//! and the bytes are copied once at most on the way (into the buffer), since buffers move
//! instead of their contents. A side that stops shows up on the other as a closed pipe.

use tokio::sync::mpsc;

use crate::bulk_io::AlignedBuf;

/// The filling end of a [`block_pipe`].
pub struct Producer {
    full: mpsc::Sender<AlignedBuf>,
    empty: mpsc::Receiver<AlignedBuf>,
}

/// The draining end of a [`block_pipe`].
pub struct Consumer {
    full: mpsc::Receiver<AlignedBuf>,
    empty: mpsc::Sender<AlignedBuf>,
}

/// A pipe of `count` buffers (at least 1) of `capacity` bytes each (rounded up to whole
/// blocks, see [`AlignedBuf::with_capacity`]).
pub fn block_pipe(count: usize, capacity: usize) -> (Producer, Consumer) {
    let count = count.max(1);
    let (full_sender, full_receiver) = mpsc::channel(count);
    let (empty_sender, empty_receiver) = mpsc::channel(count);
    for _ in 0..count {
        // The channel holds `count`: this cannot fail.
        let _ = empty_sender.try_send(AlignedBuf::with_capacity(capacity));
    }
    (
        Producer {
            full: full_sender,
            empty: empty_receiver,
        },
        Consumer {
            full: full_receiver,
            empty: empty_sender,
        },
    )
}

impl Producer {
    /// An empty buffer; waits while every buffer is in use. `None` once the consumer is gone.
    pub async fn empty(&mut self) -> Option<AlignedBuf> {
        let mut buf = self.empty.recv().await?;
        buf.clear();
        Some(buf)
    }

    /// [`Producer::empty`] for a blocking thread.
    pub fn blocking_empty(&mut self) -> Option<AlignedBuf> {
        let mut buf = self.empty.blocking_recv()?;
        buf.clear();
        Some(buf)
    }

    /// Sends a filled buffer on; `false` when the consumer is gone.
    pub async fn send(&self, buf: AlignedBuf) -> bool {
        self.full.send(buf).await.is_ok()
    }

    /// [`Producer::send`] for a blocking thread.
    pub fn blocking_send(&self, buf: AlignedBuf) -> bool {
        self.full.blocking_send(buf).is_ok()
    }
}

impl Consumer {
    /// The next full buffer, in the order sent; `None` once the producer is gone and every
    /// buffer it sent was taken.
    pub async fn recv(&mut self) -> Option<AlignedBuf> {
        self.full.recv().await
    }

    /// [`Consumer::recv`] for a blocking thread.
    pub fn blocking_recv(&mut self) -> Option<AlignedBuf> {
        self.full.blocking_recv()
    }

    /// Hands a buffer back to the producer for reuse. Never waits: the pipe has room for
    /// every buffer in its set.
    pub fn give_back(&self, buf: AlignedBuf) {
        let _ = self.empty.try_send(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_circulate_in_order_and_a_closed_end_is_seen() {
        let (mut producer, mut consumer) = block_pipe(2, 10);
        let drain = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            while let Some(buf) = consumer.blocking_recv() {
                seen.push(buf.as_slice()[0]);
                consumer.give_back(buf);
            }
            seen
        });
        // 50 blocks through a set of 2: only possible if buffers come back.
        for i in 0..50u8 {
            let mut buf = producer.empty().await.unwrap();
            assert!(buf.is_empty(), "a buffer came back with old bytes");
            buf.extend(&[i]);
            assert!(producer.send(buf).await);
        }
        drop(producer);
        assert_eq!(drain.await.unwrap(), (0..50).collect::<Vec<u8>>());

        let (mut producer, consumer) = block_pipe(1, 10);
        drop(consumer);
        let buf = producer.empty().await.unwrap();
        assert!(!producer.send(buf).await);
        assert!(producer.empty().await.is_none());
    }
}
