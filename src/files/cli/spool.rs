//! What a put reads: [`Source::of`] tells a regular file, a directory and a stream apart
//! (before the network is contacted); [`spool`] reads a stream to its end into a temporary
//! file, since a put announces its size before its first byte.
//!
//! The spool lives in the temporary directory (`TMPDIR`, default `/tmp`) and is removed when
//! the put ends, however it ends. Bytes are copied by `std::io::copy` on a blocking thread,
//! never held whole in memory.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// What the path given to `put` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A regular file (after following symbolic links): its size is known.
    Regular,
    /// A directory: every regular file below it.
    Directory,
    /// `-`: standard input, read to its end.
    Stdin,
    /// A FIFO, a character device, a socket or anything else that is not a regular file
    /// (`/dev/stdin`, `<(command)`): read to its end.
    Stream,
}

impl Source {
    /// What `path` is; `-` is standard input. A missing or unreadable path is an error
    /// naming it.
    pub(super) fn of(path: &Path) -> anyhow::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Source::Stdin);
        }
        let metadata =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(if metadata.is_dir() {
            Source::Directory
        } else if metadata.is_file() {
            Source::Regular
        } else {
            Source::Stream
        })
    }
}

/// Reads `source` (`path`, or standard input) to its end into a new temporary file, which is
/// deleted when the returned path is dropped.
pub(super) async fn spool(source: Source, path: &Path) -> anyhow::Result<tempfile::TempPath> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let what = if source == Source::Stdin {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let spool = tempfile::Builder::new()
            .prefix(".quickstore-spool-")
            .tempfile()
            .context("cannot create a temporary file to spool the stream to (TMPDIR)")?;
        let (mut file, spool_path) = spool.into_parts();
        let copied = match source {
            Source::Stdin => io::copy(&mut io::stdin().lock(), &mut file).map_err(Into::into),
            Source::Stream => File::open(&path)
                .with_context(|| format!("cannot open {what}"))
                .and_then(|mut input| io::copy(&mut input, &mut file).map_err(Into::into)),
            Source::Regular | Source::Directory => bail!("{what} is not a stream"),
        };
        copied
            .and_then(|n| {
                file.flush()?;
                Ok(n)
            })
            .with_context(|| {
                format!(
                    "cannot spool {what} to {} (a put must know its size before it starts; \
                     set TMPDIR to a disk with room)",
                    spool_path.display()
                )
            })?;
        Ok(spool_path)
    })
    .await
    .context("the spooling thread failed")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_directory_and_a_file_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(Source::of(&file).unwrap(), Source::Regular);
        assert_eq!(Source::of(dir.path()).unwrap(), Source::Directory);
        assert_eq!(Source::of(Path::new("-")).unwrap(), Source::Stdin);
        assert_eq!(Source::of(Path::new("/dev/null")).unwrap(), Source::Stream);
        let missing = Source::of(&dir.path().join("nope")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope"), "{missing:#}");
    }

    #[tokio::test]
    async fn a_stream_is_spooled_whole_and_the_spool_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let bytes: Vec<u8> = (0..3_000_001u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
        };
        let spooled = spool(Source::Stream, &fifo).await.unwrap();
        writer.join().unwrap();
        assert!(std::fs::read(&spooled).unwrap() == bytes);
        let kept = spooled.to_path_buf();
        drop(spooled);
        assert!(!kept.exists(), "the spool outlived the put");
    }
}
