"""Converter self-test: needs numpy and gguf, so it runs in the bench venv and skips elsewhere:
  .venv-bench/bin/python -m unittest discover -s bench -p 'test_*.py'
Builds a tiny Llama-shaped base GGUF (2 heads, 1 KV head, head size 4) and PEFT adapters
by hand, converts them, and checks names, shapes, metadata and the q/k row permutation
against an explicit index map (not the converter's own formula).
"""
import json
import os
import struct
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import numpy as np
    import gguf
    sys.path.insert(0, os.path.join(HERE, "peers"))
    import peft_to_gguf_lora as conv
except ImportError:  # system python without the venv packages
    np = None

N_EMBD, N_FF, HEAD, N_HEAD, N_KV = 8, 12, 4, 2, 1
# (out, in) of each projection
SHAPES = {"self_attn.q_proj": (N_HEAD * HEAD, N_EMBD), "self_attn.k_proj": (N_KV * HEAD, N_EMBD),
          "self_attn.v_proj": (N_KV * HEAD, N_EMBD), "self_attn.o_proj": (N_EMBD, N_HEAD * HEAD),
          "mlp.gate_proj": (N_FF, N_EMBD), "mlp.up_proj": (N_FF, N_EMBD), "mlp.down_proj": (N_EMBD, N_FF)}


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def hf_rope_to_gguf_row(i, head):
    """Row i of a HF q/k weight lands on this row in GGUF: within a head, HF keeps the two rotary
    halves apart [x0..x(h/2-1), y0..], GGUF interleaves them [x0, y0, x1, y1, ...]."""
    h, j = divmod(i, head)
    half = head // 2
    return h * head + (2 * j if j < half else 2 * (j - half) + 1)


@unittest.skipIf(np is None, "needs numpy + gguf (run with .venv-bench/bin/python)")
class ConverterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.base = os.path.join(self.d, "base.gguf")
        w = gguf.GGUFWriter(self.base, "llama")
        w.add_uint32("llama.block_count", 2)
        w.add_uint32("llama.attention.head_count", N_HEAD)
        w.add_uint32("llama.attention.head_count_kv", N_KV)
        names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
        for layer in range(2):
            for m, (o, i) in SHAPES.items():
                w.add_tensor(f"blk.{layer}.{names[m]}.weight", np.zeros((o, i), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    def tearDown(self):
        self.tmp.cleanup()

    def adapter(self, name, rank=2, alpha=6, config=None, extra=None, modules=SHAPES):
        src = os.path.join(self.d, name)
        os.makedirs(src)
        rng = np.random.default_rng(0)
        t = {}
        for layer in range(2):
            for m in modules:
                o, i = SHAPES[m]
                p = f"base_model.model.model.layers.{layer}.{m}"
                t[p + ".lora_A.weight"] = rng.standard_normal((rank, i)).astype(np.float32)
                t[p + ".lora_B.weight"] = rng.standard_normal((o, rank)).astype(np.float32)
        t.update(extra or {})
        write_safetensors(os.path.join(src, "adapter_model.safetensors"), t)
        cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": [m.split(".")[1] for m in modules]}
        cfg.update(config or {})
        with open(os.path.join(src, "adapter_config.json"), "w") as f:
            json.dump(cfg, f)
        return src, t

    def test_convert(self):
        src, t = self.adapter("a")
        out = os.path.join(self.d, "a.gguf")
        self.assertEqual(conv.main([src, out, "--base", self.base, "--quiet"]), 0)
        r = gguf.GGUFReader(out)
        self.assertEqual(r.fields["general.architecture"].contents(), "llama")
        self.assertEqual(r.fields["general.type"].contents(), "adapter")
        self.assertEqual(r.fields["adapter.type"].contents(), "lora")
        self.assertEqual(r.fields["adapter.lora.alpha"].contents(), 6.0)
        got = {x.name: np.array(x.data) for x in r.tensors}
        self.assertEqual(len(got), 2 * 7 * 2)
        for x in r.tensors:
            self.assertEqual(x.tensor_type, gguf.GGMLQuantizationType.F32)
        for layer in range(2):
            p = f"base_model.model.model.layers.{layer}."
            for m, g in (("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                         ("mlp.down_proj", "ffn_down"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up")):
                np.testing.assert_array_equal(got[f"blk.{layer}.{g}.weight.lora_a"], t[p + m + ".lora_A.weight"])
                np.testing.assert_array_equal(got[f"blk.{layer}.{g}.weight.lora_b"], t[p + m + ".lora_B.weight"])
            for m, g in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k")):
                a, b = t[p + m + ".lora_A.weight"], t[p + m + ".lora_B.weight"]
                np.testing.assert_array_equal(got[f"blk.{layer}.{g}.weight.lora_a"], a)
                gb = got[f"blk.{layer}.{g}.weight.lora_b"]
                self.assertEqual(gb.shape, b.shape)
                for i in range(b.shape[0]):
                    np.testing.assert_array_equal(gb[hf_rope_to_gguf_row(i, HEAD)], b[i])
                self.assertFalse(np.array_equal(gb, b))

    def test_many_and_rslora(self):
        root = os.path.join(self.d, "peft")
        os.makedirs(root)
        for i in range(3):
            src, _ = self.adapter(f"peft/adapter-{i:03d}", rank=4, alpha=8, config={"use_rslora": True},
                                  modules=["self_attn.q_proj"])
        out = os.path.join(self.d, "g")
        self.assertEqual(conv.main(["--many", root, out, "--count", "2", "--base", self.base, "--quiet"]), 0)
        self.assertEqual(sorted(os.listdir(out)), ["adapter-000.gguf", "adapter-001.gguf"])
        r = gguf.GGUFReader(os.path.join(out, "adapter-001.gguf"))
        self.assertAlmostEqual(float(r.fields["adapter.lora.alpha"].contents()), 16.0, places=5)  # 8 * sqrt(4)

    def test_refusals(self):
        out = os.path.join(self.d, "x.gguf")
        cases = [
            self.adapter("dora", config={"use_dora": True})[0],
            self.adapter("emb", extra={"base_model.model.model.embed_tokens.lora_A.weight": np.zeros((2, 8), np.float32)})[0],
            self.adapter("shape", extra={"base_model.model.model.layers.0.mlp.up_proj.lora_B.weight":
                                         np.zeros((5, 2), np.float32)})[0],
            self.adapter("alpha_pattern", config={"alpha_pattern": {"q_proj": 4}})[0],
        ]
        for src in cases:
            self.assertEqual(conv.main([src, out, "--base", self.base, "--quiet"]), 1, src)


if __name__ == "__main__":
    unittest.main()
