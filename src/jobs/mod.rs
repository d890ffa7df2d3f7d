//! Background jobs, shared by `optimizer serve` (in-process workers) and `optimizer-worker`.
//! Every job is at-least-once and its handler idempotent; one registration function starts
//! them all.
//!
//! - [`provider_call`]: call the provider for a queued request (queue `provider_call`).
//! - [`sweeper`]: fail requests that passed their deadline, so none is left without a
//!   terminal state.

pub mod provider_call;
pub mod sweeper;

use std::sync::Arc;

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::completion::{Notifier, ProviderCall};
use crate::config::Settings;
use crate::providers::{Providers, ProvidersError};
use crate::routing::RoutingEngine;
use crate::store::requests::PROVIDER_CALL_QUEUE;

/// What job handlers share.
pub struct JobContext {
    pub pool: PgPool,
    pub engine: Arc<RoutingEngine>,
    pub settings: Arc<Settings>,
    pub providers: Providers,
    /// The API's waiters when the workers run in the API's process (`optimizer serve`): a
    /// request waiting here is woken in memory, without a NOTIFY.
    pub notifier: Option<Arc<Notifier>>,
}

impl JobContext {
    pub fn new(
        pool: PgPool,
        engine: Arc<RoutingEngine>,
        settings: Arc<Settings>,
    ) -> Result<Self, ProvidersError> {
        Ok(Self {
            providers: Providers::from_settings(&settings)?,
            pool,
            engine,
            settings,
            notifier: None,
        })
    }

    /// Wakes waiters of this process directly (see [`JobContext::notifier`]).
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }
}

/// Which queues a worker process consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    ProviderCall,
}

impl Queue {
    pub const ALL: [Queue; 1] = [Queue::ProviderCall];

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            PROVIDER_CALL_QUEUE => Some(Queue::ProviderCall),
            _ => None,
        }
    }
}

/// Runs the workers for `queues` and the deadline sweeper until `shutdown`; in-flight jobs
/// finish first (apalis returns fetched-but-unstarted ones to the queue).
pub async fn run_workers(
    ctx: Arc<JobContext>,
    queues: &[Queue],
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let sweeper = tokio::spawn(sweeper::run(ctx.clone(), shutdown.clone()));
    let mut result = Ok(());
    if queues.contains(&Queue::ProviderCall) {
        result = provider_call_worker(ctx, shutdown.clone()).await;
    } else {
        shutdown.cancelled().await;
    }
    let _ = sweeper.await;
    result
}

async fn provider_call_worker(
    ctx: Arc<JobContext>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let jobs = &ctx.settings.jobs;
    let config = Config::default()
        .queue(PROVIDER_CALL_QUEUE)
        .batch_size(jobs.batch_size)
        .heartbeat_interval(jobs.heartbeat)
        .missed_heartbeats(jobs.missed_heartbeats);
    let storage = PostgresStorage::<ProviderCall>::new(&ctx.pool).with_config(config);
    // NOTIFY wakes the worker for new jobs; a short poll picks up delayed ones (retries with
    // backoff), which the insert trigger does not announce, and wake-ups missed while busy.
    let strategy = Strategy::new()
        .stream(Pubsub::new(
            ctx.pool.clone(),
            PROVIDER_CALL_QUEUE.to_owned(),
        ))
        .interval(jobs.poll_interval);
    let backend = PollWith::new(storage, strategy);
    let name = format!("provider-call-{}", ulid::Ulid::generate());
    tracing::info!(worker = %name, concurrency = jobs.concurrency, "provider_call worker starting");
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(ctx.clone())
        .concurrency(jobs.concurrency)
        .build(provider_call::handle);
    worker
        .run_until(async move {
            shutdown.cancelled().await;
            Ok::<(), std::io::Error>(())
        })
        .await
}
