#!/usr/bin/env python3
"""Convert a PEFT LoRA adapter directory into a llama.cpp GGUF LoRA file.

  .venv-bench/bin/python bench/peers/peft_to_gguf_lora.py SRC_DIR OUT.gguf --base BASE.gguf
  .venv-bench/bin/python bench/peers/peft_to_gguf_lora.py --many PEFT_ROOT OUT_DIR --base BASE.gguf [--count N]

Writes what llama.cpp's convert_lora_to_gguf.py writes for a Llama-architecture adapter,
without torch or transformers:

  * metadata: general.architecture (copied from the base GGUF, "llama" for SmolLM2),
    general.type "adapter", adapter.type "lora", adapter.lora.alpha (float32 = lora_alpha;
    for use_rslora, lora_alpha * sqrt(r) so that llama.cpp's alpha / r equals PEFT's
    lora_alpha / sqrt(r));
  * tensors blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight.lora_a
    and .lora_b, F32; lora_a has numpy shape (r, in) and lora_b (out, r), i.e. PEFT's own
    lora_A (r x in) and lora_B (out x r) layouts (GGUF ne = [in, r] and [r, out]);
  * the rotary q/k row permutation that convert_hf_to_gguf.py applies to the base
    attn_q / attn_k weights, applied to the rows of lora_b of q_proj (n_head) and of
    k_proj (n_head_kv):
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    so that B @ A lands on the same (permuted) output rows as the base weight.
    n_head / n_head_kv are read from the base GGUF ({arch}.attention.head_count[_kv]).

Every adapter tensor is checked against the base GGUF's tensor shapes. Refused: DoRA,
alpha_pattern, bias, modules_to_save / embed_tokens / lm_head tensors, unknown keys.
Reads safetensors itself (F32, F16, BF16), so only `gguf` and `numpy` are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np

import gguf

# PEFT module name -> llama.cpp tensor name (inside blk.N.)
TARGETS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

KEY_RE = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
    r"\.lora_([AB])(?:\.default)?\.weight$"
)


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------- safetensors (no torch, bf16 too)

def read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        raw = data[base + b:base + e]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F64":
            a = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        else:
            raise ConvertError(f"{path}: tensor {name} has unsupported dtype {dt}")
        out[name] = np.ascontiguousarray(a.reshape(shape), dtype=np.float32)
    return out


# ---------------------------------------------------------------- base model facts

class BaseInfo:
    def __init__(self, path: str):
        r = gguf.GGUFReader(path)

        def field(key, default=None):
            f = r.fields.get(key)
            return default if f is None else f.contents()

        self.arch = field("general.architecture")
        if self.arch is None:
            raise ConvertError(f"{path}: no general.architecture")
        self.n_head = int(field(f"{self.arch}.attention.head_count"))
        self.n_head_kv = int(field(f"{self.arch}.attention.head_count_kv", self.n_head))
        self.n_layer = int(field(f"{self.arch}.block_count"))
        # GGUF ne order: [in, out]
        self.shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output (row) dimension."""
    if w.shape[0] % (2 * n_head):
        raise ConvertError(f"cannot permute {w.shape[0]} rows over {n_head} heads")
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------- conversion

def convert(src_dir: str, out_path: str, base: BaseInfo, quiet: bool = False) -> dict:
    with open(os.path.join(src_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConvertError(f"{src_dir}: peft_type {cfg.get('peft_type')!r} is not LORA")
    if cfg.get("use_dora"):
        raise ConvertError(f"{src_dir}: DoRA adapters are not supported by llama.cpp")
    if cfg.get("alpha_pattern"):
        raise ConvertError(f"{src_dir}: alpha_pattern (per-module alpha) has no GGUF LoRA equivalent")
    if cfg.get("bias", "none") != "none":
        raise ConvertError(f"{src_dir}: bias {cfg.get('bias')!r} is not supported")
    if cfg.get("fan_in_fan_out"):
        raise ConvertError(f"{src_dir}: fan_in_fan_out adapters (Conv1D layouts) are not supported")
    rank = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", rank))
    if cfg.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)  # llama.cpp scales by alpha / r

    st = os.path.join(src_dir, "adapter_model.safetensors")
    if not os.path.isfile(st):
        raise ConvertError(f"{src_dir}: no adapter_model.safetensors (adapter_model.bin is not supported)")
    tensors = read_safetensors(st)

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, w in tensors.items():
        m = KEY_RE.match(key)
        if not m:
            raise ConvertError(f"{src_dir}: unsupported tensor {key!r}")
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        pairs.setdefault((layer, module), {})[ab] = w

    writer = gguf.GGUFWriter(out_path, base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)

    count = 0
    for (layer, module) in sorted(pairs):
        ab = pairs[(layer, module)]
        if set(ab) != {"A", "B"}:
            raise ConvertError(f"{src_dir}: layer {layer} {module} lacks lora_{'B' if 'A' in ab else 'A'}")
        a, b = ab["A"], ab["B"]
        name = f"blk.{layer}.{TARGETS[module]}.weight"
        if name not in base.shapes:
            raise ConvertError(f"{src_dir}: base model has no tensor {name}")
        n_in, n_out = base.shapes[name][0], base.shapes[name][1]
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape != (r, n_in) or b.shape != (n_out, r):
            raise ConvertError(f"{src_dir}: {name}: lora_A {a.shape} / lora_B {b.shape} do not fit base "
                               f"(out {n_out}, in {n_in})")
        if module == "self_attn.q_proj":
            b = permute_rows(b, base.n_head)
        elif module == "self_attn.k_proj":
            b = permute_rows(b, base.n_head_kv)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
        count += 1

    if count == 0:
        raise ConvertError(f"{src_dir}: no LoRA tensors")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = {"src": src_dir, "out": out_path, "rank": rank, "alpha": alpha, "pairs": count}
    if not quiet:
        print(f"{src_dir} -> {out_path}: {count} lora pairs, r {rank}, alpha {alpha:g}", file=sys.stderr)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="PEFT adapter directory (with --many: a folder of adapter-NNN directories)")
    ap.add_argument("out", help="output .gguf (with --many: output folder for adapter-NNN.gguf)")
    ap.add_argument("--base", required=True, help="the base model GGUF the adapter is for")
    ap.add_argument("--many", action="store_true", help="convert every adapter-* directory under SRC")
    ap.add_argument("--count", type=int, default=None, help="with --many: only the first COUNT (sorted by name)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    try:
        base = BaseInfo(args.base)
        if not args.many:
            convert(args.src, args.out, base, args.quiet)
            return 0
        names = sorted(n for n in os.listdir(args.src)
                       if n.startswith("adapter-") and os.path.isdir(os.path.join(args.src, n)))
        if args.count is not None:
            if len(names) < args.count:
                raise ConvertError(f"{args.src} has {len(names)} adapter-* directories, asked for {args.count}")
            names = names[:args.count]
        if not names:
            raise ConvertError(f"{args.src} has no adapter-* directories")
        os.makedirs(args.out, exist_ok=True)
        for n in names:
            convert(os.path.join(args.src, n), os.path.join(args.out, n + ".gguf"), base, args.quiet)
        if args.quiet:
            print(f"converted {len(names)} adapters into {args.out}", file=sys.stderr)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
