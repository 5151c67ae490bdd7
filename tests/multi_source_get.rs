//! Gets from every holder at once, on real `quickstore node` processes over loopback (4 nodes,
//! one group, 3 holders per file) with the real CLI:
//! * a get into a file takes verified pieces from more than one holder;
//! * a holder whose copy rotted on disk serves pieces that fail verification: they are
//!   fetched from the others, the file is right, and the holder is named;
//! * a get finds the partial file and record an interrupted get of the same version left and
//!   fetches only the rest; a record that claims bytes the part does not hold is caught by
//!   the final hash, and the part is removed; `--no-resume` starts over;
//! * when a holder dies, the node that takes the new copy pulls its pieces from both
//!   remaining holders.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proc, identities, prepare, pseudo_random as bytes, wait_converged};
use serde_json::Value;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 300

[kelips]
network_name = "multi-source-test"
heartbeat_period_ms = 100
gossip_period_ms = 100
t_fail_ms = 1500
t_contact_ms = 6000
sync_period_ms = 1000
rejoin_period_ms = 2000
request_timeout_ms = 1000

[files]
io_timeout_ms = 10000
put_deadline_ms = 30000
repair_period_ms = 300
orphan_grace_ms = 2000
# The scrub would find the rotted copy and replace it before the get meets it.
scrub_bytes_per_s = 1
"#;

/// Bytes of the file moved: 24 pieces of 1 MiB.
const SIZE: u64 = 24 << 20;

struct Run {
    ok: bool,
    json: Value,
    stderr: String,
}

async fn cli(cwd: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quickstore"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("the CLI runs");
    Run {
        ok: out.status.success(),
        json: serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn get(via: &Proc, cwd: &Path, name: &str, target: &Path, extra: &[&str]) -> Run {
    let peer = via.address.as_ref().expect("running").to_string();
    let target = target.to_str().expect("utf-8 path");
    let mut args = vec![
        "get", name, "-o", target, "--force", "--json", "--peer", &peer,
    ];
    args.extend_from_slice(extra);
    cli(cwd, &args).await
}

fn sources(run: &Value) -> Vec<Value> {
    run["sources"].as_array().cloned().unwrap_or_default()
}

/// Bytes each source delivered, summed.
fn delivered(run: &Value) -> u64 {
    sources(run)
        .iter()
        .filter_map(|s| s["bytes"].as_u64())
        .sum()
}

/// The resumable partial file and record of a get of `blake3` into `target` (README:
/// `.NAME.quickstore-resume-HASH16.part` and `… .part.ranges`).
fn resume_files(target: &Path, blake3: &str) -> (PathBuf, PathBuf) {
    let name = target.file_name().expect("a file name").to_string_lossy();
    let part = target.with_file_name(format!(".{name}.quickstore-resume-{}.part", &blake3[..16]));
    let record = PathBuf::from(format!("{}.ranges", part.display()));
    (part, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_take_verified_pieces_from_every_holder_drop_a_bad_one_and_resume() {
    let root = std::env::temp_dir().join(format!("qs-msrc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("temp dir");
    std::fs::write(root.join("config.toml"), CONFIG).expect("config");
    let mut procs = prepare(&root, identities(1, 4));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 0, "convergence", Duration::from_secs(60)).await;

    let content = bytes(SIZE, 1);
    let source = work.join("source.bin");
    std::fs::write(&source, &content).expect("source");
    let peer0 = procs[0].address.as_ref().expect("running").to_string();
    let run = cli(
        &work,
        &["put", "source.bin", "big.bin", "--json", "--peer", &peer0],
    )
    .await;
    assert!(run.ok, "put: {}", run.stderr);
    let blake3 = run.json["blake3"].as_str().expect("a hash").to_string();
    let holders: Vec<String> = run.json["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    assert_eq!(holders.len(), 3, "{}", run.json);
    // Ask through the node that holds no copy, when there is one.
    let entry = procs
        .iter()
        .find(|p| !holders.contains(&p.peer.to_string()))
        .unwrap_or(&procs[3]);

    // ---- pieces from more than one holder ---------------------------------------------------
    let target = work.join("got.bin");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "get: {}", run.stderr);
    assert!(
        std::fs::read(&target).expect("got") == content,
        "the file differs"
    );
    assert_eq!(delivered(&run.json), SIZE, "{}", run.json);
    assert_eq!(run.json["resumed_bytes"], 0);
    let serving = sources(&run.json)
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .count();
    assert!(serving >= 2, "one holder served it all: {}", run.json);
    let (part, record) = resume_files(&target, &blake3);
    assert!(
        !part.exists() && !record.exists(),
        "leftovers of a finished get"
    );

    // ---- a holder whose copy rotted ---------------------------------------------------------
    // Its outboard (made when the get above asked it for pieces) still proves the good bytes.
    let rotten = procs
        .iter()
        .find(|p| {
            holders.contains(&p.peer.to_string())
                && p.dir
                    .join("outboards")
                    .join(&blake3[..2])
                    .join(&blake3)
                    .exists()
        })
        .expect("a holder that was asked for pieces");
    let blob = rotten.dir.join("blobs").join(&blake3[..2]).join(&blake3);
    let mut rotted = std::fs::read(&blob).expect("the holder has the blob");
    for at in (0..rotted.len()).step_by(256 * 1024) {
        rotted[at] ^= 0x55;
    }
    std::fs::write(&blob, &rotted).expect("rotted");
    std::fs::remove_file(&target).expect("fetched again, not found unchanged");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "get with a rotten holder: {}", run.stderr);
    assert!(
        std::fs::read(&target).expect("got") == content,
        "the file differs"
    );
    let named = sources(&run.json)
        .into_iter()
        .find(|s| s["peer"].as_str() == Some(&rotten.peer.to_string()))
        .expect("the rotten holder was asked");
    assert_eq!(named["bad"], true, "{}", run.json);
    assert_eq!(named["bytes"], 0, "{}", run.json);
    assert_eq!(delivered(&run.json), SIZE, "{}", run.json);
    assert!(
        run.stderr.contains(&format!(
            "holder {} served bytes that fail verification",
            rotten.peer
        )),
        "{}",
        run.stderr
    );
    // Mend it, so the whole-stream get below may meet it.
    std::fs::write(&blob, &content).expect("mended");

    // ---- resume ----------------------------------------------------------------------------
    // What an interrupted get leaves: the first 10 MiB verified in the part.
    let target = work.join("resumed.bin");
    let (part, record) = resume_files(&target, &blake3);
    let kept = 10u64 << 20;
    let mut partial = content[..kept as usize].to_vec();
    partial.resize(SIZE as usize, 0);
    std::fs::write(&part, &partial).expect("part");
    let ranges = serde_json::json!({"blake3": blake3, "size": SIZE, "verified": [[0, kept]]});
    std::fs::write(&record, ranges.to_string()).expect("record");
    // A record being saved when the get was stopped (seen after a Ctrl-C).
    let saving = PathBuf::from(format!("{}.new", record.display()));
    std::fs::write(&saving, b"{").expect("a half-saved record");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "resumed get: {}", run.stderr);
    assert!(!saving.exists(), "a half-saved record outlives the get");
    assert!(
        std::fs::read(&target).expect("got") == content,
        "the file differs"
    );
    assert_eq!(run.json["resumed_bytes"], kept, "{}", run.json);
    assert_eq!(delivered(&run.json), SIZE - kept, "{}", run.json);
    assert!(
        !part.exists() && !record.exists(),
        "leftovers of a finished get"
    );

    // A record that claims bytes its part does not hold: caught, removed, and the next get
    // is whole.
    std::fs::remove_file(&target).expect("fetched again, not found unchanged");
    std::fs::write(&part, vec![0u8; SIZE as usize]).expect("part");
    std::fs::write(&record, ranges.to_string()).expect("record");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(!run.ok && run.stderr.contains("corrupt"), "{}", run.stderr);
    assert!(!part.exists() && !record.exists(), "the bad part stays");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        std::fs::read(&target).expect("got") == content,
        "the file differs"
    );

    // --no-resume ignores what is there.
    std::fs::remove_file(&target).expect("fetched again, not found unchanged");
    std::fs::write(&part, &partial).expect("part");
    std::fs::write(&record, ranges.to_string()).expect("record");
    let run = get(entry, &work, "big.bin", &target, &["--no-resume"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json["resumed_bytes"], 0, "{}", run.json);
    assert_eq!(delivered(&run.json), SIZE, "{}", run.json);

    // A leftover of another version of the same target is removed.
    let (stale, stale_record) = resume_files(&target, &"0".repeat(64));
    std::fs::write(&stale, b"old").expect("stale");
    std::fs::write(&stale_record, b"{}").expect("stale record");
    std::fs::remove_file(&target).expect("fetched again, not found unchanged");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        !stale.exists() && !stale_record.exists(),
        "another version's part stays"
    );

    // Standard output is still written in order, from one holder.
    let peer = entry.address.as_ref().expect("running").to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quickstore"))
        .args(["get", "big.bin", "-o", "-", "--peer", &peer])
        .current_dir(&work)
        .output()
        .await
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == content, "standard output differs");

    // ---- repair pulls the new copy from every live holder -----------------------------------
    let before = pieces_sent(&procs).await;
    let entry_peer = entry.peer;
    let victim = procs
        .iter()
        .position(|p| holders.contains(&p.peer.to_string()))
        .expect("a holder");
    procs[victim].kill();
    let entry = procs.iter().find(|p| p.peer == entry_peer).expect("entry");
    let copy = entry.dir.join("blobs").join(&blake3[..2]).join(&blake3);
    let started = std::time::Instant::now();
    while !copy.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no new copy after a holder died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = pieces_sent(&procs).await;
    for (i, p) in procs.iter().enumerate() {
        if i != victim && holders.contains(&p.peer.to_string()) {
            assert!(
                after[i] > before[i],
                "holder {} served no piece of the repair: {before:?} → {after:?}",
                p.peer
            );
        }
    }
    let target = work.join("after-repair.bin");
    let run = get(entry, &work, "big.bin", &target, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        std::fs::read(&target).expect("got") == content,
        "the file differs"
    );

    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// Each node's `pieces_sent` counter (0 for a stopped one).
async fn pieces_sent(procs: &[Proc]) -> Vec<u64> {
    common::statuses(procs)
        .await
        .into_iter()
        .map(|(_, _, status)| {
            status
                .and_then(|s| s.counters.get("pieces_sent").copied())
                .unwrap_or(0)
        })
        .collect()
}
