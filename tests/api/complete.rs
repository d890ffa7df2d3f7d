//! `POST /complete` end to end: the real router, the real queue in Postgres, a real worker in
//! the same process, providers mocked over HTTP (or the simulated one).

use std::time::Duration;

use crate::common::{TestApp, TestDb, catalog_model, error_body, temp_file, wait_finished};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn complete(app: &TestApp, body: Value) -> (u16, Value) {
    let resp = app.post_json("/complete", &body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn scalar_i64(app: &TestApp, sql: &str, id: &str) -> i64 {
    let pool = app.test_db.pool().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn simulated_completion_through_the_queue_with_cost_fields() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let (status, body) = complete(
        &app,
        json!({
            "prompt": "What is the capital of Peru?",
            "user_id": "u1",
            "session_id": "s1"
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["provider"], "simulated");
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .starts_with("[simulated ")
    );
    assert_eq!(body["pattern"], "factual");
    assert!(body["tokens"]["input"].as_i64().unwrap() > 0);
    assert!(body["tokens"]["output"].as_i64().unwrap() > 0);
    let cost = body["cost_usd"].as_f64().unwrap();
    let baseline = body["baseline_cost_usd"].as_f64().unwrap();
    let savings = body["savings_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && baseline > cost, "{body}");
    assert!((baseline - cost - savings).abs() < 1e-8);
    assert_eq!(body["cached"], false);
    assert_eq!(body["routing"]["strategy"], "balanced");
    assert_eq!(body["routing"]["fallbacks"], 0);
    assert!(body["routing"]["alternatives"].is_array());

    let id = body["request_id"].as_str().unwrap();
    let metrics_rows = scalar_i64(
        &app,
        "SELECT count(*) FROM routing_metrics WHERE request_id = $1",
        id,
    )
    .await;
    assert_eq!(metrics_rows, 1);

    // The same prompt again is answered from the cache: nothing billed, the saving recorded.
    let (status, again) = complete(&app, json!({ "prompt": "What is the capital of Peru?" })).await;
    assert_eq!(status, 200);
    assert_eq!(again["cached"], true);
    assert_eq!(again["cost_usd"].as_f64().unwrap(), 0.0);
    assert!(again["savings_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(again["response"], body["response"]);
    assert_ne!(again["request_id"], body["request_id"]);

    // A non-zero temperature is not cached.
    let (_, warm) = complete(
        &app,
        json!({ "prompt": "What is the capital of Peru?", "temperature": 0.7 }),
    )
    .await;
    assert_eq!(warm["cached"], false);

    let summary: Value = app.get("/routing/metrics").await.json().await.unwrap();
    assert_eq!(summary["requests"], 3);
    assert_eq!(summary["cache_hits"], 1);
    assert!(summary["savings_pct"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["by_pattern"][0]["pattern"], "factual");
    assert_eq!(summary["by_provider"][0]["provider"], "simulated");
    let future: Value = app
        .get("/routing/metrics?since=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["requests"], 0);
    assert_eq!(
        app.get("/routing/metrics?since=yesterday").await.status(),
        422
    );
}

#[tokio::test]
async fn async_mode_returns_202_and_the_status_url_answers_when_done() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let (status, body) = complete(
        &app,
        json!({ "prompt": "Write a haiku about rain", "async": true }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(body["status_url"], format!("/requests/{id}"));
    let done = wait_finished(&app, id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["pattern"], "creative");
    assert!(done["cost_usd"].as_f64().unwrap() > 0.0);

    assert_eq!(app.get("/requests/nope").await.status(), 404);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_request() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("CACHE_ENABLED", "false")]).await;
    let send = || {
        app.client
            .post(app.url("/complete"))
            .header("Idempotency-Key", "order-42")
            .json(&json!({ "prompt": "Summarize: the cat sat on the mat." }))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["request_id"], second["request_id"]);
    assert_eq!(second["status"], "succeeded");
    let pool = app.test_db.pool().await;
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((requests, jobs), (1, 1), "one request, one provider call");
}

#[tokio::test]
async fn invalid_input_gets_422_naming_the_field() {
    let app = TestApp::spawn().await;
    for (body, named) in [
        (json!({ "prompt": "  " }), "prompt"),
        (json!({ "prompt": "hi", "temperature": 3 }), "temperature"),
        (json!({ "prompt": "hi", "max_tokens": 0 }), "max_tokens"),
        (json!({ "prompt": "hi", "model": "gpt-17" }), "gpt-17"),
        (json!({ "prompt": "hi", "auto_route": false }), "model"),
        (json!({ "prompt": "hi", "provider": "acme" }), "acme"),
        (
            json!({ "prompt": "hi", "strategy": "cheapest" }),
            "cheapest",
        ),
        (
            json!({ "prompt": "hi", "model": "claude-haiku-4-5" }),
            "not routable",
        ),
        (
            json!({ "prompt": "hi", "user_id": "u".repeat(300) }),
            "user_id",
        ),
        (
            json!({ "prompt": "hi", "asynchronous": true }),
            "asynchronous",
        ),
    ] {
        let resp = app.post_json("/complete", &body).await;
        assert_eq!(resp.status(), 422, "{body}");
        let (_, message) = error_body(resp).await;
        assert!(message.contains(named), "{body} → {message}");
    }
    // Bodies past MAX_REQUEST_BYTES get a JSON 413.
    let huge = "x".repeat(3 * 1024 * 1024);
    let resp = app.post_json("/complete", &json!({ "prompt": huge })).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(error_body(resp).await.0, "payload_too_large");
}

/// An app whose catalog has two Anthropic models, both served by `server`.
async fn anthropic_app(server: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let catalog = format!(
        "{}{}",
        catalog_model("anthropic", "cheap-model", 1.0, 5.0, 0.95),
        catalog_model("anthropic", "backup-model", 3.0, 15.0, 0.97),
    );
    let path = temp_file("catalog.toml", &catalog);
    let uri = server.uri();
    let path = path.to_str().unwrap().to_owned();
    let mut vars = vec![
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("ANTHROPIC_BASE_URL", uri.as_str()),
        ("CATALOG_PATH", path.as_str()),
        ("EXPLORATION_RATE", "0"),
        ("CACHE_ENABLED", "false"),
        ("RETRY_BASE_MS", "0"),
        ("PROVIDER_MAX_RETRIES", "1"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with_workers(TestDb::migrated().await, &vars).await
}

fn anthropic_ok(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 200}
    }))
}

fn anthropic_error(status: u16, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"type": "error", "error": {"type": kind, "message": "nope"}}))
}

#[tokio::test]
async fn a_5xx_is_retried_then_succeeds_on_the_same_model() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic_error(500, "api_error"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(anthropic_ok("second time lucky"))
        .mount(&server)
        .await;
    let app = anthropic_app(&server, &[]).await;
    let (status, body) = complete(&app, json!({ "prompt": "Explain recursion briefly" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], "second time lucky");
    assert_eq!(body["model"], "cheap-model");
    assert_eq!(body["routing"]["fallbacks"], 0);
    // 1000 in × $1/M + 200 out × $5/M, counted once.
    assert!(
        (body["cost_usd"].as_f64().unwrap() - 0.002).abs() < 1e-9,
        "{body}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn persistent_5xx_falls_back_to_the_next_model_and_is_recorded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({ "model": "cheap-model" })))
        .respond_with(anthropic_error(503, "overloaded_error"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({ "model": "backup-model" })))
        .respond_with(anthropic_ok("from the backup"))
        .mount(&server)
        .await;
    let app = anthropic_app(&server, &[]).await;
    let (status, body) = complete(&app, json!({ "prompt": "Explain recursion briefly" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "backup-model");
    assert_eq!(body["routing"]["fallbacks"], 1);
    // cheap-model: first try + 1 retry; then backup-model once.
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    let id = body["request_id"].as_str().unwrap();
    let fallbacks = scalar_i64(
        &app,
        "SELECT fallback_count::bigint FROM routing_metrics WHERE request_id = $1",
        id,
    )
    .await;
    assert_eq!(fallbacks, 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(anthropic_error(429, "rate_limit_error").insert_header("retry-after", "2"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(anthropic_ok("after waiting"))
        .mount(&server)
        .await;
    let app = anthropic_app(&server, &[]).await;
    let started = std::time::Instant::now();
    let (status, body) = complete(&app, json!({ "prompt": "Explain recursion briefly" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "cheap-model");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
}

/// A request the provider refuses (400) fails at once with the provider's status and message:
/// no retry, no fallback, and SDKs do not retry a 400 either.
#[tokio::test]
async fn a_refused_request_fails_at_once_with_400_and_a_recorded_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(anthropic_error(400, "invalid_request_error"))
        .mount(&server)
        .await;
    let app = anthropic_app(&server, &[]).await;
    let (status, body) = complete(&app, json!({ "prompt": "Explain recursion briefly" })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "provider_rejected");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("400") && message.contains("nope"),
        "{body}"
    );
    assert!(!body.to_string().contains("sk-ant-test"));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let id = body["request_id"].as_str().unwrap();
    let view = wait_finished(&app, id, Duration::from_secs(1)).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["error"]["code"], "provider_rejected");
    let failed_rows = scalar_i64(
        &app,
        "SELECT count(*) FROM routing_metrics WHERE request_id = $1 AND status = 'failed'",
        id,
    )
    .await;
    assert_eq!(failed_rows, 1);

    // In OpenAI's shape too: a 400 an SDK raises as BadRequestError, not a retried 5xx.
    let chat = app
        .post_json(
            "/v1/chat/completions",
            &json!({ "model": "auto", "messages": [{"role": "user", "content": "hi"}] }),
        )
        .await;
    assert_eq!(chat.status(), 400);
    let chat: Value = chat.json().await.unwrap();
    assert_eq!(chat["error"]["type"], "invalid_request_error", "{chat}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// The provider refusing the gateway's own key (401) is not the caller's fault: the next
/// candidate is tried at once (no retry), and when none is left the answer is a 502 that says so.
#[tokio::test]
async fn a_refused_provider_key_falls_back_then_fails_with_502() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(anthropic_error(401, "authentication_error"))
        .mount(&server)
        .await;
    let app = anthropic_app(&server, &[]).await;
    let (status, body) = complete(&app, json!({ "prompt": "Explain recursion briefly" })).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "all_candidates_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("API key"), "{body}");
    assert!(!body.to_string().contains("sk-ant-test"));
    // Each of the two models once: a fallback, no retry.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn store_prompts_hash_keeps_no_text_after_the_request_finishes() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("STORE_PROMPTS", "hash")]).await;
    let (_, body) = complete(&app, json!({ "prompt": "my secret prompt" })).await;
    let id = body["request_id"].as_str().unwrap();
    let pool = app.test_db.pool().await;
    let (prompt, hash): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT prompt, prompt_hash FROM requests WHERE request_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(prompt, None);
    assert_eq!(hash.unwrap().len(), 64);
}

#[tokio::test]
async fn explore_false_keeps_a_request_on_the_regular_choice() {
    let app = TestApp::spawn_with_workers(
        TestDb::migrated().await,
        &[("EXPLORATION_RATE", "1"), ("CACHE_ENABLED", "false")],
    )
    .await;
    let prompt = "Write a Python function that merges two sorted lists";
    let (_, explored) = complete(&app, json!({ "prompt": prompt })).await;
    assert_eq!(explored["routing"]["explored"], true, "{explored}");
    let (_, regular) = complete(&app, json!({ "prompt": prompt, "explore": false })).await;
    assert_eq!(regular["routing"]["explored"], false, "{regular}");
    assert_ne!(regular["model"], explored["model"]);
    let summary: Value = app.get("/routing/metrics").await.json().await.unwrap();
    assert_eq!(summary["explored"], 1);
}

/// Every text and JSON column of every table (the queue's too) holding `marker`, as
/// `schema.table.column`.
async fn columns_holding(app: &TestApp, marker: &str) -> Vec<String> {
    let pool = app.test_db.pool().await;
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text
         FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema IN ('public', 'apalis') AND t.table_type = 'BASE TABLE'
           AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'ARRAY', 'bytea')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(columns.len() > 20, "{columns:?}");
    let mut found = Vec::new();
    for (schema, table, column) in columns {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE \"{column}\"::text LIKE $1"
        )))
        .bind(format!("%{marker}%"))
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{schema}.{table}.{column}"));
        }
    }
    found
}

/// `STORE_PROMPTS=none` keeps no text of the prompt, system prompt, history or tool definitions,
/// and no hash of the prompt; `hash` keeps only the prompt's hash. A marker sent in every field
/// of every dialect is found in no column of any table once the requests finished — except the
/// answer itself (`requests.response`, `requests.tool_calls`: response data, kept for
/// `GET /requests/{id}` until `RETENTION_DAYS`; the simulated model builds its tool calls from the
/// schema, so a marker in a property name comes back in the answer).
#[tokio::test]
async fn store_prompts_none_and_hash_keep_no_prompt_text_in_any_column() {
    for setting in ["none", "hash"] {
        let app = TestApp::spawn_with_workers(
            TestDb::migrated().await,
            &[("STORE_PROMPTS", setting), ("CACHE_ENABLED", "true")],
        )
        .await;
        let m = format!("mrk{}", setting.to_uppercase());
        let (status, body) = complete(
            &app,
            json!({ "prompt": format!("What is the capital of Peru? {m}-prompt"),
                    "system": format!("Be brief {m}-system"), "session_id": "s", "user_id": "u" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let tool = json!({"type": "function", "function": {
            "name": "lookup", "description": format!("{m}-tooldesc"),
            "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "description": format!("{m}-schemadesc")}}}}});
        let chat = app
            .post_json(
                "/v1/chat/completions",
                &json!({ "model": "auto", "stop": [format!("{m}-stop")], "tools": [tool],
                         "messages": [
                    {"role": "system", "content": format!("{m}-v1system")},
                    {"role": "user", "content": format!("{m}-history")},
                    {"role": "assistant", "content": format!("{m}-answered")},
                    {"role": "user", "content": format!("Look it up {m}-last")}] }),
            )
            .await;
        assert_eq!(chat.status(), 200, "{}", chat.text().await.unwrap());
        let json_out = app
            .post_json(
                "/v1/chat/completions",
                &json!({ "model": "auto", "messages": [{"role": "user", "content": format!("{m}-json")}],
                         "response_format": {"type": "json_schema", "json_schema": {"name": "a",
                            "schema": {"type": "object", "description": format!("{m}-jsonschema"),
                                       "properties": {"x": {"type": "string"}}}}} }),
            )
            .await;
        assert_eq!(json_out.status(), 200, "{}", json_out.text().await.unwrap());
        let messages = app
            .post_json(
                "/v1/messages",
                &json!({ "model": "auto", "max_tokens": 50, "system": format!("{m}-anthropicsystem"),
                         "messages": [{"role": "user", "content": format!("Hi {m}-anthropic")}] }),
            )
            .await;
        assert_eq!(messages.status(), 200, "{}", messages.text().await.unwrap());

        // The search finds what is there (a model name in the metrics rows).
        let control = columns_holding(&app, "sim-").await;
        assert!(
            control.contains(&"public.routing_metrics.selected_model".to_owned()),
            "{control:?}"
        );
        let found: Vec<String> = columns_holding(&app, &m)
            .await
            .into_iter()
            .filter(|c| c != "public.requests.response" && c != "public.requests.tool_calls")
            .collect();
        assert!(
            found.is_empty(),
            "STORE_PROMPTS={setting}: {m} in {found:?}"
        );

        let pool = app.test_db.pool().await;
        let hashes: Vec<Option<String>> = sqlx::query_scalar("SELECT prompt_hash FROM requests")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(hashes.len(), 4);
        let cached: i64 = sqlx::query_scalar("SELECT count(*) FROM response_cache")
            .fetch_one(&pool)
            .await
            .unwrap();
        if setting == "none" {
            assert!(hashes.iter().all(Option::is_none), "{hashes:?}");
            assert_eq!(
                cached, 0,
                "the cache keys answers by a digest of the prompt"
            );
        } else {
            assert!(
                hashes
                    .iter()
                    .all(|h| h.as_ref().is_some_and(|h| h.len() == 64))
            );
        }
    }
}

/// An exact repeat is answered from the cache even when the current decision routes it to
/// another model — exploration here (a second process with `EXPLORATION_RATE=1` on the same
/// database): the cache is keyed by what the caller asked, not by the model routed.
#[tokio::test]
async fn a_repeat_routed_elsewhere_is_still_served_from_the_cache() {
    let db = TestDb::migrated().await;
    let url = db.url.clone();
    let first = TestApp::spawn_with_workers(db, &[]).await;
    let prompt = json!({ "prompt": "What is the capital of Peru?" });
    let (status, original) = complete(&first, prompt.clone()).await;
    assert_eq!(status, 200, "{original}");
    assert_eq!(original["cached"], false);
    let exploring = TestApp::spawn_with_workers(
        TestDb {
            name: first.test_db.name.clone(),
            url,
        },
        &[("EXPLORATION_RATE", "1")],
    )
    .await;
    // Without the cache this process explores: another model than the original's.
    let (_, explored) = complete(
        &exploring,
        json!({ "prompt": "What is the capital of Peru?", "temperature": 0.5 }),
    )
    .await;
    assert_eq!(explored["routing"]["explored"], true, "{explored}");
    assert_ne!(explored["model"], original["model"], "{explored}");
    let (status, repeat) = complete(&exploring, prompt).await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(repeat["cached"], true, "{repeat}");
    assert_eq!(repeat["response"], original["response"]);
    assert_eq!(repeat["model"], original["model"]);
}
