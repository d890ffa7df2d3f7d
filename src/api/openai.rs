//! The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`, so existing
//! OpenAI SDKs switch to the router by changing only the base URL. Same routing, queue, cost
//! accounting and feedback as `/complete`; errors in OpenAI's shape
//! `{"error":{"message","type","param","code"}}` on every /v1 route.
//!
//! `stream: true` answers Server-Sent Events of `chat.completion.chunk`s relayed from the
//! provider's own stream (see [`stream`]). Not supported: `n > 1`, tools and images.
//! `top_p`, `stop` and `metadata` are accepted and not forwarded.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::completion::{CompleteInput, CompletionView, SubmitError, Submitted};
use crate::providers::{Message, Role};
use crate::routing::{RouteError, Strategy};

/// An error in OpenAI's shape. The status decides which exception an SDK raises.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl OpenAiError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Our errors, re-shaped: validation problems are 400 here (OpenAI's convention).
impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let kind = match status.as_u16() {
            400 | 404 | 405 | 409 | 413 | 415 => "invalid_request_error",
            401 | 403 => "authentication_error",
            _ => "api_error",
        };
        // ApiError logs its own cause when turned into a response; keep that for 5xx.
        let message = e.message().to_owned();
        if status.is_server_error() {
            let _ = e.into_response();
        }
        Self {
            status,
            kind,
            message,
            param: None,
            code: None,
        }
    }
}

impl From<JsonRejection> for OpenAiError {
    fn from(r: JsonRejection) -> Self {
        Self {
            status: match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            },
            kind: "invalid_request_error",
            message: r.body_text(),
            param: None,
            code: None,
        }
    }
}

/// `axum::Json` with OpenAI-shaped rejections.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(OpenAiError))]
pub struct V1Json<T>(pub T);

/// The key id of an authenticated caller (`API_KEYS`), for the request's user.
#[derive(Debug, Clone)]
pub struct ApiKeyId(pub String);

/// Which configured key `headers` carries: Ok(None) when no keys are configured.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Option<ApiKeyId>, &'static str> {
    let keys = &state.settings.api_keys;
    if keys.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing API key (Authorization: Bearer <key>)")?;
    keys.iter()
        .find(|(_, key)| super::constant_time_eq(key.expose_secret().as_bytes(), given.as_bytes()))
        .map(|(id, _)| Some(ApiKeyId(id.clone())))
        .ok_or("invalid API key")
}

/// Checks the API key (when `API_KEYS` is set) and records its id on the request.
fn authorize(state: &AppState, request: &mut Request) -> Result<(), &'static str> {
    if let Some(id) = authenticate(state, request.headers())? {
        request.extensions_mut().insert(id);
    }
    Ok(())
}

/// API keys on /v1 (OpenAI-shaped 401).
pub async fn require_key_v1(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, OpenAiError> {
    authorize(&state, &mut request).map_err(|why| OpenAiError {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid_request_error",
        message: why.to_owned(),
        param: None,
        code: Some("invalid_api_key"),
    })?;
    Ok(next.run(request).await)
}

/// API keys on /complete (our error shape).
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state, &mut request).map_err(ApiError::unauthorized)?;
    Ok(next.run(request).await)
}

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
fn route_of(state: &AppState, model: &str) -> Result<(Strategy, Option<usize>), OpenAiError> {
    if model == "auto" {
        return Ok((Strategy::default(), None));
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
            param: Some("model"),
            code: Some("model_not_found"),
        })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    key: Option<axum::Extension<ApiKeyId>>,
    V1Json(body): V1Json<ChatRequest>,
) -> Result<Response, OpenAiError> {
    let stream = body.stream == Some(true);
    let include_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o["include_usage"].as_bool())
        .unwrap_or(false);
    if body.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("n", "only n = 1 is supported"));
    }
    if body.messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "must contain at least one message",
        ));
    }
    let (strategy, pinned) = route_of(&state, &body.model)?;
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
    let prompt = super::validate::prompt(last.content).map_err(OpenAiError::from)?;
    let temperature = super::validate::temperature(body.temperature)
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
    let user_id = key
        .map(|k| k.0.0)
        .or(body.user)
        .filter(|u| !u.trim().is_empty());
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
        user_id: super::validate::short_text("user", user_id).map_err(OpenAiError::from)?,
        stream,
        ..Default::default()
    };
    let completions = &state.completions;
    let submitted = completions.submit(input).await.map_err(|e| match e {
        SubmitError::Route(RouteError::NotRoutable(m)) => OpenAiError::invalid(
            "model",
            format!("model {m} is not routable: its provider is not configured"),
        ),
        SubmitError::Route(e) => OpenAiError::from(super::validate::route_error(e)),
        SubmitError::Database(e) => OpenAiError::from(ApiError::from(e)),
    })?;
    if stream {
        return Ok(stream::respond(
            completions.clone(),
            submitted,
            include_usage,
        ));
    }
    let record = match submitted {
        Submitted::Cached(id) => completions.get(&id).await,
        Submitted::Queued {
            request_id, waiter, ..
        } => completions.wait(&request_id, waiter).await,
        Submitted::Replayed(id) => completions.wait(&id, None).await,
    }
    .map_err(|e| OpenAiError::from(ApiError::from(e)))?
    .ok_or_else(|| OpenAiError::from(ApiError::internal(anyhow::anyhow!("request vanished"))))?;
    let view = CompletionView::from_record(record);
    let headers = headers(&view);
    match view.status.as_str() {
        "succeeded" => Ok((headers, axum::Json(chat_completion(&view))).into_response()),
        "failed" => {
            let message = view
                .error
                .as_ref()
                .map_or("every candidate model failed".to_owned(), |e| {
                    e.message.clone()
                });
            let mut response = OpenAiError {
                status: StatusCode::BAD_GATEWAY,
                kind: "api_error",
                message,
                param: None,
                code: Some("upstream_error"),
            }
            .into_response();
            response.headers_mut().extend(headers);
            Ok(response)
        }
        _ => {
            let mut response = OpenAiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                kind: "api_error",
                message: format!(
                    "still running after COMPLETE_TIMEOUT_SECS; poll /requests/{}",
                    view.request_id
                ),
                param: None,
                code: Some("timeout"),
            }
            .into_response();
            response.headers_mut().extend(headers);
            Ok(response)
        }
    }
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

/// The OpenAI `chat.completion` object; `id` is our request id (rate it with /feedback).
fn chat_completion(view: &CompletionView) -> Value {
    let (input, output) = view.tokens.as_ref().map_or((0, 0), |t| (t.input, t.output));
    json!({
        "id": view.request_id,
        "object": "chat.completion",
        "created": view.created_at.timestamp(),
        "model": view.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": view.response, "refusal": null },
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": { "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output },
    })
}

/// `GET /v1/models`: the `auto` aliases and every routable catalog model.
pub async fn models(State(state): State<AppState>) -> axum::Json<Value> {
    let mut data: Vec<Value> = ["auto", "auto:cost", "auto:balanced", "auto:quality"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "ai-cost-optimizer" }))
        .collect();
    let engine = &state.engine;
    for (i, m) in engine.catalog().models().iter().enumerate() {
        if engine.is_routable(i) {
            data.push(
                json!({ "id": m.model, "object": "model", "created": 0, "owned_by": m.provider }),
            );
        }
    }
    axum::Json(json!({ "object": "list", "data": data }))
}

/// Unknown /v1 routes and methods, in OpenAI's shape.
pub async fn not_found() -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: "unknown route".into(),
        param: None,
        code: Some("unknown_url"),
    }
}

/// `stream: true`: the provider's deltas, relayed by the worker, as `chat.completion.chunk`
/// events, then a final chunk with `finish_reason`, the usage chunk when
/// `stream_options.include_usage`, and `data: [DONE]`.
mod stream {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::Arc;

    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    use crate::completion::{
        CompletionView, Completions, StreamChunk, Submitted, Subscription, Waiter,
    };

    struct State {
        completions: Arc<Completions>,
        request_id: String,
        chunks: Option<Subscription>,
        waiter: Option<Waiter>,
        include_usage: bool,
        created: i64,
        model: Option<String>,
        streamed: bool,
        outbox: VecDeque<String>,
        finished: bool,
        deadline: tokio::time::Instant,
    }

    pub fn respond(
        completions: Arc<Completions>,
        submitted: Submitted,
        include_usage: bool,
    ) -> Response {
        let deadline = tokio::time::Instant::now() + completions.settings.completion.timeout;
        let (request_id, chunks, waiter) = match submitted {
            Submitted::Queued {
                request_id,
                waiter,
                stream,
            } => (request_id, stream, waiter),
            Submitted::Cached(id) | Submitted::Replayed(id) => (id, None, None),
        };
        let state = State {
            completions,
            request_id: request_id.clone(),
            chunks,
            waiter,
            include_usage,
            created: chrono::Utc::now().timestamp(),
            model: None,
            streamed: false,
            outbox: VecDeque::new(),
            finished: false,
            deadline,
        };
        let events = futures_util::stream::unfold(state, next);
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-optimizer-request-id", v);
        }
        response
    }

    fn chunk(st: &State, delta: Value, finish: Option<&str>) -> String {
        json!({
            "id": st.request_id, "object": "chat.completion.chunk", "created": st.created,
            "model": st.model, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
        .to_string()
    }

    fn content(st: &mut State, c: StreamChunk) {
        let first = !st.streamed;
        st.streamed = true;
        st.model.get_or_insert(c.model);
        let delta = if first {
            json!({ "role": "assistant", "content": c.delta })
        } else {
            json!({ "content": c.delta })
        };
        let data = chunk(st, delta, None);
        st.outbox.push_back(data);
    }

    async fn finish(st: &mut State) {
        let mut pending = Vec::new();
        if let Some(sub) = st.chunks.as_mut() {
            while let Ok(c) = sub.chunks.try_recv() {
                pending.push(c);
            }
        }
        for c in pending {
            content(st, c);
        }
        st.finished = true;
        let record = match st.completions.get(&st.request_id).await {
            Ok(Some(r)) => r,
            _ => {
                st.outbox
                    .push_back(error("the request could not be read", "api_error"));
                st.outbox.push_back("[DONE]".into());
                return;
            }
        };
        let view = CompletionView::from_record(record);
        match view.status.as_str() {
            "succeeded" => {
                if st.model.is_none() {
                    st.model = view.model.clone();
                }
                if !st.streamed {
                    // Answered from the cache (or relayed nothing): one chunk with all of it.
                    let data = chunk(
                        st,
                        json!({ "role": "assistant", "content": view.response }),
                        None,
                    );
                    st.outbox.push_back(data);
                }
                let data = chunk(st, json!({}), Some("stop"));
                st.outbox.push_back(data);
                if st.include_usage {
                    let (i, o) = view.tokens.as_ref().map_or((0, 0), |t| (t.input, t.output));
                    st.outbox.push_back(
                        json!({
                            "id": st.request_id, "object": "chat.completion.chunk",
                            "created": st.created, "model": st.model, "choices": [],
                            "usage": { "prompt_tokens": i, "completion_tokens": o,
                                       "total_tokens": i + o },
                        })
                        .to_string(),
                    );
                }
            }
            "failed" => {
                let message = view
                    .error
                    .as_ref()
                    .map_or("every candidate model failed".to_owned(), |e| {
                        e.message.clone()
                    });
                st.outbox.push_back(error(&message, "api_error"));
            }
            _ => st.outbox.push_back(error(
                "still running after COMPLETE_TIMEOUT_SECS",
                "api_error",
            )),
        }
        st.outbox.push_back("[DONE]".into());
    }

    fn error(message: &str, kind: &str) -> String {
        json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
            .to_string()
    }

    async fn next(mut st: State) -> Option<(Result<Event, Infallible>, State)> {
        loop {
            if let Some(data) = st.outbox.pop_front() {
                return Some((Ok(Event::default().data(data)), st));
            }
            if st.finished {
                return None;
            }
            if st.waiter.is_none() {
                // Nothing to wait for (a cache hit): the answer is there already.
                finish(&mut st).await;
                continue;
            }
            let deadline = st.deadline;
            let mut done = false;
            let mut received = None;
            {
                let chunks = st.chunks.as_mut().map(|s| &mut s.chunks);
                let waiter = st.waiter.as_mut();
                tokio::select! {
                    c = async {
                        match chunks {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => received = c,
                    () = async {
                        match waiter {
                            Some(w) => w.notified().await,
                            None => std::future::pending().await,
                        }
                    } => done = true,
                    () = tokio::time::sleep_until(deadline) => done = true,
                }
            }
            if let Some(c) = received {
                content(&mut st, c);
            }
            if done {
                finish(&mut st).await;
            }
        }
    }
}
