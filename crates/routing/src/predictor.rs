//! The per-prompt quality predictor: for each model, a logistic regression over the prompt's
//! hashed n-gram features ([`crate::features`]) that predicts how much better or worse than its
//! pattern-level estimate the model does on *this* prompt.
//!
//! `q(model, prompt) = σ(logit(base) + Σ_j w_mj · x_j)`, where `base` is the model's
//! pattern-level estimate shrunk toward the catalog prior ([`shrunk`]: `k` pseudo-ratings of the
//! prior, so a handful of lucky ratings moves it a little, not to their raw mean), `x` the
//! prompt's unit-length feature vector, and `w_m` fitted by [`fit`] from rated
//! requests (one sample per request) with L2 regularisation — with thin evidence they stay near
//! zero and the prediction is the shrunk pattern estimate.
//!
//! In memory the weights are one dense array, model-interleaved (`FEATURE_DIM × models`), so
//! scoring a prompt for every model costs one cache line per feature; on disk each model's
//! non-zero weights are stored sparse ([`ModelFit`], [`encode_weights`]).

use crate::features::{FEATURE_DIM, feature_value};

/// One rated request, as the trainer sees it.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    /// Slot of the model that answered (see [`fit`]).
    pub model: usize,
    /// The prompt's features, each below [`FEATURE_DIM`] (borrowed where the caller holds them:
    /// a retrain's samples are as many as its rated requests).
    pub features: std::borrow::Cow<'a, [u32]>,
    /// The rating as a quality in 0..1 (the mean over the request's ratings).
    pub label: f32,
    /// `logit` of the model's shrunk pattern-level estimate for the prompt's pattern.
    pub base_logit: f32,
    /// What the sample counts for in the fit (1: a rating; a judged shadow answer counts
    /// `SHADOW_WEIGHT`).
    pub weight: f32,
}

/// How [`fit`] fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSettings {
    /// Passes over the samples.
    pub epochs: u32,
    /// SGD step size (on unit-length inputs: the share of a sample's error one step removes
    /// from its own logit), shrinking as 1/√epoch.
    pub learning_rate: f32,
    /// L2 penalty per sample update.
    pub l2: f32,
    /// The shared part's step relative to a model's own (0: no shared part).
    pub shared: f32,
    /// Dimensions of the low-rank part every model reads through its own loadings (0: none).
    pub rank: usize,
    /// The low-rank part's step relative to a model's own.
    pub factor_rate: f32,
}

impl Default for FitSettings {
    fn default() -> Self {
        Self {
            epochs: 4,
            learning_rate: 0.5,
            l2: 1e-2,
            shared: 1.0,
            rank: 0,
            factor_rate: 1.0,
        }
    }
}

/// Rated requests at which a model's per-prompt adjustment counts half: thin evidence moves
/// the prediction little away from the (shrunk) pattern-level estimate.
pub const EVIDENCE_SCALE: f32 = 50.0;

/// One model's fitted predictor, sparse (as stored).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelFit {
    /// Rated requests it was fitted on.
    pub samples: u32,
    /// Non-zero weights, by feature index (ascending).
    pub weights: Vec<(u32, f32)>,
}

/// The predictor the engine reads: every fitted model's weights, interleaved.
#[derive(Debug, Clone, Default)]
pub struct Predictor {
    /// Catalog index → slot.
    slot_of: Vec<Option<usize>>,
    /// Rated requests behind each slot's fit.
    samples: Vec<u32>,
    /// `weights[feature * slots + slot]`.
    weights: Vec<f32>,
}

impl Predictor {
    /// Builds the in-memory predictor; `fits` name catalog indices (`< catalog_len`).
    pub fn new(catalog_len: usize, fits: &[(usize, ModelFit)]) -> Self {
        let fits: Vec<&(usize, ModelFit)> = fits.iter().filter(|(i, _)| *i < catalog_len).collect();
        let slots = fits.len();
        let mut slot_of = vec![None; catalog_len];
        let mut weights = vec![0.0f32; if slots == 0 { 0 } else { FEATURE_DIM * slots }];
        for (slot, (index, fit)) in fits.iter().enumerate() {
            slot_of[*index] = Some(slot);
            for (j, w) in &fit.weights {
                if (*j as usize) < FEATURE_DIM {
                    weights[*j as usize * slots + slot] = *w;
                }
            }
        }
        Self {
            slot_of,
            samples: fits.iter().map(|(_, f)| f.samples).collect(),
            weights,
        }
    }

    /// Rated requests behind catalog model `index`'s predictor (0: none).
    pub fn samples(&self, index: usize) -> u32 {
        self.slot(index).map_or(0, |s| self.samples[s])
    }

    fn slot(&self, index: usize) -> Option<usize> {
        self.slot_of.get(index).copied().flatten()
    }

    /// Every fitted model's logit offset for `features`; read with [`Scores::quality`].
    pub fn scores(&self, features: &[u32]) -> Scores {
        let slots = self.samples.len();
        let mut out = vec![0.0f32; slots];
        if slots > 0 {
            let v = feature_value(features.len());
            for j in features {
                let start = *j as usize * slots;
                if let Some(row) = self.weights.get(start..start + slots) {
                    for (o, w) in out.iter_mut().zip(row) {
                        *o += w * v;
                    }
                }
            }
        }
        // Thin evidence, small adjustment: a model's offset counts n/(n + EVIDENCE_SCALE) of
        // itself after n rated requests.
        Scores {
            by_index: self
                .slot_of
                .iter()
                .map(|slot| {
                    slot.map(|s| {
                        let n = self.samples[s] as f32;
                        out[s] * n / (n + EVIDENCE_SCALE)
                    })
                })
                .collect(),
        }
    }
}

/// One prompt's logit offsets, by catalog index (None: no predictor for that model).
#[derive(Debug, Clone, Default)]
pub struct Scores {
    by_index: Vec<Option<f32>>,
}

impl Scores {
    /// The predicted quality of catalog model `index` given its shrunk pattern-level estimate
    /// `base` (None: no predictor for this model).
    pub fn quality(&self, index: usize, base: f64) -> Option<f64> {
        let offset = self.by_index.get(index).copied().flatten()?;
        Some(sigmoid(logit(base) + f64::from(offset)))
    }
}

/// The pattern-level estimate from `samples` rated requests with mean quality `mean`, shrunk
/// toward `prior` as if the prior were `k` ratings.
pub fn shrunk(mean: f64, samples: f64, prior: f64, k: f64) -> f64 {
    let n = samples.max(0.0);
    if n + k <= 0.0 {
        return prior;
    }
    ((n * mean + k * prior) / (n + k)).clamp(0.0, 1.0)
}

/// `ln(p / (1 − p))`, with p kept inside [0.001, 0.999].
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(0.001, 0.999);
    (p / (1.0 - p)).ln()
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Fits one predictor per model slot (`0..models`) from `samples` (each names its slot).
///
/// Each model's weights are the sum of a part every model shares — what makes a prompt hard or
/// easy for all of them, learned from every rated request — and the model's own part, learned
/// from its requests only: `z = base + (u + v_m)·x`. A model with few ratings still gets the
/// shared difficulty (learned from all traffic); what sets it apart needs its own evidence.
/// Logistic loss against the fractional label with the shrunk base as a fixed offset (no bias:
/// the base is the model's mean for the pattern), SGD, L2 weight decay, the samples visited in
/// an order drawn from `seed` (the same inputs give the same fit). A slot without samples gets
/// no fit.
pub fn fit(
    samples: &[Sample<'_>],
    models: usize,
    s: &FitSettings,
    seed: u64,
) -> Vec<Option<ModelFit>> {
    let mut counts = vec![0u32; models];
    let mut order: Vec<usize> = Vec::with_capacity(samples.len());
    for (i, sample) in samples.iter().enumerate() {
        if let Some(c) = counts.get_mut(sample.model) {
            *c += 1;
            order.push(i);
        }
    }
    if order.is_empty() {
        return vec![None; models];
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    // Slot `models` holds the shared part.
    let stride = models + 1;
    let mut w = vec![0.0f32; FEATURE_DIM * stride];
    // The low-rank part: a projection of the features every model shares (`proj`, starting at
    // zero) and each model's loadings on it (`load`, small random values to break symmetry).
    let rank = s.rank;
    let mut proj = vec![0.0f32; if rank > 0 { FEATURE_DIM * rank } else { 0 }];
    let mut load: Vec<f32> = (0..models * rank)
        .map(|_| (rng.f32() - 0.5) * 0.2)
        .collect();
    let mut hidden = vec![0.0f32; rank];
    for epoch in 0..s.epochs.max(1) {
        rng.shuffle(&mut order);
        // Plain SGD on unit-length inputs: one step moves the sample's own logit by about
        // `rate · error` per part, and the step shrinks over the epochs.
        let rate = s.learning_rate / (1.0 + epoch as f32).sqrt();
        for i in &order {
            let sample = &samples[*i];
            let m = sample.model;
            let v = feature_value(sample.features.len());
            let mut z = sample.base_logit;
            hidden.fill(0.0);
            for j in sample.features.iter() {
                let row = *j as usize * stride;
                z += (w[row + models] + w[row + m]) * v;
                let prow = *j as usize * rank;
                for (h, p) in hidden.iter_mut().zip(&proj[prow..prow + rank]) {
                    *h += p * v;
                }
            }
            let loads = &mut load[m * rank..(m + 1) * rank];
            z += hidden
                .iter()
                .zip(loads.iter())
                .map(|(h, l)| h * l)
                .sum::<f32>();
            let p = 1.0 / (1.0 + (-z).exp());
            let err = (p - sample.label.clamp(0.0, 1.0)) * sample.weight;
            let frate = rate * s.factor_rate;
            for j in sample.features.iter() {
                let row = *j as usize * stride;
                let shared = &mut w[row + models];
                *shared -= rate * s.shared * (err * v + s.l2 * *shared);
                let own = &mut w[row + m];
                *own -= rate * (err * v + s.l2 * *own);
                let prow = *j as usize * rank;
                for (p, l) in proj[prow..prow + rank].iter_mut().zip(loads.iter()) {
                    *p -= frate * (err * v * l + s.l2 * *p);
                }
            }
            for (l, h) in loads.iter_mut().zip(&hidden) {
                *l -= frate * (err * h + s.l2 * *l);
            }
        }
    }
    // Every part is linear in the features: each model's predictor is one weight vector.
    (0..models)
        .map(|m| {
            let loads = &load[m * rank..(m + 1) * rank];
            (counts[m] > 0).then(|| ModelFit {
                samples: counts[m],
                weights: (0..FEATURE_DIM)
                    .map(|j| {
                        let low: f32 = proj[j * rank..(j + 1) * rank]
                            .iter()
                            .zip(loads)
                            .map(|(p, l)| p * l)
                            .sum();
                        (j as u32, w[j * stride + models] + w[j * stride + m] + low)
                    })
                    .filter(|(_, x)| *x != 0.0)
                    .collect(),
            })
        })
        .collect()
}

/// Sparse weights as bytes: per entry the feature index (u32) and the weight (f32), little
/// endian. Hand-written: eight bytes an entry needs no serialisation crate.
pub fn encode_weights(weights: &[(u32, f32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(weights.len() * 8);
    for (j, w) in weights {
        out.extend_from_slice(&j.to_le_bytes());
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// The inverse of [`encode_weights`]; None when the length is not a multiple of 8.
pub fn decode_weights(bytes: &[u8]) -> Option<Vec<(u32, f32)>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    bytes
        .chunks_exact(8)
        .map(|c| {
            let j = u32::from_le_bytes(c[0..4].try_into().ok()?);
            let w = f32::from_le_bytes(c[4..8].try_into().ok()?);
            Some((j, w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::featurize;

    fn sample(model: usize, text: &str, label: f32) -> Sample<'static> {
        Sample {
            model,
            features: featurize(text).into(),
            label,
            weight: 1.0,
            base_logit: logit(0.5) as f32,
        }
    }

    #[test]
    fn separates_two_prompt_kinds_the_pattern_cannot() {
        // Model 0 is right on arithmetic, wrong on trivia; the pattern estimate says 0.5 for both.
        let mut samples = Vec::new();
        for i in 0..200 {
            samples.push(sample(0, &format!("What is {i} plus {}?", i * 3 % 17), 1.0));
            samples.push(sample(
                0,
                &format!("Who was the king of country number {i}?"),
                0.0,
            ));
        }
        let fits = fit(&samples, 1, &FitSettings::default(), 7);
        let fits: Vec<(usize, ModelFit)> = vec![(0, fits[0].clone().unwrap_or_default())];
        let p = Predictor::new(1, &fits);
        let math = p.scores(&featurize("What is 41 plus 9?")).quality(0, 0.5);
        let trivia = p
            .scores(&featurize("Who was the king of Norway in 1100?"))
            .quality(0, 0.5);
        let (math, trivia) = (math.unwrap_or(0.0), trivia.unwrap_or(1.0));
        assert!(
            math > 0.8 && trivia < 0.2,
            "math {math:.2}, trivia {trivia:.2}"
        );
    }

    #[test]
    fn the_low_rank_part_learns_what_sets_models_apart_and_is_deterministic() {
        // Model 0 does arithmetic, model 1 trivia; model 2 is rated on both like model 0.
        let mut samples = Vec::new();
        for i in 0..150 {
            let math = format!("What is {i} plus {}?", i * 3 % 17);
            let trivia = format!("Who was the king of country number {i}?");
            samples.push(sample(i % 2, &math, if i % 2 == 0 { 1.0 } else { 0.0 }));
            samples.push(sample(i % 2, &trivia, if i % 2 == 0 { 0.0 } else { 1.0 }));
            samples.push(sample(
                2,
                if i % 2 == 0 { &math } else { &trivia },
                1.0 - (i % 2) as f32,
            ));
        }
        let settings = FitSettings {
            rank: 4,
            ..FitSettings::default()
        };
        let fits = fit(&samples, 3, &settings, 3);
        assert_eq!(fits, fit(&samples, 3, &settings, 3));
        let fits: Vec<(usize, ModelFit)> = fits
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i, f.unwrap_or_default()))
            .collect();
        let p = Predictor::new(3, &fits);
        let math = p.scores(&featurize("What is 41 plus 9?"));
        let trivia = p.scores(&featurize("Who was the king of Norway in 1100?"));
        let q = |s: &Scores, m: usize| s.quality(m, 0.5).unwrap_or(0.5);
        assert!(q(&math, 0) > q(&math, 1) + 0.3, "math");
        assert!(q(&trivia, 1) > q(&trivia, 0) + 0.3, "trivia");
        assert!(q(&math, 2) > q(&trivia, 2) + 0.3, "model 2");
    }

    #[test]
    fn thin_evidence_barely_moves_the_prediction() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| sample(0, &format!("lucky prompt {i}"), 1.0))
            .collect();
        let fits = fit(&samples, 1, &FitSettings::default(), 1);
        let p = Predictor::new(1, &[(0, fits[0].clone().unwrap_or_default())]);
        let unrelated = featurize("Translate the weather report into French, please");
        let q = p.scores(&unrelated).quality(0, 0.5).unwrap_or(0.0);
        assert!((0.5..0.65).contains(&q), "q {q:.3}");
        assert!((shrunk(1.0, 5.0, 0.6, 10.0) - 0.7333).abs() < 1e-3);
        assert_eq!(shrunk(0.2, 0.0, 0.6, 10.0), 0.6);
    }

    #[test]
    fn fitting_is_deterministic_and_weights_round_trip() {
        let samples: Vec<Sample> = (0..50)
            .map(|i| sample(i % 2, &format!("prompt {i}"), (i % 3) as f32 / 2.0))
            .collect();
        let a = fit(&samples, 3, &FitSettings::default(), 5);
        let b = fit(&samples, 3, &FitSettings::default(), 5);
        assert_eq!(a, b);
        assert!(a[2].is_none());
        let w = a[0].clone().unwrap_or_default().weights;
        assert!(!w.is_empty());
        assert_eq!(decode_weights(&encode_weights(&w)), Some(w));
        assert_eq!(decode_weights(&[1, 2, 3]), None);
    }
}
