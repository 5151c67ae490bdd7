//! What an interrupted get leaves for the next one: the partial file beside the target
//! (`.NAME.quickstore-resume-HASH16.part`) and a record of the byte ranges in it that were
//! verified (`… .part.ranges`, JSON). A get of the same target and the same version takes
//! them up; any other version's leftovers are removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::verified::Piece;
use crate::blobs::{Hash, to_hex};

/// The marker in resumable partial files' names.
const RESUME_MARK: &str = ".quickstore-resume-";
/// Largest record read back, in bytes (a record merges its ranges, so it stays small).
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The record: which version, and the verified ranges of the partial file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// BLAKE3 of the whole file (hex).
    pub blake3: String,
    /// Its size in bytes.
    pub size: u64,
    /// Verified byte ranges `[start, end)`, sorted and merged.
    pub verified: Vec<(u64, u64)>,
}

impl ResumeRecord {
    /// An empty record for the version `hash` of `size` bytes.
    pub fn new(hash: &Hash, size: u64) -> Self {
        Self {
            blake3: to_hex(hash),
            size,
            verified: Vec::new(),
        }
    }

    /// Adds a verified piece, merging it with its neighbours.
    pub fn add(&mut self, piece: Piece) {
        self.verified.push((piece.start, piece.end));
        self.verified.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.verified.len());
        for &(start, end) in &self.verified {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.verified = merged;
    }

    /// Whether every byte of `piece` is verified.
    pub fn covers(&self, piece: Piece) -> bool {
        self.verified
            .iter()
            .any(|&(start, end)| start <= piece.start && piece.end <= end)
    }

    /// Verified bytes.
    pub fn bytes(&self) -> u64 {
        self.verified.iter().map(|(s, e)| e - s).sum()
    }
}

/// The partial file and record paths of a get of version `hash` into `target`.
pub fn resume_paths(target: &Path, hash: &Hash) -> (PathBuf, PathBuf) {
    let dir = target.parent().unwrap_or(Path::new("."));
    let stem = target
        .file_name()
        .map_or_else(|| "download".into(), |f| f.to_string_lossy());
    let suffix = format!("{RESUME_MARK}{}.part", &to_hex(hash)[..16]);
    // Room for ".", the suffix and ".ranges" in a 255-byte file name.
    let room = crate::output_path::MAX_FILE_NAME_BYTES - 1 - suffix.len() - ".ranges".len();
    let mut end = stem.len().min(room);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    let part = dir.join(format!(".{}{suffix}", &stem[..end]));
    let mut record = part.clone().into_os_string();
    record.push(".ranges");
    (part, PathBuf::from(record))
}

/// The record at `path` if it is one for version `hash` of `size` bytes and its partial
/// file `part` exists with that size; `None` otherwise (nothing to resume).
pub fn load(part: &Path, path: &Path, hash: &Hash, size: u64) -> Option<ResumeRecord> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RECORD_BYTES || std::fs::metadata(part).ok()?.len() != size {
        return None;
    }
    let record: ResumeRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let sane = record.blake3 == to_hex(hash)
        && record.size == size
        && record
            .verified
            .windows(2)
            .all(|w| w[0].0 < w[0].1 && w[0].1 < w[1].0)
        && record.verified.iter().all(|&(s, e)| s < e && e <= size);
    sane.then_some(record)
}

/// Writes `record` to `path` (through a temporary file renamed over it).
pub async fn save(path: &Path, record: &ResumeRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let temp = new_record(path);
    tokio::fs::write(&temp, bytes).await?;
    tokio::fs::rename(&temp, path).await
}

/// Where [`save`] writes a record before renaming it over the old one (left behind when a
/// get is stopped between the two).
fn new_record(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    PathBuf::from(temp)
}

/// Removes the partial file `part`, its record `record` and a record being saved, whichever
/// are there.
pub async fn discard(part: &Path, record: &Path) {
    for path in [part, record, &new_record(record)] {
        if let Err(e) = tokio::fs::remove_file(path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!("cannot remove {}: {e}", path.display());
        }
    }
}

/// Partial files (and their records) of gets into `target` of any version but `keep`:
/// abandoned, to be removed.
pub fn abandoned(target: &Path, keep: &Hash) -> Vec<PathBuf> {
    let (part, _) = resume_paths(target, keep);
    let (Some(dir), Some(name)) = (part.parent(), part.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some(cut) = name.find(RESUME_MARK) else {
        return Vec::new();
    };
    let prefix = &name[..cut + RESUME_MARK.len()];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let other = e.file_name();
            let other = other.to_string_lossy();
            other.starts_with(prefix) && !other.starts_with(name.as_ref())
        })
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: u64, end: u64) -> Piece {
        Piece { start, end }
    }

    #[test]
    fn ranges_merge_and_cover_what_was_added() {
        let mut record = ResumeRecord::new(&[1; 32], 1000);
        record.add(piece(200, 300));
        record.add(piece(0, 100));
        record.add(piece(100, 200));
        record.add(piece(500, 600));
        assert_eq!(record.verified, vec![(0, 300), (500, 600)]);
        assert!(record.covers(piece(100, 300)));
        assert!(!record.covers(piece(250, 550)));
        assert_eq!(record.bytes(), 400);
    }

    #[tokio::test]
    async fn a_record_is_taken_only_for_the_same_version_and_size() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let target = dir.path().join("file.bin");
        let hash = [7u8; 32];
        let (part, path) = resume_paths(&target, &hash);
        std::fs::write(&part, vec![0u8; 1000]).expect("part");
        let mut record = ResumeRecord::new(&hash, 1000);
        record.add(piece(0, 100));
        save(&path, &record).await.expect("saved");
        assert_eq!(load(&part, &path, &hash, 1000), Some(record));
        assert_eq!(load(&part, &path, &[8u8; 32], 1000), None);
        assert_eq!(load(&part, &path, &hash, 999), None);
        std::fs::write(&path, b"{not json").expect("garbage");
        assert_eq!(load(&part, &path, &hash, 1000), None);
    }

    #[test]
    fn leftovers_of_other_versions_are_abandoned_and_this_versions_are_not() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let target = dir.path().join("file.bin");
        let (old_part, old_record) = resume_paths(&target, &[1; 32]);
        let (part, record) = resume_paths(&target, &[2; 32]);
        let (other_target, _) = resume_paths(&dir.path().join("other.bin"), &[1; 32]);
        for path in [&old_part, &old_record, &part, &record, &other_target] {
            std::fs::write(path, b"x").expect("written");
        }
        let mut found = abandoned(&target, &[2; 32]);
        found.sort();
        let mut expected = vec![old_part, old_record];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_long_target_name_still_gives_legal_file_names() {
        let long = "é".repeat(127);
        let (part, record) = resume_paths(&Path::new("/tmp").join(&long), &[3; 32]);
        for path in [part, record] {
            let name = path.file_name().map(|n| n.len()).unwrap_or(0);
            assert!(name <= 255, "{name}");
        }
    }
}
