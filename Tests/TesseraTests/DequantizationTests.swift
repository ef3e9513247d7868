import XCTest
@testable import Tessera

/// GGUF reading and dequantization against the `gguf` package's own dequantizer.
final class DequantizationTests: XCTestCase {
    func testEveryTypeMatchesTheReferenceDequantizer() throws {
        let gguf = try GGUFFile(path: Fixtures.path("dequant/blocks.gguf"))
        let manifest = try Fixtures.json("dequant/manifest.json")
        let entries = try XCTUnwrap(manifest["tensors"] as? [[String: Any]])
        let names = Set(entries.compactMap { $0["name"] as? String })
        XCTAssertEqual(names, ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "q5_0", "q5_1", "q5_k"])
        for entry in entries {
            let name = try XCTUnwrap(entry["name"] as? String)
            let info = try XCTUnwrap(gguf.tensor(named: name), name)
            XCTAssertEqual(Int(info.type.rawValue), (entry["ggml_type"] as? NSNumber)?.intValue, name)
            XCTAssertEqual(info.dimensions, [512, 3], name)
            let expected = try Fixtures.floats("dequant/\(try XCTUnwrap(entry["expected"] as? String))")
            let actual = try gguf.dequantize(info)
            // The reference computes in float32 too; only the order of a multiply-add may differ.
            assertClose(actual, expected, tolerance: 1e-6 * (expected.map(abs).max() ?? 1), name)
            XCTAssertFalse(expected.allSatisfy { $0 == 0 }, "\(name) fixture is all zeros")
        }
    }

    func testHalfAndBFloatConversionsAreExact() {
        XCTAssertEqual(tsrHalf(0x3C00), 1.0)
        XCTAssertEqual(tsrHalf(0xC000), -2.0)
        XCTAssertEqual(tsrHalf(0x0001), Float(5.960464477539063e-08)) // smallest subnormal
        XCTAssertEqual(tsrHalf(0x7C00), .infinity)
        XCTAssertTrue(tsrHalf(0x7E00).isNaN)
        XCTAssertEqual(tsrHalf(0x7BFF), 65504)
    }

    func testMetadataValueTypesAreRead() throws {
        let gguf = try GGUFFile(path: Fixtures.path("tiny/llama-tied/model.gguf"))
        XCTAssertEqual(gguf.version, 3)
        XCTAssertEqual(gguf.metadata["general.architecture"], .string("llama"))
        XCTAssertEqual(gguf.metadata["llama.block_count"]?.intValue, 2)
        XCTAssertEqual(gguf.metadata["llama.attention.layer_norm_rms_epsilon"]?.doubleValue ?? 0, 1e-5, accuracy: 1e-9)
        // Every GGUF value type round-trips through a file written here.
        let file = try GGUFWriterForTests.write(metadata: [
            ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("f32", .float32(1.5)),
            ("b", .bool(true)), ("s", .string("héllo")), ("u64", .uint64(1 << 40)), ("i64", .int64(-(1 << 40))),
            ("f64", .float64(2.25)), ("arr", .array([.string("a"), .string("bc")])), ("ints", .array([.int32(1), .int32(-2)])),
        ], tensors: [])
        let read = try GGUFFile(path: file.path)
        XCTAssertEqual(read.metadata["u8"], .uint8(200))
        XCTAssertEqual(read.metadata["i8"], .int8(-5))
        XCTAssertEqual(read.metadata["u16"], .uint16(60000))
        XCTAssertEqual(read.metadata["i16"], .int16(-30000))
        XCTAssertEqual(read.metadata["u32"], .uint32(4_000_000_000))
        XCTAssertEqual(read.metadata["i32"], .int32(-2_000_000_000))
        XCTAssertEqual(read.metadata["f32"], .float32(1.5))
        XCTAssertEqual(read.metadata["b"], .bool(true))
        XCTAssertEqual(read.metadata["s"], .string("héllo"))
        XCTAssertEqual(read.metadata["u64"], .uint64(1 << 40))
        XCTAssertEqual(read.metadata["i64"], .int64(-(1 << 40)))
        XCTAssertEqual(read.metadata["f64"], .float64(2.25))
        XCTAssertEqual(read.metadata["arr"], .array([.string("a"), .string("bc")]))
        XCTAssertEqual(read.metadata["ints"], .array([.int32(1), .int32(-2)]))
    }
}

import TesseraKernels
func tsrHalf(_ bits: UInt16) -> Float { tsr_f16_to_f32(bits) }
