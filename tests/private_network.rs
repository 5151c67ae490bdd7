//! A private network on real processes over TCP loopback (issue 16): two nodes share a key
//! made by `quickstore keygen --network`; a node without a key and a node with another key
//! try to join through the same bootstrap. Only the key holders form a network; clients
//! with the key put and get, clients without it or with another one are refused with an
//! error that names the key; each side logs a failed handshake once, not once per retry.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, cli, fast_config_self_sizing, identities, log_lines, prepare};
use quickstore::client::fetch_status;
use quickstore::status::Status;

const BIN: &str = env!("CARGO_BIN_EXE_quickstore");

fn keygen(path: &Path) {
    let out = Command::new(BIN)
        .args(["keygen", "--network"])
        .arg(path)
        .output()
        .expect("keygen runs");
    assert!(out.status.success(), "{out:?}");
}

/// `root/config.toml`: the fast test settings, with `key` as the network key when given.
fn configure(root: &Path, key: Option<&Path>) {
    std::fs::create_dir_all(root).expect("root");
    let mut config = fast_config_self_sizing("private-test");
    if let Some(key) = key {
        config.push_str(&format!("\n[network]\nkey_file = {:?}\n", key.display()));
    }
    std::fs::write(root.join("config.toml"), config).expect("config");
}

async fn status_with(p: &Proc, key: Option<&Path>) -> Option<Status> {
    let mut bare = p.address.clone().expect("running");
    bare.pop();
    let key = key.map(|k| quickstore::network_key::load(k).expect("key"));
    fetch_status(p.peer, bare, Duration::from_secs(3), key)
        .await
        .ok()
}

fn members(status: &Status) -> Vec<String> {
    status
        .view
        .iter()
        .filter(|m| !m.failed)
        .map(|m| m.peer_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_network_key_connect_put_and_get() {
    let root = std::env::temp_dir().join(format!("qs-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("root");
    let (key_a, key_b) = (root.join("a.key"), root.join("b.key"));
    keygen(&key_a);
    keygen(&key_b);
    let (private, open, other) = (root.join("private"), root.join("open"), root.join("other"));
    configure(&private, Some(&key_a));
    configure(&open, None);
    configure(&other, Some(&key_b));

    let mut ids = identities(1, 4).into_iter();
    let mut members_a = prepare(&private, ids.by_ref().take(2).collect());
    let mut outsider = prepare(&open, ids.by_ref().take(1).collect());
    let mut stranger = prepare(&other, ids.take(1).collect());

    members_a[0].start(&private, &[]);
    let first = members_a[0].address.clone().expect("address");
    members_a[1].start(&private, std::slice::from_ref(&first));
    outsider[0].start(&open, std::slice::from_ref(&first));
    stranger[0].start(&other, std::slice::from_ref(&first));

    // The two key holders see each other; the others never get in (they retry every 300 ms
    // of backoff while we wait).
    let (a0, a1) = (members_a[0].peer.to_string(), members_a[1].peer.to_string());
    let started = Instant::now();
    loop {
        let s0 = status_with(&members_a[0], Some(&key_a)).await;
        let s1 = status_with(&members_a[1], Some(&key_a)).await;
        if let (Some(s0), Some(s1)) = (&s0, &s1)
            && members(s0).contains(&a1)
            && members(s1).contains(&a0)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "key holders did not meet: {s0:?} {s1:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s0 = status_with(&members_a[0], Some(&key_a))
        .await
        .expect("status with the key");
    // A status's view lists the other members of the node's group.
    assert_eq!(
        members(&s0),
        vec![a1.clone()],
        "only key holders in the view"
    );
    for (p, key) in [(&outsider[0], None), (&stranger[0], Some(key_b.as_path()))] {
        let s = status_with(p, key)
            .await
            .expect("the outsider answers its own");
        assert!(members(&s).is_empty(), "alone: {s:?}");
    }

    // Clients: with the key, put on one node and get from the other, byte-identical.
    let file = root.join("hello.txt");
    std::fs::write(&file, b"only for key holders\n").expect("file");
    let at = |p: &Proc| p.address.clone().expect("address").to_string();
    let key_a_arg = key_a.display().to_string();
    let file_arg = file.display().to_string();
    let (ok, _, err) = cli(&[
        "put",
        &file_arg,
        "hello",
        "--peer",
        &at(&members_a[0]),
        "--network-key",
        &key_a_arg,
    ]);
    assert!(ok, "put with the key: {err}");
    let (ok, out, err) = cli(&[
        "get",
        "hello",
        "-o",
        "-",
        "--peer",
        &at(&members_a[1]),
        "--network-key",
        &key_a_arg,
    ]);
    assert!(ok, "get with the key: {err}");
    assert_eq!(out, "only for key holders\n");
    // A local client finds the key in the node's node.json.
    let dir = members_a[1].dir.display().to_string();
    let (ok, out, err) = cli(&["get", "hello", "-o", "-", "--data-dir", &dir]);
    assert!(ok && out == "only for key holders\n", "local get: {err}");

    // Without the key, or with another one: refused, and the error names the key.
    let key_b_arg = key_b.display().to_string();
    let peer = at(&members_a[0]);
    for extra in [vec![], vec!["--network-key", key_b_arg.as_str()]] {
        for command in [
            vec!["put", file_arg.as_str(), "intruder"],
            vec!["get", "hello", "-o", "-"],
            vec!["status"],
        ] {
            let mut args = command.clone();
            args.extend(["--peer", peer.as_str(), "--timeout-s", "3"]);
            if command[0] == "status" {
                args.retain(|a| *a != "--timeout-s" && *a != "3");
            }
            args.extend(extra.iter().copied());
            let (ok, out, err) = cli(&args);
            assert!(!ok, "{args:?} succeeded: {out}");
            assert!(
                err.contains("network key") || err.contains("--network-key"),
                "{args:?}: {err}"
            );
            assert!(
                !out.contains("only for key holders"),
                "{args:?} got the bytes"
            );
        }
    }
    let s0 = status_with(&members_a[0], Some(&key_a))
        .await
        .expect("status");
    assert_eq!(members(&s0), vec![a1], "nobody else got in: {s0:?}");

    // One line per side, however often the others retried.
    let a_lines = log_lines(&members_a[0].log(), "failed the handshake");
    assert_eq!(a_lines.len(), 1, "{a_lines:?}");
    for p in [&outsider[0], &stranger[0]] {
        let lines = log_lines(&p.log(), "the handshake failed");
        assert_eq!(lines.len(), 1, "{:?}: {lines:?}", p.dir);
    }
    for p in members_a
        .iter_mut()
        .chain(&mut outsider)
        .chain(&mut stranger)
    {
        p.kill();
    }
    let _ = std::fs::remove_dir_all(&root);
}
