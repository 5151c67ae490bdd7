//! Real libp2p swarms in one process, over loopback TCP or libp2p's memory transport (Noise,
//! Yamux either way): they form a Kelips network through one bootstrap and converge, with
//! groups that size themselves (the default): 12 swarms are one group, 200 split into the
//! groups the rule chooses for their number and converge on that structure.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use quickstore::local::{LocalNode, converged, snapshot};
use quickstore_behaviours::Config;

fn fast_config(groups: u32, period_ms: u64) -> Config {
    Config {
        groups,
        // A level change is proposed after 10 periods of asking for it, and the previous
        // structure is kept for 50 (the defaults' ratios, scaled to the period).
        structure_hold_ms: 10 * period_ms,
        structure_transition_ms: 50 * period_ms,
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
        // With groups that size themselves, a structure all agree on may be a step of the
        // growth (8 groups of 25 on the way to 16): converged means on the size N calls for.
        let sized = groups != 0
            || quickstore::local::agreed_structure(&snapshot)
                .is_some_and(|(k, _)| within_band(nodes, k));
        if sized && converged(&snapshot, groups) {
            eprintln!(
                "{nodes} swarms converged {:.1} s after the last start",
                started.elapsed().as_secs_f64()
            );
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
                let missing: Vec<u32> = (0..status.groups)
                    .filter(|g| *g != *group && status.contacts.get(g).is_none_or(|c| c.is_empty()))
                    .collect();
                if !missing.is_empty() {
                    missing_contacts.push((me.to_string(), missing, status.counters.clone()));
                }
            }
            let mut structures: std::collections::BTreeMap<String, usize> = Default::default();
            for (_, _, status) in &snapshot {
                let held = status
                    .as_ref()
                    .map(|s| format!("{} groups, epoch {:?}", s.groups, s.structure_epoch));
                *structures.entry(held.unwrap_or_default()).or_default() += 1;
            }
            panic!(
                "{nodes} nodes not converged after {limit:?}: {wrong_views} wrong views, \
                 missing contact groups: {missing_contacts:?}, structures held: {structures:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if groups == 0 {
        let snapshot = snapshot(&all, groups).await;
        let (k, epoch) = quickstore::local::agreed_structure(&snapshot).expect("converged");
        // ALGORITHM.md's invariant: once N is stable, group size within ½ to 1.5 × √N.
        let size = nodes as f64 / f64::from(k);
        let root = (nodes as f64).sqrt();
        eprintln!(
            "{nodes} swarms: {k} groups (epoch {epoch:?}), {size:.1} per group, √N {root:.1}"
        );
        assert!(
            within_band(nodes, k),
            "{nodes} nodes in {k} groups: {size:.1} per group is outside ½ to 1.5 × √N = {root:.1}"
        );
    }
    for node in all {
        node.stop().await;
    }
}

/// ALGORITHM.md's invariant once N is stable: one group below the first split (6R = 18
/// nodes), and from 72 nodes on group size within ½ to 1.5 × √N (in between, within 2 ×).
fn within_band(nodes: usize, groups: u32) -> bool {
    let size = nodes as f64 / f64::from(groups.max(1));
    let ratio = size / (nodes as f64).sqrt();
    let high = if nodes >= 72 { 1.5 } else { 2.2 };
    groups == 1 && nodes < 18 || (0.5..=high).contains(&ratio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_swarms_converge() {
    converge(12, 0, 100, Duration::from_secs(30)).await;
}

/// Without sockets: libp2p's in-process memory transport, Noise and Yamux on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_swarms_converge_over_the_memory_transport() {
    converge_on("/memory/0", 12, 0, 100, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_swarms_split_into_groups_and_converge() {
    converge(200, 0, 1000, Duration::from_secs(180)).await;
}
