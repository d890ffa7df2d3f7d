-- The mean complexity of the rated requests behind a learned estimate. The engine adjusts an
-- estimate for a prompt's complexity relative to this reference (catalog priors are stated at
-- medium complexity, 0.5; learned estimates are measured at whatever complexity was rated).
-- NULL (weights learned before this column, restored old snapshots): treated as 0.5.
ALTER TABLE routing_weights
    ADD COLUMN avg_complexity REAL CHECK (avg_complexity BETWEEN 0 AND 1);
