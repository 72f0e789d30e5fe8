#!/usr/bin/env bash
# Make the DeepSeek MoE benchmark model once: `v2lite8` (DeepSeek-V2-Lite widths with V3's
# low-rank query and routing, 64 routed experts top-6 + 2 shared, 8 layers) as Q4_K_M, the way
# people's R1 files are made: random HF checkpoint -> llama.cpp's convert_hf_to_gguf.py (f16)
# -> llama-quantize. Prints the path of the Q4_K_M file (~2.9 GB).
#
#   scripts/make-deepseek-v2lite8.sh
#
# Cached in ${R1SERVE_PEER_CACHE:-~/.cache/r1serve}/v2lite8/; the 8.8 GB f16 file and the HF
# checkpoint are deleted after quantizing. Never committed. Needs the shared fixtures
# (tools/mkrandom_deepseek.py), the llama.cpp peer (scripts/build-llamacpp.sh) and a venv with
# torch for the converter (the one scripts/deepseek-gguf-vs-llamacpp.sh makes, ~5.6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${R1SERVE_FIXTURES:-$(pwd)/../shared/fixtures}"
CACHE="${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}"
DIR="$CACHE/v2lite8"
OUT="$DIR/v2lite8-Q4_K_M.gguf"
VENV="$CACHE/venv-ref"
THREADS="${THREADS:-$(nproc)}"

log() { echo "make-deepseek-v2lite8: $*" >&2; }
die() { log "$*"; exit 2; }

if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
[ -f "$FIX/tools/mkrandom_deepseek.py" ] || die "$FIX/tools/mkrandom_deepseek.py not found (set R1SERVE_FIXTURES)"
BIN="$(scripts/build-llamacpp.sh)"
SRC="$(dirname "$BIN")/src"
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, transformers, sentencepiece, safetensors' 2>/dev/null; }; then
  log "making the converter venv in $VENV (torch from PyPI, ~5.6 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch==2.15.0
  "$VENV/bin/pip" install -q transformers==5.24.0 safetensors gguf==0.19.0 numpy tokenizers accelerate sentencepiece
fi
mkdir -p "$DIR"
if [ ! -f "$DIR/hf/config.json" ]; then
  log "random v2lite8 checkpoint"
  rm -rf "$DIR/hf"
  "$VENV/bin/python" "$FIX/tools/mkrandom_deepseek.py" "$DIR/hf" v2lite8 >&2
fi
if [ ! -f "$DIR/v2lite8-f16.gguf" ]; then
  log "convert_hf_to_gguf.py (f16)"
  PYTHONPATH="$SRC/gguf-py" "$VENV/bin/python" "$SRC/convert_hf_to_gguf.py" "$DIR/hf" --outtype f16 \
    --outfile "$DIR/v2lite8-f16.gguf.tmp" >"$DIR/convert.log" 2>&1 || die "convert failed: see $DIR/convert.log"
  mv "$DIR/v2lite8-f16.gguf.tmp" "$DIR/v2lite8-f16.gguf"
fi
log "llama-quantize Q4_K_M"
"$BIN/llama-quantize" "$DIR/v2lite8-f16.gguf" "$OUT.tmp" Q4_K_M "$THREADS" >"$DIR/quantize.log" 2>&1 \
  || die "llama-quantize failed: see $DIR/quantize.log"
mv "$OUT.tmp" "$OUT"
rm -rf "$DIR/v2lite8-f16.gguf" "$DIR/hf"
echo "$OUT"
