#!/usr/bin/env python3
"""Stand-in for `tessera bench-model` that prints the JSON contract with made-up numbers.

Used to test bench/model_bench.py without a Tessera build:
  python3 bench/model_bench.py --tessera bench/fake_tessera.py --skip-peer
Checks its arguments the way the real subcommand is expected to take them.
"""
import argparse
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("subcommand", choices=["bench-model"])
ap.add_argument("--model", required=True)
ap.add_argument("--prompt-tokens-file", required=True)
ap.add_argument("--gen-tokens", type=int, required=True)
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--runs", type=int, required=True)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--json", action="store_true", required=True)
a = ap.parse_args()
with open(a.prompt_tokens_file) as f:
    n_prompt = len(json.load(f))
print("fake tessera: log lines go to stderr", file=sys.stderr)
print(json.dumps({
    "engine": "tessera",
    "version": "fake 0.0",
    "threads": a.threads,
    "prompt_tokens": n_prompt,
    "gen_tokens": a.gen_tokens,
    "prefill_tokens_per_s": [500.0 * a.threads + i for i in range(a.runs)],
    "decode_tokens_per_s": [(50.0 * a.threads - i) * a.batch for i in range(a.runs)],
    "peak_rss_bytes": 123_000_000,
}))
