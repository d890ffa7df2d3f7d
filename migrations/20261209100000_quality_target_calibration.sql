-- The quality-target knobs a retrain calibrated for the routing policy it installed (issue 39):
-- per strategy the λ of argmax q − λ·cost that keeps the strategy's share of the best single
-- model's quality over the logged traffic, with the estimate behind it. NULL: none calibrated
-- (too little evidence, or a rollback restored a predictor the knobs were not fitted for):
-- the engine routes by the per-prompt share rule.
ALTER TABLE routing_policy ADD COLUMN calibration jsonb;
