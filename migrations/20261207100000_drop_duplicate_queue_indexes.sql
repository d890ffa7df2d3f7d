-- apalis-postgres' early migration created indexes its later streamline_indices migration
-- re-created under new names without dropping the old ones: `unique_job_id` (apalis.jobs.id,
-- which the primary key `jobs_pkey` already indexes), `lidx` (= idx_apalis_jobs_lock_by),
-- `wtidx` and `lsidx` (= idx_apalis_workers_worker_type / _last_seen). Every job insert, every
-- job update that is not HOT (status is in the fetch index's predicate) and every heartbeat
-- (last_seen is indexed) writes each index: these four did nothing. Nothing refers to them.
-- `unique_worker_id` duplicates apalis.workers' primary key too, but stays: the foreign key
-- from apalis.jobs.lock_by is attached to it.
DROP INDEX IF EXISTS apalis.unique_job_id;
DROP INDEX IF EXISTS apalis.lidx;
DROP INDEX IF EXISTS apalis.wtidx;
DROP INDEX IF EXISTS apalis.lsidx;
