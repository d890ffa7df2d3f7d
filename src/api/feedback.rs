//! `POST /feedback`: a user's rating of an answer.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::AppJson;
use super::validate;
use crate::jobs::feedback_aggregation::FeedbackAggregation;
use crate::store::feedback::{self, NewFeedback, Recorded};
use crate::tenants::Caller;

/// Longest accepted comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// The request rated (a finished, succeeded request of the caller's key).
    #[schema(min_length = 1, max_length = 128)]
    request_id: String,
    /// 1 to 5 stars.
    #[schema(minimum = 1, maximum = 5)]
    quality_score: i64,
    is_correct: bool,
    #[serde(default)]
    is_helpful: Option<bool>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    comment: Option<String>,
    #[serde(default)]
    #[schema(max_length = 255)]
    user_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 255)]
    session_id: Option<String>,
}

/// Only the API key that sent a request may rate it; another key's request is 404 (ids do not
/// leak). `user_id` is the end user within the key: one rating per (request, user), and
/// learning counts each request once however many users rate it.
#[utoipa::path(post, path = "/feedback", tag = "completions", request_body = FeedbackBody,
    responses((status = 201, description = "Stored (or replaced this user's rating)", body = super::openapi::FeedbackAnswer),
              (status = 409, description = "The request has not finished, or failed", body = super::openapi::ApiErrorBody),
              super::openapi::ClientErrors),
    security(("bearer" = []), ("x_api_key" = []), ()))]
pub async fn feedback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppJson(body): AppJson<FeedbackBody>,
) -> Result<(StatusCode, AppJson<Value>), ApiError> {
    if !(1..=5).contains(&body.quality_score) {
        return Err(ApiError::invalid_field(
            "quality_score",
            format!("{} is not between 1 and 5", body.quality_score),
        ));
    }
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(ApiError::invalid_field(
            "comment",
            format!("must be at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let fb = NewFeedback {
        request_id: validate::short_text("request_id", Some(body.request_id))?
            .ok_or_else(|| ApiError::invalid_field("request_id", "must not be empty"))?,
        quality_score: body.quality_score as i32,
        is_correct: body.is_correct,
        is_helpful: body.is_helpful,
        comment: body.comment.filter(|c| !c.trim().is_empty()),
        user_id: validate::short_text("user_id", body.user_id)?,
        session_id: validate::short_text("session_id", body.session_id)?,
        owner: caller.key_id().map(str::to_owned),
    };
    match feedback::record(&state.db.pool, &fb, FeedbackAggregation::task).await? {
        Recorded::Stored {
            feedback_id,
            replaced,
            pattern,
            provider,
            model,
        } => {
            record(&fb, pattern, provider, model);
            Ok((
                StatusCode::CREATED,
                AppJson(json!({
                    "status": "recorded",
                    "feedback_id": feedback_id,
                    "message": "Thank you for feedback",
                    "replaced": replaced,
                })),
            ))
        }
        Recorded::UnknownRequest => Err(ApiError::not_found(format!(
            "no request {:?}",
            fb.request_id
        ))),
        Recorded::NotFinished(status) => Err(ApiError::conflict(
            "not_finished",
            format!(
                "request {:?} is {status}; rate it once it has finished",
                fb.request_id
            ),
        )),
        Recorded::RequestFailed => Err(ApiError::conflict(
            "request_failed",
            format!(
                "request {:?} failed; there is no answer to rate",
                fb.request_id
            ),
        )),
    }
}

/// Rating counters: PromQL averages quality as quality_sum / total, correctness as
/// correct / judged. A replaced rating counts again (counters only grow).
fn record(fb: &NewFeedback, pattern: String, provider: String, model: String) {
    use crate::telemetry::names;
    let labels = [
        ("pattern", pattern),
        ("provider", provider),
        ("model", model),
    ];
    metrics::counter!(names::FEEDBACK, &labels).increment(1);
    metrics::counter!(names::FEEDBACK_QUALITY_SUM, &labels)
        .increment(u64::try_from(fb.quality_score).unwrap_or(0));
    metrics::counter!(names::FEEDBACK_JUDGED, &labels).increment(1);
    if fb.is_correct {
        metrics::counter!(names::FEEDBACK_CORRECT, &labels).increment(1);
    }
}
