"""Drives the server's /v1/messages with the official Anthropic Python SDK (tests/anthropic.rs
runs it). Usage: python anthropic_client.py BASE_URL API_KEY"""
import sys

import anthropic

base_url, api_key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)

# Text, with a system prompt.
message = client.messages.create(
    model="auto",
    max_tokens=256,
    system="Be brief.",
    messages=[{"role": "user", "content": "What is the capital of Peru?"}],
)
assert message.type == "message" and message.role == "assistant", message
assert message.content[0].type == "text", message
assert message.content[0].text.startswith("[simulated "), message
assert message.stop_reason == "end_turn", message
assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message
print("message", message.id, message.model, message.usage.output_tokens)

# Cut at max_tokens: the SDK sees why.
cut = client.messages.create(
    model="auto",
    max_tokens=14,
    messages=[{"role": "user", "content": "Write a long essay about the history of Lima"}],
)
assert cut.stop_reason == "max_tokens", cut
print("cut", cut.stop_reason)

# Errors in Anthropic's shape, as the SDK's exception types.
try:
    client.messages.create(model="auto", max_tokens=10, messages=[])
    raise SystemExit("an empty conversation was accepted")
except anthropic.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
    print("bad request", e.body["error"]["message"])
try:
    client.messages.create(model="claude-17", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("an unknown model was accepted")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
    print("not found", e.body["error"]["type"])
try:
    anthropic.Anthropic(base_url=base_url, api_key="aco_wrong", max_retries=0).messages.create(
        model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("a wrong key was accepted")
except anthropic.AuthenticationError as e:
    print("unauthorized", e.body["error"]["type"])

# Streamed text: the SDK's stream helper assembles the message.
with client.messages.stream(
    model="auto",
    max_tokens=256,
    messages=[{"role": "user", "content": "Write a haiku about rain"}],
) as stream:
    pieces = [text for text in stream.text_stream]
    final = stream.get_final_message()
assert len(pieces) > 3, pieces
assert "".join(pieces) == final.content[0].text, (pieces, final)
assert final.content[0].text.startswith("[simulated "), final
assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final
print("stream", len(pieces), final.usage.output_tokens)

# Tools, both ways, streamed and not: the model asks for the tool, the client answers, the
# model replies.
weather = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
for streamed in (False, True):
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    ask = dict(model="auto", max_tokens=256, tools=[weather], tool_choice={"type": "any"},
               messages=[question])
    if streamed:
        with client.messages.stream(**ask) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(**ask)
    assert first.stop_reason == "tool_use", first
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first
    assert isinstance(calls[0].input, dict) and isinstance(calls[0].input.get("city"), str), first
    answer = dict(model="auto", max_tokens=256, tools=[weather], messages=[
        question,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": "4 degrees, rain"}]},
    ])
    if streamed:
        with client.messages.stream(**answer) as stream:
            second = stream.get_final_message()
    else:
        second = client.messages.create(**answer)
    assert second.stop_reason == "end_turn", second
    assert second.content[0].type == "text" and second.content[0].text.startswith("[simulated "), second
    print("tools", "streamed" if streamed else "plain", calls[0].id)
print("ok")
