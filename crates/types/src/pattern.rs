use std::fmt;

use serde::{Deserialize, Serialize};

/// A prompt's task type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Code,
    Math,
    Reasoning,
    Creative,
    Factual,
    Summarization,
    Translation,
    Extraction,
    Chat,
    #[default]
    Other,
}

impl Pattern {
    pub const ALL: [Pattern; 10] = [
        Pattern::Code,
        Pattern::Math,
        Pattern::Reasoning,
        Pattern::Creative,
        Pattern::Factual,
        Pattern::Summarization,
        Pattern::Translation,
        Pattern::Extraction,
        Pattern::Chat,
        Pattern::Other,
    ];

    /// Tie-break order: the more specific task first.
    pub const PRIORITY: [Pattern; 10] = [
        Pattern::Translation,
        Pattern::Code,
        Pattern::Math,
        Pattern::Summarization,
        Pattern::Extraction,
        Pattern::Creative,
        Pattern::Reasoning,
        Pattern::Factual,
        Pattern::Chat,
        Pattern::Other,
    ];

    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Code => "code",
            Pattern::Math => "math",
            Pattern::Reasoning => "reasoning",
            Pattern::Creative => "creative",
            Pattern::Factual => "factual",
            Pattern::Summarization => "summarization",
            Pattern::Translation => "translation",
            Pattern::Extraction => "extraction",
            Pattern::Chat => "chat",
            Pattern::Other => "other",
        }
    }

    #[inline]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The pattern's position in [`Pattern::ALL`] (for per-pattern arrays).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
