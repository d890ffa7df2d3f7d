-- Learning loop additions.

-- A model proven poor for a pattern (enough ratings, metrics below MEDIUM) keeps the seed's
-- 'low' confidence label but is marked demoted, so the engine uses its (low) learned estimate
-- instead of the prior: poor evidence is evidence too.
ALTER TABLE routing_weights ADD COLUMN demoted BOOLEAN NOT NULL DEFAULT false;

-- Retrains are queued (an apalis job runs them) before they run.
ALTER TABLE retraining_runs DROP CONSTRAINT retraining_runs_status_check;
ALTER TABLE retraining_runs ADD CONSTRAINT retraining_runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped'));
ALTER TABLE retraining_runs ALTER COLUMN status SET DEFAULT 'queued';
-- The snapshot a rollback restored (for rollback runs).
ALTER TABLE retraining_runs ADD COLUMN restored_snapshot_id BIGINT;

CREATE INDEX idx_feedback_pattern_provider_model
    ON response_feedback (prompt_pattern, selected_provider, selected_model);
