//! Lookup latency and hops on a loopback cluster of real `quickstore node` processes: puts
//! small files through random nodes, then asks random entry nodes to locate them and prints
//! p50/p99 latency and the distribution of Kelips hops (1 = the first contacts knew).
//!
//! Needs the release binary beside the example:
//!
//! ```sh
//! cargo build --release && cargo run --release --example lookup_bench -- --nodes 32 --groups 6
//! ```

#[path = "support/args.rs"]
mod args;

use args::arg;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use quickstore::client::{Target, fetch_status};
use quickstore::files::cli::EntryClient;

struct Node {
    child: Child,
    address: Multiaddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    binary: &PathBuf,
    dir: PathBuf,
    config: &PathBuf,
    bootstrap: Option<&Multiaddr>,
) -> anyhow::Result<Node> {
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(binary);
    cmd.arg("node")
        .arg("--no-mdns")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b.to_string());
    }
    let mut child = cmd.spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let address: Multiaddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected line {line:?}"))?
        .parse()?;
    Ok(Node { child, address })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes = arg("--nodes", 32) as usize;
    let groups = arg("--groups", 6);
    let files = arg("--files", 200) as usize;
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("quickstore"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("build the binary first: cargo build --release"))?;
    let root = std::env::temp_dir().join(format!("qs-lookup-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[kelips]\nnetwork_name = \"lookup-bench\"\n\
             groups = {groups}\nheartbeat_period_ms = 250\ngossip_period_ms = 250\nt_fail_ms = 5000\n\
             t_contact_ms = 20000\nrejoin_period_ms = 5000\nsync_period_ms = 2000\n"
        ),
    )?;
    let mut cluster = vec![start(&binary, root.join("n0"), &config, None)?];
    let boot = cluster[0].address.clone();
    for i in 1..nodes {
        cluster.push(start(
            &binary,
            root.join(format!("n{i}")),
            &config,
            Some(&boot),
        )?);
    }
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for node in &cluster {
            let mut bare = node.address.clone();
            let Some(Protocol::P2p(peer)) = bare.pop() else {
                anyhow::bail!("no /p2p in {}", node.address)
            };
            let status = fetch_status(peer, bare, Duration::from_secs(3), None)
                .await
                .ok();
            let group = status.as_ref().map_or(0, |s| s.group);
            statuses.push((peer, group, status));
        }
        if quickstore::local::converged(&statuses, groups as u32) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no convergence"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{nodes} nodes, k = {groups}: converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let small = root.join("small");
    std::fs::write(&small, vec![42u8; 4096])?;
    let target_of = |i: usize| Target {
        peer: Some(cluster[i % nodes].address.to_string()),
        data_dir: None,
        network_key: None,
        identity: None,
    };
    for f in 0..files {
        let name = format!("bench/small-{f}");
        quickstore::files::cli::put(
            &target_of(f * 7),
            &small,
            &name,
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut entries = Vec::new();
    for i in 0..nodes {
        let client = EntryClient::open(&target_of(i), Duration::from_secs(10))?;
        client.locate("bench/small-0").await?;
        entries.push(client);
    }
    let mut latencies = Vec::new();
    let mut hops = std::collections::BTreeMap::<u32, usize>::new();
    for f in 0..files {
        let client = &entries[(f * 13 + 5) % nodes];
        let at = Instant::now();
        let (_, h) = client.locate(&format!("bench/small-{f}")).await?;
        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        *hops.entry(h).or_default() += 1;
    }
    latencies.sort_by(f64::total_cmp);
    let mean_hops = hops
        .iter()
        .map(|(h, n)| f64::from(*h) * *n as f64)
        .sum::<f64>()
        / files as f64;
    println!(
        "locate over {files} small files: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!("hops: {hops:?} (mean {mean_hops:.2})");

    let mut gets = Vec::new();
    let out = root.join("out");
    for f in 0..files.min(50) {
        let at = Instant::now();
        quickstore::files::cli::get(
            &target_of(f * 11 + 3),
            &format!("bench/small-{f}"),
            Some(&out),
            Duration::from_secs(10),
            None,
        )
        .await?;
        gets.push(at.elapsed().as_secs_f64() * 1000.0);
    }
    gets.sort_by(f64::total_cmp);
    println!(
        "whole get (new client peer, dial, locate, fetch 4 KiB) over {}: p50 {:.1} ms, p99 {:.1} ms",
        gets.len(),
        percentile(&gets, 0.5),
        percentile(&gets, 0.99)
    );
    drop(entries);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
