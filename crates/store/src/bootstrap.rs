//! `bootstrap_outcomes`: recorded benchmark outcomes (`optimizer train --dataset`) the retrain
//! learns from next to ratings.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::learning::Aggregate;
use crate::predictor::RatedRequest;

/// One prompt × model outcome to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutcome {
    pub record_id: String,
    pub provider: String,
    pub model: String,
    pub pattern: String,
    pub complexity: f32,
    pub features: Vec<i32>,
    /// The outcome on the trainer's 0..1 quality scale.
    pub label: f32,
}

/// Rows per INSERT statement (9 parameters each, well under Postgres' 65,535).
const CHUNK: usize = 1000;

/// Stores `outcomes` under `dataset` in one transaction; rows already stored (same dataset,
/// record and model) are left as they are. Returns how many were new.
pub async fn insert(
    pool: &PgPool,
    dataset: &str,
    outcomes: &[NewOutcome],
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in outcomes.chunks(CHUNK) {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO bootstrap_outcomes (dataset, record_id, provider, model, pattern,
                 complexity, features, label) ",
        );
        query.push_values(chunk, |mut row, o| {
            row.push_bind(dataset)
                .push_bind(&o.record_id)
                .push_bind(&o.provider)
                .push_bind(&o.model)
                .push_bind(&o.pattern)
                .push_bind(o.complexity)
                .push_bind(&o.features)
                .push_bind(o.label);
        });
        query.push(" ON CONFLICT DO NOTHING");
        inserted += query.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}

#[derive(sqlx::FromRow)]
struct Group {
    pattern: String,
    provider: String,
    model: String,
    samples: i64,
    label: f64,
    complexity: f64,
    last: DateTime<Utc>,
}

/// Per pattern × provider × model since `since` (None: all): the stored outcomes as the
/// trainer's aggregates — a label l reads as `1 + 4·l` stars and correctness l, so the trainer's
/// quality estimate of the group is its mean label.
pub async fn aggregates(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Aggregate>, sqlx::Error> {
    let rows: Vec<Group> = sqlx::query_as(
        "SELECT pattern, provider, model, count(*) AS samples, avg(label)::float8 AS label,
                avg(complexity)::float8 AS complexity, max(created_at) AS last
         FROM bootstrap_outcomes
         WHERE $1::timestamptz IS NULL OR created_at >= $1
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|g| Aggregate {
            pattern: g.pattern,
            provider: g.provider,
            model: g.model,
            samples: g.samples,
            avg_quality: 1.0 + 4.0 * g.label,
            correctness: g.label,
            last_feedback_at: Some(g.last),
            avg_cost_usd: None,
            total_cost_usd: None,
            avg_complexity: Some(g.complexity),
        })
        .collect())
}

/// At most `limit` stored outcomes since `since` (the most recently loaded first) as samples
/// for the per-prompt predictor, in the shape of rated requests (request id
/// `bootstrap:DATASET:RECORD`; no propensity, not the policy's choice, so the off-policy
/// estimate never reads them).
pub async fn samples(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RatedRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT 'bootstrap:' || dataset || ':' || record_id AS request_id, pattern, provider,
                model, (1 + 4 * label)::float8 AS avg_quality, label::float8 AS correctness,
                features, NULL::float8 AS propensity, NULL::text AS strategy,
                complexity::float8 AS complexity, false AS auto_route, NULL::float8 AS cost_usd,
                NULL::int8 AS input_tokens
         FROM bootstrap_outcomes
         WHERE $1::timestamptz IS NULL OR created_at >= $1
         ORDER BY created_at DESC, dataset, record_id, provider, model
         LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Per dataset: stored outcomes and when it was last loaded.
pub async fn datasets(pool: &PgPool) -> Result<Vec<(String, i64, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT dataset, count(*), max(created_at) FROM bootstrap_outcomes
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

/// Removes a dataset's outcomes (the next retrain learns without them). Returns the rows
/// removed.
pub async fn remove(pool: &PgPool, dataset: &str) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM bootstrap_outcomes WHERE dataset = $1")
            .bind(dataset)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
