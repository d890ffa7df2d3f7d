//! scripts/backup_db.sh and scripts/restore_db.sh: back up a populated database, restore it
//! into a fresh one, and compare row counts per table (application and queue schemas).

use std::process::Command;

use crate::common::{TestDb, ratings, seed_ratings};
use sqlx::PgPool;

async fn counts(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_tables
         WHERE schemaname IN ('public', 'apalis') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(pool)
            .await
            .unwrap();
        out.push((t, n));
    }
    out
}

#[tokio::test]
async fn backup_then_restore_into_a_fresh_database_keeps_every_row() {
    let source = TestDb::migrated().await;
    let pool = source.pool().await;
    seed_ratings(&pool, "code", "sim-lite", &ratings(12, &[5, 4], 11)).await;
    optimizer::learning::retrain_now(
        &pool,
        &optimizer::wiring::build_engine(&crate::common::settings_with(&[])).unwrap(),
        &crate::common::settings_with(&[]).learning,
        false,
    )
    .await
    .unwrap();
    let before = counts(&pool).await;
    assert!(
        before
            .iter()
            .any(|(t, n)| t == "public.response_feedback" && *n == 12)
    );
    assert!(
        before
            .iter()
            .any(|(t, n)| t == "public.routing_weights" && *n == 1)
    );

    let dir = std::env::temp_dir().join(crate::common::unique_db_name());
    let out = Command::new("scripts/backup_db.sh")
        .arg(&dir)
        .env("DATABASE_URL", &source.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backups: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("optimizer_") && name.ends_with(".sql.gz"),
        "{name}"
    );

    let target = TestDb::empty().await;
    let out = Command::new("scripts/restore_db.sh")
        .arg(&backups[0])
        .arg(&target.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = target.pool().await;
    assert_eq!(counts(&restored).await, before);
    // The restored database is ready for this build as it stands.
    target.database().check_ready().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn old_backups_are_pruned() {
    let dir = std::env::temp_dir().join(crate::common::unique_db_name());
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("optimizer_20200101_030000.sql.gz");
    std::fs::write(&old, b"old").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    let url = crate::common::url_for("postgres");
    let out = Command::new("scripts/backup_db.sh")
        .arg(&dir)
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!old.exists(), "a 40-day-old backup survived");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}
