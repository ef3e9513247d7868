"""Harness self-test (standard library only, no llama.cpp, no Tessera build):
  python3 -m unittest discover -s bench -p 'test_*.py'
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model_bench  # noqa: E402


class ModelBenchTest(unittest.TestCase):
    def test_prompt_ids_committed(self):
        with open(os.path.join(HERE, "prompt_tokens_512.json")) as f:
            ids = json.load(f)
        self.assertEqual(len(ids), 512)
        self.assertTrue(all(isinstance(t, int) and 0 <= t < 49152 for t in ids))

    def test_contract_validation(self):
        good = {"engine": "tessera", "threads": 2, "prefill_tokens_per_s": [1.0, 2.0],
                "decode_tokens_per_s": [3.0], "peak_rss_bytes": 10}
        self.assertEqual(model_bench.parse_engine_json(json.dumps(good), "t"), good)
        self.assertEqual(model_bench.parse_engine_json("log\n" + json.dumps(good) + "\n", "t"), good)
        for k in good:
            bad = dict(good)
            del bad[k]
            with self.assertRaises(ValueError):
                model_bench.parse_engine_json(json.dumps(bad), "t")
        with self.assertRaises(ValueError):
            model_bench.parse_engine_json(json.dumps(dict(good, decode_tokens_per_s=[])), "t")
        with self.assertRaises(ValueError):
            model_bench.parse_engine_json(json.dumps(dict(good, peak_rss_bytes=1.5)), "t")

    def test_end_to_end_with_fake_tessera(self):
        with tempfile.TemporaryDirectory() as d:
            model = os.path.join(d, "m.gguf")
            open(model, "wb").close()
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "model_bench.py"), "--model", model,
                 "--tessera", os.path.join(HERE, "fake_tessera.py"), "--skip-peer",
                 "--threads", "1,2", "--runs", "3", "--json-out", os.path.join(d, "r.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
            self.assertIn("| 1 | tessera | 501.0 (500.0–502.0) | 49.0 (48.0–50.0) | 123 |", out)
            self.assertIn("| 2 | tessera | 1001.0", out)
            with open(os.path.join(d, "r.json")) as f:
                raw = json.load(f)
            self.assertEqual(raw["2"]["tessera"]["threads"], 2)

    def test_ratio_rows(self):
        class A:
            model, prompt_len, gen_tokens, runs = "/x/m.gguf", 512, 128, 3
        t = {"engine": "tessera", "threads": 1, "prefill_tokens_per_s": [100.0, 200.0, 300.0],
             "decode_tokens_per_s": [50.0, 60.0, 70.0], "peak_rss_bytes": 200_000_000}
        l = {"engine": "llama.cpp", "threads": 1, "prefill_tokens_per_s": [400.0, 400.0, 400.0],
             "decode_tokens_per_s": [30.0, 30.0, 30.0], "peak_rss_bytes": 100_000_000}
        table = model_bench.make_table(model_bench.machine_info(), {1: {"tessera": t, "llama.cpp": l}}, [1], A)
        self.assertIn("| 1 | **tessera / llama.cpp** | **0.50×** | **2.00×** | 2.00× |", table)


if __name__ == "__main__":
    unittest.main()
