//! Learned quality estimates as the engine reads them: one per (pattern, model), loaded from
//! `routing_weights` and swapped in whole. Only HIGH and MEDIUM confidence estimates change a
//! decision; LOW ones are kept for display and ignored by the engine.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::analyzer::Pattern;
use super::catalog::Catalog;
use crate::providers::ProviderId;

/// How much evidence backs an estimate (the seed's thresholds, applied by the trainer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high" => Some(Self::High),
            "medium" => Some(Self::Medium),
            "low" => Some(Self::Low),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }

    /// Whether an estimate at this confidence may change routing.
    pub fn is_actionable(self) -> bool {
        self >= Self::Medium
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One learned estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedWeight {
    pub pattern: Pattern,
    pub provider: ProviderId,
    pub model: String,
    /// Expected quality in 0..1, on the same scale as the catalog priors.
    pub quality: f64,
    pub confidence: Confidence,
    pub samples: u32,
    /// Proven poor (enough ratings, below MEDIUM): used by the engine despite `Low`.
    #[serde(default)]
    pub demoted: bool,
    /// Mean complexity of the rated requests: `quality` was measured there (None: 0.5).
    #[serde(default)]
    pub avg_complexity: Option<f64>,
}

impl LearnedWeight {
    /// Whether this estimate replaces the catalog prior in routing decisions.
    pub fn is_actionable(&self) -> bool {
        self.confidence.is_actionable() || self.demoted
    }
}

/// All learned estimates at one routing-policy version.
#[derive(Debug, Clone, Default)]
pub struct LearnedWeights {
    version: i64,
    by_model: HashMap<(Pattern, usize), LearnedWeight>,
    /// Per pattern: how far the measured models' estimates sit from their catalog priors
    /// (sample-weighted mean of estimate − prior, both at medium complexity).
    prior_shift: HashMap<Pattern, f64>,
}

impl LearnedWeights {
    /// Indexes `weights` by catalog model; estimates for models not in the catalog (or with an
    /// out-of-range quality) are dropped.
    pub fn new(catalog: &Catalog, version: i64, weights: Vec<LearnedWeight>) -> Self {
        let by_model: HashMap<(Pattern, usize), LearnedWeight> = weights
            .into_iter()
            .filter(|w| (0.0..=1.0).contains(&w.quality))
            .filter_map(|w| {
                let idx = catalog.find(Some(w.provider), &w.model)?;
                Some(((w.pattern, idx), w))
            })
            .collect();
        let mut sums: HashMap<Pattern, (f64, f64)> = HashMap::new();
        for ((pattern, idx), w) in &by_model {
            if !w.is_actionable() || w.samples == 0 {
                continue;
            }
            let reference = w.avg_complexity.unwrap_or(0.5);
            let measured = super::engine::at_complexity(w.quality, 0.5, reference);
            let prior = catalog.models()[*idx].prior(*pattern);
            let n = f64::from(w.samples);
            let e = sums.entry(*pattern).or_default();
            e.0 += n * (measured - prior);
            e.1 += n;
        }
        let prior_shift = sums
            .into_iter()
            .map(|(p, (sum, n))| (p, (sum / n).clamp(-0.5, 0.5)))
            .collect();
        Self {
            version,
            by_model,
            prior_shift,
        }
    }

    /// How much to move a catalog prior for `pattern` (0 without evidence): if the models
    /// measured on this pattern's traffic did worse (or better) than their priors said, the
    /// unmeasured ones are expected to as well — a prior describes typical requests, the ratings
    /// describe these.
    pub fn prior_shift(&self, pattern: Pattern) -> f64 {
        self.prior_shift.get(&pattern).copied().unwrap_or(0.0)
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The estimate for catalog model `model` on `pattern`, whatever its confidence.
    pub fn get(&self, pattern: Pattern, model: usize) -> Option<&LearnedWeight> {
        self.by_model.get(&(pattern, model))
    }
}

/// Keeps `engine`'s learned weights current: loads them at once, then again whenever a
/// `routing_policy` NOTIFY arrives or, failing that, when a periodic check finds a new policy
/// version. Survives database outages (it retries on the next tick). Ends on `shutdown`.
pub async fn run_reloader(
    engine: std::sync::Arc<super::RoutingEngine>,
    pool: sqlx::PgPool,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::store::weights as store;

    let mut listener = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut loaded = false;
    loop {
        if listener.is_none() {
            listener = store::listen(&pool).await.ok();
        }
        let reload_needed = if loaded {
            match store::policy_version(&pool).await {
                Ok(v) => v != engine.policy_version(),
                Err(_) => false,
            }
        } else {
            true
        };
        if reload_needed {
            match store::load(&pool).await {
                Ok((version, rows)) => {
                    let weights = LearnedWeights::new(engine.catalog(), version, rows);
                    tracing::info!(
                        policy_version = version,
                        weights = weights.len(),
                        "routing weights loaded"
                    );
                    engine.set_weights(weights);
                    loaded = true;
                }
                Err(e) => tracing::debug!(error = %e, "routing weights not loaded; will retry"),
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            result = notified => {
                if result.is_err() {
                    listener = None;
                }
            }
        }
    }
}
