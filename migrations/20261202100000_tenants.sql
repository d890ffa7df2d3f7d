-- Tenants (issue 14): API keys, ownership, budgets and rate limits shared by every replica.

-- One row per API key. The secret is never stored: only its SHA-256 (secrets are 256 random
-- bits, so a fast hash is enough) and a visible prefix to recognise it by.
CREATE TABLE api_keys (
    key_id                TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    secret_hash           BYTEA NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    -- 'admin' (admin API or CLI) or 'env' (bootstrapped from API_KEYS at start-up).
    source                TEXT NOT NULL DEFAULT 'admin' CHECK (source IN ('admin', 'env')),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    rotated_at            TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ,
    revoked_at            TIMESTAMPTZ,
    -- NULL: any. Models as `provider/model`.
    allowed_models        TEXT[],
    allowed_providers     TEXT[],
    default_strategy      TEXT,
    -- Budgets in USD (NULL: none), per UTC day / UTC month; the per-user one applies to each
    -- end user (`user_id`) of the key separately, per UTC day.
    daily_budget_usd      DOUBLE PRECISION CHECK (daily_budget_usd >= 0),
    monthly_budget_usd    DOUBLE PRECISION CHECK (monthly_budget_usd >= 0),
    user_daily_budget_usd DOUBLE PRECISION CHECK (user_daily_budget_usd >= 0),
    requests_per_minute   INTEGER CHECK (requests_per_minute > 0),
    tokens_per_minute     INTEGER CHECK (tokens_per_minute > 0),
    -- false: an auto-routed request whose worst case does not fit the budget left is routed
    -- among the models whose worst case does fit; true: it is refused (429) instead.
    strict_budget         BOOLEAN NOT NULL DEFAULT false
);

-- Spend of a key (scope '') or of one end user of it (scope = user_id) in one budget window.
-- `reserved_usd` is held by requests in flight (their worst-case cost); a request's finish moves
-- its hold to `spent_usd` at the actual cost, in the same statement that ends the request.
CREATE TABLE key_spend (
    key_id       TEXT NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,
    period       TEXT NOT NULL CHECK (period IN ('day', 'month')),
    period_start TIMESTAMPTZ NOT NULL,
    spent_usd    DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, scope, period, period_start)
);

-- Requests and tokens admitted per key per minute (fixed windows).
CREATE TABLE key_rate (
    key_id       TEXT NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    window_start TIMESTAMPTZ NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    tokens       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, window_start)
);

-- Who sent a request (NULL: no keys configured), the fingerprint its idempotency key is bound
-- to, and the budget holds its finish settles: [{"scope","period","start","usd"}].
ALTER TABLE requests ADD COLUMN api_key_id TEXT;
ALTER TABLE requests ADD COLUMN fingerprint TEXT;
ALTER TABLE requests ADD COLUMN budget_holds JSONB;
CREATE INDEX idx_requests_key ON requests (api_key_id, created_at) WHERE api_key_id IS NOT NULL;

-- Idempotency keys are scoped per API key.
ALTER TABLE requests DROP CONSTRAINT requests_idempotency_key_key;
CREATE UNIQUE INDEX uq_requests_idempotency
    ON requests ((COALESCE(api_key_id, '')), idempotency_key);

ALTER TABLE routing_metrics ADD COLUMN api_key_id TEXT;
CREATE INDEX idx_routing_metrics_key ON routing_metrics (api_key_id, timestamp)
    WHERE api_key_id IS NOT NULL;
