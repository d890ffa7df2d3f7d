//! Rule 7: exploration — now and then, a model whose quality for the pattern is not yet known
//! with confidence answers instead, so ratings can show that a cheaper model is good enough.

use super::{Candidate, QualitySource, RouteRequest, RoutingEngine};
use crate::analyzer::Analysis;

impl RoutingEngine {
    /// With probability `exploration_rate` (never for a preview), moves an explorable candidate
    /// to the front of `ranked` — costing no more than the regular choice, unmeasured, with a
    /// prior within `exploration_margin` of the strategy's target at medium complexity, and
    /// reaching an explicit `min_quality` — and returns the reason. The regular choice becomes
    /// the first fallback.
    pub(super) fn explore(
        &self,
        ranked: &mut Vec<Candidate>,
        target: f64,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        rng: &mut fastrand::Rng,
    ) -> Option<String> {
        if req.preview || self.exploration_rate <= 0.0 || rng.f64() >= self.exploration_rate {
            return None;
        }
        let chosen_cost = ranked[0].est_cost_usd;
        // Whether a model is worth exploring is decided per pattern (at medium complexity),
        // not per prompt, so the explored prompts are a fair sample of the pattern's traffic.
        let floor = req.strategy.target(0.5).unwrap_or(target) - self.exploration_margin;
        let min_quality = req.min_quality.unwrap_or(0.0);
        let explorable: Vec<usize> = (1..ranked.len())
            .filter(|i| {
                let c = &ranked[*i];
                c.confidence == QualitySource::Prior
                    && c.est_cost_usd <= chosen_cost
                    && c.optimistic_quality >= floor - 1e-9
                    && c.expected_quality >= min_quality
            })
            .collect();
        if explorable.is_empty() {
            return None;
        }
        let pick = explorable[rng.usize(..explorable.len())];
        let probe = ranked.remove(pick);
        let reason = format!(
            "explore: {}/{} costs no more and its quality for {} prompts is not yet known with \
             confidence (prior {:.2}); the regular choice is the first fallback",
            probe.provider, probe.model, analysis.pattern, probe.expected_quality
        );
        ranked.insert(0, probe);
        Some(reason)
    }
}
