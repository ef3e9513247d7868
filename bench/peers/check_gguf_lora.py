#!/usr/bin/env python3
"""Cross-check peft_to_gguf_lora.py numerically: llama.cpp with the converted GGUF LoRA
against Tessera with the original PEFT adapter, on the same text.

  .venv-bench/bin/python bench/peers/check_gguf_lora.py [--model M.gguf] [--tessera .build/release/tessera]

Synthesizes two adapters with `tessera adapters synth` (a strong one on q_proj,k_proj
only, where the row permutation matters most, and one on all seven projections), converts
each twice (as shipped, and without the q/k permutation as a control), then scores ~130
tokens of bench/prompt.txt teacher-forced:
  * Tessera: `tessera score --adapter PEFT_DIR` (and with the converted .gguf, which Tessera
    also reads) and without adapter;
  * llama.cpp: one llama_decode over the same token ids with and without the .gguf.
Prints mean |log-prob difference| figures. The conversion is right when llama.cpp-with-
GGUF sits as close to Tessera-with-PEFT as the two bases sit to each other (quantized
kernels differ a little), and the no-permutation control is far off. Exit status 1 if not.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import llama_cpp as L
from llama_cpp import _logger

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import peft_to_gguf_lora as conv  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("TESSERA_MODEL", DEFAULT_MODEL))
    ap.add_argument("--tessera", default=os.path.join(ROOT, ".build", "release", "tessera"))
    ap.add_argument("--chars", type=int, default=600, help="characters of bench/prompt.txt to score")
    args = ap.parse_args()
    _logger.set_verbose(False)
    text = open(os.path.join(ROOT, "bench", "prompt.txt")).read()[:args.chars]
    base = conv.BaseInfo(args.model)

    L.llama_backend_init()
    model = L.llama_model_load_from_file(args.model.encode(), L.llama_model_default_params())
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

    def tessera(adapter=None):
        cmd = [args.tessera, "score", "--model", args.model, "--threads", "1", "--text", text, "--json"]
        if adapter:
            cmd += ["--adapter", adapter]
        o = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        return o["token_ids"], np.array(o["logprobs"])

    def llama(ids, adapter=None):
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = max(256, len(ids))
        cp.n_threads = cp.n_threads_batch = 1
        ctx = L.llama_init_from_model(model, cp)
        if adapter:
            ad = L.llama_adapter_lora_init(model, adapter.encode())
            if not ad:
                raise RuntimeError(f"llama.cpp refused {adapter}")
            rc = L.llama_set_adapters_lora(ctx, (L.llama_adapter_lora_p_ctypes * 1)(ad), 1, (ctypes.c_float * 1)(1.0))
            assert rc == 0
        b = L.llama_batch_init(len(ids), 0, 1)
        for i, t in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, i, 1, 1
            b.seq_id[i][0] = 0
        b.n_tokens = len(ids)
        assert L.llama_decode(ctx, b) == 0
        lg = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(len(ids), n_vocab)).astype(np.float64)
        L.llama_batch_free(b)
        L.llama_free(ctx)
        lg -= lg.max(1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
        return np.array([lp[i, ids[i + 1]] for i in range(len(ids) - 1)])

    ok = True
    with tempfile.TemporaryDirectory() as d:
        cases = {"qk": ("q_proj,k_proj", "512"), "all": ("all", "64")}
        for name, (targets, alpha) in cases.items():
            subprocess.run([args.tessera, "adapters", "synth", "--model", args.model, "--rank", "8", "--alpha", alpha,
                            "--targets", targets, "--count", "1", "--seed", "7", "--out", os.path.join(d, name)],
                           check=True, capture_output=True)
            src = os.path.join(d, name, "adapter-000")
            conv.convert(src, os.path.join(d, name + ".gguf"), base, quiet=True)
            keep = conv.permute_rows
            conv.permute_rows = lambda w, n: w
            conv.convert(src, os.path.join(d, name + "-noperm.gguf"), base, quiet=True)
            conv.permute_rows = keep

        ids, t_base = tessera()
        l_base = llama(ids)
        floor = np.abs(t_base - l_base).mean()
        print(f"{len(ids)} tokens; base model: mean |tessera - llama.cpp| = {floor:.4f} nats (kernel differences)")
        for name, (targets, alpha) in cases.items():
            src = os.path.join(d, name, "adapter-000")
            _, t_peft = tessera(src)
            _, t_gguf = tessera(os.path.join(d, name + ".gguf"))
            l_gguf = llama(ids, os.path.join(d, name + ".gguf"))
            l_nop = llama(ids, os.path.join(d, name + "-noperm.gguf"))
            good = np.abs(l_gguf - t_peft).mean()
            bad = np.abs(l_nop - t_peft).mean()
            print(f"adapter {name} (targets {targets}, r 8, alpha {alpha}): effect on tessera "
                  f"{np.abs(t_peft - t_base).mean():.4f}, on llama.cpp {np.abs(l_gguf - l_base).mean():.4f}; "
                  f"|llama.cpp+gguf - tessera+peft| {good:.4f}; control without q/k permutation {bad:.4f}; "
                  f"|tessera+gguf - tessera+peft| {np.abs(t_gguf - t_peft).mean():.5f}")
            if good > 2 * floor + 0.02 or (name == "qk" and bad < 3 * good):
                ok = False
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
