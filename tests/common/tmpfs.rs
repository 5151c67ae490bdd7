//! Small disks for the tests that fill them: a tmpfs mounted for the test, unmounted when
//! dropped. Mounting needs root: elsewhere the test is skipped, and under `CI` it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    /// The directory made for it, removed after the unmount (`None` when mounted on a
    /// directory of the caller's).
    _made: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts one of `bytes` on a fresh directory; `None` (the test is skipped) when not root,
    /// unless `CI` is set.
    pub fn mount(bytes: u64) -> Option<Tmpfs> {
        if !may_mount() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("qs-tmpfs-")
            .tempdir()
            .expect("temp dir");
        mount(dir.path(), bytes);
        Some(Tmpfs {
            path: dir.path().to_path_buf(),
            _made: Some(dir),
        })
    }

    /// Mounts one of `bytes` on `path` (made if missing); `None` as for [`Tmpfs::mount`].
    pub fn mount_at(path: &Path, bytes: u64) -> Option<Tmpfs> {
        if !may_mount() {
            return None;
        }
        std::fs::create_dir_all(path).expect("mount point");
        mount(path, bytes);
        Some(Tmpfs {
            path: path.to_path_buf(),
            _made: None,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Writes a file into it until the disk is full; returns the bytes written.
    pub fn fill(&self) -> u64 {
        let chunk = vec![7u8; 1 << 20];
        let mut file = std::fs::File::create(self.path.join("filler")).expect("filler");
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        written
    }
}

fn may_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: mounting a tmpfs must work"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return false;
    }
    true
}

fn mount(path: &Path, bytes: u64) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(path)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mount -t tmpfs failed");
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
