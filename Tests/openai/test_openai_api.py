"""The OpenAI API of `tessera serve`, checked with the official `openai` client against a real
server process on 127.0.0.1: completions and chat, streamed with usage, n, stop, logprobs,
model listing, adapters by name, tenancy, keys, bad requests, admin and vLLM routes, metrics."""
import json
import os
import shutil
import tempfile
import unittest

import openai
from openai import OpenAI

from harness import MODEL, MODEL_NAME, Server, cli, synth_adapter

S = None  # the shared server
KEYS = {}
ADAPTERS = {}
WORK = None


def setUpModule():
    global S, WORK
    WORK = tempfile.mkdtemp(prefix="tessera-openai-")
    for name, seed in [("alice-a", 11), ("bob-b", 12), ("shared-s", 13), ("alice-a-v2", 14)]:
        ADAPTERS[name] = synth_adapter(os.path.join(WORK, name), seed)
    S = Server().start()
    for t in ["alice", "bob", "carol"]:
        KEYS[t] = S.add_tenant(t)
    S.register("alice-a", ADAPTERS["alice-a"], "alice")
    S.register("bob-b", ADAPTERS["bob-b"], "bob")
    S.register("shared-s", ADAPTERS["shared-s"], None)


def tearDownModule():
    if S:
        S.stop()
    shutil.rmtree(WORK, ignore_errors=True)


def client(tenant="alice", key=None):
    return OpenAI(base_url=S.base_url + "/v1", api_key=key or KEYS[tenant], max_retries=0, timeout=120)


def error_of(status, body):
    return status, json.loads(body)["error"]


class CompletionsAndChat(unittest.TestCase):
    def test_completion_returns_text_and_usage(self):
        r = client().completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=8, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(len(r.choices), 1)
        self.assertTrue(r.choices[0].text.strip())
        self.assertEqual(r.usage.completion_tokens, 8)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 8)

    def test_chat_uses_the_chat_template(self):
        r = client().chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertTrue(r.choices[0].message.content)
        # The template wraps the message: more prompt tokens than the bare text has.
        bare = json.loads(cli("tokenize", "--model", MODEL, "--text", "Say hello.", "--json"))["token_ids"]
        self.assertGreater(r.usage.prompt_tokens, len(bare) + 4)

    def test_chat_stream_has_role_first_finish_last_and_usage_before_done(self):
        stream = client().chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        with_choices = [c for c in chunks if c.choices]
        self.assertIsNotNone(with_choices[-1].choices[0].finish_reason)
        self.assertTrue(all(c.choices[0].finish_reason is None for c in with_choices[:-1]))
        self.assertEqual(chunks[-1].choices, [])
        self.assertIsNotNone(chunks[-1].usage)
        text = "".join(c.choices[0].delta.content or "" for c in with_choices)
        plain = client().chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, temperature=0)
        self.assertEqual(text, plain.choices[0].message.content)
        self.assertEqual(chunks[-1].usage.completion_tokens, plain.usage.completion_tokens)

    def test_completion_stream_with_usage(self):
        chunks = list(client().completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=10, temperature=0, stream=True,
                                                  stream_options={"include_usage": True}))
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 10)
        self.assertEqual([c for c in chunks if c.choices][-1].choices[0].finish_reason, "length")

    def test_n_two_gives_two_choices(self):
        r = client().chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8,
                                             temperature=1.0, seed=7, n=2)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])
        # Each choice samples with its own seed.
        self.assertNotEqual(r.choices[0].message.content, r.choices[1].message.content)
        self.assertGreaterEqual(r.usage.completion_tokens, 2)
        streamed = list(client().completions.create(model=MODEL_NAME, prompt="Red, green,", max_tokens=6, n=2, stream=True, temperature=0))
        self.assertEqual({c.choices[0].index for c in streamed if c.choices}, {0, 1})

    def test_stop_string_ends_the_text_before_it(self):
        full = client().completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0).choices[0].text
        self.assertIn("6", full)
        stop = full[full.index("6"):][:2]
        r = client().completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[stop, "zzz"])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertEqual(r.choices[0].text, full[:full.index(stop)])

    def test_chat_logprobs_with_top_alternatives(self):
        r = client().chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0,
                                             logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        for entry in content:
            self.assertEqual(len(entry.top_logprobs), 3)
            self.assertLessEqual(entry.logprob, 0)
            # Greedy: the chosen token is the most likely one.
            self.assertAlmostEqual(entry.logprob, entry.top_logprobs[0].logprob, places=4)
            self.assertGreaterEqual(entry.top_logprobs[0].logprob, entry.top_logprobs[2].logprob)

    def test_completion_logprobs(self):
        r = client().completions.create(model=MODEL_NAME, prompt="The sky is", max_tokens=4, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 4)
        self.assertEqual(len(lp.token_logprobs), 4)
        self.assertTrue(all(len(t) <= 2 and len(t) >= 1 for t in lp.top_logprobs))
        self.assertEqual("".join(lp.tokens), r.choices[0].text)

    def test_penalties_change_sampling_and_stay_in_range(self):
        base = client().completions.create(model=MODEL_NAME, prompt="the the the the", max_tokens=12, temperature=0).choices[0].text
        penalised = client().completions.create(model=MODEL_NAME, prompt="the the the the", max_tokens=12, temperature=0,
                                                frequency_penalty=2.0, presence_penalty=2.0).choices[0].text
        self.assertNotEqual(base, penalised)


class ModelsAndAdapters(unittest.TestCase):
    def test_listing_shows_base_own_and_shared_adapters_only(self):
        ids = {m.id: m for m in client("alice").models.list().data}
        self.assertEqual(set(ids), {MODEL_NAME, "alice-a", "shared-s"})
        self.assertEqual(ids["alice-a"].parent, MODEL_NAME)
        self.assertIsNone(getattr(ids[MODEL_NAME], "parent", None))
        self.assertGreater(ids[MODEL_NAME].max_model_len, 0)
        self.assertEqual(set(m.id for m in client("bob").models.list().data), {MODEL_NAME, "bob-b", "shared-s"})

    def test_greedy_text_over_http_equals_tessera_generate(self):
        prompt = "Write one sentence about mosaics."
        for model, adapter in [(MODEL_NAME, None), ("alice-a", ADAPTERS["alice-a"])]:
            args = ["generate", "--model", MODEL, "--prompt", prompt, "--max-tokens", "24", "--json"] + (["--adapter", adapter] if adapter else [])
            expected = json.loads(cli(*args))["text"]
            got = client("alice").completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0).choices[0].text
            self.assertEqual(got, expected, model)

    def test_an_adapter_changes_the_output(self):
        prompt = "My favourite food is"
        base = client("alice").completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=24, temperature=0, logprobs=0)
        tuned = client("alice").completions.create(model="alice-a", prompt=prompt, max_tokens=24, temperature=0, logprobs=0)
        self.assertNotEqual(base.choices[0].logprobs.token_logprobs, tuned.choices[0].logprobs.token_logprobs)


class Tenancy(unittest.TestCase):
    def not_found(self, tenant, model):
        with self.assertRaises(openai.NotFoundError) as ctx:
            client(tenant).completions.create(model=model, prompt="hi", max_tokens=2)
        return ctx.exception

    def test_another_tenants_adapter_answers_as_a_missing_one(self):
        theirs = self.not_found("alice", "bob-b")
        missing = self.not_found("alice", "no-such-adapter")
        self.assertEqual(theirs.code, "model_not_found")
        self.assertEqual(theirs.body["param"], "model")
        self.assertEqual(theirs.body["message"].replace("bob-b", "X"), missing.body["message"].replace("no-such-adapter", "X"))
        # Raw bodies too, and /v1/models/{id}.
        a = S.request("GET", "/v1/models/bob-b", key=KEYS["alice"])
        b = S.request("GET", "/v1/models/no-such-adapter", key=KEYS["alice"])
        self.assertEqual(a[0], 404)
        self.assertEqual(a[2].replace(b"bob-b", b"X"), b[2].replace(b"no-such-adapter", b"X"))
        with self.assertRaises(openai.NotFoundError):
            client("alice").chat.completions.create(model="bob-b", messages=[{"role": "user", "content": "hi"}], max_tokens=2)

    def test_a_tenant_cannot_use_admin_routes_whatever_the_name(self):
        for path in ["/v1/admin/adapters/bob-b", "/v1/admin/adapters/no-such-adapter"]:
            status, _, body = S.request("DELETE", path, key=KEYS["alice"])
            self.assertEqual(status, 403)
        self.assertEqual(S.request("DELETE", "/v1/admin/adapters/bob-b", key=KEYS["alice"])[2],
                         S.request("DELETE", "/v1/admin/adapters/no-such-adapter", key=KEYS["alice"])[2])
        self.assertEqual(S.request("GET", "/v1/admin/adapters", key=KEYS["alice"])[0], 403)
        self.assertEqual(S.request("POST", "/v1/unload_lora_adapter", {"lora_name": "bob-b"}, key=KEYS["alice"])[0], 403)
        with self.assertRaises(openai.PermissionDeniedError):
            client("alice").get("/admin/adapters", cast_to=object)
        # bob's adapter still serves bob.
        self.assertTrue(client("bob").completions.create(model="bob-b", prompt="hi", max_tokens=2).choices)

    def test_admin_sees_and_uses_every_adapter(self):
        status, _, body = S.request("GET", "/v1/admin/adapters", key=S.admin_key)
        self.assertEqual(status, 200)
        rows = {r["name"]: r for r in json.loads(body)["data"]}
        self.assertLessEqual({"alice-a", "bob-b", "shared-s"}, set(rows))
        self.assertEqual(rows["bob-b"]["owner"], "bob")
        self.assertIsNone(rows["shared-s"]["owner"])
        self.assertEqual(len(rows["bob-b"]["sha256"]), 64)
        self.assertIn(rows["bob-b"]["state"], ["registered", "loading", "resident", "evicted"])
        self.assertEqual(rows["bob-b"]["rank"], 8)
        admin = OpenAI(base_url=S.base_url + "/v1", api_key=S.admin_key, max_retries=0)
        self.assertTrue(admin.completions.create(model="bob-b", prompt="hi", max_tokens=2).choices)

    def test_missing_wrong_rotated_and_removed_keys_get_401(self):
        with self.assertRaises(openai.AuthenticationError):
            client(key="tsr_not_a_real_key").models.list()
        status, _, _ = S.request("GET", "/v1/models")
        self.assertEqual(status, 401)
        old = S.add_tenant("dave")
        self.assertTrue(client(key=old).models.list().data)
        new = json.loads(cli("tenants", "rotate-key", "dave", "--data-dir", S.data_dir, "--json"))
        self.assertEqual(new["tenant"], "dave")
        with self.assertRaises(openai.AuthenticationError):
            client(key=old).models.list()
        self.assertTrue(client(key=new["api_key"]).models.list().data)
        cli("tenants", "remove", "dave", "--data-dir", S.data_dir)
        with self.assertRaises(openai.AuthenticationError):
            client(key=new["api_key"]).completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2)

    def test_keys_are_stored_hashed(self):
        key = S.add_tenant("erin")
        with open(os.path.join(S.data_dir, "tessera.sqlite"), "rb") as f:
            db = f.read()
        for name in os.listdir(S.data_dir):
            if name.startswith("tessera.sqlite-"):
                with open(os.path.join(S.data_dir, name), "rb") as f:
                    db += f.read()
        self.assertNotIn(key.encode(), db)
        self.assertNotIn(key.encode(), S.log_text().encode())


class BadRequests(unittest.TestCase):
    def expect_400(self, body=None, raw=None, field=None, path="/v1/chat/completions", status=400):
        code, _, payload = S.request("POST", path, body=body, raw=raw, key=KEYS["carol"])
        self.assertEqual(code, status, payload)
        err = json.loads(payload)["error"]
        self.assertTrue(err["message"])
        if field:
            self.assertIn(field, err["message"])
        return err

    def test_each_bad_request_is_a_4xx_naming_the_field_and_the_server_keeps_serving(self):
        chat = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]}
        self.expect_400(raw=b"{not json")
        self.expect_400(raw=b'{"model": "' + bytes([0xff, 0xfe]) + b'"}')
        self.expect_400(raw=b"[1, 2]")
        self.expect_400({**chat, "max_tokens": "ten"}, field="max_tokens")
        self.expect_400({**chat, "temperature": "hot"}, field="temperature")
        self.expect_400({**chat, "max_tokens": -5}, field="max_tokens")
        self.expect_400({**chat, "max_tokens": 10_000_000}, field="max_tokens")
        self.expect_400({**chat, "n": 1000}, field="n")
        self.expect_400({**chat, "stop": ["a", "b", "c", "d", "e"]}, field="stop")
        self.expect_400({**chat, "frobnicate": True}, field="frobnicate")
        self.expect_400({**chat, "temperature": 3}, field="temperature")
        self.expect_400({**chat, "top_p": 1.5}, field="top_p")
        self.expect_400({**chat, "presence_penalty": -3}, field="presence_penalty")
        self.expect_400({**chat, "top_logprobs": 25, "logprobs": True}, field="top_logprobs")
        self.expect_400({**chat, "tools": [{"type": "function", "function": {"name": "f"}}]}, field="tools")
        self.expect_400({**chat, "response_format": {"type": "json_object"}}, field="response_format")
        self.expect_400({"model": MODEL_NAME, "messages": []}, field="messages")
        self.expect_400({"model": MODEL_NAME}, field="messages")
        self.expect_400({"messages": [{"role": "user", "content": "hi"}]}, field="model")
        self.expect_400({"model": MODEL_NAME, "messages": [{"role": "wizard", "content": "hi"}]}, field="role")
        err = self.expect_400({"model": MODEL_NAME, "prompt": "word " * 9000, "max_tokens": 4}, path="/v1/completions", field="context length")
        self.assertIn("8192", err["message"])
        self.expect_400({"model": MODEL_NAME, "prompt": 5}, path="/v1/completions", field="prompt")
        self.expect_400({"model": MODEL_NAME, "prompt": "hi", "logprobs": 9}, path="/v1/completions", field="logprobs")
        # Over the body limit (default 1 MiB): 413.
        self.expect_400(raw=json.dumps({**chat, "pad": "x" * (2 << 20)}).encode(), status=413)
        with self.assertRaises(openai.BadRequestError) as ctx:
            client("carol").chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], extra_body={"bogus": 1})
        self.assertEqual(ctx.exception.body["param"], "bogus")
        # Still serving.
        self.assertTrue(client("carol").chat.completions.create(model=MODEL_NAME, messages=chat["messages"], max_tokens=3).choices)
        self.assertEqual(S.request("GET", "/health")[0], 200)

    def test_ignored_fields_are_accepted(self):
        r = client("carol").chat.completions.create(model=MODEL_NAME, messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                                                    max_completion_tokens=3, store=False, metadata={"a": "b"}, user="end-user-1")
        self.assertLessEqual(r.usage.completion_tokens, 3)
        self.assertTrue(r.choices[0].message.content)


class AdminRoutes(unittest.TestCase):
    def test_hot_swap_moves_the_name_to_the_new_version(self):
        first = S.register("swap-me", ADAPTERS["alice-a"], "carol")
        second = S.register("swap-me", ADAPTERS["alice-a-v2"], "carol")
        self.assertEqual(second["version"], first["version"] + 1)
        self.assertNotEqual(first["sha256"], second["sha256"])
        self.assertEqual(second["state"], "resident")
        prompt = "Tell me a fact."
        expected = json.loads(cli("generate", "--model", MODEL, "--prompt", prompt, "--max-tokens", "16", "--json", "--adapter", ADAPTERS["alice-a-v2"]))["text"]
        self.assertEqual(client("carol").completions.create(model="swap-me", prompt=prompt, max_tokens=16, temperature=0).choices[0].text, expected)
        # A failed load leaves the old version serving.
        status, _, body = S.request("POST", "/v1/admin/adapters", {"name": "swap-me", "path": "/nonexistent", "owner": "carol"}, key=S.admin_key)
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["error"]["param"], "path")
        self.assertEqual(client("carol").completions.create(model="swap-me", prompt=prompt, max_tokens=16, temperature=0).choices[0].text, expected)
        self.assertEqual(S.request("DELETE", "/v1/admin/adapters/swap-me", key=S.admin_key)[0], 200)
        with self.assertRaises(openai.NotFoundError):
            client("carol").completions.create(model="swap-me", prompt=prompt, max_tokens=2)
        self.assertEqual(S.request("DELETE", "/v1/admin/adapters/swap-me", key=S.admin_key)[0], 404)

    def test_register_checks_owner_and_fields(self):
        status, _, body = S.request("POST", "/v1/admin/adapters", {"name": "x1", "path": ADAPTERS["alice-a"], "owner": "nobody"}, key=S.admin_key)
        self.assertEqual((status, json.loads(body)["error"]["param"]), (400, "owner"))
        status, _, body = S.request("POST", "/v1/admin/adapters", {"name": "x1", "path": ADAPTERS["alice-a"], "owner": None, "extra": 1}, key=S.admin_key)
        self.assertEqual((status, json.loads(body)["error"]["param"]), (400, "extra"))

    def test_vllm_load_and_unload_routes(self):
        status, _, body = S.request("POST", "/v1/load_lora_adapter", {"lora_name": "vl", "lora_path": ADAPTERS["shared-s"]}, key=S.admin_key)
        self.assertEqual((status, body.decode()), (200, "Success: LoRA adapter 'vl' added successfully."))
        self.assertIn("vl", {m.id for m in client("bob").models.list().data})
        status, _, _ = S.request("POST", "/v1/load_lora_adapter", {"lora_name": "vl", "lora_path": ADAPTERS["shared-s"]}, key=S.admin_key)
        self.assertEqual(status, 400)
        status, _, body = S.request("POST", "/v1/unload_lora_adapter", {"lora_name": "vl"}, key=S.admin_key)
        self.assertEqual((status, body.decode()), (200, "Success: LoRA adapter 'vl' removed successfully."))
        self.assertNotIn("vl", {m.id for m in client("bob").models.list().data})


class HealthAndMetrics(unittest.TestCase):
    def test_health_ready_and_metrics(self):
        self.assertEqual(S.request("GET", "/health")[0], 200)
        self.assertEqual(S.request("GET", "/ready")[0], 200)
        client("alice").completions.create(model="alice-a", prompt="hi", max_tokens=3)
        status, headers, body = S.request("GET", "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        for name in ["vllm:num_requests_waiting ", "vllm:num_requests_running ", "vllm:kv_cache_usage_perc ", "vllm:lora_requests_info{",
                     "vllm:cache_config_info{", 'tessera_lora_adapter_loaded{adapter_name="alice-a"', "tessera_requests_admitted_total",
                     "tessera_generation_tokens_total", "tessera_time_to_first_token_seconds"]:
            self.assertIn(name, text)
        usage = float(next(l for l in text.splitlines() if l.startswith("vllm:kv_cache_usage_perc ")).split()[1])
        self.assertTrue(0 <= usage <= 1)
        self.assertEqual(sum(1 for l in text.splitlines() if l.startswith("vllm:lora_requests_info{")), 1)
        self.assertNotIn(KEYS["alice"], text)


if __name__ == "__main__":
    unittest.main()
