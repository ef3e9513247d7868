import TesseraKernels
import XCTest
@testable import Tessera

/// Decode attention (tsr_attention_rows: contexts cut into chunks of TSR_ATTENTION_CHUNK
/// positions, partial softmaxes merged) against the prefill path (sgemm over the whole context,
/// one softmax), on paged caches past several chunks.
final class DecodeAttentionTests: XCTestCase {
    func testChunkedDecodeAttentionMatchesThePrefillPath() throws {
        for precision in KVPrecision.allCases { try check(precision) }
    }

    /// Both paths read the same cached values (f16 ones widened). With f16 the paths' f32-order
    /// differences upstream can flip a key's or value's rounding (one f16 step, 2^-11 relative),
    /// hence the looser bound.
    func check(_ precision: KVPrecision) throws {
        let tolerance: Float = precision == .f32 ? 2e-4 : 2e-3
        // The tiny fixture trained for 128 positions, run past them (RoPE and attention are
        // defined for any position; both paths see the same numbers).
        let tiny = try LlamaModel.load(path: Fixtures.path("tiny/llama-untied/model.gguf"))
        var c = tiny.config
        c.contextLength = 1024
        let model = LlamaModel(config: c, weights: tiny.weights, source: tiny.source)
        let n = min(3 * Int(TSR_ATTENTION_CHUNK) + 37, c.contextLength)
        XCTAssertGreaterThan(n, 2 * Int(TSR_ATTENTION_CHUNK), "the fixture's context should span several chunks")
        let tokens: [Int32] = (0..<n).map { Int32(($0 * 7919 + 13) % c.vocabularySize) }
        func paged() throws -> KVCache {
            let cache = KVCache(pool: try KVBlockPool(config: c, blockSize: 16, blockCount: (n + 15) / 16 + 1, precision: precision))
            XCTAssertTrue(cache.reserve(positions: n))
            return cache
        }
        func run(deterministic: Bool) throws -> [[Float]] {
            let scratch = model.makeScratch()
            scratch.deterministic = deterministic  // every row through the per-row (decode) attention
            var batch = ForwardBatch()
            for (i, t) in tokens.enumerated() { batch.append(token: t, position: i, sequence: 0, wantLogits: true) }
            let logits = try model.forward(batch, caches: [try paged()], scratch: scratch)
            return (0..<n).map { logits.array($0) }
        }
        let prefill = try run(deterministic: false), decode = try run(deterministic: true)
        for (i, (a, b)) in zip(prefill, decode).enumerated() {
            XCTAssertLessThan(maxAbsDifference(a, b), tolerance, "\(precision): position \(i) (chunk \(i / Int(TSR_ATTENTION_CHUNK)))")
        }
        // One decode row after a prefill: the same numbers as the last prefill row.
        let cache = try paged()
        var head = ForwardBatch()
        for (i, t) in tokens.dropLast().enumerated() { head.append(token: t, position: i, sequence: 0, wantLogits: false) }
        _ = try model.forward(head, caches: [cache], scratch: model.makeScratch())
        var last = ForwardBatch()
        last.append(token: tokens[n - 1], position: n - 1, sequence: 0, wantLogits: true)
        let row = try model.forward(last, caches: [cache], scratch: model.makeScratch()).array(0)
        XCTAssertLessThan(maxAbsDifference(row, prefill[n - 1]), tolerance, "\(precision)")
    }
}
