//! Client commands that talk to a running node: `quickstore status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, request_response};
use quickstore_behaviours::auth::WritePolicy;

use crate::files::cli::{count, ranges, shown};
use crate::node::{NodeFile, default_data_dir};
use crate::reach::{Path, Reachability};
use crate::status::{NetworkView, Status, StatusRequest};

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
    /// The private network's key file (`quickstore keygen --network FILE`). Default: the
    /// one the local node named in its node.json, else none (an open network).
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<PathBuf>,
    /// The writer identity that signs puts, deletes and grants. Default:
    /// ~/.config/quickstore/client.key (made on first use).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl Target {
    /// The private network's key: `--network-key`, else the local node's (when this command
    /// finds the node by its node.json), else none.
    pub fn network_key(&self) -> anyhow::Result<Option<PreSharedKey>> {
        if let Some(path) = &self.network_key {
            return Ok(Some(crate::network_key::load(path)?));
        }
        if self.peer.is_some() {
            return Ok(None);
        }
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let Ok(text) = std::fs::read_to_string(dir.join("node.json")) else {
            return Ok(None);
        };
        let file: Option<NodeFile> = serde_json::from_str(&text).ok();
        match file.and_then(|f| f.network_key_file) {
            Some(path) => Ok(Some(crate::network_key::load(std::path::Path::new(&path))?)),
            None => Ok(None),
        }
    }

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
        let key = self.target.network_key()?;
        let status = fetch_status(peer, address, Duration::from_secs(10), key).await?;
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
    network_key: Option<PreSharedKey>,
) -> anyhow::Result<Status> {
    let mut swarm = crate::swarm::client(timeout, network_key)?;
    swarm
        .dial(address.clone().with(Protocol::P2p(peer)))
        .with_context(|| format!("cannot dial {address}"))?;
    swarm.behaviour_mut().send_request(&peer, StatusRequest {});
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => bail!(
                "no answer from {peer} at {address} within {timeout:?} ({}?)",
                crate::network_key::client_hint(network_key.is_some())
            ),
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. }, ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                    bail!("status request to {peer} at {address} failed: {error}")
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    let text = error.to_string();
                    if crate::network_key::looks_like_key_mismatch(&text) {
                        bail!(
                            "cannot reach {peer} at {address}: the handshake failed ({}?): {text}",
                            crate::network_key::client_hint(network_key.is_some())
                        )
                    }
                    bail!("cannot reach {peer} at {address}: {text}")
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

/// The network part of `status`: its size, groups without a node, names below R.
fn network_lines(groups: u32, n: &NetworkView) -> Vec<String> {
    let with_node = groups as usize - n.groups_without_node.len();
    let mut network = format!(
        "size      about {} in {} of {groups} groups",
        count(n.network_size_estimate, "node", "nodes"),
        with_node
    );
    if !n.groups_without_node.is_empty() {
        network.push_str(&format!(
            "; no node known in {} {}",
            if n.groups_without_node.len() == 1 {
                "group"
            } else {
                "groups"
            },
            ranges(&n.groups_without_node)
        ));
    }
    let copies = if n.names_below_replication_total == 0 && n.names_in_group == 0 {
        "copies    no name of this group is known yet".to_string()
    } else if n.names_below_replication_total == 0 {
        format!(
            "copies    {} of this group {} {} live",
            match n.names_in_group {
                1 => "the one name".to_string(),
                all => format!("all {all} names"),
            },
            if n.names_in_group == 1 { "has" } else { "have" },
            count(u64::from(n.replication), "copy", "copies")
        )
    } else {
        let listed: Vec<String> = n
            .names_below_replication
            .iter()
            .take(10)
            .map(|b| format!("{} ({})", shown(&b.name), b.copies))
            .collect();
        let more = n.names_below_replication_total - listed.len() as u64;
        format!(
            "copies    {} with fewer than {} live: {}{}",
            count(n.names_below_replication_total, "name", "names"),
            count(u64::from(n.replication), "copy", "copies"),
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    vec![network, copies]
}

/// The files core's line of `status`: whether it acts on its view, and what it is doing.
fn files_line(f: &crate::status::FilesView) -> String {
    format!(
        "repair    {}; {} tracked, {} in flight, {} in progress",
        if f.settled {
            "acting on the group view"
        } else {
            "holding back (just started, paused or not hearing its group): no holder set \
             shrinks and no copy is deleted"
        },
        count(f.names_tracked, "name", "names"),
        count(f.transfers_in_flight, "transfer", "transfers"),
        count(f.puts_in_progress, "put", "puts"),
    )
}

fn print_status(s: &Status) {
    println!("peer      {}", s.peer_id);
    println!("network   {} ({})", s.network, s.network_id);
    println!(
        "writes    {}",
        match s.writes {
            WritePolicy::Signed => "signed (only a name's owner and its grantees change it)",
            WritePolicy::Open => "open (anyone may change any name)",
        }
    );
    match s.structure_epoch {
        Some(epoch) => println!(
            "group     {} of {} (groups size themselves: structure epoch {epoch})",
            s.group, s.groups
        ),
        None => println!("group     {} of {} (fixed)", s.group, s.groups),
    }
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
    if let Some(network) = &s.network_view {
        for line in network_lines(s.groups, network) {
            println!("{line}");
        }
    }
    if let Some(files) = &s.files {
        println!("{}", files_line(files));
    }
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
    use crate::status::NameCopies;

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
    fn an_older_status_without_the_network_fields_still_reads() {
        let s = status(Reachability::Unknown, None);
        assert_eq!(s.network_view, None);
        assert_eq!(s.files, None);
    }

    #[test]
    fn the_repair_line_says_whether_the_node_acts_on_its_view() {
        let mut f = crate::status::FilesView {
            settled: true,
            names_tracked: 2,
            transfers_in_flight: 1,
            puts_in_progress: 0,
        };
        assert_eq!(
            files_line(&f),
            "repair    acting on the group view; 2 names tracked, 1 transfer in flight, \
             0 puts in progress"
        );
        f.settled = false;
        assert!(files_line(&f).starts_with("repair    holding back"));
    }

    #[test]
    fn the_network_lines_say_size_empty_groups_and_names_below_r() {
        let mut n = NetworkView {
            network_size_estimate: 5,
            groups_without_node: vec![1, 2, 3, 7],
            replication: 3,
            names_below_replication: vec![NameCopies {
                name: "a b".to_string(),
                copies: 1,
            }],
            names_below_replication_total: 1,
            names_in_group: 4,
        };
        assert_eq!(
            network_lines(8, &n),
            [
                "size      about 5 nodes in 4 of 8 groups; no node known in groups 1-3, 7",
                "copies    1 name with fewer than 3 copies live: a b (1)",
            ]
        );
        n.groups_without_node.clear();
        n.names_below_replication.clear();
        n.names_below_replication_total = 0;
        assert_eq!(
            network_lines(8, &n),
            [
                "size      about 5 nodes in 8 of 8 groups",
                "copies    all 4 names of this group have 3 copies live",
            ]
        );
        n.names_in_group = 0;
        assert_eq!(
            network_lines(8, &n)[1],
            "copies    no name of this group is known yet"
        );
        n.names_in_group = 4;
        // A status with the network fields round-trips through its JSON, flat.
        let mut s = status(Reachability::Unknown, None);
        s.network_view = Some(n.clone());
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["network_size_estimate"], 5);
        let back: Status = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.network_view, Some(n));
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
