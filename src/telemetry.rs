//! Logging and metrics set-up, and every metric name.
//!
//! Rules: nothing logs a secret or a prompt; spans carry ids, never content. Metric names are
//! declared here once (prefix `optimizer_`, described with units at start-up) and their labels
//! are bounded — provider, model, pattern, strategy, status, kind, queue, job, route (the matched
//! path) — never an id or a prompt. docs/metrics.md lists them.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber. Call once at start-up; a second call is a no-op.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .unwrap_or_else(|_| EnvFilter::new(crate::config::DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // `try_init` fails only when a subscriber is already set (tests); that one is kept.
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Metric names.
pub mod names {
    pub const HTTP_REQUESTS: &str = "optimizer_http_requests_total";
    pub const HTTP_DURATION: &str = "optimizer_http_request_duration_seconds";
    pub const COMPLETIONS: &str = "optimizer_completions_total";
    pub const GATEWAY_OVERHEAD: &str = "optimizer_gateway_overhead_seconds";
    pub const PROVIDER_LATENCY: &str = "optimizer_provider_latency_seconds";
    pub const TOKENS: &str = "optimizer_tokens_total";
    /// Histograms: `_sum` is the USD total (counters are integers), `_count` the completions.
    pub const COST: &str = "optimizer_completion_cost_usd";
    pub const BASELINE_COST: &str = "optimizer_completion_baseline_cost_usd";
    pub const CACHE: &str = "optimizer_cache_requests_total";
    pub const FALLBACKS: &str = "optimizer_fallbacks_total";
    pub const EXPLORATIONS: &str = "optimizer_explorations_total";
    pub const PROVIDER_ERRORS: &str = "optimizer_provider_errors_total";
    pub const FEEDBACK: &str = "optimizer_feedback_total";
    pub const FEEDBACK_QUALITY_SUM: &str = "optimizer_feedback_quality_sum";
    pub const FEEDBACK_JUDGED: &str = "optimizer_feedback_judged_total";
    pub const FEEDBACK_CORRECT: &str = "optimizer_feedback_correct_total";
    pub const RETRAIN_RUNS: &str = "optimizer_retrain_runs_total";
    pub const RETRAIN_CHANGES: &str = "optimizer_retrain_changes_total";
    pub const LAST_RETRAIN: &str = "optimizer_last_successful_retrain_timestamp_seconds";
    pub const POLICY_VERSION: &str = "optimizer_routing_policy_version";
    pub const QUEUE_JOBS: &str = "optimizer_queue_jobs";
    pub const JOB_DURATION: &str = "optimizer_job_duration_seconds";
    pub const JOB_FAILURES: &str = "optimizer_job_failures_total";
    pub const JOBS_REARMED: &str = "optimizer_jobs_rearmed_total";
    pub const QUALITY_BASELINE: &str = "optimizer_quality_baseline_score";
    pub const QUALITY_CURRENT: &str = "optimizer_quality_since_retrain_score";
    pub const QUALITY_DROP: &str = "optimizer_quality_drop_ratio";
    pub const QUALITY_CURRENT_RATINGS: &str = "optimizer_quality_since_retrain_ratings";
    pub const QUALITY_ROLLED_BACK: &str = "optimizer_quality_rolled_back";
    pub const DRIFT_RUN: &str = "optimizer_drift_run_info";
    pub const ALERTS: &str = "optimizer_alerts_total";
    pub const ROLLBACKS: &str = "optimizer_rollbacks_total";
    pub const KEY_COST: &str = "optimizer_key_spend_usd";
    pub const KEY_REQUESTS: &str = "optimizer_key_requests_total";
    pub const SHADOW_SAMPLES: &str = "optimizer_shadow_samples_total";
    pub const SHADOW_SCORES: &str = "optimizer_shadow_scores_total";
    pub const SHADOW_COST: &str = "optimizer_shadow_call_cost_usd";

    /// Every metric this service exports (the Grafana test checks dashboards against it).
    pub const ALL: &[&str] = &[
        HTTP_REQUESTS,
        HTTP_DURATION,
        COMPLETIONS,
        GATEWAY_OVERHEAD,
        PROVIDER_LATENCY,
        TOKENS,
        COST,
        BASELINE_COST,
        CACHE,
        FALLBACKS,
        EXPLORATIONS,
        PROVIDER_ERRORS,
        FEEDBACK,
        FEEDBACK_QUALITY_SUM,
        FEEDBACK_JUDGED,
        FEEDBACK_CORRECT,
        RETRAIN_RUNS,
        RETRAIN_CHANGES,
        LAST_RETRAIN,
        POLICY_VERSION,
        QUEUE_JOBS,
        JOB_DURATION,
        JOB_FAILURES,
        JOBS_REARMED,
        QUALITY_BASELINE,
        QUALITY_CURRENT,
        QUALITY_DROP,
        QUALITY_CURRENT_RATINGS,
        QUALITY_ROLLED_BACK,
        DRIFT_RUN,
        ALERTS,
        ROLLBACKS,
        KEY_COST,
        KEY_REQUESTS,
        SHADOW_SAMPLES,
        SHADOW_SCORES,
        SHADOW_COST,
    ];
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Exports every counter whose label set is known and bounded at 0 from process start, so a
/// quiet system shows 0 (and `rate()`/`increase()` work) rather than "No data". `models` are the
/// routable (provider, model) pairs, `patterns` the prompt patterns, `error_kinds` the provider
/// error kinds. Counters labelled by API key appear with the key's first request.
pub fn zero_series(
    models: &[(String, String)],
    patterns: &[&'static str],
    error_kinds: &[&'static str],
) {
    use names::*;
    metrics::counter!(ALERTS, "kind" => "quality_drop").increment(0);
    for trigger in ["manual", "automatic"] {
        metrics::counter!(ROLLBACKS, "trigger" => trigger).increment(0);
    }
    for result in ["succeeded", "failed", "held"] {
        metrics::counter!(RETRAIN_RUNS, "result" => result).increment(0);
    }
    metrics::counter!(RETRAIN_CHANGES).increment(0);
    metrics::counter!(JOBS_REARMED).increment(0);
    for result in ["hit", "miss"] {
        metrics::counter!(CACHE, "result" => result).increment(0);
    }
    for job in ["provider_call", "feedback_aggregation", "retrain", "shadow"] {
        metrics::counter!(JOB_FAILURES, "job" => job).increment(0);
    }
    for outcome in ["judged", "budget", "judge_unavailable", "unreadable"] {
        metrics::counter!(SHADOW_SAMPLES, "outcome" => outcome).increment(0);
    }
    for result in ["stored", "unparsable", "failed"] {
        metrics::counter!(SHADOW_SCORES, "result" => result).increment(0);
    }
    for pattern in patterns {
        metrics::counter!(EXPLORATIONS, "pattern" => *pattern).increment(0);
        // No retrain judged yet: no drop, no ratings since one.
        metrics::gauge!(QUALITY_DROP, "pattern" => *pattern).set(0.0);
        metrics::gauge!(QUALITY_CURRENT_RATINGS, "pattern" => *pattern).set(0.0);
    }
    // No retrain succeeded yet until the database says otherwise (`/metrics` reads it).
    metrics::gauge!(LAST_RETRAIN).set(0.0);
    let mut providers: Vec<&str> = models.iter().map(|(p, _)| p.as_str()).collect();
    providers.dedup();
    for provider in providers {
        for kind in error_kinds {
            metrics::counter!(PROVIDER_ERRORS, "provider" => provider.to_owned(), "kind" => *kind)
                .increment(0);
        }
    }
    for (provider, model) in models {
        let (p, m) = (provider.clone(), model.clone());
        metrics::counter!(FALLBACKS, "provider" => p.clone(), "model" => m.clone()).increment(0);
        for direction in ["input", "output"] {
            metrics::counter!(TOKENS, "provider" => p.clone(), "model" => m.clone(),
                "direction" => direction)
            .increment(0);
        }
        for pattern in patterns {
            for status in ["succeeded", "failed"] {
                metrics::counter!(COMPLETIONS, "provider" => p.clone(), "model" => m.clone(),
                    "pattern" => *pattern, "status" => status)
                .increment(0);
            }
            let labels = [
                ("pattern", (*pattern).to_owned()),
                ("provider", p.clone()),
                ("model", m.clone()),
            ];
            for name in [
                FEEDBACK,
                FEEDBACK_QUALITY_SUM,
                FEEDBACK_JUDGED,
                FEEDBACK_CORRECT,
            ] {
                metrics::counter!(name, &labels).increment(0);
            }
        }
    }
}

/// Installs the Prometheus recorder (once per process) and describes every metric. Returns the
/// handle `/metrics` renders. In tests several apps share a process: they share the recorder.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h);
    }
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 120.0,
    ];
    let usd = [0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .ok()?
        .set_buckets_for_metric(Matcher::Suffix("_usd".into()), &usd)
        .ok()?;
    let handle = builder.install_recorder().ok();
    if let Some(handle) = handle {
        describe();
        let _ = HANDLE.set(handle);
    }
    HANDLE.get()
}

fn describe() {
    use names::*;
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    describe_gauge!(
        KEY_COST,
        "USD settled by requests this process finished, by API key id (only grows; use increase())"
    );
    describe_counter!(
        KEY_REQUESTS,
        "Completion submissions by API key id and outcome (accepted, rate_limited, budget_exceeded)"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration by route"
    );
    describe_counter!(
        COMPLETIONS,
        "Finished completions by provider, model, pattern, status"
    );
    describe_histogram!(
        GATEWAY_OVERHEAD,
        Unit::Seconds,
        "Time a completion spent in the gateway: total latency minus provider time"
    );
    describe_histogram!(PROVIDER_LATENCY, Unit::Seconds, "Provider call latency");
    describe_counter!(
        TOKENS,
        "Tokens by provider, model and direction (input/output)"
    );
    describe_histogram!(
        COST,
        "Spend per completion in USD by provider, model, pattern (_sum: total)"
    );
    describe_histogram!(
        BASELINE_COST,
        "What the always-premium baseline would have cost per completion, USD (_sum: total)"
    );
    describe_counter!(CACHE, "Cache lookups by result (hit/miss)");
    describe_counter!(
        FALLBACKS,
        "Fallbacks to the next candidate, by the provider/model that failed"
    );
    describe_counter!(
        EXPLORATIONS,
        "Requests routed to an unproven model (exploration), by pattern"
    );
    describe_counter!(PROVIDER_ERRORS, "Provider errors by provider and kind");
    describe_counter!(FEEDBACK, "Ratings by pattern, provider and model");
    describe_counter!(
        FEEDBACK_QUALITY_SUM,
        "Sum of 1-5 ratings (divide by optimizer_feedback_total)"
    );
    describe_counter!(
        FEEDBACK_JUDGED,
        "Ratings that say whether the answer was correct"
    );
    describe_counter!(FEEDBACK_CORRECT, "Ratings saying the answer was correct");
    describe_counter!(RETRAIN_RUNS, "Retrain runs by result");
    describe_counter!(
        RETRAIN_CHANGES,
        "Routing-weight changes applied by retrains"
    );
    describe_gauge!(
        LAST_RETRAIN,
        Unit::Seconds,
        "Unix time of the last successful retrain"
    );
    describe_gauge!(POLICY_VERSION, "Routing policy version in this process");
    describe_gauge!(
        QUEUE_JOBS,
        "Jobs by queue and state, read from the database at scrape time"
    );
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Job run time by job");
    describe_counter!(
        JOB_FAILURES,
        "Job runs that failed (the queue retries them), by job"
    );
    describe_counter!(
        JOBS_REARMED,
        "Jobs re-armed because their request was unfinished with no live job (should stay 0)"
    );
    describe_gauge!(
        QUALITY_BASELINE,
        "Average rating per pattern before the last retrain"
    );
    describe_gauge!(
        QUALITY_CURRENT,
        "Average rating per pattern since the last retrain"
    );
    describe_gauge!(
        QUALITY_DROP,
        "Relative quality drop per pattern since the last retrain"
    );
    describe_gauge!(
        QUALITY_ROLLED_BACK,
        "1 when the last retrain was rolled back for the pattern (its drop no longer counts)"
    );
    describe_gauge!(
        DRIFT_RUN,
        "1 for the retrain run the drift gauges judge (label run_id)"
    );
    describe_counter!(ALERTS, "Alerts raised by kind");
    describe_counter!(ROLLBACKS, "Rollbacks by trigger (manual/automatic)");
    describe_counter!(
        SHADOW_SAMPLES,
        "Shadow samples run to their end, by outcome (judged, budget, judge_unavailable, unreadable)"
    );
    describe_counter!(
        SHADOW_SCORES,
        "Judge calls by result (stored, unparsable, failed)"
    );
    describe_histogram!(
        SHADOW_COST,
        "Cost of each shadow and judge call, USD, by kind (shadow, judge); _sum is the spend"
    );
}
