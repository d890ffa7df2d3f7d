//! AI Cost Optimizer: a self-hosted LLM router. It classifies a prompt, picks the cheapest model
//! that is good enough for it, calls the provider through a Postgres-backed job queue, records
//! cost and the saving against an always-premium baseline, and learns from users' ratings.
//!
//! The crate's map — one line per module, each stating what it owns:
//! - [`config`]: typed settings from the environment, secrets redacted.
//! - [`telemetry`]: the tracing subscriber (and, later, the metrics recorder and metric names).
//! - [`store`]: all Postgres access — pool, migrations, readiness; no SQL elsewhere.
//! - [`providers`]: one trait, one module per wire format (Anthropic, Gemini, OpenAI-compatible,
//!   simulated), error classification.
//! - [`routing`]: catalog, QueryPatternAnalyzer, RoutingEngine, learned weights.
//! - [`completion`]: submit → route → enqueue (or cache) → wait; costs and savings.
//! - [`learning`]: FeedbackTrainer, retrain runs, snapshots and rollback; the weights reloader.
//! - [`import`]: `optimizer import-sqlite`, the Python version's SQLite data into Postgres.
//! - [`jobs`]: job handlers and worker start-up, shared by both processes.
//! - [`api`]: axum routers, extractors, the error type, middleware; thin handlers.
//! - [`worker`]: the worker process (`optimizer-worker`, `optimizer worker`).
//! - [`runtime`]: process plumbing both binaries share — shutdown signals, background set-up.

pub mod api;
pub mod completion;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod import;
pub mod jobs;
pub mod learning;
pub mod runtime;
pub mod telemetry;
pub mod wiring;
pub mod worker;

pub use optimizer_providers as providers;
pub use optimizer_routing as routing;
pub use optimizer_store as store;
pub use optimizer_types as types;
