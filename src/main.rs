//! The `optimizer` command: `serve`, `migrate`, `healthcheck`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use optimizer::api::{self, AppState};
use optimizer::config::Settings;
use optimizer::store::Database;
use optimizer::{runtime, telemetry};

#[derive(Parser)]
#[command(version, about = "AI Cost Optimizer: a self-hosted LLM router")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (the default) and, unless --no-workers, the job workers in the same
    /// process. Creates and migrates the database unless RUN_MIGRATIONS=false.
    Serve {
        /// Run the API only; `optimizer-worker` processes consume the queues.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run a worker process (the same as the `optimizer-worker` binary).
    Worker(optimizer::worker::WorkerArgs),
    /// Create the database if missing, apply all migrations, and exit.
    Migrate,
    /// Run the FeedbackTrainer now and print the change table.
    Retrain {
        /// Show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Start the learned routing from recorded outcomes (the `optimizer eval` dataset format):
    /// store them as evidence next to ratings and retrain. Idempotent per dataset name.
    Train {
        /// The JSONL dataset (format: docs/eval.md).
        #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
        dataset: Option<std::path::PathBuf>,
        /// The name the outcomes are stored under (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Report what would be loaded; store nothing, retrain nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the outcomes stored under NAME instead (the next retrain learns without them).
        #[arg(long, value_name = "NAME")]
        remove: Option<String>,
    },
    /// Print the learning dashboard: feedback, quality, confidence, top models, savings.
    Dashboard,
    /// Import the Python version's SQLite database (requests, routing_metrics, response_cache).
    /// Idempotent: a second import adds nothing.
    ImportSqlite {
        /// The SQLite file.
        path: std::path::PathBuf,
        /// Report what would be imported without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Replay a dataset of recorded model outcomes through the real pipeline (API, queue,
    /// workers, trainer) and report the learned policy against every single model, a random
    /// router and the oracle. See docs/eval.md.
    Eval(EvalArgs),
    /// Manage API keys in the database (the same as the /admin/keys API).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exit 0 when GET URL answers 2xx (for container health checks; needs no curl).
    Healthcheck {
        /// What to probe; defaults to /health on BIND's port at 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        limits: KeyLimits,
    },
    /// List keys (never their secrets) with the current windows' spend.
    List,
    /// Change a key's limits (only the flags given).
    Update {
        key_id: String,
        #[command(flatten)]
        limits: KeyLimits,
    },
    /// Give a key a new secret (printed once); the old one is refused from now on.
    Rotate { key_id: String },
    /// Revoke a key: refused by every replica within half a second.
    Revoke { key_id: String },
}

#[derive(clap::Args)]
struct KeyLimits {
    /// USD per UTC day.
    #[arg(long)]
    daily_budget_usd: Option<f64>,
    /// USD per UTC month.
    #[arg(long)]
    monthly_budget_usd: Option<f64>,
    /// USD per UTC day for each end user (`user_id` / `user`) of the key.
    #[arg(long)]
    user_daily_budget_usd: Option<f64>,
    /// Requests per minute.
    #[arg(long)]
    requests_per_minute: Option<i64>,
    /// Tokens per minute (input estimate + max_tokens, counted at admission).
    #[arg(long)]
    tokens_per_minute: Option<i64>,
    /// cost, balanced or quality: the strategy of requests that name none.
    #[arg(long)]
    default_strategy: Option<String>,
    /// Comma-separated `provider/model` or model ids the key may use.
    #[arg(long, value_delimiter = ',')]
    allowed_models: Option<Vec<String>>,
    /// Comma-separated providers the key may use.
    #[arg(long, value_delimiter = ',')]
    allowed_providers: Option<Vec<String>>,
    /// RFC 3339 time after which the key is refused.
    #[arg(long)]
    expires_at: Option<String>,
    /// true: refuse a request that does not fit the budget left (429) instead of routing it
    /// among the models whose worst case fits.
    #[arg(long)]
    strict_budget: Option<bool>,
    /// true: never sample this key's requests for shadow comparisons.
    #[arg(long)]
    shadow_opt_out: Option<bool>,
}

impl KeyLimits {
    /// The flags given, as the admin API's body (flags left out are left out).
    fn body(&self, name: Option<&str>) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": name,
            "daily_budget_usd": self.daily_budget_usd,
            "monthly_budget_usd": self.monthly_budget_usd,
            "user_daily_budget_usd": self.user_daily_budget_usd,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "default_strategy": self.default_strategy,
            "allowed_models": self.allowed_models,
            "allowed_providers": self.allowed_providers,
            "expires_at": self.expires_at,
            "strict_budget": self.strict_budget,
            "shadow_opt_out": self.shadow_opt_out,
        });
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        body
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The dataset (JSONL, one record per prompt; format in docs/eval.md).
    #[arg(long)]
    dataset: std::path::PathBuf,
    /// The models and their prices (catalog TOML, provider = "replay"); default: the dataset's
    /// path with the extension .catalog.toml.
    #[arg(long)]
    catalog: Option<std::path::PathBuf>,
    /// Share of the prompts used for training; the rest is held out.
    #[arg(long, default_value_t = 0.7)]
    train_frac: f64,
    /// Seed of the shuffle that splits training and held-out prompts.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Routing strategy: cost, balanced or quality.
    #[arg(long, default_value = "balanced")]
    strategy: String,
    /// Rounds of send → rate → retrain (the training prompts split into this many chunks): a
    /// deployment retrains again and again, and each round's traffic is routed — and explored —
    /// with what the rounds before it learned.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where report.json, report.txt and cost_vs_accuracy.svg go.
    #[arg(long, default_value = "eval-out")]
    out: std::path::PathBuf,
    /// EXPLORATION_RATE while training.
    #[arg(long, default_value_t = 0.3)]
    exploration_rate: f64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Use only this many prompts (after shuffling).
    #[arg(long)]
    limit: Option<usize>,
    /// Drive a running service instead of starting one (it must run PROVIDERS=replay with
    /// REPLAY_DATASET and CATALOG_PATH set to the same files, on a database without ratings).
    #[arg(long)]
    url: Option<String>,
    /// Admin token of the service given by --url.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Keep the scratch database instead of dropping it.
    #[arg(long)]
    keep_db: bool,
    /// Skip the priors-only pass (the held-out prompts before any rating).
    #[arg(long)]
    no_prior_pass: bool,
    /// Share of the training prompts loaded as a bootstrap dataset, every model's outcome, as
    /// `optimizer train --dataset` loads it, before the rest is sent and rated (0: ratings only).
    #[arg(long, default_value_t = 0.0)]
    bootstrap_frac: f64,
    /// Shadow comparisons while training (SHADOW_RATE): this share of the training requests is
    /// also answered by other candidates and every answer judged (0: off).
    #[arg(long, default_value_t = 0.0)]
    shadow_rate: f64,
    /// Other candidates per sampled request (SHADOW_MODELS): a number or `all`.
    #[arg(long, default_value = "all")]
    shadow_models: String,
    /// The judge (JUDGE_MODEL), a replay model of the catalog (default: the most expensive one;
    /// it judges from the recorded outcomes, at its catalog price).
    #[arg(long)]
    judge_model: Option<String>,
    /// Also route the held-out prompts after every training round (the learning curve).
    #[arg(long)]
    learning_curve: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("optimizer: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve { no_workers: false });
    if let Command::Worker(args) = command {
        return optimizer::worker::main(args).await;
    }
    if let Command::Healthcheck { url } = command {
        let url =
            url.unwrap_or_else(|| format!("http://127.0.0.1:{}/health", settings.bind.port()));
        return match optimizer::runtime::probe(&url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("optimizer healthcheck: {url}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Eval(args) = command {
        return eval(args).await;
    }
    telemetry::init(&settings);
    let result = match command {
        Command::Migrate => migrate(&settings).await,
        Command::Retrain { dry_run } => retrain(&settings, dry_run).await,
        Command::Train {
            dataset,
            name,
            dry_run,
            remove,
        } => train(&settings, dataset, name, dry_run, remove).await,
        Command::Dashboard => dashboard(&settings).await,
        Command::ImportSqlite { path, dry_run } => import_sqlite(&settings, &path, dry_run).await,
        Command::Serve { no_workers } => serve(settings, !no_workers).await,
        Command::Keys(command) => keys(&settings, command).await,
        Command::Healthcheck { .. } | Command::Worker(_) | Command::Eval(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("optimizer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn eval(args: EvalArgs) -> ExitCode {
    // Quiet logs unless asked for: the progress bar and the report are the output.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let Some(strategy) = optimizer::routing::Strategy::parse(&args.strategy) else {
        eprintln!(
            "optimizer eval: --strategy must be cost, balanced or quality, got {:?}",
            args.strategy
        );
        return ExitCode::from(2);
    };
    let options = optimizer::eval::EvalOptions {
        dataset: args.dataset,
        catalog: args.catalog,
        train_frac: args.train_frac,
        seed: args.seed,
        strategy,
        rounds: args.rounds,
        out: args.out,
        exploration_rate: args.exploration_rate,
        concurrency: args.concurrency,
        limit: args.limit,
        url: args.url,
        admin_token: args.admin_token,
        keep_db: args.keep_db,
        compare_priors: !args.no_prior_pass,
        bootstrap_frac: args.bootstrap_frac,
        shadow_rate: args.shadow_rate,
        shadow_models: args.shadow_models,
        judge_model: args.judge_model,
        learning_curve: args.learning_curve,
    };
    let out = options.out.clone();
    match optimizer::eval::run(options).await {
        Ok(report) => {
            print!("{}", optimizer::eval::report::render(&report));
            println!(
                "\nWritten: {}/report.json, report.txt, cost_vs_accuracy.svg",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("optimizer eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect_lazy(&settings.pool());
    db.setup().await?;
    tracing::info!(database = %settings.database_label(), "migrations applied");
    Ok(())
}

async fn retrain(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let db = Database::connect_lazy(&settings.pool());
    if settings.run_migrations {
        db.setup().await?;
    }
    let engine = optimizer::wiring::build_engine(settings)?;
    let report =
        optimizer::learning::retrain_now(&db.pool, &engine, &settings.learning, dry_run).await?;
    print!("{}", optimizer::learning::report::run_table(&report));
    Ok(())
}

async fn train(
    settings: &Settings,
    dataset: Option<std::path::PathBuf>,
    name: Option<String>,
    dry_run: bool,
    remove: Option<String>,
) -> anyhow::Result<()> {
    let db = Database::connect_lazy(&settings.pool());
    if settings.run_migrations {
        db.setup().await?;
    }
    if let Some(name) = remove {
        let removed = optimizer::store::bootstrap::remove(&db.pool, &name).await?;
        println!("removed {removed} stored outcomes of dataset {name}");
        return Ok(());
    }
    let Some(path) = dataset else {
        anyhow::bail!("--dataset FILE or --remove NAME is required");
    };
    let name = name.unwrap_or_else(|| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        )
    });
    let engine = optimizer::wiring::build_engine(settings)?;
    let report =
        optimizer::bootstrap::train(&db.pool, &engine, &settings.learning, &path, &name, dry_run)
            .await?;
    print!("{}", optimizer::bootstrap::render(&report));
    for (dataset, outcomes, at) in optimizer::store::bootstrap::datasets(&db.pool).await? {
        println!("stored: {dataset}: {outcomes} outcomes, last loaded {at}");
    }
    Ok(())
}

async fn import_sqlite(
    settings: &Settings,
    path: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let db = Database::connect_lazy(&settings.pool());
    if settings.run_migrations {
        db.setup().await?;
    }
    let progress = |table: &str, rows: u64| eprintln!("  {table}: {rows} rows read");
    let report = optimizer::import::import_sqlite(
        path,
        &db.pool,
        settings.store_prompts,
        dry_run,
        &progress,
    )
    .await?;
    print!("{}", optimizer::import::render(&report));
    Ok(())
}

async fn keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    use optimizer::store::keys as store;
    use secrecy::ExposeSecret;
    let db = Database::connect_lazy(&settings.pool());
    if settings.run_migrations {
        db.setup().await?;
    }
    let catalog = optimizer::routing::Catalog::load(settings.routing.catalog_path.as_deref())?;
    let policy_of = |limits: &KeyLimits,
                     name: Option<&str>,
                     mut policy: store::KeyPolicy,
                     mut expires_at: Option<chrono::DateTime<chrono::Utc>>|
     -> anyhow::Result<_> {
        let body: optimizer::api::keys::KeyBody = serde_json::from_value(limits.body(name))?;
        optimizer::api::keys::apply(&catalog, body, &mut policy, &mut expires_at)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        Ok((policy, expires_at))
    };
    let print = |v: serde_json::Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    };
    match command {
        KeysCommand::Create { name, limits } => {
            let (policy, expires_at) = policy_of(&limits, None, Default::default(), None)?;
            let (row, secret) =
                optimizer::tenants::create_key(&db.pool, &name, expires_at, &policy).await?;
            print(serde_json::json!({ "key": row, "secret": secret.expose_secret() }))
        }
        KeysCommand::List => {
            let rows = store::list(&db.pool).await?;
            let spend = store::current_spend(&db.pool, None).await?;
            print(serde_json::json!({ "keys": rows, "spend": spend }))
        }
        KeysCommand::Update { key_id, limits } => {
            let row = store::get(&db.pool, &key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no API key {key_id:?}"))?;
            let (policy, expires_at) = policy_of(&limits, None, row.policy, row.expires_at)?;
            let row = store::update(&db.pool, &key_id, expires_at, &policy).await?;
            print(serde_json::json!({ "key": row }))
        }
        KeysCommand::Rotate { key_id } => {
            let (row, secret) = optimizer::tenants::rotate_key(&db.pool, &key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no live API key {key_id:?}"))?;
            print(serde_json::json!({ "key": row, "secret": secret.expose_secret() }))
        }
        KeysCommand::Revoke { key_id } => {
            let row = store::revoke(&db.pool, &key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no API key {key_id:?}"))?;
            print(serde_json::json!({ "key": row }))
        }
    }
}

async fn dashboard(settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect_lazy(&settings.pool());
    db.check_ready().await?;
    print!(
        "{}",
        optimizer::learning::report::dashboard(&db.pool).await?
    );
    Ok(())
}

async fn serve(settings: Settings, workers: bool) -> anyhow::Result<()> {
    optimizer::providers::install_crypto();
    let state = AppState::new(settings)?;
    let settings = state.settings.clone();
    let db = state.db.clone();
    let shutdown = runtime::shutdown_on_signal();
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on BIND={}: {e}", settings.bind))?;
    tracing::info!(
        bind = %settings.bind,
        database = %settings.database_label(),
        "optimizer API listening"
    );
    if settings.run_migrations {
        let (db, shutdown, schema) = (db.clone(), shutdown.clone(), state.schema.clone());
        optimizer::tasks::spawn("setup_database", async move {
            if runtime::setup_database_with_retry(&db, &shutdown).await {
                schema.open();
            }
        });
    }
    tracing::info!(
        catalog = state.engine.catalog().source(),
        providers = ?settings.enabled_providers,
        baseline = %state.engine.catalog().models()[state.engine.baseline()].key(),
        "routing ready"
    );
    runtime::spawn_api_tasks(&state, &shutdown);
    if let Some(metrics_bind) = settings.metrics_bind {
        let listener = tokio::net::TcpListener::bind(metrics_bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on METRICS_BIND={metrics_bind}: {e}"))?;
        tracing::info!(bind = %metrics_bind, "metrics listening (not on BIND)");
        let (router, shutdown, settings) = (
            api::metrics::metrics_router(db.clone()),
            shutdown.clone(),
            settings.clone(),
        );
        optimizer::tasks::spawn("metrics_server", async move {
            let served = api::serve_with(
                listener,
                router,
                shutdown,
                settings.shutdown_timeout,
                settings.http_idle_timeout,
            )
            .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let workers = if workers {
        tracing::info!("job workers run in this process (--no-workers to turn off)");
        Some(runtime::spawn_in_process_workers(&state, &shutdown)?)
    } else {
        None
    };
    api::serve_with(
        listener,
        api::router(state),
        shutdown.clone(),
        settings.shutdown_timeout,
        settings.http_idle_timeout,
    )
    .await?;
    shutdown.cancel();
    if let Some(workers) = workers {
        // In-flight jobs finish; fetched-but-unstarted ones go back to the queue.
        let _ = tokio::time::timeout(settings.shutdown_timeout, workers).await;
    }
    runtime::wait_for_tasks().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
