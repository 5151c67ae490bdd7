//! Swarm assembly: TCP + Noise + Yamux, QUIC, DNS, circuit relay (client); identify, ping,
//! connection limits, mDNS, AutoNAT v2, relay server, DCUtR, UPnP, the Kelips behaviour and
//! the status protocol.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, mdns, noise, ping, relay,
    request_response, tcp, upnp, yamux,
};
use prometheus_client::registry::Registry;
use quickstore_behaviours::net::{Behaviour as KelipsBehaviour, DriverConfig};

use crate::candidates::PublicCandidates;
use crate::config::NatConfig;
use crate::status::{STATUS_PROTOCOL, StatusCodec};

/// The agent version identify announces.
pub const AGENT_VERSION: &str = concat!("quickstore/", env!("CARGO_PKG_VERSION"));

/// Everything a node runs.
#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    /// Bounds on connections.
    pub limits: connection_limits::Behaviour,
    /// Inbound connections per remote IP.
    pub per_ip: crate::ip_limits::PerIpLimit,
    /// Room kept for newcomers among inbound connections.
    pub room: crate::conn_room::ConnectionRoom,
    /// Kelips membership and lookups.
    pub kelips: KelipsBehaviour,
    /// RTT samples for spatial gossip; liveness of connections.
    pub ping: ping::Behaviour,
    /// Agent version and observed addresses.
    pub identify: identify::Behaviour,
    /// `quickstore status`.
    pub status: request_response::Behaviour<StatusCodec>,
    /// File streams: `/quickstore/files/1.0.0` and `/quickstore/blob/1.0.0`.
    pub streams: libp2p_stream::Behaviour,
    /// LAN discovery (`nat.mdns`).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Reservations on relays and relayed connections.
    pub relay_client: relay::client::Behaviour,
    /// Serving as a relay (`nat.relay_server`).
    pub relay_server: Toggle<relay::Behaviour>,
    /// Which of our addresses others can reach (public candidates only: a private one is
    /// reachable from its own LAN at best, and a peer of another site asked to dial it back
    /// would send packets towards that site's private range).
    pub autonat_client:
        PublicCandidates<autonat::v2::client::Behaviour<rand_autonat::rngs::StdRng>>,
    /// Dialing back others' candidate addresses.
    pub autonat_server: autonat::v2::server::Behaviour<rand_autonat::rngs::StdRng>,
    /// Hole punching: relayed connections upgraded to direct ones (offering public address
    /// candidates only).
    pub dcutr: PublicCandidates<dcutr::Behaviour>,
    /// Port mappings on the LAN's router (`nat.upnp`).
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

/// Limits and timeouts of the swarm.
#[derive(Debug, Clone)]
pub struct SwarmLimits {
    /// Established connections at most.
    pub max_connections: u32,
    /// Per peer.
    pub max_connections_per_peer: u32,
    /// Inbound ones (pending and established) per remote IP, loopback excepted.
    pub max_connections_per_ip: u32,
    /// Outgoing dials in flight.
    pub max_pending_dials: u32,
    /// Idle connections close after this.
    pub idle_timeout: Duration,
    /// Ping interval.
    pub ping_interval: Duration,
}

/// How often a node pings each connected peer for an RTT sample: five gossip periods, within
/// 200 ms and 15 s.
pub fn ping_interval(kelips: &quickstore_behaviours::Config) -> Duration {
    Duration::from_millis((kelips.gossip_period_ms * 5).clamp(200, 15_000))
}

/// Identify as nodes and clients run it: the agent version, and no cache of the addresses
/// peers listen on. Identify would otherwise offer a peer's listen addresses (its LAN ones
/// too) for every later dial of that peer, so a node or client would dial the private
/// addresses of another site whenever it redials a peer it once reached through a relay.
/// Dials take their addresses from verified records instead, scoped to the dialer's site.
pub fn identify_config(key: &Keypair) -> identify::Config {
    identify::Config::new("/quickstore/id/1.0.0".into(), key.public())
        .with_agent_version(AGENT_VERSION.into())
        .with_cache_size(0)
}

/// The transports under DNS and the relay client: TCP (+ Noise + Yamux), encrypted first with
/// `network_key` in a private network (libp2p's `pnet`), and QUIC only in an open one (pnet
/// covers TCP only); with `memory`, libp2p's in-process transport too (`/memory/N`, open
/// networks only: in-process clusters run without sockets).
pub(crate) fn transport(
    key: &Keypair,
    network_key: Option<PreSharedKey>,
    memory: bool,
) -> Result<
    libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use futures::future::Either;
    use libp2p::Transport;
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::core::upgrade::Version;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let Some(psk) = network_key else {
        let tcp = tcp
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default());
        let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key));
        let open = tcp.or_transport(quic).map(|either, _| match either {
            Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
        });
        return Ok(if memory {
            open.or_transport(memory_transport(key)?)
                .map(|either, _| either.into_inner())
                .boxed()
        } else {
            open.boxed()
        });
    };
    Ok(tcp
        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Builds a node's swarm; `registry` receives libp2p's metrics when given. With
/// `network_key` the node is in a private network ([`crate::network_key`]): TCP only.
pub fn build(
    keypair: Keypair,
    driver: DriverConfig,
    limits: SwarmLimits,
    nat: &NatConfig,
    network_key: Option<PreSharedKey>,
    registry: Option<&mut Registry>,
) -> anyhow::Result<Swarm<NodeBehaviour>> {
    let make = |key: &Keypair,
                relay_client: relay::client::Behaviour|
     -> Result<NodeBehaviour, Box<dyn std::error::Error + Send + Sync>> {
        let me = key.public().to_peer_id();
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_connections))
            .with_max_established_per_peer(Some(limits.max_connections_per_peer))
            .with_max_pending_outgoing(Some(limits.max_pending_dials))
            .with_max_pending_incoming(Some(limits.max_pending_dials));
        Ok(NodeBehaviour {
            limits: connection_limits::Behaviour::new(connection_limits),
            per_ip: crate::ip_limits::PerIpLimit::new(limits.max_connections_per_ip as usize),
            room: crate::conn_room::ConnectionRoom::new(limits.max_connections as usize),
            kelips: KelipsBehaviour::new(key.clone(), driver.clone())?,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(limits.ping_interval)
                    .with_timeout(Duration::from_secs(10)),
            ),
            // No cache of identified peers' addresses: identify would add them to every dial
            // of those peers, LAN addresses of other sites included (see `identify_config`).
            identify: identify::Behaviour::new(identify_config(key)),
            status: request_response::Behaviour::with_codec(
                StatusCodec::default(),
                [(STATUS_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            ),
            streams: libp2p_stream::Behaviour::new(),
            mdns: Toggle::from(
                nat.mdns
                    .then(|| mdns::tokio::Behaviour::new(mdns::Config::default(), me))
                    .transpose()?,
            ),
            relay_client,
            relay_server: Toggle::from(nat.relay_server.then(|| relay_server(me, nat))),
            autonat_client: PublicCandidates(autonat::v2::client::Behaviour::new(
                rand_autonat::make_rng(),
                autonat::v2::client::Config::default()
                    .with_probe_interval(Duration::from_millis(nat.autonat_probe_interval_ms)),
            )),
            autonat_server: autonat::v2::server::Behaviour::default(),
            dcutr: PublicCandidates(dcutr::Behaviour::new(me)),
            upnp: Toggle::from(nat.upnp.then(upnp::tokio::Behaviour::default)),
        })
    };
    let idle = limits.idle_timeout;
    let builder = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| transport(key, network_key, true))?
        .with_dns()?
        .with_relay_client(noise::Config::new, yamux::Config::default)?;
    let swarm = match registry {
        Some(registry) => builder
            .with_bandwidth_metrics(registry)
            .with_behaviour(make)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        None => builder
            .with_behaviour(make)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

/// libp2p's in-process transport (`/memory/N` addresses), with Noise and Yamux as on TCP:
/// in-process clusters (tests, `swarm_capacity`) run without sockets or file descriptors.
fn memory_transport(
    key: &Keypair,
) -> Result<
    libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use libp2p::Transport;
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::core::upgrade::Version;
    Ok(libp2p::core::transport::MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// A relay server with `nat`'s limits (libp2p's defaults are too small for gossip).
fn relay_server(me: libp2p::PeerId, nat: &NatConfig) -> relay::Behaviour {
    let config = relay::Config {
        max_reservations: nat.relay_max_reservations,
        max_circuits: nat.relay_max_circuits,
        max_circuits_per_peer: nat.relay_max_circuits.min(16),
        max_circuit_duration: Duration::from_millis(nat.relay_circuit_ms),
        max_circuit_bytes: nat.relay_circuit_bytes,
        ..relay::Config::default()
    };
    relay::Behaviour::new(me, config)
}

/// A small swarm for one-shot client commands (`quickstore status`): TCP and QUIC (TCP
/// alone in a private network, `network_key`), status protocol only.
pub fn client(
    timeout: Duration,
    network_key: Option<PreSharedKey>,
) -> anyhow::Result<Swarm<request_response::Behaviour<StatusCodec>>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| transport(key, network_key, false))?
        .with_dns()?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                StatusCodec::default(),
                [(STATUS_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(timeout),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(timeout))
        .build())
}

/// Refuses, before the swarm listens on it, an address whose port another socket already
/// holds. libp2p's TCP listeners set `SO_REUSEPORT` (and QUIC's sockets may), so a second node
/// given a running node's port would bind it too and share its connections: half the dials
/// to either would then fail with `Unexpected peer ID`. The probe binds the port with the
/// standard library's sockets, which do not set `SO_REUSEPORT` and therefore fail with
/// `EADDRINUSE` while any socket listens there, then lets go of it at once. Port 0, DNS names
/// and relayed addresses are not probed.
pub fn probe_listen_address(address: &libp2p::Multiaddr) -> anyhow::Result<()> {
    use libp2p::multiaddr::Protocol;
    use std::net::{IpAddr, TcpListener, UdpSocket};
    let mut ip: Option<IpAddr> = None;
    let (mut tcp, mut udp) = (None, None);
    for protocol in address.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Ip6(a) => ip = Some(a.into()),
            Protocol::Tcp(port) => tcp = Some(port),
            Protocol::Udp(port) => udp = Some(port),
            Protocol::P2pCircuit => return Ok(()),
            _ => {}
        }
    }
    let Some(ip) = ip else { return Ok(()) };
    let probed = match (tcp, udp) {
        (Some(port), _) if port != 0 => TcpListener::bind((ip, port)).map(drop),
        (None, Some(port)) if port != 0 => UdpSocket::bind((ip, port)).map(drop),
        _ => Ok(()),
    };
    probed.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {address}: the address is already in use (another node or program listens there)"
        ),
        _ => anyhow::anyhow!("cannot listen on {address}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = taken.local_addr().expect("bound").port();
        let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let e = probe_listen_address(&address).unwrap_err().to_string();
        assert!(
            e.contains(&address.to_string()) && e.contains("in use"),
            "{e}"
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a port");
        let port = udp.local_addr().expect("bound").port();
        let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .unwrap();
        let e = probe_listen_address(&address).unwrap_err().to_string();
        assert!(
            e.contains(&address.to_string()) && e.contains("in use"),
            "{e}"
        );
        drop((taken, udp));
        for free in [
            "/ip4/127.0.0.1/tcp/0",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "/dns4/localhost/tcp/1",
        ] {
            probe_listen_address(&free.parse().unwrap()).unwrap();
        }
    }
}
