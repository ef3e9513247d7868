import CBLAS
import TesseraKernels

/// How segment deltas are computed.
public enum LoRAKernel: String, Sendable, Codable, CaseIterable {
    /// Two BLAS calls (shrink, expand) per segment.
    case blas
    /// One C call for all segments of a projection (row-wise dot products and axpys).
    case fused
    /// `fused` for short segments (decode rows), `blas` for long ones (prefill chunks).
    case automatic
}

/// The batch's rows grouped into runs that share one adapter (the Punica/S-LoRA segmented
/// idea): each run's delta is a shrink `x·Aᵀ` to rank r, then an expand `·Bᵀ` scaled by s,
/// added onto the base projection's output.
struct LoRASegments {
    struct Segment {
        let rows: Range<Int>
        let adapter: LoRAAdapter
    }
    let segments: [Segment]
    /// Most rows in one segment, and the largest rank: the shrink buffer's size.
    let longest: Int
    let maxRank: Int
    let kernel: LoRAKernel

    /// Segments at least this long go through BLAS under `.automatic`. Measured with `tessera
    /// bench-lora` (bench/RESULTS.md): over a quantized base, one rank-8 adapter on 32 decode
    /// rows runs at 0.91x of the base with the fused kernel and 0.75x with BLAS, so BLAS is kept
    /// for prefill-sized segments.
    static let blasMinimumRows = 64

    init(batch: ForwardBatch, adapters: [LoRAAdapter], kernel: LoRAKernel) {
        var segments: [Segment] = []
        var start = 0
        let n = batch.count
        for i in 1...max(n, 1) where n > 0 {
            if i == n || batch.adapters[i] != batch.adapters[start] {
                let a = batch.adapters[start]
                if a >= 0 { segments.append(Segment(rows: start..<i, adapter: adapters[a])) }
                start = i
            }
        }
        self.segments = segments
        self.kernel = kernel
        longest = segments.map(\.rows.count).max() ?? 0
        maxRank = segments.map(\.adapter.maxRank).max() ?? 0
    }

    var isEmpty: Bool { segments.isEmpty }

    /// Floats of scratch the BLAS path needs to widen f16 adapters (0 when none goes that way).
    func widenedElements(_ c: LlamaConfig) -> Int {
        let widened = segments.filter { usesBLAS($0.rows.count) && $0.adapter.precision == .f16 }
        guard !widened.isEmpty else { return 0 }
        let widest = max(c.hiddenSize, c.queryDimension, c.intermediateSize)
        return (widened.map(\.adapter.maxRank).max() ?? 0) * 2 * widest
    }

    private func usesBLAS(_ rows: Int) -> Bool {
        switch kernel {
        case .blas: true
        case .fused: false
        case .automatic: rows >= Self.blasMinimumRows
        }
    }

    /// Adds each segment's delta for each of `targets` (projections of the same input, each at
    /// its column offset in `output`) in `layer`: output[rows, offset...] += s · (input[rows] · Aᵀ) · Bᵀ.
    /// Short segments of every target go to one fused kernel call.
    func apply(_ targets: [(target: LoRATarget, offset: Int)], layer: Int, input: UnsafePointer<Float>, inputStride: Int,
               output: UnsafeMutablePointer<Float>, outputStride: Int, config: LlamaConfig, scratch: ForwardScratch) {
        let shrunk = scratch.loraShrunk.pointer
        let fused = scratch.loraSegments
        var fusedCount = 0
        let inputs = targets.first.map { $0.target.dimensions(config).input } ?? 0
        // Segment-major: a row's projections sit next to each other in its adapter's layer buffer.
        for segment in segments {
            for (target, offset) in targets {
                guard let p = segment.adapter.projection(layer: layer, target: target) else { continue }
                let first = segment.rows.lowerBound, rows = segment.rows.count
                if !usesBLAS(rows) {
                    fused[fusedCount] = tsr_lora_segment(a: p.a, b_t: p.bTransposed, rank: Int64(p.rank), scale: p.scale,
                                                         row_begin: Int64(first), row_end: Int64(segment.rows.upperBound),
                                                         type: p.precision.ggmlType, y_offset: Int64(offset), outputs: Int64(p.outputs))
                    fusedCount += 1
                    continue
                }
                // f16 weights are widened into scratch the forward pass reserved (widenedElements).
                guard let (a, bTransposed) = p.f32(scratch: scratch.loraWeights?.pointer) else {
                    assertionFailure("no scratch reserved to widen an f16 adapter")
                    continue
                }
                // shrink: shrunk(rows, r) = input(rows, in) · Aᵀ
                LlamaModel.denseLinear(rows: rows, input: input + first * inputStride, inputStride: inputStride, weight: a,
                                       outputs: p.rank, inputs: inputs, output: shrunk, outputStride: p.rank, accumulate: false,
                                       fewRowsLimit: scratch.rowLimits.fewRows)
                // expand: output(rows, out) += s · shrunk(rows, r) · Bᵀ, with Bᵀ stored (r, out)
                BLAS.sgemm(CblasNoTrans, CblasNoTrans, m: rows, n: p.outputs, k: p.rank, alpha: p.scale, a: shrunk, lda: p.rank,
                           b: bTransposed, ldb: p.outputs, beta: 1, c: output + first * outputStride + offset, ldc: outputStride)
            }
        }
        if fusedCount > 0 {
            tsr_lora_segments(fused, Int64(fusedCount), input, Int64(inputStride), Int64(inputs), output, Int64(outputStride))
        }
    }
}
