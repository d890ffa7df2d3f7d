use std::fmt;

use serde::{Deserialize, Serialize};

/// What the caller optimises for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Cost,
    #[default]
    Balanced,
    Quality,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Cost, Strategy::Balanced, Strategy::Quality];

    #[inline]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Cost => "cost",
            Strategy::Balanced => "balanced",
            Strategy::Quality => "quality",
        }
    }

    /// Before per-prompt estimates are learned: the expected quality a choice must reach at
    /// complexity `c` (None: take the best). The routing engine applies it.
    #[inline]
    pub fn target(self, c: f64) -> Option<f64> {
        match self {
            Strategy::Cost => Some(0.60 + 0.25 * c),
            Strategy::Balanced => Some(0.70 + 0.22 * c),
            Strategy::Quality => None,
        }
    }
}

impl Strategy {
    /// Where per-prompt estimates are learned: the share of the best candidate's expected quality
    /// for this prompt that the choice must keep — `cost` 0.90, `balanced` 0.97, `quality` 1 —
    /// the cheapest candidate reaching it is taken. A request may set its own share.
    #[inline]
    pub fn share(self) -> f64 {
        match self {
            Strategy::Cost => 0.90,
            Strategy::Balanced => 0.97,
            Strategy::Quality => 1.0,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
