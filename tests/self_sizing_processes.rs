//! Groups that size themselves, on real processes over loopback and with no `--groups`
//! anywhere: one node started with the defaults takes 20 files; nodes join one at a time up
//! to 24 (the groups split as the network grows) and after each join every file is gettable
//! and, from 3 nodes on, listed with 3 running holders; then 20 nodes stop one at a time,
//! half `kill -9` and half Ctrl-C (the groups merge again), and every file stays gettable.
//!
//! Timings are short (`common::fast_config_self_sizing`: gossip every 100 ms, t_fail 1.5 s,
//! a level change proposed after 1 s): the rules are the defaults', only faster.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ns_node::{BIN, client};
use common::{Proc, identities, prepare};
use serde_json::Value;

const FILES: usize = 20;
const NODES: usize = 24;
const STOPPED: usize = 20;
/// How long one step (a join or a stop) may take to give every file back.
const STEP: Duration = Duration::from_secs(90);

fn content(i: usize) -> Vec<u8> {
    (0..(2_000 + i * 3_001))
        .map(|j| (j.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

fn name(i: usize) -> String {
    format!("docs/file-{i}")
}

/// Runs the CLI against the node whose data directory is `dir`.
fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    client(Command::new(BIN), dir, args)
}

/// The names the node in `dir` gets back intact (each by its own `get`).
fn gettable(dir: &Path, out: &Path) -> Vec<usize> {
    (0..FILES)
        .filter(|&i| {
            let target = out.join(format!("f{i}"));
            let got = cli(
                dir,
                &[
                    "get",
                    &name(i),
                    "-o",
                    target.to_str().expect("utf-8 path"),
                    "--force",
                    "-q",
                ],
            );
            got.status.success() && std::fs::read(&target).is_ok_and(|b| b == content(i))
        })
        .collect()
}

/// Names whose listed holders (through the node in `dir`) are not exactly 3 running ones.
fn short_of_three(dir: &Path, running: &BTreeSet<String>) -> Vec<String> {
    let listed = cli(dir, &["ls", "--json"]);
    let json: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
    let mut seen = BTreeSet::new();
    let mut short = Vec::new();
    for entry in json["names"].as_array().into_iter().flatten() {
        let Some(n) = entry["name"].as_str() else {
            continue;
        };
        seen.insert(n.to_string());
        let holders: Vec<&str> = entry["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if holders.len() != 3 || !holders.iter().all(|h| running.contains(*h)) {
            short.push(format!("{n}: {holders:?}"));
        }
    }
    for i in 0..FILES {
        if !seen.contains(&name(i)) {
            short.push(format!("{}: not listed", name(i)));
        }
    }
    short
}

fn running(procs: &[Proc]) -> BTreeSet<String> {
    procs
        .iter()
        .filter(|p| p.child.is_some())
        .map(|p| p.peer.to_string())
        .collect()
}

/// Waits until every file is gettable through `entry` (and, with `three`, listed with 3
/// running holders); panics after [`STEP`] naming what was missing.
fn settle(procs: &[Proc], entry: &Path, out: &Path, three: bool, what: &str) {
    let started = Instant::now();
    loop {
        let got = gettable(entry, out);
        let short = if three {
            short_of_three(entry, &running(procs))
        } else {
            Vec::new()
        };
        if got.len() == FILES && short.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < STEP,
            "{what}: after {STEP:?}, {} of {FILES} files gettable; holders: {short:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn structure(dir: &Path) -> Option<(u32, u64)> {
    let out = cli(dir, &["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        json["groups"].as_u64()? as u32,
        json["network_size_estimate"].as_u64()?,
    ))
}

#[test]
fn a_network_grows_from_one_node_to_24_and_shrinks_to_4_keeping_every_file() {
    let root = std::env::temp_dir().join(format!("qs-sizing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let out = root.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("sizing"),
    )
    .expect("config");
    let mut procs: Vec<Proc> = prepare(&root, identities(1, NODES));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("address");
    let entry = procs[0].dir.clone();
    for i in 0..FILES {
        let file = root.join(format!("in{i}"));
        std::fs::write(&file, content(i)).expect("input");
        let put = cli(&entry, &["put", file.to_str().expect("utf-8"), &name(i)]);
        assert!(
            put.status.success(),
            "put {i} on one node: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
    settle(&procs, &entry, &out, false, "one node");
    let mut most_groups = 1;
    for n in 1..NODES {
        procs[n].start(&root, std::slice::from_ref(&first));
        settle(
            &procs,
            &procs[n].dir.clone(),
            &out,
            n + 1 >= 3,
            &format!("{} nodes", n + 1),
        );
        if let Some((groups, _)) = structure(&entry) {
            most_groups = most_groups.max(groups);
        }
    }
    let (groups, estimate) = structure(&entry).expect("status");
    eprintln!("24 nodes: {groups} groups, estimate {estimate}; most groups seen {most_groups}");
    assert!(most_groups >= 2, "24 nodes never split the single group");
    // Stop 20, alternately kill -9 and Ctrl-C, keeping the first node and three others.
    for (k, n) in (1..=STOPPED).enumerate() {
        let proc = &mut procs[n];
        if k % 2 == 0 {
            proc.kill();
        } else {
            let pid = proc.child.as_ref().expect("running").id();
            // SAFETY: kill(2) on a child this test started and has not reaped.
            let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
            assert_eq!(sent, 0);
            let mut child = proc.child.take().expect("running");
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().expect("wait").is_none() {
                assert!(Instant::now() < deadline, "Ctrl-C did not stop node {n}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Repair restores 3 copies between failures, as a network does when nodes leave
        // one at a time.
        settle(&procs, &entry, &out, true, &format!("{} stopped", k + 1));
    }
    let (groups, estimate) = structure(&entry).expect("status");
    eprintln!("4 nodes left: {groups} groups, estimate {estimate}");
    let _ = std::fs::remove_dir_all(&root);
}
