import Foundation
import XCTest
@testable import Tessera

/// Models whose weights stay in their stored type: memory, the weight-memory budget, and the
/// two matmul paths agreeing on a model's numbers.
final class QuantizedModelTests: XCTestCase {
    func testA1BClassModelLoadsWithoutExpandingToF32() throws {
        // TinyLlama-1.1B's shape, random Q4_0 blocks: 619 MB as stored, 4.4 GB as f32.
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("llama-1b-q4_0.gguf").path
        let fileBytes = try SyntheticModel.write(path: path, shape: .llama1B, type: .q4_0)
        let prompt = dir.appendingPathComponent("prompt.json")
        try Data("[1, 2, 3, 4]".utf8).write(to: prompt)
        let run = try runTessera(["bench-model", "--model", path, "--prompt-tokens-file", prompt.path, "--gen-tokens", "2",
                                  "--runs", "1", "--threads", "2", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = try XCTUnwrap(run.json, run.stderr)
        let peak = try XCTUnwrap((json["peak_rss_bytes"] as? NSNumber)?.intValue)
        // KV cache: 7 positions x 22 layers x (k + v) x 256 floats, tiny; scratch and logits a few MB.
        let f32Bytes = SyntheticModel.Shape.llama1B.parameterCount * 4
        print("1B-class Q4_0: file \(fileBytes) bytes, peak RSS \(peak) bytes (\(String(format: "%.2f", Double(peak) / Double(fileBytes)))x), f32 would be \(f32Bytes)")
        XCTAssertLessThan(Double(peak), 1.3 * Double(fileBytes) + 64e6, "peak RSS \(peak) for a \(fileBytes)-byte file")
        XCTAssertGreaterThan(peak, fileBytes / 2, "the run should have touched the weights")
    }

    func testWeightMemoryBudgetBuysF32CopiesWithoutChangingResults() throws {
        let path = Fixtures.path("tiny/llama-untied/model.gguf")
        let plain = try LlamaModel.load(path: path)
        XCTAssertLessThan(plain.allocatedWeightBytes, 64 * 1024, "only norms are allocated")
        // A budget of one layer's matrices: copies stay within it.
        let c = plain.config
        let layerBytes = 4 * c.hiddenSize * (c.queryDimension + 2 * c.kvDimension + c.queryDimension + 3 * c.intermediateSize)
        let some = try LlamaModel.load(path: path, options: .init(weightMemory: layerBytes + layerBytes / 2))
        XCTAssertGreaterThan(some.allocatedWeightBytes, plain.allocatedWeightBytes)
        XCTAssertLessThanOrEqual(some.allocatedWeightBytes - plain.allocatedWeightBytes, layerBytes + layerBytes / 2)
        let all = try LlamaModel.load(path: path, options: .init(weightMemory: 1 << 30))
        XCTAssertGreaterThanOrEqual(all.allocatedWeightBytes - plain.allocatedWeightBytes, c.layerCount * layerBytes)
        // Many rows take the copies (or tiles); results agree within rounding either way.
        let limits = MatmulRowLimits.kernel(upTo: 8)
        let tokens: [Int32] = (0..<40).map { Int32(($0 * 37 + 11) % c.vocabularySize) }
        let reference = try allLogits(plain, tokens: tokens, rowLimits: limits)
        for model in [some, all] {
            let logits = try allLogits(model, tokens: tokens, rowLimits: limits)
            for (a, b) in zip(logits, reference) { assertClose(a, b, tolerance: 1e-4) }
        }
    }

    func testInterleavedAndStoredLayoutsAgree() throws {
        let path = try Fixtures.defaultModelPath()
        let stored = try LlamaModel.load(path: path, options: .init(activations: .f32, layout: .stored))
        let interleaved = try LlamaModel.load(path: path, options: .init(activations: .f32, layout: .interleaved))
        XCTAssertEqual(stored.interleavedWeightBytes, 0)
        XCTAssertEqual(interleaved.interleavedWeightBytes, interleaved.weightBytes - interleaved.allocatedWeightBytes,
                       "every SmolLM2 matrix (Q4_1, Q8_0 LM head) is interleaved")
        let tokens: [Int32] = [504, 3575, 282, 4649, 314, 7042, 30, 198, 504, 1797, 1918, 553]
        var limits = MatmulRowLimits()
        for limit in [1000, 0] {  // the weight-type kernel, then dequantized tiles
            limits = .kernel(upTo: limit)
            // f32 activations: both layouts dequantize to the same floats, dotted in the same order.
            XCTAssertEqual(try allLogits(stored, tokens: tokens, rowLimits: limits), try allLogits(interleaved, tokens: tokens, rowLimits: limits), "row limit \(limit)")
        }
        // 8-bit activations: the two kernels sum the same integer products with their float
        // scales in another order; the difference is the activations' noise: one 8-bit level's
        // (q8, described below) or two levels' (q8x2, about 1/256 of it).
        limits = .kernel(upTo: 1000)
        for (activations, bound) in [(ActivationPrecision.q8, Float(2.5)), (.q8x2, 0.05)] {
            let q8Stored = try LlamaModel.load(path: path, options: .init(activations: activations, layout: .stored))
            let q8Interleaved = try LlamaModel.load(path: path, options: .init(activations: activations, layout: .interleaved))
            let a = try allLogits(q8Stored, tokens: tokens, rowLimits: limits), b = try allLogits(q8Interleaved, tokens: tokens, rowLimits: limits)
            var worst: Float = 0
            for (x, y) in zip(a, b) { worst = max(worst, maxAbsDifference(x, y)) }
            print("SmolLM2 \(activations): interleaved vs stored layout, largest logit difference over \(tokens.count) positions: \(worst)")
            XCTAssertLessThan(worst, bound, "\(activations)")
            let sameArgmax = zip(a, b).filter { x, y in x.indices.max { x[$0] < x[$1] } == y.indices.max { y[$0] < y[$1] } }.count
            XCTAssertGreaterThanOrEqual(sameArgmax, tokens.count - 2)
        }
    }

    func testStoredKernelAndTilesAgreeOnAQuantizedModel() throws {
        // The same 24 rows through the weight-type kernel and through dequantized tiles + sgemm
        // (fed f32 activations): only float rounding separates them.
        let exact = try LlamaModel.load(path: Fixtures.defaultModelPath(), options: .init(activations: .f32, kvCache: .f32))
        let tokens: [Int32] = [504, 3575, 282, 4649, 314, 7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35, 33, 33, 2215, 701, 30]
        // f32 activations: the machinery (parts, row maps, tiles) agrees to rounding.
        var limits = MatmulRowLimits()
        limits = .kernel(upTo: 1000)
        let storedExact = try allLogits(exact, tokens: tokens, rowLimits: limits)
        limits = .kernel(upTo: 0)
        let tiledExact = try allLogits(exact, tokens: tokens, rowLimits: limits)
        for (a, b) in zip(storedExact, tiledExact) { assertClose(a, b, tolerance: 2e-3) }
        // 8-bit activations through the kernel against f32 ones through the tiles.
        for (activations, bound) in [(ActivationPrecision.q8, Float(2.5)), (.q8x2, 0.05)] {
            let model = try LlamaModel.load(path: Fixtures.defaultModelPath(), options: .init(activations: activations))
            limits = .kernel(upTo: 1000)
            let stored = try allLogits(model, tokens: tokens, rowLimits: limits)
            limits = .kernel(upTo: 0)
            let tiled = try allLogits(model, tokens: tokens, rowLimits: limits)
            var worst: Float = 0
            for (a, b) in zip(stored, tiled) { worst = max(worst, maxAbsDifference(a, b)) }
            print("SmolLM2 \(activations): stored kernel vs tiles, largest logit difference over 24 positions: \(worst)")
            // With one 8-bit level a rounding-level difference flips some activations' 8-bit
            // values in the next layer, and that noise grows through 30 layers: measured 0.4-1.3
            // per position here (the scalar and AVX2 kernels differ as much). The bound is that
            // noise's; deterministic mode (one path for every row) is what makes a row's bits
            // batch-independent. Two levels: about 1/256 of it.
            XCTAssertLessThan(worst, bound, "\(activations)")
            let greedy = zip(stored, tiled).filter { a, b in
                a.indices.max { a[$0] < a[$1] } == b.indices.max { b[$0] < b[$1] }
            }.count
            XCTAssertGreaterThanOrEqual(greedy, tokens.count - 3, "argmax should agree almost everywhere")
        }
    }

    /// Q5_0 / Q5_1 (what K-quant files fall back to for rows not a multiple of 256: most of a
    /// SmolLM2 Q4_K_M) and Q5_K, in small random models: the weight-type kernels with two-level
    /// activations against the f32 path over the same dequantized weights (whose dequantization
    /// DequantizationTests checks against the gguf package), prefill rows and decode steps.
    func testFiveBitTypesAgreeWithTheirDequantizedWeights() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shape = SyntheticModel.Shape(hidden: 256, intermediate: 512, layers: 2, heads: 4, kvHeads: 2, vocabulary: 512, context: 128)
        let limits = MatmulRowLimits.kernel(upTo: 1000)  // every row through the kernels
        let tokens: [Int32] = (0..<24).map { Int32(($0 * 131 + 7) % 512) }
        for type in [GGMLType.q5_0, .q5_1, .q5_K] {
            let path = dir.appendingPathComponent("\(type).gguf").path
            try SyntheticModel.write(path: path, shape: shape, type: type, seed: 3)
            let exact = try LlamaModel.load(path: path, options: .init(activations: .f32, kvCache: .f32))
            let kernel = try LlamaModel.load(path: path, options: .init(activations: .q8x2, kvCache: .f32))
            XCTAssertEqual(kernel.weightTypes[type.description], 7 * shape.layers + 2, "\(type): every matrix stays in its type")
            let a = try allLogits(exact, tokens: tokens, rowLimits: limits), b = try allLogits(kernel, tokens: tokens, rowLimits: limits)
            let scale = a.flatMap { $0 }.map(abs).max() ?? 0
            var worst: Float = 0
            for (x, y) in zip(a, b) { worst = max(worst, maxAbsDifference(x, y)) }
            print("\(type): kernel vs dequantized f32, largest logit difference \(worst) (logits up to \(scale))")
            XCTAssertGreaterThan(scale, 0.1, "\(type): logits should not be trivially small")
            XCTAssertLessThan(worst, 2e-3 * scale, "\(type)")
            // Decode steps, one row at a time, agree with the prefill rows.
            let cache = try kernel.makeCache(capacity: tokens.count)
            let scratch = kernel.makeScratch()
            scratch.rowLimits = limits
            for (i, t) in tokens.enumerated() {
                var step = ForwardBatch()
                step.append(token: t, position: i, sequence: 0, wantLogits: true)
                let row = try kernel.forward(step, caches: [cache], scratch: scratch).array(0)
                XCTAssertLessThan(maxAbsDifference(row, a[i]), 2e-3 * scale, "\(type) decode step \(i)")
            }
        }
    }
}
