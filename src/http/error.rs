//! [`ApiError`]: every failure of the HTTP API as JSON `{"error": kind, "message": text}`
//! with a fitting status code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A short machine-readable kind (`not_found`, `unreachable`, `refused`, …).
    pub kind: &'static str,
    /// What happened, in one line.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error of `kind` answered with `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400 `bad_name`.
    pub fn bad_name(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_name", message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 413 `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// The error a file command's message stands for: the commands start their one-line
    /// errors with what failed (`not found:`, `unreachable:`, `refused:` …).
    pub fn from_message(message: String) -> Self {
        let starts = |prefix: &str| message.starts_with(prefix);
        let (status, kind) = if starts("not found") {
            (StatusCode::NOT_FOUND, "not_found")
        } else if starts("unavailable") {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        } else if starts("unreachable") {
            (StatusCode::SERVICE_UNAVAILABLE, "unreachable")
        } else if starts("refused: busy") || starts("busy") {
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        } else if starts("refused") && (message.contains("exceeds the maximum file size")) {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        } else if starts("refused") {
            (StatusCode::CONFLICT, "refused")
        } else if starts("corrupt") {
            (StatusCode::BAD_GATEWAY, "corrupt")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        };
        Self::new(status, kind, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::from_message(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.kind,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        // Refused before its body was read to the end: the rest of it is still coming on
        // this connection, so the node closes it after the answer, and says so, or a client
        // would send its next request on a connection about to close.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_body_closes_its_connection() {
        let closes = |e: ApiError| {
            e.into_response()
                .headers()
                .get(axum::http::header::CONNECTION)
                .is_some_and(|v| v == "close")
        };
        assert!(closes(ApiError::too_large("past 20 MiB")));
        assert!(!closes(ApiError::from_message(
            "not found: a/b".to_string()
        )));
    }

    #[test]
    fn the_commands_messages_map_to_status_codes() {
        let status = |m: &str| ApiError::from_message(m.to_string()).status;
        assert_eq!(status("not found: a/b"), StatusCode::NOT_FOUND);
        assert_eq!(
            status("unreachable: entry node x"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status("unavailable: a is stored, but"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status("refused: name owned by another"),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status("refused: file of 9 bytes exceeds the maximum file size of 8 bytes"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(status("corrupt: holder x"), StatusCode::BAD_GATEWAY);
        assert_eq!(status("cannot write"), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
