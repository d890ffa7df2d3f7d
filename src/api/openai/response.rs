//! The non-streamed answer: OpenAI's `chat.completion` object and our routing headers.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::OpenAiError;
use crate::completion::CompletionView;
use crate::types::{FailureCode, RequestStatus};

/// The answer to a non-streamed request: 200 with the `chat.completion`, 502 when every
/// candidate failed, 504 while it still runs; routing headers on each.
pub(super) fn respond(view: CompletionView) -> Result<Response, OpenAiError> {
    let headers = outcome(&view)?;
    Ok((headers, axum::Json(chat_completion(&view))).into_response())
}

/// The routing headers of a succeeded request; for one that failed (502) or still runs (504),
/// the error, carrying those headers too.
pub fn outcome(view: &CompletionView) -> Result<HeaderMap, OpenAiError> {
    let headers = headers(view);
    let (status, message, code) = match view.status {
        RequestStatus::Succeeded => return Ok(headers),
        RequestStatus::Failed => (
            view.failure_status(),
            view.failure_message(),
            view.error.as_ref().map_or("upstream_error", |e| {
                if e.code == FailureCode::ProviderRejected.as_str() {
                    "provider_rejected"
                } else {
                    "upstream_error"
                }
            }),
        ),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "still running after COMPLETE_TIMEOUT_SECS; poll /requests/{}",
                view.request_id
            ),
            "timeout",
        ),
    };
    Err(OpenAiError {
        status,
        kind: if status.is_client_error() {
            "invalid_request_error"
        } else {
            "api_error"
        },
        message,
        param: None,
        code: Some(code),
        headers: Some(Box::new(headers)),
    })
}

/// Routing and cost travel in headers, never in fields an SDK would choke on.
fn headers(view: &CompletionView) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("x-optimizer-request-id", view.request_id.clone());
    if let Some(p) = &view.provider {
        put("x-optimizer-provider", p.clone());
    }
    if let Some(m) = &view.model {
        put("x-optimizer-model", m.clone());
    }
    if let Some(c) = view.cost_usd {
        put("x-optimizer-cost-usd", c.to_string());
    }
    if let Some(s) = view.savings_usd {
        put("x-optimizer-savings-usd", s.to_string());
    }
    if let Some(p) = &view.pattern {
        put("x-optimizer-pattern", p.clone());
    }
    h
}

/// The assistant's message: its text (null when it only called tools) and its tool calls.
fn message(view: &CompletionView) -> Value {
    let mut message = json!({ "role": "assistant", "content": view.response, "refusal": null });
    if !view.tool_calls.is_empty() {
        if view.response.as_deref().is_none_or(str::is_empty) {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = tool_calls(&view.tool_calls, false);
    }
    message
}

/// Tool calls in OpenAI's form; in a stream's delta each carries its `index`.
pub(super) fn tool_calls(calls: &[crate::providers::ToolCall], indexed: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut call = json!({
                "id": c.id,
                "type": "function",
                "function": { "name": c.name, "arguments": c.arguments },
            });
            if indexed {
                call["index"] = json!(i);
            }
            call
        })
        .collect()
}

/// OpenAI's `usage`; `prompt_tokens_details.cached_tokens` when the provider read some of the
/// prompt from its cache.
pub(super) fn usage(view: &CompletionView) -> Value {
    let (input, output) = view.tokens.as_ref().map_or((0, 0), |t| (t.input, t.output));
    let mut usage = json!({ "prompt_tokens": input, "completion_tokens": output,
                            "total_tokens": input + output });
    if let Some(cached) = view.tokens.as_ref().and_then(|t| t.cached_input) {
        usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    usage
}

/// The OpenAI `chat.completion` object; `id` is our request id (rate it with /feedback).
fn chat_completion(view: &CompletionView) -> Value {
    json!({
        "id": view.request_id,
        "object": "chat.completion",
        "created": view.created_at.timestamp(),
        "model": view.model,
        "choices": [{
            "index": 0,
            "message": message(view),
            "finish_reason": view.finish_reason.as_deref().unwrap_or("stop"),
            "logprobs": null,
        }],
        "usage": usage(view),
    })
}
