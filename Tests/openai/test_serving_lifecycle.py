"""`tessera serve` as a process: a bounded load test with a hot swap and an unload, draining
on SIGTERM, the registry across a restart, and `--demo`'s printed examples."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import openai
from openai import OpenAI

from harness import BIN, MODEL, MODEL_NAME, Server, synth_adapter

LOAD_SECONDS = float(os.environ.get("TESSERA_LOAD_SECONDS", "60"))


def client(server, key):
    return OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=300)


class LoadWithSwapAndUnload(unittest.TestCase):
    def test_32_streaming_clients_over_8_tenants_with_a_swap_and_an_unload(self):
        work = tempfile.mkdtemp(prefix="tessera-load-")
        s = Server().start()
        try:
            tenants = [f"t{i}" for i in range(8)]
            keys = {t: s.add_tenant(t) for t in tenants}
            v1 = synth_adapter(os.path.join(work, "v1"), 21)
            v2 = synth_adapter(os.path.join(work, "v2"), 22)
            gone = synth_adapter(os.path.join(work, "gone"), 23)
            s.register("hot", v1, None)
            s.register("gone", gone, None)
            results = []  # (model, outcome, detail, started, ended)
            lock = threading.Lock()
            stop_at = time.time() + LOAD_SECONDS
            unloaded_at = [None]

            def worker(i):
                c = client(s, keys[tenants[i % 8]])
                n = 0
                while time.time() < stop_at:
                    model = [MODEL_NAME, "hot", "gone", "hot"][(i + n) % 4]
                    n += 1
                    started = time.time()
                    try:
                        text, finish = "", None
                        for chunk in c.completions.create(model=model, prompt=f"Client {i} request {n}:", max_tokens=24, temperature=0.7,
                                                          seed=i * 1000 + n, stream=True):
                            if chunk.choices:
                                text += chunk.choices[0].text
                                finish = chunk.choices[0].finish_reason or finish
                        outcome = ("ok", finish)
                    except openai.NotFoundError as e:
                        outcome = ("404", str(e))
                    except openai.APIStatusError as e:
                        outcome = (str(e.status_code), str(e))
                    except Exception as e:  # noqa: BLE001 - any other failure is a test failure
                        outcome = ("error", repr(e))
                    with lock:
                        results.append((model, outcome[0], outcome[1], started, time.time()))

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
            for t in threads:
                t.start()
            time.sleep(min(10, LOAD_SECONDS / 4))
            rss_warm = s.rss_kib()
            time.sleep(LOAD_SECONDS / 4)
            swapped = s.register("hot", v2, None)
            self.assertEqual(swapped["version"], 2)
            time.sleep(LOAD_SECONDS / 8)
            status, _, _ = s.request("DELETE", "/v1/admin/adapters/gone", key=s.admin_key)
            self.assertEqual(status, 200)
            unloaded_at[0] = time.time()
            for t in threads:
                t.join(timeout=LOAD_SECONDS + 240)
            rss_end = s.rss_kib()

            self.assertGreater(len(results), 64)
            bad = [r for r in results if r[1] not in ("ok", "404", "503")]
            self.assertEqual(bad, [], bad[:5])
            # Only the unloaded adapter may be missing, and only for requests begun after the unload began.
            for model, outcome, detail, started, ended in results:
                if outcome == "404":
                    self.assertEqual(model, "gone", detail)
                    self.assertGreater(ended, unloaded_at[0] - 5)
            self.assertTrue(any(r[0] == "hot" and r[1] == "ok" for r in results))
            self.assertEqual([r for r in results if r[0] == "hot" and r[1] != "ok"], [])
            self.assertLess(abs(rss_end - rss_warm) / rss_warm, 0.10, f"RSS {rss_warm} KiB after warm-up, {rss_end} KiB at the end")
            self.assertEqual(s.request("GET", "/health")[0], 200)
        finally:
            s.stop()
            shutil.rmtree(work, ignore_errors=True)


class Drain(unittest.TestCase):
    def test_sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0(self):
        s = Server(extra_args=["--drain-seconds", "60"]).start()
        key = s.add_tenant("drainer")
        outcomes = {}

        def long_request(i):
            try:
                r = client(s, key).completions.create(model=MODEL_NAME, prompt=f"Story {i}:", max_tokens=96, temperature=0,
                                                      extra_body={"ignore_eos": True}, stream=True, stream_options={"include_usage": True})
                chunks = list(r)
                outcomes[i] = ("ok", chunks[-1].usage.completion_tokens)
            except Exception as e:  # noqa: BLE001
                outcomes[i] = ("error", repr(e))

        threads = [threading.Thread(target=long_request, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        # Wait until every request is running in the engine.
        deadline = time.time() + 60
        while time.time() < deadline:
            text = s.request("GET", "/metrics")[2].decode()
            running = float(next(l for l in text.splitlines() if l.startswith("vllm:num_requests_running ")).split()[1])
            if running >= 4:
                break
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, headers, body = s.request("POST", "/v1/completions", {"model": MODEL_NAME, "prompt": "late", "max_tokens": 2}, key=key)
        self.assertEqual(status, 503, body)
        self.assertIn("retry-after", headers)
        self.assertEqual(s.request("GET", "/ready")[0], 503)
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(s.proc.wait(timeout=60), 0, s.log_text()[-2000:])
        self.assertEqual(outcomes, {i: ("ok", 96) for i in range(4)})


class QueueLimits(unittest.TestCase):
    def test_a_full_tenant_queue_is_a_503_with_retry_after_and_the_config_file_sets_it(self):
        data = tempfile.mkdtemp(prefix="tessera-queue-")
        config = os.path.join(data, "tessera.yaml")
        with open(config, "w") as f:
            f.write("engine:\n  max_running_per_tenant: 1\n  max_queued_per_tenant: 1\nserver:\n  max_choices: 2\n")
        s = Server(data_dir=data, extra_args=["--config", config]).start()
        try:
            key = s.add_tenant("busy")
            other = s.add_tenant("calm")
            statuses = []
            lock = threading.Lock()

            def one():
                r = s.request("POST", "/v1/completions", {"model": MODEL_NAME, "prompt": "Go:", "max_tokens": 64, "ignore_eos": True}, key=key)
                with lock:
                    statuses.append((r[0], r[1].get("retry-after")))

            threads = [threading.Thread(target=one) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            # Another tenant is not affected by busy's full queue.
            self.assertEqual(s.request("POST", "/v1/completions", {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 2}, key=other)[0], 200)
            for t in threads:
                t.join(120)
            self.assertIn(200, [st for st, _ in statuses])
            refused = [(st, ra) for st, ra in statuses if st != 200]
            self.assertTrue(refused, statuses)
            self.assertTrue(all(st == 503 and ra for st, ra in refused), statuses)
            # server.max_choices from the file.
            self.assertEqual(s.request("POST", "/v1/completions", {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 2, "n": 3}, key=other)[0], 400)
        finally:
            s.stop()
            shutil.rmtree(data, ignore_errors=True)


class Restart(unittest.TestCase):
    def test_the_registry_survives_a_restart_and_loads_on_first_use(self):
        work = tempfile.mkdtemp(prefix="tessera-restart-")
        s = Server().start()
        try:
            key = s.add_tenant("keeper")
            path = synth_adapter(os.path.join(work, "keep"), 31)
            s.register("keep", path, "keeper")
            second = s.register("keep", path, "keeper")
            prompt = "Remember this:"
            before = client(s, key).completions.create(model="keep", prompt=prompt, max_tokens=12, temperature=0).choices[0].text
            self.assertEqual(s.stop(), 0)
            s2 = Server(data_dir=s.data_dir).start()
            try:
                status, _, body = s2.request("GET", "/v1/admin/adapters", key=s2.admin_key)
                row = {r["name"]: r for r in json.loads(body)["data"]}["keep"]
                self.assertEqual((row["version"], row["owner"], row["sha256"]), (second["version"], "keeper", second["sha256"]))
                self.assertEqual(row["state"], "registered")
                after = client(s2, key).completions.create(model="keep", prompt=prompt, max_tokens=12, temperature=0).choices[0].text
                self.assertEqual(after, before)
                status, _, body = s2.request("GET", "/v1/admin/adapters", key=s2.admin_key)
                self.assertEqual({r["name"]: r for r in json.loads(body)["data"]}["keep"]["state"], "resident")
                # A tenant removed while the server runs takes its keys and adapters with it.
                subprocess.run([BIN, "tenants", "remove", "keeper", "--data-dir", s2.data_dir], check=True, capture_output=True)
                with self.assertRaises(openai.AuthenticationError):
                    client(s2, key).models.list()
                time.sleep(2.5)
                status, _, body = s2.request("GET", "/v1/admin/adapters", key=s2.admin_key)
                self.assertNotIn("keep", {r["name"] for r in json.loads(body)["data"]})
            finally:
                s2.stop()
        finally:
            s.stop()
            shutil.rmtree(work, ignore_errors=True)


class Demo(unittest.TestCase):
    def test_demo_prints_keys_and_examples_that_work(self):
        data = tempfile.mkdtemp(prefix="tessera-demo-")
        s = Server(data_dir=data, extra_args=["--demo"], admin_key="")
        s.start()
        try:
            deadline = time.time() + 60
            while "PY\n" not in s.log_text() and time.time() < deadline:
                time.sleep(0.2)
            out = s.log_text()
            curl = next(l for l in out.splitlines() if l.startswith("curl -s") and "chat/completions" in l)
            r = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=120)
            reply = json.loads(r.stdout)
            self.assertTrue(reply["choices"][0]["message"]["content"], r.stdout)
            self.assertEqual(reply["model"], "alice-haiku")
            marker = "/bin/python - <<'PY'\n"
            self.assertIn("python3 -m venv /tmp/tessera-openai && /tmp/tessera-openai/bin/pip install -q openai", out)
            py = out[out.index(marker) + len(marker):]
            py = py[:py.index("\nPY\n")]
            venv_python = os.path.join(os.path.dirname(os.path.dirname(openai.__file__)), "..", "..", "..", "bin", "python")
            r = subprocess.run([os.path.abspath(venv_python), "-c", py], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.strip())
            keys = re.findall(r"key (tsr_\S+)", out)
            self.assertEqual(len(keys), 3)
            # alice cannot see bob's adapter.
            models = {m.id for m in client(s, keys[0]).models.list().data}
            self.assertEqual(models, {MODEL_NAME, "alice-haiku"})
        finally:
            s.stop()
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
