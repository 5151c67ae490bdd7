//! Hole punching and relayed transfers across two NATs, in network namespaces (root only): a
//! public bootstrap + relay, node `a1` behind NAT A (alone in group 1, so it holds group 1's
//! files alone) and node `b1` behind NAT B. For each NAT kind (plain MASQUERADE, then
//! `--random-fully`) it prints:
//!
//! - hole-punch success over `--tries` gets of a small file from LAN B: every get is a fresh
//!   client (new identity, new ports) that reaches `a1` first through the relay, then direct
//!   if DCUtR succeeds; with the time to that usable connection;
//! - get throughput of a `--mib` MiB file, direct (MASQUERADE) and relayed (random-fully).
//!
//! ```sh
//! cargo build --release && sudo target/release/examples/nat_bench --tries 10 --mib 32
//! ```
//! (or `cargo run --release --example nat_bench -- --tries 10 --mib 32` as root).

#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;

#[path = "support/args.rs"]
mod args;

use args::arg;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use netns::{NatKind, Topology};
use quickstore::status::Status;
use quickstore_behaviours::id::{id_facts, name_facts};
use quickstore_behaviours::net::Peer;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
backoff_ms = 500
idle_connection_timeout_ms = 60000

[kelips]
network_name = "nat-bench"
groups = 2
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 6000
t_contact_ms = 20000
rejoin_period_ms = 2000
request_timeout_ms = 3000

[nat]
mdns = false
autonat_probe_interval_ms = 500
relay_circuit_bytes = 1073741824
"#;

fn binary() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    let dir = me.parent().and_then(Path::parent).expect("target dir");
    dir.join("quickstore")
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A key whose node falls in `group` of 2.
fn key_in(group: u32) -> Keypair {
    loop {
        let key = Keypair::generate_ed25519();
        if id_facts(&Peer(key.public().to_peer_id()), 2).group == group {
            return key;
        }
    }
}

fn name_in(prefix: &str, group: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| name_facts(n, 2).0 == group)
        .expect("some name")
}

fn start(topology: &Topology, host: &str, dir: &Path, config: &Path, extra: &[&str]) -> Child {
    let mut cmd = topology.command(host, binary());
    cmd.arg("node")
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("node starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("a line");
    child
}

fn client(topology: &Topology, host: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = topology
        .command(host, binary())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .env("RUST_LOG", "error")
        .output()
        .expect("client runs");
    if !out.status.success() {
        return serde_json::json!({ "error": String::from_utf8_lossy(&out.stderr).trim() });
    }
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn reserved(topology: &Topology, host: &str, dir: &Path) -> bool {
    let out = topology
        .command(host, binary())
        .args(["status", "--json", "--data-dir"])
        .arg(dir)
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<Status>(&o.stdout).ok())
        .is_some_and(|s| s.relay.is_some_and(|(_, ok)| ok) && !s.contacts.is_empty())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run(nat: NatKind, tries: u64, mib: u64) -> anyhow::Result<()> {
    let topology = Topology::build("bench", nat, 0)?;
    let root = tempfile::tempdir()?;
    let config = root.path().join("config.toml");
    std::fs::write(&config, CONFIG)?;
    let dirs: Vec<PathBuf> = ["pub", "a1", "b1"]
        .iter()
        .map(|h| root.path().join(h))
        .collect();
    let keys = [key_in(0), key_in(1), key_in(0)];
    for (dir, key) in dirs.iter().zip(&keys) {
        std::fs::create_dir_all(dir)?;
        quickstore::identity::write_key(&dir.join("identity.key"), key)?;
    }
    let boot = keys[0].public().to_peer_id();
    let bootstrap = format!("/ip4/198.51.100.1/tcp/4001/p2p/{boot}");
    let mut nodes = Nodes(Vec::new());
    nodes.0.push(start(
        &topology,
        "pub",
        &dirs[0],
        &config,
        &[
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "--external-addr",
            "/ip4/198.51.100.1/tcp/4001",
            "--external-addr",
            "/ip4/198.51.100.1/udp/4001/quic-v1",
            "--relay-server",
        ],
    ));
    for (host, dir) in [("a1", &dirs[1]), ("b1", &dirs[2])] {
        nodes.0.push(start(
            &topology,
            host,
            dir,
            &config,
            &["--bootstrap", &bootstrap],
        ));
    }
    let started = Instant::now();
    while !(reserved(&topology, "a1", &dirs[1]) && reserved(&topology, "b1", &dirs[2])) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no relay reservations"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let small = root.path().join("small");
    std::fs::write(&small, vec![7u8; 1024])?;
    let big = root.path().join("big");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&big)?;
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        for _ in 0..mib {
            file.write_all(&chunk)?;
        }
    }
    let small_name = name_in("small", 1);
    let big_name = name_in("big", 1);
    for (file, name) in [(&small, &small_name), (&big, &big_name)] {
        let put = client(
            &topology,
            "a1",
            &dirs[1],
            &["put", file.to_str().unwrap_or(""), name],
        );
        anyhow::ensure!(put.get("error").is_none(), "put failed: {put}");
    }
    let out = root.path().join("out");
    let mut direct = 0;
    let mut connect_direct = Vec::new();
    let mut connect_relay = Vec::new();
    for _ in 0..tries {
        let _ = std::fs::remove_file(&out);
        let got = client(
            &topology,
            "b1",
            &dirs[2],
            &["get", &small_name, "-o", out.to_str().unwrap_or("")],
        );
        let ms = got["connect_ms"].as_f64().unwrap_or(f64::NAN);
        match got["via"].as_str() {
            Some("direct") => {
                direct += 1;
                connect_direct.push(ms);
            }
            Some(_) => connect_relay.push(ms),
            None => println!("  get failed: {got}"),
        }
    }
    let mut rates = Vec::new();
    let mut wall = Vec::new();
    let mut via = String::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let got = client(
            &topology,
            "b1",
            &dirs[2],
            &["get", &big_name, "-o", out.to_str().unwrap_or("")],
        );
        anyhow::ensure!(got.get("error").is_none(), "big get failed: {got}");
        // The bytes' time: the command's, less the wait for a connection (hole punching).
        let total = got["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
        let connect = got["connect_ms"].as_f64().unwrap_or(0.0);
        rates.push(mib as f64 / ((total - connect) / 1000.0));
        wall.push(t.elapsed().as_secs_f64());
        via = got["via"].as_str().unwrap_or("?").to_string();
    }
    println!(
        "{nat:?}: hole punch {direct}/{tries} direct; connect median {:.0} ms direct, {:.0} ms relayed; get {mib} MiB median {:.1} MiB/s via {via} once connected, {:.1} s per command (3 runs)",
        median(connect_direct),
        median(connect_relay),
        median(rates),
        median(wall)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let tries = arg("--tries", 10);
    let mib = arg("--mib", 32);
    anyhow::ensure!(netns::is_root(), "needs root (network namespaces)");
    anyhow::ensure!(
        binary().exists(),
        "build the node first: cargo build --release"
    );
    for nat in [NatKind::Masquerade, NatKind::RandomFully] {
        run(nat, tries, mib)?;
    }
    Ok(())
}
