//! Calibrating the strategies' quality targets at a retrain (issue 39): per strategy, the λ of
//! `argmax q̂ − λ·ĉ/scale` that keeps the strategy's share t of the best single model's quality
//! over the logged traffic at the least cost — or none, when the evidence cannot support the
//! promise (the engine then keeps its per-prompt share rule).
//!
//! - **Evidence units.** A rated, auto-routed request with its propensity is one unit with one
//!   observed (model, outcome) of weight 1/propensity; a prompt of a loaded benchmark
//!   (`optimizer train --dataset`) is one unit with every recorded model's outcome, each of
//!   weight 1 (nothing was chosen: every outcome is known); a request sampled for shadow
//!   comparisons is one unit with every judged answer, each of weight 1/(the sampler's
//!   probability of observing that model) — the served answer 1.
//! - **Cross-fitting.** The units are split in two halves by a hash of their content; each
//!   half's estimates come from a predictor fitted on the other half only, so a prompt's
//!   estimates never saw its own outcome (in-sample estimates pick the models they over-rate —
//!   the winner's curse that made a plug-in knob land under its promise).
//! - **The estimate.** A policy's value on a unit is doubly robust: the cross-fitted estimate of
//!   the model it picks, plus the inverse-propensity-weighted error of that estimate where the
//!   unit observed that model. The best single model's value is the same for "always m", the
//!   highest over the models that are candidates nearly everywhere; it must have been observed
//!   on at least `MIN_EFFECTIVE` units.
//! - **The promise.** λ is the largest on a grid (5% steps) such that, for it and every smaller
//!   λ, the mean of the per-unit paired difference `value(π_λ) − t·value(best)` stays ≥ 0 at
//!   its lower bound, `Z` standard errors below it. The margin shrinks as evidence grows.
//!
//! Measured on the dev data in docs/eval.md (a self-normalised estimate over the matched units
//! was tried first: on two-model data it set the knob past its promise, the best model looking
//! worse than it is on the hard prompts it was sent).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::Serialize;

use crate::routing::target::{Calibration, Knob, choose, quality_target};
use crate::routing::{Analysis, RouteRequest, RoutingEngine, Strategy};
use crate::store::predictor::RatedRequest;

/// Standard errors between the estimate and the bound the promise is checked on (one-sided 95%).
pub const Z: f64 = 1.64;
/// Effective samples a knob's estimate (and a best-model estimate) needs.
pub const MIN_EFFECTIVE: f64 = 30.0;
/// At most this many units are replayed (the most recent rated requests and benchmark prompts
/// come first in the retrain's input).
pub const MAX_UNITS: usize = 50_000;

/// One unit of evidence: a prompt as the engine sees it and the outcomes observed on it.
pub struct Unit {
    pub id: String,
    /// Its half of the cross-fit ([`half`]).
    pub half: usize,
    pub analysis: Analysis,
    /// (provider/model, outcome in 0..1, weight).
    pub observed: Vec<(String, f64, f64)>,
    /// A designed observation (a benchmark prompt or a shadow comparison: models observed with
    /// known, non-small probabilities) rather than a rated request.
    pub judged: bool,
}

/// A unit's candidates as a policy saw them: (provider/model, expected quality, expected cost).
type Candidates = Vec<(String, f64, f64)>;

fn key(provider: &str, model: &str) -> String {
    format!("{provider}/{model}")
}

/// The evidence units of `rated` (rated requests and benchmark outcomes, in the retrain's
/// order); at most [`MAX_UNITS`].
pub fn units<'a>(rated: impl IntoIterator<Item = &'a RatedRequest>) -> Vec<Unit> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: HashMap<String, Unit> = HashMap::new();
    for r in rated {
        let benchmark = r.request_id.starts_with("bootstrap:");
        let shadow = r.request_id.starts_with(super::per_prompt::SHADOW_PREFIX);
        let weight = if benchmark {
            1.0
        } else if shadow {
            // A judged answer: observed with the sampler's known probability.
            match r.propensity.filter(|p| *p > 0.0 && *p <= 1.0) {
                Some(p) => 1.0 / p,
                None => continue,
            }
        } else {
            if r.auto_route == Some(false) {
                continue;
            }
            match r.propensity.filter(|p| *p > 0.0 && *p <= 1.0) {
                Some(p) => 1.0 / p,
                None => continue,
            }
        };
        let Some(analysis) = super::off_policy::analysis_of(r) else {
            continue;
        };
        let outcome = super::per_prompt::label(r.avg_quality, r.correctness);
        let unit = by_id.entry(r.request_id.clone()).or_insert_with(|| {
            order.push(r.request_id.clone());
            Unit {
                id: r.request_id.clone(),
                half: half(r),
                analysis,
                observed: Vec::new(),
                judged: benchmark || shadow,
            }
        });
        unit.observed
            .push((key(&r.provider, &r.model), outcome, weight));
    }
    order
        .into_iter()
        .take(MAX_UNITS)
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// Which half of the cross-fit a rated request (and the unit it belongs to) is in: by the
/// benchmark record's id, or by a rated request's stored prompt features — content, not the
/// request id (a ULID of the time it came in), so the same traffic is split the same way.
pub fn half(r: &RatedRequest) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if r.request_id.starts_with("bootstrap:") {
        r.request_id.hash(&mut h);
    } else {
        (&r.pattern, &r.features).hash(&mut h);
    }
    (h.finish() % 2) as usize
}

/// The candidates `engine` considers for `unit`, with its estimates (no exploration).
fn candidates(engine: &RoutingEngine, unit: &Unit) -> Option<Candidates> {
    let request = RouteRequest {
        strategy: Strategy::Quality,
        preview: true,
        ..Default::default()
    };
    let mut rng = fastrand::Rng::with_seed(0);
    let decision = engine.route(&unit.analysis, &request, &mut rng).ok()?;
    Some(
        std::iter::once(&decision.chosen)
            .chain(&decision.alternatives)
            .map(|c| {
                (
                    key(c.provider.as_str(), &c.model),
                    c.expected_quality,
                    c.est_cost_usd,
                )
            })
            .collect(),
    )
}

/// What the calibration found, reported by the retrain.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub units: usize,
    /// The best single model on the logged traffic and its estimated quality.
    pub best_model: Option<String>,
    pub best_quality: Option<f64>,
    pub calibration: Option<Calibration>,
    /// Per strategy: why no knob was set.
    pub unsupported: Vec<String>,
}

/// Calibrates every strategy's knob on `units`, each half's candidates from the engine fitted
/// on the other half (`engines[h]` decides the units of half `h`).
pub fn calibrate(engines: [&RoutingEngine; 2], units: &[Unit]) -> Report {
    let decided: Vec<(&Unit, Candidates)> = units
        .iter()
        .filter_map(|u| candidates(engines[u.half], u).map(|c| (u, c)))
        .collect();
    calibrate_decided(&decided)
}

/// A policy's per-unit values on the decided units, self-normalised doubly robust: the
/// cross-fitted estimate of the model it picks, plus the mean weighted error of that estimate
/// over the units that observed its pick — normalised by the weights observed rather than by
/// the unit count, so a pick the logged decisions rarely observed (an unexplored model of a
/// many-model catalog, whose estimate is the over-rated maximum of many) is corrected by the
/// error seen where it was observed instead of hardly at all. `pick` names a unit's candidate.
/// Also the mean expected cost of the picks. None when the observed picks have fewer than
/// `MIN_EFFECTIVE` effective samples.
fn values(
    decided: &[(&Unit, Candidates)],
    pick: impl Fn(&Candidates) -> Option<usize>,
) -> Option<(Vec<f64>, f64)> {
    let (mut sw, mut sw2, mut cost) = (0.0, 0.0, 0.0);
    let mut parts: Vec<(f64, f64)> = Vec::with_capacity(decided.len());
    for (u, cands) in decided {
        let Some(i) = pick(cands) else {
            parts.push((0.0, 0.0));
            continue;
        };
        let (m, q, c) = &cands[i];
        cost += c;
        let mut residual = 0.0;
        for (om, r, w) in &u.observed {
            if om == m {
                sw += w;
                sw2 += w * w;
                residual += w * (r - q);
            }
        }
        parts.push((*q, residual));
    }
    if sw <= 0.0 || sw * sw / sw2 < MIN_EFFECTIVE {
        return None;
    }
    let k = decided.len() as f64 / sw;
    let n = decided.len().max(1) as f64;
    Some((parts.iter().map(|(q, r)| q + k * r).collect(), cost / n))
}

/// Running sums of per-unit values.
#[derive(Default, Clone, Copy)]
struct Moments {
    n: f64,
    sum: f64,
    sum2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1.0;
        self.sum += x;
        self.sum2 += x * x;
    }

    fn mean(&self) -> f64 {
        if self.n > 0.0 { self.sum / self.n } else { 0.0 }
    }

    /// Standard error of the mean.
    fn se(&self) -> f64 {
        if self.n < 2.0 {
            return f64::INFINITY;
        }
        let m = self.mean();
        let var = ((self.sum2 - self.n * m * m) / (self.n - 1.0)).max(0.0);
        (var / self.n).sqrt()
    }
}

/// An estimate of a traffic mean and its standard error.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    mean: f64,
    se: f64,
}

/// Estimates of the same mean from independent strata, combined by inverse variance (a stratum
/// whose values do not vary counts as very precise). None: no stratum has two values.
fn combine(parts: impl IntoIterator<Item = Moments>) -> Option<Estimate> {
    let (mut wsum, mut msum) = (0.0, 0.0);
    for m in parts {
        let se = m.se();
        if !se.is_finite() {
            continue;
        }
        let w = 1.0 / se.max(1e-9).powi(2);
        wsum += w;
        msum += w * m.mean();
    }
    (wsum > 0.0).then(|| Estimate {
        mean: msum / wsum,
        se: wsum.sqrt().recip(),
    })
}

fn moments(values: impl IntoIterator<Item = f64>) -> Moments {
    let mut m = Moments::default();
    for v in values {
        m.add(v);
    }
    m
}

/// Per stratum, a policy's per-unit values (None: not measurable there).
type PerStratum = Vec<Option<Vec<f64>>>;

/// [`calibrate`] on units whose candidates are already estimated.
///
/// Values are doubly robust (the cross-fitted estimate plus the inverse-propensity-weighted
/// error of it where the model was observed): unbiased where the logged decisions gave every
/// model a chance, and — unlike a self-normalised average over the units where a model happened
/// to be chosen — not biased toward the prompts the logged policy sent it (a premium model sent
/// the hard prompts would look worse than it is, and every promise made against it too easy).
/// The promise is checked on the paired difference `value(π_λ) − t·value(best)` per unit.
///
/// Rated requests and judged units (benchmark prompts, shadow comparisons) are estimated apart
/// and combined by inverse variance: a rated request observes a model the policy would pick
/// only where exploration sent it there, at a weight of 1/propensity (tens), so a few hundred
/// judged prompts, every answer observed, can say more than thousands of ratings — pooled,
/// the ratings' weights would set the margin.
fn calibrate_decided(decided: &[(&Unit, Candidates)]) -> Report {
    let (judged, rated): (Vec<_>, Vec<_>) = decided.iter().cloned().partition(|(u, _)| u.judged);
    let strata: Vec<&[(&Unit, Candidates)]> = [judged.as_slice(), rated.as_slice()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let units = decided.len() as f64;
    // Each model's "always m" value, over the units where it is a candidate nearly everywhere;
    // the best (ties: by name, so the choice does not depend on hashing) is the reference. A
    // model observed too rarely has no value: no promise is measurable against it.
    let mut names: Vec<&str> = decided
        .iter()
        .flat_map(|(_, c)| c.iter().map(|x| x.0.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    // Per stratum, the best model's per-unit values (None: not measurable there).
    let mut best: Option<(&str, f64, PerStratum)> = None;
    let mut unmeasured: Vec<&str> = Vec::new();
    for m in names {
        let present = decided
            .iter()
            .filter(|(_, c)| c.iter().any(|x| x.0 == m))
            .count() as f64;
        if present < 0.9 * units {
            continue;
        }
        let per: PerStratum = strata
            .iter()
            .map(|s| values(s, |c| c.iter().position(|x| x.0 == m)).map(|(v, _)| v))
            .collect();
        let Some(est) = combine(per.iter().flatten().map(|v| moments(v.iter().copied()))) else {
            unmeasured.push(m);
            continue;
        };
        if best.as_ref().is_none_or(|b| est.mean > b.1) {
            best = Some((m, est.mean, per));
        }
    }
    let mut report = Report {
        units: decided.len(),
        best_model: best.as_ref().map(|(m, _, _)| (*m).to_owned()),
        best_quality: best.as_ref().map(|(_, q, _)| *q),
        calibration: None,
        unsupported: Vec::new(),
    };
    let Some((best_model, best_q, best_values)) = best else {
        report.unsupported.push(format!(
            "no model was observed on {MIN_EFFECTIVE} effective rated samples of {} units",
            decided.len()
        ));
        return report;
    };
    if !unmeasured.is_empty() {
        // A model too rarely observed to be valued might be the best: the promise is made
        // against the best among those that can be valued (named in the report).
        tracing::debug!(?unmeasured, "models too rarely observed to value");
    }
    if units < 2.0 * MIN_EFFECTIVE {
        report.unsupported.push(format!(
            "{} rated units; a promise needs {}",
            decided.len(),
            2.0 * MIN_EFFECTIVE
        ));
        return report;
    }
    // The cost unit: the mean expected cost of each unit's most expensive candidate.
    let scale = decided
        .iter()
        .map(|(_, c)| c.iter().map(|x| x.2).fold(0.0, f64::max))
        .sum::<f64>()
        / units;
    if scale <= 0.0 {
        report
            .unsupported
            .push("the candidates' expected costs are all zero".into());
        return report;
    }
    // λ from 0.001 to ~200 quality points per premium request, 5% apart.
    let grid: Vec<f64> = std::iter::once(0.0)
        .chain((0..250).map(|k| 0.001 * 1.05f64.powi(k)))
        .collect();
    let mut calibration = Calibration {
        cost_scale: scale,
        ..Default::default()
    };
    let mut knobs: Vec<Option<Knob>> = vec![None; Strategy::ALL.len()];
    let mut open: Vec<bool> = vec![true; Strategy::ALL.len()];
    let mut at_zero: Vec<(f64, f64)> = Vec::new();
    for lambda in &grid {
        // Per stratum where both the policy and the best model are measurable: its values.
        let per: Vec<(Vec<f64>, f64, &Vec<f64>)> = strata
            .iter()
            .zip(&best_values)
            .filter_map(|(s, b)| {
                let (v, cost) =
                    values(s, |c| choose(c.iter().map(|x| (x.1, x.2)), *lambda, scale))?;
                Some((v, cost * s.len() as f64, b.as_ref()?))
            })
            .collect();
        if per.is_empty() {
            break;
        }
        let counted: f64 = per.iter().map(|(v, _, _)| v.len() as f64).sum();
        let cost = per.iter().map(|(_, c, _)| c).sum::<f64>() / counted;
        let Some(value) = combine(per.iter().map(|(v, _, _)| moments(v.iter().copied()))) else {
            break;
        };
        for (k, strategy) in Strategy::ALL.iter().enumerate() {
            if !open[k] {
                continue;
            }
            let t = quality_target(*strategy);
            let diff = combine(
                per.iter()
                    .map(|(v, _, b)| moments(v.iter().zip(b.iter()).map(|(v, b)| v - t * b))),
            );
            let lower = diff.map_or(f64::NEG_INFINITY, |d| d.mean - Z * d.se);
            if *lambda == 0.0 {
                at_zero.push((value.mean, lower));
            }
            if lower < 0.0 {
                open[k] = false;
                continue;
            }
            knobs[k] = Some(Knob {
                target: t,
                lambda: *lambda,
                estimate: value.mean,
                // The bound on the policy's value the promise was checked with.
                lower: t * best_q + lower,
                best: best_q,
                cost_usd: cost,
                effective_samples: units,
            });
        }
        if open.iter().all(|o| !o) {
            break;
        }
    }
    for (k, strategy) in Strategy::ALL.iter().enumerate() {
        if knobs[k].is_none() {
            let (v, lower) = at_zero.get(k).copied().unwrap_or_default();
            report.unsupported.push(format!(
                "{strategy}: even the highest expected quality keeps an estimated {:.1}% of the \
                 best model's ({best_model}) on {} units, {:.1} points short of the promise \
                 {:.0}% at its lower bound",
                100.0 * v / best_q,
                decided.len(),
                -100.0 * lower.clamp(-1.0, 0.0) / best_q,
                100.0 * quality_target(*strategy)
            ));
        }
        calibration.set(*strategy, knobs[k]);
    }
    report.calibration = Some(calibration);
    report
}

/// A unit made of a pattern and known outcomes, for tests.
#[cfg(test)]
fn unit(id: &str, pattern: crate::routing::Pattern, observed: Vec<(String, f64, f64)>) -> Unit {
    use crate::routing::Tier;
    let mut analysis = crate::routing::QueryPatternAnalyzer::new().analyze("hello");
    analysis.pattern = pattern;
    analysis.tier = Tier::of(analysis.complexity);
    Unit {
        id: id.into(),
        half: 0,
        analysis,
        observed,
        judged: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_split_in_stable_halves() {
        let rated = |i: i32, id: &str| RatedRequest {
            request_id: id.into(),
            pattern: "code".into(),
            provider: "simulated".into(),
            model: "m".into(),
            avg_quality: 5.0,
            correctness: Some(1.0),
            features: Some(vec![i, i + 1]),
            propensity: Some(1.0),
            strategy: None,
            complexity: Some(0.5),
            auto_route: Some(true),
            cost_usd: None,
            input_tokens: None,
        };
        let halves: Vec<usize> = (0..200)
            .map(|i| half(&rated(i, &format!("r{i}"))))
            .collect();
        let ones = halves.iter().filter(|h| **h == 1).count();
        assert!((70..130).contains(&ones), "{ones}");
        // The same prompt, another request id: the same half.
        assert_eq!(half(&rated(7, "a")), half(&rated(7, "b")));
        let u = unit(
            "x",
            crate::routing::Pattern::Chat,
            vec![("a/b".into(), 1.0, 1.0)],
        );
        assert_eq!(u.observed.len(), 1);
    }

    #[test]
    fn judged_answers_form_one_unit_weighted_by_the_samplers_probability() {
        let row = |id: &str, model: &str, stars: f64, propensity: f64, auto: bool| RatedRequest {
            request_id: id.into(),
            pattern: "code".into(),
            provider: "openrouter".into(),
            model: model.into(),
            avg_quality: stars,
            correctness: Some(if stars > 3.0 { 1.0 } else { 0.0 }),
            features: Some(vec![3, 4]),
            propensity: Some(propensity),
            strategy: None,
            complexity: Some(0.5),
            auto_route: Some(auto),
            cost_usd: None,
            input_tokens: None,
        };
        let rows = [
            // The request's own rating: propensity of the routing decision.
            row("r1", "cheap", 5.0, 0.8, true),
            // Its shadow comparison: the served answer (surely observed) and one of two others.
            row("shadow:r1", "cheap", 4.0, 1.0, false),
            row("shadow:r1", "mid", 2.0, 0.5, false),
        ];
        let units = units(&rows);
        assert_eq!(units.len(), 2);
        let rated = units.iter().find(|u| u.id == "r1").unwrap();
        assert!(!rated.judged);
        assert_eq!(rated.observed, vec![("openrouter/cheap".into(), 1.0, 1.25)]);
        let judged = units.iter().find(|u| u.id == "shadow:r1").unwrap();
        assert!(judged.judged);
        assert_eq!(
            judged.observed,
            vec![
                ("openrouter/cheap".into(), 0.875, 1.0),
                ("openrouter/mid".into(), 0.125, 2.0)
            ]
        );
        // The same prompt's rating and comparison fall in the same half of the cross-fit.
        assert_eq!(rated.half, judged.half);
    }

    #[test]
    fn the_standard_error_shrinks_with_evidence() {
        let mut few = Moments::default();
        let mut many = Moments::default();
        for i in 0..10 {
            few.add(f64::from(i % 2));
        }
        for i in 0..1000 {
            many.add(f64::from(i % 2));
        }
        let (a, b) = (few.se(), many.se());
        assert!(a > 5.0 * b, "{a} {b}");
        assert!((many.mean() - 0.5).abs() < 1e-9);
    }

    /// Values are the estimate plus the observed error, normalised by the weight observed: a
    /// pick observed on half the units (each with weight 2, as if explored half the time)
    /// corrects the mean by the error seen there.
    #[test]
    fn values_correct_estimates_by_the_error_where_observed() {
        let pattern = crate::routing::Pattern::Code;
        let units: Vec<Unit> = (0..80)
            .map(|i| {
                let observed = if i % 2 == 0 {
                    vec![("s/a".into(), 0.0, 2.0)]
                } else {
                    Vec::new()
                };
                unit(&format!("u{i}"), pattern, observed)
            })
            .collect();
        let cands = vec![("s/a".to_owned(), 0.5, 1.0), ("s/b".to_owned(), 0.7, 2.0)];
        let decided: Vec<(&Unit, Candidates)> = units.iter().map(|u| (u, cands.clone())).collect();
        let (v, cost) = values(&decided, |_| Some(0)).unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 1e-12,
            "the estimate 0.5 less the observed error 0.5: {mean}"
        );
        assert!((cost - 1.0).abs() < 1e-12);
        // Never observed: no value (nothing to correct its estimate by).
        assert!(values(&decided, |_| Some(1)).is_none());
        // Observed too rarely: no value either.
        assert!(values(&decided[..2], |_| Some(0)).is_none());
    }

    /// A known frontier: B is always right (cost 10), A (cost 1) is right on the first 80 of
    /// every 100 prompts, and the estimates rank A's prompts by how likely it is right. Every
    /// outcome is known (a benchmark): the knob may hand A the prompts it gets right, and for a
    /// promise t as many of the others as the target allows.
    fn frontier(n: usize) -> Vec<(Unit, Candidates)> {
        (0..n)
            .map(|i| {
                let rank = i % 100;
                let a_right = if rank < 80 { 1.0 } else { 0.0 };
                let u = unit(
                    &format!("p{i}"),
                    crate::routing::Pattern::Code,
                    vec![("s/a".into(), a_right, 1.0), ("s/b".into(), 1.0, 1.0)],
                );
                let cands = vec![
                    ("s/a".to_owned(), 1.0 - rank as f64 / 100.0, 1.0),
                    ("s/b".to_owned(), 0.99, 10.0),
                ];
                (u, cands)
            })
            .collect()
    }

    fn run(units: &[(Unit, Candidates)]) -> Report {
        let decided: Vec<(&Unit, Candidates)> = units.iter().map(|(u, c)| (u, c.clone())).collect();
        calibrate_decided(&decided)
    }

    #[test]
    fn the_calibrated_knob_keeps_the_target_at_the_least_cost_the_evidence_allows() {
        for n in [200, 5000] {
            let report = run(&frontier(n));
            assert_eq!(report.best_model.as_deref(), Some("s/b"));
            let c = report.calibration.expect("calibrated");
            for strategy in Strategy::ALL {
                let t = quality_target(strategy);
                let k = c.knob(strategy).expect("supported");
                // The promise holds on its lower bound …
                assert!(k.lower >= t * k.best - 1e-9, "{strategy} n={n}: {k:?}");
                // … and the true quality of the chosen knob (every outcome known) keeps it.
                let decided = frontier(n);
                let (mut right, mut cost) = (0.0, 0.0);
                for (u, cands) in &decided {
                    let i =
                        choose(cands.iter().map(|c| (c.1, c.2)), k.lambda, c.cost_scale).unwrap();
                    right += u.observed.iter().find(|o| o.0 == cands[i].0).unwrap().1;
                    cost += cands[i].2;
                }
                assert!(right / n as f64 >= t - 1e-9, "{strategy} n={n}");
                // Far cheaper than the best model: A takes nearly every prompt it gets right
                // (to the grid's resolution, 5% steps of λ).
                assert!(
                    cost / (n as f64) < 3.7,
                    "{strategy} n={n}: {}",
                    cost / n as f64
                );
            }
            // cost (0.90) spends no more than balanced (0.95), which spends no more than quality.
            let cost_of = |s| c.knob(s).unwrap().cost_usd;
            assert!(cost_of(Strategy::Cost) <= cost_of(Strategy::Balanced) + 1e-12);
            assert!(cost_of(Strategy::Balanced) <= cost_of(Strategy::Quality) + 1e-12);
        }
        // With more evidence the margin shrinks: the 0.90 promise is kept closer to 0.90.
        let small = run(&frontier(200)).calibration.unwrap().cost.unwrap();
        let large = run(&frontier(5000)).calibration.unwrap().cost.unwrap();
        assert!(
            large.estimate <= small.estimate + 1e-9,
            "{small:?} {large:?}"
        );
        assert!(large.estimate - 0.90 < 0.03, "{large:?}");
    }

    #[test]
    fn too_little_evidence_supports_no_promise() {
        let report = run(&frontier(10));
        assert!(report.calibration.is_none(), "{:?}", report.calibration);
        assert!(!report.unsupported.is_empty());
    }
}
