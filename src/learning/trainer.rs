//! FeedbackTrainer: turns ratings into routing weights, as the seed specifies.
//!
//! 1. Aggregate ratings by pattern + provider + model (over `LEARNING_WINDOW_DAYS`, default all).
//! 2. Confidence: HIGH ≥ 10 samples, avg ≥ 4.0, correctness ≥ 80%; MEDIUM ≥ 5, ≥ 3.5, ≥ 70%;
//!    LOW otherwise (thresholds configurable).
//! 3. Only HIGH/MEDIUM change routing. A model **proven poor** — at least MEDIUM's sample count
//!    but metrics below MEDIUM — keeps the LOW label but is marked *demoted*: its low estimate
//!    then replaces the prior, so the engine stops preferring it. Too few ratings change nothing.
//! 4. Never lower a confidence without new evidence: if no rating arrived since the weight was
//!    written (e.g. old ratings left the window), a lower confidence is not applied.
//! 5. Expected quality from ratings (same 0..1 scale as the catalog priors):
//!    `0.5 · (avg − 1) / 4 + 0.5 · correctness`.
//!
//! [`plan`] is pure: the same inputs give the same changes, which is what dry-run shows and what
//! a real run applies (`store::learning::apply`).

use std::collections::HashMap;

use crate::config::{LearningSettings, Threshold};
use crate::routing::Confidence;

pub use crate::store::learning::{Aggregate, Change, Weight, WeightState};

/// The seed's confidence level.
pub fn confidence(samples: i64, avg: f64, correctness: f64, s: &LearningSettings) -> Confidence {
    let meets = |t: &Threshold| {
        samples >= i64::from(t.samples)
            && avg >= t.avg_quality - 1e-9
            && correctness >= t.correctness - 1e-9
    };
    if meets(&s.high) {
        Confidence::High
    } else if meets(&s.medium) {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// Expected quality (0..1) from ratings.
pub fn quality_estimate(avg: f64, correctness: f64) -> f64 {
    let q = 0.5 * (avg - 1.0) / 4.0 + 0.5 * correctness;
    (q.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
}

fn key(pattern: &str, provider: &str, model: &str) -> (String, String, String) {
    (pattern.to_owned(), provider.to_owned(), model.to_owned())
}

/// Ratings' aggregates with the stored benchmark outcomes' (`optimizer train --dataset`) folded
/// in: one group per pattern × provider × model, its samples summed and its means weighted by
/// samples (the rated answers' cost stays the ratings'). Sorted like the store returns them.
pub fn merge(ratings: Vec<Aggregate>, outcomes: Vec<Aggregate>) -> Vec<Aggregate> {
    let mut merged: std::collections::BTreeMap<(String, String, String), Aggregate> = ratings
        .into_iter()
        .map(|a| (key(&a.pattern, &a.provider, &a.model), a))
        .collect();
    for o in outcomes {
        let k = key(&o.pattern, &o.provider, &o.model);
        let Some(a) = merged.get_mut(&k) else {
            merged.insert(k, o);
            continue;
        };
        let (n, m) = (a.samples as f64, o.samples as f64);
        let mean = |x: f64, y: f64| (x * n + y * m) / (n + m);
        a.avg_quality = mean(a.avg_quality, o.avg_quality);
        a.correctness = mean(a.correctness, o.correctness);
        a.avg_complexity = match (a.avg_complexity, o.avg_complexity) {
            (Some(x), Some(y)) => Some(mean(x, y)),
            (x, y) => x.or(y),
        };
        a.last_feedback_at = a.last_feedback_at.max(o.last_feedback_at);
        a.samples += o.samples;
    }
    merged.into_values().collect()
}

/// Plans the run: the changes to apply, in a stable order.
pub fn plan(aggregates: &[Aggregate], current: &[Weight], s: &LearningSettings) -> Vec<Change> {
    let current: HashMap<_, &Weight> = current
        .iter()
        .map(|w| (key(&w.pattern, &w.provider, &w.model), w))
        .collect();
    let mut changes = Vec::new();
    for a in aggregates {
        let conf = confidence(a.samples, a.avg_quality, a.correctness, s);
        let demoted = conf == Confidence::Low && a.samples >= i64::from(s.medium.samples);
        let after = WeightState {
            quality: quality_estimate(a.avg_quality, a.correctness),
            confidence: conf,
            demoted,
            samples: a.samples,
        };
        let before = current
            .get(&key(&a.pattern, &a.provider, &a.model))
            .copied();
        let actionable = conf >= Confidence::Medium || demoted;
        let Some(before) = before else {
            if actionable {
                changes.push(change(a, None, after));
            }
            continue;
        };
        let new_evidence = match (a.last_feedback_at, before.last_feedback_at) {
            (Some(now), Some(then)) => now > then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let lowers = rank(&after) < rank(&state(before));
        if lowers && !new_evidence {
            continue;
        }
        let same = before.confidence == after.confidence
            && before.demoted == after.demoted
            && before.samples == after.samples
            && (before.quality - after.quality).abs() < 1e-6;
        if !same {
            changes.push(change(a, Some(state(before)), after));
        }
    }
    changes.sort_by(|x, y| {
        (&x.pattern, &x.provider, &x.model).cmp(&(&y.pattern, &y.provider, &y.model))
    });
    changes
}

/// Order of confidence for "never lower": LOW < demoted LOW (it is evidence) < MEDIUM < HIGH.
fn rank(s: &WeightState) -> u8 {
    match (s.confidence, s.demoted) {
        (Confidence::High, _) => 3,
        (Confidence::Medium, _) => 2,
        (Confidence::Low, true) => 1,
        (Confidence::Low, false) => 0,
    }
}

fn state(w: &Weight) -> WeightState {
    WeightState {
        quality: w.quality,
        confidence: w.confidence,
        demoted: w.demoted,
        samples: w.samples,
    }
}

fn change(a: &Aggregate, before: Option<WeightState>, after: WeightState) -> Change {
    let was = before
        .as_ref()
        .is_some_and(|b| b.confidence >= Confidence::Medium || b.demoted);
    let is = after.confidence >= Confidence::Medium || after.demoted;
    let routing_change = match (was, is) {
        (_, true) if after.demoted => format!(
            "demoted: proven below MEDIUM ({} ratings, avg {:.2}, {:.0}% correct); expected quality {:.2}",
            a.samples,
            a.avg_quality,
            a.correctness * 100.0,
            after.quality
        ),
        (false, true) => format!(
            "now routes on learned quality {:.2} ({} confidence, {} ratings)",
            after.quality, after.confidence, a.samples
        ),
        (true, true) => format!(
            "learned quality {:.2} → {:.2} ({} → {} confidence)",
            before.as_ref().map_or(0.0, |b| b.quality),
            after.quality,
            before.as_ref().map_or(Confidence::Low, |b| b.confidence),
            after.confidence
        ),
        (true, false) => "no longer used for routing: confidence fell to LOW".to_owned(),
        (false, false) => "stays unused for routing (LOW confidence)".to_owned(),
    };
    Change {
        pattern: a.pattern.clone(),
        provider: a.provider.clone(),
        model: a.model.clone(),
        before,
        after,
        routing_change,
        aggregate: Some(a.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use chrono::Utc;

    fn settings() -> LearningSettings {
        Settings::from_lookup(|_| Ok(None)).unwrap().learning
    }

    fn agg(samples: i64, avg: f64, correctness: f64) -> Aggregate {
        Aggregate {
            pattern: "code".into(),
            provider: "simulated".into(),
            model: "sim-lite".into(),
            samples,
            avg_quality: avg,
            correctness,
            last_feedback_at: Some(Utc::now()),
            avg_cost_usd: None,
            total_cost_usd: None,
            avg_complexity: None,
        }
    }

    #[test]
    fn confidence_boundaries_follow_the_seed() {
        let s = settings();
        assert_eq!(confidence(10, 4.0, 0.8, &s), Confidence::High);
        assert_eq!(confidence(9, 4.0, 0.8, &s), Confidence::Medium);
        assert_eq!(confidence(10, 3.99, 0.8, &s), Confidence::Medium);
        assert_eq!(confidence(10, 4.0, 0.79, &s), Confidence::Medium);
        assert_eq!(confidence(5, 3.5, 0.7, &s), Confidence::Medium);
        assert_eq!(confidence(4, 5.0, 1.0, &s), Confidence::Low);
        assert_eq!(confidence(5, 3.49, 0.7, &s), Confidence::Low);
        assert_eq!(confidence(5, 3.5, 0.69, &s), Confidence::Low);
    }

    #[test]
    fn low_evidence_changes_nothing_and_poor_evidence_demotes() {
        let s = settings();
        assert!(plan(&[agg(3, 5.0, 1.0)], &[], &s).is_empty());
        let changes = plan(&[agg(12, 1.8, 0.2)], &[], &s);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].after.demoted);
        assert_eq!(changes[0].after.confidence, Confidence::Low);
        assert!(changes[0].after.quality < 0.3);
        assert!(changes[0].routing_change.starts_with("demoted"));
    }

    #[test]
    fn confidence_is_never_lowered_without_new_evidence() {
        let s = settings();
        let then = Utc::now();
        let current = Weight {
            pattern: "code".into(),
            provider: "simulated".into(),
            model: "sim-lite".into(),
            quality: 0.9,
            confidence: Confidence::High,
            demoted: false,
            samples: 12,
            avg_quality: 4.6,
            correctness: 0.9,
            last_feedback_at: Some(then),
        };
        // The window now holds fewer ratings, but none is newer: nothing is lowered.
        let mut fewer = agg(6, 4.6, 0.9);
        fewer.last_feedback_at = Some(then);
        assert!(
            plan(
                std::slice::from_ref(&fewer),
                std::slice::from_ref(&current),
                &s
            )
            .is_empty()
        );
        // A newer rating is evidence: the change goes through.
        fewer.last_feedback_at = Some(then + chrono::Duration::seconds(1));
        let changes = plan(&[fewer], &[current], &s);
        assert_eq!(changes[0].after.confidence, Confidence::Medium);
    }

    #[test]
    fn benchmark_outcomes_fold_into_the_ratings_groups() {
        let ratings = vec![agg(10, 5.0, 1.0)];
        let mut outcome = agg(30, 1.0 + 4.0 * 0.5, 0.5);
        outcome.avg_complexity = Some(0.4);
        let mut other = agg(7, 3.0, 0.5);
        other.model = "sim-pro".into();
        let merged = merge(ratings, vec![outcome, other]);
        assert_eq!(merged.len(), 2);
        let m = &merged[0];
        assert_eq!((m.model.as_str(), m.samples), ("sim-lite", 40));
        // 10 perfect ratings and 30 outcomes of mean 0.5: estimate (10·1 + 30·0.5) / 40.
        assert_eq!(quality_estimate(m.avg_quality, m.correctness), 0.625);
        assert_eq!(m.avg_complexity, Some(0.4));
        assert_eq!(
            (merged[1].model.as_str(), merged[1].samples),
            ("sim-pro", 7)
        );
    }

    #[test]
    fn quality_estimate_scale() {
        assert_eq!(quality_estimate(5.0, 1.0), 1.0);
        assert_eq!(quality_estimate(1.0, 0.0), 0.0);
        assert_eq!(quality_estimate(4.0, 0.8), 0.775);
    }
}
