#!/usr/bin/env python3
"""Make a K-quant mix (Q4_K_M by default) of a GGUF model with llama.cpp's own quantizer.

  .venv-bench/bin/python bench/peers/make_k_quant.py [SRC.gguf [OUT.gguf]] [--type Q4_K_M|Q5_K_M] [--force]

SRC defaults to ~/.cache/tessera/models/SmolLM2-135M-Instruct.Q8_0.gguf (bench/peers/make_q8_0.py
writes it) and OUT to SmolLM2-135M-Instruct.<TYPE>.gguf beside it. llama_model_quantize
(llama-cpp-python, per bench/requirements.txt) requantizes every matrix as a real Q4_K_M /
Q5_K_M file would be made: K-quants where a row is a multiple of 256 weights, and llama.cpp's
fallbacks elsewhere (SmolLM2's 576-wide rows: Q5_0 / Q5_1 for Q4_K / Q5_K, Q8_0 for Q6_K; 180
of its 272 tensors). The result is the benchmark model's weights requantized, not a better model.
Prints the output's tensor types (read back with gguf-py).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import sys

MODELS = os.path.expanduser("~/.cache/tessera/models")
DEFAULT_SRC = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q8_0.gguf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", default=DEFAULT_SRC)
    ap.add_argument("out", nargs="?")
    ap.add_argument("--type", default="Q4_K_M", choices=["Q4_K_M", "Q5_K_M"])
    ap.add_argument("--force", action="store_true", help="overwrite OUT")
    args = ap.parse_args()
    out = args.out or os.path.join(os.path.dirname(args.src), f"SmolLM2-135M-Instruct.{args.type}.gguf")
    if not os.path.isfile(args.src):
        print(f"{args.src}: missing (run bench/peers/make_q8_0.py first)", file=sys.stderr)
        return 1
    if os.path.exists(out) and not args.force:
        print(f"{out}: exists (--force to overwrite)")
        return 0
    import llama_cpp
    import gguf

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args.type}")
    params.allow_requantize = True
    params.nthread = max(1, min(2, os.cpu_count() or 1))
    rc = llama_cpp.llama_model_quantize(args.src.encode(), out.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"llama_model_quantize failed ({rc})", file=sys.stderr)
        return 1
    types = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(out).tensors)
    print(f"wrote {out}: {os.path.getsize(out)} bytes; tensor types {dict(sorted(types.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
