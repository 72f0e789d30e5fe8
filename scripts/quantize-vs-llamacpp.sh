#!/usr/bin/env bash
# `r1serve quantize` against `llama-quantize` (the peer build, scripts/build-llamacpp.sh): the
# same F16 input, the same type, and the tensor bytes must be identical.
#
#   scripts/quantize-vs-llamacpp.sh [--mixes] [--imatrix] [--iq [TYPES]] [--base FILE]
#
# Base input: models/qwen05.gguf converted to F16 by `llama-quantize --allow-requantize`
# (its Q4_K_M values, in F16). Then for each of Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K:
# `llama-quantize --pure` and `r1serve quantize --pure`, compared tensor by tensor (name,
# type, shape, data) and as whole files.
#   --mixes    also the mixes without --pure: Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K (llama.cpp's
#              per-tensor type rules)
#   --imatrix  also Q4_0 Q4_K_M Q3_K_M with an importance matrix made by llama-imatrix
#              (GGUF and legacy .dat) over the first 16 chunks of 128 tokens of this repo's
#              README.md
#   --iq       also the i-quant mixes, with that importance matrix (llama-quantize refuses most
#              of them without one): IQ4_NL IQ4_XS IQ3_XXS IQ3_XS IQ3_S IQ3_M IQ2_XXS IQ2_XS
#              IQ2_S IQ2_M IQ1_S IQ1_M Q2_K_S, or the comma-separated TYPES given. qwen05's
#              896-wide rows are not whole 256-blocks, so most of its matrices fall back to
#              IQ4_NL and the 256-block i-quants land on ffn_down (4864 wide) and the rules'
#              K-quant picks.
#   --base F   quantize this GGUF (F16/BF16/F32) instead of qwen05-in-F16, e.g. the DeepSeek
#              fixture $R1SERVE_FIXTURES/deepseek2-gguf/small1-f16.gguf, whose rows are all whole
#              256-blocks, so every i-quant lands on every matrix, with DeepSeek's MoE rules
# Work files go to ${R1SERVE_QWORK:-/tmp/r1serve-quantize-vs-llamacpp} (about 3 GB at peak).
# R1SERVE_BIN names an r1serve binary to test instead of building one.
# Exit status 1 when any type differs.
set -euo pipefail
cd "$(dirname "$0")/.."

MIXES=0
IMAT=0
IQ=0
BASE_ARG=""
IQ_TYPES="IQ4_NL IQ4_XS IQ3_XXS IQ3_XS IQ3_S IQ3_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M Q2_K_S"
while [ $# -gt 0 ]; do
  case "$1" in
    --mixes) MIXES=1 ;;
    --imatrix) IMAT=1 ;;
    --iq)
      IQ=1
      if [ $# -gt 1 ] && [[ "$2" != --* ]]; then IQ_TYPES="${2//,/ }"; shift; fi
      ;;
    --base) BASE_ARG="${2:?--base needs a file}"; shift ;;
    *) echo "usage: $0 [--mixes] [--imatrix] [--iq [TYPE,TYPE...]] [--base FILE]" >&2; exit 2 ;;
  esac
  shift
done

MODEL=models/qwen05.gguf
[ -f "$MODEL" ] || { echo "quantize-vs-llamacpp: $MODEL missing (scripts/fetch-models.sh)" >&2; exit 2; }
BIN="$(scripts/build-llamacpp.sh)"
for b in llama-quantize llama-imatrix; do
  [ -x "$BIN/$b" ] || { echo "quantize-vs-llamacpp: $BIN/$b missing" >&2; exit 2; }
done
R1="${R1SERVE_BIN:-}"
if [ -z "$R1" ]; then
  cargo build --release -q -p r1serve
  R1=target/release/r1serve
fi
WORK="${R1SERVE_QWORK:-/tmp/r1serve-quantize-vs-llamacpp}"
mkdir -p "$WORK"
BASE="$WORK/qwen05-f16.gguf"
if [ -n "$BASE_ARG" ]; then
  [ -f "$BASE_ARG" ] || { echo "quantize-vs-llamacpp: --base $BASE_ARG: no such file" >&2; exit 2; }
  BASE="$BASE_ARG"
  WORK="$WORK/$(basename "$BASE_ARG" .gguf)"
  mkdir -p "$WORK"
elif [ ! -f "$BASE" ]; then
  "$BIN/llama-quantize" --allow-requantize "$MODEL" "$BASE" F16 >"$WORK/base.log" 2>&1
fi

# compare NAME A B: tensor by tensor, and the whole files
compare() {
  python3 - "$@" <<'EOF'
import hashlib, struct, sys
name, pa, pb = sys.argv[1:4]
def tensors(path):
    f = open(path, 'rb'); d = f.read()
    assert d[:4] == b'GGUF', path
    nt, nkv = struct.unpack_from('<QQ', d, 8); o = 24
    def s(o):
        n, = struct.unpack_from('<Q', d, o); return d[o+8:o+8+n].decode(), o+8+n
    sizes = {0:1,1:1,2:2,3:2,4:4,5:4,6:4,7:1,10:8,11:8,12:8}
    def val(t, o):
        if t == 8: return s(o)[1]
        if t == 9:
            et, n = struct.unpack_from('<IQ', d, o); o += 12
            for _ in range(n): o = val(et, o)
            return o
        return o + sizes[t]
    align = 32
    for _ in range(nkv):
        k, o = s(o); t, = struct.unpack_from('<I', d, o); o += 4
        if k == 'general.alignment': align, = struct.unpack_from('<I', d, o)
        o = val(t, o)
    infos = []
    for _ in range(nt):
        n, o = s(o); nd, = struct.unpack_from('<I', d, o); o += 4
        dims = struct.unpack_from('<%dQ' % nd, d, o); o += 8 * nd
        ty, off = struct.unpack_from('<IQ', d, o); o += 12
        infos.append((n, ty, dims, off))
    start = (o + align - 1) // align * align
    offs = sorted(i[3] for i in infos) + [len(d) - start]
    out = {}
    for n, ty, dims, off in infos:
        end = min(x for x in offs if x > off) if any(x > off for x in offs) else len(d) - start
        out[n] = (ty, dims, hashlib.sha256(d[start+off:start+end]).hexdigest())
    return out
a, b = tensors(pa), tensors(pb)
bad = [n for n in a if a.get(n) != b.get(n)] + [n for n in b if n not in a]
same_file = open(pa, 'rb').read() == open(pb, 'rb').read()
types = {}
for n, (ty, _, _) in a.items(): types[ty] = types.get(ty, 0) + 1
tn = {0:'F32',1:'F16',2:'Q4_0',3:'Q4_1',6:'Q5_0',7:'Q5_1',8:'Q8_0',10:'Q2_K',11:'Q3_K',12:'Q4_K',13:'Q5_K',14:'Q6_K',30:'BF16',
      16:'IQ2_XXS',17:'IQ2_XS',18:'IQ3_XXS',19:'IQ1_S',20:'IQ4_NL',21:'IQ3_S',22:'IQ2_S',23:'IQ4_XS',29:'IQ1_M'}
mix = ' '.join('%s×%d' % (tn.get(t, t), c) for t, c in sorted(types.items()))
print('%-22s %3d/%3d tensors identical   whole file %-9s  [%s]' % (
    name, len(a) - len(bad), len(a), 'identical' if same_file else 'differs', mix))
for n in bad[:5]: print('    differs: %s  llama.cpp %s  r1serve %s' % (n, a.get(n, '-')[:2], b.get(n, '-')[:2]))
sys.exit(1 if bad else 0)
EOF
}

FAIL=0
run_pair() { # label, type, llama-quantize extra args..., --, r1serve extra args...
  local label="$1" ty="$2"; shift 2
  local lq=() rq=() side=l
  for x in "$@"; do
    if [ "$x" = "--" ]; then side=r; continue; fi
    if [ $side = l ]; then lq+=("$x"); else rq+=("$x"); fi
  done
  "$BIN/llama-quantize" "${lq[@]}" "$BASE" "$WORK/ll.gguf" "$ty" >"$WORK/ll-$label.log" 2>&1 \
    || { echo "llama-quantize failed ($label), see $WORK/ll-$label.log" >&2; FAIL=1; return; }
  "$R1" quantize "${rq[@]}" "$BASE" "$WORK/r1.gguf" --type "$ty" >"$WORK/r1-$label.log" 2>&1 \
    || { echo "r1serve quantize failed ($label), see $WORK/r1-$label.log" >&2; FAIL=1; return; }
  compare "$label" "$WORK/ll.gguf" "$WORK/r1.gguf" || FAIL=1
  rm -f "$WORK/ll.gguf" "$WORK/r1.gguf"
}

if [ -n "$BASE_ARG" ]; then
  echo "# base: $BASE; peer: $BIN"
else
  echo "# base: $BASE (qwen05 -> F16 by llama-quantize --allow-requantize); peer: $BIN"
fi
for T in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K; do
  run_pair "$T --pure" "$T" --pure -- --pure
done
if [ "$MIXES" = 1 ]; then
  for T in Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
    run_pair "$T" "$T" --
  done
fi
IM="$WORK/imatrix"
make_imatrix() {
  if [ ! -f "$IM.gguf" ] || [ ! -f "$IM.dat" ]; then
    "$BIN/llama-imatrix" -m "$BASE" -f README.md -c 128 --chunks 16 -t "$(nproc)" -o "$IM.gguf" \
      >"$WORK/imatrix.log" 2>&1
    "$BIN/llama-imatrix" -m "$BASE" -f README.md -c 128 --chunks 16 -t "$(nproc)" \
      --output-format dat -o "$IM.dat" >>"$WORK/imatrix.log" 2>&1
  fi
}
if [ "$IMAT" = 1 ]; then
  make_imatrix
  for T in Q4_0 Q4_K_M Q3_K_M; do
    run_pair "$T imatrix.gguf" "$T" --imatrix "$IM.gguf" -- --imatrix "$IM.gguf"
  done
  run_pair "Q4_K_M imatrix.dat" Q4_K_M --imatrix "$IM.dat" -- --imatrix "$IM.dat"
fi
if [ "$IQ" = 1 ]; then
  make_imatrix
  for T in $IQ_TYPES; do
    run_pair "$T imatrix.gguf" "$T" --imatrix "$IM.gguf" -- --imatrix "$IM.gguf"
  done
fi
[ "$FAIL" = 0 ] && echo "quantize-vs-llamacpp: all identical" || echo "quantize-vs-llamacpp: DIFFERENCES"
exit "$FAIL"
