//! The `chat.completions` request as OpenAI SDKs send it, and its mapping onto a completion.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::OpenAiError;
use crate::api::AppState;
use crate::completion::CompleteInput;
use crate::providers::{Message, Role};
use crate::routing::Strategy;
use crate::tenants::Caller;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    user: Option<String>,
    /// Every other field, checked against [`IGNORED_FIELDS`] and [`refused`].
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// Fields OpenAI SDKs send that cannot change the answer here: accepted and ignored (the README
/// lists them). `seed` is best effort at OpenAI itself and cannot be passed to every provider.
pub const IGNORED_FIELDS: &[&str] = &[
    "metadata",
    "store",
    "seed",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
];

/// Why a field that is not accepted is refused, or None when its value is neutral (`null`,
/// `false`, 0, empty, text-only) and changes nothing. Fields that would change the answer and that
/// we cannot honour are refused rather than silently dropped.
fn refused(field: &str, value: &Value) -> Option<String> {
    let neutral = match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(_) => false,
    };
    if neutral {
        return None;
    }
    Some(match field {
        "tools" | "tool_choice" | "functions" | "function_call" => {
            if field == "tool_choice" && value == "none" {
                return None;
            }
            format!("{field}: tool calling is not supported by this gateway yet")
        }
        "response_format" => {
            if value["type"] == "text" {
                return None;
            }
            "response_format: structured output (json_object, json_schema) is not supported by              this gateway yet"
                .to_owned()
        }
        "modalities" => {
            if value
                .as_array()
                .is_some_and(|m| m.iter().all(|x| x == "text"))
            {
                return None;
            }
            "modalities: only text output is supported".to_owned()
        }
        "logprobs" | "top_logprobs" => format!("{field}: log probabilities are not supported"),
        "logit_bias" | "frequency_penalty" | "presence_penalty" => {
            format!("{field}: not supported across providers; leave it out or set it to 0")
        }
        "audio" | "prediction" | "web_search_options" | "reasoning_effort" | "verbosity" => {
            format!("{field}: not supported by this gateway")
        }
        other => format!("unrecognized request argument supplied: {other}"),
    })
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

fn text_of(content: Option<Content>) -> Result<String, OpenAiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => parts
            .into_iter()
            .map(|p| match (p.kind.as_str(), p.text) {
                ("text", Some(t)) => Ok(t),
                (other, _) => Err(OpenAiError::invalid(
                    "messages",
                    format!("content parts of type {other:?} are not supported; send text"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.join("")),
    }
}

/// `model`: `auto`, `auto:cost|balanced|quality`, or a catalog model (`id` or `provider/id`).
fn route_of(
    state: &AppState,
    caller: &Caller,
    model: &str,
) -> Result<(Strategy, Option<usize>), OpenAiError> {
    if model == "auto" {
        let strategy = crate::api::auth::strategy(caller, None).map_err(OpenAiError::from)?;
        return Ok((strategy, None));
    }
    if let Some(name) = model.strip_prefix("auto:") {
        return Strategy::parse(name).map(|s| (s, None)).ok_or_else(|| {
            OpenAiError::invalid("model", format!("unknown strategy {name:?} in {model:?}"))
        });
    }
    state
        .engine
        .catalog()
        .find(None, model)
        .map(|i| (Strategy::default(), Some(i)))
        .ok_or_else(|| OpenAiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: format!("The model {model:?} does not exist; see GET /v1/models"),
            param: Some("model".into()),
            code: Some("model_not_found"),
            headers: None,
        })
}

/// Maps and validates the request onto a completion: every refusal names its parameter. Also
/// returns whether usage was asked for in the stream (`stream_options.include_usage`).
pub(super) fn into_input(
    state: &AppState,
    caller: Caller,
    headers: &axum::http::HeaderMap,
    body: ChatRequest,
) -> Result<(CompleteInput, bool), OpenAiError> {
    let stream = body.stream == Some(true);
    let include_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o["include_usage"].as_bool())
        .unwrap_or(false);
    for (field, value) in &body.other {
        if IGNORED_FIELDS.contains(&field.as_str()) {
            continue;
        }
        if let Some(message) = refused(field, value) {
            return Err(OpenAiError::invalid(field.clone(), message));
        }
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("n", "only n = 1 is supported"));
    }
    if body.messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "must contain at least one message",
        ));
    }
    let (strategy, pinned) = route_of(state, &caller, &body.model)?;
    let (allowed_providers, allowed_models) =
        crate::api::auth::restrict(state, &caller, None, pinned).map_err(OpenAiError::from)?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for m in body.messages {
        let text = text_of(m.content)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(Message {
                role: Role::User,
                content: text,
            }),
            "assistant" => turns.push(Message {
                role: Role::Assistant,
                content: text,
            }),
            other => {
                return Err(OpenAiError::invalid(
                    "messages",
                    format!("messages with role {other:?} are not supported"),
                ));
            }
        }
    }
    let Some(last) = turns.pop().filter(|m| m.role == Role::User) else {
        return Err(OpenAiError::invalid(
            "messages",
            "the last message must be the user's",
        ));
    };
    let prompt = crate::api::validate::prompt(last.content).map_err(OpenAiError::from)?;
    let temperature = crate::api::validate::temperature(body.temperature)
        .map_err(|e| OpenAiError::invalid("temperature", e.message().to_owned()))?;
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    if body
        .top_p
        .is_some_and(|p| !(p.is_finite() && p > 0.0 && p <= 1.0))
    {
        return Err(OpenAiError::invalid("top_p", "must be in (0, 1]"));
    }
    let stop = match body.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 {
        return Err(OpenAiError::invalid("stop", "at most 4 stop sequences"));
    }
    if max_tokens == Some(0) {
        return Err(OpenAiError::invalid("max_tokens", "must be at least 1"));
    }
    // `user` is the end user within the key (per-user budgets, ratings).
    let user_id = body.user.filter(|u| !u.trim().is_empty());
    let input = CompleteInput {
        prompt,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        history: turns,
        pinned,
        strategy,
        max_tokens,
        temperature,
        top_p: body.top_p,
        stop,
        user_id: crate::api::validate::short_text("user", user_id).map_err(OpenAiError::from)?,
        idempotency_key: crate::api::complete::idempotency_key(headers)
            .map_err(OpenAiError::from)?,
        stream,
        allowed_providers,
        allowed_models,
        caller,
        ..Default::default()
    };
    Ok((input, include_usage))
}
