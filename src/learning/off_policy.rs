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

fn logged(r: &RatedRequest) -> Option<Logged<'_>> {
    if r.auto_route == Some(false) {
        return None;
    }
    let propensity = r.propensity.filter(|p| *p > 0.0 && *p <= 1.0)?;
    let pattern = Pattern::parse(&r.pattern)?;
    let complexity = r.complexity?.clamp(0.0, 1.0);
    let prompt_features: Vec<u32> = r
        .features
        .as_ref()?
        .iter()
        .filter_map(|f| u32::try_from(*f).ok())
        .collect();
    let est_tokens = u64::try_from(r.input_tokens.unwrap_or(0)).unwrap_or(0);
    Some(Logged {
        analysis: Analysis {
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
        },
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

/// SNIPS estimate of the policy `engine` decides with, over `logged`.
fn estimate(engine: &RoutingEngine, logged: &[Logged<'_>]) -> PolicyEstimate {
    let mut rng = fastrand::Rng::with_seed(0);
    let (mut w_sum, mut w2_sum, mut q_sum, mut c_sum, mut matched) = (0.0, 0.0, 0.0, 0.0, 0);
    for l in logged {
        let request = RouteRequest {
            strategy: l.strategy,
            preview: true,
            ..Default::default()
        };
        let Ok(decision) = engine.route(&l.analysis, &request, &mut rng) else {
            continue;
        };
        if decision.chosen.provider.as_str() != l.provider || decision.chosen.model != l.model {
            continue;
        }
        let w = 1.0 / l.propensity;
        w_sum += w;
        w2_sum += w * w;
        q_sum += w * l.quality;
        c_sum += w * l.cost_usd;
        matched += 1;
    }
    let some = |x: f64| (w_sum > 0.0).then(|| x / w_sum);
    PolicyEstimate {
        quality: some(q_sum),
        cost_usd: some(c_sum),
        matched,
        effective_samples: if w2_sum > 0.0 {
            w_sum * w_sum / w2_sum
        } else {
            0.0
        },
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
    let logged: Vec<Logged<'_>> = rated.iter().filter_map(logged).collect();
    let now = estimate(current, &logged);
    let next = estimate(candidate, &logged);
    let relative_drop = match (now.quality, next.quality) {
        (Some(a), Some(b))
            if a > 0.0 && now.matched >= min_matches && next.matched >= min_matches =>
        {
            Some((a - b) / a)
        }
        _ => None,
    };
    OffPolicyEstimate {
        logged: logged.len(),
        current: now,
        candidate: next,
        relative_drop,
    }
}
