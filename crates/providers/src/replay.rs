//! The replay provider: answers from an evaluation dataset of recorded outcomes
//! (`REPLAY_DATASET`, loaded by the application and handed over as a [`ReplayBook`]). For a (prompt, model) it returns the
//! recorded response and usage (estimated where the record has none) and the recorded cost as
//! the provider-reported cost. A prompt missing from the dataset is refused; a model without an
//! outcome for the prompt is unavailable (the request falls back to its next model). This is how
//! `optimizer eval` runs recorded benchmarks through the real API, queue, workers and trainer.

use std::sync::Arc;

use super::{Completion, CompletionRequest, ErrorKind, Provider, ProviderError, ProviderId};

/// One recorded outcome of a model on a prompt, as the replay provider answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The record's id (for messages).
    pub record_id: String,
    /// The recorded answer, when the dataset kept one.
    pub response: Option<String>,
    /// "correct", "wrong" or "score 0.40": stated in the answer when there is no response.
    pub verdict: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The recorded cost, reported as the provider's own figure.
    pub cost_usd: Option<f64>,
    /// The verdict a judge gives this answer (the rating a user would give it).
    pub verdict_as_judged: super::judge::Verdict,
}

impl Recorded {
    /// The answer as the replay provider gives it: the recorded response, else a line stating
    /// the recorded outcome.
    pub fn answer(&self, model: &str) -> String {
        self.response.clone().unwrap_or_else(|| {
            format!(
                "[replayed outcome of {model} on {}: {}]",
                self.record_id, self.verdict
            )
        })
    }
}

/// What a replay book knows of a (prompt, model).
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The prompt is not in the book.
    UnknownPrompt,
    /// The prompt is (record `record_id`) but this model has no outcome for it.
    NoOutcome {
        record_id: String,
    },
    Found(Recorded),
}

/// Recorded outcomes by prompt and model (the application's evaluation dataset implements it).
pub trait ReplayBook: Send + Sync {
    fn lookup(&self, prompt: &str, model: &str) -> Lookup;
    /// Every model's recorded outcome of `prompt` (none: not in the book).
    fn outcomes(&self, prompt: &str) -> Vec<(String, Recorded)>;
}

#[derive(Clone)]
pub struct Replay {
    book: Arc<dyn ReplayBook>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

impl Replay {
    pub fn new(book: Arc<dyn ReplayBook>) -> Self {
        Self { book }
    }

    /// The same answer as `complete`, sent as one delta.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        deltas: &super::sse::Deltas,
    ) -> Result<Completion, ProviderError> {
        let answer = self.complete(request).await?;
        let _ = deltas.send(answer.text.clone());
        Ok(answer)
    }
}

fn error(kind: ErrorKind, message: String) -> ProviderError {
    ProviderError {
        provider: ProviderId::Replay,
        kind,
        status: None,
        retry_after: None,
        message,
    }
}

impl Replay {
    /// Any model of the book judges: the verdict of the recorded outcome whose answer is the one
    /// graded (as the evaluation's user would rate it), at the tokens of the grading request.
    fn judge(
        &self,
        request: &CompletionRequest,
        prompt: &str,
        answer: &str,
    ) -> Result<Completion, ProviderError> {
        let outcomes = self.book.outcomes(prompt);
        let Some((_, graded)) = outcomes.iter().find(|(m, o)| o.answer(m) == answer) else {
            return Err(error(
                ErrorKind::Permanent,
                "the graded answer is not a recorded one".into(),
            ));
        };
        Ok(super::judge::offline_reply(
            request,
            graded.verdict_as_judged,
        ))
    }
}

impl Provider for Replay {
    fn id(&self) -> ProviderId {
        ProviderId::Replay
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        if let Some((prompt, answer)) = super::judge::read_grading_request(request) {
            return self.judge(request, prompt, answer);
        }
        let outcome = match self.book.lookup(request.last_turn(), &request.model) {
            Lookup::Found(outcome) => outcome,
            Lookup::UnknownPrompt => {
                return Err(error(
                    ErrorKind::Permanent,
                    "the prompt is not in the replay dataset".into(),
                ));
            }
            Lookup::NoOutcome { record_id } => {
                return Err(error(
                    ErrorKind::ModelUnavailable,
                    format!("no recorded outcome of {} for {record_id}", request.model),
                ));
            }
        };
        let text = outcome.answer(&request.model);
        let (input_tokens, output_tokens) = (outcome.input_tokens, outcome.output_tokens);
        Ok(Completion {
            text,
            input_tokens,
            output_tokens,
            reported_cost_usd: outcome.cost_usd,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            model: request.model.clone(),
            tool_calls: Vec::new(),
            finish_reason: Some("stop".into()),
        })
    }
}
