//! Who may write a name (issue 16), on real processes over TCP loopback: three nodes of one
//! group with the default `network.writes = "signed"`, and two writer identities A and B
//! (`--identity`). A puts `a/x`; B's put and rm of `a/x` are refused with an error naming the
//! owner, and every node keeps A's version; after `quickstore grant a/ B`, B's put succeeds,
//! and B still cannot write outside `a/`. A peer speaking the wire protocol that commits a
//! forged newer version is refused, and the nodes keep the real one.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{cli, fast_config, identities, prepare, wait_converged};
use quickstore::files::client::ClientPeer;
use quickstore::files::service::files_request;
use quickstore::files::wire::{FilesRequest, FilesResponse};
use quickstore_behaviours::auth::{SignedVersion, sign_version};
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::{FileTuple, Version};

const BIN: &str = env!("CARGO_BIN_EXE_quickstore");

/// Runs the CLI through the node in `node` as the writer identity in `identity`.
fn as_writer(identity: &Path, node: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--data-dir", path(node), "--identity", path(identity)]);
    cli(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The bytes of `name` got through the node in `dir`.
fn get(dir: &Path, name: &str) -> Vec<u8> {
    let out = Command::new(BIN)
        .args(["get", name, "-o", "-", "--data-dir", path(dir)])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "get {name} via {}: {out:?}",
        dir.display()
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_and_its_grantees_write_a_name() {
    let root = std::env::temp_dir().join(format!("qs-signed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("config.toml"), fast_config("signed-test", 1)).expect("config");
    let mut procs = prepare(&root, identities(1, 3));
    procs[0].start(&root, &[]);
    let first = procs[0].address.clone().expect("address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 1, "three nodes", Duration::from_secs(30)).await;

    let (ok, status, err) = cli(&["status", "--json", "--data-dir", path(&procs[0].dir)]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["writes"], "signed", "the default");
    let (id_a, id_b) = (root.join("a.key"), root.join("b.key"));
    let (ok, b_peer, err) = cli(&["id", "--identity", path(&id_b)]);
    assert!(ok, "{err}");
    let b_peer = b_peer.trim().to_string();
    let (x, y) = (root.join("x"), root.join("y"));
    std::fs::write(&x, b"A's bytes").expect("x");
    std::fs::write(&y, b"B's bytes").expect("y");
    let n0 = procs[0].dir.clone();
    let n1 = procs[1].dir.clone();

    let (ok, _, err) = as_writer(&id_a, &n0, &["put", path(&x), "a/x"]);
    assert!(ok, "A's put: {err}");

    // B may neither overwrite nor delete A's name; the error says whose it is and what to do.
    let (ok, _, err) = as_writer(&id_b, &n1, &["put", path(&y), "a/x"]);
    assert!(!ok, "B's put of A's name must be refused");
    assert!(
        err.contains("is owned by") && err.contains("quickstore grant"),
        "{err}"
    );
    let (ok, _, err) = as_writer(&id_b, &n1, &["rm", "a/x"]);
    assert!(!ok, "B's rm of A's name must be refused");
    assert!(err.contains("is owned by"), "{err}");
    for p in &procs {
        assert_eq!(get(&p.dir, "a/x"), b"A's bytes", "node {}", p.peer);
    }

    // A wire-level forgery: a newer version of a/x (A's bytes, which the holder has) signed
    // by B as its owner, committed straight to a holder. It is refused and nobody takes it.
    let client = ClientPeer::start(Duration::from_secs(5), None).expect("client peer");
    let mut bare = first.clone();
    bare.pop();
    client.book.add(procs[0].peer, vec![bare]);
    let b_key = quickstore::client_identity::load_or_create(Some(&id_b)).expect("B's key");
    let mut forged = FileTuple {
        name: "a/x".into(),
        version: Version {
            lamport: 50,
            blake3: *blake3::hash(b"A's bytes").as_bytes(),
        },
        size: 9,
        holders: vec![Peer(procs[0].peer)],
        epoch: 0,
        deleted: false,
        auth: None,
    };
    let owner = b_key.public().to_bytes();
    forged.auth = Some(Arc::new(sign_version(
        &b_key,
        SignedVersion::from(&forged),
        &owner,
        None,
    )));
    let commit = FilesRequest::Commit { tuple: forged };
    let answer = files_request(
        &client.control,
        procs[0].peer,
        &commit,
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert!(
        matches!(&answer, FilesResponse::Refused { reason } if reason.contains("owned by")),
        "a forged commit must be refused: {answer:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_key = quickstore::client_identity::load_or_create(Some(&id_a)).expect("A's key");
    for p in &procs {
        let mut bare = p.address.clone().expect("running");
        bare.pop();
        client.book.add(p.peer, vec![bare]);
        let locate = FilesRequest::Locate { name: "a/x".into() };
        let answer = files_request(&client.control, p.peer, &locate, Duration::from_secs(5))
            .await
            .expect("an answer");
        let FilesResponse::Located { tuple, .. } = answer else {
            panic!("node {} lost a/x: {answer:?}", p.peer);
        };
        assert!(
            tuple.version.lamport < 50,
            "node {} took the forgery",
            p.peer
        );
        let owner = tuple.auth.as_ref().map(|a| a.owner);
        assert_eq!(owner, Some(a_key.public().to_bytes()), "node {}", p.peer);
    }

    // A grants B the prefix a/: B's put now succeeds, and B is still held to the prefix.
    let (ok, out, err) = as_writer(&id_a, &n0, &["grant", "a/", &b_peer]);
    assert!(ok, "grant: {err}");
    assert!(out.contains("granted"), "{out}");
    let (ok, _, err) = as_writer(&id_b, &n1, &["put", path(&y), "a/x"]);
    assert!(ok, "B's granted put: {err}");
    for p in &procs {
        assert_eq!(get(&p.dir, "a/x"), b"B's bytes", "node {}", p.peer);
    }
    // A reader sees who owns the name and who wrote this version.
    let (ok, a_peer, _) = cli(&["id", "--identity", path(&id_a)]);
    assert!(ok);
    let got = root.join("got");
    let (ok, out, err) = cli(&[
        "get",
        "a/x",
        "-o",
        path(&got),
        "--json",
        "--data-dir",
        path(&n0),
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("get --json");
    assert_eq!(report["owner"], a_peer.trim(), "{report}");
    assert_eq!(report["writer"], b_peer.as_str(), "{report}");
    let (ok, _, err) = as_writer(&id_a, &n0, &["put", path(&x), "b/x"]);
    assert!(ok, "A's put of b/x: {err}");
    let (ok, _, err) = as_writer(&id_b, &n1, &["put", path(&y), "b/x"]);
    assert!(
        !ok && err.contains("is owned by"),
        "B outside its grant: {err}"
    );

    // The owner deletes; B cannot bring the name back by writing it.
    let (ok, _, err) = as_writer(&id_a, &n0, &["rm", "b/x"]);
    assert!(ok, "A's rm: {err}");
    let (ok, _, err) = as_writer(&id_b, &n1, &["put", path(&y), "b/x"]);
    assert!(!ok && err.contains("is owned by"), "B after A's rm: {err}");

    for p in procs.iter_mut() {
        p.kill();
    }
    let _ = std::fs::remove_dir_all(&root);
}
