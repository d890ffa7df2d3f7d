//! RoutingEngine: (analysis, strategy, constraints) → ranked candidates, each with expected
//! quality, expected cost and a human-readable reason. Pure computation over the catalog and
//! the in-memory learned weights: no I/O per decision.
//!
//! The rules, in order:
//! 1. **Candidates**: routable models (provider enabled), in `allowed_providers` if given, whose
//!    context window holds the prompt plus the expected answer.
//! 2. **Expected quality** of a model for the pattern: the learned estimate where its confidence
//!    is HIGH or MEDIUM (or it is demoted), else the catalog prior for the pattern, moved by
//!    how far the measured models of that pattern landed from their own priors (calibration:
//!    the sample-weighted mean of estimate − prior; a hard pattern lowers every guess). Priors
//!    describe medium complexity (r = 0.5); a learned estimate describes the mean complexity r of
//!    the requests it was rated on. The prompt's complexity c adjusts them:
//!    `q(c) = q − 0.8·(1 − q)·(c − r)`, so prompts easier than the reference raise and harder
//!    ones lower a model's expectation, weak models more than strong. Where the estimate is
//!    actionable and a per-prompt predictor exists for the model, the predictor's
//!    `σ(logit(shrunk estimate) + w·x)` replaces both (the shrunk estimate is the learned one
//!    pulled toward the prior by `PREDICTOR_SHRINKAGE` pseudo-ratings; see `crate::predictor`).
//! 3. **Expected cost**: estimated prompt tokens × input price + expected output tokens × output
//!    price. Expected output tokens: a per-pattern figure scaled by `0.5 + complexity`, capped by
//!    the request's `max_tokens` and the model's output limit (translation: ~1.1× the input).
//! 4. **Budget**: `max_cost` drops every candidate above it; none left is an error.
//! 5. **Choice**: where the retrain calibrated the strategy's quality-target knob λ (see
//!    [`crate::target`]) and the best candidate's estimate is per-prompt, the candidate with the
//!    highest `expected quality − λ · expected cost / scale` among those reaching `min_quality`
//!    (reason `quality_target`; a request's `quality_share` uses the rule below instead).
//!    Otherwise `quality` takes the highest expected quality (ties → cheaper). `cost` and
//!    `balanced` take the cheapest candidate whose expected quality reaches the target — where
//!    the best candidate's estimate is per-prompt, the strategy's share (`cost` 0.90, `balanced`
//!    0.97, or the request's `quality_share`) of its expected quality; otherwise
//!    `cost`: 0.60 + 0.25·c, `balanced`: 0.70 + 0.22·c — raised to `min_quality` when that is
//!    higher; when none reaches it, the highest expected quality, or the cheapest candidate
//!    within `near_best_margin` of it (unless the request set `min_quality`).
//! 6. **Fallbacks**: the other candidates meeting the target by cost, then the rest by quality.
//! 7. **Exploration**: with probability `exploration_rate` (not for `quality`, not for pinned
//!    models), a candidate whose quality is not known with confidence is chosen instead,
//!    reason `explore` (if its expected quality reaches an explicit `min_quality`): costing no
//!    more than the regular choice, one unmeasured for the pattern whose catalog prior (before
//!    calibration and complexity: the explored prompts must be a fair sample of the pattern,
//!    not only its easy ones) is within `exploration_margin` of the strategy's target at medium
//!    complexity, or one whose per-prompt estimate is within its uncertainty of the target (it
//!    might be good enough); costing more, one whose prior or per-prompt upper bound is above
//!    the regular choice's expected quality (it might be better). The regular choice becomes
//!    the first fallback; the decision records its propensity. `max_cost` holds, since
//!    over-budget candidates were already dropped.
//!
//! Where each rule lives: `candidates` (1, 4), `estimates` (2, 3), `selection` (5, 6),
//! `exploration` (7); [`RoutingEngine::route`] here runs them in that order.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use optimizer_types::ProviderId;

use crate::analyzer::Analysis;
use crate::catalog::{Catalog, ModelEntry};
use crate::settings::RoutingSettings;
use crate::weights::LearnedWeights;

mod candidates;
mod estimates;
mod exploration;
mod selection;

pub use optimizer_types::Strategy;

/// One routing question.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest<'a> {
    pub strategy: Strategy,
    /// Minimum expected quality (0..1).
    pub min_quality: Option<f64>,
    /// Maximum expected cost in USD.
    pub max_cost_usd: Option<f64>,
    pub allowed_providers: Option<&'a [ProviderId]>,
    /// Catalog model indices the caller may use (an API key's allowed models); None: any.
    pub allowed_models: Option<&'a [usize]>,
    /// A catalog model index chosen by the caller: honoured as is, no fallbacks.
    pub pinned: Option<usize>,
    /// The caller's cap on output tokens.
    pub max_output_tokens: Option<u32>,
    /// Where per-prompt estimates are learned: the share of the best candidate's expected
    /// quality the choice must keep (default: the strategy's, [`Strategy::share`]).
    pub quality_share: Option<f64>,
    /// Never explore: a preview (`/recommendation`, which shows the regular choice) or a caller
    /// that asked for the regular choice (`"explore": false`).
    pub preview: bool,
}

/// Where an expected quality came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualitySource {
    /// The catalog prior.
    Prior,
    /// A learned estimate of HIGH confidence.
    High,
    /// A learned estimate of MEDIUM confidence.
    Medium,
    /// A learned estimate proving the model poor for the pattern.
    Demoted,
}

impl QualitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prior => "prior",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Demoted => "demoted",
        }
    }
}

/// A model considered for the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Index into the catalog.
    #[serde(skip)]
    pub index: usize,
    pub provider: ProviderId,
    pub model: String,
    /// Expected quality in 0..1 at this complexity.
    pub expected_quality: f64,
    /// `prior`, or the confidence of the learned estimate used.
    pub confidence: QualitySource,
    /// Whether `expected_quality` is the per-prompt predictor's (else pattern-level).
    pub per_prompt: bool,
    /// Rated requests behind the model's per-prompt predictor (0: none).
    #[serde(skip)]
    pub evidence: u32,
    pub est_input_tokens: u64,
    pub est_output_tokens: u64,
    pub est_cost_usd: f64,
    /// Whether it reaches the strategy's quality target.
    pub meets_target: bool,
    /// For an unmeasured model: its catalog prior for the pattern, before calibration and
    /// before the complexity adjustment — the view exploration uses (a model is worth trying
    /// if it might be good enough for the pattern; judging it per prompt would sample only the
    /// easy prompts and overrate it). Equal to `expected_quality` otherwise.
    #[serde(skip)]
    pub optimistic_quality: f64,
}

/// The engine's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub chosen: Candidate,
    /// Ranked fallbacks, best first.
    pub alternatives: Vec<Candidate>,
    pub strategy: Strategy,
    /// The quality target applied (None for `quality` and pinned models).
    pub target_quality: Option<f64>,
    /// `cheapest_meeting_target`, `best_available`, `highest_quality`, `explore` or `pinned`.
    pub reason_code: &'static str,
    /// Human-readable explanation.
    pub reason: String,
    pub explored: bool,
    /// The probability with which this decision chose its model (1 without exploration): what
    /// off-policy estimates weigh logged outcomes by.
    pub propensity: f64,
    /// The routing-policy version the decision used.
    pub policy_version: i64,
}

/// Why no route exists. Messages are safe for API callers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("no routable model fits this request: {0}")]
    NoCandidate(String),
    #[error(
        "max_cost {max_cost_usd} USD is below the cheapest candidate's expected cost \
         ({cheapest_usd:.6} USD, {model})"
    )]
    OverBudget {
        max_cost_usd: f64,
        cheapest_usd: f64,
        model: String,
    },
    #[error("model {0} is not routable: its provider is not configured")]
    NotRoutable(String),
}

/// A bad engine configuration (start-up error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("BASELINE_MODEL: {0:?} is not in the model catalog")]
    UnknownBaseline(String),
    #[error("no model in the catalog belongs to an enabled provider ({0})")]
    NothingRoutable(String),
}

/// Holds the catalog, which models are routable, and the learned weights (swapped atomically).
pub struct RoutingEngine {
    catalog: Arc<Catalog>,
    routable: Vec<bool>,
    baseline: usize,
    weights: ArcSwap<LearnedWeights>,
    exploration_rate: f64,
    exploration_margin: f64,
    near_best_margin: f64,
}

impl fmt::Debug for RoutingEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingEngine")
            .field("catalog", &self.catalog.source())
            .field("baseline", &self.catalog.models()[self.baseline].key())
            .field("policy_version", &self.weights.load().version())
            .finish()
    }
}

impl RoutingEngine {
    pub fn new(
        catalog: Arc<Catalog>,
        enabled: &[ProviderId],
        settings: &RoutingSettings,
    ) -> Result<Self, EngineError> {
        let routable: Vec<bool> = catalog
            .models()
            .iter()
            .map(|m| enabled.contains(&m.provider))
            .collect();
        if !routable.contains(&true) {
            let names: Vec<&str> = enabled.iter().map(|p| p.as_str()).collect();
            return Err(EngineError::NothingRoutable(names.join(", ")));
        }
        let baseline = match &settings.baseline_model {
            Some(name) => catalog
                .find(None, name)
                .ok_or_else(|| EngineError::UnknownBaseline(name.clone()))?,
            // The best routable model; among equals the pricier (the premium choice).
            None => (0..routable.len())
                .filter(|i| routable[*i])
                .max_by(|a, b| {
                    let (ma, mb) = (&catalog.models()[*a], &catalog.models()[*b]);
                    ma.quality
                        .total_cmp(&mb.quality)
                        .then(ma.output_usd_per_mtok.total_cmp(&mb.output_usd_per_mtok))
                })
                .unwrap_or_default(),
        };
        Ok(Self {
            catalog,
            routable,
            baseline,
            weights: ArcSwap::from_pointee(LearnedWeights::default()),
            exploration_rate: settings.exploration_rate,
            exploration_margin: settings.exploration_margin,
            near_best_margin: settings.near_best_margin,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn model(&self, index: usize) -> Option<&ModelEntry> {
        self.catalog.models().get(index)
    }

    pub fn is_routable(&self, index: usize) -> bool {
        self.routable.get(index).copied().unwrap_or(false)
    }

    /// The always-premium baseline model's catalog index.
    pub fn baseline(&self) -> usize {
        self.baseline
    }

    /// Replaces the learned weights (atomically; decisions in flight keep the old set).
    pub fn set_weights(&self, weights: LearnedWeights) {
        self.weights.store(Arc::new(weights));
    }

    /// The same engine (catalog, routable models, baseline, settings) deciding with `weights`:
    /// how a candidate policy would have routed, for off-policy estimates.
    pub fn with_weights(&self, weights: LearnedWeights) -> Self {
        Self {
            catalog: Arc::clone(&self.catalog),
            routable: self.routable.clone(),
            baseline: self.baseline,
            weights: ArcSwap::from_pointee(weights),
            exploration_rate: self.exploration_rate,
            exploration_margin: self.exploration_margin,
            near_best_margin: self.near_best_margin,
        }
    }

    pub fn policy_version(&self) -> i64 {
        self.weights.load().version()
    }

    /// Decides. `rng` drives exploration only; a seeded one makes decisions reproducible.
    pub fn route(
        &self,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        rng: &mut fastrand::Rng,
    ) -> Result<Decision, RouteError> {
        let policy_version = self.policy_version();
        if let Some(index) = req.pinned {
            return self.pinned(index, analysis, req, policy_version);
        }
        let pool = self.candidates(analysis, req)?;
        let weights = self.weights.load();
        let knob = selection::knob(req, &pool, weights.calibration());
        let (target, mut ranked, near_best) = match knob {
            Some((knob, scale)) => {
                let ranked = selection::rank_by_knob(pool, knob.lambda, scale, req.min_quality);
                // Exploration looks around the choice (not under `quality`, as before).
                let around =
                    (req.strategy != Strategy::Quality).then(|| ranked[0].expected_quality);
                (around, ranked, false)
            }
            None => {
                let target = selection::target(req, analysis.complexity, &pool);
                let mut ranked = selection::rank(pool, target);
                let near_best = self.prefer_near_best(&mut ranked, target, req);
                (target, ranked, near_best)
            }
        };
        let (mut reason_code, mut reason) = match knob {
            Some((knob, _)) => selection::explain_knob(&ranked[0], knob, req.strategy),
            None => self.explain(&ranked[0], target, near_best, analysis),
        };
        let mut explored = false;
        let mut propensity = 1.0;
        if let Some(t) = target {
            let exploration = self.explore(&mut ranked, t, analysis, req, rng);
            propensity = exploration.propensity;
            if let Some(why) = exploration.reason {
                (reason_code, reason, explored) = ("explore", why, true);
            }
        }
        let chosen = ranked.remove(0);
        Ok(Decision {
            chosen,
            alternatives: ranked,
            strategy: req.strategy,
            target_quality: target,
            reason_code,
            reason,
            explored,
            propensity,
            policy_version,
        })
    }

    /// A model chosen by the caller: honoured as is, no fallbacks.
    fn pinned(
        &self,
        index: usize,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        policy_version: i64,
    ) -> Result<Decision, RouteError> {
        let model = self
            .model(index)
            .ok_or_else(|| RouteError::NotRoutable(format!("#{index}")))?;
        if !self.is_routable(index) {
            return Err(RouteError::NotRoutable(model.key()));
        }
        let (weights, scores) = self.learned(analysis);
        let mut chosen = self.candidate(index, analysis, req, &weights, &scores);
        chosen.meets_target = true;
        Ok(Decision {
            reason: format!("{} pinned by the request", model.key()),
            chosen,
            alternatives: Vec::new(),
            strategy: req.strategy,
            target_quality: None,
            reason_code: "pinned",
            explored: false,
            propensity: 1.0,
            policy_version,
        })
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
