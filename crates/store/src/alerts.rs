//! `alerts` and the rating comparison behind the drift check.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// The most recent retrain that changed routing (scheduled, manual or after a bootstrap load;
/// not a dry run).
pub async fn last_applied_retrain(
    pool: &PgPool,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, finished_at FROM retraining_runs
         WHERE NOT dry_run AND status = 'succeeded'
           AND trigger IN ('scheduled', 'manual', 'bootstrap')
           AND changes_count > 0 AND finished_at IS NOT NULL
         ORDER BY finished_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// One pattern's ratings on both sides of a retrain, one value per rated request (a request's
/// ratings averaged first).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SideBySide {
    pub pattern: String,
    pub before_mean: Option<f64>,
    pub before_n: i64,
    pub before_var: Option<f64>,
    pub after_mean: Option<f64>,
    pub after_n: i64,
    pub after_var: Option<f64>,
    /// The retrain was rolled back for this pattern (a rollback run of it, scoped to the pattern
    /// or to all): the policy now serving it is the one before.
    pub rolled_back: bool,
}

/// Per pattern: ratings of requests routed by the policy version retrain `run_id` installed
/// (after) against those routed by earlier versions within `baseline_days` before it (before) —
/// by which policy routed the request, not by when the rating was given. Empty when the run
/// left no snapshot.
pub async fn compare_by_policy(
    pool: &PgPool,
    run_id: &str,
    baseline_days: u32,
) -> Result<Vec<SideBySide>, sqlx::Error> {
    sqlx::query_as(
        "WITH s AS (
             SELECT policy_version AS p, created_at AS at FROM routing_snapshots
             WHERE retraining_run_id = $1 ORDER BY id LIMIT 1
         ), rated AS (
             SELECT f.prompt_pattern AS pattern, avg(f.quality_score)::float8 AS q,
                    min((r.route ->> 'policy_version')::bigint) AS v, min(s.p) AS p
             FROM response_feedback f
             JOIN requests r ON r.request_id = f.request_id
             CROSS JOIN s
             WHERE f.prompt_pattern IS NOT NULL
               AND jsonb_typeof(r.route -> 'policy_version') = 'number'
               AND r.created_at >= s.at - make_interval(days => $2)
             GROUP BY f.request_id, f.prompt_pattern
         )
         SELECT pattern,
                avg(q) FILTER (WHERE v <= p) AS before_mean,
                count(*) FILTER (WHERE v <= p) AS before_n,
                var_samp(q) FILTER (WHERE v <= p) AS before_var,
                avg(q) FILTER (WHERE v = p + 1) AS after_mean,
                count(*) FILTER (WHERE v = p + 1) AS after_n,
                var_samp(q) FILTER (WHERE v = p + 1) AS after_var,
                EXISTS (
                    SELECT 1 FROM retraining_runs rb, jsonb_array_elements(rb.changes) c
                    WHERE rb.trigger = 'rollback' AND jsonb_typeof(rb.changes) = 'array'
                      AND c ->> 'of_run' = $1
                      AND (c ->> 'pattern' IS NULL OR c ->> 'pattern' = rated.pattern)
                ) AS rolled_back
         FROM rated GROUP BY 1 ORDER BY 1",
    )
    .bind(run_id)
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
