//! `optimizer eval`: replays recorded model outcomes through the real service — API, queue,
//! workers, trainer, engine — the way RouteLLM and RouterBench evaluate routers.
//!
//! 1. Start the service in this process on a scratch database (dropped at the end) with the
//!    replay provider answering from the dataset (or connect to a running one with `--url`).
//! 2. Training prompts go through `POST /complete` with exploration on; each answer is rated
//!    through `POST /feedback` from the recorded outcome, as a user would rate it. After each of
//!    `--rounds` chunks, a retrain runs through the admin API and the new policy is awaited.
//! 3. Held-out prompts go through `POST /complete` with `"explore": false` (once before any
//!    training: the priors-only policy; once after: the learned policy).
//! 4. [`report`] compares the learned policy with every single model, the best and cheapest
//!    model, a random router and the oracle.

pub use crate::dataset;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::providers::ProviderId;
use crate::routing::{Catalog, Strategy};
use crate::store::Database;
use crate::types::{RequestStatus, RunStatus};
use dataset::{Dataset, Record};
use report::{Prices, Report, RoundSummary, Routed};

/// What `optimizer eval` was asked to do.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub dataset: PathBuf,
    /// Default: the dataset's path with the extension `.catalog.toml`.
    pub catalog: Option<PathBuf>,
    pub train_frac: f64,
    pub seed: u64,
    pub strategy: Strategy,
    pub rounds: usize,
    pub out: PathBuf,
    /// EXPLORATION_RATE of the service while training.
    pub exploration_rate: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Use only this many records (after shuffling).
    pub limit: Option<usize>,
    /// A running service to drive instead of starting one (it must use the replay provider
    /// with the same dataset and catalog).
    pub url: Option<String>,
    pub admin_token: Option<String>,
    /// Keep the scratch database (its name is printed).
    pub keep_db: bool,
    /// Also measure the service before any rating (priors only).
    pub compare_priors: bool,
    /// Share of the training prompts loaded as a bootstrap dataset (every model's outcome, as
    /// `optimizer train --dataset` loads it) before the rest is sent and rated; 0: ratings only.
    pub bootstrap_frac: f64,
    /// SHADOW_RATE while training (0: no shadow comparisons).
    pub shadow_rate: f64,
    /// SHADOW_MODELS: a number or `all`.
    pub shadow_models: String,
    /// JUDGE_MODEL (default: the catalog's most expensive replay model).
    pub judge_model: Option<String>,
    /// Route the held-out prompts after every round.
    pub learning_curve: bool,
}

/// What one `/complete` call gave.
#[derive(Debug, Clone)]
struct Answer {
    request_id: String,
    model: Option<String>,
    explored: bool,
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    admin_token: String,
    strategy: Strategy,
}

impl Api {
    /// The same service, asked with another strategy.
    fn with_strategy(&self, strategy: Strategy) -> Self {
        Self {
            strategy,
            ..self.clone()
        }
    }

    async fn complete(&self, prompt: &str, explore: bool) -> Result<Answer, String> {
        let res = self
            .http
            .post(format!("{}/complete", self.base))
            .json(&json!({
                "prompt": prompt,
                "strategy": self.strategy.as_str(),
                "explore": explore,
                // Held-out prompts are never sampled: their judged answers would be training
                // evidence.
                "shadow": explore,
                "user_id": "optimizer-eval",
            }))
            .send()
            .await
            .map_err(|e| format!("POST /complete: {e}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| format!("POST /complete: {status}: {e}"))?;
        let request_id = body["request_id"].as_str().unwrap_or_default().to_owned();
        if !status.is_success() || body["status"] != RequestStatus::Succeeded.as_str() {
            return Err(format!("POST /complete: {status}: {body}"));
        }
        Ok(Answer {
            request_id,
            model: body["model"].as_str().map(str::to_owned),
            explored: body["routing"]["explored"].as_bool().unwrap_or(false),
        })
    }

    async fn feedback(&self, request_id: &str, stars: i64, correct: bool) -> Result<(), String> {
        let res = self
            .http
            .post(format!("{}/feedback", self.base))
            .json(&json!({
                "request_id": request_id,
                "quality_score": stars,
                "is_correct": correct,
                "user_id": "optimizer-eval",
            }))
            .send()
            .await
            .map_err(|e| format!("POST /feedback: {e}"))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(format!("POST /feedback: {status}: {text}"));
        }
        Ok(())
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .with_context(|| path.to_owned())?;
        let status = res.status();
        let body: Value = res.json().await.with_context(|| path.to_owned())?;
        if !status.is_success() {
            bail!("{path}: {status}: {body}");
        }
        Ok(body)
    }

    /// Shadow comparisons so far (`/admin/learning/status`).
    async fn shadow(&self) -> anyhow::Result<Value> {
        let status = self
            .admin(reqwest::Method::GET, "/admin/learning/status")
            .await?;
        Ok(status["shadow"].clone())
    }

    /// Waits until every sampled request's shadow calls and judgements are done.
    async fn shadow_done(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let shadow = self.shadow().await?;
            if shadow["pending"].as_i64().unwrap_or(0) == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("shadow comparisons still pending after 10 minutes: {shadow}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the service's requests have cost so far (`/routing/metrics`).
    async fn spent(&self) -> anyhow::Result<f64> {
        let metrics = self.admin(reqwest::Method::GET, "/routing/metrics").await?;
        Ok(metrics["cost_usd"].as_f64().unwrap_or(0.0))
    }

    /// Runs a real retrain and waits until this service routes with its result: (changes,
    /// policy version).
    async fn retrain(&self) -> anyhow::Result<(i64, i64, Option<Value>)> {
        let queued = self
            .admin(
                reqwest::Method::POST,
                "/admin/learning/retrain?dry_run=false",
            )
            .await?;
        let status_url = queued["status_url"]
            .as_str()
            .ok_or_else(|| anyhow!("retrain answered without status_url: {queued}"))?
            .to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let run = loop {
            let run = self.admin(reqwest::Method::GET, &status_url).await?;
            match run["status"].as_str().and_then(RunStatus::parse) {
                Some(RunStatus::Succeeded) => break run,
                Some(RunStatus::Failed) => bail!("retrain failed: {}", run["error"]),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("retrain did not finish within 5 minutes: {run}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        loop {
            let s = self
                .admin(reqwest::Method::GET, "/admin/learning/status")
                .await?;
            let (stored, engine) = (
                s["policy_version"].as_i64().unwrap_or(0),
                s["engine_policy_version"].as_i64().unwrap_or(-1),
            );
            if engine >= stored {
                let promise = run["after_metrics"]
                    .get("quality_target")
                    .filter(|q| !q.is_null())
                    .cloned();
                return Ok((run["changes_count"].as_i64().unwrap_or(0), engine, promise));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the service did not load policy version {stored} (at {engine})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A service started by `eval` in this process.
struct Service {
    url: String,
    admin_token: String,
    shutdown: CancellationToken,
    db: Database,
    engine: std::sync::Arc<crate::routing::RoutingEngine>,
    database: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_service(
    opts: &EvalOptions,
    catalog: &Path,
    judge: Option<&str>,
) -> anyhow::Result<Service> {
    let base = Settings::from_env()?;
    let database = format!(
        "optimizer_eval_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let admin_token = ulid::Ulid::generate().to_string();
    let overrides: HashMap<&str, String> = HashMap::from([
        (
            "DATABASE_URL",
            crate::config::url_with_database(base.database_url.expose_secret(), &database)
                .ok_or_else(|| anyhow!("DATABASE_URL is not a URL"))?,
        ),
        ("BIND", "127.0.0.1:0".to_owned()),
        ("CATALOG_PATH", catalog.display().to_string()),
        ("PROVIDERS", "replay".to_owned()),
        ("REPLAY_DATASET", opts.dataset.display().to_string()),
        ("ADMIN_TOKEN", admin_token.clone()),
        ("EXPLORATION_RATE", opts.exploration_rate.to_string()),
        // Exploration drawn from the seed and the prompt: the same run routes the same way.
        ("EXPLORATION_SEED", opts.seed.to_string()),
        // Every answer must come from the replay provider, and nothing may change the policy
        // behind the evaluation's back.
        ("CACHE_ENABLED", "false".to_owned()),
        ("RETRAIN_ENABLED", "false".to_owned()),
        ("AUTO_ROLLBACK", "false".to_owned()),
        ("BASELINE_MODEL", String::new()),
        ("API_KEYS", String::new()),
        ("SHADOW_RATE", opts.shadow_rate.to_string()),
        ("SHADOW_MODELS", opts.shadow_models.clone()),
        ("JUDGE_MODEL", judge.unwrap_or_default().to_owned()),
        // The evaluation measures the spend; it does not cap it.
        ("SHADOW_BUDGET_USD", "1000000000".to_owned()),
    ]);
    let settings = Settings::from_lookup(|var| {
        if let Some(v) = overrides.get(var) {
            return Ok(Some(v.clone()));
        }
        Ok(std::env::var(var).ok())
    })?;
    crate::providers::install_crypto();
    let db = Database::connect_lazy(&settings.pool());
    db.setup()
        .await
        .with_context(|| format!("creating the scratch database {database}"))?;
    let state = crate::api::AppState::new(settings)?;
    let engine = state.engine.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    crate::runtime::spawn_api_tasks(&state, &shutdown);
    let workers = crate::runtime::spawn_in_process_workers(&state, &shutdown)?;
    let server = {
        let shutdown = shutdown.clone();
        let router = crate::api::router(state);
        crate::tasks::spawn("eval_server", async move {
            if let Err(e) =
                crate::api::serve(listener, router, shutdown, Duration::from_secs(5)).await
            {
                tracing::error!(error = %e, "eval service stopped");
            }
        })
    };
    Ok(Service {
        url,
        admin_token,
        shutdown,
        db,
        engine,
        database,
        tasks: vec![workers, server],
    })
}

impl Service {
    async fn stop(self, keep_db: bool) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if keep_db {
            eprintln!("scratch database kept: {}", self.database);
            return Ok(());
        }
        self.db
            .drop_database()
            .await
            .with_context(|| format!("dropping the scratch database {}", self.database))
    }
}

fn progress(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>18} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Sends `records` (and rates them when `rate`), `concurrency` at a time, in input order.
async fn send_all<'a>(
    api: &Api,
    records: &[&'a Record],
    explore: bool,
    rate: bool,
    concurrency: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<(&'a Record, Result<Answer, String>)> {
    futures_util::stream::iter(records.iter().copied())
        .map(|record| async move {
            let answer = api.complete(&record.prompt, explore).await;
            let answer = match answer {
                Ok(a) if rate => {
                    let outcome = a.model.as_deref().and_then(|m| record.outcomes.get(m));
                    match outcome {
                        Some(o) => {
                            let (stars, correct) = o.rating();
                            api.feedback(&a.request_id, stars, correct)
                                .await
                                .map(|()| a)
                        }
                        None => Err(format!("answered by {:?}, which has no outcome", a.model)),
                    }
                }
                other => other,
            };
            bar.inc(1);
            (record, answer)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

fn routed<'a>(results: &[(&'a Record, Result<Answer, String>)]) -> Vec<Routed<'a>> {
    results
        .iter()
        .map(|(record, a)| Routed {
            record,
            model: a.as_ref().ok().and_then(|a| a.model.clone()),
        })
        .collect()
}

fn first_error(results: &[(&Record, Result<Answer, String>)]) -> Option<String> {
    results
        .iter()
        .find_map(|(r, a)| a.as_ref().err().map(|e| format!("{}: {e}", r.id)))
}

/// Loads the catalog and checks it against the dataset: every replay model needs outcomes.
fn load_catalog(path: &Path, data: &Dataset) -> anyhow::Result<(Catalog, Prices)> {
    let catalog = Catalog::load(Some(path))?;
    let known = data.models();
    let replay: Vec<&str> = catalog
        .models()
        .iter()
        .filter(|m| m.provider == ProviderId::Replay)
        .map(|m| m.model.as_str())
        .collect();
    if replay.is_empty() {
        bail!(
            "catalog {} has no model with provider = \"replay\"",
            path.display()
        );
    }
    if let Some(m) = replay.iter().find(|m| !known.iter().any(|k| k == *m)) {
        bail!(
            "catalog {} lists {m:?}, which has no outcome in the dataset (models there: {})",
            path.display(),
            known.join(", ")
        );
    }
    let ignored: Vec<&String> = known
        .iter()
        .filter(|k| !replay.contains(&k.as_str()))
        .collect();
    if !ignored.is_empty() {
        eprintln!(
            "note: models in the dataset but not in the catalog are not evaluated: {ignored:?}"
        );
    }
    let prices = Prices::from_catalog(&catalog);
    Ok((catalog, prices))
}

/// The judge of shadow comparisons: `asked` (a replay model of the catalog), else the most
/// expensive replay model (the strongest, as a judge usually is).
fn judge_model(catalog: &Catalog, asked: Option<&str>) -> anyhow::Result<String> {
    let replay = catalog
        .models()
        .iter()
        .filter(|m| m.provider == ProviderId::Replay);
    let found = match asked {
        Some(name) => replay.clone().find(|m| m.model == name || m.key() == name),
        None => replay.clone().max_by(|a, b| {
            (a.input_usd_per_mtok + a.output_usd_per_mtok)
                .total_cmp(&(b.input_usd_per_mtok + b.output_usd_per_mtok))
        }),
    };
    found
        .map(|m| format!("replay/{}", m.model))
        .ok_or_else(|| anyhow!("--judge-model {asked:?} is not a replay model of the catalog"))
}

/// Runs the evaluation and writes `report.json`, `report.txt` and `cost_vs_accuracy.svg` to
/// `--out`.
pub async fn run(opts: EvalOptions) -> anyhow::Result<Report> {
    if !(opts.train_frac > 0.0 && opts.train_frac < 1.0) {
        bail!(
            "--train-frac must be between 0 and 1, got {}",
            opts.train_frac
        );
    }
    if opts.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !(0.0..=1.0).contains(&opts.bootstrap_frac) {
        bail!(
            "--bootstrap-frac must be between 0 and 1, got {}",
            opts.bootstrap_frac
        );
    }
    if opts.bootstrap_frac > 0.0 && opts.url.is_some() {
        bail!("--bootstrap-frac needs the evaluation's own service (not --url)");
    }
    let data = Dataset::load(&opts.dataset)?;
    let catalog_path = opts
        .catalog
        .clone()
        .unwrap_or_else(|| opts.dataset.with_extension("catalog.toml"));
    let (catalog, prices) = load_catalog(&catalog_path, &data)?;
    if !(0.0..=1.0).contains(&opts.shadow_rate) {
        bail!(
            "--shadow-rate must be between 0 and 1, got {}",
            opts.shadow_rate
        );
    }
    if opts.shadow_rate > 0.0 && opts.url.is_some() {
        bail!("--shadow-rate needs the evaluation's own service (not --url)");
    }
    let judge = (opts.shadow_rate > 0.0)
        .then(|| judge_model(&catalog, opts.judge_model.as_deref()))
        .transpose()?;

    let mut order: Vec<&Record> = data.records.iter().collect();
    fastrand::Rng::with_seed(opts.seed).shuffle(&mut order);
    if let Some(limit) = opts.limit {
        order.truncate(limit);
    }
    let n_train = ((order.len() as f64) * opts.train_frac).round() as usize;
    let n_train = n_train.clamp(1, order.len().saturating_sub(1).max(1));
    let (train, test) = order.split_at(n_train);
    if test.is_empty() {
        bail!(
            "no held-out prompts: the dataset has {} records",
            order.len()
        );
    }

    let service = match &opts.url {
        Some(_) => None,
        None => Some(start_service(&opts, &catalog_path, judge.as_deref()).await?),
    };
    let (base, admin_token) = match (&service, &opts.url) {
        (Some(s), _) => (s.url.clone(), s.admin_token.clone()),
        (None, Some(url)) => (
            url.trim_end_matches('/').to_owned(),
            opts.admin_token
                .clone()
                .ok_or_else(|| anyhow!("--url needs --admin-token (or ADMIN_TOKEN)"))?,
        ),
        (None, None) => bail!("no service"),
    };
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        base,
        admin_token,
        strategy: opts.strategy,
    };
    let n_boot = ((train.len() as f64) * opts.bootstrap_frac).round() as usize;
    let (boot, train) = train.split_at(n_boot.min(train.len()));
    let bootstrap = service.as_ref().map(|s| Bootstrap {
        pool: &s.db.pool,
        engine: &s.engine,
        records: boot,
    });
    let result = drive(&opts, &api, &data, &prices, bootstrap, train, test).await;
    if let Some(service) = service {
        service.stop(opts.keep_db).await?;
    }
    let report = result?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let write = |name: &str, text: String| {
        let path = opts.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("report.json", serde_json::to_string_pretty(&report)? + "\n")?;
    write("report.txt", report::render(&report))?;
    write("cost_vs_accuracy.svg", report::svg(&report))?;
    Ok(report)
}

/// Training prompts loaded as a bootstrap dataset into the evaluation's own service.
struct Bootstrap<'a> {
    pool: &'a sqlx::PgPool,
    engine: &'a crate::routing::RoutingEngine,
    records: &'a [&'a Record],
}

impl Bootstrap<'_> {
    /// Stores every model's outcome of the records as `optimizer train --dataset` does, then
    /// retrains through the API: the round-0 summary.
    async fn load(&self, api: &Api) -> anyhow::Result<(RoundSummary, Option<Value>)> {
        let dataset = Dataset::from_records(self.records.iter().map(|r| (*r).clone()).collect());
        let (rows, _) = crate::bootstrap::outcomes(self.engine, &dataset);
        crate::store::bootstrap::insert(self.pool, "eval-bootstrap", &rows).await?;
        let (changes, policy_version, promise) = api.retrain().await?;
        let summary = RoundSummary {
            round: 0,
            prompts: self.records.len(),
            rated: 0,
            explored: 0,
            failed: 0,
            changes,
            policy_version,
            models: BTreeMap::new(),
            held_out: None,
        };
        Ok((summary, promise))
    }
}

async fn drive(
    opts: &EvalOptions,
    api: &Api,
    data: &Dataset,
    prices: &Prices,
    bootstrap: Option<Bootstrap<'_>>,
    train: &[&Record],
    test: &[&Record],
) -> anyhow::Result<Report> {
    let curve = if opts.learning_curve { opts.rounds } else { 0 };
    let total = train.len() + test.len() * (3 + usize::from(opts.compare_priors) + curve);
    let bar = progress(total);

    let prior = if opts.compare_priors {
        bar.set_message("priors only");
        let results = send_all(api, test, false, false, opts.concurrency, &bar).await;
        Some(results)
    } else {
        None
    };

    let mut rounds = Vec::new();
    let mut promise = None;
    let bootstrap_prompts = bootstrap.as_ref().map_or(0, |b| b.records.len());
    if let Some(b) = bootstrap.filter(|b| !b.records.is_empty()) {
        bar.set_message("bootstrap");
        let (summary, calibrated) = b.load(api).await?;
        rounds.push(summary);
        promise = calibrated;
    }
    let shadowing = opts.shadow_rate > 0.0;
    let cost_before_training = if shadowing { api.spent().await? } else { 0.0 };
    let chunk = train.len().div_ceil(opts.rounds).max(1);
    for (i, part) in train.chunks(chunk).enumerate() {
        bar.set_message(format!("training round {}", i + 1));
        let results = send_all(api, part, true, true, opts.concurrency, &bar).await;
        let failed = results.iter().filter(|(_, a)| a.is_err()).count();
        if failed * 10 > part.len() {
            bail!(
                "{failed} of {} training requests failed; first: {}",
                part.len(),
                first_error(&results).unwrap_or_default()
            );
        }
        if shadowing {
            bar.set_message(format!("round {}: shadow", i + 1));
            api.shadow_done().await?;
        }
        let (changes, policy_version, calibrated) = api.retrain().await?;
        if calibrated.is_some() {
            promise = calibrated;
        }
        let held_out = if opts.learning_curve {
            bar.set_message(format!("round {}: held out", i + 1));
            let results = send_all(api, test, false, false, opts.concurrency, &bar).await;
            Some(report::versus_best(prices, &routed(&results)))
        } else {
            None
        };
        let explored = results
            .iter()
            .filter(|(_, a)| a.as_ref().is_ok_and(|a| a.explored))
            .count();
        let mut models = BTreeMap::new();
        for r in routed(&results) {
            if let Some(m) = r.model {
                *models.entry(m).or_insert(0) += 1;
            }
        }
        rounds.push(RoundSummary {
            round: i + 1,
            prompts: part.len(),
            rated: part.len() - failed,
            explored,
            failed,
            changes,
            policy_version,
            models,
            held_out,
        });
    }
    let shadow = if shadowing {
        let training_cost_usd = api.spent().await? - cost_before_training;
        let totals = api.shadow().await?;
        let shadow_cost_usd = totals["shadow_cost_usd"].as_f64().unwrap_or(0.0);
        let judge_cost_usd = totals["judge_cost_usd"].as_f64().unwrap_or(0.0);
        Some(report::ShadowSpend {
            rate: opts.shadow_rate,
            models: opts.shadow_models.clone(),
            requests_judged: totals["requests_judged"].as_i64().unwrap_or(0),
            scores: totals["scores"].as_i64().unwrap_or(0),
            shadow_cost_usd,
            judge_cost_usd,
            training_cost_usd,
            share_of_training_cost: if training_cost_usd > 0.0 {
                (shadow_cost_usd + judge_cost_usd) / training_cost_usd
            } else {
                0.0
            },
        })
    } else {
        None
    };

    bar.set_message("held out");
    let results = send_all(api, test, false, false, opts.concurrency, &bar).await;
    // The same policy under every strategy: the frontier.
    let mut frontier_runs = Vec::new();
    for strategy in Strategy::ALL {
        let routing = if strategy == opts.strategy {
            routed(&results)
        } else {
            bar.set_message(format!("held out, {strategy}"));
            let other = api.with_strategy(strategy);
            routed(&send_all(&other, test, false, false, opts.concurrency, &bar).await)
        };
        frontier_runs.push((strategy.as_str().to_owned(), routing));
    }
    bar.finish_and_clear();
    if let Some(e) = first_error(&results) {
        eprintln!("note: some held-out requests failed (counted as wrong); first: {e}");
    }
    let ctx = report::Context {
        dataset: opts.dataset.display().to_string(),
        records: data.records.len() + data.duplicates,
        duplicates_dropped: data.duplicates,
        train_prompts: train.len() + bootstrap_prompts,
        bootstrap_prompts,
        strategy: opts.strategy.as_str().to_owned(),
        seed: opts.seed,
        rounds,
    };
    let prior_routed = prior.as_ref().map(|p| routed(p));
    let mut report = report::build(ctx, prices, &routed(&results), prior_routed.as_deref());
    report.frontier = report::frontier(&report, prices, &frontier_runs);
    report.promise = promise;
    report.shadow = shadow;
    Ok(report)
}
