#!/usr/bin/env python3
"""Write crates/r1-model/tests/data/iq-dequant-real.{safetensors,json}: blocks of real tensors
that llama-quantize wrote, one tensor per llama.cpp i-quant type, with gguf-py's dequantization
of them (`gguf.quants.dequantize`). `tests/quant_iq.rs` checks r1serve's dequantizer against
them bit for bit. The random blocks of `gen-iq-fixtures.py` reach every code path; these show
the grids and scales as llama-quantize (with an importance matrix) really fills them.
Remaking them gives the same bytes (the whole files differ only in the imatrix path that
llama-quantize records in their metadata).

The GGUF files come from scripts/make-iq-real-fixtures.sh (llama.cpp's llama-imatrix and
llama-quantize on the shared fixture small1-f16.gguf); that script runs this one.

Usage: python scripts/gen-iq-real-fixtures.py DIR   (DIR holds small1-<FTYPE>.gguf)
Needs the gguf and numpy packages (gguf==0.19.0 made the committed fixture).
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from importlib import import_module  # noqa: E402

write_safetensors = import_module("gen-iq-fixtures").write_safetensors

OUT = Path(__file__).resolve().parent.parent / "crates/r1-model/tests/data"
# tensor type -> the llama-quantize file type whose file holds it (IQ2_S's own ftype puts
# IQ2_XS in every tensor of this small model; IQ2_M uses IQ2_S)
SOURCES = [
    (T.IQ1_S, "IQ1_S"),
    (T.IQ1_M, "IQ1_M"),
    (T.IQ2_XXS, "IQ2_XXS"),
    (T.IQ2_XS, "IQ2_XS"),
    (T.IQ2_S, "IQ2_M"),
    (T.IQ3_XXS, "IQ3_XXS"),
    (T.IQ3_S, "IQ3_S"),
    (T.IQ4_NL, "IQ4_NL"),
    (T.IQ4_XS, "IQ4_XS"),
]
# elements taken from the start of the tensor and as many from its middle
RUN = 2048


def pick(reader: GGUFReader, ty: T):
    """The first routed-expert tensor of type `ty` (the bulk of an R1 file), else the first
    tensor of that type."""
    of_type = [t for t in reader.tensors if t.tensor_type == ty]
    if not of_type:
        raise SystemExit(f"no tensor of type {ty.name}")
    experts = [t for t in of_type if "_exps" in t.name]
    return (experts or of_type)[0]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    src = Path(sys.argv[1])
    tensors: dict[str, np.ndarray] = {}
    types = {}
    for ty, ftype in SOURCES:
        path = src / f"small1-{ftype}.gguf"
        tensor = pick(GGUFReader(path), ty)
        bs, ts = GGML_QUANT_SIZES[ty]
        blocks = np.asarray(tensor.data, dtype=np.uint8).reshape(-1, ts)
        run = RUN // bs
        mid = len(blocks) // 2
        chosen = np.concatenate([blocks[:run], blocks[mid : mid + run]])
        values = dequantize(chosen.reshape(-1), ty).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(values)), ty.name
        tensors[f"{ty.name}.blocks"] = chosen
        tensors[f"{ty.name}.dequant"] = values
        types[ty.name] = {
            "ggml_type_id": int(ty),
            "file": path.name,
            "tensor": tensor.name,
            "blocks": f"0..{run} and {mid}..{mid + run} of {len(blocks)}",
            "elements": int(values.size),
        }
    versions = {p: importlib.metadata.version(p) for p in ("gguf", "numpy")}
    prov = {
        "generator": "scripts/make-iq-real-fixtures.sh (runs scripts/gen-iq-real-fixtures.py)",
        "files": "llama.cpp 0c1e570 (llama-cpp-python 0.3.36 sdist): llama-imatrix -c 128 on "
        "scripts/data/imatrix-calibration.txt, then llama-quantize --imatrix, from "
        "shared fixtures deepseek2-gguf/small1-f16.gguf",
        "reference": "gguf.quants.dequantize (gguf-py, MIT licence), following ggml's dequantize_row_iq*",
        "gguf_version": versions["gguf"],
        "numpy_version": versions["numpy"],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_safetensors(OUT / "iq-dequant-real.safetensors", tensors, {k: str(v) for k, v in prov.items()})
    js = dict(prov, tensors="<TYPE>.blocks (U8 [blocks, type_size]), <TYPE>.dequant (F32 [elements])", types=types)
    (OUT / "iq-dequant-real.json").write_text(json.dumps(js, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
