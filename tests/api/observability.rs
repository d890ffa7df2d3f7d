//! Prometheus metrics on the API and the worker, and the quality-drift alert after a retrain.

use crate::common::{TestApp, TestDb, ratings, seed_ratings, settings_with};
use optimizer::learning::{drift, retrain_now};
use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn api_and_worker_export_the_metrics_after_completions_and_ratings() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let mut ids = Vec::new();
    for prompt in [
        "What is the capital of Peru?",
        "Write a haiku about rain",
        "What is the capital of Peru?",
    ] {
        let body: serde_json::Value = app
            .post_json("/complete", &json!({ "prompt": prompt }))
            .await
            .json()
            .await
            .unwrap();
        ids.push(body["request_id"].as_str().unwrap().to_owned());
    }
    let resp = app
        .post_json(
            "/feedback",
            &json!({ "request_id": ids[0], "quality_score": 4, "is_correct": true }),
        )
        .await;
    assert_eq!(resp.status(), 201);

    let text = app.get("/metrics").await.text().await.unwrap();
    for needle in [
        "optimizer_http_requests_total{route=\"/complete\",method=\"POST\",status=\"200\"}",
        "optimizer_http_request_duration_seconds_bucket{route=\"/complete\"",
        "optimizer_completions_total{provider=\"simulated\",model=\"sim-lite\",pattern=\"factual\",status=\"succeeded\"}",
        "status=\"cached\"",
        "optimizer_gateway_overhead_seconds_bucket",
        "optimizer_provider_latency_seconds_bucket{provider=\"simulated\"",
        "optimizer_tokens_total{provider=\"simulated\",model=\"sim-lite\",direction=\"input\"}",
        "optimizer_completion_cost_usd_sum{",
        "optimizer_completion_baseline_cost_usd_sum{",
        "optimizer_cache_requests_total{result=\"hit\"}",
        "optimizer_feedback_total{pattern=\"factual\",provider=\"simulated\",model=\"sim-lite\"}",
        "optimizer_feedback_quality_sum{",
        "optimizer_queue_jobs{queue=\"provider_call\"",
        "optimizer_job_duration_seconds_bucket{job=\"provider_call\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Labels stay bounded: no request id or prompt text in any series.
    for id in &ids {
        assert!(!text.contains(id.as_str()));
    }
    assert!(!text.contains("capital of Peru"));

    // The worker's own listener serves /metrics too.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(optimizer::api::serve(
        listener,
        optimizer::api::worker_router(app.db.clone()),
        shutdown.clone(),
        std::time::Duration::from_secs(1),
    ));
    let worker = app
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(worker.status(), 200);
    assert!(
        worker
            .text()
            .await
            .unwrap()
            .contains("optimizer_queue_jobs")
    );
    shutdown.cancel();
}

/// Baseline ratings for `chat`, a retrain that changes routing (proving sim-lite for code),
/// then ratings for `chat` averaging `after_scores`.
async fn retrain_then_rate(pool: &PgPool, after: &[(i32, bool)]) -> String {
    seed_ratings(pool, "chat", "sim-standard", &ratings(20, &[4], 20)).await;
    seed_ratings(pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    let report = retrain_now(
        pool,
        &optimizer::wiring::build_engine(&crate::common::settings_with(&[])).unwrap(),
        &settings_with(&[]).learning,
        false,
    )
    .await
    .unwrap();
    assert!(!report.changes.is_empty());
    seed_ratings(pool, "chat", "sim-standard", after).await;
    report.run_id
}

async fn weights(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM routing_weights")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_15_percent_drop_alerts_calls_the_webhook_and_rolls_back() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Average 3.4 after 4.0 before: a 15% drop.
    let after: Vec<(i32, bool)> = (0..20)
        .map(|i| (if i < 12 { 3 } else { 4 }, true))
        .collect();
    let run_id = retrain_then_rate(&pool, &after).await;
    assert!(weights(&pool).await > 0);

    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/alerts"))
        .and(body_string_contains("dropped 15.0%"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&hook)
        .await;
    let hook_url = format!("{}/hooks/alerts", hook.uri());
    let settings = settings_with(&[("ALERT_WEBHOOK_URL", &hook_url), ("AUTO_ROLLBACK", "true")])
        .learning
        .drift;
    optimizer::providers::install_crypto();
    let http = reqwest::Client::new();
    let findings = drift::check(&pool, &settings, Some(&http)).await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(
        (f.pattern.as_str(), f.run_id.as_str()),
        ("chat", run_id.as_str())
    );
    assert!((f.drop - 0.15).abs() < 1e-9);
    assert!(f.rolled_back && f.webhook_delivered);

    let (kind, notified, rollback): (String, bool, bool) =
        sqlx::query_as("SELECT kind, notified_at IS NOT NULL, details ? 'rollback' FROM alerts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), notified, rollback),
        ("quality_drop", true, true)
    );
    // Scoped: chat's previous weights (none) are back, code keeps what the retrain learned;
    // the rollback is logged as a run.
    let patterns: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT pattern FROM routing_weights ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(patterns, vec!["code".to_owned()]);
    let rollbacks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM retraining_runs WHERE trigger = 'rollback'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rollbacks, 1);

    // Checking again raises nothing new.
    assert!(
        drift::check(&pool, &settings, Some(&http))
            .await
            .unwrap()
            .is_empty()
    );
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(alerts, 1);
}

#[tokio::test]
async fn a_5_percent_drop_or_too_few_ratings_raise_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Average 3.8 after 4.0: a 5% drop.
    let after: Vec<(i32, bool)> = (0..20).map(|i| (if i < 4 { 3 } else { 4 }, true)).collect();
    retrain_then_rate(&pool, &after).await;
    let settings = settings_with(&[("AUTO_ROLLBACK", "true")]).learning.drift;
    assert!(
        drift::check(&pool, &settings, None)
            .await
            .unwrap()
            .is_empty()
    );

    // A steep drop on too few ratings is not enough evidence either.
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    retrain_then_rate(&pool, &ratings(5, &[1], 0)).await;
    let before = weights(&pool).await;
    let findings = drift::check(&pool, &settings, None).await.unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(weights(&pool).await, before, "nothing rolled back");
}

/// Drift compares by the policy that routed the request: ratings given after a retrain for
/// requests the *previous* policy routed count on the "before" side, so a late wave of bad
/// ratings for old requests raises nothing.
#[tokio::test]
async fn late_ratings_of_old_requests_do_not_count_against_the_new_policy() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Requests routed (and rated) under the old policy, some of them rated only later.
    seed_ratings(&pool, "chat", "sim-standard", &ratings(20, &[4], 20)).await;
    let mut late = Vec::new();
    for _ in 0..20 {
        late.push(crate::common::seed_request(&pool, "chat", 0.3, "sim-standard", None).await);
    }
    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    let report = retrain_now(
        &pool,
        &optimizer::wiring::build_engine(&crate::common::settings_with(&[])).unwrap(),
        &settings_with(&[]).learning,
        false,
    )
    .await
    .unwrap();
    assert!(!report.changes.is_empty());
    // After the retrain: bad ratings for the old requests, good ones for new requests.
    for id in &late {
        sqlx::query(
            "INSERT INTO response_feedback (request_id, timestamp, quality_score, is_correct,
                 prompt_pattern, selected_provider, selected_model, complexity_score)
             VALUES ($1, now(), 2, false, 'chat', 'simulated', 'sim-standard', 0.3)",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    seed_ratings(&pool, "chat", "sim-standard", &ratings(20, &[4], 20)).await;
    let settings = settings_with(&[]).learning.drift;
    let findings = drift::check(&pool, &settings, None).await.unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    // By rating time the same data would read 4.0 → 3.0, a 25% drop.
}

/// A drop past the threshold without enough evidence against noise raises nothing.
#[tokio::test]
async fn a_drop_that_is_not_significant_raises_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Before: 20 requests averaging 4.0 but spread 1..5; after: averaging 3.5 as widely spread
    // (a 12.5% drop; Welch p ≈ 0.15).
    let before: Vec<(i32, bool)> = [1, 5, 3, 5, 5, 5, 2, 5, 5, 4]
        .iter()
        .cycle()
        .take(20)
        .map(|s| (*s, true))
        .collect();
    seed_ratings(&pool, "chat", "sim-standard", &before).await;
    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    retrain_now(
        &pool,
        &optimizer::wiring::build_engine(&crate::common::settings_with(&[])).unwrap(),
        &settings_with(&[]).learning,
        false,
    )
    .await
    .unwrap();
    let after: Vec<(i32, bool)> = [1, 5, 2, 5, 5, 4, 1, 5, 3, 4]
        .iter()
        .cycle()
        .take(20)
        .map(|s| (*s, true))
        .collect();
    seed_ratings(&pool, "chat", "sim-standard", &after).await;
    let settings = settings_with(&[]).learning.drift;
    assert!(
        drift::check(&pool, &settings, None)
            .await
            .unwrap()
            .is_empty()
    );
    // With a lax significance level the same data alerts: the test is what held it back.
    let lax = settings_with(&[("DRIFT_SIGNIFICANCE", "0.5")])
        .learning
        .drift;
    let findings = drift::check(&pool, &lax, None).await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
}

/// `/metrics` carries every key's spend: on the API's address it needs the metrics or admin
/// token once the service is not open, and with `METRICS_BIND` it is served only there.
#[tokio::test]
async fn metrics_are_not_public_once_the_service_is_not_open() {
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("ADMIN_TOKEN", "adm"), ("METRICS_TOKEN", "scraper")],
    )
    .await;
    let get = |bearer: Option<&str>| {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send()
    };
    for bearer in [None, Some("wrong")] {
        let resp = get(bearer).await.unwrap();
        assert_eq!(resp.status(), 401, "{bearer:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    for bearer in ["scraper", "adm"] {
        let resp = get(Some(bearer)).await.unwrap();
        assert_eq!(resp.status(), 200, "{bearer}");
        assert!(resp.text().await.unwrap().contains("optimizer_"));
    }

    // METRICS_BIND: not on the API's address at all; its own listener needs nothing.
    let db = TestDb::migrated().await;
    let database = db.database();
    let elsewhere = TestApp::spawn_on(db, &[("METRICS_BIND", "127.0.0.1:9")]).await;
    let resp = elsewhere.get("/metrics").await;
    assert_eq!(resp.status(), 404);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(optimizer::api::serve(
        listener,
        optimizer::api::metrics::metrics_router(database),
        shutdown.clone(),
        std::time::Duration::from_secs(1),
    ));
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("optimizer_"), "{text}");
    shutdown.cancel();
}
