//! `quickstore get` of a large file from three holders whose uplinks are limited by `tc tbf`,
//! in network namespaces (root only). One LAN (`netns::Lan`): hosts `h1`, `h2`, `h3` run the
//! holders, alone in group 1 of a fixed `groups = 2` network, so the three copies of a group-1
//! name are exactly theirs; `h4` runs the client's node, alone in group 0, so it never holds
//! the file and `get` through it must fetch from the holders. Every holder's egress (`eth0` in
//! its namespace) is shaped to `--rate-mbit`; the client's link is not shaped.
//!
//! One file of `--size-mib` random bytes (written to a temporary file, hashed as it is
//! written) is put once, then fetched `--runs` times in each scenario:
//!
//! - A: all three holders at `--rate-mbit`;
//! - B: from one holder only: `get --max-sources 1` when the binary's `get --help` has that
//!   flag, else plain `get` (which streams from one holder anyway);
//! - C: holder `h3` at `--slow-mbit`, the other two at `--rate-mbit`;
//! - D: holder `h3` stopped (`SIGSTOP`), the other two at `--rate-mbit`: the two fast
//!   holders alone, the yardstick of C.
//!
//! Each get's output is hashed (BLAKE3, streaming) and compared with the source's. Each run
//! prints its wall time and the MiB each holder sent meanwhile over TCP and over UDP (QUIC),
//! counted by two iptables rules on its `eth0` (the file's bytes, framing and gossip); then a table of medians and the
//! throughput ratios A/B (what more sources gain) and C/A (what one slow holder costs).
//!
//! ```sh
//! cargo run --release --example multi_source_bench -- --size-mib 256 --runs 3 \
//!     --rate-mbit 100 --slow-mbit 10
//! ```
//! The `quickstore` binary is `QUICKSTORE_BIN`, else the one in the same target directory
//! (`cargo build --release --bin quickstore`). Node logs are copied to
//! `$TMPDIR/quickstore-multi-source-bench-logs/`.

#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;

#[path = "support/args.rs"]
mod args;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use args::arg;
use libp2p::identity::Keypair;
use netns::Lan;
use quickstore::status::Status;
use quickstore_behaviours::id::{id_facts, name_facts};
use quickstore_behaviours::net::Peer;
use rand::RngCore;

/// Groups of the network: the holders are group 1, the client's node group 0.
const GROUPS: u32 = 2;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
backoff_ms = 500
idle_connection_timeout_ms = 60000

[kelips]
network_name = "multi-source-bench"
groups = 2
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 6000
t_contact_ms = 20000
sync_period_ms = 1000
rejoin_period_ms = 2000
request_timeout_ms = 3000

[files]
put_deadline_ms = 600000

[nat]
mdns = false
"#;

/// The holders' hosts, the slow one (scenario C) last.
const HOLDERS: [&str; 3] = ["h1", "h2", "h3"];
/// The client's host.
const CLIENT: &str = "h4";
/// The holders' shaped interface.
const UPLINK: &str = "eth0";

/// The `quickstore` binary: `QUICKSTORE_BIN`, else `quickstore` in this example's target
/// directory (`target/release/examples/..`).
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("QUICKSTORE_BIN") {
        return PathBuf::from(bin);
    }
    let me = std::env::current_exe().expect("own path");
    let dir = me.parent().and_then(Path::parent).expect("target dir");
    dir.join("quickstore")
}

/// The node processes; killed on drop (before the namespaces go).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A key whose node falls in `group`.
fn key_in(group: u32) -> Keypair {
    loop {
        let key = Keypair::generate_ed25519();
        if id_facts(&Peer(key.public().to_peer_id()), GROUPS).group == group {
            return key;
        }
    }
}

/// A name of `group`.
fn name_in(prefix: &str, group: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| name_facts(n, GROUPS).0 == group)
        .expect("some name")
}

/// Starts `quickstore node` in `host` with data directory `dir` (its log in `dir/log`);
/// returns once it prints its first `listening on` line.
fn start(
    lan: &Lan,
    host: &str,
    dir: &Path,
    config: &Path,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("log"))?;
    let mut child = lan
        .command(host, binary())
        .arg("node")
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("{host}: the node does not start"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    lines.read_line(&mut line)?;
    ensure!(
        line.starts_with("listening on"),
        "{host}: the node printed {line:?}; see {}",
        dir.join("log").display()
    );
    // Keep reading its standard output, so a later line never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Ok(child)
}

/// Runs the client `quickstore ARGS --data-dir DIR --json` in `host`: its JSON answer, or an
/// error with its standard error.
fn client(lan: &Lan, host: &str, dir: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = lan
        .command(host, binary())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "quickstore {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "quickstore {}: not JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The status of the node in `dir` on `host`, when it answers.
fn status(lan: &Lan, host: &str, dir: &Path) -> Option<Status> {
    let out = lan
        .command(host, binary())
        .args(["status", "--json", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "error")
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether every holder sees the other two alive and has a contact in group 0, and the
/// client's node has a contact in group 1.
fn converged(lan: &Lan, dirs: &[PathBuf]) -> bool {
    let holders_ok = HOLDERS.iter().zip(dirs).all(|(host, dir)| {
        status(lan, host, dir).is_some_and(|s| {
            s.joined
                && s.view.iter().filter(|m| !m.failed).count() == HOLDERS.len() - 1
                && s.contacts.get(&0).is_some_and(|c| !c.is_empty())
        })
    });
    holders_ok
        && status(lan, CLIENT, &dirs[HOLDERS.len()])
            .is_some_and(|s| s.joined && s.contacts.get(&1).is_some_and(|c| !c.is_empty()))
}

/// Writes `mib` MiB of random bytes to `path`, 1 MiB at a time; their BLAKE3.
fn write_random(path: &Path, mib: u64) -> anyhow::Result<blake3::Hash> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut rng = rand::rng();
    for _ in 0..mib {
        rng.fill_bytes(&mut chunk);
        hasher.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(hasher.finalize())
}

/// The BLAKE3 of the file at `path`, read 1 MiB at a time.
fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&chunk[..n]);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What the benchmark needs to run gets.
struct Bench<'a> {
    lan: &'a Lan,
    client_dir: PathBuf,
    name: String,
    source_hash: blake3::Hash,
    size_mib: u64,
    out: PathBuf,
}

impl Bench<'_> {
    /// `runs` gets with `extra` flags; the wall time of each, in seconds. Prints one line per
    /// run with the MiB each holder sent meanwhile over TCP and over UDP.
    fn scenario(&self, label: &str, runs: u64, extra: &[&str]) -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::new();
        let out = self.out.to_str().context("temporary path is not UTF-8")?;
        for run in 1..=runs {
            let _ = std::fs::remove_file(&self.out);
            let before = self.holder_sent()?;
            let started = Instant::now();
            let mut args = vec!["get", self.name.as_str(), "-o", out];
            args.extend_from_slice(extra);
            let got = client(self.lan, CLIENT, &self.client_dir, &args)?;
            let seconds = started.elapsed().as_secs_f64();
            let after = self.holder_sent()?;
            let hash = hash_file(&self.out)?;
            ensure!(
                hash == self.source_hash,
                "{label} run {run}: the file got has BLAKE3 {hash}, the source {}",
                self.source_hash
            );
            let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
            let sent: Vec<String> = HOLDERS
                .iter()
                .zip(after.iter().zip(&before))
                .map(|(host, ((tcp, udp), (tcp0, udp0)))| {
                    format!("{host} {:.1}+{:.1}", mib(tcp - tcp0), mib(udp - udp0))
                })
                .collect();
            println!(
                "  {label} run {run}: {seconds:6.1} s, {:6.2} MiB/s (command {} ms, via {}); \
                 MiB sent tcp+udp: {}",
                self.size_mib as f64 / seconds,
                got["elapsed_ms"],
                got["via"].as_str().unwrap_or("?"),
                sent.join(", ")
            );
            times.push(seconds);
        }
        let _ = std::fs::remove_file(&self.out);
        Ok(times)
    }

    /// The bytes each holder has sent so far over (TCP, UDP), from the rules of
    /// [`count_transports`].
    fn holder_sent(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        HOLDERS
            .iter()
            .map(|host| {
                let out = self
                    .lan
                    .run(host, &["iptables", "-w", "-v", "-x", "-n", "-L", "OUTPUT"])?;
                let (mut tcp, mut udp) = (None, None);
                // `pkts bytes prot opt in out source destination`: the rules have no target.
                for line in out.lines() {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let bytes = words.get(1).and_then(|b| b.parse::<u64>().ok());
                    match words.get(2) {
                        Some(&("6" | "tcp")) => tcp = bytes,
                        Some(&("17" | "udp")) => udp = bytes,
                        _ => {}
                    }
                }
                match (tcp, udp) {
                    (Some(tcp), Some(udp)) => Ok((tcp, udp)),
                    _ => bail!("{host}: no TCP and UDP byte counters in\n{out}"),
                }
            })
            .collect()
    }
}

/// Two rules without a target in each holder's OUTPUT chain, counting what its uplink sends
/// over TCP and over UDP (QUIC).
fn count_transports(lan: &Lan) -> anyhow::Result<()> {
    for host in HOLDERS {
        for protocol in ["tcp", "udp"] {
            let rule = [
                "iptables", "-w", "-A", "OUTPUT", "-o", UPLINK, "-p", protocol,
            ];
            lan.run(host, &rule)?;
        }
    }
    Ok(())
}

/// Copies the nodes' logs to `$TMPDIR/quickstore-multi-source-bench-logs/<host>.log`.
fn keep_logs(dirs: &[(&str, PathBuf)]) {
    let target = std::env::temp_dir().join("quickstore-multi-source-bench-logs");
    let _ = std::fs::create_dir_all(&target);
    for (host, dir) in dirs {
        let _ = std::fs::copy(dir.join("log"), target.join(format!("{host}.log")));
    }
    println!("node logs in {}", target.display());
}

fn run(size_mib: u64, runs: u64, rate_mbit: u64, slow_mbit: u64) -> anyhow::Result<()> {
    let help = Command::new(binary()).args(["get", "--help"]).output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    let one_source: &[&str] = if help.contains("--max-sources") {
        &["--max-sources", "1"]
    } else {
        &[]
    };

    let lan = Lan::build("msbench", HOLDERS.len() + 1)?;
    let root = tempfile::tempdir()?;
    let config = root.path().join("config.toml");
    std::fs::write(&config, CONFIG)?;
    let hosts: Vec<&str> = HOLDERS.iter().copied().chain([CLIENT]).collect();
    let dirs: Vec<PathBuf> = hosts.iter().map(|h| root.path().join(h)).collect();
    let keys: Vec<Keypair> = hosts
        .iter()
        .map(|h| key_in(u32::from(*h != CLIENT)))
        .collect();
    for (dir, key) in dirs.iter().zip(&keys) {
        std::fs::create_dir_all(dir)?;
        quickstore::identity::write_key(&dir.join("identity.key"), key)?;
    }
    let logs: Vec<(&str, PathBuf)> = hosts.iter().copied().zip(dirs.iter().cloned()).collect();
    let result = (|| -> anyhow::Result<()> {
        let first = keys[0].public().to_peer_id();
        let bootstrap = format!("/ip4/{}/tcp/4001/p2p/{first}", lan.ip(HOLDERS[0]));
        let mut nodes = Nodes(Vec::new());
        nodes.0.push(start(
            &lan,
            hosts[0],
            &dirs[0],
            &config,
            &[
                "--listen",
                "/ip4/0.0.0.0/tcp/4001",
                "--listen",
                "/ip4/0.0.0.0/udp/4001/quic-v1",
            ],
        )?);
        for (host, dir) in hosts.iter().zip(&dirs).skip(1) {
            nodes.0.push(start(
                &lan,
                host,
                dir,
                &config,
                &["--bootstrap", &bootstrap],
            )?);
        }
        let started = Instant::now();
        while !converged(&lan, &dirs) {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the four nodes did not form the network in 60 s"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        println!(
            "network of {} holders + 1 client node formed in {:.1} s",
            HOLDERS.len(),
            started.elapsed().as_secs_f64()
        );

        let source = root.path().join("source");
        let t = Instant::now();
        let source_hash = write_random(&source, size_mib)?;
        println!(
            "wrote {size_mib} MiB of random bytes in {:.1} s (BLAKE3 {source_hash})",
            t.elapsed().as_secs_f64()
        );
        let name = name_in("big", 1);
        let client_dir = dirs[HOLDERS.len()].clone();
        let identity = root.path().join("client.key");
        let t = Instant::now();
        let put = client(
            &lan,
            CLIENT,
            &client_dir,
            &[
                "put",
                source.to_str().context("temporary path is not UTF-8")?,
                &name,
                "--min-copies",
                "3",
                "--identity",
                identity.to_str().context("temporary path is not UTF-8")?,
            ],
        )?;
        let mut holders: Vec<String> = put["holders"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        holders.sort();
        let mut expected: Vec<String> = keys[..HOLDERS.len()]
            .iter()
            .map(|k| k.public().to_peer_id().to_string())
            .collect();
        expected.sort();
        if holders != expected {
            bail!("{name} is held by {holders:?}, not by the three holder nodes {expected:?}");
        }
        println!(
            "put {name} ({size_mib} MiB) on {} holders in {:.1} s (unshaped)",
            holders.len(),
            t.elapsed().as_secs_f64()
        );
        // Only the bytes of the gets should remain.
        std::fs::remove_file(&source)?;

        let bench = Bench {
            lan: &lan,
            client_dir,
            name,
            source_hash,
            size_mib,
            out: root.path().join("got"),
        };
        count_transports(&lan)?;
        for host in HOLDERS {
            lan.limit_rate(host, UPLINK, rate_mbit)?;
        }
        println!("A: 3 holders at {rate_mbit} Mbit/s");
        let a = bench.scenario("A", runs, &[])?;
        println!(
            "B: one source ({})",
            if one_source.is_empty() {
                "plain get: this binary has no --max-sources"
            } else {
                "--max-sources 1"
            }
        );
        let b = bench.scenario("B", runs, one_source)?;
        let slow = HOLDERS[HOLDERS.len() - 1];
        lan.limit_rate(slow, UPLINK, slow_mbit)?;
        println!("C: {slow} at {slow_mbit} Mbit/s, the others at {rate_mbit} Mbit/s");
        let c = bench.scenario("C", runs, &[])?;
        // D: the slow holder stopped (SIGSTOP): what the two fast holders give alone.
        let stopped = nodes.0[HOLDERS.len() - 1].id().to_string();
        let signal = |sig: &str| Command::new("kill").args([sig, &stopped]).status();
        signal("-STOP")?;
        println!("D: {slow} stopped, the others at {rate_mbit} Mbit/s");
        let d = bench.scenario("D", runs, &[]);
        signal("-CONT")?;
        let d = d?;
        drop(nodes);

        let line = rate_mbit as f64 * 1e6 / 8.0 / (1 << 20) as f64;
        println!();
        println!("{size_mib} MiB, {runs} runs each; one holder's uplink is {line:.2} MiB/s");
        println!(
            "{:<40} {:>9} {:>7} {:>7} {:>7}",
            "scenario", "median s", "MiB/s", "mean s", "max s"
        );
        let rows = [
            (format!("A  3 holders at {rate_mbit} Mbit/s"), a),
            (
                format!(
                    "B  one source{}",
                    if one_source.is_empty() {
                        " (plain get)"
                    } else {
                        " (--max-sources 1)"
                    }
                ),
                b,
            ),
            (
                format!("C  2 at {rate_mbit} Mbit/s, 1 at {slow_mbit} Mbit/s"),
                c,
            ),
            (format!("D  2 at {rate_mbit} Mbit/s, 1 stopped"), d),
        ];
        let mean = |times: &[f64]| times.iter().sum::<f64>() / times.len() as f64;
        for (label, times) in &rows {
            let seconds = median(times.clone());
            println!(
                "{label:<40} {seconds:>9.2} {:>7.2} {:>7.2} {:>7.2}",
                size_mib as f64 / seconds,
                mean(times),
                times.iter().copied().fold(f64::NAN, f64::max)
            );
        }
        // Throughputs from the medians, and from the means (a single-source get that picks
        // the slow holder in one run of three shows in the mean, not in the median).
        let rate = |i: usize| size_mib as f64 / median(rows[i].1.clone());
        let mean_rate = |i: usize| size_mib as f64 / mean(&rows[i].1);
        println!(
            "ratio A/B (throughput, >1: more sources help): {:.2} (means: {:.2})",
            rate(0) / rate(1),
            mean_rate(0) / mean_rate(1)
        );
        println!(
            "ratio C/A (throughput, <1: a slow holder hurts): {:.2} (means: {:.2})",
            rate(2) / rate(0),
            mean_rate(2) / mean_rate(0)
        );
        println!(
            "time C/D (one slow holder against the two fast ones alone): {:.2} (means: {:.2})",
            rate(3) / rate(2),
            mean_rate(3) / mean_rate(2)
        );
        Ok(())
    })();
    keep_logs(&logs);
    result
}

fn main() -> anyhow::Result<()> {
    let size_mib = arg("--size-mib", 256);
    let runs = arg("--runs", 3);
    let rate_mbit = arg("--rate-mbit", 100);
    let slow_mbit = arg("--slow-mbit", 10);
    ensure!(
        size_mib > 0 && runs > 0,
        "--size-mib and --runs must be above 0"
    );
    ensure!(rate_mbit > 0 && slow_mbit > 0, "rates must be above 0");
    ensure!(netns::is_root(), "needs root (network namespaces, tc)");
    ensure!(
        binary().exists(),
        "no quickstore binary at {}: cargo build --release --bin quickstore, or set QUICKSTORE_BIN",
        binary().display()
    );
    let started = Instant::now();
    run(size_mib, runs, rate_mbit, slow_mbit)?;
    println!("benchmark took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
