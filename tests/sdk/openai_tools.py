"""A two-step tool conversation with the official OpenAI Python SDK through the router to each
provider's mock, streamed and not (tests/openai.rs runs it).
Usage: python openai_tools.py BASE_URL API_KEY MODEL..."""
import json
import sys

import openai
from weather_tool import WEATHER

base_url, api_key, models = sys.argv[1], sys.argv[2], sys.argv[3:]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
weather = WEATHER


def ask(model, messages, stream, **extra):
    """The answer's text, tool calls and finish reason, streamed or not."""
    if not stream:
        c = client.chat.completions.create(model=model, messages=messages, tools=[weather], **extra)
        m = c.choices[0].message
        calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                 for t in (m.tool_calls or [])]
        return m.content, calls, c.choices[0].finish_reason
    text, calls, reason = "", {}, None
    for chunk in client.chat.completions.create(
            model=model, messages=messages, tools=[weather], stream=True, **extra):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        text += d.content or ""
        for t in d.tool_calls or []:
            c = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
            c["id"] += t.id or ""
            c["name"] += (t.function.name or "") if t.function else ""
            c["arguments"] += (t.function.arguments or "") if t.function else ""
        reason = chunk.choices[0].finish_reason or reason
    return text or None, [calls[i] for i in sorted(calls)], reason


for model in models:
    for stream in (False, True):
        question = {"role": "user", "content": "What is the weather in Oslo?"}
        text, calls, reason = ask(model, [question], stream, tool_choice="required")
        assert reason == "tool_calls", (model, stream, text, calls, reason)
        assert len(calls) == 1 and calls[0]["name"] == "get_weather", (model, stream, calls)
        assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}, (model, stream, calls)
        assistant = {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0]["id"], "type": "function",
             "function": {"name": calls[0]["name"], "arguments": calls[0]["arguments"]}}]}
        result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp_c": 4}'}
        text, calls, reason = ask(model, [question, assistant, result], stream)
        assert reason == "stop" and not calls, (model, stream, text, calls, reason)
        assert text.startswith("It is 4"), (model, stream, text)
        print("tools", model, "streamed" if stream else "plain", "ok")
