//! Real libp2p swarms in one process, over loopback TCP or libp2p's memory transport (Noise,
//! Yamux either way): they form a Kelips network through one bootstrap and converge.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use quickstore::local::{LocalNode, converged, snapshot};
use quickstore_behaviours::Config;

fn fast_config(groups: u32, period_ms: u64) -> Config {
    Config {
        groups,
        heartbeat_period_ms: period_ms,
        gossip_period_ms: period_ms,
        t_fail_ms: 30 * period_ms,
        t_contact_ms: 120 * period_ms,
        sync_period_ms: 10 * period_ms,
        rejoin_period_ms: 20 * period_ms,
        // Generous: one process hosts every node, and a CPU-starved test machine must not
        // turn slow answers into unreachable peers.
        request_timeout_ms: 5000,
        ..Config::default()
    }
}

async fn converge(nodes: usize, groups: u32, period_ms: u64, limit: Duration) {
    converge_on("/ip4/127.0.0.1/tcp/0", nodes, groups, period_ms, limit).await;
}

async fn converge_on(listen: &str, nodes: usize, groups: u32, period_ms: u64, limit: Duration) {
    let config = fast_config(groups, period_ms);
    let listen: Multiaddr = listen.parse().expect("listen address");
    let idle = Duration::from_secs(10);
    let start = |bootstraps| {
        let keypair = Keypair::generate_ed25519();
        LocalNode::start_on(keypair, config.clone(), bootstraps, listen.clone(), idle)
    };
    let first = start(Vec::new()).await.expect("bootstrap starts");
    assert_eq!(
        first.address.iter().next().map(|p| p.tag()),
        listen.iter().next().map(|p| p.tag()),
        "listens on {}",
        first.address
    );
    let bootstrap = vec![(first.peer_id, first.address.clone())];
    let mut all = vec![first];
    for _ in 1..nodes {
        all.push(start(bootstrap.clone()).await.expect("node starts"));
    }
    let started = Instant::now();
    loop {
        let snapshot = snapshot(&all, groups).await;
        if converged(&snapshot, groups) {
            break;
        }
        if started.elapsed() > limit {
            let mut wrong_views = 0;
            let mut missing_contacts = Vec::new();
            for (me, group, status) in &snapshot {
                let Some(status) = status else {
                    wrong_views += 1;
                    continue;
                };
                let expected = snapshot
                    .iter()
                    .filter(|(p, g, _)| g == group && p != me)
                    .count();
                let live = status.view.iter().filter(|m| !m.failed).count();
                if live != expected {
                    wrong_views += 1;
                }
                let missing: Vec<u32> = (0..groups)
                    .filter(|g| *g != *group && status.contacts.get(g).is_none_or(|c| c.is_empty()))
                    .collect();
                if !missing.is_empty() {
                    missing_contacts.push((me.to_string(), missing, status.counters.clone()));
                }
            }
            panic!(
                "{nodes} nodes not converged after {limit:?}: {wrong_views} wrong views, \
                 missing contact groups: {missing_contacts:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for node in all {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_swarms_converge() {
    converge(12, 4, 100, Duration::from_secs(30)).await;
}

/// Without sockets: libp2p's in-process memory transport, Noise and Yamux on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_swarms_converge_over_the_memory_transport() {
    converge_on("/memory/0", 12, 4, 100, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_swarms_converge() {
    converge(200, 8, 1000, Duration::from_secs(120)).await;
}
