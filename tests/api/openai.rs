//! The OpenAI-compatible API: the chat.completion shape and headers, multi-turn conversations
//! in each provider's wire format, OpenAI-shaped errors, API keys, and the official Python SDK.

use crate::common::{TestApp, TestDb};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONVERSATION: &str = r#"[
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
]"#;

async fn chat(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/chat/completions", &body).await
}

#[tokio::test]
async fn chat_completions_answer_in_openai_shape_and_can_be_rated() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let messages: Value = serde_json::from_str(CONVERSATION).unwrap();
    let resp = chat(
        &app,
        json!({ "model": "auto", "messages": messages, "temperature": 0,
                                   "top_p": 1, "metadata": {"x": 1}, "seed": 7, "store": false,
                 "logprobs": false, "tool_choice": "none", "frequency_penalty": 0,
                 "response_format": {"type": "text"}, "tools": [], "user": null }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let id = body["id"].as_str().unwrap();
    assert_eq!(h["x-optimizer-request-id"], id);
    assert_eq!(h["x-optimizer-provider"], "simulated");
    assert_eq!(h["x-optimizer-pattern"], "math");
    assert!(h.contains_key("x-optimizer-cost-usd") && h.contains_key("x-optimizer-savings-usd"));
    assert_eq!(body["model"], h["x-optimizer-model"].to_str().unwrap());
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_i64().unwrap(),
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap()
    );
    // The id is a request id: it can be rated.
    let rated = app
        .post_json(
            "/feedback",
            &json!({ "request_id": id, "quality_score": 5, "is_correct": true }),
        )
        .await;
    assert_eq!(rated.status(), 201);

    // auto:quality picks the premium model; a catalog id pins it.
    let q: Value = chat(
        &app,
        json!({ "model": "auto:quality", "messages": [{"role": "user", "content": "hi"}] }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(q["model"], "sim-premium");
    let pinned: Value = chat(&app, json!({ "model": "simulated/sim-standard", "messages": [{"role": "user", "content": "hi"}] }))
        .await.json().await.unwrap();
    assert_eq!(pinned["model"], "sim-standard");

    let models: Value = app.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"auto") && ids.contains(&"auto:cost") && ids.contains(&"sim-lite"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"claude-haiku-4-5"),
        "unconfigured providers are not listed"
    );
}

#[tokio::test]
async fn errors_have_openai_shape_on_every_v1_route() {
    let app = TestApp::spawn().await;
    for (body, status, param) in [
        (
            json!({ "model": "auto", "messages": [] }),
            400,
            Some("messages"),
        ),
        (json!({ "model": "auto" }), 400, None),
        (
            json!({ "model": "gpt-17", "messages": [{"role": "user", "content": "hi"}] }),
            404,
            Some("model"),
        ),
        (
            json!({ "model": "auto:fastest", "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("model"),
        ),
        (
            json!({ "model": "auto", "messages": [{"role": "assistant", "content": "hi"}] }),
            400,
            Some("messages"),
        ),
        (
            json!({ "model": "auto", "temperature": 9, "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("temperature"),
        ),
        // Tools, checked as OpenAI does.
        (
            json!({ "model": "auto", "tools": [{"type": "retrieval"}],
                    "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("tools[0].type"),
        ),
        (
            json!({ "model": "auto", "tools": [{"type": "function", "function": {"name": "no spaces"}}],
                    "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("tools[0].function.name"),
        ),
        (
            json!({ "model": "auto", "tool_choice": "required",
                    "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("tool_choice"),
        ),
        (
            json!({ "model": "auto", "tools": [weather_tool()],
                    "tool_choice": {"type": "function", "function": {"name": "get_time"}},
                    "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("tool_choice"),
        ),
        (
            json!({ "model": "auto", "tools": [weather_tool()], "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_x", "content": "18C"}] }),
            400,
            Some("messages[1].tool_call_id"),
        ),
        (
            json!({ "model": "auto", "tools": [weather_tool()], "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_weather"}}]}] }),
            400,
            Some("messages[1].tool_calls[0]"),
        ),
        (
            json!({ "model": "auto", "tools": [weather_tool()], "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "c1",
                    "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}] }),
            400,
            Some("messages"),
        ),
        // A model whose catalog entry lacks the capability is not sent tools.
        (
            json!({ "model": "sim-lite", "tools": [weather_tool()],
                    "messages": [{"role": "user", "content": "hi"}] }),
            400,
            Some("tools"),
        ),
    ]
    .into_iter()
    .chain(
        // Fields that would change the answer and that the gateway cannot honour: refused,
        // naming the field — never silently dropped.
        [
            ("functions", json!([{"name": "f", "parameters": {}}])),
            ("function_call", json!("auto")),
            ("response_format", json!({"type": "xml"})),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("frequency_penalty", json!(0.5)),
            ("logit_bias", json!({"50256": -100})),
            ("modalities", json!(["text", "audio"])),
            ("reasoning_effort", json!("high")),
            ("unknown_field", json!(true)),
        ]
        .into_iter()
        .map(|(field, value)| {
            let mut body = json!({ "model": "auto", "messages": [{"role": "user", "content": "hi"}] });
            body[field] = value;
            (body, 400, Some(field))
        }),
    ) {
        let resp = chat(&app, body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        let e = &err["error"];
        assert!(e["message"].is_string() && e["type"].is_string(), "{err}");
        assert!(
            e.as_object().unwrap().contains_key("param")
                && e.as_object().unwrap().contains_key("code")
        );
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{err}");
            if !["messages", "model", "temperature", "tool_choice"].contains(&p)
                && !p.starts_with("tools[")
                && !p.starts_with("messages[")
            {
                assert!(e["message"].as_str().unwrap().contains(p), "{err}");
            }
        }
    }
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .body("{oops")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let resp = app.get("/v1/embeddings").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_url"
    );
}

#[tokio::test]
async fn api_keys_guard_v1_and_complete_and_own_the_request() {
    let app = TestApp::spawn_with_workers(
        TestDb::migrated().await,
        &[("API_KEYS", "alice:sk-alice-123,bob:sk-bob-456")],
    )
    .await;
    let body = json!({ "model": "auto", "messages": [{"role": "user", "content": "hi"}] });
    let resp = chat(&app, body.clone()).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    let resp = app.post_json("/complete", &json!({ "prompt": "hi" })).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );

    let ok: Value = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-bob-456")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The bootstrap key's id owns the request; `user` stays the end user's (none here).
    let (owner, user): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT api_key_id, user_id FROM requests WHERE request_id = $1")
            .bind(ok["id"].as_str().unwrap())
            .fetch_one(&app.test_db.pool().await)
            .await
            .unwrap();
    assert_eq!(owner.as_deref(), Some("bob"));
    assert_eq!(user, None);
    let resp = app
        .client
        .post(app.url("/complete"))
        .bearer_auth("sk-alice-123")
        .json(&json!({ "prompt": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // /health stays open.
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn conversations_reach_each_provider_in_its_own_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_partial_json(json!({
            "system": "Be brief.",
            "top_p": 0.5,
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"}
            ]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "4 (anthropic)"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 20, "output_tokens": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/g-model:generateContent"))
        .and(body_partial_json(json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"topP": 0.5, "stopSequences": ["END"]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello!"}]},
                {"role": "user", "parts": [{"text": "What is 2+2?"}]}
            ]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "4 (gemini)"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_partial_json(json!({
            "top_p": 0.5,
            "stop": ["END"],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"}
            ]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "model": "o-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4 (openrouter)"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let catalog = crate::common::upstream_catalog("");
    let app = crate::common::spawn_with_upstream(&catalog, &server.uri()).await;
    let messages: Value = serde_json::from_str(CONVERSATION).unwrap();
    for (model, answer) in [
        ("a-model", "4 (anthropic)"),
        ("g-model", "4 (gemini)"),
        ("o-model", "4 (openrouter)"),
    ] {
        let resp = chat(
            &app,
            json!({ "model": model, "messages": messages, "top_p": 0.5, "stop": "END" }),
        )
        .await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], answer);
        assert_eq!(body["usage"]["prompt_tokens"], 20);
    }
}

/// The README's SDK examples, verbatim but for the address, against a fresh install (no API key
/// exists, the SDKs send one anyway).
#[tokio::test]
async fn the_readme_sdk_examples_run_verbatim_on_a_fresh_install() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let examples: Vec<String> = ["OpenAI(", "anthropic.Anthropic("]
        .iter()
        .flat_map(|marker| crate::common::readme_python_examples(marker))
        .collect();
    assert!(examples.len() >= 2, "{examples:?}");
    for code in examples {
        assert!(code.contains("http://localhost:8000"), "{code}");
        let code = code.replace("http://localhost:8000", &app.url(""));
        let stdout = crate::common::run_python(code.clone()).await;
        assert!(stdout.contains("[simulated "), "{code}\n{stdout}");
    }
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_against_the_server() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", "sdk-admin")])
            .await;
    // A key made through the admin API, as a user would.
    let secret = crate::common::create_key(&app, "sdk-admin", "sdk").await;
    let stdout = crate::common::run_sdk_script("openai_client.py", app.url("/v1"), &[secret]).await;
    assert!(
        stdout.contains("completion ") && stdout.contains("bad request messages"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not found model_not_found")
            && stdout.contains("models ")
            && stdout.contains("tools call_"),
        "{stdout}"
    );
}

/// An answer cut at `max_tokens` says so (`length`) — in the chat completion, in the stream's
/// last chunk, in `/complete` and in `GET /requests/{id}`; a complete one says `stop`.
#[tokio::test]
async fn an_answer_cut_at_max_tokens_finishes_with_length_everywhere() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let short = json!({ "model": "auto", "max_tokens": 14,
                        "messages": [{"role": "user", "content": "Tell me about rivers"}] });
    let body: Value = chat(&app, short.clone()).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    let id = body["id"].as_str().unwrap();
    let stored: Value = app
        .get(&format!("/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["finish_reason"], "length", "{stored}");

    let mut streamed = short.clone();
    streamed["stream"] = json!(true);
    let text = chat(&app, streamed).await.text().await.unwrap();
    let reasons: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, vec![json!("length")], "{text}");

    let done: Value = app
        .post_json(
            "/complete",
            &json!({ "prompt": "Tell me about lakes", "max_tokens": 14 }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["finish_reason"], "length", "{done}");
    let full: Value = app
        .post_json("/complete", &json!({ "prompt": "Tell me about seas" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["finish_reason"], "stop", "{full}");
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

/// Data lines of an SSE body, parsed.
fn sse_chunks(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect()
}

/// A tool round trip through the gateway, streamed and not: the model calls the tool
/// (`finish_reason` `tool_calls`, `content` null), the client sends the result back, the model
/// answers; only models whose catalog capabilities include tools are routed to; the calls are
/// stored with the request.
#[tokio::test]
async fn tool_calls_round_trip_streamed_and_not() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let question = json!({"role": "user", "content": "What is the weather in Oslo?"});
    // auto:cost would pick sim-lite, which cannot call tools.
    let asked = json!({ "model": "auto:cost", "tools": [weather_tool()], "tool_choice": "required",
                        "messages": [question] });
    let resp = chat(&app, asked.clone()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null(), "{body}");
    assert_ne!(body["model"], "sim-lite", "{body}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    let call = &calls[0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    let stored: Value = app
        .get(&format!("/requests/{}", body["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["finish_reason"], "tool_calls", "{stored}");
    assert_eq!(stored["tool_calls"][0]["id"], call["id"], "{stored}");

    // The result goes back; the model answers in text.
    let answered = json!({ "model": "auto:cost", "tools": [weather_tool()], "messages": [
        question,
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 4}"}
    ]});
    let body: Value = chat(&app, answered).await.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop", "{body}");
    assert!(
        choice["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("[simulated "),
        "{body}"
    );
    assert!(choice["message"].get("tool_calls").is_none(), "{body}");
    assert_ne!(body["model"], "sim-lite", "{body}");

    // Streamed: the call arrives as a tool_calls delta before the last chunk.
    let mut streamed = asked;
    streamed["stream"] = json!(true);
    streamed["messages"][0]["content"] = json!("And the weather in Bergen?");
    let text = chat(&app, streamed).await.text().await.unwrap();
    let chunks = sse_chunks(&text);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 1, "{text}");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "get_weather", "{text}");
    assert!(
        deltas[0]["id"].as_str().unwrap().starts_with("call_"),
        "{text}"
    );
    let reasons: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, vec![&json!("tool_calls")], "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

/// `response_format`: json_schema and json_object answers are JSON (the simulated provider
/// fills the schema's properties), in the chat completion and in the stream; a schema without a
/// valid name, or JSON output together with tools, is a 400 naming the field.
#[tokio::test]
async fn structured_output_answers_in_json() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"},
        "population": {"type": "integer"}}, "required": ["city", "population"]});
    let asked = json!({ "model": "auto", "messages": [{"role": "user", "content": "Largest city of Peru?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}} });
    let body: Value = chat(&app, asked.clone()).await.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let answer: Value = serde_json::from_str(content).unwrap();
    assert!(
        answer["city"].is_string() && answer["population"] == 1,
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let mut streamed = asked;
    streamed["stream"] = json!(true);
    streamed["messages"][0]["content"] = json!("Largest city of Chile?");
    let text = chat(&app, streamed).await.text().await.unwrap();
    let joined: String = sse_chunks(&text)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let answer: Value = serde_json::from_str(&joined).unwrap();
    assert!(answer["city"].is_string(), "{text}");
    let body: Value = chat(
        &app,
        json!({ "model": "auto", "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "Say hi as JSON"}] }),
    )
    .await
    .json()
    .await
    .unwrap();
    let answer: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(answer.is_object(), "{body}");
    for (bad, param) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "ok", "schema": 3}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let resp = chat(
            &app,
            json!({ "model": "auto", "response_format": bad,
            "messages": [{"role": "user", "content": "hi"}] }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    let resp = chat(
        &app,
        json!({ "model": "auto", "response_format": {"type": "json_object"},
        "tools": [weather_tool()], "messages": [{"role": "user", "content": "hi"}] }),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["param"],
        "response_format"
    );
}

/// Prompt-cache usage each provider reports (Anthropic `cache_read_input_tokens` and
/// `cache_creation_input_tokens`, Gemini `cachedContentTokenCount`, OpenAI-format
/// `prompt_tokens_details.cached_tokens`) is priced at the catalog's cache rates, stored, and
/// shown: `prompt_tokens_details.cached_tokens` here, `cache_read_input_tokens` on
/// /v1/messages, `tokens.cached_input` in `GET /requests/{id}`.
#[tokio::test]
async fn cached_prompt_tokens_are_priced_at_the_cached_rate() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "a-model",
            "content": [{"type": "text", "text": "cached (anthropic)"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 100, "cache_read_input_tokens": 800,
                      "cache_creation_input_tokens": 100, "output_tokens": 50}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/g-model:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "cached (gemini)"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 800, "candidatesTokenCount": 50}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "model": "o-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached (openrouter)"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                      "prompt_tokens_details": {"cached_tokens": 800}}
        })))
        .mount(&server)
        .await;
    // $1/M input, $0.10/M cache reads, $1.25/M cache writes, $5/M output.
    let catalog = crate::common::upstream_catalog(
        "cached_input_usd_per_mtok = 0.1\ncache_write_usd_per_mtok = 1.25\n",
    );
    let app = crate::common::spawn_with_upstream(&catalog, &server.uri()).await;
    // 100 fresh + 800 read + 100 written + 50 out; Gemini and OpenAI report no writes.
    let anthropic_cost = (100.0 * 1.0 + 800.0 * 0.1 + 100.0 * 1.25 + 50.0 * 5.0) / 1e6;
    let read_only_cost = (200.0 * 1.0 + 800.0 * 0.1 + 50.0 * 5.0) / 1e6;
    for (model, cost) in [
        ("a-model", anthropic_cost),
        ("g-model", read_only_cost),
        ("o-model", read_only_cost),
    ] {
        let resp = chat(
            &app,
            json!({ "model": model, "messages": [{"role": "user", "content": "Summarise the cached manual"}] }),
        )
        .await;
        assert_eq!(resp.status(), 200, "{model}");
        let charged: f64 = resp.headers()["x-optimizer-cost-usd"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["usage"]["prompt_tokens"], 1000, "{model}: {body}");
        assert_eq!(
            body["usage"]["prompt_tokens_details"]["cached_tokens"], 800,
            "{model}: {body}"
        );
        assert!(
            (charged - cost).abs() < 1e-8,
            "{model}: {charged} vs {cost}"
        );
        let stored: Value = app
            .get(&format!("/requests/{}", body["id"].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(stored["tokens"]["cached_input"], 800, "{stored}");
        assert!(
            (stored["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-8,
            "{stored}"
        );
    }
    // Anthropic's own usage shape on /v1/messages: input_tokens without the cached ones.
    let body: Value = app
        .post_json(
            "/v1/messages",
            &json!({ "model": "a-model", "max_tokens": 100,
                     "messages": [{"role": "user", "content": "Summarise the cached manual again"}] }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 800,
               "cache_creation_input_tokens": 100}),
        "{body}"
    );
}

/// Mounts, on `server`, answers for `endpoint` that call `get_weather` for Oslo or, once the
/// request carries the result (`result_marker`), answer "It is 4 degrees": plain JSON, and SSE
/// for requests that `stream_marker` matches.
async fn mount_tool_turns(
    server: &MockServer,
    endpoints: (&str, &str),
    result_marker: &str,
    answers: [Value; 2],
    streamed_answers: [String; 2],
) {
    use wiremock::matchers::body_string_contains;
    let [call, text] = answers;
    let [call_sse, text_sse] = streamed_answers;
    let sse = |body: String| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(body)
    };
    let (plain, stream) = endpoints;
    let streamed = |m: wiremock::MockBuilder| {
        if plain == stream {
            m.and(body_partial_json(json!({"stream": true})))
        } else {
            m
        }
    };
    streamed(Mock::given(method("POST")).and(path(stream)))
        .and(body_string_contains(result_marker))
        .respond_with(sse(text_sse))
        .with_priority(1)
        .mount(server)
        .await;
    streamed(Mock::given(method("POST")).and(path(stream)))
        .respond_with(sse(call_sse))
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(plain))
        .and(body_string_contains(result_marker))
        .respond_with(ResponseTemplate::new(200).set_body_json(text))
        .with_priority(3)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(plain))
        .respond_with(ResponseTemplate::new(200).set_body_json(call))
        .with_priority(4)
        .mount(server)
        .await;
}

/// `data:` lines (with Anthropic's `event:` names when `named`).
fn sse_of(events: &[Value], named: bool, done: bool) -> String {
    let mut out: String = events
        .iter()
        .map(|e| match (named, e["type"].as_str()) {
            (true, Some(t)) => format!("event: {t}\ndata: {e}\n\n"),
            _ => format!("data: {e}\n\n"),
        })
        .collect();
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

/// The issue's bar: the official OpenAI SDK completes a two-step tool conversation (the model
/// asks for the tool, the client answers, the model replies) through the router to each
/// provider's mock — Anthropic, Gemini, OpenRouter in their own wire formats — streamed and not.
#[tokio::test]
async fn the_official_openai_sdk_calls_tools_through_each_provider() {
    let server = MockServer::start().await;
    let usage = json!({"input_tokens": 30, "output_tokens": 9});
    // Anthropic: tool_use, then text; streamed as message events.
    let a_call = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "a-model",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "usage": usage});
    let a_text = json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "a-model",
        "content": [{"type": "text", "text": "It is 4 degrees in Oslo."}],
        "stop_reason": "end_turn", "usage": usage});
    let start = json!({"type": "message_start", "message": {"id": "msg_3", "type": "message",
        "role": "assistant", "model": "a-model", "content": [], "stop_reason": null,
        "usage": {"input_tokens": 30, "output_tokens": 1}}});
    let a_call_sse = sse_of(
        &[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta":
                {"type": "input_json_delta", "partial_json": "{\"city\": \"Oslo\"}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ],
        true,
        false,
    );
    let a_text_sse = sse_of(
        &[
            start,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "It is 4 "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "degrees in Oslo."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ],
        true,
        false,
    );
    mount_tool_turns(
        &server,
        ("/v1/messages", "/v1/messages"),
        "tool_result",
        [a_call, a_text],
        [a_call_sse, a_text_sse],
    )
    .await;
    // Gemini: functionCall, then text; streamed by streamGenerateContent.
    let g = |part: Value| {
        json!({"candidates": [{"content": {"parts": [part], "role": "model"}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 9}})
    };
    let g_call = g(json!({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}));
    let g_text = g(json!({"text": "It is 4 degrees in Oslo."}));
    mount_tool_turns(
        &server,
        (
            "/v1beta/models/g-model:generateContent",
            "/v1beta/models/g-model:streamGenerateContent",
        ),
        "functionResponse",
        [g_call.clone(), g_text.clone()],
        [
            sse_of(&[g_call], false, false),
            sse_of(&[g_text], false, false),
        ],
    )
    .await;
    // OpenRouter (OpenAI's format): tool_calls, then text.
    let o = |message: Value, reason: &str| {
        json!({"id": "x", "object": "chat.completion", "model": "o-model",
               "choices": [{"index": 0, "message": message, "finish_reason": reason}],
               "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}})
    };
    let call = json!({"id": "call_7", "type": "function",
                      "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}});
    let o_call = o(
        json!({"role": "assistant", "content": null, "tool_calls": [call]}),
        "tool_calls",
    );
    let o_text = o(
        json!({"role": "assistant", "content": "It is 4 degrees in Oslo."}),
        "stop",
    );
    let chunk = |delta: Value, reason: Value| json!({"id": "c", "model": "o-model", "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]});
    let o_call_sse = sse_of(
        &[
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_8", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
        ],
        false,
        true,
    );
    let o_text_sse = sse_of(
        &[
            chunk(
                json!({"role": "assistant", "content": "It is 4 "}),
                Value::Null,
            ),
            chunk(json!({"content": "degrees in Oslo."}), Value::Null),
            chunk(json!({}), json!("stop")),
        ],
        false,
        true,
    );
    mount_tool_turns(
        &server,
        ("/chat/completions", "/chat/completions"),
        "\"role\":\"tool\"",
        [o_call, o_text],
        [o_call_sse, o_text_sse],
    )
    .await;
    let catalog = crate::common::upstream_catalog("capabilities = [\"chat\", \"tools\"]\n");
    let app = crate::common::spawn_with_upstream(&catalog, &server.uri()).await;
    let args = [
        crate::common::UPSTREAM_ADMIN,
        "a-model",
        "g-model",
        "o-model",
    ]
    .map(String::from);
    let stdout = crate::common::run_sdk_script("openai_tools.py", app.url("/v1"), &args).await;
    assert_eq!(stdout.matches(" ok").count(), 6, "{stdout}");
}

/// `/v1/models` lists what the caller's key may use, and `/v1/models/{id}` retrieves one.
#[tokio::test]
async fn models_are_listed_and_retrieved_as_the_key_allows() {
    let app = TestApp::spawn_on(TestDb::migrated().await, &[("ADMIN_TOKEN", "adm")]).await;
    let created: Value = app
        .client
        .post(app.url("/admin/keys"))
        .bearer_auth("adm")
        .json(&json!({ "name": "narrow", "allowed_models": ["sim-lite"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let narrow = created["secret"].as_str().unwrap();
    let get = |path: &str, key: &str| app.client.get(app.url(path)).bearer_auth(key).send();
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all: Value = get("/v1/models", "adm")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ids(&all).contains(&"sim-premium".to_owned()), "{all}");
    let mine: Value = get("/v1/models", narrow)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = ids(&mine);
    assert!(mine.contains(&"sim-lite".to_owned()), "{mine:?}");
    assert!(!mine.contains(&"sim-premium".to_owned()), "{mine:?}");
    assert!(mine.contains(&"auto".to_owned()), "{mine:?}");

    let auto = get("/v1/models/auto", narrow).await.unwrap();
    assert_eq!(auto.status(), 200);
    let auto: Value = auto.json().await.unwrap();
    assert_eq!(auto["id"], "auto");
    assert_eq!(auto["object"], "model");
    let forbidden = get("/v1/models/sim-premium", narrow).await.unwrap();
    assert_eq!(forbidden.status(), 404);
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let premium = get("/v1/models/sim-premium", "adm").await.unwrap();
    assert_eq!(premium.status(), 200);
}
