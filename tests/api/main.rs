//! The integration tests, one binary (linking the application once, not once per file): a
//! module per subject, the harness in [`common`]. Run one subject with
//! `cargo test --test api shadow::` (or any part of a test's path).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "integration tests (their helper tasks need no tracking)"
)]

mod common;

mod alerting;
mod anthropic;
mod backup;
mod budgets;
mod complete;
mod crash;
mod dashboards;
mod eval;
mod faults;
mod hostile;
mod http;
mod import;
mod learning;
mod migrations;
mod observability;
mod openai;
mod openapi;
mod per_prompt;
mod pg_restart;
mod processes;
mod providers;
mod recommendation;
mod schedule;
mod shadow;
mod streaming;
mod tenants;
