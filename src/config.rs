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
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use axum::http::Uri;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::providers::openai::Attribution;
use crate::providers::{
    OpenAiCompatEndpoint, ProviderEndpoint, ProviderId, ProviderOptions, ProviderSettings,
};
pub use crate::routing::RoutingSettings;
use crate::store::PoolSettings;

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
    /// `BIND` (default `0.0.0.0:8000`).
    pub bind: SocketAddr,
    /// `WORKER_BIND` (default `0.0.0.0:9100`): the worker process's `/health` listener.
    pub worker_bind: SocketAddr,
    /// `ADMIN_TOKEN`: bearer token for `/admin/*`; admin endpoints are disabled without it.
    pub admin_token: Option<SecretString>,
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
    /// `API_KEYS` (`id:key,id:key`): when set, `/v1/*` and `/complete` require
    /// `Authorization: Bearer <key>`, and the key's id is recorded as the request's user.
    pub api_keys: Vec<(String, SecretString)>,
}

/// The feedback trainer and its schedule.
#[derive(Debug, Clone)]
pub struct LearningSettings {
    /// `LEARNING_WINDOW_DAYS` (default 0 = all time): ratings older than this are ignored.
    pub window_days: u32,
    /// `CONFIDENCE_HIGH_SAMPLES` / `_QUALITY` / `_CORRECTNESS` (10, 4.0, 0.8) and
    /// `CONFIDENCE_MEDIUM_…` (5, 3.5, 0.7): the seed's thresholds.
    pub high: Threshold,
    pub medium: Threshold,
    /// `RETRAIN_CRON` (default `0 2 * * 0`, Sundays 02:00 UTC; a sixth leading field for
    /// seconds is accepted). `RETRAIN_ENABLED=false` turns the schedule off.
    pub retrain_cron: Option<croner::Cron>,
    /// `SNAPSHOTS_KEPT` (default 3).
    pub snapshots_kept: u32,
    pub drift: DriftSettings,
}

/// The quality-drift check after a retrain.
#[derive(Debug, Clone)]
pub struct DriftSettings {
    /// `DRIFT_THRESHOLD` (default 0.10): a relative drop above this raises the alert.
    pub threshold: f64,
    /// `DRIFT_MIN_RATINGS` (default 20): ratings needed on each side before comparing.
    pub min_ratings: u32,
    /// `DRIFT_BASELINE_DAYS` (default 7): the baseline is the ratings this long before the retrain.
    pub baseline_days: u32,
    /// `DRIFT_CHECK_SECS` (default 300): how often worker processes check.
    pub interval: Duration,
    /// `ALERT_WEBHOOK_URL`: POSTed a Slack-style JSON body (`{"text": …}`) per alert.
    pub webhook_url: Option<String>,
    /// `AUTO_ROLLBACK` (default false): roll the retrain back when its alert fires.
    pub auto_rollback: bool,
}

/// One confidence level's minimums.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub samples: u32,
    pub avg_quality: f64,
    pub correctness: f64,
}

/// The job queue and its workers.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `WORKER_CONCURRENCY` (default 64): provider calls in flight per worker process.
    pub concurrency: usize,
    /// `PROVIDER_MAX_RETRIES` (default 2): retries of a retryable error on one model before
    /// falling back to the next.
    pub max_retries: u32,
    /// `RETRY_BASE_MS` (default 1000): first backoff; doubles per retry, with ±25% jitter.
    pub retry_base: Duration,
    /// `MAX_RETRY_AFTER_SECS` (default 60): a longer `Retry-After` falls back instead of waiting.
    pub max_retry_after: Duration,
    /// `REQUEST_DEADLINE_SECS` (default 600): a request not finished by then is failed.
    pub request_deadline: Duration,
    /// `JOB_HEARTBEAT_SECS` (default 5) × `JOB_MISSED_HEARTBEATS` (default 3): how soon another
    /// worker takes over the jobs of a worker that died.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// `JOB_BATCH_SIZE` (default 32): jobs fetched per round trip.
    pub batch_size: usize,
    /// `JOB_POLL_MS` (default 50): a poll beside LISTEN/NOTIFY, for delayed retries and for a
    /// wake-up the worker missed while busy.
    pub poll_interval: Duration,
}

/// `POST /complete`.
#[derive(Debug, Clone)]
pub struct CompletionSettings {
    /// `COMPLETE_TIMEOUT_SECS` (default 120): how long a synchronous call waits before 202.
    pub timeout: Duration,
    /// `DEFAULT_MAX_TOKENS` (default 1024): output cap when the request gives none.
    pub default_max_tokens: u32,
    /// `CACHE_ENABLED` (default true): exact-match answer cache (temperature 0 or unset only).
    pub cache_enabled: bool,
    /// `CACHE_TTL_SECS` (default 86400).
    pub cache_ttl: Duration,
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
        let env = Env(lookup);
        let database_url = env
            .secret("DATABASE_URL")?
            .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL));
        parse_database_url(&database_url)?;

        let providers = ProviderSettings {
            anthropic: ProviderEndpoint {
                api_key: env.secret("ANTHROPIC_API_KEY")?,
                base_url: env.url_or("ANTHROPIC_BASE_URL", DEFAULT_ANTHROPIC_BASE_URL)?,
            },
            gemini: ProviderEndpoint {
                api_key: env.secret("GOOGLE_API_KEY")?,
                base_url: env.url_or("GEMINI_BASE_URL", DEFAULT_GEMINI_BASE_URL)?,
            },
            openrouter: ProviderEndpoint {
                api_key: env.secret("OPENROUTER_API_KEY")?,
                base_url: env.url_or("OPENROUTER_BASE_URL", DEFAULT_OPENROUTER_BASE_URL)?,
            },
            openrouter_attribution: Attribution {
                referer: env.string("OPENROUTER_REFERER")?,
                title: env.string("OPENROUTER_TITLE")?,
            },
            openai_compat: OpenAiCompatEndpoint {
                base_url: env.url("OPENAI_COMPAT_BASE_URL")?,
                api_key: env.secret("OPENAI_COMPAT_API_KEY")?,
            },
        };
        let replay_dataset = env.string("REPLAY_DATASET")?.map(PathBuf::from);
        let enabled_providers = enabled_providers(
            &providers,
            replay_dataset.as_ref(),
            env.string("PROVIDERS")?,
        )?;
        let unit = |v: &f64| {
            (v.is_finite() && (0.0..=1.0).contains(v))
                .then_some(())
                .ok_or("must be between 0 and 1")
        };
        let routing = RoutingSettings {
            catalog_path: env.string("CATALOG_PATH")?.map(PathBuf::from),
            exploration_rate: env.parse_or("EXPLORATION_RATE", 0.1, unit)?,
            exploration_margin: env.parse_or("EXPLORATION_MARGIN", 0.2, unit)?,
            near_best_margin: env.parse_or("NEAR_BEST_MARGIN", 0.05, unit)?,
            baseline_model: env.string("BASELINE_MODEL")?,
            reload_interval: Duration::from_secs(env.parse_or(
                "ROUTING_RELOAD_SECS",
                30,
                |v: &u64| (*v > 0).then_some(()).ok_or("must be positive"),
            )?),
        };

        let secs = |var: &'static str, default: u64| {
            env.parse_or(var, default, |v: &u64| {
                (*v > 0).then_some(()).ok_or("must be positive")
            })
            .map(Duration::from_secs)
        };
        let default_timeout = secs("PROVIDER_TIMEOUT_SECS", 60)?;
        let mut timeouts = std::collections::HashMap::new();
        for (id, var) in [
            (ProviderId::Anthropic, "ANTHROPIC_TIMEOUT_SECS"),
            (ProviderId::Gemini, "GEMINI_TIMEOUT_SECS"),
            (ProviderId::Openrouter, "OPENROUTER_TIMEOUT_SECS"),
            (ProviderId::OpenaiCompat, "OPENAI_COMPAT_TIMEOUT_SECS"),
        ] {
            timeouts.insert(id, secs(var, default_timeout.as_secs())?);
        }
        let provider_options = ProviderOptions {
            timeouts,
            concurrency: env.parse_or("PROVIDER_CONCURRENCY", 32, |v: &usize| {
                (*v > 0).then_some(()).ok_or("must be positive")
            })?,
            simulated_latency: Duration::from_millis(env.parse_or(
                "SIMULATED_LATENCY_MS",
                200,
                |_: &u64| Ok(()),
            )?),
            simulated_profile_path: env.string("SIMULATED_PROFILE_PATH")?.map(PathBuf::from),
            replay_dataset: replay_dataset.clone(),
        };
        let positive = |v: &usize| (*v > 0).then_some(()).ok_or("must be positive");
        let jobs = JobSettings {
            concurrency: env.parse_or("WORKER_CONCURRENCY", 64, positive)?,
            max_retries: env.parse_or("PROVIDER_MAX_RETRIES", 2, |v: &u32| {
                (*v <= 10).then_some(()).ok_or("must be at most 10")
            })?,
            retry_base: Duration::from_millis(
                env.parse_or("RETRY_BASE_MS", 1000, |_: &u64| Ok(()))?,
            ),
            max_retry_after: secs("MAX_RETRY_AFTER_SECS", 60)?,
            request_deadline: secs("REQUEST_DEADLINE_SECS", 600)?,
            heartbeat: secs("JOB_HEARTBEAT_SECS", 5)?,
            missed_heartbeats: env.parse_or("JOB_MISSED_HEARTBEATS", 3, positive)?,
            batch_size: env.parse_or("JOB_BATCH_SIZE", 32, positive)?,
            poll_interval: Duration::from_millis(env.parse_or("JOB_POLL_MS", 50, |v: &u64| {
                (*v >= 10).then_some(()).ok_or("must be at least 10")
            })?),
        };
        let completion = CompletionSettings {
            timeout: secs("COMPLETE_TIMEOUT_SECS", 120)?,
            default_max_tokens: env.parse_or("DEFAULT_MAX_TOKENS", 1024, |v: &u32| {
                (*v > 0).then_some(()).ok_or("must be positive")
            })?,
            cache_enabled: env.bool_or("CACHE_ENABLED", true)?,
            cache_ttl: secs("CACHE_TTL_SECS", 86_400)?,
        };
        let threshold = |prefix: &'static [&'static str; 3], d: Threshold| {
            Ok::<_, ConfigError>(Threshold {
                samples: env.parse_or(prefix[0], d.samples, |v: &u32| {
                    (*v > 0).then_some(()).ok_or("must be positive")
                })?,
                avg_quality: env.parse_or(prefix[1], d.avg_quality, |v: &f64| {
                    (1.0..=5.0)
                        .contains(v)
                        .then_some(())
                        .ok_or("must be between 1 and 5")
                })?,
                correctness: env.parse_or(prefix[2], d.correctness, unit)?,
            })
        };
        let retrain_enabled = env.bool_or("RETRAIN_ENABLED", true)?;
        let cron_text = env
            .string("RETRAIN_CRON")?
            .unwrap_or_else(|| "0 2 * * 0".to_owned());
        let cron: croner::Cron = cron_text
            .parse()
            .map_err(|e| ConfigError::new("RETRAIN_CRON", format!("{cron_text:?}: {e}")))?;
        let learning = LearningSettings {
            window_days: env.parse_or("LEARNING_WINDOW_DAYS", 0, |_: &u32| Ok(()))?,
            high: threshold(
                &[
                    "CONFIDENCE_HIGH_SAMPLES",
                    "CONFIDENCE_HIGH_QUALITY",
                    "CONFIDENCE_HIGH_CORRECTNESS",
                ],
                Threshold {
                    samples: 10,
                    avg_quality: 4.0,
                    correctness: 0.8,
                },
            )?,
            medium: threshold(
                &[
                    "CONFIDENCE_MEDIUM_SAMPLES",
                    "CONFIDENCE_MEDIUM_QUALITY",
                    "CONFIDENCE_MEDIUM_CORRECTNESS",
                ],
                Threshold {
                    samples: 5,
                    avg_quality: 3.5,
                    correctness: 0.7,
                },
            )?,
            retrain_cron: retrain_enabled.then_some(cron),
            snapshots_kept: env.parse_or("SNAPSHOTS_KEPT", 3, |v: &u32| {
                (*v > 0).then_some(()).ok_or("must be positive")
            })?,
            drift: DriftSettings {
                threshold: env.parse_or("DRIFT_THRESHOLD", 0.10, unit)?,
                min_ratings: env.parse_or("DRIFT_MIN_RATINGS", 20, |v: &u32| {
                    (*v > 0).then_some(()).ok_or("must be positive")
                })?,
                baseline_days: env.parse_or("DRIFT_BASELINE_DAYS", 7, |v: &u32| {
                    (*v > 0).then_some(()).ok_or("must be positive")
                })?,
                interval: secs("DRIFT_CHECK_SECS", 300)?,
                webhook_url: env.url("ALERT_WEBHOOK_URL")?,
                auto_rollback: env.bool_or("AUTO_ROLLBACK", false)?,
            },
        };

        let mut api_keys = Vec::new();
        for entry in env
            .string("API_KEYS")?
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((id, key)) = entry
                .split_once(':')
                .filter(|(i, k)| !i.is_empty() && k.len() >= 8)
            else {
                return Err(ConfigError::new(
                    "API_KEYS",
                    "expected comma-separated id:key pairs, keys of at least 8 characters",
                ));
            };
            api_keys.push((id.trim().to_owned(), SecretString::from(key.trim())));
        }

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
            bind: env.parse_or("BIND", socket(DEFAULT_BIND), |_| Ok(()))?,
            worker_bind: env.parse_or("WORKER_BIND", socket(DEFAULT_WORKER_BIND), |_| Ok(()))?,
            admin_token: env.secret("ADMIN_TOKEN")?,
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
    let scheme_end = url.find("://")? + 3;
    let (main, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    Some(format!("{}/{name}{query}", &main[..authority_end]))
}

/// `PROVIDERS` (comma-separated) restricts routing to those providers, each of which must be
/// configured. Unset: every provider with a key (OpenAI-compatible: with a base URL); with none,
/// the simulated provider, so the service works offline out of the box.
fn enabled_providers(
    providers: &ProviderSettings,
    replay_dataset: Option<&PathBuf>,
    list: Option<String>,
) -> Result<Vec<ProviderId>, ConfigError> {
    let configured = |p: ProviderId| match p {
        ProviderId::Anthropic => providers.anthropic.api_key.is_some(),
        ProviderId::Gemini => providers.gemini.api_key.is_some(),
        ProviderId::Openrouter => providers.openrouter.api_key.is_some(),
        ProviderId::OpenaiCompat => providers.openai_compat.base_url.is_some(),
        ProviderId::Simulated => true,
        ProviderId::Replay => replay_dataset.is_some(),
    };
    let Some(list) = list else {
        let hosted: Vec<ProviderId> = ProviderId::ALL
            .into_iter()
            .filter(|p| *p != ProviderId::Simulated && configured(*p))
            .collect();
        return Ok(if hosted.is_empty() {
            vec![ProviderId::Simulated]
        } else {
            hosted
        });
    };
    let mut enabled = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let p = ProviderId::parse(name).ok_or_else(|| {
            let known: Vec<&str> = ProviderId::ALL.iter().map(|p| p.as_str()).collect();
            ConfigError::new(
                "PROVIDERS",
                format!("unknown provider {name:?}; known: {}", known.join(", ")),
            )
        })?;
        if !configured(p) {
            let needs = match p {
                ProviderId::Anthropic => "ANTHROPIC_API_KEY",
                ProviderId::Gemini => "GOOGLE_API_KEY",
                ProviderId::Openrouter => "OPENROUTER_API_KEY",
                ProviderId::Replay => "REPLAY_DATASET",
                _ => "OPENAI_COMPAT_BASE_URL",
            };
            return Err(ConfigError::new(
                "PROVIDERS",
                format!("{p} is listed but {needs} is not set"),
            ));
        }
        if !enabled.contains(&p) {
            enabled.push(p);
        }
    }
    if enabled.is_empty() {
        return Err(ConfigError::new("PROVIDERS", "lists no provider"));
    }
    Ok(enabled)
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

/// Typed access to the variables, each error naming its variable.
struct Env<F>(F);

impl<F> Env<F>
where
    F: Fn(&'static str) -> Result<Option<String>, ConfigError>,
{
    /// The value, with empty and blank counting as unset.
    fn string(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        Ok((self.0)(var)?
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    }

    fn secret(&self, var: &'static str) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.string(var)?.map(SecretString::from))
    }

    fn parse_or<T, V>(&self, var: &'static str, default: T, valid: V) -> Result<T, ConfigError>
    where
        T: FromStr,
        V: Fn(&T) -> Result<(), &'static str>,
    {
        let Some(raw) = self.string(var)? else {
            return Ok(default);
        };
        let value = raw
            .parse::<T>()
            .map_err(|_| ConfigError::new(var, format!("cannot parse {raw:?}")))?;
        valid(&value).map_err(|why| ConfigError::new(var, format!("{raw:?}: {why}")))?;
        Ok(value)
    }

    fn bool_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.string(var)? {
            None => Ok(default),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    var,
                    format!("{raw:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
                )),
            },
        }
    }

    fn choice<T: Copy>(
        &self,
        var: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.string(var)? else {
            return Ok(default);
        };
        options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&raw))
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                ConfigError::new(var, format!("{raw:?} is not one of {}", names.join(", ")))
            })
    }

    fn log_filter(&self, var: &'static str) -> Result<String, ConfigError> {
        let filter = self
            .string(var)?
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
        tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| ConfigError::new(var, format!("{filter:?}: {e}")))?;
        Ok(filter)
    }

    fn url(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.string(var)? else {
            return Ok(None);
        };
        let uri: Uri = raw
            .parse()
            .map_err(|_| ConfigError::new(var, format!("{raw:?} is not a URL")))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.authority().is_none() {
            return Err(ConfigError::new(
                var,
                format!("{raw:?} must be an absolute http:// or https:// URL"),
            ));
        }
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }

    fn url_or(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.url(var)?.unwrap_or_else(|| default.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|var| Ok(map.get(var).cloned()))
    }

    fn rejected(var: &str, value: &str) -> ConfigError {
        match load(&[(var, value)]) {
            Ok(_) => panic!("{var}={value:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_apply_with_an_empty_environment() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert_eq!(s.worker_bind.to_string(), DEFAULT_WORKER_BIND);
        assert!(s.admin_token.is_none());
        assert_eq!(s.log_filter, DEFAULT_LOG_FILTER);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert!(s.run_migrations);
        assert_eq!(s.store_prompts, StorePrompts::Full);
        assert_eq!(s.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(s.providers.anthropic.base_url, DEFAULT_ANTHROPIC_BASE_URL);
        assert!(s.providers.openai_compat.base_url.is_none());
        assert_eq!(s.database_label(), "localhost:5432/optimizer");
        assert_eq!(s.enabled_providers, vec![ProviderId::Simulated]);
        assert_eq!(s.routing.exploration_rate, 0.1);
        assert!(s.routing.catalog_path.is_none());
    }

    #[test]
    fn database_urls_can_point_at_another_database() {
        assert_eq!(
            url_with_database("postgres://u:p@h:5432/app?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:5432", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(url_with_database("nonsense", "x"), None);
    }

    #[test]
    fn enabled_providers_follow_keys_and_providers() {
        let s = load(&[("GOOGLE_API_KEY", "g"), ("ANTHROPIC_API_KEY", "a")]).unwrap();
        assert_eq!(
            s.enabled_providers,
            vec![ProviderId::Anthropic, ProviderId::Gemini]
        );
        let s = load(&[("GOOGLE_API_KEY", "g"), ("PROVIDERS", "simulated")]).unwrap();
        assert_eq!(s.enabled_providers, vec![ProviderId::Simulated]);
        let s = load(&[("OPENAI_COMPAT_BASE_URL", "http://localhost:11434/v1")]).unwrap();
        assert_eq!(s.enabled_providers, vec![ProviderId::OpenaiCompat]);
        let e = load(&[("PROVIDERS", "gemini")]).unwrap_err();
        assert!(e.reason.contains("GOOGLE_API_KEY"), "{e}");
    }

    #[test]
    fn values_are_read_and_trimmed() {
        let s = load(&[
            ("BIND", "127.0.0.1:9000"),
            ("LOG_FORMAT", "JSON"),
            ("RUN_MIGRATIONS", "off"),
            ("STORE_PROMPTS", "hash"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1234/"),
            ("OPENAI_COMPAT_BASE_URL", " http://localhost:11434/v1 "),
            ("ADMIN_TOKEN", "s3cret"),
        ])
        .unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!s.run_migrations);
        assert_eq!(s.store_prompts, StorePrompts::Hash);
        assert_eq!(s.providers.anthropic.base_url, "http://127.0.0.1:1234");
        assert_eq!(
            s.providers.openai_compat.base_url.as_deref(),
            Some("http://localhost:11434/v1")
        );
        assert_eq!(s.admin_token.unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = load(&[("BIND", ""), ("ANTHROPIC_API_KEY", "  ")]).unwrap();
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert!(s.providers.anthropic.api_key.is_none());
    }

    #[test]
    fn bad_values_are_rejected_naming_the_variable() {
        for (var, value) in [
            ("BIND", "localhost"),
            ("WORKER_BIND", "0.0.0.0:99999"),
            ("LOG_FORMAT", "xml"),
            ("RUN_MIGRATIONS", "maybe"),
            ("STORE_PROMPTS", "partial"),
            ("DB_MAX_CONNECTIONS", "0"),
            ("DB_MAX_CONNECTIONS", "many"),
            ("MAX_REQUEST_BYTES", "10"),
            ("DATABASE_URL", "mysql://localhost/optimizer"),
            ("GEMINI_BASE_URL", "not a url"),
            ("OPENROUTER_BASE_URL", "ftp://example.com"),
            ("OPENAI_COMPAT_BASE_URL", "/v1"),
            ("RUST_LOG", "info,[[["),
            ("PROVIDERS", "acme"),
            ("PROVIDERS", " , "),
            ("EXPLORATION_RATE", "1.5"),
            ("EXPLORATION_RATE", "often"),
            ("EXPLORATION_MARGIN", "-0.1"),
            ("ROUTING_RELOAD_SECS", "0"),
            ("COMPLETE_TIMEOUT_SECS", "0"),
            ("WORKER_CONCURRENCY", "0"),
            ("CACHE_ENABLED", "sometimes"),
            ("ANTHROPIC_TIMEOUT_SECS", "-5"),
            ("PROVIDER_MAX_RETRIES", "100"),
            ("RETRAIN_CRON", "every sunday"),
            ("CONFIDENCE_HIGH_QUALITY", "6"),
            ("CONFIDENCE_MEDIUM_CORRECTNESS", "1.2"),
            ("DRIFT_THRESHOLD", "10%"),
            ("ALERT_WEBHOOK_URL", "hooks.example.com"),
            ("AUTO_ROLLBACK", "sure"),
            ("API_KEYS", "alice"),
            ("API_KEYS", "alice:short"),
        ] {
            let err = rejected(var, value);
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let s = load(&[
            ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
            ("ADMIN_TOKEN", "admin-very-secret"),
            ("DATABASE_URL", "postgres://u:pw-very-secret@db:5432/x"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert_eq!(s.database_label(), "db:5432/x");

        let err = rejected("DATABASE_URL", "postgres://u:pw-very-secret@db:notaport/x");
        assert!(!err.to_string().contains("very-secret"), "{err}");
    }
}
