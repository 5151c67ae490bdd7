//! [`FileSink`]: a file written by a blocking thread that is fed chunks through a small bounded
//! channel, so disk writes (and hashing) overlap the network instead of taking turns with it,
//! and never run on an async thread. Writeback starts as the file grows ([`writeback::wrote`]), so
//! the final fsync has little left to wait for.

use std::io::{self, Write};
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::blobs::Hash;
use crate::writeback;

/// Chunks queued for the writer at most.
const QUEUED_CHUNKS: usize = 4;

/// A new file being written; [`FileSink::finish`] fsyncs it and returns its BLAKE3 hash.
pub struct FileSink {
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    writer: JoinHandle<io::Result<Hash>>,
}

impl FileSink {
    /// Creates `path`, which must not exist yet.
    pub fn create(path: PathBuf) -> Self {
        let (chunks, mut receiver) = mpsc::channel::<Vec<u8>>(QUEUED_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
                })?;
            let mut file = file;
            let mut hasher = blake3::Hasher::new();
            let mut written = 0u64;
            while let Some(chunk) = receiver.blocking_recv() {
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                let before = written;
                written += chunk.len() as u64;
                writeback::wrote(&file, before, written);
            }
            file.sync_all()?;
            Ok(*hasher.finalize().as_bytes())
        });
        Self {
            chunks: Some(chunks),
            writer,
        }
    }

    /// Queues `chunk`; waits while the writer is behind.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk.to_vec()).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            self.chunks = None;
            Err(io::Error::other("the file writer stopped"))
        }
    }

    /// Writes what is queued, fsyncs and closes the file; returns the BLAKE3 hash of all it
    /// wrote.
    pub async fn finish(mut self) -> io::Result<Hash> {
        self.chunks = None;
        match (&mut self.writer).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_every_chunk_in_order_and_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = FileSink::create(path.clone());
        for i in 0..100u8 {
            sink.write(&[i; 1000]).await.unwrap();
        }
        let hash = sink.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&hash, blake3::hash(&bytes).as_bytes());
        assert_eq!(bytes.len(), 100_000);
        assert!(
            bytes
                .chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == i as u8))
        );
        let mut again = FileSink::create(path);
        let _ = again.write(b"x").await;
        assert!(again.finish().await.is_err());
    }
}
