//! Google Gemini: `POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`;
//! `contents` of `parts`, roles `user`/`model`, `systemInstruction`, `generationConfig`;
//! usage from `usageMetadata` (thinking tokens are billed as output).

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::http::post_json;
use super::sse::{Deltas, for_each_event, garbled};
use super::{
    Completion, CompletionRequest, ErrorKind, Message, Provider, ProviderError, ProviderId, Role,
    ToolCall, ToolChoice,
};

#[derive(Debug)]
pub struct Gemini {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<SecretString>,
}

impl Gemini {
    pub fn new(http: reqwest::Client, base_url: &str, api_key: Option<SecretString>) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    contents: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    generation_config: GenerationConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<serde_json::Value>,
}

/// The conversation in Gemini's words: roles `user`/`model`; an assistant's tool calls as
/// `functionCall` parts; tool results as `functionResponse` parts of one user turn (consecutive
/// results together), named after the call they answer.
fn contents(messages: &[Message]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let name_of = |id: &Option<String>| {
        messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| Some(&c.id) == id.as_ref())
            .map(|c| c.name.clone())
            .unwrap_or_default()
    };
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(messages.len());
    let mut results: Vec<serde_json::Value> = Vec::new();
    for m in messages {
        if m.role == Role::Tool {
            let response: serde_json::Value = serde_json::from_str(&m.content)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| json!({ "content": m.content }));
            results.push(json!({ "functionResponse": {
                "name": name_of(&m.tool_call_id), "response": response } }));
            continue;
        }
        if !results.is_empty() {
            out.push(json!({ "role": "user", "parts": std::mem::take(&mut results) }));
        }
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let mut parts = Vec::new();
        if !m.content.is_empty() || m.tool_calls.is_empty() {
            parts.push(json!({ "text": m.content }));
        }
        for c in &m.tool_calls {
            let args: serde_json::Value = serde_json::from_str(&c.arguments)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| json!({}));
            parts.push(json!({ "functionCall": { "name": c.name, "args": args } }));
        }
        out.push(json!({ "role": role, "parts": parts }));
    }
    if !results.is_empty() {
        out.push(json!({ "role": "user", "parts": results }));
    }
    out
}

/// `toolConfig.functionCallingConfig`.
fn tool_config(choice: &ToolChoice) -> serde_json::Value {
    use serde_json::json;
    let config = match choice {
        ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ToolChoice::None => json!({ "mode": "NONE" }),
        ToolChoice::Required => json!({ "mode": "ANY" }),
        ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
    };
    json!({ "functionCallingConfig": config })
}

/// The `functionCall` parts of an answer (Gemini gives no ids: `call_<n>` in order).
fn calls(parts: &[AnswerPart], first: usize) -> Vec<ToolCall> {
    parts
        .iter()
        .filter_map(|p| p.function_call.as_ref())
        .enumerate()
        .map(|(i, f)| ToolCall {
            id: f["id"]
                .as_str()
                .map_or_else(|| format!("call_{}", first + i), str::to_owned),
            name: f["name"].as_str().unwrap_or_default().to_owned(),
            arguments: f
                .get("args")
                .map_or_else(|| "{}".to_owned(), ToString::to_string),
        })
        .collect()
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    max_output_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    /// `application/json` for JSON output.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<AnswerContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerContent {
    #[serde(default)]
    parts: Vec<AnswerPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    /// Of `prompt_token_count`, those read from the context cache.
    #[serde(default)]
    cached_content_token_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}}`
fn error_message(v: &serde_json::Value) -> Option<String> {
    let e = v.get("error")?;
    let status = e.get("status").and_then(|s| s.as_str()).unwrap_or("error");
    let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
    Some(format!("{status}: {message}"))
}

fn body(request: &CompletionRequest) -> Body<'_> {
    Body {
        contents: contents(&request.messages),
        tools: (!request.tools.is_empty()).then(|| {
            let declarations: Vec<serde_json::Value> = request
                .tools
                .iter()
                .map(|t| {
                    let mut f = serde_json::json!({ "name": t.name,
                                                    "parametersJsonSchema": t.parameters });
                    if let Some(d) = &t.description {
                        f["description"] = d.as_str().into();
                    }
                    f
                })
                .collect();
            serde_json::json!([{ "functionDeclarations": declarations }])
        }),
        tool_config: request.tool_choice.as_ref().map(tool_config),
        system_instruction: request.system.as_deref().map(|s| SystemInstruction {
            parts: vec![Part { text: s }],
        }),
        generation_config: GenerationConfig {
            max_output_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop_sequences: request.stop.clone(),
            response_mime_type: request.response_format.as_ref().map(|_| "application/json"),
            response_json_schema: match &request.response_format {
                Some(crate::ResponseFormat::JsonSchema { schema, .. }) => Some(schema.clone()),
                _ => None,
            },
        },
    }
}

impl Gemini {
    fn http_request(&self, request: &CompletionRequest, method: &str) -> reqwest::RequestBuilder {
        let query = if method == "streamGenerateContent" {
            "?alt=sse"
        } else {
            ""
        };
        let url = format!(
            "{}/v1beta/models/{}:{method}{query}",
            self.base_url, request.model
        );
        let mut http = self.http.post(url);
        if let Some(key) = &self.api_key {
            http = http.header("x-goog-api-key", key.expose_secret());
        }
        http
    }

    /// `streamGenerateContent?alt=sse`: each event is a partial `GenerateContentResponse`;
    /// usage arrives with the last ones.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &Deltas,
    ) -> Result<Completion, ProviderError> {
        let body = serde_json::to_value(body(request)).unwrap_or_default();
        let id = self.id();
        let mut done = Completion::empty(&request.model);
        let http = self.http_request(request, "streamGenerateContent");
        // Gemini's stream has no end event: its last chunk carries the finish reason.
        for_each_event(id, http, &body, error_message, |e| {
            let chunk: Answer = serde_json::from_str(&e.data).map_err(|_| garbled(id, "chunk"))?;
            if let Some(reason) = chunk.prompt_feedback.and_then(|f| f.block_reason) {
                return Err(ProviderError::refused(
                    id,
                    format!("prompt blocked ({reason})"),
                ));
            }
            if let Some(u) = chunk.usage_metadata {
                done.input_tokens = u.prompt_token_count;
                done.cached_input_tokens = u.cached_content_token_count;
                done.output_tokens = u.candidates_token_count + u.thoughts_token_count;
            }
            if let Some(v) = chunk.model_version {
                done.model = v;
            }
            if let Some(c) = chunk.candidates.into_iter().next() {
                let parts = c.content.map(|c| c.parts).unwrap_or_default();
                let first = done.tool_calls.len();
                done.tool_calls.extend(calls(&parts, first));
                for p in parts {
                    if p.thought != Some(true)
                        && let Some(t) = p.text.filter(|t| !t.is_empty())
                    {
                        done.text.push_str(&t);
                        let _ = deltas.send(t);
                    }
                }
                if c.finish_reason.is_some() {
                    done.finish_reason = c.finish_reason;
                }
            }
            Ok(())
        })
        .await?;
        if done.finish_reason.is_none() {
            return Err(super::sse::cut(id));
        }
        Ok(done)
    }
}

impl Provider for Gemini {
    fn id(&self) -> ProviderId {
        ProviderId::Gemini
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let body = body(request);
        let http = self.http_request(request, "generateContent");
        let answer: Answer = post_json(self.id(), http, &body, error_message).await?;
        let refusal = |why: String| ProviderError::refused(ProviderId::Gemini, why);
        if let Some(reason) = answer.prompt_feedback.and_then(|f| f.block_reason) {
            return Err(refusal(format!("prompt blocked ({reason})")));
        }
        let Some(candidate) = answer.candidates.into_iter().next() else {
            return Err(ProviderError {
                provider: self.id(),
                kind: ErrorKind::Retryable,
                status: Some(200),
                retry_after: None,
                message: "no candidates in the answer".into(),
            });
        };
        if let Some(r @ ("SAFETY" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" | "RECITATION")) =
            candidate.finish_reason.as_deref()
        {
            return Err(refusal(format!("answer blocked ({r})")));
        }
        let parts = candidate.content.map(|c| c.parts).unwrap_or_default();
        let tool_calls = calls(&parts, 0);
        let text: String = parts
            .into_iter()
            .filter(|p| p.thought != Some(true))
            .filter_map(|p| p.text)
            .collect();
        let usage = answer.usage_metadata.unwrap_or(UsageMetadata {
            prompt_token_count: 0,
            candidates_token_count: 0,
            thoughts_token_count: 0,
            cached_content_token_count: 0,
        });
        Ok(Completion {
            text,
            input_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count + usage.thoughts_token_count,
            cached_input_tokens: usage.cached_content_token_count,
            cache_write_tokens: 0,
            reported_cost_usd: None,
            model: answer
                .model_version
                .unwrap_or_else(|| request.model.clone()),
            tool_calls,
            finish_reason: candidate.finish_reason,
        })
    }
}
