//! `GET /health` (the process is alive; touches nothing) and `GET /ready` (the database is
//! reachable and migrated to this build's schema; in `serve`, its job workers run).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::store::{Database, NotReady};

/// The process is alive (touches nothing).
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "Alive", body = super::openapi::HealthBody)))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// The database is reachable and migrated to this build's schema, and — in `optimizer serve`
/// with its in-process workers — those workers run (503 `workers_starting` until then: a
/// request accepted before would wait for them).
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready", body = super::openapi::ReadyBody),
              super::openapi::ProbeErrors))]
pub async fn ready(State(state): State<super::AppState>) -> Result<Json<Value>, ApiError> {
    database_ready(&state.db).await?;
    if !state.completions.lane.ready() {
        return Err(ApiError::unavailable(
            "workers_starting",
            "the in-process job workers are not running yet",
        )
        .quiet());
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// The worker process's `/ready`: the database is reachable and migrated.
pub async fn worker_ready(State(db): State<Database>) -> Result<Json<Value>, ApiError> {
    database_ready(&db).await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn database_ready(db: &Database) -> Result<(), ApiError> {
    match db.check_ready().await {
        Ok(()) => {
            noted(None);
            Ok(())
        }
        Err(NotReady::Unreachable(e)) => {
            noted(Some(format!(
                "the database is unreachable ({})",
                crate::store::describe(&e)
            )));
            Err(
                ApiError::unavailable("database_unreachable", "the database is unreachable")
                    .quiet(),
            )
        }
        Err(e @ NotReady::NotMigrated(_)) => {
            noted(Some(e.to_string()));
            Err(ApiError::unavailable("not_migrated", e.to_string()).quiet())
        }
    }
}

/// Logs why the service is not ready once per change of reason, at info: probes ask every
/// second or so, and a service that is starting (creating and migrating its database, waiting
/// for Postgres) is not an error.
fn noted(reason: Option<String>) {
    static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let Ok(mut last) = LAST.lock() else {
        return;
    };
    if *last == reason {
        return;
    }
    match &reason {
        Some(why) => tracing::info!(reason = %why, "not ready yet"),
        None => tracing::info!("ready"),
    }
    *last = reason;
}
