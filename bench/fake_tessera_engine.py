#!/usr/bin/env python3
"""Stand-in for `tessera adapters synth` and `tessera bench-engine` with made-up numbers.

Used to test bench/engine_bench.py without a Tessera build:
  python3 bench/engine_bench.py --tessera bench/fake_tessera_engine.py --skip-peer
`adapters synth` writes adapter-NNN folders holding only adapter_config.json (no weights:
not convertible, so use --skip-peer). `bench-engine` checks its arguments the way the real
subcommand takes them and prints the JSON contract (bench/README.md).
"""
import argparse
import json
import os
import sys

if sys.argv[1:3] == ["adapters", "synth"]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(sys.argv[3:])
    for i in range(a.count):
        d = os.path.join(a.out, f"adapter-{i:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "r": a.rank, "lora_alpha": 2 * a.rank, "fake": True}, f)
        print(d)
    sys.exit(0)

ap = argparse.ArgumentParser()
ap.add_argument("subcommand", choices=["bench-engine"])
ap.add_argument("--model", required=True)
ap.add_argument("--concurrency", required=True)
ap.add_argument("--prompt-tokens", type=int, required=True)
ap.add_argument("--gen-tokens", type=int, required=True)
ap.add_argument("--prompt-tokens-file")
ap.add_argument("--adapters-dir")
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--json", action="store_true", required=True)
a = ap.parse_args()
levels = [int(x) for x in a.concurrency.split(",")]
n_adapters = len([n for n in os.listdir(a.adapters_dir) if n.startswith("adapter-")]) if a.adapters_dir else 0


def row(n, distinct, tps):
    return {"concurrency": n, "distinct_adapters": distinct, "tokens_per_s": tps,
            "ttft_p50_ms": 100.0 + n, "ttft_p99_ms": 120.0 + n, "tpot_p50_ms": 20.0 + n / 4, "tpot_p99_ms": 21.0 + n / 4}


print("fake tessera: log lines go to stderr", file=sys.stderr)
print(json.dumps({
    "engine": "tessera",
    "version": "fake 0.0",
    "threads": a.threads,
    "system_info": "fake",
    "base": [row(n, 0, 40.0 * n) for n in levels],
    "adapters": [row(n, n, 36.0 * n) for n in levels if n <= n_adapters],
}))
