//! The real binaries: configuration errors stop start-up naming the variable; `optimizer serve`
//! and `optimizer-worker` create and migrate the database, answer /ready, and exit cleanly on
//! SIGTERM.

use std::process::{Command, Stdio};

use crate::common::process::{free_port, sigterm_and_wait, start, start_logged, wait_for_status};
use crate::common::{TestDb, unique_db_name, url_for};

const OPTIMIZER: &str = env!("CARGO_BIN_EXE_optimizer");

#[test]
fn invalid_configuration_stops_start_up_naming_the_variable() {
    let out = Command::new(OPTIMIZER)
        .args(["serve"])
        .env("BIND", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BIND"), "{stderr}");

    let out = Command::new(OPTIMIZER)
        .args(["migrate"])
        .env("STORE_PROMPTS", "sometimes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STORE_PROMPTS"));
}

#[tokio::test]
async fn serve_creates_and_migrates_the_database_then_stops_on_sigterm() {
    let name = unique_db_name();
    let url = url_for(&name);
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let log = crate::common::temp_file("serve.log", "");
    let server = start_logged(
        std::path::Path::new(OPTIMIZER),
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("BIND", &bind),
            ("LOG_FORMAT", "json"),
        ],
        &log,
    );
    wait_for_status(&format!("http://{bind}/health"), 200).await;
    // Polled every 50 ms while it creates and migrates its database.
    wait_for_status(&format!("http://{bind}/ready"), 200).await;

    // The container health check command agrees.
    let probe = Command::new(OPTIMIZER)
        .args(["healthcheck", "--url", &format!("http://{bind}/ready")])
        .status()
        .unwrap();
    assert!(probe.success());

    let status = sigterm_and_wait(server);
    assert!(status.success(), "exit status {status}");
    let probe = Command::new(OPTIMIZER)
        .args(["healthcheck", "--url", &format!("http://{bind}/health")])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!probe.success(), "nothing listens after shutdown");
    crate::common::drop_database_blocking(name);

    // A starting service is not an error: no ERROR line, each reason for not being ready logged
    // once, in plain words (no PostgreSQL source line, no repeated message).
    let log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{log}");
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!log.contains("at line"), "{log}");
    let not_ready: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "not ready yet")
        .map(|l| {
            l["fields"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mut distinct = not_ready.clone();
    distinct.dedup();
    assert_eq!(not_ready, distinct, "each reason once: {log}");
    assert!(
        lines
            .iter()
            .all(|l| l["fields"]["message"] != "request failed"),
        "{log}"
    );
}

#[tokio::test]
async fn migrate_command_migrates_and_worker_serves_health() {
    let test_db = TestDb::empty().await;
    let out = Command::new(OPTIMIZER)
        .args(["migrate"])
        .env("DATABASE_URL", &test_db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    test_db.database().check_ready().await.unwrap();

    let bind = format!("127.0.0.1:{}", free_port());
    // `optimizer worker` runs the same code as the optimizer-worker binary.
    let worker = start(
        std::path::Path::new(OPTIMIZER),
        &["worker"],
        &[
            ("DATABASE_URL", &test_db.url),
            ("WORKER_BIND", &bind),
            ("RUN_MIGRATIONS", "false"),
        ],
    );
    wait_for_status(&format!("http://{bind}/health"), 200).await;
    wait_for_status(&format!("http://{bind}/ready"), 200).await;
    let status = sigterm_and_wait(worker);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_malformed_catalog_stops_start_up_with_file_line_and_reason() {
    let dir = std::env::temp_dir().join(format!("catalog-{}", unique_db_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("catalog.toml");
    std::fs::write(
        &path,
        "[[model]]\nprovider = \"simulated\"\nmodel = \"x\"\ninput_usd_per_mtok = \"cheap\"\n",
    )
    .unwrap();
    let out = Command::new(OPTIMIZER)
        .args(["serve"])
        .env("CATALOG_PATH", &path)
        .env("BIND", "127.0.0.1:0")
        .env("RUN_MIGRATIONS", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("catalog.toml"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn keys_command_creates_lists_updates_rotates_and_revokes() {
    let test_db = TestDb::migrated().await;
    let keys = |args: &[&str]| {
        let out = Command::new(OPTIMIZER)
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &test_db.url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = keys(&["create", "--name", "cli", "--daily-budget-usd", "1.5"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = created["secret"].as_str().unwrap();
    let key_id = created["key"]["key_id"].as_str().unwrap();
    assert!(secret.starts_with("aco_"));
    assert_eq!(created["key"]["daily_budget_usd"], 1.5);

    let (ok, out, _) = keys(&["update", key_id, "--requests-per-minute", "10"]);
    assert!(ok);
    let updated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(updated["key"]["requests_per_minute"], 10);
    assert_eq!(
        updated["key"]["daily_budget_usd"], 1.5,
        "flags left out stay"
    );

    let (ok, out, _) = keys(&["rotate", key_id]);
    assert!(ok);
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(rotated["secret"].as_str().unwrap(), secret);

    let (ok, out, _) = keys(&["revoke", key_id]);
    assert!(ok);
    assert!(out.contains("revoked_at\": \"20"), "{out}");
    let (ok, out, _) = keys(&["list"]);
    assert!(ok);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(
        out.contains(key_id) && !out.contains(secret) && !out.contains(new_secret),
        "{out}"
    );

    let (ok, _, err) = keys(&["create", "--name", "bad", "--default-strategy", "cheapest"]);
    assert!(!ok);
    assert!(err.contains("default_strategy"), "{err}");
}

/// A fresh `optimizer serve` with no traffic exports every documented counter whose labels are
/// known in advance, at 0 (a quiet system shows 0, not "No data").
#[tokio::test]
async fn a_fresh_server_exports_every_known_counter_at_zero() {
    let test_db = TestDb::migrated().await;
    let bind = format!("127.0.0.1:{}", free_port());
    let server = start(
        std::path::Path::new(OPTIMIZER),
        &["serve"],
        &[("DATABASE_URL", &test_db.url), ("BIND", &bind)],
    );
    wait_for_status(&format!("http://{bind}/ready"), 200).await;
    let text = reqwest::get(format!("http://{bind}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
    )
    .unwrap();
    let mut checked = 0;
    for row in docs.lines().filter(|l| l.contains("| counter |")) {
        let name = row.split('`').nth(1).unwrap();
        // Labelled by API key (appear with a key's first request) or by HTTP traffic.
        if row.contains("key_id") || name == "optimizer_http_requests_total" {
            continue;
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.ends_with(" 0")),
            "{name} is not exported at 0:\n{text}"
        );
        checked += 1;
    }
    assert!(checked >= 12, "{checked}");
    assert!(
        text.contains("optimizer_alerts_total{kind=\"quality_drop\"} 0"),
        "{text}"
    );
    assert!(text.contains("optimizer_rollbacks_total{trigger=\"automatic\"} 0"));
    let status = sigterm_and_wait(server);
    assert!(status.success());
}
