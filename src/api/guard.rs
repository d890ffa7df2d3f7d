//! Middleware that keeps two promises on every route: errors are JSON (ours, or OpenAI's under
//! `/v1`), and routes that need the database answer 503 `not_ready` until its schema is there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{OriginalUri, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use super::AppState;
use super::error::ApiError;
use super::openai::OpenAiError;
use crate::store::Database;

/// Whether the database's schema is known to be in place. Set once a readiness check (or the
/// start-up migration) succeeds and never unset: a database that goes away later answers 503
/// `database_unavailable` through the ordinary error path.
#[derive(Debug, Default)]
pub struct SchemaGate {
    ready: AtomicBool,
    /// When the last check ran: while not ready, at most one check per second is made, so a
    /// burst of early requests does not become a burst of queries.
    last_check: Mutex<Option<Instant>>,
}

impl SchemaGate {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the schema ready (after a successful migration).
    pub fn open(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready, checking the database at most once a second until it is.
    async fn check(&self, db: &Database) -> bool {
        if self.is_ready() {
            return true;
        }
        let mut last = self.last_check.lock().await;
        if self.is_ready() {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        if db.check_ready().await.is_ok() {
            self.open();
        }
        self.is_ready()
    }
}

/// Whether the request is for the OpenAI-compatible API (errors in OpenAI's shape). Inside the
/// nested `/v1` router the path has lost its prefix; the original URI keeps it.
fn is_v1(req: &Request) -> bool {
    req.extensions()
        .get::<OriginalUri>()
        .map_or(req.uri().path(), |u| u.0.path())
        .starts_with("/v1/")
}

/// `error` in the route's shape: OpenAI's under `/v1`, ours elsewhere.
fn shaped(v1: bool, error: ApiError) -> Response {
    if v1 {
        OpenAiError::from(error).into_response()
    } else {
        error.into_response()
    }
}

/// 503 `code` with `Retry-After: retry_secs`, in the route's shape.
fn retry_later(
    req: &Request,
    code: &'static str,
    message: &str,
    retry_secs: &'static str,
) -> Response {
    let mut response = shaped(is_v1(req), ApiError::unavailable(code, message));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(retry_secs));
    response
}

/// 503 `not_ready` with `Retry-After` until the schema is in place.
pub async fn require_schema(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.schema.check(&state.db).await {
        return next.run(req).await;
    }
    retry_later(
        &req,
        "not_ready",
        "the service is starting: its database is not migrated yet; retry shortly",
        "2",
    )
}

/// At most `MAX_IN_FLIGHT` requests are served at once by this process; past that, 503
/// `overloaded` with `Retry-After` at once instead of unbounded queueing (shedding load keeps
/// the answered requests fast). A tokio semaphore rather than tower's `load_shed` +
/// `GlobalConcurrencyLimit`: those need an error-handling layer to turn their error back into
/// a response, and the rule is three lines.
pub async fn shed_load(
    State(permits): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        return retry_later(
            &req,
            "overloaded",
            "too many requests in flight in this process; retry shortly",
            "1",
        );
    };
    next.run(req).await
}

/// 413 at once for a `Content-Length` above the body limit, before any of the body is read
/// (the extractors would otherwise wait for bytes that will be refused anyway).
pub async fn refuse_oversized(max_bytes: usize, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than MAX_REQUEST_BYTES ({max_bytes} bytes)"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The longest request target (path and query) answered normally, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header fields, and header bytes (names, values, separators), answered normally.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// 414 for a request target above [`MAX_URI_BYTES`], 431 for more than [`MAX_HEADERS`] header
/// fields or [`MAX_HEADER_BYTES`] of them — in the JSON shape ([`json_errors`] shapes it for the
/// route's dialect). hyper's own limits sit above these (see `serve_with`), so only a request
/// past those — a request line or head of hundreds of KiB — still gets hyper's empty answer.
pub async fn refuse_oversized_head(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        let message =
            format!("the request target is {target} bytes; at most {MAX_URI_BYTES} are accepted");
        return (StatusCode::URI_TOO_LONG, message).into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let message = format!(
            "{} header fields, {bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} \
             bytes are accepted",
            headers.len()
        );
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message).into_response();
    }
    next.run(req).await
}

/// Rewrites any error response that is not JSON (axum's plain-text rejections of paths, queries
/// and bodies; empty fallbacks) into the JSON shape, keeping its status and other headers.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let v1 = is_v1(&req);
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = shaped(v1, ApiError::new(status, code_of(status), message));
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_field",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}
