"""With API keys on: the page asks for a key, a wrong key gets the 401 message, a `user` key
gets the chat but not the dashboard, an `admin` key gets the dashboard. And `--no-webui`."""

import subprocess

import pytest

from conftest import BIN, Server, send, set_settings, tiny_deepseek


def add_key(keys, user, role, *extra):
    out = subprocess.run([str(BIN), "keys", "add", "--file", str(keys), "--user", user, "--role", role,
                          *extra], capture_output=True, text=True, check=True)
    key = out.stdout.strip()
    assert key.startswith("r1k_"), out
    return key


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    model = tiny_deepseek()
    keys = tmp_path_factory.mktemp("keys") / "keys.toml"
    admin = add_key(keys, "ada", "admin")
    user = add_key(keys, "uma", "user")
    s = Server(model, "--keys", keys)
    yield s, admin, user
    s.stop()


def test_the_page_asks_for_a_key_and_explains_401(keyed, browser):
    server, _, user = keyed
    page = browser(server)
    page.goto(server.base + "/")
    page.wait_for_selector("body[data-ready]", state="attached")
    # No key: the key field opens and says why.
    assert page.locator("#key-panel").is_visible()
    assert page.locator("#api-key").is_visible()
    assert "This server needs an API key" in page.inner_text("#banner")
    # A wrong key: the 401 message.
    page.fill("#api-key", "r1k_wrong")
    page.click("#key-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('key-status').textContent.includes('401')")
    assert "The API key was not accepted (401)" in page.inner_text("#banner")
    assert page.locator("#model option").count() == 0
    # The user's key: models load and a chat answers.
    page.fill("#api-key", user)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#key-panel").is_hidden()
    set_settings(page, temperature=0, max_tokens=12)
    send(page, "Hello")
    answer = page.locator("article.msg.assistant").last
    assert answer.locator("[data-testid=error]").count() == 0
    assert "completion tokens" in answer.locator("[data-testid=stats]").inner_text()

    # The dashboard refuses the user's key (the key is shared through localStorage).
    page.goto(server.base + "/dashboard")
    page.wait_for_selector("body[data-access=denied]", state="attached")
    assert "cannot open the dashboard (403)" in page.inner_text("#banner")
    assert page.locator("#board").is_hidden()
    assert page.locator("[data-metric]").count() == 0


def test_a_key_that_goes_bad_mid_conversation(keyed, browser):
    server, _, user = keyed
    page = browser(server)
    page.goto(server.base + "/")
    page.wait_for_selector("body[data-ready]", state="attached")
    page.fill("#api-key", user)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option", state="attached")
    page.evaluate("localStorage.setItem('r1serve.apiKey', 'r1k_revoked')")
    send(page, "Hello")
    err = page.locator("article.msg.assistant [data-testid=error]")
    assert err.get_attribute("data-status") == "401"
    assert "The API key was not accepted (401)" in err.inner_text()
    assert page.locator("#key-panel").is_visible()


def test_admin_key_opens_the_dashboard(keyed, browser):
    server, admin, _ = keyed
    page = browser(server)
    page.goto(server.base + "/dashboard")
    page.wait_for_selector("body[data-access=denied]", state="attached")
    assert "This server needs an API key" in page.inner_text("#banner")
    page.fill("#api-key", admin)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("body[data-access=granted]", state="attached")
    page.wait_for_selector("[data-metric=running] .value[data-value]", state="attached")
    assert page.locator("#board").is_visible()


def test_no_webui_leaves_the_api_404():
    server = Server(tiny_deepseek(), "--no-webui")
    try:
        for path in ("/", "/dashboard", "/ui/chat.js"):
            status, _, text = server.request("GET", path)
            assert status == 404, (path, status, text)
            assert '"not_found"' in text
        assert server.request("GET", "/v1/models")[0] == 200
    finally:
        server.stop()


def test_pages_are_embedded_with_a_strict_policy(keyed):
    server, _, _ = keyed
    for path, kind in (("/", "text/html"), ("/dashboard", "text/html"), ("/ui/chat.js", "text/javascript"),
                       ("/ui/style.css", "text/css")):
        status, headers, _ = server.request("GET", path)
        assert status == 200, path
        h = {k.lower(): v for k, v in headers.items()}
        assert h["content-type"].startswith(kind), (path, h)
        assert "default-src 'none'" in h["content-security-policy"]
        assert "connect-src 'self'" in h["content-security-policy"]
    assert server.request("GET", "/ui/nope.js")[0] == 404
