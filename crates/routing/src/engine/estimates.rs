//! Rules 2 and 3: a candidate's expected quality (learned estimate or calibrated prior, adjusted
//! for the prompt's complexity) and its expected tokens and cost.

use optimizer_types::{Confidence, Pattern};

use super::{Candidate, QualitySource, RouteRequest, RoutingEngine, round3};
use crate::analyzer::Analysis;
use crate::predictor::Scores;
use crate::weights::{LearnedWeights, at_complexity};

/// Expected output tokens per pattern at medium complexity.
fn base_output_tokens(pattern: Pattern, input_tokens: u64) -> f64 {
    match pattern {
        Pattern::Code => 500.0,
        Pattern::Math => 350.0,
        Pattern::Reasoning => 450.0,
        Pattern::Creative => 500.0,
        Pattern::Factual => 120.0,
        Pattern::Summarization => 250.0,
        Pattern::Translation => (input_tokens as f64 * 1.1).max(60.0),
        Pattern::Extraction => 200.0,
        Pattern::Chat => 80.0,
        Pattern::Other => 250.0,
    }
}

impl RoutingEngine {
    /// Expected (input tokens, output tokens, USD) of `analysis` on catalog model `index`.
    pub fn estimate(
        &self,
        index: usize,
        analysis: &Analysis,
        max_output_tokens: Option<u32>,
    ) -> (u64, u64, f64) {
        let Some(model) = self.model(index) else {
            return (0, 0, 0.0);
        };
        let input = analysis.features.est_tokens;
        let mut output =
            (base_output_tokens(analysis.pattern, input) * (0.5 + analysis.complexity)).ceil();
        if let Some(cap) = max_output_tokens {
            output = output.min(f64::from(cap));
        }
        if let Some(cap) = model.max_output_tokens {
            output = output.min(f64::from(cap));
        }
        let output = output as u64;
        (input, output, model.cost_usd(input, output))
    }

    /// The learned weights a decision reads (one snapshot for all its candidates) and the
    /// prompt's predictor scores.
    pub(super) fn learned(
        &self,
        analysis: &Analysis,
    ) -> (arc_swap::Guard<std::sync::Arc<LearnedWeights>>, Scores) {
        let weights = self.weights.load();
        let scores = weights.predictor().scores(&analysis.prompt_features);
        (weights, scores)
    }

    /// Candidate `index` with its estimates; `scores` are the prompt's per-prompt predictor
    /// offsets (computed once per decision).
    pub(crate) fn candidate(
        &self,
        index: usize,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        weights: &LearnedWeights,
        scores: &Scores,
    ) -> Candidate {
        let model = &self.catalog.models()[index];
        let learned = weights
            .get(analysis.pattern, index)
            .filter(|w| w.is_actionable());
        let reference = learned.and_then(|w| w.avg_complexity).unwrap_or(0.5);
        let raw_prior = model.prior(analysis.pattern);
        let (quality, source) = match learned {
            Some(w) if w.confidence == Confidence::High => (w.quality, QualitySource::High),
            Some(w) if w.confidence == Confidence::Medium => (w.quality, QualitySource::Medium),
            Some(w) => (w.quality, QualitySource::Demoted),
            None => (
                (raw_prior + weights.prior_shift(analysis.pattern)).clamp(0.0, 1.0),
                QualitySource::Prior,
            ),
        };
        // Where the pattern × model has actionable evidence and a per-prompt predictor exists,
        // it replaces the pattern-level estimate and the complexity rule (the predictor has
        // learned what makes a prompt hard for this model).
        let per_prompt = learned.and_then(|w| {
            let base = weights.shrunk_base(w, raw_prior);
            scores.quality(index, base)
        });
        let expected_quality = match per_prompt {
            Some(q) => round3(q),
            None => round3(at_complexity(quality, analysis.complexity, reference)),
        };
        let optimistic_quality = match source {
            QualitySource::Prior => round3(raw_prior),
            _ => expected_quality,
        };
        let (input, output, cost) = self.estimate(index, analysis, req.max_output_tokens);
        Candidate {
            index,
            provider: model.provider,
            model: model.model.clone(),
            expected_quality,
            confidence: source,
            per_prompt: per_prompt.is_some(),
            evidence: weights.predictor().samples(index),
            est_input_tokens: input,
            est_output_tokens: output,
            est_cost_usd: cost,
            meets_target: false,
            optimistic_quality,
        }
    }
}
