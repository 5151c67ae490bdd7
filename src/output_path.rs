//! Where `quickstore get NAME` writes.
//!
//! A file name in quickstore is a key, never a path: `../../etc/passwd` is a valid name, and
//! fetching it without `-o` must write `./passwd`, nothing else. Without `-o`, only the last
//! component of the name is used, and it must be a single plain file name. With `-o PATH`, the
//! user chose the path and it is used as given (joined with the name's last component when it
//! is an existing directory).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest file name accepted as a default output name, in bytes: 255, the limit of common
/// file systems (ext4, XFS, Btrfs, APFS, NTFS in UTF-16 units).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Makes temp names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why no output path could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputPathError {
    /// The name's last component is empty, `.` or `..` (or otherwise not a plain file name).
    #[error("name {name:?} has no usable last component; pass -o PATH")]
    NoUsableComponent {
        /// The quickstore name.
        name: String,
    },
    /// The name's last component holds a NUL byte, which no file name may hold.
    #[error("name {name:?} contains a NUL byte, which no file name may hold; pass -o PATH")]
    ContainsNul {
        /// The quickstore name.
        name: String,
    },
    /// The name's last component is longer than file systems allow.
    #[error(
        "the last component of name {name:?} is {len} bytes long, more than the {max} bytes a \
         file name may have; pass -o PATH"
    )]
    TooLong {
        /// The quickstore name.
        name: String,
        /// Length of its last component, in bytes.
        len: usize,
        /// [`MAX_FILE_NAME_BYTES`].
        max: usize,
    },
    /// `-o PATH/` (ending in a separator) names a directory that does not exist.
    #[error("output directory {path:?} does not exist")]
    MissingDirectory {
        /// The path given with `-o`.
        path: PathBuf,
    },
}

/// The file name `quickstore get NAME` writes to when `-o` is not given: `name`'s last
/// component, splitting on `/` and also on `\`. Refuses an empty last component, `.` and `..`
/// ([`OutputPathError::NoUsableComponent`]), a component holding NUL
/// ([`OutputPathError::ContainsNul`]) and one longer than [`MAX_FILE_NAME_BYTES`]
/// ([`OutputPathError::TooLong`]). The result is a single plain file name, to be joined onto
/// the current directory.
pub fn default_file_name(name: &str) -> Result<String, OutputPathError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    if last.contains('\0') {
        return Err(OutputPathError::ContainsNul {
            name: name.to_owned(),
        });
    }
    // Whatever the platform makes of it (`.`, `..`, a root, a Windows drive prefix such as
    // `C:`), it must be exactly one normal component: itself.
    let mut components = Path::new(last).components();
    let plain = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(only)), None) if only == last
    );
    if !plain {
        return Err(OutputPathError::NoUsableComponent {
            name: name.to_owned(),
        });
    }
    if last.len() > MAX_FILE_NAME_BYTES {
        return Err(OutputPathError::TooLong {
            name: name.to_owned(),
            len: last.len(),
            max: MAX_FILE_NAME_BYTES,
        });
    }
    Ok(last.to_owned())
}

/// The final target path of `quickstore get NAME`.
///
/// With `-o PATH` (`output`): PATH as the user typed it, relative to `cwd` when relative (an
/// absolute PATH is used as is); if it is an existing directory, [`default_file_name`] of
/// `name` is joined onto it. A PATH ending in a separator must be an existing directory
/// ([`OutputPathError::MissingDirectory`]). Without `-o`: `cwd` joined with
/// [`default_file_name`] of `name`, so the result's parent is always `cwd`.
pub fn target_path(
    name: &str,
    output: Option<&Path>,
    cwd: &Path,
) -> Result<PathBuf, OutputPathError> {
    let Some(output) = output else {
        return Ok(cwd.join(default_file_name(name)?));
    };
    let chosen = cwd.join(output);
    if chosen.is_dir() {
        return Ok(chosen.join(default_file_name(name)?));
    }
    if ends_with_separator(output) {
        return Err(OutputPathError::MissingDirectory {
            path: output.to_path_buf(),
        });
    }
    Ok(chosen)
}

fn ends_with_separator(path: &Path) -> bool {
    path.as_os_str()
        .as_encoded_bytes()
        .last()
        .is_some_and(|&b| std::path::is_separator(char::from(b)))
}

/// A temporary path beside `target` (same directory, so the final rename is atomic on one file
/// system): `.<file name>.quickstore-<16 hex random>.part`, the file name shortened so the whole
/// stays within [`MAX_FILE_NAME_BYTES`]. Fresh names are very likely but not guaranteed: create
/// the file with `create_new` and take another name if it exists.
pub fn temp_beside(target: &Path) -> PathBuf {
    let suffix = format!(
        ".{TEMP_MARK}{}-{:08x}.part",
        std::process::id(),
        random_u64() as u32
    );
    let file = temp_stem(target);
    let room = MAX_FILE_NAME_BYTES - 1 - suffix.len();
    let mut end = file.len().min(room);
    while !file.is_char_boundary(end) {
        end -= 1;
    }
    let temp = format!(".{}{suffix}", &file[..end]);
    match target.parent() {
        Some(dir) if target.file_name().is_some() => dir.join(temp),
        _ => target.join(temp),
    }
}

/// What every temporary file name holds after the target's name: `.quickstore-PID-`.
const TEMP_MARK: &str = "quickstore-";

/// The target's file name as its temporary files start with it (cut to leave room).
fn temp_stem(target: &Path) -> std::borrow::Cow<'_, str> {
    target
        .file_name()
        .map_or_else(|| "download".into(), |f| f.to_string_lossy())
}

/// Temporary files beside `target` left by `get`s whose process is gone (killed, or its
/// machine stopped): `.NAME.quickstore-PID-RANDOM.part` where no process PID runs. They are
/// never resumed, only removed. A process is taken to run when `/proc/PID` exists; where
/// there is no `/proc`, nothing is taken as stale.
pub fn stale_temps(target: &Path) -> Vec<PathBuf> {
    let probe = temp_beside(target);
    let (Some(dir), Some(probe_name)) = (probe.parent(), probe.file_name()) else {
        return Vec::new();
    };
    let probe_name = probe_name.to_string_lossy();
    let Some(cut) = probe_name.find(&format!(".{TEMP_MARK}{}-", std::process::id())) else {
        return Vec::new();
    };
    let start = format!("{}.{TEMP_MARK}", &probe_name[..cut]);
    if !Path::new("/proc/self").exists() {
        return Vec::new();
    }
    let listed = if dir.as_os_str().is_empty() {
        std::fs::read_dir(".")
    } else {
        std::fs::read_dir(dir)
    };
    let Ok(entries) = listed else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let rest = name.strip_prefix(&start)?.strip_suffix(".part")?;
            let (pid, random) = rest.split_once('-')?;
            let pid: u32 = pid.parse().ok()?;
            let ours = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
            let gone = !Path::new("/proc").join(pid.to_string()).exists();
            (ours && gone && entry.file_type().ok()?.is_file()).then(|| dir.join(name))
        })
        .collect()
}

/// A random number from the standard library's randomly keyed hasher, mixed with a counter, the
/// process id and the time (good enough to tell temp names apart; not for cryptography).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_usable(name: &str) -> Result<String, OutputPathError> {
        Err(OutputPathError::NoUsableComponent {
            name: name.to_owned(),
        })
    }

    #[test]
    fn traversal_name_lands_in_cwd() {
        let cwd = Path::new("/home/user/downloads");
        assert_eq!(
            default_file_name("../../etc/passwd"),
            Ok("passwd".to_owned())
        );
        assert_eq!(
            target_path("../../etc/passwd", None, cwd),
            Ok(cwd.join("passwd"))
        );
        assert_eq!(
            target_path("/etc/passwd", None, cwd),
            Ok(cwd.join("passwd"))
        );
    }

    #[test]
    fn trailing_slash_is_refused() {
        assert_eq!(default_file_name("a/b/"), no_usable("a/b/"));
        assert_eq!(default_file_name(""), no_usable(""));
        assert_eq!(default_file_name("/"), no_usable("/"));
        let err = target_path("a/b/", None, Path::new("/tmp")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "name \"a/b/\" has no usable last component; pass -o PATH"
        );
    }

    #[test]
    fn dot_components_are_refused() {
        for name in [".", "..", "x/..", "x/.", "../..", "a/b/../.."] {
            assert_eq!(default_file_name(name), no_usable(name), "{name}");
        }
    }

    #[test]
    fn backslash_is_a_separator() {
        assert_eq!(default_file_name("dir\\.."), no_usable("dir\\.."));
        assert_eq!(default_file_name("dir\\"), no_usable("dir\\"));
        assert_eq!(
            default_file_name("..\\..\\windows\\system32\\evil.dll"),
            Ok("evil.dll".to_owned())
        );
        assert_eq!(default_file_name("a/b\\c"), Ok("c".to_owned()));
    }

    #[test]
    fn plain_name() {
        assert_eq!(default_file_name("report.pdf"), Ok("report.pdf".to_owned()));
        assert_eq!(default_file_name(".hidden"), Ok(".hidden".to_owned()));
        assert_eq!(default_file_name("..."), Ok("...".to_owned()));
        let cwd = Path::new("/work");
        assert_eq!(
            target_path("report.pdf", None, cwd),
            Ok(PathBuf::from("/work/report.pdf"))
        );
    }

    #[test]
    fn nul_and_overlong_are_refused() {
        assert_eq!(
            default_file_name("a/b\0c"),
            Err(OutputPathError::ContainsNul {
                name: "a/b\0c".to_owned()
            })
        );
        let max = "x".repeat(MAX_FILE_NAME_BYTES);
        assert_eq!(default_file_name(&max), Ok(max.clone()));
        let long = format!("{max}y");
        assert_eq!(
            default_file_name(&long),
            Err(OutputPathError::TooLong {
                name: long.clone(),
                len: MAX_FILE_NAME_BYTES + 1,
                max: MAX_FILE_NAME_BYTES
            })
        );
    }

    #[test]
    fn output_to_existing_dir_joins_last_component() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = Path::new("/nonexistent-cwd");
        assert_eq!(
            target_path("../../etc/passwd", Some(dir.path()), cwd),
            Ok(dir.path().join("passwd"))
        );
        // Relative to cwd.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(
            target_path("x/report.pdf", Some(Path::new("sub")), dir.path()),
            Ok(sub.join("report.pdf"))
        );
        // A directory still needs a usable name.
        assert_eq!(
            target_path("x/..", Some(dir.path()), cwd),
            Err(OutputPathError::NoUsableComponent {
                name: "x/..".to_owned()
            })
        );
    }

    #[test]
    fn output_file_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chosen.bin");
        // The name is not consulted: even an unusable one is fine with -o.
        for name in ["report.pdf", "../../etc/passwd", "a/b/", ".."] {
            assert_eq!(
                target_path(name, Some(&file), Path::new("/cwd")),
                Ok(file.clone())
            );
        }
        // An existing file is a file, not a directory.
        std::fs::write(&file, b"old").unwrap();
        assert_eq!(
            target_path("n", Some(&file), Path::new("/cwd")),
            Ok(file.clone())
        );
        // Relative: taken relative to cwd.
        assert_eq!(
            target_path("n", Some(Path::new("out/f.bin")), Path::new("/cwd")),
            Ok(PathBuf::from("/cwd/out/f.bin"))
        );
    }

    #[test]
    fn output_ending_in_separator_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing/");
        assert_eq!(
            target_path("n", Some(&missing), Path::new("/cwd")),
            Err(OutputPathError::MissingDirectory {
                path: missing.clone()
            })
        );
    }

    #[test]
    fn without_output_parent_is_always_cwd() {
        let cwd = Path::new("/srv/quickstore/cwd");
        let long_unicode = "é".repeat(127); // 254 bytes
        let too_long_unicode = "é".repeat(128); // 256 bytes
        let deep = format!("{}y", "x/".repeat(5000));
        let names = [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "..\\..\\windows\\system32",
            "C:\\Windows\\win.ini",
            "C:",
            "\\\\server\\share\\f",
            "//double//slash",
            "~",
            "~/.ssh/authorized_keys",
            "-rf",
            "--",
            " ",
            ". .",
            "...",
            ".hidden",
            "a\nb",
            "\u{202e}fdp.exe",
            "é/ü/ñ.txt",
            "日本語/ファイル.txt",
            "🎉",
            "nul\0byte",
            "",
            "/",
            "//",
            "./",
            ".",
            "..",
            "x/.",
            "x/..",
            "x/../",
            "dir\\..",
            &long_unicode,
            &too_long_unicode,
            &deep,
        ];
        let mut accepted = 0;
        for name in names {
            match target_path(name, None, cwd) {
                Ok(path) => {
                    accepted += 1;
                    assert_eq!(path.parent(), Some(cwd), "{name:?} → {path:?}");
                    let file = path.file_name().and_then(|f| f.to_str());
                    assert_eq!(file, default_file_name(name).ok().as_deref(), "{name:?}");
                    assert_eq!(
                        path.components().count(),
                        cwd.components().count() + 1,
                        "{name:?}"
                    );
                }
                Err(e) => assert!(e.to_string().ends_with("pass -o PATH"), "{name:?}: {e}"),
            }
        }
        assert!(accepted >= 20, "only {accepted} accepted");
    }

    #[test]
    fn only_temps_of_dead_processes_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("movie.mkv");
        // Ours (this process runs): not stale.
        let live = temp_beside(&target);
        std::fs::write(&live, b"x").unwrap();
        // A pid no process has (above the kernel's pid_max of 2^22).
        let dead = dir
            .path()
            .join(".movie.mkv.quickstore-99999999-0badf00d.part");
        std::fs::write(&dead, b"x").unwrap();
        // Another file's temp, and a file that only looks alike.
        let other = dir.path().join(".other.quickstore-99999999-0badf00d.part");
        std::fs::write(&other, b"x").unwrap();
        let user = dir.path().join(".movie.mkv.quickstore-99999999-mine.part");
        std::fs::write(&user, b"x").unwrap();
        assert_eq!(stale_temps(&target), vec![dead]);
    }

    #[test]
    fn temp_is_hidden_beside_target() {
        let target = Path::new("/data/out/report.pdf");
        let a = temp_beside(target);
        let b = temp_beside(target);
        assert_ne!(a, b);
        assert_eq!(a.parent(), target.parent());
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".report.pdf.quickstore-"), "{name}");
        assert!(name.ends_with(".part"), "{name}");

        // A maximal name still yields a temp name within the limit, cut on a char boundary.
        let long = Path::new("/d").join("é".repeat(127));
        let temp = temp_beside(&long);
        assert_eq!(temp.parent(), Some(Path::new("/d")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= MAX_FILE_NAME_BYTES, "{}", name.len());

        // A bare relative file: the temp is relative too, in the same (current) directory.
        let temp = temp_beside(Path::new("file"));
        assert_eq!(temp.parent(), Some(Path::new("")));
    }
}
