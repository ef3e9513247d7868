import XCTest
import TesseraKernels
@testable import Tessera

/// Huge-page memory for weights and large buffers.
final class HugePageMemoryTests: XCTestCase {
    func testHugeAllocIsAlignedZeroedAndWritable() throws {
        var mapped: Int64 = 0
        let bytes = 3 << 20 + 5
        let p = try XCTUnwrap(tsr_huge_alloc(Int64(bytes), &mapped))
        defer { tsr_huge_free(p, mapped) }
        XCTAssertEqual(Int(bitPattern: p) % (2 << 20), 0, "2 MiB-aligned")
        XCTAssertGreaterThanOrEqual(Int(mapped), bytes)
        let b = p.assumingMemoryBound(to: UInt8.self)
        XCTAssertTrue((0..<bytes).allSatisfy { b[$0] == 0 }, "zeroed")
        b[bytes - 1] = 7
        XCTAssertEqual(b[bytes - 1], 7)
    }

    func testArenaHandsOutAlignedDisjointSlicesUntilFull() throws {
        let arena = try XCTUnwrap(WeightArena(bytes: WeightArena.bytes(for: [100, 64, 1])))
        let a = try XCTUnwrap(arena.take(100)), b = try XCTUnwrap(arena.take(64)), c = try XCTUnwrap(arena.take(1))
        for p in [a, b, c] { XCTAssertEqual(Int(bitPattern: p) % 64, 0) }
        XCTAssertGreaterThanOrEqual(b - a, 100)
        XCTAssertGreaterThanOrEqual(c - b, 64)
        XCTAssertNil(arena.take(1), "full")
        // A big FloatBuffer comes from the same kind of mapping: zeroed like a small one.
        let big = try XCTUnwrap(FloatBuffer(count: FloatBuffer.hugePageMinimumBytes / 4 + 3))
        XCTAssertTrue(big.toArray().allSatisfy { $0 == 0 })
    }
}
