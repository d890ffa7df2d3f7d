//! `POST /recommendation`: which model would get this prompt, at what expected quality and
//! cost, against the baseline — nothing is called or billed.

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::AppJson;
use super::validate;
use crate::routing::recommend::{self, RecommendInput, Recommendation};
use crate::tenants::Caller;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendationBody {
    #[schema(min_length = 1, pattern = r"\S")]
    prompt: String,
    #[serde(default)]
    #[schema(pattern = "^(cost|balanced|quality)$")]
    strategy: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    min_quality: Option<f64>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    quality_share: Option<f64>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    max_cost: Option<f64>,
    #[serde(default)]
    #[schema(min_items = 1)]
    allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
}

/// An API key's recommendation respects what the key may use and its default strategy.
#[utoipa::path(post, path = "/recommendation", tag = "completions", request_body = RecommendationBody,
    responses((status = 200, description = "The model the router would choose, its alternatives and the estimated saving", body = super::openapi::RecommendationDoc),
              super::openapi::ClientErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn recommendation(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppJson(body): AppJson<RecommendationBody>,
) -> Result<AppJson<Recommendation>, ApiError> {
    let (allowed_providers, allowed_models) = super::auth::restrict(
        &state,
        &caller,
        validate::providers(body.allowed_providers)?,
        None,
    )?;
    let input = RecommendInput {
        prompt: validate::prompt(body.prompt)?,
        strategy: super::auth::strategy(&caller, body.strategy.as_deref())?,
        min_quality: validate::min_quality(body.min_quality)?,
        quality_share: validate::quality_share(body.quality_share)?,
        max_cost_usd: validate::max_cost(body.max_cost)?,
        allowed_providers,
        allowed_models,
        max_tokens: validate::max_tokens(body.max_tokens)?,
    };
    recommend::recommend(&state.engine, &input)
        .map(AppJson)
        .map_err(validate::route_error)
}
