//! The CLI as a newcomer meets it, against real `quickstore node` processes on loopback: one
//! regression test per defect seen when trying it (issue 13), through the real binary.
//!
//! * `one_node`: a node of a 2-group network in the fixed mode (`--groups`-style k = 2, so one
//!   group has no node; groups that size themselves never leave one empty): `ls` lists what
//!   exists and names the group it missed; streams (`put -`, a FIFO) are stored whole;
//!   `get -o -` and `-o /dev/stdout` write in place; copies are reported honestly and
//!   `--min-copies` fails; stale `.part` files go; errors are one line naming the thing;
//!   `--force`; a tree of 1,000 small and a few large files round-trips; `status` shows the
//!   network's size, the group without a node and the names below R.
//! * `dead_holders`: 5 nodes on the defaults (one group): a get right after `kill -9` of a
//!   holder is served by a live one at once; with every holder dead it says `unreachable`,
//!   not `not found`.
//! * `first_home_fills_up`: 5 nodes on the defaults, each on a tmpfs: the first home's disk
//!   fills up while the bytes flow; the next home takes them and the put ends with 3 copies.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Proc, identities, prepare, wait_converged};
use quickstore_behaviours::id::name_facts;
use serde_json::Value;

fn config(groups: u32) -> String {
    common::fast_config("cli-test", groups)
}

/// What a CLI run gave.
struct Run {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs the CLI in `cwd` with `stdin` as its standard input.
fn cli_with(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quickstore"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write stdin");
    }
    let out = child.wait_with_output().expect("the CLI ends");
    Run {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cli(cwd: &Path, args: &[&str]) -> Run {
    cli_with(cwd, args, None)
}

/// Asserts `run` failed with exactly one line on stderr containing each of `words`.
fn one_line_error(run: &Run, words: &[&str]) {
    assert!(!run.ok, "expected a failure, got {}", run.text());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {:?}", run.stderr);
    for word in words {
        assert!(
            lines[0].contains(word),
            "{word:?} missing in {:?}",
            lines[0]
        );
    }
}

/// A name of `group` among `groups`, made from `stem`.
fn name_in(group: u32, groups: u32, stem: &str) -> String {
    (0..)
        .map(|i| format!("{stem}-{i}"))
        .find(|n| name_facts(n, groups).0 == group)
        .expect("some name lands there")
}

fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn one_node() {
    let root = std::env::temp_dir().join(format!("qs-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(root.join("config.toml"), config(2)).expect("config");
    let mut procs = prepare(&root, identities(2, 1));
    procs.retain(|p| p.group == 0);
    let node = &mut procs[0];
    node.start(&root, &[]);
    let dir = node.dir.to_str().expect("utf-8").to_string();
    let at = ["--data-dir", dir.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(at.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&work, &args)
    };

    // Defect 2: a stream is stored whole, from standard input and from a FIFO.
    let piped = name_in(0, 2, "piped");
    let args = with(&["put", "-", &piped, "--json"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let put = cli_with(&work, &args, Some(b"x\n"));
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(put.json()["size"], 2, "{}", put.text());
    let fifo = work.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let content = bytes(100_000, 1);
    let writer = {
        let (fifo, content) = (fifo.clone(), content.clone());
        std::thread::spawn(move || std::fs::write(fifo, content).expect("fifo write"))
    };
    let from_fifo = name_in(0, 2, "fifo");
    let put = run(&["put", fifo.to_str().expect("utf-8"), &from_fifo, "--json"]);
    writer.join().expect("writer");
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(put.json()["size"], 100_000);

    // Defect 6: one copy of three is said, with the reason; --min-copies fails.
    assert_eq!(put.json()["copies"], 1);
    assert_eq!(put.json()["wanted"], 3);
    assert!(
        put.json()["fewer_because"]
            .as_str()
            .is_some_and(|s| s.contains("1 live node")),
        "{}",
        put.text()
    );
    let strict = run(&["put", "-", &piped, "--min-copies", "2"]);
    one_line_error(&strict, &["--min-copies"]);

    // Status of the network: one node, group 1 has none, both names are below R.
    let status = run(&["status", "--json"]);
    assert!(status.ok, "{}", status.stderr);
    let status = status.json();
    assert_eq!(status["network_size_estimate"], 1, "{status}");
    assert_eq!(status["groups_without_node"], serde_json::json!([1]));
    assert_eq!(status["names_below_replication_total"], 2, "{status}");
    let below: Vec<(&str, u64)> = status["names_below_replication"]
        .as_array()
        .expect("names below R")
        .iter()
        .filter_map(|n| Some((n["name"].as_str()?, n["copies"].as_u64()?)))
        .collect();
    assert!(
        below.contains(&(piped.as_str(), 1)) && below.contains(&(from_fifo.as_str(), 1)),
        "{below:?}"
    );
    assert_eq!(status["names_in_group"], 2, "{status}");
    // The files core tracks both names it holds; nothing is in flight.
    assert_eq!(status["files"]["names_tracked"], 2, "{status}");
    assert_eq!(status["files"]["puts_in_progress"], 0, "{status}");
    let text = run(&["status"]).text();
    assert!(
        text.contains("about 1 node in 1 of 2 groups; no node known in group 1")
            && text.contains("2 names with fewer than 3 copies live"),
        "{text}"
    );

    // ls --versions: a second put of a name keeps the first as an older version.
    let args = with(&["put", "-", &piped]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let put = cli_with(&work, &args, Some(b"second\n"));
    assert!(put.ok, "{}", put.stderr);
    let started = Instant::now();
    let listed = loop {
        // The other group has no node: the listing is incomplete (exit 1) but says what it has.
        let ls = run(&["ls", &piped, "--versions", "--json"]);
        let listed = ls.json()["names"][0].clone();
        let older = listed["older"].as_array().map_or(0, Vec::len);
        if older == 1 || started.elapsed() > Duration::from_secs(10) {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed["version"], 2, "{listed}");
    assert_eq!(listed["size"], 7, "{listed}");
    assert_eq!(listed["older"][0]["version"], 1, "{listed}");
    assert_eq!(listed["older"][0]["size"], 2, "{listed}");
    assert_eq!(listed["older"][0]["copies"], 1, "{listed}");
    let text = run(&["ls", &piped, "--versions", "--bytes"]).text();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["2", "1", "1", piped.as_str(), "(older", "version)"]),
        "{text}"
    );
    let plain = run(&["ls", &piped, "--json"]);
    assert!(plain.json()["names"][0].get("older").is_none());

    // Defect 3: -o - and -o /dev/stdout write the bytes in place.
    let got = run(&["get", &from_fifo, "-o", "-"]);
    assert!(got.ok, "{}", got.stderr);
    assert!(got.stdout == content, "stdout differs");
    let got = run(&["get", &from_fifo, "-o", "/dev/stdout"]);
    assert!(got.ok && got.stdout == content, "{}", got.stderr);
    assert!(
        std::fs::symlink_metadata("/dev/stdout").is_ok_and(|m| m.file_type().is_symlink()),
        "/dev/stdout is no longer a symbolic link"
    );

    // Defect 8: a temp file of a get whose process is gone is removed by the next get.
    let stale = work.join(format!(".{from_fifo}.quickstore-99999999-0badf00d.part"));
    std::fs::write(&stale, b"left by a kill -9").expect("stale");
    let got = run(&["get", &from_fifo]);
    assert!(got.ok, "{}", got.stderr);
    assert!(!stale.exists(), "the stale temp file is still there");
    assert!(std::fs::read(work.join(&from_fifo)).expect("got") == content);

    // --force: another file is not replaced silently; the same bytes are a no-op.
    std::fs::write(work.join(&from_fifo), b"mine").expect("write");
    let got = run(&["get", &from_fifo]);
    one_line_error(&got, &["--force", &from_fifo]);
    assert_eq!(std::fs::read(work.join(&from_fifo)).expect("kept"), b"mine");
    let got = run(&["get", &from_fifo, "--force"]);
    assert!(got.ok, "{}", got.stderr);
    let got = run(&["get", &from_fifo, "--json"]);
    assert!(got.ok && got.json()["unchanged"] == true, "{}", got.text());

    // Defect 12: a name with a newline prints escaped; ls has a header and human sizes.
    let odd = name_in(0, 2, "odd\nname");
    let put = run(&["put", fifo_free_file(&work, 3000).as_str(), &odd]);
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(put.text().lines().count(), 1, "{}", put.text());

    // Defect 1: ls lists every name of the group that has a node, names the group it
    // could not list, and exits non-zero.
    let ls = run(&["ls", "--json"]);
    assert!(!ls.ok, "an incomplete listing exited 0");
    let names: Vec<String> = ls.json()["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    for expected in [&piped, &from_fifo, &odd] {
        assert!(names.contains(expected), "{expected:?} not in {names:?}");
    }
    assert_eq!(
        ls.json()["unreachable_groups"][0]["group"],
        1,
        "{}",
        ls.text()
    );
    let ls = run(&["ls"]);
    one_line_error(&ls, &["incomplete", "group 1"]);
    let text = ls.text();
    assert!(text.starts_with("      SIZE"), "{text}");
    assert!(text.contains("97.7 KiB"), "{text}");
    assert!(text.contains("\"odd\\nname"), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");

    // Defect 12: rm says what it deleted, without a hash of nothing or "1 holders".
    let rm = run(&["rm", &odd]);
    assert!(rm.ok, "{}", rm.stderr);
    assert!(rm.text().starts_with("deleted "), "{}", rm.text());
    assert!(!rm.text().contains("holders") && !rm.text().contains("0000000000"));

    // Defect 11: one line naming the thing that failed.
    let missing = name_in(0, 2, "missing");
    // (A lone node answers "unreachable" for a name it lacks: its lookup finds no other
    // member to ask. The line names the name either way.)
    one_line_error(&run(&["get", &missing]), &[&missing]);
    let stale_dir = root.join("stale");
    std::fs::create_dir_all(&stale_dir).expect("dir");
    let node_file = std::fs::read_to_string(node.dir.join("node.json")).expect("node.json");
    let mut node_json: Value = serde_json::from_str(&node_file).expect("json");
    node_json["pid"] = Value::from(99_999_999u32);
    std::fs::write(stale_dir.join("node.json"), node_json.to_string()).expect("write");
    let stale_run = cli(
        &work,
        &["ls", "--data-dir", stale_dir.to_str().expect("utf-8")],
    );
    one_line_error(&stale_run, &["no node running", "99999999 has exited"]);
    let dead = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", node.peer);
    let started = Instant::now();
    let dead_run = cli(&work, &["get", &piped, "--peer", &dead]);
    one_line_error(&dead_run, &["unreachable", "127.0.0.1/tcp/1"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused dial waited"
    );

    // A tree of 1,000 small files and a few large ones round-trips identical.
    let tree = work.join("tree");
    for i in 0..1000u32 {
        let sub = tree.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).expect("dir");
        std::fs::write(
            sub.join(format!("f{i}")),
            bytes((i as usize * 37) % 5000, i),
        )
        .expect("small");
    }
    for i in 0..3u32 {
        std::fs::write(tree.join(format!("large{i}")), bytes(3 << 20, 100 + i)).expect("large");
    }
    std::os::unix::fs::symlink("/", tree.join("to-root")).expect("symlink");
    // Names under a prefix spread over both groups; only one group has a node, so the
    // tree's prefix is chosen among those the node holds: every name gets its own check.
    let prefix = "t";
    let put = run(&["put", "tree", prefix, "--json", "--jobs", "8"]);
    let stored = put.json()["stored"].as_array().map_or(0, Vec::len);
    let failed = put.json()["failed"].as_array().map_or(0, Vec::len);
    assert_eq!(stored + failed, 1003, "{}", put.stderr);
    assert_eq!(put.json()["skipped"].as_array().map_or(0, Vec::len), 1);
    for item in put.json()["failed"].as_array().expect("failed") {
        assert!(
            item[1].as_str().is_some_and(|s| s.contains("group 1")),
            "a put failed for another reason than the empty group: {item}"
        );
    }
    let back = work.join("back");
    let get = run(&["get", "t/", "-o", "back", "--json", "--jobs", "8"]);
    assert_eq!(
        get.json()["got"].as_array().map_or(0, Vec::len),
        stored,
        "{}",
        get.stderr
    );
    for item in put.json()["stored"].as_array().expect("stored") {
        let name = item["name"].as_str().expect("name");
        let relative = &name[2..];
        let original = std::fs::read(tree.join(relative)).expect("original");
        let fetched = std::fs::read(back.join(relative)).expect("fetched");
        assert!(original == fetched, "{name} differs");
    }
}

/// A regular file of `len` bytes in `dir`; its path.
fn fifo_free_file(dir: &Path, len: usize) -> String {
    let path = dir.join(format!("plain-{len}"));
    std::fs::write(&path, bytes(len, 7)).expect("file");
    path.to_str().expect("utf-8").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_holders() {
    let (root, work, mut procs) = network("dead", 5).await;
    let source = work.join("source");
    std::fs::write(&source, bytes(2 << 20, 9)).expect("source");
    let peer = |p: &Proc| p.address.as_ref().expect("running").to_string();
    let put = cli(
        &work,
        &["put", "source", "f", "--peer", &peer(&procs[0]), "--json"],
    );
    assert!(put.ok, "{}", put.stderr);
    let holders: Vec<String> = holders_of(&put);
    assert_eq!(holders.len(), 3);
    let is_holder = |p: &Proc| holders.contains(&p.peer.to_string());
    let entry = procs
        .iter()
        .position(|p| !is_holder(p))
        .expect("a node that holds nothing");
    // The tuple must have reached the entry node first (it is not a holder: it learns the
    // tuple by gossip), so that what is tested here is the dial of a dead holder.
    let spread = Instant::now();
    loop {
        let ls = cli(&work, &["ls", "--json", "--peer", &peer(&procs[entry])]);
        let listed = ls.json()["names"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n["name"] == "f"));
        if listed {
            break;
        }
        assert!(
            spread.elapsed() < Duration::from_secs(10),
            "the tuple never reached the entry node"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // kill -9 one holder, then get at once through a node that is not one.
    let victim = procs.iter().position(is_holder).expect("a holder");
    procs[victim].kill();
    let started = Instant::now();
    let got = cli(
        &work,
        &["get", "f", "-o", "got", "--peer", &peer(&procs[entry])],
    );
    assert!(got.ok, "{}", got.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a get with one dead holder took {:?}",
        started.elapsed()
    );
    // Every holder dead: unreachable, naming how many, not "not found".
    for p in procs
        .iter_mut()
        .filter(|p| p.child.is_some() && is_holder(p))
    {
        p.kill();
    }
    let got = cli(
        &work,
        &["get", "f", "-o", "again", "--peer", &peer(&procs[entry])],
    );
    assert!(!got.ok);
    assert!(
        got.stderr.contains("unreachable") && !got.stderr.contains("not found"),
        "{}",
        got.stderr
    );
    assert!(!work.join("again").exists());
    // Once the group has marked them failed (t_fail = 1.5 s), the name is "unavailable":
    // stored, with every holder down. Never "not found": the bytes are on their disks.
    let get_again = ["get", "f", "-o", "again", "--peer", &peer(&procs[entry])].map(String::from);
    let got = until(&work, &get_again, "not found", |got| {
        got.stderr.contains("unavailable")
    });
    assert!(got.stderr.contains("3 listed holders"), "{}", got.stderr);
    // Still so after the holders left the views (2 × t_fail): the tuple is kept
    // (`orphan_tuple_ttl_ms`, 1 h by default), not dropped.
    std::thread::sleep(Duration::from_millis(2 * 1500 + 1500));
    let got = cli(&work, &get_again.each_ref().map(String::as_str));
    assert!(got.stderr.contains("unavailable"), "{}", got.stderr);
    // One holder back with its disk: the same get succeeds, byte for byte.
    let bootstrap = procs[entry].address.clone().expect("running");
    procs[victim].start(&root, &[bootstrap]);
    until(&work, &get_again, "not found", |got| got.ok);
    let original = std::fs::read(&source).expect("source");
    assert!(std::fs::read(work.join("again")).expect("again") == original);
    // Removed, it is not found, and stays so.
    let rm = cli(&work, &["rm", "f", "--peer", &peer(&procs[entry])]);
    assert!(rm.ok, "{}", rm.stderr);
    let got = cli(&work, &get_again.each_ref().map(String::as_str));
    assert!(
        !got.ok && got.stderr.contains("not found"),
        "{}",
        got.stderr
    );
}

/// A name whose holders are all down can still be removed (its tuple is kept while they
/// may return), and is then not found, even once they leave the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_names_can_be_removed() {
    let (_root, work, mut procs) = network("rm", 4).await;
    std::fs::write(work.join("u"), bytes(100_000, 3)).expect("file");
    let peer = |p: &Proc| p.address.as_ref().expect("running").to_string();
    let put = cli(
        &work,
        &["put", "u", "u", "--peer", &peer(&procs[0]), "--json"],
    );
    assert!(put.ok, "{}", put.stderr);
    let holders: Vec<String> = holders_of(&put);
    assert_eq!(holders.len(), 3);
    let entry = procs
        .iter()
        .position(|p| !holders.contains(&p.peer.to_string()))
        .expect("the one node that holds nothing");
    // The entry node learns the tuple by gossip. (A get through it can succeed before: its
    // lookup is answered by a holder. Killed holders then leave it alone, not knowing.)
    let status = ["status", "--json", "--peer", &peer(&procs[entry])].map(String::from);
    until(&work, &status, "refused", |s| {
        s.json()["names_in_group"] == 1
    });
    let get = ["get", "u", "-o", "-", "--peer", &peer(&procs[entry])].map(String::from);
    until(&work, &get, "refused", |got| got.ok);
    for p in procs.iter_mut() {
        if holders.contains(&p.peer.to_string()) {
            p.kill();
        }
    }
    until(&work, &get, "not found", |got| {
        got.stderr.contains("unavailable")
    });
    let rm = cli(&work, &["rm", "u", "--peer", &peer(&procs[entry])]);
    assert!(rm.ok, "{}", rm.stderr);
    // Past 2 × t_fail the holders have left the views: still removed, not back.
    std::thread::sleep(Duration::from_millis(2 * 1500 + 1500));
    let got = cli(&work, &get.each_ref().map(String::as_str));
    assert!(
        !got.ok && got.stderr.contains("not found"),
        "{}",
        got.stderr
    );
}

/// A network of `nodes` processes (one group: fewer than 6R) under a fresh root; the root, the client's
/// working directory and the processes, converged.
async fn network(tag: &str, nodes: usize) -> (PathBuf, PathBuf, Vec<Proc>) {
    let root = std::env::temp_dir().join(format!("qs-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    // Groups that size themselves (the default): five nodes are one group.
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("cli-test"),
    )
    .expect("config");
    let mut procs: Vec<Proc> = prepare(&root, identities(1, nodes));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 1, "convergence", Duration::from_secs(60)).await;
    (root, work, procs)
}

/// The holders a `put --json` reported.
fn holders_of(put: &Run) -> Vec<String> {
    put.json()["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect()
}

/// Runs the CLI with `args` until `done` says its run is the awaited one (at most 30 s),
/// asserting on the way that no run says `never`; the last run.
fn until(cwd: &Path, args: &[String], never: &str, done: impl Fn(&Run) -> bool) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    loop {
        let run = cli(cwd, &args);
        assert!(!run.stderr.contains(never), "{}", run.stderr);
        if done(&run) {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} never gave the awaited answer: {}",
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether `proc`'s log has a line containing `needle`.
fn logged(proc: &Proc, needle: &str) -> bool {
    std::fs::read_to_string(proc.log()).is_ok_and(|log| log.contains(needle))
}

/// Bytes of the partial blobs `proc` is writing now.
fn partial_bytes(proc: &Proc) -> u64 {
    std::fs::read_dir(proc.dir.join("blobs").join("tmp"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Sends a signal to a running node.
fn signal(proc: &Proc, signal: libc::c_int) {
    let pid = proc.child.as_ref().expect("running").id();
    // SAFETY: kill(2) on a child this test started and has not reaped.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// Defect 7: the first home's disk fills up while the bytes flow (5 nodes, k = 1, each on a
/// tmpfs of its own). The put does not give up: the next home takes the bytes, the full node
/// is replaced by another member, and the file is stored with R = 3 copies, none on the full
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_home_fills_up() {
    const SIZE: usize = 160 << 20;
    let root = std::env::temp_dir().join(format!("qs-cli-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    // Groups that size themselves (the default): five nodes are one group.
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("cli-test"),
    )
    .expect("config");
    let mut procs: Vec<Proc> = prepare(&root, identities(1, 5));
    let mut disks = Vec::new();
    for p in &procs {
        match common::tmpfs::Tmpfs::mount_at(&p.dir.join("blobs"), 256 << 20) {
            Some(disk) => disks.push(disk),
            None => return,
        }
    }
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 1, "convergence", Duration::from_secs(60)).await;
    let source = work.join("source");
    let content = bytes(SIZE, 11);
    std::fs::write(&source, &content).expect("source");
    let entry = procs[0].address.as_ref().expect("running").to_string();
    let put = std::thread::spawn({
        let work = work.clone();
        move || cli(&work, &["put", "source", "big", "--peer", &entry, "--json"])
    });

    // The first home logs that it is one; once its copy is growing, stop it, fill its disk
    // and let it go on: its next write fails with ENOSPC.
    let started = Instant::now();
    let full = loop {
        let first_home = procs
            .iter()
            .position(|p| logged(p, "as its first home") && partial_bytes(p) >= 1 << 20);
        if let Some(i) = first_home {
            break i;
        }
        assert!(
            !put.is_finished() && started.elapsed() < Duration::from_secs(30),
            "the put ended before its first home could be caught writing"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    signal(&procs[full], libc::SIGSTOP);
    let filled = disks[full].fill();
    signal(&procs[full], libc::SIGCONT);
    assert!(filled > 0, "nothing was left to fill");

    let put = put.join().expect("the put thread");
    assert!(put.ok, "the put gave up: {}", put.stderr);
    let report = put.json();
    let holders: Vec<String> = report["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    let full_peer = procs[full].peer.to_string();
    assert!(
        !holders.contains(&full_peer),
        "the full node is listed as a holder: {report}"
    );
    assert_eq!(report["copies"], 3, "{report}");
    assert!(
        logged(&procs[full], "no space left on device") || logged(&procs[full], "cannot store"),
        "the full node never hit its full disk"
    );
    let got = cli(
        &work,
        &["get", "big", "-o", "got", "--peer", &{
            let other = (full + 1) % procs.len();
            procs[other].address.as_ref().expect("running").to_string()
        }],
    );
    assert!(got.ok, "{}", got.stderr);
    assert!(
        std::fs::read(work.join("got")).expect("got") == content,
        "the bytes differ"
    );
    drop(procs);
    drop(disks);
    let _ = std::fs::remove_dir_all(&root);
}
