//! `optimizer-worker`: the worker process. It connects, migrates if asked, consumes the job
//! queues, serves its own `/health` and `/ready` on `WORKER_BIND`, and shuts down gracefully on
//! SIGTERM/SIGINT (in-flight jobs finish). Any number may run at once, on any machines.
//! It is thin on purpose: what it runs is defined in the `optimizer` library (`jobs`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use optimizer::config::Settings;
use optimizer::jobs::{JobContext, Queue};
use optimizer::store::Database;
use optimizer::{api, runtime, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "AI Cost Optimizer worker: consumes the Postgres-backed job queues"
)]
struct Cli {
    /// Queues to consume, comma-separated (default: all). Known: provider_call.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
    /// Jobs in flight per process (overrides WORKER_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("optimizer-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut queues = Vec::new();
    for name in &cli.queues {
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
    if let Some(n) = cli.concurrency {
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
    optimizer::providers::install_crypto();
    telemetry::metrics();
    let engine = Arc::new(optimizer::routing::build_engine(&settings)?);
    let settings = Arc::new(settings);
    let shutdown = runtime::shutdown_on_signal();
    let db = Database::connect_lazy(&settings);
    let ctx = Arc::new(JobContext::new(db.pool.clone(), engine, settings.clone())?);
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
        tokio::spawn(async move { runtime::setup_database_with_retry(&db, &shutdown).await });
    }
    let workers = tokio::spawn(runtime::run_workers(
        db.clone(),
        ctx,
        queues,
        shutdown.clone(),
    ));
    api::serve(
        listener,
        api::worker_router(db.clone()),
        shutdown.clone(),
        settings.shutdown_timeout,
    )
    .await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(settings.shutdown_timeout, workers).await;
    db.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
