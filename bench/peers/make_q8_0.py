#!/usr/bin/env python3
"""Make a Q8_0 copy of a GGUF model (by default the Q4_1 SmolLM2-135M-Instruct benchmark model).

  .venv-bench/bin/python bench/peers/make_q8_0.py [SRC.gguf [OUT.gguf]] [--force]

SRC defaults to ~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf and OUT to
~/.cache/tessera/models/SmolLM2-135M-Instruct.Q8_0.gguf.

What it writes:

  * every 2-D tensor dequantized with gguf-py's gguf.quants.dequantize and requantized with
    gguf.quants.quantize(..., Q8_0) (tensors that already are Q8_0 go through the same round
    trip, which reproduces them bit for bit); 1-D tensors (the F32 norms) copied unchanged;
  * tensors in the same order with the same names and shapes;
  * every metadata key copied in the same order with the same type and value, except
    general.file_type, set to 7 (MOSTLY_Q8_0); the alignment is kept.

The result is the Q4_1 model's weights at 8 bits (no better than Q4_1 in quality: the 4-bit
rounding is baked in), so a benchmark compares the same function at two weight widths.
After writing, the output is read back and checked (keys, tensor names/shapes/types, and the
|Q8_0 - source| of every weight against Q8_0's rounding bound). Needs numpy and gguf (both in
.venv-bench, per bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

MODELS = os.path.expanduser("~/.cache/tessera/models")
DEFAULT_SRC = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q8_0.gguf")
FILE_TYPE_KEY = gguf.Keys.General.FILE_TYPE  # "general.file_type"
Q8_0_FILE_TYPE = int(gguf.LlamaFileType.MOSTLY_Q8_0)  # 7


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    seen_file_type = False
    for field in reader.fields.values():
        # GGUF.* are the reader's virtual header fields; the writer adds general.architecture
        # itself (first, where the source has it too).
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == FILE_TYPE_KEY:
            value, seen_file_type = Q8_0_FILE_TYPE, True
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
    if not seen_file_type:
        writer.add_file_type(Q8_0_FILE_TYPE)


def convert(src: str, out: str) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = out + ".tmp"  # renamed onto OUT once complete
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    copy_metadata(reader, writer)

    for t in reader.tensors:
        if len(t.shape) == 2:
            w = gguf.quants.dequantize(t.data, t.tensor_type)  # float32, numpy shape (rows, cols)
            q = gguf.quants.quantize(w, QT.Q8_0)  # uint8 (rows, cols / 32 * 34)
            writer.add_tensor(t.name, q, raw_dtype=QT.Q8_0)
            print(f"  {t.name:28s} {t.tensor_type.name:>5s} -> Q8_0  {tuple(int(x) for x in t.shape)}", file=sys.stderr)
        else:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)


def check(src: str, out: str) -> list[str]:
    """Problems found in OUT against SRC (empty list: OK)."""
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(out)
    problems = []
    ka = [k for k in a.fields if not k.startswith("GGUF.")]
    kb = [k for k in b.fields if not k.startswith("GGUF.")]
    if ka != kb:
        problems.append(f"metadata keys differ: {sorted(set(ka) ^ set(kb)) or 'order'}")
    for k in ka:
        if k not in b.fields:
            continue
        fa, fb = a.fields[k], b.fields[k]
        if k == FILE_TYPE_KEY:
            if fb.contents() != Q8_0_FILE_TYPE:
                problems.append(f"{k} = {fb.contents()}, want {Q8_0_FILE_TYPE}")
        elif fa.types != fb.types or fa.contents() != fb.contents():
            problems.append(f"metadata {k} differs")
    na, nb = [t.name for t in a.tensors], [t.name for t in b.tensors]
    if na != nb:
        problems.append("tensor names/order differ")
        return problems
    reencoded = same_bytes = 0
    for ta, tb in zip(a.tensors, b.tensors):
        if list(ta.shape) != list(tb.shape):
            problems.append(f"{ta.name}: shape {list(ta.shape)} -> {list(tb.shape)}")
            continue
        if len(ta.shape) != 2:
            if tb.tensor_type != ta.tensor_type or not np.array_equal(ta.data, tb.data):
                problems.append(f"{ta.name}: 1-D tensor changed")
            continue
        if tb.tensor_type != QT.Q8_0:
            problems.append(f"{ta.name}: {tb.tensor_type.name}, want Q8_0")
            continue
        wa = gguf.quants.dequantize(ta.data, ta.tensor_type).reshape(-1, 32)
        wb = gguf.quants.dequantize(tb.data, QT.Q8_0).reshape(-1, 32)
        # Q8_0 rounds w / d (d = max|w| / 127 in float32) to an int8 q but stores d as float16
        # d16, so |w - q * d16| <= d / 2 + 127 * |d - d16| (the f16 rounding alone adds up to
        # ~6% of a step), plus float32 slack.
        d = np.abs(wa).max(axis=1, keepdims=True) / 127
        d16 = np.ascontiguousarray(tb.data.reshape(-1, 34)[:, :2]).view(np.float16).astype(np.float32)
        bound = 0.5 * d + 127 * np.abs(d - d16) + 1e-6 * np.abs(wa) + 1e-30
        if np.any(np.abs(wa - wb) > bound):
            problems.append(f"{ta.name}: Q8_0 error above the rounding bound")
        if ta.tensor_type == QT.Q8_0:
            same_bytes += int(np.array_equal(ta.data, tb.data))
            reencoded += 1
    if reencoded:
        print(f"  Q8_0 source tensors reproduced bit for bit: {same_bytes}/{reencoded}", file=sys.stderr)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default=DEFAULT_SRC, help=f"source GGUF (default {DEFAULT_SRC})")
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT, help=f"output GGUF (default {DEFAULT_OUT})")
    ap.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    ap.add_argument("--no-check", action="store_true", help="skip reading the output back")
    args = ap.parse_args()

    if not os.path.isfile(args.src):
        print(f"make_q8_0: no such file: {args.src}", file=sys.stderr)
        return 2
    if os.path.abspath(args.src) == os.path.abspath(args.out):
        print("make_q8_0: output would overwrite the input", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.force:
        print(f"make_q8_0: {args.out} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    t0 = time.time()
    convert(args.src, args.out)
    print(f"wrote {args.out} in {time.time() - t0:.1f} s", file=sys.stderr)
    if not args.no_check:
        problems = check(args.src, args.out)
        for p in problems:
            print(f"make_q8_0: CHECK FAILED: {p}", file=sys.stderr)
        if problems:
            return 1
        print("check: metadata, tensor names/order/shapes and Q8_0 error bounds OK", file=sys.stderr)
    for p in (args.src, args.out):
        print(f"{os.path.getsize(p):>12d} bytes  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
