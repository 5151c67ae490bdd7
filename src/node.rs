//! `quickstore node`: runs one node until Ctrl-C or SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use libp2p::metrics::Recorder;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping, relay, request_response};
use prometheus_client::registry::Registry;
use quickstore_behaviours::net::peer::verified_addresses;
use quickstore_behaviours::net::{BehaviourEvent, DriverConfig, Peer};
use quickstore_behaviours::{AddressRecord, Event, FileTuple};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::blobs::BlobStore;
use crate::config::NodeConfig;
use crate::files::handle::{
    GroupPlace, NodeCommand, NodeHandle, PendingLookups, answer, nearest_first, snapshot,
};
use crate::files::service::{FilesService, Timeouts};
use crate::files::versions::KeptVersions;
use crate::metrics::NodeMetrics;
use crate::reach::{Action, Reach};
use crate::status::Status;
use crate::store::NodeStore;
use crate::swarm::{self, NodeBehaviour, NodeBehaviourEvent, SwarmLimits};

/// Run a quickstore node until Ctrl-C.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Data directory (identity, node store, node.json). Default: the user's data directory
    /// (`~/.local/share/quickstore`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Listen multiaddr (repeatable). Default TCP and QUIC on port 0 of all interfaces.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Bootstrap multiaddr ending in /p2p/<PeerId> (repeatable). None: found a network.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Extra address to advertise (repeatable).
    #[arg(long)]
    pub external_addr: Vec<String>,
    /// Configuration file (TOML, see config/default.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Network name.
    #[arg(long)]
    pub network: Option<String>,
    /// Fix the number of groups k for experiments and benchmarks (every node of the network
    /// alike). Default: groups that size themselves (0), following the network's size.
    #[arg(long, value_name = "K")]
    pub groups: Option<u32>,
    /// Gossip period (ms); the heartbeat period follows it.
    #[arg(long)]
    pub gossip_period_ms: Option<u64>,
    /// Failure timeout (ms).
    #[arg(long)]
    pub t_fail_ms: Option<u64>,
    /// Serve the HTTP API and web page on ADDR:PORT (e.g. 127.0.0.1:8080). A non-loopback
    /// address needs --http-token-file.
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// A file holding the bearer token HTTP clients must send.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR:PORT at /metrics.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Do not look for peers on the LAN with mDNS (`nat.mdns = false`).
    #[arg(long)]
    pub no_mdns: bool,
    /// Serve as a circuit relay for nodes behind NATs (`nat.relay_server`); give the node a
    /// public `--external-addr` so it can advertise it.
    #[arg(long)]
    pub relay_server: bool,
    /// Ask the LAN's router for a port mapping with UPnP (`nat.upnp`).
    #[arg(long)]
    pub upnp: bool,
    /// Run a private network: only nodes and clients holding this key file can connect
    /// (`quickstore keygen --network FILE`; config `network.key_file`). TCP only: QUIC is off.
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<PathBuf>,
}

/// What `DATA_DIR/node.json` holds, so local commands find the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    /// The node's PeerId.
    pub peer_id: String,
    /// Its listen addresses (without /p2p).
    pub listen_addrs: Vec<String>,
    /// Its process id.
    pub pid: u32,
    /// The private network's key file it runs with (local clients use it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_key_file: Option<String>,
    /// Where it serves its HTTP API and web page (`http://ADDR:PORT/`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("quickstore")
}

impl NodeArgs {
    /// The configuration: defaults, then the file, then flags; validated.
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::load(path)?,
            None => NodeConfig::default(),
        };
        if !self.listen.is_empty() {
            config.node.listen = self.listen.clone();
        }
        if !self.bootstrap.is_empty() {
            config.node.bootstrap = self.bootstrap.clone();
        }
        config
            .node
            .external_addr
            .extend(self.external_addr.iter().cloned());
        if let Some(metrics) = &self.metrics {
            config.node.metrics = metrics.clone();
        }
        if let Some(http) = &self.http {
            config.http.listen = http.clone();
        }
        if let Some(path) = &self.http_token_file {
            config.http.token_file = path.display().to_string();
        }
        config.nat.mdns &= !self.no_mdns;
        config.nat.relay_server |= self.relay_server;
        config.nat.upnp |= self.upnp;
        if let Some(path) = &self.network_key {
            config.network.key_file = path.display().to_string();
        }
        let k = &mut config.kelips;
        if let Some(network) = &self.network {
            k.network_name = network.clone();
        }
        if let Some(groups) = self.groups {
            k.groups = groups;
        }
        if let Some(period) = self.gossip_period_ms {
            k.gossip_period_ms = period;
            k.heartbeat_period_ms = period;
        }
        if let Some(t_fail) = self.t_fail_ms {
            k.t_fail_ms = t_fail;
        }
        config.validate()?;
        Ok(config)
    }

    /// Runs the node until Ctrl-C or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let config = self.resolve()?;
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        // Held until the node stops: a second node on this directory is refused here, before
        // it touches the store or the blobs.
        let _lock = lock_data_dir(&dir)?;
        for address in config.listen_addrs()? {
            swarm::probe_listen_address(&address)?;
        }
        // Bound before the swarm is built (libp2p logs as it starts): a busy metrics port is
        // the only line printed.
        let metrics_listener = match config.metrics_addr()? {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        let http_listener = match config.http_addr()? {
            Some(addr) => Some(crate::http::bind(addr, &config.http, &config.files).await?),
            None => None,
        };
        raise_open_files_limit();
        let network_key = crate::network_key::load_optional(config.network.key_path())?;
        let network_key_file = config.network.key_path().map(|path| {
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string()
        });
        if let Some(key) = &network_key {
            tracing::info!(
                "private network (key fingerprint {}): only holders of the key can connect; \
                 TCP only, QUIC is off",
                key.fingerprint()
            );
        }
        let keypair = crate::identity::load_or_create(&dir)?;
        let peer_id = keypair.public().to_peer_id();
        let store_dir = dir.clone();
        let (store, incarnation, remembered, held, versions) =
            tokio::task::spawn_blocking(move || {
                let store = NodeStore::open(&store_dir)?;
                let incarnation = store.bump_incarnation()?;
                let peers = store.load_peers()?;
                let tuples = store.load_tuples()?;
                let versions = store.load_versions()?;
                anyhow::Ok((store, incarnation, peers, tuples, versions))
            })
            .await??;
        let store = Arc::new(store);

        let configured: Vec<(PeerId, Multiaddr)> = config
            .bootstraps()?
            .into_iter()
            .map(|b| (b.peer, b.address))
            .collect();
        let mut reach = Reach::new(peer_id, config.nat.clone(), &configured);
        let mut bootstraps: Vec<(PeerId, Vec<Multiaddr>)> = configured
            .into_iter()
            .map(|(peer, address)| (peer, vec![address]))
            .collect();
        bootstraps.extend(remembered_bootstraps(&remembered, peer_id, &bootstraps));
        let driver = DriverConfig {
            kelips: quickstore_behaviours::Config {
                writes: config.network.writes,
                ..config.kelips.clone()
            },
            incarnation,
            bootstraps,
            external_addresses: config.external_addrs()?,
            backoff: Duration::from_millis(config.node.backoff_ms),
            max_concurrent_streams: config.node.max_concurrent_streams,
        };
        let limits = SwarmLimits {
            max_connections: config.node.max_connections,
            max_connections_per_peer: config.node.max_connections_per_peer,
            max_connections_per_ip: config.node.max_connections_per_ip,
            max_pending_dials: config.node.max_pending_dials,
            idle_timeout: Duration::from_millis(config.node.idle_connection_timeout_ms),
            ping_interval: swarm::ping_interval(&config.kelips),
        };
        let mut registry = Registry::with_prefix("quickstore");
        let mut swarm = swarm::build(
            keypair,
            driver,
            limits,
            &config.nat,
            network_key,
            metrics_listener.is_some().then_some(&mut registry),
        )?;
        for (name, bytes) in held {
            let restored = cbor4ii::serde::from_slice::<FileTuple<Peer>>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    swarm
                        .behaviour_mut()
                        .kelips
                        .publish(t)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = restored {
                tracing::warn!("stored tuple {name:?} not restored: {e}");
            }
        }
        let metrics = NodeMetrics::register(&mut registry);
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let registry = Arc::new(registry);
        let served_metrics = metrics_listener.is_some().then(|| registry.clone());
        if let Some(listener) = metrics_listener {
            let bound = crate::metrics::serve(listener, registry)?;
            tracing::info!("metrics on http://{bound}/metrics");
        }
        for address in config.external_addrs()? {
            reach.on_public(address.clone());
            swarm.add_external_address(address);
        }
        for address in config.listen_addrs()? {
            swarm
                .listen_on(address.clone())
                .with_context(|| format!("cannot listen on {address}"))?;
        }
        tracing::info!(
            "node {peer_id} incarnation {incarnation} group {} of {} in network {:?}",
            swarm.behaviour().kelips.core().group(),
            if config.kelips.self_sizing() {
                format!(
                    "{} (groups size themselves)",
                    swarm.behaviour().kelips.core().groups()
                )
            } else {
                config.kelips.groups.to_string()
            },
            config.kelips.network_name
        );
        let files_config = &config.files;
        let blobs = Arc::new(
            BlobStore::open(
                &dir,
                files_config.storage_bytes,
                files_config.max_file_bytes,
            )
            .await
            .with_context(|| format!("cannot open the blob store in {}", dir.display()))?,
        );
        // The disk's available bytes, read once a second off the swarm task: free space is the
        // smaller of the configured room and the disk's (gossiped, placed by, shown).
        let refreshed = Arc::downgrade(&blobs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(blobs) = refreshed.upgrade() else {
                    return;
                };
                blobs.refresh_disk().await;
            }
        });
        let core = swarm.behaviour().kelips.core();
        let (handle, commands) = NodeHandle::new(
            peer_id,
            GroupPlace {
                grouping: core.grouping(),
                group: core.group(),
            },
            config.kelips.replication,
        );
        let mut kept = KeptVersions::new(files_config.keep_versions);
        crate::files::versions::decode(&mut kept, versions);
        let (driver, inbox) = crate::files::driver::channel();
        let files = Arc::new(FilesService {
            handle,
            driver: driver.clone(),
            state: Default::default(),
            blobs: blobs.clone(),
            control: swarm.behaviour().streams.new_control(),
            timeouts: Timeouts {
                io: Duration::from_millis(files_config.io_timeout_ms),
                put_deadline: Duration::from_millis(files_config.put_deadline_ms),
            },
            streams: crate::files::slots::StreamSlots::with_grace(
                files_config.max_streams,
                files_config.max_streams_per_peer,
                Duration::from_millis(files_config.stream_eviction_grace_ms),
            ),
            kept: std::sync::Mutex::new(kept.clone()),
            kept_writer: crate::files::service::spawn_kept_writer(store.clone()),
            counters: Default::default(),
            relay: crate::files::service::RelayGate {
                paths: Default::default(),
                allowed: config.nat.relay_transfers,
                max_bytes: config.nat.relay_circuit_bytes,
            },
            writes: config.network.writes,
        });
        files.start()?;
        let http = match http_listener {
            Some(bound) => {
                let served = crate::http::serve(bound, dir.clone(), files.clone(), served_metrics)?;
                tracing::info!("HTTP API and web page on http://{served}/");
                Some(served)
            }
            None => None,
        };
        crate::files::driver::spawn(
            files.clone(),
            crate::files::driver::DriverConfig::new(
                files_config,
                config.kelips.replication,
                config.kelips.t_fail_ms,
            ),
            kept,
            inbox,
        )?;
        let runner_dir = dir.clone();
        let mut runner = Runner {
            swarm,
            dir,
            store,
            metrics,
            libp2p_metrics,
            listen: Vec::new(),
            disk: Arc::new(Semaphore::new(1)),
            node_file: spawn_node_file_writer(runner_dir.join("node.json")),
            network_key_file,
            http,
            handshake_failures: Default::default(),
            commands,
            lookups: PendingLookups::new(),
            blobs,
            files,
            driver,
            superseded: Default::default(),
            reach,
            relay_listener: None,
            tuples_dirty: false,
            relay_reservations: Default::default(),
            handoff_timeout: Duration::from_millis(files_config.io_timeout_ms.max(10_000)),
            linger: Duration::from_millis(config.kelips.gossip_period_ms * 3),
        };
        runner.run().await
    }
}

/// Replaced versions queued for the files core's driver at most (it takes them every tick).
const MAX_SUPERSEDED_QUEUED: usize = 4096;

/// The lock file in the data directory: it holds the pid of the node that holds it.
const LOCK_FILE: &str = "node.lock";

/// Takes an exclusive `flock` on `DATA_DIR/node.lock` and writes this process's pid in it; the
/// lock goes with the returned file (or the process). A directory locked by another process is
/// refused in one line naming it and that process's pid.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        };
        anyhow::bail!(
            "data directory {} is in use by another node{holder}",
            dir.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Remembered peers (from the last run) with verified records become extra bootstraps.
fn remembered_bootstraps(
    remembered: &[crate::store::RememberedPeer],
    me: PeerId,
    configured: &[(PeerId, Vec<Multiaddr>)],
) -> Vec<(PeerId, Vec<Multiaddr>)> {
    remembered
        .iter()
        .filter_map(|(peer, record)| {
            let peer = PeerId::from_bytes(peer).ok()?;
            let record = AddressRecord::new(record.clone()).ok()?;
            let addresses = verified_addresses(peer, &record)?;
            (peer != me && !addresses.is_empty() && !configured.iter().any(|(p, _)| *p == peer))
                .then_some((peer, addresses))
        })
        .take(16)
        .collect()
}

fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open files limit {limit}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

struct Runner {
    swarm: Swarm<NodeBehaviour>,
    dir: PathBuf,
    store: Arc<NodeStore>,
    metrics: NodeMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    listen: Vec<Multiaddr>,
    /// One disk write at a time; snapshots are skipped while one is running.
    disk: Arc<Semaphore>,
    /// The latest content of `node.json`, written by one task in order.
    node_file: watch::Sender<Option<NodeFile>>,
    /// The private network's key file (absolute), for `node.json`.
    network_key_file: Option<String>,
    /// Where the HTTP API is served, for `node.json`.
    http: Option<std::net::SocketAddr>,
    /// Failed handshakes already logged (by remote IP or peer).
    handshake_failures: crate::network_key::HandshakeFailures,
    /// Questions from file tasks.
    commands: mpsc::Receiver<NodeCommand>,
    /// Lookups file tasks wait for.
    lookups: PendingLookups,
    /// Blob files (for the free space gossiped).
    blobs: Arc<BlobStore>,
    /// The file protocols.
    files: Arc<FilesService>,
    /// Versions this node held that newer ones replaced, until the files core's driver takes
    /// them (at most [`MAX_SUPERSEDED_QUEUED`]).
    superseded: std::collections::VecDeque<Arc<FileTuple<Peer>>>,
    /// The files core's driver (for the hand-off at a clean stop).
    driver: crate::files::driver::DriverHandle,
    /// LAN discovery, reachability, relays, hole punching.
    reach: Reach,
    /// The listener of the relay reservation, if any.
    relay_listener: Option<libp2p::core::transport::ListenerId>,
    /// A tuple naming this node was published since the last save.
    tuples_dirty: bool,
    /// Peers holding a relay reservation with this node (`nat.relay_server`): their
    /// connections are kept when inbound connections are closed to make room.
    relay_reservations: std::collections::HashSet<PeerId>,
    /// The hand-off at a clean stop takes at most this long.
    handoff_timeout: Duration,
    /// After the hand-off the node keeps gossiping this long so the new holder sets spread.
    linger: Duration,
}

impl Runner {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut second = tokio::time::interval(Duration::from_secs(1));
        let mut snapshot = tokio::time::interval(Duration::from_secs(30));
        snapshot.tick().await;
        // Both streams are created once, before the loop: `ctrl_c()` made anew on each turn
        // could miss a SIGINT that arrived between two turns (one Ctrl-C was ignored once).
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = self.commands.recv() => self.on_command(command),
                _ = second.tick() => self.every_second(),
                _ = snapshot.tick() => self.save_peers(),
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
            }
        }
        tracing::info!("stopping: handing off replicas");
        let driver = self.driver.clone();
        let timeout = self.handoff_timeout;
        let handoff = tokio::spawn(async move {
            tokio::time::timeout(timeout, driver.hand_off())
                .await
                .unwrap_or(0)
        });
        let handed = self.drive_until(handoff).await.unwrap_or(0);
        if handed > 0 {
            tracing::info!("handed off {handed} names");
            let linger = tokio::time::sleep(self.linger);
            self.drive_until(linger).await;
        }
        tracing::info!("shutting down");
        let permit = self.disk.clone().acquire_owned().await?;
        let peers = self.peers_to_remember();
        let tuples = self.tuples_held();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.save_peers(&peers)?;
            store.save_tuples(&tuples)
        })
        .await??;
        let _ = tokio::fs::remove_file(self.dir.join("node.json")).await;
        Ok(())
    }

    /// Keeps the node running (swarm and file commands) until `until` completes.
    async fn drive_until<F: std::future::Future>(&mut self, until: F) -> F::Output {
        tokio::pin!(until);
        loop {
            tokio::select! {
                output = &mut until => return output,
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = self.commands.recv() => self.on_command(command),
            }
        }
    }

    /// The node's status, as `quickstore status --json` shows it.
    fn status(&self) -> Status {
        let mut status = Status::of(&self.swarm.behaviour().kelips).with_reach(&self.reach);
        let files = self.files.counters.snapshot().into_iter().chain([
            ("storage_used_bytes", self.blobs.used()),
            ("storage_free_bytes", self.blobs.free()),
            (
                "connections_closed_for_room",
                self.swarm.behaviour().room.closed(),
            ),
        ]);
        status
            .counters
            .extend(files.map(|(k, v)| (k.to_string(), v)));
        status.files = self.files.state.lock().ok().map(|s| s.clone());
        status
    }

    fn on_command(&mut self, command: NodeCommand) {
        if let NodeCommand::Status { reply } = command {
            let _ = reply.send(self.status());
            return;
        }
        if let NodeCommand::Snapshot { tuples, reply } = command {
            let mut snapshot = snapshot(&self.swarm.behaviour().kelips, tuples.as_ref());
            snapshot.superseded = self.superseded.drain(..).collect();
            let _ = reply.send(snapshot);
            return;
        }
        if let NodeCommand::Publish { tuple, .. } = &command
            && tuple.holders.contains(&Peer(*self.swarm.local_peer_id()))
        {
            self.tuples_dirty = true;
        }
        answer(
            &mut self.swarm.behaviour_mut().kelips,
            &mut self.lookups,
            command,
        );
    }

    fn every_second(&mut self) {
        // Lookups whose task gave up (timed out or went away) are forgotten.
        self.lookups.retain(|_, reply| !reply.is_closed());
        let free = self.blobs.free();
        let kelips = &mut self.swarm.behaviour_mut().kelips;
        kelips.set_free_space(free);
        self.metrics.update(kelips);
        self.metrics.update_files(&self.files, &self.blobs);
        let actions = self.reach.tick();
        self.drop_unreserved_listener();
        self.apply(actions);
        if let Ok(mut paths) = self.files.relay.paths.lock() {
            *paths = self.reach.paths().collect();
        }
        self.files
            .handle
            .set_site(self.swarm.behaviour().kelips.site());
        if std::mem::take(&mut self.tuples_dirty) {
            self.save_peers();
        }
        self.protect_links();
    }

    /// The connections kept when inbound ones are closed to make room (`conn_room`): the
    /// group view's members, the contacts and the peers with a relay reservation here.
    fn protect_links(&mut self) {
        let behaviour = self.swarm.behaviour_mut();
        let core = behaviour.kelips.core();
        let members = core.view().iter().map(|m| m.entry.id.0);
        let contacts = core
            .contacts()
            .iter()
            .flat_map(|(_, cs)| cs.iter().map(|c| c.entry.id.0))
            .collect::<Vec<_>>();
        let protected: Vec<PeerId> = members
            .chain(contacts)
            .chain(self.relay_reservations.iter().copied())
            .collect();
        behaviour.room.protect(protected);
    }

    /// A reservation given up (no answer in time) or released (the node became reachable)
    /// leaves no relay listener behind.
    fn drop_unreserved_listener(&mut self) {
        if self.reach.relay().is_none()
            && let Some(listener) = self.relay_listener.take()
        {
            self.swarm.remove_listener(listener);
        }
    }

    fn peers_to_remember(&self) -> Vec<crate::store::RememberedPeer> {
        let core = self.swarm.behaviour().kelips.core();
        core.view()
            .live()
            .map(|m| &m.entry)
            .chain(core.contacts().all().map(|c| &c.entry))
            .filter(|e| !e.address.as_bytes().is_empty())
            .map(|e| (e.id.0.to_bytes(), e.address.as_bytes().to_vec()))
            .take(crate::store::MAX_REMEMBERED)
            .collect()
    }

    /// The tuples naming this node as a holder, encoded for the store.
    fn tuples_held(&self) -> Vec<(String, Vec<u8>)> {
        let core = self.swarm.behaviour().kelips.core();
        let me = core.id();
        core.tuples()
            .iter()
            .filter(|t| t.holders.contains(me))
            .filter_map(|t| {
                let bytes = cbor4ii::serde::to_vec(Vec::new(), &**t).ok()?;
                Some((t.name.to_string(), bytes))
            })
            .collect()
    }

    fn save_peers(&self) {
        let Ok(permit) = self.disk.clone().try_acquire_owned() else {
            return;
        };
        let peers = self.peers_to_remember();
        let tuples = self.tuples_held();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Err(e) = store
                .save_peers(&peers)
                .and_then(|()| store.save_tuples(&tuples))
            {
                tracing::warn!("cannot save peers and tuples: {e}");
            }
        });
    }

    fn on_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let peer = *self.swarm.local_peer_id();
                // A closed stdout (the reader went away) must not stop the node.
                let mut out = std::io::stdout().lock();
                let _ =
                    writeln!(out, "listening on {address}/p2p/{peer}").and_then(|()| out.flush());
                self.listen.push(address);
                self.write_node_file();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
                self.write_node_file();
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let text = format!("{error}");
                if !crate::network_key::looks_like_key_mismatch(&text) {
                    tracing::info!("incoming connection from {send_back_addr} dropped: {text}");
                    return;
                }
                // An open node learns nothing from an incoming handshake that broke off: it is
                // mostly a dialer dropping the redundant ones of the dials it raced (TCP and
                // QUIC, several addresses), and a private dialer says why on its own side.
                let private = self.network_key_file.is_some();
                // Once per remote IP: a peer with another key retries every few seconds.
                let ip = send_back_addr
                    .iter()
                    .find_map(|p| match p {
                        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.to_string()),
                        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| send_back_addr.to_string());
                if private && self.handshake_failures.first(ip) {
                    tracing::warn!(
                        "incoming connection from {send_back_addr} failed the handshake: \
                         {} (logged once per address)",
                        crate::network_key::mismatch_hint(true)
                    );
                    return;
                }
                tracing::debug!("incoming connection from {send_back_addr} dropped: {text}");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                let text = format!("{error}");
                if crate::network_key::looks_like_key_mismatch(&text)
                    && self.handshake_failures.first(peer.to_string())
                {
                    tracing::warn!(
                        "cannot connect to {peer}: the handshake failed: {} (logged once per peer)",
                        crate::network_key::mismatch_hint(self.network_key_file.is_some())
                    );
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kelips(event)) => self.on_kelips(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => self.swarm.behaviour_mut().kelips.handle_rtt(peer, rtt),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(event)) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    warn_if_old_protocol(peer_id, &info.protocols);
                    self.swarm
                        .behaviour_mut()
                        .kelips
                        .observed_by(peer_id, &info.observed_addr);
                    let mut actions = self.reach.on_observed(&info.observed_addr, &self.listen);
                    actions.extend(self.reach.on_identify(
                        peer_id,
                        &info.protocols,
                        &info.listen_addrs,
                    ));
                    self.apply(actions);
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let actions = self.reach.on_mdns(found);
                self.apply(actions);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::AutonatClient(event)) => {
                if let Err(e) = &event.result {
                    tracing::debug!(
                        "{} could not reach {}: {e}",
                        event.server,
                        event.tested_addr
                    );
                }
                let actions = self
                    .reach
                    .on_probe(&event.tested_addr, event.result.is_ok());
                self.apply(actions);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => self.reach.on_reserved(relay_peer_id),
            SwarmEvent::Behaviour(NodeBehaviourEvent::RelayServer(event)) => match event {
                relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                    self.relay_reservations.insert(src_peer_id);
                }
                relay::Event::ReservationClosed { src_peer_id }
                | relay::Event::ReservationTimedOut { src_peer_id } => {
                    self.relay_reservations.remove(&src_peer_id);
                }
                _ => {}
            },
            SwarmEvent::Behaviour(NodeBehaviourEvent::Dcutr(event)) => {
                if let Err(e) = &event.result {
                    tracing::info!("hole punch to {} failed: {e}", event.remote_peer_id);
                }
                self.reach
                    .on_hole_punch(event.remote_peer_id, event.result.is_ok());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let actions = self.reach.on_connected(peer_id, connection_id, &endpoint);
                self.apply(actions);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => self.reach.on_closed(peer_id, connection_id),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                self.reach.on_public(address);
                self.drop_unreserved_listener();
            }
            SwarmEvent::ExternalAddrExpired { address } => self.reach.on_public_expired(&address),
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } if self.relay_listener == Some(listener_id) => {
                tracing::info!("relay listener closed: {reason:?}");
                self.listen.retain(|a| !addresses.contains(a));
                self.relay_listener = None;
                self.reach.on_relay_lost();
            }
            SwarmEvent::ListenerError { listener_id, error }
                if self.relay_listener == Some(listener_id) =>
            {
                tracing::info!("relay listener failed: {error}");
            }
            SwarmEvent::ListenerClosed { addresses, .. }
                if !addresses.is_empty() && addresses.iter().all(is_relayed) =>
            {
                // A relay listener this node let go (the relay's live one is handled above).
                tracing::info!("stopped listening on {addresses:?}");
                self.listen.retain(|a| !addresses.contains(a));
                self.write_node_file();
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                // A listener of our own addresses ended (the relay's is handled above).
                self.listen.retain(|a| !addresses.contains(a));
                self.write_node_file();
                match reason {
                    Ok(()) => tracing::warn!("stopped listening on {addresses:?}"),
                    Err(e) => tracing::warn!("stopped listening on {addresses:?}: {e}"),
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("listener error: {error}");
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Status(
                request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                },
            )) => {
                let status = self.status();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .status
                    .send_response(channel, status);
            }
            _ => {}
        }
    }

    fn on_kelips(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Core(event) => {
                self.metrics.on_core_event(&event);
                log_core_event(&event);
                if let Event::VersionSuperseded(old) = &event
                    && old.holders.contains(&Peer(*self.swarm.local_peer_id()))
                {
                    if self.superseded.len() >= MAX_SUPERSEDED_QUEUED {
                        tracing::warn!("older version of {:?} not kept: queue full", old.name);
                    } else {
                        self.superseded.push_back(old.clone());
                    }
                }
                if let Event::Lookup(outcome) = &event
                    && let Some(reply) = self.lookups.remove(&outcome.query)
                {
                    let mut outcome = outcome.clone();
                    nearest_first(&self.swarm.behaviour().kelips, &mut outcome);
                    let _ = reply.send(Ok(outcome));
                }
                if let Event::StructureChanged(_) = &event {
                    let core = self.swarm.behaviour().kelips.core();
                    self.files.handle.set_place(GroupPlace {
                        grouping: core.grouping(),
                        group: core.group(),
                    });
                }
                if let Event::IncarnationChanged(incarnation) = event {
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = store.raise_incarnation(incarnation) {
                            tracing::warn!("cannot persist incarnation: {e}");
                        }
                    });
                }
            }
            BehaviourEvent::Refused {
                peer,
                inbound,
                reason,
            } => {
                // A network id folds in the name, the protocol version and the groups: say
                // which settings to compare.
                let hint = if reason.starts_with("wrong network") {
                    " (the network name, the quickstore version or the groups differ: a node \
                     with a fixed --groups and one whose groups size themselves are in \
                     different networks)"
                } else {
                    ""
                };
                if inbound {
                    tracing::warn!("refused a message from {peer}: {reason}{hint}");
                } else {
                    tracing::warn!("{peer} refused our message: {reason}{hint}");
                }
            }
            BehaviourEvent::AddressesChanged(addresses) => {
                tracing::info!("advertising {addresses:?}");
                // The record is re-signed when the site changes too: file tasks tell clients
                // the site the record now carries (a client that believed another would not
                // dial this node's LAN addresses).
                self.files
                    .handle
                    .set_site(self.swarm.behaviour().kelips.site());
            }
        }
    }

    /// Carries out what the reachability rules asked for.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Dial(peer, addresses) => {
                    let opts = DialOpts::peer_id(peer).addresses(addresses).build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!("cannot dial {peer} found on the LAN: {e}");
                    }
                }
                Action::Introduce(peer, addresses) => {
                    tracing::info!("found {peer} on the LAN at {addresses:?}");
                    self.swarm.behaviour_mut().kelips.introduce(peer, addresses);
                }
                Action::Reserve(circuit) => {
                    tracing::info!("reserving a relay slot: listening on {circuit}");
                    match self.swarm.listen_on(circuit.clone()) {
                        Ok(id) => self.relay_listener = Some(id),
                        Err(e) => {
                            tracing::warn!("cannot listen on {circuit}: {e}");
                            self.reach.on_relay_lost();
                        }
                    }
                }
                Action::Close(connection) => {
                    self.swarm.close_connection(connection);
                }
            }
        }
    }

    fn write_node_file(&self) {
        let file = NodeFile {
            peer_id: self.swarm.local_peer_id().to_string(),
            listen_addrs: self.listen.iter().map(|a| a.to_string()).collect(),
            pid: std::process::id(),
            network_key_file: self.network_key_file.clone(),
            http: self.http.map(|a| format!("http://{a}/")),
        };
        self.node_file.send_replace(Some(file));
    }
}

/// Whether `address` goes through a relay (`/p2p-circuit`).
fn is_relayed(address: &Multiaddr) -> bool {
    address
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// One task writes `node.json` whenever its content changes: concurrent writes through one
/// temporary file would race (several listen addresses arrive at once).
fn spawn_node_file_writer(path: PathBuf) -> watch::Sender<Option<NodeFile>> {
    let (sender, mut receiver) = watch::channel(None::<NodeFile>);
    tokio::spawn(async move {
        while receiver.changed().await.is_ok() {
            let latest = receiver.borrow_and_update().clone();
            if let Some(file) = latest
                && let Err(e) = write_atomically(&path, &file).await
            {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
    });
    sender
}

async fn write_atomically(path: &Path, file: &NodeFile) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, serde_json::to_vec_pretty(file)?).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// The Kelips protocol ids of earlier quickstore versions (fixed k only): a node that speaks
/// one of them and not this version's cannot talk to this node, and is told apart from a
/// mere stranger in the log.
const OLD_KELIPS_PROTOCOLS: [&str; 1] = ["/quickstore/kelips/1.0.0"];

fn warn_if_old_protocol(peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
    use quickstore_behaviours::net::protocol::PROTOCOL as KELIPS_PROTOCOL;
    if protocols.contains(&KELIPS_PROTOCOL) {
        return;
    }
    if let Some(old) = protocols
        .iter()
        .find(|p| OLD_KELIPS_PROTOCOLS.contains(&p.as_ref()))
    {
        tracing::warn!(
            "{peer} runs an older quickstore ({old}, a fixed number of groups); this node \
             speaks {KELIPS_PROTOCOL} (groups that size themselves) and cannot exchange \
             messages with it: upgrade that node"
        );
    }
}

fn log_core_event(event: &Event<Peer>) {
    match event {
        Event::MemberAdded(p) => tracing::info!("member added {p}"),
        Event::MemberFailed(p) => tracing::info!("member failed {p}"),
        Event::MemberRecovered(p) => tracing::info!("member recovered {p}"),
        Event::MemberRemoved(p) => tracing::info!("member removed {p}"),
        Event::ContactAdded { group, id } => tracing::info!("contact added {id} group {group}"),
        Event::ContactRemoved { group, id, reason } => {
            tracing::info!("contact removed {id} group {group} ({reason:?})")
        }
        Event::StructureChanged(change) => tracing::info!(
            "group structure: {} groups (epoch {}) -> {} groups (epoch {}){}",
            1u32 << change.from.level,
            change.from.epoch,
            1u32 << change.to.level,
            change.to.epoch,
            if change.proposed {
                ", proposed here"
            } else {
                ""
            }
        ),
        Event::Joined { founded } => tracing::info!("joined (founded: {founded})"),
        Event::IncarnationChanged(n) => tracing::info!("incarnation raised to {n}"),
        Event::Lookup(outcome) => tracing::debug!("lookup done: {outcome:?}"),
        Event::VersionSuperseded(t) => {
            tracing::debug!("version {} of {:?} superseded", t.version.lamport, t.name)
        }
    }
}
