//! LAN discovery, in network namespaces (one bridge, three hosts; see `common::netns::Lan`):
//! two nodes with mDNS and no bootstrap form one network; a node of another network name on
//! the same LAN finds them too, but is never taken in. Run as root (CI is); elsewhere the test
//! says it is skipped.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::netns::{Lan, require_root};
use common::ns_node::{self, BIN};
use common::{Proc, identities, prepare};
use quickstore::status::Status;

const CONFIG: &str = r#"
[node]
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
backoff_ms = 500

[kelips]
network_name = "lan-test"
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 4000
t_contact_ms = 20000
rejoin_period_ms = 2000
request_timeout_ms = 2000

[nat]
mdns = true
autonat_probe_interval_ms = 500
"#;

#[test]
fn nodes_on_one_lan_find_each_other_and_other_networks_stay_out() {
    if !require_root("nodes_on_one_lan_find_each_other_and_other_networks_stay_out") {
        return;
    }
    let lan = Lan::build("mdns", 3).expect("the LAN builds");
    let root = tempfile::tempdir().expect("temp dir");
    let config = root.path().join("config.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let mut procs: BTreeMap<&str, Proc> = ["h1", "h2", "h3"]
        .into_iter()
        .zip(prepare(root.path(), identities(1, 3)))
        .collect();
    // h3 runs another network on the same LAN, and starts first so that the others find it
    // before they find each other.
    for (host, extra) in [
        ("h3", &["--network", "someone-else"][..]),
        ("h1", &[][..]),
        ("h2", &[][..]),
    ] {
        let proc = procs.get_mut(host).expect("a host");
        ns_node::launch(lan.command(host, BIN), proc, &config, extra);
    }
    let peer = |h: &str| procs[h].peer.to_string();
    let (h1, h2, h3) = (peer("h1"), peer("h2"), peer("h3"));
    let status = |h: &str| ns_node::status(lan.command(h, BIN), &procs[h].dir);
    let knows = |s: &Status, p: &str| {
        s.view.iter().any(|m| m.peer_id == p) || s.contacts.values().flatten().any(|c| c == p)
    };

    let started = Instant::now();
    let (s1, s2) = loop {
        let (s1, s2) = (status("h1"), status("h2"));
        if let (Some(a), Some(b)) = (&s1, &s2)
            && knows(a, &h2)
            && knows(b, &h1)
            && a.view.iter().chain(&b.view).all(|m| !m.failed)
        {
            break (s1.expect("h1"), s2.expect("h2"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "h1 and h2 did not find each other by mDNS:\nh1 {s1:?}\nh2 {s2:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!(
        "one network without a bootstrap after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Give h3 time to have been found and greeted (it was the first on the LAN), then check
    // that nobody took anybody in across the two networks.
    std::thread::sleep(Duration::from_secs(3));
    let s3 = status("h3").expect("h3 answers");
    for (name, s) in [("h1", &s1), ("h2", &s2)] {
        assert!(
            !knows(s, &h3),
            "{name} took in the other network's node: {s:?}"
        );
    }
    let (s1, s2) = (status("h1").expect("h1"), status("h2").expect("h2"));
    for (name, s) in [("h1", &s1), ("h2", &s2)] {
        assert!(
            !knows(s, &h3),
            "{name} took in the other network's node later: {s:?}"
        );
        assert_eq!(s.view.len(), 1, "{name} sees exactly its LAN neighbour");
    }
    assert!(
        !knows(&s3, &h1) && !knows(&s3, &h2),
        "the other network took in ours: {s3:?}"
    );
    // h3 was found (mDNS) and spoke to: its refusals are the proof the filter is the
    // network check, not a missing discovery.
    let log3 = std::fs::read_to_string(procs["h3"].log()).expect("h3's log");
    let found_h3 = ["h1", "h2"].iter().any(|h| {
        std::fs::read_to_string(procs[h].log())
            .map(|l| l.contains(&format!("found {h3} on the LAN")))
            .unwrap_or(false)
    });
    assert!(
        found_h3 || log3.contains("refused"),
        "h3 was never found on the LAN, so the test proves nothing"
    );
    ns_node::stop_and_keep_logs("mdns", procs.iter_mut().map(|(h, p)| (*h, p)));
}
