//! `POST /complete`, `GET /requests/{id}` and `GET /routing/metrics`.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::AppJson;
use super::validate;
use super::{AppState, auth};
use crate::completion::{CompleteInput, CompletionView, SubmitError, Submitted};
use crate::providers::ProviderId;
use crate::store::metrics;
use crate::store::requests::RequestRecord;
use crate::tenants::Caller;
use crate::types::RequestStatus;

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// Not empty or only whitespace.
    #[schema(min_length = 1, pattern = r"\S")]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default = "default_true")]
    auto_route: bool,
    /// Restricts routing to this provider (with `model`: the model's provider).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(anthropic|gemini|openrouter|openai_compat|simulated|replay)$")]
    provider: Option<String>,
    /// A catalog model id (pins it).
    #[serde(default)]
    model: Option<String>,
    /// `cost`, `balanced` or `quality` (default: the key's, else `balanced`).
    #[serde(default)]
    #[schema(pattern = "^(cost|balanced|quality)$")]
    strategy: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    min_quality: Option<f64>,
    /// Share of the best candidate's predicted quality the choice must keep, in (0, 1].
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    quality_share: Option<f64>,
    /// USD, > 0.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    max_cost: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f64>,
    #[serde(default, rename = "async")]
    is_async: bool,
    /// false: never route this request to an unproven model (exploration).
    #[serde(default = "default_true")]
    explore: bool,
    /// false: never sample this request for shadow comparisons (other models answering it
    /// after you have your answer, judged by a model; see the README).
    #[serde(default = "default_true")]
    shadow: bool,
    #[serde(default)]
    #[schema(max_length = 255)]
    user_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 255)]
    session_id: Option<String>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A routed completion: answered (200), or accepted to run on (202 with where to poll).
#[utoipa::path(post, path = "/complete", tag = "completions", request_body = CompleteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the same request (≤ 255 characters)")),
    responses(
        (status = 200, description = "Answered (or failed, see `status`)", body = CompletionView),
        (status = 202, description = "Accepted; poll `status_url`", body = super::openapi::AcceptedBody),
        (status = 502, description = "Every candidate model failed", body = super::openapi::FailedBody),
        super::openapi::ClientErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn complete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    AppJson(body): AppJson<CompleteBody>,
) -> Result<Response, ApiError> {
    let input = complete_input(&state, caller, &headers, body)?;
    let is_async = input.is_async;
    let (submitted, rate) = state
        .completions
        .submit(input)
        .await
        .map_err(submit_error)?;
    let mut response = answer(&state, is_async, submitted).await?;
    if let Some(rate) = &rate {
        response.headers_mut().extend(auth::rate_headers(rate));
    }
    Ok(response)
}

/// A submission that could not be accepted, as a 4xx naming why (or a 5xx).
pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Route(e) => validate::route_error(e),
        SubmitError::Database(e) => ApiError::from(e),
        SubmitError::Refused(refusal) => auth::refused(refusal),
        SubmitError::Unconfirmed { request_id, source } => {
            tracing::warn!(%request_id, error = %source, "the request's insert was cut off");
            ApiError::unavailable(
                "database_unavailable",
                format!(
                    "the database connection broke while request {request_id} was being stored: \
                     poll /requests/{request_id} (404: it was not accepted), or resend with the \
                     same Idempotency-Key"
                ),
            )
            .with_request_id(&request_id)
        }
        SubmitError::IdempotencyMismatch(request_id) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "Idempotency-Key: already used for request {request_id} with a different body; \
                 use a new key for a new request"
            ),
        ),
    }
}

/// The answer to an accepted request: now, or 202 with where to poll.
async fn answer(
    state: &AppState,
    is_async: bool,
    submitted: Submitted,
) -> Result<Response, ApiError> {
    let completions = &state.completions;
    let request_id = submitted.request_id().to_owned();
    let record = match submitted {
        Submitted::Cached(id) => completions.get(&id).await,
        Submitted::Queued { .. } | Submitted::Replayed(_) if is_async => {
            return Ok(accepted(&request_id, RequestStatus::Queued));
        }
        Submitted::Queued {
            request_id, waiter, ..
        } => completions.wait(&request_id, waiter).await,
        Submitted::Replayed(id) => completions.wait(&id, None).await,
    };
    // The request is committed: whatever went wrong while waiting for it, the client learns its
    // id and where to poll (it finishes, or is swept, without the client).
    let record = match record {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "waiting for an accepted request failed; answering 202");
            return Ok(accepted(&request_id, RequestStatus::Queued));
        }
    };
    let record = record
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request {request_id} vanished")))?;
    Ok(respond(record))
}

/// Maps and validates the body (and the `Idempotency-Key` header): each refusal names its field.
fn complete_input(
    state: &AppState,
    caller: Caller,
    headers: &HeaderMap,
    body: CompleteBody,
) -> Result<CompleteInput, ApiError> {
    let provider = body
        .provider
        .as_deref()
        .map(|p| {
            ProviderId::parse(p).ok_or_else(|| {
                ApiError::invalid_field("provider", format!("unknown provider {p:?}"))
            })
        })
        .transpose()?;
    let catalog = state.engine.catalog();
    let pinned =
        match (&body.model, body.auto_route) {
            (Some(model), _) => Some(catalog.find(provider, model).ok_or_else(|| {
                ApiError::invalid_field("model", format!("unknown model {model:?}"))
            })?),
            (None, false) => {
                return Err(ApiError::invalid_field(
                    "model",
                    "required when auto_route is false",
                ));
            }
            (None, true) => None,
        };
    let (allowed_providers, allowed_models) =
        auth::restrict(state, &caller, provider.map(|p| vec![p]), pinned)?;
    let input = CompleteInput {
        prompt: validate::prompt(body.prompt)?,
        system: body.system.filter(|s| !s.trim().is_empty()),
        history: Vec::new(),
        tail: Vec::new(),
        tools: Vec::new(),
        tool_choice: None,
        response_format: None,
        stream: false,
        explore: body.explore,
        shadow: body.shadow && shadow_allowed(headers),
        top_p: None,
        stop: Vec::new(),
        pinned,
        allowed_providers,
        allowed_models,
        strategy: auth::strategy(&caller, body.strategy.as_deref())?,
        min_quality: validate::min_quality(body.min_quality)?,
        quality_share: validate::quality_share(body.quality_share)?,
        max_cost_usd: validate::max_cost(body.max_cost)?,
        max_tokens: validate::max_tokens(body.max_tokens)?,
        temperature: validate::temperature(body.temperature)?,
        is_async: body.is_async,
        // The end user within the key (ratings, per-user budgets).
        user_id: validate::short_text("user_id", body.user_id)?,
        session_id: validate::short_text("session_id", body.session_id)?,
        idempotency_key: idempotency_key(headers)?,
        caller,
    };
    Ok(input)
}

/// The `Idempotency-Key` header (scoped to the API key that sends it).
/// The header with which a caller keeps a request out of shadow comparisons on every route:
/// `x-optimizer-shadow: off` (also `false`, `0`, `no`).
pub const SHADOW_HEADER: &str = "x-optimizer-shadow";

/// Whether the request's headers allow shadow comparisons (see [`SHADOW_HEADER`]).
pub fn shadow_allowed(headers: &HeaderMap) -> bool {
    !headers.get(SHADOW_HEADER).is_some_and(|v| {
        let v = v.to_str().unwrap_or("off").trim();
        ["off", "false", "0", "no"]
            .iter()
            .any(|no| v.eq_ignore_ascii_case(no))
    })
}

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    validate::short_text(
        "Idempotency-Key",
        headers
            .get(IDEMPOTENCY_KEY)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::invalid_field("Idempotency-Key", "must be visible ASCII")
                })
            })
            .transpose()?,
    )
}

fn accepted(request_id: &str, status: RequestStatus) -> Response {
    let body = json!({
        "request_id": request_id,
        "status": status,
        "status_url": format!("/requests/{request_id}"),
    });
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// 200 when succeeded, 400 when the provider refused the request, 502 when every candidate
/// failed, 202 while it runs.
fn respond(record: RequestRecord) -> Response {
    match record.status {
        RequestStatus::Succeeded => axum::Json(CompletionView::from_record(record)).into_response(),
        RequestStatus::Failed => {
            let view = CompletionView::from_record(record);
            let (code, message) = view
                .error
                .as_ref()
                .map(|e| (e.code.clone(), e.message.clone()))
                .unwrap_or_else(|| ("provider_error".into(), "the request failed".into()));
            let body = json!({
                "error": { "code": code, "message": message },
                "request_id": view.request_id,
                "request": view,
            });
            (view.failure_status(), axum::Json(body)).into_response()
        }
        pending @ (RequestStatus::Queued | RequestStatus::Running) => {
            accepted(&record.request_id, pending)
        }
    }
}

/// `GET /requests/{id}`: the request's status and, once finished, the full answer.
/// Another key's request is "not found" (404, not 403): ids do not leak.
#[utoipa::path(get, path = "/requests/{id}", tag = "completions",
    params(("id" = String, Path, description = "The request id")),
    responses((status = 200, description = "The request", body = CompletionView),
              super::openapi::ClientErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn get_request(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<AppJson<CompletionView>, ApiError> {
    let missing = || ApiError::not_found(format!("no request {id:?}"));
    if !validate::is_plausible_id(&id) {
        return Err(missing());
    }
    let record = state
        .completions
        .get_owned(&id, caller.key_id())
        .await?
        .ok_or_else(missing)?;
    Ok(AppJson(CompletionView::from_record(record)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// RFC 3339 time: only requests since then.
    since: Option<String>,
}

/// `GET /routing/metrics?since=RFC3339`: an API key sees its own requests and spend; the admin
/// (or anyone while no key exists) sees all, with spend per key.
#[utoipa::path(get, path = "/routing/metrics", tag = "completions", params(MetricsQuery),
    responses((status = 200, description = "Counts, cost, savings and spend per model, pattern and provider", body = crate::store::metrics::Summary),
              super::openapi::ClientErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn routing_metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<MetricsQuery>,
) -> Result<AppJson<metrics::Summary>, ApiError> {
    let since = validate::since(q.since.as_deref())?;
    let key_id = caller.key_id();
    let mut summary = metrics::summary(&state.db.pool, since, key_id).await?;
    summary.spend = Some(crate::store::keys::current_spend(&state.db.pool, key_id).await?);
    summary.shadow = crate::store::shadow::totals(&state.db.pool, since, key_id).await?;
    summary.net_savings_usd = crate::routing::recommend::round_usd(
        summary.totals.savings_usd - summary.shadow.shadow_cost_usd - summary.shadow.judge_cost_usd,
    );
    Ok(AppJson(summary))
}
