"""Tool calling on qwen05 through the official openai SDK (issue #20, "Must show").

A weather-tool round trip — the assistant calls `get_weather`, a `tool` message carries the
result back, the final answer uses it — plain and streamed, with `tool_choice` "required",
"auto" and a named function; `parallel_tool_calls`; `tool_choice: "none"`; and 400s for tool
choices that cannot be honoured.

Streaming is held to OpenAI's shape: `delta.tool_calls` entries carry `index`; the first for an
index carries `id`, `type` and `function.name`; the rest carry only `function.arguments`
fragments, whose concatenation is the JSON arguments string.

qwen05 at temperature 0 is deterministic. Where the model decides (tool_choice "auto": call or
answer; how many calls for two cities), the prompt is one it decides on as the test needs; the
asserts are on structure, never on wording, except that the final answer must contain the
temperature the tool returned. Without a system prompt Qwen2.5-Coder-0.5B, left free, may
write a call without its `<tool_call>` tags (bare JSON, or in a ```json fence, which the Hermes
parser does not take: test_bare_json_call_without_system_prompt records it); with one, as agents
send, it writes the tags.
"""

import json
from typing import Literal, Optional

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ConfigDict

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class WeatherArgs(BaseModel):
    """get_weather's parameters schema, as pydantic: the arguments must validate against it."""

    model_config = ConfigDict(extra="forbid")
    city: str
    unit: Optional[Literal["celsius", "fahrenheit"]] = None


TOOL_CHOICES = {
    "required": "required",
    "auto": "auto",
    "named": {"type": "function", "function": {"name": "get_weather"}},
}
ASK = "What's the weather like in Paris today?"
RESULT = {"city": "Paris", "temperature_c": 18, "condition": "sunny"}


class Reply:
    """One choice's outcome, whether it came whole or streamed."""

    def __init__(self, content, tool_calls, finish_reason):
        self.content = content  # str or None
        self.tool_calls = tool_calls  # [{"id", "type", "name", "arguments"}]
        self.finish_reason = finish_reason


def strict(model_cls, obj):
    """Re-validate with the SDK's own types (the SDK builds responses without validating)."""
    return model_cls.model_validate(obj.model_dump(exclude_unset=True))


def ask(qwen, model, messages, stream=False, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 120)
    if not stream:
        r = qwen.chat.completions.create(model=model, messages=messages, **kw)
        strict(ChatCompletion, r)
        c = r.choices[0]
        calls = [
            {"id": t.id, "type": t.type, "name": t.function.name, "arguments": t.function.arguments}
            for t in c.message.tool_calls or []
        ]
        if c.message.tool_calls is not None:
            assert calls, "tool_calls is [] instead of absent"
        return Reply(c.message.content, calls, c.finish_reason)
    chunks = list(qwen.chat.completions.create(model=model, messages=messages, stream=True, **kw))
    return collect_stream(chunks)


def collect_stream(chunks):
    """Rebuilds the reply from the chunks, asserting OpenAI's tool-call delta protocol."""
    content = []
    calls = {}  # index -> call
    deltas = {}  # index -> number of deltas
    finish = []
    for ch in chunks:
        strict(ChatCompletionChunk, ch)
        if not ch.choices:
            continue
        ch_choice = ch.choices[0]
        if ch_choice.finish_reason:
            finish.append(ch_choice.finish_reason)
        d = ch_choice.delta
        if d.content:
            content.append(d.content)
        for t in d.tool_calls or []:
            assert t.index is not None
            deltas[t.index] = deltas.get(t.index, 0) + 1
            if t.index not in calls:
                # The first delta of a call: id, type and name (arguments may start here).
                assert t.id, f"first tool_calls delta without id: {t}"
                assert t.type == "function", t
                assert t.function and t.function.name, f"first tool_calls delta without name: {t}"
                assert t.index == len(calls), f"index {t.index} after {sorted(calls)}"
                calls[t.index] = {
                    "id": t.id,
                    "type": t.type,
                    "name": t.function.name,
                    "arguments": t.function.arguments or "",
                }
            else:
                # The rest: argument fragments only.
                assert t.id is None, f"id repeated in a later delta: {t}"
                assert t.function is not None and t.function.name is None, t
                assert t.function.arguments is not None, t
                calls[t.index]["arguments"] += t.function.arguments
    assert len(finish) == 1, f"finish_reason sent {len(finish)} times"
    for i in calls:
        # Arguments streamed in fragments, not buffered into the head delta.
        assert deltas[i] >= 2, f"tool call {i} came in one delta"
    return Reply("".join(content) if content else None, [calls[i] for i in sorted(calls)], finish[0])


def assert_weather_call(call, city="paris"):
    assert call["id"] and call["type"] == "function"
    assert call["name"] == "get_weather"
    assert isinstance(call["arguments"], str)
    args = WeatherArgs.model_validate_json(call["arguments"])  # parses and fits the schema
    assert city in args.city.lower(), call["arguments"]
    return args


def no_markup(text):
    return text is None or ("<tool_call>" not in text and "</tool_call>" not in text)


SYSTEM = "You are a weather assistant. Use the tool results to answer the user in plain English."
ROUND_TRIP_ASK = "What's the weather like in Paris today? Answer in one sentence."
TIME_RESULT = {"city": "Paris", "local_time": "14:05"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("choice", list(TOOL_CHOICES), ids=list(TOOL_CHOICES))
def test_weather_round_trip(qwen, qwen_model, choice, stream):
    # A system prompt, as agents send one: with it qwen05 writes its call in <tool_call> tags
    # when free ("auto"), and answers from the tool result in prose on the last turn.
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ROUND_TRIP_ASK}]
    tools = [WEATHER_TOOL, TIME_TOOL]
    first = ask(qwen, qwen_model, messages, stream, tools=tools, tool_choice=TOOL_CHOICES[choice])
    assert first.finish_reason == "tool_calls"
    assert first.tool_calls, f"no tool call; content: {first.content!r}"
    assert no_markup(first.content), first.content
    # The weather call comes first. The grammar of "required" allows further calls and the
    # model may add get_time; a named tool_choice allows only get_weather.
    assert_weather_call(first.tool_calls[0])
    for call in first.tool_calls[1:]:
        assert choice != "named", first.tool_calls
        assert call["name"] in ("get_weather", "get_time"), call
        assert isinstance(json.loads(call["arguments"])["city"], str)
    assert len({c["id"] for c in first.tool_calls}) == len(first.tool_calls)

    # The assistant turn as a client sends it back, then one tool result per call.
    messages.append(
        {
            "role": "assistant",
            "content": first.content or None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in first.tool_calls
            ],
        }
    )
    for c in first.tool_calls:
        result = RESULT if c["name"] == "get_weather" else TIME_RESULT
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps(result)})
    # tool_choice "none" on the last turn: offered the tools again, a 0.5B model calls them
    # again instead of answering (qwen05 does, at temperature 0), so the client asks for the
    # answer, as a client ends a tool loop.
    final = ask(qwen, qwen_model, messages, stream, tools=tools, tool_choice="none")
    assert final.finish_reason == "stop", (final.finish_reason, final.content, final.tool_calls)
    assert not final.tool_calls
    assert final.content and "18" in final.content, final.content
    assert no_markup(final.content)


def test_fenced_json_call_without_system_prompt(qwen, qwen_model):
    # qwen05 offered two tools without a system prompt writes its call in a ```json fence,
    # without <tool_call> tags; the Hermes parser takes that form too.
    r = ask(qwen, qwen_model, [{"role": "user", "content": ASK}], tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto")
    assert r.finish_reason == "tool_calls", r.content
    assert_weather_call(r.tool_calls[0])


def test_stream_matches_plain(qwen, qwen_model):
    kw = dict(tools=[WEATHER_TOOL], tool_choice="required")
    messages = [{"role": "user", "content": ASK}]
    plain = ask(qwen, qwen_model, messages, False, **kw)
    streamed = ask(qwen, qwen_model, messages, True, **kw)
    assert [(c["name"], json.loads(c["arguments"])) for c in plain.tool_calls] == [
        (c["name"], json.loads(c["arguments"])) for c in streamed.tool_calls
    ]


TWO_CITIES = "What's the weather in Paris and in Tokyo right now?"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_parallel_tool_calls(qwen, qwen_model, stream):
    r = ask(
        qwen,
        qwen_model,
        [{"role": "user", "content": TWO_CITIES}],
        stream,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=True,
        max_tokens=160,
    )
    assert r.finish_reason == "tool_calls"
    # Both cities asked for get a call. The grammar allows more calls after them and a 0.5B
    # model may add some (unconstrained it invents London and Berlin), so more is no failure.
    assert len(r.tool_calls) >= 2, r.tool_calls
    cities = [WeatherArgs.model_validate_json(c["arguments"]).city.lower() for c in r.tool_calls]
    assert any("paris" in c for c in cities) and any("tokyo" in c for c in cities), cities
    assert all(c["name"] == "get_weather" for c in r.tool_calls)
    assert len({c["id"] for c in r.tool_calls}) == len(r.tool_calls)


def test_parallel_tool_calls_false(qwen, qwen_model):
    """parallel_tool_calls=false: at most one call, even when the question asks for two."""
    r = ask(
        qwen,
        qwen_model,
        [{"role": "user", "content": TWO_CITIES}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=160,
    )
    assert r.finish_reason == "tool_calls"
    assert len(r.tool_calls) == 1, r.tool_calls
    WeatherArgs.model_validate_json(r.tool_calls[0]["arguments"])


def test_named_function_forces_that_function(qwen, qwen_model):
    """A named tool_choice overrides what the prompt asks for."""
    r = ask(
        qwen,
        qwen_model,
        [{"role": "user", "content": "What time is it in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert r.finish_reason == "tool_calls"
    assert [c["name"] for c in r.tool_calls] == ["get_weather"]
    WeatherArgs.model_validate_json(r.tool_calls[0]["arguments"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_choice_none(qwen, qwen_model, stream):
    r = ask(
        qwen,
        qwen_model,
        [{"role": "user", "content": ASK}],
        stream,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_tokens=40,
    )
    assert not r.tool_calls
    assert r.finish_reason in ("stop", "length")
    assert r.content


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_stock_price"}}}, "get_stock_price"),
        ({"tool_choice": "required"}, "tool"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "name"),
    ],
    ids=["unknown-function", "required-without-tools", "bad-tool-choice", "tool-without-name"],
)
def test_bad_tool_requests_are_400(qwen, qwen_model, kw, needle):
    with pytest.raises(openai.BadRequestError) as e:
        qwen.chat.completions.create(
            model=qwen_model, messages=[{"role": "user", "content": ASK}], max_tokens=5, **kw
        )
    assert e.value.status_code == 400
    said = f"{e.value.message} {e.value.param}"
    assert needle in said, e.value.body
