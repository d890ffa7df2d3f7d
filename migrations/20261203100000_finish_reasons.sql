-- Why an answer ended, in OpenAI's words: stop, length (cut at max_tokens), tool_calls,
-- content_filter. NULL for requests that did not succeed (and for those finished before this
-- column existed).
ALTER TABLE requests ADD COLUMN finish_reason TEXT
    CHECK (finish_reason IN ('stop', 'length', 'tool_calls', 'content_filter'));
