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
echo "== deploy: alert rules, Kubernetes manifests and chart, Dockerfile lint"
scripts/test-deploy.sh
echo "== python: the openai SDK against a live server"
scripts/test-python.sh
