//! `shadow_samples`, `shadow_scores` and `shadow_spend`: shadow comparisons (issue 40) — the
//! sampled requests waiting for their shadow calls and judgements, the judged answers the
//! retrain learns from, and every call paid for.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::predictor::RatedRequest;

/// The queue of shadow jobs (`{"request_id": …}`).
pub const SHADOW_QUEUE: &str = "shadow";

/// A sampled request to queue.
#[derive(Debug, Clone)]
pub struct NewSample<'a> {
    pub request_id: &'a str,
    pub api_key_id: Option<&'a str>,
    /// The provider request as the served model got it.
    pub input: Value,
    /// `{"provider", "model", "answer"}`.
    pub served: Value,
    /// `[{"provider", "model", "propensity"}]`.
    pub plan: Value,
}

/// A sampled request as its job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sample {
    pub request_id: String,
    pub api_key_id: Option<String>,
    pub input: Value,
    pub served: Value,
    pub plan: Value,
    /// "provider/model" → the shadow answer received.
    pub answers: Value,
}

/// Stores the sample and queues its job in one transaction; a sample already stored (a re-run
/// of the request's job) is left as it is. Returns whether it was new.
pub async fn enqueue(
    pool: &PgPool,
    sample: &NewSample<'_>,
    job: apalis_postgres::PgTask,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO shadow_samples (request_id, api_key_id, input, served, plan)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(sample.request_id)
    .bind(sample.api_key_id)
    .bind(&sample.input)
    .bind(&sample.served)
    .bind(&sample.plan)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        apalis_postgres::queries::push_tasks(&mut *tx, SHADOW_QUEUE, vec![job])
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("queueing the shadow job: {e}")))?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The sample of `request_id` (None: done or dropped).
pub async fn load(pool: &PgPool, request_id: &str) -> Result<Option<Sample>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_id, api_key_id, input, served, plan, answers FROM shadow_samples
         WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await
}

/// One paid shadow or judge call.
#[derive(Debug, Clone)]
pub struct Spend<'a> {
    pub request_id: &'a str,
    /// `shadow` or `judge`.
    pub kind: &'static str,
    pub provider: &'a str,
    pub model: &'a str,
    pub api_key_id: Option<&'a str>,
    pub cost_usd: f64,
    /// Also add it to the key's daily and monthly spend (`SHADOW_BILLING=key`).
    pub bill_key: bool,
}

async fn record_spend(
    tx: &mut Transaction<'_, Postgres>,
    spend: &Spend<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO shadow_spend (request_id, kind, provider, model, api_key_id, cost_usd)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(spend.request_id)
    .bind(spend.kind)
    .bind(spend.provider)
    .bind(spend.model)
    .bind(spend.api_key_id)
    .bind(spend.cost_usd.max(0.0))
    .execute(&mut **tx)
    .await?;
    if let (true, Some(key)) = (spend.bill_key, spend.api_key_id) {
        sqlx::query(
            "INSERT INTO key_spend AS s (key_id, scope, period, period_start, spent_usd)
             SELECT $1, '', p, date_trunc(p, now(), 'UTC'), $2
             FROM unnest(ARRAY['day', 'month']) AS p
             WHERE EXISTS (SELECT 1 FROM api_keys WHERE key_id = $1)
             ON CONFLICT (key_id, scope, period, period_start) DO UPDATE
                 SET spent_usd = s.spent_usd + EXCLUDED.spent_usd",
        )
        .bind(key)
        .bind(spend.cost_usd.max(0.0))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Records a shadow call and keeps its answer with the sample, in one transaction (a re-run
/// finds the answer and does not call again).
pub async fn save_answer(
    pool: &PgPool,
    spend: &Spend<'_>,
    answer: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    record_spend(&mut tx, spend).await?;
    sqlx::query(
        "UPDATE shadow_samples SET answers = answers || jsonb_build_object($2::text, $3::text)
         WHERE request_id = $1",
    )
    .bind(spend.request_id)
    .bind(format!("{}/{}", spend.provider, spend.model))
    .bind(answer)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// One judged answer.
#[derive(Debug, Clone)]
pub struct Score<'a> {
    pub request_id: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub served: bool,
    pub propensity: f64,
    pub grade: u8,
    pub correct: bool,
    pub judge: &'a str,
}

/// Records a judge call and, when it gave a verdict, the score (once per request and model),
/// in one transaction. Returns whether the score was new.
pub async fn save_judgement(
    pool: &PgPool,
    spend: &Spend<'_>,
    score: Option<&Score<'_>>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    record_spend(&mut tx, spend).await?;
    let mut new = false;
    if let Some(s) = score {
        new = sqlx::query(
            "INSERT INTO shadow_scores (request_id, provider, model, served, propensity, grade,
                 correct, judge)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(s.request_id)
        .bind(s.provider)
        .bind(s.model)
        .bind(s.served)
        .bind(s.propensity.clamp(f64::MIN_POSITIVE, 1.0))
        .bind(i16::from(s.grade))
        .bind(s.correct)
        .bind(s.judge)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
    }
    tx.commit().await?;
    Ok(new)
}

/// The (provider, model) pairs of `request_id` already judged.
pub async fn judged(pool: &PgPool, request_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT provider, model FROM shadow_scores WHERE request_id = $1")
        .bind(request_id)
        .fetch_all(pool)
        .await
}

/// Ends a sample: nothing of its request is kept past this.
pub async fn remove(pool: &PgPool, request_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM shadow_samples WHERE request_id = $1")
        .bind(request_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Shadow and judge spend since the start of the current UTC day, all processes.
pub async fn spent_today(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(cost_usd), 0)::float8 FROM shadow_spend
         WHERE created_at >= date_trunc('day', now(), 'UTC')",
    )
    .fetch_one(pool)
    .await
}

/// Shadow comparisons in a period, for `/routing/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ShadowTotals {
    /// Requests with at least one judged answer.
    pub requests_judged: i64,
    /// Judged answers (the served ones included).
    pub scores: i64,
    /// Spent on shadow answers, USD.
    pub shadow_cost_usd: f64,
    /// Spent on judgements, USD.
    pub judge_cost_usd: f64,
    /// Sampled requests still waiting for their calls.
    pub pending: i64,
}

/// Totals since `since` (None: all time), for one key's requests when `key_id` is set.
pub async fn totals(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    key_id: Option<&str>,
) -> Result<ShadowTotals, sqlx::Error> {
    sqlx::query_as(
        "SELECT
            (SELECT count(DISTINCT s.request_id) FROM shadow_scores s
               JOIN requests r ON r.request_id = s.request_id
              WHERE ($1::timestamptz IS NULL OR s.created_at >= $1)
                AND ($2::text IS NULL OR r.api_key_id = $2)) AS requests_judged,
            (SELECT count(*) FROM shadow_scores s
               JOIN requests r ON r.request_id = s.request_id
              WHERE ($1::timestamptz IS NULL OR s.created_at >= $1)
                AND ($2::text IS NULL OR r.api_key_id = $2)) AS scores,
            (SELECT COALESCE(sum(cost_usd) FILTER (WHERE kind = 'shadow'), 0)::float8
               FROM shadow_spend WHERE ($1::timestamptz IS NULL OR created_at >= $1)
                AND ($2::text IS NULL OR api_key_id = $2)) AS shadow_cost_usd,
            (SELECT COALESCE(sum(cost_usd) FILTER (WHERE kind = 'judge'), 0)::float8
               FROM shadow_spend WHERE ($1::timestamptz IS NULL OR created_at >= $1)
                AND ($2::text IS NULL OR api_key_id = $2)) AS judge_cost_usd,
            (SELECT count(*) FROM shadow_samples
              WHERE $2::text IS NULL OR api_key_id = $2) AS pending",
    )
    .bind(since)
    .bind(key_id)
    .fetch_one(pool)
    .await
}

/// At most `limit` judged answers since `since` (newest first) as samples for the retrain, in
/// the shape of rated requests: request id `shadow:REQUEST`, the grade as stars, the verdict as
/// correctness, the propensity of observing that model's answer on the request, the prompt's
/// pattern and features as stored with the request (scores of requests no longer stored are
/// skipped).
pub async fn samples(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RatedRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT 'shadow:' || s.request_id AS request_id, r.route->>'pattern' AS pattern,
                s.provider, s.model, s.grade::float8 AS avg_quality,
                (CASE WHEN s.correct THEN 1.0 ELSE 0.0 END)::float8 AS correctness,
                r.features, s.propensity, NULL::text AS strategy,
                (r.route->>'complexity')::float8 AS complexity, false AS auto_route,
                NULL::float8 AS cost_usd, NULL::int8 AS input_tokens
         FROM shadow_scores s
         JOIN requests r ON r.request_id = s.request_id
         WHERE ($1::timestamptz IS NULL OR s.created_at >= $1)
           AND r.route->>'pattern' IS NOT NULL
         ORDER BY s.created_at DESC, s.request_id, s.provider, s.model
         LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct Group {
    pattern: String,
    provider: String,
    model: String,
    samples: i64,
    avg_quality: f64,
    correctness: f64,
    last: DateTime<Utc>,
    complexity: Option<f64>,
}

/// Per pattern × provider × model since `since` (None: all): the judged answers as the trainer's
/// aggregates (mean grade as stars, share judged correct).
pub async fn aggregates(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<crate::learning::Aggregate>, sqlx::Error> {
    let rows: Vec<Group> = sqlx::query_as(
        "SELECT r.route->>'pattern' AS pattern, s.provider, s.model, count(*) AS samples,
                avg(s.grade)::float8 AS avg_quality,
                avg(CASE WHEN s.correct THEN 1.0 ELSE 0.0 END)::float8 AS correctness,
                max(s.created_at) AS last,
                avg((r.route->>'complexity')::float8)::float8 AS complexity
         FROM shadow_scores s
         JOIN requests r ON r.request_id = s.request_id
         WHERE ($1::timestamptz IS NULL OR s.created_at >= $1)
           AND r.route->>'pattern' IS NOT NULL
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|g| crate::learning::Aggregate {
            pattern: g.pattern,
            provider: g.provider,
            model: g.model,
            samples: g.samples,
            avg_quality: g.avg_quality,
            correctness: g.correctness,
            last_feedback_at: Some(g.last),
            avg_cost_usd: None,
            total_cost_usd: None,
            avg_complexity: g.complexity,
        })
        .collect())
}
