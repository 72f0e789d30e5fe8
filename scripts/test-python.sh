#!/usr/bin/env bash
# The Python suite: drives `r1serve serve` with the official `openai` SDK and LangChain.
# Creates .venv (git-ignored) with what the tests import, builds the release binary, starts two
# servers on free loopback ports — smollm2 (the API surface: test_openai_sdk.py) and qwen05
# (tool calling and structured output, issue #20: its chat template supports tools) — waits for
# /ready on both, runs pytest once, stops the servers, exits with pytest's code.
#
#   scripts/test-python.sh [PYTEST ARGS...]     e.g. -k round_trip, tests/python/test_langchain.py
#
# Without models/qwen05.gguf the qwen05 tests skip (scripts/fetch-models.sh fetches it).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS="${R1SERVE_MODELS:-$(pwd)/models}"
if [ ! -f "$MODELS/smollm2.gguf" ] || [ ! -f "$MODELS/qwen05.gguf" ]; then
  scripts/fetch-models.sh "$MODELS" || echo "test-python: fetch-models failed; tests of a missing model skip" >&2
fi

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p r1serve
BIN=${CARGO_TARGET_DIR:-target}/release/r1serve

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# openai: the SDK under test (chat.completions.parse for structured outputs); pydantic: the
# schemas; langchain-openai/-core: ChatOpenAI.bind_tools and with_structured_output.
.venv/bin/python -m pip install -q --upgrade openai pydantic pytest langchain-openai langchain-core
PY=.venv/bin/python

PIDS=()
LOGS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "${LOGS[@]}"
}
trap cleanup EXIT

# start MODEL_FILE -> sets BASE to the server's URL (the server runs in the background)
start() {
  local port log
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$(mktemp)"
  "$BIN" serve --model "$1" --host 127.0.0.1 --port "$port" --kv-cache-mem 256MiB >"$log" 2>&1 &
  PIDS+=("$!")
  LOGS+=("$log")
  BASE="http://127.0.0.1:$port"
}

# wait_ready BASE PID LOG
wait_ready() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import os, sys, time, urllib.request
base, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 180
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
sys.stderr.write(f"test-python: the server at {base} did not become ready:\n" + open(log).read())
sys.exit(1)
PYEOF
}

start "$MODELS/smollm2.gguf"
SMOL_BASE=$BASE
QWEN_BASE=""
if [ -f "$MODELS/qwen05.gguf" ]; then
  start "$MODELS/qwen05.gguf"
  QWEN_BASE=$BASE
fi
wait_ready "$SMOL_BASE" "${PIDS[0]}" "${LOGS[0]}"
if [ -n "$QWEN_BASE" ]; then
  wait_ready "$QWEN_BASE" "${PIDS[1]}" "${LOGS[1]}"
  export R1SERVE_TOOLS_BASE_URL="$QWEN_BASE/v1" R1SERVE_TOOLS_MODEL_NAME=qwen05
fi

# The whole suite unless an argument names a test path (e.g. tests/python/test_tools.py::x).
ARGS=("$@")
has_path=0
for a in "$@"; do
  if [ -e "${a%%::*}" ]; then has_path=1; fi
done
if [ $has_path = 0 ]; then ARGS=(tests/python "${ARGS[@]}"); fi

set +e
R1SERVE_BASE_URL="$SMOL_BASE/v1" R1SERVE_MODEL_NAME=smollm2 "$PY" -m pytest -q -rs --durations=10 "${ARGS[@]}"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  for log in "${LOGS[@]}"; do
    echo "---- server log ($log) ----"
    tail -n 200 "$log"
  done
fi
exit $rc
