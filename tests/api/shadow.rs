//! Shadow comparisons (issue 40): sampled requests answered again by other candidates after the
//! client has its answer, every answer graded by the judge model — against OpenRouter's real
//! wire format (wiremock), a real Postgres and, for the crash, real worker processes.

use std::time::{Duration, Instant};

use crate::common::{TestApp, TestDb, catalog_model, spawn_worker, temp_file, wait_finished};
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::{body_partial_json, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ADMIN: &str = "shadow-admin";
const JUDGE_MARK: &str = "You grade one answer";

/// An OpenRouter chat completion.
fn chat(model: &str, text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "gen-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    }))
}

/// Three OpenRouter models: `o-cheap` (what `cost` routes to), `o-mid`, `o-judge`; the judge
/// replies `verdict`; the two others answer after `delay`.
async fn upstream(verdict: &str, delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_string_contains(JUDGE_MARK))
        .respond_with(chat("o-judge", verdict))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_partial_json(json!({"model": "o-cheap"})))
        .respond_with(chat("o-cheap", "cheap answer"))
        .mount(&server)
        .await;
    for model in ["o-mid", "o-judge"] {
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .and(body_partial_json(json!({"model": model})))
            .respond_with(chat(model, &format!("{model} answer")).set_delay(delay))
            .mount(&server)
            .await;
    }
    server
}

fn catalog() -> String {
    [
        catalog_model("openrouter", "o-cheap", 0.1, 0.4, 0.88),
        catalog_model("openrouter", "o-mid", 1.0, 4.0, 0.89),
        catalog_model("openrouter", "o-judge", 3.0, 15.0, 0.9),
    ]
    .concat()
}

/// The environment of a service whose every answered request is sampled, all other candidates
/// answering.
fn env(server: &MockServer, db: &TestDb, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let catalog = temp_file("catalog.toml", &catalog());
    let mut vars: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("CATALOG_PATH", catalog.display().to_string()),
        ("OPENROUTER_API_KEY", "or-test".into()),
        ("OPENROUTER_BASE_URL", server.uri()),
        ("CACHE_ENABLED", "false".into()),
        ("EXPLORATION_RATE", "0".into()),
        ("ADMIN_TOKEN", ADMIN.into()),
        ("SHADOW_RATE", "1".into()),
        ("SHADOW_MODELS", "all".into()),
        ("JUDGE_MODEL", "openrouter/o-judge".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    vars
}

async fn spawn(server: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::migrated().await;
    let vars = env(server, &db, extra);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestApp::spawn_with_workers(db, &vars).await
}

async fn complete(app: &TestApp, body: Value, key: Option<&str>) -> Value {
    let mut req = app.client.post(app.url("/complete")).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Waits until no sample is pending.
async fn drained(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM shadow_samples")
            .fetch_one(pool)
            .await
            .unwrap();
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = 'shadow'
               AND status NOT IN ('Done', 'Failed', 'Killed')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if pending == 0 && queued == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "shadow samples still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scores(pool: &PgPool, request_id: &str) -> Vec<(String, bool, f64, i16, bool)> {
    sqlx::query_as(
        "SELECT model, served, propensity, grade, correct FROM shadow_scores
         WHERE request_id = $1 ORDER BY model",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn spend(pool: &PgPool, request_id: &str, kind: &str) -> (i64, f64) {
    sqlx::query_as(
        "SELECT count(*), COALESCE(sum(cost_usd), 0)::float8 FROM shadow_spend
         WHERE request_id = $1 AND kind = $2",
    )
    .bind(request_id)
    .bind(kind)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn calls(server: &MockServer, needle: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(needle))
        .count()
}

#[tokio::test]
async fn every_answer_is_judged_once_after_the_client_has_its_own() {
    let server = upstream(r#"{"correct": true, "grade": 4}"#, Duration::from_secs(3)).await;
    let app = spawn(&server, &[]).await;
    let pool = app.test_db.pool().await;

    let answer = complete(
        &app,
        json!({"prompt": "Name a prime number.", "strategy": "cost"}),
        None,
    )
    .await;
    let id = answer["request_id"].as_str().unwrap().to_owned();
    // The client's answer is the served model's, whole, and arrived before any shadow answer
    // (they take 3 s) or any judgement.
    assert_eq!(answer["model"], "o-cheap", "{answer}");
    assert_eq!(answer["response"], "cheap answer");
    assert!(scores(&pool, &id).await.is_empty());
    assert_eq!(calls(&server, JUDGE_MARK).await, 0);

    drained(&pool).await;
    // Served and both other candidates, each judged once; the served one observed surely,
    // the others with the sampler's probability (all of them: 1).
    assert_eq!(
        scores(&pool, &id).await,
        vec![
            ("o-cheap".to_owned(), true, 1.0, 4, true),
            ("o-judge".to_owned(), false, 1.0, 4, true),
            ("o-mid".to_owned(), false, 1.0, 4, true),
        ]
    );
    assert_eq!(calls(&server, JUDGE_MARK).await, 3);
    let (shadow_calls, shadow_usd) = spend(&pool, &id, "shadow").await;
    let (judge_calls, judge_usd) = spend(&pool, &id, "judge").await;
    assert_eq!((shadow_calls, judge_calls), (2, 3));
    // 1000 in, 100 out: o-mid $0.0014, o-judge $0.0045; each judgement $0.0045.
    assert!((shadow_usd - 0.0059).abs() < 1e-9, "{shadow_usd}");
    assert!((judge_usd - 0.0135).abs() < 1e-9, "{judge_usd}");

    // Reported apart and taken off the savings; never shown with the answer.
    let metrics: Value = app
        .client
        .get(app.url("/routing/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metrics["shadow"]["scores"], 3, "{metrics}");
    assert_eq!(metrics["shadow"]["requests_judged"], 1);
    let net = metrics["savings_usd"].as_f64().unwrap() - shadow_usd - judge_usd;
    assert!(
        (metrics["net_savings_usd"].as_f64().unwrap() - net).abs() < 1e-6,
        "{metrics}"
    );
    let view = app
        .get(&format!("/requests/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !view.contains("grade") && !view.contains("shadow"),
        "{view}"
    );
    let prom = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is the process's: the other tests here count too.
    let stored: f64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("optimizer_shadow_scores_total{result=\"stored\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stored-scores counter: {prom}"));
    assert!(stored >= 3.0, "{stored}");
    assert!(prom.contains("optimizer_shadow_call_cost_usd_sum{kind=\"judge\"}"));
}

#[tokio::test]
async fn a_judge_reply_that_does_not_parse_stores_nothing() {
    let server = upstream("Looks right to me: 4/5.", Duration::ZERO).await;
    let app = spawn(&server, &[]).await;
    let pool = app.test_db.pool().await;
    let answer = complete(
        &app,
        json!({"prompt": "Name a prime.", "strategy": "cost"}),
        None,
    )
    .await;
    let id = answer["request_id"].as_str().unwrap();
    drained(&pool).await;
    assert!(scores(&pool, id).await.is_empty());
    // The judge was asked (and paid) for every answer.
    assert_eq!(spend(&pool, id, "judge").await.0, 3);
}

#[tokio::test]
async fn no_shadow_call_starts_once_the_daily_cap_is_reached() {
    let server = upstream(r#"{"correct": true, "grade": 5}"#, Duration::ZERO).await;
    let app = spawn(&server, &[("SHADOW_BUDGET_USD", "0.019")]).await;
    let pool = app.test_db.pool().await;

    // The first sample spends $0.0194 (see above; $0.0149 before its last call): past the cap
    // only once it is done.
    let first = complete(
        &app,
        json!({"prompt": "First prompt.", "strategy": "cost"}),
        None,
    )
    .await;
    drained(&pool).await;
    assert_eq!(
        scores(&pool, first["request_id"].as_str().unwrap())
            .await
            .len(),
        3
    );
    let upstream_calls = server.received_requests().await.unwrap().len();
    assert_eq!(upstream_calls, 1 + 2 + 3);

    // Over the cap: the next sample makes no call at all.
    let second = complete(
        &app,
        json!({"prompt": "Second prompt.", "strategy": "cost"}),
        None,
    )
    .await;
    assert_eq!(second["response"], "cheap answer");
    drained(&pool).await;
    let id = second["request_id"].as_str().unwrap();
    assert!(scores(&pool, id).await.is_empty());
    assert_eq!(spend(&pool, id, "shadow").await.0, 0);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        upstream_calls + 1,
        "only the client's own call"
    );
}

#[tokio::test]
async fn a_key_that_opted_out_and_a_request_that_says_no_are_never_sampled() {
    let server = upstream(r#"{"correct": false, "grade": 2}"#, Duration::ZERO).await;
    let app = spawn(&server, &[]).await;
    let pool = app.test_db.pool().await;
    let mut secrets = Vec::new();
    for (name, opt_out) in [("private", true), ("shared", false)] {
        let created: Value = app
            .client
            .post(app.url("/admin/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name, "shadow_opt_out": opt_out}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["key"]["shadow_opt_out"], opt_out, "{created}");
        secrets.push(created["secret"].as_str().unwrap().to_owned());
    }
    let mut private = Vec::new();
    let mut shared = Vec::new();
    for i in 0..3 {
        let body = json!({"prompt": format!("Question {i}?"), "strategy": "cost"});
        private.push(complete(&app, body.clone(), Some(&secrets[0])).await);
        shared.push(complete(&app, body, Some(&secrets[1])).await);
    }
    let declined = complete(
        &app,
        json!({"prompt": "Not this one.", "strategy": "cost", "shadow": false}),
        Some(&secrets[1]),
    )
    .await;
    // On the OpenAI-compatible route the header says no; without it the request is sampled.
    let v1 = |header: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&secrets[1])
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "Via v1?"}]}));
        if let Some(h) = header {
            req = req.header("x-optimizer-shadow", h);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["x-optimizer-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let v1_declined = v1(Some("off")).await;
    let v1_sampled = v1(None).await;
    drained(&pool).await;
    assert!(scores(&pool, &v1_declined).await.is_empty());
    assert_eq!(scores(&pool, &v1_sampled).await.len(), 3);
    for a in private.iter().chain([&declined]) {
        let id = a["request_id"].as_str().unwrap();
        assert!(scores(&pool, id).await.is_empty(), "{a}");
        assert_eq!(spend(&pool, id, "judge").await.0, 0);
    }
    for a in &shared {
        assert_eq!(
            scores(&pool, a["request_id"].as_str().unwrap()).await.len(),
            3
        );
    }
    // Operator billing (the default): the key's budget counters are untouched.
    let spent: f64 =
        sqlx::query_scalar("SELECT COALESCE(sum(spent_usd), 0)::float8 FROM key_spend")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(spent, 0.0);
}

#[tokio::test]
async fn with_store_prompts_none_nothing_of_the_prompt_outlives_the_shadow() {
    let server = upstream(r#"{"correct": true, "grade": 3}"#, Duration::ZERO).await;
    let app = spawn(&server, &[("STORE_PROMPTS", "none")]).await;
    let pool = app.test_db.pool().await;
    let secret = "the customer's account number is 4417-1234";
    let answer = complete(
        &app,
        json!({"prompt": secret, "system": "confidential system prompt", "strategy": "cost"}),
        None,
    )
    .await;
    let id = answer["request_id"].as_str().unwrap();
    drained(&pool).await;
    // The shadow calls and the judge saw the request…
    assert_eq!(scores(&pool, id).await.len(), 3);
    assert_eq!(calls(&server, "4417-1234").await, 1 + 2 + 3);
    assert_eq!(
        calls(&server, "confidential system prompt").await,
        1 + 2 + 3
    );
    // …and nothing of it is kept: not the request row, not a sample, not a queue job.
    let kept: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM requests WHERE prompt IS NOT NULL OR system IS NOT NULL)
              + (SELECT count(*) FROM shadow_samples)
              + (SELECT count(*) FROM apalis.jobs
                  WHERE convert_from(job, 'UTF8') LIKE '%4417-1234%'
                     OR convert_from(job, 'UTF8') LIKE '%confidential%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn a_worker_killed_between_the_shadow_calls_and_the_judgements_stores_each_score_once() {
    // The judge is slow: the worker is killed while it waits for the first judgement.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_string_contains(JUDGE_MARK))
        .respond_with(
            chat("o-judge", r#"{"correct": true, "grade": 5}"#).set_delay(Duration::from_secs(2)),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    for model in ["o-cheap", "o-mid", "o-judge"] {
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .and(body_partial_json(json!({"model": model})))
            .respond_with(chat(model, &format!("{model} answer")))
            .mount(&server)
            .await;
    }
    let db = TestDb::migrated().await;
    let mut vars = env(
        &server,
        &db,
        &[
            ("RUN_MIGRATIONS", "false"),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("JOB_MISSED_HEARTBEATS", "2"),
        ],
    );
    vars.retain(|(k, _)| k != "ADMIN_TOKEN");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The API without workers: worker processes do the work.
    let app = TestApp::spawn_on(db, &vars).await;
    let pool = app.test_db.pool().await;
    let mut first = spawn_worker(&vars);
    let answer: Value = app
        .post_json(
            "/complete",
            &json!({"prompt": "Kill me gently.", "strategy": "cost", "async": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = answer["request_id"].as_str().unwrap().to_owned();
    let done = wait_finished(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Both shadow answers kept, the first judgement in flight: kill the worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answers: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM jsonb_object_keys(answers)) FROM shadow_samples
             WHERE request_id = $1",
        )
        .bind(&id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if answers == Some(2) && calls(&server, JUDGE_MARK).await >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shadow answers never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(
        scores(&pool, &id).await.is_empty(),
        "killed before a judgement was stored"
    );

    let _second = spawn_worker(&vars);
    drained(&pool).await;
    let stored = scores(&pool, &id).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    // The shadow answers were not asked for again; the interrupted judgement was.
    assert_eq!(calls(&server, "\"model\":\"o-mid\"").await, 1);
    assert_eq!(spend(&pool, &id, "shadow").await.0, 2);
    assert!(calls(&server, JUDGE_MARK).await >= 3);
}

#[tokio::test]
async fn with_key_billing_the_sampled_requests_key_pays_for_its_comparisons() {
    let server = upstream(r#"{"correct": true, "grade": 5}"#, Duration::ZERO).await;
    let app = spawn(&server, &[("SHADOW_BILLING", "key")]).await;
    let pool = app.test_db.pool().await;
    let created: Value = app
        .client
        .post(app.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "team", "daily_budget_usd": 10, "monthly_budget_usd": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let answer = complete(
        &app,
        json!({"prompt": "Bill me.", "strategy": "cost"}),
        Some(&secret),
    )
    .await;
    let id = answer["request_id"].as_str().unwrap();
    drained(&pool).await;
    let (_, shadow_usd) = spend(&pool, id, "shadow").await;
    let (_, judge_usd) = spend(&pool, id, "judge").await;
    let own = answer["cost_usd"].as_f64().unwrap();
    // Day and month windows: the request's own cost and its comparisons'.
    let windows: Vec<f64> =
        sqlx::query_scalar("SELECT spent_usd FROM key_spend WHERE scope = '' ORDER BY period")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(windows.len(), 2);
    for spent in windows {
        assert!(
            (spent - (own + shadow_usd + judge_usd)).abs() < 1e-9,
            "{spent}"
        );
    }
}

#[tokio::test]
async fn a_fallback_that_served_a_planned_model_is_not_asked_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_string_contains(JUDGE_MARK))
        .respond_with(chat("o-judge", r#"{"correct": true, "grade": 4}"#))
        .with_priority(1)
        .mount(&server)
        .await;
    // The routed model is gone: the request falls back to the next candidate.
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(body_partial_json(json!({"model": "o-cheap"})))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"message": "no such model", "code": 404}})),
        )
        .mount(&server)
        .await;
    for model in ["o-mid", "o-judge"] {
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .and(body_partial_json(json!({"model": model})))
            .respond_with(chat(model, &format!("{model} answer")))
            .mount(&server)
            .await;
    }
    let app = spawn(&server, &[]).await;
    let pool = app.test_db.pool().await;
    let answer = complete(
        &app,
        json!({"prompt": "Fall back.", "strategy": "cost"}),
        None,
    )
    .await;
    let id = answer["request_id"].as_str().unwrap();
    let served = answer["model"].as_str().unwrap().to_owned();
    assert_ne!(served, "o-cheap", "{answer}");
    drained(&pool).await;
    let stored = scores(&pool, id).await;
    // The served answer (judged as served) and the one other planned model; the failed model
    // has no answer to judge.
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().any(|s| s.0 == served && s.1));
    assert_eq!(calls(&server, &format!("\"model\":\"{served}\"")).await, 1);
    assert_eq!(spend(&pool, id, "shadow").await.0, 1);
}
