//! `optimizer train --dataset FILE`: start the learned routing from recorded outcomes (a public
//! benchmark, or a deployment's own) instead of from the catalog priors, then keep learning
//! from ratings.
//!
//! Each record's prompt is analysed as a request would be (pattern, complexity, hashed
//! features — its text is not stored), and each of its outcomes whose model the catalog routes
//! to becomes one stored sample (`bootstrap_outcomes`; a catalog model id served by several
//! providers gets the outcome under each). Then a retrain runs (logged with trigger
//! `bootstrap`): benchmark outcomes count as evidence next to ratings — in the pattern-level
//! estimates, under the seed's confidence rules, and as samples of the per-prompt predictor —
//! and every later retrain keeps them, so ratings refine what the benchmark started. Loading a
//! dataset twice adds nothing; `optimizer train --remove NAME` takes it out again.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use sqlx::PgPool;

use crate::config::LearningSettings;
use crate::dataset::Dataset;
use crate::learning::RunReport;
use crate::routing::{QueryPatternAnalyzer, RoutingEngine};
use crate::store::bootstrap::{self as store, NewOutcome};

/// Per pattern × model: the outcomes loaded and their mean.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSummary {
    pub pattern: String,
    pub provider: String,
    pub model: String,
    pub outcomes: u64,
    pub mean: f64,
}

/// What `optimizer train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub dataset: String,
    pub records: usize,
    /// Records dropped because their prompt repeats an earlier record's.
    pub duplicate_prompts: usize,
    /// Outcomes of catalog models (one per record × catalog model served).
    pub outcomes: usize,
    /// Of those, newly stored (the rest were loaded before).
    pub stored: u64,
    /// Dataset models no catalog entry routes to, with their outcome counts (not loaded).
    pub unknown_models: BTreeMap<String, usize>,
    pub groups: Vec<GroupSummary>,
    /// The retrain that followed (None: dry run).
    pub run: Option<RunReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error("no outcome in {0} is of a model the catalog routes to (its models: {1})")]
    NoCatalogModel(String, String),
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
}

/// The dataset's outcomes of catalog models, as rows to store, and the models it skipped.
pub fn outcomes(
    engine: &RoutingEngine,
    dataset: &Dataset,
) -> (Vec<NewOutcome>, BTreeMap<String, usize>) {
    let catalog = engine.catalog();
    let analyzer = QueryPatternAnalyzer::new();
    let mut rows = Vec::new();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for record in &dataset.records {
        let analysis = analyzer.analyze(&record.prompt);
        let features: Vec<i32> = analysis
            .prompt_features
            .iter()
            .filter_map(|f| i32::try_from(*f).ok())
            .collect();
        for (model_id, outcome) in &record.outcomes {
            let mut served = catalog.models().iter().filter(|m| &m.model == model_id);
            let Some(first) = served.next() else {
                *unknown.entry(model_id.clone()).or_default() += 1;
                continue;
            };
            for model in std::iter::once(first).chain(served) {
                rows.push(NewOutcome {
                    record_id: record.id.clone(),
                    provider: model.provider.as_str().to_owned(),
                    model: model.model.clone(),
                    pattern: analysis.pattern.as_str().to_owned(),
                    complexity: analysis.complexity as f32,
                    features: features.clone(),
                    label: outcome.value().clamp(0.0, 1.0) as f32,
                });
            }
        }
    }
    (rows, unknown)
}

fn groups(rows: &[NewOutcome]) -> Vec<GroupSummary> {
    let mut by: BTreeMap<(&str, &str, &str), (u64, f64)> = BTreeMap::new();
    for r in rows {
        let e = by
            .entry((r.pattern.as_str(), r.provider.as_str(), r.model.as_str()))
            .or_default();
        e.0 += 1;
        e.1 += f64::from(r.label);
    }
    by.into_iter()
        .map(|((pattern, provider, model), (n, sum))| GroupSummary {
            pattern: pattern.to_owned(),
            provider: provider.to_owned(),
            model: model.to_owned(),
            outcomes: n,
            mean: sum / n as f64,
        })
        .collect()
}

/// Loads `path` under `name` and retrains (a dry run stores nothing and retrains nothing: it
/// reports what would be loaded).
pub async fn train(
    pool: &PgPool,
    engine: &RoutingEngine,
    settings: &LearningSettings,
    path: &Path,
    name: &str,
    dry_run: bool,
) -> Result<TrainReport, TrainError> {
    let dataset = Dataset::load(path)?;
    let (rows, unknown_models) = outcomes(engine, &dataset);
    if rows.is_empty() {
        return Err(TrainError::NoCatalogModel(
            path.display().to_string(),
            dataset.models().join(", "),
        ));
    }
    let (stored, run) = if dry_run {
        (0, None)
    } else {
        let stored = store::insert(pool, name, &rows).await?;
        let run = crate::learning::run_now(pool, engine, settings, "bootstrap", false).await?;
        (stored, Some(run))
    };
    Ok(TrainReport {
        dataset: name.to_owned(),
        records: dataset.records.len(),
        duplicate_prompts: dataset.duplicates,
        outcomes: rows.len(),
        stored,
        unknown_models,
        groups: groups(&rows),
        run,
    })
}

/// The terminal report.
pub fn render(report: &TrainReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dataset {}: {} records ({} repeated prompts dropped), {} outcomes of catalog models, {} newly stored",
        report.dataset, report.records, report.duplicate_prompts, report.outcomes, report.stored
    );
    for (model, n) in &report.unknown_models {
        let _ = writeln!(out, "  not in the catalog, skipped: {model} ({n} outcomes)");
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<44} {:>8} {:>6}",
        "pattern", "model", "outcomes", "mean"
    );
    for g in &report.groups {
        let _ = writeln!(
            out,
            "{:<14} {:<44} {:>8} {:>6.3}",
            g.pattern,
            format!("{}/{}", g.provider, g.model),
            g.outcomes,
            g.mean
        );
    }
    match &report.run {
        Some(run) => {
            let _ = write!(out, "\n{}", crate::learning::report::run_table(run));
        }
        None => {
            let _ = writeln!(out, "\ndry run: nothing stored, no retrain");
        }
    }
    out
}
