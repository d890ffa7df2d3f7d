//! The one API error type. Every endpoint answers errors as
//! `{"error":{"code":"…","message":"…"}}` with the right status; internal detail is logged in
//! the request's span and never returned.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The cause of a 5xx, logged when the response is built.
    source: Option<anyhow::Error>,
    /// Extra response headers (`Retry-After`, `x-ratelimit-*` on a 429).
    headers: Option<Box<HeaderMap>>,
    /// The request this error concerns, when one was assigned (`"request_id"` in the body).
    request_id: Option<String>,
    /// Not logged when answered (a readiness probe's 503 while starting is expected).
    quiet: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            source: None,
            headers: None,
            request_id: None,
            quiet: false,
        }
    }

    /// The same error, not logged when answered (see [`ApiError::quiet`]'s field).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// The same error naming the request it concerns (top-level `request_id` in the body).
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The same error with these response headers added.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers
            .get_or_insert_with(Box::default)
            .extend(headers);
        self
    }

    /// The extra response headers.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_deref()
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: well-formed, but a field is invalid; the message names the field.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {problem}"),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 503 with `Retry-After: 2` (a caller that sets its own, e.g. `overloaded`, replaces it):
    /// every 503 tells the client when to try again.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_headers(headers)
    }

    /// 500 with an opaque message; `source` is logged, not returned.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log for this request id",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self.source {
            _ if self.quiet => {}
            Some(source) => tracing::error!(
                error = format!("{source:#}"),
                code = self.code,
                "request failed"
            ),
            None if self.status.is_server_error() => {
                tracing::warn!(code = self.code, message = %self.message, "request failed");
            }
            None => {}
        }
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
            },
            request_id: self.request_id.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self {
                source: Some(e.into()),
                ..Self::unavailable("database_unavailable", "the database is unavailable")
            },
            ref lost if crate::store::connection_lost(lost) => Self {
                source: Some(e.into()),
                ..Self::unavailable("database_unavailable", "the database is unavailable")
            },
            // 57014 query_canceled: DB_STATEMENT_TIMEOUT_MS ran out.
            sqlx::Error::Database(ref d) if d.code().as_deref() == Some("57014") => Self {
                source: Some(e.into()),
                ..Self::unavailable("database_timeout", "the database did not answer in time")
            },
            other => Self::internal(other),
        }
    }
}

/// Malformed JSON bodies get our error shape, not axum's plain text.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_field",
            _ => "invalid_json",
        };
        Self::new(status, code, rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 503 tells when to retry, in every dialect, and a caller's own value wins.
    #[test]
    fn every_503_carries_retry_after() {
        let outage = || ApiError::from(sqlx::Error::PoolTimedOut);
        let ours = outage().into_response();
        assert_eq!(ours.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ours.headers()[RETRY_AFTER], "2");
        let openai = crate::api::openai::OpenAiError::from(outage()).into_response();
        assert_eq!(openai.headers()[RETRY_AFTER], "2");
        let anthropic = crate::api::anthropic::AnthropicError::from(outage()).into_response();
        assert_eq!(anthropic.headers()[RETRY_AFTER], "2");

        let mut own = HeaderMap::new();
        own.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let overloaded = ApiError::unavailable("overloaded", "busy").with_headers(own);
        let response = overloaded.into_response();
        assert_eq!(response.headers().get_all(RETRY_AFTER).iter().count(), 1);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
    }
}
