//! Extractors whose rejections use the API error shape.

use axum::extract::FromRequest;

use super::error::ApiError;

/// `axum::Json`, but a malformed or oversized body becomes an [`ApiError`].
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for AppJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
