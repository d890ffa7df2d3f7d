//! `GET /health` (the process is alive; touches nothing) and `GET /ready` (the database is
//! reachable and migrated to this build's schema).

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

/// The database is reachable and migrated to this build's schema.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready", body = super::openapi::ReadyBody),
              super::openapi::ProbeErrors))]
pub async fn ready(State(db): State<Database>) -> Result<Json<Value>, ApiError> {
    match db.check_ready().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(e @ NotReady::Unreachable(_)) => {
            tracing::warn!(error = format!("{:#}", anyhow::Error::from(e)), "not ready");
            Err(ApiError::unavailable(
                "database_unreachable",
                "the database is unreachable",
            ))
        }
        Err(e @ NotReady::NotMigrated(_)) => {
            Err(ApiError::unavailable("not_migrated", e.to_string()))
        }
    }
}
