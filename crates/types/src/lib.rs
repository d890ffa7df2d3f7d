//! Domain types every layer shares: the leaf of the workspace. It depends on no crate of ours,
//! so any crate may use it and none of these types can drag a higher layer in.
//!
//! Rule: every closed set the code compares (providers, patterns, strategies, confidence levels,
//! request and run statuses) is an enum here, spelled as a string in exactly one `as_str`; rows
//! carry them through `sqlx::Type`, JSON through serde.

mod chat;
mod learned;
mod pattern;
mod provider;
mod status;
mod strategy;

pub use chat::{Message, ResponseFormat, Role, Tool, ToolCall, ToolChoice};
pub use learned::{Confidence, LearnedWeight};
pub use pattern::Pattern;
pub use provider::ProviderId;
pub use status::{FailureCode, RequestStatus, RunStatus};
pub use strategy::Strategy;
