//! Field validation shared by the endpoints: each failure is a 422 naming the field and what is
//! wrong with it.

use super::error::ApiError;
use crate::providers::ProviderId;
use crate::routing::{RouteError, Strategy};

/// Whether `id` could name a stored request or run: ids are ULIDs or UUIDs, so anything long
/// or holding a control character (Postgres text cannot hold NUL) is simply not found.
pub fn is_plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)
}

pub fn prompt(prompt: String) -> Result<String, ApiError> {
    if prompt.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "prompt",
            "must not be empty or only whitespace",
        ));
    }
    Ok(prompt)
}

pub fn strategy(name: Option<&str>) -> Result<Strategy, ApiError> {
    match name {
        None => Ok(Strategy::default()),
        Some(name) => Strategy::parse(name).ok_or_else(|| {
            ApiError::invalid_field(
                "strategy",
                format!("unknown strategy {name:?}; expected cost, balanced or quality"),
            )
        }),
    }
}

pub fn min_quality(v: Option<f64>) -> Result<Option<f64>, ApiError> {
    match v {
        Some(q) if !(q.is_finite() && (0.0..=1.0).contains(&q)) => Err(ApiError::invalid_field(
            "min_quality",
            format!("{q} is not between 0 and 1"),
        )),
        other => Ok(other),
    }
}

pub fn quality_share(v: Option<f64>) -> Result<Option<f64>, ApiError> {
    match v {
        Some(s) if !(s.is_finite() && s > 0.0 && s <= 1.0) => Err(ApiError::invalid_field(
            "quality_share",
            format!("{s} is not a share in (0, 1]"),
        )),
        other => Ok(other),
    }
}

pub fn max_cost(v: Option<f64>) -> Result<Option<f64>, ApiError> {
    match v {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(ApiError::invalid_field(
            "max_cost",
            format!("{c} is not a positive amount of USD"),
        )),
        other => Ok(other),
    }
}

pub fn max_tokens(v: Option<u32>) -> Result<Option<u32>, ApiError> {
    match v {
        Some(0) => Err(ApiError::invalid_field("max_tokens", "must be at least 1")),
        other => Ok(other),
    }
}

pub fn providers(names: Option<Vec<String>>) -> Result<Option<Vec<ProviderId>>, ApiError> {
    let Some(names) = names else {
        return Ok(None);
    };
    if names.is_empty() {
        return Err(ApiError::invalid_field(
            "allowed_providers",
            "must name at least one provider",
        ));
    }
    names
        .iter()
        .map(|n| {
            ProviderId::parse(n).ok_or_else(|| {
                ApiError::invalid_field("allowed_providers", format!("unknown provider {n:?}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A route that cannot be made is the caller's constraint's fault: 422 naming it.
pub fn route_error(e: RouteError) -> ApiError {
    match &e {
        RouteError::OverBudget { .. } => ApiError::invalid_field("max_cost", e.to_string()),
        RouteError::NotRoutable(_) => ApiError::invalid_field("model", e.to_string()),
        RouteError::NoCandidate(_) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "no_route",
            e.to_string(),
        ),
    }
}

pub fn temperature(v: Option<f64>) -> Result<Option<f64>, ApiError> {
    match v {
        Some(t) if !(t.is_finite() && (0.0..=2.0).contains(&t)) => Err(ApiError::invalid_field(
            "temperature",
            format!("{t} is not between 0 and 2"),
        )),
        other => Ok(other),
    }
}

/// Identifiers a caller attaches (user, session, idempotency key): at most 255 characters.
pub fn short_text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.chars().count() > 255 => Err(ApiError::invalid_field(
            field,
            "must be at most 255 characters",
        )),
        other => Ok(other),
    }
}

/// A text query parameter that reaches the database: no NUL or other control characters
/// (Postgres cannot store NUL; none belongs in a name), at most 255 characters.
pub fn text_param(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        )),
        Some(s) if s.chars().count() > 255 => Err(ApiError::invalid_field(
            field,
            "must be at most 255 characters",
        )),
        other => Ok(other),
    }
}

/// An optional `since` query parameter in RFC 3339.
pub fn since(v: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|_| ApiError::invalid_field("since", format!("{s:?} is not an RFC 3339 time")))
    })
    .transpose()
}
