import CBLAS

extension LlamaModel {
    /// A model with `adapter` folded into its weights (`W + s·B·A`), for single-tenant
    /// deployments where every request uses the same adapter. Only the projections the adapter
    /// targets are copied; everything else, and this base model itself, stays shared and
    /// unchanged, so the base keeps serving other tenants (the "kept copy" form of unmerge).
    public func merged(with adapter: LoRAAdapter) throws(InferenceError) -> LlamaModel {
        let c = config
        guard adapter.layerCount == c.layerCount else {
            throw InferenceError.invalidBatch("adapter '\(adapter.name)' was loaded for a model with \(adapter.layerCount) layers")
        }
        /// A private f32 copy of a (possibly quantized) matrix: the merged weights are f32.
        func copy(_ w: LinearWeight) throws(InferenceError) -> FloatBuffer {
            guard let n = w.denseCopy() else { throw InferenceError.outOfMemory(bytes: w.outputs * w.inputs * 4) }
            return n
        }
        /// weight rows [rowOffset, rowOffset + out) of a (·, in) matrix += s · Bᵀᵀ · A.
        func fold(_ p: LoRAAdapter.Projection, into w: FloatBuffer, rowOffset: Int, target: LoRATarget) throws(InferenceError) {
            let (inputs, outputs) = target.dimensions(c)
            // f16 adapters are widened first (f32 ones are read in place).
            let widened = p.precision == .f16 ? FloatBuffer(count: p.rank * (inputs + outputs)) : nil
            guard let (a, bTransposed) = p.f32(scratch: widened?.pointer) else { throw InferenceError.outOfMemory(bytes: p.rank * (inputs + outputs) * 4) }
            BLAS.sgemm(CblasTrans, CblasNoTrans, m: outputs, n: inputs, k: p.rank, alpha: p.scale, a: bTransposed, lda: outputs,
                       b: a, ldb: inputs, beta: 1, c: w.pointer + rowOffset * inputs, ldc: inputs)
        }
        var layers: [LlamaWeights.Layer] = []
        for (l, w) in weights.layers.enumerated() {
            let has = { (t: LoRATarget) in adapter.projection(layer: l, target: t) != nil }
            let qkv = has(.q) || has(.k) || has(.v) ? try copy(w.qkv) : nil
            let o = has(.o) ? try copy(w.attentionOutput) : nil
            let gateUp = has(.gate) || has(.up) ? try copy(w.gateUp) : nil
            let down = has(.down) ? try copy(w.down) : nil
            let offsets: [(LoRATarget, FloatBuffer?, Int)] = [
                (.q, qkv, 0), (.k, qkv, c.queryDimension), (.v, qkv, c.queryDimension + c.kvDimension),
                (.o, o, 0), (.gate, gateUp, 0), (.up, gateUp, c.intermediateSize), (.down, down, 0),
            ]
            for (t, buffer, offset) in offsets {
                if let p = adapter.projection(layer: l, target: t), let buffer { try fold(p, into: buffer, rowOffset: offset, target: t) }
            }
            func linear(_ copy: FloatBuffer?, _ base: LinearWeight) -> LinearWeight {
                copy.map { LinearWeight(dense: $0, outputs: base.outputs, inputs: base.inputs) } ?? base
            }
            layers.append(.init(attentionNorm: w.attentionNorm, qkv: linear(qkv, w.qkv), attentionOutput: linear(o, w.attentionOutput),
                                ffnNorm: w.ffnNorm, gateUp: linear(gateUp, w.gateUp), down: linear(down, w.down)))
        }
        let merged = LlamaWeights(tokenEmbedding: weights.tokenEmbedding, layers: layers, outputNorm: weights.outputNorm, lmHead: weights.lmHead)
        return LlamaModel(config: c, weights: merged, source: "\(source) + \(adapter.name) (merged)", activations: activations, kvPrecision: kvPrecision,
                          rowLimits: rowLimits)
    }
}
