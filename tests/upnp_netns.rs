//! UPnP, in network namespaces: NAT A's router runs miniupnpd (Debian's, nftables backend);
//! node `a1` started with `--upnp` maps its port on the router, counts itself reachable (no
//! relay) and is dialed directly from behind NAT B. Run as root (CI is, and installs
//! miniupnpd); elsewhere the test says it is skipped.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{NatKind, Topology, require_root};
use common::ns_node::{self, BIN};
use common::{Proc, identities, prepare};
use quickstore::reach::{Path as Reached, Reachability};

const CONFIG: &str = r#"
[node]
listen = ["/ip4/0.0.0.0/tcp/0"]
backoff_ms = 500

[kelips]
network_name = "upnp-test"
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 6000
rejoin_period_ms = 2000
request_timeout_ms = 3000

[nat]
mdns = false
autonat_probe_interval_ms = 500
"#;

/// The chains miniupnpd-nftables fills (its default table and chain names).
const NFT_RULESET: &str = r#"
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
"#;

/// miniupnpd refuses reserved external IPs, the test segment 198.51.100.0/24 among them: the
/// router gets a second, ordinary address on its WAN side that the others route to.
const EXTERNAL_IP: &str = "11.11.11.11";

const MINIUPNPD_CONF: &str = "ext_ifname=wan0
ext_ip=11.11.11.11
listening_ip=br0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d
allow 1024-65535 192.168.1.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_behind_a_upnp_router_maps_its_port_and_is_dialed_directly() {
    if !require_root("a_node_behind_a_upnp_router_maps_its_port_and_is_dialed_directly") {
        return;
    }
    let topology = Topology::build("upnp", NatKind::Masquerade, 0).expect("the topology builds");
    let root = tempfile::tempdir().expect("temp dir");
    // The router: the chains miniupnpd fills, new connections it forwarded let through the
    // FORWARD policy (as home routers do), then the daemon on the LAN side.
    topology
        .run(
            "r1",
            &[
                "ip",
                "addr",
                "add",
                &format!("{EXTERNAL_IP}/32"),
                "dev",
                "wan0",
            ],
        )
        .expect("the router's external address");
    for host in ["pub", "r2"] {
        topology
            .run(
                host,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{EXTERNAL_IP}/32"),
                    "via",
                    "198.51.100.11",
                ],
            )
            .expect("a route to the router's external address");
    }
    let ruleset = root.path().join("miniupnpd.nft");
    std::fs::write(&ruleset, NFT_RULESET).expect("ruleset");
    topology
        .run("r1", &["nft", "-f", ruleset.to_str().expect("utf-8")])
        .expect("nft loads the miniupnpd chains");
    topology
        .run(
            "r1",
            &[
                "iptables",
                "-I",
                "FORWARD",
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "ACCEPT",
            ],
        )
        .expect("forwarded ports pass");
    let conf = root.path().join("miniupnpd.conf");
    std::fs::write(&conf, MINIUPNPD_CONF).expect("miniupnpd.conf");
    let daemon_log = root.path().join("miniupnpd.log");
    let _daemon = Daemon(
        topology
            .command("r1", "miniupnpd")
            .args(["-f", conf.to_str().expect("utf-8"), "-d"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&daemon_log).expect("log"))
            .spawn()
            .expect("miniupnpd starts (apt-get install miniupnpd)"),
    );

    let config = root.path().join("config.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let mut procs: BTreeMap<&str, Proc> = ["pub", "a1", "b1"]
        .into_iter()
        .zip(prepare(root.path(), identities(1, 3)))
        .collect();
    let pub_flags = [
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--external-addr",
        "/ip4/198.51.100.1/tcp/4001",
        "--relay-server",
    ];
    let pub_proc = procs.get_mut("pub").expect("pub");
    ns_node::launch(topology.command("pub", BIN), pub_proc, &config, &pub_flags);
    let bootstrap = format!("/ip4/198.51.100.1/tcp/4001/p2p/{}", procs["pub"].peer);
    for (host, upnp) in [("a1", true), ("b1", false)] {
        let mut flags = vec!["--bootstrap", bootstrap.as_str()];
        if upnp {
            flags.push("--upnp");
        }
        let proc = procs.get_mut(host).expect("a host");
        ns_node::launch(topology.command(host, BIN), proc, &config, &flags);
    }
    let a1 = procs["a1"].peer.to_string();
    let status = |h: &str| ns_node::status(topology.command(h, BIN), &procs[h].dir);

    let started = Instant::now();
    let (sa, sb) = loop {
        let (sa, sb) = (status("a1"), status("b1"));
        let mapped = sa.as_ref().is_some_and(|s| {
            s.reachability == Reachability::Public
                && s.addresses
                    .iter()
                    .any(|a| a.starts_with(&format!("/ip4/{EXTERNAL_IP}/tcp/")))
        });
        let direct = sb
            .as_ref()
            .is_some_and(|s| s.paths.get(&a1) == Some(&Reached::Direct));
        if mapped && direct {
            break (sa.expect("a1"), sb.expect("b1"));
        }
        if started.elapsed() > Duration::from_secs(60) {
            let daemon = std::fs::read_to_string(&daemon_log).unwrap_or_default();
            ns_node::stop_and_keep_logs("upnp", procs.iter_mut().map(|(h, p)| (*h, p)));
            panic!(
                "no UPnP mapping used within 60 s\na1: {sa:?}\nb1: {sb:?}\nminiupnpd:\n{daemon}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "mapped and dialed directly after {:.1} s: a1 advertises {:?}",
        started.elapsed().as_secs_f64(),
        sa.addresses
    );
    assert!(
        sa.relay.is_none(),
        "a reachable node reserves no relay: {:?}",
        sa.relay
    );
    let punched = sb.counters.get("hole_punches_ok").copied().unwrap_or(0);
    println!("b1 reaches a1 directly (hole punches on b1: {punched})");
    ns_node::stop_and_keep_logs("upnp", procs.iter_mut().map(|(h, p)| (*h, p)));
}
