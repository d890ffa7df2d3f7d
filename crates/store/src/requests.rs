//! `requests`, `routing_metrics` and `response_cache`: a completion's life from insertion with its
//! job (one transaction) to its one terminal state with its metrics row (one transaction).
//!
//! Exactly-once rules: every provider_call job carries the request's `generation`; only a job
//! whose generation equals `requests.attempts` may act, and every transition (retry, fallback,
//! finish) is a guarded UPDATE that moves `attempts` or the status on — so a job run twice, or a
//! stale job, finds the guard closed and changes nothing.
//!
//! A queue job is looked up by id with its other conditions written so no index can serve them
//! (`(status || '') = …`, `(job_type || '') = …`), leaving PostgreSQL only the primary key.
//! Written plainly, its plans took apalis' indexes on `status` (partial: they look small, but
//! hold an entry for every job that passed through the status until vacuum) or on `job_type`
//! (every job of the queue), so each lookup scanned them and grew slower with every job
//! (measured: a claim read 150–181 pages instead of ~30, docs/PERFORMANCE.md).

use apalis_postgres::PgTask;
use chrono::{DateTime, Utc};
use optimizer_types::RequestStatus;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::keys::{self, Admission, RateState, Refusal};

/// Channel NOTIFYed (payload: request id) when a request reaches its terminal state.
pub const DONE_CHANNEL: &str = "request_done";
/// Channel NOTIFYed with each streamed chunk (JSON `StreamChunk`) for an API in another process.
pub const STREAM_CHANNEL: &str = "request_stream";

/// Channel announcing a new due job to the queue's workers (payload: JSON `{"job_type", "id"}`),
/// as apalis' insert trigger does.
pub const JOB_INSERT_CHANNEL: &str = "apalis::job::insert";

/// Relays one stream chunk to other processes (NOTIFY payloads stay far below 8000 bytes: the
/// caller splits long deltas).
pub async fn notify_chunk(pool: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    notify_all(pool, &[STREAM_CHANNEL], &[payload]).await
}

/// Sends the notifications `channels[i]`/`payloads[i]` in one statement, committed
/// asynchronously.
///
/// A NOTIFY serialises commits: the transaction holds a database-wide lock from its commit's
/// start to its end, its WAL flush included. So under load a notification is not sent from a
/// transaction that must be durable (the flush would serialise every such commit, one flush
/// each, instead of sharing flushes): the durable write commits first, without notifying, and
/// this follows it, without waiting for a flush. Only while its process sends no other
/// notification may a durable statement send its own (`announce` of [`insert_batch`],
/// [`Finish::notify_in_commit`]), saving the round trip. A notification lost in a crash only
/// delays its listeners, who re-check (waiters re-read their request; the queue's poll takes
/// its jobs).
pub async fn notify_all(
    db: impl sqlx::PgExecutor<'_>,
    channels: &[&str],
    payloads: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         SELECT count(pg_notify(n.channel, n.payload))
         FROM relaxed, unnest($1::text[], $2::text[]) AS n(channel, payload)",
    )
    .bind(channels)
    .bind(payloads)
    .execute(db)
    .await?;
    Ok(())
}

/// The provider_call queue's name in apalis.
pub const PROVIDER_CALL_QUEUE: &str = "provider_call";

/// The keys of a request's stored `params` that hold the caller's text (history, tool
/// definitions and choice, JSON schema, stop sequences): kept while in flight, removed at the
/// terminal state unless `STORE_PROMPTS=full` (and by `RETENTION_DAYS`).
pub const PROMPT_PARAMS: [&str; 6] = [
    "history",
    "tail",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
];

/// `params` without [`PROMPT_PARAMS`].
pub fn without_prompt_text(params: &Value) -> Value {
    let mut params = params.clone();
    if let Some(map) = params.as_object_mut() {
        for key in PROMPT_PARAMS {
            map.remove(key);
        }
    }
    params
}

/// A request as inserted.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub request_id: String,
    /// Kept while in flight (the worker needs it); at the terminal state it is kept or cleared
    /// according to STORE_PROMPTS.
    pub prompt: String,
    /// SHA-256 of the prompt (None with `STORE_PROMPTS=none`).
    pub prompt_hash: Option<String>,
    pub prompt_chars: i32,
    pub system: Option<String>,
    pub params: Value,
    pub route: Value,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// The prompt's hashed n-gram features (what learning reads instead of the prompt).
    pub features: Vec<i32>,
    /// The API key that sent it (None: no keys configured).
    pub api_key_id: Option<String>,
    /// A digest of what the caller asked for: an idempotency key replayed with another body is
    /// refused (None with `STORE_PROMPTS=none` and no idempotency key: nothing to compare).
    pub fingerprint: Option<String>,
    /// The key's rate limits and budgets, checked in the insert transaction.
    pub admission: Option<Admission>,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new request; its job is queued. The key's rate-limit window after it, if limited.
    New(Option<RateState>),
    /// The idempotency key was used before (by the same API key) for this request. Nothing was
    /// queued or counted.
    Existing {
        request_id: String,
        /// Whether the earlier request asked for the same thing.
        same_body: bool,
    },
    /// The key's rate limit or budget refused it; nothing was written.
    Refused(Refusal),
}

/// Runs the admission (if any) in `tx`: Ok(Err) is a refusal, and the caller rolls back.
async fn admit(
    tx: &mut Transaction<'_, Postgres>,
    request: &NewRequest,
) -> Result<Result<(Option<RateState>, Option<Value>), Refusal>, sqlx::Error> {
    let Some(admission) = &request.admission else {
        return Ok(Ok((None, None)));
    };
    Ok(match keys::admit(tx, admission).await? {
        Ok((rate, holds)) => {
            let holds =
                (!holds.is_empty()).then(|| serde_json::to_value(&holds).unwrap_or_default());
            Ok((rate, holds))
        }
        Err(refusal) => Err(refusal),
    })
}

/// The request an idempotency key already names (within the same API key): what an insert
/// that found the key taken did (see [`insert_batch`]).
pub async fn existing(
    db: impl sqlx::PgExecutor<'_>,
    request: &NewRequest,
) -> Result<Inserted, sqlx::Error> {
    let (request_id, fingerprint): (String, Option<String>) = sqlx::query_as(
        "SELECT request_id, fingerprint FROM requests
         WHERE COALESCE(api_key_id, '') = COALESCE($1, '') AND idempotency_key = $2",
    )
    .bind(&request.api_key_id)
    .bind(&request.idempotency_key)
    .fetch_one(db)
    .await?;
    Ok(Inserted::Existing {
        request_id,
        same_body: fingerprint.is_none_or(|f| Some(f) == request.fingerprint),
    })
}

/// A request's first provider_call job, written by the statement that writes the request.
#[derive(Debug)]
pub struct FirstJob<'a> {
    /// The job id (a ULID, as apalis makes them).
    pub id: &'a str,
    /// The job's arguments, as apalis stores them (JSON bytes).
    pub args: Vec<u8>,
    pub max_attempts: i32,
    /// The direct lane's worker that runs it at once (see `optimizer::completion::lane`): the
    /// job is written `Running` and locked by that worker — rescued like any worker's job if
    /// the worker dies — and the request `running`. None: `Pending`, for the queue's workers.
    pub run_by: Option<&'a str>,
    /// A `Pending` job that worker processes take when it is announced (the submitting process
    /// runs no provider_call workers): held from the queue's fetch for [`FETCH_HOLD_MS`].
    pub held: bool,
}

/// How long a job announced to worker processes is theirs alone. They claim it by id at once
/// ([`claim_pending_requests`]); the queue's fetch (apalis' poll) sees it only after this, so
/// it takes what they missed (a lost notification, no free slot) instead of racing them for
/// fresh jobs: measured without it, it took a quarter of them, each at the cost of a claim that
/// found it gone, a second claim for its request, and apalis' own fetch and acknowledgement
/// (docs/PERFORMANCE.md).
pub const FETCH_HOLD_MS: i32 = 250;

/// Admits (rate limit, budget holds), inserts the request and its first provider_call job, in
/// one transaction. A request without admission checks is written by [`insert_batch`] instead.
pub async fn insert_and_enqueue(
    pool: &PgPool,
    request: &NewRequest,
    job: FirstJob<'_>,
) -> Result<Inserted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (rate, holds) = match admit(&mut tx, request).await? {
        Ok(admitted) => admitted,
        Err(refusal) => {
            tx.rollback().await?;
            return Ok(Inserted::Refused(refusal));
        }
    };
    let row =
        request_row(request, holds.as_ref(), &job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let written = insert_batch(&mut *tx, &[&row], false).await?;
    if written.is_empty() {
        let found = existing(&mut *tx, request).await?;
        tx.rollback().await?;
        return Ok(found);
    }
    tx.commit().await?;
    Ok(Inserted::New(rate))
}

/// One row of [`insert_batch`]: a request without admission checks and its first job, as the
/// JSON the batch statement reads.
pub fn batch_row(request: &NewRequest, job: &FirstJob<'_>) -> Result<String, serde_json::Error> {
    request_row(request, None, job)
}

/// A row of [`insert_batch`], with the budget holds admission made for it.
fn request_row(
    request: &NewRequest,
    holds: Option<&Value>,
    job: &FirstJob<'_>,
) -> Result<String, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        request_id: &'a str,
        prompt: &'a str,
        prompt_hash: Option<&'a str>,
        prompt_chars: i32,
        system: Option<&'a str>,
        params: &'a Value,
        route: &'a Value,
        user_id: Option<&'a str>,
        session_id: Option<&'a str>,
        idempotency_key: Option<&'a str>,
        features: &'a [i32],
        api_key_id: Option<&'a str>,
        fingerprint: Option<&'a str>,
        budget_holds: Option<&'a Value>,
        job_id: &'a str,
        /// The job's arguments (JSON), stored as these bytes.
        job: &'a str,
        max_attempts: i32,
        run_by: Option<&'a str>,
        held: bool,
    }
    let job_args = std::str::from_utf8(&job.args).map_err(serde::ser::Error::custom)?;
    serde_json::to_string(&Row {
        request_id: &request.request_id,
        prompt: &request.prompt,
        prompt_hash: request.prompt_hash.as_deref(),
        prompt_chars: request.prompt_chars,
        system: request.system.as_deref(),
        params: &request.params,
        route: &request.route,
        user_id: request.user_id.as_deref(),
        session_id: request.session_id.as_deref(),
        idempotency_key: request.idempotency_key.as_deref(),
        features: &request.features,
        api_key_id: request.api_key_id.as_deref(),
        fingerprint: request.fingerprint.as_deref(),
        budget_holds: holds,
        job_id: job.id,
        job: job_args,
        max_attempts: job.max_attempts,
        run_by: job.run_by,
        held: job.held,
    })
}

/// Inserts requests and their first provider_call jobs in one statement — for several
/// requests without admission checks, one round trip and one commit for all (group commit).
/// `rows`: [`batch_row`]s. Returns the ids of the requests written; the others' idempotency
/// keys were taken (nothing written for them). One statement: if it fails, nothing is written.
///
/// No job is announced by the queue's insert trigger: its NOTIFY would serialise these
/// commits (see [`notify_all`]). A job for the queue's workers is written `Pending`, due one
/// microsecond after the transaction's start (so after the trigger's `run_at <= now()`, and
/// before anyone can see it), or [`FETCH_HOLD_MS`] after it when `held`; this statement
/// announces it with `announce`, otherwise the caller does once it committed
/// ([`job_announcement`]). A job run by the direct lane (`run_by`) is written `Running`, locked
/// by it, and due later still (it needs no announcement: its worker has it); its request is
/// written `running`.
pub async fn insert_batch(
    db: impl sqlx::PgExecutor<'_>,
    rows: &[&str],
    announce: bool,
) -> Result<Vec<String>, sqlx::Error> {
    let json = format!("[{}]", rows.join(","));
    let written: Vec<(String, i64)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, prompt text,
                 prompt_hash text, prompt_chars int, system text, params jsonb, route jsonb,
                 user_id text, session_id text, idempotency_key text, features int[],
                 api_key_id text, fingerprint text, budget_holds jsonb, job_id text, job text,
                 max_attempts int, run_by text, held bool)
         ), req AS (
             INSERT INTO requests (request_id, status, attempts, prompt, prompt_hash,
                 prompt_chars, system, params, route, user_id, session_id, idempotency_key,
                 features, api_key_id, fingerprint, budget_holds)
             SELECT request_id, CASE WHEN run_by IS NULL THEN 'queued' ELSE 'running' END, 1,
                 prompt, prompt_hash, prompt_chars, system, params, route, user_id, session_id,
                 idempotency_key, features, api_key_id, fingerprint, budget_holds
             FROM input
             ON CONFLICT ((COALESCE(api_key_id, '')), idempotency_key) DO NOTHING
             RETURNING request_id
         ), job AS (
             INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                 lock_by, lock_at)
             SELECT i.job_id, $2, convert_to(i.job, 'UTF8'),
                 CASE WHEN i.run_by IS NULL THEN 'Pending' ELSE 'Running' END, 0, i.max_attempts,
                 now() + CASE WHEN i.run_by IS NOT NULL THEN interval '1 second'
                              WHEN i.held THEN make_interval(secs => $3 / 1000.0)
                              ELSE interval '1 microsecond' END,
                 i.run_by, CASE WHEN i.run_by IS NULL THEN NULL ELSE now() END
             FROM input i JOIN req USING (request_id)
             RETURNING id
         ), announced AS (
             SELECT pg_notify($4, json_build_object('job_type', $2::text, 'id', i.job_id)::text)
             FROM input i JOIN job ON job.id = i.job_id
             WHERE $5 AND i.run_by IS NULL
         )
         SELECT i.request_id, (SELECT count(*) FROM announced)
         FROM input i JOIN job ON job.id = i.job_id",
    )
    .bind(json)
    .bind(PROVIDER_CALL_QUEUE)
    .bind(FETCH_HOLD_MS)
    .bind(JOB_INSERT_CHANNEL)
    .bind(announce)
    .fetch_all(db)
    .await?;
    Ok(written.into_iter().map(|(id, _)| id).collect())
}

/// The [`JOB_INSERT_CHANNEL`] payload announcing provider_call job `job_id` (what apalis' insert
/// trigger would send; its listeners read `job_type` and `id`).
pub fn job_announcement(job_id: &str) -> String {
    serde_json::json!({ "job_type": PROVIDER_CALL_QUEUE, "id": job_id }).to_string()
}

async fn push(tx: &mut Transaction<'_, Postgres>, job: PgTask) -> Result<(), sqlx::Error> {
    apalis_postgres::queries::push_tasks(&mut **tx, PROVIDER_CALL_QUEUE, vec![job])
        .await
        .map_err(|e| match e {
            apalis_postgres::Error::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })
}

/// What a provider_call job needs of its request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub params: Value,
    pub route: Value,
    pub created_at: DateTime<Utc>,
}

impl NewRequest {
    /// What its job needs, without reading the row back (the direct lane's run).
    pub fn into_claimed(self, created_at: DateTime<Utc>) -> Claimed {
        Claimed {
            prompt: Some(self.prompt),
            system: self.system,
            params: self.params,
            route: self.route,
            created_at,
        }
    }
}

/// Marks the request running for job `generation`. None: the request is finished or the job is
/// stale — the job must do nothing.
///
/// Committed asynchronously (`synchronous_commit = off` for this one statement): losing a
/// claim in a database crash only shows the request as `queued` again — no guard depends on
/// it — and skipping the WAL flush wait takes one fsync off every completion.
pub async fn claim(
    db: impl sqlx::PgExecutor<'_>,
    request_id: &str,
    generation: i32,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE requests SET status = 'running', updated_at = now()
         FROM relaxed
         WHERE request_id = $1 AND attempts = $2 AND status IN ('queued', 'running')
         RETURNING prompt, system, params, route, created_at",
    )
    .bind(request_id)
    .bind(generation)
    .fetch_optional(db)
    .await
}

/// Ends a job run under one of the process's own worker rows (the direct lane's, see
/// [`FirstJob::run_by`], or [`claim_pending`]'s) as apalis would: `Done`, or `Failed` and due at
/// once (the queue's workers run it again, up to its `max_attempts`). Committed asynchronously: a
/// lost acknowledgement only re-runs the job, which finds its request finished.
pub async fn ack_direct(
    db: impl sqlx::PgExecutor<'_>,
    job_id: &str,
    worker: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let result = match error {
        None => serde_json::json!({ "Ok": null }),
        Some(e) => serde_json::json!({ "Err": e }),
    };
    sqlx::query(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE apalis.jobs SET
             status = CASE WHEN $3 THEN 'Failed' ELSE 'Done' END,
             attempts = attempts + 1, done_at = now(), last_result = $4,
             lock_by = CASE WHEN $3 THEN NULL ELSE lock_by END,
             run_at = CASE WHEN $3 THEN now() ELSE run_at END
         FROM relaxed
         WHERE id = $1 AND lock_by = $2 AND (status || '') = 'Running'",
    )
    .bind(job_id)
    .bind(worker)
    .bind(error.is_some())
    .bind(result)
    .execute(db)
    .await?;
    Ok(())
}

/// Locks the due, pending job `job_id` of `queue` for `worker` (a row of `apalis.workers`) and
/// returns its arguments; None when another worker has it or it is not due. Committed
/// asynchronously: a claim lost in a crash leaves the job pending, to be taken again.
pub async fn claim_pending(
    pool: &PgPool,
    job_id: &str,
    worker: &str,
    queue: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE apalis.jobs SET status = 'Running', lock_by = $2, lock_at = now()
         FROM relaxed
         WHERE id = (SELECT id FROM apalis.jobs
                     WHERE id = $1 AND (job_type || '') = $3 AND (status || '') = 'Pending'
                       AND run_at <= now()
                     FOR UPDATE SKIP LOCKED)
         RETURNING job",
    )
    .bind(job_id)
    .bind(worker)
    .bind(queue)
    .fetch_optional(pool)
    .await
}

/// A pending provider_call job locked by [`claim_pending_requests`], with its request.
#[derive(Debug)]
pub struct PendingClaim {
    /// The job's id.
    pub job_id: String,
    /// The job's arguments, as apalis stores them (JSON bytes).
    pub args: Vec<u8>,
    /// Its request, claimed for the job's generation as [`claim`] would; None when the request
    /// is finished or the job stale (the job must do nothing).
    pub request: Option<Claimed>,
}

/// [`claim_pending`] and [`claim`] in one statement (one round trip, one commit) for each of
/// `job_ids` that is a due (or [held](FETCH_HOLD_MS) for announced workers), pending
/// provider_call job: locks it for `worker` and marks its request running for the job's
/// generation. Jobs another worker has, or that are not due, are left out. Fails, locking
/// nothing, when a job's arguments are not JSON. Committed asynchronously, as [`claim_pending`].
pub async fn claim_pending_requests(
    db: impl sqlx::PgExecutor<'_>,
    job_ids: &[&str],
    worker: &str,
) -> Result<Vec<PendingClaim>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        job: Vec<u8>,
        prompt: Option<String>,
        system: Option<String>,
        params: Option<Value>,
        route: Option<Value>,
        created_at: Option<DateTime<Utc>>,
    }
    // The non-key conditions are written so that no index serves them: only the primary key
    // finds the jobs (docs/PERFORMANCE.md item 14).
    let rows: Vec<Row> = sqlx::query_as(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
         job AS (
             UPDATE apalis.jobs j SET status = 'Running', lock_by = $2, lock_at = now()
             FROM relaxed
             WHERE j.id IN (SELECT id FROM apalis.jobs
                            WHERE id = ANY($1) AND (job_type || '') = $3
                              AND (status || '') = 'Pending'
                              AND run_at <= now() + make_interval(secs => $4 / 1000.0)
                            FOR UPDATE SKIP LOCKED)
             RETURNING j.id, j.job, convert_from(j.job, 'UTF8')::jsonb AS args
         ), req AS (
             UPDATE requests r SET status = 'running', updated_at = now()
             FROM job
             WHERE r.request_id = job.args ->> 'request_id'
               AND r.attempts = (job.args ->> 'generation')::int
               AND r.status IN ('queued', 'running')
             RETURNING job.id AS job_id, r.prompt, r.system, r.params, r.route, r.created_at
         )
         SELECT job.id, job.job, req.prompt, req.system, req.params, req.route, req.created_at
         FROM job LEFT JOIN req ON req.job_id = job.id",
    )
    .bind(job_ids)
    .bind(worker)
    .bind(PROVIDER_CALL_QUEUE)
    .bind(FETCH_HOLD_MS)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            // `params` and `created_at` are never NULL in a request row: both come with a
            // claim.
            let request = match (row.params, row.created_at) {
                (Some(params), Some(created_at)) => Some(Claimed {
                    prompt: row.prompt,
                    system: row.system,
                    params,
                    // Unreadable, as a missing route is to the job.
                    route: row.route.unwrap_or(Value::Null),
                    created_at,
                }),
                _ => None,
            };
            PendingClaim {
                job_id: row.id,
                args: row.job,
                request,
            }
        })
        .collect())
}

/// [`claim_pending_requests`] for one job: None when another worker has it or it is not due.
pub async fn claim_pending_request(
    db: impl sqlx::PgExecutor<'_>,
    job_id: &str,
    worker: &str,
) -> Result<Option<PendingClaim>, sqlx::Error> {
    Ok(claim_pending_requests(db, &[job_id], worker).await?.pop())
}

/// Registers (or keeps alive) worker `worker` of queue `queue` in `apalis.workers`, so the
/// jobs it locks are rescued by the queue's workers when it stops beating.
pub async fn beat_worker(pool: &PgPool, worker: &str, queue: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ($1, $2, 'DirectLane', '', now())
         ON CONFLICT (id) DO UPDATE SET last_seen = now()",
    )
    .bind(worker)
    .bind(queue)
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves the request to `generation + 1` and queues that job (a retry or a fallback), recording
/// the last error. False: the guard was closed (a duplicate run already moved on).
pub async fn reschedule(
    pool: &PgPool,
    request_id: &str,
    generation: i32,
    last_error: &str,
    job: PgTask,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE requests SET attempts = attempts + 1, error = $3, updated_at = now()
         WHERE request_id = $1 AND attempts = $2 AND status IN ('queued', 'running')",
    )
    .bind(request_id)
    .bind(generation)
    .bind(last_error)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !moved {
        tx.rollback().await?;
        return Ok(false);
    }
    push(&mut tx, job).await?;
    tx.commit().await?;
    Ok(true)
}

/// The routing_metrics row of a finished request.
#[derive(Debug, Clone)]
pub struct MetricsRow {
    pub prompt_pattern: String,
    pub complexity_score: f32,
    pub complexity_tier: Option<String>,
    pub strategy: String,
    pub selected_provider: String,
    pub selected_model: String,
    pub reason: Option<String>,
    pub confidence: Option<String>,
    pub explored: bool,
    pub alternatives: Value,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    /// Of the input tokens, those read from the provider's prompt cache.
    pub cached_input_tokens: Option<i32>,
    /// Of the input tokens, those written to the provider's prompt cache.
    pub cache_write_tokens: Option<i32>,
    pub cost_usd: Option<f64>,
    pub baseline_model: Option<String>,
    pub baseline_cost_usd: Option<f64>,
    pub latency_ms: f64,
    pub provider_latency_ms: Option<f64>,
    pub cache_hit: bool,
    pub fallback_count: i32,
}

/// The terminal state to write.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        response: String,
        provider: String,
        model: String,
        /// `stop`, `length`, `tool_calls` or `content_filter`. Only `stop` answers are cached.
        finish_reason: String,
        /// The tools the model called.
        tool_calls: Vec<optimizer_types::ToolCall>,
    },
    Failed {
        error: String,
        error_code: String,
        provider: Option<String>,
        model: Option<String>,
    },
}

impl Outcome {
    /// The terminal status this outcome writes.
    pub fn status(&self) -> RequestStatus {
        match self {
            Outcome::Succeeded { .. } => RequestStatus::Succeeded,
            Outcome::Failed { .. } => RequestStatus::Failed,
        }
    }
}

/// A cache entry to store with a success.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub cache_key: String,
    pub ttl_secs: i64,
}

/// A terminal state to write with [`finish`].
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub request_id: &'a str,
    /// The job generation that must still be current; None: any (the deadline sweeper).
    pub generation: Option<i32>,
    pub outcome: &'a Outcome,
    pub metrics: &'a MetricsRow,
    /// Keep the prompt text (STORE_PROMPTS=full) or clear it.
    pub keep_prompt: bool,
    pub cache: Option<&'a CacheEntry>,
    /// Make the [`DONE_CHANNEL`] notification for a waiter in another process: returned
    /// ([`Finished::notice`]) for the caller to send once this committed, or sent by this
    /// statement with `notify_in_commit`.
    pub notify: bool,
    /// Send the notification from this durable commit (see [`notify_all`] for when not to).
    pub notify_in_commit: bool,
    /// The queue job that ran the call, when it is acknowledged by this statement (the direct
    /// lane's: `Done`, as apalis would mark it), saving a statement.
    pub job: Option<LockedJob<'a>>,
}

/// A queue job and the worker that locks it.
#[derive(Debug, Clone, Copy)]
pub struct LockedJob<'a> {
    pub id: &'a str,
    pub worker: &'a str,
}

/// The columns of a [`RequestRecord`], from a request row `r` and its metrics row `m` (read by
/// [`get`], returned by [`finish`]).
macro_rules! record_columns {
    () => {
        "r.request_id, r.status, r.created_at, r.finished_at, r.response, r.error,
         r.error_code, r.provider, r.model, r.route, r.attempts,
         m.prompt_pattern, m.complexity_score, m.strategy, m.reason, m.confidence,
         m.explored, m.alternatives, m.input_tokens, m.output_tokens, m.cost_usd,
         m.baseline_cost_usd, m.latency_ms, m.cache_hit, m.fallback_count,
         r.finish_reason, r.tool_calls, m.cached_input_tokens, m.cache_write_tokens"
    };
}

/// Writes the terminal state and the metrics row, stores the cache entry, and (if `notify`)
/// makes the notification for a waiting API process, with the finished request when it fits —
/// one statement, so one round trip and one atomic commit — guarded by `generation` (None: any
/// unfinished generation, for the deadline sweeper). None: already finished, nothing written.
///
/// The notification is returned for the caller to send once this committed, unless
/// `notify_in_commit`: sent from every durable commit, it would serialise the finishes on their
/// WAL flushes under load (see [`notify_all`]). `notify` is false when nobody can be waiting in
/// another process (async requests, or a waiter in the worker's own process, woken in memory).
///
/// The request's budget holds are settled in the same statement: each hold leaves
/// `reserved_usd` and the actual cost joins `spent_usd` — so a request that ends, by its worker
/// or by the deadline sweeper, never leaks a reservation.
pub async fn finish(
    db: impl sqlx::PgExecutor<'_>,
    f: &Finish<'_>,
) -> Result<Option<Finished>, sqlx::Error> {
    let Finish {
        request_id,
        generation,
        outcome,
        metrics,
        keep_prompt,
        cache,
        notify,
        notify_in_commit,
        job,
    } = *f;
    let status = outcome.status();
    let tool_calls = match outcome {
        Outcome::Succeeded { tool_calls, .. } if !tool_calls.is_empty() => {
            serde_json::to_value(tool_calls).ok()
        }
        _ => None,
    };
    let (response, error, error_code, provider, model, finish_reason) = match outcome {
        Outcome::Succeeded {
            response,
            provider,
            model,
            finish_reason,
            ..
        } => (
            Some(response.as_str()),
            None,
            None,
            Some(provider.as_str()),
            Some(model.as_str()),
            Some(finish_reason.as_str()),
        ),
        Outcome::Failed {
            error,
            error_code,
            provider,
            model,
        } => (
            None,
            Some(error.as_str()),
            Some(error_code.as_str()),
            provider.as_deref(),
            model.as_deref(),
            None,
        ),
    };
    let m = metrics;
    let query = sqlx::query_as(concat!(
        "WITH done AS (
            UPDATE requests SET status = $3, finished_at = now(), updated_at = now(),
                response = $4, error = $5, error_code = $6, provider = $7, model = $8,
                finish_reason = $32, tool_calls = $33,
                prompt = CASE WHEN $9 THEN prompt ELSE NULL END,
                system = CASE WHEN $9 THEN system ELSE NULL END,
                params = CASE WHEN $9 THEN params
                    ELSE params - 'history' - 'tail' - 'tools' - 'tool_choice'
                         - 'response_format' - 'stop' END
            WHERE request_id = $1 AND ($2::int IS NULL OR attempts = $2)
              AND status IN ('queued', 'running')
            RETURNING request_id, api_key_id, budget_holds, status, created_at, finished_at,
                response, error, error_code, provider, model, route, attempts, finish_reason,
                tool_calls
        ), metrics AS (
            INSERT INTO routing_metrics (request_id, prompt_pattern, complexity_score,
                complexity_tier, strategy, selected_provider, selected_model, reason, confidence,
                explored, alternatives, input_tokens, output_tokens, cost_usd, baseline_model,
                baseline_cost_usd, latency_ms, provider_latency_ms, cache_hit, fallback_count,
                status, api_key_id, cached_input_tokens, cache_write_tokens)
            SELECT request_id, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
                $23, $24, $25, $26, $27, $28, $3, api_key_id, $36, $37 FROM done
            ON CONFLICT (request_id) DO NOTHING
            RETURNING prompt_pattern, complexity_score, strategy, reason, confidence, explored,
                alternatives, input_tokens, output_tokens, cost_usd, baseline_cost_usd,
                latency_ms, cache_hit, fallback_count, cached_input_tokens, cache_write_tokens
        ), settled AS (
            -- The budget holds become spend at the actual cost (a failure costs what it cost).
            UPDATE key_spend s SET reserved_usd = GREATEST(s.reserved_usd - h.usd, 0),
                spent_usd = s.spent_usd + COALESCE($22, 0)
            FROM done d,
                jsonb_to_recordset(d.budget_holds)
                    AS h(scope text, period text, start timestamptz, usd float8)
            WHERE s.key_id = d.api_key_id AND s.scope = h.scope AND s.period = h.period
              AND s.period_start = h.start
        ), cached AS (
            INSERT INTO response_cache (cache_key, provider, model, response, input_tokens,
                output_tokens, cost_usd, expires_at)
            SELECT $29, $7, $8, $4, coalesce($20, 0), coalesce($21, 0), coalesce($22, 0),
                now() + make_interval(secs => $30)
            FROM done WHERE $29::text IS NOT NULL AND $3 = 'succeeded'
              AND $32 IS NOT DISTINCT FROM 'stop'
            ON CONFLICT (cache_key) DO UPDATE SET provider = EXCLUDED.provider,
                model = EXCLUDED.model, response = EXCLUDED.response,
                input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
                cost_usd = EXCLUDED.cost_usd, created_at = now(),
                expires_at = EXCLUDED.expires_at
        ), notice AS (
            -- The finished request itself when it fits in a notification (PostgreSQL takes
            -- payloads under 8,000 bytes), so the waiting API process need not read it back;
            -- otherwise its id.
            SELECT CASE WHEN octet_length(p.record) < 7900 THEN p.record ELSE p.request_id END
                AS payload
            FROM (SELECT d.request_id,
                         (to_jsonb(d) - 'api_key_id' - 'budget_holds'
                             || COALESCE(to_jsonb(m), '{}'::jsonb))::text AS record
                  FROM done d LEFT JOIN metrics m ON true) p
            WHERE $31
        ), sent AS (
            SELECT pg_notify($38, payload) FROM notice WHERE $39
        ), acked AS (
            -- Whether or not the request was still unfinished, the job's run is over.
            UPDATE apalis.jobs SET status = 'Done', attempts = attempts + 1, done_at = now(),
                last_result = '{\"Ok\": null}'::jsonb
            WHERE id = $34 AND lock_by = $35 AND (status || '') = 'Running'
        )
        SELECT ",
        record_columns!(),
        ", r.api_key_id, (SELECT payload FROM notice WHERE NOT $39) AS notice,
            (SELECT count(*) FROM sent) AS sent
        FROM done r LEFT JOIN metrics m ON true"
    ))
    .bind(request_id)
    .bind(generation)
    .bind(status)
    .bind(response)
    .bind(error)
    .bind(error_code)
    .bind(provider)
    .bind(model)
    .bind(keep_prompt);
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        record: RequestRecord,
        api_key_id: Option<String>,
        notice: Option<String>,
    }
    let row: Option<Row> = bind_metrics!(query, m)
        .bind(cache.map(|c| c.cache_key.as_str()))
        .bind(cache.map_or(0.0, |c| c.ttl_secs as f64))
        .bind(notify)
        .bind(finish_reason)
        .bind(tool_calls)
        .bind(job.map(|j| j.id))
        .bind(job.map(|j| j.worker))
        .bind(m.cached_input_tokens)
        .bind(m.cache_write_tokens)
        .bind(DONE_CHANNEL)
        .bind(notify_in_commit)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| Finished {
        api_key_id: row.api_key_id,
        record: row.record,
        notice: row.notice,
    }))
}

/// A request [`finish`] ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The API key that sent it.
    pub api_key_id: Option<String>,
    /// The request as [`get`] would now read it (no read after the write).
    pub record: RequestRecord,
    /// With [`Finish::notify`] and not [`Finish::notify_in_commit`]: the [`DONE_CHANNEL`]
    /// payload to send (see [`notify_all`]).
    pub notice: Option<String>,
}

async fn insert_metrics(
    tx: &mut Transaction<'_, Postgres>,
    request_id: &str,
    m: &MetricsRow,
    status: RequestStatus,
    api_key_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO routing_metrics (request_id, prompt_pattern, complexity_score,
             complexity_tier, strategy, selected_provider, selected_model, reason, confidence,
             explored, alternatives, input_tokens, output_tokens, cost_usd, baseline_model,
             baseline_cost_usd, latency_ms, provider_latency_ms, cache_hit, fallback_count, status,
             api_key_id, cached_input_tokens, cache_write_tokens)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20, $21, $22, $23, $24)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request_id);
    bind_metrics!(query, m)
        .bind(status)
        .bind(api_key_id)
        .bind(m.cached_input_tokens)
        .bind(m.cache_write_tokens)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Binds a [`MetricsRow`]'s 19 columns, in `routing_metrics` column order (prompt_pattern …
/// fallback_count), onto a query or query_as.
macro_rules! bind_metrics {
    ($query:expr, $m:expr) => {{
        let m: &MetricsRow = $m;
        $query
            .bind(&m.prompt_pattern)
            .bind(m.complexity_score)
            .bind(&m.complexity_tier)
            .bind(&m.strategy)
            .bind(&m.selected_provider)
            .bind(&m.selected_model)
            .bind(&m.reason)
            .bind(&m.confidence)
            .bind(m.explored)
            .bind(&m.alternatives)
            .bind(m.input_tokens)
            .bind(m.output_tokens)
            .bind(m.cost_usd)
            .bind(&m.baseline_model)
            .bind(m.baseline_cost_usd)
            .bind(m.latency_ms)
            .bind(m.provider_latency_ms)
            .bind(m.cache_hit)
            .bind(m.fallback_count)
    }};
}
use bind_metrics;

/// A live cache entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CachedAnswer {
    pub provider: String,
    pub model: String,
    pub response: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
}

pub async fn cache_lookup(pool: &PgPool, key: &str) -> Result<Option<CachedAnswer>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, model, response, input_tokens, output_tokens FROM response_cache
         WHERE cache_key = $1 AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// Records a cache hit as a finished request with its metrics row, in one transaction.
pub async fn insert_cached(
    pool: &PgPool,
    request: &NewRequest,
    key: &str,
    answer: &CachedAnswer,
    metrics: &MetricsRow,
    keep_prompt: bool,
) -> Result<Inserted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A cache hit costs nothing: it counts against the rate limit, and holds no budget.
    let rate = match request.admission.as_ref() {
        Some(a) => {
            let free = Admission {
                budgets: Vec::new(),
                reserve_usd: 0.0,
                ..a.clone()
            };
            match keys::admit(&mut tx, &free).await? {
                Ok((rate, _)) => rate,
                Err(refusal) => {
                    tx.rollback().await?;
                    return Ok(Inserted::Refused(refusal));
                }
            }
        }
        None => None,
    };
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO requests (request_id, status, finished_at, attempts, prompt, prompt_hash,
             prompt_chars, system, params, route, response, provider, model, user_id,
             session_id, idempotency_key, features, api_key_id, fingerprint, finish_reason)
         VALUES ($1, 'succeeded', now(), 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 $14, $15, $16, 'stop')
         ON CONFLICT ((COALESCE(api_key_id, '')), idempotency_key) DO NOTHING
         RETURNING request_id",
    )
    .bind(&request.request_id)
    .bind(keep_prompt.then_some(&request.prompt))
    .bind(&request.prompt_hash)
    .bind(request.prompt_chars)
    .bind(request.system.as_ref().filter(|_| keep_prompt))
    .bind(if keep_prompt {
        request.params.clone()
    } else {
        without_prompt_text(&request.params)
    })
    .bind(&request.route)
    .bind(&answer.response)
    .bind(&answer.provider)
    .bind(&answer.model)
    .bind(&request.user_id)
    .bind(&request.session_id)
    .bind(&request.idempotency_key)
    .bind(&request.features)
    .bind(&request.api_key_id)
    .bind(&request.fingerprint)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        let found = existing(&mut *tx, request).await?;
        tx.rollback().await?;
        return Ok(found);
    }
    insert_metrics(
        &mut tx,
        &request.request_id,
        metrics,
        RequestStatus::Succeeded,
        request.api_key_id.as_deref(),
    )
    .await?;
    sqlx::query(
        "UPDATE response_cache SET hit_count = hit_count + 1, last_hit_at = now()
         WHERE cache_key = $1",
    )
    .bind(key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Inserted::New(rate))
}

/// A request with its metrics row, for `GET /requests/{id}` and the synchronous answer. Also
/// the JSON of a [`DONE_CHANNEL`] notification (see [`finish`] and [`RequestRecord::notified`]).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub status: RequestStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub route: Option<Value>,
    pub attempts: i32,
    pub prompt_pattern: Option<String>,
    pub complexity_score: Option<f32>,
    pub strategy: Option<String>,
    pub reason: Option<String>,
    pub confidence: Option<String>,
    pub explored: Option<bool>,
    pub alternatives: Option<Value>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    pub cost_usd: Option<f64>,
    pub baseline_cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    pub cache_hit: Option<bool>,
    pub fallback_count: Option<i32>,
    pub finish_reason: Option<String>,
    pub tool_calls: Option<Value>,
    pub cached_input_tokens: Option<i32>,
    pub cache_write_tokens: Option<i32>,
}

impl RequestRecord {
    /// The finished request a [`DONE_CHANNEL`] notification carries, when it fitted in one;
    /// None when the payload is only its id (read the row then).
    pub fn notified(payload: &str) -> Option<Self> {
        if !payload.starts_with('{') {
            return None;
        }
        serde_json::from_str(payload).ok()
    }
}

/// The request with its metrics row; with `key_id`, only if that API key sent it.
pub async fn get(
    pool: &PgPool,
    request_id: &str,
    key_id: Option<&str>,
) -> Result<Option<RequestRecord>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        record_columns!(),
        " FROM requests r LEFT JOIN routing_metrics m ON m.request_id = r.request_id
         WHERE r.request_id = $1 AND ($2::text IS NULL OR r.api_key_id = $2)"
    ))
    .bind(request_id)
    .bind(key_id)
    .fetch_optional(pool)
    .await
}

/// Unfinished requests older than `deadline_secs`, oldest first (at most `limit`).
pub async fn overdue(
    pool: &PgPool,
    deadline_secs: i64,
    limit: i64,
) -> Result<Vec<(String, Value, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_id, COALESCE(route, '{}'::jsonb), created_at FROM requests
         WHERE status IN ('queued', 'running')
           AND created_at < now() - make_interval(secs => $1)
         ORDER BY created_at LIMIT $2",
    )
    .bind(deadline_secs as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Re-arms the queue job of requests the queue has lost: unfinished, untouched for `grace_secs`,
/// and with no live provider_call job (pending, fetched, running, or failed with attempts left)
/// — e.g. a job acknowledged although its request's transition never committed. The job of the
/// request's current generation goes back to `Pending`, due now; its run is guarded as any
/// other. Returns the re-armed requests (at most `limit`). A request without such a job is left
/// to the deadline sweep.
pub async fn rearm_lost(
    pool: &PgPool,
    grace_secs: f64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH live AS (
            SELECT convert_from(j.job, 'UTF8')::jsonb ->> 'request_id' AS request_id
            FROM apalis.jobs j
            WHERE j.job_type = $2
              AND (j.status IN ('Pending', 'Queued', 'Running')
                   OR (j.status = 'Failed' AND j.attempts < j.max_attempts))
        ), lost AS (
            SELECT r.request_id, r.attempts FROM requests r
            WHERE r.status IN ('queued', 'running')
              AND r.updated_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM live WHERE live.request_id = r.request_id)
            ORDER BY r.updated_at LIMIT $3
        ), latest AS (
            SELECT DISTINCT ON (l.request_id) j.id, l.request_id
            FROM lost l JOIN apalis.jobs j
              ON j.job_type = $2
             AND convert_from(j.job, 'UTF8')::jsonb ->> 'request_id' = l.request_id
             AND (convert_from(j.job, 'UTF8')::jsonb ->> 'generation')::int = l.attempts
            ORDER BY l.request_id, j.run_at DESC
        )
        UPDATE apalis.jobs j SET status = 'Pending', run_at = now(), lock_by = NULL,
            lock_at = NULL, done_at = NULL,
            last_result = '{\"Err\": \"re-armed: its request was still unfinished\"}'::jsonb
        FROM latest WHERE j.id = latest.id
        RETURNING latest.request_id",
    )
    .bind(grace_secs)
    .bind(PROVIDER_CALL_QUEUE)
    .bind(limit)
    .fetch_all(pool)
    .await
}
