use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Pattern, ProviderId};

/// How much evidence backs an estimate (the seed's thresholds, applied by the trainer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    #[inline]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high" => Some(Self::High),
            "medium" => Some(Self::Medium),
            "low" => Some(Self::Low),
            _ => None,
        }
    }

    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }

    /// Whether an estimate at this confidence may change routing.
    #[inline]
    pub fn is_actionable(self) -> bool {
        self >= Self::Medium
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One learned estimate of a model's quality on a pattern (a `routing_weights` row as the
/// engine reads it).
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
    #[inline]
    pub fn is_actionable(&self) -> bool {
        self.confidence.is_actionable() || self.demoted
    }
}
