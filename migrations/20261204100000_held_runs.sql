-- A scheduled retrain whose off-policy estimate shows a quality drop beyond DRIFT_THRESHOLD is
-- held: computed and logged (with the estimate in after_metrics and the reason in error), not
-- applied.
ALTER TABLE retraining_runs DROP CONSTRAINT retraining_runs_status_check;
ALTER TABLE retraining_runs ADD CONSTRAINT retraining_runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'held'));
