//! Budgets and rate limits that hold across replicas (issue 14): 3 API processes and 2 worker
//! processes on one database, 50 concurrent clients on a key with a small daily budget, an
//! upstream (OpenRouter's wire format, over HTTP) that sometimes charges more than our
//! worst-case estimate, a window reset, a worker SIGKILLed mid-request, and a per-minute
//! request limit shared by the 3 APIs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::process::{free_port, start, wait_for_status};
use crate::common::{TestDb, catalog_model, spawn_worker, temp_file};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ADMIN: &str = "admin-token-for-budget-tests";
const OPTIMIZER: &str = env!("CARGO_BIN_EXE_optimizer");
/// The one model's list prices, USD per million tokens.
const USD_IN: f64 = 1.0;
const USD_OUT: f64 = 100.0;
const MAX_TOKENS: u64 = 100;
const BUDGET_USD: f64 = 0.2;

/// OpenRouter's chat completion: half of `max_tokens` as output, but every 7th call reports
/// three times `max_tokens` (a provider charging more than our worst case); `usage.cost` at
/// list price, as OpenRouter reports it. Prompts containing "slow" take 3 s.
struct Upstream {
    calls: AtomicUsize,
}

impl Respond for Upstream {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let max_tokens = body["max_tokens"].as_u64().unwrap_or(MAX_TOKENS);
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let output = if n % 7 == 6 {
            3 * max_tokens
        } else {
            max_tokens / 2
        };
        let input = 20u64;
        let cost = (input as f64 * USD_IN + output as f64 * USD_OUT) / 1e6;
        let slow = body.to_string().contains("slow");
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "id": format!("gen-{n}"), "object": "chat.completion", "model": "o-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input, "completion_tokens": output,
                          "total_tokens": input + output, "cost": cost}
            }))
            .set_delay(Duration::from_millis(if slow { 3000 } else { 150 }))
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

/// The dollar amounts in a `budget_exceeded` message: limit, spent, held, needed.
fn amounts(message: &str) -> Vec<f64> {
    message
        .split('$')
        .skip(1)
        .filter_map(|s| {
            let n: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            n.parse().ok()
        })
        .collect()
}

/// (spent, reserved) of the key's current daily window, and Σ cost of its finished requests.
async fn ledger(pool: &sqlx::PgPool, key_id: &str) -> (f64, f64, f64) {
    let (spent, reserved): (f64, f64) = sqlx::query_as(
        "SELECT COALESCE(sum(spent_usd), 0), COALESCE(sum(reserved_usd), 0) FROM key_spend
         WHERE key_id = $1 AND scope = '' AND period = 'day'",
    )
    .bind(key_id)
    .fetch_one(pool)
    .await
    .unwrap();
    let cost: f64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(cost_usd), 0) FROM routing_metrics WHERE api_key_id = $1",
    )
    .bind(key_id)
    .fetch_one(pool)
    .await
    .unwrap();
    (spent, reserved, cost)
}

/// Waits until every request is finished (60 s at most).
async fn all_finished(pool: &sqlx::PgPool) {
    for _ in 0..600 {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE status IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("requests still unfinished after 60 s");
}

#[tokio::test]
async fn three_apis_and_two_workers_keep_budgets_and_rate_limits_exact() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(Upstream {
            calls: AtomicUsize::new(0),
        })
        .mount(&upstream)
        .await;
    let catalog = temp_file(
        "budget-catalog.toml",
        &catalog_model("openrouter", "o-model", USD_IN, USD_OUT, 0.9),
    );
    let catalog = catalog.display().to_string();
    let uri = upstream.uri();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CATALOG_PATH", catalog.as_str()),
        ("OPENROUTER_API_KEY", "o-key"),
        ("OPENROUTER_BASE_URL", uri.as_str()),
        ("ADMIN_TOKEN", ADMIN),
        ("CACHE_ENABLED", "false"),
        ("EXPLORATION_RATE", "0"),
        ("COMPLETE_TIMEOUT_SECS", "60"),
        ("REQUEST_DEADLINE_SECS", "20"),
        ("JOB_HEARTBEAT_SECS", "1"),
        ("DB_MAX_CONNECTIONS", "8"),
    ];
    let apis: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _servers: Vec<_> = apis
        .iter()
        .map(|bind| {
            let mut vars = env.to_vec();
            vars.push(("BIND", bind.as_str()));
            start(
                std::path::Path::new(OPTIMIZER),
                &["serve", "--no-workers"],
                &vars,
            )
        })
        .collect();
    let mut worker_a = Some(spawn_worker(&env));
    let _worker_b = spawn_worker(&env);
    for bind in &apis {
        wait_for_status(&format!("http://{bind}/ready"), 200).await;
    }
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("http://{}/admin/keys", apis[0]))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "small", "daily_budget_usd": BUDGET_USD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = created["key"]["key_id"].as_str().unwrap().to_owned();
    let key = Arc::new(created["secret"].as_str().unwrap().to_owned());

    // 50 concurrent clients, two requests each, spread over the three APIs.
    let clients: Vec<_> = (0..50)
        .map(|c| {
            let (client, key, apis) = (client.clone(), key.clone(), apis.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for r in 0..2 {
                    let i = 2 * c + r;
                    let url = format!("http://{}/complete", apis[i % 3]);
                    let body = json!({"prompt": format!("Question {i}: name a prime above {i}."),
                                      "max_tokens": MAX_TOKENS});
                    answers.push(post(&client, url, &key, body).await);
                }
                answers
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        for (status, body, headers) in client.await.unwrap() {
            match status {
                200 => ok += 1,
                429 => {
                    refused += 1;
                    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
                    assert!(headers.contains_key("retry-after"), "{headers:?}");
                    // Refused only when it did not fit: spent + held + this one > the limit.
                    let message = body["error"]["message"].as_str().unwrap();
                    let a = amounts(message);
                    assert_eq!(a.len(), 4, "{message}");
                    assert!((a[0] - BUDGET_USD).abs() < 1e-9, "{message}");
                    assert!(
                        a[1] + a[2] + a[3] > a[0] - 2e-6,
                        "refused with room: {message}"
                    );
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    assert!(ok > 0 && refused > 0, "{ok} answered, {refused} refused");
    all_finished(&pool).await;
    let (spent, reserved, cost) = ledger(&pool, &key_id).await;
    assert!(reserved.abs() < 1e-9, "reservation leaked: {reserved}");
    assert!(
        (spent - cost).abs() < 1e-9,
        "ledger {spent} vs requests {cost}"
    );
    // Spend never exceeds the budget, but for what providers charged over our worst case.
    let over_estimate: f64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(GREATEST(m.cost_usd - (r.budget_holds -> 0 ->> 'usd')::float8, 0)), 0)
         FROM requests r JOIN routing_metrics m USING (request_id) WHERE r.api_key_id = $1",
    )
    .bind(&key_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        over_estimate > 0.0,
        "the upstream's overcharges were exercised"
    );
    eprintln!(
        "burst: {ok} answered, {refused} refused; spent ${spent:.6} of ${BUDGET_USD}, \
         ${over_estimate:.6} of it charged above our worst case"
    );
    assert!(
        spent <= BUDGET_USD + over_estimate + 1e-9,
        "spent {spent} > budget {BUDGET_USD} + provider overcharge {over_estimate}"
    );
    // Nothing in flight: while a worst case still fits, requests are answered; then refused.
    let worst: f64 = sqlx::query_scalar(
        "SELECT max((budget_holds -> 0 ->> 'usd')::float8) FROM requests WHERE api_key_id = $1",
    )
    .bind(&key_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    for i in 0.. {
        let (spent, _, _) = ledger(&pool, &key_id).await;
        // (Prompts differ by a byte or two, so by ~1e-6 USD of input: a small grey zone.)
        let fits = spent + worst <= BUDGET_USD - 1e-5;
        let (status, body, _) = post(
            &client,
            format!("http://{}/complete", apis[i % 3]),
            &key,
            json!({"prompt": format!("Question {i}: name a prime above {i}."),
                   "max_tokens": MAX_TOKENS}),
        )
        .await;
        if fits {
            assert_eq!(
                status,
                200,
                "refused with ${} left: {body}",
                BUDGET_USD - spent
            );
        } else if status == 429 {
            assert!(spent + worst > BUDGET_USD - 2e-5, "{body}");
            break;
        }
        assert!(i < 40, "never refused");
    }

    // The window resets (as at midnight UTC): traffic flows again.
    let (status, body, _) = post(
        &client,
        format!("http://{}/complete", apis[1]),
        &key,
        json!({"prompt": "Still refused?", "max_tokens": MAX_TOKENS}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    sqlx::query(
        "UPDATE key_spend SET period_start = period_start - interval '1 day' WHERE key_id = $1",
    )
    .bind(&key_id)
    .execute(&pool)
    .await
    .unwrap();
    let (status, body, _) = post(
        &client,
        format!("http://{}/complete", apis[1]),
        &key,
        json!({"prompt": "A new day, a new question.", "max_tokens": MAX_TOKENS}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A worker SIGKILLed mid-request leaks no reservation: its requests end (retried by the
    // other worker, or failed by the deadline sweep) and their holds are settled.
    for i in 0..6 {
        let (status, body, _) = post(
            &client,
            format!("http://{}/complete", apis[i % 3]),
            &key,
            json!({"prompt": format!("A slow question {i}."), "max_tokens": MAX_TOKENS,
                   "async": true}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(worker_a.take()); // SIGKILL
    all_finished(&pool).await;
    let (spent, reserved, cost) = ledger(&pool, &key_id).await;
    assert!(
        reserved.abs() < 1e-9,
        "reservation leaked after SIGKILL: {reserved}"
    );
    assert!(
        (spent - cost).abs() < 1e-9,
        "ledger {spent} vs requests {cost}"
    );

    // A per-minute request limit, shared by the three APIs: within one request of it.
    let limited: Value = client
        .post(format!("http://{}/admin/keys", apis[2]))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "limited", "requests_per_minute": 20}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = Arc::new(limited["secret"].as_str().unwrap().to_owned());
    // Not across a minute boundary (windows are calendar minutes).
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((62 - second) as u64)).await;
    }
    let calls: Vec<_> = (0..45)
        .map(|i| {
            let (client, key) = (client.clone(), limited.clone());
            let url = format!("http://{}/complete", apis[i % 3]);
            tokio::spawn(async move {
                let body = json!({"prompt": format!("Rate {i}"), "async": true});
                post(&client, url, &key, body).await
            })
        })
        .collect();
    let mut accepted = 0;
    for call in calls {
        let (status, body, headers) = call.await.unwrap();
        match status {
            202 => {
                accepted += 1;
                assert_eq!(headers["x-ratelimit-limit-requests"], "20");
            }
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(headers.contains_key("retry-after"), "{headers:?}");
                assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        (19..=20).contains(&accepted),
        "{accepted} accepted of a 20/min limit"
    );
    eprintln!("rate limit: {accepted} of 45 accepted under 20/min across 3 APIs");
    all_finished(&pool).await;
}
