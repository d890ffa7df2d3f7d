//! Hostile and unlucky input (issue 18): NUL characters, non-JSON error bodies, requests before
//! the schema exists, shutdown while clients wait, a wait that fails after the request was
//! accepted. Every answer is a 4xx/202/503 in the JSON shape, never a 500.

use std::time::Duration;

use crate::common::{TestApp, TestDb};
use serde_json::{Value, json};

fn is_json(r: &reqwest::Response) -> bool {
    r.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Status and JSON body; panics on a non-JSON answer.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert!(is_json(&r), "{status} is not JSON: {:?}", r.headers());
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn nul_characters_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    for (body, field) in [
        (json!({"prompt": "hello\u{0}world"}), "prompt"),
        (json!({"prompt": "hi", "system": "be\u{0}brief"}), "system"),
        (
            json!({"prompt": "hi", "session_id": "s\u{0}"}),
            "session_id",
        ),
        (json!({"prompt": "hi", "user_id": "\u{0}"}), "user_id"),
    ] {
        let (status, body) = answer(app.post_json("/complete", &body).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let chat = json!({"model": "auto", "messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c\u{0}"}]});
    let (status, body) = answer(app.post_json("/v1/chat/completions", &chat).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[2].content"),
        "{body}"
    );
    let stop = json!({"model": "auto", "messages": [{"role": "user", "content": "a"}],
        "stop": ["x\u{0}"], "user": "u"});
    let (status, _) = answer(app.post_json("/v1/chat/completions", &stop).await).await;
    assert_eq!(status, 400);
    for (body, field) in [
        (
            json!({"request_id": "r\u{0}", "quality_score": 5}),
            "request_id",
        ),
        (
            json!({"request_id": "r", "quality_score": 5, "comment": "\u{0}"}),
            "comment",
        ),
        (
            json!({"request_id": "r", "quality_score": 5, "user_id": "\u{0}"}),
            "user_id",
        ),
    ] {
        let (status, body) = answer(app.post_json("/feedback", &body).await).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}"
        );
    }
}

/// `{"model":"auto","model":"sim-lite"}` would pin a model by its last value: a body that names a
/// key twice is refused naming it, in every dialect.
#[tokio::test]
async fn duplicate_keys_are_refused_naming_the_key() {
    let app = TestApp::spawn_with_workers(TestDb::migrated().await, &[]).await;
    let post = |path: &'static str, body: &'static str| {
        app.client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = answer(
        post("/complete", r#"{"prompt":"A","prompt":"B"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_key", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt:"),
        "{body}"
    );

    let chat = r#"{"model":"auto","model":"sim-lite","messages":[{"role":"user","content":"a"}]}"#;
    let (status, body) = answer(post("/v1/chat/completions", chat).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    let nested = r#"{"model":"auto","messages":[{"role":"user","content":"a","content":"b"}]}"#;
    let (status, body) = answer(post("/v1/chat/completions", nested).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages[0].content", "{body}");

    let messages = r#"{"model":"auto","max_tokens":5,"max_tokens":9,"messages":[{"role":"user","content":"a"}]}"#;
    let (status, body) = answer(post("/v1/messages", messages).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{body}"
    );

    // Keys that repeat only across objects are fine.
    let fine = r#"{"model":"auto","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}"#;
    let resp = post("/v1/chat/completions", fine).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn path_and_query_rejections_are_json() {
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("ADMIN_TOKEN", "admin-token-1")],
    )
    .await;
    let r = app
        .client
        .post(app.url("/admin/learning/retrain?dry_run=maybe"))
        .bearer_auth("admin-token-1")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dry_run"),
        "{body}"
    );

    let (status, body) = answer(app.get("/requests/%00%ff").await).await;
    assert!((400..500).contains(&status), "{status} {body}");
    let (status, body) = answer(app.get("/requests/%00").await).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = answer(app.get("/admin/learning/runs/%00").await).await;
    assert!((400..500).contains(&status), "{status} {body}");
    // Found by schemathesis: NUL in these reached Postgres (500).
    let admin = |method: reqwest::Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth("admin-token-1")
    };
    for (request, want) in [
        (
            admin(
                reqwest::Method::GET,
                "/admin/performance/trends?pattern=a%00b",
            ),
            422,
        ),
        (
            admin(reqwest::Method::GET, "/admin/performance/trends?model=%01"),
            422,
        ),
        (
            admin(reqwest::Method::POST, "/admin/learning/rollback")
                .header("content-type", "application/json")
                .body(r#"{"run_id": "R\u0000x"}"#),
            422,
        ),
        (admin(reqwest::Method::GET, "/admin/keys/%00"), 404),
        (admin(reqwest::Method::POST, "/admin/keys/a%00/rotate"), 404),
        (admin(reqwest::Method::POST, "/admin/keys/a%00/revoke"), 404),
    ] {
        let (status, body) = answer(request.send().await.unwrap()).await;
        assert_eq!(status, want, "{body}");
    }
    let r = app
        .client
        .get(app.url("/routing/metrics?since=yesterday"))
        .send()
        .await
        .unwrap();
    let (status, _) = answer(r).await;
    assert_eq!(status, 422);
    let r = app
        .client
        .post(app.url("/complete"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(r).await;
    assert_eq!(status, 415, "{body}");
}

/// Status line and headers of a raw answer must show a 4xx in the JSON shape.
fn assert_json_4xx(answer: &str, code: &str) {
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!((400..500).contains(&status), "{answer:?}");
    assert!(answer.contains("application/json"), "{answer:?}");
    assert!(
        answer.contains(&format!("\"code\":\"{code}\"")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn header_lines_with_control_characters_get_json_errors() {
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("API_KEYS", "alice:sk-alice-123")],
    )
    .await;
    let body = r#"{"prompt":"hi"}"#;
    // A control character in Content-Type: hyper's parser alone would answer an empty 400.
    let sent = format!(
        "POST /complete HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer sk-alice-123\r\ncontent-type: application/\x01json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&app, sent.as_bytes(), Duration::from_secs(20)).await;
    assert_json_4xx(&answer, "unsupported_media_type");
    // In the key: the caller is not identified.
    let sent = format!(
        "POST /complete HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer sk-alice\x07-123\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&app, sent.as_bytes(), Duration::from_secs(20)).await;
    assert_json_4xx(&answer, "unauthorized");
    // A header name that is not a token, on a GET.
    let answer = raw(
        &app,
        b"GET /requests/abc HTTP/1.1\r\nhost: x\r\nconnection: close\r\nbad\x02name: 1\r\n\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert_json_4xx(&answer, "unauthorized");
}

#[tokio::test]
async fn requests_before_the_schema_exists_get_503_not_ready() {
    // An empty database and no migrations: the window `serve` has before its migration ends.
    let app = TestApp::spawn_on(TestDb::empty().await, &[("RUN_MIGRATIONS", "false")]).await;
    let r = app
        .post_json("/complete", &json!({"prompt": "hello"}))
        .await;
    assert_eq!(r.headers()["retry-after"], "2");
    let (status, body) = answer(r).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("not_ready"))
    );
    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": "a"}]});
    let (status, body) = answer(app.post_json("/v1/chat/completions", &chat).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["type"].is_string(), "OpenAI's shape: {body}");
    let (status, _) = answer(app.get("/requests/01J00000000000000000000000").await).await;
    assert_eq!(status, 503);
    // What needs no database still answers.
    assert_eq!(app.get("/health").await.status(), 200);

    // Once the schema is there, the same routes work.
    app.db.migrate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = app
        .post_json("/complete", &json!({"prompt": "hello", "async": true}))
        .await;
    assert_eq!(r.status(), 202);
}

/// A synchronous `/complete` in flight, returned once its request row is committed.
async fn send_and_await_acceptance(
    app: &TestApp,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let pending = {
        let client = app.client.clone();
        let url = app.url("/complete");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"prompt": "What is the capital of Peru?"}))
                .send()
                .await
        })
    };
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending
}

#[tokio::test]
async fn shutdown_answers_waiting_clients_with_202() {
    // No workers: the job cannot run, so only the shutdown can end the wait before the minute.
    let app = TestApp::spawn_on(TestDb::migrated().await, &[("COMPLETE_TIMEOUT_SECS", "60")]).await;
    // The request is accepted (its row exists) before the shutdown begins.
    let pending = send_and_await_acceptance(&app).await;
    app.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("answered")
        .unwrap()
        .expect("an answer, not a closed connection");
    let (status, body) = answer(r).await;
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(body["status_url"], format!("/requests/{id}"));
}

#[tokio::test]
async fn a_wait_that_fails_after_acceptance_still_names_the_request() {
    let app = TestApp::spawn_on(TestDb::migrated().await, &[("COMPLETE_TIMEOUT_SECS", "3")]).await;
    let pending = send_and_await_acceptance(&app).await;
    // The request is committed; reading it back now fails.
    sqlx::query("ALTER TABLE routing_metrics RENAME TO routing_metrics_gone")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = pending.await.unwrap().unwrap();
    let (status, body) = answer(r).await;
    assert_eq!(status, 202, "{body}");
    let id: String = sqlx::query_scalar("SELECT request_id FROM requests")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(body["request_id"], id.as_str(), "{body}");
}

/// Sends raw bytes and returns what the server answers before `within` (empty if nothing).
async fn raw(app: &TestApp, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn stalled_and_oversized_bodies_are_refused_without_waiting() {
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("REQUEST_BODY_TIMEOUT_SECS", "1")],
    )
    .await;
    // 2 of 100 announced bytes, then silence: refused once the body stalls.
    let stalled = raw(
        &app,
        b"POST /complete HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"",
        Duration::from_secs(20),
    )
    .await;
    let status: u16 = stalled
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!((400..500).contains(&status), "{stalled}");
    assert!(stalled.contains("application/json"), "{stalled}");
    // A body announced far past MAX_REQUEST_BYTES: 413 before any of it is sent.
    let huge = raw(
        &app,
        b"POST /complete HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 99999999999\r\n\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("payload_too_large"), "{huge}");
}

#[tokio::test]
async fn the_deadline_sweep_ends_a_request_whose_route_cannot_be_read() {
    let db = TestDb::migrated().await;
    let pool = db.database().pool;
    sqlx::query(
        "INSERT INTO requests (request_id, status, attempts, prompt, route, created_at)
         VALUES ('r-garbled', 'running', 1, 'p', '{\"garbled\": true}', now() - interval '1 hour')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let hot = optimizer::store::Hot::new(pool.clone());
    let announcer = optimizer::completion::Announcer::new(hot.clone());
    let swept =
        optimizer::completion::lifecycle::sweep(&hot, &announcer, Duration::from_secs(600), true)
            .await
            .unwrap();
    assert_eq!(swept, 1);
    let (status, code): (String, String) =
        sqlx::query_as("SELECT status, error_code FROM requests WHERE request_id = 'r-garbled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("failed", "deadline_exceeded")
    );
    let metrics: i64 =
        sqlx::query_scalar("SELECT count(*) FROM routing_metrics WHERE request_id = 'r-garbled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(metrics, 1);
}

#[tokio::test]
async fn statements_are_cancelled_after_the_statement_timeout() {
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("DB_STATEMENT_TIMEOUT_MS", "300")],
    )
    .await;
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(&app.db.pool)
        .await
        .unwrap_err();
    let code = slow.as_database_error().and_then(|d| d.code()).unwrap();
    assert_eq!(code, "57014", "{slow}");
    // Migrations are exempt: they run on a connection of their own.
    app.db.migrate().await.unwrap();
}

#[tokio::test]
async fn past_max_in_flight_requests_are_shed_with_503() {
    // No workers and one permit: a synchronous request holds it while it waits.
    let app = TestApp::spawn_on(
        TestDb::migrated().await,
        &[("MAX_IN_FLIGHT", "1"), ("COMPLETE_TIMEOUT_SECS", "3")],
    )
    .await;
    let pending = send_and_await_acceptance(&app).await;
    let r = app
        .post_json("/complete", &json!({"prompt": "another"}))
        .await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, body) = answer(r).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("overloaded"))
    );
    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": "a"}]});
    let (status, body) = answer(app.post_json("/v1/chat/completions", &chat).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["type"].is_string(), "OpenAI's shape: {body}");
    // Probes are never shed.
    assert_eq!(app.get("/health").await.status(), 200);
    // The held request ends (202 after its wait) and the permit is free again.
    assert_eq!(pending.await.unwrap().unwrap().status(), 202);
    let r = app
        .post_json("/complete", &json!({"prompt": "third", "async": true}))
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn retention_prunes_old_bodies_expired_cache_and_finished_jobs_once() {
    use optimizer::store::retention::{Retention, prune};
    let db = TestDb::migrated().await;
    let pool = db.database().pool;
    for sql in [
        "INSERT INTO requests (request_id, status, attempts, prompt, response, params, created_at,
             finished_at)
         VALUES ('old', 'succeeded', 1, 'secret prompt', 'answer', '{\"history\": [1]}',
                 now() - interval '40 days', now() - interval '40 days'),
                ('new', 'succeeded', 1, 'recent prompt', 'answer', '{}', now(), now())",
        "INSERT INTO response_cache (cache_key, provider, model, response, input_tokens,
             output_tokens, cost_usd, expires_at)
         VALUES ('gone', 'simulated', 'm', 'r', 1, 1, 0, now() - interval '1 hour'),
                ('live', 'simulated', 'm', 'r', 1, 1, 0, now() + interval '1 hour')",
        "INSERT INTO apalis.jobs (job, id, job_type, status, done_at)
         VALUES ('{}', 'done-old', 'provider_call', 'Done', now() - interval '2 days'),
                ('{}', 'done-new', 'provider_call', 'Done', now()),
                ('{}', 'pending', 'provider_call', 'Pending', NULL)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let retention = Retention {
        bodies_kept: Some(Duration::from_secs(30 * 86_400)),
        jobs_kept: Duration::from_secs(86_400),
    };
    // While another process holds the pass, this one skips.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(optimizer::store::retention::PRUNE_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(prune(&pool, &retention).await.unwrap(), None);
    other.rollback().await.unwrap();

    let pruned = prune(&pool, &retention).await.unwrap().unwrap();
    assert_eq!(
        (pruned.cache_entries, pruned.jobs, pruned.request_bodies),
        (1, 1, 1)
    );
    let bodies: Vec<(String, Option<String>, Option<String>, bool)> = sqlx::query_as(
        "SELECT request_id, prompt, response, params ? 'history' FROM requests ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        bodies[0],
        (
            "new".into(),
            Some("recent prompt".into()),
            Some("answer".into()),
            false
        )
    );
    assert_eq!(bodies[1], ("old".into(), None, None, false));
    let jobs: Vec<String> = sqlx::query_scalar("SELECT id FROM apalis.jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, ["done-new", "pending"]);
    // A second pass finds nothing left to do.
    assert_eq!(
        prune(&pool, &retention).await.unwrap(),
        Some(Default::default())
    );
}

#[tokio::test]
async fn unfinished_headers_do_not_hold_a_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db = TestDb::migrated().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(optimizer::api::serve_with(
        listener,
        optimizer::api::worker_router(db.database()),
        shutdown.clone(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    ));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Headers begun, never finished.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the server still holds the connection");

    // A connection that never sends a byte is closed too.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), silent.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the server holds a connection that sent nothing"
    );

    // So is a keep-alive connection idle after its answer.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the server holds an idle keep-alive connection"
    );
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
}
