//! Postgres stopped and started under load (issue 18's fault suite), against a private cluster
//! this test creates (`initdb` + `pg_ctl` on a spare port) — never the shared one. The service
//! recovers by itself; every request a client was told about (200, 202, or an error naming its
//! id) reaches a terminal state, with one metrics row; no request is left unfinished.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::process::{free_port, start, wait_for_status};
use serde_json::{Value, json};

const OPTIMIZER: &str = env!("CARGO_BIN_EXE_optimizer");
const CLIENTS: usize = 40;

/// A throw-away Postgres 15 cluster in a temporary directory.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let dir = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(name)
}

/// Runs a Postgres tool as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &Path, args: &[&str]) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let status = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .status()
    } else {
        Command::new(program).args(args).status()
    }
    .unwrap();
    assert!(status.success(), "{} {args:?}: {status}", program.display());
}

impl Cluster {
    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("aco-pg-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let data = dir.join("data");
        as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let cluster = Self {
            dir,
            port: free_port(),
        };
        cluster.start();
        cluster
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut all = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
        ];
        all.extend_from_slice(args);
        as_postgres(&pg_bin("pg_ctl"), &all);
    }

    fn start(&self) {
        self.ctl(&["-w", "start"]);
    }

    fn stop(&self) {
        self.ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/aco", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_restart_under_load_recovers_and_loses_nothing() {
    let cluster = Cluster::create();
    let url = cluster.url();
    let bind = format!("127.0.0.1:{}", free_port());
    let _server = start(
        Path::new(OPTIMIZER),
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("BIND", &bind),
            ("SIMULATED_LATENCY_MS", "300"),
            ("CACHE_ENABLED", "false"),
            ("COMPLETE_TIMEOUT_SECS", "30"),
            ("JOB_HEARTBEAT_SECS", "1"),
            ("DB_ACQUIRE_TIMEOUT_MS", "2000"),
        ],
    );
    let base = format!("http://{bind}");
    wait_for_status(&format!("{base}/ready"), 200).await;

    // Clients arrive over ~2 s; Postgres goes away for 3 s in the middle of it.
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/complete"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                let resp = client
                    .post(url)
                    .json(&json!({"prompt": format!("Question {i}: what is {i} squared?")}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopper = tokio::task::spawn_blocking(move || {
        cluster.stop();
        std::thread::sleep(Duration::from_secs(3));
        cluster.start();
        cluster
    });
    let mut told = Vec::new();
    let (mut answered, mut accepted, mut unavailable) = (0, 0, 0);
    for call in calls {
        let (status, body) = call.await.unwrap();
        match status {
            200 => answered += 1,
            202 => accepted += 1,
            503 => {
                unavailable += 1;
                assert!(body["error"]["code"].is_string(), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
        // Every answer and every error after the request got an id names it.
        if let Some(id) = body["request_id"].as_str() {
            told.push((status, id.to_owned()));
        } else {
            assert_eq!(status, 503, "{body}");
        }
    }
    let _cluster = stopper.await.unwrap();
    assert!(unavailable > 0 || accepted > 0, "the outage was felt");

    // The service recovers by itself: ready again, and new requests are answered.
    wait_for_status(&format!("{base}/ready"), 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = client
            .post(format!("{base}/complete"))
            .json(&json!({"prompt": "After the restart: what is 2 + 2?"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everything stored finishes, once; every request a client was told about is stored.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} requests still unfinished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT r.request_id, r.status,
                (SELECT count(*) FROM routing_metrics m WHERE m.request_id = r.request_id)
         FROM requests r",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, status, metrics) in &rows {
        assert_eq!(*metrics, 1, "{id} ({status}): one metrics row");
    }
    for (answer, id) in &told {
        let stored = rows.iter().find(|r| &r.0 == id);
        match stored {
            Some((_, status, _)) => assert_eq!(status, "succeeded", "{id}"),
            // Only a 503 may name a request that was not stored (404 when polled).
            None => assert_eq!(*answer, 503, "{id} was answered {answer} but is not stored"),
        }
    }
    let told_stored = told
        .iter()
        .filter(|(_, id)| rows.iter().any(|r| &r.0 == id))
        .count();
    println!(
        "pg restart: {CLIENTS} clients: {answered} answered 200, {accepted} 202, {unavailable} \
         503; {} requests stored, all finished with one metrics row; {told_stored} of {} ids \
         told to clients stored and succeeded",
        rows.len(),
        told.len()
    );
}
