//! Directory trees: [`walk`] lists what `put DIR` stores, [`relative_path`] tells where
//! `get PREFIX/ -o DIR` may write a name.
//!
//! A walk never follows a symbolic link (a link to `/` would store the whole disk, a link
//! loop would never end) and stores only regular files; every entry left out is reported.
//! A name fetched into a tree becomes a path only when each of its components is a plain
//! file name, so no name can write outside the tree.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use crate::output_path::MAX_FILE_NAME_BYTES;

/// A regular file found below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TreeFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its path below the root, components joined by `/`.
    pub relative: String,
    /// Bytes.
    pub size: u64,
}

/// What a walk found.
#[derive(Debug, Default)]
pub(super) struct Tree {
    /// Regular files, sorted by relative path.
    pub files: Vec<TreeFile>,
    /// Entries left out, each with the reason (`link a/b (symbolic link, not followed)`).
    pub skipped: Vec<String>,
}

/// Every regular file below `root`, without following symbolic links.
pub(super) fn walk(root: &Path) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tree.skipped
                    .push(format!("{} (its name is not UTF-8)", path.display()));
                continue;
            };
            let below = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            // The entry's own type: a symbolic link is not followed.
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if kind.is_dir() {
                pending.push((path, below));
            } else if kind.is_file() {
                let size = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
                tree.files.push(TreeFile {
                    path,
                    relative: below,
                    size,
                });
            } else if kind.is_symlink() {
                tree.skipped.push(format!(
                    "{} (a symbolic link, not followed)",
                    path.display()
                ));
            } else {
                tree.skipped
                    .push(format!("{} (not a regular file)", path.display()));
            }
        }
    }
    tree.files.sort_by(|a, b| a.relative.cmp(&b.relative));
    tree.skipped.sort();
    Ok(tree)
}

/// Where the name `rest` (a name with its prefix taken off) goes below a tree's root: each
/// `/`-separated component must be a plain file name (not empty, `.` or `..`, no `\`, no
/// NUL, at most [`MAX_FILE_NAME_BYTES`]). `None` when it cannot be written safely.
pub(super) fn relative_path(rest: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for component in rest.split('/') {
        let plain = !component.is_empty()
            && component.len() <= MAX_FILE_NAME_BYTES
            && !component.contains(['\\', '\0'])
            && matches!(
                Path::new(component).components().collect::<Vec<_>>().as_slice(),
                [Component::Normal(only)] if *only == component
            );
        if !plain {
            return None;
        }
        path.push(component);
    }
    (!path.as_os_str().is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_takes_regular_files_and_reports_links_and_specials() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("top"), b"1").unwrap();
        std::fs::write(root.join("a/b/deep"), b"22").unwrap();
        std::os::unix::fs::symlink("/", root.join("a/to-root")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
        let fifo = root.join("a/fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let tree = walk(&root).unwrap();
        let relative: Vec<&str> = tree.files.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(relative, ["a/b/deep", "top"]);
        assert_eq!(tree.files[0].size, 2);
        assert_eq!(tree.skipped.len(), 3, "{:?}", tree.skipped);
        assert!(tree.skipped.iter().any(|s| s.contains("to-root")));
        assert!(tree.skipped.iter().any(|s| s.contains("loop")));
        assert!(tree.skipped.iter().any(|s| s.contains("fifo")));
    }

    #[test]
    fn only_plain_components_become_paths() {
        assert_eq!(relative_path("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        for bad in [
            "",
            "/etc/passwd",
            "a/../../x",
            "..",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a/",
        ] {
            assert_eq!(relative_path(bad), None, "{bad:?}");
        }
        assert_eq!(relative_path(&"x".repeat(256)), None);
    }
}
