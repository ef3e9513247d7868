"""Self-test of server_bench.py against an in-process fake SSE server (no engine, ~1 s)."""

import contextlib
import io
import json
import os
import sys
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_bench  # noqa: E402


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        b = json.dumps({"data": [{"id": "fake-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeHandler.bodies.append(body)
        if body["model"] == "missing":
            b = b'{"error": {"message": "no such model"}}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(s):
            d = s.encode()
            self.wfile.write(b"%x\r\n" % len(d) + d + b"\r\n")

        n = body["max_tokens"]
        cut = body["model"] == "cut"
        for i in range(1 if cut else n):
            fin = "length" if i == n - 1 and not cut else None
            send("data: " + json.dumps({"choices": [{"index": 0, "text": " w", "finish_reason": fin}]}) + "\n\n")
        if body.get("stream_options", {}).get("include_usage"):
            send("data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n * 2}}) + "\n\n")
        send("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


class ServerBenchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
        cls.url = f"http://127.0.0.1:{cls.httpd.server_address[1]}"
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()

    def run_bench(self, *argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = server_bench.main(["--url", self.url, *argv])
        return rc, json.loads(out.getvalue())

    def test_percentile_nearest_rank(self):
        self.assertEqual(server_bench.percentile([3, 1, 2], 0.5), 2)
        self.assertEqual(server_bench.percentile(list(range(1, 101)), 0.99), 99)
        self.assertIsNone(server_bench.percentile([], 0.5))

    def test_usage_counts_and_request_body(self):
        FakeHandler.bodies = []
        rc, d = self.run_bench("--concurrency", "3", "--requests", "5", "--gen-tokens", "4", "--warmup", "0")
        self.assertEqual(rc, 0)
        self.assertEqual((d["completed"], d["requests"], d["model"]), (5, 5, "fake-model"))  # model from /v1/models
        self.assertEqual((d["output_tokens"], d["tokens_from"]), (40, "usage"))  # usage (2 x 4) beats 4 chunks
        self.assertEqual(d["finish_reasons"], {"length": 5})
        b = FakeHandler.bodies[0]
        self.assertEqual((b["temperature"], b["stream"], b["ignore_eos"], b["stream_options"]), (0, True, True, {"include_usage": True}))
        self.assertNotIn("min_tokens", b)

    def test_chunks_without_usage_models_round_robin_and_errors(self):
        FakeHandler.bodies = []
        rc, d = self.run_bench("--models", "fake-model,missing,cut", "--concurrency", "1", "--requests", "3",
                               "--gen-tokens", "4", "--warmup", "0", "--no-stream-options", "--no-ignore-eos",
                               "--llamacpp-params")
        self.assertEqual(rc, 1)
        self.assertEqual([b["model"] for b in FakeHandler.bodies], ["fake-model", "missing", "cut"])
        self.assertEqual((d["completed"], d["output_tokens"], d["tokens_from"]), (1, 4, "chunks"))
        self.assertEqual(d["errors"]["count"], 2)
        self.assertIn("HTTP 404", d["errors"]["first"])
        b = FakeHandler.bodies[0]
        self.assertNotIn("ignore_eos", b)
        self.assertNotIn("stream_options", b)
        self.assertEqual((b["min_tokens"], b["repeat_penalty"]), (4, 1.0))


if __name__ == "__main__":
    unittest.main()
