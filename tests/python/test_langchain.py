"""LangChain's ChatOpenAI against r1serve on qwen05, with LangChain code exactly as its docs
write it for OpenAI (issue #20, "Must show"): only base_url, api_key and model differ.

`bind_tools([...])` must come back as `AIMessage.tool_calls` (LangChain parses the OpenAI
`tool_calls` it receives), and `with_structured_output(Model)` as a `Model` instance, by its
default method (json_schema: response_format) and by function calling (a named tool_choice).
"""

from typing import Literal

import pytest
from pydantic import BaseModel, Field

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="pip install langchain-openai (scripts/test-python.sh does)"
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"18 degrees and sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's full name")
    age: int = Field(ge=0, le=130)
    occupation: Literal["engineer", "doctor", "teacher", "artist", "other"]


@pytest.fixture(scope="module")
def llm(tools_base_url, qwen_model):
    return langchain_openai.ChatOpenAI(
        base_url=tools_base_url,
        api_key="x",
        model=qwen_model,
        temperature=0,
        max_tokens=120,
        max_retries=0,
        timeout=300,
    )


SYSTEM = "You are a helpful assistant. Use the tools when they help."


def test_bind_tools(llm):
    # tool_choice left to the model ("auto"). With a system prompt, as agents send one,
    # qwen05 writes the call in its <tool_call> tags (without, it writes bare JSON).
    ai = llm.bind_tools([get_weather, add]).invoke(
        [SystemMessage(SYSTEM), HumanMessage("What's the weather like in Paris today?")]
    )
    assert isinstance(ai, AIMessage)
    assert not ai.invalid_tool_calls, ai.invalid_tool_calls
    assert len(ai.tool_calls) >= 1, ai
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather"
    assert "paris" in call["args"]["city"].lower()
    assert call["id"]
    assert ai.response_metadata.get("finish_reason") == "tool_calls"


def test_bind_tools_forced_round_trip(llm):
    """tool_choice by name, then the ToolMessage back and a final answer that uses it."""
    bound = llm.bind_tools([get_weather, add], tool_choice="add")
    history = [HumanMessage("What is 1234 plus 4321?")]
    ai = bound.invoke(history)
    assert [c["name"] for c in ai.tool_calls] == ["add"]
    args = ai.tool_calls[0]["args"]
    assert isinstance(args["a"], int) and isinstance(args["b"], int)
    history += [ai, ToolMessage(str(add.invoke(args)), tool_call_id=ai.tool_calls[0]["id"])]
    # The answer turn without tools: offered them again, qwen05 calls them again.
    final = llm.invoke(history)
    assert not final.tool_calls
    assert str(args["a"] + args["b"]) in final.content.replace(",", ""), final.content


def test_bind_tools_stream(llm):
    """Streamed chunks add up to the same tool call (LangChain merges tool_call_chunks by index)."""
    bound = llm.bind_tools([get_weather], tool_choice="any")
    merged = None
    for chunk in bound.stream("What's the weather like in Paris today?"):
        merged = chunk if merged is None else merged + chunk
    assert merged.tool_calls and merged.tool_calls[0]["name"] == "get_weather"
    assert "paris" in merged.tool_calls[0]["args"]["city"].lower()
    assert not merged.invalid_tool_calls


@pytest.mark.parametrize("method", [None, "function_calling"], ids=["default", "function_calling"])
def test_with_structured_output(llm, method):
    # The default method is json_schema (response_format) in langchain-openai 0.3 and later.
    structured = llm.with_structured_output(Person) if method is None else llm.with_structured_output(Person, method=method)
    p = structured.invoke("Extract the person: 'Maria Lopez is a 34-year-old engineer from Madrid.'")
    assert isinstance(p, Person), p
