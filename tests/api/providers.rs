//! Each wire format against a wiremock server: our requests match the provider's real format
//! (path, headers, body shape), answers are parsed, and failures are classified.

use std::time::Duration;

use optimizer::providers::{CompletionRequest, ErrorKind, Message, ProviderId, Providers, Role};
use serde_json::json;
use wiremock::matchers::{body_json, body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        system: Some("Be brief.".into()),
        messages: vec![
            Message::text(Role::User, "Hi"),
            Message::text(Role::Assistant, "Hello!"),
            Message::text(Role::User, "What is 2+2?"),
        ],
        max_tokens: 64,
        temperature: Some(0.0),
        top_p: Some(0.9),
        stop: vec!["END".into()],
        tools: Vec::new(),
        tool_choice: None,
        response_format: None,
    }
}

/// Providers configured from real settings, pointed at `server`.
fn providers(server: &MockServer, extra: &[(&str, &str)]) -> Providers {
    let uri = server.uri();
    let mut vars = vec![
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("ANTHROPIC_BASE_URL", uri.as_str()),
        ("GOOGLE_API_KEY", "g-test"),
        ("GEMINI_BASE_URL", uri.as_str()),
        ("OPENROUTER_API_KEY", "or-test"),
        ("OPENROUTER_BASE_URL", uri.as_str()),
        ("OPENROUTER_REFERER", "https://example.test/app"),
        ("OPENROUTER_TITLE", "Optimizer Tests"),
        ("OPENAI_COMPAT_BASE_URL", uri.as_str()),
        ("PROVIDER_TIMEOUT_SECS", "2"),
    ];
    vars.extend_from_slice(extra);
    optimizer::wiring::build_providers(&crate::common::settings_with(&vars)).unwrap()
}

#[tokio::test]
async fn anthropic_messages_wire_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"}
            ],
            "temperature": 0.0,
            "top_p": 0.9,
            "stop_sequences": ["END"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "4"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 21, "output_tokens": 2}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = providers(&server, &[])
        .complete(ProviderId::Anthropic, &request("claude-haiku-4-5"))
        .await
        .unwrap();
    assert_eq!(answer.text, "4");
    assert_eq!((answer.input_tokens, answer.output_tokens), (21, 2));
    assert_eq!(answer.model, "claude-haiku-4-5-20251001");
}

#[tokio::test]
async fn gemini_generate_content_wire_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", "g-test"))
        .and(body_json(json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello!"}]},
                {"role": "user", "parts": [{"text": "What is 2+2?"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 64, "temperature": 0.0, "topP": 0.9,
                                 "stopSequences": ["END"]}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{
                "content": {"parts": [{"text": "4"}], "role": "model"},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1,
                              "thoughtsTokenCount": 30, "totalTokenCount": 43},
            "modelVersion": "gemini-2.5-flash"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = providers(&server, &[])
        .complete(ProviderId::Gemini, &request("gemini-2.5-flash"))
        .await
        .unwrap();
    assert_eq!(answer.text, "4");
    // Thinking tokens are billed as output.
    assert_eq!((answer.input_tokens, answer.output_tokens), (12, 31));
}

fn openai_body(model: &str, with_usage: bool) -> serde_json::Value {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is 2+2?"}
        ],
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop": ["END"]
    });
    if with_usage {
        body["usage"] = json!({"include": true});
    }
    body
}

#[tokio::test]
async fn openrouter_wire_format_with_attribution_and_reported_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", "Bearer or-test"))
        .and(header("HTTP-Referer", "https://example.test/app"))
        .and(header("X-Title", "Optimizer Tests"))
        .and(body_json(openai_body("openai/gpt-4o-mini", true)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "gen-1", "object": "chat.completion", "model": "openai/gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21,
                      "cost": 0.0000036}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = providers(&server, &[])
        .complete(ProviderId::Openrouter, &request("openai/gpt-4o-mini"))
        .await
        .unwrap();
    assert_eq!(answer.text, "4");
    assert_eq!(answer.reported_cost_usd, Some(0.0000036));
}

#[tokio::test]
async fn local_openai_compatible_server_gets_the_plain_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_json(openai_body("llama3.1:8b", false)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llama3.1:8b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = providers(&server, &[])
        .complete(ProviderId::OpenaiCompat, &request("llama3.1:8b"))
        .await
        .unwrap();
    assert_eq!(answer.text, "4");
    assert_eq!(answer.reported_cost_usd, None);
    // No key configured: no Authorization header at all.
    let received = server.received_requests().await.unwrap();
    assert!(received[0].headers.get("authorization").is_none());
}

async fn failing(
    status: u16,
    kind: &str,
    extra: &[(&str, &str)],
) -> optimizer::providers::ProviderError {
    let server = MockServer::start().await;
    let body = json!({"type": "error", "error": {"type": kind, "message": "boom"}});
    let mut template = ResponseTemplate::new(status).set_body_json(body);
    if status == 429 {
        template = template.insert_header("retry-after", "7");
    }
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    providers(&server, extra)
        .complete(ProviderId::Anthropic, &request("claude-haiku-4-5"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn failures_are_classified() {
    let e = failing(429, "rate_limit_error", &[]).await;
    assert_eq!(
        (e.kind, e.status, e.retry_after),
        (
            ErrorKind::Retryable,
            Some(429),
            Some(Duration::from_secs(7))
        )
    );
    assert!(e.message.contains("rate_limit_error: boom"), "{e}");
    for (status, kind, want) in [
        (529, "overloaded_error", ErrorKind::Retryable),
        (500, "api_error", ErrorKind::Retryable),
        (401, "authentication_error", ErrorKind::ModelUnavailable),
        (403, "permission_error", ErrorKind::ModelUnavailable),
        (400, "invalid_request_error", ErrorKind::Permanent),
        (404, "not_found_error", ErrorKind::ModelUnavailable),
    ] {
        let e = failing(status, kind, &[]).await;
        assert_eq!((e.kind, e.status), (want, Some(status)), "{e}");
        assert!(!e.message.contains("sk-ant-test"));
    }
}

#[tokio::test]
async fn malformed_json_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"content\": [oops"))
        .mount(&server)
        .await;
    let e = providers(&server, &[])
        .complete(ProviderId::Anthropic, &request("claude-haiku-4-5"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(e.message.contains("malformed"), "{e}");
}

#[tokio::test]
async fn timeouts_are_retryable_and_per_provider() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let p = providers(&server, &[("ANTHROPIC_TIMEOUT_SECS", "1")]);
    let started = std::time::Instant::now();
    let e = p
        .complete(ProviderId::Anthropic, &request("claude-haiku-4-5"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert_eq!(e.message, "timed out");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn refusals_are_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [], "stop_reason": "refusal",
            "usage": {"input_tokens": 5, "output_tokens": 0}
        })))
        .mount(&server)
        .await;
    let e = providers(&server, &[])
        .complete(ProviderId::Anthropic, &request("claude-haiku-4-5"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("refus"), "{e}");
}

/// A server answering one request with an SSE stream of `pieces` chat chunks, one every
/// `gap` (then `[DONE]`), or stalling after the first piece when `stall`.
async fn slow_stream(pieces: usize, gap: Duration, stall: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut buf).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        for i in 0..pieces {
            let chunk = json!({"model": "m", "choices": [{"index": 0, "delta": {"content": format!("w{i} ")}}]});
            let _ = socket
                .write_all(format!("data: {chunk}\n\n").as_bytes())
                .await;
            if stall && i == 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            tokio::time::sleep(gap).await;
        }
        let _ = socket.write_all(b"data: [DONE]\n\n").await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_is_not_cut_but_a_stalled_one_is() {
    let stream_providers = |base: String| {
        optimizer::wiring::build_providers(&crate::common::settings_with(&[
            ("OPENAI_COMPAT_BASE_URL", base.as_str()),
            ("PROVIDER_TIMEOUT_SECS", "1"),
        ]))
        .unwrap()
    };
    // 8 pieces 300 ms apart: 2.4 s in all, past the 1 s timeout, never idle for 1 s.
    let providers = stream_providers(slow_stream(8, Duration::from_millis(300), false).await);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = providers
        .complete_streaming(ProviderId::OpenaiCompat, &request("m"), Some(&tx))
        .await
        .unwrap();
    assert_eq!(answer.text.split_whitespace().count(), 8, "{}", answer.text);
    // The first piece, then silence: cut after the 1 s idle limit, as a retryable error.
    let providers = stream_providers(slow_stream(3, Duration::ZERO, true).await);
    let error = providers
        .complete_streaming(ProviderId::OpenaiCompat, &request("m"), Some(&tx))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
}

/// Each provider's own reason for ending, in OpenAI's words: an answer cut at `max_tokens` is
/// `length` everywhere, never `stop`.
#[tokio::test]
async fn finish_reasons_are_mapped_from_each_provider_s_wire_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "The answer is"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 21, "output_tokens": 64}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "The answer is"}], "role": "model"},
                            "finishReason": "MAX_TOKENS", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 64}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "local-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is"},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 64, "total_tokens": 84}
        })))
        .mount(&server)
        .await;
    let providers = providers(&server, &[]);
    for (provider, model) in [
        (ProviderId::Anthropic, "claude-haiku-4-5"),
        (ProviderId::Gemini, "gemini-2.5-flash"),
        (ProviderId::OpenaiCompat, "local-model"),
    ] {
        let answer = providers.complete(provider, &request(model)).await.unwrap();
        assert_eq!(
            answer.finish_reason.as_deref(),
            Some("length"),
            "{provider}"
        );
    }
    for (raw, ours) in [
        (Some("end_turn"), "stop"),
        (Some("stop_sequence"), "stop"),
        (Some("STOP"), "stop"),
        (None, "stop"),
        (Some("tool_use"), "tool_calls"),
        (Some("SAFETY"), "content_filter"),
        (Some("content_filter"), "content_filter"),
    ] {
        assert_eq!(optimizer::providers::finish_reason(raw), ours, "{raw:?}");
    }
}

/// A tool round trip as each provider's history: the user's question, the assistant's two
/// parallel calls, both results; one tool offered, one required.
fn tool_request(model: &str) -> CompletionRequest {
    use optimizer::providers::{Tool, ToolCall, ToolChoice};
    let call = |id: &str, city: &str| ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: json!({ "city": city }).to_string(),
    };
    let result = |id: &str, text: &str| Message {
        tool_call_id: Some(id.into()),
        ..Message::text(Role::Tool, text)
    };
    CompletionRequest {
        model: model.into(),
        system: None,
        messages: vec![
            Message::text(Role::User, "Weather in Paris and Rome?"),
            Message {
                tool_calls: vec![call("call_1", "Paris"), call("call_2", "Rome")],
                ..Message::text(Role::Assistant, "")
            },
            result("call_1", "18C"),
            result("call_2", "21C"),
        ],
        max_tokens: 64,
        temperature: None,
        top_p: None,
        stop: Vec::new(),
        tools: vec![Tool {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: weather_schema(),
        }],
        tool_choice: Some(ToolChoice::Required),
        response_format: None,
    }
}

fn weather_schema() -> serde_json::Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The call every provider answers with, in OpenAI's form.
fn expected_call(answer: &optimizer::providers::Completion, id: &str) {
    assert_eq!(answer.tool_calls.len(), 1, "{:?}", answer.tool_calls);
    let call = &answer.tool_calls[0];
    assert_eq!((call.id.as_str(), call.name.as_str()), (id, "get_weather"));
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn anthropic_tool_use_wire_format() {
    let server = MockServer::start().await;
    let expected = json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "Current weather",
                   "input_schema": weather_schema()}],
        "tool_choice": {"type": "any"}
    });
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_json(expected.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_03", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [
                {"type": "text", "text": "Checking Oslo too."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 80, "output_tokens": 20}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut streamed = expected;
    streamed["stream"] = json!(true);
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_04", "type": "message",
            "role": "assistant", "model": "claude-haiku-4-5", "content": [],
            "stop_reason": null, "usage": {"input_tokens": 80, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Os"}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "lo\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ];
    let sse: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    mount_stream(&server, "/v1/messages", streamed, sse).await;
    let request = tool_request("claude-haiku-4-5");
    let providers = providers(&server, &[]);
    let answer = both_answers(
        &providers,
        ProviderId::Anthropic,
        &request,
        ["toolu_01", "toolu_02"],
    )
    .await;
    assert_eq!(answer.text, "Checking Oslo too.");
}

#[tokio::test]
async fn gemini_function_calling_wire_format() {
    let server = MockServer::start().await;
    // Gemini pairs results with calls by name and order: our ids are not sent.
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(body_json(json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}}
                ]}
            ],
            "generationConfig": {"maxOutputTokens": 64},
            "tools": [{"functionDeclarations": [{"name": "get_weather",
                "description": "Current weather", "parametersJsonSchema": weather_schema()}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{
                "content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}],
                            "role": "model"},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 8},
            "modelVersion": "gemini-2.5-flash"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = providers(&server, &[])
        .complete(ProviderId::Gemini, &tool_request("gemini-2.5-flash"))
        .await
        .unwrap();
    // Gemini gives no id: one is made up, unique within the answer.
    expected_call(&answer, "call_0");
}

#[tokio::test]
async fn openai_tools_pass_through_wire_format() {
    let server = MockServer::start().await;
    let expected = json!({
        "model": "local-model",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "21C"}
        ],
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Current weather", "parameters": weather_schema()}}],
        "tool_choice": "required"
    });
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_json(expected.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-3", "object": "chat.completion", "model": "local-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_9", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut streamed = expected;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = [
        json!({"id": "c", "model": "local-model", "choices": [{"index": 0, "delta": {"role": "assistant",
            "content": null, "tool_calls": [{"index": 0, "id": "call_8", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": null}]}),
        json!({"id": "c", "model": "local-model", "choices": [{"index": 0, "delta": {
            "tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}, "finish_reason": null}]}),
        json!({"id": "c", "model": "local-model", "choices": [{"index": 0, "delta": {
            "tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}, "finish_reason": null}]}),
        json!({"id": "c", "model": "local-model", "choices": [{"index": 0, "delta": {},
            "finish_reason": "tool_calls"}]}),
        json!({"id": "c", "model": "local-model", "choices": [],
            "usage": {"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70}}),
    ];
    let mut sse: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    sse.push_str("data: [DONE]\n\n");
    mount_stream(&server, "/chat/completions", streamed, sse).await;
    let request = tool_request("local-model");
    let providers = providers(&server, &[]);
    both_answers(
        &providers,
        ProviderId::OpenaiCompat,
        &request,
        ["call_9", "call_8"],
    )
    .await;
}

/// Mounts an SSE answer for the streamed request `body` at `endpoint`.
async fn mount_stream(server: &MockServer, endpoint: &str, body: serde_json::Value, sse: String) {
    Mock::given(method("POST"))
        .and(path(endpoint))
        .and(body_json(body))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .expect(1)
        .mount(server)
        .await;
}

/// The plain then the streamed answer to `request`, each checked for its expected call.
async fn both_answers(
    providers: &Providers,
    provider: ProviderId,
    request: &CompletionRequest,
    ids: [&str; 2],
) -> optimizer::providers::Completion {
    let answer = providers.complete(provider, request).await.unwrap();
    expected_call(&answer, ids[0]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let streamed = providers
        .complete_streaming(provider, request, Some(&tx))
        .await
        .unwrap();
    expected_call(&streamed, ids[1]);
    answer
}

/// JSON output in each provider's own terms: OpenAI's `response_format`, Gemini's
/// `responseMimeType` + `responseJsonSchema`, Anthropic's forced tool whose input is the answer
/// (turned back into the answer's text).
#[tokio::test]
async fn structured_output_wire_formats() {
    use optimizer::providers::ResponseFormat;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
    let mut request = request("m");
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "sum".into(),
        schema: schema.clone(),
        strict: true,
    });
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_partial_json(json!({
            "tools": [{"name": "json_answer", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": "json_answer"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_05", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "json_answer", "input": {"answer": 4}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 9}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(body_partial_json(json!({"generationConfig": {
            "responseMimeType": "application/json", "responseJsonSchema": schema}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "{\"answer\": 4}"}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_partial_json(
            json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "sum", "schema": schema, "strict": true}}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-5", "object": "chat.completion", "model": "local-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"answer\":4}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let providers = providers(&server, &[]);
    for (provider, model) in [
        (ProviderId::Anthropic, "claude-haiku-4-5"),
        (ProviderId::Gemini, "gemini-2.5-flash"),
        (ProviderId::OpenaiCompat, "local-model"),
    ] {
        request.model = model.into();
        let answer = providers.complete(provider, &request).await.unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&answer.text).unwrap();
        assert_eq!(parsed, json!({"answer": 4}), "{provider}");
        assert!(answer.tool_calls.is_empty(), "{provider}");
        assert_eq!(answer.finish_reason.as_deref(), Some("stop"), "{provider}");
    }
}
