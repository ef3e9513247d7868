"""Per-tenant limits, the usage ledger and the audit trail (issue 22, first part), against a
real `tessera serve` on 127.0.0.1 with the official openai client."""
import json
import os
import signal
import sqlite3
import threading
import time
import unittest

import openai

from harness import MODEL_NAME, Server, cli


def client(server, key, retries=0):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=retries, timeout=120)


def set_limits(server, tenant, *args):
    return json.loads(cli("tenants", "set-limits", tenant, "--data-dir", server.data_dir, *args))


def rows(server):
    db = sqlite3.connect(f"file:{os.path.join(server.data_dir, 'tessera.sqlite')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT u.request_id, t.name, u.prompt_tokens, u.completion_tokens, u.finish_reason, u.status "
                          "FROM usage u JOIN tenants t ON t.id = u.tenant_id").fetchall()
    finally:
        db.close()


class Limits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server().start()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def test_rpm_is_a_429_with_retry_headers_changed_without_a_restart(self):
        key = self.s.add_tenant("rpm-tenant")
        other = self.s.add_tenant("rpm-neighbour")
        limits = set_limits(self.s, "rpm-tenant", "--rpm", "2")["limits"]
        self.assertEqual(limits["rpm"], 2)
        c = client(self.s, key)
        for _ in range(2):
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        with self.assertRaises(openai.RateLimitError) as raised:
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        e = raised.exception
        self.assertEqual(e.code, "rate_limit_exceeded")
        self.assertGreater(int(e.response.headers["retry-after-ms"]), 1000)  # 2 a minute: the next one in ~30 s
        self.assertGreaterEqual(int(e.response.headers["retry-after"]), 1)
        # Another tenant is untouched by this one's limit.
        client(self.s, other).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        # Clearing the limit applies on the next request, no restart.
        set_limits(self.s, "rpm-tenant", "--rpm", "0")
        c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)

    def test_the_client_retries_a_rate_limit_and_succeeds_once_the_bucket_refills(self):
        key = self.s.add_tenant("refill")
        set_limits(self.s, "refill", "--rpm", "60")  # one a second after the burst
        c = client(self.s, key)
        for _ in range(200):  # drain the burst until the first refusal
            try:
                c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
            except openai.RateLimitError:
                break
        else:
            self.fail("never rate limited")
        started = time.time()
        r = client(self.s, key, retries=3).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        self.assertTrue(r.choices)
        self.assertGreater(time.time() - started, 0.2, "it must have waited for the bucket")

    def test_monthly_budget_is_insufficient_quota_raised_at_once_with_one_alert(self):
        key = self.s.add_tenant("budget")
        set_limits(self.s, "budget", "--monthly-tokens", "40", "--alert-percent", "50")
        c = client(self.s, key, retries=5)
        for _ in range(40):
            try:
                c.completions.create(model=MODEL_NAME, prompt="Count to three:", max_tokens=4)
            except openai.RateLimitError:
                break
        started = time.time()
        with self.assertRaises(openai.RateLimitError) as raised:
            c.completions.create(model=MODEL_NAME, prompt="Count to three:", max_tokens=4)
        self.assertLess(time.time() - started, 2, "insufficient_quota must not be retried")
        self.assertEqual(raised.exception.code, "insufficient_quota")
        self.assertEqual(raised.exception.response.headers["x-should-retry"], "false")
        audit = json.loads(cli("audit", "--data-dir", self.s.data_dir, "--json"))
        self.assertEqual(len([a for a in audit if a["action"] == "budget.alert" and a["target"] == "budget"]), 1)
        _, _, metrics = self.s.request("GET", "/metrics")
        self.assertIn('tessera_tenant_budget_alert{tenant="budget"} 1', metrics.decode())

    def test_concurrency_and_max_tokens(self):
        key = self.s.add_tenant("narrow")
        set_limits(self.s, "narrow", "--concurrency", "1", "--max-tokens", "8")
        c = client(self.s, key)
        with self.assertRaises(openai.BadRequestError) as raised:
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=9)
        self.assertIn("max_tokens", str(raised.exception))
        r = c.completions.create(model=MODEL_NAME, prompt="Once upon a time", extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, 8, "without max_tokens the limit is the default")
        stream = c.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=8, stream=True)
        next(iter(stream))
        with self.assertRaises(openai.RateLimitError):
            c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
        stream.close()

    def test_admin_route_sets_limits_and_a_tenant_key_gets_403(self):
        key = self.s.add_tenant("routed")
        status, _, body = self.s.request("PUT", "/v1/admin/tenants/routed/limits", {"tpm": 500, "weight": 2.0}, key=self.s.admin_key)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["limits"]["tpm"], 500)
        self.assertEqual(json.loads(body)["limits"]["weight"], 2.0)
        status, _, body = self.s.request("PUT", "/v1/admin/tenants/routed/limits", {"tpm": None, "bogus": 1}, key=self.s.admin_key)
        self.assertEqual(status, 400)
        self.assertIn("bogus", body.decode())
        self.assertEqual(self.s.request("GET", "/v1/admin/tenants/routed/limits", key=key)[0], 403)
        self.assertEqual(self.s.request("GET", "/v1/admin/tenants/nobody/limits", key=self.s.admin_key)[0], 404)


class Ledger(unittest.TestCase):
    def test_totals_equal_the_responses_usage_and_tenants_see_only_their_own(self):
        s = Server().start()
        try:
            keys = {t: s.add_tenant(t) for t in ("ledger-a", "ledger-b")}
            sums = {t: [0, 0, 0] for t in keys}
            ids = []
            for i in range(12):
                t = "ledger-a" if i % 3 else "ledger-b"
                c = client(s, keys[t])
                if i % 2:
                    raw = c.completions.with_raw_response.create(model=MODEL_NAME, prompt=f"Item {i}:", max_tokens=3)
                    ids.append(raw.headers["x-request-id"])
                    u = raw.parse().usage
                else:
                    chunks = list(c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": f"Say {i}"}],
                                                            max_tokens=3, stream=True, stream_options={"include_usage": True}))
                    u = chunks[-1].usage
                sums[t][0] += 1
                sums[t][1] += u.prompt_tokens
                sums[t][2] += u.completion_tokens
            report = {r["tenant"]: r for r in json.loads(cli("usage", "--data-dir", s.data_dir, "--by", "tenant", "--json"))}
            for t, (n, p, comp) in sums.items():
                self.assertEqual((report[t]["requests"], report[t]["prompt_tokens"], report[t]["completion_tokens"]), (n, p, comp), t)
            stored = {r[0] for r in rows(s)}
            self.assertTrue(set(ids) <= stored)
            status, _, body = s.request("GET", "/v1/usage?by=tenant", key=keys["ledger-b"])
            self.assertEqual(status, 200)
            self.assertEqual([r["tenant"] for r in json.loads(body)["data"]], ["ledger-b"])
            self.assertEqual(s.request("GET", "/v1/admin/usage", key=keys["ledger-a"])[0], 403)
            by_adapter = json.loads(cli("usage", "--data-dir", s.data_dir, "--by", "adapter", "--json"))
            self.assertEqual(by_adapter[0]["adapter"], None)
            self.assertEqual(sum(r["requests"] for r in by_adapter), 12)
            # A disconnected stream is billed for the tokens computed.
            stream = client(s, keys["ledger-a"]).completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=64,
                                                                     stream=True, extra_body={"ignore_eos": True})
            for _, _ in zip(stream, range(3)):
                pass
            stream.close()
            deadline = time.time() + 10
            while time.time() < deadline and not [r for r in rows(s) if r[4] == "disconnected"]:
                time.sleep(0.1)
            gone = [r for r in rows(s) if r[4] == "disconnected"]
            self.assertEqual(len(gone), 1)
            self.assertGreaterEqual(gone[0][3], 1)
        finally:
            s.stop()

    def test_kill_9_loses_no_row_of_a_completed_response(self):
        s = Server().start()
        key = s.add_tenant("killed")
        done, stop = [], threading.Event()
        lock = threading.Lock()

        def worker():
            c = client(s, key)
            while not stop.is_set():
                try:
                    raw = c.completions.with_raw_response.create(model=MODEL_NAME, prompt="Tell me", max_tokens=2)
                    raw.parse()
                    with lock:
                        done.append(raw.headers["x-request-id"])
                except Exception:
                    return

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(5)
        with lock:
            completed = list(done)  # every response recorded here had fully arrived
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        stop.set()
        for t in threads:
            t.join(30)
        self.assertGreater(len(completed), 5)
        stored = [r[0] for r in rows(s)]
        self.assertEqual(len(stored), len(set(stored)), "no duplicate rows")
        missing = set(completed) - set(stored)
        self.assertFalse(missing, f"{len(missing)} completed responses have no row")
        s2 = Server(data_dir=s.data_dir).start()
        try:
            report = json.loads(cli("usage", "--data-dir", s.data_dir, "--by", "tenant", "--json"))
            self.assertEqual([r["requests"] for r in report if r["tenant"] == "killed"], [len(stored)])
        finally:
            s2.stop()


class Audit(unittest.TestCase):
    def test_failed_keys_are_one_entry_per_prefix_and_minute_and_no_entry_holds_a_key(self):
        s = Server().start()
        try:
            key = s.add_tenant("audited")
            cli("tenants", "rotate-key", "audited", "--data-dir", s.data_dir, "--json")
            for _ in range(30):
                self.assertEqual(s.request("GET", "/v1/models", key="tsr_WRONGwrongWRONGwrong")[0], 401)
            deadline = time.time() + 5
            entries = []
            while time.time() < deadline:
                entries = [a for a in json.loads(cli("audit", "--data-dir", s.data_dir, "--json")) if a["action"] == "auth.failed"]
                if entries and sum(int(a["result"].split()[0]) for a in entries) >= 30:
                    break
                time.sleep(0.2)
            self.assertLessEqual(len(entries), 2, "aggregated per minute")
            self.assertEqual(sum(int(a["result"].split()[0]) for a in entries), 30)
            self.assertEqual(entries[0]["actor"], "key:tsr_WRON")
            text = cli("audit", "--data-dir", s.data_dir, "--json")
            self.assertNotIn(key, text)
            self.assertNotIn("tsr_WRONGwrongWRONGwrong", text)
            actions = {a["action"] for a in json.loads(text)}
            self.assertTrue({"tenant.add", "key.rotate", "auth.failed"} <= actions, actions)
            status, _, body = s.request("GET", "/v1/admin/audit", key=s.admin_key)
            self.assertEqual(status, 200)
            self.assertTrue(json.loads(body)["data"])
        finally:
            s.stop()


class Lifecycle(unittest.TestCase):
    def test_remove_is_soft_restore_brings_it_back_purge_erases(self):
        s = Server().start()
        try:
            key = s.add_tenant("leaving")
            client(s, key).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1)
            cli("tenants", "remove", "leaving", "--data-dir", s.data_dir)
            with self.assertRaises(openai.AuthenticationError):
                client(s, key).models.list()
            report = json.loads(cli("usage", "--data-dir", s.data_dir, "--json"))
            self.assertEqual([r["requests"] for r in report if r["tenant"] == "leaving"], [1], "usage rows are kept")
            cli("tenants", "restore", "leaving", "--data-dir", s.data_dir)
            self.assertTrue(client(s, key).models.list().data)
            cli("tenants", "remove", "leaving", "--data-dir", s.data_dir)
            refused = cli("tenants", "purge", "leaving", "--data-dir", s.data_dir, check=False)
            self.assertTrue(json.loads(cli("usage", "--data-dir", s.data_dir, "--json")), "nothing erased without confirmation")
            cli("tenants", "purge", "leaving", "--data-dir", s.data_dir, "--yes")
            self.assertEqual([r for r in json.loads(cli("usage", "--data-dir", s.data_dir, "--json")) if r["tenant"] == "leaving"], [])
            self.assertIn("tenant.purge", {a["action"] for a in json.loads(cli("audit", "--data-dir", s.data_dir, "--json"))})
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main()
