//! Statuses as stored in Postgres (`TEXT` columns with a `CHECK` listing the same words).
//!
//! A request's life (the lifecycle module of the application owns every transition):
//!
//! ```text
//!             claim              provider answered / permanent error
//!   queued ─────────▶ running ───────────────────────────────────────▶ succeeded | failed
//!     │    ◀─────────                                                       ▲
//!     │   retry with backoff / fall back to the next model (stays running)  │
//!     └──────────────────── deadline passed (swept) ────────────────────────┘  (failed)
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a completion request is (`requests.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Accepted and committed with its job; no worker has it yet.
    Queued,
    /// A worker holds it (possibly between retries or fallbacks).
    Running,
    /// Answered; the answer and its metrics are recorded.
    Succeeded,
    /// Ended without an answer (permanent error, every model failed, or deadline).
    Failed,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 4] = [
        RequestStatus::Queued,
        RequestStatus::Running,
        RequestStatus::Succeeded,
        RequestStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Queued => "queued",
            RequestStatus::Running => "running",
            RequestStatus::Succeeded => "succeeded",
            RequestStatus::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Succeeded or failed: the request will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RequestStatus::Succeeded | RequestStatus::Failed)
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed (`requests.error_code` of a `failed` request), and the HTTP status its
/// client gets for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The provider refused the request itself (400, 413, 422, a content policy): no other
    /// model would take it. The client's error: 400 with the provider's message.
    ProviderRejected,
    /// Every candidate failed (5xx, timeouts, our key refused): 502.
    AllCandidatesFailed,
    /// `REQUEST_DEADLINE_SECS` passed before an answer: 502.
    DeadlineExceeded,
    /// The provider's stream broke after its first piece: 502 (the delivered tokens are charged).
    StreamInterrupted,
    /// A bug or an unreadable stored state: 502.
    Internal,
}

impl FailureCode {
    pub const ALL: [FailureCode; 5] = [
        FailureCode::ProviderRejected,
        FailureCode::AllCandidatesFailed,
        FailureCode::DeadlineExceeded,
        FailureCode::StreamInterrupted,
        FailureCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::ProviderRejected => "provider_rejected",
            FailureCode::AllCandidatesFailed => "all_candidates_failed",
            FailureCode::DeadlineExceeded => "deadline_exceeded",
            FailureCode::StreamInterrupted => "stream_interrupted",
            FailureCode::Internal => "internal",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The status a waiting client gets: 400 for a request the provider refused (so SDKs do
    /// not retry it), 502 otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            FailureCode::ProviderRejected => 400,
            _ => 502,
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a retraining run is (`retraining_runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Nothing to do (a cron firing with no new ratings, or a duplicate).
    Skipped,
    /// Computed but not applied: a scheduled run whose off-policy estimate showed a quality drop
    /// beyond `DRIFT_THRESHOLD`.
    Held,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Skipped,
        RunStatus::Held,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Held => "held",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads and writes a status as Postgres `TEXT` through its `as_str`/`parse` (a hand-written
/// `sqlx::Type` rather than the derive: the derive names a type to look up by name on every new
/// connection, while these columns are plain `TEXT` with a `CHECK`).
macro_rules! text_column {
    ($ty:ty, $what:literal) => {
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(name).ok_or_else(|| format!("unknown {} {name:?}", $what).into())
            }
        }
    };
}

text_column!(RequestStatus, "request status");
text_column!(RunStatus, "retraining run status");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_statuses_round_trip_through_their_names() {
        for s in RequestStatus::ALL {
            assert_eq!(RequestStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).ok(), Some(format!("\"{s}\"")));
        }
        assert!(RequestStatus::Failed.is_terminal() && !RequestStatus::Running.is_terminal());
    }
}
