//! The simulated provider: used when no provider key is configured (or `PROVIDERS=simulated`),
//! so the whole loop works offline. Answers are deterministic per (prompt, model), arrive after
//! a configurable latency, and are labelled `[simulated …]`. Each simulated model has a true
//! quality per pattern (`catalog/simulated_profiles.toml`, replaceable) which every answer
//! states, so ratings in a demo follow something real.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    Completion, CompletionRequest, Provider, ProviderError, ProviderId, ToolCall, ToolChoice,
};
use optimizer_types::Pattern;

pub const DEFAULT_PROFILES: &str = include_str!("../../../catalog/simulated_profiles.toml");

/// True quality per simulated model and pattern.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    models: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated profiles {file}: {reason}")]
pub struct ProfileError {
    pub file: String,
    pub reason: String,
}

impl Profiles {
    pub fn load(path: Option<&Path>) -> Result<Self, ProfileError> {
        let (text, file) = match path {
            None => (
                DEFAULT_PROFILES.to_owned(),
                "catalog/simulated_profiles.toml".to_owned(),
            ),
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| ProfileError {
                    file: p.display().to_string(),
                    reason: format!("cannot read: {e}"),
                })?,
                p.display().to_string(),
            ),
        };
        let models: BTreeMap<String, BTreeMap<String, f64>> =
            toml::from_str(&text).map_err(|e| ProfileError {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        for (model, table) in &models {
            for (pattern, q) in table {
                if pattern != "default" && Pattern::parse(pattern).is_none() {
                    return Err(ProfileError {
                        file,
                        reason: format!("[{model}] {pattern}: not a pattern"),
                    });
                }
                if !(0.0..=1.0).contains(q) {
                    return Err(ProfileError {
                        file,
                        reason: format!("[{model}] {pattern} = {q}: must be in 0..1"),
                    });
                }
            }
        }
        Ok(Self { models })
    }

    /// The true quality of `model` on `pattern` (0.5 for unknown models).
    pub fn quality(&self, model: &str, pattern: Pattern) -> f64 {
        self.models
            .get(model)
            .and_then(|t| t.get(pattern.as_str()).or_else(|| t.get("default")))
            .copied()
            .unwrap_or(0.5)
    }
}

/// Tells the simulated provider a prompt's pattern (the application passes the routing
/// analyzer, so answers state the quality of the pattern the router saw).
pub type Classifier = fn(&str) -> Pattern;

pub struct Simulated {
    latency: Duration,
    profiles: Profiles,
    classify: Classifier,
}

impl std::fmt::Debug for Simulated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulated")
            .field("latency", &self.latency)
            .field("profiles", &self.profiles)
            .finish_non_exhaustive()
    }
}

const WORDS: &[&str] = &[
    "the",
    "answer",
    "depends",
    "on",
    "context",
    "first",
    "consider",
    "each",
    "case",
    "carefully",
    "which",
    "gives",
    "a",
    "clear",
    "result",
    "here",
    "is",
    "how",
    "it",
    "works",
    "in",
    "practice",
    "and",
    "why",
    "that",
    "matters",
    "for",
    "your",
    "question",
];

impl Simulated {
    pub fn new(latency: Duration, profiles: Profiles, classify: Classifier) -> Self {
        Self {
            latency,
            profiles,
            classify,
        }
    }

    /// The answer's stated quality, as the profile says; exposed for demos and evaluation.
    pub fn quality(&self, model: &str, prompt: &str) -> f64 {
        self.profiles.quality(model, (self.classify)(prompt))
    }
}

impl Simulated {
    /// The same answer as `complete`, sent word by word over the configured latency.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &super::sse::Deltas,
    ) -> Result<Completion, ProviderError> {
        let latency = self.latency;
        let quiet = Simulated {
            latency: std::time::Duration::ZERO,
            profiles: self.profiles.clone(),
            classify: self.classify,
        };
        let answer = quiet.complete(request).await?;
        let words: Vec<&str> = answer.text.split_inclusive(' ').collect();
        let pause = latency / u32::try_from(words.len().max(1)).unwrap_or(1);
        for w in words {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let _ = deltas.send(w.to_owned());
        }
        Ok(answer)
    }
}

/// With tools on offer and the user's turn last, the simulated model calls one — the named one,
/// else the first (unless `tool_choice` is `none`) — with arguments filled from its schema:
/// strings get the prompt's first 40 characters, numbers 1, booleans true. After a tool's
/// result it answers in text.
fn simulated_call(request: &CompletionRequest, digest: &[u8]) -> Option<ToolCall> {
    if request.messages.last()?.role != crate::Role::User {
        return None;
    }
    let tool = match request.tool_choice.as_ref() {
        Some(ToolChoice::None) => return None,
        Some(ToolChoice::Function(name)) => request.tools.iter().find(|t| &t.name == name)?,
        _ => request.tools.first()?,
    };
    let prompt: String = request.last_turn().chars().take(40).collect();
    Some(ToolCall {
        id: format!("call_{}", hex_prefix(digest)),
        name: tool.name.clone(),
        arguments: object_for(&tool.parameters, &prompt).to_string(),
    })
}

/// An object with every property `schema` names: strings are `text`, numbers 1, booleans true.
fn object_for(schema: &serde_json::Value, text: &str) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    if let Some(props) = schema["properties"].as_object() {
        for (name, schema) in props {
            let value = match schema["type"].as_str() {
                Some("string") => serde_json::Value::from(text),
                Some("number" | "integer") => 1.into(),
                Some("boolean") => true.into(),
                _ => serde_json::Value::Null,
            };
            object.insert(name.clone(), value);
        }
    }
    serde_json::Value::Object(object)
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Parses the true quality a simulated answer states (`… simulated quality 0.87]`).
pub fn stated_quality(text: &str) -> Option<f64> {
    let rest = &text[text.find("simulated quality ")? + "simulated quality ".len()..];
    rest.split(']').next()?.trim().parse().ok()
}

impl Simulated {
    /// The simulated judge: a simulated answer is correct with the probability its model's true
    /// quality gives (drawn from the grading request), graded `1 + round(4·quality)`.
    async fn judge(
        &self,
        request: &CompletionRequest,
        answer: &str,
        rng: &mut fastrand::Rng,
    ) -> Result<Completion, ProviderError> {
        let Some(quality) = stated_quality(answer) else {
            return Err(ProviderError {
                provider: ProviderId::Simulated,
                kind: crate::ErrorKind::Permanent,
                status: None,
                retry_after: None,
                message: "the simulated judge grades simulated answers only".into(),
            });
        };
        let verdict = crate::judge::Verdict {
            correct: rng.f64() < quality,
            grade: (1.0 + (4.0 * quality.clamp(0.0, 1.0)).round()) as u8,
        };
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(crate::judge::offline_reply(request, verdict))
    }
}

impl Provider for Simulated {
    fn id(&self) -> ProviderId {
        ProviderId::Simulated
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let prompt = request.last_turn();
        let pattern = (self.classify)(prompt);
        let quality = self.profiles.quality(&request.model, pattern);

        let mut hasher = Sha256::new();
        hasher.update(request.model.as_bytes());
        hasher.update([0]);
        if let Some(system) = &request.system {
            hasher.update(system.as_bytes());
        }
        hasher.update([0]);
        for m in &request.messages {
            hasher.update(m.content.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        let seed = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
        let mut rng = fastrand::Rng::with_seed(seed);
        if let Some((_, answer)) = crate::judge::read_grading_request(request) {
            return self.judge(request, answer, &mut rng).await;
        }

        let budget = u64::from(request.max_tokens.max(1));
        let wanted = 20 + rng.u64(0..60);
        let words = wanted.min(budget.saturating_sub(12).max(1));
        let body: Vec<&str> = (0..words)
            .map(|_| WORDS[rng.usize(..WORDS.len())])
            .collect();
        let text = format!(
            "[simulated {} · {} · simulated quality {:.2}] {}.",
            request.model,
            pattern,
            quality,
            body.join(" ")
        );
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let input_tokens = request
            .messages
            .iter()
            .map(|m| m.content.len() as u64 / 4 + 4)
            .sum::<u64>()
            + request.system.as_ref().map_or(0, |s| s.len() as u64 / 4);
        if let Some(call) = simulated_call(request, &digest) {
            return Ok(Completion {
                text: String::new(),
                input_tokens,
                output_tokens: 12 + call.arguments.len() as u64 / 4,
                reported_cost_usd: None,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
                model: request.model.clone(),
                tool_calls: vec![call],
                finish_reason: Some("tool_calls".into()),
            });
        }
        let text = match &request.response_format {
            // JSON output: the schema's properties (strings carry the answer), or the answer
            // under "answer".
            Some(crate::ResponseFormat::JsonSchema { schema, .. }) => {
                object_for(schema, &text).to_string()
            }
            Some(crate::ResponseFormat::JsonObject) => {
                serde_json::json!({ "answer": text }).to_string()
            }
            None => text,
        };
        Ok(Completion {
            tool_calls: Vec::new(),
            output_tokens: (words + 12).min(budget),
            text,
            input_tokens,
            reported_cost_usd: None,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            model: request.model.clone(),
            // Cut short by `max_tokens`, as a real model would be.
            finish_reason: Some(if words < wanted { "length" } else { "stop" }.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Role};

    fn request(model: &str, prompt: &str) -> CompletionRequest {
        CompletionRequest {
            model: model.into(),
            system: None,
            messages: vec![Message::text(Role::User, prompt)],
            max_tokens: 256,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
        }
    }

    #[tokio::test]
    async fn answers_are_deterministic_labelled_and_state_their_quality() {
        let classify: Classifier = |p| {
            optimizer_routing::QueryPatternAnalyzer::new()
                .analyze(p)
                .pattern
        };
        let sim = Simulated::new(Duration::ZERO, Profiles::load(None).unwrap(), classify);
        let a = sim
            .complete(&request("sim-lite", "What is the capital of Peru?"))
            .await
            .unwrap();
        let b = sim
            .complete(&request("sim-lite", "What is the capital of Peru?"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert!(
            a.text.starts_with("[simulated sim-lite · factual"),
            "{}",
            a.text
        );
        assert_eq!(stated_quality(&a.text), Some(0.90));
        let c = sim
            .complete(&request("sim-lite", "Solve 3x + 7 = 22 for x"))
            .await
            .unwrap();
        assert_eq!(stated_quality(&c.text), Some(0.45));
        assert_ne!(a.text, c.text);
        assert!(a.output_tokens > 0 && a.input_tokens > 0);
    }

    #[tokio::test]
    async fn the_simulated_judge_grades_by_the_stated_quality() {
        let classify: Classifier = |_| Pattern::Factual;
        let sim = Simulated::new(Duration::ZERO, Profiles::load(None).unwrap(), classify);
        let asked = request("sim-lite", "What is the capital of Peru?");
        let answer = sim.complete(&asked).await.unwrap();
        let grading = crate::judge::grading_request(&asked, &answer.text, "sim-pro");
        let verdict = sim.complete(&grading).await.unwrap();
        let v = crate::judge::parse_verdict(&verdict.text).unwrap();
        // Quality 0.90: grade 1 + round(3.6) = 5.
        assert_eq!(v.grade, 5);
        // Something that is not a simulated answer is not graded.
        let other = crate::judge::grading_request(&asked, "Lima.", "sim-pro");
        assert!(sim.complete(&other).await.is_err());
    }

    #[test]
    fn bad_profiles_are_rejected() {
        let dir = std::env::temp_dir().join(format!("sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "[sim-lite]\ncoding = 0.5\n").unwrap();
        let e = Profiles::load(Some(&path)).unwrap_err();
        assert!(e.reason.contains("coding"), "{e}");
        std::fs::write(&path, "[sim-lite]\ncode = 1.5\n").unwrap();
        assert!(Profiles::load(Some(&path)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
