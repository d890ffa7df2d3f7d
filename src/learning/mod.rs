//! The learning loop: ratings → routing weights, safely.
//!
//! - [`trainer`]: the FeedbackTrainer's rules (pure).
//! - [`drift`]: the quality check after a retrain, the >10% alert, auto-rollback.
//! - [`report`]: terminal tables for `optimizer retrain` and `optimizer dashboard`.
//! - [`per_prompt`]: fitting the per-prompt quality predictor from rated requests.
//! - [`retrain`] (this module): one run end to end — read ratings and weights, plan, then either
//!   record a dry run or apply (snapshot, weights, history, policy version) in one transaction.

pub mod drift;
pub mod off_policy;
pub mod per_prompt;
pub mod reloader;
pub mod report;
pub mod target;
pub mod trainer;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::LearningSettings;
use crate::routing::Confidence;
use crate::store::learning as store;
use crate::types::RunStatus;
use trainer::{Change, Weight};

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dry_run: bool,
    pub changes: Vec<Change>,
    /// Models whose per-prompt predictor the run (re)fitted, with their rated requests (empty:
    /// no new evidence, or `PER_PROMPT_LEARNING=false`).
    pub predictor: Vec<PredictorFit>,
    /// The routing-policy version after applying (None: dry run or nothing changed).
    pub policy_version: Option<i64>,
    /// The current and the candidate policy replayed on the logged rated traffic (None: nothing
    /// changed, so both are the same policy).
    pub off_policy: Option<off_policy::OffPolicyEstimate>,
    /// A scheduled run held back by the off-policy estimate (not applied; an admin can apply it
    /// with a manual retrain).
    pub held: bool,
    pub message: String,
    pub before: Value,
    pub after: Value,
}

/// One model's refitted per-prompt predictor, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct PredictorFit {
    pub provider: String,
    pub model: String,
    pub samples: i32,
    /// Non-zero weights.
    pub weights: usize,
}

/// Fits the per-prompt predictor when its samples — rated requests and stored benchmark
/// outcomes — changed since the current one was fitted (per model, their count); None otherwise.
async fn refit(
    pool: &PgPool,
    catalog: &crate::routing::Catalog,
    settings: &LearningSettings,
    aggregates: &[trainer::Aggregate],
    rated: &[crate::store::predictor::RatedRequest],
    outcomes: &[crate::store::predictor::RatedRequest],
) -> Result<Option<Vec<crate::store::predictor::StoredFit>>, sqlx::Error> {
    use crate::store::predictor as stored;
    if !settings.per_prompt {
        return Ok(None);
    }
    let Some(fits) = per_prompt::fit_from_ratings(
        catalog,
        aggregates,
        rated.iter().chain(outcomes),
        settings.shrinkage,
        settings.shadow.weight,
    ) else {
        return Ok(None);
    };
    let mut current = stored::sample_counts(pool).await?;
    let mut fitted: Vec<(String, String, i32)> = fits
        .iter()
        .map(|f| (f.provider.clone(), f.model.clone(), f.sample_count))
        .collect();
    current.sort();
    fitted.sort();
    Ok((current != fitted).then_some(fits))
}

/// Summary metrics of a set of weights, logged before and after each run.
pub fn weights_metrics(weights: &[Weight]) -> Value {
    let mut by_confidence: BTreeMap<&str, i64> = BTreeMap::new();
    let mut by_pattern: BTreeMap<&str, (f64, i64)> = BTreeMap::new();
    let mut demoted = 0;
    for w in weights {
        *by_confidence.entry(w.confidence.as_str()).or_default() += 1;
        if w.demoted {
            demoted += 1;
        }
        if w.confidence >= Confidence::Medium || w.demoted {
            let e = by_pattern.entry(w.pattern.as_str()).or_default();
            e.0 += w.quality;
            e.1 += 1;
        }
    }
    let patterns: BTreeMap<&str, f64> = by_pattern
        .into_iter()
        .map(|(p, (sum, n))| (p, ((sum / n as f64) * 1000.0).round() / 1000.0))
        .collect();
    json!({
        "weights": weights.len(),
        "by_confidence": by_confidence,
        "demoted": demoted,
        "avg_learned_quality_by_pattern": patterns,
    })
}

fn after_weights(before: &[Weight], changes: &[Change]) -> Vec<Weight> {
    let mut map: BTreeMap<(String, String, String), Weight> = before
        .iter()
        .map(|w| {
            (
                (w.pattern.clone(), w.provider.clone(), w.model.clone()),
                w.clone(),
            )
        })
        .collect();
    for c in changes {
        let (avg, correctness, last) = c.aggregate.as_ref().map_or((0.0, 0.0, None), |a| {
            (a.avg_quality, a.correctness, a.last_feedback_at)
        });
        map.insert(
            (c.pattern.clone(), c.provider.clone(), c.model.clone()),
            Weight {
                pattern: c.pattern.clone(),
                provider: c.provider.clone(),
                model: c.model.clone(),
                quality: c.after.quality,
                confidence: c.after.confidence,
                demoted: c.after.demoted,
                samples: c.after.samples,
                avg_quality: avg,
                correctness,
                last_feedback_at: last,
            },
        );
    }
    map.into_values().collect()
}

/// The engines of the current policy and of the candidate (the current one with `changes` and,
/// when refitted, the new predictor).
async fn policies(
    pool: &PgPool,
    engine: &crate::routing::RoutingEngine,
    changes: &[Change],
    predictor: Option<&[crate::store::predictor::StoredFit]>,
) -> Result<
    (
        crate::routing::RoutingEngine,
        crate::routing::RoutingEngine,
        Vec<crate::routing::LearnedWeight>,
    ),
    sqlx::Error,
> {
    use crate::routing::{LearnedWeight, LearnedWeights, Pattern, ProviderId};
    let catalog = engine.catalog();
    let policy = crate::store::weights::load(pool).await?;
    let (current_predictor, shrinkage) = per_prompt::to_predictor(catalog, &policy.predictor);
    let mut weights = policy.weights.clone();
    for c in changes {
        let (Some(pattern), Some(provider)) =
            (Pattern::parse(&c.pattern), ProviderId::parse(&c.provider))
        else {
            continue;
        };
        let updated = LearnedWeight {
            pattern,
            provider,
            model: c.model.clone(),
            quality: c.after.quality,
            confidence: c.after.confidence,
            samples: u32::try_from(c.after.samples).unwrap_or_default(),
            demoted: c.after.demoted,
            avg_complexity: c.aggregate.as_ref().and_then(|a| a.avg_complexity),
        };
        match weights.iter_mut().find(|w| {
            (w.pattern, w.provider, w.model.as_str()) == (pattern, provider, c.model.as_str())
        }) {
            Some(w) => *w = updated,
            None => weights.push(updated),
        }
    }
    let (candidate_predictor, candidate_shrinkage) = match predictor {
        Some(fits) => per_prompt::to_predictor(catalog, fits),
        None => (current_predictor.clone(), shrinkage),
    };
    let current = LearnedWeights::new(catalog, policy.version, policy.weights)
        .with_predictor(current_predictor, shrinkage);
    let candidate = LearnedWeights::new(catalog, policy.version + 1, weights.clone())
        .with_predictor(candidate_predictor, candidate_shrinkage);
    Ok((
        engine.with_weights(current),
        engine.with_weights(candidate),
        weights,
    ))
}

/// Calibrates the strategies' quality-target knobs for a newly fitted predictor (see
/// [`target`]): the evidence split in two halves, each half decided by a predictor fitted on the
/// other, with the candidate policy's pattern-level weights.
fn calibrate(
    engine: &crate::routing::RoutingEngine,
    settings: &LearningSettings,
    aggregates: &[trainer::Aggregate],
    weights: &[crate::routing::LearnedWeight],
    (rated, outcomes): (
        &[crate::store::predictor::RatedRequest],
        &[crate::store::predictor::RatedRequest],
    ),
) -> (target::Report, Vec<Vec<crate::store::predictor::StoredFit>>) {
    use crate::routing::LearnedWeights;
    let catalog = engine.catalog();
    let units = target::units(rated.iter().chain(outcomes));
    let mut halves = Vec::new();
    let engines: Vec<crate::routing::RoutingEngine> = (0..2)
        .map(|h| {
            // Fitted on the other half: a unit's decisions never saw its own outcomes.
            let other = rated
                .iter()
                .chain(outcomes)
                .filter(|r| target::half(r) != h);
            let fits = per_prompt::fit_from_ratings(
                catalog,
                aggregates,
                other,
                settings.shrinkage,
                settings.shadow.weight,
            )
            .unwrap_or_default();
            let (predictor, shrinkage) = per_prompt::to_predictor(catalog, &fits);
            halves.push(fits);
            engine.with_weights(
                LearnedWeights::new(catalog, 0, weights.to_vec())
                    .with_predictor(predictor, shrinkage),
            )
        })
        .collect();
    (
        target::calibrate([&engines[0], &engines[1]], &units),
        halves,
    )
}

/// The two cross-fitted halves' predictors averaged, model by model (a model fitted in one half
/// only keeps that fit): the predictor whose knobs the calibration checked, as one.
fn averaged(
    halves: &[Vec<crate::store::predictor::StoredFit>],
) -> Vec<crate::store::predictor::StoredFit> {
    use crate::routing::predictor::{decode_weights, encode_weights};
    let [a, b] = halves else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fa in a {
        let Some(fb) = b
            .iter()
            .find(|f| f.provider == fa.provider && f.model == fa.model)
        else {
            out.push(fa.clone());
            continue;
        };
        let (Some(wa), Some(wb)) = (decode_weights(&fa.weights), decode_weights(&fb.weights))
        else {
            out.push(fa.clone());
            continue;
        };
        let mut sum: BTreeMap<u32, f32> = BTreeMap::new();
        for (j, w) in wa.into_iter().chain(wb) {
            *sum.entry(j).or_default() += w / 2.0;
        }
        let weights: Vec<(u32, f32)> = sum.into_iter().filter(|(_, w)| *w != 0.0).collect();
        out.push(crate::store::predictor::StoredFit {
            sample_count: fa.sample_count.saturating_add(fb.sample_count),
            weights: encode_weights(&weights),
            ..fa.clone()
        });
    }
    for fb in b {
        if !a
            .iter()
            .any(|f| f.provider == fb.provider && f.model == fb.model)
        {
            out.push(fb.clone());
        }
    }
    out.sort_by(|x, y| (&x.provider, &x.model).cmp(&(&y.provider, &y.model)));
    out
}

/// Runs the trainer for `run_id`. A dry run writes only its own log entry; a real run (whose
/// `retraining_runs` row the caller created and claimed) applies in one transaction — unless it
/// is a scheduled run whose off-policy estimate shows a quality drop beyond `DRIFT_THRESHOLD`:
/// then it is held (recorded, counted, not applied).
pub async fn retrain(
    pool: &PgPool,
    engine: &crate::routing::RoutingEngine,
    settings: &LearningSettings,
    run_id: &str,
    dry_run: bool,
) -> Result<RunReport, sqlx::Error> {
    let catalog = engine.catalog();
    let since = (settings.window_days > 0)
        .then(|| chrono::Utc::now() - chrono::Duration::days(i64::from(settings.window_days)));
    // Ratings and the benchmark outcomes loaded by `optimizer train --dataset` are one body of
    // evidence, under the same rules and window.
    // Judged shadow answers join them (`SHADOW_WEIGHT` 0 leaves them out).
    let use_shadow = settings.shadow.weight > 0.0;
    let mut aggregates = trainer::merge(
        store::aggregates(pool, since).await?,
        crate::store::bootstrap::aggregates(pool, since).await?,
    );
    if use_shadow {
        aggregates = trainer::merge(
            aggregates,
            crate::store::shadow::aggregates(pool, since).await?,
        );
    }
    let current = store::weights(pool).await?;
    let planned = trainer::plan(&aggregates, &current, settings);
    // A rolled-back change is not re-applied until ratings newer than its rollback arrive.
    let rolled_back = store::rolled_back(pool).await?;
    let (changes, held_back): (Vec<_>, Vec<_>) = planned.into_iter().partition(|c| {
        !rolled_back.iter().any(|(pattern, provider, model, at)| {
            (pattern, provider, model) == (&c.pattern, &c.provider, &c.model)
                && c.aggregate
                    .as_ref()
                    .and_then(|a| a.last_feedback_at)
                    .is_none_or(|last| last <= *at)
        })
    });
    if !held_back.is_empty() {
        tracing::info!(
            held_back = held_back.len(),
            "changes held back: rolled back, no newer ratings"
        );
    }
    let after_set = after_weights(&current, &changes);
    // The seed's rule: without an actionable pattern × model estimate the predictor changes no
    // routing, so it is not installed (and the policy version does not move).
    let actionable = after_set
        .iter()
        .any(|w| w.confidence >= Confidence::Medium || w.demoted);
    // The rated requests feed the predictor's refit and the off-policy estimate: read only
    // when either can happen.
    let rated = if actionable || !changes.is_empty() {
        crate::store::predictor::rated_requests(pool, since, i64::from(settings.max_samples))
            .await?
    } else {
        Vec::new()
    };
    let outcomes = if actionable {
        let room = i64::from(settings.max_samples).saturating_sub(rated.len() as i64);
        let mut outcomes = if use_shadow && room > 0 {
            crate::store::shadow::samples(pool, since, room).await?
        } else {
            Vec::new()
        };
        let room = room.saturating_sub(outcomes.len() as i64);
        if room > 0 {
            outcomes.extend(crate::store::bootstrap::samples(pool, since, room).await?);
        }
        outcomes
    } else {
        Vec::new()
    };
    let mut predictor = if actionable {
        refit(pool, catalog, settings, &aggregates, &rated, &outcomes).await?
    } else {
        None
    };
    let mut quality_target = None;
    let off_policy = if changes.is_empty() && predictor.is_none() {
        None
    } else {
        let (mut current_policy, mut candidate_policy, candidate_weights) =
            policies(pool, engine, &changes, predictor.as_deref()).await?;
        if predictor.is_some() {
            // The knobs belong to the predictor they were calibrated for: calibrated with the
            // two cross-fitted halves' predictors, and the installed predictor is their average
            // — the policy whose promise was checked. (The predictor fitted on all the evidence
            // at once ranks prompts on another scale: the same λ sent 43% or 80% of the best
            // model's cost to it from one seed to the next on RouteLLM; docs/eval.md.)
            let (report, halves) = calibrate(
                engine,
                settings,
                &aggregates,
                &candidate_weights,
                (&rated, &outcomes),
            );
            quality_target = Some(report);
            let avg = averaged(&halves);
            if !avg.is_empty() {
                predictor = Some(avg);
                (current_policy, candidate_policy, _) =
                    policies(pool, engine, &changes, predictor.as_deref()).await?;
            }
        }
        Some(off_policy::compare(
            &current_policy,
            &candidate_policy,
            &rated,
            settings.drift.min_ratings as usize,
        ))
    };
    let scheduled =
        !dry_run && store::trigger_of(pool, run_id).await?.as_deref() == Some("scheduled");
    let held = scheduled
        && off_policy
            .and_then(|o| o.relative_drop)
            .is_some_and(|drop| drop > settings.drift.threshold);
    let predictor_report: Vec<PredictorFit> = predictor
        .iter()
        .flatten()
        .map(|f| PredictorFit {
            provider: f.provider.clone(),
            model: f.model.clone(),
            samples: f.sample_count,
            weights: f.weights.len() / 8,
        })
        .collect();
    let before = weights_metrics(&current);
    let after = weights_metrics(&after_set);
    let message = if aggregates.is_empty() {
        "nothing to learn: no ratings yet".to_owned()
    } else if changes.is_empty() && predictor.is_none() {
        format!(
            "nothing to change: {} pattern-model pairs rated, none with new decisive evidence",
            aggregates.len()
        )
    } else {
        format!(
            "{} change(s) from {} rated pattern-model pairs; per-prompt predictor {}",
            changes.len(),
            aggregates.len(),
            if predictor_report.is_empty() {
                "unchanged".to_owned()
            } else {
                format!("refitted for {} model(s)", predictor_report.len())
            }
        )
    };
    let message = if held_back.is_empty() {
        message
    } else {
        format!(
            "{message}; {} change(s) held back: rolled back earlier, no ratings since",
            held_back.len()
        )
    };
    let message = match off_policy {
        Some(o) if held => format!(
            "not applied: on {} logged rated requests the off-policy estimate of quality drops \
             {:.1}% ({:.3} → {:.3}), past DRIFT_THRESHOLD {:.0}%; apply it with a manual \
             retrain if intended. Would have been: {message}",
            o.logged,
            100.0 * o.relative_drop.unwrap_or_default(),
            o.current.quality.unwrap_or_default(),
            o.candidate.quality.unwrap_or_default(),
            100.0 * settings.drift.threshold,
        ),
        _ => message,
    };
    let after = match off_policy {
        Some(o) => {
            let mut after = after;
            after["off_policy"] = serde_json::to_value(o).unwrap_or(Value::Null);
            after
        }
        None => after,
    };
    let after = match &quality_target {
        Some(q) => {
            let mut after = after;
            after["quality_target"] = serde_json::to_value(q).unwrap_or(Value::Null);
            after
        }
        None => after,
    };
    // Stored with the predictor (NULL: no knob supported; the share rule routes).
    let calibration = quality_target.as_ref().map(|q| {
        q.calibration
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
    });
    let policy_version = if dry_run {
        store::record_dry_run(pool, run_id, &before, &changes).await?;
        None
    } else if held {
        tracing::warn!(%run_id, "{message}");
        store::hold_run(pool, run_id, &before, &after, &changes, &message).await?;
        metrics::counter!(crate::telemetry::names::RETRAIN_RUNS, "result" => RunStatus::Held.as_str())
            .increment(1);
        None
    } else {
        let confidences: Vec<Confidence> = aggregates
            .iter()
            .map(|a| trainer::confidence(a.samples, a.avg_quality, a.correctness, settings))
            .collect();
        store::apply(
            pool,
            &store::AppliedRun {
                run_id,
                aggregates: &aggregates,
                confidences: &confidences,
                changes: &changes,
                before: &before,
                after: &after,
                snapshots_kept: settings.snapshots_kept,
                predictor: predictor.as_deref(),
                calibration: calibration.as_ref().map(Option::as_ref),
            },
        )
        .await?
    };
    if !dry_run && !held {
        use crate::telemetry::names;
        metrics::counter!(names::RETRAIN_RUNS, "result" => RunStatus::Succeeded.as_str())
            .increment(1);
        metrics::counter!(names::RETRAIN_CHANGES).increment(changes.len() as u64);
        metrics::gauge!(names::LAST_RETRAIN).set(chrono::Utc::now().timestamp() as f64);
        if let Some(v) = policy_version {
            metrics::gauge!(names::POLICY_VERSION).set(v as f64);
        }
    }
    Ok(RunReport {
        run_id: run_id.to_owned(),
        dry_run,
        changes,
        predictor: predictor_report,
        policy_version,
        off_policy,
        held,
        message,
        before,
        after,
    })
}

/// A new run id (ULID, prefixed so logs tell runs from requests).
pub fn new_run_id() -> String {
    format!("run_{}", ulid::Ulid::generate())
}

/// Runs a real (or dry) retrain from the command line: records the run, applies, reports.
pub async fn retrain_now(
    pool: &PgPool,
    engine: &crate::routing::RoutingEngine,
    settings: &LearningSettings,
    dry_run: bool,
) -> Result<RunReport, sqlx::Error> {
    run_now(pool, engine, settings, "manual", dry_run).await
}

/// [`retrain_now`], logged with `trigger` (`manual`, or `bootstrap` after `optimizer train`).
pub async fn run_now(
    pool: &PgPool,
    engine: &crate::routing::RoutingEngine,
    settings: &LearningSettings,
    trigger: &str,
    dry_run: bool,
) -> Result<RunReport, sqlx::Error> {
    let run_id = new_run_id();
    if dry_run {
        return retrain(pool, engine, settings, &run_id, true).await;
    }
    store::queue_run(pool, &run_id, trigger, None, None).await?;
    store::claim_run(pool, &run_id).await?;
    match retrain(pool, engine, settings, &run_id, false).await {
        Ok(report) => Ok(report),
        Err(e) => {
            store::fail_run(pool, &run_id, &e.to_string()).await?;
            metrics::counter!(crate::telemetry::names::RETRAIN_RUNS, "result" => RunStatus::Failed.as_str())
                .increment(1);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::predictor::{decode_weights, encode_weights};
    use crate::store::predictor::StoredFit;

    fn fit(model: &str, samples: i32, weights: &[(u32, f32)]) -> StoredFit {
        StoredFit {
            provider: "replay".into(),
            model: model.into(),
            featurizer: "f".into(),
            sample_count: samples,
            shrinkage: 20.0,
            weights: encode_weights(weights),
        }
    }

    #[test]
    fn the_installed_predictor_is_the_halves_average() {
        let halves = vec![
            vec![
                fit("a", 10, &[(1, 1.0), (2, -0.5)]),
                fit("b", 4, &[(3, 2.0)]),
            ],
            vec![
                fit("a", 6, &[(1, 0.0), (5, 1.0)]),
                fit("c", 1, &[(7, 0.25)]),
            ],
        ];
        let avg = averaged(&halves);
        let models: Vec<(&str, i32)> = avg
            .iter()
            .map(|f| (f.model.as_str(), f.sample_count))
            .collect();
        assert_eq!(models, vec![("a", 16), ("b", 4), ("c", 1)]);
        assert_eq!(
            decode_weights(&avg[0].weights).unwrap(),
            vec![(1, 0.5), (2, -0.25), (5, 0.5)]
        );
        // A model fitted in one half only keeps that half's fit.
        assert_eq!(avg[1].weights, halves[0][1].weights);
        assert!(averaged(&[]).is_empty());
    }
}
