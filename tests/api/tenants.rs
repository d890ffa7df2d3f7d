//! Tenants (issue 14): API keys in Postgres; each key sees only its own requests, ratings,
//! metrics, idempotency keys and cache; key lifecycle across replicas.

use std::time::{Duration, Instant};

use crate::common::process::{free_port, start, wait_for_status};
use crate::common::{TestApp, TestDb};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tenant-tests";

/// Sends `method path` with `body` as `bearer` (None: no Authorization header).
async fn call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let url = format!("{base}{path}");
    let mut req = match method {
        "GET" => client.get(url),
        "PATCH" => client.patch(url),
        _ => client.post(url),
    };
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

/// Creates a key through the admin API; returns (key_id, secret).
async fn create_key(client: &reqwest::Client, base: &str, body: Value) -> (String, String) {
    let (status, created, _) = call(
        client,
        base,
        "POST",
        "/admin/keys",
        Some(ADMIN),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("aco_"), "{created}");
    assert!(secret.starts_with(created["key"]["prefix"].as_str().unwrap()));
    (
        created["key"]["key_id"].as_str().unwrap().to_owned(),
        secret,
    )
}

#[tokio::test]
async fn each_key_sees_only_its_own_on_every_route() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", ADMIN)]).await;
    let base = format!("http://{}", app.addr);
    let c = &app.client;

    // No key exists yet: the service is open, as a fresh install is.
    let (status, open, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        None,
        Some(json!({"prompt": "What is 1 + 1?"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{open}");
    // SDKs always send a key: while none exists, any key is the open caller too.
    for (path, body) in [
        ("/complete", json!({"prompt": "What is 1 + 1?"})),
        (
            "/v1/chat/completions",
            json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let (status, open, _) =
            call(c, &base, "POST", path, Some("anything"), Some(body), &[]).await;
        assert_eq!(status, 200, "{path}: {open}");
    }

    let (alice_id, alice) = create_key(c, &base, json!({"name": "alice"})).await;
    let (_bob_id, bob) = create_key(c, &base, json!({"name": "bob"})).await;

    // Once a key exists, every client route needs one: no key → 401, a wrong one → 401.
    for (method, path, body) in [
        ("POST", "/complete", Some(json!({"prompt": "hi"}))),
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})),
        ),
        ("GET", "/v1/models", None),
        (
            "POST",
            "/feedback",
            Some(json!({"request_id": "x", "quality_score": 5, "is_correct": true})),
        ),
        ("POST", "/recommendation", Some(json!({"prompt": "hi"}))),
        ("GET", "/requests/01ABC", None),
        ("GET", "/routing/metrics", None),
    ] {
        for bearer in [None, Some("aco_not-a-key")] {
            let (status, body, _) = call(c, &base, method, path, bearer, body.clone(), &[]).await;
            assert_eq!(status, 401, "{method} {path} {bearer:?}: {body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    // Alice's request: hers and the admin's to read, not bob's (404, not 403: ids do not leak).
    let (status, answer, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&alice),
        Some(json!({"prompt": "Explain photosynthesis briefly.", "user_id": "alice-user-1"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["request_id"].as_str().unwrap().to_owned();
    let path = format!("/requests/{id}");
    assert_eq!(
        call(c, &base, "GET", &path, Some(&alice), None, &[])
            .await
            .0,
        200
    );
    assert_eq!(
        call(c, &base, "GET", &path, Some(ADMIN), None, &[]).await.0,
        200
    );
    let (status, body, _) = call(c, &base, "GET", &path, Some(&bob), None, &[]).await;
    assert_eq!(status, 404, "{body}");

    // Only the owner rates; bob's rating of alice's request is 404 and stores nothing.
    let rating = json!({"request_id": id, "quality_score": 5, "is_correct": true});
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/feedback",
        Some(&bob),
        Some(rating.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/feedback",
        Some(&alice),
        Some(rating),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let pool = app.test_db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM response_feedback")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Idempotency keys are per API key: bob's "shared-42" is his own request, not alice's.
    let key = [("Idempotency-Key", "shared-42")];
    let (status, a1, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&alice),
        Some(json!({"prompt": "Alice's question about tides."})),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{a1}");
    let (status, b1, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&bob),
        Some(json!({"prompt": "Bob's question about volcanoes."})),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{b1}");
    assert_ne!(a1["request_id"], b1["request_id"]);
    assert!(!b1["response"].as_str().unwrap().contains("tides"), "{b1}");
    // The same key and body replays; the same key with another body is 422.
    let (status, again, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&alice),
        Some(json!({"prompt": "Alice's question about tides."})),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["request_id"], a1["request_id"]);
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&alice),
        Some(json!({"prompt": "Something else entirely."})),
        &key,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body}");

    // The cache is per key: bob asking alice's exact question is not answered from her entry.
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&bob),
        Some(json!({"prompt": "Explain photosynthesis briefly."})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cached"], false, "{body}");
    let (_, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&alice),
        Some(json!({"prompt": "Explain photosynthesis briefly.", "user_id": "alice-user-1"})),
        &[],
    )
    .await;
    assert_eq!(body["cached"], true, "alice's own repeat is cached: {body}");

    // Metrics: each key counts its own requests; the admin counts all, with spend per key.
    let requests = |v: &Value| v["requests"].as_i64().unwrap();
    let (_, mine, _) = call(c, &base, "GET", "/routing/metrics", Some(&alice), None, &[]).await;
    let (_, his, _) = call(c, &base, "GET", "/routing/metrics", Some(&bob), None, &[]).await;
    let (_, all, _) = call(c, &base, "GET", "/routing/metrics", Some(ADMIN), None, &[]).await;
    assert_eq!(requests(&mine), 3, "{mine}"); // photosynthesis, tides, photosynthesis (cached)
    assert_eq!(requests(&his), 2, "{his}");
    // + the three open requests before any key existed (one without a key, two with any key).
    assert_eq!(requests(&all), 8, "{all}");
    assert!(
        mine["spend"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["key_id"] == alice_id.as_str()),
        "{mine}"
    );
}

#[tokio::test]
async fn keys_are_created_rotated_and_revoked_across_replicas() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", ADMIN)]).await;
    let base = format!("http://{}", app.addr);
    let c = &app.client;
    // A second replica: the real binary, API only, on the same database.
    let bind = format!("127.0.0.1:{}", free_port());
    let _replica = start(
        std::path::Path::new(env!("CARGO_BIN_EXE_optimizer")),
        &["serve", "--no-workers"],
        &[
            ("DATABASE_URL", &app.test_db.url),
            ("BIND", &bind),
            ("ADMIN_TOKEN", ADMIN),
        ],
    );
    let other = format!("http://{bind}");
    wait_for_status(&format!("{other}/ready"), 200).await;

    let (key_id, secret) = create_key(
        c,
        &base,
        json!({"name": "ci", "default_strategy": "cost", "allowed_providers": ["simulated"]}),
    )
    .await;
    let ask = json!({"prompt": "Recommend a model for this question.", "max_tokens": 50});
    let (status, rec, _) = call(
        c,
        &other,
        "POST",
        "/recommendation",
        Some(&secret),
        Some(ask.clone()),
        &[],
    )
    .await;
    assert_eq!(
        status, 200,
        "created on one replica, usable on the other: {rec}"
    );
    assert_eq!(rec["strategy"], "cost", "the key's default strategy: {rec}");

    // The list never shows a secret or its hash.
    let (_, listed, _) = call(c, &base, "GET", "/admin/keys", Some(ADMIN), None, &[]).await;
    let text = listed.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("hash"),
        "{listed}"
    );
    assert_eq!(listed["keys"][0]["key_id"], key_id.as_str());

    // Rotate on one replica: the other refuses the old secret within a second, takes the new.
    let (status, rotated, _) = call(
        c,
        &base,
        "POST",
        &format!("/admin/keys/{key_id}/rotate"),
        Some(ADMIN),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let refused_within = |secret: String| {
        let (c, other, ask) = (c.clone(), other.clone(), ask.clone());
        async move {
            let started = Instant::now();
            loop {
                let (status, _, _) = call(
                    &c,
                    &other,
                    "POST",
                    "/recommendation",
                    Some(&secret),
                    Some(ask.clone()),
                    &[],
                )
                .await;
                if status == 401 {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(5), "still accepted");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    let took = refused_within(secret.clone()).await;
    assert!(
        took <= Duration::from_secs(1),
        "old secret accepted for {took:?}"
    );
    let (status, _, _) = call(
        c,
        &other,
        "POST",
        "/recommendation",
        Some(&new_secret),
        Some(ask.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 200);

    // Revoke: refused by the other replica within a second.
    let (status, _, _) = call(
        c,
        &base,
        "POST",
        &format!("/admin/keys/{key_id}/revoke"),
        Some(ADMIN),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let took = refused_within(new_secret.clone()).await;
    assert!(
        took <= Duration::from_secs(1),
        "revoked key accepted for {took:?}"
    );

    // Allowed models: a pinned model outside them is 403; auto-routing stays inside them.
    let (_, narrow) = create_key(
        c,
        &base,
        json!({"name": "narrow", "allowed_models": ["sim-lite"]}),
    )
    .await;
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&narrow),
        Some(json!({"prompt": "Prove that sqrt(2) is irrational.", "model": "sim-premium"})),
        &[],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&narrow),
        Some(json!({"prompt": "Prove that sqrt(2) is irrational.", "strategy": "quality"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "sim-lite", "{body}");

    // An expired key is refused; bad settings are 422 naming the field.
    let (_, expired) = create_key(
        c,
        &base,
        json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let (status, _, _) = call(
        c,
        &other,
        "POST",
        "/recommendation",
        Some(&expired),
        Some(ask.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    for (field, value) in [
        ("daily_budget_usd", json!(-1)),
        ("requests_per_minute", json!(0)),
        ("allowed_models", json!(["no-such-model"])),
        ("default_strategy", json!("cheapest")),
    ] {
        let (status, body, _) = call(
            c,
            &base,
            "POST",
            "/admin/keys",
            Some(ADMIN),
            Some(json!({"name": "bad", field: value})),
            &[],
        )
        .await;
        assert_eq!(status, 422, "{field}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
}

#[tokio::test]
async fn near_its_budget_a_key_is_routed_cheaper_and_end_users_and_tokens_are_limited() {
    let app =
        TestApp::spawn_with_workers(TestDb::migrated().await, &[("ADMIN_TOKEN", ADMIN)]).await;
    let base = format!("http://{}", app.addr);
    let c = &app.client;
    let pool = app.test_db.pool().await;
    // sim-premium's worst case at 1000 output tokens is ~$0.015, sim-standard's ~$0.005.
    let ask = json!({"prompt": "Prove that there are infinitely many primes.",
                     "strategy": "quality", "max_tokens": 1000});

    // A budget the premium model's worst case does not fit: routed among those that fit.
    let (_, lenient) = create_key(
        c,
        &base,
        json!({"name": "lenient", "daily_budget_usd": 0.01}),
    )
    .await;
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&lenient),
        Some(ask.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "sim-standard", "{body}");
    let reason = body["routing"]["reason"].as_str().unwrap();
    assert!(reason.contains("within the API key's budget"), "{reason}");
    // The same budget with strict_budget: refused, naming the limit.
    let (_, strict) = create_key(
        c,
        &base,
        json!({"name": "strict", "daily_budget_usd": 0.01, "strict_budget": true}),
    )
    .await;
    let (status, body, headers) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&strict),
        Some(ask.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily budget of $0.010000")
    );
    assert!(headers.contains_key("retry-after"));

    // Per end user: one user's spent day does not stop another user of the key.
    let (users_id, users) = create_key(
        c,
        &base,
        json!({"name": "users", "user_daily_budget_usd": 0.001}),
    )
    .await;
    // (Distinct prompts: a cache hit holds no budget.)
    let lite = |user: &str| {
        json!({"prompt": format!("Say hi to {user} at {:?}.", Instant::now()),
               "model": "sim-lite", "max_tokens": 1000, "user_id": user})
    };
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&users),
        Some(lite("ann")),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // ann has spent most of her day (as if by earlier requests).
    sqlx::query("UPDATE key_spend SET spent_usd = 0.0009 WHERE key_id = $1 AND scope = 'ann'")
        .bind(&users_id)
        .execute(&pool)
        .await
        .unwrap();
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&users),
        Some(lite("ann")),
        &[],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("end user \"ann\""),
        "{body}"
    );
    let (status, body, _) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&users),
        Some(lite("bob")),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Tokens per minute count the input estimate and max_tokens at admission.
    let (_, tokens) = create_key(
        c,
        &base,
        json!({"name": "tokens", "tokens_per_minute": 1500}),
    )
    .await;
    let small = json!({"prompt": "Say hi.", "max_tokens": 1000, "async": true});
    let (status, body, headers) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&tokens),
        Some(small.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1500");
    let remaining: i64 = headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((400..500).contains(&remaining), "{remaining}");
    let (status, body, headers) = call(
        c,
        &base,
        "POST",
        "/complete",
        Some(&tokens),
        Some(small),
        &[],
    )
    .await;
    // (Unless the minute turned between the two calls.)
    if status != 202 {
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1500 tokens"),
            "{body}"
        );
        // What is left of the minute, less than this request needs.
        let left: i64 = headers["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(left, remaining);
    }
}
