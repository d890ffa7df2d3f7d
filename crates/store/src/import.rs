//! Inserts for `optimizer import-sqlite`: each `ON CONFLICT DO NOTHING` on its key, returning
//! whether a row was added (so a second import adds nothing and says so).

use chrono::{DateTime, Utc};
use optimizer_types::RequestStatus;
use sqlx::{Postgres, Transaction};

#[derive(Debug, Clone)]
pub struct ImportedRequest {
    pub request_id: String,
    pub created_at: DateTime<Utc>,
    pub status: RequestStatus,
    pub prompt: Option<String>,
    pub prompt_hash: Option<String>,
    pub prompt_chars: i32,
    pub system: Option<String>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
}

pub async fn insert_request(
    tx: &mut Transaction<'_, Postgres>,
    r: &ImportedRequest,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO requests (request_id, created_at, updated_at, finished_at, status, prompt,
             prompt_hash, prompt_chars, system, params, response, error, error_code, provider,
             model, user_id, session_id)
         VALUES ($1, $2, $2, $2, $3, $4, $5, $6, $7, '{\"imported\": true}', $8, $9,
             CASE WHEN $3 = 'failed' THEN 'imported' END, $10, $11, $12, $13)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&r.request_id)
    .bind(r.created_at)
    .bind(r.status)
    .bind(&r.prompt)
    .bind(&r.prompt_hash)
    .bind(r.prompt_chars)
    .bind(&r.system)
    .bind(&r.response)
    .bind(&r.error)
    .bind(&r.provider)
    .bind(&r.model)
    .bind(&r.user_id)
    .bind(&r.session_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

#[derive(Debug, Clone)]
pub struct ImportedMetrics {
    pub request_id: String,
    pub timestamp: DateTime<Utc>,
    pub prompt_pattern: String,
    pub complexity_score: f32,
    pub strategy: String,
    pub selected_provider: String,
    pub selected_model: String,
    pub reason: Option<String>,
    pub confidence: Option<String>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    pub cost_usd: Option<f64>,
    pub baseline_cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    pub cache_hit: bool,
    pub fallback_count: i32,
    pub status: RequestStatus,
}

/// Creates a minimal finished request for a metrics row whose request was not imported.
/// True when one was created.
pub async fn ensure_request(
    tx: &mut Transaction<'_, Postgres>,
    m: &ImportedMetrics,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO requests (request_id, created_at, updated_at, finished_at, status, params,
             provider, model)
         VALUES ($1, $2, $2, $2, $3, '{\"imported\": true, \"stub\": true}', $4, $5)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&m.request_id)
    .bind(m.timestamp)
    .bind(m.status)
    .bind(&m.selected_provider)
    .bind(&m.selected_model)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

pub async fn insert_metrics(
    tx: &mut Transaction<'_, Postgres>,
    m: &ImportedMetrics,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO routing_metrics (request_id, timestamp, prompt_pattern, complexity_score,
             strategy, selected_provider, selected_model, reason, confidence, input_tokens,
             output_tokens, cost_usd, baseline_cost_usd, latency_ms, cache_hit, fallback_count,
             status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&m.request_id)
    .bind(m.timestamp)
    .bind(&m.prompt_pattern)
    .bind(m.complexity_score)
    .bind(&m.strategy)
    .bind(&m.selected_provider)
    .bind(&m.selected_model)
    .bind(&m.reason)
    .bind(&m.confidence)
    .bind(m.input_tokens)
    .bind(m.output_tokens)
    .bind(m.cost_usd)
    .bind(m.baseline_cost_usd)
    .bind(m.latency_ms)
    .bind(m.cache_hit)
    .bind(m.fallback_count)
    .bind(m.status)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

#[derive(Debug, Clone)]
pub struct ImportedCache {
    pub cache_key: String,
    pub response: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub hit_count: i64,
}

pub async fn insert_cache(
    tx: &mut Transaction<'_, Postgres>,
    c: &ImportedCache,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO response_cache (cache_key, provider, model, response, input_tokens,
             output_tokens, cost_usd, created_at, expires_at, hit_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (cache_key) DO NOTHING",
    )
    .bind(&c.cache_key)
    .bind(&c.provider)
    .bind(&c.model)
    .bind(&c.response)
    .bind(c.input_tokens)
    .bind(c.output_tokens)
    .bind(c.cost_usd)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.hit_count)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}
