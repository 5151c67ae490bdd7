//! Real `quickstore node` processes over TCP loopback, 12 of them with the default groups that
//! size themselves (fewer than 6R nodes are one group, so every node watches 11): they converge; a
//! `kill -9`ed member is removed by its group in time (read from the timestamped logs) and
//! nobody else is suspected; restarted on its data dir it comes back with the same PeerId and
//! a higher incarnation; with the bootstrap killed, the network keeps working and a new node
//! joins through a second bootstrap address. And five open nodes listening as the defaults
//! do warn of no failed handshake.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, identities, log_lines, prepare, statuses, wait_converged};
use libp2p::identity::Keypair;

/// Nodes started (one group: the rule splits only from 18 nodes with R = 3).
const NODES: usize = 12;
/// `wait_converged` reads each node's group and structure from its status.
const SELF_SIZING: u32 = 0;
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
heartbeat_period_ms = 100
gossip_period_ms = 100
t_fail_ms = 1500
t_contact_ms = 6000
sync_period_ms = 1000
rejoin_period_ms = 2000
request_timeout_ms = 1000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_converge_detect_a_kill_restart_and_survive_the_bootstrap() {
    let root = std::env::temp_dir().join(format!("qs-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(root.join("config.toml"), CONFIG).expect("config");

    let mut procs: Vec<Proc> = prepare(&root, identities(1, NODES));

    // Bootstrap first, then everyone through it.
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(
        &procs,
        SELF_SIZING,
        "first convergence",
        Duration::from_secs(60),
    )
    .await;

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
    wait_converged(
        &procs,
        SELF_SIZING,
        "after restart",
        Duration::from_secs(60),
    )
    .await;
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
        group: 0,
        dir: fresh_dir,
        child: None,
        address: None,
    };
    fresh.start(&root, &[dead_first, second]);
    procs.push(fresh);
    // The bootstrap is removed everywhere after 2·t_fail; wait for that, then convergence.
    wait_converged(
        &procs,
        SELF_SIZING,
        "after the bootstrap died",
        Duration::from_secs(60),
    )
    .await;
    let _ = std::fs::remove_dir_all(&root);
}

/// Five open nodes listening as the defaults do (TCP and QUIC on every interface), so that
/// peers race several dials to each other and drop the losers: none of them warns of a
/// failed handshake or hints at private networks (every node did, until 2026-12-08).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_network_on_every_interface_warns_of_no_handshake() {
    let root = std::env::temp_dir().join(format!("qs-procs-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let config = CONFIG.replace(
        r#"listen = ["/ip4/127.0.0.1/tcp/0"]"#,
        r#"listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]"#,
    );
    std::fs::write(root.join("config.toml"), config).expect("config");
    let mut procs: Vec<Proc> = prepare(&root, identities(1, 5));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, SELF_SIZING, "convergence", Duration::from_secs(60)).await;
    // A few more gossip rounds of dials.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in &procs {
        for needle in ["failed the handshake", "private network"] {
            let lines = log_lines(&p.log(), needle);
            assert!(lines.is_empty(), "{}: {lines:?}", p.dir.display());
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
