//! How the analyzer labels prompts that people other than us wrote and labelled: MT-Bench's 80
//! questions (8 categories, first turn) and GSM8K's word problems. Prints, per source category,
//! the patterns the analyzer gives, and the share that agrees with the category's pattern(s):
//! writing and roleplay → creative (roleplay also chat), reasoning → reasoning, math and GSM8K
//! → math, coding → code, extraction → extraction, stem and humanities → factual or reasoning.
//!
//! `cargo run --release --example pattern_labels -- MT_BENCH/question.jsonl [DATASET.jsonl]`
//! (the second: an `optimizer eval` dataset whose `gsm8k` category is scored as math).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "developer tool")]

use std::collections::BTreeMap;

use optimizer::routing::{Pattern, QueryPatternAnalyzer};

fn expected(category: &str) -> &'static [Pattern] {
    use Pattern as P;
    match category {
        "writing" => &[P::Creative],
        "roleplay" => &[P::Creative, P::Chat],
        "reasoning" => &[P::Reasoning],
        "math" | "gsm8k" => &[P::Math],
        "coding" => &[P::Code],
        "extraction" => &[P::Extraction],
        "stem" | "humanities" => &[P::Factual, P::Reasoning],
        _ => &[],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut prompts: Vec<(String, String)> = Vec::new();
    for line in std::fs::read_to_string(&args[1]).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        prompts.push((
            v["category"].as_str().unwrap().to_owned(),
            v["turns"][0].as_str().unwrap().to_owned(),
        ));
    }
    if let Some(path) = args.get(2) {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["category"] == "gsm8k" {
                prompts.push(("gsm8k".into(), v["prompt"].as_str().unwrap().to_owned()));
            }
        }
    }
    let analyzer = QueryPatternAnalyzer::new();
    let mut table: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let (mut agree, mut total) = (
        BTreeMap::<String, usize>::new(),
        BTreeMap::<String, usize>::new(),
    );
    for (category, prompt) in &prompts {
        let pattern = analyzer.analyze(prompt).pattern;
        *table
            .entry(category.clone())
            .or_default()
            .entry(pattern.to_string())
            .or_default() += 1;
        *total.entry(category.clone()).or_default() += 1;
        if std::env::var_os("SHOW_MISSES").is_some() && !expected(category).contains(&pattern) {
            println!(
                "{category} → {pattern}: {}",
                prompt.chars().take(160).collect::<String>()
            );
        }
        if expected(category).contains(&pattern) {
            *agree.entry(category.clone()).or_default() += 1;
        }
    }
    let (mut a, mut t, mut mt_a, mut mt_t) = (0, 0, 0, 0);
    for (category, patterns) in &table {
        let (ok, n) = (agree.get(category).copied().unwrap_or(0), total[category]);
        println!("{category:<11} {ok:>4}/{n:<4} {patterns:?}");
        a += ok;
        t += n;
        if category != "gsm8k" {
            mt_a += ok;
            mt_t += n;
        }
    }
    println!("MT-Bench agreement: {mt_a}/{mt_t}; all: {a}/{t}");
}
