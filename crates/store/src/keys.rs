//! `api_keys`, `key_spend` and `key_rate`: API keys (stored as hashes), what each may do, and
//! the budget and rate-limit counters every replica shares.
//!
//! Admission (a request's rate-limit count and budget holds) is written in the transaction that
//! inserts the request (the requests module); the hold is settled by the statement that ends it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

/// A key as the admin sees it (never its secret or hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyRow {
    pub key_id: String,
    pub name: String,
    pub prefix: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub policy: KeyPolicy,
}

/// What a key may do: restrictions, defaults and limits (None: unrestricted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyPolicy {
    pub allowed_models: Option<Vec<String>>,
    pub allowed_providers: Option<Vec<String>>,
    pub default_strategy: Option<String>,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub user_daily_budget_usd: Option<f64>,
    pub requests_per_minute: Option<i32>,
    pub tokens_per_minute: Option<i32>,
    /// Refuse a request that does not fit the budget left, rather than route it among the
    /// models whose worst case fits.
    pub strict_budget: bool,
    /// Never sample this key's requests for shadow comparisons.
    pub shadow_opt_out: bool,
}

const KEY_COLUMNS: &str = "key_id, name, prefix, source, created_at, rotated_at, expires_at,
    revoked_at, allowed_models, allowed_providers, default_strategy, daily_budget_usd,
    monthly_budget_usd, user_daily_budget_usd, requests_per_minute, tokens_per_minute,
    strict_budget, shadow_opt_out";

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub key_id: &'a str,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a [u8],
    pub expires_at: Option<DateTime<Utc>>,
    pub policy: &'a KeyPolicy,
}

pub async fn create(pool: &PgPool, key: &NewKey<'_>) -> Result<KeyRow, sqlx::Error> {
    let p = key.policy;
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (key_id, name, prefix, secret_hash, expires_at, allowed_models,
             allowed_providers, default_strategy, daily_budget_usd, monthly_budget_usd,
             user_daily_budget_usd, requests_per_minute, tokens_per_minute, strict_budget,
             shadow_opt_out)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         RETURNING {KEY_COLUMNS}"
    )))
    .bind(key.key_id)
    .bind(key.name)
    .bind(key.prefix)
    .bind(key.secret_hash)
    .bind(key.expires_at);
    bind_policy!(query, p).fetch_one(pool).await
}

/// Binds a [`KeyPolicy`]'s ten columns, in the order allowed_models … shadow_opt_out.
macro_rules! bind_policy {
    ($query:expr, $p:expr) => {{
        let p: &KeyPolicy = $p;
        $query
            .bind(&p.allowed_models)
            .bind(&p.allowed_providers)
            .bind(&p.default_strategy)
            .bind(p.daily_budget_usd)
            .bind(p.monthly_budget_usd)
            .bind(p.user_daily_budget_usd)
            .bind(p.requests_per_minute)
            .bind(p.tokens_per_minute)
            .bind(p.strict_budget)
            .bind(p.shadow_opt_out)
    }};
}
use bind_policy;

/// Makes sure a key of `API_KEYS` exists with this secret (created unrestricted; a changed
/// secret replaces the stored hash, limits set by the admin stay).
pub async fn upsert_bootstrap(
    pool: &PgPool,
    key_id: &str,
    prefix: &str,
    secret_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (key_id, name, prefix, secret_hash, source)
         VALUES ($1, $1, $2, $3, 'env')
         ON CONFLICT (key_id) DO UPDATE SET prefix = EXCLUDED.prefix,
             secret_hash = EXCLUDED.secret_hash
         WHERE api_keys.secret_hash <> EXCLUDED.secret_hash",
    )
    .bind(key_id)
    .bind(prefix)
    .bind(secret_hash)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
    )))
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, key_id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"
    )))
    .bind(key_id)
    .fetch_optional(pool)
    .await
}

/// The live key (not revoked, not expired) with this secret hash.
pub async fn authenticate(
    pool: &PgPool,
    secret_hash: &[u8],
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE secret_hash = $1 AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())"
    )))
    .bind(secret_hash)
    .fetch_optional(pool)
    .await
}

/// Whether any key was ever created, live or not (then every client route needs a live one:
/// revoking or letting expire the last key does not open the service again).
pub async fn any_created(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
        .fetch_one(pool)
        .await
}

/// Replaces the key's secret; the old one is refused from now on. None: no such live key.
pub async fn rotate(
    pool: &PgPool,
    key_id: &str,
    prefix: &str,
    secret_hash: &[u8],
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET prefix = $2, secret_hash = $3, rotated_at = now()
         WHERE key_id = $1 AND revoked_at IS NULL
         RETURNING {KEY_COLUMNS}"
    )))
    .bind(key_id)
    .bind(prefix)
    .bind(secret_hash)
    .fetch_optional(pool)
    .await
}

/// Revokes the key (idempotent). None: no such key.
pub async fn revoke(pool: &PgPool, key_id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1
         RETURNING {KEY_COLUMNS}"
    )))
    .bind(key_id)
    .fetch_optional(pool)
    .await
}

/// Replaces the key's policy and expiry. None: no such key.
pub async fn update(
    pool: &PgPool,
    key_id: &str,
    expires_at: Option<DateTime<Utc>>,
    p: &KeyPolicy,
) -> Result<Option<KeyRow>, sqlx::Error> {
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET expires_at = $2, allowed_models = $3, allowed_providers = $4,
             default_strategy = $5, daily_budget_usd = $6, monthly_budget_usd = $7,
             user_daily_budget_usd = $8, requests_per_minute = $9, tokens_per_minute = $10,
             strict_budget = $11, shadow_opt_out = $12
         WHERE key_id = $1
         RETURNING {KEY_COLUMNS}"
    )))
    .bind(key_id)
    .bind(expires_at);
    bind_policy!(query, p).fetch_optional(pool).await
}

/// One budget window's counters.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Spend {
    pub key_id: String,
    /// "" for the key as a whole, else the end user's id.
    pub scope: String,
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub spent_usd: f64,
    pub reserved_usd: f64,
}

/// The current windows' spend of one key (with its end users), or of every key.
pub async fn current_spend(pool: &PgPool, key_id: Option<&str>) -> Result<Vec<Spend>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, scope, period, period_start, spent_usd, reserved_usd FROM key_spend
         WHERE ($1::text IS NULL OR key_id = $1)
           AND period_start = CASE period
               WHEN 'day' THEN date_trunc('day', now(), 'UTC')
               ELSE date_trunc('month', now(), 'UTC') END
         ORDER BY key_id, period, scope",
    )
    .bind(key_id)
    .fetch_all(pool)
    .await
}

/// A budget a request must fit in.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLimit {
    /// "" for the key, else the end user's id.
    pub scope: String,
    pub period: Period,
    pub limit_usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// What a request must pass before it is inserted: the key's rate limits and budgets.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub key_id: String,
    pub requests_per_minute: Option<i32>,
    pub tokens_per_minute: Option<i32>,
    /// Tokens the request counts against the per-minute limit (input estimate + max_tokens).
    pub tokens: i64,
    pub budgets: Vec<BudgetLimit>,
    /// The request's worst-case cost, held against every budget until it finishes.
    pub reserve_usd: f64,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    RateLimited {
        /// "requests" or "tokens".
        limit_name: &'static str,
        limit: i64,
        used: i64,
        reset_at: DateTime<Utc>,
    },
    OverBudget {
        scope: String,
        period: Period,
        limit_usd: f64,
        spent_usd: f64,
        reserved_usd: f64,
        needed_usd: f64,
        reset_at: DateTime<Utc>,
    },
}

/// The rate-limit window after an admitted request, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RateState {
    pub requests_limit: Option<i64>,
    pub requests_used: i64,
    pub tokens_limit: Option<i64>,
    pub tokens_used: i64,
    pub reset_at: DateTime<Utc>,
}

/// A budget hold written with the request, settled by its finish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hold {
    pub scope: String,
    pub period: &'static str,
    pub start: DateTime<Utc>,
    pub usd: f64,
}

/// Counts the request against the key's rate limit and holds its worst-case cost against each
/// budget, inside the request's insert transaction (so a refusal, or any later failure, rolls
/// all of it back). Concurrent admissions of one key queue on the window rows' locks: exact
/// across any number of replicas.
pub async fn admit(
    tx: &mut Transaction<'_, Postgres>,
    a: &Admission,
) -> Result<Result<(Option<RateState>, Vec<Hold>), Refusal>, sqlx::Error> {
    let rate = if a.requests_per_minute.is_some() || a.tokens_per_minute.is_some() {
        let rpm = a.requests_per_minute.map(i64::from);
        let tpm = a.tokens_per_minute.map(i64::from);
        let row: Option<(i32, i64, DateTime<Utc>)> = sqlx::query_as(
            "INSERT INTO key_rate AS r (key_id, window_start, requests, tokens)
             SELECT $1, date_trunc('minute', now()), 1, $2
             WHERE ($3::bigint IS NULL OR 1 <= $3) AND ($4::bigint IS NULL OR $2 <= $4)
             ON CONFLICT (key_id, window_start) DO UPDATE
                 SET requests = r.requests + 1, tokens = r.tokens + EXCLUDED.tokens
                 WHERE ($3::bigint IS NULL OR r.requests + 1 <= $3)
                   AND ($4::bigint IS NULL OR r.tokens + EXCLUDED.tokens <= $4)
             RETURNING requests, tokens, window_start + interval '1 minute'",
        )
        .bind(&a.key_id)
        .bind(a.tokens)
        .bind(rpm)
        .bind(tpm)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some((requests, tokens, reset_at)) => Some(RateState {
                requests_limit: rpm,
                requests_used: i64::from(requests),
                tokens_limit: tpm,
                tokens_used: tokens,
                reset_at,
            }),
            None => {
                let (requests, tokens, reset_at): (i32, i64, DateTime<Utc>) = sqlx::query_as(
                    "SELECT COALESCE(max(requests), 0), COALESCE(max(tokens), 0)::bigint,
                         date_trunc('minute', now()) + interval '1 minute'
                     FROM key_rate WHERE key_id = $1 AND window_start = date_trunc('minute', now())",
                )
                .bind(&a.key_id)
                .fetch_one(&mut **tx)
                .await?;
                let requests = i64::from(requests);
                let refusal = match (rpm.filter(|limit| requests + 1 > *limit), tpm) {
                    (None, Some(limit)) => Refusal::RateLimited {
                        limit_name: "tokens",
                        limit,
                        used: tokens,
                        reset_at,
                    },
                    (limit, _) => Refusal::RateLimited {
                        limit_name: "requests",
                        limit: limit.or(rpm).unwrap_or_default(),
                        used: requests,
                        reset_at,
                    },
                };
                return Ok(Err(refusal));
            }
        }
    } else {
        None
    };

    let mut holds = Vec::with_capacity(a.budgets.len());
    for b in &a.budgets {
        let row: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO key_spend AS s (key_id, scope, period, period_start, reserved_usd)
             SELECT $1, $2, $3, date_trunc($3, now(), 'UTC'), $4 WHERE $4 <= $5
             ON CONFLICT (key_id, scope, period, period_start) DO UPDATE
                 SET reserved_usd = s.reserved_usd + EXCLUDED.reserved_usd
                 WHERE s.spent_usd + s.reserved_usd + EXCLUDED.reserved_usd <= $5
             RETURNING period_start",
        )
        .bind(&a.key_id)
        .bind(&b.scope)
        .bind(b.period.as_str())
        .bind(a.reserve_usd)
        .bind(b.limit_usd)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some(start) => holds.push(Hold {
                scope: b.scope.clone(),
                period: b.period.as_str(),
                start,
                usd: a.reserve_usd,
            }),
            None => {
                let (spent_usd, reserved_usd, reset_at): (f64, f64, DateTime<Utc>) =
                    sqlx::query_as(
                        "SELECT COALESCE(max(spent_usd), 0), COALESCE(max(reserved_usd), 0),
                             date_trunc($3, now(), 'UTC')
                                 + CASE $3 WHEN 'day' THEN interval '1 day'
                                   ELSE interval '1 month' END
                         FROM key_spend WHERE key_id = $1 AND scope = $2 AND period = $3
                           AND period_start = date_trunc($3, now(), 'UTC')",
                    )
                    .bind(&a.key_id)
                    .bind(&b.scope)
                    .bind(b.period.as_str())
                    .fetch_one(&mut **tx)
                    .await?;
                return Ok(Err(Refusal::OverBudget {
                    scope: b.scope.clone(),
                    period: b.period,
                    limit_usd: b.limit_usd,
                    spent_usd,
                    reserved_usd,
                    needed_usd: a.reserve_usd,
                    reset_at,
                }));
            }
        }
    }
    Ok(Ok((rate, holds)))
}

/// Deletes rate-limit windows older than an hour (the sweeper calls it).
pub async fn prune_rate_windows(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM key_rate WHERE window_start < now() - interval '1 hour'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
