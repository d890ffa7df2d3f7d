//! Test harness: every test gets its own fresh database on the Postgres named by `DATABASE_URL`
//! (default: the local one), dropped again when the test ends; `TestApp` runs the real router on
//! a random port against it.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod process;

use optimizer::api::{self, AppState};
use optimizer::config::Settings;
use optimizer::routing::RoutingEngine;
use optimizer::store::Database;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The server tests run against.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@localhost:5432/postgres".to_owned())
}

/// A database name no other test uses.
pub fn unique_db_name() -> String {
    format!(
        "optimizer_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// `server_url()` pointed at database `name` (a plain URL libpq tools accept too).
pub fn url_for(name: &str) -> String {
    optimizer::config::url_with_database(&server_url(), name).expect("DATABASE_URL is a URL")
}

/// Settings as the service would read them, with `vars` set and the rest at their defaults —
/// except `EXPLORATION_RATE`, 0 unless a test sets it: exploration may send any request to
/// another model (a pricier one too), so a test that routes and checks where a request went
/// explores only when it says so.
pub fn settings_with(vars: &[(&str, &str)]) -> Settings {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    map.entry("EXPLORATION_RATE".to_owned())
        .or_insert_with(|| "0".to_owned());
    Settings::from_lookup(|var| Ok(map.get(var).cloned())).expect("test settings are valid")
}

/// A database that exists for one test and is dropped after it (also if the test panics).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database: created, not migrated.
    pub async fn empty() -> Self {
        let name = unique_db_name();
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("connect to the test Postgres (DATABASE_URL)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = url_for(&name);
        Self { name, url }
    }

    /// A database with every migration applied, by the service's own set-up code.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        db.database().migrate().await.expect("migrations apply");
        db
    }

    pub fn settings(&self) -> Settings {
        settings_with(&[("DATABASE_URL", &self.url), ("BIND", "127.0.0.1:0")])
    }

    /// The service's own `Database` for this test database.
    pub fn database(&self) -> Database {
        Database::connect_lazy(&self.settings().pool())
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database_blocking(self.name.clone());
    }
}

/// Drops a database from outside the test's runtime (Drop cannot await), ending its sessions.
pub fn drop_database_blocking(name: String) {
    let url = server_url();
    let dropper = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut admin) = PgConnection::connect(&url).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
            }
        });
    });
    let _ = dropper.join();
}

/// The real API router on a random port, against its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Database,
    pub engine: Arc<RoutingEngine>,
    shutdown: CancellationToken,
    // Declared last: dropped after the server is told to stop.
    pub test_db: TestDb,
}

impl TestApp {
    /// A running API over a migrated database.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::migrated().await, &[]).await
    }

    /// A running API over `test_db`, with extra settings.
    pub async fn spawn_on(test_db: TestDb, vars: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("DATABASE_URL", test_db.url.as_str()),
            ("BIND", "127.0.0.1:0"),
        ];
        all.extend_from_slice(vars);
        Self::spawn_with(settings_with(&all), test_db).await
    }

    /// A running API with in-process job workers (as `optimizer serve` runs by default).
    pub async fn spawn_with_workers(test_db: TestDb, vars: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("DATABASE_URL", test_db.url.as_str()),
            ("BIND", "127.0.0.1:0"),
            ("SIMULATED_LATENCY_MS", "0"),
            ("JOB_HEARTBEAT_SECS", "1"),
        ];
        all.extend_from_slice(vars);
        Self::start(settings_with(&all), test_db, true).await
    }

    pub async fn spawn_with(settings: Settings, test_db: TestDb) -> Self {
        Self::start(settings, test_db, false).await
    }

    async fn start(settings: Settings, test_db: TestDb, workers: bool) -> Self {
        optimizer::providers::install_crypto();
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .expect("bind a random port");
        let addr = listener.local_addr().expect("local addr");
        let state = AppState::new(settings).expect("routing core starts");
        let db = state.db.clone();
        let engine = state.engine.clone();
        let shutdown = CancellationToken::new();
        optimizer::runtime::spawn_api_tasks(&state, &shutdown);
        if workers {
            optimizer::runtime::spawn_in_process_workers(&state, &shutdown)
                .expect("providers start");
        }
        tokio::spawn(api::serve(
            listener,
            api::router(state),
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        Self {
            addr,
            client: reqwest::Client::new(),
            db,
            engine,
            shutdown,
            test_db,
        }
    }

    /// Starts the server's shutdown (what SIGTERM does in `optimizer serve`).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the test server")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the test server")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Writes `text` to a fresh file and returns its path (kept for the test's lifetime).
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_db_name());
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// A catalog entry for tests.
pub fn catalog_model(
    provider: &str,
    model: &str,
    usd_in: f64,
    usd_out: f64,
    quality: f64,
) -> String {
    format!(
        "[[model]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\ninput_usd_per_mtok = {usd_in:?}\n\
         output_usd_per_mtok = {usd_out:?}\ncontext_window = 100000\nquality = {quality:?}\n\n"
    )
}

/// Polls `GET /requests/{id}` until it is finished.
pub async fn wait_finished(app: &TestApp, request_id: &str, within: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let body: serde_json::Value = app
            .get(&format!("/requests/{request_id}"))
            .await
            .json()
            .await
            .expect("request view");
        if body["status"] == "succeeded" || body["status"] == "failed" {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{request_id} unfinished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the API error shape and returns (code, message).
pub async fn error_body(resp: reqwest::Response) -> (String, String) {
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"))
        .to_owned();
    (code, message)
}

/// A child process killed (and reaped) when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a worker process — `optimizer worker`, the same code as the `optimizer-worker` binary
/// (which `cargo test` does not build for this package's tests) — with `env`, on a free port,
/// output discarded.
pub fn spawn_worker(env: &[(&str, &str)]) -> Running {
    let exe = env!("CARGO_BIN_EXE_optimizer");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("worker")
        .env("WORKER_BIND", format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("optimizer-worker starts"))
}

/// Inserts a finished request answered by simulated `model` and its metrics row, with the
/// prompt's `features` if given; returns its id.
pub async fn seed_request(
    pool: &sqlx::PgPool,
    pattern: &str,
    complexity: f32,
    model: &str,
    features: Option<&[i32]>,
) -> String {
    let id = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO requests (request_id, status, finished_at, provider, model, features, route)
         VALUES ($1, 'succeeded', now(), 'simulated', $2, $3,
                 jsonb_build_object('policy_version', (SELECT version FROM routing_policy)))",
    )
    .bind(&id)
    .bind(model)
    .bind(features)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO routing_metrics (request_id, prompt_pattern, complexity_score, strategy,
             selected_provider, selected_model, status, cost_usd, baseline_cost_usd)
         VALUES ($1, $2, $3, 'balanced', 'simulated', $4, 'succeeded', 0.001, 0.01)",
    )
    .bind(&id)
    .bind(pattern)
    .bind(complexity)
    .bind(model)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// Inserts `ratings` (score, correct) for finished requests answered by `provider/model` on
/// `pattern` — the rows the API writes, without going through it (fast boundary tests).
pub async fn seed_ratings(
    pool: &sqlx::PgPool,
    pattern: &str,
    model: &str,
    ratings: &[(i32, bool)],
) {
    for (score, correct) in ratings {
        let id = seed_request(pool, pattern, 0.3, model, None).await;
        sqlx::query(
            "INSERT INTO response_feedback (request_id, timestamp, quality_score, is_correct,
                 prompt_pattern, selected_provider, selected_model, complexity_score)
             VALUES ($1, now(), $2, $3, $4, 'simulated', $5, 0.3)",
        )
        .bind(&id)
        .bind(score)
        .bind(correct)
        .bind(pattern)
        .bind(model)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// `n` ratings with the given average score (integers spread around it) and correct share.
pub fn ratings(n: usize, scores: &[i32], correct: usize) -> Vec<(i32, bool)> {
    (0..n)
        .map(|i| (scores[i % scores.len()], i < correct))
        .collect()
}

/// A Python with the official `openai` and `anthropic` packages: `SDK_PYTHON`, or a venv made
/// under target/ on first use (pip install from PyPI).
pub fn sdk_python() -> std::path::PathBuf {
    use std::process::Command;
    if let Ok(p) = std::env::var("SDK_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv");
    let python = venv.join("bin/python");
    // One test binary at a time makes the venv.
    let lock = venv.with_extension("lock");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import openai, anthropic"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return python;
    }
    let _ = std::fs::create_dir_all(venv.parent().unwrap());
    let locked = Command::new("flock")
        .arg(&lock)
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "{py} -c 'import openai, anthropic' 2>/dev/null || \
             (python3 -m venv {venv} && {venv}/bin/pip install -q 'openai>=1.50,<3' \
              'anthropic>=0.40,<1')",
            py = python.display(),
            venv = venv.display()
        ))
        .status()
        .unwrap();
    assert!(locked.success(), "making the SDK venv failed");
    python
}

/// A new API key made through `POST /admin/keys` with the admin token `admin`: its secret.
pub async fn create_key(app: &TestApp, admin: &str, name: &str) -> String {
    let created: serde_json::Value = app
        .client
        .post(app.url("/admin/keys"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["secret"].as_str().unwrap().to_owned()
}

/// Runs `tests/sdk/<script> BASE ARGS…` with [`sdk_python`]; asserts it succeeded and returns
/// its output.
pub async fn run_sdk_script(script: &str, base: String, args: &[String]) -> String {
    let args = args.to_vec();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut argv = vec![script.display().to_string(), base];
    argv.extend(args);
    python_with(argv).await
}

/// Runs [`sdk_python`] with `argv`; asserts it succeeded and returns its output.
async fn python_with(argv: Vec<String>) -> String {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(argv)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The README's Python examples (```python blocks) that contain `marker`, each as written there.
pub fn readme_python_examples(marker: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    readme
        .split("```python\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(code, _)| code.to_owned()))
        .filter(|code| code.contains(marker))
        .collect()
}

/// Runs Python `code` with [`sdk_python`]; asserts it succeeded and returns its output.
pub async fn run_python(code: String) -> String {
    python_with(vec!["-c".to_owned(), code]).await
}

/// A [`TestApp`] with workers whose catalog is `catalog` (TOML) and whose Anthropic, Gemini and
/// OpenRouter providers all point at `upstream` (a wiremock server); the answer cache is off;
/// the admin token is [`UPSTREAM_ADMIN`] (no API key exists: client routes are open).
pub async fn spawn_with_upstream(catalog: &str, upstream: &str) -> TestApp {
    let catalog = temp_file("catalog.toml", catalog).display().to_string();
    TestApp::spawn_with_workers(
        TestDb::migrated().await,
        &[
            ("CATALOG_PATH", catalog.as_str()),
            ("ANTHROPIC_API_KEY", "a-key"),
            ("ANTHROPIC_BASE_URL", upstream),
            ("GOOGLE_API_KEY", "g-key"),
            ("GEMINI_BASE_URL", upstream),
            ("OPENROUTER_API_KEY", "o-key"),
            ("OPENROUTER_BASE_URL", upstream),
            ("CACHE_ENABLED", "false"),
            ("ADMIN_TOKEN", UPSTREAM_ADMIN),
        ],
    )
    .await
}

/// A catalog of `a-model`, `g-model` and `o-model` on Anthropic, Gemini and OpenRouter
/// ($1/$5 per 1M tokens, prior 0.9), each with `extra` TOML lines (e.g. capabilities, cache
/// prices) — the models [`spawn_with_upstream`]'s providers answer for.
pub fn upstream_catalog(extra: &str) -> String {
    [
        ("anthropic", "a-model"),
        ("gemini", "g-model"),
        ("openrouter", "o-model"),
    ]
    .iter()
    .map(|(provider, model)| {
        catalog_model(provider, model, 1.0, 5.0, 0.9)
            .replace("context_window", &format!("{extra}context_window"))
    })
    .collect()
}

/// The admin token of [`spawn_with_upstream`]'s app.
pub const UPSTREAM_ADMIN: &str = "upstream-admin";
