//! Which answered requests get shadow comparisons, and with which models (README "Shadow
//! comparisons"). Decided at admission, where the caller's key and the routing decision are at
//! hand, and stored with the request's parameters; the provider_call job queues the sample once
//! the client has its answer (`jobs::shadow` runs it).
//!
//! The shadow models are drawn uniformly among the request's other candidates, so the
//! probability that each one's answer is observed is known (`n / candidates`) and the retrain
//! can weight the judged answers without bias; choosing the nearest alternatives only would
//! teach more per call but leave every other model unobserved on such prompts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CompleteInput;
use crate::config::{ShadowModels, ShadowSettings};
use crate::providers::ProviderId;
use crate::routing::Decision;

/// The models that answer a sampled request in the shadow, and how likely each was drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPlan {
    pub models: Vec<ShadowModel>,
    /// The caller's API key (its spend, with `SHADOW_BILLING=key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowModel {
    pub provider: ProviderId,
    pub model: String,
    /// The probability that this model was drawn, given that the request was sampled.
    pub propensity: f64,
}

impl ShadowModel {
    /// `provider/model`: the key of its answer in a sample (`store::shadow::save_answer`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// The sampler's view of one request.
pub struct Sampling<'a> {
    pub settings: &'a ShadowSettings,
    /// The judge's provider (None: shadow comparisons are off).
    pub judge: Option<ProviderId>,
    /// `EXPLORATION_SEED`: with one, the draw follows the seed and the prompt.
    pub seed: Option<u64>,
}

impl Sampling<'_> {
    /// The plan for `input` routed by `decision`, or None when it is not sampled: off, the draw
    /// missed, the request (`"shadow": false`) or its key opted out, the request uses tools (a judge grades text answers), the
    /// judge's provider is not one the request may be sent to, or no other model is a
    /// candidate.
    pub fn plan(&self, input: &CompleteInput, decision: &Decision) -> Option<ShadowPlan> {
        let judge = self.judge?;
        if self.settings.rate <= 0.0
            || !input.shadow
            || !input.tools.is_empty()
            || input.caller.key().is_some_and(|k| k.policy.shadow_opt_out)
            || input
                .allowed_providers
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&judge))
        {
            return None;
        }
        let mut rng = match self.seed {
            Some(seed) => {
                let digest = Sha256::digest(input.prompt.as_bytes());
                let mut prompt_seed = [0u8; 8];
                prompt_seed.copy_from_slice(&digest[8..16]);
                fastrand::Rng::with_seed(seed ^ u64::from_le_bytes(prompt_seed) ^ 0x05AD_0C0D)
            }
            None => fastrand::Rng::new(),
        };
        if rng.f64() >= self.settings.rate {
            return None;
        }
        let mut others: Vec<_> = decision
            .alternatives
            .iter()
            .filter(|c| {
                !(c.provider == decision.chosen.provider && c.model == decision.chosen.model)
            })
            .collect();
        if others.is_empty() {
            return None;
        }
        let n = match self.settings.models {
            ShadowModels::All => others.len(),
            ShadowModels::Count(n) => n.min(others.len()),
        };
        let propensity = n as f64 / others.len() as f64;
        rng.shuffle(&mut others);
        let mut models: Vec<ShadowModel> = others[..n]
            .iter()
            .map(|c| ShadowModel {
                provider: c.provider,
                model: c.model.clone(),
                propensity,
            })
            .collect();
        models
            .sort_by(|a, b| (a.provider.as_str(), &a.model).cmp(&(b.provider.as_str(), &b.model)));
        Some(ShadowPlan {
            models,
            api_key_id: input.caller.key_id().map(str::to_owned),
        })
    }
}
