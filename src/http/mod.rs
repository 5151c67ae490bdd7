//! The node's HTTP API and web page (`quickstore node --http ADDR:PORT`, config `[http]`).
//!
//! Routes (every error is JSON `{"error": kind, "message": text}`):
//!
//! * `GET /`: the web page ([`page`]); `GET /status`: `quickstore status --json`;
//!   `GET /metrics`: Prometheus text when the node runs with `--metrics`.
//! * `PUT /files/{name}` (raw body), `POST /files` (multipart `file`, optional `name`),
//!   `GET`/`HEAD /files/{name}` (`Range`, `ETag` = BLAKE3, `If-None-Match`,
//!   `?version=V`), `DELETE /files/{name}`, `GET /files?prefix=P&after=NAME&limit=N`.
//! * The original project's `POST /admin/webapp/upload/` (multipart `file_obj`,
//!   `file_name`) and `GET /admin/webapp/download?fileName=NAME`.
//!
//! Files go through a [`Gateway`]: the same put path (R copies, the ack rule, signed
//! versions) and verified pieces as the CLI. Uploads are spooled to `DATA_DIR/http-spool/`
//! while hashed, never held in memory; downloads stream piece by piece, each checked
//! against BLAKE3 before it is sent.
//!
//! Who may use it: a loopback listener needs nothing; any other address needs a token file
//! (the node refuses to start without one). Bounds: `http.max_requests` requests and
//! `http.max_connections` connections at once, `http.max_header_bytes` per request head,
//! `files.max_file_bytes` per body, and `http.idle_timeout_ms` for a head to arrive, an
//! upload to move and a response to be read.

mod error;
mod files;
mod guard;
mod page;
mod range;
mod stall;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore};

pub use error::ApiError;
pub use guard::TOKEN_COOKIE;

use crate::client::Target;
use crate::config::HttpConfig;
use crate::files::cli::Gateway;
use crate::files::service::FilesService;

/// How long the first file request waits for the node to finish joining.
const WAIT_READY: Duration = Duration::from_secs(20);

/// What the HTTP server is set to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Requests served at once at most.
    pub max_requests: usize,
    /// Connections open at once at most.
    pub max_connections: usize,
    /// Bytes of a request head at most.
    pub max_header_bytes: usize,
    /// Heads, upload bodies and response writes must progress within this.
    pub idle: Duration,
    /// Largest body accepted (`files.max_file_bytes`).
    pub max_file_bytes: u64,
    /// Copies must be durable within this (`files.put_deadline_ms`).
    pub put_deadline: Duration,
    /// Every open, read and write with other nodes times out after this.
    pub io_timeout: Duration,
}

/// The HTTP listener, bound before the node starts (a busy port or a missing token is the
/// only line printed), and the settings read with it.
pub struct Bound {
    listener: TcpListener,
    settings: Settings,
}

/// Binds `addr` as `config` says. A non-loopback address without a token file is refused,
/// saying why.
pub async fn bind(
    addr: SocketAddr,
    config: &HttpConfig,
    files: &crate::config::FilesConfig,
) -> anyhow::Result<Bound> {
    let token = if config.token_file.is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&config.token_file)
            .with_context(|| format!("cannot read the HTTP token file {}", config.token_file))?;
        let token = text.trim().to_string();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
        if token.len() < 16 || !token.chars().all(allowed) {
            bail!(
                "the HTTP token file {} must hold one token of at least 16 characters from \
                 A-Z a-z 0-9 - . _ ~ + / = (e.g. `openssl rand -base64 24`)",
                config.token_file
            );
        }
        Some(token)
    };
    if token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve HTTP on {addr} without a token: the API can delete files. Give \
             --http-token-file FILE (a file holding the token clients must send), or listen on \
             127.0.0.1"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve HTTP on {addr}"))?;
    Ok(Bound {
        listener,
        settings: Settings {
            token,
            max_requests: config.max_requests,
            max_connections: config.max_connections,
            max_header_bytes: config.max_header_bytes,
            idle: Duration::from_millis(config.idle_timeout_ms),
            max_file_bytes: files.max_file_bytes,
            put_deadline: Duration::from_millis(files.put_deadline_ms),
            io_timeout: Duration::from_millis(files.io_timeout_ms),
        },
    })
}

/// What the handlers share.
pub struct Api {
    settings: Settings,
    /// The node's own data directory: the gateway finds the node by its node.json.
    target: Target,
    gateway: OnceCell<Gateway>,
    /// The node's own file service (its status handle, and the copies it holds).
    files: Arc<FilesService>,
    metrics: Option<Arc<Registry>>,
    /// Where uploads are spooled (emptied at start).
    spool_dir: PathBuf,
    requests: Arc<Semaphore>,
}

impl Api {
    /// The client peer the file routes use, started on first use.
    async fn gateway(&self) -> Result<&Gateway, ApiError> {
        self.gateway
            .get_or_try_init(|| async {
                Gateway::open(&self.target, self.settings.io_timeout, WAIT_READY)
                    .map(|g| g.with_local(self.files.clone()))
            })
            .await
            .map_err(|e| ApiError::from_message(format!("unreachable: the node: {e:#}")))
    }
}

/// Serves the API on `bound` for the node in `data_dir` (whose file service is `files`);
/// `metrics` is served at `/metrics` when given. Returns the address served.
pub fn serve(
    bound: Bound,
    data_dir: PathBuf,
    files: Arc<FilesService>,
    metrics: Option<Arc<Registry>>,
) -> anyhow::Result<SocketAddr> {
    let Bound { listener, settings } = bound;
    let addr = listener.local_addr()?;
    let spool_dir = data_dir.join("http-spool");
    // Spools left by a node that was killed mid-upload.
    let _ = std::fs::remove_dir_all(&spool_dir);
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("cannot create {}", spool_dir.display()))?;
    let api = Arc::new(Api {
        requests: Arc::new(Semaphore::new(settings.max_requests)),
        settings,
        target: Target {
            peer: None,
            data_dir: Some(data_dir),
            network_key: None,
            identity: None,
        },
        gateway: OnceCell::new(),
        files,
        metrics,
        spool_dir,
    });
    let router = router(api.clone());
    let connections = Arc::new(Semaphore::new(api.settings.max_connections));
    let settings = api.settings.clone();
    tokio::spawn(async move {
        loop {
            let (socket, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::debug!("HTTP connection from {remote} closed: http.max_connections");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let io = TokioIo::new(stall::StallGuard::new(socket, settings.idle));
            let service = TowerToHyperService::new(router.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.idle)
                .max_buf_size(settings.max_header_bytes.max(8192))
                .keep_alive(true);
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = builder.serve_connection(io, service).await {
                    tracing::debug!("HTTP connection from {remote}: {e}");
                }
            });
        }
    });
    Ok(addr)
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/files", get(files::list).post(files::upload_form))
        .route(
            "/files/{*name}",
            get(files::download)
                .put(files::upload_raw)
                .delete(files::remove),
        )
        .route("/admin/webapp/upload/", post(files::upload_form))
        .route("/admin/webapp/upload", post(files::upload_form))
        .route("/admin/webapp/download", get(files::original_download))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            guard::guard,
        ))
        // Bodies are counted against files.max_file_bytes as they are spooled.
        .layer(DefaultBodyLimit::disable())
        .with_state(api)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn status(State(api): State<Arc<Api>>) -> Result<Json<crate::status::Status>, ApiError> {
    api.files.handle.status().await.map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unreachable",
            e.to_string(),
        )
    })
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let Some(registry) = &api.metrics else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are off: start the node with --metrics ADDR:PORT",
        ));
    };
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)
        .map_err(|e| ApiError::from_message(format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
