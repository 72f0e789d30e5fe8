#!/usr/bin/env bash
# Soak test of the HTTP server: smollm2 over loopback at 3x its capacity for SOAK_SECS
# (default 600 s), with mixed priority classes, about 10% of streams dropped mid-answer,
# and some malformed and oversized bodies. It checks and prints:
#   - crashes: the server process must still be alive and answer /health at the end;
#   - statuses: every answer is 200, 4xx (400/404/413/422/429) or 503; anything else
#     (5xx but 503, a reset or timeout the client did not cause) counts as bad;
#   - KV: after the load, the engine's used KV blocks (/v1/engine/stats kv_blocks_used)
#     return to their idle value, so every dropped stream's blocks were freed;
#   - memory: RSS growth between minute 2 (or 20% of a shorter run) and the end under 5%.
#
#   scripts/soak.sh                 # 10 minutes
#   SOAK_SECS=120 scripts/soak.sh   # a shorter run (RSS compared from 20% of it)
#
# Capacity is the engine's sequence slots (SOAK_SEQS, default 4): 3x as many clients send
# back to back, so the class queues stay full and the bounded ones answer 429; every class
# has a max queue wait (vip 90 s, normal 60 s, batch 30 s), after which a request gets 503.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SOAK_SECS:-600}"
SEQS="${SOAK_SEQS:-4}"
MODEL="${R1SERVE_MODELS:-$(pwd)/models}/smollm2.gguf"
[ -f "$MODEL" ] || scripts/fetch-models.sh "$(dirname "$MODEL")"
if [ -z "${R1SERVE_BIN:-}" ]; then
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release -p r1serve
  R1SERVE_BIN="${CARGO_TARGET_DIR:-target}/release/r1serve"
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG="$(mktemp)"
"$R1SERVE_BIN" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
  --kv-cache-mem "${SOAK_KV:-32MiB}" --max-num-seqs "$SEQS" --keep-alive-interval 1 \
  --max-body-bytes 65536 \
  --max-queue "normal=$((2 * SEQS))" --max-queue "batch=$SEQS" \
  --max-queue-wait vip=90 --max-queue-wait normal=60 --max-queue-wait batch=30 >"$LOG" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

python3 - "$PORT" "$PID" "$SECS" "$SEQS" "$LOG" <<'PYEOF'
import http.client, json, os, random, socket, sys, threading, time
from collections import Counter

port, pid, secs, seqs, log = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
HOST = "127.0.0.1"

def request(method, path, body=None, timeout=30):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()

def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def stats():
    return json.loads(request("GET", "/v1/engine/stats")[1])

deadline = time.time() + 180
while True:
    if not alive():
        sys.exit("soak: the server exited while starting:\n" + open(log).read())
    try:
        if request("GET", "/ready", timeout=2)[0] == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("soak: the server did not get ready:\n" + open(log).read())
    time.sleep(0.2)

idle_blocks = stats()["kv_blocks_used"]
WORDS = "the sea ships storm harbour lighthouse captain sailor wind wave island map gold".split()
MALFORMED = [
    b"{", b"not json", b"[]", b'{"messages": "hi"}', b'{"prompt": 5, "max_tokens": "x"}',
    b'{"messages": [{"role": "robot", "content": "hi"}]}', b'{"prompt": "x", "max_tokens": -1}',
    b'{"prompt": "x", "priority": "platinum"}', b'{"prompt": "x", "temperature": 99}',
    b'{"prompt": "\xff\xfe"}',
]

counts = Counter()      # status (or error kind) -> answers
bad = Counter()         # anything outside 200 / 4xx / 503
dropped = Counter()     # streams we closed mid-answer
starved = Counter()     # requests with no answer within the client timeout, by class
lock = threading.Lock()
stop_at = time.time() + secs

def record(key, ok):
    with lock:
        counts[key] += 1
        if not ok:
            bad[key] += 1

def good_status(s):
    return s == 200 or s == 503 or 400 <= s < 500

current = threading.local()   # what the worker is sending, for error reports

def body_for(stream):
    cls = random.choices(["vip", "normal", "batch"], weights=[2, 5, 3])[0]
    current.what = f"{cls} stream={stream}"
    text = " ".join(random.choice(WORDS) for _ in range(random.randint(4, 40)))
    common = {"max_tokens": random.randint(8, 64), "stream": stream, "priority": cls,
              "temperature": random.choice([0, 0.7])}
    if random.random() < 0.5:
        return "/v1/chat/completions", dict(common, messages=[{"role": "user", "content": text}])
    return "/v1/completions", dict(common, prompt=text)

def one(rng):
    roll = rng.random()
    if roll < 0.04:                      # malformed body
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        s, _ = request("POST", path, rng.choice(MALFORMED))
        return record(s, 400 <= s < 500)
    if roll < 0.05:                      # oversized body: 413
        s, _ = request("POST", "/v1/completions", b'{"prompt": "' + b"a" * 100_000 + b'"}')
        return record(s, s == 413)
    stream = rng.random() < 0.6
    path, body = body_for(stream)
    # Every class has a max queue wait (at most 90 s, then 503): a client waiting longer
    # than this has found a hang.
    c = http.client.HTTPConnection(HOST, port, timeout=180)
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if not stream or r.status != 200:
            r.read()
            return record(r.status, good_status(r.status))
        drop_after = rng.randint(1, 6) if rng.random() < 0.10 else None
        events = 0
        while True:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                events += 1
                if drop_after is not None and events >= drop_after:
                    c.sock.shutdown(socket.SHUT_RDWR)   # the client goes away mid-answer
                    with lock:
                        dropped["streams"] += 1
                    return record(200, True)
                if line.strip() == b"data: [DONE]":
                    break
        record(200, True)
    finally:
        c.close()

def worker(i):
    rng = random.Random(i)
    while time.time() < stop_at:
        t = time.time()
        current.what = "malformed or oversized"
        try:
            one(rng)
        except socket.timeout as e:
            # No answer at all within the client's 180 s: not a bad answer, but a request
            # the server never finished (a starved one), reported on its own line.
            what = getattr(current, "what", "?")
            with lock:
                starved[what] += 1
            print(f"soak: no answer after {time.time() - t:.1f} s ({what})", flush=True)
        except (OSError, http.client.HTTPException) as e:
            record(type(e).__name__, False)
            print(f"soak: {type(e).__name__} after {time.time() - t:.1f} s: {e}", flush=True)

threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(3 * seqs)]
t0 = time.time()
for t in threads:
    t.start()
mark = min(120.0, 0.2 * secs)
rss_mark = None
rss_start = rss_kib()
samples = []            # (seconds, RSS MiB) every tenth of the run
while time.time() < stop_at:
    time.sleep(1)
    if not alive():
        break
    el = time.time() - t0
    if rss_mark is None and el >= mark:
        rss_mark = rss_kib()
    if el >= (len(samples) + 1) * secs / 10:
        samples.append((el, rss_kib() / 1024))
for t in threads:
    t.join(timeout=180)
crashed = not alive()
rss_end = rss_kib() if not crashed else 0

# Drained: the engine idles again and holds no more blocks than before the load.
blocks_after = None
if not crashed:
    t1 = time.time()
    while time.time() - t1 < 60:
        st = stats()
        blocks_after = st["kv_blocks_used"]
        if st["running"] == 0 and st["waiting"] == 0 and blocks_after == idle_blocks:
            break
        time.sleep(0.5)
    health = request("GET", "/health")[0]
else:
    health = None

total = sum(counts.values())
growth = (rss_end - rss_mark) / rss_mark if rss_mark else float("nan")
print(f"soak: {secs:.0f} s, {3 * seqs} clients against {seqs} sequence slots (3x capacity)")
print(f"soak: {total} answers; by status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=str)))
print(f"soak: streams dropped mid-answer: {dropped['streams']}")
print(f"soak: crashes: {int(crashed)} (/health after: {health})")
print(f"soak: answers outside 200/4xx/429/503: {sum(bad.values())} " + (str(dict(bad)) if bad else ""))
print(f"soak: requests with no answer within 180 s: {sum(starved.values())} " + (str(dict(starved)) if starved else ""))
print(f"soak: KV blocks used: idle {idle_blocks}, after the load {blocks_after}")
print(f"soak: RSS: start {rss_start / 1024:.1f} MiB, at {mark:.0f} s {(rss_mark or 0) / 1024:.1f} MiB, "
      f"end {rss_end / 1024:.1f} MiB, growth {100 * growth:+.2f}%")
print("soak: RSS over time: " + ", ".join(f"{t:.0f}s {m:.1f}" for t, m in samples))
fail = []
if crashed or health != 200:
    fail.append("the server crashed")
if bad:
    fail.append("answers outside 200/4xx/429/503")
if blocks_after != idle_blocks:
    fail.append("KV blocks were not freed")
if not (growth < 0.05):
    fail.append("RSS grew 5% or more")
if counts[200] == 0 or counts[429] == 0 or dropped["streams"] == 0:
    fail.append("the load did not exercise success, 429 and dropped streams")
if fail:
    print("soak: FAILED: " + "; ".join(fail))
    print(open(log).read()[-4000:])
    sys.exit(1)
print("soak: OK")
PYEOF
