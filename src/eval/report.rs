//! The evaluation report: the learned policy's accuracy and cost on the held-out prompts next to
//! every single model, the best and the cheapest single model, a random router and the oracle;
//! per category; where the prompts went. Rendered as a terminal table, JSON and an SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::dataset::Record;
use crate::routing::Catalog;

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
    // Random router: each prompt to a uniformly random model, in expectation.
    let (mut rv, mut rc) = (0.0, 0.0);
    for r in &records {
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
    let random = row("random router", (mean(rv, records.len()), rc));
    let oracle_routed: Vec<Routed<'_>> = records
        .iter()
        .map(|r| Routed {
            record: r,
            model: oracle_choice(r, prices),
        })
        .collect();
    let oracle = row("oracle", score(&oracle_routed, prices));

    let mut by_category: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_category
            .entry(r.category().to_owned())
            .or_default()
            .push(i);
    }
    let categories = by_category
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
        .collect();

    let policy_row = row("learned policy", score(policy, prices));
    Report {
        versus_mix: versus_mix(&policy_row, (cheapest.1, cheapest.2), (best.1, best.2)),
        dataset: ctx.dataset,
        records: ctx.records,
        duplicates_dropped: ctx.duplicates_dropped,
        train_prompts: ctx.train_prompts,
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
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn usd(x: f64) -> String {
    if x >= 1.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// Pads a table (first column left-aligned, the rest right-aligned).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// The terminal rendering.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dataset {} — {} prompts ({} duplicates dropped): {} for training, {} held out; \
         strategy {}, seed {}",
        r.dataset,
        r.records,
        r.duplicates_dropped,
        r.train_prompts,
        r.test_prompts,
        r.strategy,
        r.seed
    );
    if !r.rounds.is_empty() {
        out.push_str(
            "\nTraining rounds (sent through /complete, rated through /feedback, retrained):\n",
        );
        let rows: Vec<Vec<String>> = r
            .rounds
            .iter()
            .map(|s| {
                vec![
                    s.round.to_string(),
                    s.prompts.to_string(),
                    s.rated.to_string(),
                    s.explored.to_string(),
                    s.failed.to_string(),
                    s.changes.to_string(),
                    s.policy_version.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "round", "prompts", "rated", "explored", "failed", "changes", "policy",
            ],
            &rows,
        ));
    }
    let _ = writeln!(
        out,
        "\nHeld-out prompts ({}); accuracy = mean outcome (1 correct, 0 wrong, or the score); \
         vs best = share of {}'s figure:",
        r.test_prompts, r.best_single
    );
    let mut rows = Vec::new();
    let mut add = |row: &Row, tag: &str| {
        rows.push(vec![
            format!("{}{tag}", row.name),
            pct(row.accuracy),
            usd(row.cost_usd),
            pct(row.accuracy_vs_best),
            pct(row.cost_vs_best),
        ]);
    };
    add(&r.policy, "");
    if let Some(p) = &r.prior_policy {
        add(p, "");
    }
    for s in &r.singles {
        let tag = match (s.name == r.best_single, s.name == r.cheapest_single) {
            (true, true) => " (best, cheapest)",
            (true, false) => " (best)",
            (false, true) => " (cheapest)",
            _ => "",
        };
        add(s, tag);
    }
    add(&r.random, "");
    add(&r.oracle, "");
    out.push_str(&table(
        &["router", "accuracy", "cost", "acc vs best", "cost vs best"],
        &rows,
    ));
    let m = &r.versus_mix;
    let _ = writeln!(
        out,
        "Versus random mixing at equal cost ({} of prompts to {}, the rest to {}): {} → lift \
         {:+.1} points; {} of the {}→{} accuracy gap recovered.",
        pct(m.best_share),
        r.best_single,
        r.cheapest_single,
        pct(m.mix_accuracy),
        100.0 * m.lift,
        pct(m.gap_recovered),
        r.cheapest_single,
        r.best_single
    );
    if r.policy_failures > 0 {
        let _ = writeln!(
            out,
            "{} held-out requests failed (counted as wrong).",
            r.policy_failures
        );
    }
    out.push_str("\nWhere the learned policy sent the held-out prompts:\n");
    let total = r.test_prompts.max(1) as f64;
    let rows: Vec<Vec<String>> = r
        .policy_models
        .iter()
        .map(|(m, n)| vec![m.clone(), n.to_string(), pct(*n as f64 / total)])
        .collect();
    out.push_str(&table(&["model", "prompts", "share"], &rows));
    out.push_str("\nPer category:\n");
    let rows: Vec<Vec<String>> = r
        .categories
        .iter()
        .map(|c| {
            let top = c
                .models
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(m, n)| format!("{m} ({})", pct(*n as f64 / c.prompts.max(1) as f64)))
                .unwrap_or_default();
            vec![
                c.category.clone(),
                c.prompts.to_string(),
                pct(c.policy_accuracy),
                usd(c.policy_cost_usd),
                format!("{} {}", c.best_model, pct(c.best_accuracy)),
                usd(c.best_cost_usd),
                pct(c.oracle_accuracy),
                top,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "category",
            "prompts",
            "policy acc",
            "policy cost",
            "best model",
            "its cost",
            "oracle acc",
            "policy's main model",
        ],
        &rows,
    ));
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cost (x) vs accuracy (y): every single model, the random router and the oracle as points; the
/// learned policy (and the priors-only policy) marked. Hand-written SVG: a dozen points and
/// labels do not warrant a plotting library's dependency tree.
pub fn svg(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 520.0, 70.0, 40.0, 40.0, 50.0);
    let mut points: Vec<(&str, f64, f64, &str)> = r
        .singles
        .iter()
        .map(|s| (s.name.as_str(), s.cost_usd, s.accuracy, "#4a78c2"))
        .collect();
    points.push(("random", r.random.cost_usd, r.random.accuracy, "#999999"));
    points.push(("oracle", r.oracle.cost_usd, r.oracle.accuracy, "#2e9e4f"));
    if let Some(p) = &r.prior_policy {
        points.push(("priors only", p.cost_usd, p.accuracy, "#e0a030"));
    }
    points.push((
        "learned policy",
        r.policy.cost_usd,
        r.policy.accuracy,
        "#d62728",
    ));
    let max_cost = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.05;
    let (min_acc, max_acc) = points
        .iter()
        .fold((1.0f64, 0.0f64), |(lo, hi), p| (lo.min(p.2), hi.max(p.2)));
    let lo = (min_acc - 0.05).max(0.0);
    let hi = (max_acc + 0.05).min(1.0).max(lo + 0.01);
    let x = |c: f64| left + (c / max_cost) * (w - left - right);
    let y = |a: f64| top + (1.0 - (a - lo) / (hi - lo)) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="14">{} — cost vs accuracy on {} held-out prompts</text>"#,
        esc(&r.dataset),
        r.test_prompts
    );
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#333"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    for i in 0..=4 {
        let c = max_cost * f64::from(i) / 4.0;
        let a = lo + (hi - lo) * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            x(c),
            y1 + 18.0,
            esc(&usd(c)),
            x0 - 6.0,
            y(a) + 4.0,
            pct(a)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">total cost (USD)</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">accuracy</text>"##,
        (x0 + x1) / 2.0,
        h - 10.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    // Labels are placed greedily (the mix line's, then the learned policy's, …); one that would
    // overlap an earlier label moves to the nearest free line above or below.
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    // The random mix of the cheapest and the best single model: routing should beat this line.
    let single = |name: &str| r.singles.iter().find(|s| s.name == name);
    if let (Some(c), Some(b)) = (single(&r.cheapest_single), single(&r.best_single)) {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" fill="#777" font-size="11">random mix of cheapest and best</text>"##,
            x(c.cost_usd),
            y(c.accuracy),
            x(b.cost_usd),
            y(b.accuracy),
            (x(c.cost_usd) + x(b.cost_usd)) / 2.0,
            (y(c.accuracy) + y(b.accuracy)) / 2.0 + 16.0
        );
        let lx = (x(c.cost_usd) + x(b.cost_usd)) / 2.0;
        placed.push((
            lx,
            lx + 6.0 * 31.0,
            (y(c.accuracy) + y(b.accuracy)) / 2.0 + 16.0,
        ));
    }
    for (name, c, a, color) in points.iter().rev() {
        let (px, py) = (x(*c), y(*a));
        // Labels of points in the right half go to their left, so they stay on the canvas.
        let (lx, anchor) = if px > (x0 + x1) / 2.0 {
            (px - 9.0, "end")
        } else {
            (px + 9.0, "start")
        };
        let label = format!("{} ({}, {})", esc(name), pct(*a), esc(&usd(*c)));
        let width = 6.5 * label.chars().count() as f64;
        let (lx0, lx1) = if anchor == "end" {
            (lx - width, lx)
        } else {
            (lx, lx + width)
        };
        let free = |ly: f64| {
            !placed
                .iter()
                .any(|(a0, a1, y0)| (ly - y0).abs() < 13.0 && lx0 < *a1 && *a0 < lx1)
        };
        let ly = (0..40)
            .map(|i| {
                let step = f64::from((i + 1) / 2) * 13.0;
                if i % 2 == 0 {
                    py + 4.0 + step
                } else {
                    py + 4.0 - step
                }
            })
            .find(|ly| free(*ly))
            .unwrap_or(py + 4.0);
        placed.push((lx0, lx1, ly));
        let marker = if *name == "learned policy" {
            format!(
                r#"<path d="M {px:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} Z" fill="{color}"/>"#,
                py - 8.0,
                px + 7.0,
                py + 5.0,
                px - 7.0,
                py + 5.0
            )
        } else {
            format!(r#"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="{color}"/>"#)
        };
        let _ = writeln!(
            s,
            r#"{marker}<text x="{lx:.1}" y="{ly:.1}" text-anchor="{anchor}" fill="{color}">{label}</text>"#
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::dataset::Outcome;

    fn outcome(correct: bool, cost: f64) -> Outcome {
        Outcome {
            correct: Some(correct),
            score: None,
            response: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: Some(cost),
        }
    }

    fn record(id: &str, cat: &str, cheap: bool, premium: bool) -> Record {
        Record {
            id: id.into(),
            prompt: format!("prompt {id}"),
            category: Some(cat.into()),
            outcomes: BTreeMap::from([
                ("cheap".to_owned(), outcome(cheap, 1.0)),
                ("premium".to_owned(), outcome(premium, 10.0)),
            ]),
        }
    }

    #[test]
    fn baselines_oracle_and_random_are_computed_from_the_outcomes() {
        let prices = Prices {
            per_mtok: BTreeMap::from([
                ("cheap".to_owned(), (0.0, 0.0)),
                ("premium".to_owned(), (0.0, 0.0)),
            ]),
        };
        let recs = [
            record("1", "a", true, true),
            record("2", "a", true, true),
            record("3", "b", false, true),
            record("4", "b", false, false),
        ];
        let routed: Vec<Routed<'_>> = recs
            .iter()
            .map(|r| Routed {
                record: r,
                model: Some(
                    if r.category() == "a" {
                        "cheap"
                    } else {
                        "premium"
                    }
                    .into(),
                ),
            })
            .collect();
        let ctx = Context {
            dataset: "t".into(),
            records: 4,
            duplicates_dropped: 0,
            train_prompts: 0,
            strategy: "balanced".into(),
            seed: 1,
            rounds: vec![],
        };
        let r = build(ctx, &prices, &routed, None);
        assert_eq!(r.best_single, "premium");
        assert_eq!(r.cheapest_single, "cheap");
        assert_eq!((r.policy.accuracy, r.policy.cost_usd), (0.75, 22.0));
        assert_eq!(r.policy.cost_vs_best, 22.0 / 40.0);
        assert_eq!(r.policy.accuracy_vs_best, 1.0);
        assert_eq!(r.singles[0].accuracy_vs_best, 0.5 / 0.75);
        // Oracle: cheap on 1, 2; premium on 3; on 4 nobody is right → the cheaper.
        assert_eq!((r.oracle.accuracy, r.oracle.cost_usd), (0.75, 13.0));
        assert_eq!((r.random.accuracy, r.random.cost_usd), (0.625, 22.0));
        // Mixing cheap (0.5, $4) and premium (0.75, $40) to spend $22: half each → 0.625.
        assert_eq!(r.versus_mix.best_share, 0.5);
        assert_eq!(r.versus_mix.mix_accuracy, 0.625);
        assert_eq!(r.versus_mix.lift, 0.125);
        assert_eq!(r.versus_mix.gap_recovered, 1.0);
        assert_eq!(r.categories.len(), 2);
        assert_eq!(r.categories[1].best_model, "premium");
        assert_eq!(r.policy_models["cheap"], 2);
        let text = render(&r);
        assert!(text.contains("premium (best)"), "{text}");
        assert!(svg(&r).contains("learned policy"));
    }
}
