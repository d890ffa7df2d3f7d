//! Runs the deadline sweep ([`lifecycle::sweep`]) periodically: requests still unfinished past
//! `REQUEST_DEADLINE_SECS` fail, so every accepted request reaches a recorded terminal state.
//! Before it, the jobs of unfinished requests the queue lost are re-armed
//! ([`lifecycle::rearm_lost`]), so such a request is answered rather than failed.
//! Safe to run in every process: the terminal write is guarded. The same loop runs the hourly
//! retention pass (`store::retention`), which one process at a time performs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobContext;
use crate::completion::lifecycle;
use crate::config::StorePrompts;

/// How often the retention pass runs (in one worker process at a time).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(ctx: Arc<JobContext>, shutdown: CancellationToken) {
    let period = (ctx.settings.jobs.request_deadline / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if let Err(e) = sweep(&ctx).await {
            tracing::debug!(error = %e, "deadline sweep failed; will retry");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            match crate::store::retention::prune(&ctx.pool, &ctx.settings.jobs.retention).await {
                Ok(pruned) => {
                    last_prune = Some(tokio::time::Instant::now());
                    if let Some(p) = pruned {
                        tracing::info!(
                            cache_entries = p.cache_entries,
                            jobs = p.jobs,
                            request_bodies = p.request_bodies,
                            shadow_samples = p.shadow_samples,
                            "retention pass"
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "retention pass failed; will retry"),
            }
            // Rate-limit windows older than an hour count nothing any more.
            if let Err(e) = crate::store::keys::prune_rate_windows(&ctx.pool).await {
                tracing::debug!(error = %e, "pruning rate-limit windows failed; will retry");
            }
        }
    }
}

/// One pass: re-arms the jobs the queue lost ([`lifecycle::rearm_lost`]), then fails the
/// requests past their deadline ([`lifecycle::sweep`]); returns how many it failed.
pub async fn sweep(ctx: &JobContext) -> Result<usize, sqlx::Error> {
    lifecycle::rearm_lost(&ctx.pool, lifecycle::REARM_GRACE).await?;
    let keep_prompt = ctx.settings.store_prompts == StorePrompts::Full;
    lifecycle::sweep(
        &ctx.hot,
        &ctx.announcer,
        ctx.settings.jobs.request_deadline,
        keep_prompt,
    )
    .await
}
