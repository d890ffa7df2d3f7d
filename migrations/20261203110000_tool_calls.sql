-- The tool calls an answer made (OpenAI's form: [{id, name, arguments}]); NULL when none.
ALTER TABLE requests ADD COLUMN tool_calls JSONB;
