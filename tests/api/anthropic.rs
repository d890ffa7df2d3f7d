//! The Anthropic-compatible Messages API (`POST /v1/messages`): the message shape, its errors,
//! keys in `x-api-key`, rating a message, each provider reached in its own format, and the
//! official Anthropic Python SDK (text, max_tokens, errors, streams, tools).

use crate::common::{TestApp, TestDb};
use serde_json::{Value, json};

async fn messages(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/messages", &body).await
}

#[tokio::test]
async fn messages_answer_in_anthropic_shape_and_can_be_rated() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let resp = messages(
        &app,
        json!({ "model": "auto", "max_tokens": 200, "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}] }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-optimizer-cost-usd"));
    assert!(resp.headers().contains_key("x-request-id"));
    // Anthropic's SDKs read `request-id`: the message's own id.
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], request_id.as_str(), "{body}");
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["content"][0]["type"], "text");
    assert!(
        body["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("[simulated ")
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["usage"]["input_tokens"].as_i64().unwrap() > 0);
    // The message id is the request: it can be fetched and rated.
    let id = body["id"].as_str().unwrap();
    let stored: Value = app
        .get(&format!("/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "succeeded", "{stored}");
    let rated = app
        .post_json(
            "/feedback",
            &json!({ "request_id": id, "quality_score": 5, "is_correct": true }),
        )
        .await;
    assert_eq!(rated.status(), 201);
}

#[tokio::test]
async fn errors_have_anthropic_shape_and_name_the_field() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, status, kind, names) in [
        (
            json!({ "model": "auto", "messages": user }),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json!({ "model": "auto", "max_tokens": 0, "messages": user }),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json!({ "model": "auto", "max_tokens": 9, "messages": [] }),
            400,
            "invalid_request_error",
            "messages",
        ),
        (
            json!({ "model": "auto", "max_tokens": 9, "messages": user, "top_k": 5 }),
            400,
            "invalid_request_error",
            "top_k",
        ),
        (
            json!({ "model": "auto", "max_tokens": 9, "messages": user, "stop_sequences": ["a","b","c","d","e"] }),
            400,
            "invalid_request_error",
            "stop_sequences",
        ),
        (
            json!({ "model": "auto", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}] }),
            400,
            "invalid_request_error",
            "messages[0].content[0]",
        ),
        (
            json!({ "model": "auto", "max_tokens": 9, "messages": user, "tools": [{"name": "bad name!", "input_schema": {}}] }),
            400,
            "invalid_request_error",
            "tools[0].name",
        ),
        (
            json!({ "model": "claude-17", "max_tokens": 9, "messages": user }),
            404,
            "not_found_error",
            "claude-17",
        ),
    ] {
        let resp = messages(&app, body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], kind, "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(names),
            "{err}"
        );
    }
    // Not JSON at all.
    let resp = app
        .client
        .post(app.url("/v1/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
}

#[tokio::test]
async fn keys_are_read_from_x_api_key() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", "adm")]).await;
    let secret = crate::common::create_key(&app, "adm", "anthropic").await;
    let secret = secret.as_str();
    let body = json!({ "model": "auto", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hi"}] });
    let without = messages(&app, body.clone()).await;
    assert_eq!(without.status(), 401);
    assert_eq!(
        without.headers()["request-id"],
        without.headers()["x-request-id"],
        "an error names the HTTP request"
    );
    let err: Value = without.json().await.unwrap();
    assert_eq!(err["error"]["type"], "authentication_error", "{err}");
    let with = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    // The same key works on the other routes too.
    let mine = app
        .client
        .get(app.url("/routing/metrics"))
        .header("x-api-key", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
}

/// The streamed events in order, and the text they carry.
#[tokio::test]
async fn a_streamed_message_sends_anthropics_events_in_order() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let text = messages(
        &app,
        json!({ "model": "auto", "max_tokens": 200, "stream": true,
                "messages": [{"role": "user", "content": "Write a haiku about snow"}] }),
    )
    .await
    .text()
    .await
    .unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.get(1), Some(&"content_block_start"), "{text}");
    assert_eq!(
        &names[names.len() - 3..],
        &["content_block_stop", "message_delta", "message_stop"],
        "{text}"
    );
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let streamed: String = data
        .iter()
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    let id = data[0]["message"]["id"].as_str().unwrap();
    let stored = crate::common::wait_finished(&app, id, std::time::Duration::from_secs(10)).await;
    assert_eq!(stored["response"].as_str(), Some(streamed.as_str()));
    let end = &data[data.len() - 2];
    assert_eq!(end["delta"]["stop_reason"], "end_turn", "{end}");
    assert!(end["usage"]["output_tokens"].as_i64().unwrap() > 0, "{end}");
}

#[tokio::test]
async fn the_official_anthropic_python_sdk_works_against_the_server() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", "sdk-admin")])
            .await;
    let secret = crate::common::create_key(&app, "sdk-admin", "anthropic-sdk").await;
    // The SDK appends /v1/messages to the base URL.
    let stdout = crate::common::run_sdk_script("anthropic_client.py", app.url(""), &[secret]).await;
    for line in [
        "message ",
        "cut max_tokens",
        "bad request",
        "not found not_found_error",
        "unauthorized authentication_error",
        "stream ",
        "tools plain",
        "tools streamed",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
}

/// A tool round trip through /v1/messages to an Anthropic upstream: the client's `tool_use` and
/// `tool_result` blocks reach it as Anthropic blocks again, and its `tool_use` answer comes back
/// as one (the same id, the input as an object).
#[tokio::test]
async fn a_tool_round_trip_reaches_an_anthropic_upstream_in_its_format() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_up", "type": "message", "role": "assistant", "model": "a-model",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_up", "name": "get_weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 9}
        })))
        .mount(&server)
        .await;
    let catalog = crate::common::upstream_catalog("capabilities = [\"chat\", \"tools\"]\n");
    let app = crate::common::spawn_with_upstream(&catalog, &server.uri()).await;
    let tool = json!({"name": "get_weather", "description": "Weather",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let resp = messages(
        &app,
        json!({ "model": "a-model", "max_tokens": 100, "tools": [tool],
                "tool_choice": {"type": "tool", "name": "get_weather"},
                "messages": [
                    {"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4C"},
                        {"type": "text", "text": "And tomorrow?"}]}
                ] }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["stop_reason"], "tool_use", "{body}");
    assert_eq!(
        body["content"][0],
        json!({"type": "text", "text": "Let me check."})
    );
    assert_eq!(
        body["content"][1],
        json!({"type": "tool_use", "id": "toolu_up", "name": "get_weather", "input": {"city": "Oslo"}})
    );
    let sent: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["tools"][0]["name"], "get_weather", "{sent}");
    assert_eq!(
        sent["tools"][0]["input_schema"], tool["input_schema"],
        "{sent}"
    );
    assert_eq!(sent["tool_choice"]["type"], "tool", "{sent}");
    assert_eq!(sent["tool_choice"]["name"], "get_weather", "{sent}");
    let turns = sent["messages"].as_array().unwrap();
    let blocks: Vec<&Value> = turns
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .collect();
    let used = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(used["id"], "toolu_1", "{sent}");
    assert_eq!(used["input"], json!({"city": "Oslo"}), "{sent}");
    let result = blocks.iter().find(|b| b["type"] == "tool_result").unwrap();
    assert_eq!(result["tool_use_id"], "toolu_1", "{sent}");
    assert!(sent.to_string().contains("And tomorrow?"), "{sent}");
}

/// `count_tokens` estimates the input of a Messages request, validated like `/v1/messages`.
#[tokio::test]
async fn count_tokens_estimates_the_input() {
    let app = TestApp::spawn().await;
    let short = json!({ "model": "auto", "messages": [{"role": "user", "content": "Hi"}] });
    let long = json!({ "model": "auto", "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me about the history of Lima. ".repeat(40)}] });
    let count = |body: Value| {
        let app = &app;
        async move {
            let resp = app.post_json("/v1/messages/count_tokens", &body).await;
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            v["input_tokens"].as_i64().unwrap()
        }
    };
    let (s, l) = (count(short).await, count(long).await);
    assert!((1..10).contains(&s), "{s}");
    assert!((300..500).contains(&l), "{l}");
    let bad = app
        .post_json(
            "/v1/messages/count_tokens",
            &json!({ "model": "auto", "messages": [] }),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["type"], "error", "{err}");
}
