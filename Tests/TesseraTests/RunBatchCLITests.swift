import Foundation
import XCTest
@testable import Tessera

/// `tessera run-batch`: many tenants' requests through the engine; the same request gives the
/// same tokens through run-batch and through generate.
final class RunBatchCLITests: XCTestCase {
    func testRunBatchMatchesGenerateAndReportsBadLinesAlone() throws {
        let model = try Fixtures.defaultModelPath()
        let dir = try Fixtures.temporaryDirectory()
        let adapters = dir.appendingPathComponent("adapters")
        let synth = try runTessera(["adapters", "synth", "--model", model, "--rank", "4", "--targets", "q_proj,v_proj,down_proj",
                                    "--count", "2", "--seed", "11", "--out", adapters.path])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        let input = """
        {"id": 1, "tenant": "acme", "adapter": null, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "seed": 1, "ignore_eos": true}
        {"id": "b", "tenant": "beta", "adapter": "adapter-001", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0.8, "seed": 5, "ignore_eos": true}
        {"id": 3, "tenant": "acme", "adapter": "adapter-000", "prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0.5, "seed": 9, "ignore_eos": true}
        {"id": 4, "tenant": "gamma", "adapter": "nope", "prompt": "x", "max_tokens": 2}
        {broken
        """
        let inURL = dir.appendingPathComponent("in.jsonl"), outURL = dir.appendingPathComponent("out.jsonl")
        try Data(input.utf8).write(to: inURL)
        let run = try runTessera(["run-batch", "--model", model, "--adapters", adapters.path, "--requests", inURL.path, "--out", outURL.path])
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = try String(contentsOf: outURL, encoding: .utf8).split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        XCTAssertEqual(lines.count, 5)
        XCTAssertEqual(lines[0]["id"] as? Int, 1)
        XCTAssertEqual(lines[1]["id"] as? String, "b")
        XCTAssertTrue((lines[3]["error"] as? String ?? "").contains("nope"))
        XCTAssertNotNil(lines[4]["error"])
        XCTAssertTrue(lines[4]["id"] is NSNull)
        let cases: [(Int, [String])] = [
            (0, ["--prompt", "The capital of France is", "--temperature", "0", "--seed", "1"]),
            (1, ["--prompt", "Once upon a time", "--temperature", "0.8", "--seed", "5", "--adapter", adapters.appendingPathComponent("adapter-001").path]),
            (2, ["--prompt", "def add(a, b):", "--temperature", "0.5", "--seed", "9", "--adapter", adapters.appendingPathComponent("adapter-000").path]),
        ]
        for (i, args) in cases {
            let g = try runTessera(["generate", "--model", model, "--max-tokens", "6", "--ignore-eos", "--json"] + args)
            XCTAssertEqual(g.status, 0, g.stderr)
            XCTAssertEqual(g.json?["token_ids"] as? [Int], lines[i]["token_ids"] as? [Int], "line \(i)")
            XCTAssertEqual(lines[i]["finish_reason"] as? String, "length")
        }
    }
}
