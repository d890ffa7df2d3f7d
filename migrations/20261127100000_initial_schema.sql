-- Initial schema of the AI Cost Optimizer. Forward-only: later changes get new files.
--
-- Times are TIMESTAMPTZ throughout (the seed wrote TIMESTAMP; a time zone-less column silently
-- shifts when a session's TimeZone differs, so we store instants). Every column, key, index and
-- constraint of the seed's `response_feedback` and `model_performance_history` is kept.

-- One row per accepted completion request; it reaches a terminal status exactly once.
CREATE TABLE requests (
    request_id      TEXT PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    -- STORE_PROMPTS=full keeps the text; hash keeps only prompt_hash; none keeps neither.
    prompt          TEXT,
    prompt_hash     TEXT,
    prompt_chars    INTEGER NOT NULL DEFAULT 0 CHECK (prompt_chars >= 0),
    system          TEXT,
    -- Everything else the caller asked for (strategy, max_tokens, temperature, pinned model…).
    params          JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- The route chosen at enqueue time: the ranked candidates the worker may fall back along.
    route           JSONB,
    response        TEXT,
    error           TEXT,
    error_code      TEXT,
    provider        TEXT,
    model           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    user_id         TEXT,
    session_id      TEXT,
    idempotency_key TEXT UNIQUE,
    CHECK (finished_at IS NULL OR status IN ('succeeded', 'failed'))
);
CREATE INDEX idx_requests_created_at ON requests (created_at);
CREATE INDEX idx_requests_unfinished ON requests (status) WHERE status IN ('queued', 'running');
CREATE INDEX idx_requests_session ON requests (session_id) WHERE session_id IS NOT NULL;

-- One row per finished request: the routing decision and what it cost.
CREATE TABLE routing_metrics (
    id                  BIGSERIAL PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE REFERENCES requests (request_id) ON DELETE CASCADE,
    timestamp           TIMESTAMPTZ NOT NULL DEFAULT now(),
    prompt_pattern      TEXT NOT NULL,
    complexity_score    REAL NOT NULL CHECK (complexity_score BETWEEN 0 AND 1),
    complexity_tier     TEXT CHECK (complexity_tier IN ('low', 'medium', 'high')),
    strategy            TEXT NOT NULL,
    selected_provider   TEXT NOT NULL,
    selected_model      TEXT NOT NULL,
    reason              TEXT,
    confidence          TEXT,
    explored            BOOLEAN NOT NULL DEFAULT false,
    alternatives        JSONB NOT NULL DEFAULT '[]'::jsonb,
    input_tokens        INTEGER CHECK (input_tokens >= 0),
    output_tokens       INTEGER CHECK (output_tokens >= 0),
    cost_usd            DOUBLE PRECISION CHECK (cost_usd >= 0),
    baseline_model      TEXT,
    baseline_cost_usd   DOUBLE PRECISION CHECK (baseline_cost_usd >= 0),
    latency_ms          DOUBLE PRECISION CHECK (latency_ms >= 0),
    provider_latency_ms DOUBLE PRECISION CHECK (provider_latency_ms >= 0),
    cache_hit           BOOLEAN NOT NULL DEFAULT false,
    fallback_count      INTEGER NOT NULL DEFAULT 0 CHECK (fallback_count >= 0),
    status              TEXT NOT NULL CHECK (status IN ('succeeded', 'failed'))
);
CREATE INDEX idx_routing_metrics_timestamp ON routing_metrics (timestamp);
CREATE INDEX idx_routing_metrics_pattern_model ON routing_metrics (prompt_pattern, selected_model);

-- Exact-match answer cache, keyed by a hash of (provider, model, system, prompt, parameters).
CREATE TABLE response_cache (
    cache_key     TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    response      TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    hit_count     BIGINT NOT NULL DEFAULT 0 CHECK (hit_count >= 0),
    last_hit_at   TIMESTAMPTZ
);
CREATE INDEX idx_response_cache_expires_at ON response_cache (expires_at) WHERE expires_at IS NOT NULL;

-- The seed's table, column for column, plus: the 1–5 range as a CHECK, an updated_at for
-- replaced ratings, and one rating per (request, user) — a second rating replaces the first.
CREATE TABLE response_feedback (
    id SERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,

    -- User ratings
    quality_score INTEGER NOT NULL CHECK (quality_score BETWEEN 1 AND 5),
    is_correct BOOLEAN,
    is_helpful BOOLEAN,

    -- Context for learning
    prompt_pattern TEXT,
    selected_provider TEXT,
    selected_model TEXT,
    complexity_score REAL,

    -- Metadata
    user_id TEXT,
    session_id TEXT,
    comment TEXT,

    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    FOREIGN KEY (request_id) REFERENCES routing_metrics (request_id)
);

CREATE INDEX idx_feedback_pattern ON response_feedback (prompt_pattern);
CREATE INDEX idx_feedback_model ON response_feedback (selected_model);
CREATE INDEX idx_feedback_timestamp ON response_feedback (timestamp);
CREATE UNIQUE INDEX uq_feedback_request_user
    ON response_feedback (request_id, COALESCE(user_id, ''));

-- Running aggregates per (pattern, provider, model), kept by the feedback_aggregation job for the
-- summary endpoints and metrics. The trainer reads response_feedback itself, not these.
CREATE TABLE feedback_aggregates (
    pattern           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    sample_count      BIGINT NOT NULL DEFAULT 0 CHECK (sample_count >= 0),
    quality_sum       BIGINT NOT NULL DEFAULT 0 CHECK (quality_sum >= 0),
    correctness_count BIGINT NOT NULL DEFAULT 0 CHECK (correctness_count >= 0),
    correct_count     BIGINT NOT NULL DEFAULT 0 CHECK (correct_count >= 0),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pattern, provider, model)
);

-- One row per retrain, dry runs included: what triggered it, what it saw and what it changed.
CREATE TABLE retraining_runs (
    run_id         TEXT PRIMARY KEY,
    trigger        TEXT NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'rollback')),
    -- For scheduled runs: the cron tick. UNIQUE, so N worker processes run a tick once.
    scheduled_for  TIMESTAMPTZ UNIQUE,
    dry_run        BOOLEAN NOT NULL DEFAULT false,
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ,
    before_metrics JSONB,
    after_metrics  JSONB,
    changes        JSONB NOT NULL DEFAULT '[]'::jsonb,
    changes_count  INTEGER NOT NULL DEFAULT 0 CHECK (changes_count >= 0),
    error          TEXT
);
CREATE INDEX idx_retraining_runs_started_at ON retraining_runs (started_at);

-- The seed's table, column for column; retraining_run_id also references the run it came from.
CREATE TABLE model_performance_history (
    id SERIAL PRIMARY KEY,
    pattern TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,

    -- Computed from feedback
    avg_quality_score REAL,
    correctness_rate REAL,
    sample_count INTEGER,
    confidence_level TEXT,

    -- Cost tracking
    avg_cost REAL,
    total_cost REAL,

    -- Metadata
    updated_at TIMESTAMPTZ NOT NULL,
    retraining_run_id TEXT REFERENCES retraining_runs (run_id),

    UNIQUE (pattern, provider, model, retraining_run_id)
);
CREATE INDEX idx_model_performance_history_updated_at ON model_performance_history (updated_at);

-- The learned state the routing engine reads: one row per pattern × provider × model.
CREATE TABLE routing_weights (
    pattern           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    avg_quality_score REAL NOT NULL CHECK (avg_quality_score BETWEEN 1 AND 5),
    correctness_rate  REAL NOT NULL CHECK (correctness_rate BETWEEN 0 AND 1),
    sample_count      INTEGER NOT NULL CHECK (sample_count >= 0),
    confidence_level  TEXT NOT NULL CHECK (confidence_level IN ('high', 'medium', 'low')),
    -- Expected quality in 0..1 as the engine uses it.
    quality_estimate  REAL NOT NULL CHECK (quality_estimate BETWEEN 0 AND 1),
    avg_cost_usd      DOUBLE PRECISION,
    -- Newest rating that contributed: "no lower confidence without new evidence" compares it.
    last_feedback_at  TIMESTAMPTZ,
    retraining_run_id TEXT REFERENCES retraining_runs (run_id),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pattern, provider, model)
);

-- The routing policy's version: bumped whenever routing_weights change, so every process can
-- tell that its in-memory copy is stale.
CREATE TABLE routing_policy (
    id         BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    version    BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO routing_policy (id, version) VALUES (true, 0);

-- Full copies of routing_weights, one per applied retrain (the last 3 are kept) for rollback.
CREATE TABLE routing_snapshots (
    id                BIGSERIAL PRIMARY KEY,
    retraining_run_id TEXT NOT NULL REFERENCES retraining_runs (run_id),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    policy_version    BIGINT NOT NULL,
    -- The weights as they were BEFORE the run applied its changes.
    weights           JSONB NOT NULL,
    restored_at       TIMESTAMPTZ
);
CREATE INDEX idx_routing_snapshots_created_at ON routing_snapshots (created_at);

-- Raised alerts (quality degradation after a retrain, and others). dedupe_key keeps a condition
-- from being raised twice by two workers.
CREATE TABLE alerts (
    id                BIGSERIAL PRIMARY KEY,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind              TEXT NOT NULL,
    severity          TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    pattern           TEXT,
    retraining_run_id TEXT REFERENCES retraining_runs (run_id),
    message           TEXT NOT NULL,
    baseline_value    DOUBLE PRECISION,
    observed_value    DOUBLE PRECISION,
    details           JSONB NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key        TEXT UNIQUE,
    notified_at       TIMESTAMPTZ,
    resolved_at       TIMESTAMPTZ
);
CREATE INDEX idx_alerts_open ON alerts (created_at) WHERE resolved_at IS NULL;
