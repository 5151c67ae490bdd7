//! Test files for the benchmark examples. Included with
//! `#[path = "support/files.rs"] mod files;`.

use std::path::Path;

/// Writes `bytes` pseudo-random bytes (xorshift) to a new file at `path`, 1 MiB at a time.
pub fn write_file(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x0123_4567_89AB_CDEF;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()
}
