#!/usr/bin/env bash
# Batching throughput against llama.cpp's server, in one invocation on the same machine:
#   llama-server --parallel 8 -t T  (cache_prompt false)  vs  r1serve bench --offline
# Each side runs C concurrent requests of a 105-token prompt (distinct random tokens) and 64
# generated tokens (ignore_eos), and reports output tokens per second.
#
#   scripts/bench-engine-vs-llamacpp.sh [--model models/qwen05.gguf] [--threads 2] [--concurrency 8]
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/qwen05.gguf
THREADS=2
CONC=8
PROMPT=105
GEN=64
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --concurrency) CONC="$2"; shift 2 ;;
    *) echo "usage: $0 [--model PATH] [--threads N] [--concurrency N]" >&2; exit 2 ;;
  esac
done
[ -f "$MODEL" ] || { echo "bench-engine: $MODEL missing; run scripts/fetch-models.sh" >&2; exit 1; }

BIN="$(scripts/build-llamacpp.sh)"
cargo build --release -q -p r1serve

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CTX=$(( CONC * (PROMPT + GEN + 16) ))
"$BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT" --parallel "$CONC" -t "$THREADS" \
  -c "$CTX" --no-webui >/tmp/r1serve-llama-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT

LLAMA_JSON=$(python3 - "$PORT" "$CONC" "$PROMPT" "$GEN" <<'PY'
import json, sys, threading, time, urllib.request
port, conc, plen, gen = map(int, sys.argv[1:5])
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 120
while True:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as r:
            if r.status == 200:
                break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("llama-server did not become healthy")
    time.sleep(0.5)

def prompt(seed):
    return [1000 + (seed * 7919 + i * 2654435761) % 140000 for i in range(plen)]
def one(seed, out):
    body = json.dumps({"prompt": prompt(seed), "n_predict": gen, "cache_prompt": False,
                       "ignore_eos": True, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/completion", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out.append(json.load(r)["tokens_predicted"])
def run(c, seed0):
    out = []
    ts = [threading.Thread(target=one, args=(seed0 + i, out)) for i in range(c)]
    t0 = time.time()
    for t in ts: t.start()
    for t in ts: t.join()
    dt = time.time() - t0
    return sum(out), dt
run(1, 1)  # warm-up
best = 0.0
for rep in range(2):
    n, dt = run(conc, 100 + rep * conc)
    best = max(best, n / dt)
print(json.dumps({"output_tps": best}))
PY
)
kill $SERVER 2>/dev/null || true
wait $SERVER 2>/dev/null || true

R1_JSON=$("${CARGO_TARGET_DIR:-target}/release/r1serve" bench --model "$MODEL" --threads "$THREADS" --offline \
  --concurrency "$CONC" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --prefix-tokens 1000 --json)

python3 - "$LLAMA_JSON" "$R1_JSON" "$CONC" "$THREADS" "$MODEL" <<'PY'
import json, sys, datetime, platform, subprocess
ll = json.loads(sys.argv[1]); r1 = json.loads(sys.argv[2])
conc, threads, model = sys.argv[3], sys.argv[4], sys.argv[5]
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
r1tps = r1["runs"][0]["output_tps"]
print(f"# batching throughput, {datetime.date.today()}, {cpu}, {threads} threads, {model}")
print(f"| concurrency | llama-server out tok/s | r1serve out tok/s | ratio |")
print(f"| ---: | ---: | ---: | ---: |")
print(f"| {conc} | {ll['output_tps']:.1f} | {r1tps:.1f} | {r1tps / ll['output_tps']:.2f} |")
p = r1.get("prefix_cache")
if p:
    print(f"\nprefix cache: TTFT with a {p['prefix_tokens']}-token shared prefix: cold {p['cold_ttft_s']:.3f}s, "
          f"hit {p['hit_ttft_s']:.3f}s, ratio {p['ratio']:.3f} (target <= 0.2)")
PY
