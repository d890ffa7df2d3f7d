//! The model catalog: provider, model id, prices, context window, a quality prior (overall and
//! per pattern) and capabilities. The default ships embedded (`catalog/default.toml`, with the
//! date and source of its prices); `CATALOG_PATH` replaces it. A malformed catalog is an error
//! naming the file, the line and the reason, and stops start-up.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::analyzer::Pattern;
pub use optimizer_types::ProviderId;

/// The embedded default catalog.
pub const DEFAULT_CATALOG: &str = include_str!("../../../catalog/default.toml");
const DEFAULT_CATALOG_NAME: &str = "catalog/default.toml (embedded)";

/// One model as the catalog file describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub provider: ProviderId,
    /// The id sent to the provider.
    pub model: String,
    #[serde(default)]
    pub name: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    /// Input tokens read from the provider's prompt cache (default: the input price).
    #[serde(default)]
    pub cached_input_usd_per_mtok: Option<f64>,
    /// Input tokens written to the provider's prompt cache (default: the input price).
    #[serde(default)]
    pub cache_write_usd_per_mtok: Option<f64>,
    pub context_window: u32,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Prior expected quality in 0..1 for requests of medium complexity.
    pub quality: f64,
    /// Per-pattern overrides of `quality`.
    #[serde(default)]
    pub quality_by_pattern: BTreeMap<Pattern, f64>,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl ModelEntry {
    /// The prior quality for `pattern` (0..1).
    pub fn prior(&self, pattern: Pattern) -> f64 {
        self.quality_by_pattern
            .get(&pattern)
            .copied()
            .unwrap_or(self.quality)
    }

    /// USD for the given token counts at list price.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_usd_per_mtok
            + output_tokens as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }

    /// USD for a call that reported `input_tokens` in all, of them `cached` read from and
    /// `written` to the provider's prompt cache, each at its own rate.
    pub fn cost_usd_cached(
        &self,
        input_tokens: u64,
        cached: u64,
        written: u64,
        output: u64,
    ) -> f64 {
        let (cached, written) = (
            cached.min(input_tokens),
            written.min(input_tokens - cached.min(input_tokens)),
        );
        let fresh = input_tokens - cached - written;
        (fresh as f64 * self.input_usd_per_mtok
            + cached as f64
                * self
                    .cached_input_usd_per_mtok
                    .unwrap_or(self.input_usd_per_mtok)
            + written as f64
                * self
                    .cache_write_usd_per_mtok
                    .unwrap_or(self.input_usd_per_mtok)
            + output as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }

    /// `provider/model`, the form used in logs and to pin a model.
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }

    fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("model must not be empty".into());
        }
        for (field, v) in [
            ("input_usd_per_mtok", self.input_usd_per_mtok),
            ("output_usd_per_mtok", self.output_usd_per_mtok),
            (
                "cached_input_usd_per_mtok",
                self.cached_input_usd_per_mtok.unwrap_or(0.0),
            ),
            (
                "cache_write_usd_per_mtok",
                self.cache_write_usd_per_mtok.unwrap_or(0.0),
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{field} must be a non-negative number, got {v}"));
            }
        }
        if self.context_window == 0 {
            return Err("context_window must be positive".into());
        }
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !unit(self.quality) {
            return Err(format!("quality must be in 0..1, got {}", self.quality));
        }
        if let Some((p, v)) = self.quality_by_pattern.iter().find(|(_, v)| !unit(**v)) {
            return Err(format!("quality_by_pattern.{p} must be in 0..1, got {v}"));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    prices_as_of: Option<String>,
    #[serde(default)]
    model: Vec<toml::Spanned<ModelEntry>>,
}

/// A catalog that could not be loaded: which file, which line, why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("model catalog {file}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct CatalogError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

/// The loaded catalog. Models keep the file's order; their index is their identity in memory.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelEntry>,
    source: String,
    prices_as_of: Option<String>,
}

impl Catalog {
    /// The embedded default.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::parse(DEFAULT_CATALOG, DEFAULT_CATALOG_NAME)
    }

    /// `path` if given, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            None => Self::embedded(),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
                    file: name.clone(),
                    line: None,
                    reason: format!("cannot read: {e}"),
                })?;
                Self::parse(&text, &name)
            }
        }
    }

    /// Parses and validates catalog text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, CatalogError> {
        let err = |line: Option<usize>, reason: String| CatalogError {
            file: file.to_owned(),
            line,
            reason,
        };
        let parsed: CatalogFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            err(line, e.message().to_owned())
        })?;
        let mut seen = HashSet::new();
        let mut models = Vec::with_capacity(parsed.model.len());
        for spanned in parsed.model {
            let line = Some(line_of(text, spanned.span().start));
            let entry = spanned.into_inner();
            entry.validate().map_err(|reason| err(line, reason))?;
            if !seen.insert((entry.provider, entry.model.clone())) {
                return Err(err(line, format!("duplicate model {}", entry.key())));
            }
            models.push(entry);
        }
        if models.is_empty() {
            return Err(err(None, "no [[model]] entries".into()));
        }
        Ok(Self {
            models,
            source: file.to_owned(),
            prices_as_of: parsed.prices_as_of,
        })
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn prices_as_of(&self) -> Option<&str> {
        self.prices_as_of.as_deref()
    }

    /// Index of the model named `model` — either `provider/model` or a bare model id, optionally
    /// restricted to `provider`.
    pub fn find(&self, provider: Option<ProviderId>, model: &str) -> Option<usize> {
        let by_id = |p: Option<ProviderId>, id: &str| {
            self.models
                .iter()
                .position(|m| m.model == id && p.is_none_or(|p| m.provider == p))
        };
        by_id(provider, model).or_else(|| {
            let (prefix, rest) = model.split_once('/')?;
            let p = ProviderId::parse(prefix)?;
            if provider.is_some_and(|q| q != p) {
                return None;
            }
            by_id(Some(p), rest)
        })
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_loads_and_covers_the_required_models() {
        let c = Catalog::embedded().unwrap();
        for key in [
            "gemini/gemini-2.5-flash-lite",
            "gemini/gemini-2.5-flash",
            "gemini/gemini-2.5-pro",
            "anthropic/claude-haiku-4-5",
            "anthropic/claude-sonnet-4-5",
            "anthropic/claude-opus-4-5",
            "openrouter/openai/gpt-4o-mini",
            "simulated/sim-lite",
            "simulated/sim-premium",
        ] {
            assert!(c.find(None, key).is_some(), "{key} missing");
        }
        assert!(c.prices_as_of().is_some());
        // A bare id resolves too; an OpenRouter id containing '/' is not mistaken for a prefix.
        assert!(c.find(None, "claude-haiku-4-5").is_some());
        assert!(
            c.find(Some(ProviderId::Openrouter), "openai/gpt-4o-mini")
                .is_some()
        );
        assert!(
            c.find(Some(ProviderId::Gemini), "claude-haiku-4-5")
                .is_none()
        );
    }

    fn parse_err(text: &str) -> CatalogError {
        Catalog::parse(text, "test.toml").unwrap_err()
    }

    const GOOD: &str = r#"
[[model]]
provider = "simulated"
model = "a"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
context_window = 1000
quality = 0.5
"#;

    #[test]
    fn errors_name_the_file_line_and_reason() {
        assert!(Catalog::parse(GOOD, "test.toml").is_ok());

        let e = parse_err(&GOOD.replace("quality = 0.5", "quality = 1.5"));
        assert_eq!((e.file.as_str(), e.line), ("test.toml", Some(2)));
        assert!(e.reason.contains("quality"), "{e}");
        assert!(e.to_string().contains("test.toml, line 2"), "{e}");

        let e = parse_err(&GOOD.replace("context_window = 1000", "context_window = \"big\""));
        assert_eq!(e.line, Some(7), "{e}");

        let e = parse_err(&GOOD.replace("provider = \"simulated\"", "provider = \"acme\""));
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.reason.contains("acme") || e.reason.contains("variant"),
            "{e}"
        );

        let e = parse_err(&format!("{GOOD}\n{GOOD}"));
        assert!(e.reason.contains("duplicate model simulated/a"), "{e}");

        let e = parse_err(&GOOD.replace("quality = 0.5", "quality = 0.5\nqualty = 0.4"));
        assert!(e.reason.contains("qualty"), "{e}");

        let e = parse_err(&GOOD.replace("input_usd_per_mtok = 1.0", "input_usd_per_mtok = -1.0"));
        assert!(e.reason.contains("input_usd_per_mtok"), "{e}");

        assert!(parse_err("").reason.contains("no [[model]]"));
        assert!(parse_err("[[model]\n").line.is_some());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Catalog::load(Some(Path::new("/nonexistent/catalog.toml"))).unwrap_err();
        assert_eq!(e.file, "/nonexistent/catalog.toml");
        assert!(e.reason.contains("cannot read"));
    }

    #[test]
    fn cost_is_priced_per_million_tokens() {
        let c = Catalog::embedded().unwrap();
        let haiku = &c.models()[c.find(None, "claude-haiku-4-5").unwrap()];
        let cost = haiku.cost_usd(1_000_000, 200_000);
        assert!((cost - (1.0 + 1.0)).abs() < 1e-9, "{cost}");
        // Of 1M input tokens, 600k read from the cache ($0.10/M) and 100k written ($1.25/M).
        let cached = haiku.cost_usd_cached(1_000_000, 600_000, 100_000, 200_000);
        let want = 0.3 * 1.0 + 0.6 * 0.10 + 0.1 * 1.25 + 1.0;
        assert!((cached - want).abs() < 1e-9, "{cached} vs {want}");
        // Without cache prices, cached tokens cost the input price; counts are clamped.
        let sim = &c.models()[c.find(None, "sim-lite").unwrap()];
        let all = sim.cost_usd_cached(1_000, 5_000, 5_000, 0);
        assert!((all - sim.cost_usd(1_000, 0)).abs() < 1e-12, "{all}");
        let e = parse_err(&GOOD.replace(
            "input_usd_per_mtok = 1.0",
            "input_usd_per_mtok = 1.0\ncached_input_usd_per_mtok = -0.1",
        ));
        assert!(e.reason.contains("cached_input_usd_per_mtok"), "{e}");
    }
}
