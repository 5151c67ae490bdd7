//! [`FileSink`]: a file written by a blocking thread, fed through a `block_pipe` of aligned
//! 1 MiB buffers, so disk writes and hashing overlap the network instead of taking turns with
//! it, and never run on an async thread. The writer is a [`BulkWriter`]: a large file goes
//! around the page cache where the filesystem allows (else its writeback starts as it grows),
//! so the final fsync has little left to wait for.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use tokio::task::JoinHandle;

use super::block_pipe::{Producer, block_pipe};
use crate::blobs::Hash;
use crate::bulk_io::{AlignedBuf, BulkWriter, buffer_len};

/// Buffers per sink: one filling, one being written, one queued between them.
const BUFFERS: usize = 3;

/// Bytes per buffer, and per write: 1 MiB (files smaller than this get buffers of their
/// own size).
const BUFFER_BYTES: usize = 1 << 20;

/// Where a [`FileSink`] writes.
#[derive(Debug)]
pub enum SinkTarget {
    /// A new file, created here (it must not exist), written around the page cache where
    /// possible and fsynced at the end.
    New(PathBuf),
    /// An existing file that is not a regular one (a character device, a FIFO), opened for
    /// writing and written in place from its start; nothing is created or renamed.
    InPlace(PathBuf),
    /// An open file (standard output), written in place.
    Handle(File),
}

/// A file being written; [`FileSink::finish`] flushes it (fsyncs a new one) and returns its
/// BLAKE3 hash.
pub struct FileSink {
    /// `None` once the writer stopped.
    blocks: Option<Producer>,
    /// The buffer being filled.
    filling: Option<AlignedBuf>,
    writer: JoinHandle<io::Result<Hash>>,
    /// Bytes handed to the writer so far.
    accepted: u64,
}

impl FileSink {
    /// Creates `path`, which must not exist yet, for a file of `len` bytes.
    pub fn create(path: PathBuf, len: u64) -> Self {
        Self::start(SinkTarget::New(path), len)
    }

    /// Starts writing `len` bytes to `target`.
    pub fn start(target: SinkTarget, len: u64) -> Self {
        let capacity = buffer_len(len, BUFFER_BYTES);
        let (blocks, mut full) = block_pipe(BUFFERS, capacity);
        let writer = tokio::task::spawn_blocking(move || {
            let mut hasher = blake3::Hasher::new();
            match target {
                SinkTarget::New(path) => {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot create {}: {e}", path.display()),
                            )
                        })?;
                    let mut file = BulkWriter::new(file, len);
                    while let Some(buf) = full.blocking_recv() {
                        hasher.update(buf.as_slice());
                        file.write_all(buf.as_slice())?;
                        full.give_back(buf);
                    }
                    file.sync_all()?;
                }
                SinkTarget::InPlace(path) => {
                    // Opening a FIFO waits for its reader: this is a blocking thread.
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| {
                            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                        })?;
                    write_plain(&mut full, &mut hasher, file)?;
                }
                SinkTarget::Handle(file) => write_plain(&mut full, &mut hasher, file)?,
            }
            Ok(*hasher.finalize().as_bytes())
        });
        Self {
            blocks: Some(blocks),
            filling: None,
            writer,
            accepted: 0,
        }
    }

    /// Bytes handed to the writer so far (some may still be on their way to the file).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Appends `chunk`; waits while the writer is behind.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut rest = chunk;
        self.accepted += chunk.len() as u64;
        while !rest.is_empty() {
            let Some(blocks) = &mut self.blocks else {
                return Err(stopped());
            };
            let filling = match &mut self.filling {
                Some(buf) => buf,
                None => match blocks.empty().await {
                    Some(buf) => self.filling.insert(buf),
                    None => return Err(self.stop()),
                },
            };
            rest = &rest[filling.extend(rest)..];
            if filling.is_full()
                && let Some(full) = self.filling.take()
                && !blocks.send(full).await
            {
                return Err(self.stop());
            }
        }
        Ok(())
    }

    /// Writes what is left, fsyncs and closes the file; returns the BLAKE3 hash of all it
    /// wrote.
    pub async fn finish(mut self) -> io::Result<Hash> {
        if let (Some(blocks), Some(tail)) = (&self.blocks, self.filling.take())
            && !tail.is_empty()
        {
            // If the writer stopped, its own error is the one to report.
            let _ = blocks.send(tail).await;
        }
        self.blocks = None;
        match (&mut self.writer).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// Marks the writer as stopped; returns the error to report (the writer's own error
    /// comes from [`FileSink::finish`]).
    fn stop(&mut self) -> io::Error {
        self.blocks = None;
        stopped()
    }
}

/// Writes every block to `out` as it comes (no direct I/O, no fsync: a pipe or a device),
/// hashing it.
fn write_plain(
    full: &mut super::block_pipe::Consumer,
    hasher: &mut blake3::Hasher,
    mut out: File,
) -> io::Result<()> {
    while let Some(buf) = full.blocking_recv() {
        hasher.update(buf.as_slice());
        out.write_all(buf.as_slice())?;
        full.give_back(buf);
    }
    out.flush()
}

fn stopped() -> io::Error {
    io::Error::other("the file writer stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_every_chunk_in_order_and_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // 3.1 MB: whole 1 MiB buffers (around the page cache where possible) and a tail.
        let mut sink = FileSink::create(path.clone(), 3_100_000);
        for i in 0..3100u32 {
            sink.write(&[i as u8; 1000]).await.unwrap();
        }
        let hash = sink.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&hash, blake3::hash(&bytes).as_bytes());
        assert_eq!(bytes.len(), 3_100_000);
        assert!(
            bytes
                .chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == i as u8))
        );
        let mut again = FileSink::create(path, 1);
        let _ = again.write(b"x").await;
        assert!(again.finish().await.is_err());
    }
}
