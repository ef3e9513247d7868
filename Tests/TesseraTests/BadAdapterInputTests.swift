import Foundation
import XCTest
@testable import Tessera

/// Adapters that must be refused: each a typed error naming the adapter and the reason.
final class BadAdapterInputTests: XCTestCase {
    lazy var config: LlamaConfig = try! LlamaModel.load(path: Fixtures.path("tiny/llama-untied/hf")).config

    func expectError(_ path: String, maxRank: Int = 1024, _ check: (AdapterError.Reason) -> Bool,
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try LoRAAdapter.load(path: path, name: "tenant-adapter", base: config, maxRank: maxRank)
            XCTFail("loaded \(path)", file: file, line: line)
        } catch let e as AdapterError {
            XCTAssertEqual(e.adapter, "tenant-adapter", file: file, line: line)
            XCTAssertTrue(e.description.contains("tenant-adapter"), file: file, line: line)
            XCTAssertTrue(check(e.reason), "unexpected: \(e)", file: file, line: line)
        } catch {
            XCTFail("untyped \(error)", file: file, line: line)
        }
    }

    func testUnsupportedPEFTFeaturesAreRefusedByName() {
        expectError(Fixtures.path("lora/bad/dora")) { $0 == .unsupportedFeature("DoRA (use_dora)") }
        expectError(Fixtures.path("lora/bad/modules-to-save")) { $0 == .unsupportedFeature("modules_to_save") }
        expectError(Fixtures.path("lora/bad/bias-all")) { $0 == .unsupportedFeature("bias 'all'") }
        expectError(Fixtures.path("lora/bad/embedding-target")) {
            if case .unsupportedFeature(let f) = $0 { return f.contains("embed_tokens") }
            return false
        }
        expectError(Fixtures.path("lora/bad/pickle-only")) { $0 == .pickleNotSupported }
    }

    func testAdapterForAnotherBaseIsAShapeMismatch() {
        expectError(Fixtures.path("lora/bad/wrong-base")) {
            if case .shapeMismatch(let t, _, _) = $0 { return t.contains("layers.0.self_attn") }
            return false
        }
    }

    func testNaNWeightsAreRefused() {
        expectError(Fixtures.path("lora/bad/nan-weights")) {
            $0 == .nonFiniteWeights(tensor: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        }
    }

    func testRankAboveTheMaximum() {
        expectError(Fixtures.path("lora/large-rank"), maxRank: 32) { $0 == .rankTooLarge(rank: 64, maximum: 32) }
    }

    func testMissingPaths() {
        expectError("/nonexistent/adapter") { if case .format(.io) = $0 { return true }; return false }
        expectError(Fixtures.path("tiny/llama-untied")) { $0 == .unrecognisedPath }
        // A model GGUF is not an adapter.
        expectError(Fixtures.path("tiny/llama-untied/model.gguf")) { $0 == .unrecognisedPath }
    }

    func copy(_ name: String) throws -> URL {
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent(name)
        try FileManager.default.copyItem(at: Fixtures.url("lora/\(name)"), to: dir)
        return dir
    }

    func testCorruptSafetensors() throws {
        let dir = try copy("qv-rslora")
        let weights = dir.appendingPathComponent("adapter_model.safetensors")
        let original = try Data(contentsOf: weights)
        let n = Int(original.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        // Header length past the end.
        var lying = original
        lying.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
        try lying.write(to: weights)
        expectError(dir.path) { if case .format(.implausible) = $0 { return true }; return false }
        // Offsets past the end.
        try original.prefix(original.count - 64).write(to: weights)
        expectError(dir.path) { if case .format(.tensorOutOfBounds) = $0 { return true }; return false }
        // dtype disagreeing with the data size.
        let header = String(decoding: original[8..<(8 + n)], as: UTF8.self).replacingOccurrences(of: "\"F32\"", with: "\"F16\"")
        try (original.prefix(8) + Data(header.utf8) + original[(8 + n)...]).write(to: weights)
        expectError(dir.path) { if case .format(.badTensorShape) = $0 { return true }; return false }
        // A shape that disagrees with the rank in the config.
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        try original.write(to: weights)
        config["r"] = 8
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("adapter_config.json"))
        expectError(dir.path) { if case .shapeMismatch = $0 { return true }; return false }
    }

    func testMalformedConfig() throws {
        let dir = try copy("qv-rslora")
        try Data("{not json".utf8).write(to: dir.appendingPathComponent("adapter_config.json"))
        expectError(dir.path) { if case .invalidConfig = $0 { return true }; return false }
        try Data(#"{"r": "eight", "lora_alpha": 8}"#.utf8).write(to: dir.appendingPathComponent("adapter_config.json"))
        expectError(dir.path) { $0 == .invalidConfig(field: "r", why: "must be a positive integer") }
    }
}
