//! Bulk file data around the page cache: large blobs and fetched files are written and read
//! with direct I/O where the system allows it.
//!
//! **Why.** A blob is written once, fsynced, and then read rarely (a get, a repair, a scrub);
//! keeping its pages cached buys little, and filling the cache costs CPU. On this project's test
//! VM, `dd` moving 1 GiB measured (BENCHMARKS.md, "1 GiB put and get: direct I/O"):
//!
//! | | through the page cache | direct I/O |
//! |---|---|---|
//! | write, new file | 3.1–3.4 s of kernel CPU | 0.1–0.3 s |
//! | read, not cached | 1.4–2.7 s of kernel CPU | 0.1 s |
//!
//! **How.** On Linux a file of at least [`DIRECT_MIN_BYTES`] gets `O_DIRECT` (set with
//! `fcntl` on the open file) when its filesystem accepts it. Direct transfers need memory,
//! file offset and length in whole [`BLOCK_BYTES`] blocks: [`AlignedBuf`] provides the memory,
//! and the writers hand over whole buffers. Anything else (a file's tail, a filesystem or
//! device that refuses) goes through the page cache as before: the file leaves direct I/O for
//! good, and [`writeback`] starts its writeback early. Durability is unchanged: direct I/O does
//! not flush the disk's own cache, so every file still ends with an fsync.
//!
//! Elsewhere than Linux everything goes through the page cache.

use std::fs::File;
use std::io::{self, Read, Write};

use crate::writeback;

/// The unit of direct transfers, in bytes: memory, file offsets and lengths are multiples of
/// it. 4 KiB covers the logical block size of common disks and filesystems; a device that
/// needs more refuses, and the file falls back to the page cache.
pub const BLOCK_BYTES: usize = 4096;

/// Files smaller than this (1 MiB) stay in the page cache: small files are cheap to cache and
/// may be read again soon.
pub const DIRECT_MIN_BYTES: u64 = 1 << 20;

/// A fixed-capacity byte buffer whose contents start on a [`BLOCK_BYTES`] boundary, as direct
/// I/O needs. The capacity is rounded up to whole blocks.
pub struct AlignedBuf {
    storage: Vec<u8>,
    /// Offset of the aligned region in `storage`.
    start: usize,
    /// Bytes held, from `start`.
    len: usize,
    capacity: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl AlignedBuf {
    /// An empty buffer of at least `capacity` bytes (at least one block).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let storage = vec![0u8; capacity + BLOCK_BYTES];
        // `align_offset` may, in principle, decline (usize::MAX); the buffer then works
        // unaligned, and direct transfers of it fall back to the page cache.
        let start = match storage.as_ptr().align_offset(BLOCK_BYTES) {
            offset if offset < BLOCK_BYTES => offset,
            _ => 0,
        };
        Self {
            storage,
            start,
            len: 0,
            capacity,
        }
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the buffer holds its capacity.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Capacity in bytes (whole blocks).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the bytes held.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `len` bytes held (all of them if fewer are held).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn extend(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The whole capacity, for reading into; the bytes held are forgotten.
    fn whole_mut(&mut self) -> &mut [u8] {
        self.len = 0;
        &mut self.storage[self.start..self.start + self.capacity]
    }
}

/// The buffer size for a file of `file_len` bytes: `max`, or the file's own length when it is
/// smaller (a small file gets no larger buffer than it needs).
pub fn buffer_len(file_len: u64, max: usize) -> usize {
    usize::try_from(file_len).map_or(max, |len| len.min(max))
}

/// Whether `data` can be a direct transfer: aligned memory, whole blocks.
fn is_aligned(data: &[u8]) -> bool {
    data.as_ptr().align_offset(BLOCK_BYTES) == 0 && data.len().is_multiple_of(BLOCK_BYTES)
}

/// Whether an error is the one a refused direct transfer gives (`EINVAL`).
fn is_refusal(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    return e.raw_os_error() == Some(libc::EINVAL);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

/// Turns direct I/O on or off for `file`. Fails (`EINVAL`) when turning it on where the
/// filesystem does not support it.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open for the whole call (borrowed from `file`); F_GETFL only reads the
    // file's status flags and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above; F_SETFL only sets the file's status flags.
    if wanted != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    } else {
        Ok(())
    }
}

/// Turns direct I/O on for a file expected to hold `len` bytes, when that is worth it and
/// allowed; returns whether it is on.
fn enable_for(file: &File, len: u64) -> bool {
    len >= DIRECT_MIN_BYTES && set_direct(file, true).is_ok()
}

/// A file written from its start, in order (blocking). Buffers given to
/// [`BulkWriter::write_all`] that are whole aligned blocks go around the page cache while the
/// file is in direct I/O; see the [module docs](self).
#[derive(Debug)]
pub struct BulkWriter {
    file: File,
    direct: bool,
    /// Bytes written so far.
    written: u64,
}

impl BulkWriter {
    /// Wraps a new, empty `file` that is expected to receive `len` bytes.
    pub fn new(file: File, len: u64) -> Self {
        let direct = enable_for(&file, len);
        Self {
            file,
            direct,
            written: 0,
        }
    }

    /// Whether writes currently go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.direct && !is_aligned(rest) {
                self.leave_direct()?;
            }
            match self.file.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let before = self.written;
                    self.written += n as u64;
                    if !self.direct {
                        writeback::wrote(&self.file, before, self.written);
                    }
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && is_refusal(&e) => self.leave_direct()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fsyncs the file: its data and its size.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn leave_direct(&mut self) -> io::Result<()> {
        set_direct(&self.file, false)?;
        self.direct = false;
        Ok(())
    }
}

/// A file read from its start, in order, a buffer at a time (blocking); around the page
/// cache while the file is in direct I/O (see the [module docs](self)).
#[derive(Debug)]
pub struct BulkReader {
    file: File,
    direct: bool,
}

impl BulkReader {
    /// Wraps `file`, positioned at its start, of `len` bytes.
    pub fn new(file: File, len: u64) -> Self {
        let direct = enable_for(&file, len);
        Self { file, direct }
    }

    /// Whether reads currently go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Replaces the contents of `buffer` with the next bytes of the file: as many as it holds,
    /// fewer only at the end, none once the end is reached. Returns how many.
    pub fn read_into(&mut self, buffer: &mut AlignedBuf) -> io::Result<usize> {
        let mut filled = 0;
        let whole = buffer.whole_mut();
        while filled < whole.len() {
            let into = &mut whole[filled..];
            if self.direct && !is_aligned(into) {
                set_direct(&self.file, false)?;
                self.direct = false;
            }
            match self.file.read(into) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && is_refusal(&e) => {
                    set_direct(&self.file, false)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        buffer.len = filled;
        Ok(filled)
    }
}

/// A [`Read`] over a whole file through [`BulkReader`] (around the page cache where the system
/// allows it), `buffer` bytes at a time, for readers that want `std::io::Read`.
pub struct BulkRead {
    reader: BulkReader,
    buffer: AlignedBuf,
    at: usize,
}

impl BulkRead {
    /// Reads `file` (of `len` bytes) from its start with a buffer of `buffer` bytes.
    pub fn new(file: File, len: u64, buffer: usize) -> Self {
        Self {
            reader: BulkReader::new(file, len),
            buffer: AlignedBuf::with_capacity(buffer_len(len.max(1), buffer)),
            at: 0,
        }
    }
}

impl Read for BulkRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buffer.len() {
            self.at = 0;
            if self.reader.read_into(&mut self.buffer)? == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len() - self.at);
        out[..n].copy_from_slice(&self.buffer.as_slice()[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads ranges of a file at any offset (blocking, shareable between threads): around the
/// page cache when the range starts on a block and the system allows it, through it otherwise.
#[derive(Debug)]
pub struct RangeReader {
    /// The file opened again with direct I/O, when that is on.
    direct: Option<File>,
    /// The file through the page cache.
    cached: File,
}

impl RangeReader {
    /// Reads `path`, a file of `len` bytes.
    pub fn open(path: &std::path::Path, len: u64) -> io::Result<Self> {
        let cached = File::open(path)?;
        let direct = File::open(path)?;
        let direct = enable_for(&direct, len).then_some(direct);
        Ok(Self { direct, cached })
    }

    /// `len` bytes at `offset` (fewer at the end of the file), into a new buffer.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<AlignedBuf> {
        use std::os::unix::fs::FileExt;
        let mut buffer = AlignedBuf::with_capacity(len);
        let whole = buffer.whole_mut();
        let mut filled = 0;
        if let Some(direct) = &self.direct
            && offset.is_multiple_of(BLOCK_BYTES as u64)
        {
            // Whole blocks: the tail past `len` (or past the end) is read and dropped.
            while filled < whole.len() {
                match direct.read_at(&mut whole[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) if n % BLOCK_BYTES == 0 => filled += n,
                    Ok(n) => {
                        filled += n;
                        break; // the end of the file
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if is_refusal(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        while filled < len {
            match self
                .cached
                .read_at(&mut whole[filled..len], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buffer.len = filled.min(len);
        Ok(buffer)
    }
}

/// Writes ranges of an existing file at any offset (blocking, shareable between threads):
/// around the page cache when the range is whole aligned blocks and the system allows it,
/// through it otherwise.
#[derive(Debug)]
pub struct RangeWriter {
    /// The file opened again with direct I/O, when that is on.
    direct: Option<File>,
    /// The file through the page cache.
    cached: File,
}

impl RangeWriter {
    /// Writes into `path`, a file of `len` bytes.
    pub fn open(path: &std::path::Path, len: u64) -> io::Result<Self> {
        let open = || std::fs::OpenOptions::new().write(true).open(path);
        let cached = open()?;
        let direct = open()?;
        let direct = enable_for(&direct, len).then_some(direct);
        Ok(Self { direct, cached })
    }

    /// Writes all of `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(direct) = &self.direct
            && is_aligned(data)
            && offset.is_multiple_of(BLOCK_BYTES as u64)
        {
            match direct.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                Err(e) if is_refusal(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.cached.write_all_at(data, offset)
    }

    /// Fsyncs the file.
    pub fn sync_all(&self) -> io::Result<()> {
        self.cached.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn aligned_buf_is_aligned_and_bounded() {
        let mut buf = AlignedBuf::with_capacity(5000);
        assert_eq!(buf.capacity(), 2 * BLOCK_BYTES);
        assert_eq!(buf.as_slice().as_ptr().align_offset(BLOCK_BYTES), 0);
        assert_eq!(buf.extend(&[1; 6000]), 6000);
        assert_eq!(buf.extend(&[2; 6000]), 2 * BLOCK_BYTES - 6000);
        assert!(buf.is_full());
        assert_eq!(buf.as_slice()[5999], 1);
        assert_eq!(buf.as_slice()[6000], 2);
        buf.clear();
        assert!(buf.is_empty());
        buf.extend(&[3; 100]);
        buf.truncate(40);
        assert_eq!(buf.as_slice(), &[3; 40]);
        buf.truncate(50);
        assert_eq!(buf.len(), 40);
        assert!(is_aligned(&buf.whole_mut()[..BLOCK_BYTES]));
        assert!(!is_aligned(&buf.whole_mut()[1..BLOCK_BYTES + 1]));
    }

    /// Writes `len` bytes in `pieces` of whole aligned buffers plus a tail, reads them back
    /// through a `BulkReader` with an odd buffer size, and checks every byte.
    fn round_trip(dir: &std::path::Path, len: usize, piece: usize) -> (bool, bool) {
        let path = dir.join(format!("f{len}-{piece}"));
        let data = pattern(len, 7);
        let mut writer = BulkWriter::new(File::create(&path).unwrap(), len as u64);
        let went_direct = writer.is_direct();
        let mut buf = AlignedBuf::with_capacity(piece);
        for chunk in data.chunks(1000) {
            let mut rest = chunk;
            while !rest.is_empty() {
                rest = &rest[buf.extend(rest)..];
                if buf.is_full() {
                    writer.write_all(buf.as_slice()).unwrap();
                    buf.clear();
                }
            }
        }
        writer.write_all(buf.as_slice()).unwrap();
        writer.sync_all().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);

        let mut reader = BulkReader::new(File::open(&path).unwrap(), len as u64);
        let read_direct = reader.is_direct();
        let mut back = Vec::new();
        let mut buf = AlignedBuf::with_capacity(3 * BLOCK_BYTES);
        while reader.read_into(&mut buf).unwrap() > 0 {
            back.extend_from_slice(buf.as_slice());
        }
        assert!(
            back == data,
            "{len} bytes in pieces of {piece} came back different"
        );
        (went_direct, read_direct)
    }

    #[test]
    fn every_size_comes_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let min = DIRECT_MIN_BYTES as usize;
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            100_000,
            min - 1,
            min,
            min + 1,
            3 * min + 123,
        ] {
            round_trip(dir.path(), len, 64 * 1024);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_files_go_direct_where_supported_and_small_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let min = DIRECT_MIN_BYTES as usize;
        assert_eq!(round_trip(dir.path(), min - 1, 64 * 1024), (false, false));
        let probe = File::create(dir.path().join("probe")).unwrap();
        if set_direct(&probe, true).is_ok() {
            assert_eq!(round_trip(dir.path(), 2 * min + 5, 64 * 1024), (true, true));
        } else {
            // This filesystem has no direct I/O: the page cache carries everything.
            assert_eq!(
                round_trip(dir.path(), 2 * min + 5, 64 * 1024),
                (false, false)
            );
        }
    }

    #[test]
    fn an_unaligned_write_leaves_direct_io_and_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 2 * DIRECT_MIN_BYTES as usize;
        let data = pattern(len, 3);
        let mut writer = BulkWriter::new(File::create(&path).unwrap(), len as u64);
        // Plain Vec memory is rarely block-aligned; at 1 byte it never is.
        writer.write_all(&data[..1]).unwrap();
        assert!(!writer.is_direct());
        writer.write_all(&data[1..]).unwrap();
        writer.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn ranges_and_whole_reads_give_the_files_bytes_wherever_they_fall() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("f");
        let data = pattern((3 << 20) + 1234, 7);
        std::fs::write(&path, &data).expect("written");
        let reader = RangeReader::open(&path, data.len() as u64).expect("opened");
        for (offset, len) in [
            (0usize, 1 << 20),
            (16 << 10, 5000),
            (4097, 100),
            ((3 << 20), 1234),
            ((3 << 20), 4096),
        ] {
            let got = reader.read(offset as u64, len).expect("read");
            let end = (offset + len).min(data.len());
            assert_eq!(got.as_slice(), &data[offset..end], "{offset}+{len}");
        }
        let mut whole = Vec::new();
        BulkRead::new(File::open(&path).expect("open"), data.len() as u64, 1 << 20)
            .read_to_end(&mut whole)
            .expect("read");
        assert!(whole == data);
    }
}
