//! What a call cost, what the always-premium baseline would have cost for the same tokens, and
//! the routing_metrics row that records both.
//!
//! Cost: the provider's own reported cost when it sends one (OpenRouter), else the tokens it
//! reports × the catalog's list price — prompt-cache reads and writes at the catalog's cache
//! prices. Baseline: the same token counts (cached ones included) × the baseline model's
//! prices — "what this answer would have cost on the premium model".

use serde_json::Value;

use super::StoredRoute;
use crate::providers::{Completion, ProviderId};
use crate::routing::RoutingEngine;
use crate::routing::recommend::round_usd;
use crate::store::requests::{CachedAnswer, MetricsRow};

/// The catalog entry of `provider/model` (None when it is not in the catalog).
fn priced<'a>(
    engine: &'a RoutingEngine,
    provider: ProviderId,
    model: &str,
) -> Option<&'a crate::routing::ModelEntry> {
    engine.model(engine.catalog().find(Some(provider), model)?)
}

/// The price of `answer`'s tokens on `provider/model`, prompt-cache reads and writes at that
/// model's cache prices (None when the model is not in the catalog).
fn price_of(
    engine: &RoutingEngine,
    provider: ProviderId,
    model: &str,
    answer: &Completion,
) -> Option<f64> {
    priced(engine, provider, model).map(|m| {
        m.cost_usd_cached(
            answer.input_tokens,
            answer.cached_input_tokens,
            answer.cache_write_tokens,
            answer.output_tokens,
        )
    })
}

/// What `answer` from `provider/model` cost: the provider's reported cost, else its tokens at
/// the catalog's prices (0 when the model is not in the catalog).
pub fn call_cost(
    engine: &RoutingEngine,
    provider: ProviderId,
    model: &str,
    answer: &Completion,
) -> f64 {
    answer
        .reported_cost_usd
        .or_else(|| price_of(engine, provider, model, answer))
        .map_or(0.0, round_usd)
}

fn baseline_cost(
    engine: &RoutingEngine,
    route: &StoredRoute,
    input: u64,
    output: u64,
) -> Option<f64> {
    let b = route.baseline.as_ref()?;
    priced(engine, b.provider, &b.model).map(|m| round_usd(m.cost_usd(input, output)))
}

fn base_row(route: &StoredRoute, candidate: usize) -> MetricsRow {
    let chosen = route.candidates.get(candidate);
    MetricsRow {
        prompt_pattern: route.pattern.clone(),
        complexity_score: route.complexity as f32,
        complexity_tier: Some(route.tier.clone()),
        strategy: route.strategy.clone(),
        selected_provider: chosen.map(|c| c.provider.to_string()).unwrap_or_default(),
        selected_model: chosen.map(|c| c.model.clone()).unwrap_or_default(),
        reason: Some(if candidate == 0 {
            route.reason.clone()
        } else {
            format!(
                "fallback #{candidate} after earlier candidates failed; {}",
                route.reason
            )
        }),
        confidence: chosen.map(|c| c.confidence.clone()),
        explored: route.explored && candidate == 0,
        alternatives: serde_json::to_value(route.candidates.get(1..).unwrap_or(&[]))
            .unwrap_or(Value::Null),
        input_tokens: None,
        output_tokens: None,
        cached_input_tokens: None,
        cache_write_tokens: None,
        cost_usd: None,
        baseline_model: route
            .baseline
            .as_ref()
            .map(|b| format!("{}/{}", b.provider, b.model)),
        baseline_cost_usd: None,
        latency_ms: 0.0,
        provider_latency_ms: None,
        cache_hit: false,
        fallback_count: i32::try_from(candidate).unwrap_or(i32::MAX),
    }
}

fn tokens(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The metrics row of a successful provider call on candidate `candidate`.
pub fn success_metrics(
    engine: &RoutingEngine,
    route: &StoredRoute,
    candidate: usize,
    answer: &Completion,
    latency_ms: f64,
    provider_ms: f64,
) -> MetricsRow {
    let mut row = base_row(route, candidate);
    let chosen = route.candidates.get(candidate);
    let cost = answer
        .reported_cost_usd
        .or_else(|| chosen.and_then(|c| price_of(engine, c.provider, &c.model, answer)));
    row.input_tokens = Some(tokens(answer.input_tokens));
    row.output_tokens = Some(tokens(answer.output_tokens));
    row.cached_input_tokens = Some(tokens(answer.cached_input_tokens));
    row.cache_write_tokens = Some(tokens(answer.cache_write_tokens));
    row.cost_usd = cost.map(round_usd);
    row.baseline_cost_usd = route
        .baseline
        .as_ref()
        .and_then(|b| price_of(engine, b.provider, &b.model, answer))
        .map(round_usd);
    row.latency_ms = latency_ms;
    row.provider_latency_ms = Some(provider_ms);
    row
}

/// The router's token estimate of what `request` sends (system prompt, turns, tool calls and
/// definitions, +4 per turn), for a provider that reports no usage.
pub fn estimated_input_tokens(request: &crate::providers::CompletionRequest) -> u64 {
    use crate::routing::analyzer::estimate_tokens;
    let turns: u64 = request
        .messages
        .iter()
        .map(|m| {
            let calls: u64 = m
                .tool_calls
                .iter()
                .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
                .sum();
            estimate_tokens(&m.content) + calls + 4
        })
        .sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| estimate_tokens(&serde_json::to_string(t).unwrap_or_default()))
        .sum();
    turns + tools + request.system.as_deref().map_or(0, estimate_tokens)
}

/// `answer` with estimated token counts when the provider reported none at all (a stream cut
/// before its usage, a server that never sends usage): the prompt by
/// [`estimated_input_tokens`], the output from the delivered text. Reported counts are kept.
pub fn with_estimated_usage(
    request: &crate::providers::CompletionRequest,
    mut answer: Completion,
) -> Completion {
    if answer.input_tokens == 0 && answer.output_tokens == 0 {
        answer.input_tokens = estimated_input_tokens(request);
        let calls: String = answer
            .tool_calls
            .iter()
            .map(|c| format!("{}{}", c.name, c.arguments))
            .collect();
        answer.output_tokens = crate::routing::analyzer::estimate_tokens(&answer.text)
            + crate::routing::analyzer::estimate_tokens(&calls);
    }
    answer
}

/// The metrics row of a request that failed on candidate `candidate` (nothing billed).
pub fn failure_metrics(
    route: &StoredRoute,
    candidate: usize,
    latency_ms: f64,
    provider_ms: Option<f64>,
) -> MetricsRow {
    let mut row = base_row(
        route,
        candidate.min(route.candidates.len().saturating_sub(1)),
    );
    row.fallback_count = i32::try_from(candidate).unwrap_or(i32::MAX);
    row.cost_usd = Some(0.0);
    row.latency_ms = latency_ms;
    row.provider_latency_ms = provider_ms;
    row
}

/// The metrics row of a cache hit: nothing billed, the baseline priced on the cached tokens.
pub fn cached_metrics(
    engine: &RoutingEngine,
    route: &StoredRoute,
    hit: &CachedAnswer,
) -> MetricsRow {
    let mut row = base_row(route, 0);
    let (input, output) = (
        u64::try_from(hit.input_tokens).unwrap_or(0),
        u64::try_from(hit.output_tokens).unwrap_or(0),
    );
    row.selected_provider = hit.provider.clone();
    row.selected_model = hit.model.clone();
    row.reason = Some("answered from the exact-match cache".into());
    row.explored = false;
    row.input_tokens = Some(hit.input_tokens);
    row.output_tokens = Some(hit.output_tokens);
    row.cost_usd = Some(0.0);
    row.baseline_cost_usd = baseline_cost(engine, route, input, output);
    row.cache_hit = true;
    row.fallback_count = 0;
    row
}

/// Counts a cache hit as a completion: nothing spent, the baseline's cost saved.
pub fn record_cached(m: &MetricsRow) {
    use crate::telemetry::names;
    let (provider, model, pattern) = (
        m.selected_provider.clone(),
        m.selected_model.clone(),
        m.prompt_pattern.clone(),
    );
    metrics::counter!(names::COMPLETIONS, "provider" => provider.clone(), "model" => model.clone(),
        "pattern" => pattern.clone(), "status" => "cached")
    .increment(1);
    metrics::histogram!(names::COST, "provider" => provider.clone(), "model" => model.clone(),
        "pattern" => pattern.clone())
    .record(0.0);
    metrics::histogram!(names::BASELINE_COST, "provider" => provider, "model" => model,
        "pattern" => pattern)
    .record(m.baseline_cost_usd.unwrap_or(0.0));
}
