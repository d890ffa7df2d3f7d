//! The evaluation report: the learned policy's accuracy and cost on the held-out prompts next to
//! every single model, the best and the cheapest single model, a random router and the oracle;
//! per category; where the prompts went. Rendered as a terminal table ([`text`]), JSON and an SVG
//! plot ([`svg`](mod@svg)); this module scores.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dataset::Record;
use crate::routing::Catalog;

mod svg;
mod text;

pub use svg::svg;
pub use text::render;

/// Prices of the evaluated models, by dataset model id (the replay models of the catalog).
#[derive(Debug, Clone, Default)]
pub struct Prices {
    per_mtok: BTreeMap<String, (f64, f64)>,
}

impl Prices {
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let per_mtok = catalog
            .models()
            .iter()
            .filter(|m| m.provider == crate::providers::ProviderId::Replay)
            .map(|m| {
                (
                    m.model.clone(),
                    (m.input_usd_per_mtok, m.output_usd_per_mtok),
                )
            })
            .collect();
        Self { per_mtok }
    }

    pub fn models(&self) -> impl Iterator<Item = &String> {
        self.per_mtok.keys()
    }

    /// What `model` cost (or would have cost) on `record`: the recorded cost, else list price ×
    /// tokens. None when the model has no outcome for the record.
    pub fn cost(&self, record: &Record, model: &str) -> Option<f64> {
        let o = record.outcomes.get(model)?;
        if let Some(c) = o.cost_usd {
            return Some(c);
        }
        let (i, out) = self.per_mtok.get(model).copied().unwrap_or_default();
        let (ti, to) = o.tokens(&record.prompt);
        Some((ti as f64 * i + to as f64 * out) / 1_000_000.0)
    }

    /// The outcome's value (0..1), 0 when the model has no outcome.
    pub fn value(record: &Record, model: &str) -> f64 {
        record.outcomes.get(model).map_or(0.0, |o| o.value())
    }
}

/// One router or model: mean accuracy (or score) and total cost over the held-out prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub accuracy: f64,
    pub cost_usd: f64,
    /// Accuracy as a share of the best single model's (1 = as good).
    pub accuracy_vs_best: f64,
    /// Cost as a share of the best single model's.
    pub cost_vs_best: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryRow {
    pub category: String,
    pub prompts: usize,
    pub policy_accuracy: f64,
    pub policy_cost_usd: f64,
    pub best_model: String,
    pub best_accuracy: f64,
    pub best_cost_usd: f64,
    pub oracle_accuracy: f64,
    pub models: BTreeMap<String, usize>,
}

/// What happened in one training round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    pub prompts: usize,
    pub rated: usize,
    pub explored: usize,
    pub failed: usize,
    pub changes: i64,
    pub policy_version: i64,
    pub models: BTreeMap<String, usize>,
    /// The held-out prompts routed after this round (`--learning-curve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<CurvePoint>,
}

/// The policy after one round, on the held-out prompts, against the best single model there.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CurvePoint {
    pub accuracy_vs_best: f64,
    pub cost_vs_best: f64,
}

/// What shadow comparisons cost while training (`--shadow-rate`).
#[derive(Debug, Clone, Serialize)]
pub struct ShadowSpend {
    pub rate: f64,
    pub models: String,
    pub requests_judged: i64,
    pub scores: i64,
    pub shadow_cost_usd: f64,
    pub judge_cost_usd: f64,
    /// What the training requests themselves cost.
    pub training_cost_usd: f64,
    /// (shadow + judge) / training cost.
    pub share_of_training_cost: f64,
}

/// `routed` against the best single model on the same prompts.
pub fn versus_best(prices: &Prices, routed: &[Routed<'_>]) -> CurvePoint {
    let records: Vec<&Record> = routed.iter().map(|r| r.record).collect();
    let (accuracy, cost) = score(routed, prices);
    let best = prices
        .models()
        .map(|m| score(&fixed(&records, m), prices))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .unwrap_or_default();
    CurvePoint {
        accuracy_vs_best: ratio(accuracy, best.0),
        cost_vs_best: ratio(cost, best.1),
    }
}

/// Where one held-out prompt went (None: the request failed).
#[derive(Debug, Clone)]
pub struct Routed<'a> {
    pub record: &'a Record,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub records: usize,
    pub duplicates_dropped: usize,
    pub train_prompts: usize,
    /// Of the training prompts, those loaded as a bootstrap dataset (every model's outcome)
    /// instead of sent and rated.
    pub bootstrap_prompts: usize,
    pub test_prompts: usize,
    pub strategy: String,
    pub seed: u64,
    pub rounds: Vec<RoundSummary>,
    /// The learned policy on the held-out prompts.
    pub policy: Row,
    /// The same service before any rating (catalog priors only).
    pub prior_policy: Option<Row>,
    pub singles: Vec<Row>,
    pub best_single: String,
    pub cheapest_single: String,
    pub random: Row,
    pub oracle: Row,
    /// The learned policy against the simplest alternative router: sending a random share of
    /// the prompts to the best single model and the rest to the cheapest, with that share
    /// chosen to spend what the policy spent.
    pub versus_mix: VersusMix,
    pub policy_failures: usize,
    pub policy_models: BTreeMap<String, usize>,
    pub categories: Vec<CategoryRow>,
    /// The same learned policy asked with every strategy (the cost-vs-accuracy frontier), in
    /// the order cost, balanced, quality. Empty when not measured.
    pub frontier: Vec<FrontierPoint>,
    /// The last retrain's quality-target calibration (`after_metrics.quality_target`): each
    /// strategy's promise and its off-policy estimate, to read against the frontier's realised
    /// shares. None when the last retrain fitted no new predictor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promise: Option<serde_json::Value>,
    /// Shadow comparisons while training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpend>,
}

/// One strategy's routing of the held-out prompts under the final policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierPoint {
    pub strategy: String,
    pub row: Row,
    pub versus_mix: VersusMix,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersusMix {
    /// Share of prompts the mix sends to the best model to spend what the policy spent (0..1).
    pub best_share: f64,
    /// The mix's accuracy at that share.
    pub mix_accuracy: f64,
    /// Policy accuracy − mix accuracy: what routing adds over random mixing at equal cost.
    pub lift: f64,
    /// Share of the cheapest→best accuracy gap the policy recovers (RouteLLM's PGR).
    pub gap_recovered: f64,
}

/// The frontier points from each strategy's routing of the held-out prompts, scored like the
/// policy row of `report`.
pub fn frontier(
    report: &Report,
    prices: &Prices,
    runs: &[(String, Vec<Routed<'_>>)],
) -> Vec<FrontierPoint> {
    let single = |name: &str| {
        report
            .singles
            .iter()
            .find(|r| r.name == name)
            .map_or((0.0, 0.0), |r| (r.accuracy, r.cost_usd))
    };
    let (best, cheapest) = (single(&report.best_single), single(&report.cheapest_single));
    runs.iter()
        .map(|(strategy, routed)| {
            let (accuracy, cost_usd) = score(routed, prices);
            let row = Row {
                name: format!("learned policy, {strategy}"),
                accuracy,
                cost_usd,
                accuracy_vs_best: ratio(accuracy, best.0),
                cost_vs_best: ratio(cost_usd, best.1),
            };
            FrontierPoint {
                strategy: strategy.clone(),
                versus_mix: versus_mix(&row, cheapest, best),
                row,
            }
        })
        .collect()
}

fn versus_mix(policy: &Row, cheapest: (f64, f64), best: (f64, f64)) -> VersusMix {
    let ((ca, cc), (ba, bc)) = (cheapest, best);
    let best_share = if bc > cc {
        ((policy.cost_usd - cc) / (bc - cc)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let mix_accuracy = ca + best_share * (ba - ca);
    VersusMix {
        best_share,
        mix_accuracy,
        lift: policy.accuracy - mix_accuracy,
        gap_recovered: if ba > ca {
            (policy.accuracy - ca) / (ba - ca)
        } else {
            0.0
        },
    }
}

fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Accuracy and cost of a routing (failed requests count as wrong and free).
fn score(routed: &[Routed<'_>], prices: &Prices) -> (f64, f64) {
    let (mut value, mut cost) = (0.0, 0.0);
    for r in routed {
        if let Some(m) = &r.model {
            value += Prices::value(r.record, m);
            cost += prices.cost(r.record, m).unwrap_or_default();
        }
    }
    (mean(value, routed.len()), cost)
}

/// The oracle: per prompt, the best outcome, and among equals the cheapest model.
fn oracle_choice(record: &Record, prices: &Prices) -> Option<String> {
    prices
        .models()
        .filter(|m| record.outcomes.contains_key(*m))
        .max_by(|a, b| {
            Prices::value(record, a)
                .total_cmp(&Prices::value(record, b))
                .then_with(|| {
                    let (ca, cb) = (prices.cost(record, a), prices.cost(record, b));
                    cb.unwrap_or_default().total_cmp(&ca.unwrap_or_default())
                })
        })
        .cloned()
}

fn fixed<'a>(records: &[&'a Record], model: &str) -> Vec<Routed<'a>> {
    records
        .iter()
        .map(|r| Routed {
            record: r,
            model: r.outcomes.contains_key(model).then(|| model.to_owned()),
        })
        .collect()
}

fn count(routed: &[Routed<'_>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in routed {
        let key = r.model.clone().unwrap_or_else(|| "(failed)".into());
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// Inputs of [`build`] besides the routings.
pub struct Context {
    pub dataset: String,
    pub records: usize,
    pub duplicates_dropped: usize,
    pub train_prompts: usize,
    pub bootstrap_prompts: usize,
    pub strategy: String,
    pub seed: u64,
    pub rounds: Vec<RoundSummary>,
}

/// Builds the report from the learned policy's (and optionally the prior policy's) routing of
/// the held-out prompts.
pub fn build(
    ctx: Context,
    prices: &Prices,
    policy: &[Routed<'_>],
    prior: Option<&[Routed<'_>]>,
) -> Report {
    let records: Vec<&Record> = policy.iter().map(|r| r.record).collect();
    let models: Vec<String> = prices.models().cloned().collect();
    let singles_raw: Vec<(String, f64, f64)> = models
        .iter()
        .map(|m| {
            let (a, c) = score(&fixed(&records, m), prices);
            (m.clone(), a, c)
        })
        .collect();
    let best = singles_raw
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .cloned()
        .unwrap_or_default();
    let cheapest = singles_raw
        .iter()
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.1.total_cmp(&a.1)))
        .cloned()
        .unwrap_or_default();
    let row = |name: &str, (accuracy, cost_usd): (f64, f64)| Row {
        name: name.to_owned(),
        accuracy,
        cost_usd,
        accuracy_vs_best: ratio(accuracy, best.1),
        cost_vs_best: ratio(cost_usd, best.2),
    };
    let singles: Vec<Row> = singles_raw
        .iter()
        .map(|(m, a, c)| row(m, (*a, *c)))
        .collect();
    let random = row("random router", random_router(&records, &models, prices));
    let oracle_routed: Vec<Routed<'_>> = records
        .iter()
        .map(|r| Routed {
            record: r,
            model: oracle_choice(r, prices),
        })
        .collect();
    let oracle = row("oracle", score(&oracle_routed, prices));

    let categories = categories(&records, &models, prices, policy, &oracle_routed);

    let policy_row = row("learned policy", score(policy, prices));
    Report {
        versus_mix: versus_mix(&policy_row, (cheapest.1, cheapest.2), (best.1, best.2)),
        dataset: ctx.dataset,
        records: ctx.records,
        duplicates_dropped: ctx.duplicates_dropped,
        train_prompts: ctx.train_prompts,
        bootstrap_prompts: ctx.bootstrap_prompts,
        test_prompts: records.len(),
        strategy: ctx.strategy,
        seed: ctx.seed,
        rounds: ctx.rounds,
        policy: policy_row,
        prior_policy: prior.map(|p| row("priors only (before learning)", score(p, prices))),
        singles,
        best_single: best.0.clone(),
        cheapest_single: cheapest.0.clone(),
        random,
        oracle,
        policy_failures: policy.iter().filter(|r| r.model.is_none()).count(),
        policy_models: count(policy),
        categories,
        frontier: Vec::new(),
        promise: None,
        shadow: None,
    }
}

/// A router sending each prompt to a uniformly random model: (accuracy, cost) in expectation.
fn random_router(records: &[&Record], models: &[String], prices: &Prices) -> (f64, f64) {
    let (mut rv, mut rc) = (0.0, 0.0);
    for r in records {
        let available: Vec<&String> = models
            .iter()
            .filter(|m| r.outcomes.contains_key(*m))
            .collect();
        let n = available.len().max(1) as f64;
        rv += available.iter().map(|m| Prices::value(r, m)).sum::<f64>() / n;
        rc += available
            .iter()
            .map(|m| prices.cost(r, m).unwrap_or_default())
            .sum::<f64>()
            / n;
    }
    (mean(rv, records.len()), rc)
}

/// Accuracy per category: the policy's, the category's best single model's, the oracle's.
fn categories(
    records: &[&Record],
    models: &[String],
    prices: &Prices,
    policy: &[Routed<'_>],
    oracle_routed: &[Routed<'_>],
) -> Vec<CategoryRow> {
    let mut by_category: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_category
            .entry(r.category().to_owned())
            .or_default()
            .push(i);
    }
    by_category
        .into_iter()
        .map(|(category, idx)| {
            let routed: Vec<Routed<'_>> = idx.iter().map(|i| policy[*i].clone()).collect();
            let recs: Vec<&Record> = idx.iter().map(|i| records[*i]).collect();
            let (pa, pc) = score(&routed, prices);
            let best = models
                .iter()
                .map(|m| {
                    let (a, c) = score(&fixed(&recs, m), prices);
                    (m.clone(), a, c)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
                .unwrap_or_default();
            let oracle: Vec<Routed<'_>> = idx.iter().map(|i| oracle_routed[*i].clone()).collect();
            CategoryRow {
                category,
                prompts: idx.len(),
                policy_accuracy: pa,
                policy_cost_usd: pc,
                best_model: best.0,
                best_accuracy: best.1,
                best_cost_usd: best.2,
                oracle_accuracy: score(&oracle, prices).0,
                models: count(&routed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
