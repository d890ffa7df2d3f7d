//! OpenAI-compatible chat completions: `POST {base}/chat/completions` with a bearer key.
//! Used for OpenRouter (attribution headers `HTTP-Referer`/`X-Title`, usage accounting so it
//! reports the request's cost) and for any local server (Ollama, vLLM, llama.cpp).

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::http::post_json;
use super::{Completion, CompletionRequest, ErrorKind, Provider, ProviderError, ProviderId, Role};

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
    messages: Vec<Turn<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    /// OpenRouter: `{"include": true}` makes the answer carry `usage.cost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageRequest>,
}

#[derive(Serialize)]
struct UsageRequest {
    include: bool,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: &'a str,
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
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    cost: Option<f64>,
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

impl Provider for OpenAiCompatible {
    fn id(&self) -> ProviderId {
        self.id
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let mut turns = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            turns.push(Turn {
                role: "system",
                content: system,
            });
        }
        turns.extend(request.messages.iter().map(|m| Turn {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &m.content,
        }));
        let body = Body {
            model: &request.model,
            messages: turns,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            usage: (self.id == ProviderId::Openrouter).then_some(UsageRequest { include: true }),
        };
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
            return Err(ProviderError {
                provider: self.id,
                kind: ErrorKind::Permanent,
                status: Some(200),
                retry_after: None,
                message: super::http::sanitize(&format!("the model refused: {refusal}")),
            });
        }
        let usage = answer.usage.unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: None,
        });
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            reported_cost_usd: usage.cost.filter(|c| c.is_finite() && *c >= 0.0),
            model: answer.model.unwrap_or_else(|| request.model.clone()),
            finish_reason: choice.finish_reason,
        })
    }
}
