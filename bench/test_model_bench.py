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
            write_gguf(model, [("token_embd.weight", 1024), ("blk.0.ffn_up.weight", 3976)])
            other = os.path.join(d, "n.gguf")
            open(other, "wb").close()  # not a GGUF: falls back to the file size (0: no bound)
            bw = os.path.join(d, "bw.json")
            with open(bw, "w") as f:
                json.dump({"cpu": "x", "threads": {"1": 10.0, "2": 20.0}, "buffer_mib": 1024, "passes": 5}, f)
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "model_bench.py"), "--models", f"{model},{other}",
                 "--tessera", os.path.join(HERE, "fake_tessera.py"), "--skip-peer", "--membw-json", bw,
                 "--threads", "1,2", "--batches", "1,4", "--runs", "3", "--json-out", os.path.join(d, "r.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
            # 5000 tensor bytes per token at 10 GB/s: 2,000,000 tok/s; fake decode 49 tok/s
            self.assertIn("| m | 1 | 1 | 49.0 (48.0–50.0) | — | **—** | 2000000.0 | 0% | 501.0 (500.0–502.0) | — | — | 123 | — |", out)
            self.assertIn("| m | 2 | 4 | 396.0 (392.0–400.0) | — | **—** | — | — | — | — | — | 123 | — |", out)
            self.assertIn("| n | 2 | 1 | 99.0 (98.0–100.0) | — | **—** | — | — | 1001.0 (1000.0–1002.0) |", out)
            self.assertIn("| m | 0.0 | 2 | 20.0 | 4000000.0 | 99.0 | 0% | — | — |", out)
            self.assertIn("tensor data 0.0 MB", out)
            self.assertIn("1 thread 10.0 GB/s, 2 threads 20.0 GB/s", out)
            with open(os.path.join(d, "r.json")) as f:
                raw = json.load(f)
            self.assertEqual(len(raw["runs"]), 8)
            self.assertEqual([(r["threads"], r["batch"]) for r in raw["runs"][:4]], [(1, 1), (1, 4), (2, 1), (2, 4)])
            self.assertEqual(raw["runs"][3]["tessera"]["threads"], 2)
            self.assertEqual(raw["models"][model]["per_token_bytes"], 5000)

    def test_bandwidth_measured_around_tessera_runs(self):
        with tempfile.TemporaryDirectory() as d:
            model = os.path.join(d, "m.gguf")
            write_gguf(model, [("token_embd.weight", 1024), ("blk.0.ffn_up.weight", 3976)])
            # A membw stand-in that reads 40 GB/s, then 50, then 40, ...: one call before and one
            # after each batch-1 run.
            fake = os.path.join(d, "membw.sh")
            with open(fake, "w") as f:
                f.write(f'#!/bin/sh\nc=$(cat {d}/n 2>/dev/null || echo 0); echo $((c + 1)) > {d}/n\n'
                        f'if [ $((c % 2)) -eq 0 ]; then v=40.0; else v=50.0; fi\n'
                        'echo "{\\"threads\\": {\\"2\\": $v}, \\"passes\\": 5, \\"buffer_mib\\": 1024}"\n')
            bw = os.path.join(d, "bw.json")
            with open(bw, "w") as f:
                json.dump({"threads": {"2": 20.0}, "buffer_mib": 1024, "passes": 5}, f)
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "model_bench.py"), "--models", model, "--membw-around",
                 "--tessera", os.path.join(HERE, "fake_tessera.py"), "--skip-peer", "--membw-json", bw,
                 "--threads", "2", "--batches", "1,4", "--runs", "3", "--json-out", os.path.join(d, "r.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True,
                env=dict(os.environ, TESSERA_MEMBW_SH=fake)).stdout
            # Mean 45 GB/s over 5000 bytes a token: 9,000,000 tok/s; 40 vs 50 is not steady.
            self.assertIn("| m | 2 | 40.0 | 50.0 | 9000000.0 | 99.0 | 0% |", out)
            self.assertIn("| no |", out)
            with open(os.path.join(d, "n")) as f:
                self.assertEqual(f.read().strip(), "2", "measured once before and once after the one batch-1 run")
            with open(os.path.join(d, "r.json")) as f:
                self.assertEqual(json.load(f)["membw_around"], [{"model": model, "threads": 2, "before": 40.0, "after": 50.0}])

    def test_gguf_weight_bytes(self):
        with tempfile.TemporaryDirectory() as d:
            tied = os.path.join(d, "tied.gguf")
            write_gguf(tied, [("blk.0.attn_q.weight", 300), ("token_embd.weight", 1000)])
            r = model_bench.gguf_weight_bytes(tied)
            self.assertEqual(r["tensors"], 2)
            self.assertEqual(r["tensor_bytes"], 320 + 1000)  # 300 padded to the 32-byte alignment
            self.assertEqual(r["per_token_bytes"], 1320)
            self.assertTrue(r["tied_embeddings"])
            untied = os.path.join(d, "untied.gguf")
            write_gguf(untied, [("token_embd.weight", 1024), ("output.weight", 1024), ("blk.0.ffn_up.weight", 64)])
            r = model_bench.gguf_weight_bytes(untied)
            self.assertEqual((r["tensor_bytes"], r["per_token_bytes"]), (2112, 1088))
            self.assertEqual(model_bench.model_bytes(untied)["source"], "gguf")
            bad = os.path.join(d, "bad.gguf")
            with open(bad, "wb") as f:
                f.write(b"GGML" + bytes(60))
            r = model_bench.model_bytes(bad)
            self.assertEqual((r["source"], r["per_token_bytes"]), ("file size", 64))

    def test_ratio_rows(self):
        class A:
            prompt_len, gen_tokens, runs = 512, 128, 3
        t = {"engine": "tessera", "threads": 1, "prefill_tokens_per_s": [100.0, 200.0, 300.0],
             "decode_tokens_per_s": [50.0, 60.0, 70.0], "peak_rss_bytes": 200_000_000}
        l = {"engine": "llama.cpp", "threads": 1, "prefill_tokens_per_s": [400.0, 400.0, 400.0],
             "decode_tokens_per_s": [30.0, 30.0, 30.0], "peak_rss_bytes": 100_000_000}
        t4 = dict(t, decode_tokens_per_s=[120.0])
        l4 = dict(l, decode_tokens_per_s=[40.0], sequences_agree=False)
        m = "/x/m.Q4_1.gguf"
        sizes = {m: {"file_bytes": 110_000_000, "tensor_bytes": 100_000_000, "per_token_bytes": 100_000_000,
                     "tied_embeddings": True, "tensors": 272, "source": "gguf"}}
        membw = {"threads": {"1": 12.0}, "passes": 5, "buffer_mib": 1024}
        results = {(m, 1, 1): {"tessera": t, "llama.cpp": l}, (m, 1, 4): {"tessera": t4, "llama.cpp": l4}}
        table = model_bench.make_table(model_bench.machine_info(), results, [m], [1], [1, 4], A, membw, sizes)
        self.assertIn("| m.Q4_1 | 1 | 1 | 60.0 (50.0–70.0) | 30.0 (30.0–30.0) | **2.00×** | 120.0 | 50% | "
                      "200.0 (100.0–300.0) | 400.0 (400.0–400.0) | 0.50× | 200 | 100 |", table)
        self.assertIn("| m.Q4_1 | 1 | 4 | 120.0 | 40.0 | **3.00×** | — | — | — | — | — | 200 | 100 |", table)
        self.assertIn("| m.Q4_1 | 100.0 | 1 | 12.0 | 120.0 | 60.0 | 50% | 30.0 | 25% |", table)
        self.assertIn("output tied to token_embd", table)
        self.assertIn("generated different ids (same prompt): m.Q4_1 threads 1 batch 4", table)
        failed = {(m, 1, 1): {"tessera": "failed", "llama.cpp": l}}
        table = model_bench.make_table(model_bench.machine_info(), failed, [m], [1], [1], A, None, sizes)
        self.assertIn("| m.Q4_1 | 1 | 1 | failed | 30.0 (30.0–30.0) | **—** | — | — | failed |", table)


def write_gguf(path, tensors):
    """A minimal GGUF v3: two metadata keys (one a string array) and 1-D I8 tensors of the given byte sizes."""
    import struct

    def s(b):
        return struct.pack("<Q", len(b)) + b
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 2)
    head += s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama")
    head += s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s(b"a") + s(b"bc")
    off, data = 0, b""
    for name, n in tensors:
        head += s(name.encode()) + struct.pack("<IQIQ", 1, n, 24, off)  # type 24 = I8
        pad = -(-n // 32) * 32
        data += bytes(n) + bytes(pad - n)
        off += pad
    head += bytes(-len(head) % 32)
    with open(path, "wb") as f:
        f.write(head + data[: len(data) - (-tensors[-1][1] % 32)])


if __name__ == "__main__":
    unittest.main()
