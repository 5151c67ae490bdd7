//! Moves one large file through real quickstore nodes on loopback and prints the figures for
//! BENCHMARKS.md: a bare libp2p stream (TCP + Noise + Yamux) moving the same number of bytes
//! between two peers in this process, then `put` (three copies) and `get` of the file, with
//! throughputs, ratios to the bare stream and the process's peak RSS.
//!
//! Everything (three nodes, the client, the bare-stream pair) runs in this one process, so the
//! peak RSS is an upper bound for every one of them.
//!
//! ```sh
//! cargo run --release --example files_bench -- --mib 1024 [--dir /dev/shm]
//! ```
//!
//! `--dir` chooses where the source file, the nodes' data and the fetched copy go (default the
//! temporary directory): on a tmpfs the figures show the protocol, on a disk they include it.
//! With `RUST_LOG` set (e.g. `RUST_LOG=quickstore=debug`) the nodes' logs go to stderr.

#[path = "support/args.rs"]
mod args;
#[path = "support/files.rs"]
mod files;
#[path = "support/process.rs"]
mod process;

use args::arg;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use quickstore::client::Target;
use quickstore::node::{NodeArgs, NodeFile};

const BENCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/quickstore/bench/1.0.0");

fn stream_swarm() -> anyhow::Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Seconds to move `bytes` over one libp2p stream between two fresh peers.
async fn bare_stream(bytes: u64) -> anyhow::Result<f64> {
    let mut receiver = stream_swarm()?;
    let mut incoming = receiver
        .behaviour()
        .new_control()
        .accept(BENCH_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    receiver.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let address = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            receiver.select_next_some().await
        {
            break address;
        }
    };
    let receiver_id = *receiver.local_peer_id();
    tokio::spawn(async move {
        loop {
            receiver.select_next_some().await;
        }
    });
    let reading = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.expect("a stream");
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break total;
            }
            total += n as u64;
        }
    });
    let mut sender = stream_swarm()?;
    let mut control = sender.behaviour().new_control();
    sender.dial(address.with(libp2p::multiaddr::Protocol::P2p(receiver_id)))?;
    tokio::spawn(async move {
        loop {
            sender.select_next_some().await;
        }
    });
    let started = Instant::now();
    let mut stream = control
        .open_stream(receiver_id, BENCH_PROTOCOL)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let buf = vec![7u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    stream.close().await?;
    let got = reading.await?;
    anyhow::ensure!(got == bytes, "moved {got} of {bytes} bytes");
    Ok(started.elapsed().as_secs_f64())
}

async fn start_node(dir: PathBuf, bootstrap: Option<String>) -> anyhow::Result<NodeFile> {
    let args = NodeArgs {
        data_dir: Some(dir.clone()),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap.into_iter().collect(),
        groups: Some(1),
        network: Some("files-bench".into()),
        gossip_period_ms: Some(200),
        no_mdns: true,
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = args.run().await {
            eprintln!("node stopped: {e:#}");
        }
    });
    let path = dir.join("node.json");
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(file) = serde_json::from_str::<NodeFile>(&text)
            && !file.listen_addrs.is_empty()
        {
            return Ok(file);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("node in {} did not start", dir.display())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mib = arg("--mib", 1024);
    let bytes = mib << 20;
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("qs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let source = root.join("source");
    files::write_file(&source, bytes)?;

    let cpu = process::cpu_seconds();
    let bare_s = bare_stream(bytes).await?;
    let bare_cpu = process::cpu_seconds() - cpu;

    let first = start_node(root.join("n0"), None).await?;
    let boot: Multiaddr = format!("{}/p2p/{}", first.listen_addrs[0], first.peer_id).parse()?;
    start_node(root.join("n1"), Some(boot.to_string())).await?;
    start_node(root.join("n2"), Some(boot.to_string())).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let entry = Target {
        peer: None,
        data_dir: Some(root.join("n0")),
        network_key: None,
        identity: None,
    };
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    let cpu = process::cpu_seconds();
    let put = quickstore::files::cli::put(
        &entry,
        &source,
        "bench/file",
        timeout,
        Duration::from_secs(3600),
    )
    .await?;
    let put_s = started.elapsed().as_secs_f64();
    let put_cpu = process::cpu_seconds() - cpu;
    let other = Target {
        peer: None,
        data_dir: Some(root.join("n1")),
        network_key: None,
        identity: None,
    };
    tokio::time::sleep(Duration::from_secs(arg("--pause-s", 0))).await;
    let target = root.join("got");
    let started = Instant::now();
    let cpu = process::cpu_seconds();
    let got =
        quickstore::files::cli::get(&other, "bench/file", Some(&target), timeout, None).await?;
    let get_s = started.elapsed().as_secs_f64();
    let get_cpu = process::cpu_seconds() - cpu;
    anyhow::ensure!(got.blake3 == put.blake3, "got other bytes");
    let sources = got
        .sources
        .as_ref()
        .map_or(0, |s| s.iter().filter(|s| s.bytes > 0).count());
    std::fs::remove_file(&target)?;
    let started = Instant::now();
    let cpu = process::cpu_seconds();
    let one =
        quickstore::files::cli::get(&other, "bench/file", Some(&target), timeout, Some(1)).await?;
    let one_s = started.elapsed().as_secs_f64();
    let one_cpu = process::cpu_seconds() - cpu;
    anyhow::ensure!(one.blake3 == put.blake3, "got other bytes");

    let rate = |s: f64| bytes as f64 / s / (1 << 20) as f64;
    println!("bytes moved         {bytes} ({mib} MiB)");
    // CPU: seconds of CPU the whole process used in the phase, and what share of the two
    // cores that is over the phase's wall time.
    let cpu = |c: f64, s: f64| format!("cpu {c:.2} s ({:.2} cores)", c / s);
    println!(
        "bare libp2p stream  {bare_s:.2} s  {:.0} MiB/s  {}",
        rate(bare_s),
        cpu(bare_cpu, bare_s)
    );
    println!(
        "put (3 copies)      {put_s:.2} s  {:.0} MiB/s  ratio {:.2}  {}",
        rate(put_s),
        bare_s / put_s,
        cpu(put_cpu, put_s)
    );
    println!(
        "get ({sources} holders)     {get_s:.2} s  {:.0} MiB/s  ratio {:.2}  {}",
        rate(get_s),
        bare_s / get_s,
        cpu(get_cpu, get_s)
    );
    println!(
        "get (1 holder)      {one_s:.2} s  {:.0} MiB/s  ratio {:.2}  {}",
        rate(one_s),
        bare_s / one_s,
        cpu(one_cpu, one_s)
    );
    println!(
        "peak RSS (all peers in this process) {:.0} MiB",
        process::peak_rss_mib()
    );
    let _ = std::fs::remove_dir_all(&root);
    std::process::exit(0);
}
