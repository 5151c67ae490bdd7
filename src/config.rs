//! The node's configuration: `config/default.toml` (embedded), an optional `--config FILE`,
//! then command-line flags; a bad value is refused at start, naming its key.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use quickstore_behaviours::Config as KelipsConfig;
use quickstore_behaviours::auth::WritePolicy;
use serde::{Deserialize, Serialize};

/// The default configuration file, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Everything a node is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Networking and limits of this node.
    pub node: NetConfig,
    /// The Kelips protocol parameters.
    pub kelips: KelipsConfig,
    /// Storing and moving file bytes.
    pub files: FilesConfig,
    /// LAN discovery, reachability, relays and hole punching.
    pub nat: NatConfig,
    /// Who may connect: an open network, or a private one with a pre-shared key.
    pub network: NetworkConfig,
    /// The HTTP API and web page.
    pub http: HttpConfig,
}

/// The node's HTTP API and web page (`--http`). Defaults in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `ADDR:PORT` to serve HTTP on, or empty (off). Default empty.
    pub listen: String,
    /// File holding the bearer token; required for a non-loopback `listen`. Default empty.
    pub token_file: String,
    /// Requests served at once at most (more: 503 `busy`). Default 64.
    pub max_requests: usize,
    /// Connections open at once at most (more are closed). Default 256.
    pub max_connections: usize,
    /// Bytes of a request head at most (more: 431). Default 16 384.
    pub max_header_bytes: usize,
    /// Request heads, upload bodies and response writes must progress within this (ms).
    /// Default 30 000.
    pub idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            token_file: String::new(),
            max_requests: 64,
            max_connections: 256,
            max_header_bytes: 16 << 10,
            idle_timeout_ms: 30_000,
        }
    }
}

/// Who may connect. Defaults in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// A private network's pre-shared key file (`quickstore keygen --network FILE`), or empty
    /// for an open network. Default empty.
    pub key_file: String,
    /// Who may write names: `"signed"` (every version signed by the name's owner or a key
    /// it granted a prefix to; the default) or `"open"` (anyone may overwrite or delete any
    /// name). Every node of a network must use the same.
    pub writes: WritePolicy,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            key_file: String::new(),
            writes: WritePolicy::Signed,
        }
    }
}

impl NetworkConfig {
    /// The key file, when the network is private.
    pub fn key_path(&self) -> Option<&Path> {
        (!self.key_file.is_empty()).then(|| Path::new(&self.key_file))
    }
}

impl Default for NodeConfig {
    /// The Kelips core's defaults, but groups that size themselves (`kelips.groups = 0`):
    /// a node needs no k chosen for a network it cannot see yet.
    fn default() -> Self {
        Self {
            node: NetConfig::default(),
            kelips: KelipsConfig {
                groups: 0,
                ..KelipsConfig::default()
            },
            files: FilesConfig::default(),
            nat: NatConfig::default(),
            network: NetworkConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// LAN discovery, reachability, relays and hole punching. Defaults in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// Find peers on the LAN with mDNS (only quickstore nodes of the same network are taken
    /// in). Default true.
    pub mdns: bool,
    /// Ask the LAN's router for a port mapping with UPnP. Default false.
    pub upnp: bool,
    /// Serve as a relay for unreachable nodes (needs a public address). Default false.
    pub relay_server: bool,
    /// AutoNAT v2 probes one candidate address this often (ms). Default 5 000.
    pub autonat_probe_interval_ms: u64,
    /// After this many failed probes and none confirmed, the node counts itself unreachable
    /// and reserves a slot on a relay. Default 3.
    pub autonat_max_failed_probes: u32,
    /// Relay server: reservations held at most. Default 128.
    pub relay_max_reservations: usize,
    /// Relay server: circuits at most. Default 64.
    pub relay_max_circuits: usize,
    /// Relay server: a circuit is closed after this long (ms). Default 3 600 000 (libp2p's
    /// own default, 2 minutes, is too short for gossip).
    pub relay_circuit_ms: u64,
    /// Relay server: a circuit is closed after this many bytes each way. Default 64 MiB
    /// (libp2p's own default, 128 KiB, is too small for gossip).
    pub relay_circuit_bytes: u64,
    /// Let file bytes go over a relay when no direct connection could be made, as long as the
    /// file fits in `relay_circuit_bytes`. Default true.
    pub relay_transfers: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            upnp: false,
            relay_server: false,
            autonat_probe_interval_ms: 5_000,
            autonat_max_failed_probes: 3,
            relay_max_reservations: 128,
            relay_max_circuits: 64,
            relay_circuit_ms: 3_600_000,
            relay_circuit_bytes: 64 << 20,
            relay_transfers: true,
        }
    }
}

/// Storing and moving file bytes. Defaults in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Bytes of blobs this node stores at most. Default 100 GiB.
    pub storage_bytes: u64,
    /// Largest file accepted, in bytes. Default 16 GiB.
    pub max_file_bytes: u64,
    /// Every open, read and write of a file stream times out after this (ms). Default 30 000.
    pub io_timeout_ms: u64,
    /// A put must have all its replicas durable within this (ms), replacing failed ones;
    /// else it fails. Default 600 000.
    pub put_deadline_ms: u64,
    /// File streams (control and bytes) served at once; more are answered `busy` (up to 16
    /// at a time, then dropped unanswered). Default 64.
    pub max_streams: usize,
    /// File streams served at once for any one peer, so that one peer cannot take every
    /// slot; more from it are answered `busy`. Default 16.
    pub max_streams_per_peer: usize,
    /// When every slot is taken, a new stream evicts a stream still waiting for its request:
    /// the oldest of the peer with the most such streams if it has several, else the oldest
    /// once it has waited this long (ms); otherwise the new stream is answered `busy`.
    /// Default 500.
    pub stream_eviction_grace_ms: u64,
    /// How often a node checks the replicas of the names it holds (ms). Default 5 000.
    pub repair_period_ms: u64,
    /// Repairs (copies being made) at once. Default 4.
    pub max_repairs: usize,
    /// A blob no tuple names is deleted after this (ms). Default 600 000.
    pub orphan_grace_ms: u64,
    /// Older versions a holder keeps per name besides the newest (`get --version`). Default 1.
    pub keep_versions: usize,
    /// Stored blobs are re-hashed at most this fast, in bytes per second. Default 16 MiB/s.
    pub scrub_bytes_per_s: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            storage_bytes: 100 << 30,
            max_file_bytes: 16 << 30,
            io_timeout_ms: 30_000,
            put_deadline_ms: 600_000,
            max_streams: 64,
            max_streams_per_peer: 16,
            stream_eviction_grace_ms: 500,
            repair_period_ms: 5_000,
            max_repairs: 4,
            orphan_grace_ms: 600_000,
            keep_versions: 1,
            scrub_bytes_per_s: 16 << 20,
        }
    }
}

/// Networking and limits of one node. Defaults in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Listen multiaddrs. Default TCP and QUIC on port 0 of all IPv4 interfaces.
    pub listen: Vec<String>,
    /// Bootstrap multiaddrs ending in `/p2p/<PeerId>`. Default none (found a network).
    pub bootstrap: Vec<String>,
    /// Extra advertised addresses. Default none.
    pub external_addr: Vec<String>,
    /// `ADDR:PORT` serving Prometheus metrics, or empty. Default empty.
    pub metrics: String,
    /// Established connections at most. Default 512.
    pub max_connections: u32,
    /// Connections per peer at most. Default 4.
    pub max_connections_per_peer: u32,
    /// Inbound connections (handshakes and established) per remote IP at most, loopback
    /// excepted. Default 64.
    pub max_connections_per_ip: u32,
    /// Outgoing dials in flight at most. Default 64.
    pub max_pending_dials: u32,
    /// Idle connections close after this long (ms). Default 30 000.
    pub idle_connection_timeout_ms: u64,
    /// Unreachable peers are not retried for this long (ms). Default 10 000.
    pub backoff_ms: u64,
    /// Streams per connection at most, each way. Default 64.
    pub max_concurrent_streams: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            external_addr: Vec::new(),
            metrics: String::new(),
            max_connections: 512,
            max_connections_per_peer: 4,
            max_connections_per_ip: 64,
            max_pending_dials: 64,
            idle_connection_timeout_ms: 30_000,
            backoff_ms: 10_000,
            max_concurrent_streams: 64,
        }
    }
}

/// A bootstrap peer: its PeerId and the address to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Who.
    pub peer: PeerId,
    /// Where (without the `/p2p/` suffix).
    pub address: Multiaddr,
}

impl NodeConfig {
    /// Parses a TOML document over the defaults. The error is one line: `line L, column C:
    /// what is wrong` (toml's own message spans several lines with a drawing of the spot).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Self::parse(text)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {}", toml_error(text, &e)))
    }

    /// Parses TOML; a `[kelips]` table without `groups` means groups that size themselves,
    /// as a file without `[kelips]` does (the Kelips core's own default is a fixed k).
    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let mut config: Self = toml::from_str(text)?;
        let table: toml::Table = toml::from_str(text)?;
        let groups_given = table
            .get("kelips")
            .and_then(|k| k.as_table())
            .is_some_and(|k| k.contains_key("groups"));
        if !groups_given {
            config.kelips.groups = 0;
        }
        Ok(config)
    }

    /// Loads `path`. Every error is one line naming the file (and, for a syntax error or a
    /// bad key, the line and column).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid config file {}: {}",
                path.display(),
                toml_error(&text, &e)
            )
        })
    }

    /// Refuses values that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.kelips.validate()?;
        let n = &self.node;
        if n.listen.is_empty() {
            bail!("invalid configuration `node.listen`: at least one address is needed");
        }
        self.listen_addrs()?;
        self.bootstraps()?;
        self.external_addrs()?;
        self.metrics_addr()?;
        let f = &self.files;
        let t = &self.nat;
        let ranges: [(&str, u64, u64, u64); 29] = [
            (
                "nat.autonat_probe_interval_ms",
                t.autonat_probe_interval_ms,
                10,
                3_600_000,
            ),
            (
                "nat.autonat_max_failed_probes",
                t.autonat_max_failed_probes.into(),
                1,
                1000,
            ),
            (
                "nat.relay_max_reservations",
                t.relay_max_reservations as u64,
                1,
                65_536,
            ),
            (
                "nat.relay_max_circuits",
                t.relay_max_circuits as u64,
                1,
                65_536,
            ),
            ("nat.relay_circuit_ms", t.relay_circuit_ms, 1000, 86_400_000),
            (
                "nat.relay_circuit_bytes",
                t.relay_circuit_bytes,
                1 << 17,
                u64::MAX,
            ),
            ("files.keep_versions", f.keep_versions as u64, 0, 64),
            (
                "http.max_requests",
                self.http.max_requests as u64,
                1,
                65_536,
            ),
            (
                "http.max_connections",
                self.http.max_connections as u64,
                1,
                65_536,
            ),
            (
                "http.max_header_bytes",
                self.http.max_header_bytes as u64,
                8192,
                1 << 20,
            ),
            (
                "http.idle_timeout_ms",
                self.http.idle_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "files.orphan_grace_ms",
                f.orphan_grace_ms,
                0,
                86_400_000 * 30,
            ),
            ("files.scrub_bytes_per_s", f.scrub_bytes_per_s, 1, u64::MAX),
            ("files.storage_bytes", f.storage_bytes, 0, u64::MAX),
            ("files.max_file_bytes", f.max_file_bytes, 0, u64::MAX),
            ("files.io_timeout_ms", f.io_timeout_ms, 1, 3_600_000),
            ("files.put_deadline_ms", f.put_deadline_ms, 1, 86_400_000),
            ("files.max_streams", f.max_streams as u64, 1, 4096),
            (
                "files.stream_eviction_grace_ms",
                f.stream_eviction_grace_ms,
                0,
                3_600_000,
            ),
            (
                "files.max_streams_per_peer",
                f.max_streams_per_peer as u64,
                1,
                4096,
            ),
            ("files.repair_period_ms", f.repair_period_ms, 1, 86_400_000),
            ("files.max_repairs", f.max_repairs as u64, 1, 256),
            ("node.max_connections", n.max_connections.into(), 1, 65_536),
            (
                "node.max_connections_per_peer",
                n.max_connections_per_peer.into(),
                1,
                16,
            ),
            (
                "node.max_connections_per_ip",
                n.max_connections_per_ip.into(),
                1,
                65_536,
            ),
            (
                "node.max_pending_dials",
                n.max_pending_dials.into(),
                1,
                4096,
            ),
            (
                "node.idle_connection_timeout_ms",
                n.idle_connection_timeout_ms,
                1,
                86_400_000,
            ),
            ("node.backoff_ms", n.backoff_ms, 0, 86_400_000),
            (
                "node.max_concurrent_streams",
                n.max_concurrent_streams as u64,
                1,
                4096,
            ),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                bail!("invalid configuration `{key}`: {value} is outside {min}..={max}");
            }
        }
        Ok(())
    }

    /// The listen addresses.
    /// In a private network only the TCP ones: pnet covers TCP only.
    pub fn listen_addrs(&self) -> anyhow::Result<Vec<Multiaddr>> {
        let all = parse_addrs("node.listen", &self.node.listen)?;
        if self.network.key_path().is_none() {
            return Ok(all);
        }
        let tcp: Vec<Multiaddr> = all
            .into_iter()
            .filter(|a| !a.iter().any(|p| matches!(p, Protocol::Udp(_))))
            .collect();
        if tcp.is_empty() {
            bail!(
                "invalid configuration `node.listen`: a private network (`network.key_file`) \
                 runs over TCP only, and no listen address is TCP"
            );
        }
        Ok(tcp)
    }

    /// The extra advertised addresses.
    pub fn external_addrs(&self) -> anyhow::Result<Vec<Multiaddr>> {
        parse_addrs("node.external_addr", &self.node.external_addr)
    }

    /// The bootstrap peers; each address must end in `/p2p/<PeerId>`. A refusal names the
    /// whole address as given.
    pub fn bootstraps(&self) -> anyhow::Result<Vec<Bootstrap>> {
        parse_addrs("node.bootstrap", &self.node.bootstrap)?
            .into_iter()
            .map(|given| {
                let mut address = given.clone();
                match address.pop() {
                    Some(Protocol::P2p(peer)) => Ok(Bootstrap { peer, address }),
                    _ => bail!(
                        "invalid configuration `node.bootstrap`: {given} does not end in /p2p/<PeerId>"
                    ),
                }
            })
            .collect()
    }

    /// The HTTP address, if any.
    pub fn http_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.http.listen.is_empty() {
            return Ok(None);
        }
        self.http.listen.parse().map(Some).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration `http.listen`: {:?} is not ADDR:PORT ({e})",
                self.http.listen
            )
        })
    }

    /// The metrics address, if any.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.node.metrics.is_empty() {
            return Ok(None);
        }
        self.node.metrics.parse().map(Some).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration `node.metrics`: {:?} is not ADDR:PORT ({e})",
                self.node.metrics
            )
        })
    }
}

/// One line for a TOML error: `line L, column C: message` (1-based, from the error's span in
/// `text`), with any line breaks of the message folded.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    let Some(span) = error.span() else {
        return message;
    };
    let before = text.get(..span.start.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// `text` with its lines joined by spaces (an error is printed on one line).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_addrs(key: &str, values: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>()
                .map_err(|e| anyhow::anyhow!("invalid configuration `{key}`: {v:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_holds_every_key_with_the_code_defaults() {
        let shipped = NodeConfig::from_toml(DEFAULT_TOML).unwrap();
        assert_eq!(shipped, NodeConfig::default());
        let file: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let code: toml::Table =
            toml::from_str(&toml::to_string(&NodeConfig::default()).unwrap()).unwrap();
        for (section, keys) in &code {
            let in_file = file[section].as_table().unwrap();
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    in_file.contains_key(key),
                    "{section}.{key} missing in default.toml"
                );
            }
        }
        shipped.validate().unwrap();
    }

    #[test]
    fn a_bootstrap_without_p2p_is_named_whole() {
        let mut config = NodeConfig::default();
        config.node.bootstrap = vec!["/ip4/127.0.0.1/tcp/35581".into()];
        let e = config.bootstraps().unwrap_err().to_string();
        assert!(
            e.contains("`/ip4/127.0.0.1/tcp/35581` does not end")
                || e.contains("/ip4/127.0.0.1/tcp/35581 does not end"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_are_one_line_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[node]\nlisten = [\n\n[kelips\n").unwrap();
        let e = format!("{:#}", NodeConfig::load(&path).unwrap_err());
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("line 4, column"), "{e}");
        std::fs::write(&path, "[kelips]\ngroups = 3\ngrups = 3\n").unwrap();
        let e = format!("{:#}", NodeConfig::load(&path).unwrap_err());
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("line 3, column 1") && e.contains("grups"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = NodeConfig::from_toml("[kelips]\ngroups = 100000\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("groups"), "{e}");
        // 0: groups that size themselves, the default.
        NodeConfig::from_toml("[kelips]\ngroups = 0\n")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(NodeConfig::default().kelips.groups, 0);
        let partial = NodeConfig::from_toml("[kelips]\nnetwork_name = \"lab\"\n").unwrap();
        assert_eq!(partial.kelips.groups, 0);
        let fixed = NodeConfig::from_toml("[kelips]\ngroups = 4\n").unwrap();
        assert_eq!(fixed.kelips.groups, 4);
        let e = NodeConfig::from_toml("[kelips]\ngrups = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("grups"), "{e:#}");
        let e = NodeConfig::from_toml("[node]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("node.bootstrap"), "{e}");
    }
}
