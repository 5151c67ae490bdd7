//! A holder that restarts or is paused must not act on a stale view (issue 14's hazards, on
//! real processes over loopback; 5 nodes, k = 1, R = 3, t_fail 1.5 s, orphan grace 2 s so
//! that a wrong deletion would show):
//!
//! * `restarted_holder_keeps_the_holder_set`: the leader of a name's repair is killed with
//!   `kill -9` and restarted at once with its data directory. Before, it repaired before it
//!   had rejoined, saw itself as the only live holder and published a holder set of itself
//!   alone (`3 holders listed, 1 after repair`), whose copies were then deleted as unnamed.
//! * `paused_holder_does_not_shrink_or_delete`: the leader is stopped (`SIGSTOP`) for
//!   3 × t_fail and continued. On waking it must not publish a smaller holder set or delete a
//!   copy that a holder set lists.
//! * `acknowledged_name_survives_its_first_home`: the first home of a put is killed right
//!   after the ack; the name is still found and fetched through the other holders. Before,
//!   only the first home knew the tuple until its next gossip, and the name was lost.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Proc, identities, log_lines, prepare, wait_converged};

/// t_fail of `common::fast_config`.
const T_FAIL: Duration = Duration::from_millis(1500);

/// A network of five nodes with three files stored; the files' names and BLAKE3 hashes.
struct Stored {
    root: std::path::PathBuf,
    procs: Vec<Proc>,
    files: Vec<(String, String)>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        self.procs.clear();
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn quickstore(cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::ns_node::BIN)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the CLI runs")
}

fn address(p: &Proc) -> String {
    p.address.as_ref().expect("running").to_string()
}

async fn stored(tag: &str) -> Stored {
    let root = std::env::temp_dir().join(format!("qs-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("repair-health"),
    )
    .expect("config");
    let mut procs = prepare(&root, identities(1, 5));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 1, "convergence", Duration::from_secs(60)).await;
    let mut files = Vec::new();
    for i in 0..3 {
        let name = format!("file-{i}");
        let path = root.join(&name);
        let bytes: Vec<u8> = (0..200_000u32).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(&path, bytes).expect("file");
        let out = quickstore(
            &root,
            &[
                "put",
                path.to_str().expect("utf-8"),
                &name,
                "--json",
                "--peer",
                &address(&procs[0]),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["copies"], 3, "{report}");
        files.push((name, report["blake3"].as_str().expect("blake3").to_string()));
    }
    // Every node acts on its view by now (settled: 2 t_fail after joining), so that a fault
    // comes to a node that would act.
    let started = Instant::now();
    while !procs
        .iter()
        .all(|p| !log_lines(&p.log(), "repair settled").is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the nodes never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Stored { root, procs, files }
}

impl Stored {
    /// The listed holders of every file, as every node must come to see them (waits until
    /// the listing names three holders for each file, up to `limit`).
    fn holders(&self, through: usize) -> Vec<Vec<String>> {
        let out = quickstore(
            &self.root,
            &["ls", "--json", "--peer", &address(&self.procs[through])],
        );
        let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        self.files
            .iter()
            .map(|(name, _)| {
                listing["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|n| n["name"] == name.as_str())
                    .and_then(|n| n["holders"].as_array())
                    .map(|hs| {
                        hs.iter()
                            .filter_map(|h| h.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The process that leads the repair of file 0: its top-ranked holder.
    fn leader_of_first(&self) -> usize {
        let (name, _) = &self.files[0];
        let holders = &self.holders(0)[0];
        self.procs
            .iter()
            .enumerate()
            .filter(|(_, p)| holders.contains(&p.peer.to_string()))
            .max_by_key(|(_, p)| quickstore::files::repair::rank(name, &p.peer))
            .map(|(i, _)| i)
            .expect("a holder")
    }

    /// Whether `proc` has the blob `hex` on disk.
    fn has_blob(&self, proc: usize, hex: &str) -> bool {
        self.procs[proc]
            .dir
            .join("blobs")
            .join(&hex[..2])
            .join(hex)
            .is_file()
    }

    /// Holder sets that shrank below R, as logged by `proc` (a trim of an extra copy down to R
    /// is not a shrink).
    fn shrinks(&self, proc: usize) -> Vec<String> {
        log_lines(&self.procs[proc].log(), "after repair")
            .into_iter()
            .filter(|(_, line)| {
                let numbers: Vec<u64> = line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|w| w.parse().ok())
                    .collect();
                // The line ends "N holders listed, M after repair".
                matches!(numbers.as_slice(), [.., listed, after] if after < listed && *after < 3)
            })
            .map(|(_, line)| line)
            .collect()
    }

    /// After the fault: for a while, every file stays listed with three holders that have
    /// the bytes, no node logs a shrinking holder set, and the files can be fetched.
    fn assert_intact(&self, what: &str) {
        let watched = Instant::now();
        while watched.elapsed() < 2 * T_FAIL * 2 + Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(300));
        }
        for i in 0..self.procs.len() {
            let shrinks = self.shrinks(i);
            assert!(
                shrinks.is_empty(),
                "{what}: node {i} published smaller holder sets: {shrinks:?}"
            );
        }
        let holders = self.holders(0);
        for ((name, hex), listed) in self.files.iter().zip(&holders) {
            assert_eq!(listed.len(), 3, "{what}: {name} is listed with {listed:?}");
            for peer in listed {
                let i = self
                    .procs
                    .iter()
                    .position(|p| p.peer.to_string() == *peer)
                    .expect("a node of the network");
                assert!(
                    self.has_blob(i, hex),
                    "{what}: listed holder {i} of {name} has no copy"
                );
            }
            let out = quickstore(
                &self.root,
                &[
                    "get",
                    name,
                    "-o",
                    "-",
                    "--peer",
                    &address(&self.procs[(self.procs.len() - 1) % 5]),
                ],
            );
            assert!(
                out.status.success(),
                "{what}: get {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_holder_keeps_the_holder_set() {
    let mut net = stored("restart").await;
    let leader = net.leader_of_first();
    let bootstrap = net.procs[(leader + 1) % 5]
        .address
        .clone()
        .expect("running");
    net.procs[leader].kill();
    let root = net.root.clone();
    net.procs[leader].start(&root, &[bootstrap]);
    net.assert_intact("after a restart");
    // The restarted node waited for its view before acting.
    let held = log_lines(&net.procs[leader].log(), "repair settled");
    assert!(!held.is_empty(), "the restarted node never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_does_not_shrink_or_delete() {
    let net = stored("pause").await;
    let leader = net.leader_of_first();
    let pid = net.procs[leader].child.as_ref().expect("running").id() as libc::pid_t;
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(3 * T_FAIL);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // While it slept the others replaced its copies (they cannot tell a pause from a
    // death); what it does on waking must not shrink a set or delete a listed copy.
    let shrinks = net.shrinks(leader);
    assert!(shrinks.is_empty(), "{shrinks:?}");
    net.assert_intact("after a pause");
    let holds = log_lines(&net.procs[leader].log(), "repair holds back");
    assert!(
        !holds.is_empty(),
        "the paused node did not notice that it had been paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_name_survives_its_first_home() {
    let mut net = stored("ack").await;
    let path = net.root.join("fresh");
    let content: Vec<u8> = (0..300_000u32).map(|b| (b * 13) as u8).collect();
    std::fs::write(&path, &content).expect("file");
    for attempt in 0..3 {
        let name = format!("fresh-{attempt}");
        let entry = address(&net.procs[attempt]);
        let out = quickstore(
            &net.root,
            &[
                "put",
                path.to_str().expect("utf-8"),
                &name,
                "--json",
                "--peer",
                &entry,
            ],
        );
        // kill -9 the first home the moment the put is acknowledged.
        let needle = format!("storing {name:?}");
        let first = net
            .procs
            .iter()
            .position(|p| p.child.is_some() && !log_lines(&p.log(), &needle).is_empty())
            .expect("a first home logged the put");
        net.procs[first].kill();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["copies"], 3, "{report}");
        // Any live node finds it once the surviving holders' gossip reaches it.
        let through = (0..net.procs.len())
            .find(|i| net.procs[*i].child.is_some())
            .expect("a live node");
        let started = Instant::now();
        let got = loop {
            let got = quickstore(
                &net.root,
                &[
                    "get",
                    &name,
                    "-o",
                    "-",
                    "--peer",
                    &address(&net.procs[through]),
                ],
            );
            if got.status.success() || started.elapsed() > Duration::from_secs(10) {
                break got;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            got.status.success(),
            "{name}, acknowledged, is lost with its first home: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(got.stdout == content, "{name}: the bytes differ");
        // Back to five nodes for the next attempt.
        let root = net.root.clone();
        let bootstrap = net.procs[through].address.clone().expect("running");
        net.procs[first].start(&root, &[bootstrap]);
    }
}
