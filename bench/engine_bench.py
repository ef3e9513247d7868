#!/usr/bin/env python3
"""Engine benchmark: multi-tenant serving, Tessera against llama.cpp, in the same run.

Steps (one after the other, never two engines at the same time):

  1. <tessera> adapters synth --model M --rank 8 --targets all --count 64 --seed 1 --out WORK/peft
     (64 random rank-8 PEFT adapters on q/k/v/o/gate/up/down; more if a concurrency is larger)
  2. .venv-bench/bin/python bench/peers/peft_to_gguf_lora.py --many WORK/peft WORK/gguf --count K --base M
     (the first K of them as llama.cpp GGUF LoRA files; K = the largest concurrency <= --peer-adapters)
  3. <tessera> bench-engine --model M --concurrency C --prompt-tokens 32 --gen-tokens 64
         --adapters-dir WORK/peft --threads T --json
  4. .venv-bench/bin/python bench/peers/llamacpp_engine_bench.py (same arguments, --adapters-dir WORK/gguf)

Each engine prints ONE JSON object (contract in bench/README.md). Then prints markdown
tables: base-only rows per concurrency with the tessera/llama.cpp throughput ratio, and the
adapter rows: Tessera with N distinct adapters against its own base at N (target >= 0.80)
and against llama.cpp serving K adapters one request after another (target >= 3.0).
--record appends them to bench/RESULTS.md.

Runs with any python3 (standard library only); the peer runs in the bench venv.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model_bench import (  # noqa: E402  (reuse the model benchmark's helpers)
    DEFAULT_PEER_PY, DEFAULT_TESSERA, RESULTS, ROOT, default_model_path, ensure_tessera, extract_json_object, machine_info,
    machine_line,
)

PEER_SCRIPT = os.path.join(HERE, "peers", "llamacpp_engine_bench.py")
CONVERTER = os.path.join(HERE, "peers", "peft_to_gguf_lora.py")
DEFAULT_PROMPT = os.path.join(HERE, "prompt_tokens_512.json")

ROW_NUMBERS = ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")
TARGET_OWN_BASE = 0.80
TARGET_VS_LLAMA = 3.0


# ---------------------------------------------------------------- contract

def _check_row(r, who: str, where: str, need_distinct: bool) -> None:
    if not isinstance(r, dict):
        raise ValueError(f"{who}: {where} row is not an object: {r!r}")
    c = r.get("concurrency")
    if not isinstance(c, int) or isinstance(c, bool) or c < 1:
        raise ValueError(f"{who}: {where} row has no positive int 'concurrency': {r!r}")
    if need_distinct or "distinct_adapters" in r:
        d = r.get("distinct_adapters")
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise ValueError(f"{who}: {where} row needs an int 'distinct_adapters': {r!r}")
    for k in ROW_NUMBERS:
        v = r.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k == "tokens_per_s" and v <= 0):
            raise ValueError(f"{who}: {where} row (concurrency {c}) key {k!r} should be a "
                             f"{'positive' if k == 'tokens_per_s' else 'non-negative'} number, got {v!r}")


def validate(obj, who: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{who}: stdout JSON is not an object")
    for k, t in (("engine", str), ("threads", int), ("base", list), ("adapters", list)):
        if k not in obj:
            raise ValueError(f"{who}: JSON lacks key {k!r}")
        if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
            raise ValueError(f"{who}: key {k!r} should be {t.__name__}, got {obj[k]!r}")
    for r in obj["base"]:
        _check_row(r, who, "base", need_distinct=False)
    for r in obj["adapters"]:
        _check_row(r, who, "adapters", need_distinct=True)
    return obj


def parse_engine_json(stdout: str, who: str) -> dict:
    obj = extract_json_object(stdout, who)
    return validate(obj, who)


def run(cmd: list[str], who: str, timeout: float) -> str:
    print(f"$ {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{who} exited {p.returncode}\n--- stderr (tail) ---\n{p.stderr[-3000:]}"
                           f"\n--- stdout (tail) ---\n{p.stdout[-1000:]}")
    return p.stdout


# ---------------------------------------------------------------- tables

def _by_n(rows) -> dict[int, dict]:
    return {r["concurrency"]: r for r in rows or []}


def _cells(r: dict) -> str:
    return (f"{r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | "
            f"{r['tpot_p50_ms']:.1f} | {r['tpot_p99_ms']:.1f}")


def _ratio(a, b) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def _verdict(x, target) -> str:
    return "" if x is None else (" ✓" if x >= target else " ✗")


def make_tables(info: dict, res: dict, levels: list[int], args) -> str:
    t, l = res.get("tessera"), res.get("llama.cpp")
    t_ok, l_ok = isinstance(t, dict), isinstance(l, dict)
    tb, lb = _by_n(t["base"] if t_ok else []), _by_n(l["base"] if l_ok else [])
    ta, la = _by_n(t["adapters"] if t_ok else []), (l["adapters"] if l_ok else [])
    lines = [
        machine_line(info),
        "",
        f"Model `{os.path.basename(args.model)}` · {args.threads} threads · N requests arrive at once, "
        f"each {args.prompt_tokens} prompt tokens + {args.gen_tokens} generated (greedy, EOS ignored) · "
        "tok/s = all generated tokens / time to the last one · TTFT from arrival · TPOT = mean gap between a request's tokens · "
        "one run each",
        "",
        "**Base model only** (llama.cpp: one context, N sequences, every decode step one batch of N rows)",
        "",
        "| N | engine | tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in levels:
        for eng, rows, r_raw in (("tessera", tb, t), ("llama.cpp", lb, l)):
            if isinstance(r_raw, str):
                lines.append(f"| {n} | {eng} | {r_raw} | | | | |")
            elif n in rows:
                lines.append(f"| {n} | {eng} | {_cells(rows[n])} |")
        if n in tb and n in lb:
            lines.append(f"| {n} | **tessera / llama.cpp** | **{_ratio(tb[n]['tokens_per_s'], lb[n]['tokens_per_s'])}** | | | | |")

    lines += [
        "",
        "**N distinct LoRA adapters** (rank 8, all 7 projections; request i uses adapter i). "
        "llama.cpp applies adapters per context, so it serves the requests one after another, switching "
        "adapters between them; a request's TTFT includes waiting for the ones before it.",
        "",
        "| N | engine | tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | vs own base at N "
        f"(≥ {TARGET_OWN_BASE:.2f}) | vs llama.cpp, adapters (≥ {TARGET_VS_LLAMA:.1f}) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lref = la[-1] if la else None
    for n in levels:
        if isinstance(t, str):
            lines.append(f"| {n} | tessera | {t} | | | | | | |")
            break
        if n not in ta:
            continue
        r = ta[n]
        own = r["tokens_per_s"] / tb[n]["tokens_per_s"] if n in tb else None
        vs = r["tokens_per_s"] / lref["tokens_per_s"] if lref else None
        lines.append(f"| {n} | tessera | {_cells(r)} | "
                     f"{'—' if own is None else f'**{own:.2f}×**{_verdict(own, TARGET_OWN_BASE)}'} | "
                     f"{'—' if vs is None else f'**{vs:.2f}×**{_verdict(vs, TARGET_VS_LLAMA)}'} |")
    if isinstance(l, str):
        lines.append(f"| — | llama.cpp | {l} | | | | | | |")
    for r in la:
        own = r["tokens_per_s"] / lb[r["concurrency"]]["tokens_per_s"] if r["concurrency"] in lb else None
        lines.append(f"| {r['concurrency']} | llama.cpp (sequential) | {_cells(r)} | "
                     f"{'—' if own is None else f'{own:.2f}×'} | 1.00× |")
    lines.append("")
    notes = []
    if lref and ta:
        notes.append(f"- \"vs llama.cpp\" divides by llama.cpp's sequential throughput over its {lref['concurrency']} "
                     f"adapters ({lref['tokens_per_s']:.1f} tok/s), which does not depend on N.")
    for eng, r in (("tessera", t), ("llama.cpp", l)):
        if isinstance(r, dict):
            s = f"- {eng}: {r.get('version') or 'version not reported'}"
            if r.get("system_info"):
                s += f"; system_info: `{r['system_info']}`"
            notes.append(s)
    if l_ok and isinstance(l.get("settings"), dict):
        st = l["settings"]
        notes.append(f"- llama.cpp settings: kv_unified {str(st.get('kv_unified')).lower()}, n_ubatch {st.get('n_ubatch')}, "
                     f"flash attention {st.get('flash_attn')}; one untimed warm-up decode per context; adapters loaded before timing.")
    return "\n".join(lines + notes) + "\n"


def record(text: str, argv: list[str]) -> None:
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Benchmark results\n\nNewest last. The machines are shared and noisy: compare ratios taken in "
                    "the same run, not absolute figures across entries.\n\n")
        when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        f.write(f"## {when} · engine benchmark\n\n```\n{' '.join(shlex.quote(a) for a in argv)}\n```\n\n{text}\n")
    print(f"appended to {os.path.relpath(RESULTS, ROOT)}", file=sys.stderr)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path (default: $TESSERA_MODEL, then the cache paths)")
    ap.add_argument("--concurrency", default="1,4,16,32,64", help="comma-separated request counts (default 1,4,16,32,64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens-file", default=DEFAULT_PROMPT)
    ap.add_argument("--adapters", type=int, default=64, help="PEFT adapters to synthesize (at least the largest concurrency)")
    ap.add_argument("--peer-adapters", type=int, default=32,
                    help="llama.cpp serves the largest concurrency <= this many adapters, sequentially (default 32)")
    ap.add_argument("--tessera", default=DEFAULT_TESSERA, help="tessera binary (default .build/release/tessera; built if missing)")
    ap.add_argument("--synth-tessera", default=None, help="binary for `adapters synth` (default: --tessera)")
    ap.add_argument("--no-build", action="store_true", help="do not run swift build when the default binary is missing")
    ap.add_argument("--tessera-args", default="",
                    help="extra options for `tessera bench-engine`, e.g. \"--adapter-precision f16\"")
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PY, help="python with llama-cpp-python and gguf (default .venv-bench/bin/python)")
    ap.add_argument("--skip-peer", action="store_true", help="do not run llama.cpp (and do not convert adapters)")
    ap.add_argument("--skip-tessera", action="store_true", help="do not run tessera bench-engine (adapters are still synthesized with it)")
    ap.add_argument("--work-dir", default=None, help="keep the adapters here (default: a temporary folder, removed at the end)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine invocation")
    ap.add_argument("--record", action="store_true", help="append the tables to bench/RESULTS.md")
    ap.add_argument("--json-out", default=None, help="also write the raw engine JSON objects to this file")
    args = ap.parse_args(argv)

    if args.skip_peer and args.skip_tessera:
        ap.error("nothing to run: both --skip-peer and --skip-tessera")
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not levels or any(n < 1 for n in levels):
        ap.error("--concurrency needs positive integers")
    if args.threads < 1 or args.prompt_tokens < 1 or args.gen_tokens < 1:
        ap.error("--threads, --prompt-tokens and --gen-tokens must be >= 1")
    args.model = os.path.abspath(args.model or default_model_path())
    if not os.path.isfile(args.model):
        ap.error(f"model not found: {args.model}")
    n_synth = max(args.adapters, max(levels))
    peer_n = max([n for n in levels if n <= args.peer_adapters] or [min(levels)])

    tessera = None
    if not (args.skip_tessera and args.synth_tessera):
        tessera = ensure_tessera(args.tessera, build=not args.no_build)
    synth = args.synth_tessera or tessera
    if not args.skip_peer and not os.path.isfile(args.peer_python):
        sys.exit(f"peer python not found at {args.peer_python}; create the venv: see bench/README.md")

    info = machine_info()  # before running anything: the load average then says how busy the machine was
    work = args.work_dir or tempfile.mkdtemp(prefix="tessera-engine-bench-")
    peft, ggufs = os.path.join(work, "peft"), os.path.join(work, "gguf")
    res: dict[str, object] = {}
    failed = False
    try:
        if os.path.isdir(peft):
            shutil.rmtree(peft)
        run([synth, "adapters", "synth", "--model", args.model, "--rank", "8", "--targets", "all",
             "--count", str(n_synth), "--seed", "1", "--out", peft], "adapters synth", args.timeout)
        common = ["--model", args.model, "--concurrency", ",".join(map(str, levels)),
                  "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
                  "--prompt-tokens-file", os.path.abspath(args.prompt_tokens_file)]
        if not args.skip_tessera:
            try:
                res["tessera"] = parse_engine_json(run(
                    [tessera, "bench-engine", *common, "--adapters-dir", peft, "--threads", str(args.threads), "--json",
                     *shlex.split(args.tessera_args)],
                    "tessera", args.timeout), "tessera")
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"error: {e}", file=sys.stderr)
                res["tessera"], failed = "failed", True
        if not args.skip_peer:
            try:
                if os.path.isdir(ggufs):
                    shutil.rmtree(ggufs)
                run([args.peer_python, CONVERTER, "--many", peft, ggufs, "--count", str(peer_n), "--base", args.model,
                     "--quiet"], "peft_to_gguf_lora", args.timeout)
                res["llama.cpp"] = parse_engine_json(run(
                    [args.peer_python, PEER_SCRIPT, *common, "--adapters-dir", ggufs, "--threads", str(args.threads), "--json"],
                    "llama.cpp", args.timeout), "llama.cpp")
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"error: {e}", file=sys.stderr)
                res["llama.cpp"], failed = "failed", True
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    for eng, r in res.items():
        if isinstance(r, dict):
            if r["threads"] != args.threads:
                print(f"warning: {eng} reports threads={r['threads']}, asked for {args.threads}", file=sys.stderr)
            missing = [n for n in levels if n not in _by_n(r["base"])]
            if missing:
                print(f"warning: {eng} has no base row for concurrency {missing}", file=sys.stderr)

    text = make_tables(info, res, levels, args)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=2)
    if args.record:
        record(text, ["python3", "bench/engine_bench.py", *(sys.argv[1:] if argv is None else argv)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
