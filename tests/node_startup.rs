//! Real `quickstore node` processes at start and stop: bad inputs fail at once in one line
//! naming what failed (a bootstrap without `/p2p/`, a config file with a syntax error, a busy
//! metrics port, a data directory in use, a listen port in use); one SIGINT stops a node;
//! free space is bounded by the disk (a node on a small tmpfs, as root).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::ns_node::BIN;
use common::tmpfs::Tmpfs;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]

[nat]
mdns = false

[kelips]
network_name = "startup-test"
heartbeat_period_ms = 100
gossip_period_ms = 100
"#;

/// A fresh directory with `config.toml`.
fn root(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("qs-startup-{name}-"))
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("config.toml"), CONFIG).expect("config");
    dir
}

/// `quickstore node --data-dir DIR --config ROOT/config.toml ARGS`, as a user starts it (no
/// `RUST_LOG`: the default levels).
fn node_command(root: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(root.join("config.toml"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// A node that runs; killed when dropped.
struct Running {
    child: Child,
    /// Its first address, `…/p2p/<PeerId>`.
    address: String,
}

impl Running {
    /// Starts a node and waits for its first `listening on` line.
    fn start(mut cmd: Command, log: &Path) -> Running {
        let log = std::fs::File::create(log).expect("log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("quickstore node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the first line");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Running { child, address }
    }

    /// The port of its first address.
    fn port(&self) -> u16 {
        let parts: Vec<&str> = self.address.split('/').collect();
        parts[4].parse().expect("a port")
    }

    /// Waits until it exits, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("waits") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that must fail at start, at most 30 s.
fn run_failing(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quickstore starts");
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    wait.recv_timeout(Duration::from_secs(30))
        .expect("the command ended within 30 s")
        .expect("its output")
}

/// Asserts that `out` failed with exactly one line on stderr containing every one of `names`.
fn assert_one_line_failure(what: &str, out: &Output, names: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: exit {:?}, stderr {stderr:?}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {stderr:?}");
    for name in names {
        assert!(
            lines[0].contains(name),
            "{what}: {name:?} not named in {stderr:?}"
        );
    }
}

#[test]
fn a_bootstrap_without_p2p_is_named_whole() {
    let root = root("bootstrap");
    let dir = root.path().join("n");
    let given = "/ip4/127.0.0.1/tcp/35581";
    let out = run_failing(node_command(root.path(), &dir, &["--bootstrap", given]));
    assert_one_line_failure("bootstrap without /p2p/", &out, &[given, "/p2p/"]);
}

#[test]
fn a_config_syntax_error_is_one_line_naming_file_line_and_column() {
    let root = root("syntax");
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"\n\n[kelips\ngroups = 1\n",
    )
    .expect("bad config");
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--data-dir")
        .arg(root.path().join("n"))
        .arg("--config")
        .arg(&bad)
        .env_remove("RUST_LOG");
    let out = run_failing(cmd);
    let file = bad.display().to_string();
    assert_one_line_failure("config syntax error", &out, &[&file, "line 4, column"]);
}

#[test]
fn a_data_dir_in_use_and_busy_ports_are_refused_in_one_line() {
    let root = root("busy");
    let first_dir = root.path().join("first");
    let mut first = Running::start(
        node_command(root.path(), &first_dir, &[]),
        &root.path().join("first.log"),
    );

    // A second node on the same data directory: refused, naming it and the first's pid.
    let out = run_failing(node_command(root.path(), &first_dir, &[]));
    let dir = first_dir.display().to_string();
    let pid = format!("pid {}", first.child.id());
    assert_one_line_failure("data dir in use", &out, &[&dir, "in use", &pid]);

    // A second node on the first one's TCP port: refused, naming the address.
    let taken = format!("/ip4/127.0.0.1/tcp/{}", first.port());
    let out = run_failing(node_command(
        root.path(),
        &root.path().join("second"),
        &["--listen", &taken],
    ));
    assert_one_line_failure("tcp port in use", &out, &[&taken, "in use"]);

    // The same for a QUIC port.
    let quic_dir = root.path().join("quic");
    let mut quic = Running::start(
        node_command(
            root.path(),
            &quic_dir,
            &["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"],
        ),
        &root.path().join("quic.log"),
    );
    let taken = format!("/ip4/127.0.0.1/udp/{}/quic-v1", quic.port());
    let out = run_failing(node_command(
        root.path(),
        &root.path().join("third"),
        &["--listen", &taken],
    ));
    assert_one_line_failure("udp port in use", &out, &[&taken, "in use"]);

    // A busy metrics port: refused, naming the address.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let metrics = holder.local_addr().expect("bound").to_string();
    let out = run_failing(node_command(
        root.path(),
        &root.path().join("fourth"),
        &["--metrics", &metrics],
    ));
    assert_one_line_failure("metrics port in use", &out, &[&metrics]);

    // The first nodes never noticed.
    assert!(first.child.try_wait().expect("waits").is_none());
    assert!(quic.child.try_wait().expect("waits").is_none());
    let _ = quic.wait_exit(Duration::ZERO);
}

/// Sends SIGINT to `child`.
fn interrupt(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on a child of this process, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill -INT");
}

/// One SIGINT stops a node, at once after it started and later, while it is running.
#[test]
fn one_sigint_stops_a_node() {
    let root = root("sigint");
    for i in 0..6 {
        let dir = root.path().join(format!("n{i}"));
        let mut node = Running::start(
            node_command(root.path(), &dir, &[]),
            &root.path().join(format!("n{i}.log")),
        );
        // Half of them right after their first line (while the loop is busy with the
        // start), the other half once they have run a while.
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let sent = Instant::now();
        interrupt(&node.child);
        let status = node.wait_exit(Duration::from_secs(15));
        let log =
            std::fs::read_to_string(root.path().join(format!("n{i}.log"))).unwrap_or_default();
        let status = status.unwrap_or_else(|| {
            panic!("node {i} still runs 15 s after one SIGINT; its log:\n{log}")
        });
        assert!(status.success(), "node {i} exited with {status:?}:\n{log}");
        println!(
            "node {i} stopped {} ms after SIGINT",
            sent.elapsed().as_millis()
        );
        assert!(
            !dir.join("node.json").exists(),
            "node {i} did not stop cleanly"
        );
    }
}

/// A node's status through the real `quickstore status --json`.
fn status_json(dir: &Path) -> serde_json::Value {
    // node.json is written by a task of its own just after the node listens: give it time.
    let started = std::time::Instant::now();
    let out = loop {
        let out = Command::new(BIN)
            .args(["status", "--json", "--data-dir"])
            .arg(dir)
            .output()
            .expect("status runs");
        if out.status.success() || started.elapsed() > std::time::Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn free_bytes(status: &serde_json::Value) -> u64 {
    status["counters"]["storage_free_bytes"]
        .as_u64()
        .expect("storage_free_bytes")
}

/// Scrapes `/metrics` at `addr` and returns `quickstore_files_storage_free_bytes`.
fn metrics_free(addr: &str) -> u64 {
    let mut socket = std::net::TcpStream::connect(addr).expect("metrics answer");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    socket.read_to_string(&mut body).expect("response");
    body.lines()
        .find(|l| l.starts_with("quickstore_files_storage_free_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no free bytes gauge in {body}"))
}

/// The node's free space is the disk's when the disk is smaller than `files.storage_bytes`
/// (100 GiB by default): in status, metrics and placement, so a put that does not fit is
/// refused saying so instead of failing on a full disk.
#[test]
fn free_space_is_bounded_by_the_disk() {
    const TMPFS: u64 = 64 << 20;
    let Some(tmpfs) = Tmpfs::mount(TMPFS) else {
        return;
    };
    let root = root("tmpfs");
    let dir = tmpfs.path().join("node");
    let metrics = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        probe.local_addr().expect("bound").to_string()
    };
    let node = Running::start(
        node_command(root.path(), &dir, &["--metrics", &metrics]),
        &root.path().join("node.log"),
    );
    let free = free_bytes(&status_json(&dir));
    assert!(
        free > 0 && free <= TMPFS,
        "a node on a {TMPFS}-byte tmpfs reports {free} bytes free"
    );
    let gauge = metrics_free(&metrics);
    assert!(gauge <= TMPFS, "metrics report {gauge} bytes free");

    // Fill the disk behind the node's back: its free space follows (read once a second).
    let filler = vec![7u8; 1 << 20];
    let mut file = std::fs::File::create(tmpfs.path().join("filler")).expect("filler");
    for _ in 0..56 {
        file.write_all(&filler).expect("fill");
    }
    file.sync_all().expect("filled");
    drop(file);
    let started = Instant::now();
    let free = loop {
        let free = free_bytes(&status_json(&dir));
        if free < 8 << 20 {
            break free;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "free space still {free} bytes 10 s after the disk filled"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // A put of more than that is refused before any byte moves, saying why.
    let big = root.path().join("big");
    std::fs::write(&big, vec![1u8; 12 << 20]).expect("a 12 MiB file");
    let out = Command::new(BIN)
        .arg("put")
        .arg(&big)
        .arg("big")
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("put runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a put larger than the free {free} bytes was accepted"
    );
    assert!(
        stderr.contains("storage") && !stderr.contains("connection is closed"),
        "{stderr}"
    );
    drop(node);
    drop(tmpfs);
}

/// `quickstore status | head` and the like: a client whose reader went away stops quietly
/// (killed by SIGPIPE, as `cat` is), instead of panicking with "failed printing to stdout".
#[test]
fn a_client_whose_reader_went_away_stops_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quickstore starts");
    // The reader goes before the child writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}
