//! Who is calling, on every client route (`/complete`, `/v1/*`, `/feedback`, `/recommendation`,
//! `/requests/{id}`, `/routing/metrics`): `Authorization: Bearer <secret>`.
//!
//! - the admin token (`ADMIN_TOKEN`, compared in constant time) → [`Caller::Admin`], sees all;
//! - a live API key (looked up by its hash, [`KeyRing`]) → [`Caller::Key`], sees its own;
//! - no token, or a token that is neither, while no key was ever created → [`Caller::Open`] (a
//!   fresh install works without keys, with SDKs that always send one; revoking the last key
//!   does not open the service again);
//! - otherwise 401.
//!
//! The caller is put in the request's extensions for the handlers. Below: what a key may route
//! to, and its 429s and `x-ratelimit-*` headers.

use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::AppState;
use super::error::ApiError;
use super::openai::OpenAiError;
use crate::providers::ProviderId;
use crate::routing::Strategy;
use crate::store::keys::{Period, RateState, Refusal};
use crate::tenants::Caller;

/// The key or token a request carries: `Authorization: Bearer <key>`, or `x-api-key: <key>` as
/// Anthropic's SDKs send it.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A key lookup that could not be made: 503, never a guess in either direction.
fn unavailable(e: sqlx::Error) -> ApiError {
    tracing::warn!(error = %e, "API key lookup failed");
    ApiError::unavailable(
        "database_unavailable",
        "cannot check the API key: the database is unavailable",
    )
}

/// The caller `headers` identify.
async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(given) = bearer(headers) else {
        return if state.keys.any_created().await.map_err(unavailable)? {
            Err(ApiError::unauthorized(
                "missing API key (Authorization: Bearer <key>, or x-api-key: <key>)",
            ))
        } else {
            Ok(Caller::Open)
        };
    };
    if let Some(admin) = &state.settings.admin_token
        && super::constant_time_eq(given.as_bytes(), admin.expose_secret().as_bytes())
    {
        return Ok(Caller::Admin);
    }
    match state.keys.authenticate(given).await.map_err(unavailable)? {
        Some(key) => Ok(Caller::Key(key)),
        // SDKs always send a key: until a key is created, whatever they send is the open
        // caller, as no key at all would be.
        None if !state.keys.any_created().await.map_err(unavailable)? => Ok(Caller::Open),
        None => Err(ApiError::unauthorized(
            "invalid API key (unknown, revoked or expired)",
        )),
    }
}

/// Identifies the caller (our error shape).
pub async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = identify(&state, request.headers()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Identifies the caller on /v1 (OpenAI's error shape, `invalid_api_key` on a 401).
pub async fn require_caller_v1(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, OpenAiError> {
    let caller = identify(&state, request.headers())
        .await
        .map_err(OpenAiError::from)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Where a caller may route: providers and catalog model indices (None: any).
pub type Allowed = (Option<Vec<ProviderId>>, Option<Vec<usize>>);

/// What the caller may route to: the request's providers narrowed to the key's, and the key's
/// models. A pinned model is checked against them (403 naming it) and needs no restriction
/// after that: (None, None).
pub fn restrict(
    state: &AppState,
    caller: &Caller,
    providers: Option<Vec<ProviderId>>,
    pinned: Option<usize>,
) -> Result<Allowed, ApiError> {
    let Some(key) = caller.key() else {
        return Ok((providers, None));
    };
    let catalog = state.engine.catalog();
    let models = key.allowed_models(catalog);
    let providers = match (providers, key.allowed_providers()) {
        (Some(asked), Some(allowed)) => {
            Some(asked.into_iter().filter(|p| allowed.contains(p)).collect())
        }
        (asked, allowed) => asked.or(allowed),
    };
    if let Some(index) = pinned {
        let model = &catalog.models()[index];
        let provider_ok = providers
            .as_ref()
            .is_none_or(|a| a.contains(&model.provider));
        let model_ok = models.as_ref().is_none_or(|a| a.contains(&index));
        if !(provider_ok && model_ok) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                format!("model: this API key may not use {}", model.key()),
            ));
        }
        return Ok((None, None));
    }
    Ok((providers, models))
}

/// The strategy named, else the key's default, else the service's.
pub fn strategy(caller: &Caller, name: Option<&str>) -> Result<Strategy, ApiError> {
    match (name, caller.key().and_then(|k| k.default_strategy())) {
        (None, Some(default)) => Ok(default),
        (name, _) => super::validate::strategy(name),
    }
}

fn header(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

/// Whole seconds from now until `at` (at least 1).
fn seconds_until(at: DateTime<Utc>) -> i64 {
    let ms = (at - Utc::now()).num_milliseconds();
    (ms + 999).div_euclid(1000).max(1)
}

/// `x-ratelimit-*` headers (OpenAI's names) of the key's current window.
pub fn rate_headers(rate: &RateState) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let reset = format!("{}s", seconds_until(rate.reset_at));
    for (names, limit, used) in [
        (
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            rate.requests_limit,
            rate.requests_used,
        ),
        (
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
            rate.tokens_limit,
            rate.tokens_used,
        ),
    ] {
        if let Some(limit) = limit {
            let [limit_name, remaining_name, reset_name] = names.map(HeaderName::from_static);
            headers.insert(limit_name, header(limit));
            headers.insert(remaining_name, header((limit - used).max(0)));
            headers.insert(reset_name, header(&reset));
        }
    }
    headers
}

/// 429 for a refused request: `rate_limited` or `budget_exceeded`, naming the limit, what is
/// used and when it resets, with `Retry-After`.
pub fn refused(refusal: Refusal) -> ApiError {
    let mut headers = HeaderMap::new();
    match refusal {
        Refusal::RateLimited {
            limit_name,
            limit,
            used,
            reset_at,
        } => {
            let retry = seconds_until(reset_at);
            headers.insert(RETRY_AFTER, header(retry));
            let rate = RateState {
                requests_limit: (limit_name == "requests").then_some(limit),
                requests_used: if limit_name == "requests" { used } else { 0 },
                tokens_limit: (limit_name == "tokens").then_some(limit),
                tokens_used: if limit_name == "tokens" { used } else { 0 },
                reset_at,
            };
            headers.extend(rate_headers(&rate));
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "rate limit of {limit} {limit_name} per minute reached ({used} used); \
                     retry after {retry} s (at {})",
                    reset_at.to_rfc3339()
                ),
            )
            .with_headers(headers)
        }
        Refusal::OverBudget {
            scope,
            period,
            limit_usd,
            spent_usd,
            reserved_usd,
            needed_usd,
            reset_at,
        } => {
            headers.insert(RETRY_AFTER, header(seconds_until(reset_at)));
            let whose = if scope.is_empty() {
                "this API key's".to_owned()
            } else {
                format!("end user {scope:?}'s")
            };
            let period = match period {
                Period::Day => "daily",
                Period::Month => "monthly",
            };
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exceeded",
                format!(
                    "{whose} {period} budget of ${limit_usd:.6} does not fit this request: \
                     ${spent_usd:.6} spent, ${reserved_usd:.6} held by requests in flight, \
                     this one needs up to ${needed_usd:.6}; resets at {}",
                    reset_at.to_rfc3339()
                ),
            )
            .with_headers(headers)
        }
    }
}
