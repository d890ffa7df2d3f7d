//! OpenAI's error shape `{"error":{"message","type","param","code"}}`, and the JSON extractor
//! that rejects malformed bodies in it.

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::error::ApiError;
use crate::api::extract::BodyError;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    pub(crate) status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `api_error`…
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) param: Option<std::borrow::Cow<'static, str>>,
    pub(crate) code: Option<&'static str>,
    /// Extra response headers (`Retry-After`, `x-ratelimit-*` on a 429).
    pub(crate) headers: Option<Box<axum::http::HeaderMap>>,
}

impl OpenAiError {
    pub fn invalid(
        param: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.into()),
            code: None,
            headers: None,
        }
    }
}

impl OpenAiError {
    /// 503 for a request that was accepted but could not be waited for: the message and the
    /// `x-optimizer-request-id` header name it, so the client can poll `/requests/{id}`.
    pub fn accepted_elsewhere(request_id: &str) -> Self {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(request_id) {
            headers.insert("x-optimizer-request-id", v);
        }
        headers.insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("2"),
        );
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "api_error",
            message: format!(
                "request {request_id} was accepted but its answer could not be awaited; poll \
                 /requests/{request_id}"
            ),
            param: None,
            code: Some("accepted_not_awaited"),
            headers: Some(Box::new(headers)),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

/// Our errors, re-shaped: validation problems are 400 here (OpenAI's convention).
impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let kind = match status.as_u16() {
            400 | 404 | 405 | 409 | 413 | 414 | 415 | 431 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        // OpenAI's codes where it has one for the case; ours where the client must tell apart.
        let code = match (status.as_u16(), e.code()) {
            (401, _) => Some("invalid_api_key"),
            (403 | 429, code) => Some(code),
            _ => None,
        };
        // ApiError logs its own cause when turned into a response; keep that for 5xx.
        let message = e.message().to_owned();
        let mut headers = e.headers().cloned().map(Box::new);
        // OpenAI's shape has no place for it: the request's id travels as a header.
        if let Some(id) = e.request_id()
            && let Ok(v) = axum::http::HeaderValue::from_str(id)
        {
            headers
                .get_or_insert_with(Box::default)
                .insert("x-optimizer-request-id", v);
        }
        if status.is_server_error() {
            let _ = e.into_response();
        }
        Self {
            status,
            kind,
            message,
            param: None,
            code,
            headers,
        }
    }
}

impl From<JsonRejection> for OpenAiError {
    fn from(r: JsonRejection) -> Self {
        Self {
            status: match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            },
            kind: "invalid_request_error",
            message: r.body_text(),
            param: None,
            code: None,
            headers: None,
        }
    }
}

/// A JSON body with OpenAI-shaped rejections (the same reader as `AppJson`: NUL characters and
/// wrong shapes are refused naming the field).
pub struct V1Json<T>(pub T);

impl<T, S> FromRequest<S> for V1Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, OpenAiError> {
        crate::api::extract::json_body(req, state)
            .await
            .map(V1Json)
            .map_err(OpenAiError::from)
    }
}

impl From<BodyError> for OpenAiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Rejected(r) => Self::from(r),
            other => Self {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_request_error",
                message: other.message(),
                param: match &other {
                    BodyError::Duplicate { path } => Some(path.clone().into()),
                    _ => None,
                },
                code: None,
                headers: None,
            },
        }
    }
}
