//! The file routes: uploads (raw, multipart, the original project's form), downloads
//! (whole, `Range`, conditional, `HEAD`), deletes and listings.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Api;
use super::error::ApiError;
use super::upload::{Spool, Spooled, next_chunk, too_large};
use crate::blobs::to_hex;
use crate::files::cli::{Deleted, FileReport, Listed, Located};
use crate::http::range::{RangeAsked, content_disposition, parse_range};

/// Largest text field of a form (a name is at most 1024 bytes).
const MAX_TEXT_FIELD: usize = 4096;

/// Names listed per page by default, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Bytes queued between the holder and the client at most, in pieces (1 MiB each).
const QUEUED_PIECES: usize = 2;

/// `name` as a name the HTTP API takes: a valid name (1–1024 bytes of UTF-8, no NUL) with no
/// `.` or `..` segment, which URLs cannot carry unchanged (clients resolve them away).
fn http_name(name: &str) -> Result<String, ApiError> {
    quickstore_behaviours::tuple::check_name(name)
        .map_err(|e| ApiError::bad_name(format!("bad name: {e}")))?;
    if name.split('/').any(|s| s == "." || s == "..") {
        return Err(ApiError::bad_name(format!(
            "bad name {}: a `.` or `..` segment cannot be addressed by URL (use the CLI for such names)",
            crate::files::cli::shown(name)
        )));
    }
    Ok(name.to_string())
}

/// Puts a finished upload under `name`, as `quickstore put` does.
async fn put(api: &Api, spooled: Spooled, name: &str) -> Result<FileReport, ApiError> {
    let gateway = api.gateway().await?;
    let report = gateway
        .put(&spooled.path, name, api.settings.put_deadline)
        .await?;
    if report.blake3 != to_hex(&spooled.blake3) || report.size != spooled.size {
        return Err(ApiError::from_message(format!(
            "corrupt: the upload of {} hashed to {} as it arrived, the put to {}",
            crate::files::cli::shown(name),
            to_hex(&spooled.blake3),
            report.blake3
        )));
    }
    Ok(report)
}

/// Whether an announced `Content-Length` is already too large.
fn check_length(headers: &HeaderMap, max: u64) -> Result<(), ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(length) if length > max => Err(too_large(max)),
        _ => Ok(()),
    }
}

/// `PUT /files/{name}`: the raw body is the file.
pub async fn upload_raw(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileReport>), ApiError> {
    let name = http_name(&name)?;
    let max = api.settings.max_file_bytes;
    check_length(&headers, max)?;
    let mut spool = Spool::create(&api.spool_dir, max)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = next_chunk(stream.next(), api.settings.idle).await? {
        spool.write(&chunk).await?;
    }
    let report = put(&api, spool.finish().await?, &name).await?;
    Ok((StatusCode::CREATED, Json(report)))
}

/// What a multipart form carried.
struct Form {
    file: Spooled,
    /// The name field, if any.
    name: Option<String>,
    /// The file part's own file name, if any.
    file_name: Option<String>,
}

impl Form {
    /// The name to put under: the name field, else the last component of the file part's
    /// file name (a browser's or Postman's; never used as a path).
    fn name(&self) -> Result<String, ApiError> {
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            return http_name(name);
        }
        let last = self
            .file_name
            .as_deref()
            .and_then(|f| f.rsplit(['/', '\\']).next())
            .filter(|f| !f.is_empty());
        match last {
            Some(name) => http_name(name),
            None => Err(ApiError::bad_name(
                "the form names no file: give a `name` field (the original's `file_name`)",
            )),
        }
    }
}

/// Reads a multipart form: the file part (`file_fields`) spooled, the name (`name_fields`)
/// kept; other parts are refused.
async fn read_form(
    api: &Api,
    form: Result<Multipart, MultipartRejection>,
    file_fields: &[&str],
    name_fields: &[&str],
) -> Result<Form, ApiError> {
    let mut form =
        form.map_err(|e| ApiError::bad_request(format!("the body is not a multipart form: {e}")))?;
    let idle = api.settings.idle;
    let mut file: Option<Spooled> = None;
    let mut name = None;
    let mut file_name = None;
    loop {
        let field = tokio::time::timeout(idle, form.next_field())
            .await
            .map_err(|_| ApiError::bad_request(format!("the form sent nothing for {idle:?}")))?
            .map_err(|e| ApiError::bad_request(format!("bad multipart form: {e}")))?;
        let Some(mut field) = field else {
            break;
        };
        let field_name = field.name().unwrap_or_default().to_string();
        if file_fields.contains(&field_name.as_str()) {
            if file.is_some() {
                return Err(ApiError::bad_request("one file per upload"));
            }
            file_name = field.file_name().map(str::to_string);
            let mut spool = Spool::create(&api.spool_dir, api.settings.max_file_bytes)?;
            while let Some(chunk) = next_chunk(field.next(), idle).await? {
                spool.write(&chunk).await?;
            }
            file = Some(spool.finish().await?);
        } else if name_fields.contains(&field_name.as_str()) {
            let mut text = Vec::new();
            while let Some(chunk) = next_chunk(field.next(), idle).await? {
                text.extend_from_slice(&chunk);
                if text.len() > MAX_TEXT_FIELD {
                    return Err(ApiError::bad_name("the name field is too long"));
                }
            }
            name = Some(
                String::from_utf8(text)
                    .map_err(|_| ApiError::bad_name("the name field is not UTF-8"))?,
            );
        } else {
            return Err(ApiError::bad_request(format!(
                "unexpected form field {field_name:?} (expected {} and {})",
                file_fields.join(" or "),
                name_fields.join(" or ")
            )));
        }
    }
    let Some(file) = file else {
        return Err(ApiError::bad_request(format!(
            "the form has no file part ({})",
            file_fields.join(" or ")
        )));
    };
    Ok(Form {
        file,
        name,
        file_name,
    })
}

/// `POST /files`: a multipart form with a `file` part and an optional `name`; also the
/// original project's `POST /admin/webapp/upload/` (`file_obj`, `file_name`).
pub async fn upload_form(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<FileReport>), ApiError> {
    check_length(
        &headers,
        api.settings.max_file_bytes.saturating_add(64 << 10),
    )?;
    let form = read_form(&api, form, &["file", "file_obj"], &["name", "file_name"]).await?;
    let name = form.name()?;
    let report = put(&api, form.file, &name).await?;
    Ok((StatusCode::CREATED, Json(report)))
}

/// `?version=V`
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    version: Option<u64>,
}

/// `GET` and `HEAD /files/{name}`.
pub async fn download(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&api, &name, query.version, &method, &headers, false).await
}

/// `?fileName=NAME`
#[derive(Debug, Deserialize)]
pub struct OriginalQuery {
    #[serde(rename = "fileName")]
    file_name: Option<String>,
}

/// `GET /admin/webapp/download?fileName=NAME`: the original project's download, as an
/// attachment.
pub async fn original_download(
    State(api): State<Arc<Api>>,
    Query(query): Query<OriginalQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(name) = query.file_name else {
        return Err(ApiError::bad_name("give the name: ?fileName=NAME"));
    };
    serve(&api, &name, None, &method, &headers, true).await
}

/// The response for a download of `name`.
async fn serve(
    api: &Arc<Api>,
    name: &str,
    version: Option<u64>,
    method: &Method,
    headers: &HeaderMap,
    attachment: bool,
) -> Result<Response, ApiError> {
    let name = http_name(name)?;
    let located = api.gateway().await?.locate(&name, version).await?;
    let tuple = &located.tuple;
    let size = tuple.size;
    let etag = format!("\"{}\"", to_hex(&tuple.version.blake3));
    let header_text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-quickstore-version", tuple.version.lamport);
    if let Some(wanted) = header_text(header::IF_NONE_MATCH)
        && wanted
            .split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag)
    {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(internal);
    }
    let if_range_fails = header_text(header::IF_RANGE).is_some_and(|t| t.trim() != etag);
    let asked = if if_range_fails {
        RangeAsked::Whole
    } else {
        parse_range(header_text(header::RANGE), size)
    };
    let (from, to, status) = match asked {
        RangeAsked::Whole => (0, size, StatusCode::OK),
        RangeAsked::Part(from, to) => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {from}-{}/{size}", to - 1),
            );
            (from, to, StatusCode::PARTIAL_CONTENT)
        }
        RangeAsked::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::ETAG, &etag)
                .body(Body::empty())
                .map_err(internal);
        }
    };
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    response = response
        .status(status)
        .header(header::CONTENT_TYPE, mime.as_ref())
        .header(header::CONTENT_LENGTH, to - from);
    if attachment {
        response = response.header(header::CONTENT_DISPOSITION, content_disposition(&name));
    }
    if *method == Method::HEAD || from == to {
        return response.body(Body::empty()).map_err(internal);
    }
    let body = stream_body(api.clone(), located, from, to).await?;
    response.body(body).map_err(internal)
}

/// The bytes `from..to` of `located` as a body; the first piece is awaited, so a name none
/// of whose holders can serve is an error response, not a cut one. A failure after that
/// cuts the body short (the client sees fewer bytes than `Content-Length`).
async fn stream_body(
    api: Arc<Api>,
    located: Located,
    from: u64,
    to: u64,
) -> Result<Body, ApiError> {
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUED_PIECES);
    tokio::spawn(async move {
        let sent = match api.gateway().await {
            Ok(gateway) => gateway
                .send(&located, from, to, &tx)
                .await
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.message),
        };
        if let Err(e) = sent {
            tracing::info!("HTTP download of {} stopped: {e}", located.tuple.name);
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    let first = match rx.recv().await {
        Some(Ok(first)) => first,
        Some(Err(e)) => return Err(ApiError::from_message(e.to_string())),
        None => {
            return Err(ApiError::from_message(
                "unreachable: no holder served".into(),
            ));
        }
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Body::from_stream(
        futures::stream::once(async move { Ok(first) }).chain(rest),
    ))
}

/// `DELETE /files/{name}`.
pub async fn remove(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let name = http_name(&name)?;
    Ok(Json(api.gateway().await?.remove(&name).await?))
}

/// `?prefix=P&after=NAME&limit=N`
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// A group that could not be listed.
#[derive(Debug, Serialize)]
pub struct Unlisted {
    group: u32,
    reason: String,
}

/// `GET /files` answers this.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Names after `after`, sorted, at most `limit`.
    files: Vec<Listed>,
    /// The `after` of the next page, when there is one.
    next: Option<String>,
    /// Groups that could not be listed: their names are missing.
    unreachable_groups: Vec<Unlisted>,
}

/// `GET /files?prefix=P&after=NAME&limit=N`: live names under the prefix, a page at a time.
pub async fn list(
    State(api): State<Arc<Api>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Listing>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let prefix = query.prefix.unwrap_or_default();
    let names = api.gateway().await?.list(&prefix).await?;
    let mut page: Vec<_> = names
        .tuples
        .iter()
        .filter(|t| query.after.as_deref().is_none_or(|a| *t.name > *a))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|t| t.name.to_string()).unwrap_or_default()
    });
    let files: Vec<Listed> = page.into_iter().map(Listed::of).collect();
    Ok(Json(Listing {
        files,
        next,
        unreachable_groups: names
            .unreachable
            .into_iter()
            .map(|(group, reason)| Unlisted { group, reason })
            .collect(),
    }))
}

fn internal(e: axum::http::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}
