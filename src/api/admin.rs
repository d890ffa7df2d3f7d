//! `/admin/*`: feedback summary, learning status, retrain (dry-run or queued), rollback,
//! performance trends. Every route needs `Authorization: Bearer $ADMIN_TOKEN`; without
//! ADMIN_TOKEN configured the routes answer 503 saying so.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::AppJson;
use super::validate;
use crate::jobs::retrain;
use crate::learning;
use crate::store::{feedback, learning as store, weights};
use crate::types::RunStatus;

/// Bearer-token check for every admin route (constant-time comparison).
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = state.settings.admin_token.as_ref() else {
        return Err(ApiError::unavailable(
            "admin_disabled",
            "the admin API is disabled: set ADMIN_TOKEN to enable it",
        ));
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !super::constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
        return Err(ApiError::unauthorized(
            "missing or wrong bearer token (Authorization: Bearer $ADMIN_TOKEN)",
        ));
    }
    Ok(next.run(request).await)
}

/// `GET /admin/feedback/summary`
#[utoipa::path(get, path = "/admin/feedback/summary", tag = "admin",
    responses((status = 200, description = "Ratings, average quality and correctness, per model and pattern", body = super::openapi::FeedbackSummaryDoc), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn feedback_summary(State(state): State<AppState>) -> Result<AppJson<Value>, ApiError> {
    let (total, by_model, by_pattern) = feedback::summary(&state.db.pool).await?;
    Ok(AppJson(json!({
        "ratings": total.ratings,
        "avg_quality": total.avg_quality,
        "correctness_rate": total.correctness_rate,
        "by_model": by_model,
        "by_pattern": by_pattern,
    })))
}

/// `GET /admin/learning/status`
#[utoipa::path(get, path = "/admin/learning/status", tag = "admin",
    responses((status = 200, description = "Last run, schedule, confidence distribution, policy versions", body = super::openapi::LearningStatusDoc), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn learning_status(State(state): State<AppState>) -> Result<AppJson<Value>, ApiError> {
    let pool = &state.db.pool;
    let last = store::last_run(pool).await?;
    let distribution = store::confidence_distribution(pool).await?;
    let mut counts = json!({ "high": 0, "medium": 0, "low": 0, "demoted": 0 });
    for (level, demoted, n) in distribution {
        let key = if demoted { "demoted".to_owned() } else { level };
        counts[key.as_str()] = json!(counts[key.as_str()].as_i64().unwrap_or(0) + n);
    }
    let next = state
        .settings
        .learning
        .retrain_cron
        .as_ref()
        .and_then(|c| retrain::next_tick(c, chrono::Utc::now()));
    Ok(AppJson(json!({
        "last_run": last,
        "next_scheduled_run": next,
        "schedule": state.settings.learning.retrain_cron.as_ref().map(|c| c.pattern.to_string()),
        "confidence_distribution": counts,
        "policy_version": weights::policy_version(pool).await?,
        "engine_policy_version": state.engine.policy_version(),
        "snapshots": store::snapshot_ids(pool).await?,
        "shadow": crate::store::shadow::totals(pool, None, None).await?,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetrainQuery {
    /// Preview only (default true).
    #[serde(default)]
    dry_run: Option<bool>,
}

/// `POST /admin/learning/retrain?dry_run=true|false` (default true: preview first).
#[utoipa::path(post, path = "/admin/learning/retrain", tag = "admin", params(RetrainQuery),
    responses((status = 200, description = "Dry run: the preview", body = super::openapi::RetrainPreview),
              (status = 202, description = "Queued; poll `status_url`", body = super::openapi::RetrainQueued), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn retrain_now(
    State(state): State<AppState>,
    Query(q): Query<RetrainQuery>,
) -> Result<(StatusCode, AppJson<Value>), ApiError> {
    let pool = &state.db.pool;
    if q.dry_run.unwrap_or(true) {
        let run_id = learning::new_run_id();
        let report =
            learning::retrain(pool, &state.engine, &state.settings.learning, &run_id, true).await?;
        let preview: Vec<Value> = report
            .changes
            .iter()
            .map(|c| {
                json!({
                    "pattern": c.pattern, "provider": c.provider, "model": c.model,
                    "before": c.before, "after": c.after, "routing_change": c.routing_change,
                })
            })
            .collect();
        return Ok((
            StatusCode::OK,
            AppJson(json!({
                "run_id": run_id,
                "dry_run": true,
                "message": report.message,
                "changes_preview": preview,
                "predictor_preview": report.predictor,
                "off_policy": report.off_policy,
            })),
        ));
    }
    let run_id = retrain::queue_manual(pool).await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(json!({
            "run_id": run_id,
            "status": RunStatus::Queued,
            "status_url": format!("/admin/learning/runs/{run_id}"),
        })),
    ))
}

/// `GET /admin/learning/runs/{run_id}`
#[utoipa::path(get, path = "/admin/learning/runs/{run_id}", tag = "admin",
    params(("run_id" = String, Path, description = "The run id")),
    responses((status = 200, description = "The run, with before/after metrics and changes", body = crate::store::learning::RunRecord), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn run_status(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<AppJson<store::RunRecord>, ApiError> {
    let missing = || ApiError::not_found(format!("no retraining run {run_id:?}"));
    if !super::validate::is_plausible_id(&run_id) {
        return Err(missing());
    }
    store::run(&state.db.pool, &run_id)
        .await?
        .map(AppJson)
        .ok_or_else(missing)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
}

/// `POST /admin/learning/rollback {run_id?, pattern?}`: restore the weights as they were before
/// `run_id` (default: before the most recent applied run or rollback) — every pattern's, or only
/// `pattern`'s. Naming a rollback's run id undoes that rollback.
#[utoipa::path(post, path = "/admin/learning/rollback", tag = "admin",
    request_body(content = Option<RollbackBody>, description = "Optional: which run to undo, which pattern"),
    responses((status = 200, description = "What was restored", body = crate::store::learning::Rollback), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<AppJson<store::Rollback>, ApiError> {
    // The body is optional: empty means "the most recent snapshot".
    let body: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_field("body", format!("not a rollback request: {e}")))?
    };
    let of_run = validate::text_param("run_id", body.run_id)?;
    if let Some(p) = &body.pattern
        && crate::types::Pattern::parse(p).is_none()
    {
        return Err(ApiError::invalid_field(
            "pattern",
            format!("unknown pattern {p:?}"),
        ));
    }
    let run_id = learning::new_run_id();
    store::rollback(
        &state.db.pool,
        &run_id,
        of_run.as_deref(),
        body.pattern.as_deref(),
    )
    .await?
    .map(|rb| {
        use crate::telemetry::names;
        metrics::counter!(names::ROLLBACKS, "trigger" => "manual").increment(1);
        metrics::gauge!(names::POLICY_VERSION).set(rb.policy_version as f64);
        AppJson(rb)
    })
    .ok_or_else(|| match of_run {
        Some(r) => ApiError::not_found(format!("no snapshot kept for run {r:?}")),
        None => ApiError::not_found("no snapshot to roll back to"),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendsQuery {
    pattern: Option<String>,
    model: Option<String>,
    bucket: Option<String>,
    since: Option<String>,
}

/// `GET /admin/performance/trends?pattern=&model=&bucket=day|week&since=`
#[utoipa::path(get, path = "/admin/performance/trends", tag = "admin", params(TrendsQuery),
    responses((status = 200, description = "Quality, correctness, volume and cost per day or week", body = super::openapi::TrendsDoc), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn trends(
    State(state): State<AppState>,
    Query(q): Query<TrendsQuery>,
) -> Result<AppJson<Value>, ApiError> {
    let week = match q.bucket.as_deref() {
        None | Some("day") => false,
        Some("week") => true,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "bucket",
                format!("{other:?} is not day or week"),
            ));
        }
    };
    let since = validate::since(q.since.as_deref())?;
    let pattern = validate::text_param("pattern", q.pattern)?;
    let model = validate::text_param("model", q.model)?;
    let points = feedback::trends(
        &state.db.pool,
        pattern.as_deref(),
        model.as_deref(),
        week,
        since,
    )
    .await?;
    Ok(AppJson(json!({
        "bucket": if week { "week" } else { "day" },
        "pattern": pattern,
        "model": model,
        "points": points,
    })))
}

/// `GET /admin/alerts`: the most recent 100 alerts, newest first.
#[utoipa::path(get, path = "/admin/alerts", tag = "admin",
    responses((status = 200, description = "The most recent 100 alerts", body = super::openapi::AlertsDoc), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn alerts(State(state): State<AppState>) -> Result<AppJson<Value>, ApiError> {
    let alerts = crate::store::alerts::list(&state.db.pool, 100).await?;
    Ok(AppJson(json!({ "alerts": alerts })))
}
