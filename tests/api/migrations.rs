//! The schema: migrations apply to an empty database, re-apply as a no-op, and carry every
//! column, key, index and constraint of the seed's SQL.

use crate::common::TestDb;
use optimizer::store::{Database, Hot, NotReady};
use sqlx::PgPool;

const APP_TABLES: &[&str] = &[
    "requests",
    "routing_metrics",
    "response_cache",
    "response_feedback",
    "feedback_aggregates",
    "model_performance_history",
    "routing_weights",
    "routing_policy",
    "routing_snapshots",
    "retraining_runs",
    "alerts",
];

async fn migration_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM public._sqlx_migrations),
                (SELECT count(*) FROM apalis._sqlx_migrations)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_reapply_as_a_no_op() {
    let test_db = TestDb::empty().await;
    let db = test_db.database();
    assert!(
        matches!(db.check_ready().await, Err(NotReady::NotMigrated(_))),
        "an empty database is not ready"
    );

    db.setup().await.unwrap();
    db.check_ready().await.unwrap();
    let pool = test_db.pool().await;
    let first = migration_counts(&pool).await;
    assert!(first.0 >= 1 && first.1 >= 1, "{first:?}");

    let tables: Vec<String> = APP_TABLES
        .iter()
        .chain(&["apalis.jobs", "apalis.workers"])
        .map(|t| t.to_string())
        .collect();
    for table in &tables {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists.is_some(), "table {table} missing");
    }

    // Every index costs each insert (and each non-HOT update) a write: no table keeps two
    // indexes on the same columns with the same predicate (apalis' own migrations left four
    // such pairs; ours drops one of each). apalis.workers' `unique_worker_id` stays beside its
    // primary key: the foreign key from apalis.jobs.lock_by is attached to it.
    let duplicates: Vec<String> = sqlx::query_scalar(
        "SELECT string_agg(indexrelid::regclass::text, ' = ' ORDER BY indexrelid::regclass::text)
         FROM pg_index
         WHERE indrelid::regclass::text = ANY($1)
           AND indexrelid::regclass::text <> 'apalis.unique_worker_id'
         GROUP BY indrelid, indkey::text, indexprs::text, indpred::text
         HAVING count(*) > 1",
    )
    .bind(&tables)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(duplicates.is_empty(), "duplicate indexes: {duplicates:?}");

    db.setup().await.unwrap();
    db.setup().await.unwrap();
    assert_eq!(
        migration_counts(&pool).await,
        first,
        "re-running applied nothing new"
    );
    db.check_ready().await.unwrap();
}

#[tokio::test]
async fn setup_creates_a_missing_database() {
    let name = crate::common::unique_db_name();
    let settings =
        crate::common::settings_with(&[("DATABASE_URL", &crate::common::url_for(&name))]);
    let db = Database::connect_lazy(&settings.pool());
    let result = async {
        assert!(db.create_if_missing().await.unwrap(), "created");
        assert!(
            !db.create_if_missing().await.unwrap(),
            "second call finds it"
        );
        db.migrate().await.unwrap();
        db.check_ready().await.unwrap();
    };
    result.await;
    db.pool.close().await;
    crate::common::drop_database_blocking(name);
}

/// (column, data type, nullable) of a table, from information_schema.
async fn columns(pool: &PgPool, table: &str) -> Vec<(String, String, bool)> {
    sqlx::query_as::<_, (String, String, String)>(
        "SELECT column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(c, t, n)| (c, t, n == "YES"))
    .collect()
}

fn assert_has_columns(
    table: &str,
    actual: &[(String, String, bool)],
    expected: &[(&str, &str, bool)],
) {
    for (name, ty, nullable) in expected {
        let found = actual
            .iter()
            .find(|(c, _, _)| c == name)
            .unwrap_or_else(|| panic!("{table}.{name} missing; have {actual:?}"));
        assert_eq!(found.1, *ty, "{table}.{name} type");
        assert_eq!(found.2, *nullable, "{table}.{name} nullability");
    }
}

#[tokio::test]
async fn seed_tables_have_every_column_key_index_and_constraint() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;

    // The seed's columns. Types follow the seed except TIMESTAMP → timestamptz (see migration).
    assert_has_columns(
        "response_feedback",
        &columns(&pool, "response_feedback").await,
        &[
            ("id", "integer", false),
            ("request_id", "text", false),
            ("timestamp", "timestamp with time zone", false),
            ("quality_score", "integer", false),
            ("is_correct", "boolean", true),
            ("is_helpful", "boolean", true),
            ("prompt_pattern", "text", true),
            ("selected_provider", "text", true),
            ("selected_model", "text", true),
            ("complexity_score", "real", true),
            ("user_id", "text", true),
            ("session_id", "text", true),
            ("comment", "text", true),
        ],
    );
    assert_has_columns(
        "model_performance_history",
        &columns(&pool, "model_performance_history").await,
        &[
            ("id", "integer", false),
            ("pattern", "text", false),
            ("provider", "text", false),
            ("model", "text", false),
            ("avg_quality_score", "real", true),
            ("correctness_rate", "real", true),
            ("sample_count", "integer", true),
            ("confidence_level", "text", true),
            ("avg_cost", "real", true),
            ("total_cost", "real", true),
            ("updated_at", "timestamp with time zone", false),
            ("retraining_run_id", "text", true),
        ],
    );

    // Primary keys (SERIAL → a sequence default).
    for table in ["response_feedback", "model_performance_history"] {
        let pk: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = $1::regclass AND i.indisprimary",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(pk, vec!["id".to_owned()], "{table} primary key");
        let default: Option<String> = sqlx::query_scalar(
            "SELECT column_default::text FROM information_schema.columns
             WHERE table_name = $1 AND column_name = 'id'",
        )
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            default.unwrap_or_default().starts_with("nextval("),
            "{table}.id is SERIAL"
        );
    }

    // FOREIGN KEY (request_id) REFERENCES routing_metrics(request_id)
    let fks: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT kcu.column_name::text, ccu.table_name::text, ccu.column_name::text
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage kcu
           ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
         JOIN information_schema.constraint_column_usage ccu
           ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
         WHERE tc.table_name = 'response_feedback' AND tc.constraint_type = 'FOREIGN KEY'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        fks,
        vec![(
            "request_id".to_owned(),
            "routing_metrics".to_owned(),
            "request_id".to_owned()
        )]
    );

    // UNIQUE(pattern, provider, model, retraining_run_id), columns in that order.
    let uniques: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
         FROM pg_constraint c
         CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.conrelid = 'model_performance_history'::regclass AND c.contype = 'u'
         GROUP BY c.oid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        uniques.contains(&vec![
            "pattern".to_owned(),
            "provider".to_owned(),
            "model".to_owned(),
            "retraining_run_id".to_owned()
        ]),
        "{uniques:?}"
    );

    // The seed's three indexes, on the seed's columns.
    for (index, column) in [
        ("idx_feedback_pattern", "prompt_pattern"),
        ("idx_feedback_model", "selected_model"),
        ("idx_feedback_timestamp", "timestamp"),
    ] {
        let def: Option<String> =
            sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
                .bind(index)
                .fetch_optional(&pool)
                .await
                .unwrap();
        let def = def.unwrap_or_else(|| panic!("index {index} missing"));
        assert!(
            def.contains("response_feedback") && def.contains(column),
            "{index}: {def}"
        );
    }
}

/// Inserts a finished request and its routing_metrics row, the parents of a rating.
async fn finished_request(pool: &PgPool, id: &str) {
    sqlx::query(
        "INSERT INTO requests (request_id, status, finished_at) VALUES ($1, 'succeeded', now())",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO routing_metrics (request_id, prompt_pattern, complexity_score, strategy,
             selected_provider, selected_model, status)
         VALUES ($1, 'code', 0.4, 'balanced', 'simulated', 'sim-small', 'succeeded')",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

fn sqlstate(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(sqlx::Error::Database(e)) => e.code().unwrap_or_default().into_owned(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn constraints_reject_what_the_domain_forbids() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    finished_request(&pool, "req-1").await;

    let rate = |request: &'static str, score: i32, user: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO response_feedback (request_id, timestamp, quality_score, is_correct, user_id)
             VALUES ($1, now(), $2, true, $3)",
        )
        .bind(request)
        .bind(score)
        .bind(user)
        .execute(&pool)
    };
    assert_eq!(sqlstate(rate("req-1", 4, Some("u1")).await), "ok");
    // 23514 check_violation: score outside 1..5.
    assert_eq!(sqlstate(rate("req-1", 0, Some("u2")).await), "23514");
    assert_eq!(sqlstate(rate("req-1", 6, Some("u2")).await), "23514");
    // 23503 foreign_key_violation: no routing_metrics row for the request.
    assert_eq!(sqlstate(rate("unknown", 3, None).await), "23503");
    // 23505 unique_violation: one rating per (request, user), anonymous included.
    assert_eq!(sqlstate(rate("req-1", 2, Some("u1")).await), "23505");
    assert_eq!(sqlstate(rate("req-1", 2, None).await), "ok");
    assert_eq!(sqlstate(rate("req-1", 2, None).await), "23505");

    // A request's idempotency key is unique; absent keys are not.
    let with_key = |id: &'static str, key: Option<&'static str>| {
        sqlx::query("INSERT INTO requests (request_id, idempotency_key) VALUES ($1, $2)")
            .bind(id)
            .bind(key)
            .execute(&pool)
    };
    assert_eq!(sqlstate(with_key("a", Some("k")).await), "ok");
    assert_eq!(sqlstate(with_key("b", Some("k")).await), "23505");
    assert_eq!(sqlstate(with_key("c", None).await), "ok");
    assert_eq!(sqlstate(with_key("d", None).await), "ok");

    // A scheduled retrain tick is recorded once, however many workers fire it.
    let tick = |id: &'static str| {
        sqlx::query(
            "INSERT INTO retraining_runs (run_id, trigger, scheduled_for)
             VALUES ($1, 'scheduled', '2026-11-29T02:00:00Z')",
        )
        .bind(id)
        .execute(&pool)
    };
    assert_eq!(sqlstate(tick("run-1").await), "ok");
    assert_eq!(sqlstate(tick("run-2").await), "23505");
}

/// A live provider_call worker row `id` in `apalis.workers`, as a worker process writes one.
async fn add_worker(pool: &PgPool, id: &str) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ($1, 'provider_call', 'PostgresStorage', '', now())",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// A worker keeps its id for its process's lifetime and apalis keeps `lock_by` on ended jobs:
/// looking up a worker's unfinished jobs (rescue, shutdown, acknowledgement) must not read
/// every job it ever ran.
#[tokio::test]
async fn a_worker_s_ended_jobs_are_not_read_to_find_its_running_ones() {
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    add_worker(&pool, "w1").await;
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, lock_by, lock_at, done_at)
         SELECT '\\x7b7d'::bytea, 'done-' || i, 'provider_call', 'Done', 'w1', now(), now()
         FROM generate_series(1, 2000) i
         UNION ALL
         SELECT '\\x7b7d'::bytea, 'running-1', 'provider_call', 'Running', 'w1', now(), NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE apalis.jobs")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    // Whatever the planner would prefer, take an index if there is one.
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, FORMAT JSON)
         SELECT id FROM apalis.jobs WHERE lock_by = 'w1' AND status IN ('Queued', 'Running')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    fn visited(node: &serde_json::Value) -> f64 {
        let own = [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
        ]
        .iter()
        .filter_map(|k| node.get(*k).and_then(|v| v.as_f64()))
        .sum::<f64>();
        let children = node
            .get("Plans")
            .and_then(|p| p.as_array())
            .map_or(0.0, |p| p.iter().map(visited).sum());
        own + children
    }
    let root = &plan[0]["Plan"];
    assert_eq!(root["Actual Rows"].as_f64(), Some(1.0), "{plan}");
    assert!(
        visited(root) <= 4.0,
        "rows visited to find one running job among 2,000 ended ones: {plan}"
    );
}

/// A worker process takes an announced provider_call job and its request in one statement:
/// the job locked by the worker, the request running — or, for a stale job, the job locked and
/// no request (the run then does nothing); a job whose arguments are not JSON locks nothing.
#[tokio::test]
async fn an_announced_job_is_claimed_with_its_request_in_one_statement() {
    use optimizer::store::requests::{PROVIDER_CALL_QUEUE, claim_pending_request};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    add_worker(&pool, "w1").await;
    sqlx::query(
        "INSERT INTO requests (request_id, status, attempts, prompt, params, route)
         VALUES ('r1', 'queued', 2, 'hello', '{\"stream\": false}', '{\"candidates\": []}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let job = |id: &str, generation: i32| {
        let args = serde_json::json!({
            "request_id": "r1", "generation": generation, "candidate": 0, "tries": 0,
            "provider_ms": 0
        });
        let (id, args) = (id.to_owned(), serde_json::to_vec(&args).unwrap());
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO apalis.jobs (job, id, job_type, status, run_at)
                 VALUES ($1, $2, $3, 'Pending', now() - interval '1 second')",
            )
            .bind(args)
            .bind(id)
            .bind(PROVIDER_CALL_QUEUE)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let state = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, String)>(
                "SELECT j.status, j.lock_by, r.status FROM apalis.jobs j, requests r
                 WHERE j.id = $1 AND r.request_id = 'r1'",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // The current generation: the job and its request.
    job("j-current", 2).await;
    let claim = claim_pending_request(&pool, "j-current", "w1")
        .await
        .unwrap()
        .expect("the pending job is taken");
    let request = claim.request.expect("its request is claimed");
    assert_eq!(request.prompt.as_deref(), Some("hello"));
    assert_eq!(request.route, serde_json::json!({"candidates": []}));
    let args: serde_json::Value = serde_json::from_slice(&claim.args).unwrap();
    assert_eq!(args["generation"], 2);
    assert_eq!(
        state("j-current").await,
        ("Running".into(), Some("w1".into()), "running".into())
    );
    // Taken once only.
    assert!(
        claim_pending_request(&pool, "j-current", "w1")
            .await
            .unwrap()
            .is_none()
    );

    // A stale generation: the job is locked (to be acknowledged), the request left alone.
    sqlx::query("UPDATE requests SET status = 'queued' WHERE request_id = 'r1'")
        .execute(&pool)
        .await
        .unwrap();
    job("j-stale", 1).await;
    let claim = claim_pending_request(&pool, "j-stale", "w1")
        .await
        .unwrap()
        .expect("the pending job is taken");
    assert!(claim.request.is_none());
    assert_eq!(
        state("j-stale").await,
        ("Running".into(), Some("w1".into()), "queued".into())
    );

    // Arguments that are not JSON: an error, and nothing locked.
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, run_at)
         VALUES ('\\xff00'::bytea, 'j-garbled', $1, 'Pending', now() - interval '1 second')",
    )
    .bind(PROVIDER_CALL_QUEUE)
    .execute(&pool)
    .await
    .unwrap();
    assert!(
        claim_pending_request(&pool, "j-garbled", "w1")
            .await
            .is_err()
    );
    assert_eq!(state("j-garbled").await.0, "Pending");
}

/// Jobs announced together are claimed in one statement: each pending one with its own
/// request, leaving out one another worker runs and an id that is not there.
#[tokio::test]
async fn announced_jobs_are_claimed_together_each_with_its_own_request() {
    use optimizer::store::requests::{PROVIDER_CALL_QUEUE, claim_pending_requests};
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    add_worker(&pool, "w1").await;
    add_worker(&pool, "w2").await;
    for (n, status) in [
        (1, "Pending"),
        (2, "Pending"),
        (3, "Running"),
        (4, "Pending"),
    ] {
        sqlx::query(
            "INSERT INTO requests (request_id, status, attempts, prompt, params, route)
             VALUES ($1, 'queued', 0, $2, '{}', '{}')",
        )
        .bind(format!("r{n}"))
        .bind(format!("prompt {n}"))
        .execute(&pool)
        .await
        .unwrap();
        let args = serde_json::json!({
            "request_id": format!("r{n}"), "generation": 0, "candidate": 0, "tries": 0,
            "provider_ms": 0
        });
        sqlx::query(
            "INSERT INTO apalis.jobs (job, id, job_type, status, lock_by, run_at)
             VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'Running' THEN 'w2' END,
                     now() - interval '1 second')",
        )
        .bind(serde_json::to_vec(&args).unwrap())
        .bind(format!("j{n}"))
        .bind(PROVIDER_CALL_QUEUE)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }

    let mut claims = claim_pending_requests(&pool, &["j1", "j2", "j3", "j-missing"], "w1")
        .await
        .unwrap();
    claims.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let got: Vec<(String, Option<String>)> = claims
        .into_iter()
        .map(|c| (c.job_id, c.request.and_then(|r| r.prompt)))
        .collect();
    assert_eq!(
        got,
        [
            ("j1".to_owned(), Some("prompt 1".to_owned())),
            ("j2".to_owned(), Some("prompt 2".to_owned()))
        ]
    );
    let states: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT j.id, j.lock_by, r.status FROM apalis.jobs j
         JOIN requests r ON r.request_id = convert_from(j.job, 'UTF8')::jsonb ->> 'request_id'
         ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("j1".into(), Some("w1".into()), "running".into()),
            ("j2".into(), Some("w1".into()), "running".into()),
            ("j3".into(), Some("w2".into()), "queued".into()),
            ("j4".into(), None, "queued".into()),
        ]
    );
    // Taken once only.
    assert!(
        claim_pending_requests(&pool, &["j1", "j2"], "w1")
            .await
            .unwrap()
            .is_empty()
    );
}

/// The worker's finish tells a waiting API process the finished request itself when it fits in
/// a notification — the same record a read of the row gives — and only its id otherwise.
#[tokio::test]
async fn a_finish_notifies_the_finished_request_when_it_fits() {
    use optimizer::completion::Announcer;
    use optimizer::store::requests::{
        self as store, DONE_CHANNEL, Finish, MetricsRow, Outcome, RequestRecord,
    };
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    let announcer = Announcer::new(Hot::new(pool.clone()));
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(DONE_CHANNEL).await.unwrap();
    let metrics = MetricsRow {
        prompt_pattern: "general".into(),
        complexity_score: 0.25,
        complexity_tier: Some("low".into()),
        strategy: "balanced".into(),
        selected_provider: "openai_compat".into(),
        selected_model: "m".into(),
        reason: Some("cheapest good enough".into()),
        confidence: Some("high".into()),
        explored: false,
        alternatives: serde_json::json!([{"model": "n", "cost": 0.5}]),
        input_tokens: Some(12),
        output_tokens: Some(3456),
        cached_input_tokens: None,
        cache_write_tokens: Some(0),
        cost_usd: Some(0.00123),
        baseline_model: Some("big".into()),
        baseline_cost_usd: Some(0.0456),
        latency_ms: 12.5,
        provider_latency_ms: Some(10.25),
        cache_hit: false,
        fallback_count: 0,
    };
    for (id, response, in_commit) in [
        ("small", "héllo \"world\"\n".to_owned(), false),
        ("large", "x".repeat(9000), false),
        ("in-commit", "hi".to_owned(), true),
    ] {
        sqlx::query(
            "INSERT INTO requests (request_id, status, attempts, prompt, params, route)
             VALUES ($1, 'running', 1, 'hi', '{}', '{\"candidates\": []}')",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        let outcome = Outcome::Succeeded {
            response,
            provider: "openai_compat".into(),
            model: "m".into(),
            finish_reason: "stop".into(),
            tool_calls: vec![],
        };
        let finish = Finish {
            request_id: id,
            generation: Some(1),
            outcome: &outcome,
            metrics: &metrics,
            keep_prompt: false,
            cache: None,
            notify: true,
            notify_in_commit: in_commit,
            job: None,
        };
        let finished = store::finish(&pool, &finish).await.unwrap().unwrap();
        let payload = if in_commit {
            // Sent by the finish's own commit; nothing left to send.
            assert!(finished.notice.is_none());
            next_notification(&mut listener).await
        } else {
            // Not by the finish's commit (a NOTIFY serialises the commits that send one): the
            // first notification is one sent after it, then the one it returned.
            store::notify_all(&pool, &[DONE_CHANNEL], &["after"])
                .await
                .unwrap();
            assert_eq!(next_notification(&mut listener).await, "after");
            let notice = finished.notice.clone().expect("a notification to send");
            announcer.announce(DONE_CHANNEL, notice.clone()).await;
            let payload = next_notification(&mut listener).await;
            assert_eq!(payload, notice);
            payload
        };
        let read = store::get(&pool, id, None).await.unwrap().unwrap();
        match id {
            "small" | "in-commit" => {
                let notified = RequestRecord::notified(&payload).expect("the record itself");
                assert_eq!(format!("{notified:?}"), format!("{read:?}"));
                assert_eq!(format!("{notified:?}"), format!("{:?}", finished.record));
            }
            _ => {
                assert_eq!(payload, id);
                assert!(RequestRecord::notified(&payload).is_none());
            }
        }
    }
}

/// The payload of the next notification `listener` receives.
async fn next_notification(listener: &mut sqlx::postgres::PgListener) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap()
        .payload()
        .to_owned()
}

/// Concurrent submissions' inserts share one statement and one commit (group commit), while a
/// lone one is written at once; a row the batch cannot take fails only its own request, and an
/// idempotency key used twice in one batch writes one request.
#[tokio::test]
async fn concurrent_inserts_share_a_commit_and_a_bad_row_fails_only_itself() {
    use optimizer::completion::{Announcer, Inserter};
    use optimizer::store::requests::{
        self as store, FirstJob, JOB_INSERT_CHANNEL, NewRequest, PROVIDER_CALL_QUEUE, batch_row,
    };
    let test_db = TestDb::migrated().await;
    let pool = test_db.pool().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(JOB_INSERT_CHANNEL).await.unwrap();
    let announcer = Announcer::new(Hot::new(pool.clone()));
    let inserter = Inserter::new(Hot::new(pool.clone()), announcer.clone());
    let any_row = |id: &str, idempotency_key: Option<&str>, prompt: &str, held: bool| {
        let request = NewRequest {
            request_id: id.into(),
            prompt: prompt.into(),
            prompt_hash: Some("h".into()),
            prompt_chars: 2,
            system: None,
            params: serde_json::json!({}),
            route: serde_json::json!({"candidates": []}),
            user_id: None,
            session_id: None,
            idempotency_key: idempotency_key.map(Into::into),
            features: vec![3, 1, 2],
            api_key_id: None,
            fingerprint: Some("f".into()),
            admission: None,
        };
        let args = format!(r#"{{"request_id":"{id}","generation":1}}"#);
        let job_id = format!("job-{id}");
        let job = FirstJob {
            id: &job_id,
            args: args.into_bytes(),
            max_attempts: 3,
            run_by: None,
            held,
        };
        (id.to_owned(), batch_row(&request, &job).unwrap())
    };
    let row = |id: &str, idempotency_key: Option<&str>, prompt: &str| {
        any_row(id, idempotency_key, prompt, false)
    };
    let held_row = |id: &str, held: bool| any_row(id, None, "hi", held);
    // Inserts sent while the table is held: the first ones wait in their statements, the rest
    // queue up behind them.
    let while_held = |rows: Vec<(String, String)>| {
        let (pool, inserter) = (pool.clone(), inserter.clone());
        async move {
            let mut holder = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE requests IN EXCLUSIVE MODE")
                .execute(&mut *holder)
                .await
                .unwrap();
            let tasks: Vec<_> = rows
                .into_iter()
                .map(|(id, row)| {
                    let inserter = inserter.clone();
                    tokio::spawn(async move {
                        let written = inserter.insert(id.clone(), row, None).await;
                        (id, written.map_err(|e| e.to_string()))
                    })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            holder.commit().await.unwrap();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        }
    };

    // A lone request is written at once, by a statement of its own. Its job is not announced
    // by the queue's insert trigger (whose NOTIFY would serialise these commits): the first
    // notification is one sent after it. It is due at once.
    let (id, lone) = row("lone", None, "hi");
    assert!(inserter.insert(id, lone, None).await.unwrap());
    store::notify_all(&pool, &[JOB_INSERT_CHANNEL], &["after"])
        .await
        .unwrap();
    assert_eq!(next_notification(&mut listener).await, "after");
    add_worker(&pool, "w1").await;
    let claim = store::claim_pending_request(&pool, "job-lone", "w1")
        .await
        .unwrap()
        .expect("due at once");
    assert!(claim.request.is_some());
    // A job to announce is announced in apalis' format: by the insert's commit while the
    // process sends no other notification, after it otherwise (here: one held in flight).
    let announced = async |listener: &mut sqlx::postgres::PgListener| {
        let payload: serde_json::Value =
            serde_json::from_str(&next_notification(listener).await).unwrap();
        assert_eq!(payload["job_type"], PROVIDER_CALL_QUEUE);
        payload["id"].as_str().unwrap().to_owned()
    };
    let (id, in_commit) = row("in-commit", None, "hi");
    let job = Some("job-in-commit".to_owned());
    assert!(inserter.insert(id, in_commit, job).await.unwrap());
    assert_eq!(announced(&mut listener).await, "job-in-commit");
    // (Past the quiet time a notification from a commit needs after the last one sent.)
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let busy = announcer.in_commit().expect("nothing else is being sent");
    assert!(announcer.in_commit().is_none(), "one at a time");
    let (id, after) = row("after-commit", None, "hi");
    let job = Some("job-after-commit".to_owned());
    assert!(inserter.insert(id, after, job).await.unwrap());
    drop(busy);
    assert_eq!(announced(&mut listener).await, "job-after-commit");

    // A job for worker processes (`held`) is hidden from the queue's fetch (due later) for
    // FETCH_HOLD_MS from its insert, yet claimed by id at once by an announced worker; one not
    // held is due at once.
    let before: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    // One statement, so both have the same `now()`.
    let (_, held) = held_row("held", true);
    let (_, not_held) = held_row("not-held", false);
    let written = store::insert_batch(&pool, &[&held, &not_held], false)
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let due: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, run_at FROM apalis.jobs WHERE id IN ('job-held', 'job-not-held') ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let hold = chrono::Duration::milliseconds(store::FETCH_HOLD_MS.into());
    assert_eq!(due[0].0, "job-held");
    assert!(due[0].1 >= before + hold, "{due:?} {before}");
    assert_eq!(
        due[0].1 - due[1].1,
        hold - chrono::Duration::microseconds(1),
        "the other is due at once"
    );
    let claim = store::claim_pending_request(&pool, "job-held", "w1")
        .await
        .unwrap()
        .expect("an announced worker takes a held job at once");
    assert!(claim.request.is_some());

    let ids: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    let results = while_held(ids.iter().map(|id| row(id, None, "hi")).collect()).await;
    assert!(results.iter().all(|(_, w)| w == &Ok(true)), "{results:?}");
    let (written, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM requests WHERE request_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(written, 12);
    assert!(commits <= 6, "12 concurrent inserts took {commits} commits");
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs j JOIN requests r ON j.id = 'job-' || r.request_id
         WHERE r.request_id = ANY($1) AND j.status = 'Pending' AND r.status = 'queued'
           AND r.features = '{3,1,2}' AND convert_from(j.job, 'UTF8')::jsonb ->> 'request_id' = r.request_id",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, 12, "each request with its pending job");

    // PostgreSQL text cannot hold NUL: that request fails; the others are written; of two
    // with one idempotency key, one is written.
    let results = while_held(vec![
        row("a1", None, "hi"),
        row("a2", None, "hi"),
        row("b1", None, "hi"),
        row("bad", None, "nul \u{0} byte"),
        row("dup1", Some("same"), "hi"),
        row("dup2", Some("same"), "hi"),
        row("b2", None, "hi"),
    ])
    .await;
    for (id, written) in &results {
        match id.as_str() {
            "bad" => assert!(written.is_err(), "{results:?}"),
            "dup1" | "dup2" => assert!(written.is_ok(), "{results:?}"),
            _ => assert_eq!(written, &Ok(true), "{results:?}"),
        }
    }
    let dups = results
        .iter()
        .filter(|(id, w)| id.starts_with("dup") && w == &Ok(true))
        .count();
    assert_eq!(dups, 1, "{results:?}");
}

/// The hot path's connections: kept between statements instead of going back to the pool
/// (whose release pings each one), closed when lost or when a statement was cancelled, never
/// waited for, and closed with the pool.
#[tokio::test]
async fn hot_connections_are_kept_between_statements_and_closed_when_in_doubt() {
    let test_db = TestDb::empty().await;
    // A pool of 4: up to 2 kept.
    let settings = crate::common::settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("DB_MAX_CONNECTIONS", "4"),
    ]);
    let db = Database::connect_lazy(&settings.pool());
    let pid = async |hot: &Hot| -> i32 {
        hot.run(async |c| {
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(c)
                .await
        })
        .await
        .unwrap()
    };
    let admin = test_db.pool().await;
    let alive = async |pid: i32| -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(&admin)
            .await
            .unwrap()
    };

    // One statement after another runs on the same connection, which is not the pool's.
    let first = pid(&db.hot).await;
    assert_eq!(pid(&db.hot).await, first);
    assert_eq!(db.pool.size(), 0, "the pool opened nothing");

    // A database error leaves it usable: still kept.
    let failed = (db.hot)
        .run(async |c| sqlx::query("SELECT 1/0").execute(c).await)
        .await;
    assert!(
        matches!(failed, Err(sqlx::Error::Database(_))),
        "{failed:?}"
    );
    assert_eq!(pid(&db.hot).await, first);

    // All kept connections busy: a statement takes one from the pool instead of waiting.
    let (a, b) = (db.hot.conn().await.unwrap(), db.hot.conn().await.unwrap());
    let third = pid(&db.hot).await;
    assert!(third != first, "a third connection");
    assert_eq!(db.pool.size(), 1, "from the pool");
    a.done(&Ok(()));
    b.done(&Ok(()));

    // A lost connection is not handed out again.
    let lost = (db.hot)
        .run(async |c| {
            sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(c)
                .await
        })
        .await;
    assert!(lost.is_err(), "{lost:?}");
    for _ in 0..3 {
        assert!(
            alive(pid(&db.hot).await).await,
            "a statement ran on a live connection"
        );
    }

    // A statement cancelled mid-way: its connection is closed, and the next statement gets its
    // own result, not the cancelled one's.
    let sleeper = pid(&db.hot).await;
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        (db.hot).run(async |c| {
            sqlx::query_scalar::<_, i32>("SELECT 7 FROM pg_sleep(2)")
                .fetch_one(c)
                .await
        }),
    )
    .await;
    assert!(cancelled.is_err(), "the sleep was cancelled");
    let (mut a, mut b) = (db.hot.conn().await.unwrap(), db.hot.conn().await.unwrap());
    for conn in [&mut a, &mut b] {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert!(
            pid != sleeper,
            "the cancelled statement's connection is not handed out"
        );
    }
    drop((a, b));
    let next: i32 = (db.hot)
        .run(async |c| sqlx::query_scalar("SELECT 8").fetch_one(c).await)
        .await
        .unwrap();
    assert_eq!(next, 8);

    // Closing closes the kept connections.
    let kept = pid(&db.hot).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), db.close())
        .await
        .expect("the pool closes with connections kept");
    let mut open = true;
    for _ in 0..100 {
        open = alive(kept).await;
        if !open {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!open, "the kept connection was closed");
}
