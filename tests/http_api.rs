//! The HTTP API on real `quickstore node` processes over loopback (3 nodes), with a real
//! HTTP client: every route, the original project's two endpoints with a Postman-like
//! multipart body, ranges, conditional requests, the token, and bad input (a `..` name, an
//! oversized head, a body past `files.max_file_bytes`, a client that stops reading), and
//! downloads that survive a rotten copy and a dead holder.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{http_base, identities, prepare, pseudo_random as bytes, wait_converged};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::Value;

/// Largest file the nodes accept: 20 MiB (a body past it is refused with 413).
const MAX_FILE: u64 = 20 << 20;

fn config() -> String {
    common::fast_config_self_sizing_with(
        "http-api-test",
        // The scrub would find the rotted copy below and replace it before a get meets it.
        &format!("max_file_bytes = {MAX_FILE}\nscrub_bytes_per_s = 1"),
        "[http]\nidle_timeout_ms = 1500\n",
    )
}

/// Sends `request` as raw bytes and returns the response head's status line and what came.
fn raw(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).expect("connects");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket.write_all(request).expect("sent");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_over_real_http_on_a_three_node_network() {
    let root = std::env::temp_dir().join(format!("qs-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(root.join("config.toml"), config()).expect("config");
    let token = "test-token-0123456789abcdef";
    let token_file = root.join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let token_path = token_file.to_str().expect("utf-8");

    let mut procs = prepare(&root, identities(1, 3));
    procs[0].start_with(
        &root,
        &[],
        &["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let first = procs[0].address.clone().expect("bootstrap address");
    // A node listening for HTTP on every interface: it must have a token.
    procs[1].start_with(
        &root,
        std::slice::from_ref(&first),
        &["--http", "0.0.0.0:0", "--http-token-file", token_path],
    );
    procs[2].start(&root, std::slice::from_ref(&first));
    wait_converged(&procs, 0, "convergence", Duration::from_secs(60)).await;
    let base = http_base(&procs[0]).await;
    let client = reqwest::Client::new();

    // ---- the page and the status ---------------------------------------------------------
    let page = client.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains("quickstore node"));
    let (status, body) = json(
        client
            .get(format!("{base}/status"))
            .send()
            .await
            .expect("status"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["peer_id"], procs[0].peer.to_string(), "{body}");
    assert!(
        body["view"].is_array() && body["groups"].as_u64() >= Some(1),
        "{body}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.expect("text").contains("quickstore_"));

    // ---- PUT, GET, HEAD, ETag, If-None-Match ----------------------------------------------
    let hello = b"hello over http\n".to_vec();
    let (status, put) = json(
        client
            .put(format!("{base}/files/docs/hello.txt"))
            .body(hello.clone())
            .send()
            .await
            .expect("put"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{put}");
    assert_eq!(put["copies"], 3, "{put}");
    assert_eq!(put["size"], hello.len());
    let blake3 = put["blake3"].as_str().expect("hash").to_string();
    assert_eq!(blake3, blake3::hash(&hello).to_hex().as_str());
    let got = client
        .get(format!("{base}/files/docs/hello.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), StatusCode::OK);
    let etag = format!("\"{blake3}\"");
    assert_eq!(got.headers()[header::ETAG], etag.as_str());
    assert_eq!(got.headers()[header::CONTENT_TYPE], "text/plain");
    assert_eq!(got.headers()[header::CONTENT_LENGTH], "16");
    assert_eq!(got.bytes().await.expect("body").to_vec(), hello);
    let cached = client
        .get(format!("{base}/files/docs/hello.txt"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("conditional get");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let head = client
        .head(format!("{base}/files/docs/hello.txt"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "16");
    assert!(head.bytes().await.expect("empty").is_empty());

    // ---- ranges across pieces --------------------------------------------------------------
    let big = bytes(3 * (1 << 20) + 12_345, 7);
    let (status, put) = json(
        client
            .put(format!("{base}/files/big.bin"))
            .body(big.clone())
            .send()
            .await
            .expect("put big"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{put}");
    for (range, from, to) in [
        ("bytes=1048570-2097160", 1_048_570usize, 2_097_161usize),
        ("bytes=-100", big.len() - 100, big.len()),
        ("bytes=3000000-", 3_000_000, big.len()),
        ("bytes=0-0", 0, 1),
    ] {
        let part = client
            .get(format!("{base}/files/big.bin"))
            .header(header::RANGE, range)
            .send()
            .await
            .expect("range");
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            part.headers()[header::CONTENT_RANGE],
            format!("bytes {from}-{}/{}", to - 1, big.len()).as_str()
        );
        assert!(
            part.bytes().await.expect("body").as_ref() == &big[from..to],
            "wrong bytes for {range}"
        );
    }
    let whole = client
        .get(format!("{base}/files/big.bin"))
        .send()
        .await
        .expect("whole");
    assert_eq!(
        whole.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert!(whole.bytes().await.expect("body").as_ref() == big.as_slice());
    let past = client
        .get(format!("{base}/files/big.bin"))
        .header(header::RANGE, "bytes=99999999-")
        .send()
        .await
        .expect("past the end");
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // ---- multipart: POST /files and the original project's endpoints ----------------------
    let form = reqwest::multipart::Form::new()
        .text("name", "forms/notes.md")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"# notes\n".to_vec()).file_name("ignored.md"),
        );
    let (status, put) = json(
        client
            .post(format!("{base}/files"))
            .multipart(form)
            .send()
            .await
            .expect("form post"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{put}");
    assert_eq!(put["name"], "forms/notes.md");
    // As Postman sends it: the file part first, then the name, form-data.
    let photo = bytes(200_000, 3);
    let form = reqwest::multipart::Form::new()
        .part(
            "file_obj",
            reqwest::multipart::Part::bytes(photo.clone())
                .file_name("C:\\Users\\me\\photo.jpg")
                .mime_str("image/jpeg")
                .expect("mime"),
        )
        .text("file_name", "photo.jpg");
    let (status, put) = json(
        client
            .post(format!("{base}/admin/webapp/upload/"))
            .multipart(form)
            .send()
            .await
            .expect("original upload"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{put}");
    assert_eq!(put["name"], "photo.jpg");
    let download = client
        .get(format!("{base}/admin/webapp/download?fileName=photo.jpg"))
        .send()
        .await
        .expect("original download");
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert!(
        download.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("text")
            .starts_with("attachment; filename=\"photo.jpg\"")
    );
    assert!(download.bytes().await.expect("body").as_ref() == photo.as_slice());
    // A form with no name takes the file part's own name (its last component only).
    let form = reqwest::multipart::Form::new().part(
        "file_obj",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("../../etc/passwd"),
    );
    let (status, put) = json(
        client
            .post(format!("{base}/admin/webapp/upload"))
            .multipart(form)
            .send()
            .await
            .expect("nameless upload"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{put}");
    assert_eq!(put["name"], "passwd");

    // ---- listing, paged ------------------------------------------------------------------
    let (status, listing) = json(
        client
            .get(format!("{base}/files"))
            .send()
            .await
            .expect("ls"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listing["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "big.bin",
            "docs/hello.txt",
            "forms/notes.md",
            "passwd",
            "photo.jpg"
        ],
        "{listing}"
    );
    let (_, page1) = json(
        client
            .get(format!("{base}/files?limit=2"))
            .send()
            .await
            .expect("page 1"),
    )
    .await;
    assert_eq!(page1["files"].as_array().map(Vec::len), Some(2));
    let next = page1["next"].as_str().expect("a next page").to_string();
    let (_, page2) = json(
        client
            .get(format!("{base}/files"))
            .query(&[("limit", "2"), ("after", next.as_str())])
            .send()
            .await
            .expect("page 2"),
    )
    .await;
    assert_eq!(page2["files"][0]["name"], "forms/notes.md", "{page2}");
    let (_, docs) = json(
        client
            .get(format!("{base}/files?prefix=docs/"))
            .send()
            .await
            .expect("prefix"),
    )
    .await;
    assert_eq!(docs["files"].as_array().map(Vec::len), Some(1), "{docs}");
    assert_eq!(docs["files"][0]["copies"], 3);

    // ---- DELETE, and what is not there -----------------------------------------------------
    let (status, deleted) = json(
        client
            .delete(format!("{base}/files/docs/hello.txt"))
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let (status, gone) = json(
        client
            .get(format!("{base}/files/docs/hello.txt"))
            .send()
            .await
            .expect("get deleted"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    assert_eq!(gone["error"], "not_found");
    let (status, missing) = json(
        client
            .get(format!("{base}/files/never/put"))
            .send()
            .await
            .expect("missing"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    // ---- bad input -----------------------------------------------------------------------
    let dotted = raw(
        &base,
        b"GET /files/a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(dotted.starts_with("HTTP/1.1 400"), "{dotted}");
    assert!(dotted.contains("\"bad_name\""), "{dotted}");
    let long = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let oversized = raw(&base, long.as_bytes());
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized:.200}");
    // Announced too large: refused before a byte of the body is read.
    let announced = raw(
        &base,
        format!(
            "PUT /files/too-big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_FILE + 1
        )
        .as_bytes(),
    );
    assert!(announced.starts_with("HTTP/1.1 413"), "{announced}");
    assert!(announced.contains("\"too_large\""), "{announced}");
    // The unread body is still coming: the connection closes after the answer, and says so.
    assert!(
        announced.to_ascii_lowercase().contains("connection: close"),
        "{announced}"
    );
    // Streamed (chunked, no length) past the bound: refused once the bound is passed.
    let chunks = futures::stream::iter(
        (0..(MAX_FILE / (1 << 20) + 2)).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1 << 20])),
    );
    let streamed = client
        .put(format!("{base}/files/too-big.bin"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(response) = streamed {
        // (The node may close the connection before the client finished sending.)
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let (_, listing) = json(
        client
            .get(format!("{base}/files"))
            .send()
            .await
            .expect("ls"),
    )
    .await;
    assert!(
        !listing.to_string().contains("too-big.bin"),
        "a refused body was stored: {listing}"
    );
    assert_spool_empty(&procs[0].dir);

    // A client that asks for 16 MiB and reads nothing is dropped after the idle timeout.
    let stalled = bytes(16 << 20, 9);
    let (status, _) = json(
        client
            .put(format!("{base}/files/stalled.bin"))
            .body(stalled.clone())
            .send()
            .await
            .expect("put stalled"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let addr = base.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&addr).expect("connects");
    socket
        .write_all(b"GET /files/stalled.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("asked");
    tokio::time::sleep(Duration::from_secs(6)).await;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut received = Vec::new();
    let _ = socket.read_to_end(&mut received);
    assert!(
        received.len() < stalled.len(),
        "the node kept sending to a client that read nothing ({} bytes)",
        received.len()
    );
    let again = client
        .get(format!("{base}/files/stalled.bin"))
        .send()
        .await
        .expect("get after the stall");
    assert!(again.bytes().await.expect("body").as_ref() == stalled.as_slice());

    // ---- a rotten copy and a dead holder ---------------------------------------------------
    // The HTTP node's own copy of big.bin rots: its pieces fail verification, the other
    // holders serve them. Then a holder dies: the survivor serves the whole file.
    let big_hash = blake3::hash(&big).to_hex().to_string();
    let blob = procs[0]
        .dir
        .join("blobs")
        .join(&big_hash[..2])
        .join(&big_hash);
    let mut rotted = std::fs::read(&blob).expect("the HTTP node holds big.bin");
    for at in (0..rotted.len()).step_by(256 * 1024) {
        rotted[at] ^= 0x55;
    }
    std::fs::write(&blob, &rotted).expect("rotted");
    for round in 0..2 {
        let whole = client
            .get(format!("{base}/files/big.bin"))
            .send()
            .await
            .expect("get with a rotten copy");
        assert_eq!(whole.status(), StatusCode::OK);
        assert!(
            whole.bytes().await.expect("body").as_ref() == big.as_slice(),
            "wrong bytes (round {round})"
        );
        if round == 0 {
            let log = std::fs::read_to_string(procs[0].log()).expect("the node's log");
            assert!(
                log.contains("served bytes that fail verification"),
                "the rotten pieces were not caught"
            );
            procs[2].kill();
        }
    }

    // ---- the token -------------------------------------------------------------------------
    let guarded = http_base(&procs[1]).await;
    let (status, body) = json(
        client
            .get(format!("{guarded}/files/big.bin"))
            .send()
            .await
            .expect("no token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = json(
        client
            .delete(format!("{guarded}/files/big.bin"))
            .bearer_auth("wrong-token-0123456789abcdef")
            .send()
            .await
            .expect("wrong token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let with_token = client
        .get(format!("{guarded}/files/big.bin"))
        .bearer_auth(token)
        .send()
        .await
        .expect("with the token");
    assert_eq!(with_token.status(), StatusCode::OK);
    assert!(with_token.bytes().await.expect("body").as_ref() == big.as_slice());
    // A write from another site's page is refused even with no token needed.
    let (status, _) = json(
        client
            .delete(format!("{base}/files/big.bin"))
            .header(header::ORIGIN, "https://evil.example")
            .send()
            .await
            .expect("cross-site delete"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for p in &procs[..2] {
        assert!(p.child.is_some(), "a node stopped");
    }
    let (status, _) = json(
        client
            .get(format!("{base}/status"))
            .send()
            .await
            .expect("status"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the node is unharmed");
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}

fn assert_spool_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir.join("http-spool"))
        .expect("the spool directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}

#[test]
fn a_node_refuses_to_serve_http_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("utf-8");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quickstore"))
        .args([
            "node",
            "--data-dir",
            data,
            "--no-mdns",
            "--http",
            "0.0.0.0:0",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve HTTP on 0.0.0.0:0 without a token")
            && stderr.contains("--http-token-file"),
        "{stderr}"
    );
}
