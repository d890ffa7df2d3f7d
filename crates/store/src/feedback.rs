//! `response_feedback` and `feedback_aggregates`.

use chrono::{DateTime, Utc};
use optimizer_types::RequestStatus;
use serde::Serialize;
use sqlx::PgPool;

/// The queue feedback_aggregation jobs go to.
pub const AGGREGATION_QUEUE: &str = "feedback_aggregation";

/// A validated rating.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    pub request_id: String,
    pub quality_score: i32,
    pub is_correct: bool,
    pub is_helpful: Option<bool>,
    pub comment: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// The API key rating: only the key that sent a request may rate it (None: anyone — the
    /// admin, or no keys at all).
    pub owner: Option<String>,
}

/// What recording a rating did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Stored {
        feedback_id: i32,
        replaced: bool,
        pattern: String,
        provider: String,
        model: String,
    },
    UnknownRequest,
    /// The request has not finished (its status).
    NotFinished(RequestStatus),
    /// The request failed: there is no answer to rate.
    RequestFailed,
}

/// Stores the rating — copying pattern, provider, model and complexity from the request's
/// routing_metrics row — and queues its aggregation job, in one transaction. A request another
/// API key sent is unknown to this one. A second rating of
/// the same request by the same user (or the same anonymous caller) replaces the first.
pub async fn record(
    pool: &PgPool,
    fb: &NewFeedback,
    job: impl FnOnce(i32) -> apalis_postgres::PgTask,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let metrics: Option<(String, String, String, f32, RequestStatus)> = sqlx::query_as(
        "SELECT prompt_pattern, selected_provider, selected_model, complexity_score, status
         FROM routing_metrics WHERE request_id = $1 AND ($2::text IS NULL OR api_key_id = $2)",
    )
    .bind(&fb.request_id)
    .bind(&fb.owner)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((pattern, provider, model, complexity, status)) = metrics else {
        let status: Option<RequestStatus> = sqlx::query_scalar(
            "SELECT status FROM requests
             WHERE request_id = $1 AND ($2::text IS NULL OR api_key_id = $2)",
        )
        .bind(&fb.request_id)
        .bind(&fb.owner)
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(match status {
            None => Recorded::UnknownRequest,
            Some(s) => Recorded::NotFinished(s),
        });
    };
    if status != RequestStatus::Succeeded {
        return Ok(Recorded::RequestFailed);
    }
    let (feedback_id, replaced): (i32, bool) = sqlx::query_as(
        "INSERT INTO response_feedback (request_id, timestamp, quality_score, is_correct,
             is_helpful, prompt_pattern, selected_provider, selected_model, complexity_score,
             user_id, session_id, comment)
         VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (request_id, (COALESCE(user_id, ''))) DO UPDATE SET
             timestamp = now(), updated_at = now(), quality_score = EXCLUDED.quality_score,
             is_correct = EXCLUDED.is_correct, is_helpful = EXCLUDED.is_helpful,
             session_id = EXCLUDED.session_id, comment = EXCLUDED.comment
         RETURNING id, (xmax <> 0)",
    )
    .bind(&fb.request_id)
    .bind(fb.quality_score)
    .bind(fb.is_correct)
    .bind(fb.is_helpful)
    .bind(&pattern)
    .bind(&provider)
    .bind(&model)
    .bind(complexity)
    .bind(&fb.user_id)
    .bind(&fb.session_id)
    .bind(&fb.comment)
    .fetch_one(&mut *tx)
    .await?;
    apalis_postgres::queries::push_tasks(&mut *tx, AGGREGATION_QUEUE, vec![job(feedback_id)])
        .await
        .map_err(|e| match e {
            apalis_postgres::Error::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    tx.commit().await?;
    Ok(Recorded::Stored {
        feedback_id,
        replaced,
        pattern,
        provider,
        model,
    })
}

/// Recomputes the aggregate of the pattern × model that rating `feedback_id` belongs to.
/// A recomputation, so running it twice (or after a replaced rating) counts nothing twice.
pub async fn aggregate(pool: &PgPool, feedback_id: i32) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "WITH k AS (
             SELECT prompt_pattern, selected_provider, selected_model FROM response_feedback
             WHERE id = $1 AND prompt_pattern IS NOT NULL AND selected_provider IS NOT NULL
               AND selected_model IS NOT NULL
         )
         INSERT INTO feedback_aggregates (pattern, provider, model, sample_count, quality_sum,
             correctness_count, correct_count, updated_at)
         SELECT k.prompt_pattern, k.selected_provider, k.selected_model, count(f.id),
                coalesce(sum(f.quality_score), 0), count(f.is_correct),
                count(*) FILTER (WHERE f.is_correct), now()
         FROM k JOIN response_feedback f ON f.prompt_pattern = k.prompt_pattern
             AND f.selected_provider = k.selected_provider AND f.selected_model = k.selected_model
         GROUP BY 1, 2, 3
         ON CONFLICT (pattern, provider, model) DO UPDATE SET
             sample_count = EXCLUDED.sample_count, quality_sum = EXCLUDED.quality_sum,
             correctness_count = EXCLUDED.correctness_count,
             correct_count = EXCLUDED.correct_count, updated_at = now()",
    )
    .bind(feedback_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done > 0)
}

/// One row of the feedback summary.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SummaryRow {
    pub pattern: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub ratings: i64,
    pub avg_quality: f64,
    pub correctness_rate: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct SummarySql {
    pattern: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    grouping: i32,
    n: i64,
    qsum: i64,
    judged: i64,
    correct: i64,
}

/// Counts, average quality and correctness per model and per pattern (from the aggregates).
pub async fn summary(
    pool: &PgPool,
) -> Result<(SummaryRow, Vec<SummaryRow>, Vec<SummaryRow>), sqlx::Error> {
    let rows: Vec<SummarySql> = sqlx::query_as(
        "SELECT pattern, provider, model, GROUPING(pattern, provider, model) AS grouping,
                    coalesce(sum(sample_count), 0)::bigint AS n,
                    coalesce(sum(quality_sum), 0)::bigint AS qsum,
                    coalesce(sum(correctness_count), 0)::bigint AS judged,
                    coalesce(sum(correct_count), 0)::bigint AS correct
             FROM feedback_aggregates
             GROUP BY GROUPING SETS ((), (provider, model), (pattern))
             ORDER BY 5 DESC NULLS LAST",
    )
    .fetch_all(pool)
    .await?;
    let mut total = SummaryRow {
        pattern: None,
        provider: None,
        model: None,
        ratings: 0,
        avg_quality: 0.0,
        correctness_rate: None,
    };
    let (mut by_model, mut by_pattern) = (Vec::new(), Vec::new());
    for SummarySql {
        pattern,
        provider,
        model,
        grouping,
        n,
        qsum,
        judged,
        correct,
    } in rows
    {
        let row = SummaryRow {
            pattern,
            provider,
            model,
            ratings: n,
            avg_quality: if n > 0 { qsum as f64 / n as f64 } else { 0.0 },
            correctness_rate: (judged > 0).then(|| correct as f64 / judged as f64),
        };
        match grouping {
            7 => total = row,
            4 => by_model.push(row),
            3 => by_pattern.push(row),
            _ => {}
        }
    }
    Ok((total, by_model, by_pattern))
}

/// One bucket of a quality trend.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TrendPoint {
    pub bucket: DateTime<Utc>,
    pub ratings: i64,
    pub avg_quality: f64,
    pub correctness_rate: Option<f64>,
    pub cost_usd: Option<f64>,
}

/// Average quality, correctness, volume and cost of rated answers per day or week.
pub async fn trends(
    pool: &PgPool,
    pattern: Option<&str>,
    model: Option<&str>,
    week: bool,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT date_trunc($1, f.timestamp) AS bucket, count(*) AS ratings,
                avg(f.quality_score)::float8 AS avg_quality,
                (avg(CASE WHEN f.is_correct THEN 1.0 ELSE 0.0 END)
                    FILTER (WHERE f.is_correct IS NOT NULL))::float8 AS correctness_rate,
                sum(m.cost_usd) AS cost_usd
         FROM response_feedback f LEFT JOIN routing_metrics m ON m.request_id = f.request_id
         WHERE ($2::text IS NULL OR f.prompt_pattern = $2)
           AND ($3::text IS NULL OR f.selected_model = $3)
           AND ($4::timestamptz IS NULL OR f.timestamp >= $4)
         GROUP BY 1 ORDER BY 1",
    )
    .bind(if week { "week" } else { "day" })
    .bind(pattern)
    .bind(model)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Totals for the dashboard: ratings, average quality, and the saving of rated requests.
pub async fn totals(pool: &PgPool) -> Result<(i64, Option<f64>), sqlx::Error> {
    sqlx::query_as("SELECT count(*), avg(quality_score)::float8 FROM response_feedback")
        .fetch_one(pool)
        .await
}

/// Savings of requests routed on learned weights vs all requests: (learned requests, their
/// saving, all requests' saving), in USD.
pub async fn learned_savings(pool: &PgPool) -> Result<(i64, f64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE confidence IN ('high', 'medium', 'demoted')),
                coalesce(sum(baseline_cost_usd - cost_usd)
                    FILTER (WHERE confidence IN ('high', 'medium', 'demoted')), 0)::float8,
                coalesce(sum(baseline_cost_usd - cost_usd), 0)::float8
         FROM routing_metrics WHERE status = 'succeeded'",
    )
    .fetch_one(pool)
    .await
}
