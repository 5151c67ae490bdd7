//! Swarm assembly: TCP + Noise + Yamux, QUIC, DNS; identify, ping, connection limits, the
//! Kelips behaviour and the status protocol.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Swarm, SwarmBuilder, connection_limits, identify, noise, ping, request_response, tcp, yamux,
};
use prometheus_client::registry::Registry;
use quickstore_behaviours::net::{Behaviour as KelipsBehaviour, DriverConfig};

use crate::status::{STATUS_PROTOCOL, StatusCodec};

/// The agent version identify announces.
pub const AGENT_VERSION: &str = concat!("quickstore/", env!("CARGO_PKG_VERSION"));

/// Everything a node runs.
#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    /// Bounds on connections.
    pub limits: connection_limits::Behaviour,
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
}

/// Limits and timeouts of the swarm.
#[derive(Debug, Clone)]
pub struct SwarmLimits {
    /// Established connections at most.
    pub max_connections: u32,
    /// Per peer.
    pub max_connections_per_peer: u32,
    /// Outgoing dials in flight.
    pub max_pending_dials: u32,
    /// Idle connections close after this.
    pub idle_timeout: Duration,
    /// Ping interval.
    pub ping_interval: Duration,
}

/// Builds a node's swarm; `registry` receives libp2p's metrics when given.
pub fn build(
    keypair: Keypair,
    driver: DriverConfig,
    limits: SwarmLimits,
    registry: Option<&mut Registry>,
) -> anyhow::Result<Swarm<NodeBehaviour>> {
    let make = |key: &Keypair| -> Result<NodeBehaviour, Box<dyn std::error::Error + Send + Sync>> {
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_connections))
            .with_max_established_per_peer(Some(limits.max_connections_per_peer))
            .with_max_pending_outgoing(Some(limits.max_pending_dials))
            .with_max_pending_incoming(Some(limits.max_pending_dials));
        Ok(NodeBehaviour {
            limits: connection_limits::Behaviour::new(connection_limits),
            kelips: KelipsBehaviour::new(key.clone(), driver.clone())?,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(limits.ping_interval)
                    .with_timeout(Duration::from_secs(10)),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new("/quickstore/id/1.0.0".into(), key.public())
                    .with_agent_version(AGENT_VERSION.into()),
            ),
            status: request_response::Behaviour::with_codec(
                StatusCodec::default(),
                [(STATUS_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            ),
            streams: libp2p_stream::Behaviour::new(),
        })
    };
    let idle = limits.idle_timeout;
    let builder = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_dns()?;
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

/// A small swarm for one-shot client commands (`quickstore status`): TCP and QUIC, status
/// protocol only.
pub fn client(
    timeout: Duration,
) -> anyhow::Result<Swarm<request_response::Behaviour<StatusCodec>>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
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
