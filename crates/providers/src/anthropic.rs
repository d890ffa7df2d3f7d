//! Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//! `system` apart from `messages`; usage `input_tokens`/`output_tokens`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::http::{post_json, sanitize};
use super::sse::{Deltas, for_each_event, garbled};
use super::{
    Completion, CompletionRequest, ErrorKind, Message, Provider, ProviderError, ProviderId, Role,
    ToolCall, ToolChoice,
};

/// The API version we speak.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    http: reqwest::Client,
    url: String,
    api_key: Option<SecretString>,
}

impl Anthropic {
    pub fn new(http: reqwest::Client, base_url: &str, api_key: Option<SecretString>) -> Self {
        Self {
            http,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            api_key,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

/// The conversation in Anthropic's words: text turns as strings; an assistant's tool calls as
/// `tool_use` blocks (arguments as JSON objects); tool results as `tool_result` blocks of one
/// user turn (consecutive results together).
fn turns(messages: &[Message]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(messages.len());
    let mut results: Vec<serde_json::Value> = Vec::new();
    for m in messages {
        if m.role == Role::Tool {
            results.push(json!({ "type": "tool_result",
                                 "tool_use_id": m.tool_call_id, "content": m.content }));
            continue;
        }
        if !results.is_empty() {
            out.push(json!({ "role": "user", "content": std::mem::take(&mut results) }));
        }
        out.push(match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": m.content }));
                }
                for c in &m.tool_calls {
                    let input: serde_json::Value = serde_json::from_str(&c.arguments)
                        .ok()
                        .filter(serde_json::Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({ "type": "tool_use", "id": c.id, "name": c.name,
                                        "input": input }));
                }
                json!({ "role": "assistant", "content": blocks })
            }
            Role::Assistant => json!({ "role": "assistant", "content": m.content }),
            _ => json!({ "role": "user", "content": m.content }),
        });
    }
    if !results.is_empty() {
        out.push(json!({ "role": "user", "content": results }));
    }
    out
}

fn tool_choice(choice: &ToolChoice) -> serde_json::Value {
    use serde_json::json;
    match choice {
        ToolChoice::Auto => json!({ "type": "auto" }),
        ToolChoice::None => json!({ "type": "none" }),
        ToolChoice::Required => json!({ "type": "any" }),
        ToolChoice::Function(name) => json!({ "type": "tool", "name": name }),
    }
}

/// The `tool_use` blocks of a streamed answer: started by `content_block_start`, their input
/// sent as `input_json_delta` pieces.
#[derive(Default)]
struct StreamedCalls(Vec<(u64, ToolCall)>);

impl StreamedCalls {
    fn start(&mut self, index: u64, block: &serde_json::Value) {
        if block["type"] == "tool_use" {
            self.0.push((
                index,
                ToolCall {
                    id: block["id"].as_str().unwrap_or_default().to_owned(),
                    name: block["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: String::new(),
                },
            ));
        }
    }

    fn input(&mut self, index: u64, piece: &str) {
        if let Some((_, call)) = self.0.iter_mut().find(|(i, _)| *i == index) {
            call.arguments.push_str(piece);
        }
    }

    fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_iter()
            .map(|(_, mut c)| {
                if c.arguments.trim().is_empty() {
                    c.arguments = "{}".into();
                }
                c
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    content: Vec<Block>,
    model: String,
    stop_reason: Option<String>,
    usage: Usage,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// `{"type":"error","error":{"type":"…","message":"…"}}`
fn error_message(v: &serde_json::Value) -> Option<String> {
    let e = v.get("error")?;
    let kind = e.get("type").and_then(|t| t.as_str()).unwrap_or("error");
    let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
    Some(format!("{kind}: {message}"))
}

fn body(request: &CompletionRequest) -> Body<'_> {
    let mut body = plain_body(request);
    // JSON output, the documented way: one tool whose input schema is the answer's, forced.
    if let Some(format) = &request.response_format {
        body.tools.push(serde_json::json!({
            "name": crate::JSON_TOOL,
            "description": "Give the answer as this tool's input.",
            "input_schema": format.schema(),
        }));
        body.tool_choice = Some(serde_json::json!({ "type": "tool", "name": crate::JSON_TOOL }));
    }
    body
}

fn plain_body(request: &CompletionRequest) -> Body<'_> {
    Body {
        model: &request.model,
        max_tokens: request.max_tokens,
        system: request.system.as_deref(),
        messages: turns(&request.messages),
        tools: request
            .tools
            .iter()
            .map(|t| {
                let mut tool = serde_json::json!({ "name": t.name, "input_schema": t.parameters });
                if let Some(d) = &t.description {
                    tool["description"] = d.as_str().into();
                }
                tool
            })
            .collect(),
        tool_choice: request.tool_choice.as_ref().map(tool_choice),
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences: &request.stop,
    }
}

impl Anthropic {
    fn http_request(&self) -> reqwest::RequestBuilder {
        let mut http = self
            .http
            .post(&self.url)
            .header("anthropic-version", API_VERSION);
        if let Some(key) = &self.api_key {
            http = http.header("x-api-key", key.expose_secret());
        }
        http
    }

    /// The Messages API's SSE stream: `message_start` (input tokens, model),
    /// `content_block_delta` (text), `message_delta` (output tokens, stop reason), `error`.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &Deltas,
    ) -> Result<Completion, ProviderError> {
        let mut body = serde_json::to_value(body(request)).unwrap_or_default();
        body["stream"] = serde_json::Value::Bool(true);
        let id = self.id();
        let mut done = Completion::empty(&request.model);
        let mut calls = StreamedCalls::default();
        let mut ended = false;
        for_each_event(id, self.http_request(), &body, error_message, |e| {
            let v: serde_json::Value =
                serde_json::from_str(&e.data).map_err(|_| garbled(id, &e.event))?;
            match v["type"].as_str().unwrap_or(e.event.as_str()) {
                "message_stop" => ended = true,
                "message_start" => {
                    let m = &v["message"];
                    let u = &m["usage"];
                    done.cached_input_tokens = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                    done.cache_write_tokens =
                        u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                    done.input_tokens = u["input_tokens"].as_u64().unwrap_or(0)
                        + done.cached_input_tokens
                        + done.cache_write_tokens;
                    if let Some(model) = m["model"].as_str() {
                        done.model = model.to_owned();
                    }
                }
                "content_block_start" => {
                    calls.start(v["index"].as_u64().unwrap_or(0), &v["content_block"]);
                }
                "content_block_delta" => {
                    if let Some(piece) = v["delta"]["partial_json"].as_str() {
                        calls.input(v["index"].as_u64().unwrap_or(0), piece);
                    }
                    if let Some(t) = v["delta"]["text"].as_str() {
                        done.text.push_str(t);
                        let _ = deltas.send(t.to_owned());
                    }
                }
                "message_delta" => {
                    done.output_tokens = v["usage"]["output_tokens"]
                        .as_u64()
                        .unwrap_or(done.output_tokens);
                    if let Some(r) = v["delta"]["stop_reason"].as_str() {
                        done.finish_reason = Some(r.to_owned());
                    }
                }
                "error" => {
                    let kind = v["error"]["type"].as_str().unwrap_or("error");
                    return Err(ProviderError {
                        provider: id,
                        kind: if kind == "overloaded_error" || kind == "api_error" {
                            ErrorKind::Retryable
                        } else {
                            ErrorKind::Permanent
                        },
                        status: None,
                        retry_after: None,
                        message: sanitize(&format!(
                            "{kind}: {}",
                            v["error"]["message"].as_str().unwrap_or("")
                        )),
                    });
                }
                _ => {}
            }
            Ok(())
        })
        .await?;
        if !ended {
            return Err(super::sse::cut(id));
        }
        done.tool_calls = calls.finish();
        if done.finish_reason.as_deref() == Some("refusal") {
            return Err(ProviderError::refused(
                id,
                "the model refused to answer (stop_reason: refusal)",
            ));
        }
        Ok(done)
    }
}

impl Provider for Anthropic {
    fn id(&self) -> ProviderId {
        ProviderId::Anthropic
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let body = body(request);
        let answer: Answer =
            post_json(self.id(), self.http_request(), &body, error_message).await?;
        if answer.stop_reason.as_deref() == Some("refusal") {
            return Err(ProviderError::refused(
                self.id(),
                "the model refused to answer (stop_reason: refusal)",
            ));
        }
        let text: String = answer
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .map(|b| b.text.as_str())
            .collect();
        let u = &answer.usage;
        Ok(Completion {
            text,
            // Cached prompt tokens are still prompt tokens, billed at the cache rates.
            input_tokens: u.input_tokens
                + u.cache_creation_input_tokens.unwrap_or(0)
                + u.cache_read_input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            reported_cost_usd: None,
            model: sanitize(&answer.model),
            tool_calls: answer
                .content
                .iter()
                .filter(|b| b.kind == "tool_use")
                .map(|b| ToolCall {
                    id: b.id.clone(),
                    name: b.name.clone(),
                    arguments: b
                        .input
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), ToString::to_string),
                })
                .collect(),
            finish_reason: answer.stop_reason,
        })
    }
}
