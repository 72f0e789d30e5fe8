"""Errors as people understand them: 429 with the server's Retry-After as a countdown, and a
prompt over the context limit."""

import pytest

from conftest import Server, send, set_settings, tiny_deepseek
from test_keys import add_key


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    model = tiny_deepseek()
    keys = tmp_path_factory.mktemp("keys") / "keys.toml"
    slow = add_key(keys, "rita", "user", "--requests-per-min", "1")
    free = add_key(keys, "uma", "user")
    s = Server(model, "--keys", keys, "--max-model-len", "64")
    yield s, slow, free
    s.stop()


def with_key(page, server, key):
    page.goto(server.base + "/")
    page.wait_for_selector("body[data-ready]", state="attached")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option", state="attached")


def test_429_shows_a_retry_after_countdown(limited, browser):
    server, slow, _ = limited
    page = browser(server)
    with_key(page, server, slow)
    set_settings(page, temperature=0, max_tokens=4)
    send(page, "Hello")
    assert page.locator("article.msg.assistant [data-testid=error]").count() == 0
    send(page, "Hello again")
    err = page.locator("article.msg.assistant [data-testid=error]").last
    assert err.get_attribute("data-status") == "429"
    assert "Too many requests (429)" in err.inner_text()
    first = int(err.locator(".retry").get_attribute("data-seconds"))
    assert 1 <= first <= 60, first
    assert f"You can retry in {first} s" in err.inner_text()
    page.wait_for_timeout(2100)
    later = int(err.locator(".retry").get_attribute("data-seconds"))
    assert later < first, (first, later)


def test_context_length_error_says_what_to_do(limited, browser):
    server, _, free = limited
    page = browser(server)
    with_key(page, server, free)
    set_settings(page, max_tokens=16)
    send(page, " ".join(["word"] * 200))
    err = page.locator("article.msg.assistant [data-testid=error]")
    assert err.get_attribute("data-status") == "400"
    text = err.inner_text()
    assert "The conversation is too long for the model" in text
    assert "maximum context length is 64 tokens" in text
    assert "Start a new conversation" in text
