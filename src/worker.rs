//! The worker process, shared by the `optimizer-worker` binary and `optimizer worker`: connect,
//! migrate if asked, consume the job queues, serve `/health`, `/ready` and `/metrics` on
//! `WORKER_BIND`, shut down gracefully on SIGTERM/SIGINT (in-flight jobs finish).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::config::Settings;
use crate::jobs::{JobContext, Queue};
use crate::store::Database;
use crate::{api, runtime, telemetry};

/// Worker options (the same flags on both entry points).
#[derive(Debug, Clone, Default, Args)]
pub struct WorkerArgs {
    /// Queues to consume, comma-separated (default: all): provider_call, feedback_aggregation,
    /// retrain.
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Jobs in flight per process (overrides WORKER_CONCURRENCY).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// Runs a worker process to completion; the exit code says how it ended (2: bad configuration).
pub async fn main(args: WorkerArgs) -> ExitCode {
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("optimizer-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut queues = Vec::new();
    for name in &args.queues {
        match Queue::parse(name) {
            Some(q) => queues.push(q),
            None => {
                eprintln!("optimizer-worker: --queues: unknown queue {name:?}");
                return ExitCode::from(2);
            }
        }
    }
    if queues.is_empty() {
        queues = Queue::ALL.to_vec();
    }
    if let Some(n) = args.concurrency {
        if n == 0 {
            eprintln!("optimizer-worker: --concurrency must be at least 1");
            return ExitCode::from(2);
        }
        settings.jobs.concurrency = n;
    }
    telemetry::init(&settings);
    match run(settings, queues).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("optimizer-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, queues: Vec<Queue>) -> anyhow::Result<()> {
    crate::providers::install_crypto();
    telemetry::metrics();
    let engine = Arc::new(crate::wiring::build_engine(&settings)?);
    let settings = Arc::new(settings);
    let shutdown = runtime::shutdown_on_signal();
    let db = Database::connect_lazy(&settings.pool());
    let ctx = Arc::new(JobContext::new(&db, engine, settings.clone())?);
    let listener = tokio::net::TcpListener::bind(settings.worker_bind)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on WORKER_BIND={}: {e}", settings.worker_bind)
        })?;
    tracing::info!(
        bind = %settings.worker_bind,
        database = %settings.database_label(),
        ?queues,
        concurrency = settings.jobs.concurrency,
        "optimizer worker listening"
    );
    if settings.run_migrations {
        let (db, shutdown) = (db.clone(), shutdown.clone());
        crate::tasks::spawn("setup_database", async move {
            runtime::setup_database_with_retry(&db, &shutdown).await
        });
    }
    let workers = crate::tasks::spawn(
        "workers",
        runtime::run_workers(db.clone(), ctx, queues, shutdown.clone()),
    );
    api::serve_with(
        listener,
        api::worker_router(db.clone()),
        shutdown.clone(),
        settings.shutdown_timeout,
        settings.http_idle_timeout,
    )
    .await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(settings.shutdown_timeout, workers).await;
    runtime::wait_for_tasks().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
