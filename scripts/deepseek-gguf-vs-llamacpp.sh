#!/usr/bin/env bash
# DeepSeek-R1 GGUF fidelity, every type people download, against exact float64 references, with
# llama.cpp's figures on the same references beside r1serve's.
#
#   scripts/deepseek-gguf-vs-llamacpp.sh            # table; exit 1 when a type fails its bound
#
# 1. Builds the llama.cpp peer (scripts/build-llamacpp.sh: llama-quantize, llama-imatrix,
#    llama-gguf-split, llama-server).
# 2. From $R1SERVE_FIXTURES/deepseek2-gguf/small1-f16.gguf (a random DeepSeek-V3-shaped model
#    through llama.cpp's converter): an importance matrix from scripts/data/imatrix-calibration.txt,
#    then llama-quantize to each of TYPES (IQ types with that imatrix), and the Q4_K_M file split
#    into 3 parts with llama-gguf-split --split-max-tensors.
# 3. Finds each file's float64 reference: the fixtures' hf64-small1-TYPE.json when its sha256 is
#    this file's (the K-quants: llama-quantize is deterministic), else one made here with the
#    fixtures' tools (deepseek_gguf_to_hf.py + deepseek_hf_reference.py) in a torch venv
#    (~5.6 GB from PyPI, made once under the cache when MAKE_REFS=1, the default; MAKE_REFS=0
#    reports those rows as "no reference"). The IQ rows need this: the fixtures' IQ references
#    were made with an imatrix that is not shipped.
# 4. r1serve: crates/r1-model/examples/hf64_compare.rs, teacher-forced in one prefill per prompt
#    (the test tests/deepseek_hf64.rs does the same in CI for the f16 file).
#    llama.cpp: llama-server, one request per step (scripts/llamacpp-teacher-forced.py).
# 5. Prints a type x measure table: d = the largest |Δlogprob| over the reference's top-2 tokens
#    per step, median and p90 over 3 prompts x 32 steps, greedy agreement, whether it loads.
#    Bounds (r1serve): f16 d ≤ 1e-3 at every step before a routing near-tie; quantized median
#    ≤ 0.25 and p90 ≤ 1.5 (the DeepSeek-R1 GGUF issue's, which llama.cpp also meets).
#
# Environment: R1SERVE_FIXTURES, R1SERVE_DS_WORK (files; default ~/.cache/r1serve/deepseek-gguf),
# THREADS (default 2), TYPES, MAKE_REFS (1), LLAMA=0 (skip the llama.cpp columns), PORT (18090).
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${R1SERVE_FIXTURES:-$(pwd)/../shared/fixtures}"
DS="$FIX/deepseek2-gguf"
CACHE="${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}"
WORK="${R1SERVE_DS_WORK:-$CACHE/deepseek-gguf}"
THREADS="${THREADS:-2}"
TYPES="${TYPES:-Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0 IQ2_XXS IQ3_XXS IQ4_XS}"
MAKE_REFS="${MAKE_REFS:-1}"
LLAMA="${LLAMA:-1}"
PORT="${PORT:-18090}"
VENV="$CACHE/venv-ref"

die() { echo "deepseek-gguf-vs-llamacpp: $*" >&2; exit 2; }
log() { echo "deepseek-gguf-vs-llamacpp: $*" >&2; }

[ -f "$DS/small1-f16.gguf" ] || die "$DS/small1-f16.gguf not found (set R1SERVE_FIXTURES to the shared fixtures)"
BIN="$(scripts/build-llamacpp.sh)"
SRC="$(dirname "$BIN")/src"
mkdir -p "$WORK/ref" "$WORK/split"

sha() { sha256sum "$1" | cut -d' ' -f1; }
ref_sha() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"]["sha256"])' "$1"; }

# --- files --------------------------------------------------------------------------------
if [ ! -f "$WORK/small1.imatrix" ]; then
  log "llama-imatrix on scripts/data/imatrix-calibration.txt"
  "$BIN/llama-imatrix" -m "$DS/small1-f16.gguf" -f scripts/data/imatrix-calibration.txt -c 128 \
    -t "$THREADS" -o "$WORK/small1.imatrix.tmp" >"$WORK/imatrix.log" 2>&1 \
    || die "llama-imatrix failed: see $WORK/imatrix.log"
  # Newer llama.cpp writes GGUF imatrix files and may add the extension itself.
  mv "$(ls "$WORK"/small1.imatrix.tmp* | head -n1)" "$WORK/small1.imatrix"
fi
for t in $TYPES; do
  out="$WORK/small1-$t.gguf"
  [ -f "$out" ] && continue
  im=()
  case "$t" in IQ*) im=(--imatrix "$WORK/small1.imatrix") ;; esac
  log "llama-quantize $t"
  "$BIN/llama-quantize" "${im[@]}" "$DS/small1-f16.gguf" "$out.tmp" "$t" "$THREADS" \
    >"$WORK/quantize-$t.log" 2>&1 || die "llama-quantize $t failed: see $WORK/quantize-$t.log"
  mv "$out.tmp" "$out"
done
SPLIT_FIRST="$WORK/split/small1-Q4_K_M-00001-of-00003.gguf"
if [[ " $TYPES " == *" Q4_K_M "* ]] && [ ! -f "$SPLIT_FIRST" ]; then
  rm -f "$WORK"/split/*
  # 70 tensors: 24 + 24 + 22.
  "$BIN/llama-gguf-split" --split --split-max-tensors 24 "$WORK/small1-Q4_K_M.gguf" \
    "$WORK/split/small1-Q4_K_M" >"$WORK/split.log" 2>&1 || die "llama-gguf-split failed: see $WORK/split.log"
  [ -f "$SPLIT_FIRST" ] || die "llama-gguf-split did not write $SPLIT_FIRST"
fi

# --- references ---------------------------------------------------------------------------
ensure_venv() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, transformers, gguf' 2>/dev/null && return 0
  log "making the float64 reference venv in $VENV (torch, transformers: ~5.6 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch==2.15.0
  "$VENV/bin/pip" install -q transformers==5.24.0 safetensors gguf==0.19.0 numpy tokenizers accelerate
}
# reference_for TYPE FILE: prints the reference's path, or nothing.
reference_for() {
  local t="$1" f="$2" s fixture="$DS/hf64-small1-$1.json" made="$WORK/ref/hf64-small1-$1.json"
  s="$(sha "$f")"
  if [ -f "$fixture" ] && [ "$(ref_sha "$fixture")" = "$s" ]; then echo "$fixture"; return; fi
  if [ -f "$made" ] && [ "$(ref_sha "$made")" = "$s" ]; then echo "$made"; return; fi
  [ "$MAKE_REFS" = 1 ] || return 0
  ensure_venv >&2
  if [ ! -f "$WORK/template/config.json" ]; then
    "$VENV/bin/python" "$FIX/tools/mkrandom_deepseek.py" "$WORK/template" small 1 >&2
  fi
  log "float64 reference for $t (dequantize with gguf-py at the peer's commit, then transformers)"
  rm -rf "$WORK/hf/$t"
  PYTHONPATH="$SRC/gguf-py" "$VENV/bin/python" "$FIX/tools/deepseek_gguf_to_hf.py" "$f" \
    "$WORK/template" "$WORK/hf/$t" >&2
  OMP_NUM_THREADS="$THREADS" "$VENV/bin/python" "$FIX/tools/deepseek_hf_reference.py" "$WORK/hf/$t" \
    "$DS/prompts.json" "$made.tmp" >&2
  mv "$made.tmp" "$made"
  rm -rf "$WORK/hf/$t"
  echo "$made"
}

rows=("f16|$DS/small1-f16.gguf|$DS/hf64-small1-f16.json")
for t in $TYPES; do
  rows+=("$t|$WORK/small1-$t.gguf|$(reference_for "$t" "$WORK/small1-$t.gguf")")
  if [ "$t" = Q4_K_M ]; then
    rows+=("Q4_K_M split 3|$SPLIT_FIRST|$(reference_for "$t" "$WORK/small1-$t.gguf")")
  fi
done

# --- r1serve ------------------------------------------------------------------------------
cargo build --release -q -p r1-model --example hf64_compare
pairs=()
for row in "${rows[@]}"; do
  IFS='|' read -r _ f ref <<<"$row"
  [ -n "$ref" ] && pairs+=("$f=$ref")
done
R1OUT="$WORK/r1serve.txt"
target/release/examples/hf64_compare --threads "$THREADS" "${pairs[@]}" | tee "$R1OUT" >&2

# --- llama.cpp ----------------------------------------------------------------------------
LLOUT="$WORK/llamacpp.txt"
: >"$LLOUT"
server_pid=""
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=""; }
trap stop_server EXIT
if [ "$LLAMA" = 1 ]; then
  for row in "${rows[@]}"; do
    IFS='|' read -r label f ref <<<"$row"
    [ -n "$ref" ] || continue
    "$BIN/llama-server" -m "$f" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -c 2048 --parallel 1 \
      >"$WORK/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 120); do
      curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.5
    done
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      python3 scripts/llamacpp-teacher-forced.py --base "http://127.0.0.1:$PORT" --label "$f" "$ref" \
        | tee -a "$LLOUT" >&2 || echo "llamacpp $f error=client" >>"$LLOUT"
    else
      echo "llamacpp $f error=server did not start" >>"$LLOUT"
    fi
    stop_server
  done
fi

# --- table --------------------------------------------------------------------------------
field() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2"; }
fail=0
printf '\n%-15s %-6s %-11s %-11s %-8s %-11s %-11s %-8s %s\n' type loads r1:median r1:p90 r1:greedy \
  llama:median llama:p90 llama:greedy bound
for row in "${rows[@]}"; do
  IFS='|' read -r label f ref <<<"$row"
  if [ -z "$ref" ]; then
    printf '%-15s %-6s %s\n' "$label" "?" "no reference (MAKE_REFS=1 makes one)"
    continue
  fi
  r1="$(grep -F "hf64 $f " "$R1OUT" || true)"
  ll="$(grep -F "llamacpp $f " "$LLOUT" || true)"
  loads=yes
  [ -n "$(field error "$r1")" ] || [ -z "$r1" ] && loads=no
  verdict=fail
  if [ "$loads" = yes ]; then
    if [ "$label" = f16 ]; then
      python3 -c "import sys; sys.exit(0 if float('$(field clean_max "$r1")') <= 1e-3 else 1)" && verdict=ok
    else
      python3 -c "import sys; sys.exit(0 if float('$(field median "$r1")') <= 0.25 and float('$(field p90 "$r1")') <= 1.5 else 1)" && verdict=ok
    fi
  fi
  [ "$verdict" = ok ] || fail=1
  printf '%-15s %-6s %-11s %-11s %-8s %-11s %-11s %-8s %s\n' "$label" "$loads" \
    "$(field median "$r1")" "$(field p90 "$r1")" "$(field greedy "$r1")" \
    "$(field median "$ll")" "$(field p90 "$ll")" "$(field greedy "$ll")" "$verdict"
  [ "$loads" = yes ] || echo "  r1serve: $(field error "$r1")"
done
echo "(d = max |Δlogprob| over the reference's top-2 tokens; f16 bound: d ≤ 1e-3 before routing near-ties, clean_max $(field clean_max "$(grep -F "hf64 $DS/small1-f16.gguf " "$R1OUT" || true)"))"
exit "$fail"
