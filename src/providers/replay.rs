//! The replay provider: answers from an evaluation dataset of recorded outcomes
//! (`REPLAY_DATASET`, see [`crate::eval::dataset`]). For a (prompt, model) it returns the
//! recorded response and usage (estimated where the record has none) and the recorded cost as
//! the provider-reported cost. A prompt missing from the dataset is refused; a model without an
//! outcome for the prompt is unavailable (the request falls back to its next model). This is how
//! `optimizer eval` runs recorded benchmarks through the real API, queue, workers and trainer.

use std::path::Path;
use std::sync::Arc;

use super::{Completion, CompletionRequest, ErrorKind, Provider, ProviderError, ProviderId};
use crate::eval::dataset::{Dataset, DatasetError};

#[derive(Debug, Clone)]
pub struct Replay {
    dataset: Arc<Dataset>,
}

impl Replay {
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        Ok(Self::new(Arc::new(Dataset::load(path)?)))
    }

    pub fn new(dataset: Arc<Dataset>) -> Self {
        Self { dataset }
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

impl Provider for Replay {
    fn id(&self) -> ProviderId {
        ProviderId::Replay
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let prompt = request.last_turn();
        let record = self.dataset.by_prompt(prompt).ok_or_else(|| {
            error(
                ErrorKind::Permanent,
                "the prompt is not in the replay dataset".into(),
            )
        })?;
        let outcome = record.outcomes.get(&request.model).ok_or_else(|| {
            error(
                ErrorKind::ModelUnavailable,
                format!("no recorded outcome of {} for {}", request.model, record.id),
            )
        })?;
        let (input_tokens, output_tokens) = outcome.tokens(&record.prompt);
        let text = outcome.response.clone().unwrap_or_else(|| {
            let verdict = match (outcome.correct, outcome.score) {
                (Some(true), _) => "correct".to_owned(),
                (Some(false), _) => "wrong".to_owned(),
                (None, s) => format!("score {:.2}", s.unwrap_or_default()),
            };
            format!(
                "[replayed outcome of {} on {}: {verdict}]",
                request.model, record.id
            )
        });
        Ok(Completion {
            text,
            input_tokens,
            output_tokens,
            reported_cost_usd: outcome.cost_usd,
            model: request.model.clone(),
            finish_reason: Some("stop".into()),
        })
    }
}
