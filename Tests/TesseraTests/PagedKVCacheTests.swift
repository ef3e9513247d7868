import XCTest
@testable import Tessera

/// Paged KV caches: a sequence whose keys and values are scattered over pool blocks computes
/// exactly what a contiguous cache does, and blocks go back to the pool.
final class PagedKVCacheTests: XCTestCase {
    func testPagedCacheEqualsContiguousCache() throws {
        // f32 keys and values: only summation order separates the two (DecodeAttentionTests covers f16).
        let model = try LlamaModel.load(path: Fixtures.path("tiny/llama-tied/model.gguf"), options: .init(kvCache: .f32))
        let pool = try KVBlockPool(config: model.config, blockSize: 4, blockCount: 32, precision: model.kvPrecision)
        // Interleave two sequences' allocations so their blocks are not contiguous.
        let a = KVCache(pool: pool), b = KVCache(pool: pool)
        for n in stride(from: 4, through: 40, by: 4) {
            XCTAssertTrue(a.reserve(positions: n))
            XCTAssertTrue(b.reserve(positions: n))
        }
        XCTAssertEqual(pool.freeCount, 12)
        let tokens: [Int32] = (0..<30).map { Int32(($0 * 37 + 11) % 512) }
        let reference = try allLogits(model, tokens: tokens)
        let scratch = model.makeScratch()
        var batch = ForwardBatch()
        // A 21-row prefill chunk (the sgemm path, gathering blocks), then single rows.
        for i in 0..<21 { batch.append(token: tokens[i], position: i, sequence: 0, wantLogits: true) }
        var out = try model.forward(batch, caches: [a], scratch: scratch)
        for i in 0..<21 { assertClose(out.array(i), reference[i], tolerance: 1e-5, "prefill row \(i)") }
        for i in 21..<30 {
            batch.removeAll()
            batch.append(token: tokens[i], position: i, sequence: 0, wantLogits: true)
            out = try model.forward(batch, caches: [a], scratch: scratch)
            assertClose(out.array(0), reference[i], tolerance: 1e-5, "decode row \(i)")
        }
        a.releaseAll()
        b.releaseAll()
        XCTAssertEqual(pool.freeCount, 32)
    }

    func testReserveFailsWithoutTakingBlocksWhenThePoolIsShort() throws {
        let model = try LlamaModel.load(path: Fixtures.path("tiny/llama-tied/model.gguf"))
        let pool = try KVBlockPool(config: model.config, blockSize: 16, blockCount: 3)
        let a = KVCache(pool: pool)
        XCTAssertTrue(a.reserve(positions: 20))
        XCTAssertEqual(pool.freeCount, 1)
        XCTAssertFalse(a.reserve(positions: 60))
        XCTAssertEqual(pool.freeCount, 1, "a failed reserve takes nothing")
        XCTAssertEqual(a.capacity, 32)
    }
}
