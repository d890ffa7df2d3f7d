//! The OpenAPI 3.1 document of every route, generated from the code: each handler carries its
//! `#[utoipa::path]` (method, path, parameters, body, answers), request bodies derive their
//! schemas from the structs the handlers read, and the answers built as JSON are described by
//! the schema types below. Served at `GET /openapi.json`; `docs/openapi.json` is the same
//! document, checked by a test that fails when the two drift, and `schemathesis` fuzzes the
//! running server against it in CI.

use std::collections::BTreeMap;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::{admin, anthropic, complete, feedback, health, keys, metrics, openai, recommendation};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AI Cost Optimizer",
        description = "Self-hosted LLM router: the cheapest model good enough for each prompt, \
                       learned from ratings. Client routes take an API key (`Authorization: \
                       Bearer <key>` or `x-api-key`), or none while no key exists; admin routes \
                       take `ADMIN_TOKEN`.",
        license(name = "MIT")
    ),
    paths(
        health::health,
        health::ready,
        metrics::render,
        openapi_json,
        complete::complete,
        complete::get_request,
        complete::routing_metrics,
        feedback::feedback,
        recommendation::recommendation,
        openai::chat_completions,
        openai::models,
        openai::model,
        anthropic::messages,
        anthropic::count_tokens,
        admin::feedback_summary,
        admin::learning_status,
        admin::retrain_now,
        admin::run_status,
        admin::rollback,
        admin::trends,
        admin::alerts,
        keys::create,
        keys::list,
        keys::show,
        keys::update,
        keys::rotate,
        keys::revoke,
    ),
    // The error shapes the response sets below refer to by name.
    components(schemas(ApiErrorBody, OpenAiErrorBody, AnthropicErrorBody)),
    modifiers(&Security),
    tags(
        (name = "service", description = "Probes, metrics and this document"),
        (name = "completions", description = "Routed completions, their records and ratings"),
        (name = "openai", description = "OpenAI-compatible API"),
        (name = "anthropic", description = "Anthropic-compatible Messages API"),
        (name = "admin", description = "Learning, alerts and API keys (ADMIN_TOKEN)"),
    )
)]
pub struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON. utoipa 5 writes a link's `operationId` as `operation_id`; it is
/// renamed here to the name OpenAPI (and clients following links) read.
pub fn document_value() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_default();
    let links = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(serde_json::Value::as_object_mut);
    for link in links {
        if let Some(id) = link.remove("operation_id") {
            link.insert("operationId".to_owned(), id);
        }
    }
    doc
}

/// The document as the pretty JSON checked into `docs/openapi.json`.
pub fn document_json() -> String {
    serde_json::to_string_pretty(&document_value()).unwrap_or_default()
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(document_value())
}

struct Security;

/// OpenAPI links: which answer supplies the id another operation takes (a client, and a
/// stateful fuzzer, can follow them: a created key → show, change, rotate, revoke; a queued
/// retrain → its run).
fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    struct LinkSpec {
        path: &'static str,
        status: &'static str,
        parameter: &'static str,
        operations: &'static [&'static str],
        value: &'static str,
        description: &'static str,
    }
    let links = [
        LinkSpec {
            path: "/admin/keys",
            status: "201",
            parameter: "key_id",
            operations: &["show", "update", "rotate", "revoke"],
            value: "$response.body#/key/key_id",
            description: "The created key",
        },
        LinkSpec {
            path: "/admin/learning/retrain",
            status: "202",
            parameter: "run_id",
            operations: &["run_status"],
            value: "$response.body#/run_id",
            description: "The queued run",
        },
    ];
    for LinkSpec {
        path,
        status,
        parameter,
        operations,
        value,
        description,
    } in links
    {
        let Some(response) = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut(status))
        else {
            continue;
        };
        let RefOr::T(response) = response else {
            continue;
        };
        for operation in operations {
            let link = LinkBuilder::new()
                .operation_id(*operation)
                .parameter(parameter, value)
                .description(description)
                .build();
            response
                .links
                .insert(format!("{operation}_{parameter}"), RefOr::T(link));
        }
    }
}

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        add_links(doc);
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

// ── Error shapes ─────────────────────────────────────────────────────────────────────────────

#[derive(Serialize, ToSchema)]
pub struct ApiErrorDetail {
    /// A stable code, e.g. `invalid_field`, `not_found`, `budget_exceeded`.
    pub code: String,
    pub message: String,
}

/// Our error shape, on every route outside `/v1`.
#[derive(Serialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
    /// The request it concerns, once one was accepted.
    #[schema(nullable = false)]
    pub request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// OpenAI's error shape, on `/v1/chat/completions` and `/v1/models`.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct AnthropicErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// Anthropic's error shape, on `/v1/messages`.
#[derive(Serialize, ToSchema)]
pub struct AnthropicErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: AnthropicErrorDetail,
}

/// The error answers a route may give, in the shape named `schema`.
fn errors(schema: &str, statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

const BAD_REQUEST: (u16, &str) = (400, "Malformed request (not JSON, wrong shape)");
const UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong API key or admin token");
const NOT_FOUND: (u16, &str) = (404, "No such resource (or another key's)");
const TOO_LARGE: (u16, &str) = (413, "Body larger than MAX_REQUEST_BYTES");
const MEDIA_TYPE: (u16, &str) = (415, "Body not sent as application/json");
const INVALID: (u16, &str) = (422, "A field is invalid; the message names it");
const UNAVAILABLE: (u16, &str) = (
    503,
    "Database unavailable, not ready (schema being migrated) or overloaded; see Retry-After",
);

/// Errors of the client routes (`/complete`, `/feedback`, `/requests/{id}`…).
pub struct ClientErrors;

impl IntoResponses for ClientErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(
            "ApiErrorBody",
            &[
                BAD_REQUEST,
                UNAUTHORIZED,
                (
                    403,
                    "The API key may not use the model or provider asked for",
                ),
                NOT_FOUND,
                TOO_LARGE,
                MEDIA_TYPE,
                INVALID,
                (429, "Budget exceeded or rate limited; see Retry-After"),
                UNAVAILABLE,
            ],
        )
    }
}

/// Errors of the admin routes.
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(
            "ApiErrorBody",
            &[
                BAD_REQUEST,
                UNAUTHORIZED,
                NOT_FOUND,
                TOO_LARGE,
                MEDIA_TYPE,
                INVALID,
                UNAVAILABLE,
            ],
        )
    }
}

/// Errors of the probes (`/ready`): only unavailability.
pub struct ProbeErrors;

impl IntoResponses for ProbeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors("ApiErrorBody", &[UNAVAILABLE])
    }
}

const V1_ERRORS: &[(u16, &str)] = &[
    (
        400,
        "Invalid request; `param` (or the message) names the field",
    ),
    UNAUTHORIZED,
    (
        403,
        "The API key may not use the model or provider asked for",
    ),
    (404, "Unknown model"),
    TOO_LARGE,
    MEDIA_TYPE,
    (429, "Budget exceeded or rate limited; see Retry-After"),
    (502, "Every candidate model failed"),
    (
        503,
        "Unavailable, overloaded, or accepted but not awaited (poll /requests/{id})",
    ),
    (
        504,
        "Still running after COMPLETE_TIMEOUT_SECS (poll /requests/{id})",
    ),
];

/// Errors of `/v1/chat/completions`, in OpenAI's shape.
pub struct OpenAiErrors;

impl IntoResponses for OpenAiErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors("OpenAiErrorBody", V1_ERRORS)
    }
}

/// Errors of `/v1/messages`, in Anthropic's shape.
pub struct AnthropicErrors;

impl IntoResponses for AnthropicErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors("AnthropicErrorBody", V1_ERRORS)
    }
}

// ── Answers built as JSON ────────────────────────────────────────────────────────────────────

/// `GET /health`
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`
    pub status: String,
    pub version: String,
}

/// `GET /ready`
#[derive(Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`
    pub status: String,
}

/// 202: the request is accepted and runs on; poll `status_url`.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBody {
    pub request_id: String,
    /// `queued` or `running`
    pub status: String,
    pub status_url: String,
}

/// 502: every candidate failed; the request is recorded as failed.
#[derive(Serialize, ToSchema)]
pub struct FailedBody {
    pub error: ApiErrorDetail,
    pub request_id: String,
    pub request: crate::completion::CompletionView,
}

/// `POST /feedback`: 201.
#[derive(Serialize, ToSchema)]
pub struct FeedbackAnswer {
    /// `recorded`
    pub status: String,
    pub feedback_id: i64,
    pub message: String,
    /// Whether it replaced this user's earlier rating of the request.
    pub replaced: bool,
}

/// `POST /v1/messages/count_tokens`
#[derive(Serialize, ToSchema)]
pub struct TokenCount {
    pub input_tokens: i64,
}

/// One Server-Sent Event of a streamed answer (`data` is a JSON text, or `[DONE]`).
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    /// Anthropic's event name (`message_start` …); none in OpenAI's stream.
    #[schema(nullable = false)]
    pub event: Option<String>,
    pub data: String,
}

/// `GET /v1/models`
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// `list`
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    /// `model`
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

/// A `chat.completion` (or, with `stream: true`, `text/event-stream` of `chat.completion.chunk`s).
#[derive(Serialize, ToSchema)]
pub struct ChatCompletion {
    /// Our request id (rate it with `POST /feedback`).
    pub id: String,
    /// `chat.completion`
    pub object: String,
    pub created: i64,
    pub model: Option<String>,
    pub choices: Vec<ChatChoice>,
    pub usage: ChatUsage,
}

#[derive(Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: i64,
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`
    pub finish_reason: String,
    pub logprobs: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatMessage {
    /// `assistant`
    pub role: String,
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[schema(nullable = false)]
    pub tool_calls: Option<Vec<ChatToolCall>>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatToolCall {
    pub id: String,
    /// `function`
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ChatFunctionCall,
}

#[derive(Serialize, ToSchema)]
pub struct ChatFunctionCall {
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChatUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// `cached_tokens`: prompt tokens the provider read from its cache.
    #[schema(nullable = false)]
    pub prompt_tokens_details: Option<CachedTokens>,
}

#[derive(Serialize, ToSchema)]
pub struct CachedTokens {
    pub cached_tokens: i64,
}

/// A chat-completions request (see the README for every field and what is refused).
#[derive(Serialize, ToSchema)]
pub struct ChatRequestBody {
    /// `auto`, `auto:cost|balanced|quality`, or a catalog model.
    #[schema(example = "auto")]
    pub model: String,
    #[schema(min_items = 1)]
    pub messages: Vec<ChatRequestMessage>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    /// One string or up to 4.
    #[schema(value_type = Option<Vec<String>>, max_items = 4)]
    pub stop: Option<serde_json::Value>,
    pub stream: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub stream_options: Option<serde_json::Value>,
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    pub user: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<serde_json::Value>,
    /// `auto`, `none`, `required` or `{"type":"function","function":{"name"}}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatRequestMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`
    #[schema(pattern = "^(system|developer|user|assistant|tool)$")]
    pub role: String,
    /// Text, or text content parts.
    #[schema(value_type = Option<String>)]
    pub content: Option<serde_json::Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<serde_json::Value>,
    pub tool_call_id: Option<String>,
}

/// A Messages API request (see the README for every field and what is refused).
#[derive(Serialize, ToSchema)]
pub struct MessagesRequestBody {
    /// `auto`, `auto:cost|balanced|quality`, or a catalog model.
    #[schema(example = "auto")]
    pub model: String,
    #[schema(minimum = 1)]
    pub max_tokens: u32,
    #[schema(min_items = 1)]
    pub messages: Vec<AnthropicMessage>,
    /// A string or text blocks.
    #[schema(value_type = Option<String>)]
    pub system: Option<serde_json::Value>,
    #[schema(max_items = 4)]
    pub stop_sequences: Option<Vec<String>>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    pub stream: Option<bool>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct AnthropicMessage {
    /// `user` or `assistant`
    #[schema(pattern = "^(user|assistant)$")]
    pub role: String,
    /// A string or content blocks (`text`, `tool_use`, `tool_result`).
    #[schema(value_type = String)]
    pub content: serde_json::Value,
}

/// An Anthropic `message` (or, with `stream: true`, `text/event-stream` of its events).
#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    /// Our request id (rate it with `POST /feedback`).
    pub id: String,
    /// `message`
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant`
    pub role: String,
    pub model: Option<String>,
    /// `text` and `tool_use` blocks.
    #[schema(value_type = Vec<Object>)]
    pub content: serde_json::Value,
    /// `end_turn`, `max_tokens`, `tool_use` or `refusal`
    pub stop_reason: String,
    pub stop_sequence: Option<String>,
    pub usage: MessageUsage,
}

#[derive(Serialize, ToSchema)]
pub struct MessageUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[schema(nullable = false)]
    pub cache_read_input_tokens: Option<i64>,
    #[schema(nullable = false)]
    pub cache_creation_input_tokens: Option<i64>,
}

// ── Admin and reporting answers ──────────────────────────────────────────────────────────────

#[derive(Serialize, ToSchema)]
pub struct KeyAnswer {
    pub key: crate::store::keys::KeyRow,
}

/// A key with its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct KeyWithSecret {
    pub key: crate::store::keys::KeyRow,
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyWithSpend {
    pub key: crate::store::keys::KeyRow,
    pub spend: Vec<crate::store::keys::Spend>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::store::keys::KeyRow>,
    pub spend: Vec<crate::store::keys::Spend>,
}

/// `GET /admin/performance/trends`
#[derive(Serialize, ToSchema)]
pub struct TrendsDoc {
    /// `day` or `week`
    pub bucket: String,
    pub pattern: Option<String>,
    pub model: Option<String>,
    pub points: Vec<crate::store::feedback::TrendPoint>,
}

/// `GET /admin/alerts`
#[derive(Serialize, ToSchema)]
pub struct AlertsDoc {
    /// Newest first, at most 100.
    #[schema(value_type = Vec<Object>)]
    pub alerts: serde_json::Value,
}

/// `GET /admin/feedback/summary`
#[derive(Serialize, ToSchema)]
pub struct FeedbackSummaryDoc {
    pub ratings: i64,
    pub avg_quality: f64,
    pub correctness_rate: Option<f64>,
    pub by_model: Vec<crate::store::feedback::SummaryRow>,
    pub by_pattern: Vec<crate::store::feedback::SummaryRow>,
}

#[derive(Serialize, ToSchema)]
pub struct ConfidenceCounts {
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub demoted: i64,
}

/// `GET /admin/learning/status`
#[derive(Serialize, ToSchema)]
pub struct LearningStatusDoc {
    pub last_run: Option<crate::store::learning::RunRecord>,
    pub next_scheduled_run: Option<chrono::DateTime<chrono::Utc>>,
    /// The cron expression (null: no schedule).
    pub schedule: Option<String>,
    pub confidence_distribution: ConfidenceCounts,
    /// The policy version in the database, and the one this process routes with.
    pub policy_version: i64,
    pub engine_policy_version: i64,
    /// Snapshot ids kept, newest first.
    pub snapshots: Vec<i64>,
    /// Shadow comparisons, all time (`pending`: samples waiting for their calls).
    pub shadow: crate::store::shadow::ShadowTotals,
}

/// `POST /admin/learning/retrain?dry_run=true`: the preview.
#[derive(Serialize, ToSchema)]
pub struct RetrainPreview {
    pub run_id: String,
    pub dry_run: bool,
    pub message: String,
    #[schema(value_type = Vec<Object>)]
    pub changes_preview: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub predictor_preview: serde_json::Value,
    /// The off-policy estimate of the current and the candidate policy.
    #[schema(value_type = Option<Object>)]
    pub off_policy: Option<serde_json::Value>,
}

/// `POST /admin/learning/retrain?dry_run=false`: queued.
#[derive(Serialize, ToSchema)]
pub struct RetrainQueued {
    pub run_id: String,
    /// `queued`
    pub status: String,
    pub status_url: String,
}

/// `POST /recommendation`
#[derive(Serialize, ToSchema)]
pub struct RecommendationDoc {
    pub pattern: String,
    pub complexity_score: f64,
    /// `low`, `medium` or `high`
    pub complexity_tier: String,
    pub strategy: String,
    pub target_quality: Option<f64>,
    /// The model it would choose: provider, model, expected quality, confidence, cost.
    #[schema(value_type = Object)]
    pub recommended: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub alternatives: serde_json::Value,
    #[schema(value_type = Object)]
    pub baseline: serde_json::Value,
    pub est_savings_usd: f64,
    #[schema(value_type = Object)]
    pub est_tokens: serde_json::Value,
    pub policy_version: i64,
}
