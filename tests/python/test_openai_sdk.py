"""r1serve driven by the official `openai` Python SDK (run by scripts/test-python.sh).

Every response is also re-validated with the SDK's own pydantic models
(`Model.model_validate(obj.model_dump())`): the SDK builds responses without validation, so
this is what makes a test fail when the SDK cannot parse what the server sent.
"""

import os

import openai
import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

BASE_URL = os.environ.get("R1SERVE_BASE_URL", "http://127.0.0.1:8080/v1")
MODEL = os.environ.get("R1SERVE_MODEL_NAME", "smollm2")
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key="not-needed", max_retries=0, timeout=120)


def strict(model_cls, obj, chunk=False):
    """Validate `obj` against the SDK type it claims to be; returns the validated copy.

    `chunk`: a streamed completion chunk, whose `finish_reason` is null until the last one (as
    OpenAI sends it, although the SDK's `Completion` type does not allow null there).
    """
    data = obj.model_dump(exclude_unset=True)
    if chunk:
        for c in data.get("choices", []):
            if c.get("finish_reason") is None:
                c["finish_reason"] = "length"
    return model_cls.model_validate(data)


def test_models_list(client):
    models = list(client.models.list())
    assert [m.id for m in models] == [MODEL]
    for m in models:
        strict(Model, m)
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_plain(client):
    r = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0
    )
    strict(ChatCompletion, r)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens >= 0
    assert u.completion_tokens_details.reasoning_tokens == 0
    # DeepSeek's extra usage fields arrive as extras.
    extra = u.model_extra
    assert extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == u.prompt_tokens


def test_chat_stream_with_usage(client):
    plain = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    for ch in chunks:
        strict(ChatCompletionChunk, ch)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_n_stop_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0.8,
        seed=3,
        n=2,
        stop=["\n\n"],
        logprobs=True,
        top_logprobs=2,
    )
    strict(ChatCompletion, r)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert "\n\n" not in c.message.content
        assert c.logprobs is not None
        for t in c.logprobs.content:
            assert t.logprob <= 0
            assert len(t.top_logprobs) == 2


def test_completions(client):
    r = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2
    )
    strict(Completion, r)
    assert r.object == "text_completion"
    text = r.choices[0].text
    assert text
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for ch in chunks:
        strict(Completion, ch, chunk=True)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"


def test_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10**6)
    assert e.value.code == "context_length_exceeded"
    assert "1000000" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body={"max_tokens": "many"}
        )
    assert e.value.param == "max_tokens"
