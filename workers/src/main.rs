//! `optimizer-worker`: the worker process. It connects, migrates if asked, serves its own
//! `/health` and `/ready` on `WORKER_BIND`, and shuts down gracefully on SIGTERM/SIGINT.
//! It is thin on purpose: what it runs is defined in the `optimizer` library.

use std::process::ExitCode;

use clap::Parser;
use optimizer::config::Settings;
use optimizer::store::Database;
use optimizer::{api, runtime, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "AI Cost Optimizer worker: consumes the Postgres-backed job queues"
)]
struct Cli {}

#[tokio::main]
async fn main() -> ExitCode {
    let _cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("optimizer-worker: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("optimizer-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let shutdown = runtime::shutdown_on_signal();
    let db = Database::connect_lazy(&settings);
    let listener = tokio::net::TcpListener::bind(settings.worker_bind)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on WORKER_BIND={}: {e}", settings.worker_bind)
        })?;
    tracing::info!(
        bind = %settings.worker_bind,
        database = %settings.database_label(),
        "optimizer worker listening"
    );
    if settings.run_migrations {
        let (db, shutdown) = (db.clone(), shutdown.clone());
        tokio::spawn(async move { runtime::setup_database_with_retry(&db, &shutdown).await });
    }
    api::serve(
        listener,
        api::worker_router(db.clone()),
        shutdown,
        settings.shutdown_timeout,
    )
    .await?;
    db.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
