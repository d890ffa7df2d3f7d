//! `recommend`: analyze + route + price against the baseline, without calling anything.

use serde::Serialize;

use super::analyzer::{Pattern, QueryPatternAnalyzer, Tier};
use super::engine::{Candidate, RouteError, RouteRequest, RoutingEngine, Strategy};
use optimizer_types::ProviderId;

/// The question, validated.
#[derive(Debug, Clone, Default)]
pub struct RecommendInput {
    pub prompt: String,
    pub strategy: Strategy,
    pub min_quality: Option<f64>,
    pub quality_share: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub allowed_providers: Option<Vec<ProviderId>>,
    /// Catalog model indices the caller may use (None: any).
    pub allowed_models: Option<Vec<usize>>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommended {
    pub provider: ProviderId,
    pub model: String,
    pub expected_quality: f64,
    /// `prior`, or the confidence (`high`/`medium`) of the learned estimate used.
    pub confidence: &'static str,
    pub est_cost_usd: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    pub provider: ProviderId,
    pub model: String,
    pub expected_quality: f64,
    pub confidence: &'static str,
    pub est_cost_usd: f64,
    pub meets_target: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub provider: ProviderId,
    pub model: String,
    pub est_cost_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

/// The answer of `POST /recommendation`.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub pattern: Pattern,
    pub complexity_score: f64,
    pub complexity_tier: Tier,
    pub strategy: Strategy,
    pub target_quality: Option<f64>,
    pub recommended: Recommended,
    pub alternatives: Vec<Alternative>,
    pub baseline: Baseline,
    pub est_savings_usd: f64,
    pub est_tokens: Tokens,
    pub policy_version: i64,
}

fn alternative(c: &Candidate) -> Alternative {
    Alternative {
        provider: c.provider,
        model: c.model.clone(),
        expected_quality: c.expected_quality,
        confidence: c.confidence.as_str(),
        est_cost_usd: round_usd(c.est_cost_usd),
        meets_target: c.meets_target,
    }
}

/// Rounds to a micro-dollar, enough for any single request and stable in JSON.
pub fn round_usd(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

pub fn recommend(
    engine: &RoutingEngine,
    input: &RecommendInput,
) -> Result<Recommendation, RouteError> {
    let analysis = QueryPatternAnalyzer::new().analyze(&input.prompt);
    let request = RouteRequest {
        strategy: input.strategy,
        min_quality: input.min_quality,
        max_cost_usd: input.max_cost_usd,
        allowed_providers: input.allowed_providers.as_deref(),
        allowed_models: input.allowed_models.as_deref(),
        pinned: None,
        max_output_tokens: input.max_tokens,
        quality_share: input.quality_share,
        preview: true,
    };
    let decision = engine.route(&analysis, &request, &mut fastrand::Rng::new())?;
    let baseline_index = engine.baseline();
    let (_, _, baseline_cost) = engine.estimate(baseline_index, &analysis, input.max_tokens);
    let baseline_model = engine.model(baseline_index);
    let chosen = &decision.chosen;
    Ok(Recommendation {
        pattern: analysis.pattern,
        complexity_score: analysis.complexity,
        complexity_tier: analysis.tier,
        strategy: decision.strategy,
        target_quality: decision.target_quality,
        recommended: Recommended {
            provider: chosen.provider,
            model: chosen.model.clone(),
            expected_quality: chosen.expected_quality,
            confidence: chosen.confidence.as_str(),
            est_cost_usd: round_usd(chosen.est_cost_usd),
            reason: decision.reason.clone(),
        },
        alternatives: decision.alternatives.iter().map(alternative).collect(),
        baseline: Baseline {
            provider: baseline_model.map_or(ProviderId::Simulated, |m| m.provider),
            model: baseline_model.map(|m| m.model.clone()).unwrap_or_default(),
            est_cost_usd: round_usd(baseline_cost),
        },
        est_savings_usd: round_usd(baseline_cost - chosen.est_cost_usd),
        est_tokens: Tokens {
            input: chosen.est_input_tokens,
            output: chosen.est_output_tokens,
        },
        policy_version: decision.policy_version,
    })
}
