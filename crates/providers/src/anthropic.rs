//! Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//! `system` apart from `messages`; usage `input_tokens`/`output_tokens`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::http::{post_json, sanitize};
use super::sse::{Deltas, for_each_event, garbled};
use super::{Completion, CompletionRequest, ErrorKind, Provider, ProviderError, ProviderId, Role};

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
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: &'a str,
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
    Body {
        model: &request.model,
        max_tokens: request.max_tokens,
        system: request.system.as_deref(),
        messages: request
            .messages
            .iter()
            .map(|m| Turn {
                role: match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: &m.content,
            })
            .collect(),
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
        for_each_event(id, self.http_request(), &body, error_message, |e| {
            let v: serde_json::Value =
                serde_json::from_str(&e.data).map_err(|_| garbled(id, &e.event))?;
            match v["type"].as_str().unwrap_or(e.event.as_str()) {
                "message_start" => {
                    let m = &v["message"];
                    done.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0)
                        + m["usage"]["cache_read_input_tokens"].as_u64().unwrap_or(0)
                        + m["usage"]["cache_creation_input_tokens"]
                            .as_u64()
                            .unwrap_or(0);
                    if let Some(model) = m["model"].as_str() {
                        done.model = model.to_owned();
                    }
                }
                "content_block_delta" => {
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
            // Cached prompt tokens are still prompt tokens (billed at other rates; we price
            // them at the input rate, an upper bound).
            input_tokens: u.input_tokens
                + u.cache_creation_input_tokens.unwrap_or(0)
                + u.cache_read_input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens,
            reported_cost_usd: None,
            model: sanitize(&answer.model),
            finish_reason: answer.stop_reason,
        })
    }
}
