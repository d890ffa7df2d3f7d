//! Rules 1 and 4: which models may answer — routable, in `allowed_providers` (and the key's
//! `allowed_models`), with a context
//! window holding the prompt and the expected answer, and within `max_cost`.

use super::{Candidate, RouteError, RouteRequest, RoutingEngine};
use crate::analyzer::Analysis;

impl RoutingEngine {
    /// Every model that may answer the request, with its estimates; an error says why none.
    pub(super) fn candidates(
        &self,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
    ) -> Result<Vec<Candidate>, RouteError> {
        let models = self.catalog.models();
        let (weights, scores) = self.learned(analysis);
        let mut pool: Vec<Candidate> = (0..self.routable.len())
            .filter(|i| self.routable[*i])
            .filter(|i| {
                let p = models[*i].provider;
                req.allowed_providers.is_none_or(|a| a.contains(&p))
                    && req.allowed_models.is_none_or(|a| a.contains(i))
            })
            .map(|i| self.candidate(i, analysis, req, &weights, &scores))
            .filter(|c| {
                let window = u64::from(models[c.index].context_window);
                c.est_input_tokens + c.est_output_tokens <= window
            })
            .collect();
        if pool.is_empty() {
            return Err(RouteError::NoCandidate(match req.allowed_providers {
                _ if req.allowed_models.is_some() => format!(
                    "none of the models this API key may use is configured with a context \
                     window holding ~{} tokens",
                    analysis.features.est_tokens
                ),
                Some(a) => format!(
                    "none of the allowed providers ({}) is configured with a model whose context \
                     window holds ~{} tokens",
                    a.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                    analysis.features.est_tokens
                ),
                None => format!(
                    "no configured model's context window holds ~{} tokens",
                    analysis.features.est_tokens
                ),
            }));
        }
        if let Some(max) = req.max_cost_usd {
            let cheapest = pool
                .iter()
                .min_by(|a, b| a.est_cost_usd.total_cmp(&b.est_cost_usd))
                .map(|c| (c.est_cost_usd, format!("{}/{}", c.provider, c.model)));
            pool.retain(|c| c.est_cost_usd <= max);
            if pool.is_empty() {
                let (cheapest_usd, model) = cheapest.unwrap_or_default();
                return Err(RouteError::OverBudget {
                    max_cost_usd: max,
                    cheapest_usd,
                    model,
                });
            }
        }
        Ok(pool)
    }
}
