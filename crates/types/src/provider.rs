use std::fmt;

use serde::{Deserialize, Serialize};

/// A provider, i.e. a wire format plus its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderId {
    Anthropic,
    Gemini,
    Openrouter,
    OpenaiCompat,
    Simulated,
    Replay,
}

impl ProviderId {
    pub const ALL: [ProviderId; 6] = [
        ProviderId::Anthropic,
        ProviderId::Gemini,
        ProviderId::Openrouter,
        ProviderId::OpenaiCompat,
        ProviderId::Simulated,
        ProviderId::Replay,
    ];

    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Anthropic => "anthropic",
            ProviderId::Gemini => "gemini",
            ProviderId::Openrouter => "openrouter",
            ProviderId::OpenaiCompat => "openai_compat",
            ProviderId::Simulated => "simulated",
            ProviderId::Replay => "replay",
        }
    }

    #[inline]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
