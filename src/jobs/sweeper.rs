//! Runs the deadline sweep ([`lifecycle::sweep`]) periodically: requests still unfinished past
//! `REQUEST_DEADLINE_SECS` fail, so every accepted request reaches a recorded terminal state.
//! Safe to run in every process: the terminal write is guarded.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobContext;
use crate::completion::lifecycle;
use crate::config::StorePrompts;

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

/// One pass; returns how many requests it failed (see [`lifecycle::sweep`]).
pub async fn sweep(ctx: &JobContext) -> Result<usize, sqlx::Error> {
    let keep_prompt = ctx.settings.store_prompts == StorePrompts::Full;
    lifecycle::sweep(&ctx.pool, ctx.settings.jobs.request_deadline, keep_prompt).await
}
