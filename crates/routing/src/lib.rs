//! The routing decision: which model gets a prompt.
//!
//! - [`catalog`]: models, prices, priors; which are routable.
//! - [`analyzer`]: prompt → pattern + complexity (pure, deterministic, no I/O).
//! - [`engine`]: (analysis, strategy, constraints) → ranked candidates with reasons.
//! - [`features`]: the prompt's hashed n-gram features, stored with each request.
//! - [`predictor`]: the per-prompt quality predictor per model, and its fitting.
//! - [`recommend`]: analyze + route + baseline pricing, for `POST /recommendation`.
//! - [`weights`]: the learned quality estimates the engine reads, held in memory and swapped
//!   atomically when a retrain changes them. Rule: no database query per decision.
//! - [`settings`]: this layer's configuration section.
//!
//! The crate is pure and does no I/O beyond reading a catalog file it is given: it knows no
//! database, provider or HTTP type (the application keeps the weights current and calls
//! providers). It depends only on `optimizer-types`.

pub mod analyzer;
pub mod catalog;
pub mod engine;
pub mod features;
pub mod predictor;
pub mod recommend;
pub mod settings;
pub mod target;
pub mod weights;

pub use analyzer::{Analysis, Pattern, QueryPatternAnalyzer, Tier};
pub use catalog::{Catalog, CatalogError, ModelEntry, ProviderId};
pub use engine::{
    Candidate, Decision, EngineError, QualitySource, RouteError, RouteRequest, RoutingEngine,
    Strategy,
};
pub use predictor::{ModelFit, Predictor};
pub use settings::RoutingSettings;
pub use target::{Calibration, Knob};
pub use weights::{Confidence, LearnedWeight, LearnedWeights};
