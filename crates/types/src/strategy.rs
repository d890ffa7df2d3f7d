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
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
