//! HTTP layer: routers, extractors, the error type and middleware. Handlers stay thin: they
//! extract and validate, call a function that knows nothing of axum, and map the result.

pub mod admin;
pub mod anthropic;
pub mod auth;
pub mod complete;
pub mod error;
pub mod extract;
pub mod feedback;
pub mod guard;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod recommendation;
pub mod stream;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath};
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use extract::AppJson;

use crate::completion::{Completions, Notifier};
use crate::config::Settings;
use crate::routing::RoutingEngine;
use crate::store::Database;
use crate::tenants::KeyRing;

/// The header carrying the per-request id (taken from the caller when present).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Database,
    /// Whether the database schema is known to be in place (routes needing it answer 503
    /// `not_ready` until it is).
    pub schema: Arc<guard::SchemaGate>,
    pub engine: Arc<RoutingEngine>,
    pub completions: Arc<Completions>,
    /// API keys: who is calling.
    pub keys: Arc<KeyRing>,
}

impl AppState {
    /// Loads the catalog and builds the routing engine; a bad catalog or baseline is a start-up
    /// error. The pool is lazy: nothing connects here. The caller runs
    /// `completions.notifier.run(…)` and the weights reloader.
    pub fn new(settings: Settings) -> Result<Self, crate::wiring::SetupError> {
        crate::telemetry::metrics();
        let engine = Arc::new(crate::wiring::build_engine(&settings)?);
        let db = Database::connect_lazy(&settings.pool());
        let settings = Arc::new(settings);
        let completions = Arc::new(Completions {
            pool: db.pool.clone(),
            engine: engine.clone(),
            settings: settings.clone(),
            notifier: Notifier::new(),
            lane: crate::completion::DirectLane::new(),
            inserts: crate::completion::Inserter::new(
                db.hot.clone(),
                crate::completion::Announcer::new(db.hot.clone()),
            ),
        });
        let keys = Arc::new(KeyRing::new(db.pool.clone(), settings.api_keys.clone()));
        Ok(Self {
            keys,
            settings,
            db,
            schema: Arc::default(),
            engine,
            completions,
        })
    }
}

impl FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

/// The API's router with its middleware.
pub fn router(state: AppState) -> Router {
    let limits = Limits {
        body_bytes: state.settings.max_request_bytes,
        body_timeout: state.settings.request_body_timeout,
    };
    let admin = Router::new()
        .route("/feedback/summary", get(admin::feedback_summary))
        .route("/learning/status", get(admin::learning_status))
        .route("/learning/retrain", post(admin::retrain_now))
        .route("/learning/runs/{run_id}", get(admin::run_status))
        .route("/learning/rollback", post(admin::rollback))
        .route("/performance/trends", get(admin::trends))
        .route("/alerts", get(admin::alerts))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{key_id}", get(keys::show).patch(keys::update))
        .route("/keys/{key_id}/rotate", post(keys::rotate))
        .route("/keys/{key_id}/revoke", post(keys::revoke))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::require_schema,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    // Client routes: the caller is identified (API key, admin token, or open while no key
    // exists) inside the schema gate, since keys live in the database.
    let caller = axum::middleware::from_fn_with_state(state.clone(), auth::require_caller);
    let schema = axum::middleware::from_fn_with_state(state.clone(), guard::require_schema);
    // Anthropic's Messages API answers in its own error shape.
    let messages = Router::new()
        .route("/messages", post(anthropic::messages))
        .route("/messages/count_tokens", post(anthropic::count_tokens))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            anthropic::require_caller,
        ))
        .route_layer(axum::middleware::from_fn(anthropic::request_id_header));
    let v1 = Router::new()
        .route("/chat/completions", post(openai::chat_completions))
        .route("/models", get(openai::models))
        .route("/models/{*id}", get(openai::model))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_caller_v1,
        ))
        .merge(messages)
        .fallback(openai::not_found)
        .method_not_allowed_fallback(openai::not_found)
        .route_layer(schema.clone());
    let client = Router::new()
        .route("/complete", post(complete::complete))
        .route("/feedback", post(feedback::feedback))
        .route("/requests/{id}", get(complete::get_request))
        .route("/routing/metrics", get(complete::routing_metrics))
        .route("/recommendation", post(recommendation::recommendation))
        .route_layer(caller)
        .route_layer(schema);
    // Everything but the probes and the scrape is subject to load shedding.
    let permits = Arc::new(tokio::sync::Semaphore::new(state.settings.max_in_flight));
    let work = Router::new()
        .nest("/v1", v1)
        .merge(client)
        .nest("/admin", admin)
        .route_layer(axum::middleware::from_fn_with_state(
            permits,
            guard::shed_load,
        ));
    with_middleware(
        work.route("/health", get(health::health))
            .route("/ready", get(health::ready))
            .route(
                "/metrics",
                get(metrics::render).route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    metrics::require_metrics_access,
                )),
            )
            .route("/openapi.json", get(openapi::openapi_json))
            .with_state(state),
        limits,
    )
}

/// The worker process's small router: `/health` and `/ready`.
pub fn worker_router(db: Database) -> Router {
    with_middleware(
        Router::new()
            .route("/health", get(health::health))
            .route("/ready", get(health::worker_ready))
            .route("/metrics", get(metrics::render))
            .with_state(db),
        Limits {
            body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(30),
        },
    )
}

/// How much body a request may send, and how slowly.
#[derive(Debug, Clone, Copy)]
struct Limits {
    body_bytes: usize,
    /// Longest pause between two pieces of a body.
    body_timeout: Duration,
}

/// Fallbacks, body limits, JSON errors, request id and a tracing span per request.
fn with_middleware(router: Router, limits: Limits) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_timeout,
        ))
        .layer(axum::middleware::from_fn(move |req, next| {
            guard::refuse_oversized(limits.body_bytes, req, next)
        }))
        .layer(axum::middleware::from_fn(guard::refuse_oversized_head))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .layer(axum::middleware::from_fn(metrics::track))
        // Outermost first: set the id, open the span with it, copy it onto the response.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        // Failures are logged by whoever answers them (ApiError, in words); tower-http's own
        // line for every 5xx — an ERROR per 503 of a starting service's /ready — only at debug.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, UlidRequestId))
}

fn make_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("http", method = %req.method(), route, request_id)
}

/// Request ids are ULIDs: sortable by time, URL-safe.
#[derive(Clone, Copy)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        ulid::Ulid::generate()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// How long a connection may go without sending a complete request's headers before it is
/// closed (`HTTP_IDLE_TIMEOUT_SECS`'s default): a new connection that sends nothing, one that
/// stops half-way through its headers, and a keep-alive connection idle after its last answer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` is cancelled; in-flight requests then get
/// `grace` to finish before the server is dropped. Headers must arrive within
/// [`HEADER_READ_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, grace, HEADER_READ_TIMEOUT).await
}

/// Socket options of an accepted connection: TCP_NODELAY, so an answer goes out as soon as it
/// is written. With Nagle's algorithm on, a response written in several parts (a streamed
/// answer) can wait for the client's delayed ACK of the previous part. `axum::serve` sets it
/// too; for small answers it measured no difference (docs/PERFORMANCE.md, item 9).
fn prepare(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// [`serve`] with another idle timeout: a connection is closed when a request's headers have
/// not arrived within `idle_timeout` of its opening or of its previous answer. hyper's HTTP/1
/// connection directly, rather than `axum::serve` (no header timeout at all) or hyper-util's
/// `auto` builder, whose HTTP-version sniffing waits for a first byte with no timeout: a
/// client that never sent one held its connection for ever.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::ServiceExt as _;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        // A header line hyper cannot parse (a control character in a value, a name that is
        // not a token) would otherwise end the connection with hyper's own empty 400, before
        // any of our code runs. Dropped instead, the request reaches the router, which answers
        // in the JSON shape (e.g. 415 for an unreadable Content-Type, 401 for an unreadable
        // key). Body framing is not weakened: a front proxy rejects a malformed
        // Content-Length or Transfer-Encoding itself (RFC 9112 §6.3), and a direct client
        // can only frame its own connection.
        .ignore_invalid_headers(true)
        // Room above the router's own limits (`guard::refuse_oversized_head`: 100 fields,
        // 64 KiB), so a header flood within it is refused in the JSON shape rather than with
        // hyper's empty 431.
        .max_headers(4 * guard::MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    prepare(&stream);
                    stream
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(
            router
                .clone()
                .map_request(|req: Request<hyper::body::Incoming>| req.map(axum::body::Body::new)),
        );
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        crate::tasks::spawn("connection", async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn echo(AppJson(v): AppJson<serde_json::Value>) -> AppJson<serde_json::Value> {
        AppJson(v)
    }

    async fn call(content_type: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        let limits = Limits {
            body_bytes: 1024,
            body_timeout: Duration::from_secs(5),
        };
        let app = with_middleware(Router::new().route("/echo", post(echo)), limits);
        let req = Request::post("/echo")
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn bad_bodies_get_the_api_error_shape() {
        let (status, body) = call("application/json", br#"{"a":1}"#.to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["a"], 1);

        for (content_type, payload, want_status, want_code) in [
            (
                "application/json",
                b"{not json".to_vec(),
                400,
                "invalid_json",
            ),
            ("text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
            (
                "application/json",
                format!("{{\"a\":\"{}\"}}", "x".repeat(2048)).into_bytes(),
                413,
                "payload_too_large",
            ),
        ] {
            let (status, body) = call(content_type, payload).await;
            assert_eq!(status.as_u16(), want_status, "{body}");
            assert_eq!(body["error"]["code"], want_code, "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    #[tokio::test]
    async fn accepted_connections_send_without_waiting_for_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "the kernel's default");
        prepare(&accepted);
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }
}
