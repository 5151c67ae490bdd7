//! The client's libp2p peer: an ephemeral identity, never a group member, that opens file
//! streams to an entry node and to holders. Addresses come from an [`AddressBook`] the client
//! fills with the entry node's address and with verified signed records.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{PeerId, SwarmBuilder, dcutr, identify, noise, relay, yamux};
use quickstore_behaviours::net::record::verified_record;

use super::wire::PeerInfo;

/// Addresses the client may dial, by peer.
#[derive(Clone, Default)]
pub struct AddressBook {
    addresses: Arc<Mutex<BTreeMap<PeerId, Vec<Multiaddr>>>>,
}

impl AddressBook {
    /// Adds addresses for `peer`.
    pub fn add(&self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if let Ok(mut book) = self.addresses.lock() {
            let known = book.entry(peer).or_default();
            for address in addresses {
                if !known.contains(&address) {
                    known.push(address);
                }
            }
        }
    }

    /// Adds the addresses of a peer's verified signed record that a client at `site` may
    /// dial (LAN addresses only of its own site); false when the record does not verify or
    /// leaves nothing to dial.
    pub fn add_record(&self, info: &PeerInfo, site: Option<IpAddr>) -> bool {
        let dialable = verified_record(info.peer.0, &info.record).map(|r| r.dialable(site));
        match dialable {
            Some(addresses) if !addresses.is_empty() => {
                self.add(info.peer.0, addresses);
                true
            }
            _ => false,
        }
    }
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        Ok(self
            .addresses
            .lock()
            .map(|book| book.get(&peer).cloned().unwrap_or_default())
            .unwrap_or_default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// What the client's swarm runs: streams, plus what it takes to reach nodes behind NATs
/// (relayed connections and hole punching, which needs identify's observed addresses).
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "ClientEvent")]
pub struct ClientBehaviour {
    book: AddressBook,
    streams: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    relay_client: relay::client::Behaviour,
    dcutr: crate::candidates::PublicCandidates<dcutr::Behaviour>,
}

/// Events of the client's swarm.
#[derive(Debug)]
pub enum ClientEvent {
    /// From libp2p-stream (none in practice).
    Stream,
    /// Hole punching to this peer succeeded.
    Punched(PeerId),
    /// Hole punching to this peer failed.
    PunchFailed(PeerId),
    /// Anything else.
    Other,
}

impl From<Infallible> for ClientEvent {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl From<()> for ClientEvent {
    fn from((): ()) -> Self {
        ClientEvent::Stream
    }
}

impl From<identify::Event> for ClientEvent {
    fn from(_: identify::Event) -> Self {
        ClientEvent::Other
    }
}

impl From<relay::client::Event> for ClientEvent {
    fn from(_: relay::client::Event) -> Self {
        ClientEvent::Other
    }
}

impl From<dcutr::Event> for ClientEvent {
    fn from(event: dcutr::Event) -> Self {
        match event.result {
            Ok(_) => ClientEvent::Punched(event.remote_peer_id),
            Err(e) => {
                tracing::info!("hole punch to {} failed: {e}", event.remote_peer_id);
                ClientEvent::PunchFailed(event.remote_peer_id)
            }
        }
    }
}

/// When file bytes may go over a relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayPolicy {
    /// Whether at all (`nat.relay_transfers`).
    pub allowed: bool,
    /// Files larger than this do not fit a circuit (`nat.relay_circuit_bytes`).
    pub max_bytes: u64,
    /// How long to wait for hole punching to replace a relayed connection.
    pub punch_wait: Duration,
}

impl Default for RelayPolicy {
    fn default() -> Self {
        let nat = crate::config::NatConfig::default();
        Self {
            allowed: nat.relay_transfers,
            max_bytes: nat.relay_circuit_bytes,
            punch_wait: Duration::from_secs(4),
        }
    }
}

/// Connections of the client by peer (whether each is relayed), and the peers hole punching
/// failed for.
#[derive(Clone, Default)]
struct Connections {
    relayed: Arc<Mutex<BTreeMap<PeerId, BTreeMap<ConnectionId, bool>>>>,
    punch_failed: Arc<Mutex<std::collections::BTreeSet<PeerId>>>,
    /// Why the last dial of a peer failed (one line), until it is dialed again.
    dial_failed: Arc<Mutex<BTreeMap<PeerId, String>>>,
    /// Peers whose relayed dial was dropped before it started (see [`relay_busy`]): dialed
    /// again shortly.
    redial: Arc<Mutex<std::collections::BTreeSet<PeerId>>>,
}

/// A relayed dial that failed only because the relay client could not start its own dial
/// to the relay: a dial to that relay was under way already (the relay is itself being
/// dialed, or so is another peer through it), and libp2p's relay client then drops the
/// circuit request (`Response from behaviour was canceled`). Once the relay is connected, the
/// same dial goes through; it is not a verdict on the peer.
fn relay_busy(error: &libp2p::swarm::DialError) -> bool {
    match error {
        libp2p::swarm::DialError::Transport(attempts) if !attempts.is_empty() => {
            attempts.iter().all(|(address, e)| {
                address
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
                    && with_sources(e).contains("canceled")
            })
        }
        _ => false,
    }
}

/// Redials of a peer whose relayed dial was dropped (see [`relay_busy`]) at most, per
/// [`ClientPeer::prepare`].
const MAX_REDIALS: u32 = 20;
/// The pause before such a redial.
const REDIAL_PAUSE: Duration = Duration::from_millis(100);

/// Peers whose dial failures are remembered at most (the oldest go first).
const MAX_DIAL_FAILURES: usize = 1024;

impl Connections {
    fn dial_failure(&self, peer: &PeerId) -> Option<String> {
        self.dial_failed.lock().ok()?.get(peer).cloned()
    }

    fn set_dial_failure(&self, peer: PeerId, why: Option<String>) {
        if let Ok(mut failed) = self.dial_failed.lock() {
            match why {
                Some(why) => {
                    if failed.len() >= MAX_DIAL_FAILURES
                        && let Some(first) = failed.keys().next().copied()
                    {
                        failed.remove(&first);
                    }
                    failed.insert(peer, why);
                }
                None => {
                    failed.remove(&peer);
                }
            }
        }
    }
}

/// A dial error as one line: libp2p's `Display` of a failed dial lists one address a line.
pub fn one_line_dial_error(error: &libp2p::swarm::DialError) -> String {
    match error {
        libp2p::swarm::DialError::Transport(attempts) if !attempts.is_empty() => attempts
            .iter()
            .map(|(address, e)| format!("{address}: {}", with_sources(e)))
            .collect::<Vec<_>>()
            .join("; "),
        other => one_line(&other.to_string()),
    }
}

/// An error and its sources on one line, `: ` between them (a transport error's own text is
/// empty: what went wrong, e.g. `Network is unreachable (os error 101)`, is in its sources).
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `text` with its line breaks and runs of white space made single spaces.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A running client peer; dropping it stops its swarm.
pub struct ClientPeer {
    /// Opens streams.
    pub control: libp2p_stream::Control,
    /// Where peers are.
    pub book: AddressBook,
    connections: Connections,
    dials: tokio::sync::mpsc::Sender<PeerId>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClientPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why bytes cannot move between the client and a node.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// Every address of the peer failed to connect.
    #[error("cannot connect: {0}")]
    DialFailed(String),
    /// No connection at all within the timeout.
    #[error("no connection within {0:?}")]
    Unreachable(Duration),
    /// Only a relayed connection, and relay transfers are off.
    #[error(
        "reachable only through a relay (hole punching made no direct connection) and relay transfers are off (nat.relay_transfers)"
    )]
    RelayOff,
    /// Only a relayed connection, and the file does not fit the relay's circuit limit.
    #[error(
        "reachable only through a relay (hole punching made no direct connection) and the file's {size} bytes exceed the relay's circuit limit of {limit} bytes (nat.relay_circuit_bytes)"
    )]
    TooBigForRelay {
        /// The file's bytes.
        size: u64,
        /// The circuit limit.
        limit: u64,
    },
}

impl ClientPeer {
    /// Starts an ephemeral peer (TCP and QUIC, new identity, relay transport) whose
    /// connections close after `idle` without streams. It listens on all interfaces so that
    /// hole punching can reuse its ports. With `network_key` it speaks to a private network
    /// (TCP only).
    pub fn start(idle: Duration, network_key: Option<PreSharedKey>) -> anyhow::Result<Self> {
        let book = AddressBook::default();
        let streams = libp2p_stream::Behaviour::new();
        let control = streams.new_control();
        let behaviour_book = book.clone();
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|key| crate::swarm::transport(key, network_key, false))?
            .with_dns()?
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, relay_client| ClientBehaviour {
                book: behaviour_book,
                streams,
                identify: identify::Behaviour::new(crate::swarm::identify_config(key)),
                relay_client,
                dcutr: crate::candidates::PublicCandidates(dcutr::Behaviour::new(
                    key.public().to_peer_id(),
                )),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        let listens: &[&str] = if network_key.is_some() {
            &["/ip4/0.0.0.0/tcp/0"]
        } else {
            &["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        };
        for listen in listens {
            if let Ok(address) = listen.parse::<Multiaddr>()
                && let Err(e) = swarm.listen_on(address)
            {
                tracing::debug!("client cannot listen on {listen}: {e}");
            }
        }
        let connections = Connections::default();
        let tracked = connections.clone();
        let (dials, mut dial_requests) = tokio::sync::mpsc::channel::<PeerId>(16);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => on_client_event(&mut swarm, &tracked, event),
                    Some(peer) = dial_requests.recv() => {
                        tracked.set_dial_failure(peer, None);
                        match swarm.dial(peer) {
                            Ok(()) => {}
                            // Connected already, or a dial is under way: its outcome counts.
                            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                            Err(e) => {
                                tracing::debug!("cannot dial {peer}: {e}");
                                tracked.set_dial_failure(peer, Some(one_line_dial_error(&e)));
                            }
                        }
                    }
                }
            }
        });
        Ok(Self {
            control,
            book,
            connections,
            dials,
            task,
        })
    }

    /// Connects to `peer` if needed and makes sure `size` bytes may move: a relayed
    /// connection is given `policy.punch_wait` to be replaced by a direct one; if it is not,
    /// the transfer goes over the relay only as `policy` allows. True when it will be relayed.
    pub async fn prepare(
        &self,
        peer: PeerId,
        size: u64,
        policy: &RelayPolicy,
        timeout: Duration,
    ) -> Result<bool, ReachError> {
        let started = tokio::time::Instant::now();
        let mut dialed = false;
        let mut redials = 0;
        let relayed_only = loop {
            match self.path(&peer) {
                Some(false) => return Ok(false),
                Some(true) => break true,
                None if started.elapsed() >= timeout => {
                    return Err(ReachError::Unreachable(timeout));
                }
                None => {
                    let redial = self
                        .connections
                        .redial
                        .lock()
                        .map(|mut r| r.remove(&peer))
                        .unwrap_or(false);
                    if redial {
                        if redials >= MAX_REDIALS {
                            return Err(ReachError::DialFailed(format!(
                                "the relayed dial was dropped {redials} times (its relay never connected)"
                            )));
                        }
                        // The relay is being connected: the dial goes through once it is.
                        redials += 1;
                        tokio::time::sleep(REDIAL_PAUSE).await;
                        dialed = false;
                    }
                    if !dialed {
                        self.connections.set_dial_failure(peer, None);
                        dialed = self.dials.send(peer).await.is_ok();
                    } else if let Some(why) = self.connections.dial_failure(&peer) {
                        // Every address failed (refused, unroutable): no point waiting.
                        return Err(ReachError::DialFailed(why));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let punching = tokio::time::Instant::now();
        while relayed_only && punching.elapsed() < policy.punch_wait {
            if self.path(&peer) == Some(false) {
                return Ok(false);
            }
            let failed = self
                .connections
                .punch_failed
                .lock()
                .map(|f| f.contains(&peer))
                .unwrap_or(false);
            if failed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !policy.allowed {
            return Err(ReachError::RelayOff);
        }
        if size > policy.max_bytes {
            return Err(ReachError::TooBigForRelay {
                size,
                limit: policy.max_bytes,
            });
        }
        Ok(true)
    }

    /// `Some(false)` with direct connections to `peer` only, `Some(true)` with relayed ones
    /// only. A relayed connection beside a direct one is being closed (here or by the node):
    /// that counts as neither, since a stream opened now goes to either connection at random
    /// and dies with the closed one (`oneshot canceled`).
    fn path(&self, peer: &PeerId) -> Option<bool> {
        let connections = self.connections.relayed.lock().ok()?;
        let of_peer = connections.get(peer)?;
        let relayed = of_peer.values().filter(|relayed| **relayed).count();
        match (relayed, of_peer.len() - relayed) {
            (0, 0) => None,
            (0, _) => Some(false),
            (_, 0) => Some(true),
            _ => None,
        }
    }
}

fn on_client_event(
    swarm: &mut libp2p::Swarm<ClientBehaviour>,
    connections: &Connections,
    event: SwarmEvent<ClientEvent>,
) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        } => {
            // A peer with a direct connection keeps no relayed one (streams pick any).
            let mut close = Vec::new();
            if let Ok(mut c) = connections.relayed.lock() {
                let of_peer = c.entry(peer_id).or_default();
                of_peer.insert(connection_id, endpoint.is_relayed());
                if of_peer.values().any(|relayed| !relayed) {
                    close.extend(of_peer.iter().filter(|(_, r)| **r).map(|(id, _)| *id));
                }
            }
            for id in close {
                swarm.close_connection(id);
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            connection_id,
            ..
        } => {
            if let Ok(mut c) = connections.relayed.lock()
                && let Some(of_peer) = c.get_mut(&peer_id)
            {
                of_peer.remove(&connection_id);
                if of_peer.is_empty() {
                    c.remove(&peer_id);
                }
            }
        }
        SwarmEvent::Behaviour(ClientEvent::Punched(peer)) => {
            // Bytes must flow direct: the relayed connections go.
            let relayed: Vec<ConnectionId> = connections
                .relayed
                .lock()
                .map(|c| {
                    c.get(&peer)
                        .map(|m| m.iter().filter(|(_, r)| **r).map(|(id, _)| *id).collect())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            tracing::info!(
                "direct connection to {peer}; closing {} relayed",
                relayed.len()
            );
            for id in relayed {
                swarm.close_connection(id);
            }
        }
        SwarmEvent::OutgoingConnectionError {
            peer_id: Some(peer),
            error,
            ..
        } => {
            // A failed dial while another connection is up changes nothing.
            let connected = connections
                .relayed
                .lock()
                .map(|c| c.contains_key(&peer))
                .unwrap_or(false);
            if connected {
                return;
            }
            let mut redial = connections.redial.lock().ok();
            match redial.as_mut() {
                Some(redial) if relay_busy(&error) && redial.len() < MAX_DIAL_FAILURES => {
                    tracing::debug!("relayed dial of {peer} dropped (relay being dialed)");
                    redial.insert(peer);
                }
                _ => connections.set_dial_failure(peer, Some(one_line_dial_error(&error))),
            }
        }
        SwarmEvent::Behaviour(ClientEvent::PunchFailed(peer)) => {
            if let Ok(mut failed) = connections.punch_failed.lock()
                && failed.len() < 1024
            {
                failed.insert(peer);
            }
        }
        other => tracing::trace!("client swarm: {other:?}"),
    }
}
