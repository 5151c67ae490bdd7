//! A node of the older fixed-k protocol (`/quickstore/kelips/1.0.0`, before groups sized
//! themselves) that connects to a node of this version cannot exchange Kelips messages with
//! it. It must be told apart from a stranger: the node's log names it and says to upgrade it.
//! The old node is played by a swarm whose identify lists only the old Kelips protocol.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, SwarmBuilder, identify, noise, tcp, yamux};

use common::{Proc, identities, prepare};

const OLD_KELIPS: &str = "/quickstore/kelips/1.0.0";

#[derive(NetworkBehaviour)]
struct OldNode {
    identify: identify::Behaviour,
    streams: libp2p_stream::Behaviour,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_the_old_protocol_is_named_in_the_log() {
    let root = std::env::temp_dir().join(format!("qs-old-protocol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("old"),
    )
    .expect("config");
    let mut procs: Vec<Proc> = prepare(&root, identities(1, 1));
    procs[0].start(&root, &[]);
    let address = procs[0].address.clone().expect("address");

    let mut old = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|key| OldNode {
            identify: identify::Behaviour::new(identify::Config::new(
                "/quickstore/id/1.0.0".into(),
                key.public(),
            )),
            streams: libp2p_stream::Behaviour::new(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    // Accepting the old protocol is what makes identify list it.
    let _incoming = old
        .behaviour()
        .streams
        .new_control()
        .accept(StreamProtocol::new(OLD_KELIPS))
        .expect("accepts");
    let old_peer = *old.local_peer_id();
    old.dial(address).expect("dials");

    let log = procs[0].log();
    let started = Instant::now();
    let line = loop {
        let found = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("runs an older quickstore"))
            .map(str::to_string);
        if let Some(line) = found {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no word of the old node in the log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Drive the old node's swarm a little (identify runs on its connection).
        let _ = tokio::time::timeout(Duration::from_millis(200), old.select_next_some()).await;
    };
    assert!(line.contains(&old_peer.to_string()), "{line}");
    assert!(
        line.contains(OLD_KELIPS) && line.contains("upgrade"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
