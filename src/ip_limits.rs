//! Inbound connections per remote IP: pending handshakes and established connections
//! together, at most `node.max_connections_per_ip` from one IP, so that one host opening
//! connections as fast as it can (under as many identities as it likes: a PeerId costs
//! nothing) fills its own share and not the node's whole `node.max_connections`. Loopback is
//! not limited (local tools and test clusters). Outbound connections are not counted.
//!
//! A connection is counted from its pending handshake until it closes or fails; the count
//! is bounded by the number of open connections, which the swarm bounds.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// The denial a connection over the limit gets.
#[derive(Debug, thiserror::Error)]
#[error("{ip} has {limit} connections to this node already (node.max_connections_per_ip)")]
pub struct TooManyFromIp {
    /// The remote IP.
    pub ip: IpAddr,
    /// The limit.
    pub limit: usize,
}

/// The behaviour (see the module docs).
#[derive(Debug)]
pub struct PerIpLimit {
    limit: usize,
    by_ip: BTreeMap<IpAddr, usize>,
    counted: HashMap<ConnectionId, IpAddr>,
}

impl PerIpLimit {
    /// At most `limit` (at least 1) inbound connections per remote IP.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            by_ip: BTreeMap::new(),
            counted: HashMap::new(),
        }
    }

    /// Inbound connections counted for `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    fn release(&mut self, connection: ConnectionId) {
        let Some(ip) = self.counted.remove(&connection) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The IP of a remote address, if it has one that is limited (not loopback).
fn limited_ip(address: &Multiaddr) -> Option<IpAddr> {
    let ip = address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })?;
    (!ip.is_loopback()).then_some(ip)
}

impl NetworkBehaviour for PerIpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = limited_ip(remote) else {
            return Ok(());
        };
        let n = self.by_ip.entry(ip).or_insert(0);
        if *n >= self.limit {
            return Err(ConnectionDenied::new(TooManyFromIp {
                ip,
                limit: self.limit,
            }));
        }
        *n += 1;
        self.counted.insert(connection, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
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
        match event {
            FromSwarm::ConnectionClosed(e) => self.release(e.connection_id),
            FromSwarm::ListenFailure(e) => self.release(e.connection_id),
            _ => {}
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
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4001").parse().expect("multiaddr")
    }

    fn pending(limit: &mut PerIpLimit, id: usize, ip: &str) -> bool {
        let local = from("192.0.2.1");
        limit
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(id), &local, &from(ip))
            .is_ok()
    }

    #[test]
    fn one_ip_gets_its_limit_and_others_still_connect() {
        let mut limit = PerIpLimit::new(3);
        for id in 0..3 {
            assert!(pending(&mut limit, id, "203.0.113.7"));
        }
        assert!(!pending(&mut limit, 3, "203.0.113.7"), "over the limit");
        assert!(pending(&mut limit, 4, "198.51.100.2"), "another host");
        assert_eq!(limit.count("203.0.113.7".parse().expect("ip")), 3);
    }

    #[test]
    fn a_closed_or_failed_connection_gives_its_place_back() {
        let mut limit = PerIpLimit::new(1);
        assert!(pending(&mut limit, 0, "203.0.113.7"));
        assert!(!pending(&mut limit, 1, "203.0.113.7"));
        limit.release(ConnectionId::new_unchecked(0));
        // A connection never counted (denied, or outbound) changes nothing when it ends.
        limit.release(ConnectionId::new_unchecked(1));
        assert!(pending(&mut limit, 2, "203.0.113.7"));
        assert_eq!(limit.count("203.0.113.7".parse().expect("ip")), 1);
        limit.release(ConnectionId::new_unchecked(2));
        assert!(limit.by_ip.is_empty() && limit.counted.is_empty());
    }

    #[test]
    fn loopback_is_not_limited() {
        let mut limit = PerIpLimit::new(1);
        for id in 0..10 {
            assert!(pending(&mut limit, id, "127.0.0.1"));
        }
        assert!(limit.counted.is_empty());
    }
}
