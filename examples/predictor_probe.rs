//! Offline probe of the per-prompt predictor: fits it on a recorded-outcome dataset the way the
//! retrain does (one outcome per training prompt, of a model drawn at random — a bandit's view,
//! not full information), then routes the held-out prompts with each share rule and prints
//! accuracy, cost and lift over random mixing. For comparing predictor settings over seeds in
//! seconds; the figures that count come from `optimizer eval` through the service.
//!
//! `cargo run --release --example predictor_probe -- DATASET.jsonl CATALOG.toml [seeds] [lr] [epochs] [l2]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a developer's probe"
)]

use std::path::Path;

use optimizer::dataset::Dataset;
use optimizer::routing::Catalog;
use optimizer::routing::features::featurize;
use optimizer::routing::predictor::{FitSettings, Predictor, Sample, fit, logit};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = Dataset::load(Path::new(&args[1])).unwrap();
    let catalog = Catalog::load(Some(Path::new(&args[2]))).unwrap();
    let seeds: u64 = args.get(3).map_or(3, |s| s.parse().unwrap());
    let mut fs = FitSettings::default();
    if let Some(v) = args.get(4) {
        fs.learning_rate = v.parse().unwrap();
    }
    if let Some(v) = args.get(5) {
        fs.epochs = v.parse().unwrap();
    }
    if let Some(v) = args.get(6) {
        fs.l2 = v.parse().unwrap();
    }
    if let Some(v) = args.get(7) {
        fs.shared = v.parse().unwrap();
    }
    if let Ok(v) = std::env::var("RANK") {
        fs.rank = v.parse().unwrap();
    }
    if let Ok(v) = std::env::var("FRATE") {
        fs.factor_rate = v.parse().unwrap();
    }
    let models: Vec<usize> = (0..catalog.models().len()).collect();
    let feats: Vec<Vec<u32>> = data.records.iter().map(|r| featurize(&r.prompt)).collect();
    let outcome = |r: usize, m: usize| -> Option<f64> {
        data.records[r]
            .outcomes
            .get(&catalog.models()[m].model)
            .map(|o| o.value())
    };
    let cost = |r: usize, m: usize| -> f64 {
        let rec = &data.records[r];
        let o = rec.outcomes.get(&catalog.models()[m].model);
        match o {
            Some(o) => {
                let (i, out) = o.tokens(&rec.prompt);
                o.cost_usd
                    .unwrap_or_else(|| catalog.models()[m].cost_usd(i, out))
            }
            None => 0.0,
        }
    };
    let rule = std::env::var("RULE").unwrap_or_else(|_| "ratio".into());
    let knobs: Vec<f64> = match rule.as_str() {
        "abs" => vec![0.10, 0.05, 0.03, 0.02, 0.01, 0.0],
        "lag" => vec![0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.02],
        _ => vec![0.75, 0.8, 0.85, 0.90, 0.95, 0.97, 1.0],
    };
    for share in knobs {
        let mut acc_sum = (0.0, 0.0, 0.0);
        let mut lift_sum = 0.0;
        for seed in 1..=seeds {
            let mut order: Vec<usize> = (0..data.records.len()).collect();
            fastrand::Rng::with_seed(seed).shuffle(&mut order);
            let n_train = order.len() * 7 / 10;
            let (train, test) = order.split_at(n_train);
            let mut rng = fastrand::Rng::with_seed(seed * 7 + 1);
            // Bandit view: one random model's outcome per training prompt.
            let mut picks: Vec<(usize, usize, f64)> = Vec::new();
            let full = std::env::var("FULL").is_ok();
            for r in train {
                let m = models[rng.usize(..models.len())];
                for m2 in models.iter().copied().filter(|m2| full || *m2 == m) {
                    if let Some(y) = outcome(*r, m2) {
                        picks.push((*r, m2, y));
                    }
                }
            }
            let mut mean = vec![(0.0, 0.0); models.len()];
            for (_, m, y) in &picks {
                mean[*m].0 += y;
                mean[*m].1 += 1.0;
            }
            let base: Vec<f64> = mean
                .iter()
                .map(|(s, n)| if *n > 0.0 { s / n } else { 0.5 })
                .collect();
            let samples: Vec<Sample> = picks
                .iter()
                .map(|(r, m, y)| Sample {
                    model: *m,
                    features: feats[*r].as_slice().into(),
                    label: *y as f32,
                    base_logit: logit(base[*m]) as f32,
                })
                .collect();
            let fits = fit(&samples, models.len(), &fs, seed);
            let fits: Vec<_> = fits
                .into_iter()
                .enumerate()
                .filter_map(|(i, f)| f.map(|f| (i, f)))
                .collect();
            let p = Predictor::new(models.len(), &fits);
            let (mut acc, mut spent) = (0.0, 0.0);
            let best = (0..models.len())
                .max_by(|a, b| {
                    let s = |m: usize| test.iter().filter_map(|r| outcome(*r, m)).sum::<f64>();
                    s(*a).total_cmp(&s(*b))
                })
                .unwrap();
            let best_acc: f64 = test.iter().filter_map(|r| outcome(*r, best)).sum::<f64>();
            let best_cost: f64 = test.iter().map(|r| cost(*r, best)).sum();
            for r in test {
                let s = p.scores(&feats[*r]);
                let q: Vec<f64> = models
                    .iter()
                    .map(|m| s.quality(*m, base[*m]).unwrap_or(0.0))
                    .collect();
                let top = q.iter().cloned().fold(0.0, f64::max);
                let est: Vec<f64> = models.iter().map(|m| cost(*r, *m)).collect();
                let maxc = est.iter().cloned().fold(1e-12, f64::max);
                let pick = match rule.as_str() {
                    "abs" => models
                        .iter()
                        .filter(|m| q[**m] >= top - share - 1e-12)
                        .min_by(|a, b| est[**a].total_cmp(&est[**b]))
                        .copied()
                        .unwrap(),
                    "lag" => models
                        .iter()
                        .max_by(|a, b| {
                            (q[**a] - share * est[**a] / maxc)
                                .total_cmp(&(q[**b] - share * est[**b] / maxc))
                        })
                        .copied()
                        .unwrap(),
                    _ => models
                        .iter()
                        .filter(|m| q[**m] >= share * top - 1e-12)
                        .min_by(|a, b| est[**a].total_cmp(&est[**b]))
                        .copied()
                        .unwrap(),
                };
                acc += outcome(*r, pick).unwrap_or(0.0);
                spent += est[pick];
            }
            // Random mixing of the cheapest and the best at the same spend.
            let cheapest = (0..models.len())
                .min_by(|a, b| {
                    let c = |m: usize| test.iter().map(|r| cost(*r, m)).sum::<f64>();
                    c(*a).total_cmp(&c(*b))
                })
                .unwrap();
            let cheap_acc: f64 = test
                .iter()
                .filter_map(|r| outcome(*r, cheapest))
                .sum::<f64>();
            let cheap_cost: f64 = test.iter().map(|r| cost(*r, cheapest)).sum();
            let w = ((spent - cheap_cost) / (best_cost - cheap_cost)).clamp(0.0, 1.0);
            let mix = cheap_acc + w * (best_acc - cheap_acc);
            lift_sum += (acc - mix) / test.len() as f64;
            acc_sum.0 += acc / best_acc;
            acc_sum.1 += spent / best_cost;
            acc_sum.2 += acc / test.len() as f64;
        }
        let n = seeds as f64;
        println!(
            "share {share:.2}: accuracy {:.1}% ({:.1}% of best) at {:.1}% of best's cost, lift {:+.1}",
            100.0 * acc_sum.2 / n,
            100.0 * acc_sum.0 / n,
            100.0 * acc_sum.1 / n,
            100.0 * lift_sum / n
        );
    }
}
