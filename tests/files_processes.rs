//! Files end to end, with real `quickstore node` processes on loopback (10 nodes with the
//! default groups that size themselves: one group, since the rule splits from 18 nodes with
//! R = 3) and the real `quickstore` CLI as the client:
//! put through one node and get through another, byte-identical, for sizes from 0 bytes up;
//! hostile and missing names; a corrupted copy; concurrent puts of one name; a clean stop of
//! a holder; `kill -9` of two holders and repair; `kill -9` of a node during a put.
//!
//! Sizes: CI moves files up to 16 MiB, at most 96 MiB in all. `QUICKSTORE_FULL_FILES=1` moves
//! files up to 64 MiB, at most 512 MiB in all (the issue's figures).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Proc, identities, prepare, wait_converged};
use serde_json::Value;

/// Nodes started.
const NODES: usize = 10;
/// `wait_converged` reads each node's group and structure from its status.
const SELF_SIZING: u32 = 0;
const T_FAIL_MS: u64 = 1500;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 300
idle_connection_timeout_ms = 5000

[kelips]
network_name = "files-test"
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
"#;

/// What a CLI run gave.
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    Run {
        ok: out.status.success(),
        json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn peer_arg(p: &Proc) -> String {
    p.address.as_ref().expect("running").to_string()
}

async fn put(p: &Proc, cwd: &Path, file: &Path, name: &str) -> Run {
    cli(
        cwd,
        &[
            "put",
            file.to_str().expect("utf-8 path"),
            name,
            "--peer",
            &peer_arg(p),
            "--json",
        ],
    )
    .await
}

async fn get(p: &Proc, cwd: &Path, name: &str, output: Option<&Path>) -> Run {
    // Tests fetch into the same path again and again: replacing it is what they mean.
    let mut args = vec!["get", name, "--force", "--peer"];
    let peer = peer_arg(p);
    args.push(&peer);
    args.push("--json");
    let out;
    if let Some(path) = output {
        out = path.to_str().expect("utf-8 path").to_string();
        args.push("-o");
        args.push(&out);
    }
    cli(cwd, &args).await
}

/// Writes `size` pseudo-random bytes (xorshift from `seed`) to `path`, 1 MiB at a time.
fn write_file(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
}

fn hash_file(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).expect("open"))
        .expect("read");
    hasher.finalize().to_hex().to_string()
}

fn holders(run: &Value) -> Vec<String> {
    run["holders"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn blob_path(p: &Proc, blake3: &str) -> PathBuf {
    p.dir.join("blobs").join(&blake3[..2]).join(blake3)
}

/// Every blob file of `p` holds the bytes its name says, and no partial file is left over.
fn assert_store_clean(p: &Proc) {
    let root = p.dir.join("blobs");
    for shard in std::fs::read_dir(&root).expect("blobs dir").flatten() {
        let name = shard.file_name().to_string_lossy().into_owned();
        if name == "tmp" {
            continue;
        }
        for blob in std::fs::read_dir(shard.path()).expect("shard").flatten() {
            let expected = blob.file_name().to_string_lossy().into_owned();
            assert_eq!(
                hash_file(&blob.path()),
                expected,
                "blob {expected} is wrong"
            );
        }
    }
}

fn copies_on_disk(procs: &[Proc], blake3: &str) -> usize {
    procs
        .iter()
        .filter(|p| blob_path(p, blake3).exists())
        .count()
}

async fn wait_for<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn index_of(procs: &[Proc], peer: &str) -> usize {
    procs
        .iter()
        .position(|p| p.peer.to_string() == peer)
        .expect("a known peer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_survive_failures_and_stay_at_three_copies() {
    let root = std::env::temp_dir().join(format!("qs-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("temp dir");
    std::fs::write(root.join("config.toml"), CONFIG).expect("config");
    let mut procs = prepare(&root, identities(1, NODES));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, SELF_SIZING, "convergence", Duration::from_secs(60)).await;
    let n = procs.len();

    // ---- put through one node, get through another, log-uniform sizes ----------------------
    let full = std::env::var("QUICKSTORE_FULL_FILES").is_ok_and(|v| v == "1");
    let (max, budget, count) = if full {
        (64u64 << 20, 512u64 << 20, 200)
    } else {
        (16u64 << 20, 96u64 << 20, 40)
    };
    let mut sizes = vec![0u64, 1, max];
    let mut x: u64 = 0x5EED;
    let mut total: u64 = sizes.iter().sum();
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x % 1_000_000) as f64 / 1_000_000.0;
        let size = ((max as f64 + 1.0).powf(u) - 1.0) as u64;
        if total + size > budget || sizes.len() >= count {
            break;
        }
        total += size;
        sizes.push(size);
    }
    let mut stored = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("data/file-{i}.bin");
        let source = work.join(format!("source-{i}"));
        write_file(&source, size, i as u64 + 1);
        let via = &procs[(i * 3) % n];
        let run = put(via, &work, &source, &name).await;
        assert!(run.ok, "put {name} ({size} B) failed: {}", run.stderr);
        assert_eq!(run.json["size"], size);
        assert_eq!(holders(&run.json).len(), 3, "{name}: {}", run.json);
        let target = work.join(format!("got-{i}"));
        let from = &procs[(i * 7 + 1) % n];
        let run = get(from, &work, &name, Some(&target)).await;
        assert!(run.ok, "get {name} failed: {}", run.stderr);
        assert_eq!(hash_file(&target), hash_file(&source), "{name} differs");
        assert_eq!(
            run.json["blake3"].as_str(),
            Some(hash_file(&source).as_str())
        );
        stored.push((name, source, run.json.clone()));
        std::fs::remove_file(&target).expect("rm");
    }
    eprintln!("moved {} files, {} bytes", sizes.len(), total);
    // Operators see it: every put was acknowledged by one first home, and the copies of the
    // others came from it.
    let counters: Vec<_> = common::statuses(&procs)
        .await
        .into_iter()
        .filter_map(|(_, _, status)| status.map(|s| s.counters))
        .collect();
    let sum = |key: &str| {
        counters
            .iter()
            .map(|c| c.get(key).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("puts_stored"), sizes.len() as u64);
    assert!(sum("copies_stored") >= 2 * sizes.len() as u64);
    assert!(sum("file_bytes_sent") >= total);

    // ---- names: a key, never a path --------------------------------------------------------
    let small = work.join("small");
    write_file(&small, 1000, 99);
    let run = put(&procs[1], &work, &small, "../../etc/passwd").await;
    assert!(run.ok, "{}", run.stderr);
    let deep = work.join("a").join("b");
    std::fs::create_dir_all(&deep).expect("dir");
    let run = get(&procs[2], &deep, "../../etc/passwd", None).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(hash_file(&deep.join("passwd")), hash_file(&small));
    assert!(!work.join("etc").exists() && !root.join("etc").exists());
    let run = put(&procs[3], &work, &small, "x/..").await;
    assert!(run.ok, "{}", run.stderr);
    let run = get(&procs[4], &deep, "x/..", None).await;
    assert!(!run.ok && run.stderr.contains("-o"), "{}", run.stderr);
    let run = get(&procs[4], &deep, "x/..", Some(&deep.join("chosen"))).await;
    assert!(run.ok && deep.join("chosen").exists(), "{}", run.stderr);
    let long = "n".repeat(1025);
    let run = put(&procs[5], &work, &small, &long).await;
    assert!(!run.ok && run.stderr.contains("1024"), "{}", run.stderr);
    let run = get(&procs[6], &work, "no/such/name", None).await;
    assert!(
        !run.ok && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );

    // ---- a corrupted copy: get is right, the copy is replaced -------------------------------
    let (name, source, meta) = stored
        .iter()
        .find(|(_, _, m)| m["size"].as_u64().unwrap_or(0) >= 1 << 20)
        .cloned()
        .expect("a file of 1 MiB or more");
    let blake3 = meta["blake3"].as_str().expect("hash").to_string();
    let bad = index_of(&procs, &holders(&meta)[0]);
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(blob_path(&procs[bad], &blake3))
            .expect("the holder has the blob");
        f.seek(std::io::SeekFrom::Start(100)).expect("seek");
        f.write_all(&[0u8; 4096]).expect("corrupt");
    }
    for via in 0..3 {
        let target = work.join("corrupt-check");
        let run = get(&procs[(bad + via + 1) % n], &work, &name, Some(&target)).await;
        assert!(run.ok, "get after corruption: {}", run.stderr);
        assert_eq!(hash_file(&target), hash_file(&source));
    }
    let path = blob_path(&procs[bad], &blake3);
    wait_for(
        "the corrupt copy replaced",
        Duration::from_secs(30),
        async || path.exists() && hash_file(&path) == blake3,
    )
    .await;

    // ---- concurrent puts of one name --------------------------------------------------------
    let (a, b) = (work.join("one"), work.join("two"));
    write_file(&a, 300_000, 7);
    write_file(&b, 200_000, 8);
    let (ra, rb) = tokio::join!(
        put(&procs[1], &work, &a, "shared"),
        put(&procs[2], &work, &b, "shared")
    );
    assert!(ra.ok && rb.ok, "{} / {}", ra.stderr, rb.stderr);
    let rank = |v: &Value| {
        (
            v["version"].as_u64(),
            v["blake3"].as_str().map(str::to_string),
        )
    };
    let newest = rank(&ra.json).max(rank(&rb.json));
    wait_for(
        "one newest version everywhere",
        Duration::from_secs(20),
        async || {
            for p in &procs {
                let run = get(p, &work, "shared", Some(&work.join("shared-check"))).await;
                if !run.ok || rank(&run.json) != newest {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // ---- older versions while kept (keep_versions = 1), then rm ----------------------------
    let contents: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = work.join(format!("version-{i}"));
            write_file(&path, 50_000 + i, 500 + i);
            path
        })
        .collect();
    let mut versions = Vec::new();
    for (i, path) in contents.iter().enumerate().take(2) {
        let run = put(&procs[i + 3], &work, path, "versioned").await;
        assert!(run.ok, "{}", run.stderr);
        let version = run.json["version"].as_u64().expect("version");
        versions.push(version);
        // The next put comes once this version has spread (versions are eventually
        // consistent: a put racing an unseen one may take the same number).
        let seen = work.join("seen");
        wait_for(
            "the version everywhere",
            Duration::from_secs(20),
            async || {
                for p in &procs {
                    let run = get(p, &work, "versioned", Some(&seen)).await;
                    if run.json["version"].as_u64() != Some(version) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }
    assert_eq!(
        versions[1],
        versions[0] + 1,
        "Lamport counters of one name rise by one"
    );
    let old = versions[0].to_string();
    let check = work.join("version-check");
    let get_version = async |via: usize, v: &str| {
        let peer = peer_arg(&procs[via]);
        let out = check.to_str().expect("utf-8").to_string();
        cli(
            &work,
            &[
                "get",
                "versioned",
                "--force",
                "--version",
                v,
                "-o",
                &out,
                "--peer",
                &peer,
                "--json",
            ],
        )
        .await
    };
    wait_for(
        "the older version fetchable",
        Duration::from_secs(20),
        async || get_version(7, &old).await.ok && hash_file(&check) == hash_file(&contents[0]),
    )
    .await;
    let run = get(&procs[8], &work, "versioned", Some(&check)).await;
    assert!(
        run.ok && hash_file(&check) == hash_file(&contents[1]),
        "{}",
        run.stderr
    );
    let run = put(&procs[5], &work, &contents[2], "versioned").await;
    assert!(run.ok, "{}", run.stderr);
    wait_for(
        "a version two steps old dropped",
        Duration::from_secs(20),
        async || !get_version(7, &old).await.ok,
    )
    .await;
    let middle = versions[1].to_string();
    let run = get_version(6, &middle).await;
    assert!(
        run.ok && hash_file(&check) == hash_file(&contents[1]),
        "{}",
        run.stderr
    );
    let run = cli(&work, &["rm", "versioned", "--peer", &peer_arg(&procs[2])]).await;
    assert!(run.ok, "{}", run.stderr);
    let hashes: Vec<String> = contents.iter().map(|p| hash_file(p)).collect();
    wait_for(
        "every version's bytes dropped after rm",
        Duration::from_secs(30),
        async || hashes.iter().all(|h| copies_on_disk(&procs, h) == 0),
    )
    .await;
    let run = get(&procs[9], &work, "versioned", Some(&check)).await;
    assert!(
        !run.ok && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );

    // ---- a clean stop of a holder hands its copies off --------------------------------------
    let (name, _, meta) = stored[5].clone();
    let leaving = index_of(&procs, &holders(&meta)[0]);
    let leaving = if leaving == 0 {
        index_of(&procs, &holders(&meta)[1])
    } else {
        leaving
    };
    let left_peer = procs[leaving].peer.to_string();
    let mut child = procs[leaving].child.take().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    child.wait().expect("clean exit");
    let stopped = Instant::now();
    let check_from = (leaving + 1) % n;
    let run = get(
        &procs[check_from],
        &work,
        &name,
        Some(&work.join("handoff")),
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let now_holders = holders(&run.json);
    assert!(
        stopped.elapsed() < Duration::from_millis(T_FAIL_MS) || !now_holders.contains(&left_peer),
        "checked too late to tell"
    );
    assert!(
        !now_holders.contains(&left_peer) && now_holders.len() == 3,
        "right after a clean stop (before t_fail), holders are {now_holders:?}"
    );
    procs[leaving].start(&root, std::slice::from_ref(&first));

    // ---- kill -9 two of three holders: get works, repair restores three ---------------------
    let (name, source, meta) = stored[3].clone();
    let blake3 = meta["blake3"].as_str().expect("hash").to_string();
    let victims: Vec<usize> = holders(&meta)
        .iter()
        .map(|h| index_of(&procs, h))
        .filter(|&i| i != 0)
        .take(2)
        .collect();
    assert_eq!(victims.len(), 2, "two holders other than the bootstrap");
    for &v in &victims {
        procs[v].kill();
    }
    let killed: Vec<String> = victims.iter().map(|&v| procs[v].peer.to_string()).collect();
    let alive = (0..n).find(|i| !victims.contains(i)).expect("a live node");
    let target = work.join("after-kill");
    let run = get(&procs[alive], &work, &name, Some(&target)).await;
    assert!(run.ok, "get with two holders dead: {}", run.stderr);
    assert_eq!(hash_file(&target), hash_file(&source));
    wait_for(
        "three live holders again",
        Duration::from_secs(30),
        async || {
            let run = get(&procs[alive], &work, &name, Some(&target)).await;
            let now = holders(&run.json);
            run.ok && now.len() == 3 && !now.iter().any(|h| killed.contains(h))
        },
    )
    .await;
    for &v in &victims {
        procs[v].start(&root, std::slice::from_ref(&first));
        assert_store_clean(&procs[v]);
    }
    wait_for(
        "exactly three copies on disk",
        Duration::from_secs(30),
        async || copies_on_disk(&procs, &blake3) == 3,
    )
    .await;

    // ---- kill -9 of a home node during a put: an answer, never a silent half ----------------
    let name = "big/during-kill";
    let big = work.join("big");
    write_file(&big, 48 << 20, 1234);
    // One group: the entry is a member too (the put's first home or a forwarder); the
    // victim is another member caught receiving.
    let entry = 0;
    let members: Vec<usize> = (1..n).collect();
    let putting = {
        let peer = peer_arg(&procs[entry]);
        let big = big.clone();
        let work = work.clone();
        tokio::spawn(async move {
            cli(
                &work,
                &[
                    "put",
                    big.to_str().expect("utf-8"),
                    name,
                    "--peer",
                    &peer,
                    "--json",
                ],
            )
            .await
        })
    };
    // The victim is a home caught receiving: a member with a partial blob in its tmp/.
    let receiving = |i: &usize| {
        std::fs::read_dir(procs[*i].dir.join("blobs").join("tmp"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    };
    let watch = Instant::now();
    let victim = loop {
        if let Some(&home) = members.iter().find(|i| receiving(i)) {
            break home;
        }
        if watch.elapsed() > Duration::from_secs(10) || putting.is_finished() {
            eprintln!("no home caught receiving: killing a member instead");
            break members[0];
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    procs[victim].kill();
    let run = putting.await.expect("put finished");
    if run.ok {
        let target = work.join("big-check");
        let got = get(&procs[entry], &work, name, Some(&target)).await;
        assert!(got.ok, "{}", got.stderr);
        assert_eq!(hash_file(&target), hash_file(&big));
    } else {
        assert!(!run.stderr.trim().is_empty(), "a failed put says why");
    }
    procs[victim].start(&root, std::slice::from_ref(&first));
    assert_store_clean(&procs[victim]);
    let tmp = procs[victim].dir.join("blobs").join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);

    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
