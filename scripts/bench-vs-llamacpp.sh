#!/usr/bin/env bash
# r1serve against llama.cpp on the same GGUF files, same machine, same thread count, in one run.
#
#   scripts/bench-vs-llamacpp.sh [--threads T] [--reps N] [--models "smollm2 qwen05"]
#                                [--models-dir DIR] [--loaded] [--peer-only] [--isa avx2]
#
#   --threads T     threads for both engines (default: the number of physical cores)
#   --reps N        runs per engine and model; the best run counts (default 3). The two engines
#                   alternate run by run, so drift in machine load hits both alike.
#   --models LIST   model names, each DIR/NAME.gguf (default "smollm2 qwen05"; scripts/fetch-models.sh)
#   --models-dir    where the models are (default models/)
#   --loaded        also measure tg128 with one competing busy thread on the machine (best of N;
#                   slow: llama.cpp falls to ~1-2 t/s under load, ~8 extra minutes on 2 cores)
#   --peer-only     measure llama.cpp (and the bandwidth ceiling) only, no r1serve
#   --isa avx2      both engines without AVX-512, as on most home CPUs, runnable on an AVX-512
#                   machine: r1serve with --isa avx2 and R1SERVE_AVXVNNI=0, llama.cpp from
#                   build-llamacpp.sh --isa avx2 (GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C on, every
#                   AVX-512 option and AVX-VNNI off)
#
# Steps: builds the peer once (scripts/build-llamacpp.sh: llama.cpp 0c1e570 from the
# llama-cpp-python==0.3.36 sdist, cached in ${R1SERVE_PEER_CACHE:-~/.cache/r1serve}), builds
# `cargo build --release -p r1serve` (skipped when R1SERVE_BIN names a binary), measures read
# bandwidth with a small C probe (1 GiB buffer, 1 and T threads; compiled into a temp dir), then
# runs `llama-bench -t T -p 512 -n 128 -r 1 -o json` and
# `r1serve bench --model M -p 512 -n 128 --threads T --json` (one JSON line:
# {"model","threads","pp","tg","pp_tps","tg_tps"}) and prints a markdown table on stdout.
# Progress goes to stderr. The decode ceiling is read bandwidth (T threads) / bytes of weights read
# per generated token (every tensor but the token embedding; the embedding when it is tied to the
# output).
set -euo pipefail

die() { echo "bench-vs-llamacpp: $*" >&2; exit 1; }
log() { echo "bench-vs-llamacpp: $*" >&2; }

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

THREADS=""
REPS=3
MODELS="smollm2 qwen05"
MODELS_DIR="models"
LOADED=0
PEER_ONLY=0
ISA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) [ $# -ge 2 ] || die "--threads needs a value"; THREADS="$2"; shift 2 ;;
    --threads=*) THREADS="${1#*=}"; shift ;;
    --reps) [ $# -ge 2 ] || die "--reps needs a value"; REPS="$2"; shift 2 ;;
    --reps=*) REPS="${1#*=}"; shift ;;
    --models) [ $# -ge 2 ] || die "--models needs a value"; MODELS="$2"; shift 2 ;;
    --models=*) MODELS="${1#*=}"; shift ;;
    --models-dir) [ $# -ge 2 ] || die "--models-dir needs a value"; MODELS_DIR="$2"; shift 2 ;;
    --models-dir=*) MODELS_DIR="${1#*=}"; shift ;;
    --loaded) LOADED=1; shift ;;
    --peer-only) PEER_ONLY=1; shift ;;
    --isa) [ $# -ge 2 ] || die "--isa needs a value"; ISA="$2"; shift 2 ;;
    --isa=*) ISA="${1#*=}"; shift ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$THREADS" ] || THREADS="$(physical_cores)"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer, got '$THREADS'"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, got '$REPS'"
[ -n "${MODELS// /}" ] || die "--models is empty"
case "$ISA" in
  "") PEER_ARGS=(); R1_ISA=() ;;
  # Plain AVX2 on both sides: the peer is built without AVX-VNNI, so r1serve's ymm VNNI
  # kernels (Alder Lake and later) are switched off too.
  avx2) PEER_ARGS=(--isa avx2); R1_ISA=(--isa avx2); export R1SERVE_AVXVNNI=0 ;;
  *) die "--isa takes avx2 (got '$ISA'); without it both engines use everything the CPU has" ;;
esac

command -v python3 >/dev/null 2>&1 || die "python3 is needed to read JSON and GGUF headers (apt-get install python3)"
command -v gcc >/dev/null 2>&1 || die "gcc is needed for the bandwidth probe (apt-get install build-essential)"

for m in $MODELS; do
  [ -f "$MODELS_DIR/$m.gguf" ] || die "model $MODELS_DIR/$m.gguf is missing: run scripts/fetch-models.sh $MODELS_DIR"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/r1serve-bench.XXXXXX")"
BUSY_PID=""
cleanup() {
  if [ -n "$BUSY_PID" ]; then kill "$BUSY_PID" 2>/dev/null || true; wait "$BUSY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the peer --------------------------------------------------------------------------------
PEER_BIN="$("$ROOT/scripts/build-llamacpp.sh" "${PEER_ARGS[@]}")" || die "building llama.cpp failed (see above)"
LLAMA_BENCH="$PEER_BIN/llama-bench"
[ -x "$LLAMA_BENCH" ] || die "$LLAMA_BENCH is missing after the build"
PEER_INFO="$(cat "$PEER_BIN/BUILD_INFO" 2>/dev/null || echo "llama.cpp 0c1e570")"

# --- r1serve ---------------------------------------------------------------------------------
R1="${R1SERVE_BIN:-}"
if [ "$PEER_ONLY" = 0 ]; then
  if [ -z "$R1" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs)"
    log "building r1serve (cargo build --release -p r1serve)"
    cargo build --release -p r1serve >&2 || die "cargo build --release -p r1serve failed (see above)"
    R1="$ROOT/target/release/r1serve"
  fi
  [ -x "$R1" ] || die "r1serve binary $R1 is missing"
fi

# --- read bandwidth --------------------------------------------------------------------------
cat >"$WORK/bw.c" <<'EOF'
/* Read bandwidth: every thread streams its share of one buffer; the best of PASSES passes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

#define PASSES 12
static size_t total;
static unsigned char *buf;
static int nthreads;
static pthread_barrier_t bar;
static double t_start, t_best;
static volatile uint64_t sink;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t read_range(const unsigned char *p, size_t n) {
#if defined(__AVX512F__)
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512((const void *)(p + i)));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512((const void *)(p + i + 64)));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512((const void *)(p + i + 128)));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512((const void *)(p + i + 192)));
  }
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  return (uint64_t)_mm512_reduce_add_epi64(a0);
#elif defined(__AVX2__)
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= n; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
  }
  a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  return (uint64_t)_mm256_extract_epi64(a0, 0) ^ (uint64_t)_mm256_extract_epi64(a0, 3);
#else
  const uint64_t *q = (const uint64_t *)p;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 4 <= n / 8; i += 4) { a0 ^= q[i]; a1 ^= q[i + 1]; a2 ^= q[i + 2]; a3 ^= q[i + 3]; }
  return a0 ^ a1 ^ a2 ^ a3;
#endif
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  size_t chunk = total / nthreads / 256 * 256;
  const unsigned char *p = buf + (size_t)id * chunk;
  uint64_t acc = 0;
  for (int pass = 0; pass < PASSES; pass++) {
    pthread_barrier_wait(&bar);
    if (id == 0) t_start = now();
    pthread_barrier_wait(&bar);
    acc ^= read_range(p, chunk);
    pthread_barrier_wait(&bar);
    if (id == 0) {
      double t = now() - t_start;
      if (pass > 0 && (t_best == 0 || t < t_best)) t_best = t; /* pass 0 warms up */
    }
  }
  sink ^= acc;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: bw MIB THREADS\n"); return 2; }
  total = (size_t)atol(argv[1]) << 20;
  nthreads = atoi(argv[2]);
  if (total == 0 || nthreads < 1 || nthreads > 1024) { fprintf(stderr, "bw: bad arguments\n"); return 2; }
  buf = aligned_alloc(4096, total);
  if (!buf) { fprintf(stderr, "bw: cannot allocate %zu MiB\n", total >> 20); return 1; }
  memset(buf, 1, total);
  pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
  pthread_t th[1024];
  for (int i = 1; i < nthreads; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
  worker((void *)0);
  for (int i = 1; i < nthreads; i++) pthread_join(th[i], NULL);
  size_t bytes = total / nthreads / 256 * 256 * (size_t)nthreads;
  printf("%.2f\n", bytes / t_best / 1e9);
  return 0;
}
EOF
gcc -O3 -march=native -pthread -o "$WORK/bw" "$WORK/bw.c" 2>"$WORK/bw.err" \
  || die "compiling the bandwidth probe failed: $(cat "$WORK/bw.err")"
BW_MIB="${R1SERVE_BW_MIB:-1024}"
log "measuring read bandwidth (${BW_MIB} MiB buffer, 1 and $THREADS threads)"
BW1="$("$WORK/bw" "$BW_MIB" 1)" || die "bandwidth probe failed (1 thread)"
if [ "$THREADS" = 1 ]; then BWT="$BW1"; else
  BWT="$("$WORK/bw" "$BW_MIB" "$THREADS")" || die "bandwidth probe failed ($THREADS threads)"
fi

# --- helpers (python3) -----------------------------------------------------------------------
cat >"$WORK/util.py" <<'EOF'
import json, struct, sys

def best_llama(paths):
    """Best pp512 / tg128 avg_ts over llama-bench -o json outputs."""
    pp = tg = 0.0
    commit = ""
    for p in paths:
        with open(p) as f:
            rows = json.load(f)
        for r in rows:
            commit = r.get("build_commit", commit)
            ts = float(r["avg_ts"])
            if r.get("n_gen", 0) == 0 and r.get("n_prompt", 0) > 0:
                pp = max(pp, ts)
            elif r.get("n_prompt", 0) == 0 and r.get("n_gen", 0) > 0:
                tg = max(tg, ts)
    print(f"{pp:.2f} {tg:.2f}")

def best_r1(paths):
    """Best pp_tps / tg_tps over r1serve bench --json outputs (one JSON line each)."""
    pp = tg = 0.0
    for p in paths:
        lines = [l for l in open(p).read().splitlines() if l.strip()]
        if not lines:
            sys.exit(f"{p}: r1serve bench printed nothing on stdout")
        try:
            r = json.loads(lines[-1])
            pp = max(pp, float(r["pp_tps"]))
            tg = max(tg, float(r["tg_tps"]))
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"r1serve bench --json must print one JSON line with pp_tps and tg_tps; got {lines[-1]!r} ({e})")
    print(f"{pp:.2f} {tg:.2f}")

def bytes_per_token(path):
    """Bytes of weights a decode step reads: all tensors but token_embd (it when tied)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
        f.seek(0, 2)
        file_size = f.tell()
    off = 0
    def rd(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return v[0]
    def rstr():
        nonlocal off
        n = rd("Q")
        s = data[off:off + n].decode("utf-8", "replace")
        off += n
        return s
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def rval(t):
        if t == 8:
            return rstr()
        if t == 9:
            et = rd("I"); n = rd("Q")
            return [rval(et) for _ in range(n)]
        return rd(scalar[t])
    if data[:4] != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    off = 4
    version = rd("I"); n_tensors = rd("Q"); n_kv = rd("Q")
    align = 32
    for _ in range(n_kv):
        k = rstr(); t = rd("I"); v = rval(t)
        if k == "general.alignment":
            align = int(v)
    infos = []
    for _ in range(n_tensors):
        name = rstr(); nd = rd("I")
        for _ in range(nd):
            rd("Q")
        rd("I")
        infos.append((rd("Q"), name))
    data_start = (off + align - 1) // align * align
    infos.sort()
    sizes = {}
    for i, (o, name) in enumerate(infos):
        end = infos[i + 1][0] if i + 1 < len(infos) else file_size - data_start
        sizes[name] = end - o
    total = sum(s for n, s in sizes.items() if n != "token_embd.weight")
    if "output.weight" not in sizes:
        total += sizes.get("token_embd.weight", 0)
    print(total)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "llama":
        best_llama(args)
    elif cmd == "r1":
        best_r1(args)
    elif cmd == "bpt":
        bytes_per_token(args[0])
    else:
        sys.exit(f"util.py: unknown command {cmd}")
EOF

# run_llama MODEL OUT  |  run_r1 MODEL OUT   (one run each; failures are fatal with context)
run_llama() {
  local m="$1" out="$2" rc=0
  "$LLAMA_BENCH" -m "$MODELS_DIR/$m.gguf" -t "$THREADS" -p 512 -n 128 -r 1 -o json \
    >"$out" 2>"$out.err" || rc=$?
  [ "$rc" = 0 ] || die "llama-bench failed on $m (exit $rc): $(tail -n 5 "$out.err")"
}
run_r1() {
  local m="$1" out="$2" rc=0
  "$R1" "${R1_ISA[@]}" bench --model "$MODELS_DIR/$m.gguf" -p 512 -n 128 --threads "$THREADS" --json \
    >"$out" 2>"$out.err" || rc=$?
  if [ "$rc" != 0 ]; then
    die "r1serve bench failed on $m (exit $rc): $(tail -n 5 "$out.err")
  expected: $R1 bench --model $MODELS_DIR/$m.gguf -p 512 -n 128 --threads $THREADS --json
  printing one JSON line {\"model\",\"threads\",\"pp\",\"tg\",\"pp_tps\",\"tg_tps\"}
  (--peer-only measures llama.cpp alone)"
  fi
}

start_busy() { ( while :; do :; done ) & BUSY_PID=$!; }
stop_busy() { kill "$BUSY_PID" 2>/dev/null || true; wait "$BUSY_PID" 2>/dev/null || true; BUSY_PID=""; }

declare -A L_PP L_TG R_PP R_TG LL_TG RL_TG BPT
for m in $MODELS; do
  BPT[$m]="$(python3 "$WORK/util.py" bpt "$MODELS_DIR/$m.gguf")" || die "cannot read tensor sizes of $MODELS_DIR/$m.gguf"
  llama_runs=(); r1_runs=()
  for rep in $(seq 1 "$REPS"); do
    log "$m: run $rep/$REPS: llama-bench"
    run_llama "$m" "$WORK/$m.llama.$rep.json"; llama_runs+=("$WORK/$m.llama.$rep.json")
    if [ "$PEER_ONLY" = 0 ]; then
      log "$m: run $rep/$REPS: r1serve bench"
      run_r1 "$m" "$WORK/$m.r1.$rep.json"; r1_runs+=("$WORK/$m.r1.$rep.json")
    fi
  done
  read -r L_PP[$m] L_TG[$m] < <(python3 "$WORK/util.py" llama "${llama_runs[@]}") \
    || die "cannot parse llama-bench output for $m"
  if [ "$PEER_ONLY" = 0 ]; then
    best="$(python3 "$WORK/util.py" r1 "${r1_runs[@]}" 2>&1)" || die "$m: $best"
    read -r R_PP[$m] R_TG[$m] <<<"$best"
  fi
  if [ "$LOADED" = 1 ]; then
    llama_runs=(); r1_runs=()
    start_busy
    for rep in $(seq 1 "$REPS"); do
      log "$m: loaded run $rep/$REPS (one busy competing thread)"
      run_llama "$m" "$WORK/$m.llama.loaded.$rep.json"; llama_runs+=("$WORK/$m.llama.loaded.$rep.json")
      if [ "$PEER_ONLY" = 0 ]; then
        run_r1 "$m" "$WORK/$m.r1.loaded.$rep.json"; r1_runs+=("$WORK/$m.r1.loaded.$rep.json")
      fi
    done
    stop_busy
    read -r _ LL_TG[$m] < <(python3 "$WORK/util.py" llama "${llama_runs[@]}")
    if [ "$PEER_ONLY" = 0 ]; then read -r _ RL_TG[$m] < <(python3 "$WORK/util.py" r1 "${r1_runs[@]}"); fi
  fi
done

# --- report ----------------------------------------------------------------------------------
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/a:.2f}x' if a>0 else 'n/a')" "$1" "$2"; }
pct() { python3 -c "import sys; v,c=float(sys.argv[1]),float(sys.argv[2]); print(f'{100*v/c:.0f}%' if c>0 else 'n/a')" "$1" "$2"; }
ceiling() { python3 -c "import sys; bw,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{bw*1e9/b:.1f}')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/2**20:.0f} MiB')" "$1"; }

CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
[ -n "$CPU" ] || CPU="$(uname -m)"
FEATS="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_int8)$' | tr '\n' ' ' || true)"

echo "## r1serve vs llama.cpp"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $CPU, $(nproc) CPUs ($(physical_cores) physical cores), ${FEATS:-no AVX2/AVX-512}"
echo "- threads: $THREADS for both engines; best of $REPS runs each, alternating engines"
if [ -n "$ISA" ]; then
  echo "- instruction sets: $ISA only, no AVX-VNNI (r1serve --isa $ISA, R1SERVE_AVXVNNI=0; llama.cpp built for it)"
else
  echo "- instruction sets: everything the CPU has"
fi
echo "- peer: $PEER_INFO; llama-bench -t $THREADS -p 512 -n 128 -r 1"
echo "- read bandwidth (C probe, ${BW_MIB} MiB buffer): $BW1 GB/s on 1 thread, $BWT GB/s on $THREADS threads"
echo
echo "| model | llama.cpp pp512 | r1serve pp512 | ratio | llama.cpp tg128 | r1serve tg128 | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in $MODELS; do
  if [ "$PEER_ONLY" = 1 ]; then
    echo "| $m | ${L_PP[$m]} | - | - | ${L_TG[$m]} | - | - |"
  else
    echo "| $m | ${L_PP[$m]} | ${R_PP[$m]} | $(ratio "${L_PP[$m]}" "${R_PP[$m]}") | ${L_TG[$m]} | ${R_TG[$m]} | $(ratio "${L_TG[$m]}" "${R_TG[$m]}") |"
  fi
done
echo
echo "Decode ceiling = $BWT GB/s / bytes of weights read per token:"
echo
echo "| model | bytes/token | tg ceiling (t/s) | llama.cpp tg128 | % of ceiling | r1serve tg128 | % of ceiling |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in $MODELS; do
  c="$(ceiling "$BWT" "${BPT[$m]}")"
  if [ "$PEER_ONLY" = 1 ]; then
    echo "| $m | $(mib "${BPT[$m]}") | $c | ${L_TG[$m]} | $(pct "${L_TG[$m]}" "$c") | - | - |"
  else
    echo "| $m | $(mib "${BPT[$m]}") | $c | ${L_TG[$m]} | $(pct "${L_TG[$m]}" "$c") | ${R_TG[$m]} | $(pct "${R_TG[$m]}" "$c") |"
  fi
done
if [ "$LOADED" = 1 ]; then
  echo
  echo "With one competing busy thread (tg128, best of $REPS; fraction of the unloaded speed):"
  echo
  echo "| model | llama.cpp tg128 | of unloaded | r1serve tg128 | of unloaded |"
  echo "|---|---:|---:|---:|---:|"
  for m in $MODELS; do
    if [ "$PEER_ONLY" = 1 ]; then
      echo "| $m | ${LL_TG[$m]} | $(ratio "${L_TG[$m]}" "${LL_TG[$m]}") | - | - |"
    else
      echo "| $m | ${LL_TG[$m]} | $(ratio "${L_TG[$m]}" "${LL_TG[$m]}") | ${RL_TG[$m]} | $(ratio "${R_TG[$m]}" "${RL_TG[$m]}") |"
    fi
  done
fi
