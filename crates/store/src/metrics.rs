//! Aggregates over `routing_metrics` for `GET /routing/metrics`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Totals for one slice (everything, a model, a pattern or a provider).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub requests: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub success_rate: f64,
    pub cost_usd: f64,
    pub baseline_cost_usd: f64,
    pub savings_usd: f64,
    pub savings_pct: f64,
    pub cache_hits: i64,
    pub cache_hit_rate: f64,
    pub explored: i64,
    pub explored_share: f64,
    pub fallbacks: i64,
    pub avg_latency_ms: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelSlice {
    pub provider: String,
    pub model: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatternSlice {
    pub pattern: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderSlice {
    pub provider: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub since: Option<DateTime<Utc>>,
    /// The current budget windows' spend: the caller's key (and its end users), or every key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<Vec<crate::keys::Spend>>,
    #[serde(flatten)]
    pub totals: Totals,
    pub by_model: Vec<ModelSlice>,
    pub by_pattern: Vec<PatternSlice>,
    pub by_provider: Vec<ProviderSlice>,
    /// Shadow comparisons of the period: what they judged and what they cost.
    pub shadow: crate::shadow::ShadowTotals,
    /// `savings_usd` less the shadow and judge spend: what routing saved, net of what learning
    /// cost.
    pub net_savings_usd: f64,
}

type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    i64,
    i64,
    Option<i64>,
    Option<f64>,
);

/// One query: every slice at once (GROUPING SETS); with `key_id`, only that API key's requests.
pub async fn summary(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    key_id: Option<&str>,
) -> Result<Summary, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT selected_provider, selected_model, prompt_pattern,
                GROUPING(selected_provider, selected_model, prompt_pattern),
                count(*),
                count(*) FILTER (WHERE status = 'succeeded'),
                sum(cost_usd) FILTER (WHERE status = 'succeeded'),
                sum(baseline_cost_usd) FILTER (WHERE status = 'succeeded'),
                count(*) FILTER (WHERE cache_hit),
                count(*) FILTER (WHERE explored),
                sum(fallback_count)::bigint,
                avg(latency_ms)
         FROM routing_metrics
         WHERE ($1::timestamptz IS NULL OR timestamp >= $1)
           AND ($2::text IS NULL OR api_key_id = $2)
         GROUP BY GROUPING SETS ((), (selected_provider, selected_model), (prompt_pattern),
                                 (selected_provider))
         ORDER BY 5 DESC",
    )
    .bind(since)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
    let mut summary = Summary {
        since,
        spend: None,
        totals: Totals::default(),
        by_model: Vec::new(),
        by_pattern: Vec::new(),
        by_provider: Vec::new(),
        shadow: crate::shadow::ShadowTotals::default(),
        net_savings_usd: 0.0,
    };
    for (
        provider,
        model,
        pattern,
        grouping,
        n,
        ok,
        cost,
        baseline,
        hits,
        explored,
        fallbacks,
        latency,
    ) in rows
    {
        let cost = cost.unwrap_or(0.0);
        let baseline = baseline.unwrap_or(0.0);
        let share = |k: i64| if n > 0 { k as f64 / n as f64 } else { 0.0 };
        let totals = Totals {
            requests: n,
            succeeded: ok,
            failed: n - ok,
            success_rate: share(ok),
            cost_usd: cost,
            baseline_cost_usd: baseline,
            savings_usd: baseline - cost,
            savings_pct: if baseline > 0.0 {
                (baseline - cost) / baseline * 100.0
            } else {
                0.0
            },
            cache_hits: hits,
            cache_hit_rate: share(hits),
            explored,
            explored_share: share(explored),
            fallbacks: fallbacks.unwrap_or(0),
            avg_latency_ms: latency.unwrap_or(0.0),
        };
        match grouping {
            7 => summary.totals = totals,
            1 => summary.by_model.push(ModelSlice {
                provider: provider.unwrap_or_default(),
                model: model.unwrap_or_default(),
                totals,
            }),
            6 => summary.by_pattern.push(PatternSlice {
                pattern: pattern.unwrap_or_default(),
                totals,
            }),
            3 => summary.by_provider.push(ProviderSlice {
                provider: provider.unwrap_or_default(),
                totals,
            }),
            _ => {}
        }
    }
    Ok(summary)
}

/// Jobs per queue and state (apalis' own table), for the queue-depth gauge at scrape time.
pub async fn queue_depth(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_type, status, count(*) FROM apalis.jobs
         WHERE status <> 'Done' OR done_at > now() - interval '5 minutes'
         GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// (Unix time of the last successful retrain, current policy version), read at scrape time so
/// every process reports them, restarts included.
pub async fn learning_state(pool: &PgPool) -> Result<(Option<f64>, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT extract(epoch FROM max(finished_at))::float8 FROM retraining_runs
                 WHERE status = 'succeeded' AND NOT dry_run AND trigger <> 'rollback'),
                coalesce((SELECT version FROM routing_policy), 0)",
    )
    .fetch_one(pool)
    .await
}
