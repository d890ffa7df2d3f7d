//! The composition root of the lower crates: builds the routing engine and the providers from
//! [`Settings`], handing the providers what they must not import themselves (the routing
//! analyzer for the simulated provider, the evaluation dataset for the replay provider).

use std::sync::Arc;

use crate::config::Settings;
use crate::dataset::{Dataset, DatasetError};
use crate::providers::{Injected, Providers, ProvidersError};
use crate::routing::{Catalog, CatalogError, EngineError, QueryPatternAnalyzer, RoutingEngine};

/// Why the routing core could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "JUDGE_MODEL {0:?} is not a catalog model of an enabled provider (shadow comparisons need it)"
    )]
    Judge(String),
}

/// The judge of shadow comparisons, (provider, model id), when they are on and `JUDGE_MODEL`
/// names a routable catalog model.
pub fn judge(
    engine: &RoutingEngine,
    settings: &Settings,
) -> Option<(crate::providers::ProviderId, String)> {
    let index = judge_index(engine, settings).ok().flatten()?;
    engine.model(index).map(|m| (m.provider, m.model.clone()))
}

/// The catalog index of `JUDGE_MODEL` when shadow comparisons are on (None: off).
pub fn judge_index(
    engine: &RoutingEngine,
    settings: &Settings,
) -> Result<Option<usize>, SetupError> {
    let shadow = &settings.learning.shadow;
    let Some(judge) = shadow.judge.as_deref().filter(|_| shadow.enabled()) else {
        return Ok(None);
    };
    engine
        .catalog()
        .find(None, judge)
        .filter(|i| engine.is_routable(*i))
        .map(Some)
        .ok_or_else(|| SetupError::Judge(judge.to_owned()))
}

/// Why the providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProvidersSetupError {
    #[error(transparent)]
    Providers(#[from] ProvidersError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("the replay provider is enabled but REPLAY_DATASET is not set")]
    NoDataset,
}

/// Loads the catalog (`CATALOG_PATH` or the embedded default) and builds the engine over the
/// enabled providers. Learned weights start empty; the weights reloader (`learning::reloader`)
/// fills them.
pub fn build_engine(settings: &Settings) -> Result<RoutingEngine, SetupError> {
    let catalog = Catalog::load(settings.routing.catalog_path.as_deref())?;
    let engine = RoutingEngine::new(
        Arc::new(catalog),
        &settings.enabled_providers,
        &settings.routing,
    )?;
    // Counters over the routable models start at 0.
    let models: Vec<(String, String)> = engine
        .catalog()
        .models()
        .iter()
        .enumerate()
        .filter(|(i, _)| engine.is_routable(*i))
        .map(|(_, m)| (m.provider.to_string(), m.model.clone()))
        .collect();
    let patterns: Vec<&str> = crate::types::Pattern::ALL
        .iter()
        .map(|p| p.as_str())
        .collect();
    let kinds = [
        crate::providers::ErrorKind::Retryable,
        crate::providers::ErrorKind::ModelUnavailable,
        crate::providers::ErrorKind::Permanent,
    ]
    .map(|k| k.as_str());
    crate::telemetry::zero_series(&models, &patterns, &kinds);
    judge_index(&engine, settings)?;
    Ok(engine)
}

/// A client for every enabled provider.
pub fn build_providers(settings: &Settings) -> Result<Providers, ProvidersSetupError> {
    let options = &settings.provider_options;
    let replay = if settings
        .enabled_providers
        .contains(&crate::providers::ProviderId::Replay)
    {
        let path = options
            .replay_dataset
            .as_deref()
            .ok_or(ProvidersSetupError::NoDataset)?;
        let book: Arc<dyn crate::providers::replay::ReplayBook> = Arc::new(Dataset::load(path)?);
        Some(book)
    } else {
        None
    };
    let injected = Injected {
        classify: |prompt| QueryPatternAnalyzer::new().analyze(prompt).pattern,
        replay,
    };
    Ok(Providers::new(
        &settings.enabled_providers,
        &settings.providers,
        options,
        injected,
    )?)
}
