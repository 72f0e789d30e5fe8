#!/usr/bin/env bash
# r1serve against llama.cpp on i-quant files: IQ2_XXS and IQ4_XS versions of qwen05, in one run.
#
#   scripts/bench-iq-vs-llamacpp.sh [--threads T] [--reps N] [--types "IQ2_XXS IQ4_XS"]
#
# The files are made once with llama.cpp's own tools and cached in
# ${R1SERVE_PEER_CACHE:-~/.cache/r1serve}/qwen05-iq/ (IQ2_XXS needs an importance matrix:
# llama-imatrix over scripts/data/imatrix-calibration.txt). Each test runs alone (pp512, then
# tg128), the engines alternating run by run so drift in machine load hits both alike; the best
# of N runs counts. Uses R1SERVE_BIN, or target/release/r1serve (built if missing). Progress on
# stderr, a markdown table on stdout; the goal is r1serve >= 1.2x llama.cpp.
set -euo pipefail

die() { echo "bench-iq: $*" >&2; exit 1; }
log() { echo "bench-iq: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

THREADS=2
REPS=3
TYPES="IQ2_XXS IQ4_XS"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --types) TYPES="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

SRC="models/qwen05.gguf"
[ -f "$SRC" ] || die "$SRC is missing: run scripts/fetch-models.sh models"
PEER_BIN="$("$ROOT/scripts/build-llamacpp.sh")" || die "building llama.cpp failed"
CACHE="${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}/qwen05-iq"
mkdir -p "$CACHE"

R1="${R1SERVE_BIN:-$ROOT/target/release/r1serve}"
if [ ! -x "$R1" ]; then
  log "building r1serve"
  cargo build --release -p r1serve >&2 || die "cargo build failed"
fi

# --- the files (once) ------------------------------------------------------------------------
IMATRIX="$CACHE/qwen05.imatrix"
if [ ! -f "$IMATRIX" ]; then
  log "computing the importance matrix (llama-imatrix, -c 128)"
  "$PEER_BIN/llama-imatrix" -m "$SRC" -f scripts/data/imatrix-calibration.txt -c 128 \
    -t "$THREADS" -o "$IMATRIX.part" >"$CACHE/imatrix.log" 2>&1 \
    || die "llama-imatrix failed: $(tail -n 5 "$CACHE/imatrix.log")"
  mv "$IMATRIX.part" "$IMATRIX"
fi
for ty in $TYPES; do
  f="$CACHE/qwen05-$ty.gguf"
  [ -f "$f" ] && continue
  log "quantizing $SRC to $ty"
  "$PEER_BIN/llama-quantize" --allow-requantize --imatrix "$IMATRIX" "$SRC" "$f.part" "$ty" 2 \
    >"$CACHE/quantize-$ty.log" 2>&1 || die "llama-quantize $ty failed: $(tail -n 5 "$CACHE/quantize-$ty.log")"
  mv "$f.part" "$f"
done

# --- runs ------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/r1serve-bench-iq.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# llama F P N OUT / r1 F P N OUT: one run of one test, t/s on stdout
llama() {
  "$PEER_BIN/llama-bench" -m "$1" -t "$THREADS" -p "$2" -n "$3" -r 1 -o json >"$4" 2>"$4.err" \
    || die "llama-bench failed on $1: $(tail -n 5 "$4.err")"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])' "$4"
}
r1() {
  "$R1" bench --model "$1" --threads "$THREADS" -p "$2" -n "$3" -r 1 --json >"$4" 2>"$4.err" \
    || die "r1serve bench failed on $1: $(tail -n 5 "$4.err")"
  python3 -c 'import json,sys; l=[x for x in open(sys.argv[1]).read().splitlines() if x.strip()]; print(json.loads(l[-1])[sys.argv[2]])' "$4" "$5"
}
best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# row TYPE TEST LLAMA R1: one table row with the ratio
row() {
  python3 -c 'import sys; l, r = float(sys.argv[3]), float(sys.argv[4]); q = r / l
print("| %s | %s | %.2f | %.2f | %.2fx | %s |" % (sys.argv[1], sys.argv[2], l, r, q, ("no", "yes")[q >= 1.2]))' "$@"
}

ROWS=()
for ty in $TYPES; do
  f="$CACHE/qwen05-$ty.gguf"
  for test in pp tg; do
    if [ "$test" = pp ]; then p=512; n=0; key=pp_tps; else p=0; n=128; key=tg_tps; fi
    lv=(); rv=()
    for rep in $(seq 1 "$REPS"); do
      log "$ty $test: run $rep/$REPS"
      lv+=("$(llama "$f" $p $n "$WORK/l.json")")
      rv+=("$(r1 "$f" $p $n "$WORK/r.json" $key)")
    done
    L="$(best "${lv[@]}")"; R="$(best "${rv[@]}")"
    ROWS+=("$(row "$ty" "$test$([ $test = pp ] && echo 512 || echo 128)" "$L" "$R")")
  done
done

echo "## r1serve vs llama.cpp on i-quants (qwen05, $THREADS threads, best of $REPS)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
echo "- peer: $(cat "$PEER_BIN/BUILD_INFO" 2>/dev/null | head -n1)"
echo
echo "| file | test | llama.cpp t/s | r1serve t/s | ratio | >= 1.2x |"
echo "|---|---|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
