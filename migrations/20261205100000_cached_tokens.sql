-- Prompt-cache usage a provider reports (issue 15): of a call's input tokens, those read from
-- and written to the provider's cache, priced at the catalog's cache rates. NULL: not reported
-- (rows from before, cache hits of our own response cache, failures).
ALTER TABLE routing_metrics
    ADD COLUMN cached_input_tokens integer,
    ADD COLUMN cache_write_tokens integer;
