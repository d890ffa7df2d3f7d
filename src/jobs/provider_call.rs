//! The provider_call job: one provider call per run. The request's transitions are
//! [`lifecycle`]'s; this job decides when and does the call:
//!
//! - claims the request for its generation (a finished request or a stale job does nothing);
//! - calls candidate `candidate` of the stored route, within that provider's concurrency limit,
//!   streaming the deltas to the waiting client when it asked for a stream;
//! - success → finish (terminal state + metrics row + cache entry + wake-up, one statement);
//! - failure → [`lifecycle::after_error`] says retry (a new job due after a backoff kept in the
//!   queue's `run_at`, so it survives a worker restart), fall back, or fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data};
use tracing::Instrument;

use super::JobContext;
use crate::completion::cost::{failure_metrics, success_metrics, with_estimated_usage};
use crate::completion::lifecycle::{self, AfterError};
use crate::completion::{ProviderCall, StoredParams, StoredRoute, StreamChunk};
use crate::config::StorePrompts;
use crate::providers::{CompletionRequest, Message, ProviderError, Role};
use crate::store::requests::{self as store, CacheEntry, Claimed, Outcome};
use crate::telemetry::names;
use crate::types::{FailureCode, RequestStatus};

/// What one run did (for tests and logs).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished or stale: nothing to do.
    Skipped,
    Succeeded,
    Retried {
        delay: Duration,
    },
    FellBack {
        to: usize,
    },
    Failed {
        code: String,
    },
}

/// The apalis entry point.
pub async fn handle(job: ProviderCall, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "provider_call",
        request_id = %job.request_id,
        generation = job.generation,
        candidate = job.candidate
    );
    let started = Instant::now();
    let result = run(&ctx, &job).instrument(span).await;
    super::record_job("provider_call", started, result.is_ok());
    match result {
        Ok(step) => {
            tracing::debug!(request_id = %job.request_id, ?step, "provider_call done");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(request_id = %job.request_id, error = %e, "provider_call failed; the queue will retry it");
            Err(Box::new(e))
        }
    }
}

/// One run of the job. Errors are database errors: the queue runs the job again.
pub async fn run(ctx: &JobContext, job: &ProviderCall) -> Result<Step, sqlx::Error> {
    let Some(claimed) = lifecycle::claim(&ctx.hot, job).await? else {
        return Ok(Step::Skipped);
    };
    run_claimed(ctx, job, claimed).await
}

/// The run of a job whose request was claimed (by [`run`], or by the direct lane's claim).
pub async fn run_claimed(
    ctx: &JobContext,
    job: &ProviderCall,
    claimed: Claimed,
) -> Result<Step, sqlx::Error> {
    let latency_ms = || {
        (chrono::Utc::now() - claimed.created_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0) as f64
            / 1000.0
    };
    let route: Option<StoredRoute> = serde_json::from_value(claimed.route.clone()).ok();
    let params: Option<StoredParams> = serde_json::from_value(claimed.params.clone()).ok();
    let (Some(route), Some(params)) = (route, params) else {
        return fail_unreadable(ctx, job, latency_ms()).await;
    };
    let give_up = |code: &'static str, message: String, provider_ms: Option<f64>| {
        let (outcome, metrics) = failed(&route, job, code, message, latency_ms(), provider_ms);
        async move { finish(ctx, job, &outcome, &metrics, None, params.is_async).await }
    };

    let deadline = ctx.settings.jobs.request_deadline;
    let age = chrono::Utc::now() - claimed.created_at;
    if age.to_std().unwrap_or_default() > deadline {
        let message = format!(
            "no answer within the request deadline ({} s)",
            deadline.as_secs()
        );
        return give_up(
            FailureCode::DeadlineExceeded.as_str(),
            message,
            Some(job.provider_ms as f64),
        )
        .await;
    }
    let Some(candidate) = route.candidates.get(job.candidate) else {
        return give_up("no_candidate", "no candidate left to try".into(), None).await;
    };
    let Some(request) = completion_request(&claimed, candidate.model.clone(), &params) else {
        let message = "the prompt is no longer stored".into();
        return give_up("prompt_unavailable", message, None).await;
    };

    let started = Instant::now();
    let (result, delivered) = if params.stream {
        stream_call(ctx, job, candidate.provider, &request).await
    } else {
        (
            ctx.providers.complete(candidate.provider, &request).await,
            String::new(),
        )
    };
    let streamed = !delivered.is_empty();
    let call_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        request_id = %job.request_id,
        provider = %candidate.provider,
        model = %candidate.model,
        ok = result.is_ok(),
        provider_ms = call_ms.round() as u64,
        "provider call"
    );
    let attempt = Attempt {
        job,
        route: &route,
        params: &params,
        request: &request,
        provider_ms: job.provider_ms as f64 + call_ms,
        latency_ms: latency_ms(),
    };
    match result {
        Ok(answer) => succeed(ctx, &attempt, with_estimated_usage(&request, answer)).await,
        // Part of the answer already reached the client: retrying or falling back would
        // repeat it. The stream fails instead, and what was delivered is charged (tokens
        // estimated: a cut stream carries no usage).
        Err(error) if streamed => {
            let message = format!("the stream broke after it started: {error}");
            let partial = crate::providers::Completion {
                text: delivered,
                ..crate::providers::Completion::empty(&candidate.model)
            };
            let metrics = success_metrics(
                &ctx.engine,
                &route,
                job.candidate,
                &with_estimated_usage(&request, partial),
                attempt.latency_ms,
                attempt.provider_ms,
            );
            let (outcome, _) = failed(
                &route,
                job,
                FailureCode::StreamInterrupted.as_str(),
                message,
                attempt.latency_ms,
                Some(attempt.provider_ms),
            );
            finish(ctx, job, &outcome, &metrics, None, params.is_async).await
        }
        Err(error) => {
            handle_error(
                ctx,
                job,
                &route,
                error,
                attempt.provider_ms.round() as u64,
                attempt.latency_ms,
                params.is_async,
            )
            .await
        }
    }
}

/// One finished provider call of a run.
struct Attempt<'a> {
    job: &'a ProviderCall,
    route: &'a StoredRoute,
    params: &'a StoredParams,
    /// What the provider was sent.
    request: &'a CompletionRequest,
    /// Provider time of this and the earlier attempts.
    provider_ms: f64,
    /// Since the request was accepted.
    latency_ms: f64,
}

/// The answer: terminal state, metrics row, cache entry.
async fn succeed(
    ctx: &JobContext,
    a: &Attempt<'_>,
    answer: crate::providers::Completion,
) -> Result<Step, sqlx::Error> {
    let metrics = success_metrics(
        &ctx.engine,
        a.route,
        a.job.candidate,
        &answer,
        a.latency_ms,
        a.provider_ms,
    );
    let candidate = a.route.candidates.get(a.job.candidate);
    // A sampled request's shadow comparison needs the answer (a judge grades text answers).
    let shadow_answer =
        (a.params.shadow.is_some() && answer.tool_calls.is_empty()).then(|| answer.text.clone());
    let outcome = Outcome::Succeeded {
        finish_reason: answer
            .finish_reason
            .unwrap_or_else(|| crate::providers::finish_reason(None).to_owned()),
        response: answer.text,
        tool_calls: answer.tool_calls,
        provider: candidate
            .map(|c| c.provider.to_string())
            .unwrap_or_default(),
        model: candidate.map(|c| c.model.clone()).unwrap_or_default(),
    };
    let cache = a.params.cache_key.clone().map(|cache_key| CacheEntry {
        cache_key,
        ttl_secs: ctx.settings.completion.cache_ttl.as_secs() as i64,
    });
    let step = finish(
        ctx,
        a.job,
        &outcome,
        &metrics,
        cache.as_ref(),
        a.params.is_async,
    )
    .await?;
    // After the terminal state: the client has its answer, and a run that did not write it
    // (a duplicate) queues nothing.
    if let (Step::Succeeded, Some(plan), Some(answer), Some(served)) =
        (&step, &a.params.shadow, shadow_answer, candidate)
    {
        let sample = super::shadow::Queued {
            request_id: &a.job.request_id,
            request: a.request,
            served,
            answer: &answer,
            plan,
        };
        if let Err(e) = super::shadow::queue(&ctx.pool, &sample).await {
            // A lost sample loses evidence, not an answer: the request is finished.
            tracing::warn!(request_id = %a.job.request_id, error = %e, "shadow sample not queued");
        }
    }
    Ok(step)
}

async fn handle_error(
    ctx: &JobContext,
    job: &ProviderCall,
    route: &StoredRoute,
    error: ProviderError,
    provider_ms: u64,
    latency_ms: f64,
    is_async: bool,
) -> Result<Step, sqlx::Error> {
    let message = error.to_string();
    metrics::counter!(names::PROVIDER_ERRORS, "provider" => error.provider.as_str(),
        "kind" => error.kind.as_str())
    .increment(1);
    let after = lifecycle::after_error(&error, job, route.candidates.len(), &ctx.settings.jobs);
    match after {
        AfterError::Retry { delay } => {
            let moved =
                lifecycle::reschedule(&ctx.pool, job, &after, provider_ms, &message).await?;
            Ok(if moved {
                Step::Retried { delay }
            } else {
                Step::Skipped
            })
        }
        AfterError::FallBack { to } => {
            if !lifecycle::reschedule(&ctx.pool, job, &after, provider_ms, &message).await? {
                return Ok(Step::Skipped);
            }
            if let Some(failed) = route.candidates.get(job.candidate) {
                metrics::counter!(names::FALLBACKS, "provider" => failed.provider.as_str(),
                    "model" => failed.model.clone())
                .increment(1);
            }
            Ok(Step::FellBack { to })
        }
        AfterError::GiveUp { code } => {
            let (outcome, metrics) = failed(
                route,
                job,
                code,
                message,
                latency_ms,
                Some(provider_ms as f64),
            );
            finish(ctx, job, &outcome, &metrics, None, is_async).await
        }
    }
}

/// The failed outcome and its metrics row, blaming candidate `job.candidate`.
fn failed(
    route: &StoredRoute,
    job: &ProviderCall,
    code: &str,
    message: String,
    latency_ms: f64,
    provider_ms: Option<f64>,
) -> (Outcome, store::MetricsRow) {
    let candidate = route.candidates.get(job.candidate);
    let outcome = Outcome::Failed {
        error: message,
        error_code: code.to_owned(),
        provider: candidate.map(|c| c.provider.to_string()),
        model: candidate.map(|c| c.model.clone()),
    };
    (
        outcome,
        failure_metrics(route, job.candidate, latency_ms, provider_ms),
    )
}

/// Calls the provider in streaming mode and relays each delta as it arrives — in memory when the
/// streaming client waits in this process, else by NOTIFY. Returns the call's result and the
/// text relayed to the client (empty: nothing was).
async fn stream_call(
    ctx: &JobContext,
    job: &ProviderCall,
    provider: crate::providers::ProviderId,
    request: &crate::providers::CompletionRequest,
) -> (Result<crate::providers::Completion, ProviderError>, String) {
    let local = ctx
        .notifier
        .as_ref()
        .filter(|n| n.has_stream(&job.request_id))
        .cloned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut seq = 0u64;
    let mut delivered = String::new();
    let relay = |delta: String, seq: u64| {
        let chunk = StreamChunk {
            id: job.request_id.clone(),
            seq,
            model: request.model.clone(),
            delta,
        };
        let local = local.clone();
        async move {
            match local {
                Some(n) => n.push(chunk),
                None => {
                    let payload = serde_json::to_string(&chunk).unwrap_or_default();
                    if let Err(e) = store::notify_chunk(&ctx.pool, &payload).await {
                        tracing::warn!(request_id = %chunk.id, error = %e, "stream chunk not relayed");
                    }
                }
            }
        }
    };
    let result = {
        let call = ctx
            .providers
            .complete_streaming(provider, request, Some(&tx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                Some(delta) = rx.recv() => {
                    delivered.push_str(&delta);
                    for piece in split(&delta, PIECE_BYTES) {
                        relay(piece, seq).await;
                        seq += 1;
                    }
                }
                result = &mut call => break result,
            }
        }
    };
    drop(tx);
    while let Some(delta) = rx.recv().await {
        delivered.push_str(&delta);
        for piece in split(&delta, PIECE_BYTES) {
            relay(piece, seq).await;
            seq += 1;
        }
    }
    (result, delivered)
}

/// Raw bytes of text per relayed piece: JSON escaping grows a byte to at most 6 (`\u001f`), so a
/// piece's NOTIFY payload stays below Postgres' 8000-byte limit with room for the envelope.
const PIECE_BYTES: usize = 1000;

/// `text` in pieces of at most `max` bytes, cut on character boundaries.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece.to_owned());
        rest = tail;
    }
    pieces
}

/// Writes the terminal state (see [`lifecycle::finish`]) and counts it once.
async fn finish(
    ctx: &JobContext,
    job: &ProviderCall,
    outcome: &Outcome,
    metrics: &store::MetricsRow,
    cache: Option<&CacheEntry>,
    is_async: bool,
) -> Result<Step, sqlx::Error> {
    let ending = lifecycle::Ending {
        request_id: &job.request_id,
        generation: Some(job.generation),
        outcome,
        metrics,
        cache,
        keep_prompt: ctx.settings.store_prompts == StorePrompts::Full,
        is_async,
        job: job.lane.as_ref(),
    };
    let done = lifecycle::finish(&ctx.hot, ctx.notifier.as_deref(), &ctx.announcer, ending).await?;
    if done {
        record(metrics, outcome);
    }
    Ok(match (done, outcome) {
        (false, _) => Step::Skipped,
        (true, Outcome::Succeeded { .. }) => Step::Succeeded,
        (true, Outcome::Failed { error_code, .. }) => Step::Failed {
            code: error_code.clone(),
        },
    })
}

/// Counts a finished completion (once: only the run that wrote the terminal state records).
fn record(m: &store::MetricsRow, outcome: &Outcome) {
    let status = outcome.status();
    let (provider, model, pattern) = (
        m.selected_provider.clone(),
        m.selected_model.clone(),
        m.prompt_pattern.clone(),
    );
    metrics::counter!(names::COMPLETIONS, "provider" => provider.clone(), "model" => model.clone(),
        "pattern" => pattern.clone(), "status" => status.as_str())
    .increment(1);
    if status != RequestStatus::Succeeded {
        return;
    }
    let provider_ms = m.provider_latency_ms.unwrap_or(0.0);
    metrics::histogram!(names::GATEWAY_OVERHEAD)
        .record(((m.latency_ms - provider_ms) / 1000.0).max(0.0));
    metrics::histogram!(names::PROVIDER_LATENCY, "provider" => provider.clone(), "model" => model.clone())
        .record(provider_ms / 1000.0);
    for (direction, n) in [("input", m.input_tokens), ("output", m.output_tokens)] {
        metrics::counter!(names::TOKENS, "provider" => provider.clone(), "model" => model.clone(),
            "direction" => direction)
        .increment(u64::try_from(n.unwrap_or(0)).unwrap_or(0));
    }
    metrics::histogram!(names::COST, "provider" => provider.clone(), "model" => model.clone(),
        "pattern" => pattern.clone())
    .record(m.cost_usd.unwrap_or(0.0));
    metrics::histogram!(names::BASELINE_COST, "provider" => provider, "model" => model,
        "pattern" => pattern)
    .record(m.baseline_cost_usd.unwrap_or(0.0));
}

async fn fail_unreadable(
    ctx: &JobContext,
    job: &ProviderCall,
    latency_ms: f64,
) -> Result<Step, sqlx::Error> {
    let route = StoredRoute::unreadable();
    let outcome = Outcome::Failed {
        error: "the stored request could not be read".into(),
        error_code: FailureCode::Internal.as_str().into(),
        provider: None,
        model: None,
    };
    let metrics = failure_metrics(&route, 0, latency_ms, None);
    finish(ctx, job, &outcome, &metrics, None, false).await
}

fn completion_request(
    claimed: &Claimed,
    model: String,
    params: &StoredParams,
) -> Option<CompletionRequest> {
    let mut messages = params.history.clone();
    messages.push(Message::text(Role::User, claimed.prompt.clone()?));
    messages.extend(params.tail.iter().cloned());
    Some(CompletionRequest {
        model,
        system: claimed.system.clone(),
        messages,
        max_tokens: params.max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop.clone(),
        tools: params.tools.clone(),
        tool_choice: params.tool_choice.clone(),
        response_format: params.response_format.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_pieces_fit_a_notify_payload_whatever_the_text() {
        let id = "01JDXXXXXXXXXXXXXXXXXXXXXX".to_owned();
        for text in [
            "\u{1f}".repeat(5000),
            "\u{1F600}".repeat(3000),
            "\"\\".repeat(4000),
            "é".repeat(7001),
        ] {
            let pieces = split(&text, PIECE_BYTES);
            assert_eq!(pieces.concat(), text);
            for delta in pieces {
                let chunk = StreamChunk {
                    id: id.clone(),
                    seq: u64::MAX,
                    model: "a-rather-long-provider-model-name-for-the-envelope".into(),
                    delta,
                };
                let payload = serde_json::to_string(&chunk).unwrap();
                assert!(payload.len() < 8000, "{} bytes", payload.len());
            }
        }
    }
}
