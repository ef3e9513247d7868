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

    /// tsr_attention_rows on random caches against attention computed in Double: head sizes with
    /// and without a compiled-in specialisation, groups of 1 to 12 query heads per kv head (past
    /// the 8 kept in registers), block sizes that do and do not hold whole 16-position runs,
    /// contexts on and off chunk and block edges, shuffled block tables, several rows in one
    /// call. Each row's result must be bitwise the same alone, in the batch, and at 1-3 threads.
    func testDecodeAttentionKernelMatchesAReference() throws {
        let saved = tsr_threads_get()
        defer { tsr_threads_set(saved) }
        var rng = SplitMix(seed: 7)
        let shapes: [(heads: Int, kvHeads: Int, headDim: Int, blockSize: Int)] = [
            (9, 3, 64, 16), (4, 4, 128, 16), (8, 1, 64, 32), (12, 2, 24, 5), (12, 1, 16, 16), (6, 3, 40, 7),
        ]
        let contexts = [1, 15, 16, 17, 127, 128, 129, 255, 256, 257, 544, 1100]
        for shape in shapes {
            for kvType in [Int32(TSR_GGML_F32), Int32(TSR_GGML_F16)] {
                let hd = shape.headDim, kvd = shape.kvHeads * hd, bs = shape.blockSize, group = shape.heads / shape.kvHeads
                let blocksPerRow = contexts.map { ($0 + bs - 1) / bs }
                let totalBlocks = blocksPerRow.reduce(0, +)
                let esize = kvType == Int32(TSR_GGML_F16) ? 2 : 4
                let elements = totalBlocks * bs * kvd
                let keys = UnsafeMutableRawPointer.allocate(byteCount: elements * esize, alignment: 64)
                let values = UnsafeMutableRawPointer.allocate(byteCount: elements * esize, alignment: 64)
                defer { keys.deallocate(); values.deallocate() }
                // Random elements, read back as the kernel sees them (f16 ones rounded).
                var k = [Float](repeating: 0, count: elements), v = k
                for i in 0..<elements {
                    k[i] = Float(rng.unit() * 2 - 1)
                    v[i] = Float(rng.unit() * 2 - 1)
                    if esize == 2 {
                        let kh = Float16(k[i]), vh = Float16(v[i])
                        keys.storeBytes(of: kh, toByteOffset: 2 * i, as: Float16.self)
                        values.storeBytes(of: vh, toByteOffset: 2 * i, as: Float16.self)
                        k[i] = Float(kh); v[i] = Float(vh)
                    } else {
                        keys.storeBytes(of: k[i], toByteOffset: 4 * i, as: Float.self)
                        values.storeBytes(of: v[i], toByteOffset: 4 * i, as: Float.self)
                    }
                }
                // Every row's blocks, drawn from one shuffled pool.
                var pool = Array(0..<Int32(totalBlocks))
                for i in stride(from: pool.count - 1, to: 0, by: -1) { pool.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
                var tables: [[Int32]] = []
                var used = 0
                for count in blocksPerRow { tables.append(Array(pool[used..<(used + count)])); used += count }
                let queries = contexts.map { _ in (0..<(shape.heads * hd)).map { _ in Float(rng.unit() * 4 - 2) } }
                let scale = 1 / Float(hd).squareRoot()

                // The reference: keys K^T per block (channel c of slot i at c·bs + i), values as rows.
                func reference(_ r: Int) -> [Float] {
                    var out = [Float](repeating: 0, count: shape.heads * hd)
                    for h in 0..<shape.heads {
                        let kvh = h / group
                        var scores = [Double](repeating: 0, count: contexts[r])
                        for t in 0..<contexts[r] {
                            let base = Int(tables[r][t / bs]) * bs * kvd
                            var dot = 0.0
                            for d in 0..<hd { dot += Double(queries[r][h * hd + d]) * Double(k[base + (kvh * hd + d) * bs + t % bs]) }
                            scores[t] = dot * Double(scale)
                        }
                        let m = scores.max() ?? 0
                        let e = scores.map { exp($0 - m) }, l = e.reduce(0, +)
                        for d in 0..<hd {
                            var acc = 0.0
                            for t in 0..<contexts[r] {
                                acc += e[t] * Double(v[Int(tables[r][t / bs]) * bs * kvd + (t % bs) * kvd + kvh * hd + d])
                            }
                            out[h * hd + d] = Float(acc / l)
                        }
                    }
                    return out
                }
                func run(rows: [Int], threads: Int32) -> [[Float]] {
                    tsr_threads_set(threads)
                    var outputs = rows.map { _ in [Float](repeating: .nan, count: shape.heads * hd) }
                    let maxContext = rows.map { contexts[$0] }.max() ?? 1
                    var scratch = [Float](repeating: 0, count: Int(tsr_attention_scratch_floats(Int64(rows.count), Int64(maxContext),
                                                                                                Int64(shape.heads), Int64(hd), Int64(threads))))
                    // Pointers into arrays that stay put for the call.
                    let outPointers = outputs.indices.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: shape.heads * hd) }
                    let qPointers = rows.map { r in
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: shape.heads * hd)
                        p.initialize(from: queries[r], count: shape.heads * hd)
                        return p
                    }
                    let tablePointers = rows.map { r in
                        let p = UnsafeMutablePointer<Int32>.allocate(capacity: tables[r].count)
                        p.initialize(from: tables[r], count: tables[r].count)
                        return p
                    }
                    defer { (outPointers + qPointers).forEach { $0.deallocate() }; tablePointers.forEach { $0.deallocate() } }
                    let items = rows.enumerated().map { i, r in
                        tsr_attention_item(out: outPointers[i], q: qPointers[i], k: keys, v: values, block_table: tablePointers[i],
                                           block_size: Int64(bs), n_ctx: Int64(contexts[r]))
                    }
                    tsr_attention_rows(items, Int64(items.count), Int64(kvd), Int64(shape.heads), Int64(shape.kvHeads), Int64(hd),
                                       scale, &scratch, Int64(maxContext), kvType, Int64(threads))
                    for i in outputs.indices { outputs[i] = Array(UnsafeBufferPointer(start: outPointers[i], count: shape.heads * hd)) }
                    return outputs
                }
                let all = Array(contexts.indices)
                let batch1 = run(rows: all, threads: 1), batch2 = run(rows: all, threads: 2), batch3 = run(rows: all, threads: 3)
                for r in all {
                    let label = "shape \(shape), kv type \(kvType), context \(contexts[r])"
                    XCTAssertLessThan(maxAbsDifference(batch1[r], reference(r)), 1e-5, label)
                    XCTAssertEqual(batch1[r], batch2[r], "\(label): 1 vs 2 threads")
                    XCTAssertEqual(batch1[r], batch3[r], "\(label): 1 vs 3 threads")
                }
                for r in [0, 8, 10] { XCTAssertEqual(run(rows: [r], threads: 2)[0], batch1[r], "context \(contexts[r]) alone vs in the batch") }
            }
        }
    }

    /// The prefill path's causal softmax (tsr_causal_softmax_rows over tsr_softmax: vectorised
    /// exponentials, f32 lane sums) against Double, on rows of awkward lengths and wide ranges:
    /// relative error per probability within 2e-6 of the largest, masked columns exactly 0.
    func testCausalSoftmaxMatchesAReference() {
        var rng = SplitMix(seed: 11)
        for (cols, spread) in [(1, 1.0), (7, 30.0), (16, 5.0), (17, 80.0), (300, 10.0), (2049, 3.0)] {
            let rows = min(cols, 5), first = cols - rows
            var scores = (0..<(rows * cols)).map { _ in Float((rng.unit() * 2 - 1) * spread) }
            let original = scores
            let scale: Float = 0.7
            tsr_causal_softmax_rows(&scores, Int64(rows), Int64(cols), Int64(cols), Int64(first), scale)
            for r in 0..<rows {
                let visible = first + r + 1
                let v = (0..<visible).map { Double(original[r * cols + $0]) * Double(scale) }
                let m = v.max() ?? 0
                let e = v.map { exp($0 - m) }, total = e.reduce(0, +)
                var worst = 0.0
                for c in 0..<visible { worst = max(worst, abs(Double(scores[r * cols + c]) - e[c] / total)) }
                XCTAssertLessThan(worst, 2e-6 * ((e.max() ?? 1) / total), "cols \(cols) row \(r)")
                for c in visible..<cols { XCTAssertEqual(scores[r * cols + c], 0, "masked column \(c)") }
                XCTAssertEqual(Double((0..<visible).map { scores[r * cols + $0] }.reduce(0, +)), 1, accuracy: 1e-5)
            }
        }
    }

    /// A NaN score poisons its row (all NaN) instead of passing for a probability, and the other
    /// rows are unaffected.
    func testSoftmaxKeepsANaNScoreVisible() {
        var scores: [Float] = [0.5, .nan, 1, 2, -1, 3, 0, 1]
        tsr_causal_softmax_rows(&scores, 2, 4, 4, 3, 1)
        XCTAssertTrue(scores[0..<4].allSatisfy(\.isNaN), "\(scores)")
        XCTAssertEqual(Double(scores[4..<8].reduce(0, +)), 1, accuracy: 1e-6)
    }
}
