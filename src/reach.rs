//! Reachability of a node: LAN discovery (mDNS, filtered by protocol and network), AutoNAT v2
//! verdicts, relay reservations for unreachable nodes, hole punching (DCUtR) and how each
//! connected peer is reached (directly, over the LAN, or through a relay).
//!
//! The node's event loop feeds events in and applies the [`Action`]s that come out; nothing
//! here touches the swarm, so the rules can be read (and tested) on their own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use quickstore_behaviours::net::protocol::PROTOCOL as KELIPS_PROTOCOL;
use quickstore_behaviours::net::record::{Scope, first_ip, is_private};
use serde::{Deserialize, Serialize};

use crate::config::NatConfig;

/// Peers found by mDNS waiting for identify, at most.
const MAX_CANDIDATES: usize = 256;
/// Relays known at most (bootstraps first, then peers that offer the hop protocol).
const MAX_RELAYS: usize = 16;
/// A reservation attempt that produced nothing is given up after this.
const RESERVATION_TIMEOUT: Duration = Duration::from_secs(20);
/// After a lost or refused reservation, the next one waits this long.
const RESERVATION_RETRY: Duration = Duration::from_secs(5);
/// A node that asks its router for a port mapping (`nat.upnp`) gives the router this long
/// after start before being seen at a translated address alone makes it reserve a relay:
/// otherwise peers that met it meanwhile keep reaching it through the relay after the
/// mapping made it directly reachable.
pub const UPNP_GRACE: Duration = Duration::from_secs(10);
/// The circuit relay v2 hop protocol a relay server offers.
const RELAY_HOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

/// How a peer is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// A direct connection over the LAN (a private address).
    Lan,
    /// A direct connection over a public address (perhaps hole-punched).
    Direct,
    /// Only through a relay.
    Relay,
}

impl Path {
    /// The path of one connection.
    pub fn of(endpoint: &ConnectedPoint) -> Path {
        if endpoint.is_relayed() {
            return Path::Relay;
        }
        match first_ip(endpoint.get_remote_address()) {
            Some(ip) if is_private(ip) => Path::Lan,
            _ => Path::Direct,
        }
    }
}

/// Whether others can reach this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Not decided yet.
    Unknown,
    /// A public address was confirmed by AutoNAT v2 (or configured).
    Public,
    /// No public address after the allowed probes: reached through a relay.
    Private,
}

/// What the node must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial a peer found on the LAN at these addresses.
    Dial(PeerId, Vec<Multiaddr>),
    /// Hand a LAN peer that speaks Kelips to the Kelips behaviour.
    Introduce(PeerId, Vec<Multiaddr>),
    /// Listen on this `/p2p-circuit` address (reserve a slot on its relay).
    Reserve(Multiaddr),
    /// Close this (relayed) connection: a direct one replaced it.
    Close(ConnectionId),
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ReachCounters {
    /// AutoNAT v2 probes that confirmed an address (public or private).
    pub probes_ok: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// Hole punches that made a direct connection.
    pub punch_ok: u64,
    /// Hole punches that failed.
    pub punch_failed: u64,
    /// Relayed connections closed after a direct one replaced them.
    pub relayed_closed: u64,
    /// Peers found by mDNS that were not quickstore nodes.
    pub mdns_ignored: u64,
    /// Milliseconds from the last relayed connection to its direct replacement.
    pub last_punch_ms: u64,
}

/// The reachability state of one node.
pub struct Reach {
    me: PeerId,
    config: NatConfig,
    started: Instant,
    candidates: BTreeMap<PeerId, Vec<Multiaddr>>,
    connections: BTreeMap<PeerId, BTreeMap<ConnectionId, Path>>,
    relayed_since: BTreeMap<PeerId, Instant>,
    reachability: Reachability,
    public: BTreeSet<Multiaddr>,
    /// The public IP a peer outside saw this node at, when none of its own addresses has it:
    /// its connections go through a NAT.
    translated: Option<std::net::IpAddr>,
    failed_probes: u32,
    relays: Vec<(PeerId, Multiaddr)>,
    /// Relays identify showed to serve the hop protocol: only these are asked.
    serving: BTreeSet<PeerId>,
    next_relay: usize,
    retry_at: Option<Instant>,
    reservation: Option<(Multiaddr, Instant)>,
    reserved: bool,
    counters: ReachCounters,
}

impl Reach {
    /// A node `me` with its bootstraps as the first relays to try.
    pub fn new(me: PeerId, config: NatConfig, bootstraps: &[(PeerId, Multiaddr)]) -> Self {
        Self {
            me,
            config,
            started: Instant::now(),
            candidates: BTreeMap::new(),
            connections: BTreeMap::new(),
            relayed_since: BTreeMap::new(),
            reachability: Reachability::Unknown,
            public: BTreeSet::new(),
            translated: None,
            failed_probes: 0,
            relays: bootstraps.iter().take(MAX_RELAYS).cloned().collect(),
            serving: BTreeSet::new(),
            next_relay: 0,
            retry_at: None,
            reservation: None,
            reserved: false,
            counters: ReachCounters::default(),
        }
    }

    /// Whether others can reach this node.
    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Counters.
    pub fn counters(&self) -> ReachCounters {
        self.counters
    }

    /// The relay address reserved (or being reserved), if any.
    pub fn relay(&self) -> Option<&Multiaddr> {
        self.reservation.as_ref().map(|(a, _)| a)
    }

    /// Whether the relay accepted the reservation.
    pub fn reserved(&self) -> bool {
        self.reserved
    }

    /// How `peer` is reached now: the best of its connections.
    pub fn path(&self, peer: &PeerId) -> Option<Path> {
        self.connections.get(peer)?.values().min().copied()
    }

    /// Every connected peer's path.
    pub fn paths(&self) -> impl Iterator<Item = (PeerId, Path)> + '_ {
        self.connections
            .iter()
            .filter_map(|(peer, conns)| Some((*peer, *conns.values().min()?)))
    }

    /// mDNS found `peer` at `address`: dial it, and wait for identify to tell what it speaks.
    pub fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) -> Vec<Action> {
        if !self.config.mdns {
            return Vec::new();
        }
        let mut fresh: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
        for (peer, address) in found {
            if peer == self.me {
                continue;
            }
            if !self.candidates.contains_key(&peer) && self.candidates.len() >= MAX_CANDIDATES {
                continue;
            }
            let known = self.candidates.entry(peer).or_default();
            if !known.contains(&address) && known.len() < 8 {
                known.push(address.clone());
                fresh.entry(peer).or_default().push(address);
            }
        }
        fresh
            .into_iter()
            .map(|(peer, addresses)| Action::Dial(peer, addresses))
            .collect()
    }

    /// Identify told what `peer` speaks. A LAN candidate that speaks Kelips is introduced
    /// (its network is checked by the Kelips hello itself); others are dropped. A peer that
    /// offers the relay hop protocol becomes a relay candidate.
    pub fn on_identify(
        &mut self,
        peer: PeerId,
        protocols: &[StreamProtocol],
        listen: &[Multiaddr],
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(addresses) = self.candidates.remove(&peer) {
            if protocols.contains(&KELIPS_PROTOCOL) {
                actions.push(Action::Introduce(peer, addresses));
            } else {
                self.counters.mdns_ignored += 1;
                tracing::debug!("{peer} on the LAN does not speak Kelips: ignored");
            }
        }
        if protocols.contains(&RELAY_HOP) {
            if self.serving.len() < MAX_RELAYS * 4 {
                self.serving.insert(peer);
            }
            if self.relays.len() < MAX_RELAYS
                && !self.relays.iter().any(|(p, _)| *p == peer)
                && let Some(address) = listen.iter().find(|a| Scope::of(a) == Scope::Public)
            {
                self.relays.push((peer, address.clone()));
            }
            actions.extend(self.decide());
        }
        actions
    }

    /// A connection was established.
    ///
    /// A peer with a direct connection keeps no relayed one: streams pick any connection to
    /// their peer, and a relayed one would cap them at the circuit's limits. So a relayed
    /// connection next to a direct one is closed, whichever came first.
    pub fn on_connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> Vec<Action> {
        let path = Path::of(endpoint);
        if path == Path::Relay {
            self.relayed_since.entry(peer).or_insert_with(Instant::now);
        }
        let conns = self.connections.entry(peer).or_default();
        conns.insert(id, path);
        if !conns.values().any(|p| *p != Path::Relay) {
            return Vec::new();
        }
        let relayed: Vec<ConnectionId> = conns
            .iter()
            .filter(|(_, p)| **p == Path::Relay)
            .map(|(id, _)| *id)
            .collect();
        self.counters.relayed_closed += relayed.len() as u64;
        relayed.into_iter().map(Action::Close).collect()
    }

    /// A connection was closed.
    pub fn on_closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.remove(&id);
            if conns.is_empty() {
                self.connections.remove(&peer);
                self.relayed_since.remove(&peer);
            }
        }
    }

    /// DCUtR's verdict for `peer`, counted. (The direct connection's arrival closed the
    /// relayed ones already, in [`Reach::on_connected`].)
    pub fn on_hole_punch(&mut self, peer: PeerId, ok: bool) {
        if !ok {
            self.counters.punch_failed += 1;
            return;
        }
        self.counters.punch_ok += 1;
        if let Some(since) = self.relayed_since.remove(&peer) {
            self.counters.last_punch_ms = since.elapsed().as_millis() as u64;
            tracing::info!(
                "direct connection to {peer} {} ms after the relayed one",
                self.counters.last_punch_ms
            );
        }
    }

    /// A peer told (identify) the address it sees this node's connection come from; `own`
    /// are this node's listen addresses. A public address none of them has means the node is
    /// behind a NAT: it counts as unreachable at once and reserves a relay slot, rather than
    /// after `autonat_max_failed_probes` probes (15 s and more by default), during which
    /// nobody outside its LAN could dial it. A public address AutoNAT confirms later (a port
    /// forward, UPnP) still makes it reachable, and the reservation is then let go.
    pub fn on_observed(&mut self, observed: &Multiaddr, own: &[Multiaddr]) -> Vec<Action> {
        if self.translated.is_some() || Scope::of(observed) != Scope::Public {
            return Vec::new();
        }
        let Some(ip) = first_ip(observed) else {
            return Vec::new();
        };
        let own_ip = own
            .iter()
            .filter(|a| Scope::of(a) != Scope::Relayed)
            .any(|a| first_ip(a) == Some(ip));
        if own_ip {
            return Vec::new();
        }
        self.translated = Some(ip);
        if self.reachability == Reachability::Unknown {
            tracing::info!(
                "seen from {ip}, an address this node does not have: behind a NAT, so \
                 unreachable (using a relay) until a public address is confirmed"
            );
        }
        self.decide()
    }

    /// AutoNAT v2 tested `address`.
    pub fn on_probe(&mut self, address: &Multiaddr, ok: bool) -> Vec<Action> {
        if ok {
            self.counters.probes_ok += 1;
            // LAN peers confirm private addresses: those do not make a node reachable.
            if Scope::of(address) == Scope::Public {
                self.on_public(address.clone());
            }
            return Vec::new();
        }
        self.counters.probes_failed += 1;
        self.failed_probes += 1;
        self.decide()
    }

    /// A public address was confirmed (AutoNAT v2 or configuration).
    pub fn on_public(&mut self, address: Multiaddr) {
        if Scope::of(&address) != Scope::Public {
            return;
        }
        if self.reachability != Reachability::Public {
            tracing::info!("reachable at {address}");
        }
        self.public.insert(address);
        self.reachability = Reachability::Public;
        // A reachable node needs no relay: the slot (taken while it looked unreachable) goes.
        if let Some((relay, _)) = self.reservation.take() {
            tracing::info!("relay reservation on {relay} released: reachable directly");
            self.reserved = false;
        }
    }

    /// A public address expired.
    pub fn on_public_expired(&mut self, address: &Multiaddr) {
        self.public.remove(address);
        if self.public.is_empty() && self.reachability == Reachability::Public {
            self.reachability = Reachability::Unknown;
            self.failed_probes = 0;
        }
    }

    /// The relay accepted (or renewed) the reservation.
    pub fn on_reserved(&mut self, relay: PeerId) {
        if !self.reserved {
            tracing::info!("reservation accepted by relay {relay}");
        }
        self.reserved = true;
    }

    /// The relayed listener ended (the relay went away or refused).
    pub fn on_relay_lost(&mut self) {
        if self.reservation.is_some() {
            tracing::info!("relay reservation lost; another relay will be tried");
        }
        self.reservation = None;
        self.reserved = false;
        self.retry_at = Some(Instant::now() + RESERVATION_RETRY);
    }

    /// Once a second: decide on reachability without probes (nobody to probe with for long
    /// enough counts as unreachable), retry relays.
    pub fn tick(&mut self) -> Vec<Action> {
        if let Some((_, since)) = &self.reservation
            && !self.reserved
            && since.elapsed() > RESERVATION_TIMEOUT
        {
            self.on_relay_lost();
        }
        self.decide()
    }

    fn decide(&mut self) -> Vec<Action> {
        if self.reachability == Reachability::Public {
            return Vec::new();
        }
        let patience = Duration::from_millis(
            self.config.autonat_probe_interval_ms
                * u64::from(self.config.autonat_max_failed_probes)
                * 3,
        );
        let waiting_for_upnp = self.config.upnp && self.started.elapsed() < UPNP_GRACE;
        if self.failed_probes >= self.config.autonat_max_failed_probes
            || self.started.elapsed() > patience
            || (self.translated.is_some() && !waiting_for_upnp)
        {
            if self.reachability != Reachability::Private && self.translated.is_none() {
                tracing::info!(
                    "{}",
                    unreachable_line(
                        self.failed_probes,
                        self.config.autonat_max_failed_probes,
                        patience
                    )
                );
            }
            self.reachability = Reachability::Private;
        }
        if self.reachability != Reachability::Private
            || self.reservation.is_some()
            || self.retry_at.is_some_and(|at| at > Instant::now())
        {
            return Vec::new();
        }
        // Bootstraps first (they come first in the list), each only once identify showed it
        // serves as a relay; round-robin after a lost reservation.
        let serving: Vec<&(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(p, _)| self.serving.contains(p))
            .collect();
        let Some((relay, address)) = serving.get(self.next_relay % serving.len().max(1)).copied()
        else {
            return Vec::new();
        };
        self.next_relay += 1;
        let circuit = address
            .clone()
            .with(Protocol::P2p(*relay))
            .with(Protocol::P2pCircuit);
        self.reservation = Some((circuit.clone(), Instant::now()));
        vec![Action::Reserve(circuit)]
    }
}

/// The log line of the verdict "unreachable": after `failed` failed probes (of `max` allowed),
/// or, when fewer failed, after `waited` without any probe confirming an address (nobody
/// answered the probes).
fn unreachable_line(failed: u32, max: u32, waited: Duration) -> String {
    if failed >= max {
        format!(
            "no public address confirmed after {failed} failed probes: unreachable, using a relay"
        )
    } else {
        format!(
            "no public address confirmed within {} s ({failed} of {max} probes failed, none \
             succeeded): unreachable, using a relay",
            waited.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unreachable_line_counts_what_happened() {
        assert_eq!(
            unreachable_line(3, 3, Duration::from_secs(45)),
            "no public address confirmed after 3 failed probes: unreachable, using a relay"
        );
        let line = unreachable_line(0, 3, Duration::from_secs(45));
        assert!(
            line.contains("within 45 s") && line.contains("0 of 3 probes failed"),
            "{line}"
        );
        assert!(!line.contains("after 0 failed probes"), "{line}");
    }

    fn nat() -> NatConfig {
        NatConfig {
            autonat_max_failed_probes: 2,
            ..NatConfig::default()
        }
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("a multiaddr")
    }

    #[test]
    fn only_kelips_peers_found_on_the_lan_are_introduced() {
        let me = PeerId::random();
        let mut reach = Reach::new(me, nat(), &[]);
        let (quickstore, ipfs) = (PeerId::random(), PeerId::random());
        let a = addr("/ip4/10.0.0.2/tcp/1");
        let b = addr("/ip4/10.0.0.3/tcp/1");
        let dials = reach.on_mdns(vec![(quickstore, a.clone()), (ipfs, b), (me, a.clone())]);
        assert_eq!(dials.len(), 2, "{dials:?}");
        let speaks = [KELIPS_PROTOCOL, StreamProtocol::new("/ipfs/id/1.0.0")];
        assert_eq!(
            reach.on_identify(quickstore, &speaks, &[]),
            vec![Action::Introduce(quickstore, vec![a])]
        );
        let kad = [StreamProtocol::new("/ipfs/kad/1.0.0")];
        assert!(reach.on_identify(ipfs, &kad, &[]).is_empty());
        assert_eq!(reach.counters().mdns_ignored, 1);
    }

    #[test]
    fn failed_probes_make_a_node_reserve_on_its_bootstrap_but_private_confirmations_do_not_count() {
        let relay = PeerId::random();
        let at = addr("/ip4/198.51.100.1/tcp/4001");
        let mut reach = Reach::new(PeerId::random(), nat(), &[(relay, at.clone())]);
        let hop = [RELAY_HOP, KELIPS_PROTOCOL];
        assert!(
            reach
                .on_identify(relay, &hop, std::slice::from_ref(&at))
                .is_empty()
        );
        assert!(
            reach
                .on_probe(&addr("/ip4/192.168.1.2/tcp/5"), true)
                .is_empty()
        );
        assert_eq!(reach.reachability(), Reachability::Unknown);
        assert!(
            reach
                .on_probe(&addr("/ip4/198.51.100.11/tcp/5"), false)
                .is_empty()
        );
        let actions = reach.on_probe(&addr("/ip4/198.51.100.11/tcp/5"), false);
        assert_eq!(reach.reachability(), Reachability::Private);
        let circuit = at.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        assert_eq!(actions, vec![Action::Reserve(circuit)]);
        assert!(reach.tick().is_empty(), "one reservation at a time");
        reach.on_relay_lost();
        assert!(
            reach.tick().is_empty(),
            "a lost reservation is retried after a pause"
        );
    }

    #[test]
    fn a_direct_connection_closes_the_relayed_ones_to_the_same_peer() {
        use libp2p::core::Endpoint;
        use libp2p::core::transport::PortUse;
        let dialer = |a: &str| ConnectedPoint::Dialer {
            address: addr(a),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let (peer, relay) = (PeerId::random(), PeerId::random());
        let circuit = format!("/ip4/198.51.100.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{peer}");
        let mut reach = Reach::new(PeerId::random(), nat(), &[]);
        let (first, second, third) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert!(
            reach
                .on_connected(peer, first, &dialer(&circuit))
                .is_empty()
        );
        assert_eq!(reach.path(&peer), Some(Path::Relay));
        let closes = reach.on_connected(peer, second, &dialer("/ip4/192.168.1.3/tcp/9"));
        assert_eq!(closes, vec![Action::Close(first)]);
        assert_eq!(reach.path(&peer), Some(Path::Lan));
        reach.on_closed(peer, first);
        // A relayed connection arriving next to a direct one goes at once.
        let closes = reach.on_connected(peer, third, &dialer(&circuit));
        assert_eq!(closes, vec![Action::Close(third)]);
    }

    #[test]
    fn bootstraps_that_do_not_serve_as_relays_are_not_asked() {
        let bootstrap = PeerId::random();
        let at = addr("/ip4/127.0.0.1/tcp/4001");
        let mut reach = Reach::new(PeerId::random(), nat(), &[(bootstrap, at)]);
        reach.on_probe(&addr("/ip4/127.0.0.1/tcp/5"), false);
        reach.on_probe(&addr("/ip4/127.0.0.1/tcp/5"), false);
        assert_eq!(reach.reachability(), Reachability::Private);
        assert!(
            reach
                .on_identify(bootstrap, &[KELIPS_PROTOCOL], &[])
                .is_empty()
        );
        assert!(reach.tick().is_empty(), "no relay to ask");
    }

    #[test]
    fn a_node_seen_at_an_address_it_does_not_have_reserves_at_once_and_lets_go_when_reachable() {
        let relay = PeerId::random();
        let at = addr("/ip4/198.51.100.1/tcp/4001");
        let mut reach = Reach::new(
            PeerId::random(),
            NatConfig::default(),
            &[(relay, at.clone())],
        );
        let own = [addr("/ip4/192.168.1.2/tcp/5"), addr("/ip4/127.0.0.1/tcp/5")];
        // A LAN neighbour's observation says nothing; one from the own public IP neither.
        assert!(
            reach
                .on_observed(&addr("/ip4/192.168.1.3/tcp/5"), &own)
                .is_empty()
        );
        let public_host = [addr("/ip4/198.51.100.11/tcp/5")];
        assert!(
            reach
                .on_observed(&addr("/ip4/198.51.100.11/tcp/5"), &public_host)
                .is_empty()
        );
        assert_eq!(reach.reachability(), Reachability::Unknown);
        // Seen from the NAT's address, before any probe failed.
        let hop = [RELAY_HOP, KELIPS_PROTOCOL];
        assert!(
            reach
                .on_observed(&addr("/ip4/198.51.100.11/tcp/40000"), &own)
                .is_empty()
        );
        assert_eq!(reach.reachability(), Reachability::Private);
        let circuit = at
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        assert_eq!(
            reach.on_identify(relay, &hop, std::slice::from_ref(&at)),
            vec![Action::Reserve(circuit)]
        );
        reach.on_reserved(relay);
        // A port forward AutoNAT confirms: reachable, and the relay slot goes.
        reach.on_public(addr("/ip4/198.51.100.11/tcp/5"));
        assert_eq!(reach.reachability(), Reachability::Public);
        assert!(reach.relay().is_none() && !reach.reserved());
        assert!(reach.tick().is_empty());
    }

    #[test]
    fn a_node_asking_its_router_for_a_mapping_does_not_reserve_at_once() {
        let relay = PeerId::random();
        let at = addr("/ip4/198.51.100.1/tcp/4001");
        let config = NatConfig {
            upnp: true,
            ..NatConfig::default()
        };
        let mut reach = Reach::new(PeerId::random(), config, &[(relay, at.clone())]);
        let own = [addr("/ip4/192.168.1.2/tcp/5")];
        reach.on_observed(&addr("/ip4/198.51.100.11/tcp/40000"), &own);
        assert_eq!(reach.reachability(), Reachability::Unknown);
        let hop = [RELAY_HOP, KELIPS_PROTOCOL];
        assert!(reach.on_identify(relay, &hop, &[at]).is_empty());
        assert!(reach.tick().is_empty(), "reserved within the UPnP grace");
        // The mapping arrives: reachable, no relay ever.
        reach.on_public(addr("/ip4/198.51.100.11/tcp/5"));
        assert_eq!(reach.reachability(), Reachability::Public);
        assert!(reach.relay().is_none());
    }

    #[test]
    fn a_confirmed_public_address_means_no_relay() {
        let mut reach = Reach::new(
            PeerId::random(),
            nat(),
            &[(PeerId::random(), addr("/ip4/198.51.100.1/tcp/1"))],
        );
        reach.on_probe(&addr("/ip4/198.51.100.11/tcp/5"), true);
        assert_eq!(reach.reachability(), Reachability::Public);
        reach.on_probe(&addr("/ip4/198.51.100.11/tcp/6"), false);
        reach.on_probe(&addr("/ip4/198.51.100.11/tcp/6"), false);
        assert!(reach.tick().is_empty());
    }
}
