//! A worker process killed (SIGKILL) while a provider call is in flight: another worker process
//! takes the job over, and the request ends succeeded exactly once, its cost counted once.

use std::time::{Duration, Instant};

use crate::common::{TestApp, TestDb, catalog_model, spawn_worker, temp_file, wait_finished};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_killed_worker_s_job_is_finished_by_another_exactly_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(json!({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": "slow-model",
                    "content": [{"type": "text", "text": "finally"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 1000, "output_tokens": 1000}
                })),
        )
        .mount(&server)
        .await;
    let catalog = temp_file(
        "catalog.toml",
        &catalog_model("anthropic", "slow-model", 1.0, 5.0, 0.9),
    );
    let test_db = TestDb::migrated().await;
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", test_db.url.clone()),
        ("ANTHROPIC_API_KEY", "sk-ant-test".into()),
        ("ANTHROPIC_BASE_URL", server.uri()),
        ("CATALOG_PATH", catalog.display().to_string()),
        ("RUN_MIGRATIONS", "false".into()),
        ("JOB_HEARTBEAT_SECS", "1".into()),
        ("JOB_MISSED_HEARTBEATS", "2".into()),
        ("CACHE_ENABLED", "false".into()),
    ];
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The API without workers: the worker processes do the work.
    let app = TestApp::spawn_on(test_db, &vars).await;

    let first = spawn_worker(&vars);
    let resp: serde_json::Value = app
        .post_json(
            "/complete",
            &json!({ "prompt": "Explain recursion", "async": true }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = resp["request_id"].as_str().unwrap().to_owned();

    // Wait until the first worker's provider call is in flight, then kill it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.received_requests().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first worker never called the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first = first;
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let _second = spawn_worker(&vars);
    let done = wait_finished(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["response"], "finally");

    // The provider was called twice (once by each worker), but the request finished once:
    // one metrics row, one cost (1000 × $1/M + 1000 × $5/M).
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let pool = app.test_db.pool().await;
    let (rows, cost): (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(cost_usd), 0) FROM routing_metrics WHERE request_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    assert!((cost - 0.006).abs() < 1e-9, "{cost}");
    let summary: serde_json::Value = app.get("/routing/metrics").await.json().await.unwrap();
    assert_eq!(summary["requests"], 1);
    assert!((summary["cost_usd"].as_f64().unwrap() - 0.006).abs() < 1e-9);
}

/// Issue 18, defect 1: a job acknowledged although its request never reached a terminal state
/// (the request stays `running`, its job `Done`). The workers' sweep re-arms that job and the
/// request is answered — not left to the deadline, which would fail it.
#[tokio::test]
async fn a_request_whose_job_was_acknowledged_unfinished_is_re_armed_and_answered() {
    let test_db = TestDb::migrated().await;
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", test_db.url.clone()),
        ("RUN_MIGRATIONS", "false".into()),
        ("CACHE_ENABLED", "false".into()),
        // A sweep every 2 s; without the re-arm the request would fail at 20 s.
        ("REQUEST_DEADLINE_SECS", "20".into()),
    ];
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_on(test_db, &vars).await;
    let resp: serde_json::Value = app
        .post_json(
            "/complete",
            &json!({ "prompt": "Name a colour", "async": true }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = resp["request_id"].as_str().unwrap().to_owned();

    // What defect 1 left behind: claimed (running), its job acknowledged as done.
    let pool = app.test_db.pool().await;
    sqlx::query(
        "UPDATE requests SET status = 'running', updated_at = now() - interval '1 minute'
         WHERE request_id = $1",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    let acked = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now(), last_result = '{\"Ok\": null}'
         WHERE job_type = 'provider_call'",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(acked, 1);

    let _worker = spawn_worker(&vars);
    let done = wait_finished(&app, &id, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM routing_metrics WHERE request_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}
