#!/usr/bin/env bash
# Remake crates/r1-model/tests/data/iq-dequant-real.{safetensors,json}: blocks of real
# llama-quantize tensors of every i-quant type with gguf-py's dequantization of them.
#
#   scripts/make-iq-real-fixtures.sh
#
# Builds (or reuses) the llama.cpp peer (scripts/build-llamacpp.sh), runs llama-imatrix on the
# shipped calibration text and llama-quantize --imatrix on the shared fixture small1-f16.gguf
# for each file type, then scripts/gen-iq-real-fixtures.py. Work files go to a temporary
# directory; only the two fixture files are written into the repository.
# Environment: R1SERVE_FIXTURES (shared fixtures), PYTHON (one with gguf and numpy; default:
# a venv made in ~/.cache/r1serve/venv-gguf).
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${R1SERVE_FIXTURES:-$(pwd)/../shared/fixtures}"
SRC="$FIX/deepseek2-gguf/small1-f16.gguf"
log() { echo "make-iq-real-fixtures: $*" >&2; }
die() { log "$*"; exit 2; }
[ -f "$SRC" ] || die "$SRC not found (set R1SERVE_FIXTURES)"

BIN="$(scripts/build-llamacpp.sh)"
if [ -z "${PYTHON:-}" ]; then
  VENV="$HOME/.cache/r1serve/venv-gguf"
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q gguf==0.19.0 numpy; }
  PYTHON="$VENV/bin/python"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
log "llama-imatrix"
"$BIN/llama-imatrix" -m "$SRC" -f scripts/data/imatrix-calibration.txt -c 128 -t 1 \
  -o "$WORK/small1.imatrix.tmp" >"$WORK/imatrix.log" 2>&1 || { cat "$WORK/imatrix.log" >&2; die "llama-imatrix failed"; }
mv "$(ls "$WORK"/small1.imatrix.tmp* | head -n1)" "$WORK/small1.imatrix"
for t in IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_M IQ3_XXS IQ3_S IQ4_NL IQ4_XS; do
  log "llama-quantize $t"
  "$BIN/llama-quantize" --imatrix "$WORK/small1.imatrix" "$SRC" "$WORK/small1-$t.gguf" "$t" 1 \
    >"$WORK/quantize-$t.log" 2>&1 || { cat "$WORK/quantize-$t.log" >&2; die "llama-quantize $t failed"; }
done
"$PYTHON" scripts/gen-iq-real-fixtures.py "$WORK"
log "wrote crates/r1-model/tests/data/iq-dequant-real.{safetensors,json}"
