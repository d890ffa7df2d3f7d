//! Rule 7: exploration — now and then a cheaper model whose quality for this prompt is not yet
//! known with confidence answers instead, so ratings can show where it is good enough. Each
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
/// `exploration_margin / √(1 + n / UNCERTAINTY_SAMPLES)` after n rated requests.
const UNCERTAINTY_SAMPLES: f64 = 20.0;

impl RoutingEngine {
    /// With probability `exploration_rate` (never for a preview), moves an explorable candidate
    /// to the front of `ranked` and says why. Explorable: costing no more than the regular
    /// choice, reaching an explicit `min_quality`, and either
    /// - unmeasured for the pattern, with a prior within `exploration_margin` of the strategy's
    ///   target at medium complexity (judged per pattern, so the explored prompts are a fair
    ///   sample of it), or
    /// - predicted per prompt, below the target but within the predictor's uncertainty of it:
    ///   `exploration_margin / √(1 + n/20)` for a predictor fitted on n rated requests (an upper
    ///   confidence bound: the less evidence, the wider).
    ///
    /// The regular choice becomes the first fallback.
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
        let chosen_cost = ranked[0].est_cost_usd;
        let prior_floor = req.strategy.target(0.5).unwrap_or(target) - self.exploration_margin;
        let min_quality = req.min_quality.unwrap_or(0.0);
        let explorable: Vec<usize> = (1..ranked.len())
            .filter(|i| {
                let c = &ranked[*i];
                let promising = if c.per_prompt {
                    let n = f64::from(c.evidence);
                    let margin = self.exploration_margin / (1.0 + n / UNCERTAINTY_SAMPLES).sqrt();
                    c.expected_quality + margin >= target - 1e-9
                } else {
                    c.confidence == QualitySource::Prior
                        && c.optimistic_quality >= prior_floor - 1e-9
                };
                promising && c.est_cost_usd <= chosen_cost && c.expected_quality >= min_quality
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
            "explore: {}/{} costs no more and {why}; the regular choice is the first fallback",
            probe.provider, probe.model
        );
        ranked.insert(0, probe);
        Exploration {
            reason: Some(reason),
            propensity: self.exploration_rate / explorable.len() as f64,
        }
    }
}
