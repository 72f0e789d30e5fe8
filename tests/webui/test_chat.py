"""The chat page and the dashboard against qwen05 (open server, no keys)."""

import threading

import pytest

from conftest import (Server, qwen05, quantile, samples, screenshot, send, set_settings, total,
                      wait_for)

QUESTION = "Write a Python function that returns the squares of a list of numbers. Be brief."


@pytest.fixture(scope="module")
def server():
    s = Server(qwen05())
    yield s
    s.stop()


def load(page, server, path="/"):
    page.goto(server.base + path)
    page.wait_for_selector("body[data-ready]", state="attached")


def test_chat_streams_the_whole_answer(server, browser):
    page = browser(server)
    load(page, server)
    assert page.locator("#model option").all_inner_texts() == ["qwen05"]
    set_settings(page, temperature=0, max_tokens=160)
    # Sample the answer while it streams: it must grow in steps, not land at once.
    lengths = []
    page.fill("#prompt", QUESTION)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#stop", state="visible")
    while page.evaluate("document.body.hasAttribute('data-streaming')"):
        lengths.append(len(page.locator("article.msg.assistant .body").last.inner_text()))
        page.wait_for_timeout(200)
    assert len({n for n in lengths if n > 0}) >= 3, lengths
    answer = page.locator("article.msg.assistant").last
    # The same request without streaming (greedy): the page holds the whole answer.
    ref = server.json("POST", "/v1/chat/completions", {
        "model": "qwen05", "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0, "top_p": 0.95, "max_tokens": 160,
    })
    want = ref["choices"][0]["message"]["content"]
    code = answer.locator(".code-block code")
    assert code.count() >= 1, answer.inner_html()
    assert "def " in code.first.inner_text()
    page_text = page.evaluate(
        "JSON.parse(localStorage.getItem('r1serve.conversations'))[0].messages[1].content")
    assert page_text == want
    stats = answer.locator("[data-testid=stats]").inner_text()
    usage = ref["usage"]
    assert f"{usage['prompt_tokens']} prompt" in stats, stats
    assert f"{usage['completion_tokens']} completion tokens" in stats, stats
    assert "tokens/s" in stats, stats
    # The copy button sits on the code block; Regenerate and Edit are offered.
    assert answer.locator("button.copy-code").count() >= 1
    assert answer.locator("button.regenerate").count() == 1
    screenshot(page, "chat.png")

    # Kept in localStorage: a reload shows the conversation again, titled by the question.
    page.reload()
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.locator("#conversations li").count() == 1
    assert QUESTION[:40] in page.locator("#conversations li").first.inner_text()
    assert page.locator("article.msg.assistant .code-block").count() >= 1

    # Phone width: the list becomes a drawer, the composer stays usable.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.locator("#open-sidebar").is_visible()
    assert not page.locator("#new-chat").is_visible() or page.locator("#new-chat").bounding_box()["x"] < 0
    assert page.locator("#prompt").is_visible() and page.locator("#send").is_visible()
    box = page.locator("#prompt").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    screenshot(page, "chat-phone.png")


def test_edit_rename_delete_and_enter_keys(server, browser):
    page = browser(server)
    load(page, server)
    set_settings(page, temperature=0, max_tokens=8)
    # Shift+Enter adds a line, Enter sends.
    page.fill("#prompt", "Say hi")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "in French")
    assert page.input_value("#prompt") == "Say hi\nin French"
    send(page, page.input_value("#prompt"))
    assert page.locator("article.msg.user .body").first.inner_text() == "Say hi\nin French"
    # Edit and resend: the old answer is replaced by the answer to the edited message.
    page.click("article.msg.user button.edit")
    page.fill(".edit-box textarea", "Say hello")
    page.click(".edit-box button.primary")
    page.wait_for_function("() => document.querySelectorAll('article.msg').length === 2"
                           " && !document.body.hasAttribute('data-streaming')"
                           " && !!document.querySelector('article.msg.assistant [data-testid=stats]')")
    assert page.locator("article.msg.user .body").inner_text() == "Say hello"
    # Regenerate keeps one answer.
    page.click("button.regenerate")
    page.wait_for_function("() => !document.body.hasAttribute('data-streaming')"
                           " && !!document.querySelector('article.msg.assistant [data-testid=stats]')")
    assert page.locator("article.msg.assistant").count() == 1
    # Rename, then delete.
    page.click("#conversations li button:has-text('Rename')")
    page.fill("#conversations li input", "Greetings")
    page.press("#conversations li input", "Enter")
    assert page.locator("#conversations li .conv-title").inner_text() == "Greetings"
    page.once("dialog", lambda d: d.accept())
    page.click("#conversations li button:has-text('Delete')")
    assert page.locator("#conversations li").count() == 0
    assert page.evaluate("JSON.parse(localStorage.getItem('r1serve.conversations')).length") == 0


def test_stop_cancels_the_request_and_frees_the_kv_cache(server, browser):
    idle = server.metrics()
    idle_kv = total(idle, "r1serve_kv_cache_usage_ratio")
    aborted = total(idle, "r1serve_request_success_total", finished_reason="abort")
    page = browser(server)
    load(page, server)
    set_settings(page, max_tokens=4000)
    page.fill("#prompt", "Tell me a very long story about a dragon who learns to bake bread.")
    page.press("#prompt", "Enter")
    wait_for("some of the answer",
             lambda: len(page.locator("article.msg.assistant .body").last.inner_text()) > 40,
             page=page)
    busy = server.metrics()
    assert total(busy, "r1serve_num_requests_running") == 1
    assert total(busy, "r1serve_kv_cache_usage_ratio") > idle_kv
    page.click("#stop")
    page.wait_for_selector("article.msg.assistant .stopped")
    # The server saw the connection close: the request ends as aborted and its KV is freed.
    wait_for("the running gauge to drop",
             lambda: total(server.metrics(), "r1serve_num_requests_running") == 0, timeout=10)
    wait_for("the KV cache back to idle",
             lambda: total(server.metrics(), "r1serve_kv_cache_usage_ratio") == idle_kv, timeout=10)
    after = server.metrics()
    assert total(after, "r1serve_request_success_total", finished_reason="abort") == aborted + 1
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()


def test_markdown_escapes_html(server, browser):
    page = browser(server)
    load(page, server)
    html = page.evaluate("""async () => {
        const m = await import('/ui/markdown.js');
        return m.render('<img src=x onerror=alert(1)> **b** [x](javascript:alert(1)) [ok](https://example.org/a_b)');
    }""")
    assert "<img" not in html and "&lt;img" in html
    assert "<strong>b</strong>" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org/a_b"' in html
    # The page's policy (connect-src 'self') stops a script's request to another host before
    # it leaves the browser (the route guard would fail the test on any that got out).
    got = page.evaluate("() => fetch('http://192.0.2.1/x').then(() => 'loaded', () => 'blocked')")
    assert got == "blocked"


def traffic(server, stop):
    """Streams answers until `stop` is set (load for the dashboard's charts)."""
    while not stop.is_set():
        server.request("POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Count from 1 to 20."}],
            "max_tokens": 48, "stream": True,
        })


def test_dashboard_matches_metrics(server, browser):
    page = browser(server)
    page.goto(server.base + "/dashboard")
    page.wait_for_selector("body[data-access=granted]", state="attached")
    stop = threading.Event()
    workers = [threading.Thread(target=traffic, args=(server, stop)) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        wait_for("generation on the chart",
                 lambda: float(page.get_attribute("[data-metric=gen-tps] .value", "data-value") or 0) > 0,
                 timeout=30, page=page)
        # Not time.sleep: the page's requests pass through this process's route handler,
        # which only runs while Playwright waits.
        page.wait_for_timeout(20_000)
        screenshot(page, "dashboard.png", full_page=True)
    finally:
        stop.set()
        for w in workers:
            w.join()
    wait_for("an idle server", lambda: total(server.metrics(), "r1serve_num_requests_running") == 0)

    def figure(metric):
        v = page.get_attribute(f"[data-metric={metric}] .value", "data-value")
        return None if v is None else float(v)

    def expected(m):
        hits = total(m, "r1serve_prefix_cache_hits_total")
        queries = total(m, "r1serve_prefix_cache_queries_total")
        codes = {}
        for n, l, v in samples(m):
            if n == "r1serve_http_requests_total":
                codes[l["code"]] = codes.get(l["code"], 0) + v
        return {
            "running": total(m, "r1serve_num_requests_running"),
            "waiting": total(m, "r1serve_num_requests_waiting"),
            "queued": total(m, "r1serve_admission_queue_length"),
            "kv": total(m, "r1serve_kv_cache_usage_ratio"),
            "prefix-hit": hits / queries if queries else None,
            "ttft-p50": quantile(0.5, m, "r1serve_time_to_first_token_seconds"),
            "ttft-p99": quantile(0.99, m, "r1serve_time_to_first_token_seconds"),
            "itl-p50": quantile(0.5, m, "r1serve_inter_token_latency_seconds"),
            "itl-p99": quantile(0.99, m, "r1serve_inter_token_latency_seconds"),
            "http-429": codes.get("429", 0),
            "http-503": codes.get("503", 0),
            "requests": total(m, "r1serve_requests_total"),
        }

    # ±1 refresh: after the page's next refresh, its figures equal a scrape taken right after.
    mismatch = None
    for _ in range(4):
        n = int(page.get_attribute("body", "data-refreshes"))
        page.wait_for_function(f"() => Number(document.body.getAttribute('data-refreshes')) > {n}")
        want = expected(server.metrics())
        got = {k: figure(k) for k in want}
        mismatch = {k: (got[k], w) for k, w in want.items()
                    if (w is None) != (got[k] is None) or (w is not None and abs(got[k] - w) > 1e-9 * max(1, abs(w)))}
        if not mismatch:
            break
    assert not mismatch, f"dashboard vs /metrics (page, scrape): {mismatch}"
    assert want["requests"] >= 3 and want["ttft-p50"] is not None
    assert page.inner_text("[data-testid=model]").startswith("qwen05")
    version = [l["version"] for n, l, _ in samples(server.metrics())
               if n == "r1serve_build_info"][0]
    assert page.inner_text("[data-testid=build]") == "r1serve " + version
    assert page.inner_text("[data-testid=uptime]").endswith("s")
    # The advice and its reason, as /v1/scaling gives them (the advisor re-evaluates every 10 s).
    reasons = set()
    for _ in range(2):
        reasons.add(server.json("GET", "/v1/scaling")["reason"])
        shown = page.inner_text("[data-testid=advice-reason]")
        reasons.add(server.json("GET", "/v1/scaling")["reason"])
        if shown in reasons:
            break
        page.wait_for_timeout(2500)
    assert shown in reasons, (shown, reasons)
    # Every chart drew.
    assert page.locator("figure.chart canvas").count() == 8
