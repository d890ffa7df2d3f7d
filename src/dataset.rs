//! The evaluation dataset: recorded outcomes of several models on the same prompts (JSONL, one
//! record per line; format in docs/eval.md).
//!
//! ```json
//! {"id": "gsm8k-17", "prompt": "…", "category": "gsm8k",
//!  "outcomes": {"gpt-4-1106-preview": {"correct": true, "response": "…", "output_tokens": 212},
//!               "mixtral-8x7b": {"score": 0.4, "cost_usd": 0.00012}}}
//! ```
//!
//! An outcome is `correct` (bool) or `score` (a number in 0..1); `response`, `input_tokens`,
//! `output_tokens` and `cost_usd` are optional. Missing token counts are estimated the way the
//! router estimates them (the prompt's for input; the response's, else
//! [`DEFAULT_OUTPUT_TOKENS`], for output); a missing cost is the catalog price × tokens.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::providers::replay::{Lookup, Recorded, ReplayBook};
use crate::routing::analyzer::estimate_tokens;

/// Output tokens assumed for an outcome that records neither `output_tokens` nor a response.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 200;

/// How one model did on one prompt.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    #[serde(default)]
    pub correct: Option<bool>,
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

impl Outcome {
    /// The outcome's value in 0..1: 1/0 for correct/wrong, else the score.
    pub fn value(&self) -> f64 {
        match (self.correct, self.score) {
            (Some(c), _) => f64::from(u8::from(c)),
            (None, Some(s)) => s,
            (None, None) => 0.0,
        }
    }

    /// The rating a user would give: 5★ and correct for a right answer, 1★ and wrong for a wrong
    /// one; a score `s` becomes `1 + round(4·s)` stars and counts as correct from 0.5.
    pub fn rating(&self) -> (i64, bool) {
        let v = self.value();
        (1 + (4.0 * v).round() as i64, v >= 0.5)
    }

    /// (input, output) tokens: recorded, else estimated.
    pub fn tokens(&self, prompt: &str) -> (u64, u64) {
        let input = self.input_tokens.unwrap_or_else(|| estimate_tokens(prompt));
        let output = self.output_tokens.unwrap_or_else(|| {
            self.response
                .as_deref()
                .map_or(DEFAULT_OUTPUT_TOKENS, |r| estimate_tokens(r).max(1))
        });
        (input, output)
    }
}

/// One prompt and every model's outcome on it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub prompt: String,
    #[serde(default)]
    pub category: Option<String>,
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Record {
    pub fn category(&self) -> &str {
        self.category.as_deref().unwrap_or("all")
    }
}

/// A loaded dataset, in file order, with repeated prompts dropped (the first record wins: the
/// replay provider answers by prompt text, so a prompt can only have one set of outcomes).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub records: Vec<Record>,
    by_prompt: HashMap<String, usize>,
    /// Records dropped because their prompt repeated an earlier one.
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("dataset {file}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct DatasetError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl Dataset {
    /// Reads a JSONL file; errors name the file, the line and what is wrong.
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        let file = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| DatasetError {
            file: file.clone(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        let mut records = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let err = |reason: String| DatasetError {
                file: file.clone(),
                line: Some(i + 1),
                reason,
            };
            let line = line.map_err(|e| err(format!("cannot read: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
            validate(&record).map_err(err)?;
            records.push(record);
        }
        if records.is_empty() {
            return Err(DatasetError {
                file,
                line: None,
                reason: "no records".into(),
            });
        }
        Ok(Self::from_records(records))
    }

    pub fn from_records(all: Vec<Record>) -> Self {
        let mut records = Vec::with_capacity(all.len());
        let mut by_prompt = HashMap::with_capacity(all.len());
        let mut duplicates = 0;
        for r in all {
            if by_prompt.contains_key(&r.prompt) {
                duplicates += 1;
                continue;
            }
            by_prompt.insert(r.prompt.clone(), records.len());
            records.push(r);
        }
        Self {
            records,
            by_prompt,
            duplicates,
        }
    }

    /// The record whose prompt is exactly `prompt`.
    pub fn by_prompt(&self, prompt: &str) -> Option<&Record> {
        self.by_prompt.get(prompt).map(|i| &self.records[*i])
    }

    /// Every model that has at least one outcome, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self
            .records
            .iter()
            .flat_map(|r| r.outcomes.keys().cloned())
            .collect();
        models.sort();
        models.dedup();
        models
    }
}

fn validate(r: &Record) -> Result<(), String> {
    if r.id.trim().is_empty() {
        return Err("id must not be empty".into());
    }
    if r.prompt.trim().is_empty() {
        return Err(format!("record {:?}: prompt must not be empty", r.id));
    }
    if r.outcomes.is_empty() {
        return Err(format!("record {:?}: outcomes must not be empty", r.id));
    }
    for (model, o) in &r.outcomes {
        let at = || format!("record {:?}, model {model:?}", r.id);
        match (o.correct, o.score) {
            (None, None) => return Err(format!("{}: needs `correct` or `score`", at())),
            (Some(_), Some(_)) => {
                return Err(format!("{}: give `correct` or `score`, not both", at()));
            }
            (None, Some(s)) if !(s.is_finite() && (0.0..=1.0).contains(&s)) => {
                return Err(format!("{}: score must be in 0..1, got {s}", at()));
            }
            _ => {}
        }
        if let Some(c) = o.cost_usd
            && !(c.is_finite() && c >= 0.0)
        {
            return Err(format!("{}: cost_usd must be non-negative, got {c}", at()));
        }
    }
    Ok(())
}

/// The replay provider answers from a dataset.
/// A record's outcome as the replay provider answers it.
fn recorded(record: &Record, outcome: &Outcome) -> Recorded {
    let (input_tokens, output_tokens) = outcome.tokens(&record.prompt);
    let verdict = match (outcome.correct, outcome.score) {
        (Some(true), _) => "correct".to_owned(),
        (Some(false), _) => "wrong".to_owned(),
        (None, s) => format!("score {:.2}", s.unwrap_or_default()),
    };
    let (stars, correct) = outcome.rating();
    Recorded {
        record_id: record.id.clone(),
        response: outcome.response.clone(),
        verdict,
        input_tokens,
        output_tokens,
        cost_usd: outcome.cost_usd,
        verdict_as_judged: crate::providers::judge::Verdict {
            correct,
            grade: u8::try_from(stars.clamp(1, 5)).unwrap_or(1),
        },
    }
}

impl ReplayBook for Dataset {
    fn lookup(&self, prompt: &str, model: &str) -> Lookup {
        let Some(record) = self.by_prompt(prompt) else {
            return Lookup::UnknownPrompt;
        };
        let Some(outcome) = record.outcomes.get(model) else {
            return Lookup::NoOutcome {
                record_id: record.id.clone(),
            };
        };
        Lookup::Found(recorded(record, outcome))
    }

    fn outcomes(&self, prompt: &str) -> Vec<(String, Recorded)> {
        self.by_prompt(prompt).map_or_else(Vec::new, |record| {
            record
                .outcomes
                .iter()
                .map(|(model, o)| (model.clone(), recorded(record, o)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(line: &str) -> Result<Record, String> {
        let r: Record = serde_json::from_str(line).map_err(|e| e.to_string())?;
        validate(&r)?;
        Ok(r)
    }

    #[test]
    fn outcomes_map_to_values_ratings_and_tokens() {
        let r = parse(
            r#"{"id":"a","prompt":"What is two plus two?","outcomes":{
                "m1":{"correct":true},"m2":{"correct":false,"response":"five, clearly"},
                "m3":{"score":0.4,"output_tokens":7}}}"#,
        )
        .unwrap();
        let (m1, m2, m3) = (&r.outcomes["m1"], &r.outcomes["m2"], &r.outcomes["m3"]);
        assert_eq!((m1.value(), m1.rating()), (1.0, (5, true)));
        assert_eq!((m2.value(), m2.rating()), (0.0, (1, false)));
        assert_eq!(m3.rating(), (3, false));
        assert_eq!(m1.tokens(&r.prompt), (6, DEFAULT_OUTPUT_TOKENS));
        assert_eq!(m2.tokens(&r.prompt), (6, 4));
        assert_eq!(m3.tokens(&r.prompt).1, 7);
        assert_eq!(r.category(), "all");
    }

    #[test]
    fn invalid_records_are_refused_with_the_reason() {
        for (line, needle) in [
            (
                r#"{"id":"a","prompt":"p","outcomes":{}}"#,
                "outcomes must not be empty",
            ),
            (
                r#"{"id":"a","prompt":" ","outcomes":{"m":{"correct":true}}}"#,
                "prompt",
            ),
            (
                r#"{"id":"a","prompt":"p","outcomes":{"m":{}}}"#,
                "needs `correct` or `score`",
            ),
            (
                r#"{"id":"a","prompt":"p","outcomes":{"m":{"score":3}}}"#,
                "0..1",
            ),
            (
                r#"{"id":"a","prompt":"p","outcomes":{"m":{"correct":true,"score":1}}}"#,
                "not both",
            ),
            (
                r#"{"id":"a","prompt":"p","outcomes":{"m":{"correct":true,"x":1}}}"#,
                "unknown field",
            ),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn repeated_prompts_keep_the_first_record() {
        let rec = |id: &str, prompt: &str| Record {
            id: id.into(),
            prompt: prompt.into(),
            category: None,
            outcomes: BTreeMap::from([(
                "m".to_owned(),
                Outcome {
                    correct: Some(true),
                    score: None,
                    response: None,
                    input_tokens: None,
                    output_tokens: None,
                    cost_usd: None,
                },
            )]),
        };
        let d = Dataset::from_records(vec![rec("1", "p"), rec("2", "q"), rec("3", "p")]);
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.by_prompt("p").unwrap().id, "1");
        assert_eq!(d.models(), vec!["m".to_owned()]);
    }
}
