"""Starts real `tessera serve` processes on 127.0.0.1 for the openai-client tests.

The binary is $TESSERA_BIN or .build/debug/tessera; the model is $TESSERA_TEST_MODEL or the
default model in the cache (tools/test.sh pulls it)."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, ".build", "debug", "tessera"))
CACHE = os.environ.get("TESSERA_CACHE", os.path.expanduser("~/.cache/tessera"))
MODEL = os.environ.get("TESSERA_TEST_MODEL", os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
MODEL_NAME = os.path.splitext(os.path.basename(MODEL))[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, check=True):
    """Runs the tessera CLI; returns stdout."""
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise RuntimeError(f"tessera {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p.stdout


def synth_adapter(out_dir, seed, rank=8):
    """A random rank-r PEFT adapter on every projection; returns its directory."""
    tmp = out_dir + ".tmp"
    cli("adapters", "synth", "--model", MODEL, "--rank", str(rank), "--targets", "all", "--count", "1", "--seed", str(seed), "--out", tmp)
    shutil.move(os.path.join(tmp, "adapter-000"), out_dir)
    shutil.rmtree(tmp)
    return out_dir


class Server:
    """One `tessera serve` process with its own data directory and an admin key."""

    def __init__(self, data_dir=None, extra_args=(), admin_key="tsr_test_admin_key_0123456789"):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="tessera-http-")
        self.port = free_port()
        self.admin_key = admin_key
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=180):
        env = dict(os.environ, TESSERA_ADMIN_KEY=self.admin_key)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "--model", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--data-dir", self.data_dir, *self.extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            try:
                status, _, _ = self.request("GET", "/health")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become healthy: " + self.log_text()[-3000:])

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def request(self, method, path, body=None, key=None, headers=None, raw=None, timeout=120):
        """One HTTP request; returns (status, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
        out = (r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
        conn.close()
        return out

    def add_tenant(self, name, admin=False):
        args = ["tenants", "add", name, "--data-dir", self.data_dir, "--json"] + (["--admin"] if admin else [])
        return json.loads(cli(*args))["api_key"]

    def register(self, name, path, owner):
        status, _, body = self.request("POST", "/v1/admin/adapters", {"name": name, "path": path, "owner": owner}, key=self.admin_key)
        if status != 200:
            raise RuntimeError(f"register {name}: {status} {body!r}")
        return json.loads(body)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0
