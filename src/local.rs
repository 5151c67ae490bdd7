//! In-process nodes for tests and examples: real swarms over loopback TCP or libp2p's memory
//! transport, each driven by its own task, answering [`Status`] requests.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, ping};
use quickstore_behaviours::Config as KelipsConfig;
use quickstore_behaviours::id::id_facts;
use quickstore_behaviours::net::{DriverConfig, Peer};
use tokio::sync::{mpsc, oneshot};

use crate::status::Status;
use crate::swarm::{self, NodeBehaviourEvent, SwarmLimits};

/// A node running in this process.
pub struct LocalNode {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// Its first listen address.
    pub address: Multiaddr,
    status: mpsc::Sender<oneshot::Sender<Status>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalNode {
    /// Starts a node listening on loopback TCP, joining through `bootstraps`; idle
    /// connections close after 10 s.
    pub async fn start(
        keypair: Keypair,
        kelips: KelipsConfig,
        bootstraps: Vec<(PeerId, Multiaddr)>,
    ) -> anyhow::Result<Self> {
        let tcp = "/ip4/127.0.0.1/tcp/0".parse()?;
        Self::start_on(keypair, kelips, bootstraps, tcp, Duration::from_secs(10)).await
    }

    /// Starts a node listening on `listen` (`/memory/0` runs it without sockets), joining
    /// through `bootstraps`, closing connections idle for `idle_timeout`.
    pub async fn start_on(
        keypair: Keypair,
        kelips: KelipsConfig,
        bootstraps: Vec<(PeerId, Multiaddr)>,
        listen: Multiaddr,
        idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let peer_id = keypair.public().to_peer_id();
        let ping_interval = swarm::ping_interval(&kelips);
        let driver = DriverConfig {
            kelips,
            incarnation: 1,
            bootstraps: bootstraps.into_iter().map(|(p, a)| (p, vec![a])).collect(),
            external_addresses: Vec::new(),
            backoff: Duration::from_millis(500),
            max_concurrent_streams: 64,
        };
        let limits = SwarmLimits {
            max_connections: 1024,
            max_connections_per_peer: 4,
            max_connections_per_ip: 64,
            max_pending_dials: 64,
            idle_timeout,
            // As `quickstore node` sets it.
            ping_interval,
        };
        // In-process clusters find each other through bootstraps only, and have no NAT to
        // probe: AutoNAT probes (a dial-back connection each, every 5 s by default) wait an
        // hour. With 500 nodes joining at 20 a second they kept the process from converging
        // (BENCHMARKS.md).
        let nat = crate::config::NatConfig {
            mdns: false,
            autonat_probe_interval_ms: 3_600_000,
            ..Default::default()
        };
        let mut swarm = swarm::build(keypair, driver, limits, &nat, None, None)?;
        swarm.listen_on(listen)?;
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (status, mut status_requests) = mpsc::channel::<oneshot::Sender<Status>>(8);
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    Some(reply) = status_requests.recv() => {
                        let _ = reply.send(Status::of(&swarm.behaviour().kelips));
                    }
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
                            peer, result: Ok(rtt), ..
                        })) = event {
                            swarm.behaviour_mut().kelips.handle_rtt(peer, rtt);
                        }
                    }
                }
            }
        });
        Ok(Self {
            peer_id,
            address,
            status,
            stop: Some(stop),
            task,
        })
    }

    /// The node's status now; `None` once its task has ended.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.status.send(reply).await.ok()?;
        answer.await.ok()
    }

    /// Stops the node and waits for its task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every node's (PeerId, group among `groups`, status now), in order. With `groups` = 0
/// (groups that size themselves) each node's group is the one its status reports.
pub async fn snapshot(nodes: &[LocalNode], groups: u32) -> Vec<SnapshotNode> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let status = node.status().await;
        let group = if groups == 0 {
            status.as_ref().map_or(u32::MAX, |s| s.group)
        } else {
            id_facts(&Peer(node.peer_id), groups).group
        };
        out.push((node.peer_id, group, status));
    }
    out
}

/// The one structure (number of groups, epoch) every node of `nodes` reports, if they agree.
pub fn agreed_structure(nodes: &[SnapshotNode]) -> Option<(u32, Option<u32>)> {
    let mut structures = nodes
        .iter()
        .map(|(_, _, s)| s.as_ref().map(|s| (s.groups, s.structure_epoch)));
    let first = structures.next()??;
    structures.all(|s| s == Some(first)).then_some(first)
}

/// One node of a snapshot: (PeerId, group, status).
pub type SnapshotNode = (PeerId, u32, Option<Status>);

/// Whether every node's live view is exactly its group's other nodes and it has a contact in
/// every other group that has nodes. With `groups` = 0 (groups that size themselves) every
/// node must also report the same structure, and its groups are the ones checked.
pub fn converged(nodes: &[SnapshotNode], groups: u32) -> bool {
    let groups = if groups == 0 {
        match agreed_structure(nodes) {
            Some((groups, _)) => groups,
            None => return false,
        }
    } else {
        groups
    };
    let members = GroupMembers::of(nodes);
    nodes
        .iter()
        .all(|node| members.node_converged(node, groups))
}

/// Each group's nodes in a snapshot, as status views name them (sorted PeerId strings),
/// computed once so that checking every node costs one pass over its own view.
pub struct GroupMembers {
    by_group: BTreeMap<u32, Vec<String>>,
}

impl GroupMembers {
    /// The groups of `nodes`.
    pub fn of(nodes: &[SnapshotNode]) -> Self {
        let mut by_group: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (peer, group, _) in nodes {
            by_group.entry(*group).or_default().push(peer.to_string());
        }
        for members in by_group.values_mut() {
            members.sort();
        }
        Self { by_group }
    }

    /// Whether `node` has converged: its live view is exactly its group's other nodes and it
    /// has a contact in every other group that has nodes.
    pub fn node_converged(&self, node: &SnapshotNode, groups: u32) -> bool {
        let (me, group, status) = node;
        let Some(status) = status else {
            return false;
        };
        let me = me.to_string();
        let mut live: Vec<&str> = status
            .view
            .iter()
            .filter(|m| !m.failed)
            .map(|m| m.peer_id.as_str())
            .collect();
        live.sort_unstable();
        let expected = self
            .by_group
            .get(group)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|p| *p != me);
        let covered = (0..groups).all(|g| {
            g == *group
                || !self.by_group.contains_key(&g)
                || status.contacts.get(&g).is_some_and(|c| !c.is_empty())
        });
        live.into_iter().eq(expected) && covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status in `group` whose live view is `live`, with `failed` members marked failed,
    /// and contacts in `contact_groups`.
    fn status(group: u32, live: &[&PeerId], failed: &[&PeerId], contact_groups: &[u32]) -> Status {
        let member = |p: &&PeerId, failed: bool| {
            serde_json::json!({"peer_id": p.to_string(), "incarnation": 1, "heartbeat": 1,
                "age_ms": 0, "rtt_ms": null, "failed": failed})
        };
        let view: Vec<_> = live
            .iter()
            .map(|p| member(p, false))
            .chain(failed.iter().map(|p| member(p, true)))
            .collect();
        let contacts: BTreeMap<String, Vec<String>> = contact_groups
            .iter()
            .map(|g| (g.to_string(), vec!["someone".to_string()]))
            .collect();
        serde_json::from_value(serde_json::json!({
            "peer_id": "me", "network": "test", "network_id": "00", "group": group,
            "groups": 2, "incarnation": 1, "heartbeat": 1, "joined": true, "addresses": [],
            "view": view, "contacts": contacts, "counters": {}
        }))
        .unwrap()
    }

    #[test]
    fn converged_needs_exact_live_views_and_a_contact_per_other_group() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let good = |a_status: Option<Status>| {
            vec![
                (a, 0, a_status),
                (b, 0, Some(status(0, &[&a], &[], &[1]))),
                (c, 1, Some(status(1, &[], &[], &[0]))),
            ]
        };
        assert!(converged(&good(Some(status(0, &[&b], &[], &[1]))), 2));
        // A failed member does not count as live; a stranger in the view is one too many.
        assert!(!converged(&good(Some(status(0, &[], &[&b], &[1]))), 2));
        assert!(!converged(&good(Some(status(0, &[&b, &c], &[], &[1]))), 2));
        // No contact in the other group, or no status at all.
        assert!(!converged(&good(Some(status(0, &[&b], &[], &[]))), 2));
        assert!(!converged(&good(None), 2));
        // The per-node check singles out the node that is behind.
        let nodes = good(Some(status(0, &[], &[], &[1])));
        let members = GroupMembers::of(&nodes);
        let behind: Vec<bool> = nodes.iter().map(|n| members.node_converged(n, 2)).collect();
        assert_eq!(behind, [false, true, true]);
    }

    #[test]
    fn with_groups_that_size_themselves_every_node_must_hold_the_same_structure() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let at = |group: u32, live: &[&PeerId], others: &[u32], epoch: u32| {
            let mut s = status(group, live, &[], others);
            s.structure_epoch = Some(epoch);
            Some(s)
        };
        let nodes = |c_epoch: u32| {
            vec![
                (a, 0, at(0, &[&b], &[1], 3)),
                (b, 0, at(0, &[&a], &[1], 3)),
                (c, 1, at(1, &[], &[0], c_epoch)),
            ]
        };
        assert_eq!(agreed_structure(&nodes(3)), Some((2, Some(3))));
        assert!(converged(&nodes(3), 0));
        // One node still on another epoch: not converged, whatever its view.
        assert_eq!(agreed_structure(&nodes(2)), None);
        assert!(!converged(&nodes(2), 0));
    }
}
