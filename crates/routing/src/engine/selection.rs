//! Rules 5 and 6: the quality target, the ranking (the choice first, then the fallbacks), the
//! near-best preference when nothing reaches the target, and the reason given for the choice.

use super::{Candidate, RouteRequest, RoutingEngine, round3};
use crate::analyzer::Analysis;
use crate::target::{Calibration, Knob};
use optimizer_types::Strategy;

/// The calibrated knob this request routes with, and its cost unit: the strategy's, when the
/// retrain calibrated one, the request asked for no `quality_share` of its own, and the best
/// candidate's estimate is per-prompt (the knob was calibrated on per-prompt estimates).
pub(super) fn knob<'a>(
    req: &RouteRequest<'_>,
    pool: &[Candidate],
    calibration: Option<&'a Calibration>,
) -> Option<(&'a Knob, f64)> {
    if req.quality_share.is_some() {
        return None;
    }
    let best = pool
        .iter()
        .max_by(|a, b| a.expected_quality.total_cmp(&b.expected_quality))?;
    if !best.per_prompt {
        return None;
    }
    let calibration = calibration?;
    calibration
        .knob(req.strategy)
        .map(|k| (k, calibration.cost_scale))
}

/// Ranks by `q − λ·cost/scale`, best first; candidates below `min_quality` (a hard limit) after
/// the rest, by quality. `meets_target` marks those the knob may choose.
pub(super) fn rank_by_knob(
    mut pool: Vec<Candidate>,
    lambda: f64,
    scale: f64,
    min_quality: Option<f64>,
) -> Vec<Candidate> {
    let scale = if scale > 0.0 { scale } else { 1.0 };
    for cand in &mut pool {
        cand.meets_target = min_quality.is_none_or(|m| cand.expected_quality >= m);
    }
    let score = |c: &Candidate| c.expected_quality - lambda * c.est_cost_usd / scale;
    pool.sort_by(|a, b| {
        b.meets_target.cmp(&a.meets_target).then_with(|| {
            if a.meets_target {
                score(b)
                    .total_cmp(&score(a))
                    .then(a.est_cost_usd.total_cmp(&b.est_cost_usd))
            } else {
                b.expected_quality.total_cmp(&a.expected_quality)
            }
        })
    });
    pool
}

/// The reason for a choice by the calibrated knob.
pub(super) fn explain_knob(
    first: &Candidate,
    knob: &Knob,
    strategy: Strategy,
) -> (&'static str, String) {
    (
        "quality_target",
        format!(
            "`{strategy}` keeps {:.0}% of the best single model's quality over the traffic \
             (estimated {:.0}%, at least {:.0}%, on the logged rated requests): the best \
             trade of expected quality ({:.2}, {}) for expected cost at λ = {:.3}",
            100.0 * knob.target,
            100.0 * knob.estimate / knob.best.max(1e-9),
            100.0 * knob.lower / knob.best.max(1e-9),
            first.expected_quality,
            first.confidence.as_str(),
            knob.lambda
        ),
    )
}

/// The quality target, raised to `min_quality` (None: `quality` without a share).
///
/// Where the best candidate's estimate is per-prompt (learned), the target is the strategy's
/// share of its expected quality for this prompt (or the request's `quality_share`, which
/// always applies); otherwise — the best is an unmeasured model's prior — the strategy's
/// absolute target at complexity `c`.
pub(super) fn target(req: &RouteRequest<'_>, c: f64, pool: &[Candidate]) -> Option<f64> {
    let best = pool
        .iter()
        .max_by(|a, b| a.expected_quality.total_cmp(&b.expected_quality));
    // Relative only when the best candidate's estimate is learned for this prompt: a prior is a
    // guess in other units, and a share of a guess is no promise.
    let learned = best.is_some_and(|b| b.per_prompt);
    let best_quality = best.map_or(0.0, |b| b.expected_quality);
    let share = match req.quality_share {
        Some(share) => Some(share),
        None if learned => Some(crate::target::share(req.strategy)).filter(|s| *s < 1.0),
        None => None,
    };
    let base = match share {
        Some(share) => Some(share * best_quality),
        None if learned => None,
        None => crate::target::prior_target(req.strategy, c),
    };
    base.map(|t| round3(t.max(req.min_quality.unwrap_or(0.0)).min(1.0)))
}

/// Marks who meets `target` and ranks: meeting the target by cost (then quality); the rest by
/// quality (then cost). Under `quality` (no target) everything "meets" and ranks by quality.
pub(super) fn rank(mut pool: Vec<Candidate>, target: Option<f64>) -> Vec<Candidate> {
    for cand in &mut pool {
        cand.meets_target = target.is_none_or(|t| cand.expected_quality >= t);
    }
    pool.sort_by(|a, b| match target {
        None => b
            .expected_quality
            .total_cmp(&a.expected_quality)
            .then(a.est_cost_usd.total_cmp(&b.est_cost_usd)),
        Some(_) => b.meets_target.cmp(&a.meets_target).then_with(|| {
            if a.meets_target {
                a.est_cost_usd
                    .total_cmp(&b.est_cost_usd)
                    .then(b.expected_quality.total_cmp(&a.expected_quality))
            } else {
                b.expected_quality
                    .total_cmp(&a.expected_quality)
                    .then(a.est_cost_usd.total_cmp(&b.est_cost_usd))
            }
        }),
    });
    pool
}

impl RoutingEngine {
    /// Nothing reaches the target: paying much more for a hair of expected quality is not
    /// balanced — the cheapest candidate within `near_best_margin` of the best one moves to the
    /// front (not when the request set `min_quality`). True when it did.
    pub(super) fn prefer_near_best(
        &self,
        ranked: &mut Vec<Candidate>,
        target: Option<f64>,
        req: &RouteRequest<'_>,
    ) -> bool {
        if target.is_none() || ranked[0].meets_target || req.min_quality.is_some() {
            return false;
        }
        let floor = ranked[0].expected_quality - self.near_best_margin;
        let cheaper = (1..ranked.len())
            .filter(|i| {
                ranked[*i].expected_quality >= floor - 1e-9
                    && ranked[*i].est_cost_usd < ranked[0].est_cost_usd
            })
            .min_by(|a, b| ranked[*a].est_cost_usd.total_cmp(&ranked[*b].est_cost_usd));
        let Some(i) = cheaper else {
            return false;
        };
        let pick = ranked.remove(i);
        ranked.insert(0, pick);
        true
    }

    /// The reason code and text for choosing `first`.
    pub(super) fn explain(
        &self,
        first: &Candidate,
        target: Option<f64>,
        near_best: bool,
        analysis: &Analysis,
    ) -> (&'static str, String) {
        let tier = analysis.tier.as_str();
        let (pattern, q, source) = (
            analysis.pattern,
            first.expected_quality,
            first.confidence.as_str(),
        );
        match target {
            None => (
                "highest_quality",
                format!(
                    "highest expected quality ({q:.2}, {source}) for {pattern} prompts of {tier} \
                     complexity"
                ),
            ),
            Some(t) if first.meets_target => (
                "cheapest_meeting_target",
                format!(
                    "cheapest model expected to reach quality {t:.2} for {pattern} prompts of \
                     {tier} complexity ({q:.2}, {source})"
                ),
            ),
            Some(t) if near_best => (
                "near_best_available",
                format!(
                    "no candidate is expected to reach quality {t:.2} for {pattern} prompts of \
                     {tier} complexity; taking the cheapest within {:.2} of the best available \
                     ({q:.2}, {source})",
                    self.near_best_margin
                ),
            ),
            Some(t) => (
                "best_available",
                format!(
                    "no candidate is expected to reach quality {t:.2} for {pattern} prompts of \
                     {tier} complexity; taking the best available ({q:.2}, {source})"
                ),
            ),
        }
    }
}
