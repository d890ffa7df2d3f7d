-- Shadow comparisons (issue 40): for a sampled share of answered requests, other candidate
-- models answer the same request after the client has its answer, and a judge model grades
-- every answer (the served one included). The grades are evidence for the retrain beside
-- ratings and loaded benchmark outcomes.

-- A sampled request waiting for its shadow calls and judgements: what the calls send (the
-- provider request as the served model got it, so STORE_PROMPTS none/hash still work), the
-- served answer, the models to ask and the answers received so far. Deleted when the sample is
-- done (or dropped), so nothing of the prompt outlives it.
CREATE TABLE shadow_samples (
    request_id  TEXT PRIMARY KEY,
    api_key_id  TEXT,
    input       JSONB NOT NULL,
    -- {"provider", "model", "answer"}
    served      JSONB NOT NULL,
    -- [{"provider", "model", "propensity"}]: the models to ask, each with the probability the
    -- sampler had of choosing it for this request.
    plan        JSONB NOT NULL,
    -- "provider/model" -> the shadow answer, written as each call returns (a re-run after a
    -- crash does not pay for it again).
    answers     JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One judged answer of a sampled request: stored once per (request, model).
CREATE TABLE shadow_scores (
    request_id  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    -- The answer the client got (judged too).
    served      BOOLEAN NOT NULL,
    -- The probability that this model's answer was observed for this request, given that the
    -- request was sampled (1 for the served answer).
    propensity  DOUBLE PRECISION NOT NULL CHECK (propensity > 0 AND propensity <= 1),
    grade       SMALLINT NOT NULL CHECK (grade BETWEEN 1 AND 5),
    correct     BOOLEAN NOT NULL,
    judge       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, provider, model)
);
CREATE INDEX shadow_scores_created_at ON shadow_scores (created_at);

-- Every shadow and judge call that was paid for, once per call made (a call repeated after a
-- crash is paid, and counted, twice).
CREATE TABLE shadow_spend (
    id          BIGSERIAL PRIMARY KEY,
    request_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('shadow', 'judge')),
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    api_key_id  TEXT,
    cost_usd    DOUBLE PRECISION NOT NULL CHECK (cost_usd >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX shadow_spend_created_at ON shadow_spend (created_at);

-- A key whose requests are never sampled.
ALTER TABLE api_keys ADD COLUMN shadow_opt_out BOOLEAN NOT NULL DEFAULT false;
