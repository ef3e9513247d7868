#!/usr/bin/env python3
"""llama.cpp peer for bench/model_bench.py: prefill + greedy decode speed on one GGUF.

Runs llama.cpp through llama-cpp-python's low-level ctypes API (no sampler chain,
no high-level Llama object), so what is timed is llama_decode itself.

Per run (after one untimed warm-up run), with B = --batch (default 1):
  * a fresh context: n_threads = n_threads_batch = --threads, n_batch 512, n_ubatch 512;
    B = 1: n_ctx 1024 (--n-ctx), n_seq_max 1;
    B > 1: n_seq_max B, n_ctx B * (prompt + gen + 8 rounded up to 256), kv_unified false (one KV stream per
    sequence, as the engine peer); everything else llama.cpp's defaults;
  * prefill: for each sequence s = 0..B-1, the whole prompt (512 ids) as ONE llama_decode
    batch on seq id s, positions 0..511, logits for the last row only; each call is timed
    until llama_synchronize returns and the B times are summed;
  * t0[s] = argmax(sequence s's prefill logits)   (untimed);
  * decode: --gen-tokens steps; step i is ONE llama_decode of B rows, row s = (t_i[s], position
    512+i, seq id s, logits on), then t_{i+1}[s] = argmax(row s). EOS is ignored. The timer
    covers all steps, including the argmax (numpy, ~30 us per 49152 logits) and the batch fill.
  * prefill_tokens_per_s = B * 512 / prefill seconds; decode_tokens_per_s = B * gen / decode seconds.

Usage:
  python bench/peers/llamacpp_model_bench.py --model M.gguf \
      --prompt-tokens-file bench/prompt_tokens_512.json --gen-tokens 128 --threads 2 --runs 3 [--batch 4] --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

import llama_cpp as L

try:  # llama-cpp-python routes llama.cpp's log through this module; quiet by default.
    from llama_cpp import _logger as _llama_logger
except Exception:  # pragma: no cover - older/newer layouts
    _llama_logger = None


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB. Includes the Python interpreter, numpy and the
    # mmapped model pages that were touched.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def fill_batch(batch, tokens, start_pos: int, last_logits_only: bool = True, seq: int = 0) -> None:
    n = len(tokens)
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = start_pos + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if (i == n - 1 or not last_logits_only) else 0
    batch.n_tokens = n


def check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"llama_decode failed during {what}: rc={rc}")


class Runner:
    def __init__(self, model_path: str, threads: int, n_ctx: int, n_batch: int, n_ubatch: int):
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(model_path.encode("utf-8"), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.threads = threads
        self.n_ctx, self.n_batch, self.n_ubatch = n_ctx, n_batch, n_ubatch

    def close(self) -> None:
        L.llama_model_free(self.model)

    def new_context(self, n_seq: int, n_ctx: int):
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_ubatch
        cp.n_seq_max = n_seq
        cp.kv_unified = False
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        cp.embeddings = False
        cp.no_perf = True
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            raise RuntimeError(f"llama_init_from_model failed (n_seq_max {n_seq}, n_ctx {n_ctx})")
        self.settings = {"n_seq_max": n_seq, "n_ctx": int(L.llama_n_ctx(ctx)), "n_batch": cp.n_batch,
                         "n_ubatch": cp.n_ubatch, "kv_unified": False}
        return ctx

    def argmax_last(self, ctx) -> int:
        ptr = L.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def argmax_rows(self, ctx, n: int) -> list[int]:
        logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, self.n_vocab))
        return logits.argmax(axis=1).tolist()

    def run_once(self, prompt: list[int], gen_tokens: int, n_seq: int = 1):
        """Returns (prefill_seconds, decode_seconds, ids fed to decode per sequence)."""
        p = len(prompt)
        # llama.cpp splits n_ctx evenly over the sequences and pads each to 256 cells; ask for that up front
        n_ctx = self.n_ctx if n_seq == 1 else n_seq * (-(-(p + gen_tokens + 8) // 256) * 256)
        ctx = self.new_context(n_seq, n_ctx)
        pbatch = L.llama_batch_init(p, 0, 1)
        dbatch = L.llama_batch_init(n_seq, 0, 1)
        try:
            last = [0] * n_seq
            prefill_s = 0.0
            for s in range(n_seq):
                fill_batch(pbatch, prompt, 0, seq=s)
                t0 = time.perf_counter()
                check(L.llama_decode(ctx, pbatch), f"prefill of sequence {s}")
                L.llama_synchronize(ctx)
                prefill_s += time.perf_counter() - t0
                last[s] = self.argmax_last(ctx)

            generated: list[list[int]] = [[] for _ in range(n_seq)]
            dbatch.n_tokens = n_seq
            for s in range(n_seq):
                dbatch.n_seq_id[s] = 1
                dbatch.seq_id[s][0] = s
                dbatch.logits[s] = 1
            pos = p
            t2 = time.perf_counter()
            for _ in range(gen_tokens):
                for s in range(n_seq):
                    generated[s].append(last[s])
                    dbatch.token[s] = last[s]
                    dbatch.pos[s] = pos
                check(L.llama_decode(ctx, dbatch), "decode")
                pos += 1
                # reading the logits synchronizes
                last = [self.argmax_last(ctx)] if n_seq == 1 else self.argmax_rows(ctx, n_seq)
            t3 = time.perf_counter()
            return prefill_s, t3 - t2, generated
        finally:
            L.llama_batch_free(pbatch)
            L.llama_batch_free(dbatch)
            L.llama_free(ctx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens-file", required=True, help="JSON list of token ids")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1, help="sequences decoded together, one row each per step (default 1)")
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--verbose", action="store_true", help="show llama.cpp's log on stderr")
    args = ap.parse_args(argv)

    if _llama_logger is not None:
        _llama_logger.set_verbose(args.verbose)

    with open(args.prompt_tokens_file) as f:
        prompt = [int(t) for t in json.load(f)]
    if not prompt:
        ap.error("empty prompt")
    if len(prompt) > args.n_batch or len(prompt) > args.n_ubatch:
        ap.error(f"prompt of {len(prompt)} ids does not fit one batch (n_batch {args.n_batch}, n_ubatch {args.n_ubatch})")
    if args.batch < 1 or args.batch > args.n_batch:
        ap.error(f"--batch must be between 1 and n_batch ({args.n_batch})")
    if args.batch == 1 and len(prompt) + args.gen_tokens > args.n_ctx:
        ap.error(f"prompt {len(prompt)} + gen {args.gen_tokens} exceeds n_ctx {args.n_ctx}")

    runner = Runner(args.model, args.threads, args.n_ctx, args.n_batch, args.n_ubatch)
    bad = [t for t in prompt if not 0 <= t < runner.n_vocab]
    if bad:
        ap.error(f"prompt has ids outside the vocabulary (n_vocab {runner.n_vocab}): {bad[:5]}")

    b = args.batch
    if not args.no_warmup:
        runner.run_once(prompt, args.gen_tokens, b)

    prefill, decode, generated = [], [], [[]]
    for r in range(args.runs):
        tp, td, generated = runner.run_once(prompt, args.gen_tokens, b)
        prefill.append(b * len(prompt) / tp)
        decode.append(b * args.gen_tokens / td)
        if not args.json:
            print(f"run {r + 1}: prefill {b}x{len(prompt)} tok in {tp * 1e3:.1f} ms = {prefill[-1]:.1f} tok/s; "
                  f"decode {b}x{args.gen_tokens} tok in {td * 1e3:.1f} ms = {decode[-1]:.1f} tok/s", file=sys.stderr)
    runner.close()

    out = {
        "engine": "llama.cpp",
        "version": f"llama-cpp-python {L.__version__}",
        "threads": args.threads,
        "batch": b,
        "prompt_tokens": len(prompt),
        "gen_tokens": args.gen_tokens,
        "prefill_tokens_per_s": [round(x, 3) for x in prefill],
        "decode_tokens_per_s": [round(x, 3) for x in decode],
        "peak_rss_bytes": peak_rss_bytes(),
        "system_info": L.llama_print_system_info().decode("utf-8", "replace").strip(),
        "settings": runner.settings,
        # sequence 0's ids of the last run; with --batch > 1, whether every sequence fed the same ids
        "generated_token_ids": generated[0],
    }
    if b > 1:
        out["sequences_agree"] = all(g == generated[0] for g in generated)
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
