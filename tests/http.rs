//! The API's HTTP surface: /health, /ready, the JSON error shape, request ids.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use common::{TestApp, TestDb, error_body, settings_with};

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
