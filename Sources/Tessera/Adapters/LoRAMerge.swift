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
        func copy(_ b: FloatBuffer) throws(InferenceError) -> FloatBuffer {
            guard let n = FloatBuffer(count: b.count) else { throw InferenceError.outOfMemory(bytes: b.byteCount) }
            n.pointer.update(from: b.pointer, count: b.count)
            return n
        }
        /// weight rows [rowOffset, rowOffset + out) of a (·, in) matrix += s · Bᵀᵀ · A.
        func fold(_ p: LoRAAdapter.Projection, into w: FloatBuffer, rowOffset: Int, target: LoRATarget) {
            let (inputs, outputs) = target.dimensions(c)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outputs), Int32(inputs), Int32(p.rank),
                        p.scale, p.bTransposed.pointer, Int32(outputs), p.a.pointer, Int32(inputs),
                        1, w.pointer + rowOffset * inputs, Int32(inputs))
        }
        var layers: [LlamaWeights.Layer] = []
        for (l, w) in weights.layers.enumerated() {
            let has = { (t: LoRATarget) in adapter.projection(layer: l, target: t) != nil }
            let qkv = has(.q) || has(.k) || has(.v) ? try copy(w.qkv) : w.qkv
            let o = has(.o) ? try copy(w.attentionOutput) : w.attentionOutput
            let gateUp = has(.gate) || has(.up) ? try copy(w.gateUp) : w.gateUp
            let down = has(.down) ? try copy(w.down) : w.down
            let offsets: [(LoRATarget, FloatBuffer, Int)] = [
                (.q, qkv, 0), (.k, qkv, c.queryDimension), (.v, qkv, c.queryDimension + c.kvDimension),
                (.o, o, 0), (.gate, gateUp, 0), (.up, gateUp, c.intermediateSize), (.down, down, 0),
            ]
            for (t, buffer, offset) in offsets {
                if let p = adapter.projection(layer: l, target: t) { fold(p, into: buffer, rowOffset: offset, target: t) }
            }
            layers.append(.init(attentionNorm: w.attentionNorm, qkv: qkv, attentionOutput: o, ffnNorm: w.ffnNorm, gateUp: gateUp, down: down))
        }
        let merged = LlamaWeights(tokenEmbedding: weights.tokenEmbedding, layers: layers, outputNorm: weights.outputNorm, lmHead: weights.lmHead)
        return LlamaModel(config: c, weights: merged, source: "\(source) + \(adapter.name) (merged)")
    }
}
