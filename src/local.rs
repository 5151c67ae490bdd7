//! In-process nodes for tests and examples: real swarms over loopback TCP or libp2p's memory
//! transport, each driven by its own task, answering [`Status`] requests.

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
        let mut swarm = swarm::build(keypair, driver, limits, &nat, None)?;
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

/// Every node's (PeerId, group among `groups`, status now), in order.
pub async fn snapshot(nodes: &[LocalNode], groups: u32) -> Vec<(PeerId, u32, Option<Status>)> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let group = id_facts(&Peer(node.peer_id), groups).group;
        out.push((node.peer_id, group, node.status().await));
    }
    out
}

/// Whether every node's live view is exactly its group's other nodes and it has a contact in
/// every other group that has nodes. `nodes` are (PeerId, group, status).
pub fn converged(nodes: &[(PeerId, u32, Option<Status>)], groups: u32) -> bool {
    nodes.iter().all(|node| node_converged(nodes, node, groups))
}

/// Whether `node`, one of `nodes`, has converged: its live view is exactly its group's other
/// nodes and it has a contact in every other group that has nodes.
pub fn node_converged(
    nodes: &[(PeerId, u32, Option<Status>)],
    node: &(PeerId, u32, Option<Status>),
    groups: u32,
) -> bool {
    let (me, group, status) = node;
    let Some(status) = status else {
        return false;
    };
    let mut expected: Vec<String> = nodes
        .iter()
        .filter(|(p, g, _)| g == group && p != me)
        .map(|(p, _, _)| p.to_string())
        .collect();
    expected.sort();
    let mut live: Vec<String> = status
        .view
        .iter()
        .filter(|m| !m.failed)
        .map(|m| m.peer_id.clone())
        .collect();
    live.sort();
    let covered = (0..groups).all(|g| {
        g == *group
            || !nodes.iter().any(|(_, ng, _)| *ng == g)
            || status.contacts.get(&g).is_some_and(|c| !c.is_empty())
    });
    live == expected && covered
}
