//! `/admin/keys`: create (the secret is shown once), list, show with spend, update limits,
//! rotate and revoke API keys. Behind the admin token like every admin route.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::AppJson;
use super::validate;
use crate::providers::ProviderId;
use crate::routing::{Catalog, Strategy};
use crate::store::keys::{self, KeyPolicy};
use crate::tenants;

/// A key's settings as the admin sends them (create, or replace with PATCH semantics: fields
/// left out keep their value; `null` clears one).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, with = "double_option")]
    expires_at: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    allowed_models: Option<Option<Vec<String>>>,
    #[serde(default, with = "double_option")]
    allowed_providers: Option<Option<Vec<String>>>,
    #[serde(default, with = "double_option")]
    default_strategy: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    daily_budget_usd: Option<Option<f64>>,
    #[serde(default, with = "double_option")]
    monthly_budget_usd: Option<Option<f64>>,
    #[serde(default, with = "double_option")]
    user_daily_budget_usd: Option<Option<f64>>,
    #[serde(default, with = "double_option")]
    requests_per_minute: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    tokens_per_minute: Option<Option<i64>>,
    #[serde(default)]
    strict_budget: Option<bool>,
    /// true: this key's requests are never sampled for shadow comparisons.
    #[serde(default)]
    shadow_opt_out: Option<bool>,
}

/// `Option<Option<T>>`: absent → None, `null` → Some(None), a value → Some(Some(v)).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn budget(field: &str, v: Option<f64>) -> Result<Option<f64>, ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(ApiError::invalid_field(
            field,
            format!("{x} is not an amount of USD (≥ 0)"),
        )),
        other => Ok(other),
    }
}

fn per_minute(field: &str, v: Option<i64>) -> Result<Option<i32>, ApiError> {
    v.map(|n| {
        i32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid_field(field, format!("{n} is not a positive count")))
    })
    .transpose()
}

/// Applies `body` onto `policy` (and the expiry), validating each field it sets.
pub fn apply(
    catalog: &Catalog,
    body: KeyBody,
    policy: &mut KeyPolicy,
    expires_at: &mut Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    if let Some(v) = body.expires_at {
        *expires_at = v
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::invalid_field("expires_at", format!("{s:?} is not RFC 3339"))
                    })
            })
            .transpose()?;
    }
    if let Some(v) = body.allowed_models {
        if let Some(models) = &v {
            for m in models {
                let known = catalog
                    .models()
                    .iter()
                    .any(|c| *m == c.model || *m == c.key());
                if !known {
                    return Err(ApiError::invalid_field(
                        "allowed_models",
                        format!("unknown model {m:?} (use a catalog model or provider/model)"),
                    ));
                }
            }
        }
        policy.allowed_models = v;
    }
    if let Some(v) = body.allowed_providers {
        if let Some(names) = &v
            && let Some(bad) = names.iter().find(|n| ProviderId::parse(n).is_none())
        {
            return Err(ApiError::invalid_field(
                "allowed_providers",
                format!("unknown provider {bad:?}"),
            ));
        }
        policy.allowed_providers = v;
    }
    if let Some(v) = body.default_strategy {
        if let Some(name) = &v
            && Strategy::parse(name).is_none()
        {
            return Err(ApiError::invalid_field(
                "default_strategy",
                format!("unknown strategy {name:?}; expected cost, balanced or quality"),
            ));
        }
        policy.default_strategy = v;
    }
    if let Some(v) = body.daily_budget_usd {
        policy.daily_budget_usd = budget("daily_budget_usd", v)?;
    }
    if let Some(v) = body.monthly_budget_usd {
        policy.monthly_budget_usd = budget("monthly_budget_usd", v)?;
    }
    if let Some(v) = body.user_daily_budget_usd {
        policy.user_daily_budget_usd = budget("user_daily_budget_usd", v)?;
    }
    if let Some(v) = body.requests_per_minute {
        policy.requests_per_minute = per_minute("requests_per_minute", v)?;
    }
    if let Some(v) = body.tokens_per_minute {
        policy.tokens_per_minute = per_minute("tokens_per_minute", v)?;
    }
    if let Some(v) = body.strict_budget {
        policy.strict_budget = v;
    }
    if let Some(v) = body.shadow_opt_out {
        policy.shadow_opt_out = v;
    }
    Ok(())
}

fn key_error(e: tenants::KeyError) -> ApiError {
    match e {
        tenants::KeyError::Database(e) => ApiError::from(e),
        other => ApiError::internal(other),
    }
}

/// `POST /admin/keys`: 201 with the key and its secret (shown this once).
#[utoipa::path(post, path = "/admin/keys", tag = "admin", request_body = KeyBody,
    responses((status = 201, description = "The key and its secret (shown this once)", body = super::openapi::KeyWithSecret), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    AppJson(mut body): AppJson<KeyBody>,
) -> Result<(StatusCode, AppJson<Value>), ApiError> {
    let name = validate::short_text("name", body.name.take())?
        .ok_or_else(|| ApiError::invalid_field("name", "required"))?;
    let mut policy = KeyPolicy::default();
    let mut expires_at = None;
    apply(state.engine.catalog(), body, &mut policy, &mut expires_at)?;
    let (row, secret) = tenants::create_key(&state.db.pool, &name, expires_at, &policy)
        .await
        .map_err(key_error)?;
    state.keys.invalidate();
    Ok((
        StatusCode::CREATED,
        AppJson(json!({ "key": row, "secret": secret.expose_secret() })),
    ))
}

/// `GET /admin/keys`: every key (never a secret) with its current spend.
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, description = "Every key (no secrets) and current spend", body = super::openapi::KeyList), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<AppJson<Value>, ApiError> {
    let rows = keys::list(&state.db.pool).await?;
    let spend = keys::current_spend(&state.db.pool, None).await?;
    Ok(AppJson(json!({ "keys": rows, "spend": spend })))
}

fn no_key(key_id: &str) -> ApiError {
    ApiError::not_found(format!("no API key {key_id:?}"))
}

/// A key id from the path; one that cannot be an id (control characters, too long) is a 404
/// before it reaches the database.
fn plausible_key_id(key_id: String) -> Result<String, ApiError> {
    if validate::is_plausible_id(&key_id) {
        Ok(key_id)
    } else {
        Err(no_key(&key_id))
    }
}

/// `GET /admin/keys/{id}`: the key with its current spend (and its end users').
#[utoipa::path(get, path = "/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The key and its spend", body = super::openapi::KeyWithSpend), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<AppJson<Value>, ApiError> {
    let key_id = plausible_key_id(key_id)?;
    let row = keys::get(&state.db.pool, &key_id)
        .await?
        .ok_or_else(|| no_key(&key_id))?;
    let spend = keys::current_spend(&state.db.pool, Some(&key_id)).await?;
    Ok(AppJson(json!({ "key": row, "spend": spend })))
}

/// `PATCH /admin/keys/{id}`: change limits, restrictions, default strategy or expiry.
#[utoipa::path(patch, path = "/admin/keys/{key_id}", tag = "admin", request_body = KeyBody,
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The changed key", body = super::openapi::KeyAnswer), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    AppJson(body): AppJson<KeyBody>,
) -> Result<AppJson<Value>, ApiError> {
    let key_id = plausible_key_id(key_id)?;
    let row = keys::get(&state.db.pool, &key_id)
        .await?
        .ok_or_else(|| no_key(&key_id))?;
    if body.name.is_some() {
        return Err(ApiError::invalid_field(
            "name",
            "cannot be changed; create a new key",
        ));
    }
    let (mut policy, mut expires_at) = (row.policy, row.expires_at);
    apply(state.engine.catalog(), body, &mut policy, &mut expires_at)?;
    let row = keys::update(&state.db.pool, &key_id, expires_at, &policy)
        .await?
        .ok_or_else(|| no_key(&key_id))?;
    state.keys.invalidate();
    Ok(AppJson(json!({ "key": row })))
}

/// `POST /admin/keys/{id}/rotate`: a new secret (shown once); the old one is refused from now.
#[utoipa::path(post, path = "/admin/keys/{key_id}/rotate", tag = "admin",
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The key and its new secret (shown this once)", body = super::openapi::KeyWithSecret), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<AppJson<Value>, ApiError> {
    let key_id = plausible_key_id(key_id)?;
    let (row, secret) = tenants::rotate_key(&state.db.pool, &key_id)
        .await
        .map_err(key_error)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no live API key {key_id:?} (revoked or unknown)"))
        })?;
    state.keys.invalidate();
    Ok(AppJson(
        json!({ "key": row, "secret": secret.expose_secret() }),
    ))
}

/// `POST /admin/keys/{id}/revoke`: refused by every replica from now on (within the key
/// cache's 0.5 s).
#[utoipa::path(post, path = "/admin/keys/{key_id}/revoke", tag = "admin",
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The revoked key", body = super::openapi::KeyAnswer), super::openapi::AdminErrors),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<AppJson<Value>, ApiError> {
    let key_id = plausible_key_id(key_id)?;
    let row = keys::revoke(&state.db.pool, &key_id)
        .await?
        .ok_or_else(|| no_key(&key_id))?;
    state.keys.invalidate();
    Ok(AppJson(json!({ "key": row })))
}
