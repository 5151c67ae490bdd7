//! [`Session`]: the client peer a command runs, the entry node it asks, and how it reaches
//! holders (a connection first, with a dial failure ending the wait at once, then a stream).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::{PeerId, Stream};
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::net::record::Scope;

use super::Common;
use crate::client::Target;
use crate::files::client::{ClientPeer, ReachError, RelayPolicy};
use crate::files::service::{files_request, open_stream};
use crate::files::wire::{
    BLOB_PIECES_PROTOCOL, BLOB_PROTOCOL, BlobRequest, BlobResponse, FilesRequest, FilesResponse,
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PeerInfo, WireError, read_message, write_message,
};

/// Times a request is sent again on a new stream when the node dropped the stream before
/// answering. libp2p-stream hands a node's inbound streams over through a channel of one
/// slot and drops those that find it full, so a burst of concurrent requests (a directory
/// put) loses some; nothing was done with them, so asking again is safe.
const STREAM_RETRIES: u32 = 3;

/// Pause before the first retry; the n-th waits n times this.
const STREAM_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Asking again a node that answered `busy` (all its file stream slots taken, PROTOCOL.md
/// §11.1): after 100 ms, then twice as long each time up to 1 s, for as long as the command's
/// timeout allows.
struct BusyRetry {
    until: Instant,
    pause: Duration,
}

impl BusyRetry {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    fn new(timeout: Duration) -> Self {
        Self {
            until: Instant::now() + timeout,
            pause: Self::FIRST_PAUSE,
        }
    }

    /// Whether `reason` is a `busy` refusal and there is time to ask again (after the pause).
    async fn again(&mut self, reason: &str) -> bool {
        if !reason.starts_with("busy") || Instant::now() + self.pause > self.until {
            return false;
        }
        tracing::debug!("node busy ({reason}); asking again in {:?}", self.pause);
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
        true
    }
}

/// A client peer talking to one entry node.
pub(super) struct Session {
    pub(super) client: ClientPeer,
    pub(super) entry: PeerId,
    pub(super) timeout: Duration,
    relay: RelayPolicy,
    /// Where the client reached the entry node.
    entry_address: libp2p::Multiaddr,
    /// The last blob stream's connection: relayed, and milliseconds to get it.
    pub(super) last_connection: std::sync::Mutex<Option<(bool, u64)>>,
    /// The site (public IP) of the entry node when the client is on its LAN, asked once.
    site: tokio::sync::OnceCell<Option<std::net::IpAddr>>,
    /// How long the first request waits for the entry node to finish joining.
    wait_ready: Duration,
    /// Set once the entry node was seen ready (or the wait ended).
    ready: tokio::sync::OnceCell<()>,
    /// The private network's key, if any.
    network_key: Option<libp2p::pnet::PreSharedKey>,
    /// `--identity`, else the default writer identity.
    identity_path: Option<std::path::PathBuf>,
    /// The writer identity, loaded (or made) when first needed.
    identity: std::sync::OnceLock<libp2p::identity::ed25519::Keypair>,
}

impl Session {
    /// A session as `common` asks (entry node, timeouts, relay policy).
    pub(super) fn start(common: &Common) -> anyhow::Result<Self> {
        let mut session = Self::open(&common.target, Duration::from_secs(common.timeout_s.max(1)))?;
        session.relay.allowed &= !common.no_relay_transfers;
        session.wait_ready = Duration::from_secs(common.wait_s);
        Ok(session)
    }

    /// A session with `target` as entry node; each open, read and write times out after
    /// `timeout`.
    pub(super) fn open(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let (entry, address) = target.resolve()?;
        let network_key = target.network_key()?;
        let client = ClientPeer::start(timeout, network_key)?;
        client.book.add(entry, vec![address.clone()]);
        Ok(Self {
            client,
            entry,
            timeout,
            relay: RelayPolicy::default(),
            entry_address: address,
            last_connection: std::sync::Mutex::new(None),
            site: tokio::sync::OnceCell::new(),
            wait_ready: Duration::ZERO,
            ready: tokio::sync::OnceCell::new(),
            network_key,
            identity_path: target.identity.clone(),
            identity: std::sync::OnceLock::new(),
        })
    }

    /// Makes the first request wait up to `wait` for the entry node to finish joining.
    pub(super) fn set_wait_ready(&mut self, wait: Duration) {
        self.wait_ready = wait;
    }

    /// The writer identity that signs this command's versions.
    pub(super) fn identity(&self) -> anyhow::Result<&libp2p::identity::ed25519::Keypair> {
        if let Some(key) = self.identity.get() {
            return Ok(key);
        }
        let key = crate::client_identity::load_or_create(self.identity_path.as_deref())?;
        Ok(self.identity.get_or_init(|| key))
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

    /// Waits, at most `wait_ready`, until the entry node's status says it has joined: a node
    /// started a moment ago knows no group yet and would refuse. A node that cannot tell (an
    /// older one, or no answer) is asked anyway.
    async fn entry_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < self.wait_ready {
            let asked = crate::client::fetch_status(
                self.entry,
                self.entry_address.clone(),
                self.timeout.min(Duration::from_secs(5)),
                self.network_key,
            )
            .await;
            match asked {
                // `joined` (not `ready`, which older nodes do not send) says it.
                Ok(status) if status.joined => return,
                Ok(_) => {
                    tracing::info!("entry node {} is still joining; waiting", self.entry);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::debug!("entry node's status not known: {e:#}");
                    return;
                }
            }
        }
        tracing::warn!(
            "entry node {} has not finished joining after {:?}; asking anyway",
            self.entry,
            self.wait_ready
        );
    }

    /// Asks the entry node; a failure to reach it is `unreachable: entry node …`.
    pub(super) async fn ask(&self, request: &FilesRequest) -> anyhow::Result<FilesResponse> {
        self.ready.get_or_init(|| self.entry_ready()).await;
        // Control messages may go over a relay whatever the policy for file bytes.
        let control = RelayPolicy {
            allowed: true,
            punch_wait: Duration::ZERO,
            ..self.relay
        };
        if let Err(e) = self
            .client
            .prepare(self.entry, 0, &control, self.timeout)
            .await
        {
            let text = format!("{e}");
            if crate::network_key::looks_like_key_mismatch(&text) {
                bail!(
                    "unreachable: entry node {} at {}: {text} ({}?)",
                    self.entry,
                    self.entry_address,
                    crate::network_key::client_hint(self.network_key.is_some())
                );
            }
            bail!(
                "unreachable: entry node {} at {}: {text}",
                self.entry,
                self.entry_address
            );
        }
        let mut attempt = 0;
        let mut busy = BusyRetry::new(self.timeout);
        loop {
            match files_request(&self.client.control, self.entry, request, self.timeout).await {
                Ok(FilesResponse::Refused { reason }) if busy.again(&reason).await => {}
                Ok(answer) => return Ok(answer),
                Err(WireError::Io(e)) if attempt < STREAM_RETRIES => {
                    tracing::debug!("entry node dropped a request stream, asking again: {e}");
                    attempt += 1;
                    tokio::time::sleep(STREAM_RETRY_PAUSE * attempt).await;
                }
                Err(e) => bail!("unreachable: entry node {}: {e}", self.entry),
            }
        }
    }

    /// Opens a blob stream to `info`'s node, sends `request` and reads the first answer.
    /// A stream the node dropped before answering is opened again.
    pub(super) async fn blob_exchange(
        &self,
        info: &PeerInfo,
        size: u64,
        request: &BlobRequest,
    ) -> anyhow::Result<(Stream, BlobResponse)> {
        let io = self.timeout;
        let mut attempt = 0;
        let mut busy = BusyRetry::new(self.timeout);
        loop {
            let mut stream = self.open_blob(info, size).await?;
            let exchanged = async {
                write_message(&mut stream, request, MAX_REQUEST_BYTES, io).await?;
                read_message::<BlobResponse>(&mut stream, MAX_RESPONSE_BYTES, io).await
            };
            match exchanged.await {
                Ok(BlobResponse::Refused { reason }) if busy.again(&reason).await => {}
                Ok(answer) => return Ok((stream, answer)),
                Err(WireError::Io(e)) if attempt < STREAM_RETRIES => {
                    tracing::debug!("{} dropped a blob stream, opening another: {e}", info.peer);
                    attempt += 1;
                    tokio::time::sleep(STREAM_RETRY_PAUSE * attempt).await;
                }
                Err(e) => bail!("unreachable: {}: {e}", info.peer),
            }
        }
    }

    /// k, the number of groups, as the entry node's status says.
    pub(super) async fn groups(&self) -> anyhow::Result<u32> {
        let status = crate::client::fetch_status(
            self.entry,
            self.entry_address.clone(),
            self.timeout,
            self.network_key,
        )
        .await?;
        Ok(status.groups)
    }

    /// A connection to `info`'s node fit for a transfer of `size` bytes: direct if hole
    /// punching allows, over a relay only as the relay policy allows. A dial that fails on
    /// every address ends at once; one that hangs ends after `connect_timeout`.
    pub(super) async fn connect(
        &self,
        info: &PeerInfo,
        size: u64,
        connect_timeout: Duration,
    ) -> anyhow::Result<()> {
        let site = self.site().await;
        if !self.client.book.add_record(info, site) {
            bail!(
                "unreachable: {} sent no verifiable address record it can be dialed at from here",
                info.peer
            );
        }
        let asked = Instant::now();
        let relayed = self
            .client
            .prepare(info.peer.0, size, &self.relay, connect_timeout)
            .await
            .map_err(|e| match e {
                ReachError::Unreachable(_) | ReachError::DialFailed(_) => {
                    anyhow!("unreachable: {}: {e}", info.peer)
                }
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
        Ok(())
    }

    /// A `pieces` stream (`/quickstore/blob/1.1.0`) to `info`'s node for a blob of `size`
    /// bytes ([`Session::connect`] first).
    pub(super) async fn open_pieces(&self, info: &PeerInfo, size: u64) -> anyhow::Result<Stream> {
        self.connect(info, size, self.timeout).await?;
        open_stream(
            &self.client.control,
            info.peer.0,
            BLOB_PIECES_PROTOCOL,
            self.timeout,
        )
        .await
        .map_err(|e| anyhow!("{e}"))
    }

    /// A blob stream to `info`'s node for a transfer of `size` bytes ([`Session::connect`]
    /// first).
    pub(super) async fn open_blob(&self, info: &PeerInfo, size: u64) -> anyhow::Result<Stream> {
        self.connect(info, size, self.timeout).await?;
        open_stream(
            &self.client.control,
            info.peer.0,
            BLOB_PROTOCOL,
            self.timeout,
        )
        .await
        .map_err(|e| anyhow!("unreachable: {}: {e}", info.peer))
    }
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
            other => Err(unexpected(&other, name)),
        }
    }
}

/// A progress bar of `size` bytes on a terminal (hidden otherwise, or with `--quiet`).
pub(super) fn progress(size: u64) -> ProgressBar {
    if super::quiet() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
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

/// The error an answer other than the one expected stands for; `name` is what was asked.
pub(super) fn unexpected(what: &FilesResponse, name: &str) -> anyhow::Error {
    match what {
        FilesResponse::NotFound => anyhow!("not found: {}", super::report::shown(name)),
        FilesResponse::Unreachable { reason } if !name.is_empty() => {
            anyhow!(
                "unreachable: {reason} (asked for {})",
                super::report::shown(name)
            )
        }
        FilesResponse::Unreachable { reason } => anyhow!("unreachable: {reason}"),
        FilesResponse::Refused { reason } => anyhow!("refused: {reason}"),
        other => anyhow!("unexpected answer from the entry node: {other:?}"),
    }
}
