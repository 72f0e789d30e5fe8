#!/usr/bin/env bash
# The Python suite: drives `r1serve serve` (smollm2) with the official `openai` SDK.
# Creates .venv (git-ignored) with openai + pytest, builds the release binary, starts the server
# on a free loopback port, waits for /ready, runs pytest, stops the server, exits with pytest's
# code.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${R1SERVE_MODELS:-$(pwd)/models}/smollm2.gguf"
if [ ! -f "$MODEL" ]; then
  scripts/fetch-models.sh "$(dirname "$MODEL")"
fi

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p r1serve
BIN=${CARGO_TARGET_DIR:-target}/release/r1serve

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade openai pytest
PY=.venv/bin/python

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG="$(mktemp)"
"$BIN" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT" --kv-cache-mem 256MiB >"$LOG" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

BASE="http://127.0.0.1:$PORT"
"$PY" - "$BASE" "$PID" "$LOG" <<'PYEOF'
import os, sys, time, urllib.request
base, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 120
while time.time() < deadline:
    try:
        if urllib.request.urlopen(base + "/ready", timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        break
    time.sleep(0.1)
sys.stderr.write("test-python: the server did not become ready:\n" + open(log).read())
sys.exit(1)
PYEOF

set +e
R1SERVE_BASE_URL="$BASE/v1" R1SERVE_MODEL_NAME=smollm2 "$PY" -m pytest -q tests/python "$@"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "---- server log ----"
  cat "$LOG"
fi
exit $rc
