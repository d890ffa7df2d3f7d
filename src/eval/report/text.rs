//! The terminal rendering of a [`Report`]: plain tables (comfy-table, no borders) and the
//! sentences between them.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, ColumnConstraint, LineStyle, Table, TableStyle};

use super::{Report, Row};

pub(super) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub(super) fn usd(x: f64) -> String {
    if x >= 1.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// A borderless table, header underlined: the first column left-aligned, the rest right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_style(TableStyle::new().header_separator(LineStyle::none().fill('-').junction(' ')))
        .set_header(header.to_vec())
        .add_rows(rows.to_vec());
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_constraint(ColumnConstraint::ContentWidth);
        if i > 0 {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out: String = t.lines().map(|l| l.trim_end().to_owned() + "\n").collect();
    if out.is_empty() {
        out.push('\n');
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
    rounds(&mut out, r);
    comparison(&mut out, r);
    frontier(&mut out, r);
    distribution(&mut out, r);
    categories(&mut out, r);
    out
}

/// The training rounds.
fn rounds(out: &mut String, r: &Report) {
    if r.rounds.is_empty() {
        return;
    }
    out.push_str(
        "\nTraining rounds (sent through /complete, rated through /feedback, retrained):\n",
    );
    if r.bootstrap_prompts > 0 {
        out.push_str(
            "(round 0: a bootstrap dataset — every model's outcome of those prompts, loaded as \
             `optimizer train --dataset` loads it — then retrained)\n",
        );
    }
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
                s.held_out.map_or("-".to_owned(), |c| {
                    format!("{:.1}%", 100.0 * c.accuracy_vs_best)
                }),
                s.held_out.map_or("-".to_owned(), |c| {
                    format!("{:.1}%", 100.0 * c.cost_vs_best)
                }),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "round",
            "prompts",
            "rated",
            "explored",
            "failed",
            "changes",
            "policy",
            "held-out acc/best",
            "cost/best",
        ],
        &rows,
    ));
    if let Some(sh) = &r.shadow {
        out.push_str(&format!(
            "\nShadow comparisons while training (rate {}, models {}): {} requests judged, {} \
             scores; shadow ${:.4} + judge ${:.4} = {:.1}% of the training requests' own cost \
             (${:.4})\n",
            sh.rate,
            sh.models,
            sh.requests_judged,
            sh.scores,
            sh.shadow_cost_usd,
            sh.judge_cost_usd,
            100.0 * sh.share_of_training_cost,
            sh.training_cost_usd
        ));
    }
}

/// The same learned policy under every strategy.
fn frontier(out: &mut String, r: &Report) {
    if r.frontier.is_empty() {
        return;
    }
    out.push_str("\nThe same learned policy, every strategy (the cost-vs-accuracy frontier):\n");
    let rows: Vec<Vec<String>> = r
        .frontier
        .iter()
        .map(|p| {
            vec![
                p.strategy.clone(),
                pct(p.row.accuracy),
                usd(p.row.cost_usd),
                pct(p.row.accuracy_vs_best),
                pct(p.row.cost_vs_best),
                format!("{:+.1}", 100.0 * p.versus_mix.lift),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "strategy",
            "accuracy",
            "cost",
            "acc vs best",
            "cost vs best",
            "lift (points)",
        ],
        &rows,
    ));
    promise(out, r);
}

/// Each strategy's promise (the last retrain's calibration) against what it realised here.
fn promise(out: &mut String, r: &Report) {
    let Some(p) = &r.promise else {
        return;
    };
    let calibration = &p["calibration"];
    out.push_str(
        "\nThe promise (quality target, calibrated off-policy at the last retrain) against the \
         held-out share of the best single model's accuracy:\n",
    );
    let rows: Vec<Vec<String>> = r
        .frontier
        .iter()
        .map(|f| {
            let k = &calibration[f.strategy.as_str()];
            let share = |key: &str| match (k[key].as_f64(), k["best"].as_f64()) {
                (Some(v), Some(b)) if b > 0.0 => pct(v / b),
                _ => "-".to_owned(),
            };
            let kept = k["target"].as_f64().map_or("-".to_owned(), |t| {
                if f.row.accuracy_vs_best >= t - 0.015 {
                    "yes"
                } else {
                    "NO"
                }
                .to_owned()
            });
            vec![
                f.strategy.clone(),
                k["target"].as_f64().map_or("unsupported".to_owned(), pct),
                share("estimate"),
                share("lower"),
                k["lambda"]
                    .as_f64()
                    .map_or("-".to_owned(), |l| format!("{l:.3}")),
                pct(f.row.accuracy_vs_best),
                kept,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "strategy",
            "target",
            "estimated",
            "lower bound",
            "λ",
            "realised",
            "kept (±1.5)",
        ],
        &rows,
    ));
    if let Some(why) = p["unsupported"].as_array().filter(|a| !a.is_empty()) {
        for w in why {
            let _ = writeln!(out, "  unsupported: {}", w.as_str().unwrap_or_default());
        }
    }
}

/// The policy next to every single model, the random router and the oracle; the lift over
/// random mixing at equal cost.
fn comparison(out: &mut String, r: &Report) {
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
}

/// Where the learned policy sent the held-out prompts.
fn distribution(out: &mut String, r: &Report) {
    out.push_str("\nWhere the learned policy sent the held-out prompts:\n");
    let total = r.test_prompts.max(1) as f64;
    let rows: Vec<Vec<String>> = r
        .policy_models
        .iter()
        .map(|(m, n)| vec![m.clone(), n.to_string(), pct(*n as f64 / total)])
        .collect();
    out.push_str(&table(&["model", "prompts", "share"], &rows));
}

/// Per category: the policy against the category's best model and the oracle.
fn categories(out: &mut String, r: &Report) {
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
}
