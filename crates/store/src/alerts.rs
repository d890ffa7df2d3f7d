//! `alerts` and the rating comparison behind the drift check.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// The most recent retrain that changed routing (scheduled or manual, not a dry run).
pub async fn last_applied_retrain(
    pool: &PgPool,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, finished_at FROM retraining_runs
         WHERE NOT dry_run AND status = 'succeeded' AND trigger IN ('scheduled', 'manual')
           AND changes_count > 0 AND finished_at IS NOT NULL
         ORDER BY finished_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// Per pattern: (pattern, baseline avg, baseline ratings, current avg, current ratings) —
/// baseline = ratings in the `baseline_days` before `at`, current = ratings since `at`.
pub async fn compare(
    pool: &PgPool,
    at: DateTime<Utc>,
    baseline_days: u32,
) -> Result<Vec<(String, Option<f64>, i64, Option<f64>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT prompt_pattern,
                avg(quality_score) FILTER (WHERE timestamp < $1)::float8,
                count(*) FILTER (WHERE timestamp < $1),
                avg(quality_score) FILTER (WHERE timestamp >= $1)::float8,
                count(*) FILTER (WHERE timestamp >= $1)
         FROM response_feedback
         WHERE timestamp >= $1 - make_interval(days => $2) AND prompt_pattern IS NOT NULL
         GROUP BY 1 ORDER BY 1",
    )
    .bind(at)
    .bind(i32::try_from(baseline_days).unwrap_or(i32::MAX))
    .fetch_all(pool)
    .await
}

/// A new alert.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub pattern: Option<&'a str>,
    pub run_id: Option<&'a str>,
    pub message: &'a str,
    pub baseline: Option<f64>,
    pub observed: Option<f64>,
    pub details: Value,
    /// The same condition is raised once.
    pub dedupe_key: &'a str,
}

/// Inserts the alert unless its dedupe key exists; returns its id when new.
pub async fn raise(pool: &PgPool, a: &NewAlert<'_>) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO alerts (kind, severity, pattern, retraining_run_id, message,
             baseline_value, observed_value, details, dedupe_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(a.kind)
    .bind(a.severity)
    .bind(a.pattern)
    .bind(a.run_id)
    .bind(a.message)
    .bind(a.baseline)
    .bind(a.observed)
    .bind(&a.details)
    .bind(a.dedupe_key)
    .fetch_optional(pool)
    .await
}

/// Merges `details` into the alert's details and, if `notified`, stamps `notified_at`.
pub async fn annotate(
    pool: &PgPool,
    id: i64,
    details: Value,
    notified: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET details = details || $2,
             notified_at = CASE WHEN $3 THEN now() ELSE notified_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(details)
    .bind(notified)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AlertRecord {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub kind: String,
    pub severity: String,
    pub pattern: Option<String>,
    pub retraining_run_id: Option<String>,
    pub message: String,
    pub baseline_value: Option<f64>,
    pub observed_value: Option<f64>,
    pub details: Value,
    pub notified_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Recent alerts, newest first.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<AlertRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, kind, severity, pattern, retraining_run_id, message,
                baseline_value, observed_value, details, notified_at, resolved_at
         FROM alerts ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
