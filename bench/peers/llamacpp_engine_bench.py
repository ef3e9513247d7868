#!/usr/bin/env python3
"""llama.cpp peer for bench/engine_bench.py: serving N concurrent requests.

Runs llama.cpp through llama-cpp-python's low-level ctypes API (llama_batch_init +
llama_decode, numpy argmax, no sampler chain). All N requests "arrive" at t = 0; request i
has the prompt ids source[(8*i + j) % len(source)], j < --prompt-tokens (source: the
--prompt-tokens-file list), and generates --gen-tokens tokens greedily, EOS ignored: the
first from the prefill logits, the others from --gen-tokens - 1 decode steps.

Base only (for each --concurrency N): ONE context with n_seq_max = N (sequence i is
request i), n_ctx = N * (prompt + gen), n_batch = N * prompt, n_ubatch 512, kv_unified
off by default (one KV stream per sequence; --kv-unified for one shared buffer), flash
attention llama.cpp's default (auto), n_threads = n_threads_batch = --threads.
  * prefill: all N prompts in ONE llama_decode call (llama.cpp splits it into ubatches of
    512 rows), logits for the last row of each prompt; each request's first token is the
    argmax of its row;
  * decode: gen - 1 steps; each step is ONE llama_decode of N rows (one per sequence, the
    sequence's last token at its next position), then the argmax of every row.
  One untimed warm-up decode (one token, then the KV cache is cleared) per context.

With --adapters-dir DIR (adapter-000.gguf, adapter-001.gguf, ... llama.cpp GGUF LoRA
files): llama.cpp applies adapters per context, not per sequence, so it cannot batch
requests that use different adapters. N = the largest --concurrency value that DIR has
adapters for (it must have at least one); the N adapters are loaded up front
(llama_adapter_lora_init, untimed), then the N requests are served one after another on one
context (n_seq_max 1, n_ctx prompt + gen): per request llama_set_adapters_lora(its adapter,
scale 1.0), clear the KV cache, prefill its prompt in one llama_decode, decode gen - 1
single-row steps. All of that is timed; request i's TTFT includes the time spent on the
requests before it.

Per request: TTFT = time from t = 0 to its first token (after its argmax); TPOT = (time
of its last token - time of its first) / (gen - 1). Per row: tokens_per_s = N * gen /
(time of the last token of all); p50 / p99 = sorted(values)[round(p * (N - 1))] (the
nearest rank, as `tessera bench-engine` computes them).

Prints ONE JSON object (see bench/README.md):
  {"engine": "llama.cpp", "version": ..., "threads": T, "system_info": ..., "prompt_tokens": 32,
   "gen_tokens": 64, "settings": {...},
   "base": [{"concurrency": N, "distinct_adapters": 0, "tokens_per_s": x, "ttft_p50_ms": ...,
             "ttft_p99_ms": ..., "tpot_p50_ms": ..., "tpot_p99_ms": ...}, ...],
   "adapters": [{"concurrency": N, "distinct_adapters": N, ...same keys...}]}   ([] without --adapters-dir)

Usage:
  .venv-bench/bin/python bench/peers/llamacpp_engine_bench.py --model M.gguf \
      --concurrency 1,4,16,32,64 --prompt-tokens 32 --gen-tokens 64 [--adapters-dir DIR] --threads 2 --json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time

import numpy as np

import llama_cpp as L

try:  # llama-cpp-python routes llama.cpp's log through this module; quiet by default.
    from llama_cpp import _logger as _llama_logger
except Exception:  # pragma: no cover
    _llama_logger = None

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROMPT = os.path.join(os.path.dirname(HERE), "prompt_tokens_512.json")
now = time.perf_counter


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(math.floor(p * (len(s) - 1) + 0.5)))]


def row(n: int, distinct: int, ttft: list[float], tpot: list[float], tokens: int, wall: float) -> dict:
    return {
        "concurrency": n,
        "distinct_adapters": distinct,
        "tokens_per_s": round(tokens / wall, 3),
        "ttft_p50_ms": round(percentile(ttft, 0.5) * 1e3, 3),
        "ttft_p99_ms": round(percentile(ttft, 0.99) * 1e3, 3),
        "tpot_p50_ms": round(percentile(tpot, 0.5) * 1e3, 3),
        "tpot_p99_ms": round(percentile(tpot, 0.99) * 1e3, 3),
    }


def per_request(stamps: list[list[float]], t0: float):
    ttft = [s[0] - t0 for s in stamps]
    tpot = [(s[-1] - s[0]) / (len(s) - 1) if len(s) > 1 else 0.0 for s in stamps]
    end = max(s[-1] for s in stamps) - t0
    return ttft, tpot, end


def check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"llama_decode failed during {what}: rc={rc}"
                           + (" (no KV cache slot: n_ctx too small)" if rc == 1 else ""))


class Runner:
    def __init__(self, model_path: str, threads: int, n_ubatch: int, kv_unified: bool):
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(model_path.encode("utf-8"), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.threads, self.n_ubatch, self.kv_unified = threads, n_ubatch, kv_unified
        self.contexts = []  # (n_seq_max, n_ctx) actually created, for the report

    def new_context(self, n_seq: int, n_ctx: int, n_batch: int):
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = max(n_batch, 1)
        cp.n_ubatch = min(self.n_ubatch, cp.n_batch)
        cp.n_seq_max = n_seq
        cp.kv_unified = self.kv_unified
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        cp.embeddings = False
        cp.no_perf = True
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            raise RuntimeError(f"llama_init_from_model failed (n_seq_max {n_seq}, n_ctx {n_ctx})")
        self.contexts.append({"n_seq_max": n_seq, "n_ctx": int(L.llama_n_ctx(ctx)), "n_batch": cp.n_batch,
                              "n_ubatch": cp.n_ubatch})
        return ctx

    def warm_up(self, ctx, batch) -> None:
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 0, 1, 0, 1
        check(L.llama_decode(ctx, batch), "warm-up")
        L.llama_synchronize(ctx)
        L.llama_memory_clear(L.llama_get_memory(ctx), True)

    def argmax_row(self, ctx, i: int) -> int:
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,)).argmax())

    # ------------------------------------------------------------ base: N sequences batched

    def run_base(self, prompts: list[list[int]], gen: int) -> tuple[list[list[float]], float, list[int]]:
        n, p = len(prompts), len(prompts[0])
        ctx = self.new_context(n, n * (p + gen), n * p)
        batch = L.llama_batch_init(n * p, 0, 1)
        try:
            self.warm_up(ctx, batch)
            k = 0
            for s, prompt in enumerate(prompts):
                for j, tok in enumerate(prompt):
                    batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, j, 1
                    batch.seq_id[k][0] = s
                    batch.logits[k] = 1 if j == p - 1 else 0
                    k += 1
            batch.n_tokens = k
            stamps: list[list[float]] = [[] for _ in range(n)]
            last = [0] * n
            t0 = now()
            check(L.llama_decode(ctx, batch), "prefill")
            for s in range(n):
                last[s] = self.argmax_row(ctx, s * p + p - 1)
                stamps[s].append(now())
            first_ids = [last[0]]
            batch.n_tokens = n
            for s in range(n):
                batch.n_seq_id[s] = 1
                batch.seq_id[s][0] = s
                batch.logits[s] = 1
            for step in range(gen - 1):
                for s in range(n):
                    batch.token[s] = last[s]
                    batch.pos[s] = p + step
                check(L.llama_decode(ctx, batch), "decode")
                logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, self.n_vocab))
                last = logits.argmax(axis=1).tolist()
                t = now()
                for s in range(n):
                    stamps[s].append(t)
                first_ids.append(last[0])
            return stamps, t0, first_ids
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)

    # ------------------------------------------------------------ adapters: one request at a time

    def run_adapters(self, prompts: list[list[int]], gen: int, adapters: list) -> tuple[list[list[float]], float, list[int]]:
        n, p = len(prompts), len(prompts[0])
        ctx = self.new_context(1, p + gen, p)
        batch = L.llama_batch_init(p, 0, 1)
        scale = (ctypes.c_float * 1)(1.0)
        try:
            # Warm-up with an adapter set, so that the graph with LoRA nodes has been built once.
            self.set_adapter(ctx, adapters[0], scale)
            self.warm_up(ctx, batch)
            self.set_adapter(ctx, None, scale)
            mem = L.llama_get_memory(ctx)
            stamps: list[list[float]] = [[] for _ in range(n)]
            ids0: list[int] = []
            t0 = now()
            for i, prompt in enumerate(prompts):
                self.set_adapter(ctx, adapters[i], scale)
                L.llama_memory_clear(mem, True)
                for j, tok in enumerate(prompt):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j] = tok, j, 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = 1 if j == p - 1 else 0
                batch.n_tokens = p
                check(L.llama_decode(ctx, batch), f"prefill of request {i}")
                tok = self.argmax_row(ctx, p - 1)
                stamps[i].append(now())
                ids = [tok]
                batch.n_tokens = 1
                batch.logits[0] = 1
                for step in range(gen - 1):
                    batch.token[0] = tok
                    batch.pos[0] = p + step
                    check(L.llama_decode(ctx, batch), f"decode of request {i}")
                    tok = self.argmax_row(ctx, -1)
                    stamps[i].append(now())
                    ids.append(tok)
                if i == 0:
                    ids0 = ids
            self.set_adapter(ctx, None, scale)
            return stamps, t0, ids0
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)

    @staticmethod
    def set_adapter(ctx, adapter, scale) -> None:
        if adapter is None:
            rc = L.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            rc = L.llama_set_adapters_lora(ctx, (L.llama_adapter_lora_p_ctypes * 1)(adapter), 1, scale)
        if rc != 0:
            raise RuntimeError(f"llama_set_adapters_lora failed: rc={rc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,4,16,32,64")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens-file", default=DEFAULT_PROMPT, help="JSON list of ids; request i starts at 8*i")
    ap.add_argument("--adapters-dir", default=None, help="folder of adapter-NNN.gguf llama.cpp LoRA files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--kv-unified", action="store_true", help="one KV buffer shared by all sequences (default: one per sequence)")
    ap.add_argument("--skip-base", action="store_true", help="only the adapter run")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--verbose", action="store_true", help="show llama.cpp's log on stderr")
    args = ap.parse_args(argv)

    if _llama_logger is not None:
        _llama_logger.set_verbose(args.verbose)
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not levels or any(n < 1 for n in levels):
        ap.error("--concurrency needs positive integers")
    if args.prompt_tokens < 1 or args.gen_tokens < 1:
        ap.error("--prompt-tokens and --gen-tokens must be >= 1")
    with open(args.prompt_tokens_file) as f:
        source = [int(t) for t in json.load(f)]
    if not source:
        ap.error("empty prompt tokens file")

    def prompts(n: int) -> list[list[int]]:
        return [[source[(8 * i + j) % len(source)] for j in range(args.prompt_tokens)] for i in range(n)]

    adapter_files: list[str] = []
    if args.adapters_dir:
        adapter_files = sorted(os.path.join(args.adapters_dir, f) for f in os.listdir(args.adapters_dir)
                               if f.startswith("adapter-") and f.endswith(".gguf"))
        fitting = [n for n in levels if n <= len(adapter_files)]
        if not fitting:
            ap.error(f"{args.adapters_dir} has {len(adapter_files)} adapter-*.gguf files, fewer than every --concurrency value")
        n_adapters = max(fitting)

    runner = Runner(args.model, args.threads, args.n_ubatch, args.kv_unified)
    bad = [t for t in source if not 0 <= t < runner.n_vocab]
    if bad:
        ap.error(f"prompt ids outside the vocabulary (n_vocab {runner.n_vocab}): {bad[:5]}")
    gen = args.gen_tokens

    base_rows, adapter_rows, check_ids = [], [], {}
    if not args.skip_base:
        for n in levels:
            stamps, t0, ids = runner.run_base(prompts(n), gen)
            ttft, tpot, end = per_request(stamps, t0)
            base_rows.append(row(n, 0, ttft, tpot, n * gen, end))
            check_ids[f"base_{n}_request_0"] = ids
            print(f"base N={n}: {base_rows[-1]}", file=sys.stderr, flush=True)

    if adapter_files:
        n = n_adapters
        t = now()
        handles = []
        for path in adapter_files[:n]:
            h = L.llama_adapter_lora_init(runner.model, path.encode("utf-8"))
            if not h:
                raise RuntimeError(f"llama_adapter_lora_init failed for {path}")
            handles.append(h)
        load_s = now() - t
        stamps, t0, ids = runner.run_adapters(prompts(n), gen, handles)
        ttft, tpot, end = per_request(stamps, t0)
        adapter_rows.append(row(n, n, ttft, tpot, n * gen, end))
        adapter_rows[-1]["adapter_load_ms_total"] = round(load_s * 1e3, 3)  # untimed in the row; for reference
        check_ids[f"adapters_{n}_request_0"] = ids
        print(f"adapters N={n}: {adapter_rows[-1]}", file=sys.stderr, flush=True)
        for h in handles:
            L.llama_adapter_lora_free(h)

    L.llama_model_free(runner.model)
    out = {
        "engine": "llama.cpp",
        "version": f"llama-cpp-python {L.__version__}",
        "threads": args.threads,
        "system_info": L.llama_print_system_info().decode("utf-8", "replace").strip(),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": gen,
        "settings": {"kv_unified": args.kv_unified, "n_ubatch": args.n_ubatch, "flash_attn": "llama.cpp default (auto)",
                     "contexts": runner.contexts},
        "base": base_rows,
        "adapters": adapter_rows,
        "generated_token_ids": check_ids,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
