//! Shared harness of the multi-process tests: data directories with chosen identities,
//! `quickstore node` processes with their logs, status polling and convergence.

#![allow(dead_code)]

pub mod netns;
pub mod ns_node;
pub mod tmpfs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use quickstore::client::fetch_status;
use quickstore::status::Status;
use quickstore_behaviours::id::id_facts;
use quickstore_behaviours::net::Peer;

/// Runs the `quickstore` CLI with `args` (warnings only, no colour): (success, stdout,
/// stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quickstore"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("the CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration for fast multi-process tests on loopback: heartbeats and gossip every
/// 100 ms, t_fail 1.5 s, repair every 300 ms, unnamed blobs deleted after 2 s.
pub fn fast_config(network: &str, groups: u32) -> String {
    fast_config_with(network, &format!("groups = {groups}"))
}

/// [`fast_config`] for groups that size themselves: no `groups` key (the default), a level
/// change asked for 1 s is proposed, the previous structure is kept 5 s.
pub fn fast_config_self_sizing(network: &str) -> String {
    fast_config_with(
        network,
        "structure_hold_ms = 1000\nstructure_transition_ms = 5000",
    )
}

/// [`fast_config_self_sizing`] with `files_extra` lines in `[files]` and `rest` (more
/// tables) after it.
pub fn fast_config_self_sizing_with(network: &str, files_extra: &str, rest: &str) -> String {
    let mut config = fast_config_self_sizing(network);
    config.push_str(files_extra);
    config.push('\n');
    config.push_str(rest);
    config
}

/// The node's HTTP base URL (`http://ADDR:PORT`, no trailing slash), from its node.json
/// (`http`); a node listening on every interface is reached on loopback.
pub async fn http_base(proc: &Proc) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(proc.dir.join("node.json"))
            && let Ok(file) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(url) = file["http"].as_str()
        {
            return url
                .trim_end_matches('/')
                .replace("//0.0.0.0:", "//127.0.0.1:");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no http address in {}",
            proc.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast_config_with(network: &str, kelips_extra: &str) -> String {
    format!(
        r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 300

[kelips]
network_name = "{network}"
{kelips_extra}
heartbeat_period_ms = 100
gossip_period_ms = 100
t_fail_ms = 1500
t_contact_ms = 6000
sync_period_ms = 1000
rejoin_period_ms = 2000
request_timeout_ms = 1000

[files]
io_timeout_ms = 10000
put_deadline_ms = 20000
repair_period_ms = 300
orphan_grace_ms = 2000
"#
    )
}

/// `size` pseudo-random bytes (xorshift from `seed`): file contents for tests.
pub fn pseudo_random(size: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One `quickstore node` process.
pub struct Proc {
    pub peer: PeerId,
    pub group: u32,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub address: Option<Multiaddr>,
}

impl Proc {
    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Starts it with `root/config.toml` (mDNS off); returns once it listens.
    pub fn start(&mut self, root: &Path, bootstraps: &[Multiaddr]) {
        self.start_with(root, bootstraps, &[]);
    }

    /// [`Proc::start`] with `flags` added to the command line.
    pub fn start_with(&mut self, root: &Path, bootstraps: &[Multiaddr], flags: &[&str]) {
        let mut extra = vec!["--no-mdns".to_string()];
        extra.extend(flags.iter().map(|f| f.to_string()));
        for b in bootstraps {
            extra.extend(["--bootstrap".to_string(), b.to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let config = root.join("config.toml");
        let line = ns_node::launch(Command::new(ns_node::BIN), self, &config, &extra);
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
    }

    /// `kill -9`; returns the time of day in ms.
    pub fn kill(&mut self) -> u64 {
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

/// Now, in milliseconds of the UTC day.
pub fn now_ms_of_day() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    ms % 86_400_000
}

/// Milliseconds of day of a tracing line starting `2026-11-25T19:32:31.123456Z`.
pub fn line_ms_of_day(line: &str) -> Option<u64> {
    let time = line.get(11..23)?;
    let h: u64 = time.get(0..2)?.parse().ok()?;
    let m: u64 = time.get(3..5)?.parse().ok()?;
    let s: u64 = time.get(6..8)?.parse().ok()?;
    let ms: u64 = time.get(9..12)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

/// Lines of `log` containing `needle`, with their time of day.
pub fn log_lines(log: &Path, needle: &str) -> Vec<(u64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| Some((line_ms_of_day(l)?, l.to_string())))
        .collect()
}

/// `per_group` fresh identities in each of `groups` groups, groups interleaved.
pub fn identities(groups: u32, per_group: usize) -> Vec<(Keypair, u32)> {
    let mut by_group: BTreeMap<u32, Vec<Keypair>> = BTreeMap::new();
    while by_group
        .values()
        .map(|v| v.len().min(per_group))
        .sum::<usize>()
        < groups as usize * per_group
    {
        let key = Keypair::generate_ed25519();
        let group = id_facts(&Peer(key.public().to_peer_id()), groups).group;
        let slot = by_group.entry(group).or_default();
        if slot.len() < per_group {
            slot.push(key);
        }
    }
    // Interleave groups so the bootstrap order mixes them.
    let mut out = Vec::new();
    for i in 0..per_group {
        for (group, keys) in &by_group {
            out.push((keys[i].clone(), *group));
        }
    }
    out
}

/// Data directories under `root` holding the identities, as processes not yet started.
pub fn prepare(root: &Path, identities: Vec<(Keypair, u32)>) -> Vec<Proc> {
    identities
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
        .collect()
}

/// Every process's status (None when stopped or silent).
pub async fn statuses(procs: &[Proc]) -> Vec<(PeerId, u32, Option<Status>)> {
    let mut out = Vec::new();
    for p in procs {
        let status = match (&p.child, &p.address) {
            (Some(_), Some(address)) => {
                let mut bare = address.clone();
                bare.pop();
                fetch_status(p.peer, bare, Duration::from_secs(3), None)
                    .await
                    .ok()
            }
            _ => None,
        };
        out.push((p.peer, p.group, status));
    }
    out
}

/// Waits until every running process sees its whole group and a contact per group. With
/// `groups` = 0 (groups that size themselves) a process's group is the one its status
/// reports, and every process must report the same structure.
pub async fn wait_converged(procs: &[Proc], groups: u32, what: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let live: Vec<_> = statuses(procs)
            .await
            .into_iter()
            .zip(procs)
            .filter(|(_, p)| p.child.is_some())
            .map(|((peer, group, status), _)| {
                let group = match (&status, groups) {
                    (Some(s), 0) => s.group,
                    _ => group,
                };
                (peer, group, status)
            })
            .collect();
        if quickstore::local::converged(&live, groups) {
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
