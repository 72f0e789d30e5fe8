#!/usr/bin/env bash
# Build llama.cpp once, as the benchmark peer for scripts/bench-*.sh and the file maker for the
# DeepSeek GGUF checks (scripts/deepseek-gguf-vs-llamacpp.sh: quantize, imatrix, gguf-split), and the
# reference for scripts/quantize-vs-llamacpp.sh (llama-quantize) and perplexity (llama-perplexity).
#
#   scripts/build-llamacpp.sh          # prints the directory holding the binaries below
#
# Source: the llama-cpp-python==0.3.36 sdist on PyPI, which vendors llama.cpp commit 0c1e570 under
# vendor/llama.cpp (no GitHub access needed). CPU-only cmake Release build of the targets in
# TARGETS below, cached outside the repository in
#   ${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}/llama.cpp-0c1e570/{src,build,bin}
# Idempotent: when every binary exists the build is skipped. Nothing here is ever committed.
#
# Build options: curl/openssl and every GPU backend are off so it builds on a bare machine.
# The CPU code is compiled for this machine (-march=native -mtune=native) on purpose: the peer
# gets its best case here, so a ratio r1serve shows against it is not flattered by a weak peer
# build. One exception: AMX is switched off (-mno-amx-*). With AMX compiled in, this llama.cpp
# commit segfaults in ggml_backend_amx_mul_mat on the development machine (a KVM Sapphire Rapids
# guest) for both test models, so an AMX build cannot be the peer. (GGML_NATIVE=ON cannot drop
# AMX: it appends -march=native after any user flags, hence GGML_NATIVE=OFF plus the same flags
# given through CMAKE_{C,CXX}_FLAGS.) AVX-512/VNNI/BF16 stay on.
# R1SERVE_PEER_CFLAGS overrides those flags (e.g. "-march=native" to try AMX anyway).
#
# `--isa avx2` builds a second peer for x86-64 CPUs without AVX-512 (the ISA issue's
# comparison, runnable on an AVX-512 machine): GGML_NATIVE=OFF with
# -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF
# (and no -march=native), only llama-bench and llama-batched-bench, cached in
# llama.cpp-0c1e570-avx2/.
#
# Environment: R1SERVE_PEER_CACHE (cache root), R1SERVE_PEER_JOBS (make -j, default nproc).
set -euo pipefail

PEER_ISA=native
case "${1:-}" in
  "") ;;
  --isa) PEER_ISA="${2:-}" ;;
  --isa=*) PEER_ISA="${1#*=}" ;;
  *) echo "build-llamacpp: unknown argument $1 (usage: build-llamacpp.sh [--isa avx2])" >&2; exit 2 ;;
esac
case "$PEER_ISA" in native|avx2) ;; *) echo "build-llamacpp: --isa takes avx2 (got '$PEER_ISA')" >&2; exit 2 ;; esac

LLAMA_PY_VERSION=0.3.36
LLAMA_COMMIT=0c1e570
CACHE_ROOT="${R1SERVE_PEER_CACHE:-$HOME/.cache/r1serve}"
PEER_DIR="$CACHE_ROOT/llama.cpp-$LLAMA_COMMIT"
[ "$PEER_ISA" = avx2 ] && PEER_DIR="$PEER_DIR-avx2"
SRC="$PEER_DIR/src"
BUILD="$PEER_DIR/build"
BIN="$PEER_DIR/bin"
JOBS="${R1SERVE_PEER_JOBS:-$(nproc)}"
TARGETS="llama-bench llama-server llama-batched-bench llama-quantize llama-imatrix llama-gguf-split llama-perplexity"
[ "$PEER_ISA" = avx2 ] && TARGETS="llama-bench llama-batched-bench"

die() { echo "build-llamacpp: $*" >&2; exit 1; }
log() { echo "build-llamacpp: $*" >&2; }

# --- compiler flags (before the cache check: a change of flags means a rebuild) ---------------
cc_accepts() { echo 'int main(void){return 0;}' | "${CC:-gcc}" "$@" -x c - -o /dev/null >/dev/null 2>&1; }
ISA_CMAKE=()
if [ "$PEER_ISA" = avx2 ]; then
  # ggml adds -mavx2 -mfma -mf16c from these; nothing AVX-512 is compiled in.
  CFLAGS_PEER="-mtune=native"
  ISA_CMAKE=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
    -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF)
elif [ -n "${R1SERVE_PEER_CFLAGS:-}" ]; then
  CFLAGS_PEER="$R1SERVE_PEER_CFLAGS"
elif [ "$(uname -m)" = x86_64 ]; then
  CFLAGS_PEER="-march=native -mtune=native"
  if command -v "${CC:-gcc}" >/dev/null 2>&1 && cc_accepts -mno-amx-tile -mno-amx-int8 -mno-amx-bf16; then
    CFLAGS_PEER="$CFLAGS_PEER -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  fi
else
  CFLAGS_PEER="-mcpu=native"
fi
STAMP="llama.cpp $LLAMA_COMMIT (llama-cpp-python $LLAMA_PY_VERSION) cflags: $CFLAGS_PEER${ISA_CMAKE[*]:+ ${ISA_CMAKE[*]}} targets: $TARGETS"

all_built=1
for b in $TARGETS; do [ -x "$BIN/$b" ] || all_built=0; done
if [ "$all_built" = 1 ] && [ "$(cat "$BIN/BUILD_INFO" 2>/dev/null || true)" = "$STAMP" ]; then
  log "cached: $BIN ($STAMP)"
  echo "$BIN"
  exit 0
fi

# --- tools --------------------------------------------------------------------------------
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
{ command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } \
  || need_apt+=(build-essential)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
if [ "${#need_apt[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${need_apt[*]} and no apt-get to install them; install them yourself"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing ${need_apt[*]}; run as root or install them yourself"
    SUDO="sudo"
  fi
  log "installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2 \
    || die "apt-get install ${need_apt[*]} failed"
fi

PIP=""
for cand in pip3 pip "python3 -m pip"; do
  if $cand --version >/dev/null 2>&1; then PIP="$cand"; break; fi
done
[ -n "$PIP" ] || die "pip is missing: install python3-pip (Debian) or python3 with ensurepip"

mkdir -p "$PEER_DIR"

# --- source -------------------------------------------------------------------------------
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  sdist="$(ls "$PEER_DIR"/llama_cpp_python-"$LLAMA_PY_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
  if [ -z "$sdist" ]; then
    log "downloading the llama-cpp-python==$LLAMA_PY_VERSION sdist from PyPI"
    # --no-binary for this package only: pip still prepares the sdist's metadata, and with
    # :all: it would build the build backend's own dependencies (ninja, cmake) from source.
    $PIP download --quiet --no-deps --no-binary llama-cpp-python -d "$PEER_DIR" \
      "llama-cpp-python==$LLAMA_PY_VERSION" >&2 \
      || die "pip download llama-cpp-python==$LLAMA_PY_VERSION failed"
    sdist="$(ls "$PEER_DIR"/llama_cpp_python-"$LLAMA_PY_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
    [ -n "$sdist" ] || die "pip download produced no llama_cpp_python-$LLAMA_PY_VERSION.tar.gz in $PEER_DIR"
  fi
  tmp="$PEER_DIR/src.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tar -xzf "$sdist" -C "$tmp" || die "cannot unpack $sdist"
  vendored="$tmp/llama_cpp_python-$LLAMA_PY_VERSION/vendor/llama.cpp"
  [ -f "$vendored/CMakeLists.txt" ] || die "$sdist has no vendor/llama.cpp/CMakeLists.txt"
  rm -rf "$SRC"
  mv "$vendored" "$SRC"
  rm -rf "$tmp"
fi

# --- build --------------------------------------------------------------------------------
log "configuring (CPU only, Release, flags: $CFLAGS_PEER) in $BUILD"
cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF \
  -DCMAKE_C_FLAGS="$CFLAGS_PEER" -DCMAKE_CXX_FLAGS="$CFLAGS_PEER" \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF "${ISA_CMAKE[@]}" \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
  -DGGML_OPENCL=OFF -DGGML_BLAS=OFF -DGGML_RPC=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_LLGUIDANCE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  >&2 || die "cmake configure failed (see output above)"

log "building $TARGETS with -j$JOBS (10-20 minutes on 2 cores)"
# shellcheck disable=SC2086 # TARGETS is a word list on purpose
cmake --build "$BUILD" --config Release -j "$JOBS" --target $TARGETS >&2 \
  || die "cmake build failed (see output above)"

rm -f "$BIN/BUILD_INFO"
mkdir -p "$BIN"
for b in $TARGETS; do
  [ -x "$BUILD/bin/$b" ] || die "build finished but $BUILD/bin/$b is missing"
  cp "$BUILD/bin/$b" "$BIN/$b.tmp"
  mv "$BIN/$b.tmp" "$BIN/$b"
done
"$BIN/llama-bench" --help >/dev/null 2>&1 || die "$BIN/llama-bench does not run"
echo "$STAMP" >"$BIN/BUILD_INFO"
log "built: $BIN"
echo "$BIN"
