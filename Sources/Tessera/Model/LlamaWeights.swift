import TesseraKernels

/// The weights of a Llama-family model, immutable once loaded and shared by every sequence and
/// tenant.
///
/// Linear weights stay in their stored type, read in place from the mapped file (see
/// ``LinearWeight``); only the norm vectors are copied to f32. Projections that read the same
/// input are fused so one matmul serves them: `qkv` stacks the q, k and v rows and `gateUp`
/// stacks gate and up. q and k rows are in Hugging Face order (rotate-half RoPE) whatever the
/// source: GGUF's permuted rows are mapped back by the kernels' row maps.
final class LlamaWeights: @unchecked Sendable {
    struct Layer {
        let attentionNorm: FloatBuffer   // (hidden)
        let qkv: LinearWeight            // (qDim + 2·kvDim, hidden)
        let attentionOutput: LinearWeight // (hidden, qDim)
        let ffnNorm: FloatBuffer         // (hidden)
        let gateUp: LinearWeight         // (2·intermediate, hidden)
        let down: LinearWeight           // (hidden, intermediate)
    }

    let tokenEmbedding: LinearWeight     // (vocab, hidden)
    let layers: [Layer]
    let outputNorm: FloatBuffer          // (hidden)
    let lmHead: LinearWeight             // (vocab, hidden); the embedding itself when tied
    /// The tensor-parallel decode step's shares (tsr_decode_split) the o and down matrices were
    /// split for, when interleaved.
    private(set) var decodeSplit: (heads: Int, units: Int)?

    /// Every linear weight once (the tied LM head is the embedding).
    var linears: [LinearWeight] {
        var all = [tokenEmbedding]
        for l in layers { all += [l.qkv, l.attentionOutput, l.gateUp, l.down] }
        if lmHead !== tokenEmbedding { all.append(lmHead) }
        return all
    }

    /// Bytes of weights in their stored type (mapped from the file).
    var storedBytes: Int { linears.reduce(0) { $0 + $1.storedBytes } }

    /// Bytes of stored-type weights rewritten interleaved into memory of their own (the same
    /// bytes as in the file, whose pages were released).
    var interleavedBytes: Int { linears.reduce(0) { $0 + $1.interleavedBytes } }

    /// Bytes of weights allocated in memory: f32 copies and norm vectors.
    var allocatedBytes: Int {
        var total = outputNorm.byteCount + linears.reduce(0) { $0 + $1.denseBytes }
        for l in layers { total += l.attentionNorm.byteCount + l.ffnNorm.byteCount }
        return total
    }

    init(tokenEmbedding: LinearWeight, layers: [Layer], outputNorm: FloatBuffer, lmHead: LinearWeight) {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.lmHead = lmHead
    }

    /// Loads the weights of `source`. Up to `weightMemory` bytes go to f32 copies of layer
    /// matrices (they speed up many-row matmuls); 0 keeps every weight in its stored type.
    init(config c: LlamaConfig, source: some WeightSource, weightMemory: Int = 0, layout: WeightLayout = .interleaved) throws(ModelError) {
        func allocate(_ count: Int) throws(ModelError) -> FloatBuffer {
            guard let b = FloatBuffer(count: count) else { throw ModelError(file: source.path, reason: .outOfMemory(bytes: count * 4)) }
            return b
        }
        func displayName(_ name: String) -> String { source is HFWeightSource ? HFWeightSource.hfName(name) : name }
        func check(_ name: String, _ expected: [Int]) throws(ModelError) {
            guard let actual = source.shape(of: name) else { throw ModelError(file: source.path, reason: .missingTensor(displayName(name))) }
            guard actual == expected else {
                throw ModelError(file: source.path, reason: .shapeMismatch(tensor: displayName(name), expected: expected, actual: actual))
            }
        }
        func vector(_ name: String, _ n: Int) throws(ModelError) -> FloatBuffer {
            try check(name, [n])
            let b = try allocate(n)
            try source.load(name, into: b.pointer)
            return b
        }
        /// The GGUF converter stores HF row (h, half, j) of a q/k matrix at (h, j, half) so that
        /// adjacent pairs rotate together; this maps each stored row back to its HF row.
        func unpermuteMap(rows: Int, heads: Int) -> [Int32] {
            let headDim = rows / heads, halfDim = headDim / 2
            var map = [Int32](repeating: 0, count: rows)
            for h in 0..<heads {
                for half in 0..<2 {
                    for j in 0..<halfDim { map[h * headDim + 2 * j + half] = Int32(h * headDim + half * halfDim + j) }
                }
            }
            return map
        }
        /// Stacks the named `[rows, inputs]` tensors into one matrix; a piece with `slice` takes
        /// only those rows of its tensor (whole heads of a permuted q/k).
        func linear(_ pieces: [(name: String, rows: Int, unpermuteHeads: Int?, slice: Range<Int>?)], inputs: Int) throws(ModelError) -> LinearWeight {
            var stored: [(tensor: StoredTensor, rows: Int, rowMap: [Int32]?)] = []
            var continues: [Bool] = []
            for piece in pieces {
                continues.append(piece.slice.map { $0.lowerBound > 0 } ?? false)
                try check(piece.name, [piece.rows, inputs])
                guard let t = source.stored(piece.name) else {
                    throw ModelError(file: source.path, reason: .format(.unsupportedTensorType(tensor: displayName(piece.name), type: "unknown")))
                }
                guard t.type.isSupported else {
                    throw ModelError(file: source.path, reason: .format(.unsupportedTensorType(tensor: displayName(piece.name), type: t.type.description)))
                }
                guard inputs % t.type.blockElements == 0,
                      t.bytes.count == piece.rows * inputs / t.type.blockElements * t.type.blockBytes else {
                    throw ModelError(file: source.path, reason: .format(.unsupportedTensorType(tensor: displayName(piece.name), type: t.type.description)))
                }
                guard let slice = piece.slice else {
                    let map = piece.unpermuteHeads.flatMap { source.qkRowsPermuted ? unpermuteMap(rows: piece.rows, heads: $0) : nil }
                    stored.append((t, piece.rows, map))
                    continue
                }
                let rowBytes = t.bytes.count / piece.rows
                let part = StoredTensor(type: t.type, bytes: UnsafeRawBufferPointer(rebasing: t.bytes[(slice.lowerBound * rowBytes)..<(slice.upperBound * rowBytes)]),
                                        owner: t.owner)
                let map = piece.unpermuteHeads.flatMap { source.qkRowsPermuted ? unpermuteMap(rows: slice.count, heads: $0 * slice.count / piece.rows) : nil }
                stored.append((part, slice.count, map))
            }
            return LinearWeight(pieces: stored, inputs: inputs, continues: continues)
        }
        func linear(_ pieces: [(name: String, rows: Int, unpermuteHeads: Int?)], inputs: Int) throws(ModelError) -> LinearWeight {
            try linear(pieces.map { ($0.name, $0.rows, $0.unpermuteHeads, nil) }, inputs: inputs)
        }

        // The tensor-parallel decode step's shares (tsr_decode_split), for interleaved weights:
        // the o and down matrices are split in two column panels there (every path then sums
        // them alike), and q|k|v is stacked from per-share pieces so that each share's query,
        // key and value rows can lie in one run of memory.
        var headsSplit: Int64 = 0, ffSplit: Int64 = 0
        var shares: (heads: Int, units: Int)?
        if layout == .interleaved, c.headCount >= 2 {
            func unit(_ name: String) -> Int64 { source.stored(name).map { $0.type == .q4_K || $0.type == .q5_K } == true ? 256 : 32 }
            let oUnit = (0..<c.layerCount).map { unit("blk.\($0).attn_output.weight") }.max() ?? 32
            let downUnit = (0..<c.layerCount).map { unit("blk.\($0).ffn_down.weight") }.max() ?? 32
            if tsr_decode_split(Int64(c.headCount), Int64(c.kvHeadCount), Int64(c.headDimension), Int64(c.intermediateSize),
                                oUnit, downUnit, &headsSplit, &ffSplit) == TSR_OK {
                shares = (heads: Int(headsSplit), units: Int(ffSplit))
            }
        }
        /// q|k|v pieces: whole tensors, or each cut at the shares' boundary (share 0's query heads
        /// and the kv heads they own).
        func qkvPieces(_ p: String) -> [(name: String, rows: Int, unpermuteHeads: Int?, slice: Range<Int>?)] {
            let q = c.queryDimension, kv = c.kvDimension, hd = c.headDimension
            guard let split = shares else {
                return [(p + "attn_q.weight", q, c.headCount, nil), (p + "attn_k.weight", kv, c.kvHeadCount, nil), (p + "attn_v.weight", kv, nil, nil)]
            }
            let group = c.headCount / c.kvHeadCount, owned = (split.heads + group - 1) / group
            var pieces: [(name: String, rows: Int, unpermuteHeads: Int?, slice: Range<Int>?)] = []
            for (name, rows, heads, cut) in [(p + "attn_q.weight", q, c.headCount as Int?, split.heads * hd),
                                             (p + "attn_k.weight", kv, c.kvHeadCount as Int?, owned * hd),
                                             (p + "attn_v.weight", kv, nil, owned * hd)] {
                for r in [0..<cut, cut..<rows] where !r.isEmpty { pieces.append((name, rows, heads, r)) }
            }
            return pieces
        }

        /// gate|up pieces: whole tensors, or each cut at the shares' boundary of hidden units.
        func gateUpPieces(_ p: String) -> [(name: String, rows: Int, unpermuteHeads: Int?, slice: Range<Int>?)] {
            let ff = c.intermediateSize
            guard let split = shares else { return [(p + "ffn_gate.weight", ff, nil, nil), (p + "ffn_up.weight", ff, nil, nil)] }
            return [p + "ffn_gate.weight", p + "ffn_up.weight"].flatMap { name in
                [0..<split.units, split.units..<ff].map { (name, ff, nil as Int?, $0 as Range<Int>?) }
            }
        }
        let d = c.hiddenSize, q = c.queryDimension, ff = c.intermediateSize
        tokenEmbedding = try linear([("token_embd.weight", c.vocabularySize, nil)], inputs: d)
        var layers: [Layer] = []
        for i in 0..<c.layerCount {
            let p = "blk.\(i)."
            layers.append(Layer(
                attentionNorm: try vector(p + "attn_norm.weight", d),
                qkv: try linear(qkvPieces(p), inputs: d),
                attentionOutput: try linear([(p + "attn_output.weight", d, nil)], inputs: q),
                ffnNorm: try vector(p + "ffn_norm.weight", d),
                gateUp: try linear(gateUpPieces(p), inputs: d),
                down: try linear([(p + "ffn_down.weight", d, nil)], inputs: ff)))
        }
        self.layers = layers
        outputNorm = try vector("output_norm.weight", d)
        lmHead = c.tiedEmbeddings ? tokenEmbedding : try linear([("output.weight", c.vocabularySize, nil)], inputs: d)

        decodeSplit = shares
        if layout == .interleaved {
            let oSplit = Int(headsSplit) * c.headDimension / 32, downSplit = Int(ffSplit) / 32
            // Two slices more per split matrix than whole parts need (each rounded up to 64).
            let arena = WeightArena(bytes: WeightArena.bytes(for: linears.flatMap(\.interleavableSizes)) + 128 * layers.count)
            let placed = arena.map { Self.placeShares(layers, arena: $0, oSplit: oSplit, downSplit: downSplit) } ?? [:]
            func pack(_ w: LinearWeight, split: Int = 0, order: [Int]? = nil) throws(ModelError) {
                guard w.interleave(kSplit: split, arena: arena, memoryOrder: order, placed: placed[ObjectIdentifier(w)] ?? [:]) else {
                    throw ModelError(file: source.path, reason: .outOfMemory(bytes: w.storedBytes))
                }
            }
            for l in layers {
                // Without placement: q|k|v and gate|up cut per share (q0 q1 k0 k1 v0 v1,
                // g0 g1 u0 u1) are laid out share by share: q0 k0 v0 q1 k1 v1, g0 u0 g1 u1.
                try pack(l.qkv, order: l.qkv.partCount == 6 ? [0, 2, 4, 1, 3, 5] : nil)
                try pack(l.attentionOutput, split: oSplit)
                try pack(l.gateUp, order: l.gateUp.partCount == 4 ? [0, 2, 1, 3] : nil)
                try pack(l.down, split: downSplit)
            }
            try pack(tokenEmbedding)
            if lmHead !== tokenEmbedding { try pack(lmHead) }
        }

        // f32 copies within the budget, layer matrices first (the LM head serves only the rows
        // that want logits).
        var budget = weightMemory
        // Interleaved matrices take none: their kernel beats sgemm at every row count.
        for w in layers.flatMap({ [$0.qkv, $0.attentionOutput, $0.gateUp, $0.down] }) + [lmHead] where !w.isInterleaved {
            let bytes = w.outputs * w.inputs * 4
            guard bytes <= budget else { continue }
            guard w.makeDense() else { throw ModelError(file: source.path, reason: .outOfMemory(bytes: bytes)) }
            budget -= bytes
        }
    }

    /// Arena slices for the layers' interleaved parts in the order one thread of the
    /// tensor-parallel decode step reads them: for share 0, every layer's q0 k0 v0, o panel 0,
    /// g0 u0 and down panel 0, then the same for share 1. Each thread's weights for a token are
    /// then one run of memory, so the kernels' prefetch past the end of one span starts the next
    /// instead of fetching the other share's rows. Empty when a layer is not cut per share
    /// (q|k|v in 6 pieces, gate|up in 4) or a matrix cannot be split in panels there.
    private static func placeShares(_ layers: [Layer], arena: WeightArena, oSplit: Int, downSplit: Int) -> [ObjectIdentifier: [Int: WeightPlacement]] {
        guard oSplit > 0, downSplit > 0 else { return [:] }
        var sizes: [(qkv: [Int], o: [Int], gateUp: [Int], down: [Int])] = []
        for l in layers {
            guard l.qkv.partCount == 6, l.gateUp.partCount == 4, l.attentionOutput.partCount == 1, l.down.partCount == 1 else { return [:] }
            let qkv = (0..<6).compactMap { l.qkv.interleavedSizes(part: $0)?.first }
            let gu = (0..<4).compactMap { l.gateUp.interleavedSizes(part: $0)?.first }
            guard qkv.count == 6, gu.count == 4,
                  let o = l.attentionOutput.interleavedSizes(part: 0, kSplit: oSplit), o.count == 2,
                  let down = l.down.interleavedSizes(part: 0, kSplit: downSplit), down.count == 2 else { return [:] }
            sizes.append((qkv, o, gu, down))
        }
        var placed: [ObjectIdentifier: [Int: WeightPlacement]] = [:]
        var panel0: [ObjectIdentifier: UnsafeMutableRawPointer] = [:]  // o and down: share 0's panel, until share 1's
        for share in 0..<2 {
            for (l, s) in zip(layers, sizes) {
                // q_s k_s v_s (pieces share, 2 + share, 4 + share), o panel s, g_s u_s, down panel s;
                // a nil part is a split matrix's panel.
                let slices: [(LinearWeight, part: Int?, bytes: Int)] = [
                    (l.qkv, share, s.qkv[share]), (l.qkv, 2 + share, s.qkv[2 + share]), (l.qkv, 4 + share, s.qkv[4 + share]),
                    (l.attentionOutput, nil, s.o[share]),
                    (l.gateUp, share, s.gateUp[share]), (l.gateUp, 2 + share, s.gateUp[2 + share]),
                    (l.down, nil, s.down[share]),
                ]
                for (w, part, bytes) in slices {
                    guard let p = arena.take(bytes) else { return [:] }
                    let id = ObjectIdentifier(w)
                    if let part {
                        placed[id, default: [:]][part] = WeightPlacement(start: p, panel1: nil)
                    } else if share == 0 {
                        panel0[id] = p
                    } else if let start = panel0[id] {
                        placed[id] = [0: WeightPlacement(start: start, panel1: p)]
                    }
                }
            }
        }
        return placed
    }
}
