//! The `optimizer` command: `serve`, `migrate`, `healthcheck`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use optimizer::api::{self, AppState};
use optimizer::config::Settings;
use optimizer::routing::weights;
use optimizer::store::Database;
use optimizer::{runtime, telemetry};

#[derive(Parser)]
#[command(version, about = "AI Cost Optimizer: a self-hosted LLM router")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (the default). Creates and migrates the database unless
    /// RUN_MIGRATIONS=false.
    Serve,
    /// Create the database if missing, apply all migrations, and exit.
    Migrate,
    /// Exit 0 when GET URL answers 2xx (for container health checks; needs no curl).
    Healthcheck {
        /// What to probe; defaults to /health on BIND's port at 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("optimizer: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck { url } = command {
        let url =
            url.unwrap_or_else(|| format!("http://127.0.0.1:{}/health", settings.bind.port()));
        return match optimizer::runtime::probe(&url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("optimizer healthcheck: {url}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(&settings);
    let result = match command {
        Command::Migrate => migrate(&settings).await,
        _ => serve(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("optimizer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect_lazy(settings);
    db.setup().await?;
    tracing::info!(database = %settings.database_label(), "migrations applied");
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let state = AppState::new(settings)?;
    let settings = state.settings.clone();
    let db = state.db.clone();
    let shutdown = runtime::shutdown_on_signal();
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on BIND={}: {e}", settings.bind))?;
    tracing::info!(
        bind = %settings.bind,
        database = %settings.database_label(),
        "optimizer API listening"
    );
    if settings.run_migrations {
        let (db, shutdown) = (db.clone(), shutdown.clone());
        tokio::spawn(async move { runtime::setup_database_with_retry(&db, &shutdown).await });
    }
    tracing::info!(
        catalog = state.engine.catalog().source(),
        providers = ?settings.enabled_providers,
        baseline = %state.engine.catalog().models()[state.engine.baseline()].key(),
        "routing ready"
    );
    tokio::spawn(weights::run_reloader(
        state.engine.clone(),
        db.pool.clone(),
        settings.routing.reload_interval,
        shutdown.clone(),
    ));
    api::serve(
        listener,
        api::router(state),
        shutdown,
        settings.shutdown_timeout,
    )
    .await?;
    db.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
