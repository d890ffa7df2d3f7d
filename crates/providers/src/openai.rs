//! OpenAI-compatible chat completions: `POST {base}/chat/completions` with a bearer key.
//! Used for OpenRouter (attribution headers `HTTP-Referer`/`X-Title`, usage accounting so it
//! reports the request's cost) and for any local server (Ollama, vLLM, llama.cpp).

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::http::post_json;
use super::sse::{Deltas, for_each_event, garbled};
use super::{
    Completion, CompletionRequest, ErrorKind, Message, Provider, ProviderError, ProviderId, Role,
    ToolCall, ToolChoice,
};

/// OpenRouter's app attribution (both optional).
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    pub referer: Option<String>,
    pub title: Option<String>,
}

#[derive(Debug)]
pub struct OpenAiCompatible {
    id: ProviderId,
    http: reqwest::Client,
    url: String,
    api_key: Option<SecretString>,
    attribution: Attribution,
}

impl OpenAiCompatible {
    pub fn openrouter(
        http: reqwest::Client,
        base_url: &str,
        api_key: Option<SecretString>,
        attribution: Attribution,
    ) -> Self {
        Self {
            id: ProviderId::Openrouter,
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            attribution,
        }
    }

    pub fn generic(http: reqwest::Client, base_url: &str, api_key: Option<SecretString>) -> Self {
        Self {
            id: ProviderId::OpenaiCompat,
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            attribution: Attribution::default(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    /// OpenRouter: `{"include": true}` makes the answer carry `usage.cost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageRequest>,
}

#[derive(Serialize)]
struct UsageRequest {
    include: bool,
}

/// One turn in OpenAI's words: text, an assistant's tool calls, or a tool's result.
fn turn(m: &Message) -> serde_json::Value {
    use serde_json::json;
    match m.role {
        Role::User => json!({ "role": "user", "content": m.content }),
        Role::Assistant if m.tool_calls.is_empty() => {
            json!({ "role": "assistant", "content": m.content })
        }
        Role::Assistant => json!({
            "role": "assistant",
            "content": (!m.content.is_empty()).then_some(&m.content),
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id, "type": "function",
                "function": { "name": c.name, "arguments": c.arguments },
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => {
            json!({ "role": "tool", "tool_call_id": m.tool_call_id, "content": m.content })
        }
    }
}

/// `tool_choice` in OpenAI's words.
pub fn tool_choice(choice: &ToolChoice) -> serde_json::Value {
    match choice {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Function(name) => {
            serde_json::json!({ "type": "function", "function": { "name": name } })
        }
    }
}

/// The tool calls of a streamed answer, assembled from the chunks' `delta.tool_calls`
/// (the first piece of each call carries its id and name, later ones more of its arguments).
#[derive(Default)]
struct StreamedCalls(Vec<ToolCall>);

impl StreamedCalls {
    fn add(&mut self, pieces: &serde_json::Value) {
        for piece in pieces.as_array().into_iter().flatten() {
            let index = piece["index"].as_u64().unwrap_or(0) as usize;
            if index >= 128 {
                continue;
            }
            while self.0.len() <= index {
                self.0.push(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
            }
            let call = &mut self.0[index];
            if let Some(id) = piece["id"].as_str() {
                call.id = id.to_owned();
            }
            if let Some(name) = piece["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(args) = piece["function"]["arguments"].as_str() {
                call.arguments.push_str(args);
            }
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    cost: Option<f64>,
    /// `cached_tokens`: prompt tokens read from the provider's cache.
    #[serde(default)]
    prompt_tokens_details: Option<serde_json::Value>,
}

/// `usage.prompt_tokens_details.cached_tokens` (0 when absent).
fn cached_tokens(details: Option<&serde_json::Value>) -> u64 {
    details
        .and_then(|d| d["cached_tokens"].as_u64())
        .unwrap_or(0)
}

/// `{"error":{"message":"…","type":"…","code":…}}`
fn error_message(v: &serde_json::Value) -> Option<String> {
    let e = v.get("error")?;
    let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
    match e.get("type").and_then(|t| t.as_str()) {
        Some(kind) => Some(format!("{kind}: {message}")),
        None => Some(message.to_owned()),
    }
}

impl OpenAiCompatible {
    fn body<'a>(&self, request: &'a CompletionRequest) -> Body<'a> {
        let mut turns = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            turns.push(serde_json::json!({ "role": "system", "content": system }));
        }
        turns.extend(request.messages.iter().map(turn));
        Body {
            model: &request.model,
            messages: turns,
            tools: request
                .tools
                .iter()
                .map(|t| {
                    let mut function =
                        serde_json::json!({ "name": t.name, "parameters": t.parameters });
                    if let Some(d) = &t.description {
                        function["description"] = d.as_str().into();
                    }
                    serde_json::json!({ "type": "function", "function": function })
                })
                .collect(),
            tool_choice: request.tool_choice.as_ref().map(tool_choice),
            response_format: request.response_format.as_ref().map(|f| match f {
                crate::ResponseFormat::JsonObject => serde_json::json!({ "type": "json_object" }),
                crate::ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => serde_json::json!({
                    "type": "json_schema",
                    "json_schema": { "name": name, "schema": schema, "strict": strict },
                }),
            }),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: &request.stop,
            usage: (self.id == ProviderId::Openrouter).then_some(UsageRequest { include: true }),
        }
    }

    fn http_request(&self) -> reqwest::RequestBuilder {
        let mut http = self.http.post(&self.url);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key.expose_secret());
        }
        if let Some(referer) = &self.attribution.referer {
            http = http.header("HTTP-Referer", referer);
        }
        if let Some(title) = &self.attribution.title {
            http = http.header("X-Title", title);
        }
        http
    }

    /// OpenAI's SSE stream of `chat.completion.chunk`s, usage in the last (`include_usage`),
    /// ended by `[DONE]`.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &Deltas,
    ) -> Result<Completion, ProviderError> {
        let mut body = serde_json::to_value(self.body(request)).unwrap_or_default();
        body["stream"] = serde_json::Value::Bool(true);
        body["stream_options"] = serde_json::json!({ "include_usage": true });
        let id = self.id;
        let mut done = Completion::empty(&request.model);
        let mut calls = StreamedCalls::default();
        let mut ended = false;
        for_each_event(id, self.http_request(), &body, error_message, |e| {
            if e.data.trim() == "[DONE]" {
                ended = true;
                return Ok(());
            }
            let v: serde_json::Value =
                serde_json::from_str(&e.data).map_err(|_| garbled(id, "chunk"))?;
            if let Some(err) = v.get("error") {
                return Err(ProviderError {
                    provider: id,
                    kind: ErrorKind::Retryable,
                    status: None,
                    retry_after: None,
                    message: super::http::sanitize(&err.to_string()),
                });
            }
            if let Some(model) = v["model"].as_str() {
                done.model = model.to_owned();
            }
            if let Some(choice) = v["choices"].get(0) {
                if let Some(t) = choice["delta"]["content"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                {
                    done.text.push_str(t);
                    let _ = deltas.send(t.to_owned());
                }
                calls.add(&choice["delta"]["tool_calls"]);
                if let Some(r) = choice["finish_reason"].as_str() {
                    done.finish_reason = Some(r.to_owned());
                }
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                done.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                done.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
                done.cached_input_tokens = cached_tokens(u.get("prompt_tokens_details"));
                done.reported_cost_usd = u["cost"].as_f64().filter(|c| c.is_finite() && *c >= 0.0);
            }
            Ok(())
        })
        .await?;
        if !ended {
            return Err(super::sse::cut(id));
        }
        done.tool_calls = calls.0;
        Ok(done)
    }
}

impl Provider for OpenAiCompatible {
    fn id(&self) -> ProviderId {
        self.id
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let body = self.body(request);
        let http = self.http_request();
        let answer: Answer = post_json(self.id, http, &body, error_message).await?;
        let Some(choice) = answer.choices.into_iter().next() else {
            return Err(ProviderError {
                provider: self.id,
                kind: ErrorKind::Retryable,
                status: Some(200),
                retry_after: None,
                message: "no choices in the answer".into(),
            });
        };
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Err(ProviderError::refused(
                self.id,
                super::http::sanitize(&format!("the model refused: {refusal}")),
            ));
        }
        let usage = answer.usage.unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: None,
            prompt_tokens_details: None,
        });
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cached_input_tokens: cached_tokens(usage.prompt_tokens_details.as_ref()),
            cache_write_tokens: 0,
            reported_cost_usd: usage.cost.filter(|c| c.is_finite() && *c >= 0.0),
            model: answer.model.unwrap_or_else(|| request.model.clone()),
            tool_calls: choice
                .message
                .tool_calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
            finish_reason: choice.finish_reason,
        })
    }
}
