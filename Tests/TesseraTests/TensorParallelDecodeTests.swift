import Foundation
import XCTest
import TesseraKernels
@testable import Tessera

/// The tensor-parallel decode step (tsr_decode_step: one pool job, two threads split by query
/// heads and hidden units) against the row-split path, which must give the same bits.
final class TensorParallelDecodeTests: XCTestCase {
    override func tearDown() {
        tsr_threads_set(Int32(ProcessInfo.processInfo.activeProcessorCount))
        super.tearDown()
    }

    /// Shapes whose head split leaves a kv head's query heads in both shares (9 heads over 3 kv
    /// heads), one without GQA sharing (8 heads over 2), and a K-quant one (panels of 256).
    static let shared = SyntheticModel.Shape(hidden: 288, intermediate: 800, layers: 3, heads: 9, kvHeads: 3, vocabulary: 300, context: 512)
    static let kQuant = SyntheticModel.Shape(hidden: 512, intermediate: 1280, layers: 2, heads: 8, kvHeads: 2, vocabulary: 260, context: 512)

    /// Logits of every decode step after a prefill of `prompt` tokens, in a paged cache whose
    /// blocks come from a pool in shuffled order.
    private func decodeLogits(_ model: LlamaModel, prompt: Int, steps: Int, tensorParallel: Bool, threads: Int32,
                              kv: KVPrecision, usedSteps: inout Int) throws -> [[Float]] {
        // The prompt on two threads in every run (a long prefill's sgemm attention may round
        // differently with the thread count); the steps compared on `threads`.
        tsr_threads_set(2)
        let c = model.config
        let pool = try KVBlockPool(config: c, blockSize: 16, blockCount: 64, precision: kv)
        let decoy = KVCache(pool: pool), cache = KVCache(pool: pool)
        // Interleave another cache's blocks so this sequence's block table is not contiguous.
        for p in stride(from: 16, through: prompt + steps + 16, by: 16) {
            XCTAssertTrue(decoy.reserve(positions: p / 2 + 16))
            XCTAssertTrue(cache.reserve(positions: p))
        }
        let scratch = model.makeScratch()
        scratch.tensorParallelDecode = tensorParallel
        var tokens = (0..<prompt).map { Int32(($0 * 37 + 11) % c.vocabularySize) }
        var batch = ForwardBatch()
        for (i, t) in tokens.enumerated() { batch.append(token: t, position: i, sequence: 0, wantLogits: i == prompt - 1) }
        var last = try model.forward(batch, caches: [cache], scratch: scratch).array(0)
        tsr_threads_set(threads)
        var out: [[Float]] = []
        for step in 0..<steps {
            // The next token: the argmax, perturbed by the step so the sequence moves around.
            let next = Int32((last.indices.max { last[$0] < last[$1] }! + step * 7) % c.vocabularySize)
            tokens.append(next)
            var b = ForwardBatch()
            b.append(token: next, position: tokens.count - 1, sequence: 0, wantLogits: true)
            last = try model.forward(b, caches: [cache], scratch: scratch).array(0)
            out.append(last)
        }
        usedSteps = scratch.tensorParallelSteps
        return out
    }

    func testTensorParallelStepGivesTheRowSplitPathsBits() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(SyntheticModel.Shape, GGMLType, ActivationPrecision, KVPrecision, Int)] = [
            (Self.shared, .q4_1, .q8x2, .f16, 270),  // past 256 positions: several attention chunks
            (Self.shared, .q8_0, .q8, .f32, 140),  // two chunks
            (Self.shared, .q5_0, .q8x2, .f16, 5),
            (Self.shared, .q4_0, .q8x2, .f32, 40),
            (Self.kQuant, .q4_K, .q8x2, .f16, 30),
            (Self.kQuant, .q5_1, .q8, .f16, 30),
        ]
        for (i, (shape, type, activations, kv, prompt)) in cases.enumerated() {
            let path = dir.appendingPathComponent("m\(i).gguf").path
            _ = try SyntheticModel.write(path: path, shape: shape, type: type, seed: UInt64(i + 3))
            let model = try LlamaModel.load(path: path, options: .init(activations: activations, kvCache: kv))
            let label = "\(type) \(activations) kv \(kv) heads \(shape.heads)/\(shape.kvHeads)"
            let split = try XCTUnwrap(model.weights.decodeSplit, label)
            XCTAssertGreaterThan(split.heads, 0, label)
            var used = 0
            let tp = try decodeLogits(model, prompt: prompt, steps: 12, tensorParallel: true, threads: 2, kv: kv, usedSteps: &used)
            XCTAssertEqual(used, 12, "every step ran tensor parallel: \(label)")
            let rows = try decodeLogits(model, prompt: prompt, steps: 12, tensorParallel: false, threads: 2, kv: kv, usedSteps: &used)
            XCTAssertEqual(used, 0, label)
            let one = try decodeLogits(model, prompt: prompt, steps: 12, tensorParallel: true, threads: 1, kv: kv, usedSteps: &used)
            XCTAssertEqual(used, 0, "one thread keeps the row-split path: \(label)")
            XCTAssertEqual(tp.count, 12)
            for s in 0..<tp.count {
                // Compared as bits, reported by the largest difference.
                XCTAssertTrue(tp[s] == rows[s], "step \(s), \(label): tensor-parallel vs row-split (2 threads), max |Δ| \(maxAbsDifference(tp[s], rows[s]))")
                XCTAssertTrue(tp[s] == one[s], "step \(s), \(label): tensor-parallel vs 1 thread, max |Δ| \(maxAbsDifference(tp[s], one[s]))")
            }
            XCTAssertGreaterThan(tp.flatMap { $0 }.map(abs).max() ?? 0, 0, "logits not all zero: \(label)")
        }
    }

    func testSplitBalancesTheShares() {
        var heads: Int64 = 0, units: Int64 = 0
        // SmolLM2: 9 heads over 3 kv heads: 4 query heads own 2 kv heads, 5 own 1 (12 rows each).
        XCTAssertEqual(tsr_decode_split(9, 3, 64, 1536, 32, 32, &heads, &units), TSR_OK)
        XCTAssertEqual(heads, 4)
        XCTAssertEqual(units, 768)
        // TinyLlama: 32 heads over 4, K-quant panels of 256 columns.
        XCTAssertEqual(tsr_decode_split(32, 4, 64, 5632, 256, 256, &heads, &units), TSR_OK)
        XCTAssertEqual(heads, 16)
        XCTAssertEqual(units % 256, 0)
        XCTAssertLessThanOrEqual(abs(Int(units) - 2816), 128)
        // No valid split: one head, or a panel that cannot be whole blocks.
        XCTAssertNotEqual(tsr_decode_split(1, 1, 64, 1536, 32, 32, &heads, &units), TSR_OK)
        XCTAssertNotEqual(tsr_decode_split(2, 2, 16, 1536, 32, 32, &heads, &units), TSR_OK)
    }

    func testEachSharesWeightsAreOneRunOfMemory() throws {
        // Every layer's q_s k_s v_s, o panel s, g_s u_s and down panel s, share 0's layers then
        // share 1's, each slice starting where the previous ended (rounded up to 64 bytes).
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (shape, type) in [(Self.shared, GGMLType.q4_1), (Self.kQuant, .q4_K)] {
            let path = dir.appendingPathComponent("\(type).gguf").path
            _ = try SyntheticModel.write(path: path, shape: shape, type: type, seed: 5)
            let model = try LlamaModel.load(path: path)
            let layers = model.weights.layers
            func bytes(_ p: tsr_weight_part) -> Int { Int(p.rows * p.row_bytes) }
            func panels(_ w: LinearWeight) throws -> [(UnsafeRawPointer, Int)] {
                let p = w.parts[0]
                XCTAssertEqual(w.partCount, 1)
                XCTAssertGreaterThan(p.k_split, 0, "\(type)")
                let first = bytes(p) / (w.inputs / 32) * Int(p.k_split)
                return [(try XCTUnwrap(p.data), first), (try XCTUnwrap(p.panel1, "panel 1 placed apart: \(type)"), bytes(p) - first)]
            }
            var run: [(UnsafeRawPointer, Int)] = []
            for share in 0..<2 {
                for l in layers {
                    XCTAssertEqual(l.qkv.partCount, 6)
                    XCTAssertEqual(l.gateUp.partCount, 4)
                    for i in [share, 2 + share, 4 + share] { run.append((try XCTUnwrap(l.qkv.parts[i].data), bytes(l.qkv.parts[i]))) }
                    run.append(try panels(l.attentionOutput)[share])
                    for i in [share, 2 + share] { run.append((try XCTUnwrap(l.gateUp.parts[i].data), bytes(l.gateUp.parts[i]))) }
                    run.append(try panels(l.down)[share])
                }
            }
            for i in 1..<run.count {
                let end = (Int(bitPattern: run[i - 1].0) + run[i - 1].1 + 63) / 64 * 64
                XCTAssertEqual(Int(bitPattern: run[i].0), end, "\(type): slice \(i) of \(run.count)")
            }
        }
    }
}
