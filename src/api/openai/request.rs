//! The `chat.completions` request as OpenAI SDKs send it, and its mapping onto a completion.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::OpenAiError;
use crate::api::AppState;
use crate::completion::CompleteInput;
use crate::providers::{Message, ResponseFormat, Role, Tool, ToolCall, ToolChoice};
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
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
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
        "functions" | "function_call" => {
            format!("{field}: the legacy function calling API is not supported; send tools")
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
    /// An assistant turn's tool calls.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    /// A tool turn: the call it answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// At most this many tools per request (OpenAI's limit).
const MAX_TOOLS: usize = 128;

/// A function name as OpenAI accepts it: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `tools`: `[{type: "function", function: {name, description?, parameters?}}]`.
fn tools_of(tools: Option<Vec<Value>>) -> Result<Vec<Tool>, OpenAiError> {
    let tools = tools.unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(OpenAiError::invalid(
            "tools",
            format!("at most {MAX_TOOLS} tools"),
        ));
    }
    let mut out: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        if t["type"] != "function" {
            return Err(OpenAiError::invalid(
                format!("tools[{i}].type"),
                "only tools of type \"function\" are supported",
            ));
        }
        let f = &t["function"];
        let name = f["name"].as_str().unwrap_or_default();
        if !valid_name(name) {
            return Err(OpenAiError::invalid(
                format!("tools[{i}].function.name"),
                "must be 1 to 64 letters, digits, underscores or dashes",
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(OpenAiError::invalid(
                format!("tools[{i}].function.name"),
                format!("tool {name:?} is defined twice"),
            ));
        }
        let parameters = match &f["parameters"] {
            Value::Null => serde_json::json!({ "type": "object", "properties": {} }),
            p @ Value::Object(_) => p.clone(),
            _ => {
                return Err(OpenAiError::invalid(
                    format!("tools[{i}].function.parameters"),
                    "must be a JSON Schema object",
                ));
            }
        };
        let description = match &f["description"] {
            Value::Null => None,
            Value::String(d) => Some(d.clone()),
            _ => {
                return Err(OpenAiError::invalid(
                    format!("tools[{i}].function.description"),
                    "must be a string",
                ));
            }
        };
        out.push(Tool {
            name: name.to_owned(),
            description,
            parameters,
        });
    }
    Ok(out)
}

/// `tool_choice`: `auto`, `none`, `required` or `{type: "function", function: {name}}` naming
/// one of the tools.
fn tool_choice_of(
    choice: Option<Value>,
    tools: &[Tool],
) -> Result<Option<ToolChoice>, OpenAiError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(c) => c,
    };
    let parsed = match choice.as_str() {
        Some("auto") => ToolChoice::Auto,
        Some("none") => ToolChoice::None,
        Some("required") => ToolChoice::Required,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "tool_choice",
                format!("{other:?}: expected auto, none, required or a named function"),
            ));
        }
        None => match choice["function"]["name"].as_str() {
            Some(name) if choice["type"] == "function" => {
                if !tools.iter().any(|t| t.name == name) {
                    return Err(OpenAiError::invalid(
                        "tool_choice",
                        format!("names {name:?}, which is not one of the tools"),
                    ));
                }
                ToolChoice::Function(name.to_owned())
            }
            _ => {
                return Err(OpenAiError::invalid(
                    "tool_choice",
                    "expected auto, none, required or {\"type\": \"function\", \"function\": \
                     {\"name\": ...}}",
                ));
            }
        },
    };
    if tools.is_empty() && parsed != ToolChoice::None {
        return Err(OpenAiError::invalid(
            "tool_choice",
            "only allowed when tools are specified",
        ));
    }
    Ok(Some(parsed))
}

/// `response_format`: `text` (None), `json_object`, or `json_schema` with `json_schema.name`
/// and `json_schema.schema`.
fn response_format_of(format: Option<Value>) -> Result<Option<ResponseFormat>, OpenAiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = &format["json_schema"];
            let name = spec["name"]
                .as_str()
                .filter(|n| valid_name(n))
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        "response_format.json_schema.name",
                        "must be 1 to 64 letters, digits, underscores or dashes",
                    )
                })?;
            let schema = match &spec["schema"] {
                Value::Null => serde_json::json!({ "type": "object" }),
                s @ Value::Object(_) => s.clone(),
                _ => {
                    return Err(OpenAiError::invalid(
                        "response_format.json_schema.schema",
                        "must be a JSON Schema object",
                    ));
                }
            };
            Ok(Some(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                schema,
                strict: spec["strict"].as_bool().unwrap_or(false),
            }))
        }
        _ => Err(OpenAiError::invalid(
            "response_format",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// An assistant turn's `tool_calls`: `[{id, type: "function", function: {name, arguments}}]`.
fn calls_of(i: usize, calls: Option<Vec<Value>>) -> Result<Vec<ToolCall>, OpenAiError> {
    calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, c)| {
            let param = format!("messages[{i}].tool_calls[{j}]");
            let id = c["id"].as_str().filter(|id| !id.is_empty());
            let name = c["function"]["name"].as_str().filter(|n| valid_name(n));
            match (id, name, c["function"]["arguments"].as_str()) {
                (Some(id), Some(name), Some(arguments)) if c["type"] == "function" => {
                    Ok(ToolCall {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        arguments: arguments.to_owned(),
                    })
                }
                _ => Err(OpenAiError::invalid(
                    param,
                    "expected {\"id\", \"type\": \"function\", \"function\": {\"name\", \
                     \"arguments\"}}",
                )),
            }
        })
        .collect()
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

/// Models that can take tools: those of `allowed` (all when None) whose catalog capabilities
/// include `tools`. A pinned model without them, or no such model, is a 400 naming `tools`.
fn tool_capable(
    state: &AppState,
    pinned: Option<usize>,
    allowed: Option<Vec<usize>>,
) -> Result<Option<Vec<usize>>, OpenAiError> {
    let catalog = state.engine.catalog();
    let capable = |i: &usize| {
        catalog
            .models()
            .get(*i)
            .is_some_and(|m| m.capabilities.iter().any(|c| c == "tools"))
    };
    if let Some(i) = pinned {
        if !capable(&i) {
            return Err(OpenAiError::invalid(
                "tools",
                format!(
                    "model {:?} cannot call tools (its catalog capabilities lack \"tools\")",
                    catalog.models()[i].model
                ),
            ));
        }
        return Ok(allowed);
    }
    let models: Vec<usize> = match allowed {
        Some(a) => a.into_iter().filter(capable).collect(),
        None => (0..catalog.models().len()).filter(capable).collect(),
    };
    if models.is_empty() {
        return Err(OpenAiError::invalid(
            "tools",
            "no model this request may use can call tools",
        ));
    }
    Ok(Some(models))
}

/// Maps and validates the request onto a completion: every refusal names its parameter. Also
/// returns whether usage was asked for in the stream (`stream_options.include_usage`).
pub fn into_input(
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
    let tools = tools_of(body.tools)?;
    let tool_choice = tool_choice_of(body.tool_choice, &tools)?;
    let response_format = response_format_of(body.response_format)?;
    if response_format.is_some() && !tools.is_empty() {
        // Anthropic answers in JSON by a forced tool call: it cannot also offer the caller's.
        return Err(OpenAiError::invalid(
            "response_format",
            "response_format json_object/json_schema cannot be combined with tools here",
        ));
    }
    let mut system = Vec::new();
    let mut turns: Vec<Message> = Vec::new();
    let mut call_ids = std::collections::HashSet::new();
    for (i, m) in body.messages.into_iter().enumerate() {
        let text = text_of(m.content)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(Message::text(Role::User, text)),
            "assistant" => {
                let calls = calls_of(i, m.tool_calls)?;
                call_ids.extend(calls.iter().map(|c| c.id.clone()));
                turns.push(Message {
                    tool_calls: calls,
                    ..Message::text(Role::Assistant, text)
                });
            }
            "tool" => {
                let Some(id) = m.tool_call_id.filter(|id| call_ids.contains(id)) else {
                    return Err(OpenAiError::invalid(
                        format!("messages[{i}].tool_call_id"),
                        "a tool message must answer a tool call of an earlier assistant message",
                    ));
                };
                turns.push(Message {
                    tool_call_id: Some(id),
                    ..Message::text(Role::Tool, text)
                });
            }
            other => {
                return Err(OpenAiError::invalid(
                    "messages",
                    format!("messages with role {other:?} are not supported"),
                ));
            }
        }
    }
    // The last user turn is what is analyzed and routed; what follows it must be the assistant's
    // tool calls and their results.
    let Some(at) = turns.iter().rposition(|m| m.role == Role::User) else {
        return Err(OpenAiError::invalid(
            "messages",
            "must contain a user message",
        ));
    };
    let tail = turns.split_off(at + 1);
    if tail.last().is_some_and(|m| m.role != Role::Tool) {
        return Err(OpenAiError::invalid(
            "messages",
            "the last message must be the user's or a tool result",
        ));
    }
    let Some(last) = turns.pop() else {
        return Err(OpenAiError::invalid(
            "messages",
            "must contain a user message",
        ));
    };
    let uses_tools = !tools.is_empty() || tail.iter().chain(&turns).any(|m| m.role == Role::Tool);
    let allowed_models = if uses_tools {
        tool_capable(state, pinned, allowed_models)?
    } else {
        allowed_models
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
        tail,
        tools,
        tool_choice,
        response_format,
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
        shadow: crate::api::complete::shadow_allowed(headers),
        ..Default::default()
    };
    Ok((input, include_usage))
}
