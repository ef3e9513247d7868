"""Engine benchmark harness self-test (standard library only, no llama.cpp, no Tessera build):
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
import engine_bench  # noqa: E402


def row(n, distinct, tps):
    return {"concurrency": n, "distinct_adapters": distinct, "tokens_per_s": tps, "ttft_p50_ms": 10.0,
            "ttft_p99_ms": 12.0, "tpot_p50_ms": 5.0, "tpot_p99_ms": 6.0}


class EngineBenchTest(unittest.TestCase):
    def test_contract_validation(self):
        good = {"engine": "tessera", "threads": 2, "base": [row(1, 0, 10.0)], "adapters": [row(1, 1, 9.0)]}
        self.assertEqual(engine_bench.parse_engine_json(json.dumps(good), "t"), good)
        self.assertEqual(engine_bench.parse_engine_json("log\n" + json.dumps(good) + "\n", "t"), good)
        for k in good:
            bad = dict(good)
            del bad[k]
            with self.assertRaises(ValueError):
                engine_bench.parse_engine_json(json.dumps(bad), "t")
        # base rows may omit distinct_adapters; adapter rows may not
        no_d = {k: v for k, v in row(1, 0, 10.0).items() if k != "distinct_adapters"}
        engine_bench.validate(dict(good, base=[no_d]), "t")
        with self.assertRaises(ValueError):
            engine_bench.validate(dict(good, adapters=[no_d]), "t")
        for k in engine_bench.ROW_NUMBERS:
            r = row(1, 0, 10.0)
            del r[k]
            with self.assertRaises(ValueError):
                engine_bench.validate(dict(good, base=[r]), "t")
        with self.assertRaises(ValueError):
            engine_bench.validate(dict(good, base=[row(1, 0, 0.0)]), "t")
        with self.assertRaises(ValueError):
            engine_bench.validate(dict(good, base=[dict(row(1, 0, 1.0), concurrency=0)]), "t")

    def test_tables_and_ratios(self):
        class A:
            model, threads, prompt_tokens, gen_tokens = "/x/m.gguf", 2, 32, 64
        t = {"engine": "tessera", "threads": 2, "base": [row(1, 0, 50.0), row(32, 0, 400.0)],
             "adapters": [row(1, 1, 45.0), row(32, 32, 300.0)]}
        l = {"engine": "llama.cpp", "threads": 2, "base": [row(1, 0, 40.0), row(32, 0, 200.0)],
             "adapters": [row(32, 32, 50.0)], "settings": {"kv_unified": False, "n_ubatch": 512, "flash_attn": "auto"}}
        text = engine_bench.make_tables(engine_bench.machine_info(), {"tessera": t, "llama.cpp": l}, [1, 32], A)
        self.assertIn("| 1 | **tessera / llama.cpp** | **1.25×** |", text)
        self.assertIn("| 32 | **tessera / llama.cpp** | **2.00×** |", text)
        self.assertIn("| 32 | tessera | 300.0 | 10 | 12 | 5.0 | 6.0 | **0.75×** ✗ | **6.00×** ✓ |", text)
        self.assertIn("| 1 | tessera | 45.0 | 10 | 12 | 5.0 | 6.0 | **0.90×** ✓ | **0.90×** ✗ |", text)
        self.assertIn("| 32 | llama.cpp (sequential) | 50.0 |", text)
        failed = engine_bench.make_tables(engine_bench.machine_info(), {"tessera": "failed", "llama.cpp": l}, [1, 32], A)
        self.assertIn("| 1 | tessera | failed |", failed)

    def test_end_to_end_with_fake_tessera(self):
        with tempfile.TemporaryDirectory() as d:
            model = os.path.join(d, "m.gguf")
            open(model, "wb").close()
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "engine_bench.py"), "--model", model,
                 "--tessera", os.path.join(HERE, "fake_tessera_engine.py"), "--skip-peer",
                 "--concurrency", "1,4", "--adapters", "4", "--json-out", os.path.join(d, "r.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
            self.assertIn("| 4 | tessera | 160.0 | 104 | 124 | 21.0 | 22.0 |", out)
            self.assertIn("| 4 | tessera | 144.0 | 104 | 124 | 21.0 | 22.0 | **0.90×** ✓ | — |", out)
            with open(os.path.join(d, "r.json")) as f:
                raw = json.load(f)
            self.assertEqual([r["concurrency"] for r in raw["tessera"]["adapters"]], [1, 4])
            self.assertFalse([n for n in os.listdir(tempfile.gettempdir()) if n.startswith("tessera-engine-bench-")
                              and os.path.getmtime(os.path.join(tempfile.gettempdir(), n)) > os.path.getmtime(model)],
                             "work folder not removed")


if __name__ == "__main__":
    unittest.main()
