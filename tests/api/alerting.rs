//! The degradation alert end to end, with the real binaries: `optimizer serve --no-workers` and
//! an `optimizer worker` on loopback, scraped by a real Prometheus that evaluates the project's
//! own rule file (only its intervals shortened), which notifies a real Alertmanager running the
//! project's own configuration (only its intervals and the webhook address replaced), which
//! delivers to a webhook receiver this test runs.
//!
//! Real traffic and ratings through the API: a retrain on good ratings, then ratings of the
//! requests the new policy routed — a 9% drop raises nothing, a 15% drop reaches the receiver
//! with its labels and annotations, and the recovery sends the resolved notification.
//!
//! Needs Debian's `prometheus` and `prometheus-alertmanager` packages (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::TestDb;
use crate::common::process::{Running, free_port, start, wait_for_status};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const OPTIMIZER: &str = env!("CARGO_BIN_EXE_optimizer");
const ADMIN: &str = "alerting-test-admin";
const ALERT: &str = "OptimizerQualityDropAfterRetrain";

/// The path of `name` on PATH, or a panic saying what to install.
fn binary(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install Debian's prometheus and prometheus-alertmanager \
                 packages (.ci/run does)"
            )
        })
}

/// The deployment's rule file with its intervals shortened: every `for:` to 2 s, every group
/// `interval:` to 1 s. Thresholds, expressions, labels and annotations are untouched.
fn rules_for_test(rules: &str) -> String {
    rewrite(rules, &[("for:", "2s"), ("interval:", "1s")])
}

/// The deployment's Alertmanager configuration with the webhook pointed at `hook` and its
/// grouping waits shortened.
fn alertmanager_for_test(config: &str, hook: &str) -> String {
    let config = config.replace("http://alert-webhook.invalid/ALERT_WEBHOOK_URL", hook);
    rewrite(&config, &[("group_wait:", "0s"), ("group_interval:", "1s")])
}

/// Replaces the value of every YAML line whose key is one of `keys` (first element).
fn rewrite(yaml: &str, keys: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        match keys.iter().find(|(k, _)| trimmed.starts_with(k)) {
            Some((k, v)) => out.push_str(&format!("{indent}{k} {v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

struct Stack {
    api: String,
    prometheus: String,
    _processes: Vec<Running>,
    _dir: TempDir,
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::common::unique_db_name());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_stack(db_url: &str, hook: &str, extra: &[(&str, &str)]) -> Stack {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new();
    let api = format!("127.0.0.1:{}", free_port());
    let worker = format!("127.0.0.1:{}", free_port());
    let prometheus = format!("127.0.0.1:{}", free_port());
    let alertmanager = format!("127.0.0.1:{}", free_port());
    let common: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", db_url),
        ("RUN_MIGRATIONS", "false"),
        ("ADMIN_TOKEN", ADMIN),
        ("CACHE_ENABLED", "false"),
        ("EXPLORATION_RATE", "0"),
        ("SIMULATED_LATENCY_MS", "0"),
        ("ROUTING_RELOAD_SECS", "1"),
        ("RETRAIN_ENABLED", "false"),
        ("DRIFT_CHECK_SECS", "1"),
    ];
    let common: Vec<(&str, &str)> = [
        common.as_slice(),
        if extra.is_empty() {
            &[("AUTO_ROLLBACK", "false")]
        } else {
            extra
        },
    ]
    .concat();
    // The API's metrics on their own listener, as the compose file deploys them.
    let api_metrics = format!("127.0.0.1:{}", free_port());
    let serve = start(
        Path::new(OPTIMIZER),
        &["serve", "--no-workers"],
        &[
            common.as_slice(),
            &[
                ("BIND", api.as_str()),
                ("METRICS_BIND", api_metrics.as_str()),
            ],
        ]
        .concat(),
    );
    let worker_process = start(
        Path::new(OPTIMIZER),
        &["worker"],
        &[common.as_slice(), &[("WORKER_BIND", worker.as_str())]].concat(),
    );

    let rules_src =
        std::fs::read_to_string(root.join("prometheus/rules/optimizer.rules.yml")).unwrap();
    let rules = dir.path().join("optimizer.rules.yml");
    std::fs::write(&rules, rules_for_test(&rules_src)).unwrap();
    let am_src = std::fs::read_to_string(root.join("prometheus/alertmanager.yml")).unwrap();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(&am_config, alertmanager_for_test(&am_src, hook)).unwrap();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n\
             scrape_configs:\n\
             \x20 - job_name: optimizer-api\n    static_configs:\n      - targets: [\"{api_metrics}\"]\n\
             \x20 - job_name: optimizer-worker\n    static_configs:\n      - targets: [\"{worker}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let am = start(
        &binary("prometheus-alertmanager"),
        &[
            &format!("--config.file={}", am_config.display()),
            &format!("--storage.path={}", dir.path().join("am").display()),
            &format!("--web.listen-address={alertmanager}"),
            "--cluster.listen-address=",
        ],
        &[],
    );
    let prom = start(
        &binary("prometheus"),
        &[
            &format!("--config.file={}", prom_config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            &format!("--web.listen-address={prometheus}"),
            "--rules.alert.resend-delay=1s",
        ],
        &[],
    );
    wait_for_status(&format!("http://{api}/ready"), 200).await;
    wait_for_status(&format!("http://{worker}/ready"), 200).await;
    wait_for_status(&format!("http://{alertmanager}/-/ready"), 200).await;
    wait_for_status(&format!("http://{prometheus}/-/ready"), 200).await;
    Stack {
        api: format!("http://{api}"),
        prometheus: format!("http://{prometheus}"),
        _processes: vec![serve, worker_process, am, prom],
        _dir: dir,
    }
}

/// Sends `scores.len()` prompts through `/complete` and rates each answer with its score;
/// returns the pattern they were routed as.
async fn traffic(client: &reqwest::Client, api: &str, round: &str, scores: &[i32]) -> String {
    let mut pattern = None;
    for (i, score) in scores.iter().enumerate() {
        let answer: Value = client
            .post(format!("{api}/complete"))
            .json(&json!({ "prompt": format!("Hello! How are you doing today, friend? ({round} {i})") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "succeeded", "{answer}");
        let p = answer["pattern"].as_str().unwrap().to_owned();
        assert_eq!(pattern.get_or_insert_with(|| p.clone()), &p);
        let rated = client
            .post(format!("{api}/feedback"))
            .json(
                &json!({ "request_id": answer["request_id"], "quality_score": score,
                           "is_correct": true }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(rated.status(), 201);
    }
    pattern.unwrap()
}

/// Runs a retrain through the admin API and waits until the API routes with its policy.
/// Runs a retrain through the admin API and waits until the API routes with it; returns its run
/// id.
async fn retrain(client: &reqwest::Client, api: &str) -> String {
    let admin = |m: reqwest::Method, path: &str| {
        client.request(m, format!("{api}{path}")).bearer_auth(ADMIN)
    };
    let queued: Value = admin(
        reqwest::Method::POST,
        "/admin/learning/retrain?dry_run=false",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let status_url = queued["status_url"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id;
    loop {
        let run: Value = admin(reqwest::Method::GET, &status_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "succeeded" {
            assert!(run["changes_count"].as_i64().unwrap() > 0, "{run}");
            run_id = run["run_id"].as_str().unwrap().to_owned();
            break;
        }
        assert!(
            Instant::now() < deadline && run["status"] != "failed",
            "{run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let s: Value = admin(reqwest::Method::GET, "/admin/learning/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored = s["policy_version"].as_i64().unwrap();
        if stored > 0 && s["engine_policy_version"].as_i64() == Some(stored) {
            return run_id;
        }
        assert!(
            Instant::now() < deadline,
            "the API never loaded the policy: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prometheus' answer to an instant `query`.
async fn prom_query(client: &reqwest::Client, prometheus: &str, query: &str) -> Value {
    client
        .get(
            url::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", query)])
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until Prometheus has scraped the drift gauges at `drop` with `ratings` rated requests.
async fn until_scraped(
    client: &reqwest::Client,
    prometheus: &str,
    pattern: &str,
    drop: f64,
    ratings: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every process exports the gauges (at 0 until its drift check has judged a retrain): the
    // worker's, which checks, is the highest.
    let query = format!(
        "max by (pattern) (optimizer_quality_drop_ratio{{pattern=\"{pattern}\"}}) \
         and on(pattern) max by (pattern) \
             (optimizer_quality_since_retrain_ratings{{pattern=\"{pattern}\"}}) == {ratings}"
    );
    loop {
        let r = prom_query(client, prometheus, &query).await;
        let seen = r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if seen.is_some_and(|v| (v - drop).abs() < 1e-6) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw a drop of {drop} over {ratings} ratings: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Alertmanager notifications the receiver got for the quality alert.
async fn notifications(hook: &MockServer) -> Vec<Value> {
    hook.received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|n| n["commonLabels"]["alertname"] == ALERT)
        .collect()
}

/// Waits (60 s at most) for a notification with `status` (`firing` or `resolved`).
async fn until_notified(hook: &MockServer, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(n) = notifications(hook)
            .await
            .into_iter()
            .find(|n| n["status"] == status)
        {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} notification of {ALERT} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_quality_drop_after_a_retrain_reaches_the_receiver_through_prometheus_and_alertmanager() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let db = TestDb::migrated().await;
    let stack = start_stack(&db.url, &format!("{}/alerts", hook.uri()), &[]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();

    // Before the retrain: 20 answers rated 5.
    let pattern = traffic(&client, &stack.api, "before", &[5; 20]).await;
    let run_id = retrain(&client, &stack.api).await;

    // Under the new policy: 20 answers averaging 4.55, a 9% drop — no alert.
    let mut nine: Vec<i32> = vec![5; 11];
    nine.extend([4; 9]);
    assert_eq!(traffic(&client, &stack.api, "nine", &nine).await, pattern);
    until_scraped(&client, &stack.prometheus, &pattern, 0.09, 20.0).await;
    // Several evaluations and the rule's `for` (2 s) pass with the gauges at 9%.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(notifications(&hook).await.is_empty());

    // 20 more averaging 3.95: 4.25 over 40, a 15% drop — the alert reaches the receiver.
    let mut fifteen: Vec<i32> = vec![4; 19];
    fifteen.push(3);
    traffic(&client, &stack.api, "fifteen", &fifteen).await;
    until_scraped(&client, &stack.prometheus, &pattern, 0.15, 40.0).await;
    let firing = until_notified(&hook, "firing").await;
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], ALERT, "{firing}");
    assert_eq!(alert["labels"]["pattern"], pattern.as_str(), "{firing}");
    assert_eq!(alert["labels"]["severity"], "critical", "{firing}");
    assert_eq!(alert["labels"]["job"], "optimizer-worker", "{firing}");
    assert_eq!(
        alert["annotations"]["summary"],
        format!("Quality for {pattern} dropped more than 10% since the last retrain"),
        "{firing}"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("15%"),
        "{firing}"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains(&format!("retrain {run_id}")),
        "the notification names the retrain: {firing}"
    );
    let runbook = alert["annotations"]["runbook"].as_str().unwrap();
    assert!(runbook.contains("/admin/learning/rollback"), "{runbook}");
    assert!(
        runbook.contains(&format!("/admin/learning/runs/{run_id}"))
            && !runbook.contains("{run_id}"),
        "{runbook}"
    );

    // Recovery: 30 answers rated 5 bring the average to 4.57 (an 8.6% drop): resolved.
    traffic(&client, &stack.api, "recovery", &[5; 30]).await;
    let resolved = until_notified(&hook, "resolved").await;
    assert_eq!(resolved["alerts"][0]["labels"]["pattern"], pattern.as_str());
    println!(
        "alerting: pattern {pattern}: 9% drop → no notification; 15% drop → firing; recovery → \
         resolved; {} notifications in {:.1} s",
        notifications(&hook).await.len(),
        started.elapsed().as_secs_f64()
    );
}

/// With `AUTO_ROLLBACK=true` the service rolls a bad retrain back itself: its own webhook names
/// the run and says so, and Prometheus' alert describes the policy now serving — the drop gauge
/// falls to 0 and the rolled-back flag is 1, so the alert resolves (or never fires) instead of
/// telling the operator to roll back what is already rolled back.
#[tokio::test]
async fn an_automatic_rollback_resolves_the_prometheus_alert() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let db = TestDb::migrated().await;
    let in_app = format!("{}/in-app", hook.uri());
    let stack = start_stack(
        &db.url,
        &format!("{}/alerts", hook.uri()),
        &[
            ("AUTO_ROLLBACK", "true"),
            ("ALERT_WEBHOOK_URL", in_app.as_str()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let pattern = traffic(&client, &stack.api, "before", &[5; 20]).await;
    let run_id = retrain(&client, &stack.api).await;
    let mut fifteen: Vec<i32> = vec![4; 19];
    fifteen.push(3);
    traffic(&client, &stack.api, "fifteen", &fifteen).await;

    // The service's own notification: the run, the drop, rolled back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_app_alert = loop {
        let found = hook
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == "/in-app")
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .next();
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no in-app alert within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        in_app_alert["alert"]["run_id"],
        run_id.as_str(),
        "{in_app_alert}"
    );
    assert_eq!(in_app_alert["alert"]["rolled_back"], true, "{in_app_alert}");
    assert!(
        in_app_alert["text"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{in_app_alert}"
    );

    // Prometheus sees the pattern rolled back with no drop left.
    let query = format!(
        "max by (pattern) (optimizer_quality_rolled_back{{pattern=\"{pattern}\"}}) == 1 \
         and on(pattern) max by (pattern) (optimizer_quality_drop_ratio{{pattern=\"{pattern}\"}}) == 0"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = prom_query(&client, &stack.prometheus, &query).await;
        if r["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never scraped as rolled back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several evaluations and the rule's `for` pass: whatever fired before the rollback was
    // scraped has resolved, and nothing fires now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = notifications(&hook).await;
    if sent.iter().any(|n| n["status"] == "firing") {
        until_notified(&hook, "resolved").await;
    }
    let r: Value = client
        .get(format!("{}/api/v1/alerts", stack.prometheus))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let active: Vec<&Value> = r["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == ALERT)
        .collect();
    assert!(active.is_empty(), "{active:?}");
    println!(
        "alerting: auto-rollback of {run_id} for {pattern}: in-app notification rolled_back=true; \
         Prometheus alert {} ({} notifications)",
        if sent.iter().any(|n| n["status"] == "firing") {
            "fired and resolved"
        } else {
            "never fired"
        },
        sent.len()
    );
}
