//! The application's own sections of the configuration, and the order-free parts of reading
//! the lower layers' sections (whose types live in their crates). Each function reads one
//! section; every refusal names its variable.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::env::{Env, positive_usize, unit};
use super::{
    ConfigError, DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_GEMINI_BASE_URL, DEFAULT_OPENROUTER_BASE_URL,
};
use crate::providers::openai::Attribution;
use crate::providers::{
    OpenAiCompatEndpoint, ProviderEndpoint, ProviderId, ProviderOptions, ProviderSettings,
};
use crate::routing::RoutingSettings;
use crate::store::retention::Retention;

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
    /// `PER_PROMPT_LEARNING` (default true): each retrain also fits the per-prompt quality
    /// predictor from the rated requests' stored features (false: pattern-level estimates only).
    pub per_prompt: bool,
    /// `PREDICTOR_SHRINKAGE` (default 20): how many rated requests the catalog prior counts for
    /// in the pattern-level estimate the predictor adjusts — five lucky ratings move it a fifth
    /// of the way, not all of it.
    pub shrinkage: f64,
    /// `PREDICTOR_MAX_SAMPLES` (default 200000): the per-prompt predictor and the off-policy
    /// estimate read at most this many rated requests, the most recently rated first (then
    /// stored benchmark outcomes up to the same total): a retrain's memory stays bounded however
    /// many ratings are stored. The pattern-level aggregates always count every rating.
    pub max_samples: u32,
    pub drift: DriftSettings,
    pub shadow: ShadowSettings,
}

/// Shadow comparisons (README "Shadow comparisons"): other models answer a sampled share of the
/// answered requests after the client has its answer, and a judge model grades every answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    /// `SHADOW_RATE` (default 0 = off): the share of answered requests sampled.
    pub rate: f64,
    /// `SHADOW_MODELS` (default 1; `all`): how many other candidate models answer a sampled
    /// request, drawn at random among the request's candidates.
    pub models: ShadowModels,
    /// `SHADOW_BUDGET_USD` (default 5): shadow and judge spend per UTC day, over all processes;
    /// no new call starts once it is reached.
    pub budget_usd: f64,
    /// `JUDGE_MODEL` (`provider/model` or a catalog model id; required with `SHADOW_RATE`).
    pub judge: Option<String>,
    /// `SHADOW_WEIGHT` (default 1, 0..=1): what a judged answer counts for in the predictor's
    /// fit, where a rating counts 1.
    pub weight: f64,
    /// `SHADOW_BILLING` (`operator` | `key`, default `operator`): who pays: the operator only
    /// (recorded apart, never charged to a key), or also the sampled request's API key (added
    /// to its daily and monthly spend).
    pub billing: ShadowBilling,
}

impl ShadowSettings {
    pub fn enabled(&self) -> bool {
        self.rate > 0.0 && self.judge.is_some()
    }
}

/// How many other models answer a sampled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowModels {
    Count(usize),
    All,
}

/// Who pays for shadow comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowBilling {
    Operator,
    Key,
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
    /// `DRIFT_SIGNIFICANCE` (default 0.05): the drop must also be significant at this level (a
    /// one-sided Welch test on per-request ratings).
    pub significance: f64,
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
    /// `RETENTION_DAYS` (default 0 = keep): request bodies (prompt, response, history) of
    /// requests finished longer ago are cleared; `JOB_RETENTION_HOURS` (default 24): finished
    /// queue jobs are deleted after that. Expired cache entries are always deleted. An hourly
    /// pass in the worker processes (one at a time).
    pub retention: Retention,
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

/// The providers' endpoints and which providers are enabled (`PROVIDERS`, else every
/// configured one, else the simulated provider).
pub(super) fn providers(env: &Env<'_>) -> Result<(ProviderSettings, Vec<ProviderId>), ConfigError> {
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
    Ok((providers, enabled_providers))
}

/// The routing layer's section.
pub(super) fn routing(env: &Env<'_>) -> Result<RoutingSettings, ConfigError> {
    let routing = RoutingSettings {
        catalog_path: env.string("CATALOG_PATH")?.map(PathBuf::from),
        exploration_rate: env.parse_or("EXPLORATION_RATE", 0.1, unit)?,
        exploration_margin: env.parse_or("EXPLORATION_MARGIN", 0.2, unit)?,
        near_best_margin: env.parse_or("NEAR_BEST_MARGIN", 0.05, unit)?,
        exploration_seed: env.parse_opt("EXPLORATION_SEED")?,
        baseline_model: env.string("BASELINE_MODEL")?,
        reload_interval: Duration::from_secs(env.parse_or(
            "ROUTING_RELOAD_SECS",
            30,
            |v: &u64| (*v > 0).then_some(()).ok_or("must be positive"),
        )?),
    };
    Ok(routing)
}

/// Timeouts, concurrency and the offline providers' files.
pub(super) fn provider_options(env: &Env<'_>) -> Result<ProviderOptions, ConfigError> {
    let default_timeout = env.secs("PROVIDER_TIMEOUT_SECS", 60)?;
    let mut timeouts = std::collections::HashMap::new();
    for (id, var) in [
        (ProviderId::Anthropic, "ANTHROPIC_TIMEOUT_SECS"),
        (ProviderId::Gemini, "GEMINI_TIMEOUT_SECS"),
        (ProviderId::Openrouter, "OPENROUTER_TIMEOUT_SECS"),
        (ProviderId::OpenaiCompat, "OPENAI_COMPAT_TIMEOUT_SECS"),
    ] {
        timeouts.insert(id, env.secs(var, default_timeout.as_secs())?);
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
        replay_dataset: env.string("REPLAY_DATASET")?.map(PathBuf::from),
    };
    Ok(provider_options)
}

/// The job queue and its workers.
pub(super) fn jobs(env: &Env<'_>) -> Result<JobSettings, ConfigError> {
    let jobs = JobSettings {
        concurrency: env.parse_or("WORKER_CONCURRENCY", 64, positive_usize)?,
        max_retries: env.parse_or("PROVIDER_MAX_RETRIES", 2, |v: &u32| {
            (*v <= 10).then_some(()).ok_or("must be at most 10")
        })?,
        retry_base: Duration::from_millis(env.parse_or("RETRY_BASE_MS", 1000, |_: &u64| Ok(()))?),
        max_retry_after: env.secs("MAX_RETRY_AFTER_SECS", 60)?,
        request_deadline: env.secs("REQUEST_DEADLINE_SECS", 600)?,
        heartbeat: env.secs("JOB_HEARTBEAT_SECS", 5)?,
        missed_heartbeats: env.parse_or("JOB_MISSED_HEARTBEATS", 3, positive_usize)?,
        batch_size: env.parse_or("JOB_BATCH_SIZE", 32, positive_usize)?,
        poll_interval: Duration::from_millis(env.parse_or("JOB_POLL_MS", 50, |v: &u64| {
            (*v >= 10).then_some(()).ok_or("must be at least 10")
        })?),
        retention: Retention {
            bodies_kept: Some(Duration::from_secs(
                86_400
                    * env.parse_or("RETENTION_DAYS", 0, |v: &u64| {
                        (*v <= 36_500).then_some(()).ok_or("must be at most 36500")
                    })?,
            ))
            .filter(|d| !d.is_zero()),
            jobs_kept: Duration::from_secs(
                3600 * env.parse_or("JOB_RETENTION_HOURS", 24, |v: &u64| {
                    (1..=87_600)
                        .contains(v)
                        .then_some(())
                        .ok_or("must be 1..=87600")
                })?,
            ),
        },
    };
    Ok(jobs)
}

/// `POST /complete`.
pub(super) fn completion(env: &Env<'_>) -> Result<CompletionSettings, ConfigError> {
    let completion = CompletionSettings {
        timeout: env.secs("COMPLETE_TIMEOUT_SECS", 120)?,
        default_max_tokens: env.parse_or("DEFAULT_MAX_TOKENS", 1024, |v: &u32| {
            (*v > 0).then_some(()).ok_or("must be positive")
        })?,
        cache_enabled: env.bool_or("CACHE_ENABLED", true)?,
        cache_ttl: env.secs("CACHE_TTL_SECS", 86_400)?,
    };
    Ok(completion)
}

/// The trainer, its schedule and the drift check.
pub(super) fn learning(env: &Env<'_>) -> Result<LearningSettings, ConfigError> {
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
        per_prompt: env.bool_or("PER_PROMPT_LEARNING", true)?,
        shrinkage: env.parse_or("PREDICTOR_SHRINKAGE", 20.0, |v: &f64| {
            (v.is_finite() && (0.0..=1e6).contains(v))
                .then_some(())
                .ok_or("must be 0..=1000000")
        })?,
        max_samples: env.parse_or("PREDICTOR_MAX_SAMPLES", 200_000, |v: &u32| {
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
            interval: env.secs("DRIFT_CHECK_SECS", 300)?,
            significance: env.parse_or("DRIFT_SIGNIFICANCE", 0.05, |v: &f64| {
                (v.is_finite() && *v > 0.0 && *v < 1.0)
                    .then_some(())
                    .ok_or("must be in (0, 1)")
            })?,
            webhook_url: env.url("ALERT_WEBHOOK_URL")?,
            auto_rollback: env.bool_or("AUTO_ROLLBACK", false)?,
        },
        shadow: shadow(env)?,
    };
    Ok(learning)
}

/// `API_KEYS`: `id:key` pairs.
pub(super) fn api_keys(env: &Env<'_>) -> Result<Vec<(String, SecretString)>, ConfigError> {
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
    Ok(api_keys)
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

fn shadow(env: &Env<'_>) -> Result<ShadowSettings, ConfigError> {
    let rate = env.parse_or("SHADOW_RATE", 0.0, unit)?;
    let models = match env.string("SHADOW_MODELS")? {
        None => ShadowModels::Count(1),
        Some(v) if v.eq_ignore_ascii_case("all") => ShadowModels::All,
        Some(_) => ShadowModels::Count(env.parse_or("SHADOW_MODELS", 1, positive_usize)?),
    };
    let judge = env.string("JUDGE_MODEL")?;
    if rate > 0.0 && judge.is_none() {
        return Err(ConfigError::new(
            "JUDGE_MODEL",
            "SHADOW_RATE is above 0: name the model that judges (provider/model)",
        ));
    }
    Ok(ShadowSettings {
        rate,
        models,
        budget_usd: env.parse_or("SHADOW_BUDGET_USD", 5.0, |v: &f64| {
            (v.is_finite() && *v >= 0.0)
                .then_some(())
                .ok_or("must be 0 or more")
        })?,
        judge,
        weight: env.parse_or("SHADOW_WEIGHT", 1.0, unit)?,
        billing: env.choice(
            "SHADOW_BILLING",
            ShadowBilling::Operator,
            &[
                ("operator", ShadowBilling::Operator),
                ("key", ShadowBilling::Key),
            ],
        )?,
    })
}
