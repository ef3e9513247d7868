import XCTest
@testable import Tessera

/// Unmerged LoRA against PEFT (float32, CPU) on the tiny Llama, from the HF and the GGUF form of
/// the base, for PEFT directories and a llama.cpp GGUF LoRA file.
final class LoRAReferenceTests: XCTestCase {
    static let adapters = ["all-targets", "qv-rslora", "patterns-subset", "layers-subset", "large-rank"]
    static let bases = ["tiny/llama-untied/hf", "tiny/llama-untied/model.gguf"]

    func logits(_ model: LlamaModel, _ adapter: LoRAAdapter?, _ tokens: [Int32], kernel: LoRAKernel = .automatic) throws -> [[Float]] {
        try loraLogits(model, adapter, tokens, kernel: kernel)
    }

    @discardableResult
    func check(adapterPath: String, reference: String, base: String, kernel: LoRAKernel = .automatic,
               precision: AdapterPrecision = .f32, tolerance: Float = 1e-4) throws -> Float {
        let model = try LlamaModel.load(path: Fixtures.path(base), options: .init(kvCache: .f32))
        let adapter = try LoRAAdapter.load(path: Fixtures.path(adapterPath), base: model.config, precision: precision)
        XCTAssertEqual(adapter.precision, precision)
        var worst: Float = 0
        let ref = try Fixtures.json(reference)
        let sequences = try XCTUnwrap(ref["sequences"] as? [[Any]])
        let expected = try XCTUnwrap(ref["logits"] as? [[[Any]]])
        let baseOnly = try Fixtures.json("tiny/llama-untied/logits.json")["logits"] as? [[[Any]]]
        for (s, seq) in sequences.enumerated() {
            let actual = try logits(model, adapter, seq.int32s, kernel: kernel)
            for p in actual.indices {
                assertClose(actual[p], expected[s][p].floats, tolerance: tolerance, "\(adapterPath) on \(base) seq \(s) pos \(p) (\(precision))")
                worst = max(worst, maxAbsDifference(actual[p], expected[s][p].floats))
            }
            // The adapter really changes the output (the fixture is not the base's).
            XCTAssertGreaterThan(maxAbsDifference(expected[s].last!.floats, baseOnly![s].last!.floats), 0.1)
        }
        return worst
    }

    func testPEFTAdaptersMatchPEFTOnTheHuggingFaceBase() throws {
        for a in Self.adapters { try check(adapterPath: "lora/\(a)", reference: "lora/\(a)/logits.json", base: Self.bases[0]) }
    }

    func testPEFTAdaptersMatchPEFTOnTheGGUFBase() throws {
        for a in Self.adapters { try check(adapterPath: "lora/\(a)", reference: "lora/\(a)/logits.json", base: Self.bases[1]) }
    }

    func testGGUFLoRAMatchesPEFTOnBothBases() throws {
        for b in Self.bases { try check(adapterPath: "lora/all-targets.gguf", reference: "lora/all-targets/logits.json", base: b) }
    }

    /// Adapters held in f16 (A and B rounded to 11 significant bits) through both kernels (the
    /// fused one reads f16, the BLAS one widens into scratch): within 5e-3 of PEFT's f32 logits (measured
    /// 2.2e-3; f32 adapters: 1e-4).
    func testF16AdaptersStayWithinTheirRounding() throws {
        var worst: Float = 0
        for kernel in [LoRAKernel.blas, .fused] {
            for a in ["all-targets", "large-rank"] {
                worst = max(worst, try check(adapterPath: "lora/\(a)", reference: "lora/\(a)/logits.json", base: Self.bases[1], kernel: kernel,
                                             precision: .f16, tolerance: 5e-3))
            }
        }
        print("LoRA f16: largest logit difference from PEFT: \(worst)")
    }

    func testBothKernelsMatchPEFT() throws {
        for kernel in [LoRAKernel.blas, .fused] {
            for a in ["all-targets", "layers-subset"] {
                try check(adapterPath: "lora/\(a)", reference: "lora/\(a)/logits.json", base: Self.bases[1], kernel: kernel)
            }
        }
    }

    func testConfigFieldsAreHonoured() throws {
        let config = try LlamaModel.load(path: Fixtures.path(Self.bases[0])).config
        let rs = try LoRAAdapter.load(path: Fixtures.path("lora/qv-rslora"), base: config)
        XCTAssertEqual(rs.targets, [.q, .v])
        XCTAssertEqual(rs.scales, [4.0]) // 8 / sqrt(4)
        let patterns = try LoRAAdapter.load(path: Fixtures.path("lora/layers-subset"), base: config)
        XCTAssertEqual(patterns.layers, [1])
        XCTAssertEqual(patterns.ranks, [2, 8])
        XCTAssertEqual(patterns.projection(layer: 1, target: .k)?.scale, 8)     // alpha 16 / rank 2
        XCTAssertEqual(patterns.projection(layer: 1, target: .down)?.scale, 0.625) // alpha_pattern 5 / 8
        XCTAssertNil(patterns.projection(layer: 0, target: .q))
        let gguf = try LoRAAdapter.load(path: Fixtures.path("lora/all-targets.gguf"), base: config)
        XCTAssertEqual(gguf.format, .ggufLoRA)
        XCTAssertEqual(gguf.targets.count, 7)
        XCTAssertEqual(gguf.scales, [2.0])
    }

    /// Adapters are held in f16 by default; one with a matrix outside f16's range (a weight
    /// above 65504, or a whole matrix below 2⁻¹⁴ where f16 has only subnormals) is held in f32
    /// instead, whole, and computes exactly what loading it in f32 does.
    func testAdapterOutsideF16RangeIsHeldInF32() throws {
        let model = try LlamaModel.load(path: Fixtures.path(Self.bases[0]), options: .init(kvCache: .f32))
        XCTAssertEqual(try LoRAAdapter.load(path: Fixtures.path("lora/qv-rslora"), base: model.config).precision, .f16)
        for (label, edit) in [("one weight of 1e5", { (tensor: inout [Float]) in tensor[0] = 1e5 }),
                              ("a matrix scaled by 1e-6", { (tensor: inout [Float]) in tensor = tensor.map { $0 * 1e-6 } })] {
            let dir = try Fixtures.temporaryDirectory().appendingPathComponent("qv-rslora-edited")
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.copyItem(at: Fixtures.url("lora/qv-rslora"), to: dir)
            let weights = dir.appendingPathComponent("adapter_model.safetensors")
            var data = try Data(contentsOf: weights)
            let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            // The tensor stored first (every tensor here is F32).
            let header = try XCTUnwrap(JSONSerialization.jsonObject(with: data[8..<(8 + n)]) as? [String: Any])
            let first = try XCTUnwrap(header.values.compactMap { ($0 as? [String: Any])?["data_offsets"] as? [Int] }.min { $0[0] < $1[0] })
            let range = (8 + n + first[0])..<(8 + n + first[1])
            var tensor = data[range].withUnsafeBytes { raw in (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
            XCTAssertGreaterThan(tensor.map(abs).max() ?? 0, 0x1p-14, "the fixture's matrix fits f16 as it is")
            edit(&tensor)
            data.replaceSubrange(range, with: tensor.withUnsafeBytes { Data($0) })
            try data.write(to: weights)
            let held = try LoRAAdapter.load(path: dir.path, base: model.config)
            XCTAssertEqual(held.precision, .f32, label)
            let exact = try LoRAAdapter.load(path: dir.path, base: model.config, precision: .f32)
            XCTAssertEqual(held.byteCount, exact.byteCount, label)
            let tokens: [Int32] = [3, 1, 4, 1, 5]
            let a = try loraLogits(model, held, tokens), b = try loraLogits(model, exact, tokens)
            XCTAssertEqual(a, b, label)
            XCTAssertTrue(a.allSatisfy { $0.allSatisfy(\.isFinite) }, label)
        }
    }

    /// Rows of four adapters (two held in f32, two in f16) and one base row in one forward pass
    /// equal each row computed alone.
    func testMixedBatchRowsEqualEachRowAlone() throws {
        let model = try LlamaModel.load(path: Fixtures.path(Self.bases[1]), options: .init(kvCache: .f32))
        let names = ["all-targets", "qv-rslora", "layers-subset", "large-rank"]
        let adapters = try names.enumerated().map { i, name in
            try LoRAAdapter.load(path: Fixtures.path("lora/\(name)"), base: model.config, precision: i % 2 == 0 ? .f32 : .f16)
        }
        let prompts: [[Int32]] = [[1, 2, 3, 4, 5], [100, 200, 300], [7, 7, 7, 7, 7, 7, 7, 7, 7], [511, 0], [42, 43, 44, 45]]
        // Alone: each sequence by itself, one row at a time (decode-shaped), adapter index 0.
        var alone: [[Float]] = []
        for (i, prompt) in prompts.enumerated() {
            let adapter = i < 4 ? adapters[i] : nil
            alone.append(try logits(model, adapter, prompt).last!)
        }
        // Together: one batch holding all five prompts, rows of each sequence contiguous.
        let caches = try prompts.map { try model.makeCache(capacity: $0.count + 1) }
        var batch = ForwardBatch()
        for (i, prompt) in prompts.enumerated() {
            for (p, t) in prompt.enumerated() {
                batch.append(token: t, position: p, sequence: i, wantLogits: p == prompt.count - 1, adapter: i < 4 ? i : nil)
            }
        }
        let out = try model.forward(batch, caches: caches, adapters: adapters, scratch: model.makeScratch())
        for i in prompts.indices {
            assertClose(out.array(i), alone[i], tolerance: 1e-5, "row of sequence \(i)")
        }
        // And a decode step where every row is a different adapter's single token.
        var step = ForwardBatch()
        for i in prompts.indices { step.append(token: 9, position: prompts[i].count, sequence: i, wantLogits: true, adapter: i < 4 ? i : nil) }
        let stepOut = try model.forward(step, caches: caches, adapters: adapters, scratch: model.makeScratch())
        for i in prompts.indices {
            let single = try logits(model, i < 4 ? adapters[i] : nil, prompts[i] + [9]).last!
            assertClose(stepOut.array(i), single, tolerance: 1e-5, "decode row \(i)")
        }
    }
}

/// Merging folds the delta into a copy of the targeted weights; the base stays as it was.
final class LoRAMergeTests: XCTestCase {
    func testMergedModelMatchesUnmergedAndLeavesTheBaseUntouched() throws {
        let base = try LlamaModel.load(path: Fixtures.path("tiny/llama-untied/model.gguf"), options: .init(kvCache: .f32))
        let tokens: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6]
        let before = try allLogits(base, tokens: tokens)
        // Both precisions: merge widens f16 adapters and reads f32 ones in place.
        for (name, precision) in [("all-targets", AdapterPrecision.f32), ("all-targets", .f16), ("layers-subset", .f32), ("layers-subset", .f16)] {
            let adapter = try LoRAAdapter.load(path: Fixtures.path("lora/\(name)"), base: base.config, precision: precision)
            XCTAssertEqual(adapter.precision, precision)
            let merged = try base.merged(with: adapter)
            let unmerged = try loraLogits(base, adapter, tokens)
            let folded = try allLogits(merged, tokens: tokens)
            for i in tokens.indices { assertClose(folded[i], unmerged[i], tolerance: 1e-4, "\(name) position \(i)") }
            XCTAssertEqual(try allLogits(base, tokens: tokens), before, "the shared base is unchanged (bitwise)")
        }
    }
}
