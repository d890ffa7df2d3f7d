//! Each wire format against a wiremock server: our requests match the provider's real format
//! (path, headers, body shape), answers are parsed, and failures are classified.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use std::time::Duration;

use optimizer::providers::{CompletionRequest, ErrorKind, Message, ProviderId, Providers, Role};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.into(),
        system: Some("Be brief.".into()),
        messages: vec![
            Message {
                role: Role::User,
                content: "Hi".into(),
            },
            Message {
                role: Role::Assistant,
                content: "Hello!".into(),
            },
            Message {
                role: Role::User,
                content: "What is 2+2?".into(),
            },
        ],
        max_tokens: 64,
        temperature: Some(0.0),
        top_p: Some(0.9),
        stop: vec!["END".into()],
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
    optimizer::wiring::build_providers(&common::settings_with(&vars)).unwrap()
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
        (401, "authentication_error", ErrorKind::Permanent),
        (403, "permission_error", ErrorKind::Permanent),
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
        optimizer::wiring::build_providers(&common::settings_with(&[
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
