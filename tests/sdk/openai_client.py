"""Drives the server with the official OpenAI Python SDK (tests/openai.rs runs it).
Usage: python openai_client.py BASE_URL API_KEY"""
import sys

import openai
from weather_tool import WEATHER

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

completion = client.chat.completions.create(
    model="auto",
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of Peru?"},
    ],
)
assert completion.object == "chat.completion", completion
assert completion.choices[0].message.role == "assistant"
assert completion.choices[0].message.content.startswith("[simulated "), completion
assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
print("completion", completion.id, completion.model, completion.usage.total_tokens)

try:
    client.chat.completions.create(model="auto", messages=[])
    raise SystemExit("an empty conversation was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["type"] == "invalid_request_error", e.body
    print("bad request", e.body["param"])

try:
    client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError as e:
    print("not found", e.body["code"])

ids = [m.id for m in client.models.list()]
assert "auto" in ids and "sim-lite" in ids, ids
assert client.models.retrieve("auto").id == "auto"
print("models", len(ids))

stream = client.chat.completions.create(
    model="auto",
    messages=[{"role": "user", "content": "Write a haiku about rain"}],
    stream=True,
    stream_options={"include_usage": True},
)
pieces, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert len(pieces) > 3, pieces
assert "".join(pieces).startswith("[simulated "), pieces
assert usage is not None and usage.total_tokens > 0, usage
print("stream", len(pieces), usage.total_tokens)

weather = WEATHER
question = {"role": "user", "content": "What is the weather in Lima?"}
called = client.chat.completions.create(model="auto", messages=[question], tools=[weather], tool_choice="required")
choice = called.choices[0]
assert choice.finish_reason == "tool_calls", called
call = choice.message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather", call
answered = client.chat.completions.create(
    model="auto",
    tools=[weather],
    messages=[
        question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 19}'},
    ],
)
assert answered.choices[0].finish_reason == "stop", answered
assert answered.choices[0].message.content.startswith("[simulated "), answered
print("tools", call.id, answered.choices[0].finish_reason)
