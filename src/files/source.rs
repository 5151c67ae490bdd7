//! [`FileSource`]: a file read by a blocking thread that hashes it and hands its bytes over
//! through a `block_pipe` of aligned 1 MiB buffers, so disk reads and hashing overlap the
//! network and never run on an async thread. The reader is a [`BulkReader`]: a large file is
//! read around the page cache where the filesystem allows.
//!
//! The counterpart of [`super::sink::FileSink`].

use std::fs::File;
use std::io;

use tokio::task::JoinHandle;

use super::block_pipe::{Consumer, block_pipe};
use crate::blobs::Hash;
use crate::bulk_io::{AlignedBuf, BulkReader, buffer_len};

/// Buffers per source: one being read, one queued, one being sent.
const BUFFERS: usize = 3;

/// Bytes per buffer, and per read: 1 MiB (files smaller than this get buffers of their own
/// size).
const READ_BYTES: usize = 1 << 20;

/// The first `len` bytes of a file, in blocks of at most 1 MiB (`READ_BYTES`), with their
/// BLAKE3 hash at the end. Dropping it stops the reader.
pub struct FileSource {
    blocks: Consumer,
    /// The block last returned by [`FileSource::next`].
    current: Option<AlignedBuf>,
    reader: JoinHandle<io::Result<Hash>>,
}

impl FileSource {
    /// Starts reading `file` from its start; `len` is the number of bytes to deliver.
    pub fn start(file: File, len: u64) -> Self {
        let capacity = buffer_len(len, READ_BYTES);
        let (mut empty, blocks) = block_pipe(BUFFERS, capacity);
        let reader = tokio::task::spawn_blocking(move || {
            let abandoned = || io::Error::other("the file's reader was abandoned");
            let mut reader = BulkReader::new(file, len);
            let mut hasher = blake3::Hasher::new();
            let mut left = len;
            while left > 0 {
                let mut buf = empty.blocking_empty().ok_or_else(abandoned)?;
                if reader.read_into(&mut buf)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended {left} bytes early"),
                    ));
                }
                buf.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                hasher.update(buf.as_slice());
                left -= buf.len() as u64;
                if !empty.blocking_send(buf) {
                    return Err(abandoned());
                }
            }
            Ok(*hasher.finalize().as_bytes())
        });
        Self {
            blocks,
            current: None,
            reader,
        }
    }

    /// The next block; `None` once all `len` bytes were delivered or the reader failed
    /// ([`FileSource::finish`] says which).
    pub async fn next(&mut self) -> Option<&[u8]> {
        if let Some(done) = self.current.take() {
            self.blocks.give_back(done);
        }
        let block = self.blocks.recv().await?;
        Some(self.current.insert(block).as_slice())
    }

    /// After the last block: the BLAKE3 hash of the `len` bytes delivered, or the error that
    /// stopped the reader (a file shorter than `len` gives [`io::ErrorKind::UnexpectedEof`]).
    pub async fn finish(self) -> io::Result<Hash> {
        let Self {
            blocks,
            current,
            reader,
        } = self;
        drop((blocks, current));
        match reader.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(dir: &std::path::Path, bytes: &[u8]) -> File {
        let path = dir.join("f");
        std::fs::write(&path, bytes).unwrap();
        File::open(path).unwrap()
    }

    async fn drain(mut source: FileSource) -> (Vec<u8>, io::Result<Hash>) {
        let mut got = Vec::new();
        while let Some(block) = source.next().await {
            assert!(!block.is_empty() && block.len() <= READ_BYTES);
            got.extend_from_slice(block);
        }
        (got, source.finish().await)
    }

    #[tokio::test]
    async fn delivers_len_bytes_in_order_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3_333_333u32).map(|i| (i % 251) as u8).collect();
        for len in [0, 1, 4096, 1 << 20, bytes.len()] {
            let source = FileSource::start(file_of(dir.path(), &bytes), len as u64);
            let (got, hash) = drain(source).await;
            assert!(got == bytes[..len], "{len} bytes came back different");
            assert_eq!(&hash.unwrap(), blake3::hash(&bytes[..len]).as_bytes());
        }
    }

    #[tokio::test]
    async fn a_short_file_is_an_error_not_a_silent_half() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = vec![9u8; 2 << 20];
        let source = FileSource::start(file_of(dir.path(), &bytes), bytes.len() as u64 + 1);
        let (got, hash) = drain(source).await;
        assert_eq!(got.len(), bytes.len());
        assert_eq!(hash.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
