//! An outboard made while a blob's bytes arrive, so that a holder can serve verified pieces
//! as soon as the blob is stored instead of first reading it back whole from disk.
//!
//! The bytes go, in order and in chunks of up to 1 MiB, through a bounded queue
//! ([`QUEUE`] chunks) to one blocking thread that runs bao-tree's outboard builder over them
//! and writes the tree into a temp file beside the outboards. Its root is the blob's BLAKE3,
//! so the writer needs no hasher of its own. Memory: the queue and the builder's 16 KiB
//! buffer; the tree goes to disk as it is made.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::outboard;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::verified;

/// Chunks queued between the writer and the builder at most (each up to 1 MiB).
pub const QUEUE: usize = 2;

/// The builder of one blob's outboard, fed the blob's bytes in order.
#[derive(Debug)]
pub struct OutboardMaker {
    bytes: mpsc::Sender<Vec<u8>>,
    made: JoinHandle<io::Result<MadeOutboard>>,
}

/// A finished outboard, still in its temp file.
#[derive(Debug)]
pub struct MadeOutboard {
    /// The BLAKE3 of the bytes fed: the blob's hash.
    pub root: [u8; 32],
    temp: tempfile::NamedTempFile,
}

impl OutboardMaker {
    /// Starts making the outboard of a blob of `size` bytes in a temp file in `dir` (made if
    /// missing), on a blocking thread. Needs a tokio runtime.
    pub fn start(dir: PathBuf, size: u64) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let made = tokio::task::spawn_blocking(move || make(&dir, size, receiver));
        Self {
            bytes: sender,
            made,
        }
    }

    /// Hands the blob's next bytes to the builder; waits while [`QUEUE`] chunks are queued.
    /// An error means the builder stopped, and says why.
    pub async fn feed(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        // Nothing to hand over (and a builder that has had every byte has ended).
        if bytes.is_empty() || self.bytes.send(bytes).await.is_ok() {
            return Ok(());
        }
        let why = match (&mut self.made).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => io::Error::other("it ended early"),
            Err(e) => io::Error::other(e),
        };
        Err(io::Error::new(
            why.kind(),
            format!("the outboard builder stopped: {why}"),
        ))
    }

    /// Every byte is in: waits for the builder and returns the root and the outboard. Fewer
    /// bytes than announced give an `UnexpectedEof` error.
    pub async fn finish(self) -> io::Result<MadeOutboard> {
        let Self { bytes, made } = self;
        drop(bytes);
        made.await.map_err(io::Error::other)?
    }
}

impl MadeOutboard {
    /// Moves the outboard to `path` (its directory made first), fsynced. Blocking.
    pub fn persist(self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        self.temp.as_file().sync_data()?;
        self.temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The builder's thread: the tree of `size` bytes read from `receiver`, in a temp file in
/// `dir`.
fn make(dir: &Path, size: u64, receiver: mpsc::Receiver<Vec<u8>>) -> io::Result<MadeOutboard> {
    fs::create_dir_all(dir)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let tree = verified::tree(size);
    let mut made = PreOrderOutboard {
        root: blake3::Hash::from_bytes([0; 32]),
        tree,
        data: temp.reopen()?,
    };
    let queue = Queued {
        receiver,
        chunk: Vec::new(),
        at: 0,
    };
    let root = outboard(queue.take(size), tree, &mut made)?;
    Ok(MadeOutboard {
        root: *root.as_bytes(),
        temp,
    })
}

/// The queued chunks as one stream of bytes; ends when the writer drops its sender.
struct Queued {
    receiver: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Queued {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// The outboard made from the bytes in chunks is the one made from the file afterwards.
    #[tokio::test]
    async fn a_streamed_outboard_is_the_one_made_from_the_stored_blob() {
        let dir = tempfile::tempdir().expect("temp dir");
        for size in [16 * 1024 + 1, 1 << 20, (3 << 20) + 12_345] {
            let data = bytes(size);
            let mut maker = OutboardMaker::start(dir.path().join("outboards"), size as u64);
            for chunk in data.chunks(300_001) {
                maker.feed(chunk.to_vec()).await.expect("fed");
            }
            let made = maker.finish().await.expect("made");
            assert_eq!(made.root, *blake3::hash(&data).as_bytes());
            let streamed = dir.path().join(format!("streamed-{size}"));
            made.persist(&streamed).expect("persisted");
            let blob = dir.path().join(format!("blob-{size}"));
            fs::write(&blob, &data).expect("blob written");
            let from_file = dir.path().join(format!("from-file-{size}"));
            verified::open_outboard(
                &blob,
                &from_file,
                size as u64,
                blake3::hash(&data).as_bytes(),
            )
            .expect("outboard from the file");
            assert_eq!(
                fs::read(&streamed).expect("streamed"),
                fs::read(&from_file).expect("from file"),
                "{size} bytes"
            );
        }
    }

    #[tokio::test]
    async fn fewer_bytes_than_announced_make_no_outboard() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut maker = OutboardMaker::start(dir.path().to_path_buf(), 100_000);
        maker.feed(bytes(99_999)).await.expect("fed");
        let err = maker.finish().await.expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
