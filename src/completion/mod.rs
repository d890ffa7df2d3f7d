//! Completions, independent of HTTP: validate → analyze → route → (cache hit, or insert the
//! request and enqueue its provider_call job in one transaction) → wait for the worker's NOTIFY.
//!
//! - [`waiter`]: one LISTEN connection per process, fanned out to the requests waiting on it.
//! - [`lifecycle`]: every transition of a request (submit, claim, retry/fallback, finish,
//!   sweep) and the generation guard; the one owner of the request state machine.
//! - [`cost`]: what a call cost and what the baseline would have.
//! - [`batch`]: group commit of concurrent submissions' inserts.

pub mod batch;
pub mod cost;
pub mod lane;
pub mod lifecycle;
pub mod shadow;
pub mod waiter;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::{Settings, StorePrompts};
use crate::providers::{Message, ProviderId, ResponseFormat, Tool, ToolChoice};
use crate::routing::recommend::round_usd;
use crate::routing::{
    Analysis, Candidate, Decision, QueryPatternAnalyzer, RouteError, RouteRequest, RoutingEngine,
    Strategy,
};
use crate::store::keys::{Admission, BudgetLimit, Period, RateState, Refusal};
use crate::store::requests::{self as store, Inserted, NewRequest, RequestRecord};
use crate::telemetry::names;
use crate::tenants::{ApiKey, Caller};
use crate::types::RequestStatus;
pub use batch::{Announcer, Inserter};
pub use lane::DirectLane;
pub use lifecycle::ProviderCall;
pub use waiter::{Notifier, StreamChunk, Subscription, Waiter};

/// One candidate as stored with the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCandidate {
    pub provider: ProviderId,
    pub model: String,
    pub expected_quality: f64,
    pub confidence: String,
    pub est_cost_usd: f64,
}

impl From<&Candidate> for RouteCandidate {
    fn from(c: &Candidate) -> Self {
        Self {
            provider: c.provider,
            model: c.model.clone(),
            expected_quality: c.expected_quality,
            confidence: c.confidence.as_str().to_owned(),
            est_cost_usd: round_usd(c.est_cost_usd),
        }
    }
}

/// The routing decision as stored in `requests.route`: what the worker falls back along.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRoute {
    pub pattern: String,
    pub complexity: f64,
    pub tier: String,
    pub strategy: String,
    pub reason: String,
    pub reason_code: String,
    pub explored: bool,
    /// The probability with which the decision chose its model (1 when it could not explore).
    #[serde(default = "certain")]
    pub propensity: f64,
    pub policy_version: i64,
    /// The chosen model first, then the fallbacks.
    pub candidates: Vec<RouteCandidate>,
    pub baseline: Option<RouteCandidate>,
}

impl StoredRoute {
    /// Stands in for a stored route that cannot be read, so the request can still be ended
    /// with a metrics row.
    pub fn unreadable() -> Self {
        Self {
            pattern: crate::types::Pattern::Other.as_str().to_owned(),
            complexity: 0.0,
            tier: "low".into(),
            strategy: crate::types::Strategy::default().as_str().to_owned(),
            reason: "unreadable stored route".into(),
            reason_code: "error".into(),
            explored: false,
            propensity: 1.0,
            policy_version: 0,
            candidates: Vec::new(),
            baseline: None,
        }
    }

    fn new(analysis: &Analysis, decision: &Decision, baseline: Option<RouteCandidate>) -> Self {
        Self {
            pattern: analysis.pattern.as_str().to_owned(),
            complexity: analysis.complexity,
            tier: analysis.tier.as_str().to_owned(),
            strategy: decision.strategy.as_str().to_owned(),
            reason: decision.reason.clone(),
            reason_code: decision.reason_code.to_owned(),
            explored: decision.explored,
            propensity: decision.propensity,
            policy_version: decision.policy_version,
            candidates: std::iter::once(&decision.chosen)
                .chain(&decision.alternatives)
                .map(RouteCandidate::from)
                .collect(),
            baseline,
        }
    }
}

fn certain() -> f64 {
    1.0
}

/// The caller's parameters as stored in `requests.params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredParams {
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    pub auto_route: bool,
    pub min_quality: Option<f64>,
    pub max_cost: Option<f64>,
    pub is_async: bool,
    /// Set when the answer may be cached.
    pub cache_key: Option<String>,
    /// Earlier conversation turns; cleared at the terminal state unless STORE_PROMPTS=full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    /// Turns after the last user turn (the assistant's tool calls and their results); cleared
    /// with `history`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Stream the answer as it is generated.
    #[serde(default)]
    pub stream: bool,
    /// Sampled for shadow comparisons: the models that answer it once the client has its
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<shadow::ShadowPlan>,
}

/// A validated `/complete` request.
#[derive(Debug, Clone)]
pub struct CompleteInput {
    /// The (last) user turn: what is analyzed and routed.
    pub prompt: String,
    pub system: Option<String>,
    /// Earlier turns of a conversation, oldest first (OpenAI-compatible API).
    pub history: Vec<Message>,
    /// Turns after the last user turn: the assistant's tool calls and the tools' results.
    pub tail: Vec<Message>,
    /// Tools the model may call (only models whose catalog capabilities include `tools` are
    /// routed to).
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// JSON output (`response_format`).
    pub response_format: Option<ResponseFormat>,
    /// A catalog model index pinned by the caller (auto_route=false or an explicit model).
    pub pinned: Option<usize>,
    pub allowed_providers: Option<Vec<ProviderId>>,
    pub strategy: Strategy,
    pub min_quality: Option<f64>,
    /// The share of the best candidate's predicted quality the choice must keep (default: the
    /// strategy's).
    pub quality_share: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub is_async: bool,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Relay the answer as it streams from the provider.
    pub stream: bool,
    /// May this request be sent to an unproven model (exploration)? Default true.
    pub explore: bool,
    /// May this request be sampled for shadow comparisons? Default true.
    pub shadow: bool,
    /// Who sent it: its owner, rate limits and budgets.
    pub caller: Caller,
    /// Catalog models the caller may use (an API key's allowed models); None: any.
    pub allowed_models: Option<Vec<usize>>,
}

impl Default for CompleteInput {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            system: None,
            history: Vec::new(),
            tail: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
            pinned: None,
            allowed_providers: None,
            strategy: Strategy::default(),
            min_quality: None,
            quality_share: None,
            max_cost_usd: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            is_async: false,
            user_id: None,
            session_id: None,
            idempotency_key: None,
            stream: false,
            explore: true,
            shadow: true,
            caller: Caller::Open,
            allowed_models: None,
        }
    }
}

/// What `submit` did.
#[derive(Debug)]
pub enum Submitted {
    /// Answered from the cache; the request is already recorded as finished.
    Cached(String),
    /// Queued; `waiter` (for synchronous callers) fires when the worker finishes it.
    Queued {
        request_id: String,
        waiter: Option<Waiter>,
        stream: Option<Subscription>,
    },
    /// The idempotency key named an earlier request; nothing new was queued.
    Replayed(String),
}

impl Submitted {
    pub fn request_id(&self) -> &str {
        match self {
            Submitted::Cached(id) | Submitted::Replayed(id) => id,
            Submitted::Queued { request_id, .. } => request_id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The key's rate limit or budget refused it (nothing was written).
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// The idempotency key names an earlier request of the same API key with another body.
    #[error("idempotency key reused for another request ({0})")]
    IdempotencyMismatch(String),
    /// The connection failed while the request was being written: it may or may not have been
    /// committed. The client gets its id, to poll it (404: it was not accepted).
    #[error("request {request_id} may not have been stored: {source}")]
    Unconfirmed {
        request_id: String,
        source: sqlx::Error,
    },
}

/// A failed insert: when the connection broke (the commit may have happened), the request's id
/// goes with the error.
fn insert_error(request_id: &str) -> impl Fn(sqlx::Error) -> SubmitError + '_ {
    move |e| {
        if crate::store::connection_lost(&e) {
            SubmitError::Unconfirmed {
                request_id: request_id.to_owned(),
                source: e,
            }
        } else {
            SubmitError::Database(e)
        }
    }
}

/// The completion service of one process.
pub struct Completions {
    pub pool: PgPool,
    pub engine: Arc<RoutingEngine>,
    pub settings: Arc<Settings>,
    pub notifier: Arc<Notifier>,
    /// This process's workers, when it runs them (see [`lane`]).
    pub lane: Arc<DirectLane>,
    /// Group commit of new requests (see [`batch`]).
    pub inserts: Arc<Inserter>,
}

impl Completions {
    /// The routing decision and the route as stored with the request (candidates, baseline).
    fn plan(
        &self,
        input: &CompleteInput,
        analysis: &Analysis,
        max_tokens: u32,
    ) -> Result<(Decision, StoredRoute), RouteError> {
        let request = RouteRequest {
            strategy: input.strategy,
            min_quality: input.min_quality,
            max_cost_usd: input.max_cost_usd,
            allowed_providers: input.allowed_providers.as_deref(),
            allowed_models: input.allowed_models.as_deref(),
            pinned: input.pinned,
            max_output_tokens: Some(max_tokens),
            quality_share: input.quality_share,
            preview: !input.explore,
        };
        let mut rng = match self.settings.routing.exploration_seed {
            Some(seed) => {
                let digest = Sha256::digest(input.prompt.as_bytes());
                let mut prompt_seed = [0u8; 8];
                prompt_seed.copy_from_slice(&digest[..8]);
                fastrand::Rng::with_seed(seed ^ u64::from_le_bytes(prompt_seed))
            }
            None => fastrand::Rng::new(),
        };
        let decision = self.engine.route(analysis, &request, &mut rng)?;
        let baseline = self.engine.baseline();
        let baseline_candidate = self.engine.model(baseline).map(|m| {
            let (_, _, est) = self.engine.estimate(baseline, analysis, Some(max_tokens));
            RouteCandidate {
                provider: m.provider,
                model: m.model.clone(),
                expected_quality: m.prior(analysis.pattern),
                confidence: "prior".into(),
                est_cost_usd: round_usd(est),
            }
        });
        let route = StoredRoute::new(analysis, &decision, baseline_candidate);
        Ok((decision, route))
    }

    /// Routes and queues (or answers from the cache) one request; with the key's rate-limit
    /// window after it, when the key has rate limits.
    ///
    /// Runs to its end even when the caller goes away (a client that disconnects drops its
    /// handler's future): once the insert is sent it may commit, and a job the direct lane
    /// reserved, committed `Running` under this live process's worker row, but never handed
    /// over would run nowhere — the queue rescues only dead workers' jobs — until the deadline
    /// sweep failed its request.
    pub async fn submit(
        self: &Arc<Self>,
        input: CompleteInput,
    ) -> Result<(Submitted, Option<RateState>), SubmitError> {
        let this = Arc::clone(self);
        let task = async move { this.submit_to_the_end(input).await };
        // In the request's span, so its logs still name the request.
        match crate::tasks::spawn("submit", tracing::Instrument::in_current_span(task)).await {
            Ok(submitted) => submitted,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down.
                Err(_) => Err(SubmitError::Database(sqlx::Error::PoolClosed)),
            },
        }
    }

    async fn submit_to_the_end(
        &self,
        input: CompleteInput,
    ) -> Result<(Submitted, Option<RateState>), SubmitError> {
        let analysis = QueryPatternAnalyzer::new().analyze(&input.prompt);
        let max_tokens = input
            .max_tokens
            .unwrap_or(self.settings.completion.default_max_tokens);
        let (decision, route) = self.plan(&input, &analysis, max_tokens)?;

        let completion = &self.settings.completion;
        // The cache keys answers by a digest of the prompt: none with STORE_PROMPTS=none.
        let cacheable = completion.cache_enabled
            && input.temperature.unwrap_or(0.0) == 0.0
            && self.settings.store_prompts != StorePrompts::None;
        let cache_key = cacheable.then(|| cache_key(&input, max_tokens));
        let (request_id, mut new) = self.request_row(
            &input,
            &analysis,
            (&decision, &route),
            max_tokens,
            &cache_key,
        );
        let keep_prompt = self.settings.store_prompts == StorePrompts::Full;

        let hit = match &cache_key {
            Some(key) => store::cache_lookup(&self.pool, key)
                .await?
                .filter(|hit| admissible(&route, hit)),
            None => None,
        };
        if cache_key.is_some() {
            let result = if hit.is_some() { "hit" } else { "miss" };
            metrics::counter!(names::CACHE, "result" => result).increment(1);
        }
        if let (Some(key), Some(hit)) = (&cache_key, hit) {
            let metrics = cost::cached_metrics(&self.engine, &route, &hit);
            cost::record_cached(&metrics);
            let inserted =
                lifecycle::submit_cached(&self.pool, &new, key, &hit, &metrics, keep_prompt)
                    .await
                    .map_err(insert_error(&request_id))?;
            return accepted(
                inserted,
                Submitted::Cached(request_id),
                input.caller.key_id(),
            );
        }

        if decision.explored {
            metrics::counter!(names::EXPLORATIONS, "pattern" => analysis.pattern.as_str())
                .increment(1);
        }
        // Listen before the job exists, so its NOTIFY cannot be missed.
        let waiter = (!input.is_async).then(|| self.notifier.register(&request_id));
        let stream = input.stream.then(|| self.notifier.subscribe(&request_id));
        let job = ProviderCall::first(&request_id);
        let lane = (!self.notifier.is_closing())
            .then(|| self.lane.reserve())
            .flatten();
        let job_id = lane
            .as_ref()
            .map_or_else(|| ulid::Ulid::generate().to_string(), |r| r.job_id.clone());
        let run_by = lane.as_ref().map(|r| r.worker());
        // A queued job is held for worker processes, which take it at once as announced,
        // unless this process runs provider_call workers (its queue's fetch, not the
        // announcement, takes a job the lane had no slot for).
        let held = !self.lane.runs_here();
        let submitted_at = chrono::Utc::now();
        let mut inserted =
            lifecycle::submit(&self.pool, &self.inserts, &new, &job, &job_id, run_by, held)
                .await
                .map_err(insert_error(&request_id))?;
        if let Some((narrower, room)) = self.within_budget(&input, &inserted, &analysis, max_tokens)
            && let Ok((decision, mut route)) = self.plan(&narrower, &analysis, max_tokens)
        {
            route.reason = format!(
                "{} — kept within the API key's budget: only models whose worst case fits the \
                 ${room:.6} left",
                route.reason
            );
            let narrower_key = cacheable.then(|| self::cache_key(&narrower, max_tokens));
            let (_, mut retry) = self.request_row(
                &narrower,
                &analysis,
                (&decision, &route),
                max_tokens,
                &narrower_key,
            );
            retry.request_id = request_id.clone();
            inserted = lifecycle::submit(
                &self.pool,
                &self.inserts,
                &retry,
                &job,
                &job_id,
                run_by,
                held,
            )
            .await
            .map_err(insert_error(&request_id))?;
            new = retry;
        }
        if let (Inserted::New(_), Some(lane)) = (&inserted, lane) {
            lane.hand_over(job, new.into_claimed(submitted_at));
        }
        accepted(
            inserted,
            Submitted::Queued {
                request_id,
                waiter,
                stream,
            },
            input.caller.key_id(),
        )
    }

    /// When a budget refused an auto-routed request but some models' worst case fits what is
    /// left (and the key is not `strict_budget`): the request restricted to those models, and
    /// what is left. None: nothing cheaper would fit, or nothing would change.
    fn within_budget(
        &self,
        input: &CompleteInput,
        inserted: &Inserted,
        analysis: &Analysis,
        max_tokens: u32,
    ) -> Option<(CompleteInput, f64)> {
        let Inserted::Refused(Refusal::OverBudget {
            limit_usd,
            spent_usd,
            reserved_usd,
            ..
        }) = inserted
        else {
            return None;
        };
        let key = input.caller.key()?;
        let room = limit_usd - spent_usd - reserved_usd;
        if key.policy.strict_budget || input.pinned.is_some() || room <= 0.0 {
            return None;
        }
        let input_tokens = input_tokens(input, analysis);
        let catalog = self.engine.catalog();
        let eligible = |i: &usize| {
            self.engine.is_routable(*i)
                && input.allowed_models.as_ref().is_none_or(|a| a.contains(i))
                && input
                    .allowed_providers
                    .as_ref()
                    .is_none_or(|a| a.contains(&catalog.models()[*i].provider))
        };
        let all: Vec<usize> = (0..catalog.models().len()).filter(eligible).collect();
        let fits: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| {
                self.worst_case_usd(*i, input_tokens, max_tokens)
                    .is_some_and(|usd| usd <= room)
            })
            .collect();
        if fits.is_empty() || fits.len() == all.len() {
            return None;
        }
        Some((
            CompleteInput {
                allowed_models: Some(fits),
                ..input.clone()
            },
            room,
        ))
    }

    /// A new request row with what the caller's key limits ask of it.
    fn request_row(
        &self,
        input: &CompleteInput,
        analysis: &Analysis,
        (decision, route): (&Decision, &StoredRoute),
        max_tokens: u32,
        cache_key: &Option<String>,
    ) -> (String, NewRequest) {
        let shadow = self.shadow_plan(input, decision);
        let (request_id, mut new) =
            new_request(input, analysis, route, max_tokens, cache_key, shadow);
        if self.settings.store_prompts == StorePrompts::None {
            // No hash of the prompt either; the digest an idempotency key is checked against
            // only when there is one.
            new.prompt_hash = None;
            if input.idempotency_key.is_none() {
                new.fingerprint = None;
            }
        }
        new.admission = input
            .caller
            .key()
            .and_then(|key| self.admission(key, input, decision, analysis, max_tokens));
        (request_id, new)
    }

    /// Whether the request is sampled for shadow comparisons, and with which models.
    fn shadow_plan(
        &self,
        input: &CompleteInput,
        decision: &Decision,
    ) -> Option<shadow::ShadowPlan> {
        let settings = &self.settings.learning.shadow;
        if !settings.enabled() {
            return None;
        }
        let judge = crate::wiring::judge(&self.engine, &self.settings).map(|(p, _)| p);
        shadow::Sampling {
            settings,
            judge,
            seed: self.settings.routing.exploration_seed,
        }
        .plan(input, decision)
    }

    /// Catalog model `index`'s list price for `input_tokens` in and the full `max_tokens` out.
    fn worst_case_usd(&self, index: usize, input_tokens: u64, max_tokens: u32) -> Option<f64> {
        self.engine
            .model(index)
            .map(|m| m.cost_usd(input_tokens, u64::from(max_tokens)))
    }

    /// What the key's limits ask of this request (None: the key has none).
    ///
    /// The budget hold is the request's worst case: the most expensive candidate it may fall
    /// back to, at the input estimate (bytes / 3, above the usual ~4 characters a token) plus
    /// the full `max_tokens` of output at that model's list price. Rate limits count the request
    /// and, as OpenAI does, its input estimate plus `max_tokens`.
    fn admission(
        &self,
        key: &ApiKey,
        input: &CompleteInput,
        decision: &Decision,
        analysis: &Analysis,
        max_tokens: u32,
    ) -> Option<Admission> {
        let p = &key.policy;
        let mut budgets = Vec::new();
        let mut limit = |scope: &str, period, usd: Option<f64>| {
            if let Some(limit_usd) = usd {
                budgets.push(BudgetLimit {
                    scope: scope.to_owned(),
                    period,
                    limit_usd,
                });
            }
        };
        limit("", Period::Day, p.daily_budget_usd);
        limit("", Period::Month, p.monthly_budget_usd);
        if let Some(user) = &input.user_id {
            limit(user, Period::Day, p.user_daily_budget_usd);
        }
        if budgets.is_empty() && p.requests_per_minute.is_none() && p.tokens_per_minute.is_none() {
            return None;
        }
        let input_tokens = input_tokens(input, analysis);
        let reserve_usd = std::iter::once(&decision.chosen)
            .chain(&decision.alternatives)
            .filter_map(|c| self.worst_case_usd(c.index, input_tokens, max_tokens))
            .fold(0.0, f64::max);
        Some(Admission {
            key_id: key.key_id.clone(),
            requests_per_minute: p.requests_per_minute,
            tokens_per_minute: p.tokens_per_minute,
            tokens: i64::try_from(input_tokens + u64::from(max_tokens)).unwrap_or(i64::MAX),
            budgets,
            reserve_usd,
        })
    }

    /// Waits up to the configured timeout for `request_id` to finish; returns its record
    /// (finished or not). `waiter` is the registration made before enqueueing, if any.
    pub async fn wait(
        &self,
        request_id: &str,
        waiter: Option<Waiter>,
    ) -> Result<Option<RequestRecord>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.settings.completion.timeout;
        // A waiter registered before the job was queued cannot have missed the NOTIFY: wait
        // first. Otherwise (a replayed request) look at the row first.
        let mut look = waiter.is_none();
        let mut waiter = waiter.unwrap_or_else(|| self.notifier.register(request_id));
        loop {
            if look {
                let record = store::get(&self.pool, request_id, None).await?;
                let finished = record.as_ref().is_none_or(|r| r.status.is_terminal());
                let give_up = tokio::time::Instant::now() >= deadline || self.notifier.is_closing();
                if finished || give_up {
                    return Ok(record);
                }
            }
            look = true;
            // The NOTIFY normally wakes us; the periodic re-check covers a lost connection.
            let recheck = tokio::time::Instant::now() + Duration::from_secs(5);
            tokio::select! {
                delivered = waiter.notified() => {
                    // Finished in this process: the record came with the wake-up.
                    if let Some(record) = delivered {
                        return Ok(Some(Arc::unwrap_or_clone(record)));
                    }
                }
                () = tokio::time::sleep_until(recheck.min(deadline)) => {}
                () = self.notifier.closed() => {}
            }
        }
    }

    pub async fn get(&self, request_id: &str) -> Result<Option<RequestRecord>, sqlx::Error> {
        store::get(&self.pool, request_id, None).await
    }

    /// The request if `key_id` owns it (None: any request — the admin, or no keys at all).
    pub async fn get_owned(
        &self,
        request_id: &str,
        key_id: Option<&str>,
    ) -> Result<Option<RequestRecord>, sqlx::Error> {
        store::get(&self.pool, request_id, key_id).await
    }
}

/// What an insert did, as the caller sees it.
fn accepted(
    inserted: Inserted,
    new: Submitted,
    key_id: Option<&str>,
) -> Result<(Submitted, Option<RateState>), SubmitError> {
    if let Some(key_id) = key_id {
        let outcome = match &inserted {
            Inserted::Refused(Refusal::RateLimited { .. }) => "rate_limited",
            Inserted::Refused(Refusal::OverBudget { .. }) => "budget_exceeded",
            Inserted::New(_) | Inserted::Existing { .. } => "accepted",
        };
        metrics::counter!(names::KEY_REQUESTS, "key_id" => key_id.to_owned(), "outcome" => outcome)
            .increment(1);
    }
    match inserted {
        Inserted::New(rate) => Ok((new, rate)),
        Inserted::Existing {
            request_id,
            same_body: true,
        } => Ok((Submitted::Replayed(request_id), None)),
        Inserted::Existing { request_id, .. } => Err(SubmitError::IdempotencyMismatch(request_id)),
        Inserted::Refused(refusal) => Err(SubmitError::Refused(refusal)),
    }
}

/// An upper estimate of the input tokens: every byte of the prompt, system prompt, earlier
/// turns (with their tool calls) and tool definitions over 3 (tokenizers average about 4
/// characters a token on English), and at least the analyzer's estimate.
fn input_tokens(input: &CompleteInput, analysis: &Analysis) -> u64 {
    let turns = input.history.iter().chain(&input.tail);
    let turn_bytes: usize = turns
        .clone()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    let tool_bytes: usize = input
        .tools
        .iter()
        .map(|t| {
            t.name.len()
                + t.description.as_ref().map_or(0, String::len)
                + t.parameters.to_string().len()
        })
        .sum();
    let bytes =
        input.prompt.len() + input.system.as_ref().map_or(0, String::len) + turn_bytes + tool_bytes;
    ((bytes as u64).div_ceil(3) + 8 * (1 + turns.count() as u64)).max(analysis.features.est_tokens)
}

/// A new request row: its id, the prompt (and its hash), the stored parameters and route.
fn new_request(
    input: &CompleteInput,
    analysis: &Analysis,
    route: &StoredRoute,
    max_tokens: u32,
    cache_key: &Option<String>,
    shadow: Option<shadow::ShadowPlan>,
) -> (String, NewRequest) {
    let params = StoredParams {
        max_tokens,
        temperature: input.temperature,
        top_p: input.top_p,
        stop: input.stop.clone(),
        auto_route: input.pinned.is_none(),
        min_quality: input.min_quality,
        max_cost: input.max_cost_usd,
        is_async: input.is_async,
        cache_key: cache_key.clone(),
        history: input.history.clone(),
        tail: input.tail.clone(),
        tools: input.tools.clone(),
        tool_choice: input.tool_choice.clone(),
        response_format: input.response_format.clone(),
        stream: input.stream,
        shadow,
    };
    let request_id = new_request_id();
    let new = NewRequest {
        request_id: request_id.clone(),
        prompt: input.prompt.clone(),
        prompt_hash: Some(hex::encode(Sha256::digest(input.prompt.as_bytes()))),
        prompt_chars: i32::try_from(analysis.features.chars).unwrap_or(i32::MAX),
        system: input.system.clone(),
        params: serde_json::to_value(&params).unwrap_or(Value::Null),
        route: serde_json::to_value(route).unwrap_or(Value::Null),
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        idempotency_key: input.idempotency_key.clone(),
        api_key_id: input.caller.key_id().map(str::to_owned),
        fingerprint: Some(fingerprint(input, max_tokens)),
        admission: None,
        features: analysis
            .prompt_features
            .iter()
            .map(|f| i32::try_from(*f).unwrap_or_default())
            .collect(),
    };
    (request_id, new)
}

/// What the caller asked for, digested: an idempotency key may only be replayed with the same.
fn fingerprint(input: &CompleteInput, max_tokens: u32) -> String {
    let material = serde_json::json!([
        input.prompt,
        input.system,
        input.history,
        input.tail,
        input.tools,
        input.tool_choice,
        input.response_format,
        input.pinned,
        input.strategy.as_str(),
        input.min_quality,
        input.quality_share,
        input.max_cost_usd,
        max_tokens,
        input.temperature,
        input.top_p,
        input.stop,
        input.user_id,
    ]);
    hex::encode(Sha256::digest(material.to_string().as_bytes()))
}

/// Request ids are ULIDs: sortable by time.
pub fn new_request_id() -> String {
    ulid::Ulid::generate().to_string()
}

/// Exact-match key over what the caller asked: the prompt (trimmed), the system prompt, the
/// conversation and tools, the output cap, the sampling parameters, the API key (entries are per
/// key), and how the model is to be chosen — the pinned model, or the strategy and the
/// request's own quality limits — not the model the route chose: a repeat that exploration or a
/// newer policy would route elsewhere finds the answer too, and [`admissible`] decides whether
/// it may be served.
fn cache_key(input: &CompleteInput, max_tokens: u32) -> String {
    let material = serde_json::json!([
        input.prompt.trim(),
        input.system.as_deref().map(str::trim),
        // Per API key: one key never sees another's answers.
        input.caller.key_id(),
        input.pinned,
        input.strategy.as_str(),
        input.quality_share,
        input.min_quality,
        input.max_cost_usd,
        max_tokens,
        input.temperature.unwrap_or(0.0),
        input.history,
        input.tail,
        input.tools,
        input.tool_choice,
        input.response_format,
        input.top_p,
        input.stop,
    ]);
    hex::encode(Sha256::digest(material.to_string().as_bytes()))
}

/// Whether a cached answer may be served for a request the current policy routed as `route`:
/// its model is still one the request may be sent to (a candidate of the route: allowed,
/// routable, within `max_cost`, capable) and is expected to do at least as well as the route's
/// regular choice (the chosen model, or the one exploration displaced) — so a retrain that found
/// the cached model worse is not hidden behind its old answers, while a repeat explored elsewhere
/// is still answered from the cache.
fn admissible(route: &StoredRoute, hit: &store::CachedAnswer) -> bool {
    let regular = if route.explored {
        route.candidates.get(1).or(route.candidates.first())
    } else {
        route.candidates.first()
    };
    let Some(regular) = regular else {
        return false;
    };
    route.candidates.iter().any(|c| {
        c.provider.as_str() == hit.provider
            && c.model == hit.model
            && c.expected_quality >= regular.expected_quality - 1e-9
    })
}

/// The answer body shared by `POST /complete` and `GET /requests/{id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CompletionView {
    pub request_id: String,
    /// `queued`, `running`, `succeeded` or `failed`
    #[schema(value_type = String)]
    pub status: RequestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Why the answer ended: `stop`, `length` (cut at `max_tokens`), `tool_calls`,
    /// `content_filter`; with the response only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The tools the model called (`finish_reason` `tool_calls`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub tool_calls: Vec<crate::providers::ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub pattern: Option<String>,
    pub complexity_score: Option<f64>,
    pub tokens: Option<TokensView>,
    pub cost_usd: Option<f64>,
    pub baseline_cost_usd: Option<f64>,
    pub savings_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    pub cached: bool,
    pub routing: Option<RoutingView>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokensView {
    /// Every input token, those read from or written to the provider's prompt cache included.
    pub input: i64,
    pub output: i64,
    /// Of `input`, read from the provider's prompt cache (when the provider reported any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<i64>,
    /// Of `input`, written to the provider's prompt cache (when the provider reported any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoutingView {
    pub strategy: String,
    pub reason: Option<String>,
    pub confidence: Option<String>,
    pub explored: bool,
    pub fallbacks: i64,
    #[schema(value_type = Vec<Object>)]
    pub alternatives: Value,
}

impl CompletionView {
    /// The HTTP status a failed request's client gets (see [`FailureCode::http_status`]).
    pub fn failure_status(&self) -> axum::http::StatusCode {
        let code = self
            .error
            .as_ref()
            .and_then(|e| crate::types::FailureCode::parse(&e.code));
        axum::http::StatusCode::from_u16(code.map_or(502, |c| c.http_status()))
            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY)
    }

    /// What to tell a client whose request failed.
    pub fn failure_message(&self) -> String {
        self.error
            .as_ref()
            .map_or("every candidate model failed".to_owned(), |e| {
                e.message.clone()
            })
    }

    pub fn from_record(r: RequestRecord) -> Self {
        let route: Option<StoredRoute> = r
            .route
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let savings = match (r.baseline_cost_usd, r.cost_usd) {
            (Some(b), Some(c)) => Some(round_usd(b - c)),
            _ => None,
        };
        let routing = match (&r.strategy, &route) {
            (Some(strategy), _) => Some(RoutingView {
                strategy: strategy.clone(),
                reason: r.reason.clone(),
                confidence: r.confidence.clone(),
                explored: r.explored.unwrap_or(false),
                fallbacks: i64::from(r.fallback_count.unwrap_or(0)),
                alternatives: r.alternatives.clone().unwrap_or(Value::Null),
            }),
            (None, Some(route)) => Some(RoutingView {
                strategy: route.strategy.clone(),
                reason: Some(route.reason.clone()),
                confidence: route.candidates.first().map(|c| c.confidence.clone()),
                explored: route.explored,
                fallbacks: 0,
                alternatives: serde_json::to_value(route.candidates.get(1..).unwrap_or(&[]))
                    .unwrap_or(Value::Null),
            }),
            (None, None) => None,
        };
        Self {
            error: match (&r.error_code, &r.error) {
                (Some(code), Some(message)) if r.status == RequestStatus::Failed => {
                    Some(ErrorView {
                        code: code.clone(),
                        message: message.clone(),
                    })
                }
                _ => None,
            },
            pattern: r
                .prompt_pattern
                .clone()
                .or_else(|| route.as_ref().map(|x| x.pattern.clone())),
            complexity_score: r
                .complexity_score
                .map(|c| f64::from(c) * 100.0)
                .map(|c| c.round() / 100.0)
                .or_else(|| route.as_ref().map(|x| x.complexity)),
            tokens: match (r.input_tokens, r.output_tokens) {
                (Some(i), Some(o)) => Some(TokensView {
                    input: i64::from(i),
                    output: i64::from(o),
                    cached_input: r.cached_input_tokens.filter(|n| *n > 0).map(i64::from),
                    cache_write: r.cache_write_tokens.filter(|n| *n > 0).map(i64::from),
                }),
                _ => None,
            },
            cost_usd: r.cost_usd,
            baseline_cost_usd: r.baseline_cost_usd,
            savings_usd: savings,
            latency_ms: r.latency_ms,
            cached: r.cache_hit.unwrap_or(false),
            routing,
            request_id: r.request_id,
            status: r.status,
            finish_reason: r.finish_reason.or_else(|| {
                // Answers finished before finish reasons were recorded ended normally.
                (r.status == RequestStatus::Succeeded).then(|| "stop".to_owned())
            }),
            response: r.response,
            tool_calls: r
                .tool_calls
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            provider: r.provider,
            model: r.model,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(model: &str, q: f64) -> RouteCandidate {
        RouteCandidate {
            provider: ProviderId::Simulated,
            model: model.into(),
            expected_quality: q,
            confidence: "prior".into(),
            est_cost_usd: 0.001,
        }
    }

    fn hit(model: &str) -> store::CachedAnswer {
        store::CachedAnswer {
            provider: "simulated".into(),
            model: model.into(),
            response: "cached".into(),
            input_tokens: 1,
            output_tokens: 1,
        }
    }

    #[test]
    fn a_cached_answer_is_served_while_its_model_does_as_well_as_the_regular_choice() {
        let mut route = StoredRoute::unreadable();
        route.candidates = vec![candidate("lite", 0.80), candidate("premium", 0.95)];
        assert!(admissible(&route, &hit("lite")));
        assert!(
            admissible(&route, &hit("premium")),
            "better than the choice"
        );
        assert!(!admissible(&route, &hit("gone")), "no longer a candidate");
        // A newer policy prefers premium: lite's old answers no longer stand in for it.
        route.candidates = vec![candidate("premium", 0.95), candidate("lite", 0.80)];
        assert!(!admissible(&route, &hit("lite")));
        // Exploration chose lite; the regular choice it displaced (premium) is the reference.
        route.explored = true;
        route.candidates = vec![candidate("lite", 0.80), candidate("premium", 0.95)];
        assert!(admissible(&route, &hit("premium")));
        assert!(!admissible(&route, &hit("lite")));
    }
}
