//! LLM providers: one trait, one module per wire format, base URLs from configuration (tests
//! point them at a local HTTP mock).
//!
//! - [`anthropic`]: the Messages API.
//! - [`gemini`]: Google's `models/{model}:generateContent`.
//! - [`openai`]: OpenAI-compatible chat completions — OpenRouter and any local server.
//! - [`simulated`]: deterministic offline answers, labelled `simulated` everywhere.
//! - [`replay`]: recorded outcomes of an evaluation dataset (`optimizer eval`).
//!
//! Every failure is classified ([`ErrorKind`]) so the provider_call job knows whether to retry,
//! fall back to the next model, or give up; messages are sanitised (no keys, bounded length).
//!
//! The crate is HTTP adapters only and depends on no crate of ours but `optimizer-types`: what
//! the simulated and replay providers need from higher layers (the prompt classifier, the
//! recorded outcomes) is handed to them through [`Injected`].

pub mod anthropic;
pub mod gemini;
mod http;
pub mod judge;
pub mod openai;
pub mod replay;
pub mod simulated;
pub mod sse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use optimizer_types::{Message, ProviderId, ResponseFormat, Role, Tool, ToolCall, ToolChoice};

/// One completion request, provider-neutral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub system: Option<String>,
    /// The conversation, oldest first; the last turn is the user's.
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    /// Nucleus sampling, when the caller set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences (at most 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// JSON output (`response_format`): OpenAI's natively, Gemini's `responseMimeType` and
    /// `responseJsonSchema`, Anthropic's by forcing a tool whose input is the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

/// The tool Anthropic is made to call when the answer must be JSON: its input is the answer.
pub const JSON_TOOL: &str = "json_answer";

impl CompletionRequest {
    /// The text of the last user turn (the prompt); empty without one.
    pub fn last_turn(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default()
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache (priced at the catalog's
    /// cached rate).
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, those written to the provider's prompt cache (Anthropic; priced at
    /// the catalog's cache-write rate).
    pub cache_write_tokens: u64,
    /// The provider's own figure for the cost, when it reports one (OpenRouter).
    pub reported_cost_usd: Option<f64>,
    /// The model id the provider says answered.
    pub model: String,
    /// The tools the model called (then `finish_reason` is `tool_calls`).
    pub tool_calls: Vec<ToolCall>,
    /// Why the answer ended, in OpenAI's words (see [`finish_reason`]; set by
    /// [`Providers::complete_streaming`] from the provider's own).
    pub finish_reason: Option<String>,
}

impl Completion {
    /// An answer still to be filled by a stream.
    pub fn empty(model: &str) -> Self {
        Self {
            text: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reported_cost_usd: None,
            model: model.to_owned(),
            tool_calls: Vec::new(),
            finish_reason: None,
        }
    }
}

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again later: 429, 529/overloaded, 5xx, timeouts, connection errors, garbled answers.
    Retryable,
    /// This model cannot answer (404 model, not found): fall back to another model at once.
    ModelUnavailable,
    /// The request itself is refused (400, 401/403, content refusal): do not retry.
    Permanent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::ModelUnavailable => "model_unavailable",
            Self::Permanent => "permanent",
        }
    }
}

/// A classified provider failure. `message` is safe to store and show.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{provider} {}: {message}", status.map(|s| s.to_string()).unwrap_or_else(|| kind.as_str().to_owned()))]
pub struct ProviderError {
    pub provider: ProviderId,
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// `Retry-After`, when the provider sent one.
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl ProviderError {
    /// The provider answered but refused the request (content policy, refusal): permanent.
    pub fn refused(provider: ProviderId, message: impl Into<String>) -> Self {
        Self {
            provider,
            kind: ErrorKind::Permanent,
            status: Some(200),
            retry_after: None,
            message: message.into(),
        }
    }
}

/// The one provider interface.
pub trait Provider: Send + Sync {
    fn id(&self) -> ProviderId;

    fn complete(
        &self,
        request: &CompletionRequest,
    ) -> impl std::future::Future<Output = Result<Completion, ProviderError>> + Send;
}

/// A configured provider of any wire format (static dispatch over the implementations).
#[derive(Debug)]
pub enum Client {
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
    OpenAi(openai::OpenAiCompatible),
    Simulated(simulated::Simulated),
    Replay(replay::Replay),
}

impl Provider for Client {
    fn id(&self) -> ProviderId {
        match self {
            Client::Anthropic(p) => p.id(),
            Client::Gemini(p) => p.id(),
            Client::OpenAi(p) => p.id(),
            Client::Simulated(p) => p.id(),
            Client::Replay(p) => p.id(),
        }
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        match self {
            Client::Anthropic(p) => p.complete(request).await,
            Client::Gemini(p) => p.complete(request).await,
            Client::OpenAi(p) => p.complete(request).await,
            Client::Simulated(p) => p.complete(request).await,
            Client::Replay(p) => p.complete(request).await,
        }
    }
}

impl Client {
    /// Streams the answer: text deltas go to `deltas` as they arrive; the full completion (text,
    /// usage) is returned at the end.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &sse::Deltas,
    ) -> Result<Completion, ProviderError> {
        match self {
            Client::Anthropic(p) => p.stream(request, deltas).await,
            Client::Gemini(p) => p.stream(request, deltas).await,
            Client::OpenAi(p) => p.stream(request, deltas).await,
            Client::Simulated(p) => p.stream(request, deltas).await,
            Client::Replay(p) => p.stream(request, deltas).await,
        }
    }
}

/// Settings of the provider layer (besides the endpoints).
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Per-provider request timeout.
    pub timeouts: HashMap<ProviderId, Duration>,
    /// Concurrent calls allowed per provider in one process.
    pub concurrency: usize,
    pub simulated_latency: Duration,
    pub simulated_profile_path: Option<std::path::PathBuf>,
    /// `REPLAY_DATASET`: the evaluation dataset the replay provider answers from (the
    /// application loads it and injects it, see [`Injected::replay`]).
    pub replay_dataset: Option<std::path::PathBuf>,
}

/// One hosted provider: its key (absent = not configured) and base URL.
#[derive(Debug, Clone)]
pub struct ProviderEndpoint {
    pub api_key: Option<SecretString>,
    pub base_url: String,
}

/// Any OpenAI-compatible server (Ollama, vLLM, llama.cpp…): configured by its base URL; the key
/// is optional because local servers rarely need one.
#[derive(Debug, Clone)]
pub struct OpenAiCompatEndpoint {
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
}

/// Where each provider is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub anthropic: ProviderEndpoint,
    pub gemini: ProviderEndpoint,
    pub openrouter: ProviderEndpoint,
    /// `OPENROUTER_REFERER` / `OPENROUTER_TITLE`: OpenRouter's app attribution headers.
    pub openrouter_attribution: openai::Attribution,
    pub openai_compat: OpenAiCompatEndpoint,
}

/// The enabled providers of this process, each with its own concurrency limit.
#[derive(Debug)]
pub struct Providers {
    clients: HashMap<ProviderId, (Client, Arc<Semaphore>)>,
}

/// A provider could not be set up (start-up error).
#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Profile(#[from] simulated::ProfileError),
    #[error("the replay provider is enabled but no recorded outcomes were given to it")]
    NoReplayBook,
}

/// What the application hands the providers that they must not import themselves.
#[derive(Clone)]
pub struct Injected {
    /// The simulated provider's prompt classifier (the routing analyzer, in the application).
    pub classify: simulated::Classifier,
    /// The replay provider's recorded outcomes; required when the replay provider is enabled.
    pub replay: Option<Arc<dyn replay::ReplayBook>>,
}

impl Providers {
    /// Builds a client for every provider in `enabled`.
    pub fn new(
        enabled: &[ProviderId],
        endpoints: &ProviderSettings,
        options: &ProviderOptions,
        injected: Injected,
    ) -> Result<Self, ProvidersError> {
        let mut clients = HashMap::new();
        for id in enabled {
            let timeout = options
                .timeouts
                .get(id)
                .copied()
                .unwrap_or(Duration::from_secs(60));
            let http = || http::client(timeout).map_err(ProvidersError::Http);
            let p = endpoints;
            let client = match id {
                ProviderId::Anthropic => Client::Anthropic(anthropic::Anthropic::new(
                    http()?,
                    &p.anthropic.base_url,
                    p.anthropic.api_key.clone(),
                )),
                ProviderId::Gemini => Client::Gemini(gemini::Gemini::new(
                    http()?,
                    &p.gemini.base_url,
                    p.gemini.api_key.clone(),
                )),
                ProviderId::Openrouter => Client::OpenAi(openai::OpenAiCompatible::openrouter(
                    http()?,
                    &p.openrouter.base_url,
                    p.openrouter.api_key.clone(),
                    p.openrouter_attribution.clone(),
                )),
                ProviderId::OpenaiCompat => Client::OpenAi(openai::OpenAiCompatible::generic(
                    http()?,
                    p.openai_compat.base_url.as_deref().unwrap_or_default(),
                    p.openai_compat.api_key.clone(),
                )),
                ProviderId::Simulated => Client::Simulated(simulated::Simulated::new(
                    options.simulated_latency,
                    simulated::Profiles::load(options.simulated_profile_path.as_deref())?,
                    injected.classify,
                )),
                ProviderId::Replay => Client::Replay(replay::Replay::new(
                    injected
                        .replay
                        .clone()
                        .ok_or(ProvidersError::NoReplayBook)?,
                )),
            };
            let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
            clients.insert(*id, (client, permits));
        }
        Ok(Self { clients })
    }

    /// Calls `provider`, waiting for one of its concurrency permits first; with `deltas`, the
    /// answer is streamed into it as it arrives.
    pub async fn complete_streaming(
        &self,
        provider: ProviderId,
        request: &CompletionRequest,
        deltas: Option<&sse::Deltas>,
    ) -> Result<Completion, ProviderError> {
        let Some((client, permits)) = self.clients.get(&provider) else {
            return Err(ProviderError {
                provider,
                kind: ErrorKind::ModelUnavailable,
                status: None,
                retry_after: None,
                message: "provider is not configured in this process".into(),
            });
        };
        let _permit = permits.acquire().await.map_err(|_| ProviderError {
            provider,
            kind: ErrorKind::Retryable,
            status: None,
            retry_after: None,
            message: "provider is shutting down".into(),
        })?;
        let mut answer = match deltas {
            Some(d) => client.stream(request, d).await,
            None => client.complete(request).await,
        }?;
        if request.response_format.is_some() {
            // Anthropic's forced tool call is the JSON answer.
            if let Some(at) = answer.tool_calls.iter().position(|c| c.name == JSON_TOOL) {
                let call = answer.tool_calls.remove(at);
                answer.text = call.arguments;
                answer.finish_reason = None;
            }
        }
        let reason = if answer.tool_calls.is_empty() {
            finish_reason(answer.finish_reason.as_deref())
        } else {
            // Gemini says STOP after a function call; OpenAI's clients look for tool_calls.
            "tool_calls"
        };
        answer.finish_reason = Some(reason.to_owned());
        Ok(answer)
    }

    /// Calls `provider` (see [`Providers::complete_streaming`]).
    pub async fn complete(
        &self,
        provider: ProviderId,
        request: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        self.complete_streaming(provider, request, None).await
    }
}

/// A provider's finish reason in OpenAI's words: `stop`, `length` (cut at `max_tokens`),
/// `tool_calls` or `content_filter`. Anthropic's `stop_reason` and Gemini's `finishReason` are
/// mapped; an unknown or missing reason is `stop`.
pub fn finish_reason(raw: Option<&str>) -> &'static str {
    match raw.unwrap_or_default() {
        "length" | "max_tokens" | "MAX_TOKENS" | "model_context_window_exceeded" => "length",
        "tool_calls" | "function_call" | "tool_use" => "tool_calls",
        "content_filter" | "refusal" | "SAFETY" | "RECITATION" | "BLOCKLIST"
        | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ => "stop",
    }
}

/// An HTTP client (rustls, webpki roots) with a whole-request timeout, for calls that are not
/// provider calls (alert webhooks).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    http::client(timeout)
}

/// Installs the process-wide TLS crypto provider (ring, shared with the database driver).
/// Call once at start-up; later calls are no-ops.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
