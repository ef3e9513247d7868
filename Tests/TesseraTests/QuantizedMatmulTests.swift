import XCTest
import TesseraKernels
@testable import Tessera

/// The weight-type matmul (tsr_qmatmul) against an f32 matmul over the same dequantized
/// weights, and its scalar / AVX2 / AVX-512 VNNI variants against each other.
///
/// Error bound (every quantized type alike, since the weights are compared dequantized): the
/// kernel's only approximation is the activations' 8-bit quantization, |x − d·q| ≤ d/2 with
/// d = amax(block)/127, so |Δy| ≤ Σ_blocks amax_b(x)/254 · Σ_{j∈b} |w_j|, plus f32 rounding.
/// With two-level activations (tsr_quantize_q8x2_rows: the residual in units of d/256, clamped
/// to ±127) |x − d·q − (d/256)·r| ≤ d/256, so |Δy| ≤ Σ_blocks amax_b(x)/(127·256) · Σ|w_j|.
/// F16, BF16 and F32 weights take f32 activations: only rounding.
final class QuantizedMatmulTests: XCTestCase {
    static let quantizedTypes: [Int32] = [Int32(TSR_GGML_Q4_0), Int32(TSR_GGML_Q4_1), Int32(TSR_GGML_Q5_0), Int32(TSR_GGML_Q5_1),
                                          Int32(TSR_GGML_Q8_0), Int32(TSR_GGML_Q4_K), Int32(TSR_GGML_Q5_K), Int32(TSR_GGML_Q6_K)]
    static let floatTypes: [Int32] = [Int32(TSR_GGML_F16), Int32(TSR_GGML_BF16), Int32(TSR_GGML_F32)]

    /// Random but valid blocks: random quant bytes, scales set to small finite values.
    static func randomRows(type: Int32, rows: Int, inputs: Int, rng: inout SplitMix) -> [UInt8] {
        let be = Int(tsr_type_block_elements(type)), bb = Int(tsr_type_block_bytes(type))
        let blocks = rows * inputs / be
        var bytes = (0..<(blocks * bb)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func half(_ v: Float) -> (UInt8, UInt8) { let b = Float16(v).bitPattern; return (UInt8(b & 0xff), UInt8(b >> 8)) }
        func setHalf(_ offset: Int, _ v: Float) { let (lo, hi) = half(v); bytes[offset] = lo; bytes[offset + 1] = hi }
        for k in 0..<blocks {
            let o = k * bb
            let scale = Float(rng.unit()) * 0.05 + 0.001
            switch type {
            case Int32(TSR_GGML_Q4_0), Int32(TSR_GGML_Q5_0), Int32(TSR_GGML_Q8_0): setHalf(o, scale)
            case Int32(TSR_GGML_Q4_1), Int32(TSR_GGML_Q5_1): setHalf(o, scale); setHalf(o + 2, Float(rng.unit()) * 0.2 - 0.1)
            case Int32(TSR_GGML_Q4_K), Int32(TSR_GGML_Q5_K): setHalf(o, scale * 0.1); setHalf(o + 2, scale * 0.05)
            case Int32(TSR_GGML_Q6_K): setHalf(o + 208, scale * 0.02)
            case Int32(TSR_GGML_F16): setHalf(o, Float(rng.unit()) * 2 - 1)
            case Int32(TSR_GGML_BF16):
                let b = (Float(rng.unit()) * 2 - 1).bitPattern >> 16
                bytes[o] = UInt8(b & 0xff); bytes[o + 1] = UInt8(b >> 8)
            case Int32(TSR_GGML_F32):
                let b = (Float(rng.unit()) * 2 - 1).bitPattern
                for i in 0..<4 { bytes[o + i] = UInt8((b >> (8 * i)) & 0xff) }
            default: break
            }
        }
        return bytes
    }

    struct Case {
        let types: [Int32]      // one part per type, stacked
        let rowsPerPart: [Int]
        let inputs: Int
        let rows: Int
        let mapped: Bool
        /// Parts of Q4_0/Q4_1/Q8_0 with rows a multiple of 8 rewritten interleaved (tsr_pack_x8).
        var interleaved = false
    }

    /// Runs one case with every available variant; checks each against the f32 reference and
    /// the variants against the scalar one.
    func check(_ c: Case, seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        let outputs = c.rowsPerPart.reduce(0, +)
        var storage: [[UInt8]] = []
        var maps: [[Int32]] = []
        for (t, r) in zip(c.types, c.rowsPerPart) {
            storage.append(Self.randomRows(type: t, rows: r, inputs: c.inputs, rng: &rng))
            var map = Array(Int32(0)..<Int32(r))
            if c.mapped { map.shuffle(using: &rng) }
            maps.append(map)
        }
        // Dense reference weights, in output order.
        var dense = [Float](repeating: 0, count: outputs * c.inputs)
        var first = 0
        for (p, t) in c.types.enumerated() {
            let rowBytes = c.inputs / Int(tsr_type_block_elements(t)) * Int(tsr_type_block_bytes(t))
            for g in 0..<c.rowsPerPart[p] {
                let out = first + Int(maps[p][g])
                let status = storage[p].withUnsafeBytes { raw in
                    dense.withUnsafeMutableBufferPointer { d in
                        tsr_dequantize(t, raw.baseAddress! + g * rowBytes, d.baseAddress! + out * c.inputs, Int64(c.inputs))
                    }
                }
                XCTAssertEqual(status, TSR_OK)
            }
            first += c.rowsPerPart[p]
        }
        let x = (0..<(c.rows * c.inputs)).map { _ in Float(rng.unit()) * 4 - 2 }
        var xq = [tsr_q8_block](repeating: tsr_q8_block(), count: c.rows * c.inputs / 32)
        x.withUnsafeBufferPointer { xp in
            xq.withUnsafeMutableBufferPointer { tsr_quantize_q8_rows(xp.baseAddress!, Int64(c.inputs), Int64(c.rows), Int64(c.inputs), $0.baseAddress!) }
        }
        // Two levels: the first is exactly the one-level quantization.
        var xqHi = xq, xqLo = xq
        x.withUnsafeBufferPointer { xp in
            xqHi.withUnsafeMutableBufferPointer { hi in
                xqLo.withUnsafeMutableBufferPointer { lo in
                    tsr_quantize_q8x2_rows(xp.baseAddress!, Int64(c.inputs), Int64(c.rows), Int64(c.inputs), hi.baseAddress!, lo.baseAddress!)
                }
            }
        }
        for i in xq.indices {
            XCTAssertEqual(xqHi[i].d, xq[i].d); XCTAssertEqual(xqHi[i].s, xq[i].s)
            XCTAssertEqual(withUnsafeBytes(of: xqHi[i].q) { Array($0) }, withUnsafeBytes(of: xq[i].q) { Array($0) })
            XCTAssertEqual(xqLo[i].d, xq[i].d / 256)
        }
        // Reference and bound, with y starting at 1 and accumulate on, alpha 0.5.
        let alpha: Float = 0.5
        var reference = [Float](repeating: 0, count: c.rows * outputs)
        var bound = [Float](repeating: 0, count: c.rows * outputs)
        var rounding = [Float](repeating: 0, count: c.rows * outputs)  // f32 rounding scale: Σ|w·x|
        var boundX2 = [Float](repeating: 0, count: c.rows * outputs)
        for r in 0..<c.rows {
            for o in 0..<outputs {
                var s: Double = 0, b: Double = 0, magnitude: Double = 0
                let quantized = tsr_type_is_quantized(partType(of: o, c)) != 0
                for blk in 0..<(c.inputs / 32) {
                    var amax: Float = 0, wabs: Double = 0
                    for j in 0..<32 {
                        let i = blk * 32 + j
                        let w = dense[o * c.inputs + i], xv = x[r * c.inputs + i]
                        s += Double(w) * Double(xv)
                        magnitude += abs(Double(w) * Double(xv))
                        amax = max(amax, abs(xv)); wabs += abs(Double(w))
                    }
                    if quantized { b += Double(amax) / 254 * wabs }
                }
                reference[r * outputs + o] = 1 + alpha * Float(s)
                bound[r * outputs + o] = alpha * Float(b * 1.0001 + magnitude * 2e-6) + 1e-6
                boundX2[r * outputs + o] = alpha * Float(b * 254 / (127 * 256) * 1.0001 + magnitude * 2e-6) + 1e-6
                rounding[r * outputs + o] = alpha * Float(magnitude) * 2e-6 + 1e-6
            }
        }
        // The parts over stable copies of the blocks and row maps.
        let blocks = storage.map { bytes -> UnsafeMutableRawPointer in
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
            bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            return p
        }
        let rowMaps = maps.map { m -> UnsafeMutablePointer<Int32> in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(m.count, 1))
            p.initialize(from: m, count: m.count)
            return p
        }
        defer { blocks.forEach { $0.deallocate() }; rowMaps.forEach { $0.deallocate() } }
        var parts: [tsr_weight_part] = []
        first = 0
        for (p, t) in c.types.enumerated() {
            let rowBytes = c.inputs / Int(tsr_type_block_elements(t)) * Int(tsr_type_block_bytes(t))
            parts.append(tsr_weight_part(type: t, data: blocks[p], rows: Int64(c.rowsPerPart[p]), row_bytes: Int64(rowBytes),
                                         row_map: c.mapped ? UnsafePointer(rowMaps[p]) : nil, out_offset: Int64(first),
                                         layout: Int32(TSR_LAYOUT_ROWS), k_split: 0, panel1: nil))
            first += c.rowsPerPart[p]
        }
        var packed: [UnsafeMutableRawPointer] = []
        defer { packed.forEach { $0.deallocate() } }
        if c.interleaved {
            for i in parts.indices where tsr_x8_group_block_bytes(parts[i].type) > 0 && parts[i].rows % 8 == 0 {
                let bytes = Int(parts[i].rows * parts[i].row_bytes)
                let dst = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
                packed.append(dst)
                XCTAssertEqual(tsr_pack_x8(&parts[i], Int64(c.inputs), dst), TSR_OK)
                // Every row dequantizes to the same floats from either layout.
                var x8 = parts[i]
                x8.data = UnsafeRawPointer(dst); x8.row_map = nil; x8.layout = Int32(TSR_LAYOUT_X8)
                var a = [Float](repeating: 0, count: c.inputs), b = a
                for g in 0..<Int(parts[i].rows) {
                    let out = c.mapped ? Int(maps[i][g]) : g
                    tsr_dequantize_part_row(&parts[i], Int64(c.inputs), Int64(g), &a)
                    tsr_dequantize_part_row(&x8, Int64(c.inputs), Int64(out), &b)
                    if a != b { XCTFail("interleaved row \(out) of type \(parts[i].type) dequantizes differently"); break }
                }
                parts[i] = x8
            }
            XCTAssertFalse(packed.isEmpty, "the case has no part to interleave")
        }
        /// y starts at 1; accumulate with alpha.
        func run(_ impl: Int32, activations: UnsafePointer<tsr_q8_block>?, residuals: UnsafePointer<tsr_q8_block>? = nil) -> (tsr_status, [Float]) {
            var y = [Float](repeating: 1, count: c.rows * outputs)
            let status = tsr_qmatmul_x2(parts, Int64(parts.count), Int64(c.inputs), activations, residuals, x, Int64(c.inputs), Int64(c.rows),
                                        &y, Int64(outputs), alpha, 1, impl)
            return (status, y)
        }
        // f32 activations (no xq): only rounding separates it from the reference.
        for impl in [Int32(TSR_QIMPL_SCALAR), Int32(TSR_QIMPL_AVX2)] where tsr_qmatmul_available(impl) != 0 {
            let (status, y) = run(impl, activations: nil)
            XCTAssertEqual(status, TSR_OK)
            for i in 0..<y.count where !(abs(y[i] - reference[i]) <= rounding[i]) {
                XCTFail("f32 activations, types \(c.types) impl \(impl): element \(i) = \(y[i]), reference \(reference[i])")
                break
            }
        }
        // One and two 8-bit levels: every variant within its bound; variants differ from the
        // scalar one only in float summation order (integer block sums are exact in each).
        for (label, residuals, limit) in [("q8", nil, bound), ("q8x2", xqLo, boundX2)] as [(String, [tsr_q8_block]?, [Float])] {
            var results: [Int32: [Float]] = [:]
            for impl in [Int32(TSR_QIMPL_SCALAR), Int32(TSR_QIMPL_AVX2), Int32(TSR_QIMPL_AVX512VNNI)] where tsr_qmatmul_available(impl) != 0 {
                let (status, y) = xqHi.withUnsafeBufferPointer { hi in
                    (residuals ?? []).withUnsafeBufferPointer { lo in run(impl, activations: hi.baseAddress, residuals: residuals == nil ? nil : lo.baseAddress) }
                }
                XCTAssertEqual(status, TSR_OK)
                let what = "\(label) types \(c.types) rows \(c.rows) inputs \(c.inputs) impl \(impl) interleaved \(c.interleaved)"
                for i in 0..<y.count where !(abs(y[i] - reference[i]) <= limit[i]) {
                    XCTFail("\(what): element \(i) = \(y[i]), reference \(reference[i]), bound \(limit[i])")
                    break
                }
                results[impl] = y
            }
            let scalar = try XCTUnwrap(results[Int32(TSR_QIMPL_SCALAR)])
            for (impl, y) in results where impl != Int32(TSR_QIMPL_SCALAR) {
                for i in 0..<y.count where abs(y[i] - scalar[i]) > rounding[i] {
                    XCTFail("\(label) impl \(impl) vs scalar at \(i): \(y[i]) vs \(scalar[i]) (types \(c.types))")
                    break
                }
            }
        }
    }

    private func partType(of output: Int, _ c: Case) -> Int32 {
        var first = 0
        for (t, r) in zip(c.types, c.rowsPerPart) {
            if output < first + r { return t }
            first += r
        }
        return c.types.last!
    }

    func testEveryTypeWithinTheActivationQuantizationBound() throws {
        var seed: UInt64 = 1
        for t in Self.quantizedTypes + Self.floatTypes {
            let k = tsr_type_block_elements(t) == 256
            // Awkward sizes: row lengths past one 2048-weight chunk, odd output counts, row counts
            // past the 64 rows served per unpack.
            for inputs in k ? [256, 2304] : [96, 800, 2080] {
                for (outputs, rows) in [(1, 1), (7, 3), (37, 5), (19, 70)] {
                    try check(Case(types: [t], rowsPerPart: [outputs], inputs: inputs, rows: rows, mapped: false), seed: seed)
                    seed += 1
                }
            }
        }
    }

    func testInterleavedRowsWithinTheSameBound() throws {
        // The 8-row interleaved layout of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q5_K: same bound, same
        // agreement between variants; odd row counts leave the last group of 4 activation rows
        // short.
        var seed: UInt64 = 500
        for t in [Int32(TSR_GGML_Q4_0), Int32(TSR_GGML_Q4_1), Int32(TSR_GGML_Q5_0), Int32(TSR_GGML_Q5_1), Int32(TSR_GGML_Q8_0), Int32(TSR_GGML_Q4_K), Int32(TSR_GGML_Q5_K)] {
            for inputs in tsr_type_block_elements(t) == 256 ? [256, 2304] : [96, 800, 2080] {
                for (outputs, rows) in [(8, 1), (16, 3), (40, 5), (24, 70)] {
                    try check(Case(types: [t], rowsPerPart: [outputs], inputs: inputs, rows: rows, mapped: false, interleaved: true), seed: seed)
                    seed += 1
                }
            }
        }
        // Stacked with row maps (applied when interleaving) and beside parts kept as stored; an
        // interleaved part at output 3 puts thread ranges inside its groups.
        try check(Case(types: [Int32(TSR_GGML_Q4_1), Int32(TSR_GGML_Q8_0), Int32(TSR_GGML_F16)], rowsPerPart: [48, 16, 3], inputs: 320, rows: 6, mapped: true, interleaved: true), seed: 600)
        try check(Case(types: [Int32(TSR_GGML_F16), Int32(TSR_GGML_Q4_0), Int32(TSR_GGML_Q4_1)], rowsPerPart: [3, 64, 13], inputs: 256, rows: 5, mapped: true, interleaved: true), seed: 601)
        // As a Q4_K_M file's fused q|k|v: Q4_K parts interleaved beside a Q6_K part kept as stored.
        try check(Case(types: [Int32(TSR_GGML_Q4_K), Int32(TSR_GGML_Q6_K), Int32(TSR_GGML_Q4_K)], rowsPerPart: [24, 8, 16], inputs: 512, rows: 2, mapped: true, interleaved: true), seed: 603)
        // As a SmolLM2 Q4_K_M's q|k|v: Q5_0 rows (the K-quant fallback) beside Q8_0 ones.
        try check(Case(types: [Int32(TSR_GGML_Q5_0), Int32(TSR_GGML_Q5_0), Int32(TSR_GGML_Q8_0)], rowsPerPart: [48, 16, 16], inputs: 576, rows: 3, mapped: true, interleaved: true), seed: 602)
    }

    func testStackedPartsOfMixedTypesWithRowMaps() throws {
        // As a fused q|k|v of a Q4_K_M file: parts of different types, q and k rows permuted.
        try check(Case(types: [Int32(TSR_GGML_Q4_K), Int32(TSR_GGML_Q6_K), Int32(TSR_GGML_Q4_K)], rowsPerPart: [24, 8, 8], inputs: 512, rows: 6, mapped: true), seed: 99)
        try check(Case(types: [Int32(TSR_GGML_Q4_1), Int32(TSR_GGML_Q8_0), Int32(TSR_GGML_F16)], rowsPerPart: [17, 5, 3], inputs: 320, rows: 2, mapped: true), seed: 100)
    }

    func testARowsResultDoesNotDependOnTheBatchOrThreads() throws {
        // The decode kernel must give a row the same bits alone or among others, on any thread count.
        var rng = SplitMix(seed: 7)
        let inputs = 576, outputs = 200, rows = 9
        let w = Self.randomRows(type: Int32(TSR_GGML_Q4_1), rows: outputs, inputs: inputs, rng: &rng)
        let x = (0..<(rows * inputs)).map { _ in Float(rng.unit()) - 0.5 }
        var xq = [tsr_q8_block](repeating: tsr_q8_block(), count: rows * inputs / 32)
        tsr_quantize_q8_rows(x, Int64(inputs), Int64(rows), Int64(inputs), &xq)
        let interleaved = UnsafeMutableRawPointer.allocate(byteCount: w.count, alignment: 64)
        defer { interleaved.deallocate() }
        w.withUnsafeBytes { raw in
            var part = tsr_weight_part(type: Int32(TSR_GGML_Q4_1), data: raw.baseAddress!, rows: Int64(outputs), row_bytes: Int64(inputs / 32 * 20),
                                       row_map: nil, out_offset: 0, layout: Int32(TSR_LAYOUT_ROWS), k_split: 0, panel1: nil)
            XCTAssertEqual(tsr_pack_x8(&part, Int64(inputs), interleaved), TSR_OK)
        }
        func run(rows n: Int, from r0: Int, threads: Int32, layout: Int32) -> [Float] {
            let saved = tsr_threads_get()
            tsr_threads_set(threads)
            defer { tsr_threads_set(saved) }
            var y = [Float](repeating: 0, count: n * outputs)
            w.withUnsafeBytes { raw in
                var part = tsr_weight_part(type: Int32(TSR_GGML_Q4_1), data: layout == Int32(TSR_LAYOUT_X8) ? UnsafeRawPointer(interleaved) : raw.baseAddress!,
                                           rows: Int64(outputs), row_bytes: Int64(inputs / 32 * 20), row_map: nil, out_offset: 0, layout: layout, k_split: 0, panel1: nil)
                xq.withUnsafeBufferPointer { q in
                    x.withUnsafeBufferPointer { xp in
                        _ = tsr_qmatmul(&part, 1, Int64(inputs), q.baseAddress! + r0 * inputs / 32, xp.baseAddress! + r0 * inputs, Int64(inputs),
                                        Int64(n), &y, Int64(outputs), 1, 0, Int32(TSR_QIMPL_BEST))
                    }
                }
            }
            return y
        }
        for layout in [Int32(TSR_LAYOUT_ROWS), Int32(TSR_LAYOUT_X8)] {
            let all = run(rows: rows, from: 0, threads: 2, layout: layout)
            for r in 0..<rows {
                let alone = run(rows: 1, from: r, threads: 1, layout: layout)
                XCTAssertEqual(alone, Array(all[(r * outputs)..<((r + 1) * outputs)]), "row \(r), layout \(layout)")
            }
        }
    }

    func testBadPartsAreRefused() {
        let rows = Int32(TSR_LAYOUT_ROWS), x8 = Int32(TSR_LAYOUT_X8)
        var part = tsr_weight_part(type: 77, data: nil, rows: 1, row_bytes: 0, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        var y: [Float] = [Float](repeating: 0, count: 16)
        let x: [Float] = .init(repeating: 0, count: 32)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 32, nil, x, 32, 1, &y, 1, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_UNSUPPORTED_TYPE)
        part = tsr_weight_part(type: Int32(TSR_GGML_Q4_K), data: nil, rows: 1, row_bytes: 144, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 32, nil, x, 32, 1, &y, 1, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_BAD_SIZE, "32 inputs is not a Q4_K row")
        part = tsr_weight_part(type: Int32(TSR_GGML_Q8_0), data: nil, rows: 1, row_bytes: 36, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 32, nil, x, 32, 1, &y, 1, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_BAD_SIZE, "row bytes")
        // Interleaved parts: only Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K, whole groups of 8, no row map, known layouts.
        part = tsr_weight_part(type: Int32(TSR_GGML_Q6_K), data: nil, rows: 8, row_bytes: 210, row_map: nil, out_offset: 0, layout: x8, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 256, nil, x, 32, 1, &y, 8, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_UNSUPPORTED_TYPE)
        part = tsr_weight_part(type: Int32(TSR_GGML_Q8_0), data: nil, rows: 12, row_bytes: 34, row_map: nil, out_offset: 0, layout: x8, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 32, nil, x, 32, 1, &y, 12, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_BAD_SIZE, "12 rows is not whole groups")
        part = tsr_weight_part(type: Int32(TSR_GGML_Q8_0), data: nil, rows: 8, row_bytes: 34, row_map: nil, out_offset: 0, layout: 5, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_qmatmul(&part, 1, 32, nil, x, 32, 1, &y, 8, 1, 0, Int32(TSR_QIMPL_BEST)), TSR_ERR_UNSUPPORTED_TYPE, "unknown layout")
        // Packing refuses what it cannot lay out.
        part = tsr_weight_part(type: Int32(TSR_GGML_Q4_1), data: nil, rows: 12, row_bytes: 20, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_pack_x8(&part, 32, nil), TSR_ERR_BAD_SIZE)
        part = tsr_weight_part(type: Int32(TSR_GGML_Q6_K), data: nil, rows: 8, row_bytes: 210, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_pack_x8(&part, 256, nil), TSR_ERR_UNSUPPORTED_TYPE)
        part = tsr_weight_part(type: Int32(TSR_GGML_Q4_K), data: nil, rows: 8, row_bytes: 144, row_map: nil, out_offset: 0, layout: rows, k_split: 0, panel1: nil)
        XCTAssertEqual(tsr_pack_x8(&part, 288, nil), TSR_ERR_BAD_SIZE, "288 inputs is not whole Q4_K blocks")
    }

    func testVariantsAvailableHereAreReported() {
        // Not an assertion on the machine, a record of what ran: the scalar variant always does.
        XCTAssertEqual(tsr_qmatmul_available(Int32(TSR_QIMPL_SCALAR)), 1)
        let f = tsr_cpu_features()
        XCTAssertEqual(tsr_qmatmul_available(Int32(TSR_QIMPL_AVX2)) != 0, f & Int32(TSR_CPU_AVX2) != 0 && f & Int32(TSR_CPU_F16C) != 0 && f & Int32(TSR_CPU_FMA) != 0)
        if tsr_qmatmul_available(Int32(TSR_QIMPL_AVX512VNNI)) == 0 {
            print("QuantizedMatmulTests: this CPU has no AVX-512 VNNI; that variant was not exercised here")
        }
    }
}

/// A small deterministic generator for test data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
