//! [`Behaviour`]: the libp2p `NetworkBehaviour` that drives one [`Kelips`] core over
//! `/quickstore/kelips/2.0.0`.
//!
//! Every core message is one request; the answer is `ack` or `refused: reason`. Timers come
//! from this behaviour's `poll` (a [`Delay`] to the core's next deadline); RTT samples are fed
//! by the node from libp2p ping ([`Behaviour::handle_rtt`]). Addresses for every dial come
//! from the verified signed record the core holds for the peer, or from the bootstrap list
//! (`handle_pending_outbound_connection`), never from request-response's own small cache.
//! Requests in flight are bounded; peers that could not be reached are backed off.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

use super::peer::Peer;
use super::protocol::{Inbound, KelipsCodec, PROTOCOL, WireCounters};
use super::record::{Scope, first_ip, is_private, sign_scoped, verified_record};
use super::site::{SiteGuess, Witness};
use crate::Millis;
use crate::codec::{RefusalCode, Refused, Reply};
use crate::config::{Config, ConfigError};
use crate::node::{Event, Kelips, Output};

/// Requests in flight at once; further core messages are dropped (gossip tolerates loss)
/// and counted.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Events queued for the swarm at most. The core's events wait in the core's own queue
/// beyond it (nothing is dropped: lookup results and incarnation changes matter); refusal
/// notices beyond it are dropped and counted (`NetStats::events_dropped`).
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Addresses advertised in the own signed record at most.
pub const MAX_OWN_ADDRESSES: usize = 8;
/// Relayed (`/p2p-circuit`) addresses among them at most.
pub const MAX_RELAYED_ADDRESSES: usize = 2;
/// Peers found outside Kelips (mDNS) whose addresses are kept at most.
pub const MAX_DISCOVERED: usize = 256;
/// A node joins at the latest this long after it started, with or without a listen address.
const JOIN_GRACE_MS: Millis = 2000;
/// Peers remembered as unreachable (backed off) at most.
const MAX_BACKOFF: usize = 4096;

/// What the behaviour reports to the node.
#[derive(Debug, Clone)]
pub enum BehaviourEvent {
    /// The core reported a change.
    Core(Event<Peer>),
    /// A peer's message was refused here (`inbound`) or ours there, with the reason.
    Refused {
        /// The other side.
        peer: PeerId,
        /// Whether the refused message came from `peer`.
        inbound: bool,
        /// Why.
        reason: String,
    },
    /// The own signed address record changed.
    AddressesChanged(Vec<Multiaddr>),
}

/// Counters for metrics and status.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetStats {
    /// Requests sent.
    pub requests_out: u64,
    /// Requests received.
    pub requests_in: u64,
    /// Messages dropped because too many requests were in flight, or the peer was backed off.
    pub dropped: u64,
    /// Requests that failed (dial, timeout, closed connection, unsupported protocol).
    pub failures: u64,
    /// Of those, dial failures.
    pub dial_failures: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Of those, connections closed or streams broken before the answer.
    pub broken: u64,
    /// Messages refused here.
    pub refused_in: u64,
    /// Our messages refused by the receiver.
    pub refused_out: u64,
    /// Refusal notices not queued for the swarm because its queue was full.
    pub events_dropped: u64,
}

/// Settings of the driver (the protocol's own are in [`Config`]).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's parameters.
    pub kelips: Config,
    /// Incarnation of this start (persisted and bumped by the node).
    pub incarnation: u64,
    /// Bootstrap peers with their addresses.
    pub bootstraps: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Addresses added to the own record (`--external-addr`).
    pub external_addresses: Vec<Multiaddr>,
    /// A peer that could not be reached is not tried again for this long.
    pub backoff: Duration,
    /// Most inbound and outbound streams per connection.
    pub max_concurrent_streams: usize,
}

/// The Kelips `NetworkBehaviour`.
pub struct Behaviour {
    inner: request_response::Behaviour<KelipsCodec>,
    counters: Arc<WireCounters>,
    core: Kelips<Peer>,
    keypair: Keypair,
    epoch: Instant,
    timer: Delay,
    timer_at: Millis,
    bootstraps: BTreeMap<PeerId, Vec<Multiaddr>>,
    listen: BTreeSet<Multiaddr>,
    /// Configured (`--external-addr`) addresses: always advertised.
    configured: Vec<Multiaddr>,
    /// Addresses confirmed reachable (AutoNAT v2, relay reservations).
    external: Vec<Multiaddr>,
    /// The public IP others see this node from (the site of its LAN addresses), by the
    /// distinct peers outside the LAN that named it.
    site: SiteGuess,
    /// The site in the record signed last.
    signed_site: Option<std::net::IpAddr>,
    /// Peers found outside Kelips (mDNS) with their addresses.
    discovered: BTreeMap<PeerId, Vec<Multiaddr>>,
    advertised: Vec<Multiaddr>,
    backoff_for: Duration,
    backoff: BTreeMap<PeerId, Instant>,
    in_flight: usize,
    events: VecDeque<BehaviourEvent>,
    stats: NetStats,
    joined: bool,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A behaviour for `keypair`'s node; it joins through the bootstraps on the first poll
    /// (founding a network when there are none).
    pub fn new(keypair: Keypair, config: DriverConfig) -> Result<Self, ConfigError> {
        let me = Peer(keypair.public().to_peer_id());
        let seed = secret_seed();
        let timeout = Duration::from_millis(config.kelips.request_timeout_ms);
        let core = Kelips::new(
            me,
            config.incarnation,
            Default::default(),
            config.kelips,
            seed,
            0,
        )?;
        let rr_config = request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams);
        let codec = KelipsCodec::default();
        let counters = codec.counters.clone();
        let inner = request_response::Behaviour::with_codec(
            codec,
            [(PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        );
        Ok(Self {
            inner,
            counters,
            core,
            keypair,
            epoch: Instant::now(),
            timer: Delay::new(Duration::ZERO),
            timer_at: 0,
            bootstraps: config.bootstraps.into_iter().collect(),
            listen: BTreeSet::new(),
            configured: config.external_addresses,
            external: Vec::new(),
            site: SiteGuess::default(),
            signed_site: None,
            discovered: BTreeMap::new(),
            advertised: Vec::new(),
            backoff_for: config.backoff,
            backoff: BTreeMap::new(),
            in_flight: 0,
            events: VecDeque::new(),
            stats: NetStats::default(),
            joined: false,
            waker: None,
        })
    }

    /// The core, for status views.
    pub fn core(&self) -> &Kelips<Peer> {
        &self.core
    }

    /// Publishes (or merges) a file tuple of this node's group, e.g. one it held before a
    /// restart.
    pub fn publish(
        &mut self,
        tuple: crate::tuple::FileTuple<Peer>,
    ) -> Result<(), crate::tuple::TupleError> {
        self.core.publish(tuple)?;
        self.wake();
        Ok(())
    }

    /// Starts resolving `name`; the result comes as [`Event::Lookup`] with the returned id.
    pub fn lookup(&mut self, name: &str) -> Result<u64, crate::node::LookupError> {
        let now = self.now();
        let query = self.core.lookup(now, name)?;
        self.wake();
        Ok(query)
    }

    /// The free storage space this node reports, in bytes (gossiped for placement).
    pub fn set_free_space(&mut self, bytes: u64) {
        if self.core.own_entry().free_space != bytes {
            self.core.set_free_space(bytes);
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    /// Driver counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Kelips frame bytes (in, out) since start.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (
            self.counters.bytes_in.load(Ordering::Relaxed),
            self.counters.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Milliseconds since this behaviour started: the core's clock.
    pub fn now_ms(&self) -> Millis {
        self.now()
    }

    /// The addresses in the own signed record.
    pub fn advertised(&self) -> &[Multiaddr] {
        &self.advertised
    }

    /// The addresses this node may dial `peer` on: from its verified signed record (LAN ones
    /// only from the same site; LAN, public, relayed in that order), else those it was found
    /// at on the LAN or the bootstrap list.
    pub fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addresses = self
            .core
            .entry_of(&Peer(*peer))
            .and_then(|entry| verified_record(*peer, &entry.address))
            .map(|record| record.dialable(self.site.site()))
            .unwrap_or_default();
        let extra = self.discovered.get(peer).into_iter().flatten();
        for address in extra.chain(self.bootstraps.get(peer).into_iter().flatten()) {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    /// The public IP this node is seen from, once a peer outside its LAN told it.
    pub fn site(&self) -> Option<std::net::IpAddr> {
        self.site.site()
    }

    /// `peer` told this node the address it sees it at (identify's observed address): a
    /// public IP there is a vote for this node's site, one per peer ([`SiteGuess`]).
    pub fn observed_by(&mut self, peer: PeerId, address: &Multiaddr) {
        if self.learn_site(address, Witness::Peer(peer)) {
            self.refresh_record();
        }
    }

    /// A peer found outside Kelips (mDNS) that speaks `/quickstore/kelips/2.0.0`: it is
    /// dialed at `addresses` and greeted; a peer of another network refuses the greeting and
    /// is never taken in.
    pub fn introduce(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if self.discovered.len() >= MAX_DISCOVERED && !self.discovered.contains_key(&peer) {
            return;
        }
        let known = self.discovered.entry(peer).or_default();
        for address in addresses {
            if !known.contains(&address) && known.len() < MAX_OWN_ADDRESSES {
                known.push(address);
            }
        }
        self.backoff.remove(&peer);
        if self.joined {
            let now = self.now();
            self.core.introduce(now, Peer(peer));
        }
        self.wake();
    }

    /// An RTT sample for `peer` (from ping).
    pub fn handle_rtt(&mut self, peer: PeerId, rtt: Duration) {
        let micros = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        self.core.handle_rtt(&Peer(peer), micros);
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Queues an event for the swarm. The core's events come only while there is room
    /// ([`Self::drain_core`] leaves the rest with the core); a refusal notice beyond the bound
    /// is dropped and counted; a change of addresses replaces one still queued.
    fn push_event(&mut self, event: BehaviourEvent) {
        match &event {
            BehaviourEvent::Refused { .. } if self.events.len() >= MAX_QUEUED_EVENTS => {
                self.stats.events_dropped += 1;
                return;
            }
            BehaviourEvent::AddressesChanged(_) => self
                .events
                .retain(|e| !matches!(e, BehaviourEvent::AddressesChanged(_))),
            _ => {}
        }
        self.events.push_back(event);
    }

    fn backed_off(&mut self, peer: &PeerId) -> bool {
        match self.backoff.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.backoff.remove(peer);
                false
            }
            None => false,
        }
    }

    fn unreachable(&mut self, peer: PeerId) {
        if self.backoff.len() >= MAX_BACKOFF {
            let now = Instant::now();
            self.backoff.retain(|_, until| *until > now);
        }
        if self.backoff.len() < MAX_BACKOFF {
            self.backoff.insert(peer, Instant::now() + self.backoff_for);
        }
        let now = self.now();
        self.core.handle_unreachable(now, &Peer(peer));
    }

    /// Moves the core's outputs out: messages become requests, events go to the swarm.
    /// Carries out the core's outputs while the swarm's event queue has room: past the bound
    /// the rest stay queued in the core (back-pressure, not loss) until the swarm has taken
    /// the queued events.
    fn drain_core(&mut self) {
        while self.events.len() < MAX_QUEUED_EVENTS
            && let Some(output) = self.core.poll_output()
        {
            match output {
                Output::Send { to, envelope } => {
                    let peer = to.0;
                    // The core already heard this peer is unreachable when it failed; telling
                    // it again here would make it retry at once, in a busy loop. The message
                    // is lost; the core's own timeouts pace its retries.
                    if self.backed_off(&peer) {
                        self.stats.dropped += 1;
                        continue;
                    }
                    if self.in_flight >= MAX_IN_FLIGHT {
                        self.stats.dropped += 1;
                        continue;
                    }
                    self.in_flight += 1;
                    self.stats.requests_out += 1;
                    self.inner
                        .send_request(&peer, Inbound::Valid(Box::new(envelope)));
                }
                Output::Event(event) => self.push_event(BehaviourEvent::Core(event)),
            }
        }
    }

    fn on_rr_event(&mut self, event: request_response::Event<Inbound, Reply>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                self.stats.requests_in += 1;
                self.backoff.remove(&peer);
                let reply = match request {
                    Inbound::Valid(envelope) => {
                        let now = self.now();
                        match self.core.handle_message(now, Peer(peer), *envelope) {
                            Ok(()) => Reply::Ack,
                            Err(refusal) => Reply::refused(refusal.code(), refusal.to_string()),
                        }
                    }
                    Inbound::Invalid(code, reason) => Reply::refused(code, reason),
                };
                if let Reply::Refused(Refused { reason, .. }) = &reply {
                    self.stats.refused_in += 1;
                    self.push_event(BehaviourEvent::Refused {
                        peer,
                        inbound: true,
                        reason: reason.clone(),
                    });
                }
                // The requester may have given up already; nothing to do then.
                let _ = self.inner.send_response(channel, reply);
            }
            E::Message {
                peer,
                message: M::Response { response, .. },
                ..
            } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.backoff.remove(&peer);
                if let Reply::Refused(Refused { code, reason }) = response {
                    self.stats.refused_out += 1;
                    // A peer found on the LAN that runs another network is left alone.
                    if code == RefusalCode::WrongNetwork && self.discovered.remove(&peer).is_some()
                    {
                        tracing::info!("{peer} on the LAN belongs to another network: ignored");
                        self.core.forget_bootstrap(&Peer(peer));
                    }
                    self.push_event(BehaviourEvent::Refused {
                        peer,
                        inbound: false,
                        reason,
                    });
                }
            }
            E::OutboundFailure { peer, error, .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.stats.failures += 1;
                tracing::debug!("request to {peer} failed: {error}");
                match error {
                    OutboundFailure::DialFailure => {
                        self.stats.dial_failures += 1;
                        self.unreachable(peer);
                    }
                    OutboundFailure::Timeout => {
                        self.stats.timeouts += 1;
                        self.unreachable(peer);
                    }
                    OutboundFailure::UnsupportedProtocols => self.unreachable(peer),
                    // A closed connection or a broken stream: the message is lost, the peer
                    // may well be alive; gossip repeats itself.
                    OutboundFailure::ConnectionClosed | OutboundFailure::Io(_) => {
                        self.stats.broken += 1;
                    }
                }
            }
            E::InboundFailure { .. } | E::ResponseSent { .. } => {}
        }
    }

    /// Re-signs the own record when the advertised addresses or the site change.
    fn refresh_record(&mut self) {
        let mut external = self.configured.clone();
        for address in &self.external {
            if !external.contains(address) {
                external.push(address.clone());
            }
        }
        let advertised = own_addresses(&self.listen, &external);
        if advertised == self.advertised && self.site.site() == self.signed_site {
            return;
        }
        match sign_scoped(&self.keypair, &advertised, self.site.site()) {
            Ok(record) => {
                self.core.set_address(record);
                self.signed_site = self.site.site();
                self.advertised = advertised.clone();
                self.push_event(BehaviourEvent::AddressesChanged(advertised));
                if let Some(waker) = &self.waker {
                    waker.wake_by_ref();
                }
            }
            Err(e) => tracing::warn!("cannot sign own address record: {e}"),
        }
    }
}

/// The seed of the core's hash maps and gossip choices: the OS's randomness, so no peer can
/// compute it (a seed from public facts such as the PeerId would let anyone grind keys that
/// collide in the core's maps, or predict whom it gossips to). Should the OS fail to give
/// any, a warning says so and the clock's nanoseconds stand in.
fn secret_seed() -> u64 {
    use rand::TryRngCore;
    rand::rngs::OsRng.try_next_u64().unwrap_or_else(|e| {
        tracing::warn!("no randomness from the OS ({e}): seeding from the clock");
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

impl Behaviour {
    /// `witness` saw this node at `address` from outside the LAN: its IP is a vote for the
    /// site. True when the site changed.
    fn learn_site(&mut self, address: &Multiaddr, witness: Witness) -> bool {
        let site = match first_ip(address) {
            Some(ip) if !is_private(ip) && Scope::of(address) != Scope::Relayed => ip,
            _ => return false,
        };
        if !self.site.observe(site, witness) {
            return false;
        }
        tracing::info!("seen from {site}: the site of this node's LAN addresses");
        true
    }
}

/// The addresses a node advertises, at most [`MAX_OWN_ADDRESSES`]: external ones first
/// (configured or confirmed), then relayed ones (at most [`MAX_RELAYED_ADDRESSES`]), then its
/// own listen addresses without link-local and unspecified ones, loopback only when it listens
/// on nothing else. Scopes follow from each address's form ([`Scope::of`]).
pub fn own_addresses(listen: &BTreeSet<Multiaddr>, external: &[Multiaddr]) -> Vec<Multiaddr> {
    let relayed: Vec<&Multiaddr> = listen
        .iter()
        .chain(external)
        .filter(|a| Scope::of(a) == Scope::Relayed)
        .take(MAX_RELAYED_ADDRESSES)
        .collect();
    let usable: Vec<&Multiaddr> = listen
        .iter()
        .filter(|a| !is_link_local(a) && Scope::of(a) != Scope::Relayed)
        .collect();
    let routable: Vec<&Multiaddr> = usable.iter().copied().filter(|a| !is_loopback(a)).collect();
    let chosen = if routable.is_empty() {
        usable
    } else {
        routable
    };
    let mut out: Vec<Multiaddr> = external
        .iter()
        .filter(|a| Scope::of(a) != Scope::Relayed)
        .cloned()
        .collect();
    for address in relayed.into_iter().chain(chosen) {
        if !out.contains(address) {
            out.push(address.clone());
        }
    }
    out.truncate(MAX_OWN_ADDRESSES);
    out
}

fn is_loopback(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn is_link_local(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_link_local() || ip.is_unspecified(),
        Protocol::Ip6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.is_unspecified(),
        _ => false,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler =
        <request_response::Behaviour<KelipsCodec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = BehaviourEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut out = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(peer) = maybe_peer {
            for address in self.addresses_of(&peer) {
                if !out.contains(&address) && !addresses.contains(&address) {
                    out.push(address);
                }
            }
        }
        Ok(out)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::NewListenAddr(e) => {
                self.listen.insert(e.addr.clone());
                self.refresh_record();
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen.remove(e.addr);
                self.refresh_record();
            }
            FromSwarm::ExternalAddrConfirmed(e) => {
                if !self.external.contains(e.addr) && self.external.len() < MAX_OWN_ADDRESSES {
                    self.external.push(e.addr.clone());
                }
                self.learn_site(e.addr, Witness::Confirmed);
                self.refresh_record();
            }
            FromSwarm::ExternalAddrExpired(e) => {
                self.external.retain(|a| a != e.addr);
                self.refresh_record();
            }
            // Candidates (identify's observed addresses) carry no peer: the node passes
            // them on with theirs ([`Behaviour::observed_by`]).
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        let now = self.now();
        // Join once the own record carries an address (others must be able to dial back),
        // or after a grace period for nodes that listen nowhere.
        if !self.joined && (!self.advertised.is_empty() || now >= JOIN_GRACE_MS) {
            self.joined = true;
            let bootstraps: Vec<Peer> = self
                .bootstraps
                .keys()
                .chain(self.discovered.keys())
                .map(|p| Peer(*p))
                .collect();
            self.core.join(now, bootstraps);
        }
        if now >= self.core.next_deadline() {
            self.core.handle_tick(now);
        }
        loop {
            self.drain_core();
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_rr_event(event),
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable_event()));
                }
                Poll::Pending => break,
            }
        }
        let deadline = self.core.next_deadline();
        if deadline != self.timer_at || self.timer.poll_unpin(cx).is_ready() {
            self.timer_at = deadline;
            let wait = deadline.saturating_sub(self.now()).max(1);
            self.timer = Delay::new(Duration::from_millis(wait));
            if self.timer.poll_unpin(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

/// `map_out` needs a value for events that cannot occur (only `GenerateEvent` carries one).
fn unreachable_event() -> BehaviourEvent {
    BehaviourEvent::AddressesChanged(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_events_past_the_queue_bound_wait_in_the_core_and_none_is_lost() {
        let mut behaviour = Behaviour::new(
            Keypair::generate_ed25519(),
            DriverConfig {
                kelips: Config::default(),
                incarnation: 1,
                bootstraps: Vec::new(),
                external_addresses: Vec::new(),
                backoff: Duration::from_secs(1),
                max_concurrent_streams: 8,
            },
        )
        .expect("a behaviour");
        behaviour.drain_core();
        behaviour.events.clear();
        // More answered lookups than the swarm's queue holds, before the swarm polls.
        let asked = MAX_QUEUED_EVENTS + 500;
        for i in 0..asked {
            behaviour.lookup(&format!("name-{i}")).expect("a lookup");
        }
        let mut answered = 0;
        loop {
            behaviour.drain_core();
            assert!(behaviour.events.len() <= MAX_QUEUED_EVENTS);
            let Some(event) = behaviour.events.pop_front() else {
                break;
            };
            if matches!(event, BehaviourEvent::Core(Event::Lookup(_))) {
                answered += 1;
            }
        }
        assert_eq!(answered, asked);
        assert_eq!(behaviour.stats().events_dropped, 0);
    }

    #[test]
    fn the_core_seed_is_not_derived_from_public_facts() {
        // The same key and incarnation (all a peer knows of a node) give different seeds.
        let seeds: BTreeSet<u64> = (0..8).map(|_| secret_seed()).collect();
        assert_eq!(seeds.len(), 8);
    }
}
