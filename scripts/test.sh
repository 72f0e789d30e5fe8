#!/usr/bin/env bash
# The project's test command (the README's second set-up command; .ci/run calls it).
# Fetches the test models if needed, then: rustfmt check, clippy with warnings as errors,
# and the whole test suite in release mode (model code is far too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."

export R1SERVE_FIXTURES="${R1SERVE_FIXTURES:-$(pwd)/../shared/fixtures}"
export R1SERVE_MODELS="${R1SERVE_MODELS:-$(pwd)/models}"
# Two cores: one cargo job at a time, tests run in parallel inside it.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

scripts/fetch-models.sh "$R1SERVE_MODELS"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test --release"
cargo test --workspace --release -- --test-threads="${TEST_THREADS:-2}"
# Kernels and models again at each lower instruction set this CPU allows (same binaries,
# capped by R1SERVE_ISA): results must not depend on the ISA, and AVX2-only or SIMD-less
# machines must be green too. R1SERVE_TEST_ISA_CAPS overrides the list ("" skips).
if [ -z "${R1SERVE_TEST_ISA_CAPS+x}" ]; then
  flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
  has() { [[ " $flags " == *" $1 "* ]]; }
  R1SERVE_TEST_ISA_CAPS=""
  if has avx512f && has avx512bw && has avx512vl && has avx512_vnni && has avx2; then
    R1SERVE_TEST_ISA_CAPS="avx2 scalar"
  elif has avx2 && has fma && has f16c; then
    R1SERVE_TEST_ISA_CAPS="scalar"
  fi
fi
for cap in $R1SERVE_TEST_ISA_CAPS; do
  echo "== cargo test --release -p r1-model at R1SERVE_ISA=$cap"
  R1SERVE_ISA="$cap" cargo test --release -p r1-model -- --test-threads="${TEST_THREADS:-2}"
done
# aarch64: the model crate builds for ARM and its unit tests pass there under qemu-user (the
# portable kernels; x86-only tests are compiled out). Skipped where the Rust target, a cross
# linker or qemu is missing (.ci/run installs them).
if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu &&
  command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
  echo "== aarch64: cargo test -p r1-model --lib under qemu-user"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
    cargo test --release --target aarch64-unknown-linux-gnu -p r1-model --lib -- --test-threads=2
else
  echo "== aarch64: SKIP (needs rustup target add aarch64-unknown-linux-gnu and apt install" \
    "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
fi
echo "== deploy: alert rules, Kubernetes manifests and chart, Dockerfile lint"
scripts/test-deploy.sh
echo "== python: the openai SDK against a live server"
scripts/test-python.sh
echo "== web UI: Chromium through Playwright against live servers"
scripts/test-webui.sh
