//! `routing_weights` and `routing_policy`: what the engine learned, and its version.

use optimizer_types::{Confidence, LearnedWeight, Pattern, ProviderId};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::predictor::StoredFit;

/// The channel a process NOTIFYs after changing routing weights (payload: the new version).
pub const POLICY_CHANNEL: &str = "routing_policy";

/// The current routing-policy version.
pub async fn policy_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM routing_policy")
        .fetch_optional(pool)
        .await
        .map(Option::unwrap_or_default)
}

/// The routing policy as stored: its version, every learned weight and the per-prompt predictor.
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: i64,
    pub weights: Vec<LearnedWeight>,
    pub predictor: Vec<StoredFit>,
    /// The quality-target knobs calibrated for the predictor (None: none).
    pub calibration: Option<serde_json::Value>,
}

/// The version, every learned weight and the predictor, read in one snapshot. Rows naming an
/// unknown pattern, provider or confidence are skipped with a warning rather than failing the
/// load.
pub async fn load(pool: &PgPool) -> Result<Policy, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (version, calibration): (i64, Option<serde_json::Value>) =
        sqlx::query_as("SELECT version, calibration FROM routing_policy")
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or_default();
    #[allow(clippy::type_complexity, reason = "one row tuple, read once")]
    let rows: Vec<(String, String, String, f32, String, i32, bool, Option<f32>)> = sqlx::query_as(
        "SELECT pattern, provider, model, quality_estimate, confidence_level, sample_count, demoted,
                avg_complexity
         FROM routing_weights",
    )
    .fetch_all(&mut *tx)
    .await?;
    let predictor = super::predictor::load(&mut *tx).await?;
    tx.commit().await?;

    let weights = rows
        .into_iter()
        .filter_map(|(pattern, provider, model, quality, confidence, samples, demoted, cx)| {
            let parsed = (
                Pattern::parse(&pattern),
                ProviderId::parse(&provider),
                Confidence::parse(&confidence),
            );
            let (Some(pattern), Some(provider), Some(confidence)) = parsed else {
                tracing::warn!(%pattern, %provider, %model, %confidence, "skipping unreadable routing weight");
                return None;
            };
            Some(LearnedWeight {
                pattern,
                provider,
                model,
                quality: f64::from(quality),
                confidence,
                samples: u32::try_from(samples).unwrap_or_default(),
                demoted,
                avg_complexity: cx.map(f64::from),
            })
        })
        .collect();
    Ok(Policy {
        version,
        weights,
        predictor,
        calibration,
    })
}

/// A listener on [`POLICY_CHANNEL`].
pub async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(POLICY_CHANNEL).await?;
    Ok(listener)
}

/// Sets one learned estimate directly and bumps the policy version, NOTIFYing every process, in
/// one transaction. The rating columns are derived from the estimate (avg = 1 + 4q,
/// correctness = q): this is an operator override (and what tests use); the trainer writes
/// rows from real aggregates.
pub async fn upsert_and_bump(pool: &PgPool, weight: &LearnedWeight) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO routing_weights (pattern, provider, model, avg_quality_score,
             correctness_rate, sample_count, confidence_level, quality_estimate, avg_complexity)
         VALUES ($1, $2, $3, 1 + 4 * $4, $4, $5, $6, $4, $7)
         ON CONFLICT (pattern, provider, model) DO UPDATE SET
             avg_quality_score = EXCLUDED.avg_quality_score,
             correctness_rate = EXCLUDED.correctness_rate,
             sample_count = EXCLUDED.sample_count,
             confidence_level = EXCLUDED.confidence_level,
             quality_estimate = EXCLUDED.quality_estimate,
             avg_complexity = EXCLUDED.avg_complexity,
             updated_at = now()",
    )
    .bind(weight.pattern.as_str())
    .bind(weight.provider.as_str())
    .bind(&weight.model)
    .bind(weight.quality as f32)
    .bind(i32::try_from(weight.samples).unwrap_or(i32::MAX))
    .bind(weight.confidence.as_str())
    .bind(weight.avg_complexity.map(|c| c as f32))
    .execute(&mut *tx)
    .await?;
    let version = bump_policy_version(&mut tx).await?;
    tx.commit().await?;
    Ok(version)
}

/// Increments the routing-policy version and NOTIFYs [`POLICY_CHANNEL`] on commit.
pub async fn bump_policy_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<i64, sqlx::Error> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE routing_policy SET version = version + 1, updated_at = now() RETURNING version",
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(POLICY_CHANNEL)
        .bind(version.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(version)
}
