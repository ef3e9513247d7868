import Dispatch

extension LlamaModel {
    /// Seconds per pass through every layer's linear weights (qkv, o, gate|up, down of all
    /// layers) at `rows` rows, through each matmul path: the weight-type kernel reading the
    /// stored blocks, and dequantized tiles + sgemm. Medians of `runs`. This is how
    /// ``MatmulRowLimits/stored`` was chosen (`tessera bench-matmul`, bench/RESULTS.md). Run it
    /// on a compute thread.
    public func benchmarkLinearPaths(rows: Int, runs: Int) throws(InferenceError) -> (stored: Double, tiled: Double) {
        let scratch = makeScratch()
        try scratch.reserve(rows: rows, logitRows: 1, scores: 1)
        let c = config
        let width = max(c.hiddenSize, c.queryDimension, c.intermediateSize)
        guard let input = FloatBuffer(count: rows * width),
              let output = FloatBuffer(count: rows * max(2 * c.intermediateSize, c.queryDimension + 2 * c.kvDimension)) else {
            throw InferenceError.outOfMemory(bytes: rows * width * 4)
        }
        for i in 0..<(rows * width) { input.pointer[i] = Float((i * 7919) % 1000) / 1000 - 0.5 }
        func pass() {
            for w in weights.layers.flatMap({ [$0.qkv, $0.attentionOutput, $0.gateUp, $0.down] }) {
                Self.linear(rows: rows, input: input.pointer, inputStride: w.inputs, weight: w, output: output.pointer,
                            outputStride: w.outputs, accumulate: false, scratch: scratch)
            }
        }
        func time(limit: Int) -> Double {
            scratch.rowLimits = .kernel(upTo: limit)
            return measure()
        }
        func measure() -> Double {
            pass()
            var samples: [Double] = []
            for _ in 0..<max(runs, 1) {
                let start = DispatchTime.now().uptimeNanoseconds
                pass()
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return samples.sorted()[samples.count / 2]
        }
        return (time(limit: Int.max), time(limit: 0))
    }
}
