-- Recorded outcomes loaded by `optimizer train --dataset`: benchmark evidence the retrain learns
-- from next to ratings (pattern-level estimates and the per-prompt predictor), one row per
-- prompt × model. Only the prompt's hashed features are kept, never its text. Keyed so loading
-- a dataset twice adds nothing.
CREATE TABLE bootstrap_outcomes (
    dataset    TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    model      TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    complexity REAL NOT NULL,
    features   INT4[] NOT NULL,
    label      REAL NOT NULL CHECK (label >= 0 AND label <= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, record_id, provider, model)
);

ALTER TABLE retraining_runs DROP CONSTRAINT retraining_runs_trigger_check;
ALTER TABLE retraining_runs ADD CONSTRAINT retraining_runs_trigger_check
    CHECK (trigger IN ('scheduled', 'manual', 'rollback', 'bootstrap'));
