//! `quickstore put`: a regular file, a stream (`-`, a FIFO, `/dev/stdin`, a process
//! substitution), or a directory tree.
//!
//! A put announces its size before any byte moves, so a stream is first spooled to a
//! temporary file ([`super::spool`]), never held in memory. The source is checked before the
//! network is contacted. The report says how many copies exist and, when fewer than R, why;
//! `--min-copies N` turns fewer than N durable copies into a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::{AsyncWriteExt, StreamExt};
use indicatif::ProgressBar;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::auth::SignedVersion;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use serde::Serialize;

use super::report::{FileReport, count, human_size, shown};
use super::session::{Session, progress, unexpected};
use super::sign::{Authority, authority};
use super::spool::{Source, spool};
use super::tree::walk;
use super::{Common, quiet};
use crate::client::Target;
use crate::files::source::FileSource;
use crate::files::wire::{
    BlobRequest, BlobResponse, BlobTrailer, FilesRequest, FilesResponse, MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES, PeerInfo, read_message, write_chunk, write_message,
};

/// Store a file, a stream or a directory tree under a name.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  quickstore put ./report.pdf docs/report.pdf     store a file under a name
  tar c photos | quickstore put - backups/photos.tar   store standard input
  quickstore put ./photos albums/2026              store a tree as albums/2026/…")]
pub struct PutArgs {
    /// The file to store: a regular file, `-` for standard input, a FIFO or device (read to
    /// its end), or a directory (every regular file below it).
    pub file: PathBuf,
    /// The name to store it under (default: the file's name; for a directory, the prefix of
    /// every name, default the directory's name). 1 to 1024 bytes of UTF-8 without NUL; a key,
    /// never a path.
    pub name: Option<String>,
    #[command(flatten)]
    common: Common,
    /// How long the home nodes may take to make every copy durable, in seconds.
    #[arg(long, default_value_t = 600)]
    deadline_s: u64,
    /// Fail unless at least this many copies are durable (default: succeed with as many as
    /// the name's group can hold, and say so).
    #[arg(long, value_name = "N")]
    min_copies: Option<u32>,
    /// Files of a directory sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
}

/// What a put must achieve.
#[derive(Debug, Clone, Copy)]
pub(super) struct PutRules {
    /// How long the homes may take to make every copy durable.
    pub(super) deadline: Duration,
    /// Fewer durable copies than this fail the command.
    pub(super) min_copies: u32,
}

/// What `put DIR --json` prints.
#[derive(Debug, Serialize)]
struct TreeReport {
    /// The files stored.
    stored: Vec<FileReport>,
    /// Files not stored: path and reason.
    failed: Vec<(String, String)>,
    /// Entries left out (symbolic links, special files, names that are not UTF-8).
    skipped: Vec<String>,
    /// Bytes stored.
    bytes: u64,
    /// Wall time, in milliseconds.
    elapsed_ms: u64,
}

impl PutArgs {
    /// Runs `quickstore put`.
    pub async fn run(self) -> anyhow::Result<()> {
        let rules = PutRules {
            deadline: Duration::from_secs(self.deadline_s),
            min_copies: self.min_copies.unwrap_or(0),
        };
        // Every check of the source comes before the network.
        match Source::of(&self.file)? {
            Source::Directory => self.put_tree(rules).await,
            Source::Regular => {
                let name = match &self.name {
                    Some(name) => name.clone(),
                    None => file_name(&self.file)?,
                };
                check_name(&name).map_err(|e| anyhow!("refused: {e}"))?;
                let session = Session::start(&self.common)?;
                let bar = progress(0);
                let report = put_file(&session, &self.file, &name, rules, &bar).await;
                bar.finish_and_clear();
                report?.print(self.common.json, "stored")
            }
            stream => {
                let Some(name) = self.name.clone() else {
                    bail!(
                        "refused: {} is a stream: give the name to store it under \
                         (quickstore put {} NAME)",
                        self.file.display(),
                        self.file.display()
                    );
                };
                check_name(&name).map_err(|e| anyhow!("refused: {e}"))?;
                let spooled = spool(stream, &self.file).await?;
                let session = Session::start(&self.common)?;
                let bar = progress(0);
                let report = put_file(&session, &spooled, &name, rules, &bar).await;
                bar.finish_and_clear();
                drop(spooled);
                report?.print(self.common.json, "stored")
            }
        }
    }

    /// `put DIR [PREFIX]`: every regular file below DIR as `PREFIX/relative/path`.
    async fn put_tree(&self, rules: PutRules) -> anyhow::Result<()> {
        let started = Instant::now();
        let prefix = match &self.name {
            Some(prefix) => prefix.trim_end_matches('/').to_string(),
            None => file_name(&self.file)?,
        };
        let tree = walk(&self.file)?;
        for skipped in &tree.skipped {
            tracing::warn!("skipped {skipped}");
            if !self.common.json {
                eprintln!("warning: skipped {skipped}");
            }
        }
        let files: Vec<(PathBuf, String, u64)> = tree
            .files
            .iter()
            .map(|f| {
                let name = if prefix.is_empty() {
                    f.relative.clone()
                } else {
                    format!("{prefix}/{}", f.relative)
                };
                (f.path.clone(), name, f.size)
            })
            .collect();
        for (path, name, _) in &files {
            check_name(name)
                .map_err(|e| anyhow!("refused: {} as {}: {e}", path.display(), shown(name)))?;
        }
        let total: u64 = files.iter().map(|f| f.2).sum();
        let session = Session::start(&self.common)?;
        let bar = progress(total);
        let results: Vec<(PathBuf, anyhow::Result<FileReport>)> =
            futures::stream::iter(files.into_iter().map(|(path, name, _)| {
                let session = &session;
                let bar = &bar;
                async move {
                    let result = put_file(session, &path, &name, rules, bar).await;
                    (path, result)
                }
            }))
            .buffer_unordered(self.jobs as usize)
            .collect()
            .await;
        bar.finish_and_clear();
        let mut report = TreeReport {
            stored: Vec::new(),
            failed: Vec::new(),
            skipped: tree.skipped.clone(),
            bytes: 0,
            elapsed_ms: 0,
        };
        for (path, result) in results {
            match result {
                Ok(stored) => {
                    report.bytes += stored.size;
                    report.stored.push(stored);
                }
                Err(e) => report
                    .failed
                    .push((path.display().to_string(), format!("{e:#}"))),
            }
        }
        report.stored.sort_by(|a, b| a.name.cmp(&b.name));
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        if self.common.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for (path, why) in &report.failed {
                eprintln!("failed {path}: {why}");
            }
            if !quiet() {
                let fewest = report.stored.iter().map(|r| r.copies).min();
                println!(
                    "stored {} ({}) under {}/{}, {} ms",
                    count(report.stored.len() as u64, "file", "files"),
                    human_size(report.bytes),
                    shown(&prefix),
                    match fewest {
                        Some(n) => format!(", fewest copies of a file: {n}"),
                        None => String::new(),
                    },
                    report.elapsed_ms
                );
            }
        }
        if !report.failed.is_empty() {
            bail!(
                "{} of {} not stored (listed above)",
                count(report.failed.len() as u64, "file", "files"),
                report.failed.len() + report.stored.len()
            );
        }
        Ok(())
    }
}

/// The last component of `path` as UTF-8, the default name.
fn file_name(path: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let normal = absolute.components().collect::<PathBuf>();
    let name = if path.file_name().is_some() {
        path.file_name()
    } else {
        normal.file_name()
    };
    name.and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "refused: {} has no UTF-8 file name: give a name",
                path.display()
            )
        })
}

/// Puts `file` under `name` through `target` (an entry node); each open, read and write
/// times out after `timeout`, the copies must be durable within `deadline`.
pub async fn put(
    target: &Target,
    file: &Path,
    name: &str,
    timeout: Duration,
    deadline: Duration,
) -> anyhow::Result<FileReport> {
    let rules = PutRules {
        deadline,
        min_copies: 0,
    };
    let session = Session::open(target, timeout)?;
    put_file(&session, file, name, rules, &ProgressBar::hidden()).await
}

/// Puts the regular file `file` under `name`; `bar` counts the bytes sent (its length grows
/// by the file's size).
pub(super) async fn put_file(
    session: &Session,
    file: &Path,
    name: &str,
    rules: PutRules,
    bar: &ProgressBar,
) -> anyhow::Result<FileReport> {
    let started = Instant::now();
    check_name(name).map_err(|e| anyhow!("refused: {e}"))?;
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if bar.length() == Some(0) {
        bar.set_length(size);
    }
    let request = FilesRequest::Place {
        name: name.to_string(),
        size,
        forwarded: false,
    };
    let (homes, group_size, newest, replication, owner) = match session.ask(&request).await? {
        FilesResponse::Placed {
            homes,
            group_size,
            newest,
            replication,
            owner,
        } => (homes, group_size, newest, replication, owner),
        other => return Err(unexpected(&other, name)),
    };
    let authority = authority(session, name, owner).await?;
    if rules.min_copies > group_size {
        bail!(
            "refused: {} needs {} (--min-copies) but its group has {}; nothing was sent",
            shown(name),
            count(u64::from(rules.min_copies), "copy", "copies"),
            count(u64::from(group_size), "live node", "live nodes")
        );
    }
    let mut last = anyhow!("refused: no home node offered");
    // Homes that refused or failed are left out of the next try's pipeline: the next first
    // home replaces them from the rest of the group.
    let mut failed: Vec<usize> = Vec::new();
    for (i, first) in homes.iter().enumerate() {
        let others: Vec<PeerInfo> = homes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && !failed.contains(j))
            .map(|(_, h)| h.clone())
            .collect();
        let sending = Sending {
            file,
            size,
            newest,
            deadline: rules.deadline,
            bar,
            authority: &authority,
        };
        match put_to(session, first, others, name, sending).await {
            Ok(tuple) => {
                let mut report = FileReport::of(&tuple, started).with_connection(session);
                if replication > 0 {
                    report.wanted = Some(replication);
                    if report.copies < replication {
                        report.fewer_because = Some(if group_size < replication {
                            format!(
                                "the name's group has {}",
                                count(u64::from(group_size), "live node", "live nodes")
                            )
                        } else {
                            "the other home nodes failed; repair adds copies later".to_string()
                        });
                    }
                }
                if (group_size as usize) < homes.len().max(3) {
                    report.group_size = Some(group_size);
                }
                if report.copies < rules.min_copies {
                    bail!(
                        "too few copies: {} is stored with {}, fewer than --min-copies {}",
                        shown(name),
                        count(u64::from(report.copies), "durable copy", "durable copies"),
                        rules.min_copies
                    );
                }
                return Ok(report);
            }
            Err(PutError::Final(e)) => return Err(e),
            Err(PutError::TryNext(e)) => {
                tracing::info!("home {} failed: {e:#}", first.peer);
                failed.push(i);
                last = e;
            }
        }
    }
    Err(last)
}

enum PutError {
    /// Another home may work: this one could not be reached, or refused to store the bytes
    /// (before they moved, or after them: its disk filled up). The bytes are sent again to
    /// the next home, which replaces this one.
    TryNext(anyhow::Error),
    /// Stop here.
    Final(anyhow::Error),
}

/// The bytes to send and what the placement said.
struct Sending<'a> {
    file: &'a Path,
    size: u64,
    /// The newest Lamport counter the placing member knew.
    newest: u64,
    /// How long the homes may take to make every copy durable.
    deadline: Duration,
    bar: &'a ProgressBar,
    /// Whom the version is signed for.
    authority: &'a Authority,
}

async fn put_to(
    session: &Session,
    first: &PeerInfo,
    others: Vec<PeerInfo>,
    name: &str,
    sending: Sending<'_>,
) -> Result<FileTuple<Peer>, PutError> {
    let Sending {
        file: path,
        size,
        newest,
        deadline,
        bar,
        authority,
    } = sending;
    let io = session.timeout;
    let request = BlobRequest::Put {
        name: name.to_string(),
        size,
        homes: others,
        after: newest,
        signed: true,
    };
    let (mut stream, answer) = session
        .blob_exchange(first, size, &request)
        .await
        .map_err(PutError::TryNext)?;
    // A node older than signed writes answers `ready`: the version goes unsigned.
    let lamport = match answer {
        BlobResponse::Ready => None,
        BlobResponse::ReadyAt { lamport } => Some(lamport),
        BlobResponse::Refused { reason } => {
            return Err(PutError::TryNext(anyhow!("refused: {reason}")));
        }
        other => return Err(PutError::Final(anyhow!("unexpected answer {other:?}"))),
    };
    let mut moved = 0u64;
    let sent = async {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut source = FileSource::start(file.into_std().await, size);
        while let Some(chunk) = source.next().await {
            write_chunk(&mut stream, chunk, io).await?;
            bar.inc(chunk.len() as u64);
            moved += chunk.len() as u64;
        }
        let blake3 = source
            .finish()
            .await
            .with_context(|| format!("{} changed while being read", path.display()))?;
        let auth = match lamport {
            Some(lamport) => {
                let version = SignedVersion {
                    name,
                    lamport,
                    blake3: &blake3,
                    size,
                    deleted: false,
                };
                Some(authority.sign(session, version)?)
            }
            None => None,
        };
        let trailer = BlobTrailer { blake3, auth };
        write_message(&mut stream, &trailer, MAX_REQUEST_BYTES, io).await?;
        match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, deadline).await? {
            BlobResponse::Stored { tuple } => {
                let _ = stream.close().await;
                Ok(Ok(tuple))
            }
            BlobResponse::Refused { reason } => Ok(Err(anyhow!("refused: {reason}"))),
            other => Err(anyhow!("unexpected answer {other:?}")),
        }
    };
    let failed = |e: anyhow::Error| {
        anyhow!(
            "put failed at home node {}: {e:#}; nothing was published",
            first.peer
        )
    };
    match sent.await {
        Ok(Ok(tuple)) => Ok(tuple),
        // The home took the bytes and could not keep them (its disk filled up while they
        // flowed): the next home gets them from the start.
        Ok(Err(refusal)) => {
            bar.set_position(bar.position().saturating_sub(moved));
            Err(PutError::TryNext(failed(refusal)))
        }
        Err(e) => Err(PutError::Final(failed(e))),
    }
}
