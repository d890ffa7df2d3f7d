//! What a key's rate limits and budgets add to the submit transaction (request row + job, in
//! Postgres): one insert with no limits, with per-minute limits, with per-minute limits and three
//! budgets; one at a time, and 8 at once on one key (they queue on its window rows) against 8 at
//! once with no limits. Needs `DATABASE_URL` (a scratch database is created and dropped).
//! Run: `cargo bench --bench admission`. Figures: docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use optimizer::completion::{Inserter, ProviderCall, lifecycle};
use optimizer::config::Settings;
use optimizer::store::Database;
use optimizer::store::keys::{self, Admission, BudgetLimit, KeyPolicy, NewKey, Period};
use optimizer::store::requests::{Inserted, NewRequest};

fn request(admission: Option<Admission>) -> NewRequest {
    let id = ulid::Ulid::generate().to_string();
    NewRequest {
        request_id: id,
        prompt: "What is the capital of France?".into(),
        prompt_hash: Some("0".repeat(64)),
        prompt_chars: 30,
        system: None,
        params: serde_json::json!({"max_tokens": 256}),
        route: serde_json::json!({}),
        user_id: Some("end-user".into()),
        session_id: None,
        idempotency_key: None,
        features: vec![1, 2, 3],
        api_key_id: admission.as_ref().map(|a| a.key_id.clone()),
        fingerprint: Some("f".into()),
        admission,
    }
}

/// The process's group commit of inserts without limits (as in the service: one for all).
fn inserts(db: &Database) -> &'static Inserter {
    static INSERTS: std::sync::OnceLock<std::sync::Arc<Inserter>> = std::sync::OnceLock::new();
    INSERTS.get_or_init(|| {
        let announcer = optimizer::completion::Announcer::new(db.hot.clone());
        Inserter::new(db.hot.clone(), announcer)
    })
}

async fn submit(db: &Database, admission: Option<Admission>) {
    let new = request(admission);
    let job = ProviderCall::first(&new.request_id);
    let job_id = ulid::Ulid::generate().to_string();
    let inserted = lifecycle::submit(&db.pool, inserts(db), &new, &job, &job_id, None, false)
        .await
        .unwrap();
    assert!(matches!(inserted, Inserted::New(_)), "{inserted:?}");
}

fn admission(key_id: &str, budgets: bool) -> Admission {
    let budget = |scope: &str, period| BudgetLimit {
        scope: scope.into(),
        period,
        limit_usd: 1e12,
    };
    Admission {
        key_id: key_id.into(),
        requests_per_minute: Some(i32::MAX),
        tokens_per_minute: Some(i32::MAX),
        tokens: 300,
        budgets: if budgets {
            vec![
                budget("", Period::Day),
                budget("", Period::Month),
                budget("end-user", Period::Day),
            ]
        } else {
            Vec::new()
        },
        reserve_usd: 0.001,
    }
}

/// 8 submissions at once (all on `key`'s limits, if given): time until all 8 are committed.
fn eight(rt: &tokio::runtime::Runtime, db: &Database, key: Option<&str>, iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        rt.block_on(async {
            let all: Vec<_> = (0..8)
                .map(|_| {
                    let db = db.clone();
                    let a = key.map(|k| admission(k, true));
                    optimizer::tasks::spawn("bench", async move { submit(&db, a).await })
                })
                .collect();
            for t in all {
                t.await.unwrap();
            }
        });
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let Ok(server) = std::env::var("DATABASE_URL") else {
        eprintln!("admission bench skipped: set DATABASE_URL");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let name = format!("bench_admission_{}", std::process::id());
    let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
    let settings = Settings::from_lookup(|var| {
        Ok(match var {
            "DATABASE_URL" => Some(url.clone()),
            "DB_MAX_CONNECTIONS" => Some("16".into()),
            _ => None,
        })
    })
    .unwrap();
    let db = {
        let _in_runtime = rt.enter();
        Database::connect_lazy(&settings.pool())
    };
    rt.block_on(db.setup()).unwrap();
    let key = "key_bench";
    rt.block_on(keys::create(
        &db.pool,
        &NewKey {
            key_id: key,
            name: "bench",
            prefix: "aco_bench",
            secret_hash: &[7u8; 32],
            expires_at: None,
            policy: &KeyPolicy::default(),
        },
    ))
    .unwrap();

    let mut group = c.benchmark_group("submit");
    group.bench_function("no_limits", |b| b.iter(|| rt.block_on(submit(&db, None))));
    group.bench_function("rate_limits", |b| {
        b.iter(|| rt.block_on(submit(&db, Some(admission(key, false)))))
    });
    group.bench_function("rate_limits_and_3_budgets", |b| {
        b.iter(|| rt.block_on(submit(&db, Some(admission(key, true)))))
    });
    group.bench_function("8_at_once_no_limits", |b| {
        b.iter_custom(|iters| eight(&rt, &db, None, iters))
    });
    group.bench_function("8_at_once_one_key_with_limits", |b| {
        b.iter_custom(|iters| eight(&rt, &db, Some(key), iters))
    });
    group.finish();

    drop(db);
    rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
