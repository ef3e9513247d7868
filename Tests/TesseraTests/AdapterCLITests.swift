import Foundation
import XCTest
@testable import Tessera

/// `--adapter` on generate and score, `adapters inspect` and `adapters synth`.
final class AdapterCLITests: XCTestCase {

    func testSynthWritesAdaptersThatLoadAndChangeTheOutput() throws {
        let model = try Fixtures.defaultModelPath()
        let out = try Fixtures.temporaryDirectory()
        let synth = try runTessera(["adapters", "synth", "--model", model, "--rank", "8", "--targets", "all", "--count", "2",
                                     "--seed", "5", "--out", out.path])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        let dirs = String(decoding: synth.stdout, as: UTF8.self).split(separator: "\n").map(String.init)
        XCTAssertEqual(dirs.count, 2)

        let inspect = try runTessera(["adapters", "inspect", dirs[0], "--model", model, "--json"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let info = try XCTUnwrap(inspect.json)
        XCTAssertEqual(info["compatible"] as? Bool, true)
        XCTAssertEqual(info["ranks"] as? [Int], [8])
        XCTAssertEqual(info["alpha"] as? Double, 16)
        XCTAssertEqual((info["targets"] as? [String])?.count, 7)
        XCTAssertEqual((info["layers"] as? [Int])?.count, 30)

        let text = "The meaning of life is"
        let base = try runTessera(["score", "--model", model, "--text", text, "--json"])
        let adapted = try runTessera(["score", "--model", model, "--text", text, "--json", "--adapter", dirs[0]])
        XCTAssertEqual(adapted.status, 0, adapted.stderr)
        let lb = (base.json?["logprobs"] as? [Any] ?? []).floats, la = (adapted.json?["logprobs"] as? [Any] ?? []).floats
        XCTAssertEqual(lb.count, la.count)
        XCTAssertGreaterThan(maxAbsDifference(lb, la), 1e-3, "the adapter changes the scores")
        XCTAssertEqual(Set(adapted.json?.keys.map { $0 } ?? []), ["token_ids", "logprobs"])

        let gen = try runTessera(["generate", "--model", model, "--prompt", text, "--max-tokens", "6", "--json", "--adapter", dirs[1]])
        XCTAssertEqual(gen.status, 0, gen.stderr)
        XCTAssertEqual(Set(gen.json?.keys.map { $0 } ?? []), ["token_ids", "text"])
    }

    func testIncompatibleAdapterIsReportedAndRefused() throws {
        let model = try Fixtures.defaultModelPath()
        let wrong = Fixtures.path("lora/all-targets")  // made for the tiny model
        let inspect = try runTessera(["adapters", "inspect", wrong, "--model", model, "--json"])
        XCTAssertEqual(inspect.json?["compatible"] as? Bool, false)
        XCTAssertTrue((inspect.json?["error"] as? String ?? "").contains("shape"))
        let gen = try runTessera(["generate", "--model", model, "--prompt", "x", "--adapter", wrong])
        XCTAssertEqual(gen.status, 1)
        XCTAssertTrue(gen.stderr.contains("all-targets"), gen.stderr)
    }
}
