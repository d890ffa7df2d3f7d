//! Rule 7: exploration — now and then a model whose quality for this prompt is not yet known
//! with confidence answers instead: a cheaper one, so ratings can show where it is good enough,
//! or a pricier one, so ratings can show where it is better than the regular choice. Each
//! decision records the probability with which it chose its model (its propensity).

use super::{Candidate, QualitySource, RouteRequest, RoutingEngine};
use crate::analyzer::Analysis;

/// What exploration did to one decision.
pub(super) struct Exploration {
    /// Why it explored (None: the regular choice stands).
    pub reason: Option<String>,
    /// The probability that the model now first in the ranking was chosen.
    pub propensity: f64,
}

/// The scale of a per-prompt estimate's uncertainty: its margin is
/// `exploration_margin / √(1 + n / UNCERTAINTY_SAMPLES)` after n rated requests. A model's
/// ratings are spread over every kind of prompt, so its estimate for one kind stays uncertain
/// for hundreds of them (measured in docs/eval.md: 20 made the margin vanish after a few
/// hundred ratings, and learning stopped exploring where it had not yet looked).
const UNCERTAINTY_SAMPLES: f64 = 400.0;

impl RoutingEngine {
    /// With probability `exploration_rate` (never for a preview), moves an explorable candidate
    /// to the front of `ranked` and says why. Explorable: reaching an explicit `min_quality`,
    /// with an optimistic quality — for a model unmeasured for the pattern its catalog prior, for
    /// a per-prompt estimate the estimate plus the predictor's uncertainty
    /// `exploration_margin / √(1 + n/400)` after n rated requests (an upper confidence bound: the
    /// less evidence, the wider) — that makes it worth a try:
    /// - costing no more than the regular choice: it might be good enough — the prior within
    ///   `exploration_margin` of the strategy's target at medium complexity (judged per
    ///   pattern, so the explored prompts are a fair sample of it), the per-prompt bound
    ///   reaching the target;
    /// - costing more: it might be better than the regular choice — the bound above the regular
    ///   choice's expected quality (without it, a pricier model the priors never chose is never
    ///   measured, and the router cannot learn which prompts need it).
    ///
    /// A model measured for the pattern without a per-prompt estimate is not explored. The
    /// regular choice becomes the first fallback.
    pub(super) fn explore(
        &self,
        ranked: &mut Vec<Candidate>,
        target: f64,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        rng: &mut fastrand::Rng,
    ) -> Exploration {
        let regular = Exploration {
            reason: None,
            propensity: 1.0,
        };
        if req.preview || self.exploration_rate <= 0.0 {
            return regular;
        }
        let (chosen_cost, chosen_quality) = (ranked[0].est_cost_usd, ranked[0].expected_quality);
        let prior_floor = crate::target::prior_target(req.strategy, 0.5).unwrap_or(target)
            - self.exploration_margin;
        let min_quality = req.min_quality.unwrap_or(0.0);
        let explorable: Vec<usize> = (1..ranked.len())
            .filter(|i| {
                let c = &ranked[*i];
                // What the candidate might be worth, and whether that is worth a try if it costs
                // no more (good enough?) or if it costs more (better than the regular choice?).
                let (optimistic, cheaper_floor) = if c.per_prompt {
                    let n = f64::from(c.evidence);
                    let margin = self.exploration_margin / (1.0 + n / UNCERTAINTY_SAMPLES).sqrt();
                    (c.expected_quality + margin, target)
                } else if c.confidence == QualitySource::Prior {
                    (c.optimistic_quality, prior_floor)
                } else {
                    return false;
                };
                let promising = if c.est_cost_usd <= chosen_cost {
                    optimistic >= cheaper_floor - 1e-9
                } else {
                    optimistic > chosen_quality + 1e-9
                };
                promising && c.expected_quality >= min_quality
            })
            .collect();
        if explorable.is_empty() {
            return regular;
        }
        if rng.f64() >= self.exploration_rate {
            return Exploration {
                reason: None,
                propensity: 1.0 - self.exploration_rate,
            };
        }
        let pick = explorable[rng.usize(..explorable.len())];
        let probe = ranked.remove(pick);
        let why = if probe.per_prompt {
            format!(
                "its predicted quality for this prompt ({:.2}) is within its uncertainty of the \
                 target",
                probe.expected_quality
            )
        } else {
            format!(
                "its quality for {} prompts is not yet known with confidence (prior {:.2})",
                analysis.pattern, probe.expected_quality
            )
        };
        let reason = format!(
            "explore: {}/{} {} and {why}; the regular choice is the first fallback",
            probe.provider,
            probe.model,
            if probe.est_cost_usd <= chosen_cost {
                "costs no more"
            } else {
                "might answer better"
            }
        );
        ranked.insert(0, probe);
        Exploration {
            reason: Some(reason),
            propensity: self.exploration_rate / explorable.len() as f64,
        }
    }
}
