#!/usr/bin/env python3
"""Write crates/r1-model/tests/data/iq-dequant.{safetensors,json}: random blocks of every
llama.cpp i-quant type and gguf-py's dequantization of them (`gguf.quants.dequantize`, which
follows ggml's `dequantize_row_iq*`). `tests/quant_iq.rs` checks r1serve's dequantizer
against them bit for bit.

Blocks are random bytes except the f16 block scales, which are set to finite values of sane
magnitude (random scale bits would give inf/NaN, which tell nothing about the decoding).

Usage:
    python3 -m venv /tmp/venv-gguf && /tmp/venv-gguf/bin/pip install gguf numpy
    /tmp/venv-gguf/bin/python scripts/gen-iq-fixtures.py
"""

import importlib.metadata
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

SEED = 20250607
OUT = Path(__file__).resolve().parent.parent / "crates/r1-model/tests/data"
# (type, number of blocks): 4096 elements of each type keeps the fixture small (~170 KB)
TYPES = [
    (T.IQ2_XXS, 16),
    (T.IQ2_XS, 16),
    (T.IQ2_S, 16),
    (T.IQ3_XXS, 16),
    (T.IQ3_S, 16),
    (T.IQ1_S, 16),
    (T.IQ1_M, 16),
    (T.IQ4_NL, 128),
    (T.IQ4_XS, 16),
]


def sane_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """n finite f16 values, magnitudes 1e-4..1e-1, either sign (as u16 bits)."""
    mag = 10.0 ** rng.uniform(-4, -1, n)
    sign = np.where(rng.integers(0, 2, n) == 1, -1.0, 1.0)
    return (mag * sign).astype(np.float16).view(np.uint16)


def random_blocks(rng: np.random.Generator, ty: T, n: int) -> np.ndarray:
    _, ts = GGML_QUANT_SIZES[ty]
    blocks = rng.integers(0, 256, (n, ts), dtype=np.uint8)
    d = sane_f16(rng, n)
    if ty == T.IQ1_M:
        # the f16 scale is spread over the top nibbles of the 4 u16 scale words @48
        sc = blocks[:, 48:56].copy().view(np.uint16)
        for i in range(4):
            nib = (d >> (4 * i)) & 0xF
            sc[:, i] = (sc[:, i] & 0x0FFF) | (nib << 12)
        blocks[:, 48:56] = sc.view(np.uint8)
    else:
        blocks[:, 0:2] = d.reshape(n, 1).view(np.uint8)
    return blocks


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    header: dict = {"__metadata__": meta}
    data = b""
    for name, arr in tensors.items():
        dtype = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32"}[arr.dtype]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)


def main() -> None:
    rng = np.random.default_rng(SEED)
    tensors: dict[str, np.ndarray] = {}
    types = {}
    for ty, n in TYPES:
        blocks = random_blocks(rng, ty, n)
        values = dequantize(blocks.reshape(-1), ty).astype(np.float32).reshape(-1)
        bs, _ = GGML_QUANT_SIZES[ty]
        assert values.shape == (n * bs,) and np.all(np.isfinite(values)), ty.name
        tensors[f"{ty.name}.blocks"] = blocks
        tensors[f"{ty.name}.dequant"] = values
        types[ty.name] = {"ggml_type_id": int(ty), "blocks": n, "elements": n * bs}
    versions = {p: importlib.metadata.version(p) for p in ("gguf", "numpy")}
    prov = {
        "generator": "scripts/gen-iq-fixtures.py",
        "command": "/tmp/venv-gguf/bin/python scripts/gen-iq-fixtures.py",
        "reference": "gguf.quants.dequantize (gguf-py, MIT licence), following ggml's dequantize_row_iq*",
        "gguf_version": versions["gguf"],
        "numpy_version": versions["numpy"],
        "seed": str(SEED),
        "scales": "random block bytes; f16 block scales set to finite values, |d| in 1e-4..1e-1",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_safetensors(OUT / "iq-dequant.safetensors", tensors, prov)
    js = dict(prov, seed=SEED, tensors="<TYPE>.blocks (U8 [blocks, type_size]), <TYPE>.dequant (F32 [elements])", types=types)
    (OUT / "iq-dequant.json").write_text(json.dumps(js, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
