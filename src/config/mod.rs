//! Typed settings, read once from the environment at start-up and passed down.
//!
//! Rules this module keeps:
//! - every setting has a documented default (README "Configuration"), so the service runs with
//!   no environment at all;
//! - an empty variable counts as unset (compose passes `KEY=` for blanks in `.env`);
//! - an invalid value is an error naming the variable — start-up stops, nothing is guessed;
//! - secrets live in [`SecretString`], whose `Debug` prints `[REDACTED]`, and an invalid secret
//!   is never echoed back in the error.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::providers::{ProviderId, ProviderOptions, ProviderSettings};
pub use crate::routing::RoutingSettings;
use crate::store::PoolSettings;

mod env;
mod sections;

use env::Env;
pub use sections::{
    CompletionSettings, DriftSettings, JobSettings, LearningSettings, ShadowBilling, ShadowModels,
    ShadowSettings, Threshold,
};

/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/optimizer";
/// Default `BIND` for the API.
pub const DEFAULT_BIND: &str = "0.0.0.0:8000";
/// Default `WORKER_BIND` for the worker's health and metrics listener.
pub const DEFAULT_WORKER_BIND: &str = "0.0.0.0:9100";
/// Default `RUST_LOG` filter.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";
/// Default `MAX_REQUEST_BYTES`: bodies above it get a 413. Large enough for a 1 MB prompt
/// plus its JSON envelope.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Default provider base URLs (the public APIs). Tests point these at a local HTTP mock.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";

/// A setting that could not be used. Names the variable; never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// What `requests.prompt` keeps of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorePrompts {
    /// The prompt text as sent.
    Full,
    /// Only its SHA-256 (hex); the text is not stored.
    Hash,
    /// Neither text nor hash.
    None,
}

/// Everything the processes read from their environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`; may carry a password, so it is a secret. See [`Settings::database_label`].
    pub database_url: SecretString,
    /// `DB_MAX_CONNECTIONS` (default 10): pool size per process.
    pub db_max_connections: u32,
    /// `DB_ACQUIRE_TIMEOUT_MS` (default 3000): how long a query waits for a connection; also
    /// bounds how long `/ready` takes to say the database is unreachable.
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS` (default 60000; 0 turns it off): Postgres cancels a statement
    /// running longer (migrations are exempt).
    pub db_statement_timeout: Option<Duration>,
    /// `BIND` (default `0.0.0.0:8000`).
    pub bind: SocketAddr,
    /// `WORKER_BIND` (default `0.0.0.0:9100`): the worker process's `/health` listener.
    pub worker_bind: SocketAddr,
    /// `ADMIN_TOKEN`: bearer token for `/admin/*`; admin endpoints are disabled without it.
    pub admin_token: Option<SecretString>,
    /// `METRICS_BIND` (default unset): serve `/metrics` on this address, without credentials,
    /// and not on `BIND` (for a scraper on a private network).
    pub metrics_bind: Option<SocketAddr>,
    /// `METRICS_TOKEN` (default unset): a bearer token for `/metrics` on `BIND` (the admin
    /// token works too).
    pub metrics_token: Option<SecretString>,
    /// `RUST_LOG` (default `info,sqlx=warn`).
    pub log_filter: String,
    /// `LOG_FORMAT` (`pretty` | `json`, default `pretty`).
    pub log_format: LogFormat,
    /// `RUN_MIGRATIONS` (default true): create the database if missing and migrate on start.
    pub run_migrations: bool,
    /// `STORE_PROMPTS` (`full` | `hash` | `none`, default `full`).
    pub store_prompts: StorePrompts,
    /// `MAX_REQUEST_BYTES` (default 2 MiB).
    pub max_request_bytes: usize,
    /// `REQUEST_BODY_TIMEOUT_SECS` (default 30): a request body that stalls this long between
    /// two pieces is refused (408) and its connection freed.
    pub request_body_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECS` (default 30): a connection whose next request's headers have not
    /// arrived this long after it opened or after its previous answer is closed.
    pub http_idle_timeout: Duration,
    /// `MAX_IN_FLIGHT` (default 1024): requests one API process serves at once (probes and
    /// `/metrics` excepted); more get 503 `overloaded` with `Retry-After`.
    pub max_in_flight: usize,
    /// `SHUTDOWN_TIMEOUT_SECS` (default 30): how long in-flight work may take after SIGTERM.
    pub shutdown_timeout: Duration,
    pub providers: ProviderSettings,
    /// The providers requests may be routed to, derived from `PROVIDERS` and the keys (see
    /// [`Settings::enabled_providers`]).
    pub enabled_providers: Vec<ProviderId>,
    pub routing: RoutingSettings,
    pub provider_options: ProviderOptions,
    pub jobs: JobSettings,
    pub completion: CompletionSettings,
    pub learning: LearningSettings,
    /// `API_KEYS` (`id:key,id:key`): bootstrap API keys, written (hashed) into the key table
    /// with these ids before the first lookup; with any key, every client route needs one.
    pub api_keys: Vec<(String, SecretString)>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(var, "not valid UTF-8")),
        })
    }

    /// Reads settings through `lookup` (tests pass a map instead of mutating the environment).
    ///
    /// ```
    /// use optimizer::config::{Settings, StorePrompts};
    ///
    /// let vars = [("STORE_PROMPTS", "hash"), ("BIND", "127.0.0.1:8080")];
    /// let lookup = |var: &str| Ok(vars.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string()));
    /// let settings = Settings::from_lookup(lookup).unwrap();
    /// assert_eq!(settings.store_prompts, StorePrompts::Hash);
    /// assert_eq!(settings.bind.port(), 8080);
    ///
    /// let bad = [("LOG_FORMAT", "xml")];
    /// let err = Settings::from_lookup(|var: &str| {
    ///     Ok(bad.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string()))
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.var, "LOG_FORMAT");
    /// ```
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&'static str) -> Result<Option<String>, ConfigError>,
    {
        let env = Env(&lookup);
        let database_url = env
            .secret("DATABASE_URL")?
            .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL));
        parse_database_url(&database_url)?;
        let (providers, enabled_providers) = sections::providers(&env)?;
        let routing = sections::routing(&env)?;
        let provider_options = sections::provider_options(&env)?;
        let jobs = sections::jobs(&env)?;
        let completion = sections::completion(&env)?;
        let learning = sections::learning(&env)?;
        let api_keys = sections::api_keys(&env)?;
        Ok(Self {
            database_url,
            db_max_connections: env.parse_or("DB_MAX_CONNECTIONS", 10, |v: &u32| {
                (1..=1000)
                    .contains(v)
                    .then_some(())
                    .ok_or("must be 1..=1000")
            })?,
            db_acquire_timeout: Duration::from_millis(env.parse_or(
                "DB_ACQUIRE_TIMEOUT_MS",
                3000,
                |v: &u64| (*v > 0).then_some(()).ok_or("must be positive"),
            )?),
            db_statement_timeout: Some(Duration::from_millis(env.parse_or(
                "DB_STATEMENT_TIMEOUT_MS",
                60_000,
                |_: &u64| Ok(()),
            )?))
            .filter(|d| !d.is_zero()),
            bind: env.parse_or("BIND", socket(DEFAULT_BIND), |_| Ok(()))?,
            worker_bind: env.parse_or("WORKER_BIND", socket(DEFAULT_WORKER_BIND), |_| Ok(()))?,
            admin_token: env.secret("ADMIN_TOKEN")?,
            metrics_bind: env.parse_opt("METRICS_BIND")?,
            metrics_token: env.secret("METRICS_TOKEN")?,
            log_filter: env.log_filter("RUST_LOG")?,
            log_format: env.choice(
                "LOG_FORMAT",
                LogFormat::Pretty,
                &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            )?,
            run_migrations: env.bool_or("RUN_MIGRATIONS", true)?,
            store_prompts: env.choice(
                "STORE_PROMPTS",
                StorePrompts::Full,
                &[
                    ("full", StorePrompts::Full),
                    ("hash", StorePrompts::Hash),
                    ("none", StorePrompts::None),
                ],
            )?,
            max_request_bytes: env.parse_or(
                "MAX_REQUEST_BYTES",
                DEFAULT_MAX_REQUEST_BYTES,
                |v: &usize| (*v >= 1024).then_some(()).ok_or("must be at least 1024"),
            )?,
            request_body_timeout: env.secs("REQUEST_BODY_TIMEOUT_SECS", 30)?,
            http_idle_timeout: env.secs("HTTP_IDLE_TIMEOUT_SECS", 30)?,
            max_in_flight: env.parse_or("MAX_IN_FLIGHT", 1024, |v: &usize| {
                (*v > 0).then_some(()).ok_or("must be positive")
            })?,
            shutdown_timeout: Duration::from_secs(env.parse_or(
                "SHUTDOWN_TIMEOUT_SECS",
                30,
                |_: &u64| Ok(()),
            )?),
            providers,
            enabled_providers,
            routing,
            provider_options,
            jobs,
            completion,
            learning,
            api_keys,
        })
    }

    /// Connection options for the configured database.
    pub fn pg_options(&self) -> PgConnectOptions {
        // Validated in `from_lookup`; settings built by hand in tests are validated here too.
        parse_database_url(&self.database_url).unwrap_or_else(|_| PgConnectOptions::new())
    }

    /// The store's pool settings.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            options: self.pg_options(),
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
        }
    }

    /// `host:port/database` of the configured database, safe to log (no user, no password).
    pub fn database_label(&self) -> String {
        let o = self.pg_options();
        format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        )
    }
}

/// A PostgreSQL URL pointed at database `name`: the same user, host, port and parameters (for
/// scratch databases beside the configured one). None when `url` is not a URL.
pub fn url_with_database(url: &str, name: &str) -> Option<String> {
    let mut url = url::Url::parse(url).ok()?;
    url.host_str()?;
    url.set_path(name);
    Some(url.into())
}

fn socket(default: &str) -> SocketAddr {
    // The defaults are literals checked by `defaults_apply_with_an_empty_environment`.
    default
        .parse()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn parse_database_url(url: &SecretString) -> Result<PgConnectOptions, ConfigError> {
    let raw = url.expose_secret();
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err(ConfigError::new(
            "DATABASE_URL",
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    // sqlx's error text may quote the URL, which may hold a password: say only that it failed.
    PgConnectOptions::from_str(raw)
        .map_err(|_| ConfigError::new("DATABASE_URL", "not a valid PostgreSQL connection URL"))
}

#[cfg(test)]
mod tests;
