/// The f32 weights of a Llama-family model in contiguous 64-byte-aligned buffers,
/// immutable once loaded and shared by every sequence and tenant.
///
/// Projections that read the same input are fused so one sgemm serves them:
/// `qkv` stacks the q, k and v rows (`[q | k | v] × hidden`) and `gateUp` stacks gate and up.
/// q and k rows are in Hugging Face order (rotate-half RoPE) whatever the source.
final class LlamaWeights: @unchecked Sendable {
    struct Layer {
        let attentionNorm: FloatBuffer  // (hidden)
        let qkv: FloatBuffer            // (qDim + 2·kvDim, hidden)
        let attentionOutput: FloatBuffer // (hidden, qDim)
        let ffnNorm: FloatBuffer        // (hidden)
        let gateUp: FloatBuffer         // (2·intermediate, hidden)
        let down: FloatBuffer           // (hidden, intermediate)
    }

    let tokenEmbedding: FloatBuffer     // (vocab, hidden)
    let layers: [Layer]
    let outputNorm: FloatBuffer         // (hidden)
    let lmHead: FloatBuffer             // (vocab, hidden); the embedding itself when tied

    /// Total bytes of weights held.
    var byteCount: Int {
        var total = tokenEmbedding.byteCount + outputNorm.byteCount + (lmHead === tokenEmbedding ? 0 : lmHead.byteCount)
        for l in layers {
            total += l.attentionNorm.byteCount + l.qkv.byteCount + l.attentionOutput.byteCount
            total += l.ffnNorm.byteCount + l.gateUp.byteCount + l.down.byteCount
        }
        return total
    }

    init(tokenEmbedding: FloatBuffer, layers: [Layer], outputNorm: FloatBuffer, lmHead: FloatBuffer) {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.lmHead = lmHead
    }

    init(config c: LlamaConfig, source: some WeightSource) throws(ModelError) {
        func allocate(_ count: Int) throws(ModelError) -> FloatBuffer {
            guard let b = FloatBuffer(count: count) else { throw ModelError(file: source.path, reason: .outOfMemory(bytes: count * 4)) }
            return b
        }
        func check(_ name: String, _ expected: [Int]) throws(ModelError) {
            guard let actual = source.shape(of: name) else {
                throw ModelError(file: source.path, reason: .missingTensor(source is HFWeightSource ? HFWeightSource.hfName(name) : name))
            }
            // A 1-D norm may be stored as [n]; a matrix must match exactly.
            guard actual == expected else {
                throw ModelError(file: source.path, reason: .shapeMismatch(
                    tensor: source is HFWeightSource ? HFWeightSource.hfName(name) : name, expected: expected, actual: actual))
            }
        }
        /// Loads `name` of shape `shape` into `buffer` at row `row`; un-permutes q/k rows when asked.
        func load(_ name: String, _ shape: [Int], into buffer: FloatBuffer, row: Int = 0, unpermuteHeads: Int? = nil) throws(ModelError) {
            try check(name, shape)
            let destination = buffer.pointer + row * (shape.count == 2 ? shape[1] : 1)
            guard let heads = unpermuteHeads, source.qkRowsPermuted else {
                try source.load(name, into: destination)
                return
            }
            let temp = try allocate(shape[0] * shape[1])
            try source.load(name, into: temp.pointer)
            // The GGUF converter stores HF row (h, half, j) at (h, j, half) so that adjacent pairs
            // rotate together; put rows back in HF order for rotate-half RoPE.
            let headDim = shape[0] / heads, halfDim = headDim / 2, cols = shape[1]
            for h in 0..<heads {
                for half in 0..<2 {
                    for j in 0..<halfDim {
                        let from = temp.pointer + (h * headDim + 2 * j + half) * cols
                        let to = destination + (h * headDim + half * halfDim + j) * cols
                        to.update(from: from, count: cols)
                    }
                }
            }
        }

        let d = c.hiddenSize, q = c.queryDimension, kv = c.kvDimension, ff = c.intermediateSize
        tokenEmbedding = try allocate(c.vocabularySize * d)
        try load("token_embd.weight", [c.vocabularySize, d], into: tokenEmbedding)
        var layers: [Layer] = []
        for i in 0..<c.layerCount {
            let p = "blk.\(i)."
            let layer = Layer(
                attentionNorm: try allocate(d), qkv: try allocate((q + 2 * kv) * d), attentionOutput: try allocate(d * q),
                ffnNorm: try allocate(d), gateUp: try allocate(2 * ff * d), down: try allocate(d * ff))
            try load(p + "attn_norm.weight", [d], into: layer.attentionNorm)
            try load(p + "attn_q.weight", [q, d], into: layer.qkv, unpermuteHeads: c.headCount)
            try load(p + "attn_k.weight", [kv, d], into: layer.qkv, row: q, unpermuteHeads: c.kvHeadCount)
            try load(p + "attn_v.weight", [kv, d], into: layer.qkv, row: q + kv)
            try load(p + "attn_output.weight", [d, q], into: layer.attentionOutput)
            try load(p + "ffn_norm.weight", [d], into: layer.ffnNorm)
            try load(p + "ffn_gate.weight", [ff, d], into: layer.gateUp)
            try load(p + "ffn_up.weight", [ff, d], into: layer.gateUp, row: ff)
            try load(p + "ffn_down.weight", [d, ff], into: layer.down)
            layers.append(layer)
        }
        self.layers = layers
        outputNorm = try allocate(d)
        try load("output_norm.weight", [d], into: outputNorm)
        if c.tiedEmbeddings {
            lmHead = tokenEmbedding
        } else {
            lmHead = try allocate(c.vocabularySize * d)
            try load("output.weight", [c.vocabularySize, d], into: lmHead)
        }
    }
}
