#!/usr/bin/env bash
# The precision table (#21), measured end to end on qwen05: for each type, file size, peak RSS,
# speed (`r1serve bench`: pp512, tg128) and quality (`r1serve perplexity`: PPL, and KL
# divergence and top-1 agreement against the F16 base). Prints a Markdown table and writes a
# PNG chart (quality loss and speed against size).
#
#   scripts/precision-table.sh [--out DIR] [--threads N] [--chunks N] [--reps N]
#                              [--types "F16 Q8_0 ..."] [--quick] [--reuse]
#
#   --out DIR    work and result directory (default target/precision-table): each run writes
#                models/ (the files measured), table.md, results.tsv, precision.png and logs/
#   --threads N  threads for every r1serve and llama.cpp command (default: physical cores)
#   --chunks N   chunks of 512 tokens scored per type, the first N as llama-perplexity
#                --chunks does (default 4, so that the whole run fits in 20 min on 2 cores:
#                the F16, BF16 and Q2_K rows take 15-70 s a chunk there, Q2_K for want of a
#                SIMD Q3_K kernel; 0 = the whole text, 314 chunks, hours)
#   --reps N     timed repetitions of pp512 and tg128 (r1serve bench -r; default 1, after its
#                warm-up run)
#   --types "…"  the rows (default: F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q3_K_M Q2_K IQ4_XS
#                IQ3_XXS IQ2_XXS); F16 is always measured, as the base of the KL divergence
#   --quick      smoke test: F16 Q8_0 Q4_K_M IQ4_XS, 2 chunks
#   --reuse      keep the files an earlier run left in DIR/models instead of making them again
#                (faster; but they come from the r1serve and llama.cpp of that run)
#
# Base: models/qwen05.gguf (scripts/fetch-models.sh; mostly Q5_0/Q4_K) converted back to F16 by
# `llama-quantize --allow-requantize` (exactly its quantized values, in F16). Every other file
# is made from that F16 file by `r1serve quantize --type T` (llama.cpp's per-tensor mixes):
# the K and legacy types without an importance matrix, the IQ types with one from
# `llama-imatrix` over scripts/data/imatrix-calibration.txt (not the scored text). A type
# r1serve cannot write (its `quantize --dry-run` fails) is made by `llama-quantize` with the
# same arguments instead. The table says which tool made each file.
#
# Text: CPython's own Lib/ sources of the python3 on PATH (`sysconfig` stdlib path), a fixed
# list of files concatenated in this order: argparse.py ast.py collections/__init__.py
# dataclasses.py enum.py functools.py inspect.py subprocess.py textwrap.py typing.py (about
# 160k qwen05 tokens with 3.11; the script checks >= 100k and prints the sha256, as another
# Python version gives a slightly different text). Scoring follows llama-perplexity (--ctx
# 512, the second half of each chunk). The F16 run saves its log-probabilities
# (--kl-divergence-base, about 78 MB per chunk) and every other type is compared with them
# (--kl-divergence), which also gives its PPL on the same tokens.
#
# Peak RSS: the r1serve bench process (GNU time's "Maximum resident set size", or VmHWM
# sampled from /proc when /usr/bin/time is missing).
#
# Needs: the llama.cpp peer (scripts/build-llamacpp.sh; llama-quantize and llama-imatrix),
# python3, and for the chart matplotlib, which is installed once into
# ${R1SERVE_PEER_CACHE:-~/.cache/r1serve}/venv-chart (pip, needs the network once). Builds
# `cargo build --release -p r1serve` unless R1SERVE_BIN names a binary. Progress goes to
# stderr, the table to stdout.
set -euo pipefail

die() { echo "precision-table: $*" >&2; exit 1; }
log() { echo "precision-table: $*" >&2; }

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

DEFAULT_TYPES="F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q3_K_M Q2_K IQ4_XS IQ3_XXS IQ2_XXS"
OUT="target/precision-table"
THREADS=""
CHUNKS=""
REPS=""
TYPES=""
QUICK=0
REUSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT="$2"; shift 2 ;;
    --threads) [ $# -ge 2 ] || die "--threads needs a value"; THREADS="$2"; shift 2 ;;
    --chunks) [ $# -ge 2 ] || die "--chunks needs a value"; CHUNKS="$2"; shift 2 ;;
    --reps) [ $# -ge 2 ] || die "--reps needs a value"; REPS="$2"; shift 2 ;;
    --types) [ $# -ge 2 ] || die "--types needs a value"; TYPES="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --reuse) REUSE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  : "${TYPES:=F16 Q8_0 Q4_K_M IQ4_XS}" "${CHUNKS:=2}"
fi
: "${TYPES:=$DEFAULT_TYPES}" "${CHUNKS:=4}" "${REPS:=1}"
[ -n "$THREADS" ] || THREADS="$(physical_cores)"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive number"
[[ "$CHUNKS" =~ ^[0-9]+$ ]] || die "--chunks must be a number (0 = all)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive number"
# F16 first: it writes the base every other row is compared with.
ROWS=(F16)
for t in $TYPES; do
  t="${t^^}"
  [[ "$t" =~ ^[A-Z0-9_]+$ ]] || die "--types: '$t' is not a type name"
  [ "$t" = F16 ] || ROWS+=("$t")
done

MODEL="models/qwen05.gguf"
[ -f "$MODEL" ] || die "$MODEL is missing: run scripts/fetch-models.sh"
command -v python3 >/dev/null 2>&1 || die "python3 is missing (it names the text and reads results)"

# --- the llama.cpp peer: found where scripts/build-llamacpp.sh puts it, never built here --------
PEER_COMMIT="$(sed -n 's/^LLAMA_COMMIT=//p' scripts/build-llamacpp.sh)"
PEER_BIN="${R1SERVE_PEER_BIN:-${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}/llama.cpp-$PEER_COMMIT/bin}"
for b in llama-quantize llama-imatrix; do
  [ -x "$PEER_BIN/$b" ] || die "$PEER_BIN/$b is missing: build the llama.cpp peer first with \
scripts/build-llamacpp.sh (llama.cpp $PEER_COMMIT, CPU only, into ~/.cache/r1serve; about \
half an hour on 2 cores), or point R1SERVE_PEER_BIN at a directory holding llama-quantize and llama-imatrix"
done

mkdir -p "$OUT/models" "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
MODELS="$OUT/models"
rm -f "$LOGS"/*
[ "$REUSE" = 1 ] || rm -f "$MODELS"/qwen05-*.gguf "$MODELS"/qwen05-*.imatrix "$MODELS"/*.part

# --- r1serve: a private copy, so a concurrent build in the shared target dir cannot swap it ----
R1="${R1SERVE_BIN:-}"
if [ -z "$R1" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) or set R1SERVE_BIN"
  log "building r1serve (cargo build --release -p r1serve)"
  cargo build --release -p r1serve >&2 || die "cargo build failed"
  cp target/release/r1serve "$OUT/r1serve"
  R1="$OUT/r1serve"
fi
[ -x "$R1" ] || die "$R1: not an executable r1serve"

T_START=$(date +%s)

# --- the text ----------------------------------------------------------------------------------
STDLIB="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
PYVER="$(python3 -c 'import platform; print(platform.python_version())')"
TEXT_FILES="argparse.py ast.py collections/__init__.py dataclasses.py enum.py functools.py inspect.py subprocess.py textwrap.py typing.py"
TEXT="$OUT/text.txt"
: >"$TEXT"
for f in $TEXT_FILES; do
  [ -f "$STDLIB/$f" ] || die "$STDLIB/$f is missing (the text is CPython's Lib/ sources: $TEXT_FILES)"
  cat "$STDLIB/$f" >>"$TEXT"
done
TEXT_SHA="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$TEXT")"
TEXT_NAME="CPython $PYVER Lib/{${TEXT_FILES// /,}} from $STDLIB, in that order"
log "text: $TEXT_NAME; $(wc -c <"$TEXT") bytes, sha256 $TEXT_SHA"

# --- measuring helpers -------------------------------------------------------------------------
# timed_rss KIB_FILE CMD...: run CMD, write its peak RSS in KiB to KIB_FILE.
timed_rss() {
  local kib="$1"; shift
  if [ -x /usr/bin/time ]; then
    local rc=0
    /usr/bin/time -v -o "$kib.time" "$@" || rc=$?
    sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' "$kib.time" >"$kib"
    return $rc
  fi
  # No GNU time: sample VmHWM (the kernel's own high-water mark) until the process ends.
  "$@" &
  local pid=$! hwm=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v="$(sed -n 's/^VmHWM: *\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
    [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm="$v"
    sleep 0.2
  done
  echo "$hwm" >"$kib"
  wait "$pid"
}
json_field() { python3 -c 'import json,sys; l=[x for x in open(sys.argv[1]) if x.strip()]; v=json.loads(l[-1]).get(sys.argv[2]); print("-" if v is None else "%.2f" % v)' "$1" "$2"; }
# kld_field LOG LABEL: the first number after "LABEL:" in r1serve's KL divergence report
kld_field() { sed -n "s/^$2: *\([-0-9.]*\).*/\1/p" "$1" | head -n1; }
ppl_of() { sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$1" | tail -n1; }
secs_since() { echo $(( $(date +%s) - $1 )); }

# r1serve makes a type when its quantize plans every tensor of the base as that type (a dry
# run: it fails on a tensor type it has no writer for); otherwise llama-quantize does.
r1_can_quantize() { # TYPE [r1serve quantize args...]
  local t="$1"; shift
  "$R1" quantize "$BASE" "$MODELS/dry-run.gguf" --type "$t" --dry-run "$@" >"$LOGS/dry-run-$t.log" 2>&1
}
needs_imatrix() { [[ "$1" == IQ* ]]; }

# --- the files ---------------------------------------------------------------------------------
BASE="$MODELS/qwen05-F16.gguf"
declare -A MAKER QSECS
T0=$(date +%s)
if [ ! -f "$BASE" ]; then
  log "F16 base: llama-quantize --allow-requantize $MODEL -> $BASE"
  "$PEER_BIN/llama-quantize" --allow-requantize "$MODEL" "$BASE.part" F16 "$THREADS" \
    >"$LOGS/quantize-F16.log" 2>&1 || die "llama-quantize F16 failed: $(tail -n 5 "$LOGS/quantize-F16.log")"
  mv "$BASE.part" "$BASE"
fi
MAKER[F16]="llama-quantize --allow-requantize"
QSECS[F16]=$(secs_since "$T0")
PARAMS="$("$R1" inspect "$BASE" | sed -n 's/^parameters: *\([0-9]*\).*/\1/p')"
[ -n "$PARAMS" ] || die "r1serve inspect $BASE gave no parameter count"

IMATRIX="$MODELS/qwen05-F16.imatrix"
USED_IMATRIX=0
for t in "${ROWS[@]}"; do
  [ "$t" = F16 ] && continue
  f="$MODELS/qwen05-$t.gguf"
  T0=$(date +%s)
  if needs_imatrix "$t"; then
    USED_IMATRIX=1
    if [ ! -f "$IMATRIX" ]; then
      log "importance matrix: llama-imatrix over scripts/data/imatrix-calibration.txt (-c 128)"
      "$PEER_BIN/llama-imatrix" -m "$BASE" -f scripts/data/imatrix-calibration.txt -c 128 \
        -t "$THREADS" -o "$IMATRIX.part" >"$LOGS/imatrix.log" 2>&1 \
        || die "llama-imatrix failed: $(tail -n 5 "$LOGS/imatrix.log")"
      mv "$IMATRIX.part" "$IMATRIX"
    fi
  fi
  args=()
  needs_imatrix "$t" && args=(--imatrix "$IMATRIX")
  if r1_can_quantize "$t" "${args[@]}"; then
    MAKER[$t]="r1serve quantize${args[0]:+ --imatrix}"
    if [ ! -f "$f" ]; then
      log "$t: r1serve quantize"
      "$R1" quantize "$BASE" "$f" --type "$t" --threads "$THREADS" "${args[@]}" \
        >"$LOGS/quantize-$t.log" 2>&1 || die "r1serve quantize --type $t failed: $(tail -n 5 "$LOGS/quantize-$t.log")"
    fi
  else
    MAKER[$t]="llama-quantize --imatrix"
    args=(--imatrix "$IMATRIX")
    needs_imatrix "$t" || { MAKER[$t]="llama-quantize"; args=(); }
    if [ ! -f "$f" ]; then
      log "$t: llama-quantize (r1serve quantize cannot: $(tail -n 1 "$LOGS/dry-run-$t.log"))"
      "$PEER_BIN/llama-quantize" "${args[@]}" "$BASE" "$f.part" "$t" "$THREADS" \
        >"$LOGS/quantize-$t.log" 2>&1 || die "llama-quantize $t failed: $(tail -n 5 "$LOGS/quantize-$t.log")"
      mv "$f.part" "$f"
    fi
  fi
  QSECS[$t]=$(secs_since "$T0")
done

# --- the runs ----------------------------------------------------------------------------------
KLD_BASE="$OUT/f16.kld"
trap 'rm -f "$KLD_BASE"' EXIT
CHUNK_ARGS=()
[ "$CHUNKS" = 0 ] || CHUNK_ARGS=(--chunks "$CHUNKS")
RESULTS="$OUT/results.tsv"
printf 'type\tmaker\tsize_bytes\tbpw\trss_kib\tpp512\ttg128\tppl\tppl_unc\tkld_mean\tkld_p99\ttop1_pct\tquantize_s\tbench_s\tppl_s\tmix_mib\n' >"$RESULTS"
FAILED=()
TOKENS="" N_CHUNK=""
for t in "${ROWS[@]}"; do
  f="$MODELS/qwen05-$t.gguf"
  [ "$t" = F16 ] && f="$BASE"
  size=$(stat -c %s "$f")
  bpw=$(awk -v s="$size" -v p="$PARAMS" 'BEGIN { printf "%.2f", 8 * s / p }')
  log "$t: r1serve bench (pp512, tg128, -r $REPS)"
  T0=$(date +%s)
  if timed_rss "$LOGS/rss-$t" "$R1" bench --model "$f" --threads "$THREADS" -p 512 -n 128 \
      -r "$REPS" --json >"$LOGS/bench-$t.json" 2>"$LOGS/bench-$t.err"; then
    pp=$(json_field "$LOGS/bench-$t.json" pp_tps_mean)
    tg=$(json_field "$LOGS/bench-$t.json" tg_tps_mean)
    rss=$(cat "$LOGS/rss-$t")
  else
    log "$t: r1serve bench failed: $(tail -n 3 "$LOGS/bench-$t.err")"
    FAILED+=("$t (bench: $LOGS/bench-$t.err)"); pp=-; tg=-; rss=-
  fi
  BSECS=$(secs_since "$T0")
  T0=$(date +%s)
  ppl=-; unc=-; kmean=-; kp99=-; top1=-
  if [ "$t" = F16 ]; then
    log "F16: r1serve perplexity, saving the base log-probabilities"
    if "$R1" perplexity --model "$f" --file "$TEXT" --ctx 512 --threads "$THREADS" \
        "${CHUNK_ARGS[@]}" --kl-divergence-base "$KLD_BASE" >"$LOGS/ppl-$t.log" 2>"$LOGS/ppl-$t.err"; then
      read -r ppl unc <<<"$(ppl_of "$LOGS/ppl-$t.log")"
      TOKENS="$(sed -n 's/.* tokenized to \([0-9]*\) tokens.*/\1/p' "$LOGS/ppl-$t.err")"
      N_CHUNK="$(sed -n 's/^perplexity: \([0-9]*\) chunks of 512 tokens (of \([0-9]*\)).*/\1 \2/p' "$LOGS/ppl-$t.err")"
    else
      tail -n 5 "$LOGS/ppl-$t.err" >&2
      die "F16 perplexity failed (every other row needs its log-probabilities; log $LOGS/ppl-$t.err)"
    fi
    [ -n "$TOKENS" ] && [ "$TOKENS" -ge 100000 ] \
      || die "the text is ${TOKENS:-?} tokens, fewer than 100k: $TEXT_NAME"
    kmean=0; kp99=0; top1=100
  else
    log "$t: r1serve perplexity --kl-divergence"
    if "$R1" perplexity --model "$f" --threads "$THREADS" --kl-divergence \
        --kl-divergence-base "$KLD_BASE" >"$LOGS/ppl-$t.log" 2>"$LOGS/ppl-$t.err"; then
      read -r ppl unc <<<"$(ppl_of "$LOGS/ppl-$t.log")"
      kmean=$(kld_field "$LOGS/ppl-$t.log" "Mean    KLD")
      kp99=$(kld_field "$LOGS/ppl-$t.log" "99.0%   KLD")
      top1=$(kld_field "$LOGS/ppl-$t.log" "Same top p")
    else
      log "$t: r1serve perplexity failed: $(tail -n 3 "$LOGS/ppl-$t.err")"
      FAILED+=("$t (perplexity: $LOGS/ppl-$t.err)")
    fi
  fi
  PSECS=$(secs_since "$T0")
  log "$t: $((size >> 20)) MiB, pp512 $pp, tg128 $tg t/s, PPL $ppl, KLD $kmean (${BSECS} s bench, ${PSECS} s perplexity)"
  # What the file holds, largest first ("Q5_0 254, Q8_0 139" MiB): the K and IQ types fall back
  # where a row is not whole 256-blocks, which is most of qwen05 (hidden size 896).
  mix="$("$R1" inspect "$f" | awk '/^tensor types/ { on = 1; next } on && /^[^ ]/ { on = 0 }
    on && $5 == "MiB" && $4 >= 0.5 { printf "%s %.0f\n", $1, $4 }' | sort -k2,2nr | paste -sd, | sed 's/,/, /g')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${MAKER[$t]}" \
    "$size" "$bpw" "$rss" "$pp" "$tg" "${ppl:--}" "${unc:--}" "${kmean:--}" "${kp99:--}" \
    "${top1:--}" "${QSECS[$t]}" "$BSECS" "$PSECS" "${mix:--}" >>"$RESULTS"
done
rm -f "$KLD_BASE"
TOTAL=$(secs_since "$T_START")

# --- the table -----------------------------------------------------------------------------------
read -r N_SCORED N_ALL <<<"${N_CHUNK:-? ?}"
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
if [ -n "${R1SERVE_BIN:-}" ]; then
  REV="(R1SERVE_BIN=$R1SERVE_BIN)"  # not necessarily this checkout's build
else
  REV="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
fi
{
  echo "## Precision against size and speed: qwen05 (Qwen2.5-Coder 0.5B), r1serve $REV"
  echo
  python3 - "$RESULTS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
base = next(r for r in rows if r["type"] == "F16")
def f(v, fmt):
    return "-" if v in ("-", "") else fmt % float(v)
def dppl(r):
    if "-" in (r["ppl"], base["ppl"]):
        return "-"
    return "%+.2f%%" % (100 * (float(r["ppl"]) / float(base["ppl"]) - 1))
print("| type | bits/weight | file MiB | peak RSS MiB | pp512 t/s | tg128 t/s | PPL | PPL vs F16 | mean KLD | KLD p99 | same top-1 | made by |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for r in sorted(rows, key=lambda r: -int(r["size_bytes"])):
    base_row = r["type"] == "F16"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["type"] + (" (base)" if base_row else ""), r["bpw"],
        "%.1f" % (int(r["size_bytes"]) / 2**20),
        "-" if r["rss_kib"] in ("-", "") else "%.0f" % (int(r["rss_kib"]) / 1024),
        f(r["pp512"], "%.1f"), f(r["tg128"], "%.2f"),
        "-" if r["ppl"] == "-" else "%s ± %.3f" % (r["ppl"], float(r["ppl_unc"])), dppl(r),
        "-" if base_row else f(r["kld_mean"], "%.5f"),
        "-" if base_row else f(r["kld_p99"], "%.4f"),
        "-" if base_row else f(r["top1_pct"], "%.2f%%"), r["maker"]))
EOF
  echo
  echo "- Base: $MODEL converted to F16 by llama-quantize --allow-requantize (its quantized values, exactly); every other file is quantized from that F16 file ($PARAMS parameters; bits/weight = 8 × file size / parameters)."
  echo "- Text: $TEXT_NAME; $(wc -c <"$TEXT") bytes, sha256 \`$TEXT_SHA\`, $TOKENS tokens ($N_ALL chunks of 512)."
  echo "- Quality: \`r1serve perplexity --ctx 512\` over the first $N_SCORED of those $N_ALL chunks (llama-perplexity's scoring: the second half of each chunk, $((N_SCORED * 255)) tokens); the F16 run saves its log-probabilities (--kl-divergence-base) and every other row is \`--kl-divergence\` against them (mean KLD, its 99th percentile, and how often both rank the same token first). PPL ± is llama-perplexity's."
  echo "- What each file holds (\`r1serve inspect\`, MiB by tensor type): $(python3 -c '
import csv,sys
print("; ".join("%s: %s" % (r["type"], r["mix_mib"]) for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")))' "$RESULTS"). qwen05's hidden size, 896, is not a multiple of 256, so every matrix that multiplies it falls back from a K or IQ type to a 32-block type (llama.cpp's rules: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, Q2_K and Q3_K to Q4_0, the IQ types to IQ4_NL): the low-bit rows are bigger, and closer to each other, than on a model with 256-multiple rows."
  if [ "$USED_IMATRIX" = 1 ]; then
    lq=""
    for t in "${ROWS[@]}"; do
      if [[ "${MAKER[$t]}" == llama-quantize* ]] && [ -f "$LOGS/dry-run-$t.log" ]; then
        lq+="$t ($(tail -n 1 "$LOGS/dry-run-$t.log")); "
      fi
    done
    echo "- IQ rows: quantized with an importance matrix from llama-imatrix (llama.cpp $PEER_COMMIT) over scripts/data/imatrix-calibration.txt, -c 128; the other rows use none.${lq:+ Made by llama-quantize because r1serve quantize could not write every tensor: ${lq%; }.}"
  fi
  echo "- Speed: \`r1serve bench -p 512 -n 128 -r $REPS\` (mean of $REPS after a warm-up), $THREADS threads on ${CPU:-this CPU}; peak RSS is that bench process's (model, KV cache for 513 tokens, buffers)."
  echo "- Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $TOTAL s in all; per row (quantize/bench/perplexity, s): $(python3 -c '
import csv,sys
print(", ".join("%s %s/%s/%s" % (r["type"], r["quantize_s"], r["bench_s"], r["ppl_s"]) for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")))' "$RESULTS")$([ "$REUSE" = 1 ] && echo " (--reuse: files already in $MODELS were not made again)" || true)."
} >"$OUT/table.md"
cat "$OUT/table.md"

# --- the chart -----------------------------------------------------------------------------------
VENV="${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}/venv-chart"
CHART_OK=1
if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
  log "installing matplotlib into $VENV (once)"
  { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q matplotlib==3.10.8; } >"$LOGS/venv.log" 2>&1 \
    || { CHART_OK=0; log "could not install matplotlib (see $LOGS/venv.log): no chart"; }
fi
if [ "$CHART_OK" = 1 ]; then
  "$VENV/bin/python" scripts/precision-chart.py "$RESULTS" "$OUT/precision.png" \
    "qwen05 (Qwen2.5-Coder 0.5B): r1serve $REV, $THREADS threads, $N_SCORED chunks of 512 scored" >&2 \
    || { CHART_OK=0; log "precision-chart.py failed: no chart"; }
fi
echo
[ "$CHART_OK" = 1 ] && echo "chart: $OUT/precision.png"
echo "results: $RESULTS"
if [ "${#FAILED[@]}" -gt 0 ]; then
  log "failed: ${FAILED[*]}"
  exit 1
fi
[ "$CHART_OK" = 1 ] || exit 1
