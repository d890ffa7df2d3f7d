//! Faults against the real binaries (issue 18's suite; the Postgres restart is in
//! `tests/api/pg_restart.rs`): SIGTERM to `optimizer serve` while synchronous clients wait. Every client gets an answer (200, or 202 with its
//! `status_url`) — none is cut off — and after a restart every accepted request reaches a
//! terminal state with exactly one metrics row.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::TestDb;
use crate::common::process::{free_port, sigterm_and_wait, start, wait_for_status};
use serde_json::{Value, json};

const OPTIMIZER: &str = env!("CARGO_BIN_EXE_optimizer");
const CLIENTS: usize = 20;

fn serve(db_url: &str, bind: &str) -> crate::common::process::Running {
    start(
        std::path::Path::new(OPTIMIZER),
        &["serve"],
        &[
            ("DATABASE_URL", db_url),
            ("BIND", bind),
            // Slow answers and two at a time: most clients are still waiting at the SIGTERM.
            ("SIMULATED_LATENCY_MS", "1000"),
            ("WORKER_CONCURRENCY", "2"),
            ("COMPLETE_TIMEOUT_SECS", "60"),
            ("SHUTDOWN_TIMEOUT_SECS", "20"),
            ("CACHE_ENABLED", "false"),
            ("EXPLORATION_RATE", "0"),
        ],
    )
}

#[tokio::test]
async fn sigterm_under_load_answers_every_waiting_client_and_loses_nothing() {
    let db = TestDb::migrated().await;
    let bind = format!("127.0.0.1:{}", free_port());
    let server = serve(&db.url, &bind);
    wait_for_status(&format!("http://{bind}/ready"), 200).await;

    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, url) = (client.clone(), format!("http://{bind}/complete"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"prompt": format!("Question number {i}: what is {i} + {i}?")}))
                    .send()
                    .await
            })
        })
        .collect();
    // Every request accepted before the signal.
    let pool = db.database().pool;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n as usize == CLIENTS {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} requests accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …and some already answered, so the signal lands mid-stream.
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM requests WHERE status = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if done >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || sigterm_and_wait(server))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let (mut answered, mut accepted) = (0, Vec::new());
    for call in calls {
        let response = call
            .await
            .unwrap()
            .expect("an answer, not a cut connection");
        let code = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match code {
            200 => answered += 1,
            202 => {
                let id = body["request_id"].as_str().unwrap().to_owned();
                assert_eq!(body["status_url"], format!("/requests/{id}"));
                accepted.push(id);
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(answered + accepted.len(), CLIENTS);
    assert!(
        answered >= 2 && !accepted.is_empty(),
        "{answered} answered before the SIGTERM"
    );

    // After a restart the queued requests finish by themselves.
    let server = serve(&db.url, &bind);
    wait_for_status(&format!("http://{bind}/ready"), 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} requests never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT r.request_id, r.status,
                (SELECT count(*) FROM routing_metrics m WHERE m.request_id = r.request_id)
         FROM requests r",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), CLIENTS);
    for (id, status, metrics) in &rows {
        assert_eq!(status, "succeeded", "{id}");
        assert_eq!(*metrics, 1, "{id}: one metrics row");
    }
    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert!(accepted.iter().all(|id| ids.contains(id.as_str())));
    println!(
        "faults: {CLIENTS} clients, {answered} answered 200, {} answered 202; after restart all \
         {} succeeded, one metrics row each",
        accepted.len(),
        rows.len()
    );
}

fn worker(db_url: &str, bind: &str) -> crate::common::process::Running {
    start(
        std::path::Path::new(OPTIMIZER),
        &["worker"],
        &[
            ("DATABASE_URL", db_url),
            ("WORKER_BIND", bind),
            ("RUN_MIGRATIONS", "false"),
            ("SIMULATED_LATENCY_MS", "300"),
            ("WORKER_CONCURRENCY", "4"),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("JOB_MISSED_HEARTBEATS", "2"),
            ("CACHE_ENABLED", "false"),
        ],
    )
}

/// Sends `n` async `/complete` requests to `api`; each must be accepted (202).
async fn submit_async(api: &str, n: i64) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let r = client
            .post(format!("http://{api}/complete"))
            .json(&json!({"prompt": format!("Item {i}: name a colour"), "async": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until `sql` counts at least `n` (60 s at most).
async fn until_at_least(pool: &sqlx::PgPool, sql: &'static str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = count(pool, sql).await;
        if got >= n {
            return;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT r.request_id, r.status, r.attempts,
                        (SELECT string_agg(j.status || ' ' || coalesce(j.last_result::text, '') || ' ' || j.attempts, '; ')
                         FROM apalis.jobs j WHERE j.job::text LIKE '%' || r.request_id || '%')
                 FROM requests r WHERE r.status <> 'succeeded'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let jobs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT status, coalesce(lock_by, '-'), attempts, last_result::text
                 FROM apalis.jobs WHERE status <> 'Done' OR last_result::text NOT LIKE '%Ok%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            panic!("{sql}: {got} < {n}; unfinished: {stuck:?}; jobs not plainly done: {jobs:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn split_mode_worker_sigterm_and_sigkill_lose_nothing() {
    const REQUESTS: i64 = 40;
    let succeeded = "SELECT count(*) FROM requests WHERE status = 'succeeded'";
    let db = TestDb::migrated().await;
    let pool = db.database().pool;
    let api = format!("127.0.0.1:{}", free_port());
    let _serve = start(
        std::path::Path::new(OPTIMIZER),
        &["serve", "--no-workers"],
        &[
            ("DATABASE_URL", &db.url),
            ("BIND", &api),
            ("CACHE_ENABLED", "false"),
        ],
    );
    wait_for_status(&format!("http://{api}/ready"), 200).await;
    let bind = format!("127.0.0.1:{}", free_port());
    let first = worker(&db.url, &bind);
    wait_for_status(&format!("http://{bind}/ready"), 200).await;

    submit_async(&api, REQUESTS).await;
    // SIGTERM to a worker mid-load: it finishes what it holds and exits cleanly.
    until_at_least(&pool, succeeded, 5).await;
    let status = tokio::task::spawn_blocking(move || sigterm_and_wait(first))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let after_sigterm = count(&pool, succeeded).await;
    // SIGKILL to the next one mid-call: its jobs are rescued by the one after.
    let mut second = worker(&db.url, &bind);
    until_at_least(&pool, succeeded, after_sigterm + 5).await;
    second.0.kill().unwrap();
    let _ = second.0.wait();
    let after_sigkill = count(&pool, succeeded).await;
    let _third = worker(&db.url, &bind);
    until_at_least(&pool, succeeded, REQUESTS).await;

    let stuck = count(
        &pool,
        "SELECT count(*) FROM requests WHERE status <> 'succeeded'",
    )
    .await;
    let metrics = count(&pool, "SELECT count(*) FROM routing_metrics").await;
    let costed = count(
        &pool,
        "SELECT count(DISTINCT request_id) FROM routing_metrics WHERE cost_usd IS NOT NULL",
    )
    .await;
    assert_eq!((stuck, metrics, costed), (0, REQUESTS, REQUESTS));
    println!(
        "faults: {REQUESTS} async requests; {after_sigterm} done at the worker's SIGTERM, \
         {after_sigkill} at the next one's SIGKILL; all {REQUESTS} succeeded, {metrics} metrics \
         rows, {costed} costed once"
    );
}

/// `optimizer serve` runs the requests it accepts in its direct lane (jobs written `Running`,
/// locked by the lane's worker row). SIGKILLed mid-call, those jobs are rescued by a separate
/// worker once the lane's row is stale: every request succeeds, once.
#[tokio::test]
async fn a_killed_serve_s_direct_lane_jobs_are_rescued_by_a_worker() {
    const REQUESTS: i64 = 8;
    let db = TestDb::migrated().await;
    let pool = db.database().pool;
    let api = format!("127.0.0.1:{}", free_port());
    let mut serve = start(
        std::path::Path::new(OPTIMIZER),
        &["serve"],
        &[
            ("DATABASE_URL", &db.url),
            ("BIND", &api),
            ("SIMULATED_LATENCY_MS", "3000"),
            ("WORKER_CONCURRENCY", "4"),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("JOB_MISSED_HEARTBEATS", "2"),
            ("CACHE_ENABLED", "false"),
        ],
    );
    wait_for_status(&format!("http://{api}/ready"), 200).await;
    // The lane opens once its worker row is written (the workers start beside the API).
    until_at_least(
        &pool,
        "SELECT count(*) FROM apalis.workers WHERE id LIKE 'provider_call-direct-%'",
        1,
    )
    .await;
    submit_async(&api, REQUESTS).await;
    let in_lane = "SELECT count(*) FROM apalis.jobs
                   WHERE status = 'Running' AND lock_by LIKE 'provider_call-direct-%'";
    until_at_least(&pool, in_lane, 1).await;
    let lane_jobs = count(&pool, in_lane).await;
    serve.0.kill().unwrap();
    let _ = serve.0.wait();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM requests WHERE status = 'succeeded'"
        )
        .await,
        0,
        "killed before any call ended"
    );

    let bind = format!("127.0.0.1:{}", free_port());
    let _worker = worker(&db.url, &bind);
    until_at_least(
        &pool,
        "SELECT count(*) FROM requests WHERE status = 'succeeded'",
        REQUESTS,
    )
    .await;
    let metrics = count(&pool, "SELECT count(*) FROM routing_metrics").await;
    assert_eq!(metrics, REQUESTS, "one metrics row per request");
    println!(
        "faults: {REQUESTS} async requests to serve, {lane_jobs} running in its direct lane at \
         its SIGKILL; all {REQUESTS} succeeded through a separate worker, {metrics} metrics rows"
    );
}
