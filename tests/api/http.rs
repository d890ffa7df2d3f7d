//! The API's HTTP surface: /health, /ready, the JSON error shape, request ids.

use crate::common::{TestApp, TestDb, error_body, settings_with};

#[tokio::test]
async fn health_answers_without_touching_the_database() {
    // A database URL nothing listens on: /health must not care.
    let settings = settings_with(&[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        ("BIND", "127.0.0.1:0"),
        ("DB_ACQUIRE_TIMEOUT_MS", "300"),
    ]);
    let app = TestApp::spawn_with(settings, TestDb::empty().await).await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    // …while /ready says the database is unreachable, in the error shape.
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 503);
    let (code, _) = error_body(resp).await;
    assert_eq!(code, "database_unreachable");
}

#[tokio::test]
async fn ready_is_200_on_a_migrated_database() {
    let app = TestApp::spawn().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn ready_is_503_until_the_database_is_migrated() {
    let app = TestApp::spawn_on(TestDb::empty().await, &[]).await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 503);
    let (code, message) = error_body(resp).await;
    assert_eq!(code, "not_migrated");
    assert!(message.contains("migrations"), "{message}");

    app.db.setup().await.unwrap();
    assert_eq!(app.get("/ready").await.status(), 200);
}

#[tokio::test]
async fn ready_waits_for_the_in_process_workers_so_the_first_request_runs_at_once() {
    // Before, /ready said yes once the schema was in place while serve's workers were still
    // starting: the first requests waited for them (~0.5 s) and went through the queue instead
    // of the direct lane.
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let mut answers = Vec::new();
    for _ in 0..200 {
        let resp = app.get("/ready").await;
        let status = resp.status().as_u16();
        if status == 200 {
            break;
        }
        let (code, _) = error_body(resp).await;
        answers.push(code);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        answers.iter().all(|c| c == "workers_starting"),
        "{answers:?}"
    );
    let resp = app
        .post_json(
            "/complete",
            &serde_json::json!({ "prompt": "What is the capital of Peru?" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let lane_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE lock_by LIKE 'provider_call-direct-%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(lane_jobs, 1, "the first request ran in the direct lane");
}

#[tokio::test]
async fn a_request_whose_client_leaves_during_its_insert_still_runs() {
    // A client that disconnects drops its handler. Before, a request whose insert committed
    // after that kept its direct-lane job `Running` under this live process and never ran.
    let app = TestApp::spawn_with_workers(
        TestDb::migrated().await,
        &[("CACHE_ENABLED", "false"), ("EXPLORATION_RATE", "0")],
    )
    .await;
    crate::common::process::wait_for_status(&app.url("/ready"), 200).await;
    // Hold every insert into requests until the client has gone.
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE requests IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let client = app.client.clone();
    let url = app.url("/complete");
    let send = tokio::spawn(async move {
        client
            .post(url)
            .json(&serde_json::json!({ "prompt": "What is the capital of Peru?" }))
            .send()
            .await
    });
    let mut waiting = 0i64;
    for _ in 0..500 {
        waiting = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO requests%'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 1, "the insert waits for the lock");
    send.abort();
    let _ = send.await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    blocker.rollback().await.unwrap();
    let mut status = String::new();
    for _ in 0..300 {
        status = sqlx::query_scalar("SELECT status FROM requests")
            .fetch_optional(&app.db.pool)
            .await
            .unwrap()
            .unwrap_or_default();
        if status == "succeeded" || status == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "succeeded", "the request ran to its end");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    let resp = app.get("/no/such/route").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_body(resp).await.0, "not_found");

    let resp = app.client.post(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(error_body(resp).await.0, "method_not_allowed");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let resp = app.get("/health").await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");

    let resp = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "caller-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "caller-chosen-42");
}

/// Issue 38 item 11: a request target or a header set too large is refused in the JSON shape
/// (the route's dialect on /v1), not with an empty body.
#[tokio::test]
async fn a_long_uri_and_a_header_flood_get_the_json_error_shape() {
    let app = TestApp::spawn().await;
    let long = format!("/requests/{}", "x".repeat(10 * 1024));
    let resp = app.get(&long).await;
    assert_eq!(resp.status(), 414);
    let (code, message) = error_body(resp).await;
    assert_eq!(code, "uri_too_long");
    assert!(message.contains("8192"), "{message}");

    let mut flood = reqwest::header::HeaderMap::new();
    for i in 0..150 {
        flood.insert(
            reqwest::header::HeaderName::from_bytes(format!("x-flood-{i}").as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_static("1"),
        );
    }
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .headers(flood.clone())
        .json(&serde_json::json!({"model": "auto", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: serde_json::Value = resp.json().await.unwrap();
    // The OpenAI dialect's error shape.
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("155 header fields"),
        "{body}"
    );

    let big = "v".repeat(70 * 1024);
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    // Probes too: every route has the shape.
    assert_eq!(resp.status(), 431);
    assert_eq!(error_body(resp).await.0, "headers_too_large");
}
