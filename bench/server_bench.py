#!/usr/bin/env python3
"""Server benchmark: C concurrent streaming /v1/completions requests against any
OpenAI-compatible server (Tessera, llama-cpp-python's llama_cpp.server, vLLM, ...).

  python3 bench/server_bench.py --url http://127.0.0.1:8080 --api-key KEY --model NAME \\
      [--models a,b,c] [--concurrency 32] [--requests N] [--prompt-tokens 32] [--gen-tokens 64]
  python3 bench/server_bench.py --start-llamacpp MODEL.gguf [--lora FILE.gguf] --concurrency 4

Closed loop: C worker threads each send one request after another until N requests have been
sent (default N = 2 x C). Every request is greedy (temperature 0), `stream: true` with
`stream_options: {"include_usage": true}`, `max_tokens` = --gen-tokens and `ignore_eos: true`
(drop it with --no-ignore-eos for servers that refuse or ignore it). Request i uses
models[i % len(models)].

Per request: TTFT = send -> first chunk with non-empty text; TPOT = (last text chunk - first
text chunk) / (tokens - 1); e2e = send -> end of the stream. Output tokens come from the usage
chunk when the server sends one, else they are the number of text chunks.

Prints the machine (stderr) and ONE JSON object (stdout): url, model(s), concurrency, requests,
tokens_per_s (all output tokens / wall time), requests_per_s, ttft/tpot/e2e percentiles
(nearest rank: sorted(v)[round(p * (n - 1))]), completion token counts actually received,
finish reasons, errors (count and first message).

Standard library only (http.client + threads): runs with any python3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PROMPT_FILE = os.path.join(HERE, "prompt.txt")
DEFAULT_PEER_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
# English prose: about 1.3 tokens per whitespace-separated word for BPE tokenizers (SmolLM2, Llama).
TOKENS_PER_WORD = 1.3


# ---------------------------------------------------------------- helpers

def percentile(values, p: float):
    """Nearest rank: sorted(v)[round(p * (n - 1))]; None for no values."""
    if not values:
        return None
    v = sorted(values)
    return v[int(round(p * (len(v) - 1)))]


def ms(x):
    return None if x is None else round(x * 1000.0, 3)


def machine_info() -> dict:
    info = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "model_name": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "model name":
                    info["model_name"] = v.strip()
                    break
    except OSError:
        pass
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def build_prompt(path: str, prompt_tokens: int) -> str:
    """The first words of the prompt file, about prompt_tokens tokens (repeated if too short)."""
    with open(path, encoding="utf-8") as f:
        words = f.read().split()
    if not words:
        raise SystemExit(f"server_bench: {path} is empty")
    n = max(1, int(round(prompt_tokens / TOKENS_PER_WORD)))
    while len(words) < n:
        words = words + words
    return " ".join(words[:n])


def split_url(url: str):
    u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if u.scheme not in ("http", "https"):
        raise SystemExit(f"server_bench: --url must be http:// or https://, got {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    base = u.path.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return u.scheme, u.hostname, port, base


def headers(api_key):
    h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def list_models(url: str, api_key, timeout: float = 5.0):
    scheme, host, port, base = split_url(url)
    req = urllib.request.Request(f"{scheme}://{host}:{port}{base}/v1/models", headers=headers(api_key))
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.loads(r.read().decode("utf-8"))
    return [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]


# ---------------------------------------------------------------- one request

class Result:
    __slots__ = ("ok", "error", "t_send", "t_first", "t_last", "t_end", "chunks", "usage_tokens", "prompt_tokens",
                 "finish_reason", "text_chars")

    def __init__(self):
        self.ok = False
        self.error = None
        self.t_send = self.t_first = self.t_last = self.t_end = None
        self.chunks = 0
        self.usage_tokens = None
        self.prompt_tokens = None
        self.finish_reason = None
        self.text_chars = 0

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.chunks


def stream_one(target, api_key, payload: dict, timeout: float) -> Result:
    scheme, host, port, base = target
    res = Result()
    conn_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(host, port, timeout=timeout)
    body = json.dumps(payload).encode("utf-8")
    try:
        res.t_send = time.perf_counter()
        conn.request("POST", f"{base}/v1/completions", body=body, headers=headers(api_key))
        resp = conn.getresponse()
        if resp.status != 200:
            text = resp.read().decode("utf-8", "replace").strip()
            res.error = f"HTTP {resp.status}: {text[:300]}"
            return res
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (": ping"), event:/id: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            try:
                obj = json.loads(data)
            except ValueError:
                res.error = f"bad SSE data: {data[:200]!r}"
                return res
            if not isinstance(obj, dict):
                continue
            if obj.get("error"):
                res.error = f"error event: {json.dumps(obj['error'])[:300]}"
                return res
            for ch in obj.get("choices") or ():
                text = ch.get("text")
                if text is None:  # chat-style delta, for servers that answer that way
                    text = (ch.get("delta") or {}).get("content")
                if text:
                    if res.t_first is None:
                        res.t_first = now
                    res.t_last = now
                    res.chunks += 1
                    res.text_chars += len(text)
                if ch.get("finish_reason"):
                    res.finish_reason = ch["finish_reason"]
            usage = obj.get("usage")
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                res.usage_tokens = int(usage["completion_tokens"])
                if usage.get("prompt_tokens") is not None:
                    res.prompt_tokens = int(usage["prompt_tokens"])
        # Drain the rest (chunked terminator) so the server sees a clean close.
        if done:
            try:
                resp.read()
            except Exception:  # noqa: BLE001
                pass
        res.t_end = time.perf_counter()
        if res.t_first is None:
            res.error = "stream ended without any text" + ("" if done else " (and without [DONE])")
            return res
        if res.finish_reason is None:
            # llama_cpp.server with --interrupt_requests true ends a stream this way when another request waits.
            res.error = f"stream cut short: no finish_reason after {res.tokens} tokens"
            return res
        res.ok = True
        return res
    except (OSError, http.client.HTTPException) as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    finally:
        conn.close()


# ---------------------------------------------------------------- the closed loop

def make_payload(args, model: str, prompt: str, max_tokens: int) -> dict:
    p = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    if not args.no_stream_options:
        p["stream_options"] = {"include_usage": True}
    if not args.no_ignore_eos:
        p["ignore_eos"] = True
    if args.llamacpp_params:
        # llama-cpp-python ignores ignore_eos (unknown fields are dropped); min_tokens suppresses
        # EOS until that many tokens, and its repeat_penalty defaults to 1.1 (greedy means 1.0).
        p["min_tokens"] = max_tokens
        p["repeat_penalty"] = 1.0
    p.update(args.extra)
    return p


def run_bench(args, url: str, models, prompt: str) -> dict:
    target = split_url(url)
    total = args.requests
    # Warm-up: sequential, short, not counted.
    warm_errors = []
    for i in range(args.warmup):
        r = stream_one(target, args.api_key, make_payload(args, models[i % len(models)], prompt, 4), args.timeout)
        if not r.ok:
            warm_errors.append(r.error)
    if args.warmup and len(warm_errors) == args.warmup:
        print(f"server_bench: every warm-up request failed: {warm_errors[0]}", file=sys.stderr)

    lock = threading.Lock()
    next_index = [0]
    results = [None] * total

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= total:
                    return
                next_index[0] = i + 1
            text = f"Log {i}. {prompt}" if args.unique_prompts else prompt
            payload = make_payload(args, models[i % len(models)], text, args.gen_tokens)
            results[i] = stream_one(target, args.api_key, payload, args.timeout)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(args.concurrency, total))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    ok = [r for r in results if r is not None and r.ok]
    bad = [r for r in results if r is None or not r.ok]
    ttft = [r.t_first - r.t_send for r in ok]
    e2e = [r.t_end - r.t_send for r in ok]
    tpot = [(r.t_last - r.t_first) / (r.tokens - 1) for r in ok if r.tokens > 1]
    toks = [r.tokens for r in ok]
    out_tokens = sum(toks)
    finish = {}
    for r in ok:
        finish[str(r.finish_reason)] = finish.get(str(r.finish_reason), 0) + 1
    prompt_toks = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    usage_seen = sum(1 for r in ok if r.usage_tokens is not None)

    out = {
        "url": url,
        "model": models[0] if len(models) == 1 else None,
        "models": models,
        "concurrency": args.concurrency,
        "requests": total,
        "completed": len(ok),
        "prompt_tokens_requested": args.prompt_tokens,
        "unique_prompts": args.unique_prompts,
        "prompt_tokens_mean": round(sum(prompt_toks) / len(prompt_toks), 1) if prompt_toks else None,
        "gen_tokens": args.gen_tokens,
        "ignore_eos": not args.no_ignore_eos,
        "stream_options": not args.no_stream_options,
        "llamacpp_params": args.llamacpp_params,
        "extra": args.extra or None,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(out_tokens / wall, 3) if wall > 0 else None,
        "requests_per_s": round(len(ok) / wall, 4) if wall > 0 else None,
        "output_tokens": out_tokens,
        "completion_tokens_min": min(toks) if toks else None,
        "completion_tokens_mean": round(out_tokens / len(toks), 2) if toks else None,
        "completion_tokens_max": max(toks) if toks else None,
        "tokens_from": "usage" if ok and usage_seen == len(ok) else ("chunks" if usage_seen == 0 else "mixed"),
        "finish_reasons": finish,
        "ttft_p50_ms": ms(percentile(ttft, 0.5)),
        "ttft_p99_ms": ms(percentile(ttft, 0.99)),
        "tpot_p50_ms": ms(percentile(tpot, 0.5)),
        "tpot_p99_ms": ms(percentile(tpot, 0.99)),
        "e2e_p50_ms": ms(percentile(e2e, 0.5)),
        "e2e_p99_ms": ms(percentile(e2e, 0.99)),
        "errors": {"count": len(bad), "first": next((r.error for r in bad if r is not None), None)},
    }
    if warm_errors:
        out["warmup_errors"] = {"count": len(warm_errors), "first": warm_errors[0]}
    return out


# ---------------------------------------------------------------- llama_cpp.server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """llama-cpp-python's OpenAI server in the bench venv, for the length of one run."""

    def __init__(self, args):
        self.port = args.llamacpp_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [args.llamacpp_python, "-m", "llama_cpp.server", "--model", args.start_llamacpp,
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--n_threads", str(args.llamacpp_threads), "--n_threads_batch", str(args.llamacpp_threads),
                    "--n_ctx", str(args.llamacpp_ctx),
                    # Default true: a waiting request cuts the streaming one short (early [DONE]).
                    "--interrupt_requests", "false"]
        if args.lora:
            self.cmd += ["--lora_path", args.lora]
        self.cmd += args.llamacpp_arg
        self.log = tempfile.NamedTemporaryFile(prefix="llamacpp-server-", suffix=".log", delete=False)
        self.proc = None
        self.startup_timeout = args.startup_timeout

    def __enter__(self):
        print("server_bench: starting " + " ".join(self.cmd), file=sys.stderr)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server_bench: llama_cpp.server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                list_models(self.url, None, timeout=2)
                break
            except (OSError, ValueError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"server_bench: llama_cpp.server not up after {self.startup_timeout:.0f} s:\n{self.tail()}")
                time.sleep(0.5)
        print(f"server_bench: llama_cpp.server up at {self.url} (log {self.log.name})", file=sys.stderr)
        return self

    def tail(self, n: int = 30) -> str:
        try:
            with open(self.log.name, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc):
        self.stop()
        self.log.close()
        return False


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="OpenAI-compatible base, e.g. http://127.0.0.1:8080 (routes /v1/completions)")
    ap.add_argument("--api-key", default=os.environ.get("BENCH_API_KEY"), help="Bearer key (default $BENCH_API_KEY)")
    ap.add_argument("--model", help="model name for every request (default: the first of GET /v1/models)")
    ap.add_argument("--models", help="comma-separated model names: request i uses models[i %% len]")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, help="total requests (default 2 x concurrency)")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length, about (words of --prompt-file)")
    ap.add_argument("--prompt-file", default=DEFAULT_PROMPT_FILE)
    ap.add_argument("--unique-prompts", action="store_true",
                    help='start prompt i with "Log {i}. " so no server can reuse a cached prompt prefix '
                         "(llama-cpp-python reuses the previous request's KV for a shared prefix)")
    ap.add_argument("--gen-tokens", type=int, default=64, help="max_tokens")
    ap.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos: true")
    ap.add_argument("--no-stream-options", action="store_true", help='do not send stream_options {"include_usage": true}')
    ap.add_argument("--llamacpp-params", action="store_true",
                    help="llama-cpp-python request fields: min_tokens = --gen-tokens (its ignore_eos), repeat_penalty 1.0; "
                         "on by default with --start-llamacpp")
    ap.add_argument("--no-llamacpp-params", action="store_true", help="not even with --start-llamacpp")
    ap.add_argument("--extra", default="{}", help="JSON object merged into every request body")
    ap.add_argument("--warmup", type=int, default=1, help="sequential 4-token requests before timing (default 1)")
    ap.add_argument("--timeout", type=float, default=600.0, help="socket timeout per request, seconds")
    ap.add_argument("--json-out", help="also write the JSON object to this file")
    g = ap.add_argument_group("llama_cpp.server (optional: started, benchmarked, stopped)")
    g.add_argument("--start-llamacpp", metavar="MODEL.gguf", help="start llama_cpp.server on this model and use it as --url")
    g.add_argument("--lora", metavar="FILE.gguf", help="GGUF LoRA for llama_cpp.server (--lora_path)")
    g.add_argument("--llamacpp-python", default=DEFAULT_PEER_PY, help="python with llama-cpp-python[server]")
    g.add_argument("--llamacpp-port", type=int, default=0, help="port (default: a free one)")
    g.add_argument("--llamacpp-threads", type=int, default=2, help="--n_threads and --n_threads_batch (default 2)")
    g.add_argument("--llamacpp-ctx", type=int, default=4096, help="--n_ctx (default 4096)")
    g.add_argument("--llamacpp-arg", action="append", default=[], help="extra server argument (repeatable)")
    g.add_argument("--startup-timeout", type=float, default=180.0)
    args = ap.parse_args(argv)
    if args.concurrency < 1:
        ap.error("--concurrency must be at least 1")
    if args.requests is None:
        args.requests = 2 * args.concurrency
    if args.requests < 1:
        ap.error("--requests must be at least 1")
    if args.gen_tokens < 1:
        ap.error("--gen-tokens must be at least 1")
    if bool(args.url) == bool(args.start_llamacpp):
        ap.error("give exactly one of --url and --start-llamacpp")
    if args.lora and not args.start_llamacpp:
        ap.error("--lora goes with --start-llamacpp")
    try:
        args.extra = json.loads(args.extra)
    except ValueError as e:
        ap.error(f"--extra is not JSON: {e}")
    if not isinstance(args.extra, dict):
        ap.error("--extra must be a JSON object")
    if args.start_llamacpp and not args.no_llamacpp_params:
        args.llamacpp_params = True
    if args.no_llamacpp_params:
        args.llamacpp_params = False
    return args


def resolve_models(args, url):
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    elif args.model:
        models = [args.model]
    else:
        try:
            ids = list_models(url, args.api_key)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise SystemExit(f"server_bench: no --model and GET /v1/models failed: {e}")
        if not ids:
            raise SystemExit("server_bench: no --model and GET /v1/models lists none")
        models = [ids[0]]
    if not models:
        raise SystemExit("server_bench: --models is empty")
    return models


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the `with`, so a started llama_cpp.server is stopped


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    m = machine_info()
    print(f"machine: processor={m['processor']!r} cpu_count={m['cpu_count']} model_name={m['model_name']!r}"
          + (f" load_avg={m['load_avg']}" if m.get("load_avg") else ""), file=sys.stderr)
    prompt = build_prompt(args.prompt_file, args.prompt_tokens)

    def go(url, extra):
        models = resolve_models(args, url)
        out = run_bench(args, url, models, prompt)
        out.update(extra)
        out["machine"] = m
        return out

    if args.start_llamacpp:
        with LlamaCppServer(args) as srv:
            out = go(srv.url, {"server": "llama_cpp.server", "server_cmd": srv.cmd})
    else:
        out = go(args.url, {})
    text = json.dumps(out)
    print(text)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if out["errors"]["count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
