//! The routing decision: which model gets a prompt.
//!
//! - [`catalog`]: models, prices, priors; which are routable.
//! - [`analyzer`]: prompt → pattern + complexity (pure, deterministic, no I/O).
//! - [`engine`]: (analysis, strategy, constraints) → ranked candidates with reasons.
//! - [`recommend`]: analyze + route + baseline pricing, for `POST /recommendation`.
//! - [`weights`]: the learned quality estimates the engine reads, held in memory and swapped
//!   atomically when a retrain changes them. Rule: no database query per decision.

pub mod analyzer;
pub mod catalog;
pub mod engine;
pub mod recommend;
pub mod weights;

pub use analyzer::{Analysis, Pattern, QueryPatternAnalyzer, Tier};
pub use catalog::{Catalog, CatalogError, ModelEntry, ProviderId};
pub use engine::{
    Candidate, Decision, EngineError, QualitySource, RouteError, RouteRequest, RoutingEngine,
    Strategy,
};
pub use weights::{Confidence, LearnedWeight, LearnedWeights};

/// Why the routing core could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Loads the catalog (`CATALOG_PATH` or the embedded default) and builds the engine over the
/// enabled providers. Learned weights start empty; [`weights::run_reloader`] fills them.
pub fn build_engine(settings: &crate::config::Settings) -> Result<RoutingEngine, SetupError> {
    let catalog = Catalog::load(settings.routing.catalog_path.as_deref())?;
    Ok(RoutingEngine::new(
        std::sync::Arc::new(catalog),
        &settings.enabled_providers,
        &settings.routing,
    )?)
}
