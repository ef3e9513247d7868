import Foundation
import XCTest
@testable import Tessera

/// The CLI's output shapes are a contract (issue: foundation); these run the built binary.
final class CLIContractTests: XCTestCase {
    func tessera(_ arguments: [String]) throws -> CLIRun { try runTessera(arguments) }

    func model() throws -> String { try Fixtures.defaultModelPath() }

    func testGenerateJSONHoldsOnlyTheGeneratedTokens() throws {
        let greedy = try XCTUnwrap(try Fixtures.json("smollm2/greedy.json")["cases"] as? [[String: Any]])[0]
        let prompt = try XCTUnwrap(greedy["prompt"] as? String)
        let expected = Array((greedy["generated_ids"] as? [Any] ?? []).int32s.prefix(10))
        let run = try tessera(["generate", "--model", model(), "--prompt", prompt, "--max-tokens", "10", "--ignore-eos", "--json", "--threads", "2",
                            "--activations", "f32"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = try XCTUnwrap(run.json, String(decoding: run.stdout, as: UTF8.self))
        XCTAssertEqual(Set(json.keys), ["token_ids", "text"])
        let ids = (json["token_ids"] as? [Any] ?? []).int32s
        XCTAssertEqual(ids, expected)
        let tokenizer = try XCTUnwrap(try ModelBundle.loadTokenizer(path: model()))
        XCTAssertEqual(json["text"] as? String, try tokenizer.decode(ids, skipSpecialTokens: true))
    }

    func testGenerateStreamsTextAndSeedsAreReproducible() throws {
        let args = ["generate", "--model", try model(), "--prompt", "Tell me a story.", "--chat", "--max-tokens", "12",
                    "--temperature", "0.9", "--top-p", "0.95", "--seed", "7", "--json"]
        let a = try tessera(args), b = try tessera(args)
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.json?["token_ids"] as? [Int], b.json?["token_ids"] as? [Int])
        let other = try tessera(args.map { $0 == "7" ? "8" : $0 })
        XCTAssertNotEqual(a.json?["token_ids"] as? [Int], other.json?["token_ids"] as? [Int], "a different seed should sample differently")
        let plain = try tessera(["generate", "--model", try model(), "--prompt", "The capital of France is", "--max-tokens", "6"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertFalse(String(decoding: plain.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
    }

    func testScoreJSONHasOneLogprobFewerThanTokens() throws {
        let run = try tessera(["score", "--model", try model(), "--text", "<|im_start|>user\nHello there, how are you?", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = try XCTUnwrap(run.json)
        XCTAssertEqual(Set(json.keys), ["token_ids", "logprobs"])
        let ids = (json["token_ids"] as? [Any] ?? []).int32s
        let logprobs = (json["logprobs"] as? [Any] ?? []).floats
        XCTAssertEqual(ids.first, 1, "<|im_start|> is recognised as its special token")
        XCTAssertEqual(logprobs.count, ids.count - 1)
        XCTAssertTrue(logprobs.allSatisfy { $0 <= 0 && $0.isFinite })
    }

    func testTokenizeAndDetokenizeRoundTrip() throws {
        let text = "Héllo wörld 12345 🙂 你好"
        let run = try tessera(["tokenize", "--model", try model(), "--text", text, "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let ids = (try XCTUnwrap(run.json)["token_ids"] as? [Any] ?? []).int32s
        let reference = try XCTUnwrap(try ModelBundle.loadTokenizer(path: model())).encode(text)
        XCTAssertEqual(ids, reference)
        let back = try tessera(["detokenize", "--model", try model(), "--json"] + ids.map(String.init))
        XCTAssertEqual(back.json?["text"] as? String, text)
    }

    func testNonUTF8TextIsAClearError() throws {
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("bad.txt")
        try Data([0x61, 0x62, 0xC3, 0x28, 0x63]).write(to: url)
        let run = try tessera(["tokenize", "--model", try model(), "--text-file", url.path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("UTF-8"), run.stderr)
        XCTAssertTrue(run.stderr.contains("2"), "names the byte offset: \(run.stderr)")
    }

    func testBadModelPathsAreClearErrors() throws {
        let missing = try tessera(["generate", "--model", "/nonexistent/m.gguf", "--prompt", "x"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/m.gguf"), missing.stderr)
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("corrupt.gguf")
        try Data("GGUF\u{3}\0\0\0garbage".utf8).write(to: url)
        let corrupt = try tessera(["score", "--model", url.path, "--text", "x"])
        XCTAssertEqual(corrupt.status, 1)
        XCTAssertTrue(corrupt.stderr.contains(url.path) && corrupt.stderr.contains("truncated"), corrupt.stderr)
    }

    /// Benchmark counts that would leave nothing to take a median of are refused up front (a
    /// zero --runs used to crash on the empty list).
    func testBenchModelRefusesEmptyRuns() throws {
        let tokens = try Fixtures.temporaryDirectory().appendingPathComponent("prompt.json")
        try Data("[1, 2, 3]".utf8).write(to: tokens)
        for (option, value) in [("--runs", "0"), ("--batch", "0"), ("--gen-tokens", "0")] {
            let run = try tessera(["bench-model", "--model", try model(), "--prompt-tokens-file", tokens.path, option, value])
            XCTAssertEqual(run.status, 64, "\(option) \(value): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(option), run.stderr)
        }
    }
}
