//! Client commands that talk to a running node: `quickstore status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, request_response};

use crate::node::{NodeFile, default_data_dir};
use crate::reach::{Path, Reachability};
use crate::status::{Status, StatusRequest};

/// Which node a client command talks to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node's multiaddr, ending in /p2p/<PeerId>.
    #[arg(long, conflicts_with = "data_dir")]
    pub peer: Option<String>,
    /// The data directory of a local node (reads its node.json). Default: the user's data
    /// directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Target {
    /// The node's PeerId and an address to dial.
    pub fn resolve(&self) -> anyhow::Result<(PeerId, Multiaddr)> {
        if let Some(peer) = &self.peer {
            let mut address: Multiaddr = peer
                .parse()
                .with_context(|| format!("{peer:?} is not a multiaddr"))?;
            let Some(Protocol::P2p(id)) = address.pop() else {
                bail!("{peer} does not end in /p2p/<PeerId>");
            };
            return Ok((id, address));
        }
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let path = dir.join("node.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no node running in {} (no node.json): start one with `quickstore node \
                 --data-dir {}`, or pass --peer MULTIADDR",
                dir.display(),
                dir.display()
            ),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let file: NodeFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a node file", path.display()))?;
        if !process_runs(file.pid) {
            bail!(
                "no node running in {} (pid {} has exited; its node.json is stale)",
                dir.display(),
                file.pid
            );
        }
        let peer: PeerId = file.peer_id.parse().context("bad peer_id in node.json")?;
        let addresses: Vec<Multiaddr> = file
            .listen_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let pick = addresses
            .iter()
            .find(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/"))
            .or_else(|| addresses.iter().find(|a| a.to_string().contains("/tcp/")))
            .or(addresses.first())
            .cloned()
            .with_context(|| format!("{} lists no address", path.display()))?;
        Ok((peer, pick))
    }
}

/// Whether process `pid` runs (Linux: `/proc/PID` exists; elsewhere assumed).
fn process_runs(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Show a node's view of the network.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    /// Asks the node and prints.
    pub async fn run(self) -> anyhow::Result<()> {
        let (peer, address) = self.target.resolve()?;
        let status = fetch_status(peer, address, Duration::from_secs(10)).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_status(&status);
        }
        Ok(())
    }
}

/// Dials `peer` at `address` and asks for its status.
pub async fn fetch_status(
    peer: PeerId,
    address: Multiaddr,
    timeout: Duration,
) -> anyhow::Result<Status> {
    let mut swarm = crate::swarm::client(timeout)?;
    swarm
        .dial(address.clone().with(Protocol::P2p(peer)))
        .with_context(|| format!("cannot dial {address}"))?;
    swarm.behaviour_mut().send_request(&peer, StatusRequest {});
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => bail!("no answer from {peer} at {address} within {timeout:?}"),
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. }, ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                    bail!("status request to {peer} at {address} failed: {error}")
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    bail!("cannot reach {peer} at {address}: {error}")
                }
                _ => {}
            }
        }
    }
}

fn path_name(path: Path) -> &'static str {
    match path {
        Path::Lan => "lan",
        Path::Direct => "direct",
        Path::Relay => "relay",
    }
}

/// The `reach` line of `status`: says what `--json` says (`reachability`, `site`, `relay`)
/// and nothing more: a relay is named only when one is set.
fn reach_line(s: &Status) -> String {
    let mut line = match s.reachability {
        Reachability::Public => "public (reached directly)".to_string(),
        Reachability::Private => "behind a NAT".to_string(),
        Reachability::Unknown => "not known yet".to_string(),
    };
    if let Some(site) = &s.site {
        line.push_str(&format!("; seen from {site}"));
    }
    match &s.relay {
        Some((relay, true)) => line.push_str(&format!("; reached through relay {relay}")),
        Some((relay, false)) => line.push_str(&format!("; reserving a slot on relay {relay}")),
        None if s.reachability == Reachability::Private => line.push_str("; no relay yet"),
        None => {}
    }
    line
}

fn print_status(s: &Status) {
    println!("peer      {}", s.peer_id);
    println!("network   {} ({})", s.network, s.network_id);
    println!("group     {} of {}", s.group, s.groups);
    println!(
        "stamp     incarnation {} heartbeat {}",
        s.incarnation, s.heartbeat
    );
    println!("joined    {}", s.joined);
    println!("ready     {} ({})", s.ready.name(), s.ready.meaning());
    for a in &s.addresses {
        println!("address   {a}");
    }
    println!("reach     {}", reach_line(s));
    println!();
    println!("view ({} members)", s.view.len());
    println!(
        "  {:<54} {:>6} {:>9} {:>8} {:>8} {:>6}  failed",
        "peer", "inc", "heartbeat", "age s", "rtt ms", "path"
    );
    for m in &s.view {
        let rtt = m.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1}"));
        println!(
            "  {:<54} {:>6} {:>9} {:>8.1} {:>8} {:>6}  {}",
            m.peer_id,
            m.incarnation,
            m.heartbeat,
            m.age_ms as f64 / 1000.0,
            rtt,
            m.path.map_or("-".to_string(), |p| path_name(p).to_string()),
            if m.failed { "yes" } else { "" }
        );
    }
    println!();
    println!("contacts");
    for (group, peers) in &s.contacts {
        let peers: Vec<String> = peers
            .iter()
            .map(|p| match s.paths.get(p) {
                Some(path) => format!("{p} ({})", path_name(*path)),
                None => p.clone(),
            })
            .collect();
        println!("  group {group:>3}: {}", peers.join(", "));
    }
    println!();
    println!("counters");
    for (k, v) in &s.counters {
        println!("  {k:<20} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(reachability: Reachability, relay: Option<(&str, bool)>) -> Status {
        let mut s: Status = serde_json::from_value(serde_json::json!({
            "peer_id": "me", "network": "test", "network_id": "00", "group": 0,
            "groups": 1, "incarnation": 1, "heartbeat": 1, "joined": true, "addresses": [],
            "view": [], "contacts": {}, "counters": {}
        }))
        .expect("a status");
        s.reachability = reachability;
        s.relay = relay.map(|(a, ok)| (a.to_string(), ok));
        s
    }

    #[test]
    fn the_reach_line_says_what_the_json_says() {
        let relay = "/ip4/198.51.100.1/tcp/4001/p2p/R/p2p-circuit";
        let line = reach_line(&status(Reachability::Private, None));
        assert_eq!(line, "behind a NAT; no relay yet");
        let line = reach_line(&status(Reachability::Private, Some((relay, true))));
        assert_eq!(line, format!("behind a NAT; reached through relay {relay}"));
        let line = reach_line(&status(Reachability::Private, Some((relay, false))));
        assert_eq!(
            line,
            format!("behind a NAT; reserving a slot on relay {relay}")
        );
        let line = reach_line(&status(Reachability::Public, None));
        assert_eq!(line, "public (reached directly)");
        let line = reach_line(&status(Reachability::Unknown, None));
        assert_eq!(line, "not known yet");
    }
}
