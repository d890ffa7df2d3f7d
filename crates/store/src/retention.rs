//! Retention: what old rows are pruned, so no table grows forever. One pass runs under a
//! transaction-scoped advisory lock, so when every worker process schedules it, one of them does
//! the work and the others skip.
//!
//! - `response_cache`: expired entries are deleted.
//! - `apalis.jobs`: finished jobs (`Done`) older than `jobs_kept` are deleted; failed or killed
//!   ones are kept for `bodies_kept` (or as long as `jobs_kept` × 7 when bodies are kept forever).
//! - `requests`: with `bodies_kept`, the prompt, system prompt, response and conversation history
//!   of requests finished before it are cleared; the row, its `routing_metrics` and ratings stay
//!   (cost and quality history outlive the text).
//! - `shadow_samples`: a sampled request whose shadow job never finished (its job failed for
//!   good) is deleted after a day, with the request it carries.

use std::time::Duration;

use sqlx::PgPool;

/// The advisory lock key of a pruning pass ("prune" in ASCII).
pub const PRUNE_LOCK: i64 = 0x0070_7275_6e65;
/// Rows changed per statement at most, so one pass never holds long locks.
const BATCH: i64 = 10_000;

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Request bodies (prompt, response, history); None: kept forever.
    pub bodies_kept: Option<Duration>,
    /// Finished queue jobs.
    pub jobs_kept: Duration,
}

/// What one pass removed; None when another process held the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub cache_entries: u64,
    pub jobs: u64,
    pub request_bodies: u64,
    pub shadow_samples: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One pruning pass (see the module header).
pub async fn prune(pool: &PgPool, r: &Retention) -> Result<Option<Pruned>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(PRUNE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let cache_entries = sqlx::query(
        "DELETE FROM response_cache WHERE cache_key IN (
             SELECT cache_key FROM response_cache WHERE expires_at < now() LIMIT $1)",
    )
    .bind(BATCH)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let failed_kept = r.bodies_kept.unwrap_or(r.jobs_kept * 7).max(r.jobs_kept);
    let jobs = sqlx::query(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE (status = 'Done' AND done_at < now() - make_interval(secs => $1))
                OR (status IN ('Failed', 'Killed')
                    AND coalesce(done_at, run_at) < now() - make_interval(secs => $2))
             LIMIT $3)",
    )
    .bind(secs(r.jobs_kept))
    .bind(secs(failed_kept))
    .bind(BATCH)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let request_bodies = match r.bodies_kept {
        None => 0,
        Some(kept) => sqlx::query(
            "UPDATE requests SET prompt = NULL, system = NULL, response = NULL,
                 tool_calls = NULL, params = params - 'history' - 'tail' - 'tools'
                     - 'tool_choice' - 'response_format' - 'stop', updated_at = now()
             WHERE request_id IN (
                 SELECT request_id FROM requests
                 WHERE finished_at < now() - make_interval(secs => $1)
                   AND (prompt IS NOT NULL OR system IS NOT NULL OR response IS NOT NULL
                        OR tool_calls IS NOT NULL
                        OR params ?| array['history', 'tail', 'tools', 'tool_choice',
                                           'response_format', 'stop'])
                 LIMIT $2)",
        )
        .bind(secs(kept))
        .bind(BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
    };
    let shadow_samples =
        sqlx::query("DELETE FROM shadow_samples WHERE created_at < now() - interval '1 day'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok(Some(Pruned {
        cache_entries,
        jobs,
        request_bodies,
        shadow_samples,
    }))
}
