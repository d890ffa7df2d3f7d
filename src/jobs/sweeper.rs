//! Fails requests still unfinished past `REQUEST_DEADLINE_SECS` (a job that exhausted its
//! storage-level attempts, a queue nobody consumes), so every accepted request reaches a
//! recorded terminal state. Safe to run in every process: `finish` is guarded.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobContext;
use crate::completion::StoredRoute;
use crate::completion::cost::failure_metrics;
use crate::config::StorePrompts;
use crate::store::requests::{self as store, Outcome};

pub async fn run(ctx: Arc<JobContext>, shutdown: CancellationToken) {
    let period = (ctx.settings.jobs.request_deadline / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if let Err(e) = sweep(&ctx).await {
            tracing::debug!(error = %e, "deadline sweep failed; will retry");
        }
    }
}

/// One pass; returns how many requests it failed.
pub async fn sweep(ctx: &JobContext) -> Result<usize, sqlx::Error> {
    let deadline = ctx.settings.jobs.request_deadline;
    let overdue = store::overdue(&ctx.pool, deadline.as_secs() as i64, 100).await?;
    let mut failed = 0;
    for (request_id, route, created_at) in overdue {
        let route: Option<StoredRoute> = serde_json::from_value(route).ok();
        let latency_ms = (chrono::Utc::now() - created_at).num_milliseconds() as f64;
        let metrics = route
            .as_ref()
            .map(|r| failure_metrics(r, 0, latency_ms, None));
        let Some(metrics) = metrics else { continue };
        let outcome = Outcome::Failed {
            error: format!(
                "no answer within the request deadline ({} s)",
                deadline.as_secs()
            ),
            error_code: "deadline_exceeded".into(),
            provider: None,
            model: None,
        };
        let ending = store::Finish {
            request_id: &request_id,
            generation: None,
            outcome: &outcome,
            metrics: &metrics,
            keep_prompt: ctx.settings.store_prompts == StorePrompts::Full,
            cache: None,
            notify: true,
        };
        if store::finish(&ctx.pool, &ending).await? {
            tracing::warn!(%request_id, "request failed: deadline exceeded");
            failed += 1;
        }
    }
    Ok(failed)
}
