//! Immediate pickup in worker processes: a LISTEN on the queue's insert channel (announced by
//! the API once a request is committed, see `store::requests::notify_all`), and each new
//! provider_call job claimed by id (`FOR UPDATE SKIP LOCKED`, so it races apalis' own fetch
//! safely) and run at once, while a slot is free. apalis' fetch loop stays as it is and takes
//! whatever this misses (no free slot, a lost notification, delayed retries); measured without
//! this, a job accepted by another process sometimes waited seconds for that loop although its
//! poll is 50 ms (docs/PERFORMANCE.md).

use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::JobContext;
use super::direct::{register, run_locked};
use crate::completion::ProviderCall;
use crate::store::requests::{self as store, JOB_INSERT_CHANNEL, PROVIDER_CALL_QUEUE};

/// Takes new provider_call jobs as they are announced until `shutdown`, then finishes those in
/// flight.
pub async fn run(ctx: Arc<JobContext>, shutdown: CancellationToken) {
    let Some(row) = register(&ctx, "listen").await else {
        return;
    };
    let worker = row.name.clone();
    let slots = Arc::new(Semaphore::new(ctx.settings.jobs.concurrency.max(1)));
    let tracker = TaskTracker::new();
    'connect: loop {
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => break,
            l = listen(&ctx.pool) => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "job insert listener not connected; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break 'connect,
                n = listener.recv() => match n {
                    Ok(n) => {
                        let Some(job_id) = announced(n.payload()) else { continue };
                        // No free slot: apalis' fetch takes it.
                        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                        let (ctx, worker) = (ctx.clone(), worker.clone());
                        tracker.spawn(async move {
                            take(&ctx, worker, job_id).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "job insert listener lost; reconnecting");
                        continue 'connect;
                    }
                },
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    drop(row);
}

async fn listen(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(JOB_INSERT_CHANNEL).await?;
    Ok(listener)
}

/// The id of a provider_call job in an insert notification.
fn announced(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Inserted {
        job_type: String,
        id: String,
    }
    let event: Inserted = serde_json::from_str(payload).ok()?;
    (event.job_type == PROVIDER_CALL_QUEUE).then_some(event.id)
}

async fn take(ctx: &JobContext, worker: Arc<str>, job_id: String) {
    // The job and its request in one statement; the job alone when its arguments are not
    // JSON (that statement then fails, locking nothing), to report it below.
    let claim = (ctx.hot).run(async |db| store::claim_pending_request(db, &job_id, &worker).await);
    let (args, claimed) = match claim.await {
        Ok(Some(claim)) => (claim.args, claim.request),
        // Another worker has it, or it is not due yet.
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(%job_id, error = %e, "claiming an announced job with its request failed");
            match store::claim_pending(&ctx.pool, &job_id, &worker, PROVIDER_CALL_QUEUE).await {
                Ok(Some(args)) => (args, None),
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%job_id, error = %e, "claiming an announced job failed; the queue keeps it");
                    return;
                }
            }
        }
    };
    match serde_json::from_slice::<ProviderCall>(&args) {
        // Without its request claimed (finished, stale, or not yet tried), the run claims it
        // and does nothing if it cannot.
        Ok(job) => run_locked(ctx, worker, job_id, job, claimed).await,
        Err(e) => {
            // Give it back to the queue as a failed attempt; apalis reports it.
            tracing::warn!(%job_id, error = %e, "an announced provider_call job is unreadable");
            let _ = store::ack_direct(&ctx.pool, &job_id, &worker, Some(&e.to_string())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provider_call_inserts_are_taken() {
        let payload =
            r#"{"job_type":"provider_call","id":"01ABC","run_at":"2026-12-02T10:00:00Z"}"#;
        assert_eq!(announced(payload).as_deref(), Some("01ABC"));
        assert_eq!(announced(r#"{"job_type":"retrain","id":"01ABC"}"#), None);
        assert_eq!(announced("not json"), None);
    }
}
