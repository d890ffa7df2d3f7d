//! `routing_predictor` and its snapshots, and the rated requests the predictor is fitted on.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// One model's fitted predictor as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredFit {
    pub provider: String,
    pub model: String,
    pub featurizer: String,
    pub sample_count: i32,
    pub shrinkage: f32,
    /// Sparse weights, 8 bytes an entry (see `optimizer_routing::predictor::encode_weights`).
    pub weights: Vec<u8>,
}

/// One rated request: its ratings averaged (several ratings of a request are one sample).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RatedRequest {
    pub request_id: String,
    pub pattern: String,
    pub provider: String,
    pub model: String,
    /// Mean star rating of the request.
    pub avg_quality: f64,
    /// Share of its ratings saying correct, among those that say (None: none says).
    pub correctness: Option<f64>,
    /// The prompt's features as stored at routing time (None: routed before they were kept).
    pub features: Option<Vec<i32>>,
    /// The probability with which the routing decision chose the model (None: not recorded).
    pub propensity: Option<f64>,
    pub strategy: Option<String>,
    pub complexity: Option<f64>,
    /// False when the caller pinned the model (not the policy's choice).
    pub auto_route: Option<bool>,
    pub cost_usd: Option<f64>,
    pub input_tokens: Option<i64>,
}

/// The `limit` most recently rated requests since `since` (None: all time), by request id.
pub async fn rated_requests(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RatedRequest>, sqlx::Error> {
    sqlx::query_as(
        "WITH per_request AS (
             SELECT f.request_id, min(f.prompt_pattern) AS pattern,
                    min(f.selected_provider) AS provider, min(f.selected_model) AS model,
                    avg(f.quality_score)::float8 AS avg_quality,
                    (avg(CASE WHEN f.is_correct THEN 1.0 ELSE 0.0 END)
                        FILTER (WHERE f.is_correct IS NOT NULL))::float8 AS correctness,
                    max(f.timestamp) AS last_rated
             FROM response_feedback f
             WHERE ($1::timestamptz IS NULL OR f.timestamp >= $1)
               AND f.prompt_pattern IS NOT NULL AND f.selected_provider IS NOT NULL
               AND f.selected_model IS NOT NULL
             GROUP BY f.request_id),
         newest AS (
             SELECT * FROM per_request ORDER BY last_rated DESC, request_id LIMIT $2)
         SELECT p.request_id, p.pattern, p.provider, p.model, p.avg_quality, p.correctness,
                r.features, (r.route->>'propensity')::float8 AS propensity,
                m.strategy, m.complexity_score::float8 AS complexity,
                (r.params->>'auto_route')::bool AS auto_route, m.cost_usd,
                m.input_tokens::int8 AS input_tokens
         FROM newest p
         JOIN requests r ON r.request_id = p.request_id
         LEFT JOIN routing_metrics m ON m.request_id = p.request_id
         ORDER BY p.request_id",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The current predictor (every model's row).
pub async fn load(
    conn: impl sqlx::Executor<'_, Database = Postgres>,
) -> Result<Vec<StoredFit>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, model, featurizer, sample_count, shrinkage, weights
         FROM routing_predictor ORDER BY provider, model",
    )
    .fetch_all(conn)
    .await
}

/// Per model: the rated requests the current predictor was fitted on.
pub async fn sample_counts(pool: &PgPool) -> Result<Vec<(String, String, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT provider, model, sample_count FROM routing_predictor")
        .fetch_all(pool)
        .await
}

/// Replaces the predictor with `fits` (run `run_id` fitted them).
pub async fn replace(
    tx: &mut Transaction<'_, Postgres>,
    run_id: &str,
    fits: &[StoredFit],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM routing_predictor")
        .execute(&mut **tx)
        .await?;
    for f in fits {
        sqlx::query(
            "INSERT INTO routing_predictor (provider, model, featurizer, sample_count, shrinkage,
                 weights, retraining_run_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&f.provider)
        .bind(&f.model)
        .bind(&f.featurizer)
        .bind(f.sample_count)
        .bind(f.shrinkage)
        .bind(&f.weights)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Copies the current predictor next to weight snapshot `snapshot_id`.
pub(crate) async fn snapshot(
    tx: &mut Transaction<'_, Postgres>,
    snapshot_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO routing_predictor_snapshots (snapshot_id, provider, model, featurizer,
             sample_count, shrinkage, weights, retraining_run_id)
         SELECT $1, provider, model, featurizer, sample_count, shrinkage, weights,
                retraining_run_id
         FROM routing_predictor",
    )
    .bind(snapshot_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Restores the predictor saved with weight snapshot `snapshot_id` (none saved: no predictor).
pub(crate) async fn restore(
    tx: &mut Transaction<'_, Postgres>,
    snapshot_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM routing_predictor")
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO routing_predictor (provider, model, featurizer, sample_count, shrinkage,
             weights, retraining_run_id)
         SELECT provider, model, featurizer, sample_count, shrinkage, weights, retraining_run_id
         FROM routing_predictor_snapshots WHERE snapshot_id = $1",
    )
    .bind(snapshot_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
