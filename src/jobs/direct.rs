//! The runner of the direct lane ([`crate::completion::lane`]): jobs submitted in this process
//! arrive in memory, already written `Running` and locked by this runner's worker, run like any
//! provider_call job and are acknowledged as apalis would. Its worker row ([`WorkerRow`]) lets
//! the queue's workers rescue its jobs should this process die mid-run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::JobContext;
use super::provider_call::{self, Step};
use crate::completion::lane::Handoff;
use crate::completion::lifecycle::LaneJob;
use crate::completion::{DirectLane, ProviderCall};
use crate::store::requests::{self as store, Claimed, PROVIDER_CALL_QUEUE};

/// Acknowledgement attempts (≈ 5 minutes); after them the job is left to the deadline sweep.
const ACK_TRIES: usize = 64;

/// A worker row of this process in `apalis.workers` (`provider_call-KIND-ULID`), kept alive
/// every `JOB_HEARTBEAT_SECS` until dropped: it must exist before a job is locked by it, and
/// once it goes stale the queue's workers rescue the jobs it locked.
pub(super) struct WorkerRow {
    pub name: Arc<str>,
    _beating: DropGuard,
}

/// Writes the row (None if it could not be written: then nothing may be locked by it).
pub(super) async fn register(ctx: &Arc<JobContext>, kind: &str) -> Option<WorkerRow> {
    let name: Arc<str> = format!("{PROVIDER_CALL_QUEUE}-{kind}-{}", ulid::Ulid::generate()).into();
    if let Err(e) = store::beat_worker(&ctx.pool, &name, PROVIDER_CALL_QUEUE).await {
        tracing::warn!(error = %e, worker = %name, "not started: its worker row was not written");
        return None;
    }
    let stop = CancellationToken::new();
    let (ctx, beating, worker) = (ctx.clone(), stop.clone(), name.clone());
    crate::tasks::spawn("direct_run", async move {
        let mut beat = tokio::time::interval(ctx.settings.jobs.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            tokio::select! {
                () = beating.cancelled() => return,
                _ = beat.tick() => {
                    if let Err(e) = store::beat_worker(&ctx.pool, &worker, PROVIDER_CALL_QUEUE).await {
                        tracing::warn!(error = %e, %worker, "worker row heartbeat failed");
                    }
                }
            }
        }
    });
    Some(WorkerRow {
        name,
        _beating: stop.drop_guard(),
    })
}

/// Takes the lane's jobs until `shutdown`, then finishes those in flight.
pub async fn run(ctx: Arc<JobContext>, lane: Arc<DirectLane>, shutdown: CancellationToken) {
    let Some(row) = register(&ctx, "direct").await else {
        return;
    };
    let worker = row.name.clone();
    let mut handed = lane.attach(&worker, ctx.settings.jobs.concurrency);
    tracing::debug!(%worker, "direct lane open");
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            h = handed.recv() => match h {
                Some(h) => {
                    tracker.spawn(run_one(ctx.clone(), worker.clone(), h));
                }
                None => break,
            },
        }
    }
    lane.detach();
    // Handed over but not yet taken, or still being submitted with a slot reserved before the
    // detach: committed (or about to be) as this lane's — run them too. The channel ends when
    // the last reservation is handed over or dropped.
    while let Some(h) = handed.recv().await {
        tracker.spawn(run_one(ctx.clone(), worker.clone(), h));
    }
    tracker.close();
    tracker.wait().await;
    drop(row);
}

async fn run_one(ctx: Arc<JobContext>, worker: Arc<str>, h: Handoff) {
    let Handoff {
        job_id,
        job,
        claimed,
        permit,
    } = h;
    run_locked(&ctx, worker, job_id, job, Some(claimed)).await;
    drop(permit);
}

/// Runs a job locked by `worker` — its request already claimed (`claimed`), or claimed here —
/// and acknowledges it: by the statement that ends the request, or on its own.
pub(super) async fn run_locked(
    ctx: &JobContext,
    worker: Arc<str>,
    job_id: String,
    mut job: ProviderCall,
    claimed: Option<Claimed>,
) {
    job.lane = Some(LaneJob {
        id: job_id.clone(),
        worker: worker.clone(),
    });
    let started = Instant::now();
    let result = match claimed {
        Some(claimed) => provider_call::run_claimed(ctx, &job, claimed).await,
        None => provider_call::run(ctx, &job).await,
    };
    super::record_job("provider_call", started, result.is_ok());
    let error = match &result {
        // The terminal transition acknowledged the job in its statement.
        Ok(Step::Succeeded | Step::Failed { .. }) => return,
        Ok(step) => {
            tracing::debug!(request_id = %job.request_id, ?step, "provider_call done (direct)");
            None
        }
        Err(e) => {
            tracing::warn!(request_id = %job.request_id, error = %e, "provider_call failed; the queue will retry it");
            Some(e.to_string())
        }
    };
    // The job is locked by this live worker: nothing rescues it until it is acknowledged (or
    // this process stops beating), so keep trying for a while.
    let mut wait = Duration::from_millis(100);
    for _ in 0..ACK_TRIES {
        let ack = (ctx.hot)
            .run(async |db| store::ack_direct(db, &job_id, &worker, error.as_deref()).await);
        match ack.await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(request_id = %job.request_id, error = %e, "acknowledging a direct job failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
