"""Tenancy of `tessera serve`, through the official `openai` client and raw HTTP against real server
processes on 127.0.0.1: per-tenant limits (CLI and admin routes), rate-limit errors and budgets, one
tenant's flood not slowing another, the usage ledger (exact totals, and every completed request's row
surviving kill -9), the audit trail, the tenant-scoped response cache, prompt layers, self-service
adapter uploads, and the tenant lifecycle (remove, restore, purge).

Run: cd Tests/openai && ../../.venv-test/bin/python -m unittest -v test_tenancy"""
import concurrent.futures
import contextlib
import csv
import datetime
import io
import json
import math
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import statistics
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

try:
    import httpx
except ImportError:  # openai 3.x ships its HTTP client as httpx2, the same API
    import httpx2 as httpx

import openai
from openai import OpenAI

from harness import BIN, MODEL, MODEL_NAME, Server, cli, synth_adapter

S = None  # the shared server
WORK = None
V1 = None  # two synthesized PEFT adapters (directories)
V2 = None
BYPASS = {"X-Tessera-Cache": "bypass"}
LIMIT_KEYS = {"rpm", "tpm", "concurrency", "queued", "max_tokens", "monthly_tokens", "alert_threshold", "weight", "cache",
              "max_adapters", "adapter_bytes"}


def setUpModule():
    global S, WORK, V1, V2
    WORK = tempfile.mkdtemp(prefix="tessera-tenancy-")
    V1 = synth_adapter(os.path.join(WORK, "v1"), 41)
    V2 = synth_adapter(os.path.join(WORK, "v2"), 42)
    S = Server()
    try:
        S.start()
    except Exception:
        S.stop()
        raise


def tearDownModule():
    if S:
        S.stop()
    shutil.rmtree(WORK, ignore_errors=True)


# MARK: helpers

def oa(key, server=None, retries=0, timeout=60):
    return OpenAI(base_url=(server or S).base_url + "/v1", api_key=key, max_retries=retries, timeout=timeout)


def run_cli(*args, input=None, timeout=120):
    """The CLI as a process: (returncode, stdout, stderr)."""
    p = subprocess.run([BIN, *args], input=input, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def one_json_line(out):
    out = out.strip()
    assert "\n" not in out, f"expected one JSON line, got {out!r}"
    return json.loads(out)


def add_tenant(name, server=None):
    return (server or S).add_tenant(name)


def set_limits(name, server=None, **limits):
    args = ["tenants", "set-limits", name, "--data-dir", (server or S).data_dir]
    for k, v in limits.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return one_json_line(cli(*args))


def get_limits(name, server=None):
    return one_json_line(cli("tenants", "limits", name, "--data-dir", (server or S).data_dir))


def usage_cli(server=None, by="tenant", tenant=None, since=None, until=None):
    args = ["usage", "--data-dir", (server or S).data_dir, "--by", by, "--json"]
    if tenant:
        args += ["--tenant", tenant]
    if since:
        args += ["--since", since]
    if until:
        args += ["--until", until]
    return json.loads(cli(*args))


def audit_entries(server=None, limit=100000):
    return json.loads(cli("audit", "--data-dir", (server or S).data_dir, "--json", "--limit", str(limit)))


def db(server, sql, args=()):
    """Rows of a read-only query on the server's SQLite file, as dicts."""
    path = os.path.join(server.data_dir, "tessera.sqlite")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def ledger(server, tenant):
    return db(server, "SELECT u.* FROM usage u JOIN tenants t ON t.id = u.tenant_id WHERE t.name = ?", (tenant,))


def ledger_row(server, request_id):
    rows = db(server, "SELECT * FROM usage WHERE request_id = ?", (request_id,))
    assert len(rows) == 1, f"{len(rows)} ledger rows for {request_id}"
    return rows[0]


def wait_for(predicate, timeout, interval=0.1, message="condition"):
    """Polls until predicate() is truthy; returns its value, or fails after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def error_of(body):
    return json.loads(body)["error"]


def today_utc(days=0):
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=days)).isoformat()


def completion_body(prompt, max_tokens=2, **kw):
    return {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, **kw}


@contextlib.contextmanager
def sse(server, path, body, key, headers=None, timeout=60):
    """A streamed POST over httpx; yields the response (status, headers). Leaving the block early
    closes the connection, which the server sees as a disconnect."""
    h = {"Authorization": f"Bearer {key}", **(headers or {})}
    with httpx.Client(timeout=timeout) as c:
        with c.stream("POST", server.base_url + path, json=body, headers=h) as r:
            yield r


def events(response):
    """The JSON events of a server-sent event stream; None for the final [DONE]. The line iterator
    lives on the response: a caller that stops reading early (first_text) must not close the
    stream, which httpx does when its iterator is dropped, and the server sees as a disconnect."""
    lines = getattr(response, "_tessera_lines", None)
    if lines is None:
        lines = response._tessera_lines = response.iter_lines()
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data.strip() == "[DONE]":
            yield None
            return
        yield json.loads(data)


def event_text(ev):
    if not ev or not ev.get("choices"):
        return ""
    c = ev["choices"][0]
    if "delta" in c:
        return c["delta"].get("content") or ""
    return c.get("text") or ""


def tree(path, files_only=False):
    """Every file (and folder) under path, relative (empty if it does not exist)."""
    out = set()
    for root, dirs, files in os.walk(path):
        for n in files if files_only else dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), path))
    return out


def first_text(response):
    """Reads a stream up to its first event with text; returns that text."""
    for ev in events(response):
        if ev is None:
            raise AssertionError("the stream ended before any text")
        text = event_text(ev)
        if text:
            return text
    raise AssertionError("the stream ended without [DONE]")


def metric_value(server, name, tenant):
    text = server.request("GET", "/metrics")[2].decode()
    pattern = re.compile(r"^" + re.escape(name) + r"\{[^}]*tenant=\"" + re.escape(tenant) + r"\"[^}]*\}\s+(\S+)")
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            return float(m.group(1))
    return None


def iso_time(text):
    """Unix seconds of an ISO 8601 time (UTC when it has no offset)."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def count_in(result):
    m = re.search(r"\d+", result or "")
    return int(m.group()) if m else 0


def bad_key():
    """A key that is no tenant's, with a first-8-characters prefix of its own."""
    alphabet = string.ascii_letters + string.digits
    return "tsr_" + "".join(random.choice(alphabet) for _ in range(43))


# MARK: limits

class Limits(unittest.TestCase):
    def test_set_limits_reports_every_key_and_0_clears(self):
        add_tenant("lim")
        out = get_limits("lim")
        self.assertEqual(out["tenant"], "lim")
        lim = out["limits"]
        self.assertLessEqual(LIMIT_KEYS, set(lim))
        for k in ["rpm", "tpm", "concurrency", "queued", "max_tokens", "monthly_tokens", "max_adapters", "adapter_bytes"]:
            self.assertIsNone(lim[k], k)
        self.assertAlmostEqual(lim["alert_threshold"], 0.8)
        self.assertAlmostEqual(lim["weight"], 1.0)
        self.assertIs(lim["cache"], True)

        out = set_limits("lim", rpm=100, tpm=5000, concurrency=3, queued=4, max_tokens=50, monthly_tokens=100000, alert_percent=90,
                         weight=2.5, cache="off", max_adapters=2, adapter_bytes=1000000)
        self.assertEqual(out["tenant"], "lim")
        lim = out["limits"]
        self.assertEqual((lim["rpm"], lim["tpm"], lim["concurrency"], lim["queued"], lim["max_tokens"], lim["monthly_tokens"],
                          lim["max_adapters"], lim["adapter_bytes"]), (100, 5000, 3, 4, 50, 100000, 2, 1000000))
        self.assertAlmostEqual(lim["alert_threshold"], 0.9)
        self.assertAlmostEqual(lim["weight"], 2.5)
        self.assertIs(lim["cache"], False)
        self.assertEqual(get_limits("lim"), out)

        # Only the given flags change; 0 clears one.
        lim = set_limits("lim", rpm=0, cache="on")["limits"]
        self.assertIsNone(lim["rpm"])
        self.assertIs(lim["cache"], True)
        self.assertEqual((lim["tpm"], lim["max_tokens"], lim["max_adapters"]), (5000, 50, 2))
        self.assertAlmostEqual(lim["weight"], 2.5)
        lim = set_limits("lim", tpm=0, concurrency=0, queued=0, max_tokens=0, monthly_tokens=0, max_adapters=0, adapter_bytes=0)["limits"]
        for k in ["rpm", "tpm", "concurrency", "queued", "max_tokens", "monthly_tokens", "max_adapters", "adapter_bytes"]:
            self.assertIsNone(lim[k], k)
        # A weighted tenant is still served.
        r = oa(S.add_tenant("lim-weighted")).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        self.assertTrue(r.choices)
        self.assertAlmostEqual(set_limits("lim-weighted", weight=4)["limits"]["weight"], 4.0)

    def test_admin_routes_get_and_put_partial_limits_and_tenants_get_403(self):
        key = add_tenant("lim-http")
        path = "/v1/admin/tenants/lim-http/limits"
        status, _, body = S.request("GET", path, key=S.admin_key)
        self.assertEqual(status, 200, body)
        got = json.loads(body)
        self.assertEqual(got["tenant"], "lim-http")
        self.assertLessEqual(LIMIT_KEYS, set(got["limits"]))
        self.assertIsNone(got["limits"]["rpm"])

        status, _, body = S.request("PUT", path, {"rpm": 500, "weight": 3, "max_tokens": 40}, key=S.admin_key)
        self.assertEqual(status, 200, body)
        lim = json.loads(body)["limits"]
        self.assertEqual((lim["rpm"], lim["max_tokens"]), (500, 40))
        self.assertAlmostEqual(lim["weight"], 3.0)
        self.assertIsNone(lim["tpm"])
        status, _, body = S.request("PUT", path, {"rpm": None}, key=S.admin_key)
        self.assertEqual(status, 200, body)
        lim = json.loads(body)["limits"]
        self.assertIsNone(lim["rpm"])
        self.assertEqual(lim["max_tokens"], 40)
        self.assertAlmostEqual(lim["weight"], 3.0)
        # The CLI reads the same store.
        self.assertEqual(get_limits("lim-http")["limits"], lim)

        self.assertEqual(S.request("GET", path, key=key)[0], 403)
        self.assertEqual(S.request("PUT", path, {"max_tokens": None}, key=key)[0], 403)
        self.assertEqual(S.request("PUT", "/v1/admin/tenants/lim/limits", {"rpm": 1}, key=key)[0], 403)
        self.assertEqual(get_limits("lim-http")["limits"]["max_tokens"], 40)

    def test_max_tokens_limit_refuses_larger_requests_and_caps_the_default(self):
        key = add_tenant("lim-max")
        other = add_tenant("lim-max-other")
        c = oa(key)
        self.assertLessEqual(c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=4).usage.completion_tokens, 4)
        set_limits("lim-max", max_tokens=3)  # while the server runs: the next request sees it
        with self.assertRaises(openai.BadRequestError) as ctx:
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=4)
        self.assertIn("max_tokens", ctx.exception.message)
        with self.assertRaises(openai.BadRequestError) as ctx:
            c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
        self.assertIn("max_tokens", ctx.exception.message)
        r = c.completions.create(model=MODEL_NAME, prompt="Once upon a time", extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, 3)
        r = c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Tell me a long story."}])
        self.assertLessEqual(r.usage.completion_tokens, 3)
        self.assertEqual(c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3, extra_body={"ignore_eos": True}).usage.completion_tokens, 3)
        # Another tenant is not limited.
        self.assertEqual(oa(other).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=5, extra_body={"ignore_eos": True}).usage.completion_tokens, 5)
        set_limits("lim-max", max_tokens=0)
        self.assertEqual(c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=5, extra_body={"ignore_eos": True}).usage.completion_tokens, 5)


class RateLimits(unittest.TestCase):
    def assert_rate_limited(self, e):
        self.assertEqual(e.status_code, 429)
        self.assertEqual(e.code, "rate_limit_exceeded")

    def retry_headers(self, headers):
        """(milliseconds, seconds) from a 429's retry-after-ms and Retry-After, checked against each other."""
        ms = float(headers["retry-after-ms"])
        secs = headers["retry-after"]
        self.assertRegex(secs, r"^\d+$")
        secs = int(secs)
        self.assertGreater(ms, 0)
        # Retry-After is retry-after-ms in whole seconds, rounded up.
        self.assertGreaterEqual(secs, ms / 1000 - 1e-6)
        self.assertLessEqual(secs, math.ceil(ms / 1000) + 1)
        return ms, secs

    def test_rpm_allows_a_burst_then_429_with_retry_headers_and_a_retrying_client_succeeds(self):
        key = add_tenant("rl-rpm")
        set_limits("rl-rpm", rpm=20)  # a burst of 20, then one every 3 s
        c = oa(key)
        for i in range(20):
            self.assertTrue(c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1).choices, f"request {i + 1} of the burst")
        refused = None
        for _ in range(10):  # a slow host may have refilled a token or two meanwhile
            try:
                c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
            except openai.RateLimitError as e:
                refused = e
                break
        self.assertIsNotNone(refused, "no 429 after the burst")
        self.assert_rate_limited(refused)
        ms, _ = self.retry_headers(refused.response.headers)
        self.assertLessEqual(ms, 3000 + 100)  # one request's worth refills in 3 s
        # Raw: the same status and headers.
        status, headers, body = S.request("POST", "/v1/completions", completion_body("Hi", 1), key=key)
        if status == 429:
            self.assertEqual(error_of(body)["code"], "rate_limit_exceeded")
            ms, _ = self.retry_headers(headers)
        # A client that retries waits for the bucket and gets through.
        try:
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
            ms = 0
        except openai.RateLimitError as e:
            ms = float(e.response.headers["retry-after-ms"])
        t0 = time.time()
        r = oa(key, retries=3).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        elapsed = time.time() - t0
        self.assertTrue(r.choices)
        self.assertGreaterEqual(elapsed, ms / 1000 - 0.3)
        self.assertLess(elapsed, 20)
        # Other tenants are not limited.
        self.assertTrue(oa(add_tenant("rl-rpm-other")).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1).choices)

    def test_tpm_charges_max_tokens_at_admission_and_refunds_the_unused_part(self):
        key = add_tenant("rl-tpm")
        set_limits("rl-tpm", tpm=300)  # refills 5 tokens a second
        long_body = completion_body("Tell me a story", 200, ignore_eos=True, stream=True)
        with sse(S, "/v1/completions", long_body, key) as r:
            self.assertEqual(r.status_code, 200)
            first_text(r)
            # Charged ~204 of 300: a small request still fits, another 200-token one does not.
            status, _, body = S.request("POST", "/v1/completions", completion_body("Tell me a story", 1), key=key)
            self.assertEqual(status, 200, body)
            status, headers, body = S.request("POST", "/v1/completions", completion_body("Tell me a story", 200), key=key)
            self.assertEqual(status, 429, body)
            self.assertEqual(error_of(body)["code"], "rate_limit_exceeded")
            ms, _ = self.retry_headers(headers)
            # About 100 tokens short at 5 a second.
            self.assertGreater(ms, 5000)
            self.assertLessEqual(ms, 60000 + 100)
        # Closing the stream early refunds what it did not generate: a 200-token request fits again
        # within seconds (without the refund it would take ~20 s).
        def admitted():
            with sse(S, "/v1/completions", long_body, key) as r:
                return r.status_code == 200
        wait_for(admitted, 8, interval=0.3, message="the tpm refund")

    def test_concurrency_limit_counts_requests_in_flight(self):
        key = add_tenant("rl-conc")
        set_limits("rl-conc", concurrency=1)
        body = completion_body("Count to a hundred:", 64, ignore_eos=True, stream=True)
        with sse(S, "/v1/completions", body, key) as r:
            self.assertEqual(r.status_code, 200)
            first_text(r)
            status, _, payload = S.request("POST", "/v1/completions", completion_body("Hi", 1), key=key)
            self.assertEqual(status, 429, payload)
            self.assertEqual(error_of(payload)["code"], "rate_limit_exceeded")
            with self.assertRaises(openai.RateLimitError) as ctx:
                oa(key).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
            self.assert_rate_limited(ctx.exception)
            # Another tenant is not affected.
            self.assertTrue(oa(add_tenant("rl-conc-other")).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1).choices)
        wait_for(lambda: S.request("POST", "/v1/completions", completion_body("Hi", 1), key=key)[0] == 200, 10, interval=0.2,
                 message="the slot to free after the stream closed")
        set_limits("rl-conc", concurrency=2)
        with sse(S, "/v1/completions", body, key) as r1, sse(S, "/v1/completions", body, key) as r2:
            self.assertEqual((r1.status_code, r2.status_code), (200, 200))
            first_text(r1)
            first_text(r2)
            self.assertEqual(S.request("POST", "/v1/completions", completion_body("Hi", 1), key=key)[0], 429)

    def test_monthly_budget_alerts_once_then_refuses_with_insufficient_quota_and_no_retry(self):
        name = "rl-budgeteer"
        key = add_tenant(name)
        c = oa(key)
        one = dict(model=MODEL_NAME, prompt="Count: 1 2 3", max_tokens=4, extra_body={"ignore_eos": True})
        u0 = c.completions.create(**one).usage
        per_request = u0.prompt_tokens + u0.completion_tokens
        lim = set_limits(name, monthly_tokens=5 * per_request, alert_percent=50)["limits"]
        self.assertEqual(lim["monthly_tokens"], 5 * per_request)
        self.assertAlmostEqual(lim["alert_threshold"], 0.5)
        self.assertNotEqual(metric_value(S, "tessera_tenant_budget_alert", name), 1)  # 20% used
        admitted = 0
        refused = None
        for _ in range(10):
            try:
                c.completions.create(**one)
                admitted += 1
            except openai.RateLimitError as e:
                refused = e
                break
        # 20% used before; 4 more reach 100%; the next is refused.
        self.assertEqual(admitted, 4)
        self.assertIsNotNone(refused)
        self.assertEqual(refused.code, "insufficient_quota")
        self.assertEqual(refused.response.headers.get("x-should-retry"), "false")
        t0 = time.time()
        with self.assertRaises(openai.RateLimitError) as ctx:
            oa(key, retries=5).completions.create(**one)
        self.assertLess(time.time() - t0, 2, "the client retried a request that can never succeed")
        self.assertEqual(ctx.exception.code, "insufficient_quota")
        status, headers, body = S.request("POST", "/v1/chat/completions",
                                          {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}, key=key)
        self.assertEqual(status, 429)
        self.assertEqual(error_of(body)["code"], "insufficient_quota")
        self.assertEqual(headers.get("x-should-retry"), "false")
        # One alert for the month, however many requests went past the threshold.
        def alerts():
            return [e for e in audit_entries() if e["action"] == "budget.alert" and name in e["target"]]
        wait_for(alerts, 5, interval=0.25, message="a budget.alert audit entry")
        time.sleep(0.5)
        self.assertEqual(len(alerts()), 1, alerts())
        self.assertEqual(metric_value(S, "tessera_tenant_budget_alert", name), 1)
        # Another tenant is unaffected; clearing the budget serves this one again.
        self.assertTrue(oa(add_tenant("rl-budget-other")).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1).choices)
        set_limits(name, monthly_tokens=0)
        self.assertTrue(c.completions.create(**one).choices)


# MARK: isolation

FLOOD = r'''
import json, os, sys, threading, time
import openai
from openai import OpenAI
base, key, model, workers, stop_file, max_s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
# The flood's clients share this small host with the server; at the lowest priority they stand
# in for clients on other machines, so what is measured is the server's own isolation (the cost
# of refusing and of running the flood's admitted requests), not this process's Python CPU.
os.nice(19)
counts = {"ok": 0, "429": 0, "other": 0, "errors": []}
lock = threading.Lock()
started = threading.Event()
deadline = time.time() + max_s
def worker(i):
    c = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
    n = 0
    while time.time() < deadline and not os.path.exists(stop_file):
        n += 1
        try:
            for chunk in c.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Flood {i} {n}: write a long story."}],
                                                   max_tokens=16, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    started.set()
            with lock:
                counts["ok"] += 1
        except openai.RateLimitError:
            with lock:
                counts["429"] += 1
            time.sleep(0.3)
        except Exception as e:
            with lock:
                counts["other"] += 1
                counts["errors"].append(repr(e)[:300])
            time.sleep(0.3)
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
for t in threads:
    t.start()
started.wait(max_s)
print("started", flush=True)
for t in threads:
    t.join(max_s + 60)
print(json.dumps(counts), flush=True)
'''


class Isolation(unittest.TestCase):
    """Its own server (quiet, for timing; one running sequence per tenant for the queue test)."""

    @classmethod
    def setUpClass(cls):
        data = tempfile.mkdtemp(prefix="tessera-isolation-")
        config = os.path.join(data, "tessera.yaml")
        with open(config, "w") as f:
            f.write("engine:\n  max_running_per_tenant: 1\n")
        cls.s = Server(data_dir=data, extra_args=["--config", config])
        try:
            cls.s.start()
        except Exception:
            cls.s.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        shutil.rmtree(cls.s.data_dir, ignore_errors=True)

    def ttft(self, c, i):
        t0 = time.perf_counter()
        first = None
        for chunk in c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": f"Question {i}: name a fruit."}],
                                               max_tokens=2, stream=True):
            if first is None and chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
                first = time.perf_counter() - t0
        self.assertIsNotNone(first)
        return first

    @unittest.skipUnless(os.environ.get("TESSERA_FLOOD_TEST") == "1",
                         "a timing bound: run with TESSERA_FLOOD_TEST=1 against a release build (TESSERA_BIN); on the debug "
                         "build each refused request costs ~2 ms of server CPU, and the victim's median TTFT was 1.5-1.9x")
    def test_a_flooding_tenant_does_not_slow_another_tenants_first_token(self):
        s = self.s
        flood_key = add_tenant("flood", s)
        set_limits("flood", s, concurrency=1)
        victim = oa(add_tenant("victim", s), s)
        for i in range(2):  # warm-up
            self.ttft(victim, 90 + i)
        alone = [self.ttft(victim, 10 + i) for i in range(7)]
        stop_file = os.path.join(s.data_dir, "flood.stop")
        proc = subprocess.Popen([sys.executable, "-c", FLOOD, s.base_url + "/v1", flood_key, MODEL_NAME, "24", stop_file, "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 70)
            self.assertTrue(ready, "the flood did not start")
            line = proc.stdout.readline().strip()
            if line != "started":
                proc.kill()
                self.fail(f"the flood failed to start: {line!r} {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
            during = [self.ttft(victim, 20 + i) for i in range(7)]
        finally:
            open(stop_file, "w").close()
            try:
                out, err = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        summary = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(summary["other"], 0, summary["errors"] or err[-2000:])
        self.assertGreaterEqual(summary["ok"], 1, summary)
        self.assertGreater(summary["429"], summary["ok"], summary)  # most of the flood was refused
        m_alone, m_during = statistics.median(alone), statistics.median(during)
        self.assertLessEqual(m_during, 1.5 * m_alone,
                             f"victim median TTFT {m_during * 1000:.0f} ms during the flood vs {m_alone * 1000:.0f} ms alone "
                             f"(alone {[round(x * 1000) for x in alone]}, during {[round(x * 1000) for x in during]}, flood {summary})")

    def test_queued_limit_refuses_past_the_tenants_waiting_requests(self):
        s = self.s
        key = add_tenant("queuer", s)
        set_limits("queuer", s, queued=1)
        statuses = []
        lock = threading.Lock()
        barrier = threading.Barrier(6)

        def one(i):
            try:
                barrier.wait(10)
                st, _, body = s.request("POST", "/v1/completions", completion_body(f"Queue {i}:", 24, ignore_eos=True), key=key, timeout=120)
            except Exception as e:  # noqa: BLE001
                st, body = repr(e), b""
            with lock:
                statuses.append((st, body))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        codes = [st for st, _ in statuses]
        self.assertEqual(len(codes), 6, codes)
        self.assertTrue(all(st in (200, 429) for st in codes), statuses)
        # One runs (max_running_per_tenant 1), at most one waits, the rest are refused.
        self.assertGreaterEqual(codes.count(200), 1, codes)
        self.assertLessEqual(codes.count(200), 2, codes)
        set_limits("queuer", s, queued=0)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda i: s.request("POST", "/v1/completions", completion_body(f"Again {i}:", 4), key=key)[0], range(4)))
        self.assertEqual(codes, [200] * 4)


# MARK: the usage ledger

class KillNine(unittest.TestCase):
    def test_every_completed_request_has_exactly_one_row_after_kill_9(self):
        s = Server()
        s2 = None
        try:
            s.start()
            key = add_tenant("crash", s)
            completed = []
            errors = []
            lock = threading.Lock()
            killing = threading.Event()
            stop = threading.Event()

            def worker(i):
                c = oa(key, s, timeout=30)
                n = 0
                while not stop.is_set() and not killing.is_set():
                    n += 1
                    try:
                        if i % 4 == 3:
                            body = completion_body(f"Stream {i} {n}:", 2 + n % 3, stream=True, temperature=1.0)
                            with sse(s, "/v1/completions", body, key, timeout=30) as r:
                                rid = r.headers.get("x-request-id")
                                done = r.status_code == 200 and any(ev is None for ev in events(r))
                            if done:
                                with lock:
                                    completed.append(rid)
                        else:
                            raw = c.completions.with_raw_response.create(model=MODEL_NAME, prompt=f"Worker {i} request {n}:",
                                                                         max_tokens=2 + n % 3, temperature=1.0)
                            raw.parse()
                            rid = raw.headers.get("x-request-id")
                            with lock:
                                completed.append(rid)
                    except Exception as e:  # noqa: BLE001
                        if not killing.is_set():
                            with lock:
                                errors.append(repr(e))
                        return

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            time.sleep(8)
            killing.set()
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(30)
            stop.set()
            for t in threads:
                t.join(60)
            self.assertEqual(errors, [])
            with lock:
                received = list(completed)
            self.assertGreaterEqual(len(received), 8, "too few requests completed before the kill")
            self.assertTrue(all(received), "a completed response without x-request-id")
            self.assertEqual(len(set(received)), len(received), "the server repeated an x-request-id")
            s.stop()

            s2 = Server(data_dir=s.data_dir).start()
            self.assertEqual(db(s2, "SELECT request_id, COUNT(*) AS n FROM usage GROUP BY request_id HAVING n > 1"), [])
            rows = {r["request_id"]: r for r in ledger(s2, "crash")}
            missing = [rid for rid in received if rid not in rows]
            self.assertEqual(missing, [], f"{len(missing)} of {len(received)} completed requests have no ledger row")
            for rid in received:
                row = rows[rid]
                self.assertEqual(row["status"], 200, row)
                self.assertIn(row["finish_reason"], ("stop", "length"), row)
                self.assertGreaterEqual(row["completion_tokens"], 1, row)
                self.assertGreater(row["prompt_tokens"], 0, row)
                self.assertIsNone(row["adapter"])
                self.assertGreaterEqual(row["total_ms"], 0)
            report = usage_cli(s2, tenant="crash")
            self.assertEqual(len(report), 1, report)
            self.assertEqual(report[0]["tenant"], "crash")
            self.assertEqual(report[0]["requests"], len(rows))
            # The restarted server serves and records.
            raw = oa(key, s2).completions.with_raw_response.create(model=MODEL_NAME, prompt="After the crash", max_tokens=1)
            raw.parse()
            self.assertEqual(ledger_row(s2, raw.headers["x-request-id"])["status"], 200)
        finally:
            s.stop(sig=signal.SIGKILL)
            if s2:
                s2.stop()
            shutil.rmtree(s.data_dir, ignore_errors=True)


class Ledger(unittest.TestCase):
    def one(self, tenant, key, i):
        """One request of the mixed run: what the client saw."""
        c = oa(key)
        kind = i % 5
        k = 1 + i % 3
        if kind in (0, 3):
            cached = kind == 3
            prompt = f"Fixed prompt {i % 3} of {tenant}:" if cached else f"{tenant} plain {i}:"
            raw = c.completions.with_raw_response.create(model=MODEL_NAME, prompt=prompt, max_tokens=2 if cached else k,
                                                         temperature=0 if cached else 1.0)
            r = raw.parse()
            return dict(kind="cached" if cached else "plain", prompt=r.usage.prompt_tokens, completion=r.usage.completion_tokens,
                        rid=raw.headers.get("x-request-id"), hit=raw.headers.get("x-tessera-cache") == "hit", cancelled=False)
        if kind == 1:
            raw = c.chat.completions.with_raw_response.create(model=MODEL_NAME, messages=[{"role": "user", "content": f"{tenant} chat {i}"}],
                                                              max_tokens=k, temperature=1.0)
            r = raw.parse()
            return dict(kind="chat", prompt=r.usage.prompt_tokens, completion=r.usage.completion_tokens, rid=raw.headers.get("x-request-id"),
                        hit=raw.headers.get("x-tessera-cache") == "hit", cancelled=False)
        if kind == 2:
            chunks = list(c.completions.create(model=MODEL_NAME, prompt=f"{tenant} stream {i}:", max_tokens=k, temperature=1.0, stream=True,
                                               stream_options={"include_usage": True}))
            usage = chunks[-1].usage
            return dict(kind="stream", prompt=usage.prompt_tokens, completion=usage.completion_tokens, rid=None, hit=False, cancelled=False)
        # Cancelled: read one content chunk, then close.
        body = completion_body(f"{tenant} long story {i}:", 48, ignore_eos=True, temperature=1.0, stream=True,
                               stream_options={"include_usage": True})
        read = 0
        with sse(S, "/v1/completions", body, key) as r:
            assert r.status_code == 200, r.status_code
            rid = r.headers.get("x-request-id")
            for ev in events(r):
                if ev is None:
                    break
                if ev.get("usage") and not ev.get("choices"):
                    # It finished before we closed: an ordinary completed stream.
                    return dict(kind="stream", prompt=ev["usage"]["prompt_tokens"], completion=ev["usage"]["completion_tokens"], rid=rid,
                                hit=False, cancelled=False)
                if event_text(ev):
                    read += 1
                    break
        return dict(kind="cancelled", prompt=0, completion=0, rid=rid, chunks=read, hit=False, cancelled=True)

    def test_a_mixed_run_of_200_requests_is_counted_exactly(self):
        tenants = {"led-a": add_tenant("led-a"), "led-b": add_tenant("led-b")}
        jobs = [(t, tenants[t], i) for i in range(100) for t in tenants]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda j: (j[0], self.one(*j)), jobs, timeout=600))
        for tenant in tenants:
            mine = [r for t, r in results if t == tenant]
            self.assertEqual(len(mine), 100)
            rows = wait_for(lambda: (lambda rs: rs if len(rs) >= 100 else None)(ledger(S, tenant)), 15, interval=0.25,
                            message=f"100 ledger rows for {tenant}")
            self.assertEqual(len(rows), 100)
            self.assertEqual(len({r["request_id"] for r in rows}), 100)
            by_id = {r["request_id"]: r for r in rows}
            done_rows = [r for r in rows if r["finish_reason"] not in ("cancelled", "disconnected")]
            completed = [r for r in mine if not r["cancelled"]]
            self.assertEqual(len(done_rows), len(completed))
            self.assertEqual(sum(r["prompt_tokens"] for r in done_rows), sum(r["prompt"] for r in completed))
            self.assertEqual(sum(r["completion_tokens"] for r in done_rows), sum(r["completion"] for r in completed))
            for r in done_rows:
                self.assertEqual(r["status"], 200, r)
                self.assertIn(r["finish_reason"], ("stop", "length"), r)
            for r in completed:
                if r["rid"]:
                    row = by_id[r["rid"]]
                    self.assertEqual((row["prompt_tokens"], row["completion_tokens"]), (r["prompt"], r["completion"]), row)
                    self.assertEqual(bool(row["cached_response"]), r["hit"], row)
            for r in mine:
                if r["cancelled"]:
                    row = by_id[r["rid"]]
                    self.assertIn(row["finish_reason"], ("disconnected", "cancelled"), row)
                    self.assertGreaterEqual(row["completion_tokens"], max(1, r["chunks"]), row)
            for r in rows:
                self.assertGreaterEqual(r["cached_prompt_tokens"], 0)
                self.assertLessEqual(r["cached_prompt_tokens"], r["prompt_tokens"])
                self.assertIsNone(r["adapter"])
            hits = sum(1 for r in mine if r["hit"])
            self.assertGreater(hits, 0, "temperature-0 repeats never hit the cache")
            self.assertEqual(sum(1 for r in rows if r["cached_response"]), hits)
            report = usage_cli(tenant=tenant)
            self.assertEqual(len(report), 1, report)
            e = report[0]
            self.assertEqual(e["tenant"], tenant)
            self.assertEqual(e["requests"], 100)
            self.assertEqual(e["cached_responses"], hits)
            self.assertEqual(e["prompt_tokens"], sum(r["prompt_tokens"] for r in rows))
            self.assertEqual(e["completion_tokens"], sum(r["completion_tokens"] for r in rows))
            self.assertEqual(e["cached_prompt_tokens"], sum(r["cached_prompt_tokens"] for r in rows))
            by_adapter = usage_cli(by="adapter", tenant=tenant)
            self.assertEqual([(a["adapter"], a["requests"]) for a in by_adapter], [(None, 100)])

    def test_usage_routes_group_filter_and_scope_to_the_caller(self):
        a, b = add_tenant("rt-a"), add_tenant("rt-b")
        S.register("rt-ad", V1, "rt-a")
        for i in range(2):
            oa(a).completions.create(model=MODEL_NAME, prompt=f"route {i}", max_tokens=1)
        oa(a).completions.create(model="rt-ad", prompt="route adapter", max_tokens=1)
        oa(b).completions.create(model=MODEL_NAME, prompt="route b", max_tokens=1)

        def admin(query):
            status, _, body = S.request("GET", "/v1/admin/usage?" + query, key=S.admin_key)
            self.assertEqual(status, 200, body)
            out = json.loads(body)
            self.assertEqual(out["object"], "list")
            return out["data"]

        rows = admin("by=tenant&tenant=rt-a")
        self.assertEqual([(r["tenant"], r["requests"]) for r in rows], [("rt-a", 3)])
        for k in ["prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cached_responses"]:
            self.assertIn(k, rows[0])
        self.assertEqual(rows[0]["completion_tokens"], 3)
        self.assertEqual(rows, usage_cli(tenant="rt-a"))
        everyone = {r["tenant"]: r["requests"] for r in admin("by=tenant")}
        self.assertEqual((everyone["rt-a"], everyone["rt-b"]), (3, 1))
        by_adapter = {r["adapter"]: r["requests"] for r in admin("by=adapter&tenant=rt-a")}
        self.assertEqual(by_adapter, {None: 2, "rt-ad": 1})
        self.assertEqual({r["adapter"]: r["requests"] for r in usage_cli(by="adapter", tenant="rt-a")}, by_adapter)
        days = admin("by=day&tenant=rt-a")
        self.assertEqual([(d["day"], d["requests"]) for d in days], [(today_utc(), 3)])
        self.assertEqual([(d["day"], d["requests"]) for d in usage_cli(by="day", tenant="rt-a")], [(today_utc(), 3)])
        # Date filters (far enough from today to hold in any time zone).
        self.assertEqual(sum(r["requests"] for r in admin(f"by=tenant&tenant=rt-a&since={today_utc(2)}")), 0)
        self.assertEqual(sum(r["requests"] for r in admin(f"by=tenant&tenant=rt-a&until={today_utc(-2)}")), 0)
        self.assertEqual(sum(r["requests"] for r in admin(f"by=tenant&tenant=rt-a&since={today_utc(-2)}&until={today_utc(2)}")), 3)
        self.assertEqual(sum(r["requests"] for r in usage_cli(tenant="rt-a", since=today_utc(2))), 0)
        self.assertEqual(sum(r["requests"] for r in usage_cli(tenant="rt-a", until=today_utc(-2))), 0)
        self.assertEqual(sum(r["requests"] for r in usage_cli(tenant="rt-a", since=today_utc(-2), until=today_utc(2))), 3)
        # CSV.
        out = cli("usage", "--data-dir", S.data_dir, "--by", "tenant", "--tenant", "rt-a", "--csv")
        table = list(csv.DictReader(io.StringIO(out)))
        self.assertEqual([(r["tenant"], int(r["requests"])) for r in table], [("rt-a", 3)])

        # A tenant sees only its own usage.
        status, _, body = S.request("GET", "/v1/usage?by=tenant", key=a)
        self.assertEqual(status, 200, body)
        mine = json.loads(body)["data"]
        self.assertEqual([(r["tenant"], r["requests"]) for r in mine], [("rt-a", 3)])
        status, _, body = S.request("GET", "/v1/usage?by=adapter", key=a)
        self.assertEqual({r["adapter"]: r["requests"] for r in json.loads(body)["data"]}, {None: 2, "rt-ad": 1})
        status, _, body = S.request("GET", "/v1/usage?by=tenant", key=b)
        self.assertEqual([(r["tenant"], r["requests"]) for r in json.loads(body)["data"]], [("rt-b", 1)])
        status, _, body = S.request("GET", "/v1/usage?by=tenant&tenant=rt-b", key=a)
        if status == 200:
            self.assertTrue(all(r["tenant"] == "rt-a" for r in json.loads(body)["data"]), body)
        else:
            self.assertIn(status, (400, 403, 404))
        self.assertNotIn(b'"rt-b"', body)
        self.assertEqual(S.request("GET", "/v1/admin/usage?by=tenant", key=a)[0], 403)
        self.assertEqual(S.request("GET", "/v1/usage?by=tenant")[0], 401)


# MARK: audit

class Audit(unittest.TestCase):
    def test_admin_actions_are_audited_and_no_entry_holds_a_key_or_prompt(self):
        marker = "Zanzibar" + "".join(random.choice(string.ascii_lowercase) for _ in range(12))
        t0 = time.time()
        key = add_tenant("aud")
        set_limits("aud", rpm=1000)
        rotated = json.loads(cli("tenants", "rotate-key", "aud", "--data-dir", S.data_dir, "--json"))["api_key"]
        S.register("aud-ad", V1, "aud")
        oa(rotated).completions.create(model="aud-ad", prompt=f"{marker} completion prompt", max_tokens=1)
        layer = {"system": f"{marker} system text", "examples": [{"role": "user", "content": f"{marker} example"},
                                                                  {"role": "assistant", "content": f"{marker} answer"}], "adapter": None}
        self.assertEqual(S.request("PUT", "/v1/admin/tenants/aud/prompt-layer", layer, key=S.admin_key)[0], 200)
        oa(rotated).chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": f"{marker} chat"}], max_tokens=1)
        self.assertIn(S.request("DELETE", "/v1/admin/tenants/aud/prompt-layer", key=S.admin_key)[0], (200, 204))
        self.assertEqual(S.request("DELETE", "/v1/admin/adapters/aud-ad", key=S.admin_key)[0], 200)
        cli("tenants", "remove", "aud", "--data-dir", S.data_dir)
        cli("tenants", "restore", "aud", "--data-dir", S.data_dir)
        expected = ["tenant.add", "limits.set", "key.rotate", "adapter.register", "adapter.load", "prompt_layer.set", "prompt_layer.delete",
                    "adapter.unregister", "tenant.remove", "tenant.restore"]

        def present():
            entries = audit_entries()
            mine = [e for e in entries if "aud" in (e.get("target") or "")]
            return entries if all(any(e["action"] == a for e in mine) for a in expected) else None

        try:
            entries = wait_for(present, 5, interval=0.25, message="every audited action")
        except AssertionError:
            mine = [(e["action"], e["target"]) for e in audit_entries() if "aud" in (e.get("target") or "")]
            self.fail(f"missing {[a for a in expected if a not in {m[0] for m in mine}]}; have {mine}")
        for e in entries:
            self.assertLessEqual({"time", "actor", "action", "target", "result"}, set(e), e)
            iso_time(e["time"])
        mine = [e for e in entries if "aud" in e["target"] and e["action"] in expected]
        for e in mine:
            t = iso_time(e["time"])
            self.assertGreater(t, t0 - 120)
            self.assertLess(t, time.time() + 120)
        text = json.dumps(entries)
        for secret in [key, rotated, S.admin_key]:
            self.assertNotIn(secret, text)
            self.assertNotIn(secret[8:], text)
        self.assertNotIn(marker, text)
        self.assertLessEqual(len(audit_entries(limit=3)), 3)

    def test_failed_keys_are_aggregated_per_prefix_and_minute(self):
        if time.time() % 60 > 52:  # keep the 50 requests inside one minute
            time.sleep(60.5 - time.time() % 60)
        wrong = bad_key()
        prefix = wrong[:8]
        for i in range(50):
            path, body = ("/v1/completions", completion_body("hi", 1)) if i % 2 else ("/v1/models", None)
            status, _, _ = S.request("POST" if body else "GET", path, body, key=wrong)
            self.assertEqual(status, 401)

        def mine():
            return [e for e in audit_entries() if e["action"] == "auth.failed" and e["actor"] == f"key:{prefix}"]

        def counted():
            entries = mine()
            return entries if entries and sum(count_in(e["result"]) for e in entries) >= 50 else None

        entries = wait_for(counted, 4, interval=0.2, message="the auth.failed entry")
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(count_in(entries[0]["result"]), 50, entries)
        self.assertIn("failure", entries[0]["result"])
        time.sleep(0.5)
        self.assertEqual(len(mine()), 1)
        text = json.dumps(audit_entries())
        self.assertNotIn(wrong, text)
        self.assertNotIn(wrong[8:], text)


# MARK: the response cache

class ResponseCache(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = {t: add_tenant(t) for t in ["rc-a", "rc-b", "rc-off", "rc-use"]}

    def post(self, tenant, body, path="/v1/completions", headers=None):
        status, h, payload = S.request("POST", path, body, key=self.keys[tenant], headers=headers)
        self.assertEqual(status, 200, payload)
        self.assertIn(h.get("x-tessera-cache"), ("hit", "miss"), h)
        return h["x-tessera-cache"], payload

    def test_a_deterministic_repeat_is_a_byte_identical_hit_and_bypass_skips_it(self):
        body = completion_body("The cache test says", 4, temperature=0)
        first = self.post("rc-a", body)
        self.assertEqual(first[0], "miss")
        second = self.post("rc-a", body)
        self.assertEqual(second[0], "hit")
        self.assertEqual(second[1], first[1])
        bypassed = self.post("rc-a", body, headers=BYPASS)
        self.assertEqual(bypassed[0], "miss")
        self.assertEqual(json.loads(bypassed[1])["choices"][0]["text"], json.loads(first[1])["choices"][0]["text"])
        # Chat, and an explicit seed at temperature 1.
        chat = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Cache this chat."}], "max_tokens": 4, "temperature": 0}
        c1 = self.post("rc-a", chat, "/v1/chat/completions")
        c2 = self.post("rc-a", chat, "/v1/chat/completions")
        self.assertEqual((c1[0], c2[0]), ("miss", "hit"))
        self.assertEqual(c2[1], c1[1])
        seeded = completion_body("A seeded cache test", 4, temperature=1.0, seed=1234)
        s1, s2 = self.post("rc-a", seeded), self.post("rc-a", seeded)
        self.assertEqual((s1[0], s2[0]), ("miss", "hit"))
        self.assertEqual(s2[1], s1[1])

    def test_a_streamed_repeat_is_a_hit_with_the_same_text(self):
        body = completion_body("Streaming cache prompt", 6, temperature=0)
        _, plain = self.post("rc-a", body)
        text = json.loads(plain)["choices"][0]["text"]

        def streamed():
            with sse(S, "/v1/completions", {**body, "stream": True}, self.keys["rc-a"]) as r:
                self.assertEqual(r.status_code, 200)
                cache = r.headers.get("x-tessera-cache")
                evs = list(events(r))
            self.assertIsNone(evs[-1], "the stream did not end with [DONE]")
            return cache, "".join(event_text(e) for e in evs if e)

        first = streamed()
        self.assertIn(first[0], ("hit", "miss"))
        second = streamed()
        self.assertEqual(second[0], "hit")
        self.assertEqual(second[1], first[1])
        self.assertEqual(second[1], text)
        # Chat streams too.
        chat = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Stream a cached chat."}], "max_tokens": 5, "temperature": 0}
        texts = []
        for i in range(2):
            with sse(S, "/v1/chat/completions", {**chat, "stream": True}, self.keys["rc-a"]) as r:
                cache = r.headers.get("x-tessera-cache")
                texts.append("".join(event_text(e) for e in events(r) if e))
            if i == 1:
                self.assertEqual(cache, "hit")
        self.assertEqual(texts[0], texts[1])

    def test_the_cache_is_per_tenant(self):
        body = completion_body("Whose cache is this", 4, temperature=0)
        self.assertEqual(self.post("rc-a", body)[0], "miss")
        self.assertEqual(self.post("rc-a", body)[0], "hit")
        self.assertEqual(self.post("rc-b", body)[0], "miss")
        self.assertEqual(self.post("rc-b", body)[0], "hit")

    def test_non_deterministic_requests_are_never_cached(self):
        body = completion_body("Random words:", 4, temperature=1.0)
        self.assertEqual([self.post("rc-a", body)[0] for _ in range(3)], ["miss"] * 3)
        no_temperature = completion_body("More random words:", 4)  # OpenAI's default temperature is 1
        self.assertEqual([self.post("rc-a", no_temperature)[0] for _ in range(2)], ["miss"] * 2)

    def test_a_hot_swap_of_the_adapter_makes_the_next_request_a_miss(self):
        S.register("rc-ad", V1, "rc-a")
        body = {"model": "rc-ad", "prompt": "Adapter cache test", "max_tokens": 4, "temperature": 0}
        self.assertEqual(self.post("rc-a", body)[0], "miss")
        before = self.post("rc-a", body)
        self.assertEqual(before[0], "hit")
        S.register("rc-ad", V2, "rc-a")
        after = self.post("rc-a", body)
        self.assertEqual(after[0], "miss")
        self.assertEqual(self.post("rc-a", body)[0], "hit")

    def test_cache_off_makes_every_request_a_miss(self):
        body = completion_body("Cache off test", 4, temperature=0)
        self.assertEqual(self.post("rc-off", body)[0], "miss")
        self.assertEqual(self.post("rc-off", body)[0], "hit")
        self.assertIs(set_limits("rc-off", cache="off")["limits"]["cache"], False)
        self.assertEqual([self.post("rc-off", body)[0] for _ in range(2)], ["miss"] * 2)
        other = completion_body("Cache off, another prompt", 4, temperature=0)
        self.assertEqual([self.post("rc-off", other)[0] for _ in range(2)], ["miss"] * 2)

    def test_hits_are_counted_as_cached_responses(self):
        body = completion_body("Count my cache hits", 3, temperature=0)
        seen = [self.post("rc-use", body) for _ in range(3)]
        self.assertEqual([c for c, _ in seen], ["miss", "hit", "hit"])
        usage = json.loads(seen[0][1])["usage"]
        rows = ledger(S, "rc-use")
        self.assertEqual(len(rows), 3)
        self.assertEqual(sum(r["cached_response"] for r in rows), 2)
        report = usage_cli(tenant="rc-use")
        self.assertEqual(len(report), 1)
        e = report[0]
        self.assertEqual((e["requests"], e["cached_responses"]), (3, 2))
        self.assertEqual(e["prompt_tokens"], 3 * usage["prompt_tokens"])
        self.assertEqual(e["completion_tokens"], 3 * usage["completion_tokens"])


# MARK: prompt layers

SYSTEM = ("You are Captain Arr, a pirate who answers every question in pirate speak, with many sea shanties, "
          "nautical terms, and mentions of treasure, parrots, and the seven seas. Never break character.")
EXAMPLES = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Arr, ahoy matey! Welcome aboard me ship!"}]
QUESTION = [{"role": "user", "content": "What should I cook for dinner tonight?"}]


class PromptLayer(unittest.TestCase):
    def chat(self, key, model=MODEL_NAME, messages=QUESTION):
        raw = oa(key).chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                                                extra_headers=BYPASS)
        r = raw.parse()
        return r.choices[0].message.content, r.usage.prompt_tokens, raw.headers.get("x-request-id")

    def test_a_layer_changes_its_tenants_output_only_and_delete_restores_it(self):
        a, b = add_tenant("pl-a"), add_tenant("pl-b")
        admin_path = "/v1/admin/tenants/pl-a/prompt-layer"
        self.assertEqual(S.request("GET", admin_path, key=S.admin_key)[0], 404)
        self.assertEqual(S.request("GET", "/v1/prompt-layer", key=a)[0], 404)
        before_a, before_b = self.chat(a), self.chat(b)
        self.assertEqual(before_a[:2], before_b[:2])

        status, _, body = S.request("PUT", admin_path, {"system": SYSTEM, "examples": EXAMPLES, "adapter": None}, key=S.admin_key)
        self.assertEqual(status, 200, body)
        layer = json.loads(body)
        self.assertEqual((layer["tenant"], layer["system"], layer["examples"], layer["adapter"]), ("pl-a", SYSTEM, EXAMPLES, None))
        v1 = layer["version"]
        self.assertIsInstance(v1, int)
        status, _, body = S.request("GET", admin_path, key=S.admin_key)
        self.assertEqual((status, json.loads(body)), (200, layer))
        status, _, body = S.request("GET", "/v1/prompt-layer", key=a)
        self.assertEqual((status, json.loads(body)["version"]), (200, v1))

        with_layer = self.chat(a)
        self.assertNotEqual(with_layer[0], before_a[0])
        self.assertGreater(with_layer[1], before_a[1])
        # Exactly the system prompt, then the examples, then the request's messages.
        explicit = self.chat(b, messages=[{"role": "system", "content": SYSTEM}] + EXAMPLES + QUESTION)
        self.assertEqual(with_layer[:2], explicit[:2])
        self.assertEqual(ledger_row(S, with_layer[2])["prompt_layer_version"], v1)
        self.assertIsNone(ledger_row(S, before_a[2])["prompt_layer_version"])
        # Another tenant is unchanged.
        self.assertEqual(self.chat(b)[:2], before_b[:2])
        self.assertEqual(S.request("GET", "/v1/prompt-layer", key=b)[0], 404)
        self.assertEqual(S.request("PUT", admin_path, {"system": "x", "examples": [], "adapter": None}, key=b)[0], 403)
        self.assertEqual(S.request("GET", admin_path, key=b)[0], 403)

        # The tenant itself sets a new version.
        status, _, body = S.request("PUT", "/v1/prompt-layer", {"system": SYSTEM + " Be brief.", "examples": [], "adapter": None}, key=a)
        self.assertEqual(status, 200, body)
        v2 = json.loads(body)
        self.assertEqual((v2["tenant"], v2["version"], v2["examples"]), ("pl-a", v1 + 1, []))
        self.assertEqual(json.loads(S.request("GET", admin_path, key=S.admin_key)[2])["version"], v1 + 1)
        self.assertEqual(ledger_row(S, self.chat(a)[2])["prompt_layer_version"], v1 + 1)

        self.assertIn(S.request("DELETE", "/v1/prompt-layer", key=a)[0], (200, 204))
        self.assertEqual(S.request("GET", "/v1/prompt-layer", key=a)[0], 404)
        self.assertEqual(S.request("GET", admin_path, key=S.admin_key)[0], 404)
        after = self.chat(a)
        self.assertEqual(after[:2], before_a[:2])
        self.assertIsNone(ledger_row(S, after[2])["prompt_layer_version"])

    def test_an_adapter_bound_layer_applies_to_that_adapter_only(self):
        c = add_tenant("pl-c")
        S.register("pl-ad", V1, "pl-c")
        base_before, ad_before = self.chat(c), self.chat(c, "pl-ad")
        path = "/v1/admin/tenants/pl-c/prompt-layer"
        status, _, body = S.request("PUT", path, {"system": SYSTEM, "examples": [], "adapter": "pl-ad"}, key=S.admin_key)
        self.assertEqual(status, 200, body)
        layer = json.loads(body)
        self.assertEqual(layer["adapter"], "pl-ad")
        base_after = self.chat(c)
        self.assertEqual(base_after[:2], base_before[:2])
        self.assertIsNone(ledger_row(S, base_after[2])["prompt_layer_version"])
        ad_after = self.chat(c, "pl-ad")
        self.assertGreater(ad_after[1], ad_before[1])
        self.assertEqual(ledger_row(S, ad_after[2])["prompt_layer_version"], layer["version"])
        # The same as the admin (no layer) sending the system prompt itself.
        explicit = self.chat(S.admin_key, "pl-ad", [{"role": "system", "content": SYSTEM}] + QUESTION)
        self.assertEqual(ad_after[:2], explicit[:2])
        self.assertIn(S.request("DELETE", path, key=S.admin_key)[0], (200, 204))
        self.assertEqual(self.chat(c, "pl-ad")[:2], ad_before[:2])


# MARK: self-service adapters

def safetensors_parts(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def safetensors_bytes(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


NAN = {"F32": struct.pack("<f", float("nan")), "F16": b"\x00\x7e", "BF16": b"\xc0\x7f", "F64": struct.pack("<d", float("nan"))}


def with_nan(path):
    header, data = safetensors_parts(path)
    data = bytearray(data)
    for name, info in header.items():
        if name != "__metadata__" and info["dtype"] in NAN:
            start = info["data_offsets"][0]
            v = NAN[info["dtype"]]
            for i in range(4):
                data[start + i * len(v):start + (i + 1) * len(v)] = v
            return safetensors_bytes(header, bytes(data))
    raise AssertionError("no float tensor in the adapter")


def with_wrong_shape(path):
    header, data = safetensors_parts(path)
    for name, info in header.items():
        if name != "__metadata__" and "lora_A" in name and len(info["shape"]) == 2 and info["shape"][0] != info["shape"][1]:
            info["shape"] = list(reversed(info["shape"]))  # same bytes, the wrong shape for the base
            return safetensors_bytes(header, data)
    raise AssertionError("no lora_A tensor in the adapter")


class Uploads(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = {t: add_tenant(t) for t in ["up-a", "up-b", "up-bad", "up-q"]}

    def upload(self, tenant, name, adapter=None, config=None, weights=None, omit=()):
        adapter = adapter or V1
        if config is None:
            with open(os.path.join(adapter, "adapter_config.json"), "rb") as f:
                config = f.read()
        if weights is None:
            with open(os.path.join(adapter, "adapter_model.safetensors"), "rb") as f:
                weights = f.read()
        files = {}
        if "adapter_config.json" not in omit:
            files["adapter_config.json"] = ("adapter_config.json", config, "application/json")
        if "adapter_model.safetensors" not in omit:
            files["adapter_model.safetensors"] = ("adapter_model.safetensors", weights, "application/octet-stream")
        data = {} if "name" in omit else {"name": name}
        return httpx.post(S.base_url + "/v1/adapters", data=data, files=files, headers={"Authorization": f"Bearer {self.keys[tenant]}"},
                          timeout=120)

    def listed(self, tenant):
        status, _, body = S.request("GET", "/v1/adapters", key=self.keys[tenant])
        self.assertEqual(status, 200, body)
        out = json.loads(body)
        items = out["data"] if isinstance(out, dict) else out
        return {i.get("id", i.get("name")): i for i in items}

    def greedy(self, tenant, model, prompt, n=8):
        return oa(self.keys[tenant]).completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0,
                                                        extra_headers=BYPASS).choices[0].text

    def test_upload_use_list_and_delete_are_private_to_the_tenant(self):
        prompt = "My uploaded adapter says"
        r = self.upload("up-a", "my-style", V1)
        self.assertEqual(r.status_code, 200, r.text)
        card = r.json()
        self.assertEqual((card["id"], card["object"]), ("my-style", "adapter"))
        self.assertRegex(card["sha256"], r"^[0-9a-f]{64}$")
        self.assertGreater(card["bytes"], 0)
        self.assertIsInstance(card["version"], int)
        expected_v1 = json.loads(cli("generate", "--model", MODEL, "--adapter", V1, "--prompt", prompt, "--max-tokens", "8", "--json"))["text"]
        self.assertEqual(self.greedy("up-a", "my-style", prompt), expected_v1)
        chat = oa(self.keys["up-a"]).chat.completions.create(model="my-style", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        self.assertTrue(chat.choices[0].message.content is not None)
        self.assertIn("my-style", self.listed("up-a"))

        # Another tenant cannot see, use or delete it...
        with self.assertRaises(openai.NotFoundError):
            oa(self.keys["up-b"]).completions.create(model="my-style", prompt="hi", max_tokens=1)
        self.assertNotIn("my-style", self.listed("up-b"))
        self.assertEqual(S.request("DELETE", "/v1/adapters/my-style", key=self.keys["up-b"])[0], 404)
        self.assertEqual(self.greedy("up-a", "my-style", prompt), expected_v1)
        # ...and uploads its own under the same name.
        r = self.upload("up-b", "my-style", V2)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertNotEqual(r.json()["sha256"], card["sha256"])
        expected_v2 = json.loads(cli("generate", "--model", MODEL, "--adapter", V2, "--prompt", prompt, "--max-tokens", "8", "--json"))["text"]
        self.assertEqual(self.greedy("up-b", "my-style", prompt), expected_v2)
        self.assertEqual(self.greedy("up-a", "my-style", prompt), expected_v1)
        self.assertEqual(self.listed("up-a")["my-style"]["sha256"], card["sha256"])
        self.assertEqual(self.listed("up-b")["my-style"]["sha256"], r.json()["sha256"])

        status, _, body = S.request("DELETE", "/v1/adapters/my-style", key=self.keys["up-a"])
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {**json.loads(body), "id": "my-style", "deleted": True})
        with self.assertRaises(openai.NotFoundError):
            oa(self.keys["up-a"]).completions.create(model="my-style", prompt="hi", max_tokens=1)
        self.assertNotIn("my-style", self.listed("up-a"))
        self.assertEqual(self.greedy("up-b", "my-style", prompt), expected_v2)
        self.assertEqual(S.request("DELETE", "/v1/adapters/my-style", key=self.keys["up-a"])[0], 404)
        uploads = [e for e in audit_entries() if e["action"] == "adapter.upload" and "my-style" in e["target"]]
        self.assertGreaterEqual(len(uploads), 2, uploads)

    def test_bad_uploads_are_400s_naming_the_problem_and_leave_nothing_behind(self):
        adapters_dir = os.path.join(S.data_dir, "adapters")
        weights = os.path.join(V1, "adapter_model.safetensors")
        cases = [
            ("missing name", dict(omit=("name",)), ["name"]),
            ("missing config", dict(omit=("adapter_config.json",)), ["adapter_config.json"]),
            ("missing weights", dict(omit=("adapter_model.safetensors",)), ["adapter_model.safetensors"]),
            ("config not JSON", dict(config=b"{not json"), ["adapter_config"]),
            ("corrupt safetensors", dict(weights=os.urandom(4096)), ["safetensors", "header", "corrupt", "invalid"]),
            ("NaN weights", dict(weights=with_nan(weights)), ["nan"]),
            ("wrong shape", dict(weights=with_wrong_shape(weights)), ["shape"]),
        ]
        for label, kw, words in cases:
            with self.subTest(label):
                before = tree(adapters_dir)
                r = self.upload("up-bad", "bad-one", **kw)
                self.assertEqual(r.status_code, 400, f"{label}: {r.text}")
                message = r.json()["error"]["message"]
                self.assertTrue(any(w.lower() in message.lower() for w in words), f"{label}: {message!r} names none of {words}")
                self.assertEqual(tree(adapters_dir), before, f"{label}: files left under {adapters_dir}")
        self.assertNotIn("bad-one", self.listed("up-bad"))
        with self.assertRaises(openai.NotFoundError):
            oa(self.keys["up-bad"]).completions.create(model="bad-one", prompt="hi", max_tokens=1)
        # A good upload still works afterwards.
        self.assertEqual(self.upload("up-bad", "good-one").status_code, 200)

    def test_the_adapter_quota_refuses_past_max_adapters(self):
        set_limits("up-q", max_adapters=1)
        self.assertEqual(self.upload("up-q", "q1").status_code, 200)
        before = tree(os.path.join(S.data_dir, "adapters"))
        r = self.upload("up-q", "q2", V2)
        self.assertEqual(r.status_code, 403, r.text)
        self.assertEqual(r.json()["error"]["code"], "adapter_quota_exceeded")
        self.assertEqual(tree(os.path.join(S.data_dir, "adapters")), before)
        self.assertEqual(set(self.listed("up-q")), {"q1"})
        self.assertEqual(S.request("DELETE", "/v1/adapters/q1", key=self.keys["up-q"])[0], 200)
        self.assertEqual(self.upload("up-q", "q2", V2).status_code, 200)
        self.assertEqual(set(self.listed("up-q")), {"q2"})


# MARK: the tenant lifecycle

class Lifecycle(unittest.TestCase):
    def request(self, key):
        return oa(key).completions.create(model=MODEL_NAME, prompt="Lifecycle", max_tokens=1)

    def test_remove_restore_and_purge(self):
        d = S.data_dir
        adapters_dir = os.path.join(d, "adapters")
        key = add_tenant("life")
        self.assertTrue(self.request(key).choices)
        files_before = tree(adapters_dir, files_only=True)
        with open(os.path.join(V1, "adapter_config.json"), "rb") as f:
            config = f.read()
        with open(os.path.join(V1, "adapter_model.safetensors"), "rb") as f:
            weights = f.read()
        r = httpx.post(S.base_url + "/v1/adapters", data={"name": "life-ad"}, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                       files={"adapter_config.json": ("adapter_config.json", config), "adapter_model.safetensors": ("adapter_model.safetensors", weights)})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(S.request("PUT", "/v1/prompt-layer", {"system": "Be kind.", "examples": [], "adapter": None}, key=key)[0], 200)

        # Remove: the next request is a 401; the rows stay.
        cli("tenants", "remove", "life", "--data-dir", d)
        with self.assertRaises(openai.AuthenticationError):
            self.request(key)
        self.assertEqual(len(ledger(S, "life")), 1)
        report = {e["tenant"]: e for e in usage_cli()}
        self.assertEqual(report["life"]["requests"], 1)

        # Restore: the same key works again.
        cli("tenants", "restore", "life", "--data-dir", d)
        self.assertTrue(self.request(key).choices)
        self.assertEqual(len(ledger(S, "life")), 2)

        # Purge asks first; "no" erases nothing.
        cli("tenants", "remove", "life", "--data-dir", d)
        rc, out, err = run_cli("tenants", "purge", "life", "--data-dir", d, input="no\n")
        self.assertNotEqual(rc, 0, out + err)
        self.assertEqual(len(db(S, "SELECT id FROM tenants WHERE name = 'life'")), 1)
        self.assertEqual(len(ledger(S, "life")), 2)
        tenant_id = db(S, "SELECT id FROM tenants WHERE name = 'life'")[0]["id"]

        rc, out, err = run_cli("tenants", "purge", "life", "--data-dir", d, "--yes")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(db(S, "SELECT id FROM tenants WHERE name = 'life'"), [])
        self.assertEqual(db(S, "SELECT request_id FROM usage WHERE tenant_id = ?", (tenant_id,)), [])
        self.assertNotIn("life", {e["tenant"] for e in usage_cli()})
        with self.assertRaises(openai.AuthenticationError):
            self.request(key)
        self.assertEqual(tree(adapters_dir, files_only=True), files_before, "the purged tenant's adapter files remain")
        status, _, body = S.request("GET", "/v1/admin/adapters", key=S.admin_key)
        self.assertFalse(any("life-ad" in (a.get("name") or "") for a in json.loads(body)["data"]), body)
        self.assertEqual(S.request("GET", "/v1/admin/tenants/life/prompt-layer", key=S.admin_key)[0], 404)
        actions = {e["action"] for e in audit_entries() if e["target"] == "life" or "life" in e["target"].split()}
        self.assertLessEqual({"tenant.add", "tenant.remove", "tenant.restore", "tenant.purge"}, actions, actions)

        # The name is free again; the old key stays dead.
        new_key = add_tenant("life")
        self.assertTrue(self.request(new_key).choices)
        with self.assertRaises(openai.AuthenticationError):
            self.request(key)

    def test_purge_confirmed_by_typing_the_name(self):
        key = add_tenant("life2")
        self.assertTrue(self.request(key).choices)
        cli("tenants", "remove", "life2", "--data-dir", S.data_dir)
        rc, out, err = run_cli("tenants", "purge", "life2", "--data-dir", S.data_dir, input="life2\n")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(db(S, "SELECT id FROM tenants WHERE name = 'life2'"), [])
        self.assertNotIn("life2", {e["tenant"] for e in usage_cli()})


if __name__ == "__main__":
    unittest.main()
