"""The thinking block: `reasoning_content` deltas from the tiny DeepSeek fixture with the R1
reasoning parser (a chat template that leaves the model inside `<think>`), and a screenshot of
qwen05 thinking."""

import json

import pytest

from conftest import THINK_TEMPLATE, Server, qwen05, screenshot, send, set_settings, tiny_deepseek

PROMPT = "Is 17 a prime number? Think first."

# Records, while the answer streams, whether the thinking block is open and what it says.
WATCH = """() => {
  window.__thinking = [];
  new MutationObserver(() => {
    const d = document.querySelector('article.msg.assistant details.thinking');
    if (d && document.body.hasAttribute('data-streaming'))
      window.__thinking.push({open: d.open, label: d.querySelector('summary').textContent,
                              text: d.querySelector('.think-body').textContent});
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


def streamed_reasoning(server, body):
    """The reasoning and content deltas of the same request over the API."""
    status, _, text = server.request("POST", "/v1/chat/completions", {**body, "stream": True})
    assert status == 200, text
    reasoning, content = "", ""
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            for ch in chunk.get("choices", []):
                reasoning += ch["delta"].get("reasoning_content") or ""
                content += ch["delta"].get("content") or ""
    return reasoning, content


def test_reasoning_deltas_fill_the_thinking_block(browser):
    server = Server(tiny_deepseek(), "--chat-template", THINK_TEMPLATE,
                    "--reasoning-parser", "deepseek-r1")
    try:
        page = browser(server)
        page.goto(server.base + "/")
        page.wait_for_selector("body[data-ready]", state="attached")
        set_settings(page, temperature=0, max_tokens=200)
        page.evaluate(WATCH)
        # On an idle machine the tiny model writes its whole reasoning within one network
        # read, and the page would get it as one piece: throttle the download (after the page
        # has loaded) so the SSE events arrive over a second or two, as from a real model.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 20, "downloadThroughput": 2048, "uploadThroughput": -1,
        })
        send(page, PROMPT)
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1,
        })
        seen = page.evaluate("window.__thinking")
        model = page.locator("#model").input_value()
        want, content = streamed_reasoning(server, {
            "model": model, "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0, "top_p": 0.95, "max_tokens": 200,
        })
        assert want, "the fixture gave no reasoning_content"
        # While streaming: open, labelled "Thinking… (N s)", and growing delta by delta.
        thinking = [s for s in seen if s["label"].startswith("Thinking… (")]
        assert thinking, f"no open thinking block while streaming: {seen[:3]}"
        assert all(s["open"] for s in thinking), thinking[:3]
        assert len({s["text"] for s in thinking}) >= 2, "the reasoning arrived in one piece"
        assert all(want.startswith(s["text"]) for s in seen)
        # After: folded, "Thought for N s", holding the whole reasoning.
        d = page.locator("article.msg.assistant details.thinking")
        assert d.evaluate("d => d.open") is False
        assert d.locator("summary").inner_text().startswith("Thought for ")
        assert d.locator(".think-body").evaluate("e => e.textContent") == want
        assert page.locator("article.msg.assistant .body").inner_text().strip() == content.strip()
        # The user can open it again.
        d.locator("summary").click()
        assert d.evaluate("d => d.open") is True
    finally:
        server.stop()


def test_thinking_screenshot(browser):
    """qwen05 under a template that opens `<think>`: readable reasoning for the README."""
    server = Server(qwen05(), "--chat-template", THINK_TEMPLATE)
    try:
        page = browser(server, width=1100, height=760)
        page.goto(server.base + "/")
        page.wait_for_selector("body[data-ready]", state="attached")
        set_settings(page, temperature=0, max_tokens=120)
        send(page, "What is 12 * 7? Think step by step, then answer briefly.")
        d = page.locator("article.msg.assistant details.thinking")
        assert "84" in d.locator(".think-body").evaluate("e => e.textContent")
        d.locator("summary").click()
        screenshot(page, "chat-thinking.png")
    finally:
        server.stop()
