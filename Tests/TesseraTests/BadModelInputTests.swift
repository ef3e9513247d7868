import Foundation
import XCTest
@testable import Tessera

/// Corrupt, truncated, lying or unsupported model files: each gets a typed error that names
/// the file and the reason, and none crashes.
final class BadModelInputTests: XCTestCase {
    /// The tiny GGUF model decomposed, so tests can rewrite it with one thing broken.
    struct Parts {
        var metadata: [(String, GGUFValue)]
        var tensors: [GGUFWriterForTests.Tensor]
    }

    func tinyParts() throws -> Parts {
        let gguf = try GGUFFile(path: Fixtures.path("tiny/llama-untied/model.gguf"))
        let metadata = gguf.metadata.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let tensors = gguf.tensors.map {
            GGUFWriterForTests.Tensor(name: $0.name, dims: $0.dimensions.map(UInt64.init), type: $0.type.rawValue,
                                      data: Array(gguf.data(of: $0)))
        }
        return Parts(metadata: metadata, tensors: tensors)
    }

    func write(_ parts: Parts) throws -> String {
        try GGUFWriterForTests.write(metadata: parts.metadata, tensors: parts.tensors).path
    }

    func expectModelError(_ path: String, file: StaticString = #filePath, line: UInt = #line,
                          _ check: (ModelError.Reason) -> Bool) {
        do {
            _ = try ModelBundle.load(path: path)
            XCTFail("loaded a broken model", file: file, line: line)
        } catch let error as ModelError {
            XCTAssertEqual(error.file, path, file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(path), error.description, file: file, line: line)
            XCTAssertTrue(check(error.reason), "unexpected reason: \(error)", file: file, line: line)
        } catch {
            XCTFail("untyped error \(error)", file: file, line: line)
        }
    }

    func testRewrittenTinyModelStillLoads() throws {
        // The rewriting used below is itself faithful: unchanged parts load and run.
        let model = try LlamaModel.load(path: try write(try tinyParts()))
        XCTAssertEqual(model.config.layerCount, 2)
    }

    func testEveryTruncationIsAnErrorNotACrash() throws {
        let bytes = try Data(contentsOf: Fixtures.url("tiny/llama-untied/model.gguf"))
        let dir = try Fixtures.temporaryDirectory()
        let cuts = Array(stride(from: 0, to: 2400, by: 5)) + Array(stride(from: 2400, to: bytes.count, by: 4099))
        for cut in cuts {
            let url = dir.appendingPathComponent("cut-\(cut).gguf")
            try bytes.prefix(cut).write(to: url)
            expectModelError(url.path) { reason in
                switch reason {
                case .format(.truncated), .format(.tensorOutOfBounds), .format(.badMagic), .format(.implausible), .format(.io):
                    return true
                default: return false
                }
            }
        }
    }

    func testNotAGGUFFile() throws {
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("x.gguf")
        try Data("this is not a model at all".utf8).write(to: url)
        expectModelError(url.path) { $0 == .format(.badMagic(expected: "GGUF")) }
    }

    func testTensorOffsetPastTheEnd() throws {
        var parts = try tinyParts()
        parts.tensors[3].offsetOverride = 1 << 40
        expectModelError(try write(parts)) {
            if case .format(.tensorOutOfBounds(let t, _, _, _)) = $0 { return t == parts.tensors[3].name }
            return false
        }
    }

    func testLyingCountsAndLengths() throws {
        var bytes = GGUFWriterForTests.bytes(metadata: [("general.architecture", .string("llama"))], tensors: [])
        // tensor count -> 2^60
        bytes.replaceSubrange(8..<16, with: withUnsafeBytes(of: UInt64(1 << 60).littleEndian, Array.init))
        let dir = try Fixtures.temporaryDirectory()
        let url = dir.appendingPathComponent("count.gguf")
        try Data(bytes).write(to: url)
        expectModelError(url.path) { if case .format(.implausible) = $0 { return true }; return false }
        // a key length far past the end
        var bytes2 = GGUFWriterForTests.bytes(metadata: [("general.architecture", .string("llama"))], tensors: [])
        bytes2.replaceSubrange(24..<32, with: withUnsafeBytes(of: UInt64(1 << 50).littleEndian, Array.init))
        let url2 = dir.appendingPathComponent("keylen.gguf")
        try Data(bytes2).write(to: url2)
        expectModelError(url2.path) { if case .format(.implausible) = $0 { return true }; return false }
    }

    func testUnsupportedQuantizationType() throws {
        var parts = try tinyParts()
        let i = try XCTUnwrap(parts.tensors.firstIndex { $0.name == "blk.0.ffn_up.weight" })
        parts.tensors[i].type = 11 // Q3_K
        expectModelError(try write(parts)) { $0 == .format(.unsupportedTensorType(tensor: "blk.0.ffn_up.weight", type: "Q3_K")) }
    }

    func testUnknownArchitecture() throws {
        var parts = try tinyParts()
        parts.metadata = parts.metadata.map { $0.0 == "general.architecture" ? ($0.0, .string("mamba")) : $0 }
        expectModelError(try write(parts)) { $0 == .unknownArchitecture("mamba") }
    }

    func testMissingTensor() throws {
        var parts = try tinyParts()
        parts.tensors.removeAll { $0.name == "blk.1.ffn_down.weight" }
        expectModelError(try write(parts)) { $0 == .missingTensor("blk.1.ffn_down.weight") }
    }

    func testShapesThatDisagreeWithTheHyperParameters() throws {
        var parts = try tinyParts()
        parts.metadata = parts.metadata.map { $0.0 == "llama.feed_forward_length" ? ($0.0, .uint32(96)) : $0 }
        expectModelError(try write(parts)) {
            if case .shapeMismatch(let t, let expected, let actual) = $0 {
                return t == "blk.0.ffn_gate.weight" && expected == [96, 64] && actual == [128, 64]
            }
            return false
        }
    }

    func testMissingHyperParameter() throws {
        var parts = try tinyParts()
        parts.metadata.removeAll { $0.0 == "llama.block_count" }
        expectModelError(try write(parts)) { $0 == .missingMetadata(key: "llama.block_count") }
    }

    func testNonUTF8MetadataString() throws {
        var bytes = GGUFWriterForTests.bytes(metadata: [("general.name", .string("abcd"))], tensors: [])
        let at = try XCTUnwrap(bytes.indices.first { bytes[$0...].starts(with: Array("abcd".utf8)) })
        bytes[at + 1] = 0xFF
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("utf8.gguf")
        try Data(bytes).write(to: url)
        expectModelError(url.path) { if case .format(.invalidUTF8) = $0 { return true }; return false }
    }

    func testMissingFileAndEmptyFile() throws {
        expectModelError("/nonexistent/model.gguf") { if case .format(.io) = $0 { return true }; return false }
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("empty.gguf")
        try Data().write(to: url)
        expectModelError(url.path) { if case .format(.truncated) = $0 { return true }; return false }
    }

    // MARK: Hugging Face directories

    func copyOfTinyHF() throws -> URL {
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent("hf")
        try FileManager.default.copyItem(at: Fixtures.url("tiny/llama-tied/hf"), to: dir)
        return dir
    }

    func testUnknownModelTypeInConfig() throws {
        let dir = try copyOfTinyHF()
        let configURL = dir.appendingPathComponent("config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["model_type"] = "gpt_neox"
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        do {
            _ = try LlamaModel.load(path: dir.path)
            XCTFail("loaded")
        } catch let e as ModelError {
            XCTAssertEqual(e.reason, .unknownArchitecture("gpt_neox"))
            XCTAssertEqual(e.file, configURL.path)
        }
    }

    func testCorruptSafetensors() throws {
        let dir = try copyOfTinyHF()
        let weights = dir.appendingPathComponent("model.safetensors")
        let original = try Data(contentsOf: weights)
        let headerLength = original.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let header = String(decoding: original[8..<(8 + Int(headerLength))], as: UTF8.self)

        func expect(_ data: Data, _ check: (FormatError.Reason) -> Bool, _ what: String) throws {
            try data.write(to: weights)
            do {
                _ = try LlamaModel.load(path: dir.path)
                XCTFail("loaded: \(what)")
            } catch let e as ModelError {
                XCTAssertEqual(e.file, weights.path, what)
                guard case .format(let r) = e.reason else { return XCTFail("\(what): \(e)") }
                XCTAssertTrue(check(r), "\(what): \(e)")
            }
        }
        // The header length says more than the file holds.
        var lying = original
        lying.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(original.count).littleEndian, Array.init))
        try expect(lying, { if case .implausible = $0 { return true }; return false }, "header length")
        // The data is cut short: offsets now point past the end.
        try expect(original.prefix(original.count - 1000), { if case .tensorOutOfBounds = $0 { return true }; return false }, "truncated data")
        // A dtype that disagrees with the data size (F32 -> F16 keeps the offsets).
        let f16Header = header.replacingOccurrences(of: "\"F32\"", with: "\"F16\"")
        try expect(Data(original.prefix(8)) + Data(f16Header.utf8) + original[(8 + Int(headerLength))...],
                   { if case .badTensorShape = $0 { return true }; return false }, "dtype")
        // Garbage instead of JSON.
        try expect(Data(original.prefix(8)) + Data(repeating: 0x7B, count: Int(headerLength)) + original[(8 + Int(headerLength))...],
                   { if case .invalidJSON = $0 { return true }; return false }, "json")
    }

    func testPickleOnlyDirectoryIsRefusedByName() throws {
        let dir = try copyOfTinyHF()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        try Data([0x80, 0x02]).write(to: dir.appendingPathComponent("pytorch_model.bin"))
        do {
            _ = try LlamaModel.load(path: dir.path)
            XCTFail("loaded")
        } catch let e as ModelError {
            XCTAssertTrue(e.description.contains("pytorch_model.bin"), e.description)
        }
    }
}
