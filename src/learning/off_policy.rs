//! The off-policy estimate a retrain reports before it applies: how the current and the candidate
//! policy would have done on the logged, rated, auto-routed traffic, from the outcomes the logged
//! decisions observed.
//!
//! Each logged decision chose its model with a known probability (its propensity: 1 − the
//! exploration rate for the regular choice, the rate over the explorable models for an explored
//! one). A policy is replayed on the logged request (same pattern, complexity, stored prompt
//! features, strategy; no exploration); where it picks the model that was logged, the observed
//! rating counts with weight 1/propensity. The self-normalised estimate (SNIPS) of its quality is
//! `Σ w·r / Σ w` over those matches, and likewise of its cost. Matches are few where the
//! candidate differs from what was logged (only explored requests can match there), so each side
//! reports how many logged decisions it matched and their effective sample size; a verdict needs
//! `DRIFT_MIN_RATINGS` matches on each side.
//!
//! Requests routed with a pinned model, or logged before propensities were recorded, are left
//! out: they were not the policy's choice. Caller restrictions (allowed models, `min_quality`,
//! `max_cost`) are not replayed.

use serde::Serialize;

use crate::routing::analyzer::{Features, Script};
use crate::routing::{Analysis, Pattern, RouteRequest, RoutingEngine, Strategy, Tier};
use crate::store::predictor::RatedRequest;

/// One policy's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PolicyEstimate {
    /// Estimated mean quality in 0..1 (the ratings' scale, [`super::per_prompt::label`]); None
    /// when it matched nothing.
    pub quality: Option<f64>,
    /// Estimated mean cost per request, USD.
    pub cost_usd: Option<f64>,
    /// Logged decisions it agrees with.
    pub matched: usize,
    /// Kish's effective sample size of the matches' weights.
    pub effective_samples: f64,
}

/// Both policies on the same logged traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OffPolicyEstimate {
    /// Logged auto-routed rated requests with a propensity.
    pub logged: usize,
    pub current: PolicyEstimate,
    pub candidate: PolicyEstimate,
    /// `(current − candidate) / current`, when both have at least the minimum matches.
    pub relative_drop: Option<f64>,
}

/// One logged decision, as the estimator reads it.
struct Logged<'a> {
    analysis: Analysis,
    strategy: Strategy,
    provider: &'a str,
    model: &'a str,
    propensity: f64,
    quality: f64,
    cost_usd: f64,
}

/// The analysis the engine saw for a rated request, rebuilt from what was stored: pattern,
/// complexity, prompt features and the input estimate (None: not stored).
pub fn analysis_of(r: &RatedRequest) -> Option<Analysis> {
    let pattern = Pattern::parse(&r.pattern)?;
    let complexity = r.complexity?.clamp(0.0, 1.0);
    let prompt_features: Vec<u32> = r
        .features
        .as_ref()?
        .iter()
        .filter_map(|f| u32::try_from(*f).ok())
        .collect();
    let est_tokens = u64::try_from(r.input_tokens.unwrap_or(0)).unwrap_or(0);
    Some(Analysis {
        pattern,
        complexity,
        tier: Tier::of(complexity),
        features: Features {
            chars: usize::try_from(est_tokens * 4).unwrap_or(usize::MAX),
            est_tokens,
            code_fences: 0,
            code_cues: 0,
            math_cues: 0,
            multi_step_cues: 0,
            constraint_cues: 0,
            questions: 0,
            script: Script::Latin,
        },
        scores: Default::default(),
        prompt_features,
    })
}

fn logged(r: &RatedRequest) -> Option<Logged<'_>> {
    if r.auto_route == Some(false) {
        return None;
    }
    let propensity = r.propensity.filter(|p| *p > 0.0 && *p <= 1.0)?;
    Some(Logged {
        analysis: analysis_of(r)?,
        strategy: r
            .strategy
            .as_deref()
            .and_then(Strategy::parse)
            .unwrap_or_default(),
        provider: &r.provider,
        model: &r.model,
        propensity,
        quality: super::per_prompt::label(r.avg_quality, r.correctness),
        cost_usd: r.cost_usd.unwrap_or(0.0),
    })
}

/// One policy's SNIPS sums over the logged decisions.
struct Snips {
    rng: fastrand::Rng,
    w_sum: f64,
    w2_sum: f64,
    q_sum: f64,
    c_sum: f64,
    matched: usize,
}

impl Snips {
    fn new() -> Self {
        Self {
            rng: fastrand::Rng::with_seed(0),
            w_sum: 0.0,
            w2_sum: 0.0,
            q_sum: 0.0,
            c_sum: 0.0,
            matched: 0,
        }
    }

    /// Replays `l` through `engine`: where it picks the logged model, the rating counts with
    /// weight 1/propensity.
    fn add(&mut self, engine: &RoutingEngine, l: &Logged<'_>) {
        let request = RouteRequest {
            strategy: l.strategy,
            preview: true,
            ..Default::default()
        };
        let Ok(decision) = engine.route(&l.analysis, &request, &mut self.rng) else {
            return;
        };
        if decision.chosen.provider.as_str() != l.provider || decision.chosen.model != l.model {
            return;
        }
        let w = 1.0 / l.propensity;
        self.w_sum += w;
        self.w2_sum += w * w;
        self.q_sum += w * l.quality;
        self.c_sum += w * l.cost_usd;
        self.matched += 1;
    }

    fn estimate(&self) -> PolicyEstimate {
        let some = |x: f64| (self.w_sum > 0.0).then(|| x / self.w_sum);
        PolicyEstimate {
            quality: some(self.q_sum),
            cost_usd: some(self.c_sum),
            matched: self.matched,
            effective_samples: if self.w2_sum > 0.0 {
                self.w_sum * self.w_sum / self.w2_sum
            } else {
                0.0
            },
        }
    }
}

/// The current policy (`current`) against the candidate (`candidate`) on the rated requests;
/// `min_matches` each before a relative drop is stated.
pub fn compare(
    current: &RoutingEngine,
    candidate: &RoutingEngine,
    rated: &[RatedRequest],
    min_matches: usize,
) -> OffPolicyEstimate {
    // One logged decision at a time (its features converted, replayed through both policies,
    // dropped): memory does not grow with the rated requests.
    let (mut now, mut next, mut count) = (Snips::new(), Snips::new(), 0);
    for l in rated.iter().filter_map(logged) {
        now.add(current, &l);
        next.add(candidate, &l);
        count += 1;
    }
    let (now, next) = (now.estimate(), next.estimate());
    let relative_drop = match (now.quality, next.quality) {
        (Some(a), Some(b))
            if a > 0.0 && now.matched >= min_matches && next.matched >= min_matches =>
        {
            Some((a - b) / a)
        }
        _ => None,
    };
    OffPolicyEstimate {
        logged: count,
        current: now,
        candidate: next,
        relative_drop,
    }
}
