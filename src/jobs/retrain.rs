//! The retrain job and its schedule.
//!
//! - The job runs the FeedbackTrainer for a queued `retraining_runs` row (claimed first, so a
//!   duplicate delivery does nothing) and records success or failure on it.
//! - The schedule (`RETRAIN_CRON`) runs in every worker process; each tick inserts its run with
//!   `scheduled_for` = the tick, which is UNIQUE — so however many processes run, one run per
//!   tick is queued (NOTES-apalis item 6: apalis' own cron fires once per process).

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskBuilder};
use apalis_postgres::PgTask;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::JobContext;
use crate::learning;
use crate::store::learning as store;
use crate::types::RunStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrain {
    pub run_id: String,
}

impl Retrain {
    pub fn task(run_id: &str) -> PgTask {
        let args = serde_json::to_vec(&Self {
            run_id: run_id.to_owned(),
        })
        .unwrap_or_default();
        TaskBuilder::new(args).max_attempts(3).build()
    }
}

/// Queues a manual run; returns its id.
pub async fn queue_manual(pool: &sqlx::PgPool) -> Result<String, sqlx::Error> {
    let run_id = learning::new_run_id();
    store::queue_run(pool, &run_id, "manual", None, Some(Retrain::task(&run_id))).await?;
    Ok(run_id)
}

pub async fn handle(job: Retrain, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let result = run(&ctx, &job.run_id).await;
    super::record_job("retrain", started, result.is_ok());
    result?;
    Ok(())
}

/// Claims and runs `run_id`; false if it was not claimable (finished, or running elsewhere).
pub async fn run(ctx: &JobContext, run_id: &str) -> Result<bool, sqlx::Error> {
    if !store::claim_run(&ctx.pool, run_id).await? {
        return Ok(false);
    }
    match learning::retrain(
        &ctx.pool,
        &ctx.engine,
        &ctx.settings.learning,
        run_id,
        false,
    )
    .await
    {
        Ok(report) => {
            tracing::info!(%run_id, changes = report.changes.len(), policy_version = ?report.policy_version, "{}", report.message);
            Ok(true)
        }
        Err(e) => {
            tracing::error!(%run_id, error = %e, "retrain failed");
            metrics::counter!(crate::telemetry::names::RETRAIN_RUNS, "result" => RunStatus::Failed.as_str())
                .increment(1);
            store::fail_run(&ctx.pool, run_id, &e.to_string()).await?;
            Ok(true)
        }
    }
}

/// The next tick of `RETRAIN_CRON` after `now`.
pub fn next_tick(cron: &croner::Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&now, false).ok()
}

/// Queues one run per cron tick (deduplicated across processes) until `shutdown`.
pub async fn schedule(ctx: Arc<JobContext>, shutdown: CancellationToken) {
    let Some(cron) = ctx.settings.learning.retrain_cron.clone() else {
        return;
    };
    loop {
        let Some(tick) = next_tick(&cron, Utc::now()) else {
            tracing::warn!("RETRAIN_CRON has no next occurrence; schedule stopped");
            return;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let run_id = learning::new_run_id();
        match store::queue_run(
            &ctx.pool,
            &run_id,
            "scheduled",
            Some(tick),
            Some(Retrain::task(&run_id)),
        )
        .await
        {
            Ok(true) => tracing::info!(%run_id, %tick, "scheduled retrain queued"),
            Ok(false) => {
                tracing::debug!(%tick, "scheduled retrain already queued by another process")
            }
            Err(e) => tracing::warn!(%tick, error = %e, "could not queue the scheduled retrain"),
        }
    }
}
