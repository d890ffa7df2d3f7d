//! How an evaluation dataset looks to the router: per (pattern, complexity tier), how many
//! prompts and each model's mean outcome. Shows what a router keyed on pattern × tier can tell
//! apart (docs/eval.md).
//!
//! `cargo run --release --example eval_breakdown -- DATASET.jsonl`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "developer tool")]

use std::collections::BTreeMap;

use optimizer::eval::dataset::Dataset;
use optimizer::routing::QueryPatternAnalyzer;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: eval_breakdown DATASET.jsonl");
    let data = Dataset::load(std::path::Path::new(&path)).expect("dataset loads");
    let models = data.models();
    let analyzer = QueryPatternAnalyzer::new();
    // (category, pattern, tier) -> (count, per-model value sums)
    let mut cells: BTreeMap<(String, String, String), (usize, Vec<f64>)> = BTreeMap::new();
    for r in &data.records {
        let a = analyzer.analyze(&r.prompt);
        for key in [
            (
                r.category().to_owned(),
                a.pattern.to_string(),
                a.tier.as_str().to_owned(),
            ),
            (
                r.category().to_owned(),
                a.pattern.to_string(),
                "*".to_owned(),
            ),
            (
                r.category().to_owned(),
                "*".to_owned(),
                a.tier.as_str().to_owned(),
            ),
        ] {
            let cell = cells
                .entry(key)
                .or_insert_with(|| (0, vec![0.0; models.len()]));
            cell.0 += 1;
            for (i, m) in models.iter().enumerate() {
                cell.1[i] += r.outcomes.get(m).map_or(0.0, |o| o.value());
            }
        }
    }
    print!(
        "{:<12} {:<14} {:<7} {:>6}",
        "category", "pattern", "tier", "n"
    );
    for m in &models {
        print!(" {:>10}", m.chars().take(10).collect::<String>());
    }
    println!();
    for ((c, p, t), (n, sums)) in &cells {
        print!("{c:<12} {p:<14} {t:<7} {n:>6}");
        for s in sums {
            print!(" {:>9.1}%", 100.0 * s / *n as f64);
        }
        println!();
    }
}
