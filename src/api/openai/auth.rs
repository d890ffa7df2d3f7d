//! API keys (`API_KEYS`) on `/v1/*` and `/complete`: `Authorization: Bearer <key>`, compared in
//! constant time; the key's id becomes the request's user.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;

use super::OpenAiError;
use crate::api::AppState;
use crate::api::error::ApiError;

/// The key id of an authenticated caller (`API_KEYS`), for the request's user.
#[derive(Debug, Clone)]
pub struct ApiKeyId(pub String);

/// Which configured key `headers` carries: Ok(None) when no keys are configured.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Option<ApiKeyId>, &'static str> {
    let keys = &state.settings.api_keys;
    if keys.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing API key (Authorization: Bearer <key>)")?;
    keys.iter()
        .find(|(_, key)| {
            crate::api::constant_time_eq(key.expose_secret().as_bytes(), given.as_bytes())
        })
        .map(|(id, _)| Some(ApiKeyId(id.clone())))
        .ok_or("invalid API key")
}

/// Checks the API key (when `API_KEYS` is set) and records its id on the request.
fn authorize(state: &AppState, request: &mut Request) -> Result<(), &'static str> {
    if let Some(id) = authenticate(state, request.headers())? {
        request.extensions_mut().insert(id);
    }
    Ok(())
}

/// API keys on /v1 (OpenAI-shaped 401).
pub async fn require_key_v1(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, OpenAiError> {
    authorize(&state, &mut request).map_err(|why| OpenAiError {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid_request_error",
        message: why.to_owned(),
        param: None,
        code: Some("invalid_api_key"),
    })?;
    Ok(next.run(request).await)
}

/// API keys on /complete (our error shape).
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state, &mut request).map_err(ApiError::unauthorized)?;
    Ok(next.run(request).await)
}
