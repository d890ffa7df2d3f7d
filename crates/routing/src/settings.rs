//! The routing layer's section of the configuration (read by the application's `config`).

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the routing decision.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// `CATALOG_PATH`: a catalog file replacing the embedded default.
    pub catalog_path: Option<PathBuf>,
    /// `EXPLORATION_RATE` (default 0.1; 0 turns exploration off): share of auto-routed traffic
    /// sent to a model whose quality is not yet known with confidence and might be good enough
    /// (costing no more than the regular choice) or better (costing more).
    pub exploration_rate: f64,
    /// `EXPLORATION_MARGIN` (default 0.2): explore a cheaper unproven model only if its prior
    /// for the pattern is within this much of the strategy's target at medium complexity
    /// (decided per pattern, so the explored prompts are a fair sample of it); also a per-prompt
    /// estimate's uncertainty before evidence (shrinking as `1/√(1 + n/400)` after n ratings).
    pub exploration_margin: f64,
    /// `NEAR_BEST_MARGIN` (default 0.05; 0 turns it off): when no candidate reaches the quality
    /// target, take the cheapest whose expected quality is within this much of the best one
    /// (not when the request sets `min_quality`).
    pub near_best_margin: f64,
    /// `EXPLORATION_SEED` (default none: random): when set, whether and where a request explores
    /// is drawn from this seed and the prompt, so a replayed run routes the same way
    /// (`optimizer eval --seed` sets it).
    pub exploration_seed: Option<u64>,
    /// `BASELINE_MODEL`: the always-premium model savings are measured against
    /// (`provider/model` or a model id). Default: the best routable model in the catalog.
    pub baseline_model: Option<String>,
    /// `ROUTING_RELOAD_SECS` (default 30): how often learned weights are re-checked when no
    /// NOTIFY arrives.
    pub reload_interval: Duration,
}
