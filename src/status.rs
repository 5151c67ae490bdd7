//! `/quickstore/status/1.0.0`: a node's view of itself, for `quickstore status`.
//!
//! One request per stream: the client sends a frame holding the JSON `{}`; the node answers with a
//! varint-length-prefixed JSON [`Status`] of at most [`MAX_STATUS_BYTES`].

use std::collections::BTreeMap;
use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;
use quickstore_behaviours::net::Behaviour as KelipsBehaviour;
use quickstore_behaviours::net::protocol::{read_frame, write_frame};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::reach::{Path, Reach, Reachability};

/// The status protocol id.
pub const STATUS_PROTOCOL: StreamProtocol = StreamProtocol::new("/quickstore/status/1.0.0");
/// Largest status answer, in bytes.
pub const MAX_STATUS_BYTES: usize = 8 << 20;
/// Largest status request, in bytes.
const MAX_STATUS_REQUEST_BYTES: usize = 1024;

/// Asks for the status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusRequest {}

/// One member of the group view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewMember {
    /// Its PeerId.
    pub peer_id: String,
    /// Incarnation (bumped at each of its starts).
    pub incarnation: u64,
    /// Heartbeat counter.
    pub heartbeat: u64,
    /// Milliseconds since its stamp last rose.
    pub age_ms: u64,
    /// Smoothed RTT in milliseconds, once sampled.
    pub rtt_ms: Option<f64>,
    /// Not heard for `t_fail`.
    pub failed: bool,
    /// How it is connected now (`lan`, `direct`, `relay`); none when not connected.
    #[serde(default)]
    pub path: Option<Path>,
}

/// What `quickstore status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The node's PeerId.
    pub peer_id: String,
    /// Network name.
    pub network: String,
    /// Network id (hex).
    pub network_id: String,
    /// Who may write names (`network.writes`): `signed` or `open` (older nodes, which did not
    /// say, were open).
    #[serde(default)]
    pub writes: quickstore_behaviours::auth::WritePolicy,
    /// Its group.
    pub group: u32,
    /// The number of groups now (k; in a network whose groups size themselves, 2^level of
    /// the current structure).
    pub groups: u32,
    /// The epoch of the current group structure when groups size themselves (none with a
    /// fixed k).
    #[serde(default)]
    pub structure_epoch: Option<u32>,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// Whether the join finished.
    pub joined: bool,
    /// Addresses in its signed record.
    pub addresses: Vec<String>,
    /// The group view.
    pub view: Vec<ViewMember>,
    /// Contacts per group.
    pub contacts: BTreeMap<u32, Vec<String>>,
    /// Counters: messages, refusals, failures, bytes.
    pub counters: BTreeMap<String, u64>,
    /// Whether others can reach this node: `public`, `private` (through a relay) or
    /// `unknown` (not decided yet).
    #[serde(default = "unknown")]
    pub reachability: Reachability,
    /// The public IP this node is seen from (the site of its LAN addresses), once known.
    #[serde(default)]
    pub site: Option<String>,
    /// The relay circuit address it reserved, and whether the relay accepted it.
    #[serde(default)]
    pub relay: Option<(String, bool)>,
    /// How each connected peer (members, contacts and others) is reached.
    #[serde(default)]
    pub paths: BTreeMap<String, Path>,
    /// Whether the node is ready, and how others reach it (see [`Ready`]).
    #[serde(default)]
    pub ready: Ready,
    /// The network as this node sees it (its fields sit at the top level of the JSON; none
    /// from nodes older than them).
    #[serde(flatten)]
    pub network_view: Option<NetworkView>,
    /// What the files core is doing (none from older nodes or in-process swarms).
    #[serde(default)]
    pub files: Option<FilesView>,
}

/// The network as one node sees it: its size, the groups it knows no node of, and the names
/// of its own group that have fewer than R live copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Nodes in the network. Where groups size themselves, the estimate the nodes gossip and
    /// blend (the one the structure follows); with a fixed k, the live members of the own
    /// group (itself included) times the groups that have a node (the own group and every
    /// group with a contact): exact when groups are even, and it counts only what this node
    /// knows of.
    pub network_size_estimate: u64,
    /// Groups of which this node knows no live node (no contact): names of these groups
    /// can be neither stored nor found through it.
    pub groups_without_node: Vec<u32>,
    /// R: the copies the network keeps of each file.
    pub replication: u32,
    /// Names of the own group (not deleted) whose live holders are fewer than R, fewest
    /// first, at most [`MAX_NAMES_BELOW`]; repair adds copies while the group has room.
    pub names_below_replication: Vec<NameCopies>,
    /// How many names are below R in all (the list above may be cut).
    pub names_below_replication_total: u64,
    /// Names of the own group (not deleted) this node knows of (0 from older nodes).
    #[serde(default)]
    pub names_in_group: u64,
}

/// What the node's files core is doing (`status --json` field `files`; absent from older
/// nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesView {
    /// Whether the node acts on its group view (local health): false right after a start,
    /// after a pause or while it hears nothing; it then changes no holder set and deletes
    /// nothing.
    pub settled: bool,
    /// Names the core tracks (held here, stored here, or kept in older versions).
    pub names_tracked: u64,
    /// Copies and fetches in flight (repair, hand-off, replacement copies of puts).
    pub transfers_in_flight: u64,
    /// Puts in progress with this node as first home.
    pub puts_in_progress: u64,
}

/// A name and its live copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCopies {
    /// The name.
    pub name: String,
    /// Its holders that this node believes alive (itself or live members of its view).
    pub copies: u32,
}

/// Names listed in [`NetworkView::names_below_replication`] at most.
pub const MAX_NAMES_BELOW: usize = 100;

impl NetworkView {
    /// What `kelips`'s core knows of the network.
    pub fn of(kelips: &KelipsBehaviour) -> Self {
        let core = kelips.core();
        let groups = core.groups();
        let own_group = core.group();
        let me = core.own_entry().id;
        let contacts = core.contacts();
        let with_contact: Vec<u32> = contacts
            .iter()
            .filter(|(g, cs)| *g != own_group && !cs.is_empty())
            .map(|(g, _)| g)
            .collect();
        let groups_without_node: Vec<u32> = (0..groups)
            .filter(|g| *g != own_group && !with_contact.contains(g))
            .collect();
        let members = core.view().live().count() as u64 + 1;
        let groups_with_node = with_contact.len() as u64 + 1;
        let replication = core.config().replication;
        let names_in_group = core.tuples().iter().filter(|t| !t.deleted).count() as u64;
        let mut below: Vec<NameCopies> = core
            .tuples()
            .iter()
            .filter(|t| !t.deleted)
            .map(|t| NameCopies {
                name: t.name.to_string(),
                copies: t
                    .holders
                    .iter()
                    .filter(|h| **h == me || core.view().is_live(h))
                    .count() as u32,
            })
            .filter(|n| (n.copies as usize) < replication)
            .collect();
        below.sort_by(|a, b| a.copies.cmp(&b.copies).then_with(|| a.name.cmp(&b.name)));
        let total = below.len() as u64;
        below.truncate(MAX_NAMES_BELOW);
        // Self-sizing groups gossip an estimate of N that the whole network blends; a fixed
        // k is estimated from what this node sees.
        let network_size_estimate = match core.structure() {
            Some((_, estimate)) => estimate,
            None => members.saturating_mul(groups_with_node),
        };
        NetworkView {
            network_size_estimate,
            groups_without_node,
            replication: replication as u32,
            names_below_replication: below,
            names_below_replication_total: total,
            names_in_group,
        }
    }
}

/// Whether a node is ready to serve, and how others reach it: `status` shows it (text and
/// `--json` field `ready`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// The join has not finished: no bootstrap or LAN peer has answered yet, so the node
    /// knows no group view and no contacts.
    #[default]
    Joining,
    /// Joined, and reachable directly: a public address was confirmed (AutoNAT v2) or
    /// configured (`--external-addr`).
    Direct,
    /// Joined, behind a NAT, and reachable through a relay that accepted its reservation.
    Relayed,
    /// Joined, but no public address is confirmed and no relay holds a reservation (yet):
    /// peers on its LAN (or host) reach it, others may not. A node of a LAN-only network
    /// stays here.
    Local,
}

impl Ready {
    /// The readiness of a node that has `joined` (or not), with `reachability`, and a relay
    /// reservation that was accepted (`relay_reserved`).
    pub fn of(joined: bool, reachability: Reachability, relay_reserved: bool) -> Ready {
        if !joined {
            return Ready::Joining;
        }
        match reachability {
            Reachability::Public => Ready::Direct,
            Reachability::Private if relay_reserved => Ready::Relayed,
            Reachability::Private | Reachability::Unknown => Ready::Local,
        }
    }

    /// Its name, as in `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Ready::Joining => "joining",
            Ready::Direct => "direct",
            Ready::Relayed => "relayed",
            Ready::Local => "local",
        }
    }

    /// What it means, for `status`'s text.
    pub fn meaning(self) -> &'static str {
        match self {
            Ready::Joining => "not joined yet: no peer has answered",
            Ready::Direct => "joined, reachable directly",
            Ready::Relayed => "joined, reachable through a relay",
            Ready::Local => "joined, reachable on its LAN; no public address or relay yet",
        }
    }
}

fn unknown() -> Reachability {
    Reachability::Unknown
}

impl Status {
    /// The status of the node `kelips` drives.
    pub fn of(kelips: &KelipsBehaviour) -> Self {
        let core = kelips.core();
        let now = kelips.now_ms();
        let own = core.own_entry();
        let mut view: Vec<ViewMember> = core
            .view()
            .iter()
            .map(|m| ViewMember {
                peer_id: m.entry.id.to_string(),
                incarnation: m.entry.incarnation,
                heartbeat: m.entry.heartbeat,
                age_ms: now.saturating_sub(m.last_increase),
                rtt_ms: m.rtt_us.map(|us| f64::from(us) / 1000.0),
                failed: m.failed,
                path: None,
            })
            .collect();
        view.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let contacts = core
            .contacts()
            .iter()
            .map(|(g, cs)| (g, cs.iter().map(|c| c.entry.id.to_string()).collect()))
            .collect();
        let stats = core.stats();
        let net = kelips.stats();
        let (bytes_in, bytes_out) = kelips.wire_bytes();
        let counters = [
            ("messages_in", stats.messages_in),
            ("messages_out", stats.messages_out),
            ("refused_messages", net.refused_in),
            ("refused_items", stats.refused_items),
            ("unauthorized_tuples", stats.unauthorized_tuples),
            ("failures_detected", stats.failures_detected),
            ("members_removed", stats.members_removed),
            ("requests_failed", net.failures),
            ("dial_failures", net.dial_failures),
            ("request_timeouts", net.timeouts),
            ("requests_broken", net.broken),
            ("messages_dropped", net.dropped),
            ("refused_by_peers", net.refused_out),
            ("refusal_notices_dropped", net.events_dropped),
            ("core_outputs_dropped", stats.outputs_dropped),
            ("gossip_bytes_in", bytes_in),
            ("gossip_bytes_out", bytes_out),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Status {
            peer_id: own.id.to_string(),
            network: core.config().network_name.clone(),
            network_id: core.network().to_string(),
            writes: core.config().writes,
            group: core.group(),
            groups: core.groups(),
            structure_epoch: core.structure().map(|(s, _)| s.epoch),
            incarnation: own.incarnation,
            heartbeat: own.heartbeat,
            joined: core.is_joined(),
            addresses: kelips.advertised().iter().map(|a| a.to_string()).collect(),
            view,
            contacts,
            counters,
            reachability: Reachability::Unknown,
            site: kelips.site().map(|ip| ip.to_string()),
            relay: None,
            paths: BTreeMap::new(),
            ready: Ready::of(core.is_joined(), Reachability::Unknown, false),
            network_view: Some(NetworkView::of(kelips)),
            files: None,
        }
    }

    /// Adds how this node and its peers are reached.
    pub fn with_reach(mut self, reach: &Reach) -> Self {
        self.reachability = reach.reachability();
        self.relay = reach.relay().map(|a| (a.to_string(), reach.reserved()));
        self.ready = Ready::of(
            self.joined,
            self.reachability,
            self.relay.is_some() && reach.reserved(),
        );
        self.paths = reach
            .paths()
            .map(|(p, path)| (p.to_string(), path))
            .collect();
        for member in &mut self.view {
            member.path = self.paths.get(&member.peer_id).copied();
        }
        let c = reach.counters();
        let counters = [
            ("autonat_probes_ok", c.probes_ok),
            ("autonat_probes_failed", c.probes_failed),
            ("hole_punches_ok", c.punch_ok),
            ("hole_punches_failed", c.punch_failed),
            ("relayed_connections_closed", c.relayed_closed),
            ("last_hole_punch_ms", c.last_punch_ms),
            ("mdns_peers_ignored", c.mdns_ignored),
        ];
        self.counters
            .extend(counters.into_iter().map(|(k, v)| (k.to_string(), v)));
        self
    }
}

/// A length-prefixed JSON request-response codec with size limits checked before reading.
#[derive(Debug, Clone, Copy)]
pub struct JsonCodec<Req, Resp>(PhantomData<(Req, Resp)>);

impl<Req, Resp> Default for JsonCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// The status codec.
pub type StatusCodec = JsonCodec<StatusRequest, Status>;

async fn read_json<T: AsyncRead + Unpin, V: DeserializeOwned>(
    io: &mut T,
    limit: usize,
) -> io::Result<V> {
    let bytes = read_frame(io, limit)
        .await?
        .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_json<T: AsyncWrite + Unpin, V: Serialize>(
    io: &mut T,
    value: &V,
    limit: usize,
) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    if body.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {limit}", body.len()),
        ));
    }
    write_frame(io, &body).await
}

impl<Req, Resp> request_response::Codec for JsonCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_json(io, MAX_STATUS_REQUEST_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_json(io, MAX_STATUS_BYTES).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, r: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_json(io, &r, MAX_STATUS_REQUEST_BYTES).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, r: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_json(io, &r, MAX_STATUS_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_join_and_the_reachability() {
        use Reachability::{Private, Public, Unknown};
        for reachability in [Unknown, Public, Private] {
            for reserved in [false, true] {
                assert_eq!(Ready::of(false, reachability, reserved), Ready::Joining);
            }
        }
        assert_eq!(Ready::of(true, Public, false), Ready::Direct);
        assert_eq!(Ready::of(true, Public, true), Ready::Direct);
        assert_eq!(Ready::of(true, Private, true), Ready::Relayed);
        assert_eq!(Ready::of(true, Private, false), Ready::Local);
        assert_eq!(Ready::of(true, Unknown, false), Ready::Local);
        for ready in [Ready::Joining, Ready::Direct, Ready::Relayed, Ready::Local] {
            let json = serde_json::to_string(&ready).unwrap();
            assert_eq!(json, format!("\"{}\"", ready.name()));
        }
    }
}
