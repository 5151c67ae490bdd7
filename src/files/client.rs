//! The client's libp2p peer: an ephemeral identity, never a group member, that opens file
//! streams to an entry node and to holders. Addresses come from an [`AddressBook`] the client
//! fills with the entry node's address and with verified signed records.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{PeerId, SwarmBuilder, noise, tcp, yamux};
use quickstore_behaviours::net::peer::verified_addresses;

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

    /// Adds a peer's verified signed record; false when the record does not verify.
    pub fn add_record(&self, info: &PeerInfo) -> bool {
        match verified_addresses(info.peer.0, &info.record) {
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

/// What the client's swarm runs.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "ClientEvent")]
pub struct ClientBehaviour {
    book: AddressBook,
    streams: libp2p_stream::Behaviour,
}

/// Events of the client's swarm; nothing the client acts on (libp2p-stream declares `()`
/// events and emits none).
#[derive(Debug)]
pub enum ClientEvent {
    /// From libp2p-stream.
    Stream,
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

/// A running client peer; dropping it stops its swarm.
pub struct ClientPeer {
    /// Opens streams.
    pub control: libp2p_stream::Control,
    /// Where peers are.
    pub book: AddressBook,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClientPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClientPeer {
    /// Starts an ephemeral peer (TCP and QUIC, new identity) whose connections close after
    /// `idle` without streams.
    pub fn start(idle: Duration) -> anyhow::Result<Self> {
        let book = AddressBook::default();
        let streams = libp2p_stream::Behaviour::new();
        let control = streams.new_control();
        let behaviour = ClientBehaviour {
            book: book.clone(),
            streams,
        };
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_quic()
            .with_dns()?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        let task = tokio::spawn(async move {
            loop {
                let event = swarm.select_next_some().await;
                tracing::trace!("client swarm: {event:?}");
            }
        });
        Ok(Self {
            control,
            book,
            task,
        })
    }
}
