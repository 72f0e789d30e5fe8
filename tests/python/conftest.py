"""Shared fixtures for the qwen05 suites (tool calling and structured output, issue #20).

scripts/test-python.sh starts a second server on qwen05 (Qwen2.5-Coder-0.5B-Instruct, whose
chat template renders `tools`) and passes its URL in R1SERVE_TOOLS_BASE_URL. Without it those
tests skip; a URL that is set but does not answer is a failure, not a skip, so a server that
died under CI cannot pass silently.
"""

import os
import urllib.request

import openai
import pytest

TOOLS_BASE_URL = os.environ.get("R1SERVE_TOOLS_BASE_URL")
TOOLS_MODEL = os.environ.get("R1SERVE_TOOLS_MODEL_NAME", "qwen05")

HOW = (
    "no qwen05 server: run scripts/test-python.sh (it serves models/qwen05.gguf; "
    "scripts/fetch-models.sh fetches it), or start `r1serve serve --model models/qwen05.gguf` "
    "and set R1SERVE_TOOLS_BASE_URL=http://HOST:PORT/v1"
)


@pytest.fixture(scope="session")
def tools_base_url():
    if not TOOLS_BASE_URL:
        pytest.skip(HOW)
    try:
        urllib.request.urlopen(TOOLS_BASE_URL + "/models", timeout=10).read()
    except Exception as e:  # noqa: BLE001 - any failure to reach it is the same failure
        pytest.fail(f"R1SERVE_TOOLS_BASE_URL={TOOLS_BASE_URL} does not answer: {e}")
    return TOOLS_BASE_URL


@pytest.fixture(scope="session")
def qwen(tools_base_url):
    """An openai client for the qwen05 server. Generous timeout: 2 shared CPU cores."""
    return openai.OpenAI(base_url=tools_base_url, api_key="not-needed", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def qwen_model():
    return TOOLS_MODEL
