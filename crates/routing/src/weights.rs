//! Learned quality estimates as the engine reads them: one per (pattern, model), loaded from
//! `routing_weights` and swapped in whole. Only HIGH and MEDIUM confidence estimates change a
//! decision; LOW ones are kept for display and ignored by the engine.

use std::collections::HashMap;
use std::sync::Arc;

use super::analyzer::Pattern;
use super::catalog::Catalog;
use super::predictor::{Predictor, shrunk};

pub use optimizer_types::{Confidence, LearnedWeight};

/// The complexity adjustment (the engine's rule 2): `q` is the expected quality at complexity `reference`
/// (0.5 for catalog priors; the mean complexity of the rated requests for learned estimates, so
/// an estimate measured on easy prompts is not credited again for a prompt being easy).
pub(crate) fn at_complexity(q: f64, c: f64, reference: f64) -> f64 {
    (q - 0.8 * (1.0 - q) * (c - reference)).clamp(0.0, 1.0)
}

/// All learned estimates at one routing-policy version.
#[derive(Debug, Clone, Default)]
pub struct LearnedWeights {
    version: i64,
    by_model: HashMap<(Pattern, usize), LearnedWeight>,
    /// Per pattern: how far the measured models' estimates sit from their catalog priors
    /// (sample-weighted mean of estimate − prior, both at medium complexity).
    prior_shift: HashMap<Pattern, f64>,
    /// The per-prompt predictor fitted with these weights (empty: none yet).
    predictor: Arc<Predictor>,
    /// Pseudo-ratings of the prior in the shrunk pattern-level estimate the predictor starts
    /// from.
    shrinkage: f64,
    /// The strategies' quality-target knobs calibrated for this predictor (None: none).
    calibration: Option<Arc<crate::target::Calibration>>,
}

impl LearnedWeights {
    /// Indexes `weights` by catalog model; estimates for models not in the catalog (or with an
    /// out-of-range quality) are dropped.
    pub fn new(catalog: &Catalog, version: i64, weights: Vec<LearnedWeight>) -> Self {
        let by_model: HashMap<(Pattern, usize), LearnedWeight> = weights
            .into_iter()
            .filter(|w| (0.0..=1.0).contains(&w.quality))
            .filter_map(|w| {
                let idx = catalog.find(Some(w.provider), &w.model)?;
                Some(((w.pattern, idx), w))
            })
            .collect();
        let mut sums: HashMap<Pattern, (f64, f64)> = HashMap::new();
        for ((pattern, idx), w) in &by_model {
            if !w.is_actionable() || w.samples == 0 {
                continue;
            }
            let reference = w.avg_complexity.unwrap_or(0.5);
            let measured = at_complexity(w.quality, 0.5, reference);
            let prior = catalog.models()[*idx].prior(*pattern);
            let n = f64::from(w.samples);
            let e = sums.entry(*pattern).or_default();
            e.0 += n * (measured - prior);
            e.1 += n;
        }
        let prior_shift = sums
            .into_iter()
            .map(|(p, (sum, n))| (p, (sum / n).clamp(-0.5, 0.5)))
            .collect();
        Self {
            version,
            by_model,
            prior_shift,
            predictor: Arc::default(),
            shrinkage: 0.0,
            calibration: None,
        }
    }

    /// Adds the quality-target knobs calibrated for this policy's predictor.
    pub fn with_calibration(mut self, calibration: Option<crate::target::Calibration>) -> Self {
        self.calibration = calibration.map(Arc::new);
        self
    }

    pub fn calibration(&self) -> Option<&crate::target::Calibration> {
        self.calibration.as_deref()
    }

    /// Adds the per-prompt predictor of this policy version; `shrinkage` as it was fitted with.
    pub fn with_predictor(mut self, predictor: Predictor, shrinkage: f64) -> Self {
        self.predictor = Arc::new(predictor);
        self.shrinkage = shrinkage.max(0.0);
        self
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// A learned estimate's pattern-level quality shrunk toward the model's catalog prior for
    /// the pattern — what the per-prompt predictor adjusts.
    pub fn shrunk_base(&self, weight: &LearnedWeight, prior: f64) -> f64 {
        shrunk(
            weight.quality,
            f64::from(weight.samples),
            prior,
            self.shrinkage,
        )
    }

    /// How much to move a catalog prior for `pattern` (0 without evidence): if the models
    /// measured on this pattern's traffic did worse (or better) than their priors said, the
    /// unmeasured ones are expected to as well — a prior describes typical requests, the ratings
    /// describe these.
    pub fn prior_shift(&self, pattern: Pattern) -> f64 {
        self.prior_shift.get(&pattern).copied().unwrap_or(0.0)
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The estimate for catalog model `model` on `pattern`, whatever its confidence.
    pub fn get(&self, pattern: Pattern, model: usize) -> Option<&LearnedWeight> {
        self.by_model.get(&(pattern, model))
    }
}
