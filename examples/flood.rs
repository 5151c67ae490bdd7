//! A connection and stream flood against one node, for BENCHMARKS.md (issue 16): two
//! `quickstore node` processes on loopback form a group; then this process opens
//! `--connections` connections to the first, each from a new identity, spread over the first
//! half of `--seconds`, and on them `--streams` file streams (files and blob protocols, each
//! sending two bytes of a request and then nothing, which holds a stream until the node's I/O
//! timeout). Throughout, it samples the flooded node's RSS every second and runs an honest
//! `quickstore get` through it every 5 s; at the end it reads the other node's log for a
//! false failure of the flooded one.
//!
//! ```sh
//! cargo build --release && cargo run --release --example flood -- \
//!   --connections 2000 --streams 20000 --seconds 60
//! ```

#[path = "support/args.rs"]
mod args;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use args::arg;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol, SwarmBuilder, noise, tcp, yamux};

const FILES: StreamProtocol = StreamProtocol::new("/quickstore/files/1.0.0");
const BLOB: StreamProtocol = StreamProtocol::new("/quickstore/blob/1.0.0");

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 500

[kelips]
network_name = "flood"
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 3000
t_contact_ms = 12000
request_timeout_ms = 2000

[files]
io_timeout_ms = 10000
"#;

struct Node {
    child: Child,
    address: Multiaddr,
    peer: PeerId,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    bin: &Path,
    root: &Path,
    name: &str,
    bootstrap: Option<&Multiaddr>,
) -> anyhow::Result<Node> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let log = root.join(format!("{name}.log"));
    let mut cmd = Command::new(bin);
    cmd.args(["node", "--no-mdns", "--config"])
        .arg(root.join("config.toml"))
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b.to_string());
    }
    let mut child = cmd.spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let full: Multiaddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
        .parse()?;
    let mut address = full.clone();
    let Some(Protocol::P2p(peer)) = address.pop() else {
        anyhow::bail!("no /p2p in {full}");
    };
    Ok(Node {
        child,
        address,
        peer,
        log,
    })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    dial_failed: AtomicU64,
    streams_opened: AtomicU64,
    streams_failed: AtomicU64,
}

/// One attacker: a new identity, one connection, `streams` held streams; it holds them until
/// `until`.
async fn attacker(
    target: PeerId,
    address: Multiaddr,
    streams: u64,
    until: Instant,
    counts: Arc<Counts>,
) {
    let Ok(builder) = SwarmBuilder::with_new_identity().with_tokio().with_tcp(
        tcp::Config::default().nodelay(true),
        noise::Config::new,
        yamux::Config::default,
    ) else {
        return;
    };
    let mut swarm = match builder.with_behaviour(|_| libp2p_stream::Behaviour::new()) {
        Ok(builder) => builder
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build(),
        Err(never) => match never {},
    };
    let mut control = swarm.behaviour().new_control();
    if swarm.dial(address.with(Protocol::P2p(target))).is_err() {
        counts.dial_failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let driver = tokio::spawn(async move {
        let mut connected = false;
        loop {
            match swarm.select_next_some().await {
                libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } if !connected => {
                    connected = true;
                }
                libp2p::swarm::SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
            if connected {
                // Keep driving the connection.
                loop {
                    swarm.select_next_some().await;
                }
            }
        }
    });
    let mut held = Vec::new();
    for i in 0..streams {
        let protocol = if i % 2 == 0 { FILES } else { BLOB };
        let opened = tokio::time::timeout(
            Duration::from_secs(10),
            control.open_stream(target, protocol),
        )
        .await;
        match opened {
            Ok(Ok(mut stream)) => {
                if i == 0 {
                    counts.connected.fetch_add(1, Ordering::Relaxed);
                }
                let _ = stream.write_all(&[0x20, 0xa1]).await;
                let _ = stream.flush().await;
                counts.streams_opened.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
            _ => {
                if i == 0 {
                    counts.dial_failed.fetch_add(1, Ordering::Relaxed);
                }
                counts.streams_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tokio::time::sleep_until(until.into()).await;
    drop(held);
    driver.abort();
}

/// An honest `get` of the check file through the node at `at`: whether it worked, seconds.
fn get(bin: &Path, at: &str) -> (bool, f64) {
    let started = Instant::now();
    let out = Command::new(bin)
        .args([
            "get",
            "flood-check",
            "-o",
            "/dev/null",
            "--force",
            "--timeout-s",
            "10",
            "--peer",
            at,
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .output();
    let ok = match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr);
            println!("honest get failed: {}", why.trim());
            false
        }
        Err(e) => {
            println!("honest get not run: {e}");
            false
        }
    };
    (ok, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections = arg("--connections", 2000);
    let streams = arg("--streams", 20_000);
    let seconds = arg("--seconds", 60);
    let bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("quickstore"))
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))?;
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build first",
        bin.display()
    );
    let root = std::env::temp_dir().join(format!("qs-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("config.toml"), CONFIG)?;

    let flooded = start(&bin, &root, "flooded", None)?;
    let first = flooded.address.clone().with(Protocol::P2p(flooded.peer));
    let other = start(&bin, &root, "other", Some(&first))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let file = root.join("check.bin");
    std::fs::write(&file, vec![7u8; 1 << 20])?;
    let put = Command::new(&bin)
        .arg("put")
        .arg(&file)
        .args(["flood-check", "--peer"])
        .arg(first.to_string())
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(put.success(), "the check file was not stored");
    let pid = flooded.child.id();
    let rss_before = rss_mib(pid);

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let per_connection = (streams / connections.max(1)).max(1);
    let spread = Duration::from_secs_f64(seconds as f64 / 2.0 / connections.max(1) as f64);
    let target = flooded.peer;
    let address = flooded.address.clone();
    let flood_counts = counts.clone();
    let flood = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            tasks.push(tokio::spawn(attacker(
                target,
                address.clone(),
                per_connection,
                until,
                flood_counts.clone(),
            )));
            tokio::time::sleep(spread).await;
        }
        for task in tasks {
            let _ = task.await;
        }
    });

    let mut peak = rss_before;
    let mut gets = Vec::new();
    let mut next_get = Instant::now();
    while Instant::now() < until {
        peak = peak.max(rss_mib(pid));
        if Instant::now() >= next_get {
            let bin = bin.clone();
            let at = first.to_string();
            gets.push(tokio::task::spawn_blocking(move || get(&bin, &at)).await?);
            next_get += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = flood.await;
    let rss_end = rss_mib(pid);
    let log = std::fs::read_to_string(&other.log).unwrap_or_default();
    let false_failures = log
        .lines()
        .filter(|l| l.contains("member failed") && l.contains(&flooded.peer.to_string()))
        .count();
    let ok = gets.iter().filter(|(ok, _)| *ok).count();
    let mut times: Vec<f64> = gets.iter().filter(|(ok, _)| *ok).map(|(_, t)| *t).collect();
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    println!("flood: {connections} connections asked, {streams} streams asked over {seconds} s");
    println!(
        "attackers: {} connected, {} failed to connect; streams {} opened, {} failed",
        counts.connected.load(Ordering::Relaxed),
        counts.dial_failed.load(Ordering::Relaxed),
        counts.streams_opened.load(Ordering::Relaxed),
        counts.streams_failed.load(Ordering::Relaxed)
    );
    println!(
        "flooded node RSS: {rss_before:.1} MiB before, peak {peak:.1} MiB, {rss_end:.1} MiB at the end"
    );
    println!(
        "honest gets through the flooded node: {ok} of {} ok, median {median:.2} s",
        gets.len()
    );
    println!("false failures of the flooded node in its group member's log: {false_failures}");
    drop(other);
    drop(flooded);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
