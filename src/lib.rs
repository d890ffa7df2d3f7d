//! AI Cost Optimizer: a self-hosted LLM router. It classifies a prompt, picks the cheapest model
//! that is good enough for it, calls the provider through a Postgres-backed job queue, records
//! cost and the saving against an always-premium baseline, and learns from users' ratings.
//!
//! The workspace's layers, lowest first (a crate may use only those above it in this list;
//! `scripts/check_layers.py` and the compiler keep it so — see docs/ARCHITECTURE.md):
//! - [`types`] (`crates/types`): domain types every layer shares; imports nothing of ours.
//! - [`providers`] (`crates/providers`): one trait, one module per wire format (Anthropic,
//!   Gemini, OpenAI-compatible, simulated, replay), error classification; HTTP only.
//! - [`routing`] (`crates/routing`): catalog, QueryPatternAnalyzer, RoutingEngine, learned
//!   weights in memory; pure, no I/O.
//! - [`store`] (`crates/store`): all Postgres access and its row types; no SQL elsewhere.
//!
//! This crate, the application, one line per module; each imports only the modules listed
//! before it:
//! - [`config`]: typed settings from the environment, one section per layer, secrets redacted.
//! - [`telemetry`]: the tracing subscriber, the metrics recorder and metric names.
//! - [`dataset`]: the evaluation dataset format (recorded outcomes); the replay provider's book.
//! - [`wiring`]: builds the engine and the providers from the settings, injecting what the
//!   lower crates must not import.
//! - [`tenants`]: API keys (hashed, in Postgres), the caller of a request, the key cache.
//! - [`completion`]: submit → route → enqueue (or cache) → wait; costs and savings; the request
//!   lifecycle (`completion::lifecycle`), the one owner of every status transition.
//! - [`learning`]: FeedbackTrainer, retrain runs, snapshots and rollback; the weights reloader.
//! - [`bootstrap`]: `optimizer train --dataset`, recorded outcomes as evidence to learn from.
//! - [`import`]: `optimizer import-sqlite`, the Python version's SQLite data into Postgres.
//! - [`jobs`]: job handlers and worker start-up, shared by both processes.
//! - [`api`]: axum routers, extractors, the error type, middleware; thin handlers.
//! - [`runtime`]: process plumbing both binaries share — shutdown signals, background set-up.
//! - [`eval`]: `optimizer eval`, the offline evaluation through the real service.
//! - [`worker`]: the worker process (`optimizer-worker`, `optimizer worker`).

pub mod api;
pub mod bootstrap;
pub mod completion;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod import;
pub mod jobs;
pub mod learning;
pub mod runtime;
pub mod tasks;
pub mod telemetry;
pub mod tenants;
pub mod wiring;
pub mod worker;

pub use optimizer_providers as providers;
pub use optimizer_routing as routing;
pub use optimizer_store as store;
pub use optimizer_types as types;
