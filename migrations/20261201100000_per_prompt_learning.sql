-- Per-prompt learning (issue 19).

-- The prompt's hashed n-gram features (routing's `features::featurize`), written at routing
-- time, so learning never needs the prompt text (STORE_PROMPTS=hash|none still learn).
ALTER TABLE requests ADD COLUMN features INT4[];

-- The per-prompt quality predictor, one row per model: sparse weights (u32 feature index, f32
-- weight, little endian, 8 bytes an entry), fitted by the retrain that wrote it.
CREATE TABLE routing_predictor (
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    featurizer        TEXT NOT NULL,
    -- Rated requests it was fitted on.
    sample_count      INTEGER NOT NULL CHECK (sample_count >= 0),
    -- Pseudo-ratings of the catalog prior in the pattern-level estimate it adjusts.
    shrinkage         REAL NOT NULL CHECK (shrinkage >= 0),
    weights           BYTEA NOT NULL CHECK (length(weights) % 8 = 0),
    retraining_run_id TEXT REFERENCES retraining_runs (run_id),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);

-- The predictor as it was before a run applied, next to that run's weight snapshot.
CREATE TABLE routing_predictor_snapshots (
    snapshot_id       BIGINT NOT NULL REFERENCES routing_snapshots (id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    featurizer        TEXT NOT NULL,
    sample_count      INTEGER NOT NULL,
    shrinkage         REAL NOT NULL,
    weights           BYTEA NOT NULL,
    retraining_run_id TEXT,
    PRIMARY KEY (snapshot_id, provider, model)
);

-- One sample per request: the trainer reads ratings grouped by request.
CREATE INDEX idx_feedback_request ON response_feedback (request_id);
