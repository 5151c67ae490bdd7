//! The web page in a real headless browser (Debian's Chromium, driven through ChromeDriver
//! by a WebDriver client) against a 3-node network on loopback: the page loads and shows the
//! three nodes, a file uploaded through its form is stored, and the page's download link
//! brings it back byte-identical. A screenshot of the page is saved as an artifact
//! (`target/tmp/web-page.png`).
//!
//! Needs `chromium` and `chromedriver` on the PATH (`.ci/run` installs them); without them it
//! is skipped, except under CI=1, where it fails.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_base, identities, prepare, wait_converged};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}

/// A ChromeDriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 200 ms until it is true or `limit` passes (then fails with `what`).
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_network_uploads_and_downloads_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=1 but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    };
    let root = std::env::temp_dir().join(format!("qs-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).expect("temp dir");
    std::fs::write(
        root.join("config.toml"),
        common::fast_config_self_sizing("http-browser-test"),
    )
    .expect("config");
    let mut procs = prepare(&root, identities(1, 3));
    procs[0].start_with(&root, &[], &["--http", "127.0.0.1:0"]);
    let first = procs[0].address.clone().expect("bootstrap address");
    for p in procs.iter_mut().skip(1) {
        p.start(&root, std::slice::from_ref(&first));
    }
    wait_converged(&procs, 0, "convergence", Duration::from_secs(60)).await;
    let base = http_base(&procs[0]).await;

    let port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    wait_until("chromedriver", Duration::from_secs(20), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1100"],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");

    // ---- the page shows the three nodes ------------------------------------------------------
    browser
        .goto(&format!("{base}/"))
        .await
        .expect("the page loads");
    let peers: Vec<String> = procs.iter().map(|p| p.peer.to_string()).collect();
    wait_until(
        "the three nodes on the page",
        Duration::from_secs(30),
        || {
            let browser = browser.clone();
            let peers = peers.clone();
            async move {
                let Ok(rows) = browser.find_all(Locator::Css("#nodes tr[data-peer]")).await else {
                    return false;
                };
                let mut shown = Vec::new();
                for row in rows {
                    if let Ok(Some(peer)) = row.attr("data-peer").await {
                        shown.push(peer);
                    }
                }
                peers.iter().all(|p| shown.contains(p))
            }
        },
    )
    .await;

    // ---- upload through the form --------------------------------------------------------------
    let content: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let upload = root.join("upload.bin");
    std::fs::write(&upload, &content).expect("the file to upload");
    browser
        .find(Locator::Id("upload-file"))
        .await
        .expect("file input")
        .send_keys(upload.to_str().expect("utf-8"))
        .await
        .expect("file chosen");
    browser
        .find(Locator::Id("upload-name"))
        .await
        .expect("name input")
        .send_keys("browser/upload.bin")
        .await
        .expect("name typed");
    browser
        .find(Locator::Id("upload-submit"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submitted");
    wait_until("the upload's result", Duration::from_secs(30), || {
        let browser = browser.clone();
        async move {
            match browser.find(Locator::Id("message")).await {
                Ok(message) => message
                    .text()
                    .await
                    .is_ok_and(|t| t.starts_with("stored browser/upload.bin")),
                Err(_) => false,
            }
        }
    })
    .await;
    let row = r#"#files tr[data-name="browser/upload.bin"] a.download"#;
    wait_until("the file in the list", Duration::from_secs(30), || {
        let browser = browser.clone();
        async move { browser.find(Locator::Css(row)).await.is_ok() }
    })
    .await;
    let shot = browser.screenshot().await.expect("a screenshot");
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    std::fs::write(&artifact, &shot).expect("the screenshot saved");
    eprintln!("screenshot: {}", artifact.display());

    // ---- download through the page's link ------------------------------------------------------
    browser
        .find(Locator::Css(row))
        .await
        .expect("the download link")
        .click()
        .await
        .expect("clicked");
    let saved = downloads.join("upload.bin");
    let expected = content.len() as u64;
    wait_until("the download", Duration::from_secs(30), || {
        let saved = saved.clone();
        async move { std::fs::metadata(&saved).is_ok_and(|m| m.len() == expected) }
    })
    .await;
    assert!(
        std::fs::read(&saved).expect("downloaded") == content,
        "the downloaded file differs from the uploaded one"
    );
    browser.close().await.expect("the browser closes");
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
