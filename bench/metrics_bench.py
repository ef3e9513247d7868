#!/usr/bin/env python3
"""How long `GET /metrics` takes with many tenants and adapters (the endpoint picker of the
Kubernetes inference gateway scrapes every 50 ms, so it must answer in well under 1 ms).

Starts `tessera serve` (release build by default) on 127.0.0.1 with an empty data directory,
adds --tenants tenants, registers --adapters shared rank-1 q_proj adapters (synthesized), has
each tenant make one request on its own adapter (so the per-tenant and per-adapter series
exist), then times --scrapes sequential scrapes over one keep-alive connection. Prints the
machine and one JSON object: the body size, series count, and client-side p50/p99/max in ms
(loopback HTTP included)."""
import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "tessera"))
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--adapters", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=2000)
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cpus, {platform.platform()}", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="tessera-metrics-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin = "tsr_metrics_bench_admin"
    subprocess.run([a.bin, "adapters", "synth", "--model", a.model, "--rank", "1", "--targets", "q_proj", "--count", str(a.adapters),
                    "--out", os.path.join(work, "adapters")], check=True, capture_output=True)
    proc = subprocess.Popen([a.bin, "serve", "--model", a.model, "--port", str(port), "--data-dir", os.path.join(work, "data"),
                             "--max-adapters", "64"], env=dict(os.environ, TESSERA_ADMIN_KEY=admin),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call(method, path, body=None, key=admin):
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()

        for _ in range(600):
            try:
                if call("GET", "/health")[0] == 200:
                    break
            except OSError:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.1)
        names = sorted(os.listdir(os.path.join(work, "adapters")))
        for n in names:
            status, body = call("POST", "/v1/admin/adapters", {"name": n, "path": os.path.join(work, "adapters", n), "owner": None})
            assert status == 200, body
        keys = []
        for i in range(a.tenants):
            out = subprocess.run([a.bin, "tenants", "add", f"tenant-{i:03d}", "--json", "--data-dir", os.path.join(work, "data")],
                                 check=True, capture_output=True, text=True).stdout
            keys.append(json.loads(out)["api_key"])
        for i, k in enumerate(keys):
            status, body = call("POST", "/v1/completions", {"model": names[i % len(names)], "prompt": "hi", "max_tokens": 2}, key=k)
            assert status == 200, body
        times = []
        size = 0
        series = 0
        for _ in range(a.scrapes):
            t = time.perf_counter()
            status, body = call("GET", "/metrics")
            times.append((time.perf_counter() - t) * 1000)
            size = len(body)
        series = sum(1 for l in body.decode().splitlines() if l and not l.startswith("#"))
        times.sort()
        pick = lambda p: times[round(p * (len(times) - 1))]
        print(json.dumps({"tenants": a.tenants, "adapters_registered": a.adapters, "scrapes": a.scrapes, "body_bytes": size,
                          "series": series, "p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3), "max_ms": round(times[-1], 3)}))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
