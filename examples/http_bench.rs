//! The HTTP API against the CLI, on three real `quickstore node` processes over loopback
//! (one group, three holders): a file uploaded with `curl -T`, then downloaded alternately
//! with `curl` from the node's HTTP API and with `quickstore get` (every holder at once),
//! `--rounds` times each; prints the medians, the ratio of their throughputs and the peak
//! RSS of the node that serves HTTP (it spools the upload, puts it, and streams the
//! downloads).
//!
//! ```sh
//! cargo build --release && cargo run --release --example http_bench -- --mib 1024 [--rounds 3] [--dir DIR]
//! ```
//!
//! Needs `curl`. The node binary is the `quickstore` beside this example's directory
//! (`target/release/quickstore`).

#[path = "support/args.rs"]
mod args;
#[path = "support/files.rs"]
mod files;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use args::arg;

/// A node process, killed when dropped.
struct Node {
    child: Child,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Peak resident memory of the process so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    fn node_json(&self) -> serde_json::Value {
        let path = self.dir.join("node.json");
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
            {
                return value;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no node.json in {}", self.dir.display());
    }
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/release/examples");
    let bin = dir.join("quickstore");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release first",
        bin.display()
    );
    bin
}

fn start(bin: &Path, dir: PathBuf, extra: &[&str]) -> Node {
    std::fs::create_dir_all(&dir).expect("data dir");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let mut child = Command::new(bin)
        .args(["node", "--data-dir"])
        .arg(&dir)
        .args([
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--network",
            "http-bench",
            "--groups",
            "1",
            "--gossip-period-ms",
            "200",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("the node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its first line");
    assert!(line.starts_with("listening on"), "{line}");
    Node { child, dir }
}

fn blake3_of(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).expect("readable"))
        .expect("read");
    hasher.finalize().to_hex().to_string()
}

/// Runs `command`, which must succeed; its wall time in seconds.
fn timed(command: &mut Command) -> f64 {
    let started = Instant::now();
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let mib = arg("--mib", 1024);
    let rounds = arg("--rounds", 3).max(1);
    let bytes = mib << 20;
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("qs-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("root");
    let bin = binary();

    let first = start(&bin, root.join("n0"), &["--http", "127.0.0.1:0"]);
    let file = first.node_json();
    let boot = format!(
        "{}/p2p/{}",
        file["listen_addrs"][0].as_str().expect("an address"),
        file["peer_id"].as_str().expect("a PeerId")
    );
    let http = file["http"].as_str().expect("an HTTP address").to_string();
    let _others: Vec<Node> = (1..3)
        .map(|i| start(&bin, root.join(format!("n{i}")), &["--bootstrap", &boot]))
        .collect();
    std::thread::sleep(Duration::from_secs(4));

    let source = root.join("source");
    files::write_file(&source, bytes).expect("the source file");
    let url = format!("{http}files/bench/file");
    let upload_s = timed(
        Command::new("curl")
            .args(["-sS", "--fail-with-body", "-o", "/dev/null", "-T"])
            .arg(&source)
            .arg(&url),
    );
    let rss_after_upload = first.peak_rss_mib();
    let expected = blake3_of(&source);
    std::fs::remove_file(&source).expect("removed");

    let got = root.join("got");
    let mut curl_s = Vec::new();
    let mut get_s = Vec::new();
    for _ in 0..rounds {
        let _ = std::fs::remove_file(&got);
        curl_s.push(timed(
            Command::new("curl")
                .args(["-sS", "--fail-with-body", "-o"])
                .arg(&got)
                .arg(&url),
        ));
        assert_eq!(blake3_of(&got), expected, "curl got other bytes");
        std::fs::remove_file(&got).expect("removed");
        get_s.push(timed(
            Command::new(&bin)
                .args(["get", "bench/file", "-q", "-o"])
                .arg(&got)
                .arg("--data-dir")
                .arg(root.join("n1")),
        ));
        assert_eq!(blake3_of(&got), expected, "quickstore get got other bytes");
    }
    let rate = |s: f64| bytes as f64 / s / (1 << 20) as f64;
    let (curl, get) = (median(curl_s.clone()), median(get_s.clone()));
    println!("bytes                       {bytes} ({mib} MiB), {rounds} rounds");
    println!(
        "curl -T (upload, 3 copies)  {upload_s:.2} s  {:.0} MiB/s",
        rate(upload_s)
    );
    println!(
        "curl download (median)      {curl:.2} s  {:.0} MiB/s  (runs {curl_s:.2?})",
        rate(curl)
    );
    println!(
        "quickstore get (median)     {get:.2} s  {:.0} MiB/s  (runs {get_s:.2?})",
        rate(get)
    );
    println!("curl / get throughput       {:.2}", get / curl);
    println!(
        "HTTP node peak RSS          {rss_after_upload:.0} MiB after the upload, {:.0} MiB after the downloads",
        first.peak_rss_mib()
    );
    drop(first);
    let _ = std::fs::remove_dir_all(&root);
}
