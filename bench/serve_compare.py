#!/usr/bin/env python3
"""One run, alternated: the same 32 streaming requests (8 tenants, unique ~32-token prompts,
64 greedy tokens, EOS ignored) through
  A. `tessera run-batch` in-process (no HTTP),
  B. `tessera serve` over HTTP (bench/server_bench.py, all 32 at once),
  C. llama.cpp's OpenAI server (llama-cpp-python, same GGUF), base only,
and with one rank-8 adapter on every request: Tessera serve (the adapter registered by name)
against llama.cpp's server started with the same adapter as a GGUF LoRA.
Rounds alternate A, B, C so the host's noise falls on all of them; medians are reported.

  python3 bench/serve_compare.py [--rounds 3] [--concurrency 32] [--gen-tokens 64]
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import server_bench  # noqa: E402

BIN = os.path.join(ROOT, ".build", "release", "tessera")
MODEL = os.path.expanduser("~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf")
PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
ADMIN = "tsr_serve_compare_admin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(args_list):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "server_bench.py"), *args_list], capture_output=True, text=True, timeout=1800)
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_batch(work, a, adapter_dir=None):
    prompt = server_bench.build_prompt(os.path.join(ROOT, "bench", "prompt.txt"), a.prompt_tokens)
    path = os.path.join(work, "requests.jsonl")
    with open(path, "w") as f:
        for i in range(a.concurrency):
            f.write(json.dumps({"id": i, "tenant": f"t{i % 8}", "adapter": "a8" if adapter_dir else None, "prompt": f"Log {i}. {prompt}",
                                "max_tokens": a.gen_tokens, "temperature": 0, "ignore_eos": True}) + "\n")
    args = [BIN, "run-batch", "--model", MODEL, "--threads", str(a.threads), "--requests", path, "--out", os.path.join(work, "out.jsonl")]
    if adapter_dir:
        args += ["--adapters", adapter_dir]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    m = re.search(r"([0-9.]+) tokens/s", out.stderr)
    if not m:
        raise RuntimeError(out.stderr[-2000:])
    return float(m.group(1))


class TesseraServe:
    def __init__(self, work, a):
        self.port = free_port()
        self.proc = subprocess.Popen([BIN, "serve", "--model", MODEL, "--port", str(self.port), "--threads", str(a.threads),
                                      "--data-dir", os.path.join(work, f"data-{self.port}")], env=dict(os.environ, TESSERA_ADMIN_KEY=ADMIN),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                if server_bench.list_models(url, ADMIN):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        self.url = url

    def register(self, name, path):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/v1/admin/adapters", body=json.dumps({"name": name, "path": path, "owner": None}),
                  headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-peer", action="store_true")
    a = ap.parse_args()
    info = server_bench.machine_info()
    print(f"machine: {json.dumps(info)}", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="serve-compare-")
    try:
        subprocess.run([BIN, "adapters", "synth", "--model", MODEL, "--rank", "8", "--targets", "all", "--count", "1", "--seed", "1",
                        "--out", os.path.join(work, "peft")], check=True, capture_output=True)
        adapters = os.path.join(work, "adapters")
        os.makedirs(adapters)
        shutil.move(os.path.join(work, "peft", "adapter-000"), os.path.join(adapters, "a8"))
        lora = os.path.join(work, "a8.gguf")
        if not a.skip_peer:
            subprocess.run([PY, os.path.join(ROOT, "bench", "peers", "peft_to_gguf_lora.py"), os.path.join(adapters, "a8"), lora, "--base", MODEL],
                           check=True, capture_output=True)
        common = ["--concurrency", str(a.concurrency), "--requests", str(a.concurrency), "--gen-tokens", str(a.gen_tokens),
                  "--prompt-tokens", str(a.prompt_tokens), "--unique-prompts"]
        rows = {k: [] for k in ["run-batch base", "serve base", "llama.cpp base", "run-batch adapter", "serve adapter", "llama.cpp adapter"]}
        for r in range(a.rounds):
            rows["run-batch base"].append({"tokens_per_s": run_batch(work, a)})
            s = TesseraServe(work, a)
            try:
                rows["serve base"].append(bench(["--url", s.url, "--api-key", ADMIN, "--model", os.path.splitext(os.path.basename(MODEL))[0], *common]))
                s.register("a8", os.path.join(adapters, "a8"))
                rows["serve adapter"].append(bench(["--url", s.url, "--api-key", ADMIN, "--model", "a8", *common]))
            finally:
                s.stop()
            rows["run-batch adapter"].append({"tokens_per_s": run_batch(work, a, adapters)})
            if not a.skip_peer:
                rows["llama.cpp base"].append(bench(["--start-llamacpp", MODEL, "--llamacpp-threads", str(a.threads), *common]))
                rows["llama.cpp adapter"].append(bench(["--start-llamacpp", MODEL, "--lora", lora, "--llamacpp-threads", str(a.threads), *common]))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:.1f}" for k, v in rows.items() if v), file=sys.stderr)
        summary = {}
        for k, v in rows.items():
            if not v:
                continue
            med = lambda key: statistics.median(x[key] for x in v) if all(key in x for x in v) else None
            summary[k] = {"tokens_per_s": [round(x["tokens_per_s"], 1) for x in v], "median_tokens_per_s": round(med("tokens_per_s"), 1),
                          "ttft_p50_ms": med("ttft_p50_ms"), "ttft_p99_ms": med("ttft_p99_ms"),
                          "errors": sum(x.get("errors", {}).get("count", 0) if isinstance(x.get("errors"), dict) else 0 for x in v)}
        for kind in ["base", "adapter"]:
            rb, sv = summary.get(f"run-batch {kind}"), summary.get(f"serve {kind}")
            if rb and sv:
                summary[f"serve / run-batch {kind}"] = round(sv["median_tokens_per_s"] / rb["median_tokens_per_s"], 3)
            lc = summary.get(f"llama.cpp {kind}")
            if lc and sv:
                summary[f"serve / llama.cpp {kind}"] = round(sv["median_tokens_per_s"] / lc["median_tokens_per_s"], 2)
        print(json.dumps({"machine": info, "concurrency": a.concurrency, "gen_tokens": a.gen_tokens, "prompt_tokens": a.prompt_tokens,
                          "threads": a.threads, "rounds": a.rounds, "results": summary}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
