use super::*;
use std::collections::HashMap;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::from_lookup(|var| Ok(map.get(var).cloned()))
}

fn rejected(var: &str, value: &str) -> ConfigError {
    match load(&[(var, value)]) {
        Ok(_) => panic!("{var}={value:?} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn defaults_apply_with_an_empty_environment() {
    let s = load(&[]).unwrap();
    assert_eq!(s.database_url.expose_secret(), DEFAULT_DATABASE_URL);
    assert_eq!(s.bind.to_string(), DEFAULT_BIND);
    assert_eq!(s.worker_bind.to_string(), DEFAULT_WORKER_BIND);
    assert!(s.admin_token.is_none());
    assert_eq!(s.log_filter, DEFAULT_LOG_FILTER);
    assert_eq!(s.log_format, LogFormat::Pretty);
    assert!(s.run_migrations);
    assert_eq!(s.store_prompts, StorePrompts::Full);
    assert_eq!(s.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    assert_eq!(s.providers.anthropic.base_url, DEFAULT_ANTHROPIC_BASE_URL);
    assert!(s.providers.openai_compat.base_url.is_none());
    assert_eq!(s.database_label(), "localhost:5432/optimizer");
    assert_eq!(s.enabled_providers, vec![ProviderId::Simulated]);
    assert_eq!(s.routing.exploration_rate, 0.1);
    assert!(s.routing.catalog_path.is_none());
}

#[test]
fn database_urls_can_point_at_another_database() {
    assert_eq!(
        url_with_database("postgres://u:p@h:5432/app?sslmode=disable", "x").unwrap(),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(
        url_with_database("postgres://postgres@127.0.0.1:5432", "x").unwrap(),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(url_with_database("nonsense", "x"), None);
}

#[test]
fn enabled_providers_follow_keys_and_providers() {
    let s = load(&[("GOOGLE_API_KEY", "g"), ("ANTHROPIC_API_KEY", "a")]).unwrap();
    assert_eq!(
        s.enabled_providers,
        vec![ProviderId::Anthropic, ProviderId::Gemini]
    );
    let s = load(&[("GOOGLE_API_KEY", "g"), ("PROVIDERS", "simulated")]).unwrap();
    assert_eq!(s.enabled_providers, vec![ProviderId::Simulated]);
    let s = load(&[("OPENAI_COMPAT_BASE_URL", "http://localhost:11434/v1")]).unwrap();
    assert_eq!(s.enabled_providers, vec![ProviderId::OpenaiCompat]);
    let e = load(&[("PROVIDERS", "gemini")]).unwrap_err();
    assert!(e.reason.contains("GOOGLE_API_KEY"), "{e}");
}

#[test]
fn values_are_read_and_trimmed() {
    let s = load(&[
        ("BIND", "127.0.0.1:9000"),
        ("LOG_FORMAT", "JSON"),
        ("RUN_MIGRATIONS", "off"),
        ("STORE_PROMPTS", "hash"),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1234/"),
        ("OPENAI_COMPAT_BASE_URL", " http://localhost:11434/v1 "),
        ("ADMIN_TOKEN", "s3cret"),
    ])
    .unwrap();
    assert_eq!(s.bind.to_string(), "127.0.0.1:9000");
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(!s.run_migrations);
    assert_eq!(s.store_prompts, StorePrompts::Hash);
    assert_eq!(s.providers.anthropic.base_url, "http://127.0.0.1:1234");
    assert_eq!(
        s.providers.openai_compat.base_url.as_deref(),
        Some("http://localhost:11434/v1")
    );
    assert_eq!(s.admin_token.unwrap().expose_secret(), "s3cret");
}

#[test]
fn empty_values_count_as_unset() {
    let s = load(&[("BIND", ""), ("ANTHROPIC_API_KEY", "  ")]).unwrap();
    assert_eq!(s.bind.to_string(), DEFAULT_BIND);
    assert!(s.providers.anthropic.api_key.is_none());
}

#[test]
fn bad_values_are_rejected_naming_the_variable() {
    for (var, value) in [
        ("BIND", "localhost"),
        ("WORKER_BIND", "0.0.0.0:99999"),
        ("LOG_FORMAT", "xml"),
        ("RUN_MIGRATIONS", "maybe"),
        ("STORE_PROMPTS", "partial"),
        ("DB_MAX_CONNECTIONS", "0"),
        ("DB_MAX_CONNECTIONS", "many"),
        ("MAX_REQUEST_BYTES", "10"),
        ("DATABASE_URL", "mysql://localhost/optimizer"),
        ("GEMINI_BASE_URL", "not a url"),
        ("OPENROUTER_BASE_URL", "ftp://example.com"),
        ("OPENAI_COMPAT_BASE_URL", "/v1"),
        ("RUST_LOG", "info,[[["),
        ("PROVIDERS", "acme"),
        ("PROVIDERS", " , "),
        ("EXPLORATION_RATE", "1.5"),
        ("EXPLORATION_RATE", "often"),
        ("EXPLORATION_MARGIN", "-0.1"),
        ("ROUTING_RELOAD_SECS", "0"),
        ("COMPLETE_TIMEOUT_SECS", "0"),
        ("WORKER_CONCURRENCY", "0"),
        ("CACHE_ENABLED", "sometimes"),
        ("ANTHROPIC_TIMEOUT_SECS", "-5"),
        ("PROVIDER_MAX_RETRIES", "100"),
        ("RETRAIN_CRON", "every sunday"),
        ("CONFIDENCE_HIGH_QUALITY", "6"),
        ("CONFIDENCE_MEDIUM_CORRECTNESS", "1.2"),
        ("DRIFT_THRESHOLD", "10%"),
        ("ALERT_WEBHOOK_URL", "hooks.example.com"),
        ("AUTO_ROLLBACK", "sure"),
        ("API_KEYS", "alice"),
        ("API_KEYS", "alice:short"),
    ] {
        let err = rejected(var, value);
        assert_eq!(err.var, var, "{err}");
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let s = load(&[
        ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
        ("ADMIN_TOKEN", "admin-very-secret"),
        ("DATABASE_URL", "postgres://u:pw-very-secret@db:5432/x"),
    ])
    .unwrap();
    let debug = format!("{s:?}");
    assert!(!debug.contains("very-secret"), "{debug}");
    assert_eq!(s.database_label(), "db:5432/x");

    let err = rejected("DATABASE_URL", "postgres://u:pw-very-secret@db:notaport/x");
    assert!(!err.to_string().contains("very-secret"), "{err}");
}

#[test]
fn shadow_comparisons_need_a_judge_and_read_their_settings() {
    assert_eq!(rejected("SHADOW_RATE", "0.1").var, "JUDGE_MODEL");
    let s = load(&[
        ("SHADOW_RATE", "0.2"),
        ("JUDGE_MODEL", "sim-pro"),
        ("SHADOW_MODELS", "all"),
        ("SHADOW_BILLING", "key"),
    ])
    .unwrap();
    let shadow = &s.learning.shadow;
    assert!(shadow.enabled());
    assert_eq!(shadow.models, crate::config::ShadowModels::All);
    assert_eq!(shadow.billing, crate::config::ShadowBilling::Key);
    assert_eq!(shadow.budget_usd, 5.0);
    assert_eq!(rejected("SHADOW_MODELS", "0").var, "SHADOW_MODELS");
    assert_eq!(rejected("SHADOW_WEIGHT", "2").var, "SHADOW_WEIGHT");
    assert!(!load(&[]).unwrap().learning.shadow.enabled());
}
