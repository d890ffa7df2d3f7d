//! `retraining_runs`, `routing_weights` writes, `routing_snapshots`,
//! `model_performance_history`: what the trainer reads and writes.

use chrono::{DateTime, Utc};
use optimizer_types::{Confidence, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::predictor::StoredFit;
use super::weights::bump_policy_version;

/// Ratings of one pattern × model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub pattern: String,
    pub provider: String,
    pub model: String,
    pub samples: i64,
    pub avg_quality: f64,
    /// Share of ratings with `is_correct = true` among those that say (0 when none say).
    pub correctness: f64,
    pub last_feedback_at: Option<DateTime<Utc>>,
    pub avg_cost_usd: Option<f64>,
    pub total_cost_usd: Option<f64>,
    /// Mean complexity score of the rated requests (the estimate's reference complexity).
    #[serde(default)]
    pub avg_complexity: Option<f64>,
}

/// A weight as stored (before a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    pub pattern: String,
    pub provider: String,
    pub model: String,
    pub quality: f64,
    pub confidence: Confidence,
    pub demoted: bool,
    pub samples: i64,
    pub avg_quality: f64,
    pub correctness: f64,
    pub last_feedback_at: Option<DateTime<Utc>>,
}

/// What a weight says, for change lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightState {
    pub quality: f64,
    pub confidence: Confidence,
    pub demoted: bool,
    pub samples: i64,
}

/// One planned change to `routing_weights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub pattern: String,
    pub provider: String,
    pub model: String,
    pub before: Option<WeightState>,
    pub after: WeightState,
    /// What it means for routing, in words.
    pub routing_change: String,
    /// The ratings behind it.
    #[serde(skip)]
    pub aggregate: Option<Aggregate>,
}

/// The queue retrain jobs go to.
pub const RETRAIN_QUEUE: &str = "retrain";

#[derive(sqlx::FromRow)]
struct AggregateSql {
    pattern: String,
    provider: String,
    model: String,
    samples: i64,
    avg_quality: f64,
    correctness: Option<f64>,
    last_feedback_at: Option<DateTime<Utc>>,
    avg_cost_usd: Option<f64>,
    total_cost_usd: Option<f64>,
    avg_complexity: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct WeightSql {
    pattern: String,
    provider: String,
    model: String,
    quality_estimate: f32,
    confidence_level: String,
    demoted: bool,
    sample_count: i32,
    avg_quality_score: f32,
    correctness_rate: f32,
    last_feedback_at: Option<DateTime<Utc>>,
}

/// Ratings per pattern × provider × model since `since` (None: all time), with the cost of the
/// rated answers. One sample per rated request: several ratings of a request (by different
/// users) are averaged first, so ten ratings of one answer count once.
pub async fn aggregates(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Aggregate>, sqlx::Error> {
    let rows: Vec<AggregateSql> = sqlx::query_as(
        "WITH per_request AS (
             SELECT f.request_id, min(f.prompt_pattern) AS pattern,
                    min(f.selected_provider) AS provider, min(f.selected_model) AS model,
                    avg(f.quality_score)::float8 AS quality,
                    (avg(CASE WHEN f.is_correct THEN 1.0 ELSE 0.0 END)
                        FILTER (WHERE f.is_correct IS NOT NULL))::float8 AS correct,
                    max(f.updated_at) AS last_feedback_at
             FROM response_feedback f
             WHERE ($1::timestamptz IS NULL OR f.timestamp >= $1)
               AND f.prompt_pattern IS NOT NULL AND f.selected_provider IS NOT NULL
               AND f.selected_model IS NOT NULL
             GROUP BY f.request_id)
         SELECT p.pattern, p.provider, p.model, count(*) AS samples,
                avg(p.quality)::float8 AS avg_quality, avg(p.correct)::float8 AS correctness,
                max(p.last_feedback_at) AS last_feedback_at, avg(m.cost_usd) AS avg_cost_usd,
                sum(m.cost_usd) AS total_cost_usd,
                avg(m.complexity_score)::float8 AS avg_complexity
         FROM per_request p
         LEFT JOIN routing_metrics m ON m.request_id = p.request_id
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Aggregate {
            pattern: r.pattern,
            provider: r.provider,
            model: r.model,
            samples: r.samples,
            avg_quality: r.avg_quality,
            correctness: r.correctness.unwrap_or(0.0),
            last_feedback_at: r.last_feedback_at,
            avg_cost_usd: r.avg_cost_usd,
            total_cost_usd: r.total_cost_usd,
            avg_complexity: r.avg_complexity,
        })
        .collect())
}

/// Every stored weight.
pub async fn weights(pool: &PgPool) -> Result<Vec<Weight>, sqlx::Error> {
    let rows: Vec<WeightSql> = sqlx::query_as(
        "SELECT pattern, provider, model, quality_estimate, confidence_level, demoted,
                    sample_count, avg_quality_score, correctness_rate, last_feedback_at
             FROM routing_weights ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Weight {
            pattern: r.pattern,
            provider: r.provider,
            model: r.model,
            quality: f64::from(r.quality_estimate),
            confidence: Confidence::parse(&r.confidence_level).unwrap_or(Confidence::Low),
            demoted: r.demoted,
            samples: i64::from(r.sample_count),
            avg_quality: f64::from(r.avg_quality_score),
            correctness: f64::from(r.correctness_rate),
            last_feedback_at: r.last_feedback_at,
        })
        .collect())
}

/// Records a queued run (and, for scheduled runs, its tick: a second insert for the same tick
/// returns None — N worker processes, one run). The job is pushed in the same transaction.
pub async fn queue_run(
    pool: &PgPool,
    run_id: &str,
    trigger: &str,
    scheduled_for: Option<DateTime<Utc>>,
    job: Option<apalis_postgres::PgTask>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO retraining_runs (run_id, trigger, scheduled_for, dry_run, status)
         VALUES ($1, $2, $3, false, 'queued')
         ON CONFLICT (scheduled_for) DO NOTHING",
    )
    .bind(run_id)
    .bind(trigger)
    .bind(scheduled_for)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        tx.rollback().await?;
        return Ok(false);
    }
    if let Some(job) = job {
        apalis_postgres::queries::push_tasks(&mut *tx, RETRAIN_QUEUE, vec![job])
            .await
            .map_err(|e| match e {
                apalis_postgres::Error::Database(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Starts a queued run (or one left `running` for over 10 minutes by a dead worker). False: it
/// is finished or running elsewhere.
pub async fn claim_run(pool: &PgPool, run_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE retraining_runs SET status = 'running', started_at = now()
         WHERE run_id = $1 AND (status = 'queued'
             OR (status = 'running' AND started_at < now() - interval '10 minutes'))",
    )
    .bind(run_id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Records a finished dry run: only its own log entry.
pub async fn record_dry_run(
    pool: &PgPool,
    run_id: &str,
    before: &Value,
    changes: &[Change],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retraining_runs (run_id, trigger, dry_run, status, finished_at,
             before_metrics, after_metrics, changes, changes_count)
         VALUES ($1, 'manual', true, 'succeeded', now(), $2, $2, $3, $4)",
    )
    .bind(run_id)
    .bind(before)
    .bind(serde_json::to_value(changes).unwrap_or(Value::Null))
    .bind(i32::try_from(changes.len()).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// A computed run to apply.
#[derive(Debug, Clone, Copy)]
pub struct AppliedRun<'a> {
    pub run_id: &'a str,
    pub aggregates: &'a [Aggregate],
    /// The confidence of each aggregate, same order.
    pub confidences: &'a [Confidence],
    pub changes: &'a [Change],
    pub before: &'a Value,
    pub after: &'a Value,
    pub snapshots_kept: u32,
    /// A newly fitted per-prompt predictor to install (None: keep the current one).
    pub predictor: Option<&'a [StoredFit]>,
    /// The quality-target knobs calibrated for that predictor (Some(None): none supported;
    /// None: keep the current ones, with the current predictor).
    pub calibration: Option<Option<&'a Value>>,
}

/// Applies a run in one transaction: snapshot the weights as they were, write the changed
/// weights, the run's performance history, prune old snapshots, bump the policy version
/// (NOTIFY), and close the run.
pub async fn apply(pool: &PgPool, run: &AppliedRun<'_>) -> Result<Option<i64>, sqlx::Error> {
    let AppliedRun {
        run_id,
        aggregates,
        confidences,
        changes,
        before,
        after,
        snapshots_kept,
        predictor,
        calibration,
    } = *run;
    let mut tx = pool.begin().await?;
    let mut version = None;
    if !changes.is_empty() || predictor.is_some() {
        let snapshot_id = snapshot(&mut tx, run_id).await?;
        super::predictor::snapshot(&mut tx, snapshot_id).await?;
        if let Some(fits) = predictor {
            super::predictor::replace(&mut tx, run_id, fits).await?;
        }
        if let Some(calibration) = calibration {
            sqlx::query("UPDATE routing_policy SET calibration = $1")
                .bind(calibration)
                .execute(&mut *tx)
                .await?;
        }
        for c in changes {
            let a = c.aggregate.as_ref();
            sqlx::query(
                "INSERT INTO routing_weights (pattern, provider, model, avg_quality_score,
                     correctness_rate, sample_count, confidence_level, quality_estimate,
                     avg_cost_usd, last_feedback_at, retraining_run_id, demoted, avg_complexity,
                     updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
                 ON CONFLICT (pattern, provider, model) DO UPDATE SET
                     avg_quality_score = EXCLUDED.avg_quality_score,
                     correctness_rate = EXCLUDED.correctness_rate,
                     sample_count = EXCLUDED.sample_count,
                     confidence_level = EXCLUDED.confidence_level,
                     quality_estimate = EXCLUDED.quality_estimate,
                     avg_cost_usd = EXCLUDED.avg_cost_usd,
                     last_feedback_at = EXCLUDED.last_feedback_at,
                     retraining_run_id = EXCLUDED.retraining_run_id,
                     demoted = EXCLUDED.demoted, avg_complexity = EXCLUDED.avg_complexity,
                     updated_at = now()",
            )
            .bind(&c.pattern)
            .bind(&c.provider)
            .bind(&c.model)
            .bind(a.map_or(1.0, |a| a.avg_quality.clamp(1.0, 5.0)) as f32)
            .bind(a.map_or(0.0, |a| a.correctness) as f32)
            .bind(i32::try_from(c.after.samples).unwrap_or(i32::MAX))
            .bind(c.after.confidence.as_str())
            .bind(c.after.quality as f32)
            .bind(a.and_then(|a| a.avg_cost_usd))
            .bind(a.and_then(|a| a.last_feedback_at))
            .bind(run_id)
            .bind(c.after.demoted)
            .bind(
                a.and_then(|a| a.avg_complexity)
                    .map(|c| c.clamp(0.0, 1.0) as f32),
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM routing_snapshots WHERE id NOT IN
                 (SELECT id FROM routing_snapshots ORDER BY id DESC LIMIT $1)",
        )
        .bind(i64::from(snapshots_kept))
        .execute(&mut *tx)
        .await?;
        version = Some(bump_policy_version(&mut tx).await?);
    }
    for (a, confidence) in aggregates.iter().zip(confidences) {
        sqlx::query(
            "INSERT INTO model_performance_history (pattern, provider, model, avg_quality_score,
                 correctness_rate, sample_count, confidence_level, avg_cost, total_cost,
                 updated_at, retraining_run_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10)
             ON CONFLICT (pattern, provider, model, retraining_run_id) DO NOTHING",
        )
        .bind(&a.pattern)
        .bind(&a.provider)
        .bind(&a.model)
        .bind(a.avg_quality as f32)
        .bind(a.correctness as f32)
        .bind(i32::try_from(a.samples).unwrap_or(i32::MAX))
        .bind(confidence.as_str())
        .bind(a.avg_cost_usd.map(|c| c as f32))
        .bind(a.total_cost_usd.map(|c| c as f32))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    }
    close_run(
        &mut *tx,
        run_id,
        RunStatus::Succeeded,
        before,
        after,
        changes,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

/// Saves the weights as they are; returns the snapshot's id.
async fn snapshot(tx: &mut Transaction<'_, Postgres>, run_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO routing_snapshots (retraining_run_id, policy_version, weights)
         SELECT $1, (SELECT version FROM routing_policy),
                coalesce(jsonb_agg(to_jsonb(w) ORDER BY pattern, provider, model), '[]'::jsonb)
         FROM routing_weights w
         RETURNING id",
    )
    .bind(run_id)
    .fetch_one(&mut **tx)
    .await
}

async fn close_run(
    conn: impl sqlx::Executor<'_, Database = Postgres>,
    run_id: &str,
    status: RunStatus,
    before: &Value,
    after: &Value,
    changes: &[Change],
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE retraining_runs SET status = $6, finished_at = now(),
             before_metrics = $2, after_metrics = $3, changes = $4, changes_count = $5,
             error = COALESCE($7, error)
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(before)
    .bind(after)
    .bind(serde_json::to_value(changes).unwrap_or(Value::Null))
    .bind(i32::try_from(changes.len()).unwrap_or(i32::MAX))
    .bind(status.as_str())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// How run `run_id` was triggered (`scheduled`, `manual`, `rollback`, `bootstrap`); None: no such run.
pub async fn trigger_of(pool: &PgPool, run_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT trigger FROM retraining_runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
}

/// Ends run `run_id` as held: computed, logged with its changes and metrics, not applied.
pub async fn hold_run(
    pool: &PgPool,
    run_id: &str,
    before: &Value,
    after: &Value,
    changes: &[Change],
    message: &str,
) -> Result<(), sqlx::Error> {
    close_run(
        pool,
        run_id,
        RunStatus::Held,
        before,
        after,
        changes,
        Some(message),
    )
    .await
}

pub async fn fail_run(pool: &PgPool, run_id: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE retraining_runs SET status = 'failed', finished_at = now(), error = $2
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Pattern × model estimates that a rollback took back — the changes of the run it rolled back
/// and of every run applied after that one before the rollback — with when (the latest
/// rollback of each): a later retrain must not re-apply them without ratings newer than that.
pub async fn rolled_back(
    pool: &PgPool,
) -> Result<Vec<(String, String, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c ->> 'pattern', c ->> 'provider', c ->> 'model', max(rb.finished_at)
         FROM retraining_runs rb
         CROSS JOIN LATERAL jsonb_array_elements(rb.changes) AS x
         JOIN retraining_runs target ON target.run_id = x ->> 'of_run'
         JOIN retraining_runs r ON r.trigger IN ('scheduled', 'manual', 'bootstrap') AND NOT r.dry_run
              AND r.status = 'succeeded' AND r.started_at >= target.started_at
              AND r.finished_at <= rb.finished_at
         CROSS JOIN LATERAL jsonb_array_elements(r.changes) AS c
         WHERE rb.trigger = 'rollback' AND rb.status = 'succeeded' AND rb.finished_at IS NOT NULL
           AND c ? 'pattern' AND c ? 'provider' AND c ? 'model'
           -- a scoped rollback took back only its pattern's changes
           AND (NOT x ? 'pattern' OR x ->> 'pattern' = c ->> 'pattern')
           -- a rollback that was itself rolled back (undone) took nothing back
           AND NOT EXISTS (
               SELECT 1 FROM retraining_runs undo
               CROSS JOIN LATERAL jsonb_array_elements(undo.changes) AS u
               WHERE undo.trigger = 'rollback' AND undo.status = 'succeeded'
                 AND u ->> 'of_run' = rb.run_id)
         GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
}

/// What a rollback did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Rollback {
    pub run_id: String,
    pub restored_snapshot_id: i64,
    pub restored_from_run_id: String,
    /// The pattern a scoped rollback restored (None: all of them).
    pub pattern: Option<String>,
    pub weights_restored: i64,
    /// The snapshot of what this rollback replaced: rolling back `run_id` (this rollback)
    /// restores it.
    pub replaced_snapshot_id: i64,
    pub policy_version: i64,
}

/// Restores a snapshot: the one taken before `of_run` applied (None: the most recent one) —
/// every pattern's weights and the per-prompt predictor, or with `pattern` only that pattern's
/// weights (the predictor is shared by all patterns and stays). What it replaces is snapshotted
/// first, under this rollback's run id, so a rollback can itself be rolled back. Recorded as a
/// run with trigger `rollback`. None: no such snapshot.
pub async fn rollback(
    pool: &PgPool,
    rollback_run_id: &str,
    of_run: Option<&str>,
    pattern: Option<&str>,
) -> Result<Option<Rollback>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let snap: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, retraining_run_id FROM routing_snapshots
         WHERE $1::text IS NULL OR retraining_run_id = $1
         ORDER BY id DESC LIMIT 1 FOR UPDATE",
    )
    .bind(of_run)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((snapshot_id, from_run)) = snap else {
        tx.rollback().await?;
        return Ok(None);
    };
    // The run first: the snapshot of what this rollback replaces is filed under it.
    let mut change =
        serde_json::json!({ "restored_snapshot_id": snapshot_id, "of_run": from_run.clone() });
    if let Some(p) = pattern {
        change["pattern"] = p.into();
    }
    sqlx::query(
        "INSERT INTO retraining_runs (run_id, trigger, dry_run, status, started_at, finished_at,
             changes, changes_count, restored_snapshot_id)
         VALUES ($1, 'rollback', false, 'succeeded', now(), now(), $2, 0, $3)",
    )
    .bind(rollback_run_id)
    .bind(serde_json::json!([change]))
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    let replaced = snapshot(&mut tx, rollback_run_id).await?;
    super::predictor::snapshot(&mut tx, replaced).await?;
    // The knobs were calibrated for the predictor being replaced: none until the next retrain
    // (the engine routes by the share rule meanwhile).
    sqlx::query("UPDATE routing_policy SET calibration = NULL")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM routing_weights WHERE $1::text IS NULL OR pattern = $1")
        .bind(pattern)
        .execute(&mut *tx)
        .await?;
    let restored = sqlx::query(
        "INSERT INTO routing_weights
         SELECT * FROM jsonb_populate_recordset(NULL::routing_weights,
             (SELECT weights FROM routing_snapshots WHERE id = $1))
         WHERE $2::text IS NULL OR pattern = $2",
    )
    .bind(snapshot_id)
    .bind(pattern)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if pattern.is_none() {
        super::predictor::restore(&mut tx, snapshot_id).await?;
    }
    sqlx::query("UPDATE routing_snapshots SET restored_at = now() WHERE id = $1")
        .bind(snapshot_id)
        .execute(&mut *tx)
        .await?;
    let version = bump_policy_version(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(Rollback {
        run_id: rollback_run_id.to_owned(),
        restored_snapshot_id: snapshot_id,
        restored_from_run_id: from_run,
        pattern: pattern.map(str::to_owned),
        weights_restored: i64::try_from(restored).unwrap_or(i64::MAX),
        replaced_snapshot_id: replaced,
        policy_version: version,
    }))
}

/// One run as logged.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunRecord {
    pub run_id: String,
    pub trigger: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// `queued`, `running`, `succeeded`, `failed`, `held`…
    #[schema(value_type = String)]
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub before_metrics: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after_metrics: Option<Value>,
    /// The changes it made (pattern × model, before and after).
    #[schema(value_type = Vec<Object>)]
    pub changes: Value,
    pub changes_count: i32,
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "run_id, trigger, scheduled_for, dry_run, status, started_at, \
                           finished_at, before_metrics, after_metrics, changes, changes_count, error";

pub async fn run(pool: &PgPool, run_id: &str) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM retraining_runs WHERE run_id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await
}

/// The most recent non-dry run.
pub async fn last_run(pool: &PgPool) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM retraining_runs WHERE NOT dry_run
         ORDER BY started_at DESC LIMIT 1"
    )))
    .fetch_optional(pool)
    .await
}

/// (confidence, demoted, count) over routing_weights.
pub async fn confidence_distribution(
    pool: &PgPool,
) -> Result<Vec<(String, bool, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT confidence_level, demoted, count(*) FROM routing_weights GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// Snapshot ids, newest first.
pub async fn snapshot_ids(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM routing_snapshots ORDER BY id DESC")
        .fetch_all(pool)
        .await
}
