#!/usr/bin/env bash
# The web UI's browser tests (tests/webui/, issue #22): Debian's Chromium driven by Python
# Playwright against real `r1serve serve` processes (qwen05 and the tiny DeepSeek fixture).
# Builds the release binary, keeps Playwright and pytest in .venv-webui (git-ignored), and
# writes the screenshots to docs/screenshots/. Skips with a message where Chromium is missing
# (.ci/run installs it: apt-get install chromium). Playwright never downloads a browser here:
# the tests launch /usr/bin/chromium (R1SERVE_CHROMIUM overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${R1SERVE_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "test-webui: SKIP ($CHROMIUM is missing: apt-get install chromium)"
  exit 0
fi
export R1SERVE_CHROMIUM="$CHROMIUM"
export R1SERVE_FIXTURES="${R1SERVE_FIXTURES:-$(pwd)/../shared/fixtures}"
export R1SERVE_MODELS="${R1SERVE_MODELS:-$(pwd)/models}"
if [ ! -f "$R1SERVE_MODELS/qwen05.gguf" ]; then
  scripts/fetch-models.sh "$R1SERVE_MODELS"
fi

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p r1serve
BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
export R1SERVE_BIN="$(cd "$BIN_DIR" && pwd)/r1serve"

VENV="${R1SERVE_WEBUI_VENV:-.venv-webui}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade playwright pytest
# No `playwright install`: the system Chromium is used, and browser downloads can't be had.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VENV/bin/python" -m pytest -q tests/webui "$@"
