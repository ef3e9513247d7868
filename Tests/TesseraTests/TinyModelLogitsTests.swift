import XCTest
@testable import Tessera

/// Tessera's logits against transformers' (float32, CPU) on tiny random Llama models, from
/// both the Hugging Face directory and the GGUF form of the same weights.
final class TinyModelLogitsTests: XCTestCase {
    static let variants = ["llama-tied", "llama-untied", "llama-bf16"]

    func check(variant: String, path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try LlamaModel.load(path: path, options: .init(kvCache: .f32))
        let reference = try Fixtures.json("tiny/\(variant)/logits.json")
        let sequences = try XCTUnwrap(reference["sequences"] as? [[Any]])
        let logits = try XCTUnwrap(reference["logits"] as? [[[Any]]])
        XCTAssertEqual(sequences.count, 3)
        for (s, sequence) in sequences.enumerated() {
            let actual = try allLogits(model, tokens: sequence.int32s)
            XCTAssertEqual(actual.count, logits[s].count)
            for (p, expectedRow) in logits[s].enumerated() {
                assertClose(actual[p], expectedRow.floats, tolerance: 1e-4, "\(variant) \(path.hasSuffix(".gguf") ? "gguf" : "hf") seq \(s) pos \(p)", file: file, line: line)
            }
        }
    }

    func testHuggingFaceDirectoriesMatchTransformers() throws {
        for v in Self.variants { try check(variant: v, path: Fixtures.path("tiny/\(v)/hf")) }
    }

    func testGGUFFilesMatchTransformers() throws {
        for v in Self.variants { try check(variant: v, path: Fixtures.path("tiny/\(v)/model.gguf")) }
    }

    func testConfigsAreReadFromBothSources() throws {
        let hf = try LlamaModel.load(path: Fixtures.path("tiny/llama-untied/hf")).config
        let gguf = try LlamaModel.load(path: Fixtures.path("tiny/llama-untied/model.gguf")).config
        XCTAssertEqual(hf.layerCount, 2)
        XCTAssertEqual(hf.hiddenSize, 64)
        XCTAssertEqual(hf.headCount, 4)
        XCTAssertEqual(hf.kvHeadCount, 2)
        XCTAssertEqual(hf.vocabularySize, 512)
        XCTAssertFalse(hf.tiedEmbeddings)
        XCTAssertEqual(hf.ropeTheta, 50000)
        XCTAssertEqual(hf.ropeTheta, gguf.ropeTheta)
        XCTAssertEqual(hf.rmsNormEpsilon, gguf.rmsNormEpsilon, accuracy: 1e-12)
        XCTAssertEqual(hf.headDimension, gguf.headDimension)
        XCTAssertTrue(try LlamaModel.load(path: Fixtures.path("tiny/llama-tied/model.gguf")).config.tiedEmbeddings)
    }

    /// Decoding one token at a time through the KV cache gives the logits of a full forward.
    func testIncrementalDecodingMatchesFullSequence() throws {
        let model = try LlamaModel.load(path: Fixtures.path("tiny/llama-untied/model.gguf"), options: .init(kvCache: .f32))
        let tokens: [Int32] = [5, 77, 300, 12, 511, 0, 42, 42, 9, 100]
        let full = try allLogits(model, tokens: tokens)
        let cache = try model.makeCache(capacity: tokens.count)
        let scratch = model.makeScratch()
        var batch = ForwardBatch()
        for (i, t) in tokens.enumerated() {
            batch.removeAll()
            batch.append(token: t, position: i, sequence: 0, wantLogits: true)
            let logits = try model.forward(batch, caches: [cache], scratch: scratch)
            assertClose(logits.array(0), full[i], tolerance: 1e-5, "position \(i)")
        }
    }

    /// Two sequences in one batch give the same logits as each alone: no state crosses rows.
    func testRowsOfDifferentSequencesDoNotInteract() throws {
        let model = try LlamaModel.load(path: Fixtures.path("tiny/llama-tied/model.gguf"), options: .init(kvCache: .f32))
        let a: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        let b: [Int32] = [400, 3]
        let aloneA = try allLogits(model, tokens: a)
        let aloneB = try allLogits(model, tokens: b)
        let caches = [try model.makeCache(capacity: 16), try model.makeCache(capacity: 16)]
        var batch = ForwardBatch()
        for (i, t) in a.enumerated() { batch.append(token: t, position: i, sequence: 0, wantLogits: i == a.count - 1) }
        for (i, t) in b.enumerated() { batch.append(token: t, position: i, sequence: 1, wantLogits: i == b.count - 1) }
        let logits = try model.forward(batch, caches: caches, scratch: model.makeScratch())
        assertClose(logits.array(0), aloneA.last!, tolerance: 1e-5, "sequence a")
        assertClose(logits.array(1), aloneB.last!, tolerance: 1e-5, "sequence b")
    }
}

/// A Mistral-style config (model_type "mistral", a sliding window) runs the same Llama math.
final class MistralConfigTests: XCTestCase {
    func testMistralConfigLoadsAndMatchesTheLlamaReference() throws {
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent("mistral")
        try FileManager.default.copyItem(at: Fixtures.url("tiny/llama-untied/hf"), to: dir)
        let url = dir.appendingPathComponent("config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        config["model_type"] = "mistral"
        config["architectures"] = ["MistralForCausalLM"]
        config["sliding_window"] = 64
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        let model = try LlamaModel.load(path: dir.path, options: .init(kvCache: .f32))
        XCTAssertEqual(model.config.architecture, "mistral")
        XCTAssertEqual(model.config.contextLength, 64, "context capped at the sliding window, where the math stays exact")
        let reference = try Fixtures.json("tiny/llama-untied/logits.json")
        let sequence = try XCTUnwrap((reference["sequences"] as? [[Any]])?.last).int32s
        let expected = try XCTUnwrap((reference["logits"] as? [[[Any]]])?.last)
        let actual = try allLogits(model, tokens: sequence)
        for p in actual.indices { assertClose(actual[p], expected[p].floats, tolerance: 1e-4, "position \(p)") }
    }
}
