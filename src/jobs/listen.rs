//! Immediate pickup in worker processes: a LISTEN on the queue's insert channel (announced by
//! the API once a request is committed, see `store::requests::notify_all`), and each new
//! provider_call job claimed by id (`FOR UPDATE SKIP LOCKED`, so it races apalis' own fetch
//! safely) and run at once, while a slot is free. Jobs announced together (those whose
//! notifications have arrived by the time the first is read) are claimed, with their requests,
//! by one statement. apalis' fetch loop stays as it is and takes whatever this misses (no free
//! slot, a lost notification, delayed retries); measured without this, a job accepted by
//! another process sometimes waited seconds for that loop although its poll is 50 ms
//! (docs/PERFORMANCE.md).

use std::sync::Arc;

use futures_util::FutureExt;
use sqlx::postgres::PgListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::JobContext;
use super::direct::{register, run_locked};
use crate::completion::ProviderCall;
use crate::store::requests::{
    self as store, JOB_INSERT_CHANNEL, PROVIDER_CALL_QUEUE, PendingClaim,
};

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
            let first = tokio::select! {
                () = shutdown.cancelled() => break 'connect,
                n = listener.recv() => n,
            };
            // What else has already arrived is claimed with it, in one statement, up to the
            // free slots; the rest waits for the next turn. A job announced when no slot is free
            // is left to apalis' fetch.
            let free = slots.available_permits();
            let mut ids = Vec::new();
            let mut lost = None;
            let mut next = Some(first);
            while let Some(n) = next.take() {
                match n {
                    Ok(n) => ids.extend(announced(n.payload())),
                    Err(e) => {
                        lost = Some(e);
                        break;
                    }
                }
                if ids.len() < free {
                    next = listener.recv().now_or_never();
                }
            }
            ids.truncate(free);
            if !ids.is_empty()
                && let Ok(permits) = slots.clone().try_acquire_many_owned(ids.len() as u32)
            {
                tracker.spawn(take(
                    ctx.clone(),
                    worker.clone(),
                    tracker.clone(),
                    ids,
                    permits,
                ));
            }
            if let Some(e) = lost {
                tracing::warn!(error = %e, "job insert listener lost; reconnecting");
                continue 'connect;
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

/// Claims the announced jobs `ids` (with their requests) and runs each on `tracker`, holding
/// one of `permits` while it runs; a permit whose job was not claimed is given back at once.
async fn take(
    ctx: Arc<JobContext>,
    worker: Arc<str>,
    tracker: TaskTracker,
    ids: Vec<String>,
    mut permits: OwnedSemaphorePermit,
) {
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let claims =
        (ctx.hot).run(async |db| store::claim_pending_requests(db, &id_refs, &worker).await);
    let claims = match claims.await {
        Ok(claims) => claims,
        Err(e) => {
            // A job's arguments are not JSON (the statement then fails, locking nothing), or
            // the statement failed: each job on its own, to report the unreadable one below.
            tracing::debug!(error = %e, "claiming announced jobs with their requests failed");
            let mut claims = Vec::new();
            for job_id in ids {
                claims.extend(claim_alone(&ctx, &worker, job_id).await);
            }
            claims
        }
    };
    for claim in claims {
        let Some(permit) = permits.split(1) else {
            break;
        };
        let (ctx, worker) = (ctx.clone(), worker.clone());
        tracker.spawn(async move {
            run_claimed(&ctx, worker, claim).await;
            drop(permit);
        });
    }
}

/// One announced job, claimed with its request, or alone when its arguments are not JSON.
async fn claim_alone(ctx: &JobContext, worker: &str, job_id: String) -> Option<PendingClaim> {
    match (ctx.hot)
        .run(async |db| store::claim_pending_request(db, &job_id, worker).await)
        .await
    {
        Ok(claim) => claim,
        Err(e) => {
            tracing::debug!(%job_id, error = %e, "claiming an announced job with its request failed");
            match store::claim_pending(&ctx.pool, &job_id, worker, PROVIDER_CALL_QUEUE).await {
                Ok(args) => args.map(|args| PendingClaim {
                    job_id,
                    args,
                    request: None,
                }),
                Err(e) => {
                    tracing::debug!(%job_id, error = %e, "claiming an announced job failed; the queue keeps it");
                    None
                }
            }
        }
    }
}

/// Runs a claimed job, or hands it back to the queue as a failed attempt when unreadable.
async fn run_claimed(ctx: &JobContext, worker: Arc<str>, claim: PendingClaim) {
    let PendingClaim {
        job_id,
        args,
        request,
    } = claim;
    match serde_json::from_slice::<ProviderCall>(&args) {
        // Without its request claimed (finished, stale, or not yet tried), the run claims it
        // and does nothing if it cannot.
        Ok(job) => run_locked(ctx, worker, job_id, job, request).await,
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
