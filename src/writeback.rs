//! Early writeback for large files that end in an fsync.
//!
//! A blob or a fetched file is written in full and then fsynced. Left alone, the kernel keeps
//! most of those bytes dirty in the page cache until the fsync, which then waits for all of
//! them at once (on this project's test VM, over a second per GiB after the transfer itself was
//! done). [`wrote`] asks the kernel to start writing each completed 8 MiB range while the
//! transfer goes on (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for the
//! disk), so the final fsync finds little left to do. Durability still comes from that fsync
//! alone; this only moves the disk's work earlier. On systems other than Linux it does nothing.
//!
//! Its one caller is [`crate::bulk_io::BulkWriter`], for the bytes it writes through the page
//! cache: small files, a large file's tail, and filesystems without direct I/O.

use std::fs::File;

/// Bytes between two writeback starts: 8 MiB.
pub const WRITEBACK_BYTES: u64 = 8 << 20;

/// After bytes `before..after` of a file were written (not yet synced): starts writeback of
/// every whole [`WRITEBACK_BYTES`] range that was completed by them. Blocking (call it where
/// the writes happen, off the async threads); failures are ignored, the final fsync reports
/// them.
pub fn wrote(file: &File, before: u64, after: u64) {
    if let Some((offset, len)) = completed_range(before, after) {
        start_writeback(file, offset, len);
    }
}

/// The (offset, length) of the whole [`WRITEBACK_BYTES`] ranges that writing bytes
/// `before..after` completed, if any.
fn completed_range(before: u64, after: u64) -> Option<(u64, u64)> {
    let from = before - before % WRITEBACK_BYTES;
    let to = after - after % WRITEBACK_BYTES;
    (to > from).then_some((from, to - from))
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `file` is an open file and outlives the call; sync_file_range only reads its
    // arguments and touches no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_whole_range_is_started_once_when_it_completes() {
        const W: u64 = WRITEBACK_BYTES;
        assert_eq!(completed_range(0, W - 1), None);
        assert_eq!(completed_range(0, W), Some((0, W)));
        assert_eq!(completed_range(W - 1, W + 1), Some((0, W)));
        assert_eq!(completed_range(W, 2 * W - 1), None);
        assert_eq!(completed_range(W + 5, 4 * W + 5), Some((W, 3 * W)));
    }

    #[test]
    fn leaves_the_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![7u8; 3 << 20];
        let mut written = 0u64;
        for _ in 0..7 {
            file.write_all(&chunk).unwrap();
            wrote(&file, written, written + chunk.len() as u64);
            written += chunk.len() as u64;
        }
        file.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len() as u64, written);
        assert!(back.iter().all(|b| *b == 7));
    }
}
