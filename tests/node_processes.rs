//! Real `quickstore node` processes over TCP loopback, k = 4 groups of 3: they converge; a
//! `kill -9`ed member is removed by its group in time (read from the timestamped logs) and
//! nobody else is suspected; restarted on its data dir it comes back with the same PeerId and
//! a higher incarnation; with the bootstrap killed, the network keeps working and a new node
//! joins through a second bootstrap address.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use quickstore::client::fetch_status;
use quickstore::status::Status;
use quickstore_behaviours::id::id_facts;
use quickstore_behaviours::net::Peer;

const GROUPS: u32 = 4;
const PERIOD_MS: u64 = 100;
const T_FAIL_MS: u64 = 1500;
/// The simulator's dissemination p99 is about 7 gossip periods (BENCHMARKS.md).
const DISSEMINATION_P99_MS: u64 = 7 * PERIOD_MS;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 300
idle_connection_timeout_ms = 5000

[kelips]
network_name = "process-test"
groups = 4
heartbeat_period_ms = 100
gossip_period_ms = 100
t_fail_ms = 1500
t_contact_ms = 6000
sync_period_ms = 1000
rejoin_period_ms = 2000
request_timeout_ms = 1000
"#;

struct Proc {
    peer: PeerId,
    group: u32,
    dir: PathBuf,
    child: Option<Child>,
    address: Option<Multiaddr>,
}

impl Proc {
    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn start(&mut self, root: &Path, bootstraps: &[Multiaddr]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quickstore"));
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log())
                    .expect("log file"),
            );
        for b in bootstraps {
            cmd.arg("--bootstrap").arg(b.to_string());
        }
        let mut child = cmd.spawn().expect("quickstore node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads the first line");
        let rest = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let full: Multiaddr = rest.parse().expect("a multiaddr");
        assert!(
            full.to_string().ends_with(&format!("/p2p/{}", self.peer)),
            "node listens as {full}, expected PeerId {}",
            self.peer
        );
        self.address = Some(full);
        self.child = Some(child);
    }

    fn kill(&mut self) -> u64 {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let at = now_ms_of_day();
        child.wait().expect("reaped");
        at
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn now_ms_of_day() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    ms % 86_400_000
}

/// Milliseconds of day of a tracing line starting `2026-11-25T19:32:31.123456Z`.
fn line_ms_of_day(line: &str) -> Option<u64> {
    let time = line.get(11..23)?;
    let h: u64 = time.get(0..2)?.parse().ok()?;
    let m: u64 = time.get(3..5)?.parse().ok()?;
    let s: u64 = time.get(6..8)?.parse().ok()?;
    let ms: u64 = time.get(9..12)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

/// Lines of `log` containing `needle`, with their time of day.
fn log_lines(log: &Path, needle: &str) -> Vec<(u64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| Some((line_ms_of_day(l)?, l.to_string())))
        .collect()
}

fn identities() -> Vec<(Keypair, u32)> {
    let mut per_group: BTreeMap<u32, Vec<Keypair>> = BTreeMap::new();
    while per_group.values().map(|v| v.len().min(3)).sum::<usize>() < 12 {
        let key = Keypair::generate_ed25519();
        let group = id_facts(&Peer(key.public().to_peer_id()), GROUPS).group;
        let slot = per_group.entry(group).or_default();
        if slot.len() < 3 {
            slot.push(key);
        }
    }
    // Interleave groups so the bootstrap order mixes them.
    let mut out = Vec::new();
    for i in 0..3 {
        for (group, keys) in &per_group {
            out.push((keys[i].clone(), *group));
        }
    }
    out
}

async fn statuses(procs: &[Proc]) -> Vec<(PeerId, u32, Option<Status>)> {
    let mut out = Vec::new();
    for p in procs {
        let status = match (&p.child, &p.address) {
            (Some(_), Some(address)) => {
                let mut bare = address.clone();
                bare.pop();
                fetch_status(p.peer, bare, Duration::from_secs(3))
                    .await
                    .ok()
            }
            _ => None,
        };
        out.push((p.peer, p.group, status));
    }
    out
}

async fn wait_converged(procs: &[Proc], what: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let live: Vec<_> = statuses(procs)
            .await
            .into_iter()
            .zip(procs)
            .filter(|(_, p)| p.child.is_some())
            .map(|(s, _)| s)
            .collect();
        if quickstore::local::converged(&live, GROUPS) {
            return;
        }
        if started.elapsed() > limit {
            let views: Vec<String> = live
                .iter()
                .map(|(p, g, s)| match s {
                    Some(s) => format!(
                        "{p} g{g}: view {} (failed {}), contact groups {:?}",
                        s.view.len(),
                        s.view.iter().filter(|m| m.failed).count(),
                        s.contacts.keys().collect::<Vec<_>>()
                    ),
                    None => format!("{p} g{g}: no status"),
                })
                .collect();
            panic!(
                "{what}: not converged after {limit:?}:\n{}",
                views.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_converge_detect_a_kill_restart_and_survive_the_bootstrap() {
    let root = std::env::temp_dir().join(format!("qs-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(root.join("config.toml"), CONFIG).expect("config");

    let mut procs: Vec<Proc> = identities()
        .into_iter()
        .enumerate()
        .map(|(i, (key, group))| {
            let dir = root.join(format!("n{i}"));
            std::fs::create_dir_all(&dir).expect("data dir");
            quickstore::identity::write_key(&dir.join("identity.key"), &key).expect("key");
            Proc {
                peer: key.public().to_peer_id(),
                group,
                dir,
                child: None,
                address: None,
            }
        })
        .collect();

    // Bootstrap first, then everyone through it.
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, "first convergence", Duration::from_secs(60)).await;

    // kill -9 a member (not the bootstrap): its group removes it in time, nobody else fails.
    let victim = 5;
    let (victim_peer, victim_group) = (procs[victim].peer, procs[victim].group);
    let killed_at = procs[victim].kill();
    let bound = 2 * T_FAIL_MS + DISSEMINATION_P99_MS + 1000;
    let removers: Vec<usize> = (0..procs.len())
        .filter(|&i| i != victim && procs[i].group == victim_group)
        .collect();
    let started = Instant::now();
    loop {
        let done = removers.iter().all(|&i| {
            !log_lines(&procs[i].log(), &format!("member removed {victim_peer}")).is_empty()
        });
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(bound + 5000),
            "killed member not removed everywhere"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for &i in &removers {
        let (at, line) =
            log_lines(&procs[i].log(), &format!("member removed {victim_peer}"))[0].clone();
        let took = (at + 86_400_000 - killed_at) % 86_400_000;
        assert!(
            took <= bound,
            "node {i} removed the victim {took} ms after the kill (bound {bound} ms): {line}"
        );
    }
    for (i, p) in procs.iter().enumerate() {
        for (_, line) in log_lines(&p.log(), "member failed") {
            assert!(
                line.contains(&victim_peer.to_string()),
                "node {i} suspected a live node: {line}"
            );
        }
    }

    // Restart on the same data dir: same PeerId (checked in start), higher incarnation.
    procs[victim].start(&root, std::slice::from_ref(&first));
    wait_converged(&procs, "after restart", Duration::from_secs(60)).await;
    let seen = statuses(&procs).await;
    for (peer, group, status) in &seen {
        if *group == victim_group && *peer != victim_peer {
            let status = status.as_ref().expect("status");
            let entry = status
                .view
                .iter()
                .find(|m| m.peer_id == victim_peer.to_string())
                .expect("victim back in view");
            assert!(entry.incarnation >= 2, "incarnation {}", entry.incarnation);
        }
    }

    // Kill the bootstrap: the rest keeps working; a new node joins through a second address.
    procs[0].kill();
    let dead_first = first.clone();
    let second = procs[1].address.clone().expect("second address");
    let fresh_dir = root.join("fresh");
    std::fs::create_dir_all(&fresh_dir).expect("dir");
    let fresh_key = Keypair::generate_ed25519();
    quickstore::identity::write_key(&fresh_dir.join("identity.key"), &fresh_key).expect("key");
    let fresh_peer = fresh_key.public().to_peer_id();
    let mut fresh = Proc {
        peer: fresh_peer,
        group: id_facts(&Peer(fresh_peer), GROUPS).group,
        dir: fresh_dir,
        child: None,
        address: None,
    };
    fresh.start(&root, &[dead_first, second]);
    procs.push(fresh);
    // The bootstrap is removed everywhere after 2·t_fail; wait for that, then convergence.
    wait_converged(&procs, "after the bootstrap died", Duration::from_secs(60)).await;
    let _ = std::fs::remove_dir_all(&root);
}
