//! Process plumbing shared by `optimizer serve` and `optimizer-worker`: the shutdown signal and
//! database set-up that keeps retrying until Postgres is there.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Database;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    crate::tasks::spawn("signal", async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// At the end of a binary's shutdown, after its servers and workers stopped: waits briefly for
/// every other tracked task (the background loops, the batchers' last writes, the metrics
/// listener) so their work lands before the pool closes. Each ends on the shutdown token or
/// when its senders are gone; one still running is named in the log by count.
pub async fn wait_for_tasks() {
    let left = crate::tasks::wait(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::warn!(tasks = left, "tasks still running at exit");
    } else {
        tracing::debug!("every task ended");
    }
}

/// Creates the database if missing and migrates it, retrying with capped exponential backoff
/// while Postgres is unreachable, until it succeeds or `shutdown` is cancelled. Returns whether
/// set-up completed. Meanwhile the process serves `/health`, and `/ready` says why it is not
/// ready.
pub async fn setup_database_with_retry(db: &Database, shutdown: &CancellationToken) -> bool {
    let mut attempt = 0;
    loop {
        // The queue's retry backoff (doubling, ±25% jitter, so replicas do not retry in step),
        // capped at 30 s.
        let delay = crate::completion::lifecycle::backoff(Duration::from_millis(250), attempt)
            .min(Duration::from_secs(30));
        attempt += 1;
        match db.setup().await {
            Ok(()) => {
                tracing::info!("database migrated");
                return true;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "database set-up failed; retrying"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// GETs an `http://host:port/path` URL and succeeds on a 2xx status, within 5 s: the
/// container health check against our own listener.
pub async fn probe(url: &str) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Err("only http:// URLs can be probed".into());
    }
    let client = crate::providers::http_client(Duration::from_secs(5))?;
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out after 5 s".to_owned()
        } else {
            e.to_string()
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("unexpected answer {status}"))
    }
}

/// Starts the API process's background tasks: the learned-weights reloader, the `request_done`
/// listener that wakes waiting requests, and their release at shutdown.
pub fn spawn_api_tasks(state: &crate::api::AppState, shutdown: &CancellationToken) {
    crate::tasks::spawn(
        "reloader",
        crate::learning::reloader::run_reloader(
            state.engine.clone(),
            state.db.pool.clone(),
            state.settings.routing.reload_interval,
            shutdown.clone(),
        ),
    );
    crate::tasks::spawn(
        "notifier",
        state
            .completions
            .notifier
            .clone()
            .run(state.db.pool.clone(), shutdown.clone()),
    );
    // On shutdown, clients waiting for an answer get 202 + status URL at once instead of being
    // cut off when the grace period ends (their jobs may not run in this process any more).
    let (notifier, shutdown) = (state.completions.notifier.clone(), shutdown.clone());
    crate::tasks::spawn("notifier_close", async move {
        shutdown.cancelled().await;
        notifier.close();
    });
}

/// Starts the job workers inside an API process (every queue): they share its routing engine
/// and wake its waiting requests in memory. Used by `optimizer serve`, `optimizer eval` and the
/// tests.
pub fn spawn_in_process_workers(
    state: &crate::api::AppState,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, crate::wiring::ProvidersSetupError> {
    state.completions.lane.expect();
    let ctx =
        crate::jobs::JobContext::new(&state.db, state.engine.clone(), state.settings.clone())?
            .with_notifier(state.completions.notifier.clone())
            .with_lane(state.completions.lane.clone());
    Ok(crate::tasks::spawn(
        "workers",
        run_workers(
            state.db.clone(),
            std::sync::Arc::new(ctx),
            crate::jobs::Queue::ALL.to_vec(),
            shutdown.clone(),
        ),
    ))
}

/// Runs the job workers for `queues` until `shutdown`: waits for the database to be ready
/// (migrated), and restarts the workers after an error.
pub async fn run_workers(
    db: Database,
    ctx: std::sync::Arc<crate::jobs::JobContext>,
    queues: Vec<crate::jobs::Queue>,
    shutdown: CancellationToken,
) {
    loop {
        // Checked often: in `serve`, `/ready` waits for these workers.
        while db.check_ready().await.is_err() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        match crate::jobs::run_workers(ctx.clone(), &queues, shutdown.clone()).await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!("workers stopped unexpectedly; restarting"),
            Err(e) => tracing::warn!(error = %e, "workers failed; restarting"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
