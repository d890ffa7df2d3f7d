//! The per-prompt predictor's part of a retrain: rated requests (one sample each, their stored
//! features) → one fitted predictor per model, and the stored predictor → the engine's.
//!
//! Each sample's offset is the model's pattern-level estimate for the request's pattern, shrunk
//! toward the catalog prior (`PREDICTOR_SHRINKAGE` pseudo-ratings) — exactly what the engine
//! adds the predictor's output to, so training and routing see the same base.

use std::collections::HashMap;

use crate::routing::features::{FEATURE_DIM, FEATURIZER};
use crate::routing::predictor::{
    FitSettings, Sample, decode_weights, encode_weights, fit, logit, shrunk,
};
use crate::routing::{Catalog, ModelFit, Pattern, Predictor, ProviderId};
use crate::store::learning::Aggregate;
use crate::store::predictor::{RatedRequest, StoredFit};

/// The request id prefix of judged shadow answers (`store::shadow::samples`).
pub const SHADOW_PREFIX: &str = "shadow:";

/// The label a request's ratings give: the trainer's quality scale (`0.5·(avg − 1)/4 +
/// 0.5·correctness`), or the stars alone when no rating says whether it was correct.
pub fn label(avg_quality: f64, correctness: Option<f64>) -> f64 {
    let stars = ((avg_quality - 1.0) / 4.0).clamp(0.0, 1.0);
    match correctness {
        Some(c) => 0.5 * stars + 0.5 * c.clamp(0.0, 1.0),
        None => stars,
    }
}

/// The shrunk pattern-level estimates the samples start from, per (pattern, catalog index).
fn bases(catalog: &Catalog, aggregates: &[Aggregate], k: f64) -> HashMap<(Pattern, usize), f64> {
    aggregates
        .iter()
        .filter_map(|a| {
            let pattern = Pattern::parse(&a.pattern)?;
            let index = catalog.find(ProviderId::parse(&a.provider), &a.model)?;
            let mean = super::trainer::quality_estimate(a.avg_quality, a.correctness);
            let prior = catalog.models()[index].prior(pattern);
            Some(((pattern, index), shrunk(mean, a.samples as f64, prior, k)))
        })
        .collect()
}

/// Fits the predictor from `rated` (rated requests, and benchmark outcomes in their shape).
/// None when none carries features.
pub fn fit_from_ratings<'a>(
    catalog: &Catalog,
    aggregates: &[Aggregate],
    rated: impl IntoIterator<Item = &'a RatedRequest>,
    shrinkage: f64,
    shadow_weight: f64,
) -> Option<Vec<StoredFit>> {
    let bases = bases(catalog, aggregates, shrinkage);
    let mut indexed: Vec<(usize, Sample)> = Vec::new();
    for r in rated {
        let (Some(features), Some(pattern)) = (&r.features, Pattern::parse(&r.pattern)) else {
            continue;
        };
        let Some(index) = catalog.find(ProviderId::parse(&r.provider), &r.model) else {
            continue;
        };
        // Stored features are the featurizer's (0..FEATURE_DIM); anything else is not ours to
        // learn from. Borrowed, not copied: the samples are as many as the rated requests.
        if !features
            .iter()
            .all(|f| usize::try_from(*f).is_ok_and(|f| f < FEATURE_DIM))
        {
            continue;
        }
        let base = bases
            .get(&(pattern, index))
            .copied()
            .unwrap_or_else(|| catalog.models()[index].prior(pattern));
        indexed.push((
            index,
            Sample {
                model: 0,
                features: bytemuck::cast_slice::<i32, u32>(features).into(),
                label: label(r.avg_quality, r.correctness) as f32,
                weight: if r.request_id.starts_with(SHADOW_PREFIX) {
                    shadow_weight as f32
                } else {
                    1.0
                },
                base_logit: logit(base) as f32,
            },
        ));
    }
    if indexed.is_empty() {
        return None;
    }
    // A content order (not arrival order), so the same ratings give the same fit however the
    // requests interleaved.
    indexed.sort_by(|(i, a), (j, b)| {
        i.cmp(j)
            .then_with(|| a.features.cmp(&b.features))
            .then(a.label.total_cmp(&b.label))
    });
    let mut slots: Vec<usize> = indexed.iter().map(|(i, _)| *i).collect();
    slots.dedup();
    let samples: Vec<Sample> = indexed
        .into_iter()
        .map(|(index, mut sample)| {
            sample.model = slots.iter().position(|i| *i == index).unwrap_or_default();
            sample
        })
        .collect();
    let fits = fit(&samples, slots.len(), &FitSettings::default(), 0x5eed);
    let stored = slots
        .iter()
        .zip(fits)
        .filter_map(|(index, fit)| {
            let fit = fit?;
            let model = &catalog.models()[*index];
            Some(StoredFit {
                provider: model.provider.as_str().to_owned(),
                model: model.model.clone(),
                featurizer: FEATURIZER.to_owned(),
                sample_count: i32::try_from(fit.samples).unwrap_or(i32::MAX),
                shrinkage: shrinkage as f32,
                weights: encode_weights(&fit.weights),
            })
        })
        .collect();
    Some(stored)
}

/// The engine's predictor from the stored one; rows of another featurizer, of models not in
/// the catalog or with unreadable weights are skipped (with a warning). Also returns the
/// shrinkage it was fitted with.
pub fn to_predictor(catalog: &Catalog, stored: &[StoredFit]) -> (Predictor, f64) {
    let mut shrinkage = 0.0;
    let fits: Vec<(usize, ModelFit)> = stored
        .iter()
        .filter_map(|s| {
            let index = catalog.find(ProviderId::parse(&s.provider), &s.model)?;
            if s.featurizer != FEATURIZER {
                tracing::warn!(model = %s.model, featurizer = %s.featurizer, "skipping a predictor of another featurizer");
                return None;
            }
            let Some(weights) = decode_weights(&s.weights) else {
                tracing::warn!(model = %s.model, "skipping a predictor with unreadable weights");
                return None;
            };
            shrinkage = f64::from(s.shrinkage);
            Some((
                index,
                ModelFit {
                    samples: u32::try_from(s.sample_count).unwrap_or_default(),
                    weights,
                },
            ))
        })
        .collect();
    (Predictor::new(catalog.models().len(), &fits), shrinkage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_trainers_scale() {
        assert_eq!(label(5.0, Some(1.0)), 1.0);
        assert_eq!(label(1.0, Some(0.0)), 0.0);
        assert_eq!(label(3.0, None), 0.5);
        assert!((label(4.0, Some(0.8)) - 0.775).abs() < 1e-9);
    }
}
