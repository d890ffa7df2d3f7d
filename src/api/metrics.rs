//! `GET /metrics` (Prometheus text format) and the HTTP metrics middleware.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::store::{Database, metrics as store};
use crate::telemetry::{self, names};

/// Counts every request and times it, labelled by the matched route (never the raw path).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Renders this process's metrics, after reading the queue depth from the database.
/// Prometheus metrics (text exposition format). They carry per-key series (spend, requests):
/// on the API's own address only with `Authorization: Bearer <METRICS_TOKEN or ADMIN_TOKEN>`
/// once the service is not open (an admin token, a metrics token or an API key exists), and not
/// at all when `METRICS_BIND` serves them elsewhere.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 401, description = "Missing or wrong metrics or admin token", body = super::openapi::ApiErrorBody),
              (status = 404, description = "Served on METRICS_BIND instead", body = super::openapi::ApiErrorBody),
              (status = 503, description = "The database is unavailable", body = super::openapi::ApiErrorBody)))]
pub async fn render(State(db): State<Database>) -> Response {
    let Some(handle) = telemetry::metrics() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response();
    };
    match store::queue_depth(&db.pool).await {
        Ok(rows) => {
            for (queue, state, n) in rows {
                metrics::gauge!(names::QUEUE_JOBS, "queue" => queue, "state" => state.to_lowercase())
                    .set(n as f64);
            }
        }
        Err(e) => tracing::debug!(error = %e, "queue depth not read"),
    }
    if let Ok((last_retrain, version)) = store::learning_state(&db.pool).await {
        // 0 while no retrain ever succeeded (OptimizerRetrainNeverSucceeded fires after 8 days).
        metrics::gauge!(names::LAST_RETRAIN).set(last_retrain.unwrap_or(0.0));
        metrics::gauge!(names::POLICY_VERSION).set(version as f64);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// Who may read `/metrics` on the API's address (see [`render`]).
pub async fn require_metrics_access(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use secrecy::ExposeSecret as _;
    let settings = &state.settings;
    if let Some(elsewhere) = settings.metrics_bind {
        return super::ApiError::not_found(format!(
            "metrics are served on METRICS_BIND ({elsewhere}), not here"
        ))
        .into_response();
    }
    let given = super::auth::bearer(request.headers());
    let tokens = [&settings.metrics_token, &settings.admin_token];
    let granted = given.is_some_and(|g| {
        tokens.iter().any(|t| {
            t.as_ref().is_some_and(|t| {
                super::constant_time_eq(g.as_bytes(), t.expose_secret().as_bytes())
            })
        })
    });
    if granted {
        return next.run(request).await;
    }
    // Open like the client routes while nothing is configured to protect: no token, no key.
    let configured = tokens.iter().any(|t| t.is_some());
    let open = !configured
        && match state.keys.any_created().await {
            Ok(any) => !any,
            Err(e) => return super::ApiError::from(e).into_response(),
        };
    if open {
        return next.run(request).await;
    }
    super::ApiError::unauthorized(
        "metrics need Authorization: Bearer <METRICS_TOKEN or ADMIN_TOKEN> (or METRICS_BIND)",
    )
    .into_response()
}

/// The router of the `METRICS_BIND` listener: `/metrics` alone, without credentials.
pub fn metrics_router(db: Database) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .with_state(db)
}
