import Foundation
import XCTest
@testable import Tessera

/// The default model against transformers (which loads the same GGUF, dequantized to f32):
/// greedy continuations token for token, last-position logits, and the tokenizer built from
/// the GGUF metadata against the HF reference tokenizer.
final class SmolLM2ReferenceTests: XCTestCase {
    nonisolated(unsafe) static var shared: ModelBundle?

    func bundle() throws -> ModelBundle {
        if let b = Self.shared { return b }
        ComputeThreads.configure(threads: 2)
        let b = try ModelBundle.load(path: Fixtures.defaultModelPath())
        Self.shared = b
        return b
    }

    func cases() throws -> [[String: Any]] {
        try XCTUnwrap(try Fixtures.json("smollm2/greedy.json")["cases"] as? [[String: Any]])
    }

    func testGreedyContinuationsEqualTransformers() throws {
        let b = try bundle()
        let generator = Generator(model: b.model, tokenizer: b.tokenizer)
        for c in try cases() {
            let prompt = (c["prompt_ids"] as? [Any] ?? []).int32s
            let expected = (c["generated_ids"] as? [Any] ?? []).int32s
            let margins = (c["top2_margins"] as? [Any] ?? []).floats
            XCTAssertGreaterThan(expected.count, 8)
            let result = try generator.generate(GenerationRequest(promptTokens: prompt, maxTokens: expected.count, ignoreEOS: true))
            if let k = zip(result.tokenIds, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                // Only a near-tie in the reference may break the match (f32 summation order differs).
                XCTAssertLessThan(margins[k], 1e-3, "\(c["prompt"] ?? "") differs at step \(k): \(result.tokenIds) vs \(expected)")
            } else {
                XCTAssertEqual(result.tokenIds, expected)
            }
        }
    }

    func testLastPromptLogitsMatchTransformers() throws {
        let b = try bundle()
        for c in try cases() {
            let prompt = (c["prompt_ids"] as? [Any] ?? []).int32s
            let top = try XCTUnwrap(c["last_logits_top"] as? [[Any]])
            let logits = try allLogits(b.model, tokens: prompt).last!
            for entry in top {
                let id = try XCTUnwrap((entry[0] as? NSNumber)?.intValue)
                let value = try XCTUnwrap((entry[1] as? NSNumber)?.floatValue)
                XCTAssertEqual(logits[id], value, accuracy: 2e-3 * max(1, abs(value)), "token \(id) of \(c["prompt"] ?? "")")
            }
        }
    }

    func testPromptTokenizationFromGGUFEqualsReference() throws {
        let tokenizer = try XCTUnwrap(try bundle().tokenizer)
        for c in try cases() {
            XCTAssertEqual(tokenizer.encode(try XCTUnwrap(c["prompt"] as? String)), (c["prompt_ids"] as? [Any] ?? []).int32s)
        }
        let reference = try XCTUnwrap(try Fixtures.json("smollm2/tokenizer_cases.json")["cases"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(reference.count, 60)
        for c in reference {
            let text = try XCTUnwrap(c["text"] as? String)
            XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: false), (c["ids"] as? [Any] ?? []).int32s, text.debugDescription)
        }
        XCTAssertFalse(tokenizer.addsBOS)
        XCTAssertTrue(tokenizer.endOfGenerationTokenIds.contains(2))
    }

    func testScoreIsTheLogSoftmaxOfTheFullForward() throws {
        let b = try bundle()
        let tokens = try XCTUnwrap(b.tokenizer).encode("The quick brown fox jumps over the lazy dog.")
        let scores = try Generator(model: b.model, tokenizer: b.tokenizer).score(tokens)
        XCTAssertEqual(scores.count, tokens.count - 1)
        let logits = try allLogits(b.model, tokens: tokens)
        for i in 0..<(tokens.count - 1) {
            let row = logits[i]
            let m = row.max()!
            let lse = log(row.reduce(0.0) { $0 + exp(Double($1 - m)) }) + Double(m)
            XCTAssertEqual(Double(scores[i]), Double(row[Int(tokens[i + 1])]) - lse, accuracy: 1e-4)
            XCTAssertLessThan(scores[i], 0)
        }
    }
}
