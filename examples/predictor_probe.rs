//! Offline probe of the per-prompt predictor: fits it on a recorded-outcome dataset the way the
//! retrain does (one outcome per training prompt, of a model drawn at random — a bandit's view,
//! not full information), then routes the held-out prompts with each share rule and prints
//! accuracy, cost and lift over random mixing. For comparing predictor settings over seeds in
//! seconds; the figures that count come from `optimizer eval` through the service.
//!
//! `cargo run --release --example predictor_probe -- DATASET.jsonl CATALOG.toml [seeds] [lr] [epochs] [l2] [shared]`
//!
//! Environment: `FULL=1` every model's outcome of every training prompt; `RULE=ratio|abs|lag|budget`
//! the decision rule (`budget`: q − λ·cost with λ fitted so the predicted quality over the
//! training prompts — `CALIB_TEST=1`: the test prompts — keeps the share of the best single
//! model's; `CALIB=ips`: fitted so the logged outcomes of half the training prompts, routed by
//! a predictor fitted on the other half, keep that share — `FORM=ratio` searches the
//! per-prompt share instead of λ); `CLUSTERS=K` (with `CSHRINK`, `DIMS`) a k-means cluster × model mean as the base
//! instead of the model's mean, `LINEAR=0` without the linear predictor; `RANK`, `FRATE` the
//! low-rank part; `KNN=K` (with `KSHRINK`) the similarity-weighted outcomes of the K nearest
//! training prompts as the base; `FEAT=words|words1|words3` a probe-only word n-gram featurizer instead of the
//! shipped one.

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
    let feat_kind = std::env::var("FEAT").unwrap_or_default();
    let feats: Vec<Vec<u32>> = data
        .records
        .iter()
        .map(|r| match feat_kind.as_str() {
            "" => featurize(&r.prompt),
            kind => alt_features(&r.prompt, kind),
        })
        .collect();
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
        "budget" => vec![0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99],
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
            // Clusters of the training prompts (no labels needed), per cluster x model means
            // shrunk toward the model's global mean.
            let k_clusters: usize = std::env::var("CLUSTERS").map_or(0, |v| v.parse().unwrap());
            let cshrink: f64 = std::env::var("CSHRINK").map_or(10.0, |v| v.parse().unwrap());
            let dims: usize = std::env::var("DIMS").map_or(256, |v| v.parse().unwrap());
            let k_nn: usize = std::env::var("KNN").map_or(0, |v| v.parse().unwrap());
            let proj: Vec<Vec<f32>> = if k_clusters > 0 || k_nn > 0 {
                feats.iter().map(|f| project(f, dims)).collect()
            } else {
                Vec::new()
            };
            let centroids = if k_clusters > 0 {
                kmeans(&proj, train, k_clusters, seed)
            } else {
                Vec::new()
            };
            let cluster_of = |r: usize| -> usize {
                if k_clusters == 0 {
                    return 0;
                }
                nearest(&centroids, &proj[r])
            };
            let mut cstat = vec![(0.0f64, 0.0f64); k_clusters.max(1) * models.len()];
            for (r, m, y) in &picks {
                let c = cluster_of(*r);
                cstat[c * models.len() + m].0 += y;
                cstat[c * models.len() + m].1 += 1.0;
            }
            // k nearest training prompts (cosine of the projections), per model the
            // similarity-weighted mean of their logged outcomes shrunk toward the model's mean.
            let knn_base: Vec<Vec<f64>> = if k_nn > 0 {
                let kshrink: f64 = std::env::var("KSHRINK").map_or(2.0, |v| v.parse().unwrap());
                let mut logged: Vec<Vec<(usize, f64)>> = vec![Vec::new(); data.records.len()];
                for (r, m, y) in &picks {
                    logged[*r].push((*m, *y));
                }
                (0..data.records.len())
                    .map(|r| {
                        let mut sims: Vec<(f32, usize)> = train
                            .iter()
                            .filter(|t| **t != r)
                            .map(|t| {
                                let d: f32 =
                                    proj[r].iter().zip(&proj[*t]).map(|(a, b)| a * b).sum();
                                (d, *t)
                            })
                            .collect();
                        let k = k_nn.min(sims.len());
                        sims.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
                            b.0.total_cmp(&a.0)
                        });
                        let mut acc = vec![(0.0f64, 0.0f64); models.len()];
                        for (d, t) in &sims[..k] {
                            let wgt = f64::from(d.max(0.0));
                            for (m, y) in &logged[*t] {
                                acc[*m].0 += wgt * y;
                                acc[*m].1 += wgt;
                            }
                        }
                        acc.iter()
                            .enumerate()
                            .map(|(m, (sy, sw))| (sy + kshrink * base[m]) / (sw + kshrink))
                            .collect()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let cbase = |r: usize, m: usize| -> f64 {
                if k_nn > 0 {
                    return knn_base[r][m];
                }
                if k_clusters == 0 {
                    return base[m];
                }
                let (s, n) = cstat[cluster_of(r) * models.len() + m];
                (s + cshrink * base[m]) / (n + cshrink)
            };
            let linear = std::env::var("LINEAR").map_or(true, |v| v != "0");
            let samples: Vec<Sample> = picks
                .iter()
                .filter(|_| linear)
                .map(|(r, m, y)| Sample {
                    model: *m,
                    features: feats[*r].as_slice().into(),
                    label: *y as f32,
                    weight: 1.0,
                    base_logit: logit(cbase(*r, *m)) as f32,
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
            // Traffic-calibrated rule: per prompt argmax q - lambda * cost, with lambda set so
            // that the policy's predicted quality over the training prompts keeps `share` of
            // the best single model's predicted quality.
            let predict = |r: usize| -> (Vec<f64>, Vec<f64>) {
                let s = p.scores(&feats[r]);
                let q = models
                    .iter()
                    .map(|m| {
                        let b = cbase(r, *m);
                        s.quality(*m, b).unwrap_or(b)
                    })
                    .collect();
                (q, models.iter().map(|m| cost(r, *m)).collect())
            };
            let calib: Vec<(Vec<f64>, Vec<f64>)> = if rule == "budget" {
                let every = std::env::var("CALIB_TEST").is_ok();
                let set: &[usize] = if every { test } else { train };
                set.iter().map(|r| predict(*r)).collect()
            } else {
                Vec::new()
            };
            // FORM=ratio: the knob is the per-prompt share t (cheapest model with q >= t * top),
            // searched as exp(-lambda) so the same bisection applies.
            let ratio_form = std::env::var("FORM").is_ok_and(|v| v == "ratio");
            let choose = |q: &[f64], c: &[f64], lambda: f64| -> usize {
                if ratio_form {
                    let t = (-lambda).exp();
                    let top = q.iter().cloned().fold(0.0, f64::max);
                    return (0..q.len())
                        .filter(|m| q[*m] >= t * top - 1e-12)
                        .min_by(|a, b| c[*a].total_cmp(&c[*b]))
                        .unwrap();
                }
                (0..q.len())
                    .max_by(|a, b| (q[*a] - lambda * c[*a]).total_cmp(&(q[*b] - lambda * c[*b])))
                    .unwrap()
            };
            let ips = std::env::var("CALIB").is_ok_and(|v| v == "ips");
            let lambda = if rule == "budget" && ips {
                // Cross-fitted: a predictor fitted on half the logged outcomes routes the other
                // half; where it picks the logged model, the logged outcome counts (uniform
                // logging: SNIPS is the mean over the matches). lambda keeps `share` of the best
                // single model's logged mean on that half.
                let half_a: Vec<Sample> = samples.iter().step_by(2).cloned().collect();
                let fits_a: Vec<_> = fit(&half_a, models.len(), &fs, seed)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, f)| f.map(|f| (i, f)))
                    .collect();
                let pa = Predictor::new(models.len(), &fits_a);
                let half_b: Vec<(Vec<f64>, Vec<f64>, usize, f64)> = picks
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|(r, m, y)| {
                        let s = pa.scores(&feats[*r]);
                        let q = models
                            .iter()
                            .map(|mm| {
                                let b = cbase(*r, *mm);
                                s.quality(*mm, b).unwrap_or(b)
                            })
                            .collect();
                        (q, models.iter().map(|mm| cost(*r, *mm)).collect(), *m, *y)
                    })
                    .collect();
                let best_logged = (0..models.len())
                    .map(|m| {
                        let (s, n) = half_b
                            .iter()
                            .filter(|h| h.2 == m)
                            .fold((0.0, 0.0), |(s, n), h| (s + h.3, n + 1.0));
                        if n > 0.0 { s / n } else { 0.0 }
                    })
                    .fold(0.0, f64::max);
                let kept = |l: f64| {
                    let (s, n) = half_b
                        .iter()
                        .filter(|h| choose(&h.0, &h.1, l) == h.2)
                        .fold((0.0, 0.0), |(s, n), h| (s + h.3, n + 1.0));
                    if n > 0.0 { s / n } else { 0.0 }
                };
                largest_kept(ratio_form, |l| kept(l) >= share * best_logged)
            } else if rule == "budget" {
                let best_pred = (0..models.len())
                    .map(|m| calib.iter().map(|(q, _)| q[m]).sum::<f64>())
                    .fold(0.0, f64::max);
                let kept = |l: f64| calib.iter().map(|(q, c)| q[choose(q, c, l)]).sum::<f64>();
                largest_kept(ratio_form, |l| kept(l) >= share * best_pred)
            } else {
                0.0
            };
            for r in test {
                if rule == "budget" {
                    let (q, c) = predict(*r);
                    let pick = choose(&q, &c, lambda);
                    acc += outcome(*r, pick).unwrap_or(0.0);
                    spent += c[pick];
                    continue;
                }
                let s = p.scores(&feats[*r]);
                let q: Vec<f64> = models
                    .iter()
                    .map(|m| {
                        let b = cbase(*r, *m);
                        s.quality(*m, b).unwrap_or(b)
                    })
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

fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn project(features: &[u32], dims: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; dims];
    for j in features {
        let h = mix64(u64::from(*j) ^ 0x5052_4f4a);
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        out[(h % dims as u64) as usize] += sign;
    }
    normalise(&mut out);
    out
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn nearest(centroids: &[Vec<f32>], x: &[f32]) -> usize {
    let mut best = (0, f32::MIN);
    for (i, c) in centroids.iter().enumerate() {
        let d: f32 = c.iter().zip(x).map(|(a, b)| a * b).sum();
        if d > best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// Spherical k-means over the training prompts' projections, k-means++ start.
fn kmeans(points: &[Vec<f32>], train: &[usize], k: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xC1);
    let mut centroids: Vec<Vec<f32>> = vec![points[train[rng.usize(..train.len())]].clone()];
    let mut dist: Vec<f32> = vec![f32::MAX; train.len()];
    while centroids.len() < k {
        let last = centroids.last().unwrap();
        let mut total = 0.0;
        for (d, r) in dist.iter_mut().zip(train) {
            let sim: f32 = last.iter().zip(&points[*r]).map(|(a, b)| a * b).sum();
            *d = d.min((1.0 - sim).max(0.0));
            total += *d;
        }
        let mut pick = rng.f32() * total;
        let mut chosen = train[0];
        for (d, r) in dist.iter().zip(train) {
            pick -= d;
            if pick <= 0.0 {
                chosen = *r;
                break;
            }
        }
        centroids.push(points[chosen].clone());
    }
    for _ in 0..15 {
        let dims = centroids[0].len();
        let mut sums = vec![vec![0.0f32; dims]; k];
        for r in train {
            let c = nearest(&centroids, &points[*r]);
            sums[c]
                .iter_mut()
                .zip(&points[*r])
                .for_each(|(s, x)| *s += x);
        }
        for (c, s) in centroids.iter_mut().zip(sums) {
            if s.iter().any(|x| *x != 0.0) {
                *c = s;
                normalise(c);
            }
        }
    }
    centroids
}

/// The largest knob (λ, or −ln of the per-prompt share with `ratio_form`) for which `keeps`
/// holds, by bisection on its logarithm.
fn largest_kept(ratio_form: bool, keeps: impl Fn(f64) -> bool) -> f64 {
    let (mut lo, mut hi) = if ratio_form {
        (1e-6f64.ln(), 0.7f64.ln())
    } else {
        (1e-3f64.ln(), 1e7f64.ln())
    };
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if keeps(mid.exp()) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo.exp()
}

/// Probe-only featurizers: `words` (unigrams + bigrams), `words1` (unigrams only), `words3`
/// (up to trigrams), hashed with std's SipHash into the same feature space.
fn alt_features(text: &str, kind: &str) -> Vec<u32> {
    use std::hash::{Hash, Hasher};
    let h = |s: &str| {
        let mut x = std::hash::DefaultHasher::new();
        s.hash(&mut x);
        (x.finish() >> (64 - optimizer::routing::features::FEATURE_BITS)) as u32
    };
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(1500)
        .collect();
    let max_n = match kind {
        "words1" => 1,
        "words3" => 3,
        _ => 2,
    };
    let mut out: Vec<u32> = Vec::new();
    for n in 1..=max_n {
        for w in words.windows(n) {
            out.push(h(&w.join(" ")));
        }
    }
    out.push(h(&format!("len:{}", lower.len().max(1).ilog2())));
    out.sort_unstable();
    out.dedup();
    if out.len() > 512 {
        out.select_nth_unstable_by_key(512, |i| mix64(u64::from(*i)));
        out.truncate(512);
        out.sort_unstable();
    }
    out
}
