//! A completion request's life, in one place. Every change of `requests.status` goes through a
//! function of this module; the callers decide *when* (the API submits, the provider_call job
//! claims and ends, the sweeper sweeps), this module decides *how*, and nothing else calls the
//! SQL in `store::requests` that moves a request.
//!
//! ```text
//!  submit ──▶ queued ──claim──▶ running ──finish(answer)──────────▶ succeeded
//!  (row + job,   │                 │  ▲
//!   one tx)      │                 │  │ retry (same model, after a backoff) or
//!                │                 │  │ fall back (next model, at once): generation + 1
//!                │                 │  └──────────── reschedule ──┘ (stays running)
//!                │                 └──finish(permanent error / nothing left)──▶ failed
//!                └─────────── sweep (deadline passed, any generation) ─────────▶ failed
//!  submit_cached ──────────────────────────────────────────────────────────────▶ succeeded
//! ```
//!
//! **The generation guard.** `requests.attempts` is the request's generation, and every
//! provider_call job ([`ProviderCall`]) carries the generation it was queued for. A job may act
//! only while its generation is current: [`claim`], [`reschedule`] and [`finish`] are UPDATEs
//! guarded by `attempts = generation AND status IN ('queued', 'running')`. A reschedule moves
//! `attempts` on and queues the next job in the same transaction; a finish closes the status.
//! So a job the queue runs twice (jobs are at-least-once), or a stale job of an earlier
//! generation, finds the guard closed and changes nothing — each request reaches exactly one
//! terminal state, written together with its metrics row. Only the deadline [`sweep`] ignores
//! the generation, and it too can only end an unfinished request.

use std::time::Duration;

use apalis::prelude::TaskBuilder;
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::cost::failure_metrics;
use super::{Announcer, Inserter, Notifier, StoredRoute};
use crate::config::JobSettings;
use crate::providers::{ErrorKind, ProviderError};
use crate::store::Hot;
use crate::store::requests::{
    self as store, CacheEntry, CachedAnswer, Claimed, Inserted, MetricsRow, NewRequest, Outcome,
};
use crate::types::FailureCode;

/// The provider_call job: call candidate `candidate` of the request's stored route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCall {
    pub request_id: String,
    /// Must equal `requests.attempts` for the job to act (the generation guard, above).
    pub generation: i32,
    /// Index into the stored route's candidates; also the number of fallbacks so far.
    pub candidate: usize,
    /// Retries already made on this candidate.
    pub tries: u32,
    /// Provider time spent by earlier attempts.
    pub provider_ms: u64,
    /// Set when the job runs under one of this process's own worker rows (the direct lane, or
    /// a worker process's insert listener; never stored): the terminal transition acknowledges
    /// the job in the same statement.
    #[serde(skip)]
    pub lane: Option<LaneJob>,
}

/// A job locked by one of this process's own worker rows (the direct lane's, see
/// [`super::lane`], or a worker process's insert listener's): its id and that row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneJob {
    pub id: String,
    pub worker: std::sync::Arc<str>,
}

/// Storage-level retries of a provider_call job (see [`ProviderCall::task`]).
const MAX_ATTEMPTS: usize = 5;

impl ProviderCall {
    /// The first job of a new request.
    pub fn first(request_id: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            generation: 1,
            candidate: 0,
            tries: 0,
            provider_ms: 0,
            lane: None,
        }
    }

    /// The job as an apalis task, due after `delay`. The queue stores whole seconds, so the
    /// due time is rounded up: a job never runs before its delay (e.g. `Retry-After`) is over.
    /// Storage-level retries (for a handler that errs, e.g. the database is briefly away) are
    /// capped at 5.
    pub fn task(&self, delay: Duration) -> PgTask {
        let args = serde_json::to_vec(self).unwrap_or_default();
        let mut builder = TaskBuilder::new(args).max_attempts(MAX_ATTEMPTS);
        if !delay.is_zero() {
            let due = (std::time::SystemTime::now() + delay)
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .unwrap_or_default();
            builder = builder.run_at_timestamp(due);
        }
        builder.build()
    }

    /// The next generation's job: the same candidate once more, or the next candidate.
    fn next(&self, after: &AfterError, provider_ms: u64) -> Option<Self> {
        let (candidate, tries) = match after {
            AfterError::Retry { .. } => (self.candidate, self.tries + 1),
            AfterError::FallBack { to } => (*to, 0),
            AfterError::GiveUp { .. } => return None,
        };
        Some(Self {
            generation: self.generation + 1,
            candidate,
            tries,
            provider_ms,
            // The next generation is a queued job of its own.
            lane: None,
            ..self.clone()
        })
    }
}

/// Inserts the request together with its first job (durable before anything runs; without
/// admission checks, in one statement with concurrent submissions', see [`super::batch`]): `queued`
/// for the queue's workers (`held` from their fetch when worker processes take it as announced,
/// see [`store::FETCH_HOLD_MS`]), or — `run_by` the direct lane's worker (see [`super::lane`]) —
/// `running`, for that lane to run at once.
pub async fn submit(
    pool: &PgPool,
    inserts: &Inserter,
    request: &NewRequest,
    job: &ProviderCall,
    job_id: &str,
    run_by: Option<&str>,
    held: bool,
) -> Result<Inserted, sqlx::Error> {
    let first = store::FirstJob {
        id: job_id,
        args: serde_json::to_vec(job).unwrap_or_default(),
        max_attempts: MAX_ATTEMPTS as i32,
        run_by,
        held,
    };
    // A job for the queue's workers is announced once committed (see `store::notify_all`).
    let announce = run_by.is_none().then(|| job_id.to_owned());
    if request.admission.is_some() {
        // Admission checks and the insert share a transaction of their own.
        let inserted = store::insert_and_enqueue(pool, request, first).await?;
        if let (Inserted::New(_), Some(job_id)) = (&inserted, announce) {
            inserts.announce(job_id).await;
        }
        return Ok(inserted);
    }
    let row = store::batch_row(request, &first).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    if inserts
        .insert(request.request_id.clone(), row, announce)
        .await?
    {
        Ok(Inserted::New(None))
    } else {
        store::existing(pool, request).await
    }
}

/// Records a cache hit: the request is born `succeeded`, with its metrics row.
pub async fn submit_cached(
    pool: &PgPool,
    request: &NewRequest,
    key: &str,
    answer: &CachedAnswer,
    metrics: &MetricsRow,
    keep_prompt: bool,
) -> Result<Inserted, sqlx::Error> {
    store::insert_cached(pool, request, key, answer, metrics, keep_prompt).await
}

/// `queued`/`running` → `running` for the job's generation. None: finished or stale — the job
/// must do nothing.
pub async fn claim(hot: &Hot, job: &ProviderCall) -> Result<Option<Claimed>, sqlx::Error> {
    hot.run(async |db| store::claim(db, &job.request_id, job.generation).await)
        .await
}

/// What follows a failed provider call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterError {
    /// The same model again after `delay` (exponential backoff with jitter, at least the
    /// provider's `Retry-After`).
    Retry { delay: Duration },
    /// The next candidate, at once.
    FallBack { to: usize },
    /// The request fails with this code.
    GiveUp { code: &'static str },
}

/// The retry/fallback rule. Retryable errors (429, 5xx, timeouts) retry the same model up to
/// `PROVIDER_MAX_RETRIES` times unless `Retry-After` exceeds `MAX_RETRY_AFTER_SECS`; then —
/// and at once for the model's own error (404) — the next candidate; a permanent error (400,
/// 401/403, refusal), or no candidate left, fails the request.
pub fn after_error(
    error: &ProviderError,
    job: &ProviderCall,
    candidates: usize,
    jobs: &JobSettings,
) -> AfterError {
    let retry_after_ok = error.retry_after.is_none_or(|d| d <= jobs.max_retry_after);
    if error.kind == ErrorKind::Retryable && job.tries < jobs.max_retries && retry_after_ok {
        let delay = backoff(jobs.retry_base, job.tries).max(error.retry_after.unwrap_or_default());
        return AfterError::Retry { delay };
    }
    let model_level = matches!(
        error.kind,
        ErrorKind::Retryable | ErrorKind::ModelUnavailable
    );
    if model_level && job.candidate + 1 < candidates {
        return AfterError::FallBack {
            to: job.candidate + 1,
        };
    }
    AfterError::GiveUp {
        code: match error.kind {
            ErrorKind::Permanent => FailureCode::ProviderRejected.as_str(),
            _ => FailureCode::AllCandidatesFailed.as_str(),
        },
    }
}

/// Carries out a retry or a fallback: generation + 1 and its job, in one transaction, recording
/// `last_error`. False: the guard was closed (a duplicate run already moved on) or `after` was
/// not a retry or fallback.
pub async fn reschedule(
    pool: &PgPool,
    job: &ProviderCall,
    after: &AfterError,
    provider_ms: u64,
    last_error: &str,
) -> Result<bool, sqlx::Error> {
    let Some(next) = job.next(after, provider_ms) else {
        return Ok(false);
    };
    let delay = match after {
        AfterError::Retry { delay } => *delay,
        _ => Duration::ZERO,
    };
    store::reschedule(
        pool,
        &job.request_id,
        job.generation,
        last_error,
        next.task(delay),
    )
    .await
}

/// A terminal state to write with [`finish`].
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub request_id: &'a str,
    /// The generation that must still be current; None: any (the deadline sweep).
    pub generation: Option<i32>,
    pub outcome: &'a Outcome,
    pub metrics: &'a MetricsRow,
    pub cache: Option<&'a CacheEntry>,
    /// Keep the prompt text (`STORE_PROMPTS=full`) or clear it.
    pub keep_prompt: bool,
    /// Nobody waits for the answer (an async request): no wake-up at all.
    pub is_async: bool,
    /// The job to acknowledge in the same statement (see [`ProviderCall::lane`]).
    pub job: Option<&'a LaneJob>,
}

/// `queued`/`running` → `succeeded`/`failed` with the metrics row (and cache entry), guarded by
/// the generation. A waiter in this process (`notifier`) is woken in memory; one in another
/// process by a NOTIFY (`announcer`): from the finish's commit while this process sends no other
/// notification, otherwise once it committed. False: already finished, nothing written.
pub async fn finish(
    hot: &Hot,
    notifier: Option<&Notifier>,
    announcer: &Announcer,
    e: Ending<'_>,
) -> Result<bool, sqlx::Error> {
    let local = notifier.filter(|n| n.is_waiting(e.request_id));
    let notify = !e.is_async && local.is_none();
    // From the commit itself while this process sends no other notification.
    let in_commit = notify.then(|| announcer.in_commit()).flatten();
    let finish = store::Finish {
        request_id: e.request_id,
        generation: e.generation,
        outcome: e.outcome,
        metrics: e.metrics,
        keep_prompt: e.keep_prompt,
        cache: e.cache,
        notify,
        notify_in_commit: in_commit.is_some(),
        job: e.job.map(|j| store::LockedJob {
            id: &j.id,
            worker: &j.worker,
        }),
    };
    let done = hot.run(async |db| store::finish(db, &finish).await).await?;
    drop(in_commit);
    let Some(finished) = done else {
        return Ok(false);
    };
    if let Some(key_id) = finished.api_key_id {
        // A float that only grows (metrics' counters are integers; USD is not).
        metrics::gauge!(crate::telemetry::names::KEY_COST, "key_id" => key_id)
            .increment(e.metrics.cost_usd.unwrap_or(0.0));
    }
    if let Some(notifier) = local {
        notifier.wake_with(finished.record);
    }
    if let Some(notice) = finished.notice {
        announcer.announce(store::DONE_CHANNEL, notice).await;
    }
    Ok(true)
}

/// Fails requests still unfinished past `deadline` (a job that exhausted its storage-level
/// attempts, a queue nobody consumes), at most 100 per pass; returns how many it failed.
pub async fn sweep(
    hot: &Hot,
    announcer: &Announcer,
    deadline: Duration,
    keep_prompt: bool,
) -> Result<usize, sqlx::Error> {
    let overdue = store::overdue(hot.pool(), deadline.as_secs() as i64, 100).await?;
    let mut failed = 0;
    for (request_id, route, created_at) in overdue {
        // An unreadable route must not keep the request unfinished forever: it ends too.
        let route: StoredRoute =
            serde_json::from_value(route).unwrap_or_else(|_| StoredRoute::unreadable());
        let latency_ms = (chrono::Utc::now() - created_at).num_milliseconds() as f64;
        let metrics = failure_metrics(&route, 0, latency_ms, None);
        let outcome = Outcome::Failed {
            error: format!(
                "no answer within the request deadline ({} s)",
                deadline.as_secs()
            ),
            error_code: FailureCode::DeadlineExceeded.as_str().into(),
            provider: None,
            model: None,
        };
        let ending = Ending {
            request_id: &request_id,
            generation: None,
            outcome: &outcome,
            metrics: &metrics,
            cache: None,
            keep_prompt,
            is_async: false,
            job: None,
        };
        if finish(hot, None, announcer, ending).await? {
            tracing::warn!(%request_id, "request failed: deadline exceeded");
            failed += 1;
        }
    }
    Ok(failed)
}

/// How long an unfinished request may go without a live queue job before [`rearm_lost`]
/// re-arms it. A live request always has one (its row and job are written in one transaction,
/// a reschedule moves both), so this only has to outlast the commit of a finish.
pub const REARM_GRACE: Duration = Duration::from_secs(15);

/// Re-arms the job of every request the queue lost (see `store::requests::rearm_lost`): an
/// unfinished request must never depend on the deadline sweep alone. Returns how many.
pub async fn rearm_lost(pool: &PgPool, grace: Duration) -> Result<usize, sqlx::Error> {
    let rearmed = store::rearm_lost(pool, grace.as_secs_f64(), 100).await?;
    for request_id in &rearmed {
        tracing::warn!(%request_id, "unfinished request had no live job; its job was re-armed");
    }
    if !rearmed.is_empty() {
        metrics::counter!(crate::telemetry::names::JOBS_REARMED).increment(rearmed.len() as u64);
    }
    Ok(rearmed.len())
}

/// `base × 2^tries`, with ±25% jitter.
pub fn backoff(base: Duration, tries: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(tries.min(10)));
    exp.mul_f64(0.75 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderId;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        for tries in 0..4 {
            let nominal = 2f64.powi(tries as i32);
            for _ in 0..50 {
                let d = backoff(base, tries).as_secs_f64();
                assert!(d >= nominal * 0.75 && d <= nominal * 1.25, "{tries}: {d}");
            }
        }
    }

    fn error(kind: ErrorKind, retry_after: Option<u64>) -> ProviderError {
        ProviderError {
            provider: ProviderId::Simulated,
            kind,
            status: None,
            retry_after: retry_after.map(Duration::from_secs),
            message: String::new(),
        }
    }

    #[test]
    fn errors_retry_then_fall_back_then_give_up() {
        let jobs = crate::config::Settings::from_lookup(|_| Ok(None))
            .unwrap()
            .jobs;
        let mut job = ProviderCall::first("r");
        let retryable = error(ErrorKind::Retryable, None);
        assert!(matches!(
            after_error(&retryable, &job, 2, &jobs),
            AfterError::Retry { .. }
        ));
        job.tries = jobs.max_retries;
        assert_eq!(
            after_error(&retryable, &job, 2, &jobs),
            AfterError::FallBack { to: 1 }
        );
        let next = job.next(&AfterError::FallBack { to: 1 }, 7).unwrap();
        assert_eq!((next.generation, next.candidate, next.tries), (2, 1, 0));
        assert!(matches!(
            after_error(&retryable, &next, 2, &jobs),
            AfterError::Retry { .. }
        ));
        let mut last = next;
        last.tries = jobs.max_retries;
        assert_eq!(
            after_error(&retryable, &last, 2, &jobs),
            AfterError::GiveUp {
                code: "all_candidates_failed"
            }
        );
        let long_wait = error(ErrorKind::Retryable, Some(3600));
        assert_eq!(
            after_error(&long_wait, &ProviderCall::first("r"), 2, &jobs),
            AfterError::FallBack { to: 1 }
        );
        assert_eq!(
            after_error(
                &error(ErrorKind::ModelUnavailable, None),
                &ProviderCall::first("r"),
                2,
                &jobs
            ),
            AfterError::FallBack { to: 1 }
        );
        assert_eq!(
            after_error(
                &error(ErrorKind::Permanent, None),
                &ProviderCall::first("r"),
                2,
                &jobs
            ),
            AfterError::GiveUp {
                code: "provider_rejected"
            }
        );
    }
}
