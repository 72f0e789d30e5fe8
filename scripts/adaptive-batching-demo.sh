#!/usr/bin/env bash
# Adaptive batching, shown: VIP requests decode while normal requests with long prompts keep
# arriving (their prefill chunks make engine steps slow). Runs the same load twice, without
# and with `--target-itl vip=$TARGET` (default 300 ms), and prints the VIP inter-token latency
# of both runs. smollm2, 2 threads; DURATION seconds per run (default 40). CPU-heavy: run it
# under `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2.gguf}
TARGET=${TARGET:-300}
DURATION=${DURATION:-40}
# Normal arrivals per second: at 1.5 their prompts keep two cores busy; at 0.4 (the old
# default) an idle machine clears them between VIP tokens and the tail hardly moves.
NORMAL_RATE=${NORMAL_RATE:-1.5}
PORT=${PORT:-18438}
OUT=${OUT:-target/adaptive}
BIN=${CARGO_TARGET_DIR:-target}/release/r1serve
[ -f "$MODEL" ] || { echo "SKIP: $MODEL missing (scripts/fetch-models.sh)"; exit 0; }
cargo build --release -p r1serve -q
mkdir -p "$OUT"
URL="http://127.0.0.1:$PORT"
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for T in off "$TARGET"; do
  FLAGS=(--max-num-seqs 8 --max-batched-tokens 512 --kv-cache-mem 64MiB)
  [ "$T" = off ] || FLAGS+=(--target-itl "vip=$T")
  "$BIN" serve -m "$MODEL" -t 2 --port "$PORT" "${FLAGS[@]}" 2>"$OUT/server-$T.log" &
  PID=$!
  for _ in $(seq 1 600); do curl -fs "$URL/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  # Normal: long prompts (about 400 tokens), short answers, Poisson at $NORMAL_RATE/s.
  "$BIN" bench serve --url "$URL" --request-rate "$NORMAL_RATE" --duration "$DURATION" --prompt-words 400 \
    --max-tokens 4 --priority-mix normal=1 --quiet --seed 7 --json-out "$OUT/normal-$T.json" >/dev/null &
  NPID=$!
  # VIP: two short-prompt requests in flight, decoding.
  "$BIN" bench serve --url "$URL" --concurrency 2 --duration "$DURATION" --prompt-words 16 \
    --max-tokens 48 --priority-mix vip=1 --quiet --json-out "$OUT/vip-$T.json" >/dev/null
  wait $NPID || true
  kill $PID; wait $PID 2>/dev/null || true
done
python3 - "$OUT" "$TARGET" <<'PY'
import json, sys
out, target = sys.argv[1], sys.argv[2]
print("| VIP target ITL | VIP ITL p50 / p90 / p99 ms | VIP TTFT p50 / p99 ms | VIP ok | normal ok | normal TTFT p50 ms |")
print("| --- | --- | --- | ---: | ---: | ---: |")
for t in ("off", target):
    v = json.load(open(f"{out}/vip-{t}.json"))["all"]
    n = json.load(open(f"{out}/normal-{t}.json"))["all"]
    i, f = v["itl_ms"], v["ttft_ms"]
    print(f"| {t} | {i['p50']:.0f} / {i['p90']:.0f} / {i['p99']:.0f} | {f['p50']:.0f} / {f['p99']:.0f} | "
          f"{v['ok']} | {n['ok']} | {n['ttft_ms']['p50'] or 0:.0f} |")
PY
