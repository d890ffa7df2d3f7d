//! Logging set-up: one `tracing` subscriber per process, pretty or JSON.
//!
//! Rule: nothing here (or anywhere) logs a secret or a prompt; spans carry ids, never content.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber. Call once at start-up; a second call is a no-op.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .unwrap_or_else(|_| EnvFilter::new(crate::config::DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // `try_init` fails only when a subscriber is already set (tests); that one is kept.
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
