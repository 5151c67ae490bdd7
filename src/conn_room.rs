//! Room for newcomers among inbound connections. `node.max_connections` (libp2p's
//! `connection_limits`) only refuses: once a flood of connections from many identities fills
//! it, an honest client cannot connect at all until the flood's connections end. This
//! behaviour keeps inbound connections below the limit by a reserve of one eighth: when an
//! inbound connection takes the count over, the oldest inbound connection of a peer that is
//! not protected is closed. The node protects the members of its group view, its contacts
//! and the peers holding a relay reservation with it ([`ConnectionRoom::protect`], refreshed
//! every second), so the network's own links stay; a client connects, does its work in
//! milliseconds and is never the oldest. Outbound connections are neither counted nor closed.
//!
//! Bounded: one entry per open inbound connection, which the swarm bounds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

/// The behaviour (see the module docs).
#[derive(Debug)]
pub struct ConnectionRoom {
    /// Inbound connections kept at most: `node.max_connections` less one eighth.
    keep: usize,
    /// Open inbound connections, oldest first (by arrival number).
    inbound: BTreeMap<u64, (PeerId, ConnectionId)>,
    numbers: HashMap<ConnectionId, u64>,
    next: u64,
    protected: HashSet<PeerId>,
    /// Connections to close, for `poll`.
    closing: VecDeque<(PeerId, ConnectionId)>,
    closed: u64,
}

impl ConnectionRoom {
    /// Room kept below `max_connections` (the node's limit on established connections).
    pub fn new(max_connections: usize) -> Self {
        let max = max_connections.max(1);
        Self {
            keep: (max - max / 8).max(1),
            inbound: BTreeMap::new(),
            numbers: HashMap::new(),
            next: 0,
            protected: HashSet::new(),
            closing: VecDeque::new(),
            closed: 0,
        }
    }

    /// The peers whose connections are never closed to make room (replaces the previous set).
    pub fn protect(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.protected = peers.into_iter().collect();
    }

    /// Inbound connections closed to make room so far.
    pub fn closed(&self) -> u64 {
        self.closed
    }

    fn arrived(&mut self, peer: PeerId, connection: ConnectionId) {
        let number = self.next;
        self.next += 1;
        self.inbound.insert(number, (peer, connection));
        self.numbers.insert(connection, number);
        self.make_room(connection);
    }

    /// Closes the oldest unprotected inbound connections (never `newest`) while more than
    /// `keep` are open.
    fn make_room(&mut self, newest: ConnectionId) {
        let over = self.inbound.len().saturating_sub(self.keep);
        if over == 0 {
            return;
        }
        let victims: Vec<u64> = self
            .inbound
            .iter()
            .filter(|(_, (peer, connection))| {
                *connection != newest && !self.protected.contains(peer)
            })
            .map(|(number, _)| *number)
            .take(over)
            .collect();
        for number in victims {
            if let Some((peer, connection)) = self.inbound.remove(&number) {
                self.numbers.remove(&connection);
                self.closing.push_back((peer, connection));
                self.closed += 1;
            }
        }
    }

    fn gone(&mut self, connection: ConnectionId) {
        if let Some(number) = self.numbers.remove(&connection) {
            self.inbound.remove(&number);
        }
    }
}

impl NetworkBehaviour for ConnectionRoom {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.arrived(peer, connection);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _address: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(e) = event {
            self.gone(e.connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.closing.pop_front() {
            Some((peer_id, connection)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn closing(room: &mut ConnectionRoom) -> Vec<ConnectionId> {
        room.closing.drain(..).map(|(_, c)| c).collect()
    }

    #[test]
    fn over_seven_eighths_the_oldest_inbound_connection_is_closed() {
        // 16 allowed: 14 kept.
        let mut room = ConnectionRoom::new(16);
        let peers: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        for (n, peer) in peers.iter().enumerate().take(14) {
            room.arrived(*peer, id(n));
        }
        assert!(closing(&mut room).is_empty());
        room.arrived(peers[14], id(14));
        assert_eq!(closing(&mut room), vec![id(0)]);
        room.arrived(peers[15], id(15));
        assert_eq!(closing(&mut room), vec![id(1)]);
        assert_eq!(room.closed(), 2);
        assert_eq!(room.inbound.len(), 14);
    }

    #[test]
    fn protected_peers_and_the_newcomer_are_never_closed() {
        let mut room = ConnectionRoom::new(8);
        let member = PeerId::random();
        room.protect([member]);
        room.arrived(member, id(0));
        for n in 1..7 {
            room.arrived(PeerId::random(), id(n));
        }
        assert!(closing(&mut room).is_empty(), "7 of 8 are kept");
        room.arrived(PeerId::random(), id(7));
        assert_eq!(
            closing(&mut room),
            vec![id(1)],
            "the member's is older, but kept"
        );
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let mut room = ConnectionRoom::new(8);
        for n in 0..7 {
            room.arrived(PeerId::random(), id(n));
        }
        room.gone(id(3));
        room.arrived(PeerId::random(), id(7));
        assert!(closing(&mut room).is_empty());
        assert_eq!(room.inbound.len(), 7);
        assert_eq!(room.numbers.len(), 7);
    }

    #[test]
    fn when_every_connection_is_protected_none_is_closed() {
        let mut room = ConnectionRoom::new(2);
        let peers = [PeerId::random(), PeerId::random(), PeerId::random()];
        room.protect(peers);
        for (n, peer) in peers.iter().enumerate() {
            room.arrived(*peer, id(n));
        }
        assert!(closing(&mut room).is_empty());
    }
}
