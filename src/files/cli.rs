//! `quickstore put`, `get`, `rm` and `ls`: the client commands that move files.
//!
//! Each runs an ephemeral peer ([`ClientPeer`]), asks the entry node (the local node, or
//! `--peer`) over `/quickstore/files/1.0.0`, and moves bytes directly with the holders over
//! `/quickstore/blob/1.0.0`. Exit code 0 on success; otherwise one line naming the reason.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::AsyncWriteExt;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::{PeerId, Stream};
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use serde::Serialize;

use super::client::{ClientPeer, ReachError, RelayPolicy};
use super::service::{files_request, open_stream};
use super::sink::FileSink;
use super::source::FileSource;
use super::wire::{
    BLOB_PROTOCOL, BlobRequest, BlobResponse, BlobTrailer, ChunkReader, FilesRequest,
    FilesResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PeerInfo, read_message, write_chunk,
    write_message,
};
use crate::blobs::to_hex;
use crate::client::Target;
use crate::output_path::{target_path, temp_beside};
use quickstore_behaviours::net::record::Scope;

/// Options every file command shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    target: Target,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Timeout of every open, read and write, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Never move file bytes through a relay: a node reachable only through one (hole
    /// punching failed) is an error.
    #[arg(long)]
    no_relay_transfers: bool,
}

/// Store a file under a name.
#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// The file to store.
    pub file: PathBuf,
    /// The name to store it under (default: the file's name). 1 to 1024 bytes of UTF-8
    /// without NUL; a key, never a path.
    pub name: Option<String>,
    #[command(flatten)]
    common: Common,
    /// How long the home nodes may take to make every copy durable, in seconds.
    #[arg(long, default_value_t = 600)]
    deadline_s: u64,
}

/// Fetch a file by name.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// The name.
    pub name: String,
    /// Where to write it (default: the name's last component in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Fetch this older version (its Lamport counter, as `put` and `ls` print it) while its
    /// holders keep it (`files.keep_versions`).
    #[arg(long)]
    pub version: Option<u64>,
    #[command(flatten)]
    common: Common,
}

/// Delete a name (publishes a tombstone; holders drop the bytes).
#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// The name.
    pub name: String,
    #[command(flatten)]
    common: Common,
}

/// List every name with its newest version, size and holders.
#[derive(Args, Debug, Clone)]
pub struct LsArgs {
    #[command(flatten)]
    common: Common,
}

/// What `put` and `get` print with `--json`.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The name.
    pub name: String,
    /// The version's Lamport counter.
    pub version: u64,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 (hex).
    pub blake3: String,
    /// Holders' PeerIds.
    pub holders: Vec<String>,
    /// Wall time of the command, in milliseconds.
    pub elapsed_ms: u64,
    /// Where the bytes were written (get).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Kelips lookup rounds the entry node needed (get).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// Live members of the name's group, when fewer than the replication (put).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    /// How the bytes went between the client and the node it streamed with: `direct`
    /// (perhaps after hole punching) or `relay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    /// Milliseconds from asking for a connection to that node to a usable one (dial, relay,
    /// hole punching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
}

impl FileReport {
    fn of(tuple: &FileTuple<Peer>, started: Instant) -> Self {
        Self {
            name: tuple.name.to_string(),
            version: tuple.version.lamport,
            size: tuple.size,
            blake3: to_hex(&tuple.version.blake3),
            holders: tuple.holders.iter().map(|p| p.to_string()).collect(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            path: None,
            hops: None,
            group_size: None,
            via: None,
            connect_ms: None,
        }
    }

    /// Adds how the session's last stream was connected.
    fn with_connection(mut self, session: &Session) -> Self {
        if let Ok(last) = session.last_connection.lock()
            && let Some((relayed, ms)) = *last
        {
            self.via = Some(if relayed { "relay" } else { "direct" });
            self.connect_ms = Some(ms);
        }
        self
    }

    fn print(&self, json: bool, verb: &str) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            println!(
                "{verb} {:?}: version {}, {} bytes, blake3 {}, {} holders, {} ms",
                self.name,
                self.version,
                self.size,
                self.blake3,
                self.holders.len(),
                self.elapsed_ms
            );
            if let Some(path) = &self.path {
                println!("written to {path}");
            }
        }
        Ok(())
    }
}

struct Session {
    client: ClientPeer,
    entry: PeerId,
    timeout: Duration,
    relay: RelayPolicy,
    /// Where the client reached the entry node.
    entry_address: libp2p::Multiaddr,
    /// The last blob stream's connection: relayed, and milliseconds to get it.
    last_connection: std::sync::Mutex<Option<(bool, u64)>>,
    /// The site (public IP) of the entry node when the client is on its LAN, asked once.
    site: tokio::sync::OnceCell<Option<std::net::IpAddr>>,
}

impl Session {
    fn start(common: &Common) -> anyhow::Result<Self> {
        let mut session = Self::open(&common.target, Duration::from_secs(common.timeout_s.max(1)))?;
        session.relay.allowed &= !common.no_relay_transfers;
        Ok(session)
    }

    /// Learns the entry node's site when the client is on its LAN (reached it at a private
    /// or loopback address): nodes' LAN addresses are dialable only from the same site.
    async fn site(&self) -> Option<std::net::IpAddr> {
        *self
            .site
            .get_or_init(|| async {
                if Scope::of(&self.entry_address) != Scope::Lan {
                    return None;
                }
                match self.ask(&FilesRequest::Site {}).await {
                    Ok(FilesResponse::Site { ip }) => ip.and_then(|ip| ip.parse().ok()),
                    Ok(other) => {
                        tracing::debug!("entry node answered site with {other:?}");
                        None
                    }
                    Err(e) => {
                        tracing::debug!("entry node did not tell its site: {e:#}");
                        None
                    }
                }
            })
            .await
    }

    fn open(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let (entry, address) = target.resolve()?;
        let client = ClientPeer::start(timeout)?;
        client.book.add(entry, vec![address.clone()]);
        Ok(Self {
            client,
            entry,
            timeout,
            relay: RelayPolicy::default(),
            entry_address: address,
            last_connection: std::sync::Mutex::new(None),
            site: tokio::sync::OnceCell::new(),
        })
    }

    async fn ask(&self, request: &FilesRequest) -> anyhow::Result<FilesResponse> {
        files_request(&self.client.control, self.entry, request, self.timeout)
            .await
            .map_err(|e| anyhow!("unreachable: entry node {}: {e}", self.entry))
    }

    /// A blob stream to `info`'s node for a transfer of `size` bytes: direct if hole
    /// punching allows, over a relay only as the relay policy allows.
    async fn open_blob(&self, info: &PeerInfo, size: u64) -> anyhow::Result<Stream> {
        let site = self.site().await;
        if !self.client.book.add_record(info, site) {
            bail!(
                "{} sent no verifiable address record it can be dialed at from here",
                info.peer
            );
        }
        let asked = Instant::now();
        let relayed = self
            .client
            .prepare(info.peer.0, size, &self.relay, self.timeout)
            .await
            .map_err(|e| match e {
                ReachError::Unreachable(_) => anyhow!("unreachable: {}: {e}", info.peer),
                _ => anyhow!("refused: {}: {e}", info.peer),
            })?;
        if let Ok(mut last) = self.last_connection.lock() {
            *last = Some((relayed, asked.elapsed().as_millis() as u64));
        }
        if relayed {
            tracing::info!(
                "{} is reachable only through a relay: {size} bytes go over it",
                info.peer
            );
        }
        open_stream(
            &self.client.control,
            info.peer.0,
            BLOB_PROTOCOL,
            self.timeout,
        )
        .await
        .map_err(|e| anyhow!("cannot reach {}: {e}", info.peer))
    }
}

fn progress(size: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn unexpected(what: &FilesResponse) -> anyhow::Error {
    match what {
        FilesResponse::NotFound => anyhow!("not found"),
        FilesResponse::Unreachable { reason } => anyhow!("unreachable: {reason}"),
        FilesResponse::Refused { reason } => anyhow!("refused: {reason}"),
        other => anyhow!("unexpected answer from the entry node: {other:?}"),
    }
}

impl PutArgs {
    /// Runs `quickstore put`.
    pub async fn run(self) -> anyhow::Result<()> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => self
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
                .context("the file has no UTF-8 name: give one")?,
        };
        let session = Session::start(&self.common)?;
        let deadline = Duration::from_secs(self.deadline_s);
        put_file(&session, &self.file, &name, deadline)
            .await?
            .print(self.common.json, "stored")
    }
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
    put_file(&Session::open(target, timeout)?, file, name, deadline).await
}

/// A connection to an entry node for repeated lookups (benchmarks, tools).
pub struct EntryClient {
    session: Session,
}

impl EntryClient {
    /// Starts a client peer for `target`.
    pub fn open(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            session: Session::open(target, timeout)?,
        })
    }

    /// Asks the entry node to look `name` up: the tuple and the Kelips hops it needed.
    pub async fn locate(&self, name: &str) -> anyhow::Result<(FileTuple<Peer>, u32)> {
        let request = FilesRequest::Locate {
            name: name.to_string(),
        };
        match self.session.ask(&request).await? {
            FilesResponse::Located { tuple, hops, .. } => Ok((tuple, hops)),
            other => Err(unexpected(&other)),
        }
    }
}

async fn put_file(
    session: &Session,
    file: &Path,
    name: &str,
    deadline: Duration,
) -> anyhow::Result<FileReport> {
    let started = Instant::now();
    let name = name.to_string();
    check_name(&name).map_err(|e| anyhow!("refused: {e}"))?;
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let request = FilesRequest::Place {
        name: name.clone(),
        size,
        forwarded: false,
    };
    let (homes, group_size, newest) = match session.ask(&request).await? {
        FilesResponse::Placed {
            homes,
            group_size,
            newest,
        } => (homes, group_size, newest),
        other => return Err(unexpected(&other)),
    };
    let mut last = anyhow!("refused: no home node offered");
    for (i, first) in homes.iter().enumerate() {
        let others: Vec<PeerInfo> = homes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, h)| h.clone())
            .collect();
        let placed = Placed { newest, deadline };
        match put_to(session, first, others, &name, file, size, placed).await {
            Ok(tuple) => {
                let mut report = FileReport::of(&tuple, started).with_connection(session);
                if (group_size as usize) < homes.len().max(3) {
                    report.group_size = Some(group_size);
                }
                return Ok(report);
            }
            Err(PutError::Final(e)) => return Err(e),
            Err(PutError::TryNext(e)) => {
                tracing::info!("home {} failed: {e:#}", first.peer);
                last = e;
            }
        }
    }
    Err(last)
}

enum PutError {
    /// Another home may work (it could not be reached before any byte moved).
    TryNext(anyhow::Error),
    /// Stop here.
    Final(anyhow::Error),
}

/// What the placement said, and how long the homes may take.
struct Placed {
    newest: u64,
    deadline: Duration,
}

async fn put_to(
    session: &Session,
    first: &PeerInfo,
    others: Vec<PeerInfo>,
    name: &str,
    path: &Path,
    size: u64,
    placed: Placed,
) -> Result<FileTuple<Peer>, PutError> {
    let deadline = placed.deadline;
    let io = session.timeout;
    let mut stream = session
        .open_blob(first, size)
        .await
        .map_err(PutError::TryNext)?;
    let request = BlobRequest::Put {
        name: name.to_string(),
        size,
        homes: others,
        after: placed.newest,
    };
    write_message(&mut stream, &request, MAX_REQUEST_BYTES, io)
        .await
        .map_err(|e| PutError::TryNext(anyhow!("unreachable: {}: {e}", first.peer)))?;
    match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await {
        Ok(BlobResponse::Ready) => {}
        Ok(BlobResponse::Refused { reason }) => {
            return Err(PutError::Final(anyhow!("refused: {reason}")));
        }
        Ok(other) => return Err(PutError::Final(anyhow!("unexpected answer {other:?}"))),
        Err(e) => {
            return Err(PutError::TryNext(anyhow!(
                "unreachable: {}: {e}",
                first.peer
            )));
        }
    }
    let sent = async {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bar = progress(size);
        let mut source = FileSource::start(file.into_std().await, size);
        while let Some(chunk) = source.next().await {
            write_chunk(&mut stream, chunk, io).await?;
            bar.inc(chunk.len() as u64);
        }
        let blake3 = source
            .finish()
            .await
            .with_context(|| format!("{} changed while being read", path.display()))?;
        bar.finish_and_clear();
        let trailer = BlobTrailer { blake3 };
        write_message(&mut stream, &trailer, MAX_REQUEST_BYTES, io).await?;
        match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, deadline).await? {
            BlobResponse::Stored { tuple } => {
                let _ = stream.close().await;
                Ok(tuple)
            }
            BlobResponse::Refused { reason } => Err(anyhow!("refused: {reason}")),
            other => Err(anyhow!("unexpected answer {other:?}")),
        }
    };
    sent.await.map_err(|e: anyhow::Error| {
        PutError::Final(anyhow!(
            "put failed at home node {}: {e:#}; nothing was published",
            first.peer
        ))
    })
}

/// Times "not found" is asked again (a fresh put may not have spread yet).
const NOT_FOUND_RETRIES: u32 = 3;

impl GetArgs {
    /// Runs `quickstore get`.
    pub async fn run(self) -> anyhow::Result<()> {
        check_name(&self.name).map_err(|e| anyhow!("refused: {e}"))?;
        let session = Session::start(&self.common)?;
        get_file(&session, &self.name, self.output.as_deref(), self.version)
            .await?
            .print(self.common.json, "got")
    }
}

/// Gets `name` through `target` into `output` (default: its last component in the current
/// directory); each open, read and write times out after `timeout`.
pub async fn get(
    target: &Target,
    name: &str,
    output: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<FileReport> {
    get_file(&Session::open(target, timeout)?, name, output, None).await
}

async fn get_file(
    session: &Session,
    name: &str,
    output: Option<&Path>,
    version: Option<u64>,
) -> anyhow::Result<FileReport> {
    let started = Instant::now();
    check_name(name).map_err(|e| anyhow!("refused: {e}"))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let target = target_path(name, output, &cwd).map_err(|e| anyhow!("refused: {e}"))?;
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
            FilesResponse::NotFound if attempt < NOT_FOUND_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            }
            other => return Err(unexpected(&other)),
        }
    };
    if holders.is_empty() {
        bail!("unreachable: no live holder of {name:?}");
    }
    let mut last = anyhow!("unreachable: no holder answered");
    for holder in &holders {
        match fetch_to(session, holder, &tuple, &target).await {
            Ok(()) => {
                let mut report = FileReport::of(&tuple, started);
                report.path = Some(target.display().to_string());
                report.hops = Some(hops);
                let report = report.with_connection(session);
                return Ok(report);
            }
            Err(e) => {
                tracing::info!("holder {} failed: {e:#}", holder.peer);
                last = e;
            }
        }
    }
    Err(last)
}

/// Streams the blob from `holder` into a temporary file beside `target`, hashing as it goes;
/// renames it into place only when the hash matches.
async fn fetch_to(
    session: &Session,
    holder: &PeerInfo,
    tuple: &FileTuple<Peer>,
    target: &Path,
) -> anyhow::Result<()> {
    let io = session.timeout;
    let mut stream = session.open_blob(holder, tuple.size).await?;
    let request = BlobRequest::Get {
        blake3: tuple.version.blake3,
    };
    write_message(&mut stream, &request, MAX_REQUEST_BYTES, io).await?;
    let size = match read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await? {
        BlobResponse::Sending { size } => size,
        BlobResponse::NotFound => bail!("not found at holder {}", holder.peer),
        BlobResponse::Refused { reason } => bail!("refused: {reason}"),
        other => bail!("unexpected answer {other:?}"),
    };
    if size != tuple.size {
        bail!(
            "corrupt: holder {} offers {size} bytes, the tuple says {}",
            holder.peer,
            tuple.size
        );
    }
    let temp = temp_beside(target);
    let result = async {
        let mut file = FileSink::create(temp.clone(), size);
        let bar = progress(size);
        let mut chunks = ChunkReader::new(size);
        loop {
            let chunk = match chunks.next(&mut stream, io).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => bail!("unreachable: holder {}: {e}", holder.peer),
            };
            if file.write(chunk).await.is_err() {
                break;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        if file.finish().await? != tuple.version.blake3 {
            bail!(
                "corrupt: the bytes from holder {} fail their hash",
                holder.peer
            );
        }
        tokio::fs::rename(&temp, target)
            .await
            .with_context(|| format!("cannot write {}", target.display()))?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

impl RmArgs {
    /// Runs `quickstore rm`.
    pub async fn run(self) -> anyhow::Result<()> {
        let started = Instant::now();
        check_name(&self.name).map_err(|e| anyhow!("refused: {e}"))?;
        let session = Session::start(&self.common)?;
        let request = FilesRequest::Delete {
            name: self.name.clone(),
            forwarded: false,
        };
        match session.ask(&request).await? {
            FilesResponse::Deleted { tuple } => {
                FileReport::of(&tuple, started).print(self.common.json, "deleted")
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// One line of `quickstore ls --json`.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    version: u64,
    size: u64,
    blake3: String,
    holders: Vec<String>,
}

/// Names asked for per page.
const PAGE: u32 = 256;

impl LsArgs {
    /// Runs `quickstore ls`: every group, page by page, through the entry node.
    pub async fn run(self) -> anyhow::Result<()> {
        let session = Session::start(&self.common)?;
        let mut all = Vec::new();
        let mut group = 0;
        let mut groups = 1;
        let mut after = None;
        while group < groups {
            let request = FilesRequest::List {
                group,
                after: after.clone(),
                limit: PAGE,
                forwarded: false,
            };
            match session.ask(&request).await? {
                FilesResponse::Listing {
                    tuples,
                    next,
                    groups: k,
                } => {
                    groups = k;
                    all.extend(tuples.into_iter().filter(|t| !t.deleted).map(|t| Listed {
                        name: t.name.to_string(),
                        version: t.version.lamport,
                        size: t.size,
                        blake3: to_hex(&t.version.blake3),
                        holders: t.holders.iter().map(|p| p.to_string()).collect(),
                    }));
                    after = next;
                    if after.is_none() {
                        group += 1;
                    }
                }
                other => {
                    let e = unexpected(&other);
                    tracing::warn!("group {group} not listed: {e}");
                    eprintln!("group {group} not listed: {e}");
                    group += 1;
                    after = None;
                }
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        if self.common.json {
            println!("{}", serde_json::to_string(&all)?);
        } else {
            for item in &all {
                println!(
                    "{:>12}  v{:<4} {}  {}",
                    item.size,
                    item.version,
                    item.holders.len(),
                    item.name
                );
            }
        }
        Ok(())
    }
}
