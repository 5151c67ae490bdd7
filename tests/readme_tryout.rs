//! README.md's two-node try-out, run as written: its commands are read from the README (the
//! `sh` block after "For a two-node try-out"), in order, as real processes on default
//! settings. Only what a reader substitutes is substituted: `cargo run --release --` is the
//! binary under test, `/tmp/qs1`, `/tmp/qs2` and `/tmp/report.pdf` live in a temporary
//! directory, `PORT` and `PEERID` come from the first node's `listening on` line, and
//! `./report.pdf` is a file made for the test. Every command must succeed, and the put must
//! report its copies honestly (two nodes, R = 3: two copies, with the reason).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_quickstore");

/// The try-out's commands, as the README has them.
fn tryout_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split("For a two-node try-out")
        .nth(1)
        .expect("the README has a two-node try-out");
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sh block follows it");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A node started by the try-out; killed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The words of `line` after `cargo run --release --`, with the reader's substitutions.
fn words(line: &str, tmp: &Path, bootstrap: Option<&str>) -> Vec<String> {
    let rest = line
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("not a quickstore command: {line}"));
    rest.split_whitespace()
        .map(|w| {
            let w = w
                .replace("/tmp/qs1", &tmp.join("qs1").display().to_string())
                .replace("/tmp/qs2", &tmp.join("qs2").display().to_string())
                .replace(
                    "/tmp/report.pdf",
                    &tmp.join("got.pdf").display().to_string(),
                );
            match bootstrap {
                Some(address) if w.contains("PORT") => address.to_string(),
                _ => w,
            }
        })
        .collect()
}

#[test]
fn the_readme_tryout_works_as_written() {
    let commands = tryout_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let report: Vec<u8> = (0..150_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(tmp.path().join("report.pdf"), &report).expect("report.pdf");

    let mut nodes = Vec::new();
    let mut bootstrap: Option<String> = None;
    let mut put_report = None;
    for line in &commands {
        let args = words(line, tmp.path(), bootstrap.as_deref());
        if args[0] == "node" {
            // The first node's loopback TCP address is what a reader copies.
            let (node, address) = start(&args, tmp.path(), |a| {
                bootstrap.is_some() || a.starts_with("/ip4/127.0.0.1/tcp/")
            });
            bootstrap.get_or_insert(address);
            nodes.push(node);
            continue;
        }
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("the command runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{line}\nfailed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args[0] == "put" {
            put_report = Some(stdout);
        }
    }
    assert_eq!(nodes.len(), 2, "the try-out starts two nodes");
    let got = std::fs::read(tmp.path().join("got.pdf")).expect("get wrote -o");
    assert!(got == report, "the file got back differs");
    let put = put_report.expect("the try-out puts a file");
    assert!(
        put.contains("2 copies (3 wanted: the name's group has 2 live nodes)"),
        "the put does not say it has two of three copies, and why: {put}"
    );
    drop(nodes);

    // put, get, ls and rm against a one-node network, the same way.
    let lone = tmp.path().join("lone");
    let dir = lone.display().to_string();
    let (node, _) = start(&["node", "--data-dir", &dir], tmp.path(), |_| true);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--data-dir", &dir])
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("the command runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let put = run(&["put", "report.pdf", "docs/report.pdf"]);
    assert!(
        put.contains("1 copy (3 wanted: the name's group has 1 live node)"),
        "{put}"
    );
    run(&["get", "docs/report.pdf", "-o", "again.pdf"]);
    assert!(std::fs::read(tmp.path().join("again.pdf")).expect("got") == report);
    let ls = run(&["ls"]);
    assert!(
        ls.lines().any(|l| l.ends_with("  docs/report.pdf")) && ls.contains("1 name"),
        "{ls}"
    );
    let rm = run(&["rm", "docs/report.pdf"]);
    assert!(rm.contains("docs/report.pdf"), "{rm}");
    let ls = run(&["ls"]);
    assert!(!ls.contains("docs/report.pdf"), "{ls}");
    drop(node);
}

/// Starts `quickstore ARGS` (a node) and returns once it listens, with the first address it
/// prints that `wanted` accepts.
fn start(
    args: &[impl AsRef<std::ffi::OsStr>],
    cwd: &Path,
    wanted: impl Fn(&str) -> bool,
) -> (Node, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let stdout = child.stdout.take().expect("stdout");
    let node = Node(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.starts_with("listening on"), "{first:?}");
    let address = std::iter::once(first)
        .chain(lines.by_ref().map_while(Result::ok))
        .filter_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .find(|a| wanted(a))
        .expect("the node listens where wanted");
    // Keep reading its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (node, address)
}
