//! The OpenAPI document: `docs/openapi.json` is what the code generates (regenerate it with
//! `UPDATE_OPENAPI=1 cargo test --test api openapi::`), `GET /openapi.json` serves it, and it names
//! every route the router answers.

use crate::common::TestApp;
use serde_json::Value;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[test]
fn the_checked_in_document_is_what_the_code_generates() {
    let generated = optimizer::api::openapi::document_json() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test api openapi::` and commit it"
    );
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_names_every_route() {
    let app = TestApp::spawn().await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let served: Value = serde_json::from_str(&optimizer::api::openapi::document_json()).unwrap();
    assert_eq!(doc, served);
    for (path, method) in [
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/complete", "post"),
        ("/requests/{id}", "get"),
        ("/routing/metrics", "get"),
        ("/feedback", "post"),
        ("/recommendation", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{id}", "get"),
        ("/v1/messages", "post"),
        ("/v1/messages/count_tokens", "post"),
        ("/admin/feedback/summary", "get"),
        ("/admin/learning/status", "get"),
        ("/admin/learning/retrain", "post"),
        ("/admin/learning/runs/{run_id}", "get"),
        ("/admin/learning/rollback", "post"),
        ("/admin/performance/trends", "get"),
        ("/admin/alerts", "get"),
        ("/admin/keys", "post"),
        ("/admin/keys", "get"),
        ("/admin/keys/{key_id}", "get"),
        ("/admin/keys/{key_id}", "patch"),
        ("/admin/keys/{key_id}/rotate", "post"),
        ("/admin/keys/{key_id}/revoke", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"]["200"].is_object() || op["responses"]["201"].is_object(),
            "{method} {path}"
        );
        // The route answers (not the router's 404 for unknown routes).
        let url = app.url(
            &path
                .replace("{id}", "01J0000000000000000000000X")
                .replace("{run_id}", "01J0000000000000000000000X")
                .replace("{key_id}", "key_01J0000000000000000000000X"),
        );
        let resp = app
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !(status == 404 && body.contains("no such route")) && status != 405,
            "{method} {path}: {status} {body}"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, 27, "a route was added: list it above");
}
