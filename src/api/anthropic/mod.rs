//! The Anthropic-compatible Messages API: `POST /v1/messages`, so Anthropic SDKs (and tools
//! built on them) use the router by changing only the base URL. The request is mapped onto the
//! chat-completions request ([`request`]) and takes the same validation, routing (`model`:
//! `auto`, `auto:<strategy>` or a catalog model), queue, cost accounting and feedback (the
//! message `id` is the request id). Answers are Anthropic's `message` object, or its stream of
//! `message_start` … `message_stop` events ([`stream`]); errors are Anthropic's
//! `{"type":"error","error":{"type","message"}}`. The key goes in `x-api-key` (or
//! `Authorization: Bearer`).

mod request;
mod stream;

use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::openai::{ChatRequest, OpenAiError};
use crate::completion::CompletionView;
use crate::tenants::Caller;

/// An error in Anthropic's shape (built from the OpenAI-dialect error both APIs share).
#[derive(Debug)]
pub struct AnthropicError(pub OpenAiError);

impl From<OpenAiError> for AnthropicError {
    fn from(e: OpenAiError) -> Self {
        Self(e)
    }
}

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        Self(OpenAiError::from(e))
    }
}

/// Anthropic's error `type` for a status.
fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let e = self.0;
        let message = match &e.param {
            Some(p) => format!("{}: {}", request::param_name(p), e.message),
            None => e.message,
        };
        let body =
            json!({ "type": "error", "error": { "type": kind(e.status), "message": message } });
        let mut response = (e.status, axum::Json(body)).into_response();
        if let Some(headers) = e.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

/// A JSON object body with Anthropic-shaped rejections.
pub struct MessagesJson(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for MessagesJson {
    type Rejection = AnthropicError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AnthropicError> {
        let super::openai::V1Json(body) =
            super::openai::V1Json::<Map<String, Value>>::from_request(req, state)
                .await
                .map_err(AnthropicError)?;
        Ok(Self(body))
    }
}

/// Identifies the caller on /v1/messages (Anthropic's error shape).
pub async fn require_caller(
    state: State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, AnthropicError> {
    super::auth::require_caller(state, request, next)
        .await
        .map_err(AnthropicError::from)
}

/// `POST /v1/messages`
#[utoipa::path(post, path = "/v1/messages", tag = "anthropic",
    request_body = crate::api::openapi::MessagesRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, description = "A message, or with `stream: true` Server-Sent Events of Anthropic's message events",
                content((crate::api::openapi::MessageBody = "application/json"), (crate::api::openapi::SseEvent = "text/event-stream"))),
              crate::api::openapi::AnthropicErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn messages(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    MessagesJson(body): MessagesJson,
) -> Result<Response, AnthropicError> {
    let chat = request::to_chat(body)?;
    let chat: ChatRequest = serde_json::from_value(chat).map_err(|e| {
        AnthropicError(OpenAiError::invalid(
            "request",
            format!("invalid request: {e}"),
        ))
    })?;
    let (input, _) = super::openai::into_input(&state, caller, &headers, chat)?;
    let stream = input.stream;
    let completions = &state.completions;
    let (submitted, rate) = completions
        .submit(input)
        .await
        .map_err(|e| AnthropicError(super::openai::submit_error(e)))?;
    let mut response = if stream {
        let events = stream::Events::new(submitted.request_id().to_owned());
        match super::stream::respond(completions.clone(), submitted, events).await {
            Ok(response) => response,
            // Failed before its first piece: the status and error a non-streamed call gets.
            Err(view) => {
                super::openai::outcome(&view)?;
                return Err(AnthropicError(OpenAiError::from(ApiError::internal(
                    anyhow::anyhow!("a failed request read as succeeded"),
                ))));
            }
        }
    } else {
        let view = super::openai::awaited(completions, submitted).await?;
        let headers = super::openai::outcome(&view)?;
        (headers, axum::Json(message(&view))).into_response()
    };
    if let Some(rate) = rate.as_ref() {
        response
            .headers_mut()
            .extend(super::auth::rate_headers(rate));
    }
    Ok(response)
}

/// Anthropic's SDKs read `request-id` (`message._request_id`, and in their errors): a message's
/// own id when the request was accepted, else the HTTP request's `x-request-id`.
pub async fn request_id_header(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http_id = request.headers().get(super::REQUEST_ID_HEADER).cloned();
    let mut response = next.run(request).await;
    let id = response
        .headers()
        .get("x-optimizer-request-id")
        .cloned()
        .or(http_id);
    if let Some(id) = id {
        response.headers_mut().entry("request-id").or_insert(id);
    }
    response
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages request (system, turns,
/// tool calls and results, tool definitions) by the router's estimate — ASCII bytes / 4 plus
/// 0.75 per other character, +4 per turn — not a provider's tokenizer. Validated like
/// `/v1/messages` (`max_tokens` is not needed here).
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "anthropic",
    request_body = crate::api::openapi::MessagesRequestBody,
    responses((status = 200, description = "The estimated input tokens", body = crate::api::openapi::TokenCount),
              crate::api::openapi::AnthropicErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn count_tokens(
    MessagesJson(mut body): MessagesJson,
) -> Result<Response, AnthropicError> {
    use crate::routing::analyzer::estimate_tokens;
    body.entry("max_tokens").or_insert(json!(1));
    body.remove("stream");
    let chat = request::to_chat(body)?;
    let mut tokens = 0u64;
    for m in chat["messages"].as_array().into_iter().flatten() {
        tokens += 4 + estimate_tokens(m["content"].as_str().unwrap_or_default());
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            tokens += estimate_tokens(&call["function"].to_string());
        }
    }
    if let Some(tools) = chat.get("tools") {
        tokens += estimate_tokens(&tools.to_string());
    }
    Ok(axum::Json(json!({ "input_tokens": tokens })).into_response())
}

/// Anthropic's `stop_reason` for our finish reason.
fn stop_reason(view: &CompletionView) -> &'static str {
    match view.finish_reason.as_deref() {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        Some("content_filter") => "refusal",
        _ if !view.tool_calls.is_empty() => "tool_use",
        _ => "end_turn",
    }
}

/// A tool call's arguments as the `input` object (arguments that are not a JSON object are
/// passed as `{"arguments": "<text>"}` rather than dropped).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}

/// Anthropic's `usage`: `input_tokens` counts only the input not read from or written to the
/// provider's prompt cache, as Anthropic counts it; those are `cache_read_input_tokens` and
/// `cache_creation_input_tokens`.
fn usage(view: &CompletionView) -> Value {
    let Some(t) = view.tokens.as_ref() else {
        return json!({ "input_tokens": 0, "output_tokens": 0 });
    };
    let (read, written) = (t.cached_input.unwrap_or(0), t.cache_write.unwrap_or(0));
    json!({ "input_tokens": (t.input - read - written).max(0), "output_tokens": t.output,
            "cache_read_input_tokens": read, "cache_creation_input_tokens": written })
}

/// The `message` object; `id` is our request id (rate it with /feedback).
fn message(view: &CompletionView) -> Value {
    let mut content = Vec::new();
    if let Some(text) = view.response.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({ "type": "text", "text": text }));
    }
    for c in &view.tool_calls {
        content.push(json!({ "type": "tool_use", "id": c.id, "name": c.name,
                             "input": tool_input(&c.arguments) }));
    }
    json!({
        "id": view.request_id,
        "type": "message",
        "role": "assistant",
        "model": view.model,
        "content": content,
        "stop_reason": stop_reason(view),
        "stop_sequence": null,
        "usage": usage(view),
    })
}
