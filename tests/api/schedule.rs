//! The retrain schedule: two worker processes on a one-second schedule queue and run exactly
//! one retrain per tick.

use std::time::{Duration, Instant};

use crate::common::{Running, TestDb, spawn_worker};

fn worker(database_url: &str) -> Running {
    spawn_worker(&[
        ("DATABASE_URL", database_url),
        ("RUN_MIGRATIONS", "false"),
        ("RETRAIN_CRON", "* * * * * *"),
    ])
}

#[tokio::test]
async fn two_workers_run_one_retrain_per_tick() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let a = worker(&db.url);
    let b = worker(&db.url);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    drop((a, b));

    let per_tick: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT scheduled_for, count(*) FROM retraining_runs WHERE trigger = 'scheduled'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(per_tick.len() >= 2, "too few ticks: {per_tick:?}");
    assert!(per_tick.iter().all(|(_, n)| *n == 1), "{per_tick:?}");
    // Ticks are whole seconds apart (a tick both processes slept through may be absent under
    // load; what matters is that none ran twice).
    for pair in per_tick.windows(2) {
        let gap = (pair[1].0 - pair[0].0).num_milliseconds();
        assert!(gap >= 1000 && gap % 1000 == 0, "{per_tick:?}");
    }

    // The queued runs ran (a run with nothing to learn succeeds and says so), each once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = worker(&db.url);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM retraining_runs WHERE status IN ('queued', 'running')
               AND scheduled_for <= (SELECT max(scheduled_for) FROM retraining_runs) - interval '2 seconds'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{unfinished} runs never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM retraining_runs WHERE status = 'failed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed, 0);
}
