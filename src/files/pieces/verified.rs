//! BLAKE3 verified ranges: a blob's outboard (its hash tree above chunk groups of 16 KiB, in
//! pre-order, as the `bao-tree` crate lays it out) and pieces encoded with the proof that
//! they belong to the blob's hash. Every function here is synchronous file I/O: callers run
//! them on a blocking thread.
//!
//! * A piece is a byte range `[start, end)` of the blob: `start` a multiple of
//!   [`GROUP_BYTES`], `end` one too or the blob's end, at most [`MAX_PIECE_BYTES`] long.
//! * Its encoding (PROTOCOL.md §11.6) is bao-tree's pre-order response for the chunk range
//!   the piece covers: for each tree node on the way from the root to the piece, the pair of
//!   child hashes (64 bytes), and the piece's chunk groups as raw bytes. The root is the
//!   plain BLAKE3 of the whole blob, so a tuple's hash is all a reader needs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Cursor};
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

use bao_tree::io::BaoContentItem;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges, outboard};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use positioned_io::{ReadAt, Size, WriteAt};

use crate::bulk_io::{BulkRead, RangeReader};

/// Chunk groups of 2^4 BLAKE3 chunks (16 KiB): the tree's leaves as the outboard keeps them.
pub const CHUNK_GROUP_LOG: u8 = 4;
/// Bytes in a chunk group.
pub const GROUP_BYTES: u64 = 1024 << CHUNK_GROUP_LOG;
/// The largest piece one request may ask for.
pub const MAX_PIECE_BYTES: u64 = 1 << 20;
/// The block size of every outboard and piece.
const BLOCK: BlockSize = BlockSize::from_chunk_log(CHUNK_GROUP_LOG);

/// A piece of a blob: bytes `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Piece {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Why a piece cannot be asked for, served or taken.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    /// The range is not a piece of a blob of this size.
    #[error("range {start}..{end} is not a piece of a {size}-byte blob ({why})")]
    NotAPiece {
        /// First byte asked for.
        start: u64,
        /// One past the last.
        end: u64,
        /// The blob's size.
        size: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The encoded bytes do not prove the piece: a wrong hash, a short or long encoding.
    #[error("bad proof: {0}")]
    BadProof(String),
    /// The blob on disk does not match its hash (found while making its outboard).
    #[error("the stored blob does not match its hash")]
    CorruptBlob,
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Piece {
    /// Checks that this is a piece of a blob of `size` bytes.
    pub fn check(self, size: u64) -> Result<(), PieceError> {
        let why = if self.start >= self.end {
            Some("empty")
        } else if self.end > size {
            Some("past the end")
        } else if !self.start.is_multiple_of(GROUP_BYTES) {
            Some("start not on a 16 KiB boundary")
        } else if !self.end.is_multiple_of(GROUP_BYTES) && self.end != size {
            Some("end neither on a 16 KiB boundary nor the blob's end")
        } else if self.end - self.start > MAX_PIECE_BYTES {
            Some("longer than 1 MiB")
        } else {
            None
        };
        match why {
            Some(why) => Err(PieceError::NotAPiece {
                start: self.start,
                end: self.end,
                size,
                why,
            }),
            None => Ok(()),
        }
    }

    /// Bytes in the piece.
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// Whether the piece has no bytes (never true of a checked piece).
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }

    /// The BLAKE3 chunks (1 KiB each) the piece covers.
    fn chunks(self) -> ChunkRanges {
        ChunkRanges::from(ChunkNum(self.start / 1024)..ChunkNum(self.end.div_ceil(1024)))
    }

    /// The most bytes the encoding of this piece can take: its bytes, plus one hash pair for
    /// every node on the way down to it (at most 64 levels) and between its chunk groups.
    pub fn max_encoded_len(self) -> u64 {
        let groups = self.len().div_ceil(GROUP_BYTES);
        self.len() + 64 * (2 * groups + 64)
    }
}

/// Splits a blob of `size` bytes into pieces of `piece_bytes` (rounded to whole chunk
/// groups, at least one, at most [`MAX_PIECE_BYTES`]).
pub fn pieces_of(size: u64, piece_bytes: u64) -> Vec<Piece> {
    let step = piece_bytes
        .clamp(GROUP_BYTES, MAX_PIECE_BYTES)
        .div_ceil(GROUP_BYTES)
        * GROUP_BYTES;
    (0..size.div_ceil(step))
        .map(|i| Piece {
            start: i * step,
            end: ((i + 1) * step).min(size),
        })
        .collect()
}

/// The tree of a blob of `size` bytes.
pub(crate) fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK)
}

/// Bytes of the outboard of a blob of `size` bytes (64 per hash pair above the chunk groups).
pub fn outboard_len(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Opens the outboard of the blob at `blob` (`size` bytes, BLAKE3 `root`) kept at `path`,
/// making it first when it is missing or has the wrong length: written beside it and renamed
/// into place, so a reader never sees half of one. Making one reads the whole blob once; a
/// thread that finds another making the same one waits for it instead of making it again.
pub fn open_outboard(
    blob: &Path,
    path: &Path,
    size: u64,
    root: &[u8; 32],
) -> Result<PreOrderOutboard<File>, PieceError> {
    if let Some(found) = existing_outboard(path, size, root)? {
        return Ok(found);
    }
    let _making = Making::start(*root);
    if let Some(found) = existing_outboard(path, size, root)? {
        return Ok(found);
    }
    make_outboard(blob, path, size, root)
}

/// The outboard at `path` if it is there with the right length.
fn existing_outboard(
    path: &Path,
    size: u64,
    root: &[u8; 32],
) -> io::Result<Option<PreOrderOutboard<File>>> {
    let tree = tree(size);
    match File::open(path) {
        Ok(file) if file.metadata()?.len() == tree.outboard_size() => Ok(Some(PreOrderOutboard {
            root: blake3::Hash::from_bytes(*root),
            tree,
            data: file,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn make_outboard(
    blob: &Path,
    path: &Path,
    size: u64,
    root: &[u8; 32],
) -> Result<PreOrderOutboard<File>, PieceError> {
    let tree = tree(size);
    let root = blake3::Hash::from_bytes(*root);
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("an outboard path has a parent"))?;
    std::fs::create_dir_all(dir)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut made = PreOrderOutboard {
        root,
        tree,
        data: temp.reopen()?,
    };
    let data = BulkRead::new(File::open(blob)?, size, 1 << 20);
    if outboard(data, tree, &mut made)? != root {
        return Err(PieceError::CorruptBlob);
    }
    made.data.sync_data()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(made)
}

/// The blobs whose outboards are being made in this process, and a wake-up when one is done.
static MAKING: (Mutex<BTreeSet<[u8; 32]>>, Condvar) = (Mutex::new(BTreeSet::new()), Condvar::new());

/// This thread makes the outboard of one blob; others wait until it is dropped.
struct Making([u8; 32]);

impl Making {
    fn start(root: [u8; 32]) -> Self {
        let (set, done) = &MAKING;
        let mut making = set.lock().unwrap_or_else(PoisonError::into_inner);
        while making.contains(&root) {
            making = done.wait(making).unwrap_or_else(PoisonError::into_inner);
        }
        making.insert(root);
        Making(root)
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        let (set, done) = &MAKING;
        set.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
        done.notify_all();
    }
}

/// The encoding of `piece` of the blob read by `blob` whose outboard is `outboard`, appended
/// to `out`. The piece's bytes are read in one go (around the page cache where allowed); they
/// are not checked against the tree here: the reader checks every one.
pub fn encode_piece(
    blob: &RangeReader,
    outboard: &PreOrderOutboard<File>,
    piece: Piece,
    out: &mut Vec<u8>,
) -> Result<(), PieceError> {
    let size = outboard.tree.size();
    piece.check(size)?;
    let bytes = blob.read(piece.start, piece.len() as usize)?;
    if bytes.len() as u64 != piece.len() {
        return Err(PieceError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stored blob is shorter than its tuple says",
        )));
    }
    let window = Window {
        start: piece.start,
        bytes: bytes.as_slice(),
        size,
    };
    encode_ranges(window, outboard, &piece.chunks(), out).map_err(|e| match e {
        bao_tree::io::EncodeError::Io(e) => PieceError::Io(e),
        other => PieceError::Io(io::Error::other(other.to_string())),
    })
}

/// The bytes of one piece, standing for the whole blob of `size` bytes while it is encoded
/// (the encoder reads only the piece).
struct Window<'a> {
    start: u64,
    bytes: &'a [u8],
    size: u64,
}

impl ReadAt for Window<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let at = pos
            .checked_sub(self.start)
            .and_then(|at| usize::try_from(at).ok())
            .filter(|at| *at <= self.bytes.len())
            .ok_or_else(|| io::Error::other("a read outside the piece"))?;
        let n = buf.len().min(self.bytes.len() - at);
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        Ok(n)
    }
}

impl Size for Window<'_> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.size))
    }
}

/// Checks `encoded` as the encoding of `piece` of the blob of `size` bytes whose BLAKE3 is
/// `root`, writing each verified chunk group into `target` at its offset. Nothing is written
/// that does not verify; an error may leave the groups before the bad one written.
pub fn decode_piece(
    root: &[u8; 32],
    size: u64,
    piece: Piece,
    encoded: &[u8],
    target: &mut impl WriteAt,
) -> Result<(), PieceError> {
    piece.check(size)?;
    let bad = |why: String| PieceError::BadProof(why);
    let ranges = piece.chunks();
    let mut reader = Cursor::new(encoded);
    let mut written = 0u64;
    {
        let items = DecodeResponseIter::new(
            blake3::Hash::from_bytes(*root),
            tree(size),
            &mut reader,
            &ranges,
        );
        for item in items {
            match item.map_err(|e| bad(e.to_string()))? {
                BaoContentItem::Parent(_) => {}
                BaoContentItem::Leaf(leaf) => {
                    let end = leaf.offset + leaf.data.len() as u64;
                    if leaf.offset < piece.start || end > piece.end {
                        return Err(bad(format!(
                            "bytes {}..{end} outside the piece",
                            leaf.offset
                        )));
                    }
                    target.write_all_at(leaf.offset, &leaf.data)?;
                    written += leaf.data.len() as u64;
                }
            }
        }
    }
    if written != piece.len() {
        return Err(bad(format!("{written} of {} bytes", piece.len())));
    }
    if reader.position() != encoded.len() as u64 {
        return Err(bad(format!(
            "{} bytes after the piece",
            encoded.len() as u64 - reader.position()
        )));
    }
    Ok(())
}

/// Writes into a file shared by several pieces (`pwrite`, so no position is shared).
pub struct FileAt<'a>(pub &'a File);

impl WriteAt for FileAt<'_> {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self.0, buf, pos)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
