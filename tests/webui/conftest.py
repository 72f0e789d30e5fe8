"""Browser tests of the web UI (issue #22): real `r1serve serve` processes driven through
Debian's Chromium by Playwright (scripts/test-webui.sh sets up both).

Every page runs in a fresh Chromium profile (its own --user-data-dir), and every request the
page makes goes through a route that fails the test on any host other than the server's.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("R1SERVE_BIN", ROOT / "target" / "release" / "r1serve"))
MODELS = Path(os.environ.get("R1SERVE_MODELS", ROOT / "models"))
FIXTURES = Path(os.environ.get("R1SERVE_FIXTURES", ROOT.parent / "shared" / "fixtures"))
CHROMIUM = os.environ.get("R1SERVE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("R1SERVE_SCREENSHOTS", ROOT / "docs" / "screenshots"))
THINK_TEMPLATE = ROOT / "crates" / "r1-server" / "tests" / "data" / "chatml-think.jinja"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def qwen05():
    p = MODELS / "qwen05.gguf"
    if not p.is_file():
        pytest.skip(f"{p} is missing: fetch it with scripts/fetch-models.sh")
    return p


def tiny_deepseek():
    p = FIXTURES / "deepseek2-gguf" / "tiny-f32.gguf"
    if not p.is_file():
        pytest.skip(f"{p} is missing: set R1SERVE_FIXTURES to the shared fixtures folder")
    return p


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """One `r1serve serve` on a free loopback port, up until stop()."""

    def __init__(self, model, *args):
        if not BIN.is_file():
            pytest.skip(f"{BIN} is missing: cargo build --release -p r1serve")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="r1serve-webui-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--kv-cache-mem", "256MiB", *map(str, args)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(self.base + "/ready", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not become ready:\n" + self.log_text())
            time.sleep(0.1)

    def log_text(self):
        return Path(self.log.name).read_text(errors="replace")

    def request(self, method, path, body=None, key=None, timeout=120):
        """(status, headers, text) of one API call."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", "Bearer " + key)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, method, path, body=None, key=None):
        status, _, text = self.request(method, path, body, key)
        assert status == 200, f"{method} {path}: {status} {text}"
        return json.loads(text)

    def metrics(self, key=None):
        status, _, text = self.request("GET", "/metrics", key=key)
        assert status == 200, text
        return text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if os.environ.get("R1SERVE_TEST_VERBOSE"):
            sys.stderr.write(self.log_text())
        os.unlink(self.log.name)


def samples(text):
    """Prometheus text → [(name, {labels}, value)] (the tests' own parser, not the page's)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = {}
        if "{" in head:
            name, rest = head.split("{", 1)
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, v = part.split("=", 1)
                    labels[k.strip()] = v.strip().strip('"')
        else:
            name = head
        out.append((name, labels, float(value)))
    return out


def total(text, name, **match):
    vals = [v for n, l, v in samples(text) if n == name and all(l.get(k) == m for k, m in match.items())]
    assert vals, f"{name} {match} not in /metrics"
    return sum(vals)


def quantile(q, text, name):
    """PromQL's histogram_quantile over the histogram's cumulative buckets (None: empty)."""
    b = {}
    for n, l, v in samples(text):
        if n == name + "_bucket":
            le = float("inf") if l["le"] == "+Inf" else float(l["le"])
            b[le] = b.get(le, 0) + v
    bs = sorted(b.items())
    if not bs or bs[-1][1] <= 0:
        return None
    rank = q * bs[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for i, (le, c) in enumerate(bs):
        if c >= rank:
            if le == float("inf"):
                return bs[i - 1][0] if i > 0 else None
            if c - prev_c <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return bs[-1][0]


def wait_for(what, cond, timeout=30, every=0.1, page=None):
    """Polls `cond`. Pass the page while it works: its requests go through the route handler
    in this process, which runs only inside Playwright calls, not in time.sleep."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if page is not None:
            page.wait_for_timeout(every * 1000)
        else:
            time.sleep(every)


@pytest.fixture(scope="session")
def playwright():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright):
    """open(server, width=1280, height=860) → a page in a fresh profile; external requests fail
    the test."""
    opened = []

    def open_page(server, width=1280, height=860):
        profile = tempfile.mkdtemp(prefix="r1serve-chromium-")
        ctx = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            color_scheme="light",
        )
        foreign = []
        origin = urlsplit(server.base).netloc

        def guard(route):
            u = urlsplit(route.request.url)
            if u.scheme in ("http", "https", "ws", "wss") and u.netloc != origin:
                foreign.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        ctx.route("**/*", guard)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(30_000)
        opened.append((ctx, profile, foreign, errors))
        return page

    yield open_page
    for ctx, profile, foreign, errors in opened:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)
        assert not foreign, f"the page asked for other hosts: {foreign}"
        assert not errors, f"script errors on the page: {errors}"


def screenshot(page, name, full_page=False):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page, animations="disabled")


def send(page, text):
    """Types a message and presses Enter; returns when the answer has finished streaming."""
    n = page.locator("article.msg.assistant").count()
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('article.msg.assistant').length > n"
        " && !document.body.hasAttribute('data-streaming')",
        arg=n,
        timeout=180_000,
    )


def set_settings(page, **values):
    page.click("#settings-button")
    for field, v in values.items():
        page.fill(f"#set-{field.replace('_', '-')}", str(v))
    page.click("#settings-form button[type=submit]")
