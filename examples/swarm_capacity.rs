//! How many real libp2p nodes one process holds: starts N full nodes (TCP loopback, Noise,
//! Yamux, Kelips, ping, identify) in one process, waits until they converge, keeps them
//! running, and prints one JSON object with the convergence time, CPU use and memory.
//!
//! `cargo run --release --example swarm_capacity -- --nodes 200 --groups 8 --period-ms 1000`

#[path = "support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use clap::Parser;
use libp2p::identity::Keypair;
use quickstore::local::{GroupMembers, LocalNode, converged, snapshot};
use quickstore_behaviours::Config;

// As in the `quickstore` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Nodes to run.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Groups k.
    #[arg(long, default_value_t = 8)]
    groups: u32,
    /// Gossip and heartbeat period (ms).
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// Give up converging after this long (s).
    #[arg(long, default_value_t = 300)]
    limit_s: u64,
    /// Once converged, measure CPU over this many seconds.
    #[arg(long, default_value_t = 30)]
    steady_s: u64,
    /// Run the nodes over libp2p's in-process memory transport (Noise and Yamux still) instead
    /// of TCP loopback: no sockets, no file descriptors.
    #[arg(long)]
    memory: bool,
    /// Start at most this many nodes a second (0: all at once, as fast as they bind).
    #[arg(long, default_value_t = 0)]
    join_per_s: u32,
    /// Idle connections close after this many seconds.
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every node holds sockets to its partners: far beyond the usual 1024 descriptors.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("cannot raise the open files limit: {e}");
    }
    let p = args.period_ms;
    let config = Config {
        groups: args.groups,
        heartbeat_period_ms: p,
        gossip_period_ms: p,
        t_fail_ms: 15 * p,
        t_contact_ms: 60 * p,
        sync_period_ms: 10 * p,
        rejoin_period_ms: 30 * p,
        ..Config::default()
    };
    let listen: libp2p::Multiaddr = if args.memory {
        "/memory/0".parse()?
    } else {
        "/ip4/127.0.0.1/tcp/0".parse()?
    };
    let idle = Duration::from_secs(args.idle_s);
    let start = |bootstraps| {
        let keypair = Keypair::generate_ed25519();
        LocalNode::start_on(keypair, config.clone(), bootstraps, listen.clone(), idle)
    };
    let started = Instant::now();
    let first = start(Vec::new()).await?;
    let bootstrap = vec![(first.peer_id, first.address.clone())];
    let mut nodes = vec![first];
    let mut progress = Progress::new();
    for i in 1..args.nodes {
        if args.join_per_s > 0 {
            let due = Duration::from_secs_f64(i as f64 / f64::from(args.join_per_s));
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        nodes.push(start(bootstrap.clone()).await?);
        if progress.due() {
            progress.print(
                started,
                &format!("{}/{} nodes started", nodes.len(), args.nodes),
            );
        }
    }
    let started_s = started.elapsed().as_secs_f64();
    let mut converged_s = None;
    while started.elapsed() < Duration::from_secs(args.limit_s) {
        let now = snapshot(&nodes, args.groups).await;
        if converged(&now, args.groups) {
            converged_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        if progress.due() {
            let members = GroupMembers::of(&now);
            let complete = now
                .iter()
                .filter(|node| members.node_converged(node, args.groups))
                .count();
            progress.print(
                started,
                &format!("{complete}/{} nodes converged", nodes.len()),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let views: Vec<usize> = snapshot(&nodes, args.groups)
        .await
        .iter()
        .map(|(_, _, s)| s.as_ref().map_or(0, |s| s.view.len()))
        .collect();
    if converged_s.is_none() {
        for (peer, group, status) in snapshot(&nodes, args.groups).await {
            if let Some(s) = status {
                eprintln!(
                    "{peer} g{group}: joined {} view {} contacts {} counters {:?}",
                    s.joined,
                    s.view.len(),
                    s.contacts.values().map(Vec::len).sum::<usize>(),
                    s.counters
                );
            }
        }
    }
    let cpu_before = process::cpu_seconds();
    let steady = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_s)).await;
    let cpu_share = (process::cpu_seconds() - cpu_before) / steady.elapsed().as_secs_f64();
    let still = converged(&snapshot(&nodes, args.groups).await, args.groups);
    println!(
        "{}",
        serde_json::json!({
            "nodes": args.nodes,
            "transport": if args.memory { "memory" } else { "tcp" },
            "idle_s": args.idle_s,
            "groups": args.groups,
            "period_ms": p,
            "all_started_s": started_s,
            "converged_s": converged_s,
            "still_converged": still,
            "min_view": views.iter().min(),
            "max_view": views.iter().max(),
            "steady_cpu_cores": cpu_share,
            "rss_mb": process::rss_mib(),
            "open_fds": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
            "rss_kb_per_node": process::rss_mib() * 1024.0 / args.nodes as f64,
        })
    );
    for node in nodes {
        node.stop().await;
    }
    Ok(())
}

/// A progress line on stderr at most every 5 s: what is going on, the cores the process used
/// since the last line, and its RSS.
struct Progress {
    since: Instant,
    cpu_seconds: f64,
}

impl Progress {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            cpu_seconds: process::cpu_seconds(),
        }
    }

    /// Whether a line is due.
    fn due(&self) -> bool {
        self.since.elapsed() >= Duration::from_secs(5)
    }

    /// Prints `what`, timed from `start`.
    fn print(&mut self, start: Instant, what: &str) {
        let cpu_seconds = process::cpu_seconds();
        eprintln!(
            "{:.0} s: {what}, {:.2} cores, {:.0} MB",
            start.elapsed().as_secs_f64(),
            (cpu_seconds - self.cpu_seconds) / self.since.elapsed().as_secs_f64(),
            process::rss_mib()
        );
        *self = Self::new();
    }
}
