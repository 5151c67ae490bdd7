//! Who may use the API, and how much of it at once: the bearer token, a refusal of
//! cross-site writes, and a bound on requests in flight (a response body counts until it
//! has been sent).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::Api;
use super::error::ApiError;

/// The cookie the web page keeps the token in (links and forms cannot send a header).
pub const TOKEN_COOKIE: &str = "quickstore_token";

/// Checks the token and the origin, and takes a request slot for the request and its body.
pub async fn guard(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    // The page itself holds no data: it asks for the token when the API refuses it.
    if request.uri().path() != "/"
        && let Some(token) = &api.settings.token
        && !authorized(request.headers(), token)
    {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node's HTTP API needs its token: Authorization: Bearer TOKEN",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if writes(request.method()) && cross_site(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a write from another site's page is refused (its Origin is not this node)",
        )
        .into_response();
    }
    let Ok(permit) = api.requests.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "busy: {} requests are being served (http.max_requests); try again",
                api.settings.max_requests
            ),
        )
        .into_response();
    };
    next.run(request).await.map(|body| {
        Body::new(HoldsSlot {
            body,
            _permit: permit,
        })
    })
}

/// Whether `headers` carry `token`, as a bearer token or the page's cookie.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|given| same(given.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == TOKEN_COOKIE && same(value, token));
    bearer || cookie
}

/// Compares without stopping at the first difference.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser sends `Origin` with a form or script request from a page; a page of another
/// site must not write or delete here (a loopback node needs no token, so it would).
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false; // curl, Postman, the CLI
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

/// A response body that keeps its request's slot until it has been sent.
struct HoldsSlot {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for HoldsSlot {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_comes_as_a_bearer_header_or_the_pages_cookie() {
        let t = "s3cret";
        assert!(authorized(
            &headers(&[(header::AUTHORIZATION, "Bearer s3cret")]),
            t
        ));
        assert!(authorized(
            &headers(&[(header::COOKIE, "a=b; quickstore_token=s3cret")]),
            t
        ));
        assert!(!authorized(
            &headers(&[(header::AUTHORIZATION, "Bearer s3cre")]),
            t
        ));
        assert!(!authorized(
            &headers(&[(header::AUTHORIZATION, "Basic s3cret")]),
            t
        ));
        assert!(!authorized(
            &headers(&[(header::COOKIE, "other=s3cret")]),
            t
        ));
        assert!(!authorized(&HeaderMap::new(), t));
    }

    #[test]
    fn writes_from_another_sites_page_are_told_apart() {
        assert!(!cross_site(&headers(&[(header::HOST, "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ])));
        assert!(cross_site(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://evil.example"),
        ])));
        assert!(cross_site(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "null"),
        ])));
    }
}
