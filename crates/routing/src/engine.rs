//! RoutingEngine: (analysis, strategy, constraints) → ranked candidates, each with expected
//! quality, expected cost and a human-readable reason. Pure computation over the catalog and
//! the in-memory learned weights: no I/O per decision.
//!
//! The rules, in order:
//! 1. **Candidates**: routable models (provider enabled), in `allowed_providers` if given, whose
//!    context window holds the prompt plus the expected answer.
//! 2. **Expected quality** of a model for the pattern: the learned estimate where its confidence
//!    is HIGH or MEDIUM (or it is demoted), else the catalog prior for the pattern, moved by
//!    how far the measured models of that pattern landed from their own priors (calibration:
//!    the sample-weighted mean of estimate − prior; a hard pattern lowers every guess). Priors
//!    describe medium complexity (r = 0.5); a learned estimate describes the mean complexity r of
//!    the requests it was rated on. The prompt's complexity c adjusts them:
//!    `q(c) = q − 0.8·(1 − q)·(c − r)`, so prompts easier than the reference raise and harder
//!    ones lower a model's expectation, weak models more than strong.
//! 3. **Expected cost**: estimated prompt tokens × input price + expected output tokens × output
//!    price. Expected output tokens: a per-pattern figure scaled by `0.5 + complexity`, capped by
//!    the request's `max_tokens` and the model's output limit (translation: ~1.1× the input).
//! 4. **Budget**: `max_cost` drops every candidate above it; none left is an error.
//! 5. **Choice**: `quality` takes the highest expected quality (ties → cheaper). `cost` and
//!    `balanced` take the cheapest candidate whose expected quality reaches the target —
//!    `cost`: 0.60 + 0.25·c, `balanced`: 0.70 + 0.22·c, raised to `min_quality` when that is
//!    higher — and when none reaches it, the highest expected quality, or the cheapest candidate
//!    within `near_best_margin` of it (unless the request set `min_quality`).
//! 6. **Fallbacks**: the other candidates meeting the target by cost, then the rest by quality.
//! 7. **Exploration**: with probability `exploration_rate` (not for `quality`, not for pinned
//!    models), a candidate costing no more than the regular choice, whose quality for the
//!    pattern is not known with confidence, and whose catalog prior for the pattern (before
//!    calibration and complexity: it might be good enough, and the explored prompts must be a
//!    fair sample of the pattern, not only its easy ones) is within `exploration_margin` of the
//!    strategy's target at medium complexity (and whose expected quality reaches an explicit
//!    `min_quality`) is chosen instead, reason `explore`; the regular choice becomes the
//!    first fallback. `max_cost` holds, since over-budget candidates were already dropped.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::analyzer::{Analysis, Pattern};
use super::catalog::{Catalog, ModelEntry};
use super::weights::{Confidence, LearnedWeights};
use crate::settings::RoutingSettings;
use optimizer_types::ProviderId;

pub use optimizer_types::Strategy;

/// One routing question.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest<'a> {
    pub strategy: Strategy,
    /// Minimum expected quality (0..1).
    pub min_quality: Option<f64>,
    /// Maximum expected cost in USD.
    pub max_cost_usd: Option<f64>,
    pub allowed_providers: Option<&'a [ProviderId]>,
    /// A catalog model index chosen by the caller: honoured as is, no fallbacks.
    pub pinned: Option<usize>,
    /// The caller's cap on output tokens.
    pub max_output_tokens: Option<u32>,
    /// Never explore: a preview (`/recommendation`, which shows the regular choice) or a caller
    /// that asked for the regular choice (`"explore": false`).
    pub preview: bool,
}

/// Where an expected quality came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualitySource {
    /// The catalog prior.
    Prior,
    /// A learned estimate of HIGH confidence.
    High,
    /// A learned estimate of MEDIUM confidence.
    Medium,
    /// A learned estimate proving the model poor for the pattern.
    Demoted,
}

impl QualitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prior => "prior",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Demoted => "demoted",
        }
    }
}

/// A model considered for the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Index into the catalog.
    #[serde(skip)]
    pub index: usize,
    pub provider: ProviderId,
    pub model: String,
    /// Expected quality in 0..1 at this complexity.
    pub expected_quality: f64,
    /// `prior`, or the confidence of the learned estimate used.
    pub confidence: QualitySource,
    pub est_input_tokens: u64,
    pub est_output_tokens: u64,
    pub est_cost_usd: f64,
    /// Whether it reaches the strategy's quality target.
    pub meets_target: bool,
    /// For an unmeasured model: its catalog prior for the pattern, before calibration and
    /// before the complexity adjustment — the view exploration uses (a model is worth trying
    /// if it might be good enough for the pattern; judging it per prompt would sample only the
    /// easy prompts and overrate it). Equal to `expected_quality` otherwise.
    #[serde(skip)]
    pub optimistic_quality: f64,
}

/// The engine's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub chosen: Candidate,
    /// Ranked fallbacks, best first.
    pub alternatives: Vec<Candidate>,
    pub strategy: Strategy,
    /// The quality target applied (None for `quality` and pinned models).
    pub target_quality: Option<f64>,
    /// `cheapest_meeting_target`, `best_available`, `highest_quality`, `explore` or `pinned`.
    pub reason_code: &'static str,
    /// Human-readable explanation.
    pub reason: String,
    pub explored: bool,
    /// The routing-policy version the decision used.
    pub policy_version: i64,
}

/// Why no route exists. Messages are safe for API callers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("no routable model fits this request: {0}")]
    NoCandidate(String),
    #[error(
        "max_cost {max_cost_usd} USD is below the cheapest candidate's expected cost \
         ({cheapest_usd:.6} USD, {model})"
    )]
    OverBudget {
        max_cost_usd: f64,
        cheapest_usd: f64,
        model: String,
    },
    #[error("model {0} is not routable: its provider is not configured")]
    NotRoutable(String),
}

/// A bad engine configuration (start-up error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("BASELINE_MODEL: {0:?} is not in the model catalog")]
    UnknownBaseline(String),
    #[error("no model in the catalog belongs to an enabled provider ({0})")]
    NothingRoutable(String),
}

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

/// The complexity adjustment of rule 2: `q` is the expected quality at complexity `reference`
/// (0.5 for catalog priors; the mean complexity of the rated requests for learned estimates, so
/// an estimate measured on easy prompts is not credited again for a prompt being easy).
pub(super) fn at_complexity(q: f64, c: f64, reference: f64) -> f64 {
    (q - 0.8 * (1.0 - q) * (c - reference)).clamp(0.0, 1.0)
}

/// Holds the catalog, which models are routable, and the learned weights (swapped atomically).
pub struct RoutingEngine {
    catalog: Arc<Catalog>,
    routable: Vec<bool>,
    baseline: usize,
    weights: ArcSwap<LearnedWeights>,
    exploration_rate: f64,
    exploration_margin: f64,
    near_best_margin: f64,
}

impl fmt::Debug for RoutingEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingEngine")
            .field("catalog", &self.catalog.source())
            .field("baseline", &self.catalog.models()[self.baseline].key())
            .field("policy_version", &self.weights.load().version())
            .finish()
    }
}

impl RoutingEngine {
    pub fn new(
        catalog: Arc<Catalog>,
        enabled: &[ProviderId],
        settings: &RoutingSettings,
    ) -> Result<Self, EngineError> {
        let routable: Vec<bool> = catalog
            .models()
            .iter()
            .map(|m| enabled.contains(&m.provider))
            .collect();
        if !routable.contains(&true) {
            let names: Vec<&str> = enabled.iter().map(|p| p.as_str()).collect();
            return Err(EngineError::NothingRoutable(names.join(", ")));
        }
        let baseline = match &settings.baseline_model {
            Some(name) => catalog
                .find(None, name)
                .ok_or_else(|| EngineError::UnknownBaseline(name.clone()))?,
            // The best routable model; among equals the pricier (the premium choice).
            None => (0..routable.len())
                .filter(|i| routable[*i])
                .max_by(|a, b| {
                    let (ma, mb) = (&catalog.models()[*a], &catalog.models()[*b]);
                    ma.quality
                        .total_cmp(&mb.quality)
                        .then(ma.output_usd_per_mtok.total_cmp(&mb.output_usd_per_mtok))
                })
                .unwrap_or_default(),
        };
        Ok(Self {
            catalog,
            routable,
            baseline,
            weights: ArcSwap::from_pointee(LearnedWeights::default()),
            exploration_rate: settings.exploration_rate,
            exploration_margin: settings.exploration_margin,
            near_best_margin: settings.near_best_margin,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn model(&self, index: usize) -> Option<&ModelEntry> {
        self.catalog.models().get(index)
    }

    pub fn is_routable(&self, index: usize) -> bool {
        self.routable.get(index).copied().unwrap_or(false)
    }

    /// The always-premium baseline model's catalog index.
    pub fn baseline(&self) -> usize {
        self.baseline
    }

    /// Replaces the learned weights (atomically; decisions in flight keep the old set).
    pub fn set_weights(&self, weights: LearnedWeights) {
        self.weights.store(Arc::new(weights));
    }

    pub fn policy_version(&self) -> i64 {
        self.weights.load().version()
    }

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

    fn candidate(&self, index: usize, analysis: &Analysis, req: &RouteRequest<'_>) -> Candidate {
        let model = &self.catalog.models()[index];
        let weights = self.weights.load();
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
        let expected_quality = round3(at_complexity(quality, analysis.complexity, reference));
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
            est_input_tokens: input,
            est_output_tokens: output,
            est_cost_usd: cost,
            meets_target: false,
            optimistic_quality,
        }
    }

    /// Decides. `rng` drives exploration only; a seeded one makes decisions reproducible.
    pub fn route(
        &self,
        analysis: &Analysis,
        req: &RouteRequest<'_>,
        rng: &mut fastrand::Rng,
    ) -> Result<Decision, RouteError> {
        let policy_version = self.policy_version();
        if let Some(index) = req.pinned {
            let model = self
                .model(index)
                .ok_or_else(|| RouteError::NotRoutable(format!("#{index}")))?;
            if !self.is_routable(index) {
                return Err(RouteError::NotRoutable(model.key()));
            }
            let mut chosen = self.candidate(index, analysis, req);
            chosen.meets_target = true;
            return Ok(Decision {
                reason: format!("{} pinned by the request", model.key()),
                chosen,
                alternatives: Vec::new(),
                strategy: req.strategy,
                target_quality: None,
                reason_code: "pinned",
                explored: false,
                policy_version,
            });
        }

        let mut pool: Vec<Candidate> = (0..self.routable.len())
            .filter(|i| self.routable[*i])
            .filter(|i| {
                let p = self.catalog.models()[*i].provider;
                req.allowed_providers.is_none_or(|a| a.contains(&p))
            })
            .map(|i| self.candidate(i, analysis, req))
            .filter(|c| {
                let window = u64::from(self.catalog.models()[c.index].context_window);
                c.est_input_tokens + c.est_output_tokens <= window
            })
            .collect();
        if pool.is_empty() {
            return Err(RouteError::NoCandidate(match req.allowed_providers {
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

        let c = analysis.complexity;
        let target = req
            .strategy
            .target(c)
            .map(|t| round3(t.max(req.min_quality.unwrap_or(0.0)).min(1.0)));
        for cand in &mut pool {
            cand.meets_target = target.is_none_or(|t| cand.expected_quality >= t);
        }
        // Rank: meeting the target by cost (then quality); the rest by quality (then cost).
        // Under `quality`, everything "meets" and ranks by quality.
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

        let mut ranked = pool;
        // Nothing reaches the target: paying much more for a hair of expected quality is not
        // balanced — the cheapest candidate close to the best one is taken instead.
        let mut near_best = false;
        if target.is_some() && !ranked[0].meets_target && req.min_quality.is_none() {
            let floor = ranked[0].expected_quality - self.near_best_margin;
            let cheaper = (1..ranked.len())
                .filter(|i| {
                    ranked[*i].expected_quality >= floor - 1e-9
                        && ranked[*i].est_cost_usd < ranked[0].est_cost_usd
                })
                .min_by(|a, b| ranked[*a].est_cost_usd.total_cmp(&ranked[*b].est_cost_usd));
            if let Some(i) = cheaper {
                let pick = ranked.remove(i);
                ranked.insert(0, pick);
                near_best = true;
            }
        }
        let first = &ranked[0];
        let tier = analysis.tier.as_str();
        let (mut reason_code, mut reason) = match target {
            None => (
                "highest_quality",
                format!(
                    "highest expected quality ({:.2}, {}) for {} prompts of {tier} complexity",
                    first.expected_quality,
                    first.confidence.as_str(),
                    analysis.pattern
                ),
            ),
            Some(t) if first.meets_target => (
                "cheapest_meeting_target",
                format!(
                    "cheapest model expected to reach quality {t:.2} for {} prompts of {tier} \
                     complexity ({:.2}, {})",
                    analysis.pattern,
                    first.expected_quality,
                    first.confidence.as_str()
                ),
            ),
            Some(t) if near_best => (
                "near_best_available",
                format!(
                    "no candidate is expected to reach quality {t:.2} for {} prompts of {tier} \
                     complexity; taking the cheapest within {:.2} of the best available ({:.2}, \
                     {})",
                    analysis.pattern,
                    self.near_best_margin,
                    first.expected_quality,
                    first.confidence.as_str()
                ),
            ),
            Some(t) => (
                "best_available",
                format!(
                    "no candidate is expected to reach quality {t:.2} for {} prompts of {tier} \
                     complexity; taking the best available ({:.2}, {})",
                    analysis.pattern,
                    first.expected_quality,
                    first.confidence.as_str()
                ),
            ),
        };

        let mut explored = false;
        if let Some(t) = target
            && !req.preview
            && self.exploration_rate > 0.0
            && rng.f64() < self.exploration_rate
        {
            let chosen_cost = ranked[0].est_cost_usd;
            // Whether a model is worth exploring is decided per pattern (at medium complexity),
            // not per prompt, so the explored prompts are a fair sample of the pattern's traffic.
            let floor = req.strategy.target(0.5).unwrap_or(t) - self.exploration_margin;
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
            if !explorable.is_empty() {
                let pick = explorable[rng.usize(..explorable.len())];
                let probe = ranked.remove(pick);
                reason_code = "explore";
                reason = format!(
                    "explore: {}/{} costs no more and its quality for {} prompts is not yet known \
                     with confidence (prior {:.2}); the regular choice is the first fallback",
                    probe.provider, probe.model, analysis.pattern, probe.expected_quality
                );
                ranked.insert(0, probe);
                explored = true;
            }
        }

        let chosen = ranked.remove(0);
        Ok(Decision {
            chosen,
            alternatives: ranked,
            strategy: req.strategy,
            target_quality: target,
            reason_code,
            reason,
            explored,
            policy_version,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::{Features, Script, Tier};
    use crate::weights::LearnedWeight;

    const CATALOG: &str = r#"
[[model]]
provider = "simulated"
model = "cheap"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.4
context_window = 100000
quality = 0.60

[[model]]
provider = "simulated"
model = "mid"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 5.0
context_window = 100000
quality = 0.82

[[model]]
provider = "simulated"
model = "premium"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0
context_window = 100000
quality = 0.95

[[model]]
provider = "anthropic"
model = "unconfigured"
input_usd_per_mtok = 0.01
output_usd_per_mtok = 0.01
context_window = 100000
quality = 0.99
"#;

    fn settings(rate: f64) -> RoutingSettings {
        RoutingSettings {
            catalog_path: None,
            exploration_rate: rate,
            exploration_margin: 0.3,
            near_best_margin: 0.0,
            baseline_model: None,
            reload_interval: std::time::Duration::from_secs(30),
        }
    }

    fn engine(rate: f64) -> RoutingEngine {
        let catalog = Arc::new(Catalog::parse(CATALOG, "test").unwrap());
        RoutingEngine::new(catalog, &[ProviderId::Simulated], &settings(rate)).unwrap()
    }

    fn analysis(pattern: Pattern, complexity: f64, tokens: u64) -> Analysis {
        Analysis {
            pattern,
            complexity,
            tier: Tier::of(complexity),
            features: Features {
                chars: tokens as usize * 4,
                est_tokens: tokens,
                code_fences: 0,
                code_cues: 0,
                math_cues: 0,
                multi_step_cues: 0,
                constraint_cues: 0,
                questions: 0,
                script: Script::Latin,
            },
            scores: Default::default(),
        }
    }

    fn learn(e: &RoutingEngine, model: &str, quality: f64, confidence: Confidence) {
        let w = LearnedWeight {
            pattern: Pattern::Code,
            provider: ProviderId::Simulated,
            model: model.into(),
            quality,
            confidence,
            samples: 20,
            demoted: false,
            avg_complexity: None,
        };
        e.set_weights(LearnedWeights::new(e.catalog(), 1, vec![w]));
    }

    fn route(e: &RoutingEngine, a: &Analysis, req: &RouteRequest<'_>) -> Decision {
        e.route(a, req, &mut fastrand::Rng::with_seed(7)).unwrap()
    }

    #[test]
    fn without_learned_weights_the_prior_decides() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        let d = route(&e, &a, &RouteRequest::default());
        // balanced target at c=0.5 is 0.81: mid (0.82) is the cheapest that reaches it.
        assert_eq!(d.chosen.model, "mid");
        assert_eq!(d.chosen.confidence, QualitySource::Prior);
        assert_eq!(d.reason_code, "cheapest_meeting_target");
        assert_eq!(
            d.alternatives[0].model, "premium",
            "the other model meeting the target"
        );
        assert_eq!(d.alternatives[1].model, "cheap");
        assert!(!d.explored);
        // An unconfigured provider's model is never a candidate, however good.
        assert!(d.alternatives.iter().all(|c| c.model != "unconfigured"));

        let q = route(
            &e,
            &a,
            &RouteRequest {
                strategy: Strategy::Quality,
                ..Default::default()
            },
        );
        assert_eq!(q.chosen.model, "premium");
        let c = route(
            &e,
            &analysis(Pattern::Code, 0.1, 50),
            &RouteRequest {
                strategy: Strategy::Cost,
                ..Default::default()
            },
        );
        assert_eq!(
            c.chosen.model, "cheap",
            "easy prompt, cost strategy: {}",
            c.reason
        );
    }

    #[test]
    fn high_confidence_learning_that_a_cheap_model_is_good_enough_makes_balanced_pick_it() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        learn(&e, "cheap", 0.9, Confidence::High);
        let d = route(&e, &a, &RouteRequest::default());
        assert_eq!(d.chosen.model, "cheap", "{}", d.reason);
        assert_eq!(d.chosen.confidence, QualitySource::High);
        assert_eq!(d.policy_version, 1);
        // Other patterns are untouched.
        let other = route(
            &e,
            &analysis(Pattern::Math, 0.5, 200),
            &RouteRequest::default(),
        );
        assert_eq!(other.chosen.model, "mid");
    }

    #[test]
    fn learned_estimates_are_adjusted_from_the_complexity_they_were_measured_at() {
        let e = engine(0.0);
        let easy = analysis(Pattern::Code, 0.1, 200);
        let expected = |avg_complexity: Option<f64>| {
            let w = LearnedWeight {
                pattern: Pattern::Code,
                provider: ProviderId::Simulated,
                model: "cheap".into(),
                quality: 0.7,
                confidence: Confidence::High,
                samples: 20,
                demoted: false,
                avg_complexity,
            };
            e.set_weights(LearnedWeights::new(e.catalog(), 1, vec![w]));
            let d = route(&e, &easy, &RouteRequest::default());
            let c = std::iter::once(&d.chosen)
                .chain(&d.alternatives)
                .find(|c| c.model == "cheap")
                .cloned()
                .unwrap();
            c.expected_quality
        };
        // Measured on prompts as easy as this one: no credit for the prompt being easy.
        assert_eq!(expected(Some(0.1)), 0.7);
        // Without a reference (older weights) the estimate counts as medium complexity.
        assert_eq!(expected(None), round3(0.7 + 0.8 * 0.3 * 0.4));
        // Measured on harder prompts: this easier one is expected to go better.
        assert!(expected(Some(0.8)) > expected(None));
    }

    #[test]
    fn when_nothing_reaches_the_target_the_cheapest_near_the_best_is_taken() {
        let with_margin = |m: f64| {
            let mut s = settings(0.0);
            s.near_best_margin = m;
            let catalog = Arc::new(Catalog::parse(CATALOG, "test").unwrap());
            RoutingEngine::new(catalog, &[ProviderId::Simulated], &s).unwrap()
        };
        let hard = analysis(Pattern::Code, 0.5, 200);
        let weights = |e: &RoutingEngine| {
            let w = |model: &str, quality: f64| LearnedWeight {
                pattern: Pattern::Code,
                provider: ProviderId::Simulated,
                model: model.into(),
                quality,
                confidence: Confidence::High,
                samples: 50,
                demoted: false,
                avg_complexity: None,
            };
            e.set_weights(LearnedWeights::new(
                e.catalog(),
                1,
                vec![w("cheap", 0.40), w("mid", 0.57), w("premium", 0.60)],
            ));
        };
        let off = with_margin(0.0);
        weights(&off);
        let d = route(&off, &hard, &RouteRequest::default());
        assert_eq!(
            (d.chosen.model.as_str(), d.reason_code),
            ("premium", "best_available")
        );

        let on = with_margin(0.05);
        weights(&on);
        let d = route(&on, &hard, &RouteRequest::default());
        assert_eq!(
            (d.chosen.model.as_str(), d.reason_code),
            ("mid", "near_best_available"),
            "{}",
            d.reason
        );
        assert_eq!(d.alternatives[0].model, "premium");
        // An explicit min_quality means the caller wants the best there is.
        let strict = RouteRequest {
            min_quality: Some(0.9),
            ..RouteRequest::default()
        };
        assert_eq!(route(&on, &hard, &strict).chosen.model, "premium");
    }

    #[test]
    fn priors_of_unmeasured_models_follow_what_the_measured_ones_showed() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        let quality = RouteRequest {
            strategy: Strategy::Quality,
            ..RouteRequest::default()
        };
        assert_eq!(route(&e, &a, &quality).chosen.model, "premium");
        // The premium model, measured, did far worse on this traffic than its prior (0.95).
        learn(&e, "premium", 0.575, Confidence::High);
        let d = route(&e, &a, &quality);
        // Unmeasured "mid" (prior 0.82) is expected to fall short by as much: premium stays.
        assert_eq!(d.chosen.model, "premium", "{}", d.reason);
        let mid = d.alternatives.iter().find(|c| c.model == "mid").unwrap();
        assert_eq!(mid.expected_quality, round3(0.82 - (0.95 - 0.575)));
        // Other patterns keep their priors.
        let math = route(&e, &analysis(Pattern::Math, 0.5, 200), &quality);
        assert_eq!(math.chosen.expected_quality, 0.95);
        // Exploration still looks at the uncalibrated prior: an unmeasured model is worth
        // trying if it might be good enough.
        let explorer = engine(1.0);
        explorer.set_weights(LearnedWeights::new(
            explorer.catalog(),
            1,
            vec![LearnedWeight {
                pattern: Pattern::Code,
                provider: ProviderId::Simulated,
                model: "premium".into(),
                quality: 0.6,
                confidence: Confidence::High,
                samples: 20,
                demoted: false,
                avg_complexity: None,
            }],
        ));
        let d = route(&explorer, &a, &RouteRequest::default());
        assert!(d.explored, "{}", d.reason);
        assert_ne!(d.chosen.model, "premium");
    }

    #[test]
    fn exploration_samples_hard_prompts_of_a_pattern_too() {
        let e = engine(1.0);
        let hard = analysis(Pattern::Code, 0.95, 200);
        // "cheap" (prior 0.60) is within the margin of the pattern's target at medium
        // complexity, though not of this hard prompt's: it is still explored here, so its
        // ratings are not all from easy prompts.
        let picks: Vec<String> = (0..30)
            .map(|seed| {
                let d = e
                    .route(
                        &hard,
                        &RouteRequest::default(),
                        &mut fastrand::Rng::with_seed(seed),
                    )
                    .unwrap();
                assert!(d.explored, "{}", d.reason);
                d.chosen.model
            })
            .collect();
        assert!(picks.iter().any(|m| m == "cheap"), "{picks:?}");
    }

    #[test]
    fn low_confidence_weights_change_nothing() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        let before = route(&e, &a, &RouteRequest::default());
        learn(&e, "cheap", 0.99, Confidence::Low);
        let after = route(&e, &a, &RouteRequest::default());
        assert_eq!(before.chosen, after.chosen);
        assert_eq!(after.chosen.confidence, QualitySource::Prior);
    }

    #[test]
    fn proven_poor_models_are_demoted() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        learn(&e, "mid", 0.5, Confidence::High);
        let d = route(&e, &a, &RouteRequest::default());
        assert_eq!(d.chosen.model, "premium", "{}", d.reason);
    }

    #[test]
    fn exploration_rate_zero_never_explores_and_one_always_does() {
        let a = analysis(Pattern::Code, 0.5, 200);
        let never = engine(0.0);
        let always = engine(1.0);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..500 {
            let d = never.route(&a, &RouteRequest::default(), &mut rng).unwrap();
            assert!(!d.explored);
            assert_eq!(d.chosen.model, "mid");
        }
        for _ in 0..500 {
            let d = always
                .route(&a, &RouteRequest::default(), &mut rng)
                .unwrap();
            assert!(d.explored, "{}", d.reason);
            assert_eq!(d.reason_code, "explore");
            assert_eq!(d.chosen.model, "cheap", "the unproven cheaper candidate");
            assert_eq!(d.chosen.confidence, QualitySource::Prior);
            assert_eq!(
                d.alternatives[0].model, "mid",
                "the regular choice falls back first"
            );
        }
    }

    #[test]
    fn exploration_respects_confidence_min_quality_and_strategy() {
        let e = engine(1.0);
        let a = analysis(Pattern::Code, 0.5, 200);
        // Nothing to explore: an explicit min_quality above the cheap model's expectation, a
        // preview, or the `quality` strategy.
        for req in [
            RouteRequest {
                min_quality: Some(0.7),
                ..Default::default()
            },
            RouteRequest {
                preview: true,
                ..Default::default()
            },
            RouteRequest {
                strategy: Strategy::Quality,
                ..Default::default()
            },
        ] {
            assert!(!route(&e, &a, &req).explored, "{req:?}");
        }
        // A model already known with confidence is not explored.
        learn(&e, "cheap", 0.6, Confidence::High);
        let d = route(&e, &a, &RouteRequest::default());
        assert!(!d.explored, "{}", d.reason);
    }

    #[test]
    fn max_cost_is_never_exceeded() {
        let a = analysis(Pattern::Code, 0.5, 2000);
        for rate in [0.0, 1.0] {
            let e = engine(rate);
            let cheap = e.estimate(0, &a, None).2;
            let mid = e.estimate(1, &a, None).2;
            for max in [cheap, (cheap + mid) / 2.0, mid, 1.0] {
                for strategy in Strategy::ALL {
                    let req = RouteRequest {
                        strategy,
                        max_cost_usd: Some(max),
                        ..Default::default()
                    };
                    let mut rng = fastrand::Rng::with_seed(3);
                    for _ in 0..20 {
                        let d = e.route(&a, &req, &mut rng).unwrap();
                        assert!(d.chosen.est_cost_usd <= max, "{strategy}: {}", d.reason);
                        assert!(d.alternatives.iter().all(|c| c.est_cost_usd <= max));
                    }
                }
            }
            let err = e
                .route(
                    &a,
                    &RouteRequest {
                        max_cost_usd: Some(cheap / 2.0),
                        ..Default::default()
                    },
                    &mut fastrand::Rng::new(),
                )
                .unwrap_err();
            assert!(matches!(err, RouteError::OverBudget { .. }), "{err}");
        }
    }

    #[test]
    fn pinned_models_are_honoured_and_validated() {
        let e = engine(1.0);
        let a = analysis(Pattern::Chat, 0.1, 10);
        let premium = e.catalog().find(None, "premium").unwrap();
        let d = route(
            &e,
            &a,
            &RouteRequest {
                pinned: Some(premium),
                ..Default::default()
            },
        );
        assert_eq!(d.chosen.model, "premium");
        assert!(d.alternatives.is_empty() && !d.explored);
        let unconfigured = e.catalog().find(None, "unconfigured").unwrap();
        let err = e
            .route(
                &a,
                &RouteRequest {
                    pinned: Some(unconfigured),
                    ..Default::default()
                },
                &mut fastrand::Rng::new(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            RouteError::NotRoutable("anthropic/unconfigured".into())
        );
    }

    #[test]
    fn context_window_and_providers_filter_candidates() {
        let e = engine(0.0);
        let huge = analysis(Pattern::Summarization, 0.5, 150_000);
        let err = e
            .route(&huge, &RouteRequest::default(), &mut fastrand::Rng::new())
            .unwrap_err();
        assert!(matches!(err, RouteError::NoCandidate(_)), "{err}");
        let only = [ProviderId::Gemini];
        let err = e
            .route(
                &analysis(Pattern::Chat, 0.1, 10),
                &RouteRequest {
                    allowed_providers: Some(&only),
                    ..Default::default()
                },
                &mut fastrand::Rng::new(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("gemini"), "{err}");
    }

    #[test]
    fn baseline_is_the_best_routable_or_the_configured_model() {
        let e = engine(0.0);
        assert_eq!(e.model(e.baseline()).unwrap().model, "premium");
        let catalog = Arc::new(Catalog::parse(CATALOG, "test").unwrap());
        let mut s = settings(0.0);
        s.baseline_model = Some("simulated/mid".into());
        let e = RoutingEngine::new(catalog.clone(), &[ProviderId::Simulated], &s).unwrap();
        assert_eq!(e.model(e.baseline()).unwrap().model, "mid");
        s.baseline_model = Some("gpt-9".into());
        assert!(RoutingEngine::new(catalog, &[ProviderId::Simulated], &s).is_err());
    }

    #[test]
    fn output_estimate_respects_max_tokens() {
        let e = engine(0.0);
        let a = analysis(Pattern::Code, 1.0, 100);
        let (_, out, _) = e.estimate(0, &a, None);
        assert_eq!(out, 750);
        let (_, out, _) = e.estimate(0, &a, Some(100));
        assert_eq!(out, 100);
    }
}
