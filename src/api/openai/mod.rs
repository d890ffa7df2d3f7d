//! The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`, so existing
//! OpenAI SDKs switch to the router by changing only the base URL. Same routing, queue, cost
//! accounting and feedback as `/complete`; errors in OpenAI's shape
//! `{"error":{"message","type","param","code"}}` on every /v1 route but `/v1/messages`
//! (Anthropic's, see [`crate::api::anthropic`]).
//!
//! `stream: true` answers Server-Sent Events of `chat.completion.chunk`s relayed from the
//! provider's own stream (see [`stream`]). Tools, `tool_choice` and `response_format` are
//! mapped to each provider; what cannot be honoured (`n > 1`, images, log probabilities…) is a
//! 400 naming the field, and the fields accepted but ignored are listed in `IGNORED_FIELDS`.
//!
//! - [`error`]: OpenAI's error shape and the JSON extractor.
//! - [`request`]: the request and its mapping onto a completion.
//! - [`response`]: the `chat.completion` object and routing headers.
//! - [`stream`]: the SSE relay of `chat.completion.chunk`s.

mod error;
mod request;
pub(crate) mod response;
mod stream;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

pub use error::{OpenAiError, V1Json};
pub use request::{ChatRequest, into_input};
pub use response::outcome;

use super::AppState;
use super::error::ApiError;
use crate::completion::{CompletionView, SubmitError, Submitted};
use crate::routing::RouteError;
use crate::tenants::Caller;

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = crate::api::openapi::ChatRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, description = "A chat.completion, or with `stream: true` Server-Sent Events of chat.completion.chunks",
                content((crate::api::openapi::ChatCompletion = "application/json"), (crate::api::openapi::SseEvent = "text/event-stream"))),
              crate::api::openapi::OpenAiErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn chat_completions(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    V1Json(body): V1Json<ChatRequest>,
) -> Result<Response, OpenAiError> {
    let (input, include_usage) = request::into_input(&state, caller, &headers, body)?;
    let stream = input.stream;
    let completions = &state.completions;
    let (submitted, rate) = completions.submit(input).await.map_err(submit_error)?;
    let rate_headers = rate.as_ref().map(super::auth::rate_headers);
    let mut response = answer(completions, submitted, stream, include_usage).await?;
    if let Some(h) = rate_headers {
        response.headers_mut().extend(h);
    }
    Ok(response)
}

/// A request the gateway would not accept, in the /v1 dialects' terms (a model whose provider is
/// not configured names `model`).
pub fn submit_error(e: SubmitError) -> OpenAiError {
    match e {
        SubmitError::Route(RouteError::NotRoutable(m)) => OpenAiError::invalid(
            "model",
            format!("model {m} is not routable: its provider is not configured"),
        ),
        other => OpenAiError::from(super::complete::submit_error(other)),
    }
}

/// The response to an accepted request: the stream, or the answer once it is there.
async fn answer(
    completions: &std::sync::Arc<crate::completion::Completions>,
    submitted: Submitted,
    stream: bool,
    include_usage: bool,
) -> Result<Response, OpenAiError> {
    if stream {
        let chunks = stream::Chunks::new(submitted.request_id().to_owned(), include_usage);
        return match crate::api::stream::respond(completions.clone(), submitted, chunks).await {
            Ok(response) => Ok(response),
            // Failed before its first piece: the status and error a non-streamed call gets.
            Err(view) => response::respond(*view),
        };
    }
    match awaited(completions, submitted).await {
        Ok(view) => response::respond(view),
        Err(e) => Err(e),
    }
}

/// The accepted request's record once it ends (or `COMPLETE_TIMEOUT_SECS` passes). If it
/// cannot be awaited, the 503 names the committed request, so the client can poll it.
pub(crate) async fn awaited(
    completions: &std::sync::Arc<crate::completion::Completions>,
    submitted: Submitted,
) -> Result<CompletionView, OpenAiError> {
    let request_id = submitted.request_id().to_owned();
    let record = match submitted {
        Submitted::Cached(id) => completions.get(&id).await,
        Submitted::Queued {
            request_id, waiter, ..
        } => completions.wait(&request_id, waiter).await,
        Submitted::Replayed(id) => completions.wait(&id, None).await,
    };
    match record {
        Ok(Some(record)) => Ok(CompletionView::from_record(record)),
        Ok(None) => Err(OpenAiError::from(ApiError::internal(anyhow::anyhow!(
            "request {request_id} vanished"
        )))),
        // The request is committed and will finish: the client learns its id and where to poll.
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "waiting for an accepted request failed");
            Err(OpenAiError::accepted_elsewhere(&request_id))
        }
    }
}

/// The models `caller` may name: the `auto` aliases and every routable catalog model its key
/// allows (all of them for the open caller and the admin).
fn model_objects(state: &AppState, caller: &Caller) -> Vec<Value> {
    let mut data: Vec<Value> = ["auto", "auto:cost", "auto:balanced", "auto:quality"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "ai-cost-optimizer" }))
        .collect();
    let (providers, models) =
        crate::api::auth::restrict(state, caller, None, None).unwrap_or_default();
    let engine = &state.engine;
    for (i, m) in engine.catalog().models().iter().enumerate() {
        let allowed = providers.as_ref().is_none_or(|p| p.contains(&m.provider))
            && models.as_ref().is_none_or(|a| a.contains(&i));
        if engine.is_routable(i) && allowed {
            data.push(
                json!({ "id": m.model, "object": "model", "created": 0, "owned_by": m.provider }),
            );
        }
    }
    data
}

/// `GET /v1/models`: the `auto` aliases and every routable catalog model the caller's key may
/// use.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "The models", body = crate::api::openapi::ModelList),
              crate::api::openapi::OpenAiErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn models(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> axum::Json<Value> {
    let data = model_objects(&state, &caller);
    axum::Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{id}`: one model of [`models`]' list (404 `model_not_found` otherwise), as
/// `client.models.retrieve("auto")` asks for it.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai",
    params(("id" = String, Path, description = "A model id of GET /v1/models (`auto`, a catalog model)")),
    responses((status = 200, description = "The model", body = crate::api::openapi::ModelCard),
              crate::api::openapi::OpenAiErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn model(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<Value>, OpenAiError> {
    model_objects(&state, &caller)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(axum::Json)
        .ok_or_else(|| OpenAiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: format!("The model {id:?} does not exist; see GET /v1/models"),
            param: None,
            code: Some("model_not_found"),
            headers: None,
        })
}

/// Unknown /v1 routes and methods, in OpenAI's shape.
pub async fn not_found() -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: "unknown route".into(),
        param: None,
        code: Some("unknown_url"),
        headers: None,
    }
}
