//! Content-addressed blob files, crash-safe.
//!
//! A blob is stored at `DATA_DIR/blobs/<first 2 hex chars>/<64 hex chars>`, named by the
//! BLAKE3 hash of its content. A blob being received is written to a fresh file in
//! `DATA_DIR/blobs/tmp/`; only after its size and hash are checked and the file is fsynced is
//! it renamed to its content address (then the directory is fsynced). A crash at any point
//! therefore leaves at most a partial file in `tmp/`, never a partial blob, and
//! [`BlobStore::open`] empties `tmp/`.
//!
//! Every disk access runs on tokio's blocking pool ([`tokio::task::spawn_blocking`] or
//! [`tokio::fs`]). A blob over one chunk group (16 KiB) is hashed as its outboard is made,
//! on a blocking thread while it arrives ([`crate::files::pieces::streamed`]), and the
//! outboard is put in place right after the blob; smaller ones are hashed on the caller's
//! task. One process uses a data directory at a time: `open` deletes whatever is in
//! `tmp/`.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher as _};
use std::io;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::bulk_io::{AlignedBuf, BulkReader, BulkWriter, buffer_len};
use crate::files::pieces::streamed::OutboardMaker;

/// A BLAKE3 hash: the address of a blob.
pub type Hash = [u8; 32];

/// Bytes gathered by a [`BlobWriter`] before one write to disk: 1 MiB. Writes are
/// double-buffered (one buffer fills while the other is written), so a writer holds at most
/// 2 MiB. Blobs smaller than this get a buffer of their own size (in whole 4 KiB blocks).
/// Blobs of 1 MiB or more are written around the page cache where the filesystem allows
/// ([`crate::bulk_io`]).
const WRITE_BUFFER: usize = 1024 * 1024;

/// Bytes read at a time by [`BlobStore::verify`]: 256 KiB.
const VERIFY_CHUNK: usize = 256 * 1024;

/// Sub-directory of the data directory that holds the blobs.
const BLOBS_DIR: &str = "blobs";

/// Sub-directory of [`BLOBS_DIR`] that holds partial blobs.
const TMP_DIR: &str = "tmp";
/// Outboards (BLAKE3 hash trees of blobs over 16 KiB: made while a blob is written through a
/// [`BlobWriter`], otherwise in the background after it is stored or when its pieces are
/// first asked for), sharded like the blobs: `DATA_DIR/outboards/ab/abcd…`, with those being
/// made in `DATA_DIR/outboards/tmp/`. They take about 0.4% of their blob's size and are not
/// counted against the store's capacity.
const OUTBOARDS_DIR: &str = "outboards";

/// Makes temp file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The announced size exceeds the store's maximum file size.
    #[error("file of {size} bytes exceeds the maximum file size of {max} bytes")]
    TooLarge {
        /// Announced size, in bytes.
        size: u64,
        /// Maximum file size, in bytes.
        max: u64,
    },
    /// Storing the blob would exceed the store's capacity or the disk's available bytes.
    #[error("not enough storage: {size} bytes wanted, {free} bytes free")]
    NoSpace {
        /// Announced size, in bytes.
        size: u64,
        /// Free bytes when refused (see [`BlobStore::free`]).
        free: u64,
    },
    /// The bytes received do not add up to the announced size.
    #[error("received {got} bytes, expected {expected}")]
    SizeMismatch {
        /// Announced size, in bytes.
        expected: u64,
        /// Bytes received (or that would have been received), in bytes.
        got: u64,
    },
    /// The content does not hash to the expected address.
    #[error("content hash mismatch: expected {expected}, got {got}")]
    HashMismatch {
        /// Expected hash, hex.
        expected: String,
        /// Hash of the bytes received, hex.
        got: String,
    },
    /// A file system error.
    #[error("blob store i/o: {0}")]
    Io(#[from] io::Error),
}

/// Bytes accounted for, guarded together so that concurrent reservations cannot over-commit.
#[derive(Debug, Default)]
struct Accounting {
    /// Bytes in stored blobs.
    used: u64,
    /// Bytes promised to live writers.
    reserved: u64,
}

/// State shared by the store and its writers.
#[derive(Debug)]
struct Shared {
    /// `DATA_DIR/blobs`.
    root: PathBuf,
    /// `DATA_DIR/blobs/tmp`.
    tmp: PathBuf,
    /// Bytes the store may hold, stored plus reserved.
    capacity: u64,
    /// Largest blob accepted, in bytes.
    max_file_size: u64,
    /// Bytes the filesystem of `root` had available at the last look ([`disk_available`]);
    /// `u64::MAX` when it could not be read.
    disk_available: AtomicU64,
    accounting: Mutex<Accounting>,
    /// Serializes the install (exists? rename) and removal of blobs, so a blob is counted in
    /// `used` exactly once. Taken only on blocking threads.
    commit: Mutex<()>,
}

impl Shared {
    fn accounting(&self) -> MutexGuard<'_, Accounting> {
        lock(&self.accounting)
    }

    /// Free bytes given `acc`: the smaller of the configured room (capacity minus stored minus
    /// reserved) and the disk's available bytes minus those reserved (bytes promised to live
    /// writers may not be on the disk yet; counting them again is on the safe side).
    fn free(&self, acc: &Accounting) -> u64 {
        let room = self
            .capacity
            .saturating_sub(acc.used)
            .saturating_sub(acc.reserved);
        let disk = self
            .disk_available
            .load(Ordering::Relaxed)
            .saturating_sub(acc.reserved);
        room.min(disk)
    }
}

/// Bytes the filesystem holding `path` has available to unprivileged writers (`statvfs`:
/// `f_bavail × f_frsize`); `None` when it cannot be read. Blocks (a metadata call): run it off
/// the async threads.
pub fn disk_available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is plain old data; zeroed is a valid value, filled in by the call.
    let mut stats: libc::statvfs = unsafe { mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live `statvfs`.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// Whether `error` says the disk (or the user's quota) is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

/// Locks a mutex; a panic while holding it leaves plain numbers behind, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The blob store of one data directory. Cheap to share behind an [`Arc`]; every method takes
/// `&self`.
#[derive(Debug)]
pub struct BlobStore {
    shared: Arc<Shared>,
}

impl BlobStore {
    /// Opens or creates the store in `data_dir/blobs`, removes every leftover in
    /// `data_dir/blobs/tmp/` (partial blobs of an earlier run), and sums the sizes of the stored
    /// blobs. Files whose name is not a lowercase 64-hex-char hash in the right 2-char shard are
    /// ignored (and logged with `tracing::warn`).
    ///
    /// `capacity`: bytes the store may hold (stored plus reserved by live writers).
    /// `max_file_size`: largest blob accepted, in bytes. Neither has a default here: they come
    /// from the node's configuration.
    pub async fn open(
        data_dir: &Path,
        capacity: u64,
        max_file_size: u64,
    ) -> Result<Self, BlobError> {
        let root = data_dir.join(BLOBS_DIR);
        let tmp = root.join(TMP_DIR);
        let (scan_root, scan_tmp) = (root.clone(), tmp.clone());
        let outboards_tmp = outboards_tmp(&root);
        let (used, disk) = blocking(move || {
            fs::create_dir_all(&scan_tmp)?;
            fs::create_dir_all(&outboards_tmp)?;
            let removed = clear_dir(&scan_tmp)? + clear_dir(&outboards_tmp)?;
            if removed > 0 {
                tracing::info!(
                    "removed {removed} partial blob or outboard file(s) left in {} and {}",
                    scan_tmp.display(),
                    outboards_tmp.display()
                );
            }
            let blobs = scan(&scan_root, true)?;
            let used = blobs
                .iter()
                .fold(0u64, |sum, (_, len)| sum.saturating_add(*len));
            Ok((used, disk_available(&scan_root).unwrap_or(u64::MAX)))
        })
        .await?;
        Ok(BlobStore {
            shared: Arc::new(Shared {
                root,
                tmp,
                capacity,
                max_file_size,
                disk_available: AtomicU64::new(disk),
                accounting: Mutex::new(Accounting { used, reserved: 0 }),
                commit: Mutex::new(()),
            }),
        })
    }

    /// Starts receiving a blob of `size` bytes. Refuses before any byte moves: `size` above the
    /// maximum file size → [`BlobError::TooLarge`]; `size` above what is free (the configured
    /// room or the disk's available bytes, read again now, whichever is smaller) →
    /// [`BlobError::NoSpace`]. Otherwise reserves `size` bytes (until the writer is finished or
    /// dropped) and returns a writer to a fresh temp file.
    pub async fn create(&self, size: u64) -> Result<BlobWriter, BlobError> {
        let shared = &self.shared;
        if size > shared.max_file_size {
            return Err(BlobError::TooLarge {
                size,
                max: shared.max_file_size,
            });
        }
        self.refresh_disk().await;
        let reservation = {
            let mut acc = shared.accounting();
            let free = shared.free(&acc);
            if size > free {
                return Err(BlobError::NoSpace { size, free });
            }
            acc.reserved += size;
            Reservation {
                shared: Arc::clone(shared),
                bytes: size,
            }
        };
        let dir = shared.tmp.clone();
        let hashing = if size > crate::files::pieces::verified::GROUP_BYTES {
            Hashing::Tree(OutboardMaker::start(outboards_tmp(&shared.root), size))
        } else {
            Hashing::Plain(Box::default())
        };
        let (file, path) = blocking(move || {
            let (file, path) = create_temp_file(&dir)?;
            Ok((BulkWriter::new(file, size), path))
        })
        .await?;
        Ok(BlobWriter {
            disk: Disk::Idle { file, spare: None },
            temp: TempFile { path, armed: true },
            reservation,
            size,
            written: 0,
            hashing,
            buffer: AlignedBuf::with_capacity(buffer_len(size, WRITE_BUFFER)),
        })
    }

    /// Starts receiving a blob of `size` bytes in verified pieces written at their offsets
    /// (repair from several holders): refused and reserved as [`BlobStore::create`] does; the
    /// temp file is `size` bytes long from the start.
    pub async fn create_in_pieces(&self, size: u64) -> Result<PiecesWriter, BlobError> {
        let writer = self.create(size).await?;
        let BlobWriter {
            temp, reservation, ..
        } = writer;
        let path = temp.path.clone();
        let (file, writer) = blocking(move || {
            let file = fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(size)?;
            let writer = crate::bulk_io::RangeWriter::open(&path, size)?;
            Ok((file, writer))
        })
        .await?;
        Ok(PiecesWriter {
            file,
            writer: Arc::new(writer),
            temp,
            reservation,
        })
    }

    /// Where the blob `hash` is (or would be) stored.
    pub fn path_of(&self, hash: &Hash) -> PathBuf {
        blob_path(&self.shared.root, hash)
    }

    /// Where the outboard of the blob `hash` is (or would be) kept.
    pub fn outboard_path_of(&self, hash: &Hash) -> PathBuf {
        outboard_path(&self.shared.root, hash)
    }

    /// Whether the blob `hash` is stored.
    pub async fn contains(&self, hash: &Hash) -> bool {
        tokio::fs::metadata(self.path_of(hash))
            .await
            .is_ok_and(|m| m.is_file())
    }

    /// Opens a stored blob for reading: the file and its length in bytes, or `None` when the
    /// blob is not stored.
    pub async fn open_blob(
        &self,
        hash: &Hash,
    ) -> Result<Option<(tokio::fs::File, u64)>, BlobError> {
        match tokio::fs::File::open(self.path_of(hash)).await {
            Ok(file) => {
                let len = file.metadata().await?.len();
                Ok(Some((file, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Re-hashes a stored blob, streaming it in 256 KiB chunks on a blocking thread (around
    /// the page cache for blobs of 1 MiB or more, where the filesystem allows).
    /// `Ok(true)` when its content matches its name; a missing blob gives `Ok(false)`.
    pub async fn verify(&self, hash: &Hash) -> Result<bool, BlobError> {
        let path = self.path_of(hash);
        let expected = *hash;
        blocking(move || {
            let file = match fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            let mut reader = BulkReader::new(file, len);
            let mut buffer = AlignedBuf::with_capacity(VERIFY_CHUNK);
            let mut hasher = blake3::Hasher::new();
            while reader.read_into(&mut buffer)? > 0 {
                hasher.update(buffer.as_slice());
            }
            Ok(*hasher.finalize().as_bytes() == expected)
        })
        .await
    }

    /// Deletes a stored blob and its outboard (a missing blob is fine) and subtracts its
    /// size from `used`.
    pub async fn remove(&self, hash: &Hash) -> Result<(), BlobError> {
        let shared = Arc::clone(&self.shared);
        let outboard = self.outboard_path_of(hash);
        let hash = *hash;
        blocking(move || {
            let _commit = lock(&shared.commit);
            match fs::remove_file(&outboard) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let path = blob_path(&shared.root, &hash);
            let len = match fs::symlink_metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            let mut acc = shared.accounting();
            acc.used = acc.used.saturating_sub(len);
            Ok(())
        })
        .await
    }

    /// Hashes of every stored blob (for garbage collection), in no particular order.
    pub async fn list(&self) -> Result<Vec<Hash>, BlobError> {
        let root = self.shared.root.clone();
        let blobs = blocking(move || scan(&root, false)).await?;
        Ok(blobs.into_iter().map(|(hash, _)| hash).collect())
    }

    /// Every stored blob and its length in bytes, in no particular order.
    pub async fn list_sized(&self) -> Result<Vec<(Hash, u64)>, BlobError> {
        let root = self.shared.root.clone();
        blocking(move || scan(&root, false)).await
    }

    /// Bytes in stored blobs.
    pub fn used(&self) -> u64 {
        self.shared.accounting().used
    }

    /// Bytes still available: the smaller of the configured room (capacity minus stored
    /// minus reserved by live writers; 0 when the store is over capacity, e.g. after the
    /// capacity was lowered) and the disk's available bytes at the last look (less those
    /// reserved). This is the free space a node gossips, places by, and shows.
    pub fn free(&self) -> u64 {
        let acc = self.shared.accounting();
        self.shared.free(&acc)
    }

    /// Reads the disk's available bytes again (on the blocking pool); [`BlobStore::free`]
    /// uses the last value read. [`BlobStore::create`] refreshes it itself; the node calls this
    /// once a second.
    pub async fn refresh_disk(&self) {
        let shared = Arc::clone(&self.shared);
        let read = tokio::task::spawn_blocking(move || {
            let disk = disk_available(&shared.root).unwrap_or(u64::MAX);
            shared.disk_available.store(disk, Ordering::Relaxed);
        });
        let _ = read.await;
    }

    /// Bytes the store may hold (stored plus reserved), as given to [`BlobStore::open`].
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Largest blob accepted, in bytes, as given to [`BlobStore::open`].
    pub fn max_file_size(&self) -> u64 {
        self.shared.max_file_size
    }
}

/// Bytes reserved for a live writer; released when dropped unless committed.
#[derive(Debug)]
struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Reservation {
    /// Turns the reservation into stored bytes (the blob was installed).
    fn commit(mut self) {
        let bytes = mem::take(&mut self.bytes);
        let mut acc = self.shared.accounting();
        acc.reserved = acc.reserved.saturating_sub(bytes);
        acc.used = acc.used.saturating_add(bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut acc = self.shared.accounting();
            acc.reserved = acc.reserved.saturating_sub(self.bytes);
        }
    }
}

/// A temp file that is removed when dropped, unless disarmed (renamed into place).
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Removes the file now, from a blocking thread (best effort).
    fn remove_blocking(mut self) {
        self.armed = false;
        let _ = fs::remove_file(&self.path);
    }

    /// Removes the file now, awaiting the removal (best effort).
    async fn remove(mut self) {
        self.armed = false;
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

impl Drop for TempFile {
    /// Best effort: on a blocking thread when a tokio runtime is present, else right here. What
    /// is missed (e.g. the runtime is shutting down) is removed by the next [`BlobStore::open`].
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let path = mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || {
                    let _ = fs::remove_file(path);
                });
            }
            Err(_) => {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// The temp file of a writer, and the state of the write in flight.
#[derive(Debug)]
enum Disk {
    /// No write in flight. `spare`: the buffer of the last write, for reuse.
    Idle {
        file: BulkWriter,
        spare: Option<AlignedBuf>,
    },
    /// A buffer is being written on the blocking pool.
    Busy(JoinHandle<io::Result<(BulkWriter, AlignedBuf)>>),
    /// A write failed or was cancelled: the writer is unusable.
    Broken,
}

/// How a writer hashes what it receives.
#[derive(Debug)]
enum Hashing {
    /// A blob of one chunk group (16 KiB) or less: its BLAKE3 (it needs no outboard).
    Plain(Box<blake3::Hasher>),
    /// A larger blob: its outboard, made as the bytes arrive, whose root is its BLAKE3.
    Tree(OutboardMaker),
}

/// Receives one blob into a temp file; see [`BlobStore::create`]. Holds its reservation:
/// dropping the writer (without [`BlobWriter::finish`]) releases it and removes the temp file.
pub struct BlobWriter {
    disk: Disk,
    temp: TempFile,
    reservation: Reservation,
    /// Announced size, in bytes.
    size: u64,
    /// Bytes accepted so far.
    written: u64,
    hashing: Hashing,
    /// Bytes accepted but not yet handed to the disk.
    buffer: AlignedBuf,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp.path)
            .field("size", &self.size)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Appends `chunk`, hashing it as it goes. Refuses ([`BlobError::SizeMismatch`], nothing
    /// appended) when the total would exceed the announced size. Bytes are gathered into
    /// 1 MiB buffers, each written on the blocking pool while the next one fills.
    ///
    /// If this future is dropped before completing, or a disk write fails, the writer is
    /// unusable: later calls fail with [`BlobError::Io`].
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let got = self.written.saturating_add(chunk.len() as u64);
        if got > self.size {
            return Err(BlobError::SizeMismatch {
                expected: self.size,
                got,
            });
        }
        if matches!(self.disk, Disk::Broken) {
            return Err(broken().into());
        }
        if let Hashing::Plain(hasher) = &mut self.hashing {
            hasher.update(chunk);
        }
        self.written = got;
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = &rest[self.buffer.extend(rest)..];
            if self.buffer.is_full() {
                self.flush_buffer().await?;
            }
        }
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the blob: checks that exactly the announced size was written
    /// ([`BlobError::SizeMismatch`]) and, when `expected` is given, that the content hashes to
    /// it ([`BlobError::HashMismatch`]); then fsyncs the file, renames it to its content address
    /// (if that blob is already stored, the temp file is just removed: same content), fsyncs the
    /// directory, counts the blob in `used`, and returns its hash. On any error the temp file is
    /// removed and the reservation released.
    pub async fn finish(mut self, expected: Option<Hash>) -> Result<Hash, BlobError> {
        let (hash, outboard) = match mem::replace(&mut self.hashing, Hashing::Plain(Box::default()))
        {
            Hashing::Plain(hasher) => (*hasher.finalize().as_bytes(), None),
            Hashing::Tree(mut maker) => {
                if self.written == self.size {
                    maker.feed(self.buffer.as_slice().to_vec()).await?;
                }
                // Short of the announced size, the maker ends in an error: the size
                // mismatch below is the one reported.
                match maker.finish().await {
                    Ok(made) => (made.root, Some(made)),
                    Err(_) if self.written != self.size => ([0; 32], None),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let refusal = if self.written != self.size {
            Some(BlobError::SizeMismatch {
                expected: self.size,
                got: self.written,
            })
        } else {
            match expected {
                Some(expected) if expected != hash => Some(BlobError::HashMismatch {
                    expected: to_hex(&expected),
                    got: to_hex(&hash),
                }),
                _ => None,
            }
        };
        let settled = self.settle().await;
        let BlobWriter {
            temp,
            reservation,
            buffer,
            ..
        } = self;
        if let Some(refusal) = refusal {
            drop(settled);
            temp.remove().await;
            return Err(refusal);
        }
        let (file, _spare) = match settled {
            Ok(settled) => settled,
            Err(e) => {
                temp.remove().await;
                return Err(e);
            }
        };
        let (shared, size) = (Arc::clone(&reservation.shared), self.size);
        let outboard_at = outboard_path(&shared.root, &hash);
        let kept = blocking(move || {
            let mut file = file;
            file.write_all(buffer.as_slice())?;
            file.sync_all()?;
            drop(file);
            install(temp, reservation, &hash)?;
            // The outboard goes in place after its blob: a reader never finds an outboard
            // of a blob that is not there (one finding no outboard makes it).
            Ok(outboard.map(|made| made.persist(&outboard_at)))
        })
        .await?;
        match kept {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::debug!("outboard of blob {} not kept: {e}", to_hex(&hash));
                prepare_outboard(&shared, hash, size);
            }
            None => prepare_outboard(&shared, hash, size),
        }
        Ok(hash)
    }

    /// Waits for the write in flight, if any; returns the file and the spare buffer. The writer
    /// is left [`Disk::Broken`] until the caller puts a new state back.
    async fn settle(&mut self) -> Result<(BulkWriter, Option<AlignedBuf>), BlobError> {
        match mem::replace(&mut self.disk, Disk::Broken) {
            Disk::Idle { file, spare } => Ok((file, spare)),
            Disk::Busy(write) => match write.await {
                Ok(Ok((file, spare))) => Ok((file, Some(spare))),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(io::Error::other(e).into()),
            },
            Disk::Broken => Err(broken().into()),
        }
    }

    /// Hands the full buffer to the blocking pool (after the previous write completed) and
    /// continues with the spare one.
    async fn flush_buffer(&mut self) -> Result<(), BlobError> {
        let (mut file, spare) = self.settle().await?;
        // The writer stays broken (settled) until the builder has the bytes: cancelled
        // here, the outboard would miss them.
        if let Hashing::Tree(maker) = &mut self.hashing {
            maker.feed(self.buffer.as_slice().to_vec()).await?;
        }
        let mut spare = spare.unwrap_or_else(|| AlignedBuf::with_capacity(self.buffer.capacity()));
        spare.clear();
        let full = mem::replace(&mut self.buffer, spare);
        self.disk = Disk::Busy(tokio::task::spawn_blocking(move || {
            file.write_all(full.as_slice())?;
            Ok((file, full))
        }));
        Ok(())
    }
}

/// A blob received in verified pieces; see [`BlobStore::create_in_pieces`]. Dropping it
/// (without [`PiecesWriter::finish`]) releases the reservation and removes the temp file.
pub struct PiecesWriter {
    file: fs::File,
    writer: Arc<crate::bulk_io::RangeWriter>,
    temp: TempFile,
    reservation: Reservation,
}

impl fmt::Debug for PiecesWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiecesWriter")
            .field("temp", &self.temp.path)
            .finish_non_exhaustive()
    }
}

impl PiecesWriter {
    /// The temp file's writer, for pieces at their offsets.
    pub fn file(&self) -> Arc<crate::bulk_io::RangeWriter> {
        Arc::clone(&self.writer)
    }

    /// Installs the blob as `hash`: the caller verified every piece against it. Fsyncs the
    /// file, renames it to its content address and counts it in `used`, as
    /// [`BlobWriter::finish`] does.
    pub async fn finish(self, hash: Hash) -> Result<(), BlobError> {
        let PiecesWriter {
            file,
            writer,
            temp,
            reservation,
        } = self;
        drop(writer);
        let shared = Arc::clone(&reservation.shared);
        let size = blocking(move || {
            file.sync_all()?;
            let size = file.metadata()?.len();
            drop(file);
            install(temp, reservation, &hash)?;
            Ok(size)
        })
        .await?;
        prepare_outboard(&shared, hash, size);
        Ok(())
    }
}

/// `DATA_DIR/outboards/` for the store whose blobs are under `root` (`DATA_DIR/blobs/`).
fn outboards_dir(root: &Path) -> PathBuf {
    root.parent().unwrap_or(root).join(OUTBOARDS_DIR)
}

/// `DATA_DIR/outboards/tmp/`: outboards being made while their blobs arrive (emptied by
/// [`BlobStore::open`]).
fn outboards_tmp(root: &Path) -> PathBuf {
    outboards_dir(root).join(TMP_DIR)
}

/// `DATA_DIR/outboards/ab/abcd…`.
fn outboard_path(root: &Path, hash: &Hash) -> PathBuf {
    blob_path(&outboards_dir(root), hash)
}

/// Makes the outboard of a blob just stored, in the background and one at a time per
/// process, so that the first get of it does not wait for it (a reader asking meanwhile makes
/// its own). Blobs of one chunk group need none.
fn prepare_outboard(shared: &Arc<Shared>, hash: Hash, size: u64) {
    static MAKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    if size <= crate::files::pieces::verified::GROUP_BYTES {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let blob = blob_path(&shared.root, &hash);
    let outboard = outboard_path(&shared.root, &hash);
    runtime.spawn(async move {
        let Ok(_permit) = MAKING.acquire().await else {
            return;
        };
        let made = tokio::task::spawn_blocking(move || {
            crate::files::pieces::verified::open_outboard(&blob, &outboard, size, &hash)
        })
        .await;
        if let Ok(Err(e)) = made {
            tracing::debug!("no outboard made for blob {}: {e}", to_hex(&hash));
        }
    });
}

/// The error of a writer whose earlier write failed or was cancelled.
fn broken() -> io::Error {
    io::Error::other("blob writer unusable after an earlier failed or cancelled write")
}

/// Moves a complete, fsynced temp file to its content address (blocking). Counts it in `used`
/// unless that blob was already stored.
fn install(temp: TempFile, reservation: Reservation, hash: &Hash) -> io::Result<()> {
    let shared = Arc::clone(&reservation.shared);
    let _commit = lock(&shared.commit);
    let dest = blob_path(&shared.root, hash);
    match fs::symlink_metadata(&dest) {
        Ok(_) => {
            // Same name, same content: keep the stored one.
            temp.remove_blocking();
            drop(reservation);
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let shard = dest
        .parent()
        .ok_or_else(|| io::Error::other("blob path without a parent"))?;
    match fs::create_dir(shard) {
        Ok(()) => sync_dir(&shared.root)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::rename(&temp.path, &dest)?;
    let mut temp = temp;
    temp.armed = false;
    reservation.commit();
    sync_dir(shard)
}

/// Fsyncs a directory, making renames and creations in it durable (Unix; elsewhere a no-op).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `root/<first 2 hex chars>/<64 hex chars>`.
fn blob_path(root: &Path, hash: &Hash) -> PathBuf {
    let hex = to_hex(hash);
    root.join(&hex[..2]).join(hex)
}

/// Creates a fresh temp file in `dir`, named by a process-wide counter, the process id and a
/// random number; `create_new` guarantees it is fresh.
fn create_temp_file(dir: &Path) -> io::Result<(fs::File, PathBuf)> {
    let mut attempt = 0;
    loop {
        let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "{count}-{}-{:016x}.part",
            std::process::id(),
            random_u64(count)
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A random number from the standard library's randomly keyed hasher (good enough to tell
/// temp names apart; not for cryptography).
fn random_u64(salt: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(salt);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

/// Removes everything in `dir`; returns how many entries were removed.
fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// The stored blobs under `root`: hash and length in bytes. Entries that are not a blob in its
/// shard are skipped (and logged when `warn`).
fn scan(root: &Path, warn: bool) -> io::Result<Vec<(Hash, u64)>> {
    let ignore = |path: &Path| {
        if warn {
            tracing::warn!("blob store: ignoring unexpected entry {}", path.display());
        }
    };
    let mut blobs = Vec::new();
    for shard in fs::read_dir(root)? {
        let shard = shard?;
        let shard_name = shard.file_name();
        if shard_name == TMP_DIR {
            continue;
        }
        let shard_name = match shard_name.to_str() {
            Some(name) if name.len() == 2 && is_lower_hex(name) => name.to_owned(),
            _ => {
                ignore(&shard.path());
                continue;
            }
        };
        if !shard.file_type()?.is_dir() {
            ignore(&shard.path());
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let hash = entry.file_name().to_str().and_then(|name| {
                (name.len() == 64 && is_lower_hex(name) && name.starts_with(&shard_name))
                    .then(|| parse_hex(name))
                    .flatten()
            });
            let Some(hash) = hash else {
                ignore(&entry.path());
                continue;
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Removed meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                ignore(&entry.path());
                continue;
            }
            blobs.push((hash, meta.len()));
        }
    }
    Ok(blobs)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Runs blocking file system work on tokio's blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, BlobError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(io::Error::other(e).into()),
    }
}

/// A hash as 64 lowercase hex chars.
pub fn to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// Parses 64 hex chars (either case) into a hash; `None` for anything else.
pub fn parse_hex(s: &str) -> Option<Hash> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(s, &mut hash).ok()?;
    Some(hash)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Deterministic pseudo-random bytes.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn tmp_entries(data_dir: &Path) -> usize {
        fs::read_dir(data_dir.join(BLOBS_DIR).join(TMP_DIR))
            .unwrap()
            .count()
    }

    /// Temp files are removed on the blocking pool when a writer is dropped: wait for it.
    async fn wait_tmp_empty(data_dir: &Path) {
        for _ in 0..500 {
            if tmp_entries(data_dir) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("tmp/ still holds {} entries", tmp_entries(data_dir));
    }

    async fn store_blob(store: &BlobStore, content: &[u8]) -> Hash {
        let mut writer = store.create(content.len() as u64).await.unwrap();
        for chunk in content.chunks(100_003) {
            writer.write(chunk).await.unwrap();
        }
        writer
            .finish(Some(*blake3::hash(content).as_bytes()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 100 * MIB, 10 * MIB)
            .await
            .unwrap();
        // Larger than two write buffers, in odd chunks, to exercise the double buffering.
        let content = data(3 * MIB as usize + 12_345, 1);
        let hash = store_blob(&store, &content).await;
        assert_eq!(hash, *blake3::hash(&content).as_bytes());
        // Its outboard was made from the bytes as they came, and is in place with it (no
        // task has run since `finish`: this is not the background one).
        let outboard = store.outboard_path_of(&hash);
        assert_eq!(
            fs::metadata(&outboard).map(|m| m.len()).ok(),
            Some(crate::files::pieces::verified::outboard_len(
                content.len() as u64
            ))
        );
        assert!(store.contains(&hash).await);
        assert!(store.path_of(&hash).is_file());
        assert_eq!(store.used(), content.len() as u64);
        assert_eq!(store.free(), 100 * MIB - content.len() as u64);

        let (mut file, len) = store.open_blob(&hash).await.unwrap().unwrap();
        assert_eq!(len, content.len() as u64);
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, content);

        assert!(store.verify(&hash).await.unwrap());
        assert_eq!(store.list().await.unwrap(), vec![hash]);
        assert_eq!(tmp_entries(dir.path()), 0);
        assert!(store.open_blob(&[7; 32]).await.unwrap().is_none());
    }

    /// A blob of whole write buffers: the last one goes to the outboard builder before
    /// `finish`, which has nothing left to hand it (the builder has ended by then; handing
    /// it an empty rest failed the put, now and then, when it had).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_of_whole_write_buffers_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 100 * MIB, 10 * MIB)
            .await
            .unwrap();
        for seed in 0..20 {
            let content = data(2 * WRITE_BUFFER, seed);
            let mut writer = store.create(content.len() as u64).await.unwrap();
            writer.write(&content).await.unwrap();
            // Time for the builder to take the last buffer and end.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let hash = writer.finish(None).await.unwrap();
            assert_eq!(hash, *blake3::hash(&content).as_bytes());
        }
    }

    #[tokio::test]
    async fn hash_mismatch_refused_and_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 100 * MIB, 10 * MIB)
            .await
            .unwrap();
        let content = data(2 * MIB as usize + 1, 2);
        let mut writer = store.create(content.len() as u64).await.unwrap();
        writer.write(&content).await.unwrap();
        let wrong = *blake3::hash(b"something else").as_bytes();
        let err = writer.finish(Some(wrong)).await.unwrap_err();
        match err {
            BlobError::HashMismatch { expected, got } => {
                assert_eq!(expected, to_hex(&wrong));
                assert_eq!(got, to_hex(blake3::hash(&content).as_bytes()));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!store.contains(blake3::hash(&content).as_bytes()).await);
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(tmp_entries(dir.path()), 0);
        // Nor an outboard, finished or not.
        let outboards = outboards_tmp(&dir.path().join(BLOBS_DIR));
        let left: Vec<_> = fs::read_dir(&outboards)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(store.used(), 0);
        assert_eq!(store.free(), 100 * MIB);
    }

    #[tokio::test]
    async fn size_mismatch_short() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000, 100).await.unwrap();
        let mut writer = store.create(10).await.unwrap();
        writer.write(b"12345").await.unwrap();
        assert_eq!(writer.written(), 5);
        let err = writer.finish(None).await.unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::SizeMismatch {
                    expected: 10,
                    got: 5
                }
            ),
            "{err:?}"
        );
        assert_eq!(tmp_entries(dir.path()), 0);
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(store.free(), 1000);
    }

    #[tokio::test]
    async fn size_mismatch_long() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000, 100).await.unwrap();
        let mut writer = store.create(10).await.unwrap();
        writer.write(b"12345678").await.unwrap();
        let err = writer.write(b"90abc").await.unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::SizeMismatch {
                    expected: 10,
                    got: 13
                }
            ),
            "{err:?}"
        );
        // Nothing of the refused chunk was taken.
        assert_eq!(writer.written(), 8);
        drop(writer);
        wait_tmp_empty(dir.path()).await;
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(store.free(), 1000);
    }

    #[tokio::test]
    async fn too_large_and_no_space_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 100, 50).await.unwrap();
        let err = store.create(51).await.unwrap_err();
        assert!(
            matches!(err, BlobError::TooLarge { size: 51, max: 50 }),
            "{err:?}"
        );
        assert_eq!(tmp_entries(dir.path()), 0);

        let first = store.create(40).await.unwrap();
        let second = store.create(40).await.unwrap();
        assert_eq!(store.free(), 20);
        let err = store.create(30).await.unwrap_err();
        assert!(
            matches!(err, BlobError::NoSpace { size: 30, free: 20 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "not enough storage: 30 bytes wanted, 20 bytes free"
        );
        // Only the two accepted writers have temp files.
        assert_eq!(tmp_entries(dir.path()), 2);
        drop(first);
        drop(second);
        assert_eq!(store.free(), 100);
        wait_tmp_empty(dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_do_not_overcommit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), 1000, 1000).await.unwrap());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.create(100).await })
            })
            .collect();
        let mut writers = Vec::new();
        for task in tasks {
            if let Ok(writer) = task.await.unwrap() {
                writers.push(writer);
            }
        }
        assert_eq!(writers.len(), 10);
        assert_eq!(store.free(), 0);
        drop(writers);
        assert_eq!(store.free(), 1000);
    }

    #[tokio::test]
    async fn open_removes_leftovers_and_ignores_strays() {
        let dir = tempfile::tempdir().unwrap();
        let hash = {
            let store = BlobStore::open(dir.path(), 1000, 1000).await.unwrap();
            store_blob(&store, b"kept").await
        };
        // A crash mid-write: partial files (and even a directory) left in tmp/.
        let tmp = dir.path().join(BLOBS_DIR).join(TMP_DIR);
        fs::write(tmp.join("1-2-3.part"), b"partial").unwrap();
        fs::create_dir(tmp.join("odd")).unwrap();
        fs::write(tmp.join("odd").join("x"), b"y").unwrap();
        // Strays that are not blobs.
        let root = dir.path().join(BLOBS_DIR);
        fs::write(root.join("README"), b"not a blob").unwrap();
        let shard = root.join(&to_hex(&hash)[..2]);
        fs::write(shard.join("not-a-hash"), b"0123456789").unwrap();
        let misplaced = root.join("zz");
        fs::create_dir(&misplaced).unwrap();
        fs::write(misplaced.join(to_hex(&[1; 32])), b"0123456789").unwrap();

        let store = BlobStore::open(dir.path(), 1000, 1000).await.unwrap();
        assert_eq!(tmp_entries(dir.path()), 0);
        assert_eq!(store.used(), 4);
        assert_eq!(store.list().await.unwrap(), vec![hash]);
        assert!(store.verify(&hash).await.unwrap());
        // And the store works.
        let other = store_blob(&store, b"more").await;
        assert!(store.contains(&other).await);
        assert_eq!(store.used(), 8);
    }

    #[tokio::test]
    async fn dropping_writer_mid_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 100 * MIB, 10 * MIB)
            .await
            .unwrap();
        let content = data(4 * MIB as usize, 3);
        let mut writer = store.create(content.len() as u64).await.unwrap();
        writer
            .write(&content[..2 * MIB as usize + 7])
            .await
            .unwrap();
        assert_eq!(store.free(), 96 * MIB);
        drop(writer);
        assert_eq!(store.free(), 100 * MIB);
        wait_tmp_empty(dir.path()).await;
        assert!(store.list().await.unwrap().is_empty());
        assert!(!store.contains(blake3::hash(&content).as_bytes()).await);
        assert_eq!(store.used(), 0);
    }

    #[tokio::test]
    async fn verify_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 10 * MIB, 10 * MIB)
            .await
            .unwrap();
        let content = data(700_000, 4);
        let hash = store_blob(&store, &content).await;
        assert!(store.verify(&hash).await.unwrap());

        let mut bytes = fs::read(store.path_of(&hash)).unwrap();
        bytes[600_000] ^= 0x01;
        fs::write(store.path_of(&hash), &bytes).unwrap();
        assert!(!store.verify(&hash).await.unwrap());
        assert!(!store.verify(&[9; 32]).await.unwrap());
    }

    #[tokio::test]
    async fn remove_frees_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000, 1000).await.unwrap();
        let a = store_blob(&store, &data(300, 5)).await;
        let b = store_blob(&store, &data(200, 6)).await;
        assert_eq!(store.used(), 500);
        store.remove(&a).await.unwrap();
        assert_eq!(store.used(), 200);
        assert_eq!(store.free(), 800);
        assert!(!store.contains(&a).await);
        assert!(store.contains(&b).await);
        // Missing is fine.
        store.remove(&a).await.unwrap();
        assert_eq!(store.used(), 200);
        assert_eq!(store.list().await.unwrap(), vec![b]);
    }

    #[tokio::test]
    async fn reopen_computes_used_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = BlobStore::open(dir.path(), 10 * MIB, MIB).await.unwrap();
            (
                store_blob(&store, &data(12_345, 7)).await,
                store_blob(&store, &data(54_321, 8)).await,
            )
        };
        let store = BlobStore::open(dir.path(), 10 * MIB, MIB).await.unwrap();
        assert_eq!(store.used(), 12_345 + 54_321);
        assert_eq!(store.free(), 10 * MIB - 12_345 - 54_321);
        let mut listed = store.list().await.unwrap();
        listed.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(store.capacity(), 10 * MIB);
        assert_eq!(store.max_file_size(), MIB);
    }

    #[tokio::test]
    async fn zero_byte_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000, 1000).await.unwrap();
        let writer = store.create(0).await.unwrap();
        let empty = *blake3::hash(b"").as_bytes();
        assert_eq!(writer.finish(Some(empty)).await.unwrap(), empty);
        let (mut file, len) = store.open_blob(&empty).await.unwrap().unwrap();
        assert_eq!(len, 0);
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert!(back.is_empty());
        assert!(store.verify(&empty).await.unwrap());
        assert_eq!(store.used(), 0);
    }

    #[tokio::test]
    async fn same_blob_twice_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000, 1000).await.unwrap();
        let content = data(400, 9);
        let mut first = store.create(400).await.unwrap();
        let mut second = store.create(400).await.unwrap();
        first.write(&content).await.unwrap();
        second.write(&content).await.unwrap();
        let a = first.finish(None).await.unwrap();
        let b = second.finish(None).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(store.used(), 400);
        assert_eq!(store.free(), 600);
        assert_eq!(tmp_entries(dir.path()), 0);
        assert_eq!(store.list().await.unwrap(), vec![a]);
    }

    #[test]
    fn hex_round_trip() {
        let hash = *blake3::hash(b"quickstore").as_bytes();
        let hex = to_hex(&hash);
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_hex(&hex), Some(hash));
        assert_eq!(parse_hex(&hex.to_uppercase()), Some(hash));
        assert_eq!(parse_hex(&hex[..62]), None);
        assert_eq!(parse_hex(&format!("{hex}00")), None);
        assert_eq!(parse_hex(&hex.replace(&hex[..1], "g")), None);
        assert_eq!(parse_hex(""), None);
    }
}
