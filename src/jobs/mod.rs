//! Background jobs, shared by `optimizer serve` (in-process workers) and `optimizer-worker`.
//! Every job is at-least-once and its handler idempotent; one registration function starts
//! them all.
//!
//! - [`provider_call`]: call the provider for a queued request (queue `provider_call`).
//! - [`direct`]: in `optimizer serve`, run the requests its API hands over in memory.
//! - [`listen`]: in a worker process, take new provider_call jobs as they are announced.
//! - [`feedback_aggregation`]: refresh the running aggregate of a new rating's pattern × model.
//! - [`retrain`]: run the FeedbackTrainer (queue `retrain`), and the cron schedule that queues
//!   one run per tick across all processes.
//! - [`shadow`]: shadow comparisons of a sampled request (queue `shadow`).
//! - [`sweeper`]: fail requests that passed their deadline, so none is left without a
//!   terminal state.

pub mod direct;
pub mod feedback_aggregation;
pub mod listen;
pub mod provider_call;
pub mod retrain;
pub mod shadow;
pub mod sweeper;

use std::sync::Arc;

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::completion::{Announcer, DirectLane, Notifier, ProviderCall};
use crate::config::Settings;
use crate::providers::Providers;
use crate::routing::RoutingEngine;
use crate::store::feedback::AGGREGATION_QUEUE;
use crate::store::learning::RETRAIN_QUEUE;
use crate::store::requests::PROVIDER_CALL_QUEUE;
use crate::store::shadow::SHADOW_QUEUE;
use crate::store::{Database, Hot};
use crate::wiring::ProvidersSetupError;

/// What job handlers share.
pub struct JobContext {
    pub pool: PgPool,
    /// The hot path's connections (a job's claim, its finish), taken from `pool`.
    pub hot: Hot,
    pub engine: Arc<RoutingEngine>,
    pub settings: Arc<Settings>,
    pub providers: Providers,
    /// The API's waiters when the workers run in the API's process (`optimizer serve`): a
    /// request waiting here is woken in memory, without a NOTIFY.
    pub notifier: Option<Arc<Notifier>>,
    /// The API's direct lane in `optimizer serve`: requests submitted here are handed to this
    /// process's provider_call runner in memory (see [`direct`]).
    pub lane: Option<Arc<DirectLane>>,
    /// Sends the notifications of finished requests, after their commits (see
    /// [`crate::completion::batch`]).
    pub announcer: Arc<Announcer>,
}

impl JobContext {
    pub fn new(
        db: &Database,
        engine: Arc<RoutingEngine>,
        settings: Arc<Settings>,
    ) -> Result<Self, ProvidersSetupError> {
        Ok(Self {
            providers: crate::wiring::build_providers(&settings)?,
            announcer: Announcer::new(db.hot.clone()),
            pool: db.pool.clone(),
            hot: db.hot.clone(),
            engine,
            settings,
            notifier: None,
            lane: None,
        })
    }

    /// Wakes waiters of this process directly (see [`JobContext::notifier`]).
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Runs the jobs the API hands over in memory (see [`JobContext::lane`]).
    pub fn with_lane(mut self, lane: Arc<DirectLane>) -> Self {
        self.lane = Some(lane);
        self
    }
}

/// Which queues a worker process consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    ProviderCall,
    FeedbackAggregation,
    Retrain,
    Shadow,
}

impl Queue {
    pub const ALL: [Queue; 4] = [
        Queue::ProviderCall,
        Queue::FeedbackAggregation,
        Queue::Retrain,
        Queue::Shadow,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            PROVIDER_CALL_QUEUE => Some(Queue::ProviderCall),
            AGGREGATION_QUEUE => Some(Queue::FeedbackAggregation),
            RETRAIN_QUEUE => Some(Queue::Retrain),
            SHADOW_QUEUE => Some(Queue::Shadow),
            _ => None,
        }
    }
}

/// Runs the workers for `queues`, the deadline sweeper and (with the retrain queue) the retrain
/// schedule until `shutdown`; in-flight jobs finish first (apalis returns fetched-but-unstarted
/// ones to the queue).
pub async fn run_workers(
    ctx: Arc<JobContext>,
    queues: &[Queue],
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // Everything started here stops together: on shutdown, or when a worker fails.
    let shutdown = shutdown.child_token();
    let sweeper = crate::tasks::spawn("sweeper", sweeper::run(ctx.clone(), shutdown.clone()));
    let drift = crate::tasks::spawn(
        "drift",
        crate::learning::drift::run(
            ctx.pool.clone(),
            ctx.settings.learning.drift.clone(),
            shutdown.clone(),
        ),
    );
    let schedule = queues.contains(&Queue::Retrain).then(|| {
        crate::tasks::spawn(
            "retrain_schedule",
            retrain::schedule(ctx.clone(), shutdown.clone()),
        )
    });
    let enabled = |q| queues.contains(&q);
    // In `serve`, the API hands its requests to the direct lane; a worker process takes new
    // jobs as they are announced.
    let direct = enabled(Queue::ProviderCall).then(|| match &ctx.lane {
        Some(lane) => crate::tasks::spawn(
            "direct_lane",
            direct::run(ctx.clone(), lane.clone(), shutdown.clone()),
        ),
        None => crate::tasks::spawn("listen", listen::run(ctx.clone(), shutdown.clone())),
    });
    // Each worker on its own task (see `worker!`).
    let jobs = &ctx.settings.jobs;
    // apalis' own LISTEN only in `serve`. A worker process takes announced provider_call jobs by
    // id (`listen`), which that wake-up would only race with a fetch per request, and its slow
    // queues poll (`SLOW_POLL`) rather than keep two more listening connections that every
    // request's NOTIFYs would wake (docs/PERFORMANCE.md).
    let announced = ctx.lane.is_some();
    let handles = [
        enabled(Queue::ProviderCall).then(|| {
            worker!(
                ctx,
                shutdown,
                ProviderCall,
                PROVIDER_CALL_QUEUE,
                jobs.concurrency,
                jobs.poll_interval,
                announced,
                provider_call::handle
            )
        }),
        enabled(Queue::FeedbackAggregation).then(|| {
            worker!(
                ctx,
                shutdown,
                feedback_aggregation::FeedbackAggregation,
                AGGREGATION_QUEUE,
                4,
                SLOW_POLL,
                announced,
                feedback_aggregation::handle
            )
        }),
        enabled(Queue::Retrain).then(|| {
            worker!(
                ctx,
                shutdown,
                retrain::Retrain,
                RETRAIN_QUEUE,
                1,
                SLOW_POLL,
                announced,
                retrain::handle
            )
        }),
        // Shadow comparisons never compete with answers for much: a few at a time.
        enabled(Queue::Shadow).then(|| {
            worker!(
                ctx,
                shutdown,
                shadow::Shadow,
                SHADOW_QUEUE,
                2,
                SLOW_POLL,
                announced,
                shadow::handle
            )
        }),
    ];
    let mut result = Ok(());
    for handle in handles.into_iter().flatten() {
        let r = match handle.await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::StateError(
                apalis::prelude::WorkerStateError::InvalidState(e.to_string()),
            )),
        };
        result = result.and(r);
    }
    shutdown.cancel();
    let _ = sweeper.await;
    let _ = drift.await;
    if let Some(schedule) = schedule {
        let _ = schedule.await;
    }
    if let Some(direct) = direct {
        let _ = direct.await;
    }
    result
}

/// The poll of queues whose latency does not matter (aggregation, retrain): in `serve`, NOTIFY
/// wakes them and the poll only bounds a missed wake-up; in a worker process, the poll alone
/// takes their jobs.
const SLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Times a job run and counts failures.
pub(crate) fn record_job(job: &'static str, started: std::time::Instant, ok: bool) {
    metrics::histogram!(crate::telemetry::names::JOB_DURATION, "job" => job)
        .record(started.elapsed().as_secs_f64());
    if !ok {
        metrics::counter!(crate::telemetry::names::JOB_FAILURES, "job" => job).increment(1);
    }
}

/// Spawns one apalis worker on `$queue`, running until shutdown: with `$announced`, LISTEN/NOTIFY
/// wakes it for new jobs; a poll (`$poll`) picks up delayed ones (retries with backoff), which
/// the insert trigger does not announce, and wake-ups missed while busy. If it fails, everything
/// `run_workers` started stops.
///
/// Every NOTIFY signals every listening connection of the database (PostgreSQL filters channels
/// in the receiver), so a listener nobody needs costs each request a wake-up in PostgreSQL and
/// here.
///
/// Each worker runs on its own task: apalis starts a fetch whenever its worker's future is
/// polled, so workers joined in one task woke each other (a fetch ending wakes the task, which
/// polls the others, which fetch…) — ~1,700 empty fetches a second in an idle process.
macro_rules! worker {
    ($ctx:expr, $shutdown:expr, $args:ty, $queue:expr, $concurrency:expr, $poll:expr, $announced:expr, $handler:expr) => {{
        let jobs = &$ctx.settings.jobs;
        let config = Config::default()
            .queue($queue)
            .batch_size(jobs.batch_size)
            .heartbeat_interval(jobs.heartbeat)
            .missed_heartbeats(jobs.missed_heartbeats);
        let storage = PostgresStorage::<$args>::new(&$ctx.pool).with_config(config);
        let mut strategy = Strategy::new();
        if $announced {
            strategy = strategy.stream(Pubsub::new($ctx.pool.clone(), $queue.to_owned()));
        }
        let strategy = strategy.interval($poll);
        let backend = PollWith::new(storage, strategy);
        let name = format!("{}-{}", $queue, ulid::Ulid::generate());
        tracing::info!(worker = %name, concurrency = $concurrency, "worker starting");
        let worker = WorkerBuilder::new(name)
            .backend(backend)
            .data($ctx.clone())
            .concurrency($concurrency)
            .build($handler);
        let shutdown = $shutdown.clone();
        crate::tasks::spawn("worker", async move {
            let until = shutdown.clone();
            let result = worker
                .run_until(async move {
                    until.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        })
    }};
}
use worker;
