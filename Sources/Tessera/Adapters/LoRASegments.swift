/// The batch's rows grouped into runs that share one adapter (the Punica/S-LoRA segmented
/// idea): each run's delta is two small matmuls, shrink `x·Aᵀ` to rank r, then expand `·Bᵀ`
/// scaled by s and added onto the base projection's output.
struct LoRASegments {
    struct Segment {
        let rows: Range<Int>
        let adapter: LoRAAdapter
    }
    let segments: [Segment]
    /// Most rows in one segment, and the largest rank: the shrink buffer's size.
    let longest: Int
    let maxRank: Int

    init(batch: ForwardBatch, adapters: [LoRAAdapter]) {
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
        longest = segments.map(\.rows.count).max() ?? 0
        maxRank = segments.map(\.adapter.maxRank).max() ?? 0
    }

    var isEmpty: Bool { segments.isEmpty }

    /// Adds each segment's delta for `target` in `layer`: output[rows] += s · (input[rows] · Aᵀ) · Bᵀ.
    func apply(_ target: LoRATarget, layer: Int, input: UnsafePointer<Float>, inputStride: Int,
               output: UnsafeMutablePointer<Float>, outputStride: Int, config: LlamaConfig, scratch: ForwardScratch) {
        let (inputs, outputs) = target.dimensions(config)
        let shrunk = scratch.loraShrunk.pointer
        for segment in segments {
            guard let p = segment.adapter.projection(layer: layer, target: target) else { continue }
            let first = segment.rows.lowerBound, rows = segment.rows.count
            LlamaModel.linear(rows: rows, input: input + first * inputStride, inputStride: inputStride, weight: p.a.pointer,
                              outputs: p.rank, inputs: inputs, output: shrunk, outputStride: p.rank, accumulate: false)
            LlamaModel.linear(rows: rows, input: shrunk, inputStride: p.rank, weight: p.b.pointer, outputs: outputs,
                              inputs: p.rank, output: output + first * outputStride, outputStride: outputStride,
                              accumulate: true, scale: p.scale)
        }
    }
}
