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
/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
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
