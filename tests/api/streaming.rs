//! `stream: true`: each provider's streaming wire format against wiremock (request shape and
//! parsing), relayed through the worker to Server-Sent Events, with the full text, tokens and
//! cost stored as for a non-streamed call.

use crate::common::{TestApp, TestDb, catalog_model, temp_file};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sse(events: &[String]) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_raw(events.concat(), "text/event-stream")
}

fn ev(event: &str, data: Value) -> String {
    if event.is_empty() {
        format!("data: {data}\n\n")
    } else {
        format!("event: {event}\ndata: {data}\n\n")
    }
}

async fn app(server: &MockServer) -> TestApp {
    crate::common::spawn_with_upstream(&crate::common::upstream_catalog(""), &server.uri()).await
}

/// Streams a chat completion; returns (content pieces, usage, request id).
async fn stream(app: &TestApp, model: &str) -> (Vec<String>, Value, String) {
    let resp = app
        .post_json(
            "/v1/chat/completions",
            &json!({ "model": model, "stream": true, "stream_options": {"include_usage": true},
                     "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Count to three"}] }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let id = resp.headers()["x-optimizer-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = resp.text().await.unwrap();
    let mut pieces = Vec::new();
    let mut usage = Value::Null;
    let mut done = false;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], id.as_str());
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            pieces.push(c.to_owned());
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
    }
    assert!(done, "no [DONE] in {text}");
    (pieces, usage, id)
}

async fn stored(app: &TestApp, id: &str) -> (String, i32, i32, f64) {
    sqlx::query_as(
        "SELECT r.response, m.input_tokens, m.output_tokens, m.cost_usd
         FROM requests r JOIN routing_metrics m USING (request_id) WHERE request_id = $1",
    )
    .bind(id)
    .fetch_one(&app.test_db.pool().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn anthropic_sse_events_are_relayed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_partial_json(json!({ "model": "a-model", "stream": true, "system": "Be brief." })))
        .respond_with(sse(&[
            ev("message_start", json!({"type": "message_start", "message": {"id": "m", "model": "a-model-1", "usage": {"input_tokens": 12, "output_tokens": 1}}})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ev("ping", json!({"type": "ping"})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "one, "}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "two, three"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}})),
            ev("message_stop", json!({"type": "message_stop"})),
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let app = app(&server).await;
    let (pieces, usage, id) = stream(&app, "a-model").await;
    assert_eq!(pieces, vec!["one, ", "two, three"]);
    assert_eq!(usage["prompt_tokens"], 12);
    assert_eq!(usage["completion_tokens"], 6);
    let (response, input, output, cost) = stored(&app, &id).await;
    assert_eq!(
        (response.as_str(), input, output),
        ("one, two, three", 12, 6)
    );
    assert!((cost - (12.0 * 1.0 + 6.0 * 5.0) / 1e6).abs() < 1e-12);
}

#[tokio::test]
async fn gemini_stream_generate_content_is_relayed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/g-model:streamGenerateContent"))
        .and(query_param("alt", "sse"))
        .and(body_partial_json(json!({ "systemInstruction": {"parts": [{"text": "Be brief."}]} })))
        .respond_with(sse(&[
            ev("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "one, "}]}}]})),
            ev("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "two, three"}]}, "finishReason": "STOP"}],
                          "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5}})),
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let app = app(&server).await;
    let (pieces, usage, id) = stream(&app, "g-model").await;
    assert_eq!(pieces.concat(), "one, two, three");
    assert_eq!(usage["total_tokens"], 14);
    let (response, input, output, _) = stored(&app, &id).await;
    assert_eq!(
        (response.as_str(), input, output),
        ("one, two, three", 9, 5)
    );
}

#[tokio::test]
async fn openai_compatible_sse_chunks_are_relayed() {
    let server = MockServer::start().await;
    let chunk = |content: Option<&str>, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "model": "o-model",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    };
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_partial_json(json!({ "model": "o-model", "stream": true,
                                       "stream_options": {"include_usage": true} })))
        .respond_with(sse(&[
            ev("", chunk(Some("one, "), None)),
            ev("", chunk(Some("two, three"), Some("stop"))),
            ev("", json!({"id": "c", "object": "chat.completion.chunk", "choices": [],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "cost": 0.00002}})),
            "data: [DONE]\n\n".to_owned(),
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let app = app(&server).await;
    let (pieces, usage, id) = stream(&app, "o-model").await;
    assert_eq!(pieces.concat(), "one, two, three");
    assert_eq!(usage["completion_tokens"], 4);
    let (response, _, _, cost) = stored(&app, &id).await;
    assert_eq!(response, "one, two, three");
    assert_eq!(cost, 0.00002, "OpenRouter's reported cost wins");
}

/// A stream that fails before its first piece answers as a non-streamed request would: the
/// status and a JSON error (SDKs raise it with its status), not a 200 with an error event.
#[tokio::test]
async fn a_stream_that_fails_before_its_first_piece_answers_with_its_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}),
        ))
        .mount(&server)
        .await;
    let app = app(&server).await;
    let send = |model: &'static str, path: &'static str| {
        let body = if path == "/v1/messages" {
            json!({ "model": model, "stream": true, "max_tokens": 50,
                    "messages": [{"role": "user", "content": "hi"}] })
        } else {
            json!({ "model": model, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}] })
        };
        let app = &app;
        async move { app.post_json(path, &body).await }
    };
    // Our provider key refused (a pinned model has no fallback): 502, OpenAI's shape.
    let resp = send("anthropic/a-model", "/v1/chat/completions").await;
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().contains_key("x-optimizer-request-id"));
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "api_error", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("401"),
        "{error}"
    );
    // The request itself refused: 400, in each dialect.
    let resp = send("openrouter/o-model", "/v1/chat/completions").await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens is too large"),
        "{error}"
    );
    let resp = send("openrouter/o-model", "/v1/messages").await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
}

/// A stream the provider cuts after two pieces (no finish reason, no usage, no `[DONE]`) is
/// not a success: the client gets an error event, the request is recorded failed
/// (`stream_interrupted`), and the delivered tokens are charged by estimate.
#[tokio::test]
async fn a_stream_cut_midway_is_recorded_interrupted_and_charged() {
    let server = MockServer::start().await;
    let chunk = |content: &str| {
        json!({"id": "c", "object": "chat.completion.chunk", "model": "o-model",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    };
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(sse(&[
            ev("", chunk("The first part of a long answer, ")),
            ev("", chunk("and the second part")),
        ]))
        .mount(&server)
        .await;
    let app = app(&server).await;
    let resp = app
        .post_json(
            "/v1/chat/completions",
            &json!({ "model": "openrouter/o-model", "stream": true,
                     "messages": [{"role": "user", "content": "Tell me a long story"}] }),
        )
        .await;
    assert_eq!(resp.status(), 200, "the stream had started");
    let id = resp.headers()["x-optimizer-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(text.contains("The first part"), "{text}");
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let error: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("end marker"),
        "{text}"
    );
    let (status, code, output_tokens, cost): (String, String, i32, f64) = sqlx::query_as(
        "SELECT r.status, r.error_code, m.output_tokens, m.cost_usd
         FROM requests r JOIN routing_metrics m USING (request_id) WHERE request_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.test_db.pool().await)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("failed", "stream_interrupted")
    );
    // "The first part of a long answer, and the second part": 52 ASCII bytes / 4.
    assert_eq!(output_tokens, 13);
    assert!(cost > 0.0, "the delivered tokens are charged: {cost}");
}

/// Split mode: the API (no workers) and a worker process; the stream reaches the client by
/// NOTIFY in byte-bounded pieces (a long multi-byte delta), and what the client read is exactly
/// the stored answer.
#[tokio::test]
async fn a_stream_crosses_processes_intact() {
    let server = MockServer::start().await;
    let long = "é€😀 naïve façade — ".repeat(400); // ~10 KB, 1–4 bytes a character
    let chunk = |content: &str, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "model": "o-model",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    };
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(sse(&[
            ev("", chunk("start: ", None)),
            ev("", chunk(&long, None)),
            ev("", chunk(" end", Some("stop"))),
            ev("", json!({"id": "c", "object": "chat.completion.chunk", "choices": [],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 3000, "total_tokens": 3010}})),
            "data: [DONE]\n\n".to_owned(),
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let catalog = temp_file(
        "split-catalog.toml",
        &catalog_model("openrouter", "o-model", 1.0, 5.0, 0.9),
    )
    .display()
    .to_string();
    let uri = server.uri();
    let db = TestDb::migrated().await;
    let url = db.url.clone();
    let env = [
        ("CATALOG_PATH", catalog.as_str()),
        ("OPENROUTER_API_KEY", "o-key"),
        ("OPENROUTER_BASE_URL", uri.as_str()),
        ("CACHE_ENABLED", "false"),
    ];
    let app = TestApp::spawn_on(db, &env).await;
    let mut worker_env = env.to_vec();
    worker_env.push(("DATABASE_URL", url.as_str()));
    let _worker = crate::common::spawn_worker(&worker_env);
    let (pieces, usage, id) = stream(&app, "o-model").await;
    let expected = format!("start: {long} end");
    assert!(
        pieces.len() > 10,
        "relayed in byte-bounded pieces: {}",
        pieces.len()
    );
    assert_eq!(pieces.concat(), expected);
    assert_eq!(usage["completion_tokens"], 3000);
    let (response, _, _, _) = stored(&app, &id).await;
    assert_eq!(response, expected);
}
