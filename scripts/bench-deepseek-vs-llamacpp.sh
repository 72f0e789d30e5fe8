#!/usr/bin/env bash
# DeepSeek MoE + MLA speed against llama.cpp on the same file, same threads, one invocation.
#
#   scripts/bench-deepseek-vs-llamacpp.sh [--threads T] [--reps N] [--model FILE] [--skip-depth]
#                                          [--skip-batched] [--skip-cgroup] [--long]
#
# The file: v2lite8 as Q4_K_M (scripts/make-deepseek-v2lite8.sh: DeepSeek-V2-Lite widths with
# V3 routing, 64 experts top-6 + 2 shared, 8 layers; 2.9 GB, made once in the cache).
# Each measure is the best of N runs (default 3), the engines alternating run by run:
#   pp512, tg128           llama-bench -p 512 -n 128      r1serve bench -p 512 -n 128
#   tg128 at depth 4096    llama-bench -p 0 -n 128 -d 4096  r1serve bench -p 0 -n 128 -d 4096
#   with --long, once each (filling 16k positions takes minutes per engine):
#   tg32 at depth 16384    llama-bench -p 0 -n 32 -d 16384  r1serve bench -p 0 -n 32 -d 16384,
#                          and r1serve again with --kv-dtype f16 (against the same llama.cpp run)
#   8 concurrent sequences llama-batched-bench -npp 105 -ntg 64 -npl 8 (output tokens / total
#                          time)                    r1serve bench --offline --concurrency 8
#                          (105-token prompts, 64 generated, output tokens / total time)
# Peak RSS of each engine (GNU time, the tg128 run), against the file size + KV; and a tg run of
# r1serve under a cgroup memory limit smaller than the file (skipped with a message where no
# cgroup can be written).
# Prints a markdown table with the ratios r1serve/llama.cpp on stdout; progress on stderr.
# R1SERVE_BIN=PATH runs that r1serve binary instead of building the work tree's (to measure a
# fixed build while the tree changes).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="$(nproc)"
REPS=3
MODEL=""
DEPTH=1
BATCHED=1
CGROUP=1
LONG=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --skip-depth) DEPTH=0; shift ;;
    --skip-batched) BATCHED=0; shift ;;
    --skip-cgroup) CGROUP=0; shift ;;
    --long) LONG=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-deepseek: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "bench-deepseek: $*" >&2; }
die() { log "$*"; exit 1; }

[ -n "$MODEL" ] || MODEL="$(scripts/make-deepseek-v2lite8.sh)"
[ -f "$MODEL" ] || die "$MODEL not found"
BIN="$(scripts/build-llamacpp.sh)"
if [ -n "${R1SERVE_BIN:-}" ]; then
  R1BIN="$R1SERVE_BIN"
else
  log "building r1serve"
  cargo build --release -q -p r1serve
  R1BIN=target/release/r1serve
fi
[ -x "$R1BIN" ] || die "$R1BIN is not an executable"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/r1serve-dsbench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

best() { sort -g | tail -n1; }
# llama-bench JSON: avg_ts of the one test it ran.
llama_ts() { python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])'; }
r1_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

declare -A R1 LL
run_pair() { # name, llama-bench args, r1serve bench args, r1 json field
  local name="$1" largs="$2" rargs="$3" field="$4" i
  : >"$WORK/$name.ll"; : >"$WORK/$name.r1"
  for i in $(seq 1 "$REPS"); do
    # shellcheck disable=SC2086
    "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -r 1 -o json $largs 2>/dev/null | llama_ts >>"$WORK/$name.ll"
    # shellcheck disable=SC2086
    "$R1BIN" bench --model "$MODEL" --threads "$THREADS" -r 1 --json $rargs 2>/dev/null | r1_field "$field" >>"$WORK/$name.r1"
    log "$name run $i: llama.cpp $(tail -n1 "$WORK/$name.ll") t/s, r1serve $(tail -n1 "$WORK/$name.r1") t/s"
  done
  LL[$name]="$(best <"$WORK/$name.ll")"
  R1[$name]="$(best <"$WORK/$name.r1")"
}

run_pair pp512 "-p 512 -n 0" "-p 512 -n 0" pp_tps
run_pair tg128 "-p 0 -n 128" "-p 0 -n 128" tg_tps
if [ "$DEPTH" = 1 ]; then
  run_pair tg128_d4096 "-p 0 -n 128 -d 4096" "-p 0 -n 128 -d 4096" tg_tps
fi
if [ "$LONG" = 1 ]; then
  REPS_SAVED="$REPS"; REPS=1
  run_pair tg32_d16384 "-p 0 -n 32 -d 16384" "-p 0 -n 32 -d 16384" tg_tps
  "$R1BIN" bench --model "$MODEL" --threads "$THREADS" -r 1 --json -p 0 -n 32 -d 16384 --kv-dtype f16 \
    2>/dev/null | r1_field tg_tps >"$WORK/kvf16.r1"
  R1[tg32_d16384_kv_f16]="$(cat "$WORK/kvf16.r1")"
  LL[tg32_d16384_kv_f16]="${LL[tg32_d16384]}"
  log "tg32 at depth 16384, r1serve --kv-dtype f16: ${R1[tg32_d16384_kv_f16]} t/s"
  REPS="$REPS_SAVED"
fi
if [ "$BATCHED" = 1 ]; then
  : >"$WORK/b8.ll"; : >"$WORK/b8.r1"
  for i in $(seq 1 "$REPS"); do
    "$BIN/llama-batched-bench" -m "$MODEL" -t "$THREADS" -c 2048 -b 2048 -ub 512 -npp 105 -ntg 64 -npl 8 \
      2>/dev/null | python3 -c '
import sys
# | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
for line in sys.stdin:
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) >= 10 and c[0].isdigit():
        pp, tg, b, t = int(c[0]), int(c[1]), int(c[2]), float(c[8])
        print(b * tg / t)
' >>"$WORK/b8.ll"
    "$R1BIN" bench --model "$MODEL" --threads "$THREADS" --offline --json --concurrency 8 --prompt-tokens 105 \
      --gen-tokens 64 --prefix-tokens 0 2>/dev/null \
      | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["runs"][0]["output_tps"])' \
      >>"$WORK/b8.r1"
    log "8 concurrent run $i: llama.cpp $(tail -n1 "$WORK/b8.ll") t/s, r1serve $(tail -n1 "$WORK/b8.r1") t/s"
  done
  LL[batched8]="$(best <"$WORK/b8.ll")"
  R1[batched8]="$(best <"$WORK/b8.r1")"
fi

# --- memory -------------------------------------------------------------------------------
FILE_MB=$(( $(stat -c %s "$MODEL") / 1000000 ))
rss_of() { /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >/dev/null 2>&1 || true; echo $(( $(cat "$WORK/rss" | tail -n1) / 1000 )); }
RSS_LL="$(rss_of "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -r 1 -p 0 -n 16)"
RSS_R1="$(rss_of "$R1BIN" bench --model "$MODEL" --threads "$THREADS" -r 1 -p 0 -n 16)"
KV_BPT="$("$R1BIN" inspect "$MODEL" 2>/dev/null | sed -n 's/^KV cache: *\([0-9]*\) bytes\/token.*/\1/p' | head -n1)"
KV_MB="$([ -n "$KV_BPT" ] && echo $(( KV_BPT * 8192 / 1000000 )))"

CG_RESULT="skipped"
if [ "$CGROUP" = 1 ]; then
  LIMIT=$(( $(stat -c %s "$MODEL") * 6 / 10 ))
  cg=""
  if [ -w /sys/fs/cgroup/cgroup.subtree_control ] || [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg="/sys/fs/cgroup/r1serve-bench-$$"
    mkdir "$cg" 2>/dev/null && echo "$LIMIT" >"$cg/memory.max" 2>/dev/null || cg=""
  elif [ -d /sys/fs/cgroup/memory ]; then
    cg="/sys/fs/cgroup/memory/r1serve-bench-$$"
    mkdir "$cg" 2>/dev/null && echo "$LIMIT" >"$cg/memory.limit_in_bytes" 2>/dev/null || cg=""
  fi
  if [ -n "$cg" ]; then
    log "tg16 under a memory limit of $(( LIMIT / 1000000 )) MB (file $FILE_MB MB), $cg"
    if sh -c "echo \$\$ >'$cg/cgroup.procs' && exec '$R1BIN' bench --model '$MODEL' --threads '$THREADS' -r 1 -p 0 -n 16 --json" \
      >"$WORK/cg.json" 2>"$WORK/cg.err"; then
      CG_RESULT="ok: $(r1_field tg_tps <"$WORK/cg.json") t/s under $(( LIMIT / 1000000 )) MB"
    else
      CG_RESULT="FAILED under $(( LIMIT / 1000000 )) MB: $(tail -n2 "$WORK/cg.err" | tr '\n' ' ')"
    fi
    rmdir "$cg" 2>/dev/null || true
  else
    CG_RESULT="skipped: no writable cgroup (v2 memory.max or v1 memory.limit_in_bytes) here"
  fi
fi

# --- table --------------------------------------------------------------------------------
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo
echo "DeepSeek MoE ($(basename "$MODEL"), $FILE_MB MB), $THREADS threads, best of $REPS, $(date -u +%Y-%m-%d)"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n1); peer: $(cat "$(dirname "$BIN")/bin/BUILD_INFO" 2>/dev/null | cut -c1-60)"
echo
echo "| measure | r1serve | llama.cpp | ratio | goal |"
echo "| --- | ---: | ---: | ---: | ---: |"
for m in pp512:1.5 tg128:1.2 tg128_d4096:1.2 tg32_d16384:1.2 tg32_d16384_kv_f16:1.2 batched8:2; do
  name="${m%%:*}"; goal="${m##*:}"
  [ -n "${R1[$name]:-}" ] || continue
  printf '| %s | %.1f | %.1f | %s | ≥ %s |\n' "$name" "${R1[$name]}" "${LL[$name]}" "$(ratio "${R1[$name]}" "${LL[$name]}")" "$goal"
done
echo
echo "Peak RSS: r1serve $RSS_R1 MB, llama.cpp $RSS_LL MB; file $FILE_MB MB, KV at 8192 tokens ${KV_MB:-?} MB"
echo "Memory-limited run: $CG_RESULT"
