//! Bad input on the file protocols, against a real `quickstore node` process: oversized and
//! undecodable requests, bad names, a put over the size limit (refused before any byte
//! moves), a put cut short or with the wrong hash (nothing becomes visible), a put for
//! another group, a get of an unknown blob. Each gets a clear answer, and the node keeps
//! serving.
//!
//! A test of the fixed mode (`groups = 2`) on purpose: only with k fixed is one node outside
//! the group of half the names, so that a put for another group can be sent to it.

mod common;

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use quickstore::files::client::ClientPeer;
use quickstore::files::service::{files_request, open_stream};
use quickstore::files::wire::{
    BLOB_PROTOCOL, BlobRequest, BlobResponse, BlobTrailer, FILES_PROTOCOL, FilesRequest,
    FilesResponse, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, read_message, write_message,
};
use quickstore_behaviours::codec::frame;
use quickstore_behaviours::id::name_facts;

const IO: Duration = Duration::from_secs(5);

const CONFIG: &str = r#"
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]

[kelips]
network_name = "files-bad-input"
groups = 2
gossip_period_ms = 100
heartbeat_period_ms = 100

[files]
max_file_bytes = 1048576
storage_bytes = 4194304
io_timeout_ms = 3000
"#;

async fn open(client: &ClientPeer, peer: PeerId, protocol: StreamProtocol) -> Stream {
    open_stream(&client.control, peer, protocol, IO)
        .await
        .expect("stream opens")
}

async fn files_answer(client: &ClientPeer, peer: PeerId, raw: &[u8]) -> FilesResponse {
    let mut stream = open(client, peer, FILES_PROTOCOL).await;
    stream.write_all(raw).await.expect("write");
    stream.flush().await.expect("flush");
    read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("an answer")
}

/// Opens a blob stream, sends `put {name, size}` and reads the first answer.
async fn start_put(
    client: &ClientPeer,
    peer: PeerId,
    name: &str,
    size: u64,
) -> (Stream, BlobResponse) {
    let mut stream = open(client, peer, BLOB_PROTOCOL).await;
    let put = BlobRequest::Put {
        name: name.to_string(),
        size,
        homes: Vec::new(),
        after: 0,
        signed: true,
    };
    write_message(&mut stream, &put, MAX_REQUEST_BYTES, IO)
        .await
        .expect("send");
    let answer = read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("answer");
    (stream, answer)
}

/// The trailer of a signed put of `size` bytes hashing to `blake3`, as version `lamport`
/// (from the home's `ready_at`), signed by a fixed test writer.
fn signed_trailer(name: &str, answer: &BlobResponse, size: u64, blake3: [u8; 32]) -> BlobTrailer {
    use quickstore_behaviours::auth::{SignedVersion, sign_version};
    let BlobResponse::ReadyAt { lamport } = answer else {
        panic!("expected ready_at, got {answer:?}");
    };
    let mut seed = [42u8; 32];
    let key = libp2p::identity::ed25519::Keypair::from(
        libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut seed).expect("seed"),
    );
    let version = SignedVersion {
        name,
        lamport: *lamport,
        blake3: &blake3,
        size,
        deleted: false,
    };
    let owner = key.public().to_bytes();
    BlobTrailer {
        blake3,
        auth: Some(sign_version(&key, version, &owner, None)),
    }
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    frame(&cbor4ii::serde::to_vec(Vec::new(), value).expect("encodes"))
}

fn refusal(answer: &FilesResponse) -> &str {
    match answer {
        FilesResponse::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn blob_refusal(answer: &BlobResponse) -> &str {
    match answer {
        BlobResponse::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn visible_blobs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .map(|shards| {
            shards
                .flatten()
                .filter(|s| s.file_name() != "tmp")
                .map(|s| std::fs::read_dir(s.path()).map(|d| d.count()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// A new client peer (a new identity) that knows `node`'s address; its connections close
/// after `idle`.
fn client_of(node: &common::Proc, idle: Duration) -> ClientPeer {
    let client = ClientPeer::start(idle, None).expect("client peer");
    let mut bare = node.address.clone().expect("address");
    bare.pop();
    client.book.add(node.peer, vec![bare]);
    client
}

/// One node (group 0 of 2) started with `config` in a fresh directory, and a client peer that
/// knows its address.
fn one_node(tag: &str, config: &str) -> (std::path::PathBuf, Vec<common::Proc>, ClientPeer) {
    let root = std::env::temp_dir().join(format!("qs-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(root.join("config.toml"), config).expect("config");
    let mut procs = common::prepare(&root, common::identities(2, 1));
    procs[0].start(&root, &[]);
    let mut address = procs[0].address.clone().expect("address");
    address.pop();
    let client = ClientPeer::start(IO, None).expect("client peer");
    client.book.add(procs[0].peer, vec![address]);
    (root, procs, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_protocols_refuse_bad_input_clearly_and_lose_nothing() {
    let (root, procs, client) = one_node("bad", CONFIG);
    let peer = procs[0].peer;
    let own_group = procs[0].group;

    // An oversized request frame is refused without being read.
    let mut huge = Vec::new();
    quickstore_behaviours::codec::put_varint((MAX_REQUEST_BYTES + 1) as u64, &mut huge);
    let answer = files_answer(&client, peer, &huge).await;
    assert!(refusal(&answer).contains("exceeds"), "{answer:?}");

    // Undecodable CBOR.
    let answer = files_answer(&client, peer, &frame(&[0xff, 0x00, 0x13])).await;
    assert!(!refusal(&answer).is_empty());

    // Bad names.
    let empty = FilesRequest::Locate {
        name: String::new(),
    };
    let answer = files_answer(&client, peer, &cbor(&empty)).await;
    assert!(refusal(&answer).contains("empty"), "{answer:?}");
    let long = FilesRequest::Locate {
        name: "x".repeat(1025),
    };
    let answer = files_answer(&client, peer, &cbor(&long)).await;
    assert!(refusal(&answer).contains("1024"), "{answer:?}");

    // A listing of a group that does not exist.
    let list = FilesRequest::List {
        group: 7,
        after: None,
        limit: 10,
        forwarded: false,
    };
    let answer = files_answer(&client, peer, &cbor(&list)).await;
    assert!(refusal(&answer).contains("does not exist"), "{answer:?}");

    // Names of each group.
    let name_in = |group: u32| {
        (0..)
            .map(|i| format!("name-{i}"))
            .find(|n| name_facts(n, 2).0 == group)
            .expect("a name")
    };
    let ours = name_in(own_group);
    let theirs = name_in(1 - own_group);

    // A put over the size limit is refused before any byte moves.
    let (_stream, answer) = start_put(&client, peer, &ours, 2 << 20).await;
    assert!(
        blob_refusal(&answer).contains("maximum file size"),
        "{answer:?}"
    );

    // A put for another group is refused.
    let (_stream, answer) = start_put(&client, peer, &theirs, 10).await;
    assert!(blob_refusal(&answer).contains("group"), "{answer:?}");

    // A put cut short leaves nothing visible.
    let (mut stream, answer) = start_put(&client, peer, &ours, 1000).await;
    assert!(matches!(answer, BlobResponse::ReadyAt { .. }), "{answer:?}");
    stream.write_all(&[1u8; 500]).await.expect("half");
    stream.close().await.expect("close");
    drop(stream);

    // A put whose trailer hash is wrong is refused and leaves nothing visible.
    let (mut stream, answer) = start_put(&client, peer, &ours, 1000).await;
    stream.write_all(&[2u8; 1000]).await.expect("bytes");
    let trailer = signed_trailer(&ours, &answer, 1000, [9; 32]);
    write_message(&mut stream, &trailer, MAX_REQUEST_BYTES, IO)
        .await
        .expect("trailer");
    let answer: BlobResponse = read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("answer");
    assert!(
        blob_refusal(&answer).contains("hash mismatch"),
        "{answer:?}"
    );

    // Bad names in the version questions, too.
    for request in [
        FilesRequest::HasVersion {
            name: String::new(),
            lamport: 1,
        },
        FilesRequest::Kept {
            name: "x".repeat(1025),
        },
    ] {
        let answer = files_answer(&client, peer, &cbor(&request)).await;
        assert!(!refusal(&answer).is_empty(), "{request:?}: {answer:?}");
    }

    // An undecodable blob request is refused.
    let mut stream = open(&client, peer, BLOB_PROTOCOL).await;
    stream
        .write_all(&frame(&[0xff, 0x00, 0x13]))
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let answer: BlobResponse = read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("answer");
    assert!(!blob_refusal(&answer).is_empty());

    // A get of an unknown blob is "not found".
    let mut stream = open(&client, peer, BLOB_PROTOCOL).await;
    let get = BlobRequest::Get { blake3: [3; 32] };
    write_message(&mut stream, &get, MAX_REQUEST_BYTES, IO)
        .await
        .expect("send");
    let answer: BlobResponse = read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("answer");
    assert_eq!(answer, BlobResponse::NotFound);

    // Nothing became visible, no temporary file is left, and the node still stores a good put.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(visible_blobs(&procs[0].dir), 0);
    let tmp = procs[0].dir.join("blobs").join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
    let bytes = vec![5u8; 1000];
    let (mut stream, answer) = start_put(&client, peer, &ours, 1000).await;
    stream.write_all(&bytes).await.expect("bytes");
    let trailer = signed_trailer(&ours, &answer, 1000, *blake3::hash(&bytes).as_bytes());
    write_message(&mut stream, &trailer, MAX_REQUEST_BYTES, IO)
        .await
        .expect("trailer");
    let answer: BlobResponse = read_message(&mut stream, MAX_RESPONSE_BYTES, IO)
        .await
        .expect("answer");
    assert!(matches!(answer, BlobResponse::Stored { .. }), "{answer:?}");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert_eq!(visible_blobs(&procs[0].dir), 1);
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// A files stream that sent `partial` (a request begun) and is still open at the node.
///
/// libp2p-stream hands the node's accept loop one inbound stream per protocol at a time and
/// drops a second that arrives before the loop took the first: a stream that ends at once
/// was dropped so, and is opened again.
async fn hold(client: &ClientPeer, peer: PeerId, partial: &[u8]) -> Stream {
    for _ in 0..20 {
        let mut stream = open(client, peer, FILES_PROTOCOL).await;
        if stream.write_all(partial).await.is_err() || stream.flush().await.is_err() {
            continue;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
            Err(_) => return stream,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("no files stream stayed open at the node");
}

/// The answer to `raw` on a new files stream; None when the stream was dropped unanswered
/// (see [`hold`]).
async fn probe_answer(client: &ClientPeer, peer: PeerId, raw: &[u8]) -> Option<FilesResponse> {
    let mut stream = open(client, peer, FILES_PROTOCOL).await;
    stream.write_all(raw).await.ok()?;
    stream.flush().await.ok()?;
    read_message(&mut stream, MAX_RESPONSE_BYTES, IO).await.ok()
}

/// Streams over `files.max_streams` are answered `busy` instead of being dropped unanswered,
/// and the node serves again once the held streams end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused_busy() {
    // Held streams stay for the node's I/O timeout: 20 s here, so that the checks below
    // never race it.
    // Idle streams are not evicted within this test (a grace of 60 s; eviction has its own).
    let config = CONFIG
        .replace(
            "[files]\n",
            "[files]\nmax_streams = 2\nstream_eviction_grace_ms = 60000\n",
        )
        .replace("io_timeout_ms = 3000", "io_timeout_ms = 20000");
    assert!(config.contains("io_timeout_ms = 20000"));
    let (root, procs, client) = one_node("busy", &config);
    let peer = procs[0].peer;
    let locate = cbor(&FilesRequest::Locate {
        name: "some-name".into(),
    });

    // Two streams that announce a request and never send it hold both slots (for the node's
    // I/O timeout). The node takes them in when it gets to them: until then a third stream
    // is served, so probe with undecodable bytes (answered at once, holding a slot only
    // for that) until the answer is "busy".
    // From two peers, one stream each: a peer with several idle streams would lose one to
    // the next stream at once (see `idle_streams_are_evicted_for_a_real_request`).
    let other = client_of(&procs[0], IO);
    let held = vec![
        hold(&client, peer, &locate[..2]).await,
        hold(&other, peer, &locate[..2]).await,
    ];
    let started = std::time::Instant::now();
    let probe = frame(&[0xff, 0x00, 0x13]);
    loop {
        let answer = probe_answer(&client, peer, &probe).await;
        if matches!(&answer, Some(FilesResponse::Refused { reason }) if reason.contains("busy")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "two held streams never filled the node's 2 slots: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, answer) = start_put(&client, peer, "busy-put", 10).await;
    assert!(blob_refusal(&answer).contains("busy"), "{answer:?}");

    // Once they end, the node answers again.
    drop(held);
    let started = std::time::Instant::now();
    loop {
        let answer = files_answer(&client, peer, &locate).await;
        match &answer {
            FilesResponse::Refused { reason } if reason.contains("busy") => {
                assert!(started.elapsed() < Duration::from_secs(10), "still busy");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// Streams opened and left without a request cannot keep a real request out: once every
/// slot is held by such streams past the eviction grace, a new stream evicts the one that
/// waited longest, is served, and the node counts the eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_are_evicted_for_a_real_request() {
    let config = CONFIG
        .replace(
            "[files]\n",
            "[files]\nmax_streams = 2\nstream_eviction_grace_ms = 200\n",
        )
        .replace("io_timeout_ms = 3000", "io_timeout_ms = 20000");
    let (root, procs, client) = one_node("evict", &config);
    let peer = procs[0].peer;
    let locate = cbor(&FilesRequest::Locate {
        name: "some-name".into(),
    });
    // Two streams that begin a request and never finish it, from two identities (each within
    // its share), hold both slots until the I/O timeout (20 s) unless evicted.
    let other = client_of(&procs[0], IO);
    let mut held = vec![hold(&client, peer, &locate[..2]).await];
    held.push(hold(&other, peer, &locate[..2]).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = std::time::Instant::now();
    let answer = files_answer(&client, peer, &locate).await;
    assert!(
        !matches!(&answer, FilesResponse::Refused { reason } if reason.contains("busy")),
        "a real request must evict an idle stream, got {answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "answered late");
    let status = quickstore::client::fetch_status(
        peer,
        procs[0]
            .address
            .clone()
            .map(|mut a| {
                a.pop();
                a
            })
            .expect("address"),
        IO,
        None,
    )
    .await
    .expect("status");
    assert!(
        status.counters["file_streams_evicted"] >= 1,
        "{:?}",
        status.counters
    );
    drop(held);
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// A control request sent right behind another stream is answered. libp2p-stream hands the
/// node one pending inbound stream per protocol and drops a second that arrives before the
/// node took the first (one in five such pairs here); `files_request` sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_behind_another_stream_is_answered() {
    let (root, procs, client) = one_node("behind", CONFIG);
    let peer = procs[0].peer;
    let name = (0..)
        .map(|i| format!("name-{i}"))
        .find(|n| name_facts(n, 2).0 == procs[0].group)
        .expect("a name of the node's group");
    let request = FilesRequest::Locate { name };
    let begun = cbor(&request);
    for round in 0..20 {
        // A stream that has begun a request, then the request on a stream of its own.
        let mut first = open(&client, peer, FILES_PROTOCOL).await;
        let _ = first.write_all(&begun[..1]).await;
        let _ = first.flush().await;
        let answer = files_request(&client.control, peer, &request, IO).await;
        assert!(answer.is_ok(), "round {round}: {answer:?}");
        drop(first);
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// One peer holding its share of file streams (`files.max_streams_per_peer`) is answered
/// `busy` beyond it, while the node still has slots and serves another peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_takes_only_its_share_of_file_streams() {
    // Held streams stay for the node's I/O timeout: 20 s here.
    let config = CONFIG
        .replace(
            "[files]\n",
            "[files]\nmax_streams = 4\nmax_streams_per_peer = 2\n",
        )
        .replace("io_timeout_ms = 3000", "io_timeout_ms = 20000");
    assert!(config.contains("io_timeout_ms = 20000"));
    let (root, procs, greedy) = one_node("share", &config);
    let peer = procs[0].peer;
    let locate = cbor(&FilesRequest::Locate {
        name: "some-name".into(),
    });

    // The greedy peer holds two streams; its next ones are refused for its share (probing
    // until the node has taken the held ones in), though two of the node's four are free.
    let held = [
        hold(&greedy, peer, &locate[..2]).await,
        hold(&greedy, peer, &locate[..2]).await,
    ];
    let started = std::time::Instant::now();
    let probe = frame(&[0xff, 0x00, 0x13]);
    loop {
        let answer = probe_answer(&greedy, peer, &probe).await;
        if let Some(FilesResponse::Refused { reason }) = &answer
            && reason.contains("busy")
        {
            assert!(reason.contains("share"), "{reason}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a peer holding 2 streams was never refused a third: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Another peer is served meanwhile.
    let mut address = procs[0].address.clone().expect("address");
    address.pop();
    let other = ClientPeer::start(IO, None).expect("client peer");
    other.book.add(peer, vec![address]);
    let answer = files_answer(&other, peer, &locate).await;
    assert!(
        !matches!(&answer, FilesResponse::Refused { reason } if reason.contains("busy")),
        "{answer:?}"
    );
    drop(held);
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

/// Connections from many identities cannot keep a newcomer out: inbound connections are kept
/// one eighth below `node.max_connections`, closing the oldest of peers that are no group
/// member or contact (`src/conn_room.rs`). Here 16 are allowed, 14 kept; 20 clients connect
/// and stay, and the 21st is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_many_identities_leave_room_for_a_newcomer() {
    let config = CONFIG.replace("[node]\n", "[node]\nmax_connections = 16\n");
    let (root, procs, first) = one_node("room", &config);
    let peer = procs[0].peer;
    let mut bare = procs[0].address.clone().expect("address");
    bare.pop();
    let locate = cbor(&FilesRequest::Locate {
        name: "some-name".into(),
    });
    let mut crowd = vec![first];
    for _ in 0..19 {
        crowd.push(client_of(&procs[0], Duration::from_secs(120)));
    }
    // Each client asks once and keeps its connection (idle for 120 s on its side).
    for client in &crowd {
        let _ = probe_answer(client, peer, &locate).await;
    }
    let newcomer = client_of(&procs[0], IO);
    let answer = probe_answer(&newcomer, peer, &locate).await;
    assert!(
        matches!(
            answer,
            Some(FilesResponse::NotFound | FilesResponse::Unreachable { .. })
        ),
        "the newcomer must be answered: {answer:?}"
    );
    let status = quickstore::client::fetch_status(peer, bare, IO, None)
        .await
        .expect("status");
    let closed = status.counters["connections_closed_for_room"];
    assert!(closed >= 4, "20 clients over 14 kept: {closed} closed");
    drop(crowd);
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
