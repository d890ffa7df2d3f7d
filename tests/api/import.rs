//! `optimizer import-sqlite`: a small SQLite file shaped like the Python version's, imported
//! twice (the second adds nothing), with a dry run that writes nothing.

use std::process::Command;

use crate::common::TestDb;

fn sqlite_fixture() -> std::path::PathBuf {
    let path = crate::common::temp_file("legacy.db", "");
    std::fs::remove_file(&path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE requests (id TEXT PRIMARY KEY, timestamp TEXT, prompt TEXT, response TEXT,
             provider TEXT, model TEXT, status TEXT, tokens_used INTEGER);
         INSERT INTO requests VALUES
             ('r1', '2025-11-01 10:00:00', 'What is 2+2?', '4', 'gemini', 'gemini-2.5-flash', 'success', 12),
             ('r2', '2025-11-01T11:00:00Z', 'Write a haiku', 'Leaves fall', 'anthropic', 'claude-haiku-4-5', 'success', 40),
             ('r3', 1762000000, 'Broken', NULL, 'openrouter', 'x', 'error', 0),
             (NULL, '2025-11-02', 'no id', 'x', 'a', 'b', 'success', 1);
         CREATE TABLE routing_metrics (request_id TEXT, timestamp REAL, pattern TEXT,
             complexity REAL, provider TEXT, model TEXT, cost REAL, latency_ms REAL,
             cache_hit INTEGER, reasoning TEXT);
         INSERT INTO routing_metrics VALUES
             ('r1', 1762000000.5, 'math', 0.2, 'gemini', 'gemini-2.5-flash', 0.0001, 850, 0, 'cheap'),
             ('r2', 1762003600, 'creative', 0.4, 'anthropic', 'claude-haiku-4-5', 0.0004, 1200, 1, 'x'),
             ('r9', 1762007200, 'code', 0.7, 'anthropic', 'claude-sonnet-4-5', 0.01, 3000, 0, 'y');
         CREATE TABLE response_cache (key TEXT, response TEXT, provider TEXT, model TEXT,
             created_at TEXT, hits INTEGER);
         INSERT INTO response_cache VALUES
             ('k1', '4', 'gemini', 'gemini-2.5-flash', '2025-11-01 10:00:00', 3),
             ('k2', NULL, 'gemini', 'x', '2025-11-01 10:00:00', 0);",
    )
    .unwrap();
    path
}

fn import(url: &str, path: &std::path::Path, dry_run: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_optimizer"));
    cmd.arg("import-sqlite")
        .arg(path)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG");
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn counts(pool: &sqlx::PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM routing_metrics),
                (SELECT count(*) FROM response_cache)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn imports_once_reports_skips_and_dry_runs_write_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let path = sqlite_fixture();

    let dry = import(&db.url, &path, true);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(
        dry.contains("requests: 4 rows, 3 would be inserted"),
        "{dry}"
    );
    assert_eq!(counts(&pool).await, (0, 0, 0));

    let first = import(&db.url, &path, false);
    // 3 requests + 1 stub for r9's metrics row; 3 metrics rows; 1 cache entry.
    assert_eq!(counts(&pool).await, (4, 3, 1), "{first}");
    assert!(
        first.contains("requests: 4 rows, 3 inserted, 0 already present"),
        "{first}"
    );
    assert!(first.contains("skipped 1: no request_id"), "{first}");
    assert!(
        first.contains("columns not imported (no matching column): tokens_used"),
        "{first}"
    );
    assert!(
        first.contains("columns not imported (no matching column): reasoning"),
        "{first}"
    );
    assert!(first.contains("skipped 1: no response"), "{first}");
    assert!(
        first.contains("1 requests created for routing_metrics rows that had none"),
        "{first}"
    );

    let second = import(&db.url, &path, false);
    assert_eq!(counts(&pool).await, (4, 3, 1), "{second}");
    assert!(
        second.contains("requests: 4 rows, 0 inserted, 3 already present"),
        "{second}"
    );
    assert!(
        second.contains("routing_metrics: 3 rows, 0 inserted, 3 already present"),
        "{second}"
    );

    // Values landed where they belong.
    let (status, pattern, cost, hit): (String, String, f64, bool) = sqlx::query_as(
        "SELECT r.status, m.prompt_pattern, m.cost_usd, m.cache_hit
         FROM requests r JOIN routing_metrics m USING (request_id) WHERE request_id = 'r2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), pattern.as_str(), cost, hit),
        ("succeeded", "creative", 0.0004, true)
    );
    let failed: String = sqlx::query_scalar("SELECT status FROM requests WHERE request_id = 'r3'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, "failed");
    let hits: i64 =
        sqlx::query_scalar("SELECT hit_count FROM response_cache WHERE cache_key = 'k1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hits, 3);
}
