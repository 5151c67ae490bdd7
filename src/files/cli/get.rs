//! `quickstore get`: a name into a file, onto standard output or a device, or a tree of
//! names into a directory.
//!
//! * A regular file or a new path is written through a temporary file beside it, renamed
//!   into place only when BLAKE3 matches. An existing file with other bytes is replaced only
//!   with `--force`; one that already holds the bytes is left as it is.
//! * `-o -`, a character device or a FIFO is written in place as the bytes arrive, hashed on
//!   the way; a mismatch fails the command saying the bytes written are bad.
//! * A file is fetched in verified pieces from every live holder at once
//!   ([`super::get_pieces`]); a holder that serves a bad piece is dropped and named. An
//!   interrupted get leaves its verified pieces beside the target for the next one.
//! * Standard output and devices are written in order from one holder: every live holder is
//!   dialed at once and the first that connects serves; a dial that fails ends at once, so a
//!   dead holder costs no timeout. So are files when no holder serves pieces (older nodes).
//! * Temporary files of an interrupted whole-stream get are removed on Ctrl-C, and by the
//!   next get of the same target when the process that left them is gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::ProgressBar;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::auth::SignedVersion;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use serde::Serialize;

use super::get_pieces::{PiecesOutcome, get_pieces};
use super::list::list_names;
use super::report::{FileReport, count, human_size, shown};
use super::session::{Session, progress, unexpected};
use super::tree::relative_path;
use super::{Common, quiet};
use crate::blobs::Hash;
use crate::client::Target;
use crate::files::sink::{FileSink, SinkTarget};
use crate::files::wire::{
    BlobRequest, BlobResponse, ChunkReader, FilesRequest, FilesResponse, PeerInfo,
};
use crate::output_path::{stale_temps, target_path, temp_beside};

/// Fetch a file by name, or every name under a prefix.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  quickstore get docs/report.pdf                  write ./report.pdf
  quickstore get docs/report.pdf -o - | less      write to standard output
  quickstore get albums/2026/ -o ./photos         fetch every name under a prefix")]
pub struct GetArgs {
    /// The name; one ending in `/` fetches every name under it (with `-o DIR`).
    pub name: String,
    /// Where to write it (default: the name's last component in the current directory);
    /// `-` for standard output; for a prefix, the directory to fetch the tree into.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Fetch this older version (its Lamport counter, as `put` and `ls` print it) while its
    /// holders keep it (`files.keep_versions`).
    #[arg(long)]
    pub version: Option<u64>,
    /// Replace an existing file that holds other bytes.
    #[arg(short, long)]
    pub force: bool,
    /// Files of a tree fetched at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// Start over: drop the verified pieces an interrupted get of the same file left.
    #[arg(long)]
    no_resume: bool,
    /// Holders to fetch pieces from at once at most (default: every live holder).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    max_sources: Option<u32>,
    #[command(flatten)]
    common: Common,
}

/// Where a get writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Output {
    /// A regular file (existing or not): written beside, renamed over when verified.
    Replace {
        /// The file (symbolic links resolved, so a link keeps pointing at it).
        path: PathBuf,
        /// It exists.
        exists: bool,
    },
    /// Standard output, written in place.
    Stdout,
    /// A character device, FIFO or other non-regular file, written in place.
    InPlace(PathBuf),
}

impl Output {
    /// Where `-o` (or the default) sends the bytes of `name`, from `cwd`.
    pub(super) fn choose(name: &str, output: Option<&Path>, cwd: &Path) -> anyhow::Result<Self> {
        let stdout_names = ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"];
        if output.is_some_and(|o| stdout_names.iter().any(|s| o.as_os_str() == *s)) {
            return Ok(Output::Stdout);
        }
        let path = target_path(name, output, cwd).map_err(|e| anyhow!("refused: {e}"))?;
        // Devices and open descriptors are written, never replaced, whatever they lead to; a
        // plain file under /dev (/dev/shm is a tmpfs) is written like any other.
        if is_descriptor(&path) {
            return Ok(Output::InPlace(path));
        }
        Ok(match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symbolic link is not replaced by a file: refuse it.
                if std::fs::symlink_metadata(&path).is_ok() {
                    bail!(
                        "refused: {} is a symbolic link to nothing; remove it or choose another -o",
                        path.display()
                    );
                }
                Output::Replace {
                    path,
                    exists: false,
                }
            }
            Err(e) => bail!("cannot write {}: {e}", path.display()),
            Ok(meta) if meta.is_file() => Output::Replace {
                path: std::fs::canonicalize(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                exists: true,
            },
            Ok(meta) if meta.is_dir() => bail!("refused: {} is a directory", path.display()),
            Ok(_) => Output::InPlace(path),
        })
    }

    /// As the report shows it.
    fn shown(&self) -> String {
        match self {
            Output::Replace { path, .. } | Output::InPlace(path) => path.display().to_string(),
            Output::Stdout => "-".to_string(),
        }
    }
}

/// Whether `path` is an open descriptor or reached through one: an existing path under
/// `/dev` or `/proc` with a symbolic link on the way (`/dev/stderr`, `/dev/fd/3`,
/// `/proc/self/fd/1`), which a get writes in place whatever it leads to (a regular file too:
/// renaming a new file over it would not reach the descriptor). Devices themselves are told
/// apart later by their type.
fn is_descriptor(path: &Path) -> bool {
    if !(path.starts_with("/dev") || path.starts_with("/proc")) {
        return false;
    }
    if std::fs::symlink_metadata(path).is_err() {
        return false; // a new file: created like anywhere else
    }
    path.ancestors()
        .take_while(|a| *a != Path::new("/dev") && *a != Path::new("/proc"))
        .any(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()))
}

/// What `get PREFIX/ --json` prints.
#[derive(Debug, Serialize)]
struct TreeReport {
    /// The files fetched.
    got: Vec<FileReport>,
    /// Names not fetched, with the reason.
    failed: Vec<(String, String)>,
    /// Names left out because they cannot be a path below the directory.
    skipped: Vec<String>,
    /// Groups that could not be listed (the tree may be incomplete).
    unreachable_groups: Vec<u32>,
    /// Bytes fetched.
    bytes: u64,
    /// Wall time, in milliseconds.
    elapsed_ms: u64,
}

/// Times "not found" is asked again (a fresh put may not have spread yet).
const NOT_FOUND_RETRIES: u32 = 3;

impl GetArgs {
    /// Runs `quickstore get`; Ctrl-C stops it and removes its temporary file.
    pub async fn run(self) -> anyhow::Result<()> {
        check_name(&self.name).map_err(|e| anyhow!("refused: {e}"))?;
        let work = async {
            if self.name.ends_with('/') {
                return self.get_tree().await;
            }
            let cwd = std::env::current_dir().context("no current directory")?;
            let output = Output::choose(&self.name, self.output.as_deref(), &cwd)?;
            let session = Session::start(&self.common)?;
            let bar = progress(0);
            let wanted = Wanted {
                version: self.version,
                force: self.force,
                resume: !self.no_resume,
                max_sources: self.max_sources,
            };
            let report = get_file(&session, &self.name, &output, wanted, &bar).await;
            bar.finish_and_clear();
            report?.print(self.common.json, "got")
        };
        tokio::select! {
            done = work => done,
            _ = tokio::signal::ctrl_c() => bail!(
                "interrupted: nothing was written to the target (a get into a file keeps its \
                 verified pieces beside it, and the same get continues from there)"
            ),
        }
    }

    /// `get PREFIX/ -o DIR`: every name under the prefix, at its path below DIR.
    async fn get_tree(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let Some(dir) = &self.output else {
            bail!(
                "refused: {} is a prefix: give the directory to fetch into (-o DIR)",
                shown(&self.name)
            );
        };
        if dir.as_os_str() == "-" {
            bail!("refused: a tree cannot go to standard output");
        }
        let session = Session::start(&self.common)?;
        let listing = list_names(&session, &self.name).await?;
        let mut report = TreeReport {
            got: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            unreachable_groups: listing.unreachable.iter().map(|(g, _)| *g).collect(),
            bytes: 0,
            elapsed_ms: 0,
        };
        let mut wanted = Vec::new();
        for tuple in &listing.tuples {
            let rest = &tuple.name[self.name.len()..];
            match relative_path(rest) {
                Some(relative) => wanted.push((tuple.name.to_string(), dir.join(relative))),
                None => report.skipped.push(tuple.name.to_string()),
            }
        }
        for name in &report.skipped {
            if !self.common.json {
                eprintln!(
                    "warning: skipped {}: not a plain relative path below {}",
                    shown(name),
                    dir.display()
                );
            }
        }
        let total = listing.tuples.iter().map(|t| t.size).sum();
        let bar = progress(total);
        let results: Vec<(String, anyhow::Result<FileReport>)> =
            futures::stream::iter(wanted.into_iter().map(|(name, path)| {
                let (session, bar) = (&session, &bar);
                let (force, resume, max_sources) = (self.force, !self.no_resume, self.max_sources);
                async move {
                    let result = async {
                        if let Some(parent) = path.parent() {
                            tokio::fs::create_dir_all(parent)
                                .await
                                .with_context(|| format!("cannot create {}", parent.display()))?;
                        }
                        let output = Output::choose(&name, Some(&path), Path::new("."))?;
                        let wanted = Wanted {
                            version: None,
                            force,
                            resume,
                            max_sources,
                        };
                        get_file(session, &name, &output, wanted, bar).await
                    }
                    .await;
                    (name, result)
                }
            }))
            .buffer_unordered(self.jobs as usize)
            .collect()
            .await;
        bar.finish_and_clear();
        for (name, result) in results {
            match result {
                Ok(got) => {
                    report.bytes += got.size;
                    report.got.push(got);
                }
                Err(e) => report.failed.push((name, format!("{e:#}"))),
            }
        }
        report.got.sort_by(|a, b| a.name.cmp(&b.name));
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        if self.common.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for (name, why) in &report.failed {
                eprintln!("failed {}: {why}", shown(name));
            }
            if !quiet() {
                println!(
                    "got {} ({}) into {}, {} ms",
                    count(report.got.len() as u64, "file", "files"),
                    human_size(report.bytes),
                    dir.display(),
                    report.elapsed_ms
                );
            }
        }
        if !listing.unreachable.is_empty() {
            bail!(
                "incomplete: {} could not be listed, names there were not fetched",
                listing.describe_unreachable()
            );
        }
        if !report.failed.is_empty() || !report.skipped.is_empty() {
            bail!(
                "{} of {} not fetched",
                count(
                    (report.failed.len() + report.skipped.len()) as u64,
                    "name",
                    "names"
                ),
                listing.tuples.len()
            );
        }
        Ok(())
    }
}

/// Gets `name` through `target` into `output` (default: its last component in the current
/// directory), from at most `max_sources` holders at once (`None`: all); each open, read and
/// write times out after `timeout`.
pub async fn get(
    target: &Target,
    name: &str,
    output: Option<&Path>,
    timeout: Duration,
    max_sources: Option<u32>,
) -> anyhow::Result<FileReport> {
    let cwd = std::env::current_dir().context("no current directory")?;
    let output = Output::choose(name, output, &cwd)?;
    let session = Session::open(target, timeout)?;
    let wanted = Wanted {
        version: None,
        force: true,
        resume: true,
        max_sources,
    };
    get_file(&session, name, &output, wanted, &ProgressBar::hidden()).await
}

/// Which version, whether an existing different file may be replaced, and how to fetch.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    version: Option<u64>,
    force: bool,
    /// Keep verified pieces an interrupted get left.
    resume: bool,
    /// Holders asked for pieces at once at most (`None`: all).
    max_sources: Option<u32>,
}

async fn get_file(
    session: &Session,
    name: &str,
    output: &Output,
    wanted: Wanted,
    bar: &ProgressBar,
) -> anyhow::Result<FileReport> {
    let started = Instant::now();
    let (tuple, holders, hops) = locate(session, name, wanted.version, NOT_FOUND_RETRIES).await?;
    let mut report = FileReport::of(&tuple, started);
    report.path = Some(output.shown());
    report.hops = Some(hops);
    if let Output::Replace { path, exists: true } = output {
        let held = hash_file(path).await?;
        if held == tuple.version.blake3 {
            report.unchanged = true;
            return Ok(report);
        }
        if !wanted.force {
            bail!(
                "refused: {} exists with other bytes than {}; --force replaces it",
                path.display(),
                shown(name)
            );
        }
    }
    if let Output::Replace { path, .. } = output {
        for stale in stale_temps(path) {
            match tokio::fs::remove_file(&stale).await {
                Ok(()) => tracing::info!("removed {} left by an interrupted get", stale.display()),
                Err(e) => tracing::debug!("cannot remove {}: {e}", stale.display()),
            }
        }
    }
    if holders.is_empty() {
        bail!(
            "unavailable: {} is stored, but none of its {} listed holders is up now; \
             try again when one is back",
            shown(name),
            tuple.holders.len()
        );
    }
    bar.set_length(bar.length().unwrap_or(0).max(tuple.size));
    let by_pieces = match output {
        Output::Replace { path, .. } if tuple.size > 0 => {
            let max = wanted.max_sources.map_or(usize::MAX, |m| m as usize);
            get_pieces(session, &holders, &tuple, path, wanted.resume, max, bar).await?
        }
        _ => PiecesOutcome::NoPieceSource,
    };
    match by_pieces {
        PiecesOutcome::Done(fetched) => {
            for bad in fetched.sources.iter().filter(|s| s.bad) {
                tracing::warn!("holder {} served bytes that fail verification", bad.peer);
                if !quiet() {
                    eprintln!(
                        "warning: holder {} served bytes that fail verification; its pieces \
                         were fetched from the other holders",
                        bad.peer
                    );
                }
            }
            report.sources = Some(fetched.sources);
            report.resumed_bytes = Some(fetched.resumed_bytes);
        }
        PiecesOutcome::NoPieceSource => {
            fetch_from_any(session, &holders, &tuple, output, bar).await?;
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report.with_connection(session))
}

/// Looks `name` up through the session's entry node (`version`: that older version), asking
/// again up to `retries` times while it is not found (a fresh put may not have spread yet):
/// the tuple, whose signature is checked, its live holders (nearest first) and the Kelips
/// hops the lookup took.
pub(super) async fn locate(
    session: &Session,
    name: &str,
    version: Option<u64>,
    retries: u32,
) -> anyhow::Result<(FileTuple<Peer>, Vec<PeerInfo>, u32)> {
    check_name(name).map_err(|e| anyhow!("refused: {e}"))?;
    let request = match version {
        None => FilesRequest::Locate {
            name: name.to_string(),
        },
        Some(lamport) => FilesRequest::Version {
            name: name.to_string(),
            lamport,
            forwarded: false,
        },
    };
    let mut attempt = 0;
    let (tuple, holders, hops) = loop {
        match session.ask(&request).await? {
            FilesResponse::Located {
                tuple,
                holders,
                hops,
            } => break (tuple, holders, hops),
            FilesResponse::NotFound if attempt < retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            }
            other => return Err(unexpected(&other, name)),
        }
    };
    check_signature(&tuple)?;
    Ok((tuple, holders, hops))
}

/// The bytes of `name` (at most `max`), or `None` when the name is not stored: for small
/// records the client itself reads, such as grant lists.
pub(super) async fn fetch_small(
    session: &Session,
    name: &str,
    max: u64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let request = FilesRequest::Locate {
        name: name.to_string(),
    };
    let (tuple, holders) = match session.ask(&request).await? {
        FilesResponse::Located { tuple, .. } if tuple.deleted => return Ok(None),
        FilesResponse::Located { tuple, holders, .. } => (tuple, holders),
        FilesResponse::NotFound => return Ok(None),
        other => return Err(unexpected(&other, name)),
    };
    if tuple.size > max {
        bail!("{} is {} bytes, more than {max}", shown(name), tuple.size);
    }
    check_signature(&tuple)?;
    if holders.is_empty() {
        bail!("unavailable: none of the holders of {} is up", shown(name));
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let path = dir.path().join("record");
    let output = Output::choose(name, Some(&path), dir.path())?;
    fetch_from_any(session, &holders, &tuple, &output, &ProgressBar::hidden()).await?;
    Ok(Some(tokio::fs::read(&path).await?))
}

/// A reader's check of a version's signature, when it carries one (the bytes are checked
/// against its hash as they come).
fn check_signature(tuple: &FileTuple<Peer>) -> anyhow::Result<()> {
    if let Some(auth) = &tuple.auth {
        quickstore_behaviours::auth::verify(SignedVersion::from(tuple), auth).map_err(|e| {
            anyhow!(
                "refused: the entry node answered a version of {} that does not verify: {e}",
                shown(&tuple.name)
            )
        })?;
    }
    Ok(())
}

/// Dials every holder at once and fetches from the first that connects, then from the next
/// when one fails before writing anything the target keeps.
async fn fetch_from_any(
    session: &Session,
    holders: &[PeerInfo],
    tuple: &FileTuple<Peer>,
    output: &Output,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut connecting: FuturesUnordered<_> = holders
        .iter()
        .map(|holder| async move {
            let connected = session.connect(holder, tuple.size, session.timeout).await;
            (holder, connected)
        })
        .collect();
    let mut unreachable: Vec<anyhow::Error> = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    while let Some((holder, connected)) = connecting.next().await {
        if let Err(e) = connected {
            tracing::info!("holder {} unreachable: {e:#}", holder.peer);
            unreachable.push(e);
            continue;
        }
        match fetch_to(session, holder, tuple, output, bar).await {
            Ok(()) => return Ok(()),
            Err(Fetch::Final(e)) => return Err(e),
            Err(Fetch::TryNext(e)) => {
                tracing::info!("holder {} failed: {e:#}", holder.peer);
                failed = Some(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let first = unreachable
        .first()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    bail!(
        "unreachable: {} of {} {} unreachable ({first})",
        count(holders.len() as u64, "holder", "holders"),
        shown(&tuple.name),
        if holders.len() == 1 { "is" } else { "are" }
    )
}

/// How a fetch from one holder failed.
enum Fetch {
    /// Another holder may serve (nothing the target keeps was written).
    TryNext(anyhow::Error),
    /// Stop: bytes went to a target that cannot be taken back (standard output, a device).
    Final(anyhow::Error),
}

/// Streams the blob from `holder` to `output`, hashing as it goes; a file is renamed into
/// place only when the hash matches.
async fn fetch_to(
    session: &Session,
    holder: &PeerInfo,
    tuple: &FileTuple<Peer>,
    output: &Output,
    bar: &ProgressBar,
) -> Result<(), Fetch> {
    let io = session.timeout;
    let size = tuple.size;
    let opened = async {
        let request = BlobRequest::Get {
            blake3: tuple.version.blake3,
        };
        let (stream, answer) = session.blob_exchange(holder, size, &request).await?;
        match answer {
            BlobResponse::Sending { size: offered } if offered == size => Ok(stream),
            BlobResponse::Sending { size: offered } => bail!(
                "corrupt: holder {} offers {offered} bytes, the tuple says {size}",
                holder.peer
            ),
            BlobResponse::NotFound => bail!("holder {} no longer has the bytes", holder.peer),
            BlobResponse::Refused { reason } => bail!("refused: {reason}"),
            other => bail!("unexpected answer {other:?}"),
        }
    };
    let mut stream = opened.await.map_err(Fetch::TryNext)?;
    let (target, temp) = match output {
        Output::Replace { path, .. } => {
            let temp = TempFile(Some(temp_beside(path)));
            (
                SinkTarget::New(temp.path().to_path_buf()),
                Some((temp, path)),
            )
        }
        Output::InPlace(path) => (SinkTarget::InPlace(path.clone()), None),
        Output::Stdout => {
            let stdout = std::io::stdout();
            let handle = std::os::fd::AsFd::as_fd(&stdout)
                .try_clone_to_owned()
                .map_err(|e| Fetch::Final(anyhow!("cannot write to standard output: {e}")))?;
            (SinkTarget::Handle(std::fs::File::from(handle)), None)
        }
    };
    let mut sink = FileSink::start(target, size);
    let mut chunks = ChunkReader::new(size);
    let mut cut = None;
    loop {
        match chunks.next(&mut stream, io).await {
            Ok(Some(chunk)) => {
                if sink.write(chunk).await.is_err() {
                    break;
                }
                bar.inc(chunk.len() as u64);
            }
            Ok(None) => break,
            Err(e) => {
                cut = Some(anyhow!("unreachable: holder {}: {e}", holder.peer));
                break;
            }
        }
    }
    let written = sink.accepted();
    let finished = sink.finish().await;
    // A file written beside its target can be dropped and fetched again; bytes written in
    // place cannot be taken back.
    let fail = |e: anyhow::Error| match temp {
        Some(_) => Fetch::TryNext(e),
        None if written == 0 => Fetch::TryNext(e),
        None => Fetch::Final(anyhow!(
            "{e:#}; the {written} bytes already written to {} are incomplete",
            output.shown()
        )),
    };
    let hash = match (finished, cut) {
        (Err(e), _) => return Err(fail(anyhow!("cannot write {}: {e}", output.shown()))),
        (Ok(_), Some(e)) => return Err(fail(e)),
        (Ok(hash), None) => hash,
    };
    if hash != tuple.version.blake3 {
        let e = anyhow!(
            "corrupt: the bytes from holder {} fail their hash",
            holder.peer
        );
        return Err(match temp {
            Some(_) => Fetch::TryNext(e),
            None => Fetch::Final(anyhow!(
                "{e:#}; the {written} bytes written to {} are bad",
                output.shown()
            )),
        });
    }
    if let Some((temp, path)) = temp {
        tokio::fs::rename(temp.path(), path)
            .await
            .map_err(|e| Fetch::Final(anyhow!("cannot write {}: {e}", path.display())))?;
        temp.keep();
    }
    Ok(())
}

/// A temporary file removed when dropped (a failed or interrupted get), unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// It was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // One unlink, on the way out of a failed or cancelled get.
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// BLAKE3 of the file at `path`, read on a blocking thread.
pub(super) async fn hash_file(path: &Path) -> anyhow::Result<Hash> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        let file = std::fs::File::open(&owned)?;
        hasher.update_reader(file)?;
        anyhow::Ok(*hasher.finalize().as_bytes())
    })
    .await
    .context("the hashing thread failed")?
    .with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(output: &str) -> Output {
        Output::choose("name", Some(Path::new(output)), Path::new("/tmp")).expect("an output")
    }

    #[test]
    fn descriptors_and_devices_are_written_in_place_and_new_files_under_dev_are_created() {
        assert!(matches!(choose("/dev/null"), Output::InPlace(_)));
        assert!(matches!(choose("/proc/self/fd/2"), Output::InPlace(_)));
        if std::fs::symlink_metadata("/dev/stderr").is_ok() {
            assert!(matches!(choose("/dev/stderr"), Output::InPlace(_)));
        }
        if Path::new("/dev/shm").is_dir() {
            // A tmpfs: `get -o /dev/shm/x` made a new file before, and must again.
            let new = format!("/dev/shm/qs-get-test-{}", std::process::id());
            assert!(matches!(
                choose(&new),
                Output::Replace { exists: false, .. }
            ));
        }
    }
}
