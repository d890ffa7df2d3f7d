//! The feedback loop: ratings through the API, the FeedbackTrainer's rules against a real
//! database, snapshots and rollback, the admin API, and the loop closing end to end.

use std::time::Duration;

use crate::common::{TestApp, TestDb, error_body, ratings, seed_ratings, settings_with};
use optimizer::config::LearningSettings;
use optimizer::learning::{RunReport, retrain_now};
use serde_json::{Value, json};
use sqlx::PgPool;

const TOKEN: &str = "test-admin-token";

fn learning() -> LearningSettings {
    settings_with(&[]).learning
}

async fn weight(pool: &PgPool, pattern: &str, model: &str) -> Option<(String, bool, f32, i32)> {
    sqlx::query_as(
        "SELECT confidence_level, demoted, quality_estimate, sample_count FROM routing_weights
         WHERE pattern = $1 AND model = $2",
    )
    .bind(pattern)
    .bind(model)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn run(pool: &PgPool, dry: bool) -> RunReport {
    retrain_now(
        pool,
        &optimizer::wiring::build_engine(&crate::common::settings_with(&[])).unwrap(),
        &learning(),
        dry,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn confidence_boundaries_against_the_database() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // 10 samples, avg 4.0, 80% correct → HIGH.
    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[4], 8)).await;
    // 9 samples, avg 4.0, 8/9 correct → not HIGH (MEDIUM).
    seed_ratings(&pool, "math", "sim-lite", &ratings(9, &[4], 8)).await;
    // 10 samples, avg 3.5, 70% correct → MEDIUM.
    seed_ratings(&pool, "chat", "sim-lite", &ratings(10, &[3, 4], 7)).await;
    // 4 excellent samples → LOW: no routing change.
    seed_ratings(&pool, "factual", "sim-lite", &ratings(4, &[5], 4)).await;
    let report = run(&pool, false).await;
    assert_eq!(report.changes.len(), 3, "{:#?}", report.changes);
    assert_eq!(weight(&pool, "code", "sim-lite").await.unwrap().0, "high");
    assert_eq!(weight(&pool, "math", "sim-lite").await.unwrap().0, "medium");
    assert_eq!(weight(&pool, "chat", "sim-lite").await.unwrap().0, "medium");
    // The estimate remembers the complexity it was measured at (seed_ratings rates at 0.3).
    let reference: Option<f32> = sqlx::query_scalar(
        "SELECT avg_complexity FROM routing_weights WHERE pattern = 'code' AND model = 'sim-lite'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((reference.unwrap() - 0.3).abs() < 1e-6, "{reference:?}");
    assert_eq!(weight(&pool, "factual", "sim-lite").await, None);
    // History: one row per rated pattern-model for the run, LOW ones included.
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM model_performance_history WHERE retraining_run_id = $1",
    )
    .bind(&report.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(history, 4);
    let (status, changes): (String, i32) =
        sqlx::query_as("SELECT status, changes_count FROM retraining_runs WHERE run_id = $1")
            .bind(&report.run_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), changes), ("succeeded", 3));
}

#[tokio::test]
async fn a_proven_poor_model_is_demoted_and_no_new_evidence_lowers_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_ratings(&pool, "code", "sim-standard", &ratings(6, &[1, 2], 1)).await;
    run(&pool, false).await;
    let (confidence, demoted, quality, _) = weight(&pool, "code", "sim-standard").await.unwrap();
    assert_eq!((confidence.as_str(), demoted), ("low", true));
    assert!(quality < 0.3, "{quality}");

    // Nothing new: the next run changes nothing.
    seed_ratings(&pool, "math", "sim-premium", &ratings(12, &[5], 12)).await;
    run(&pool, false).await;
    let before = weight(&pool, "math", "sim-premium").await.unwrap();
    let again = run(&pool, false).await;
    assert!(again.changes.is_empty(), "{:#?}", again.changes);
    assert!(
        again.message.contains("nothing to change"),
        "{}",
        again.message
    );
    assert_eq!(weight(&pool, "math", "sim-premium").await.unwrap(), before);
}

#[tokio::test]
async fn dry_run_writes_nothing_but_its_log_and_low_evidence_changes_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // The seed's test_confidence_threshold_enforcement: 3 samples → weights unchanged.
    seed_ratings(&pool, "code", "sim-lite", &ratings(3, &[5], 3)).await;
    let report = run(&pool, false).await;
    assert!(report.changes.is_empty());
    assert_eq!(count(&pool, "routing_weights").await, 0);

    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    let history_before = count(&pool, "model_performance_history").await;
    let preview = run(&pool, true).await;
    assert_eq!(preview.changes.len(), 1);
    assert_eq!(
        count(&pool, "routing_weights").await,
        0,
        "dry run wrote weights"
    );
    assert_eq!(count(&pool, "routing_snapshots").await, 0);
    assert_eq!(
        count(&pool, "model_performance_history").await,
        history_before
    );
    let dry: bool = sqlx::query_scalar("SELECT dry_run FROM retraining_runs WHERE run_id = $1")
        .bind(&preview.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(dry);
    // The real run applies exactly what the preview showed.
    let applied = run(&pool, false).await;
    assert_eq!(
        serde_json::to_value(&applied.changes).unwrap(),
        serde_json::to_value(&preview.changes).unwrap()
    );
}

async fn all_weights(pool: &PgPool) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY pattern, provider, model), '[]')
         FROM routing_weights w",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rollback_restores_exactly_and_only_three_snapshots_are_kept() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut runs = Vec::new();
    let mut states = vec![all_weights(&pool).await];
    for (i, pattern) in ["code", "math", "chat", "creative"].into_iter().enumerate() {
        seed_ratings(&pool, pattern, "sim-lite", &ratings(10 + i, &[5], 10 + i)).await;
        runs.push(run(&pool, false).await.run_id);
        states.push(all_weights(&pool).await);
    }
    // Four applied runs, three snapshots: the first run's is gone.
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT retraining_run_id FROM routing_snapshots ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept, runs[1..].to_vec());

    // Roll back the last run: the weights are exactly those before it.
    let rb = optimizer::store::learning::rollback(&pool, "run_rb1", None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rb.restored_from_run_id, runs[3]);
    assert_eq!(all_weights(&pool).await, states[3]);
    // Roll back to before the second run, by run id.
    optimizer::store::learning::rollback(&pool, "run_rb2", Some(&runs[1]), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all_weights(&pool).await, states[1]);
    // The first run's snapshot was pruned.
    assert!(
        optimizer::store::learning::rollback(&pool, "run_rb3", Some(&runs[0]), None)
            .await
            .unwrap()
            .is_none()
    );
    let trigger: String =
        sqlx::query_scalar("SELECT trigger FROM retraining_runs WHERE run_id = 'run_rb1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(trigger, "rollback");
}

async fn complete(app: &TestApp, body: Value) -> Value {
    let resp = app.post_json("/complete", &body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn rate(app: &TestApp, request_id: &str, score: i64, correct: bool) -> reqwest::Response {
    app.post_json(
        "/feedback",
        &json!({ "request_id": request_id, "quality_score": score, "is_correct": correct }),
    )
    .await
}

fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(TOKEN)
}

/// Polls a retrain run's status URL until it succeeds; returns the run.
async fn wait_for_run(app: &TestApp, status_url: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run: Value = admin(app, reqwest::Method::GET, status_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "succeeded" {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retrain never finished: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the app's engine has loaded routing policy `version` (via NOTIFY or reload).
async fn wait_for_policy(app: &TestApp, version: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.engine.policy_version() < version {
        assert!(
            std::time::Instant::now() < deadline,
            "policy {version} never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the feedback summary (eventually consistent: aggregation is a queued job) counts
/// `ratings`.
async fn wait_for_summary(app: &TestApp, ratings: i64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let summary: Value = admin(app, reqwest::Method::GET, "/admin/feedback/summary")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if summary["ratings"] == ratings {
            return summary;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the summary never counted {ratings} ratings: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CODE_PROMPTS: [&str; 10] = [
    "Write a Python function that reverses a linked list.",
    "Write a Rust function that parses a CSV line into fields.",
    "Implement binary search in Go and explain the bug-prone parts.",
    "Write a SQL query that finds duplicate emails in a users table.",
    "Refactor this JavaScript function to use async/await: function f(cb) { g(cb) }",
    "Write a bash script that renames all .txt files to .md.",
    "Implement an LRU cache class in Python.",
    "Write a TypeScript function that debounces another function.",
    "Write a regex that matches ISO dates and a Python function using it.",
    "Implement quicksort in Java.",
];

#[tokio::test]
async fn the_loop_closes_end_to_end_through_the_api() {
    let app = TestApp::spawn_with_workers(
        TestDb::migrated().await,
        &[
            ("ADMIN_TOKEN", TOKEN),
            ("EXPLORATION_RATE", "0"),
            ("ROUTING_RELOAD_SECS", "1"),
        ],
    )
    .await;
    // Before learning, code goes to a pricier model than sim-lite.
    let before = complete(
        &app,
        json!({ "prompt": "Write a Go function that merges two maps." }),
    )
    .await;
    assert_ne!(before["model"], "sim-lite", "{before}");

    // Users pin sim-lite for code and rate it highly (the seed's end-to-end test).
    for prompt in CODE_PROMPTS {
        let answer = complete(&app, json!({ "prompt": prompt, "model": "sim-lite" })).await;
        assert_eq!(answer["pattern"], "code", "{prompt}");
        let resp = rate(&app, answer["request_id"].as_str().unwrap(), 5, true).await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "recorded");
        assert_eq!(body["message"], "Thank you for feedback");
        assert!(body["feedback_id"].as_i64().unwrap() > 0);
    }

    // Dry run: a preview, nothing applied.
    let preview: Value = admin(
        &app,
        reqwest::Method::POST,
        "/admin/learning/retrain?dry_run=true",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(preview["dry_run"], true);
    let changes = preview["changes_preview"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{preview}");
    assert_eq!(changes[0]["model"], "sim-lite");
    assert_eq!(changes[0]["after"]["confidence"], "high");
    assert!(
        changes[0]["routing_change"]
            .as_str()
            .unwrap()
            .contains("now routes")
    );

    // The real run, through the queue.
    let resp = admin(
        &app,
        reqwest::Method::POST,
        "/admin/learning/retrain?dry_run=false",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let queued: Value = resp.json().await.unwrap();
    let status_url = queued["status_url"].as_str().unwrap().to_owned();
    let run = wait_for_run(&app, &status_url).await;
    assert_eq!(run["changes_count"], 1);
    // Every process picks the new weights up (NOTIFY); then code routes to sim-lite. (A new
    // prompt: the cached answer of the one before, from a model still expected to do at least
    // as well, would be served from the cache.)
    wait_for_policy(&app, 1).await;
    let after = complete(
        &app,
        json!({ "prompt": "Write a Go function that merges two maps of strings." }),
    )
    .await;
    assert_eq!(after["model"], "sim-lite", "{after}");
    assert_eq!(after["routing"]["confidence"], "high");
    assert!(after["cost_usd"].as_f64().unwrap() < before["cost_usd"].as_f64().unwrap());

    // The admin views reflect it.
    let status: Value = admin(&app, reqwest::Method::GET, "/admin/learning/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["confidence_distribution"]["high"], 1);
    assert_eq!(status["last_run"]["status"], "succeeded");
    assert!(status["next_scheduled_run"].is_string());
    // The summary reads the aggregates, which a queued job folds in after each rating.
    let summary = wait_for_summary(&app, 10).await;
    assert_eq!(summary["by_model"][0]["model"], "sim-lite");
    let trends: Value = admin(
        &app,
        reqwest::Method::GET,
        "/admin/performance/trends?pattern=code&bucket=week",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(trends["points"][0]["ratings"], 10, "{trends}");

    // Rollback: the previous weights (none) come back and routing returns to the prior.
    let rb = admin(&app, reqwest::Method::POST, "/admin/learning/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(rb.status(), 200);
    wait_for_policy(&app, 2).await;
    let rolled = complete(
        &app,
        json!({ "prompt": "Write a Go function that merges two maps!" }),
    )
    .await;
    assert_ne!(rolled["model"], "sim-lite", "{rolled}");
}

#[tokio::test]
async fn feedback_validation_and_replacement() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let answer = complete(&app, json!({ "prompt": "What is the capital of Chile?" })).await;
    let id = answer["request_id"].as_str().unwrap();

    for (body, status, named) in [
        (
            json!({ "request_id": id, "quality_score": 6, "is_correct": true }),
            422,
            "quality_score",
        ),
        (
            json!({ "request_id": id, "quality_score": 0, "is_correct": true }),
            422,
            "quality_score",
        ),
        (
            json!({ "request_id": id, "quality_score": 3 }),
            422,
            "is_correct",
        ),
        (
            json!({ "request_id": id, "quality_score": 3, "is_correct": true, "comment": "x".repeat(2001) }),
            422,
            "comment",
        ),
        (
            json!({ "request_id": "nope", "quality_score": 3, "is_correct": true }),
            404,
            "nope",
        ),
    ] {
        let resp = app.post_json("/feedback", &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let (_, message) = error_body(resp).await;
        assert!(message.contains(named), "{message}");
    }
    let pool = app.test_db.pool().await;

    // Same user twice: the second rating replaces the first.
    let first: Value = app
        .post_json(
            "/feedback",
            &json!({ "request_id": id, "quality_score": 2, "is_correct": false, "user_id": "u1" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let second: Value = app
        .post_json(
            "/feedback",
            &json!({ "request_id": id, "quality_score": 5, "is_correct": true, "user_id": "u1" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["feedback_id"], second["feedback_id"]);
    assert_eq!(second["replaced"], true);
    let other: Value = app
        .post_json(
            "/feedback",
            &json!({ "request_id": id, "quality_score": 4, "is_correct": true, "user_id": "u2" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["feedback_id"], first["feedback_id"]);
    let rows: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT quality_score, user_id FROM response_feedback ORDER BY user_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(5, Some("u1".into())), (4, Some("u2".into()))]);
    // The aggregation job folds them in, once each.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agg: Option<(i64, i64)> =
            sqlx::query_as("SELECT sample_count, quality_sum FROM feedback_aggregates")
                .fetch_optional(&pool)
                .await
                .unwrap();
        if agg == Some((2, 9)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "aggregate is {agg:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unfinished_requests_cannot_be_rated() {
    let app = TestApp::spawn().await; // no workers: the request stays queued
    let queued: Value = app
        .post_json(
            "/complete",
            &json!({ "prompt": "Write a limerick", "async": true }),
        )
        .await
        .json()
        .await
        .unwrap();
    let resp = rate(&app, queued["request_id"].as_str().unwrap(), 4, true).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(error_body(resp).await.0, "not_finished");
}

#[tokio::test]
async fn admin_routes_need_the_token_and_are_disabled_without_one() {
    let app = TestApp::spawn_on(TestDb::migrated().await, &[("ADMIN_TOKEN", TOKEN)]).await;
    let resp = app.get("/admin/learning/status").await;
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .get(app.url("/admin/learning/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = admin(&app, reqwest::Method::GET, "/admin/learning/status")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = admin(&app, reqwest::Method::POST, "/admin/learning/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "nothing to roll back to");
    let resp = admin(
        &app,
        reqwest::Method::GET,
        "/admin/performance/trends?bucket=month",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);

    let open = TestApp::spawn().await;
    let resp = open.get("/admin/feedback/summary").await;
    assert_eq!(resp.status(), 503);
    let (code, message) = error_body(resp).await;
    assert_eq!(code, "admin_disabled");
    assert!(message.contains("ADMIN_TOKEN"));
}

/// The seed's `test_confidence_threshold_enforcement`, through the API and the queue: three
/// excellent ratings are not enough evidence to change routing.
#[tokio::test]
async fn test_confidence_threshold_enforcement() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", TOKEN)]).await;
    for prompt in &CODE_PROMPTS[..3] {
        let answer = complete(&app, json!({ "prompt": prompt, "model": "sim-lite" })).await;
        let resp = rate(&app, answer["request_id"].as_str().unwrap(), 5, true).await;
        assert_eq!(resp.status(), 201);
    }
    let queued: Value = admin(
        &app,
        reqwest::Method::POST,
        "/admin/learning/retrain?dry_run=false",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let url = queued["status_url"].as_str().unwrap().to_owned();
    let run = wait_for_run(&app, &url).await;
    assert_eq!(run["changes_count"], 0, "{run}");
    let pool = app.test_db.pool().await;
    assert_eq!(count(&pool, "routing_weights").await, 0);
    assert_eq!(app.engine.policy_version(), 0);
}

#[tokio::test]
async fn a_rolled_back_change_is_not_reapplied_without_newer_ratings() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    let first = run(&pool, false).await;
    assert!(!first.changes.is_empty());
    assert!(weight(&pool, "code", "sim-lite").await.is_some());
    optimizer::store::learning::rollback(&pool, "run_rb", None, None)
        .await
        .unwrap()
        .unwrap();
    assert!(weight(&pool, "code", "sim-lite").await.is_none());

    // The next retrain sees the same ratings: it re-applies nothing, and says why.
    let again = run(&pool, false).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(again.message.contains("held back"), "{}", again.message);
    assert!(weight(&pool, "code", "sim-lite").await.is_none());

    // New ratings after the rollback are new evidence: the change may come back.
    seed_ratings(&pool, "code", "sim-lite", &ratings(2, &[5], 2)).await;
    let later = run(&pool, false).await;
    assert!(!later.changes.is_empty(), "{}", later.message);
    assert!(weight(&pool, "code", "sim-lite").await.is_some());
}

#[tokio::test]
async fn a_scoped_rollback_leaves_other_patterns_alone_and_a_rollback_can_be_undone() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_ratings(&pool, "code", "sim-lite", &ratings(10, &[5], 10)).await;
    seed_ratings(&pool, "math", "sim-lite", &ratings(10, &[5], 10)).await;
    let retrain = run(&pool, false).await;
    assert!(weight(&pool, "code", "sim-lite").await.is_some());
    assert!(weight(&pool, "math", "sim-lite").await.is_some());
    let after_retrain = all_weights(&pool).await;

    // Scoped: only code's weights go back to before the retrain; math keeps what it learned.
    let rb = optimizer::store::learning::rollback(
        &pool,
        "run_rb_code",
        Some(&retrain.run_id),
        Some("code"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rb.pattern.as_deref(), Some("code"));
    assert!(weight(&pool, "code", "sim-lite").await.is_none());
    assert!(weight(&pool, "math", "sim-lite").await.is_some());
    // A retrain on the same ratings re-applies neither: code's change is held back, math's is
    // already in place.
    let again = run(&pool, false).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(weight(&pool, "code", "sim-lite").await.is_none());

    // Undo the scoped rollback: the retrain's weights are back, exactly.
    let undo = optimizer::store::learning::rollback(&pool, "run_undo", Some("run_rb_code"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(undo.restored_snapshot_id, rb.replaced_snapshot_id);
    assert_eq!(all_weights(&pool).await, after_retrain);

    // A whole-run rollback, then its undo: the undone rollback holds nothing back.
    optimizer::store::learning::rollback(&pool, "run_rb_all", Some(&retrain.run_id), None)
        .await
        .unwrap()
        .unwrap();
    assert!(weight(&pool, "math", "sim-lite").await.is_none());
    optimizer::store::learning::rollback(&pool, "run_undo_all", Some("run_rb_all"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all_weights(&pool).await, after_retrain);
    let held: Vec<(String, String, String, chrono::DateTime<chrono::Utc>)> =
        optimizer::store::learning::rolled_back(&pool)
            .await
            .unwrap();
    assert!(held.is_empty(), "{held:?}");
}
