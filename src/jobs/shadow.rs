//! The shadow job (queue `shadow`): for a sampled request, once its client has the answer, the
//! plan's other models answer the same provider request and the judge (`JUDGE_MODEL`) grades
//! every answer, the served one included (README "Shadow comparisons").
//!
//! At-least-once like every job, and each step stored before the next: a shadow answer is kept
//! with the sample as its call returns (with its spend), each judgement stored with its spend
//! once per (request, model), and the sample deleted at the end — a run killed anywhere resumes
//! where the last one stopped and stores each score once. No call starts once the day's shadow
//! and judge spend has reached `SHADOW_BUDGET_USD` (calls in flight in other processes still
//! finish). A judge reply that does not parse stores nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskBuilder};
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};

use super::JobContext;
use crate::completion::RouteCandidate;
use crate::completion::cost::call_cost;
use crate::completion::shadow::ShadowPlan;
use crate::config::ShadowBilling;
use crate::providers::{CompletionRequest, ProviderId, judge};
use crate::store::shadow as store;
use crate::telemetry::names;

/// The job's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    pub request_id: String,
}

impl Shadow {
    pub fn task(request_id: &str) -> PgTask {
        let args = serde_json::to_vec(&Self {
            request_id: request_id.to_owned(),
        })
        .unwrap_or_default();
        TaskBuilder::new(args).max_attempts(5).build()
    }
}

/// A sampled request whose client has its answer.
pub struct Queued<'a> {
    pub request_id: &'a str,
    pub request: &'a CompletionRequest,
    pub served: &'a RouteCandidate,
    pub answer: &'a str,
    pub plan: &'a ShadowPlan,
}

/// The answer the client got.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Served {
    provider: ProviderId,
    model: String,
    answer: String,
}

/// Stores the sample and queues its job (once per request).
pub async fn queue(pool: &sqlx::PgPool, q: &Queued<'_>) -> Result<bool, sqlx::Error> {
    let encode = |e: serde_json::Error| sqlx::Error::Protocol(e.to_string());
    let served = Served {
        provider: q.served.provider,
        model: q.served.model.clone(),
        answer: q.answer.to_owned(),
    };
    let sample = store::NewSample {
        request_id: q.request_id,
        api_key_id: q.plan.api_key_id.as_deref(),
        input: serde_json::to_value(q.request).map_err(encode)?,
        served: serde_json::to_value(&served).map_err(encode)?,
        plan: serde_json::to_value(q.plan).map_err(encode)?,
    };
    store::enqueue(pool, &sample, Shadow::task(q.request_id)).await
}

/// The apalis entry point.
pub async fn handle(job: Shadow, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let result = run(&ctx, &job.request_id).await;
    super::record_job("shadow", started, result.is_ok());
    let done = result?;
    tracing::debug!(request_id = %job.request_id, ?done, "shadow done");
    Ok(())
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// No sample: done by an earlier run.
    Gone,
    /// Ended (the sample deleted): `outcome` as counted, `stored` scores new in this run.
    Ended {
        outcome: &'static str,
        stored: usize,
    },
}

/// One run. Errors are database errors: the queue runs the job again.
pub async fn run(ctx: &JobContext, request_id: &str) -> Result<Done, sqlx::Error> {
    let Some(sample) = store::load(&ctx.pool, request_id).await? else {
        return Ok(Done::Gone);
    };
    let end = |outcome: &'static str, stored: usize| async move {
        store::remove(&ctx.pool, request_id).await?;
        metrics::counter!(names::SHADOW_SAMPLES, "outcome" => outcome).increment(1);
        Ok(Done::Ended { outcome, stored })
    };
    let settings = &ctx.settings.learning.shadow;
    let Some((judge_provider, judge_model)) = crate::wiring::judge(&ctx.engine, &ctx.settings)
    else {
        return end("judge_unavailable", 0).await;
    };
    let input: Option<CompletionRequest> = serde_json::from_value(sample.input).ok();
    let served: Option<Served> = serde_json::from_value(sample.served).ok();
    let plan: Option<ShadowPlan> = serde_json::from_value(sample.plan).ok();
    let (Some(input), Some(served), Some(plan)) = (input, served, plan) else {
        return end("unreadable", 0).await;
    };
    let mut answers: BTreeMap<String, String> =
        serde_json::from_value(sample.answers).unwrap_or_default();
    let key_id = sample.api_key_id.as_deref();
    let bill_key = settings.billing == ShadowBilling::Key;
    let over_budget = || async {
        Ok::<bool, sqlx::Error>(store::spent_today(&ctx.pool).await? >= settings.budget_usd)
    };

    // The other models' answers, each kept as it arrives. (A fallback may have served one of
    // the plan's models: its answer is the served one.)
    let served_model = |m: &crate::completion::shadow::ShadowModel| {
        m.provider == served.provider && m.model == served.model
    };
    for m in plan.models.iter().filter(|m| !served_model(m)) {
        let name = m.key();
        if answers.contains_key(&name) {
            continue;
        }
        if over_budget().await? {
            return end("budget", 0).await;
        }
        let request = CompletionRequest {
            model: m.model.clone(),
            ..input.clone()
        };
        match ctx.providers.complete(m.provider, &request).await {
            Ok(answer) if answer.tool_calls.is_empty() => {
                let cost = call_cost(&ctx.engine, m.provider, &m.model, &answer);
                let provider = m.provider.to_string();
                let spend = store::Spend {
                    request_id,
                    kind: "shadow",
                    provider: &provider,
                    model: &m.model,
                    api_key_id: key_id,
                    cost_usd: cost,
                    bill_key,
                };
                store::save_answer(&ctx.pool, &spend, &answer.text).await?;
                metrics::histogram!(names::SHADOW_COST, "kind" => "shadow").record(cost);
                answers.insert(name, answer.text);
            }
            Ok(_) => {
                tracing::info!(request_id, model = %m.model, "shadow answer was a tool call; not judged")
            }
            Err(e) => {
                tracing::info!(request_id, model = %m.model, error = %e, "shadow call failed; not judged");
            }
        }
    }

    // Every answer graded, the served one included; each stored once.
    let judged = store::judged(&ctx.pool, request_id).await?;
    let mut graded: Vec<(ProviderId, &str, &str, bool, f64)> =
        vec![(served.provider, &served.model, &served.answer, true, 1.0)];
    for m in plan.models.iter().filter(|m| !served_model(m)) {
        if let Some(answer) = answers.get(&m.key()) {
            graded.push((m.provider, &m.model, answer, false, m.propensity));
        }
    }
    let mut stored = 0;
    for (provider, model, answer, was_served, propensity) in graded {
        let provider_name = provider.to_string();
        if judged
            .iter()
            .any(|(p, m)| p == &provider_name && m == model)
        {
            continue;
        }
        if over_budget().await? {
            return end("budget", stored).await;
        }
        let grading = judge::grading_request(&input, answer, &judge_model);
        let reply = match ctx.providers.complete(judge_provider, &grading).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::info!(request_id, judge = %judge_model, error = %e, "judge call failed; nothing stored");
                metrics::counter!(names::SHADOW_SCORES, "result" => "failed").increment(1);
                continue;
            }
        };
        let cost = call_cost(&ctx.engine, judge_provider, &judge_model, &reply);
        let verdict = match judge::parse_verdict(&reply.text) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(request_id, judge = %judge_model, error = %e, "judge reply not taken; nothing stored");
                metrics::counter!(names::SHADOW_SCORES, "result" => "unparsable").increment(1);
                None
            }
        };
        let judge_provider_name = judge_provider.to_string();
        let spend = store::Spend {
            request_id,
            kind: "judge",
            provider: &judge_provider_name,
            model: &judge_model,
            api_key_id: key_id,
            cost_usd: cost,
            bill_key,
        };
        let score = verdict.map(|v| store::Score {
            request_id,
            provider: &provider_name,
            model,
            served: was_served,
            propensity,
            grade: v.grade,
            correct: v.correct,
            judge: &judge_model,
        });
        if store::save_judgement(&ctx.pool, &spend, score.as_ref()).await? {
            stored += 1;
            metrics::counter!(names::SHADOW_SCORES, "result" => "stored").increment(1);
        }
        metrics::histogram!(names::SHADOW_COST, "kind" => "judge").record(cost);
    }
    end("judged", stored).await
}
