#!/usr/bin/env bash
# `r1serve perplexity` against llama.cpp's `llama-perplexity` on the same model, text, context
# and chunks; prints both PPLs and their ratio, and exits 1 when they differ by more than 1%.
#
#   scripts/perplexity-vs-llamacpp.sh [--chunks N] [--ctx 512] [--threads T] [--model M]
#                                     [--text FILE] [--kld K]
#
#   --chunks N   score only the first N chunks (default: all of the text; the default text
#                makes 46 chunks of 512, about 3 min for r1serve and 7 for llama.cpp on 2 busy cores)
#   --ctx C      tokens per chunk, both engines (default 512, llama-perplexity's default)
#   --threads T  threads for both (default: the number of physical cores)
#   --model M    a GGUF both run (default models/qwen05.gguf; scripts/fetch-models.sh)
#   --text FILE  the text (default: see below)
#   --kld K      also compare the engines token by token over the first K chunks (default 4,
#                0 skips): llama-perplexity saves its log-probabilities with
#                --kl-divergence-base (about 77 MB per chunk of 512 for qwen05, in a temp dir)
#                and `r1serve perplexity --kl-divergence` reads llama.cpp's file and prints the
#                KL divergence of r1serve from llama.cpp and how often both rank the same token
#                first
#
# Default text, present offline on every machine with Python 3: the CPython standard library
# sources of the system python3 (`python3 -c 'import sysconfig;
# print(sysconfig.get_paths()["stdlib"])'`), the files argparse.py then textwrap.py
# concatenated (CPython's Lib/argparse.py and Lib/textwrap.py; 3.11.7 gives 24,059 qwen05
# tokens). The version is printed; other Python versions give a slightly different text, the
# same for both engines.
#
# Builds the peer once (scripts/build-llamacpp.sh: llama.cpp 0c1e570, llama-perplexity among
# its targets) and `cargo build --release -p r1serve` (skipped when R1SERVE_BIN names a
# binary). Progress goes to stderr, the table to stdout.
set -euo pipefail

die() { echo "perplexity-vs-llamacpp: $*" >&2; exit 1; }
log() { echo "perplexity-vs-llamacpp: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

physical_cores() {
  local n=""
  if command -v lscpu >/dev/null 2>&1; then
    n="$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)"
  fi
  if [ -z "$n" ] || [ "$n" -lt 1 ]; then n="$(nproc)"; fi
  echo "$n"
}

CHUNKS=""
CTX=512
THREADS=""
MODEL="models/qwen05.gguf"
TEXT=""
KLD=4
while [ $# -gt 0 ]; do
  case "$1" in
    --chunks) [ $# -ge 2 ] || die "--chunks needs a value"; CHUNKS="$2"; shift 2 ;;
    --ctx) [ $# -ge 2 ] || die "--ctx needs a value"; CTX="$2"; shift 2 ;;
    --threads) [ $# -ge 2 ] || die "--threads needs a value"; THREADS="$2"; shift 2 ;;
    --model) [ $# -ge 2 ] || die "--model needs a value"; MODEL="$2"; shift 2 ;;
    --text) [ $# -ge 2 ] || die "--text needs a value"; TEXT="$2"; shift 2 ;;
    --kld) [ $# -ge 2 ] || die "--kld needs a value"; KLD="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for v in CTX KLD; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "--${v,,} must be a number"
done
[ -z "$CHUNKS" ] || [[ "$CHUNKS" =~ ^[1-9][0-9]*$ ]] || die "--chunks must be a positive number"
[ -n "$THREADS" ] || THREADS="$(physical_cores)"
[ -f "$MODEL" ] || die "$MODEL: no such model (scripts/fetch-models.sh)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [ -z "$TEXT" ]; then
  command -v python3 >/dev/null 2>&1 || die "python3 is missing: give a text with --text FILE"
  STDLIB="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
  PYVER="$(python3 -c 'import platform; print(platform.python_version())')"
  for f in argparse.py textwrap.py; do
    [ -f "$STDLIB/$f" ] || die "$STDLIB/$f is missing: give a text with --text FILE"
  done
  TEXT="$TMP/text.txt"
  cat "$STDLIB/argparse.py" "$STDLIB/textwrap.py" >"$TEXT"
  TEXT_NAME="CPython $PYVER Lib/argparse.py + Lib/textwrap.py ($STDLIB)"
else
  [ -f "$TEXT" ] || die "--text $TEXT: no such file"
  TEXT_NAME="$TEXT"
fi

PEER_BIN="$("$ROOT/scripts/build-llamacpp.sh")" || die "building llama.cpp failed (see above)"
LP="$PEER_BIN/llama-perplexity"
[ -x "$LP" ] || die "$LP is missing (scripts/build-llamacpp.sh builds it)"

R1="${R1SERVE_BIN:-}"
if [ -z "$R1" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs)"
  log "building r1serve (cargo build --release -p r1serve)"
  cargo build --release -p r1serve >&2 || die "cargo build failed"
  R1="$ROOT/target/release/r1serve"
  # A private copy: a concurrent build in the shared target dir must not swap it mid-run.
  cp "$R1" "$TMP/r1serve"
  R1="$TMP/r1serve"
fi

CHUNK_ARGS=()
[ -z "$CHUNKS" ] || CHUNK_ARGS=(--chunks "$CHUNKS")

ppl_of() { # the number after "Final estimate: PPL =" in a log
  sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$1" | tail -1
}

log "text: $TEXT_NAME, $(wc -c <"$TEXT") bytes; ctx $CTX, ${CHUNKS:-all} chunks, $THREADS threads"
log "llama-perplexity ..."
T0=$(date +%s)
"$LP" -m "$MODEL" -f "$TEXT" -c "$CTX" -t "$THREADS" "${CHUNK_ARGS[@]}" >"$TMP/llama.log" 2>&1 \
  || { tail -20 "$TMP/llama.log" >&2; die "llama-perplexity failed"; }
T1=$(date +%s)
log "r1serve perplexity ..."
"$R1" perplexity --model "$MODEL" --file "$TEXT" --ctx "$CTX" --threads "$THREADS" \
  "${CHUNK_ARGS[@]}" >"$TMP/r1.log" 2>"$TMP/r1.err" \
  || { cat "$TMP/r1.err" >&2; die "r1serve perplexity failed"; }
T2=$(date +%s)

read -r LPPL LUNC <<<"$(ppl_of "$TMP/llama.log")"
read -r RPPL RUNC <<<"$(ppl_of "$TMP/r1.log")"
[ -n "${LPPL:-}" ] || { tail -20 "$TMP/llama.log" >&2; die "no final estimate from llama-perplexity"; }
[ -n "${RPPL:-}" ] || { cat "$TMP/r1.err" >&2; die "no final estimate from r1serve"; }
LCHUNKS="$(sed -n 's/.*calculating perplexity over \([0-9]*\) chunks.*/\1/p' "$TMP/llama.log")"
RTOK="$(sed -n 's/.*tokenized to \([0-9]*\) tokens.*/\1/p' "$TMP/r1.err")"
LTOK="$(grep -o 'tokenizes to only [0-9]*' "$TMP/llama.log" || true)"

RATIO="$(awk -v r="$RPPL" -v l="$LPPL" 'BEGIN { printf "%.4f", r / l }')"
OK="$(awk -v q="$RATIO" 'BEGIN { d = q - 1; if (d < 0) d = -d; print (d <= 0.01) ? "yes" : "NO" }')"

echo "text: $TEXT_NAME"
echo "model: $MODEL; ctx $CTX; $LCHUNKS chunks (r1serve tokenized the text to $RTOK tokens); $THREADS threads"
echo
echo "| engine | PPL | ± | time |"
echo "| --- | ---: | ---: | ---: |"
echo "| llama-perplexity (llama.cpp 0c1e570) | $LPPL | $LUNC | $((T1 - T0)) s |"
echo "| r1serve perplexity | $RPPL | $RUNC | $((T2 - T1)) s |"
echo
echo "ratio r1serve / llama.cpp: $RATIO (within 1%: $OK)"
[ -z "$LTOK" ] || echo "llama.cpp: $LTOK"

if [ "$KLD" -gt 0 ]; then
  log "KL divergence of r1serve from llama.cpp over $KLD chunks ..."
  "$LP" -m "$MODEL" -f "$TEXT" -c "$CTX" -t "$THREADS" --chunks "$KLD" \
    --kl-divergence-base "$TMP/llama.kld" >"$TMP/llama-kld.log" 2>&1 \
    || { tail -20 "$TMP/llama-kld.log" >&2; die "llama-perplexity --kl-divergence-base failed"; }
  "$R1" perplexity --model "$MODEL" --threads "$THREADS" --kl-divergence \
    --kl-divergence-base "$TMP/llama.kld" >"$TMP/kld.log" 2>"$TMP/kld.err" \
    || { cat "$TMP/kld.err" >&2; die "r1serve perplexity --kl-divergence failed"; }
  echo
  echo "r1serve against llama.cpp's saved log-probabilities (first $KLD chunks, r1serve --kl-divergence):"
  grep -E '^(Mean PPL\(Q\)|Mean PPL\(base\)|Mean    KLD|99.0%   KLD|Maximum KLD|Same top p)' "$TMP/kld.log"
fi

[ "$OK" = yes ] || exit 1
