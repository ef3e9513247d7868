import CBLAS
import Foundation
import TesseraKernels

/// A Llama-family model: immutable weights plus the forward pass over a batch of rows, each
/// row with its own sequence, position and KV cache.
///
/// The model is shared by every sequence; the caller owns caches and scratch. `forward` is
/// synchronous and compute-bound: call it from a dedicated thread (``ComputeThread``).
public final class LlamaModel: Sendable {
    /// Hyper-parameters.
    public let config: LlamaConfig
    let weights: LlamaWeights
    /// The file or directory it came from.
    public let source: String

    /// Segments of at least this many rows of one sequence compute attention with sgemm.
    static let gemmAttentionMinimumRows = 8

    /// Activation precision of the scratch `makeScratch` returns (chosen at load).
    public let activations: ActivationPrecision
    /// Precision of the KV caches `makeCache` makes (and the engine's pool), chosen at load.
    public let kvPrecision: KVPrecision
    /// Where linear layers change matmul path; every scratch `makeScratch` makes starts from them.
    public let rowLimits: MatmulRowLimits
    /// LoRA targets per projection input, with their column offsets in the projection's output
    /// (q, k, v and gate, up each go to one fused call); made once here, not per pass.
    let loraTargets: (qkv: [(target: LoRATarget, offset: Int)], o: [(target: LoRATarget, offset: Int)],
                      gateUp: [(target: LoRATarget, offset: Int)], down: [(target: LoRATarget, offset: Int)])

    init(config: LlamaConfig, weights: LlamaWeights, source: String, activations: ActivationPrecision = .q8x2, kvPrecision: KVPrecision = .f16,
         rowLimits: MatmulRowLimits = MatmulRowLimits()) {
        self.rowLimits = rowLimits
        self.config = config
        self.weights = weights
        self.source = source
        self.activations = activations
        self.kvPrecision = kvPrecision
        let qd = config.queryDimension, kvd = config.kvDimension
        loraTargets = ([(.q, 0), (.k, qd), (.v, qd + kvd)], [(.o, 0)], [(.gate, 0), (.up, config.intermediateSize)], [(.down, 0)])
    }

    /// Bytes of weights: in their stored type (read in place from the mapped file) plus what
    /// was allocated (f32 copies within the weight-memory budget, norm vectors).
    public var weightBytes: Int { weights.storedBytes + weights.allocatedBytes }
    /// Bytes of weights allocated in memory (f32 copies, norms), beyond the mapped file.
    public var allocatedWeightBytes: Int { weights.allocatedBytes }
    /// Bytes of quantized weights held interleaved in memory of the model's own
    /// (``WeightLayout/interleaved``); the same bytes the file stores, whose pages were released.
    public var interleavedWeightBytes: Int { weights.interleavedBytes }
    /// Stored types of the linear weights, with how many matrices use each (for reports).
    public var weightTypes: [String: Int] {
        var counts: [String: Int] = [:]
        for w in weights.linears { for t in w.storedTypes { counts[t.description, default: 0] += 1 }; if w.partCount == 0 { counts["F32 (copy)", default: 0] += 1 } }
        return counts
    }

    /// A KV cache for one sequence of up to `capacity` positions (at most the model's context),
    /// in the model's KV precision: a private pool of blocks of ``KVBlockPool/preferredBlockSize``
    /// positions, all reserved.
    public func makeCache(capacity: Int) throws(InferenceError) -> KVCache {
        let positions = min(max(capacity, 1), config.contextLength)
        let bs = KVBlockPool.preferredBlockSize
        let cache = KVCache(pool: try KVBlockPool(config: config, blockSize: bs, blockCount: (positions + bs - 1) / bs, precision: kvPrecision))
        _ = cache.reserve(positions: positions)
        return cache
    }

    /// Scratch buffers for one compute thread.
    public func makeScratch() -> ForwardScratch {
        let s = ForwardScratch(config: config)
        s.activations = activations
        s.rowLimits = rowLimits
        return s
    }

    /// Runs the batch: writes each row's keys and values into its sequence's cache, and returns
    /// the logits of the rows in `batch.logitRows`, in that order. The logits live in `scratch`
    /// and are overwritten by the next call with the same scratch.
    ///
    /// Rows with an adapter get its unmerged low-rank deltas, `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`: the base
    /// projection once for the whole batch, the delta per run of rows sharing the adapter.
    public func forward(_ batch: ForwardBatch, caches: [KVCache], adapters: [LoRAAdapter] = [],
                        scratch: ForwardScratch) throws(InferenceError) -> Logits {
        let c = config
        let n = batch.count
        guard n > 0 else { throw InferenceError.invalidBatch("no rows") }
        let d = c.hiddenSize, qd = c.queryDimension, kvd = c.kvDimension, ff = c.intermediateSize
        let qkvd = qd + 2 * kvd, half = c.ropeDimension / 2

        // Validate every row before touching any cache, so a bad row changes nothing.
        var expected = caches.map(\.count)
        var maxContext = 0
        for i in 0..<n {
            let token = batch.tokens[i], s = batch.sequences[i], p = batch.positions[i]
            guard token >= 0, Int(token) < c.vocabularySize else { throw InferenceError.tokenOutOfRange(id: token, vocabularySize: c.vocabularySize) }
            guard s >= 0, s < caches.count else { throw InferenceError.invalidBatch("row \(i) names sequence \(s) of \(caches.count)") }
            guard p < caches[s].capacity else { throw InferenceError.contextOverflow(position: p, capacity: caches[s].capacity) }
            guard p == expected[s] else { throw InferenceError.positionGap(position: p, cached: expected[s]) }
            let a = batch.adapters[i]
            guard a == -1 || (a >= 0 && a < adapters.count) else { throw InferenceError.invalidBatch("row \(i) names adapter \(a) of \(adapters.count)") }
            expected[s] += 1
            maxContext = max(maxContext, p + 1)
        }
        let kvType = caches[0].pool.precision
        guard caches.allSatisfy({ $0.pool.precision == kvType }) else { throw InferenceError.invalidBatch("the batch's KV caches mix precisions") }
        let segments = Self.segments(of: batch)
        let longest = scratch.deterministic ? 1 : (segments.map(\.count).max() ?? 1)
        let scoreNeed = longest >= Self.gemmAttentionMinimumRows ? longest * maxContext : maxContext
        for a in adapters where a.layerCount != c.layerCount {
            throw InferenceError.invalidBatch("adapter '\(a.name)' was loaded for a model with \(a.layerCount) layers")
        }
        let lora = LoRASegments(batch: batch, adapters: adapters, kernel: scratch.deterministic ? .fused : scratch.loraKernel)
        let rowwise = scratch.deterministic
        try scratch.reserve(rows: n, logitRows: batch.logitRows.count, scores: scoreNeed, loraElements: max(lora.longest, 1) * lora.maxRank,
                            gatheredRows: longest >= Self.gemmAttentionMinimumRows ? maxContext : 0,
                            loraWeightElements: lora.widenedElements(c))

        // One token of one sequence without an adapter, on two threads: the tensor-parallel
        // step (the same bits as below).
        if n == 1, batch.adapters[0] == -1, batch.logitRows == [0], scratch.tensorParallelDecode, !scratch.decodeUnsupported,
           scratch.activations != .f32, weights.decodeSplit != nil, tsr_threads_get() == 2,
           try decodeStep(token: batch.tokens[0], position: batch.positions[0], cache: caches[batch.sequences[0]], scratch: scratch) {
            let cache = caches[batch.sequences[0]]
            cache.count = max(cache.count, batch.positions[0] + 1)
            return Logits(scratch: scratch, rows: 1, vocabularySize: c.vocabularySize)
        }

        let x = scratch.x.pointer, normed = scratch.normed.pointer, qkv = scratch.qkv.pointer
        let attn = scratch.attention.pointer, gu = scratch.gateUp.pointer

        // Rows whose attention runs row by row (decode rows, short segments, deterministic mode)
        // go to one parallel call per layer: their items and block tables are set up once here.
        let perRow = { (segment: Range<Int>) in segment.count < Self.gemmAttentionMinimumRows || scratch.deterministic }
        var perRowItems = 0, tableEntries = 0
        for segment in segments where perRow(segment) {
            perRowItems += segment.count
            tableEntries += segment.count * caches[batch.sequences[segment.lowerBound]].blocks.count
        }
        let threads = Int(max(tsr_threads_get(), 1))
        try scratch.reserveAttention(items: perRowItems, tableEntries: tableEntries,
                                     scores: Int(tsr_attention_scratch_floats(Int64(perRowItems), Int64(maxContext), Int64(c.headCount),
                                                                              Int64(c.headDimension), Int64(threads))))
        do {
            var k = 0, t = 0
            let items = scratch.attentionItems, tables = scratch.blockTables
            for segment in segments where perRow(segment) {
                let cache = caches[batch.sequences[segment.lowerBound]]
                for i in segment {
                    cache.blocks.withUnsafeBufferPointer { if let b = $0.baseAddress { (tables + t).update(from: b, count: $0.count) } }
                    items[k] = tsr_attention_item(out: attn + i * qd, q: qkv + i * qkvd, k: nil, v: nil, block_table: tables + t,
                                                  block_size: Int64(cache.pool.blockSize), n_ctx: Int64(batch.positions[i] + 1))
                    t += cache.blocks.count
                    k += 1
                }
            }
        }
        let ropeCos = scratch.ropeCos.pointer, ropeSin = scratch.ropeSin.pointer

        for i in 0..<n {
            weights.tokenEmbedding.dequantize(rows: Int(batch.tokens[i])..<(Int(batch.tokens[i]) + 1), into: x + i * d)
            tsr_rope_angles(ropeCos + i * half, ropeSin + i * half, Int64(batch.positions[i]), Int64(c.ropeDimension), c.ropeTheta)
        }
        let scale = 1 / Float(c.headDimension).squareRoot()
        let (qkvTargets, oTargets, gateUpTargets, downTargets) = loraTargets

        for (l, w) in weights.layers.enumerated() {
            // Attention block: x += Wo · attention(rope(Wq·n), rope(Wk·n), Wv·n), n = rmsnorm(x)
            tsr_rmsnorm_rows(normed, x, w.attentionNorm.pointer, Int64(n), Int64(d), c.rmsNormEpsilon)
            Self.linear(rows: n, input: normed, inputStride: d, weight: w.qkv,
                        output: qkv, outputStride: qkvd, accumulate: false, rowwise: rowwise, scratch: scratch)
            if !lora.isEmpty {
                lora.apply(qkvTargets, layer: l, input: normed, inputStride: d, output: qkv, outputStride: qkvd, config: c, scratch: scratch)
            }
            for i in 0..<n {
                let row = qkv + i * qkvd
                tsr_rope_neox(row, Int64(c.headCount), Int64(c.headDimension), Int64(c.ropeDimension), ropeCos + i * half, ropeSin + i * half)
                tsr_rope_neox(row + qd, Int64(c.kvHeadCount), Int64(c.headDimension), Int64(c.ropeDimension), ropeCos + i * half, ropeSin + i * half)
                caches[batch.sequences[i]].store(layer: l, position: batch.positions[i], key: row + qd, value: row + qd + kvd)
            }
            var item = 0
            for segment in segments {
                let cache = caches[batch.sequences[segment.lowerBound]]
                if perRow(segment) {
                    let keys = cache.pool.keyBase(layer: l), values = cache.pool.valueBase(layer: l)
                    for _ in segment {
                        scratch.attentionItems[item].k = UnsafeRawPointer(keys)
                        scratch.attentionItems[item].v = UnsafeRawPointer(values)
                        item += 1
                    }
                } else {
                    attend(rows: segment, layer: l, batch: batch, cache: cache, scratch: scratch, scale: scale)
                }
            }
            if perRowItems > 0, let scores = scratch.attentionScores {
                tsr_attention_rows(scratch.attentionItems, Int64(perRowItems), Int64(kvd), Int64(c.headCount), Int64(c.kvHeadCount),
                                   Int64(c.headDimension), scale, scores.pointer, Int64(maxContext), kvType.ggmlType, Int64(threads))
            }
            Self.linear(rows: n, input: attn, inputStride: qd, weight: w.attentionOutput,
                        output: x, outputStride: d, accumulate: true, rowwise: rowwise, scratch: scratch)
            if !lora.isEmpty {
                lora.apply(oTargets, layer: l, input: attn, inputStride: qd, output: x, outputStride: d, config: c, scratch: scratch)
            }

            // MLP block: x += Wdown · (silu(Wgate·n) ⊙ Wup·n), n = rmsnorm(x)
            tsr_rmsnorm_rows(normed, x, w.ffnNorm.pointer, Int64(n), Int64(d), c.rmsNormEpsilon)
            Self.linear(rows: n, input: normed, inputStride: d, weight: w.gateUp,
                        output: gu, outputStride: 2 * ff, accumulate: false, rowwise: rowwise, scratch: scratch)
            if !lora.isEmpty {
                lora.apply(gateUpTargets, layer: l, input: normed, inputStride: d, output: gu, outputStride: 2 * ff, config: c, scratch: scratch)
            }
            tsr_silu_mul_rows(gu, Int64(2 * ff), gu + ff, Int64(2 * ff), Int64(n), Int64(ff))
            Self.linear(rows: n, input: gu, inputStride: 2 * ff, weight: w.down,
                        output: x, outputStride: d, accumulate: true, rowwise: rowwise, scratch: scratch)
            if !lora.isEmpty {
                lora.apply(downTargets, layer: l, input: gu, inputStride: 2 * ff, output: x, outputStride: d, config: c, scratch: scratch)
            }
        }
        for i in 0..<n { caches[batch.sequences[i]].count = max(caches[batch.sequences[i]].count, batch.positions[i] + 1) }

        // Final norm and LM head, only for the rows that want logits.
        let m = batch.logitRows.count
        for (j, row) in batch.logitRows.enumerated() {
            tsr_rmsnorm_rows(normed + j * d, x + row * d, weights.outputNorm.pointer, 1, Int64(d), c.rmsNormEpsilon)
        }
        if m > 0 {
            Self.linear(rows: m, input: normed, inputStride: d, weight: weights.lmHead,
                        output: scratch.logits.pointer, outputStride: c.vocabularySize, accumulate: false, rowwise: rowwise, scratch: scratch)
        }
        return Logits(scratch: scratch, rows: m, vocabularySize: c.vocabularySize)
    }

    /// One token of one sequence through tsr_decode_step (one pool job, two threads split by
    /// heads and hidden units), its logits into the scratch. Returns false, having changed
    /// nothing, when the model's weights do not suit it (then the scratch remembers).
    private func decodeStep(token: Int32, position: Int, cache: KVCache, scratch: ForwardScratch) throws(InferenceError) -> Bool {
        let c = config
        guard let split = weights.decodeSplit else { return false }
        let pool = cache.pool, layers = weights.layers
        func parts(_ w: LinearWeight) -> (UnsafePointer<tsr_weight_part>?, Int64) {
            w.partCount > 0 ? (UnsafePointer(w.parts), Int64(w.partCount)) : (nil, 0)
        }
        try scratch.reserveDecode(bytes: 0, layers: layers.count)
        for (l, w) in layers.enumerated() {
            let (qkv, nq) = parts(w.qkv), (o, no) = parts(w.attentionOutput), (gu, ng) = parts(w.gateUp), (down, nd) = parts(w.down)
            scratch.decodeLayers[l] = tsr_decode_layer(qkv: qkv, qkv_parts: nq, o: o, o_parts: no, gate_up: gu, gate_up_parts: ng,
                                                       down: down, down_parts: nd, attn_norm: w.attentionNorm.pointer,
                                                       ffn_norm: w.ffnNorm.pointer, k_cache: pool.keyBase(layer: l),
                                                       v_cache: pool.valueBase(layer: l))
        }
        let (head, nh) = parts(weights.lmHead)
        var model = tsr_decode_model(n_layers: Int64(layers.count), hidden: Int64(c.hiddenSize), n_heads: Int64(c.headCount),
                                     n_kv_heads: Int64(c.kvHeadCount), head_dim: Int64(c.headDimension), ff: Int64(c.intermediateSize),
                                     rot_dim: Int64(c.ropeDimension), vocab: Int64(c.vocabularySize),
                                     heads_split: Int64(split.heads), ff_split: Int64(split.units), eps: c.rmsNormEpsilon,
                                     attn_scale: 1 / Float(c.headDimension).squareRoot(), layers: UnsafePointer(scratch.decodeLayers),
                                     lm_head: head, lm_head_parts: nh, out_norm: weights.outputNorm.pointer,
                                     kv_type: pool.precision.ggmlType, two_level: scratch.activations == .q8x2 ? 1 : 0)
        guard tsr_decode_check(&model) == TSR_OK else {
            scratch.decodeUnsupported = true
            return false
        }
        try scratch.reserveDecode(bytes: Int(tsr_decode_workspace_bytes(&model, Int64(position + 1))), layers: layers.count)
        let x = scratch.x.pointer
        weights.tokenEmbedding.dequantize(rows: Int(token)..<(Int(token) + 1), into: x)
        tsr_rope_angles(scratch.ropeCos.pointer, scratch.ropeSin.pointer, Int64(position), Int64(c.ropeDimension), c.ropeTheta)
        let status = cache.blocks.withUnsafeBufferPointer { table in
            tsr_decode_step(&model, x, scratch.ropeCos.pointer, scratch.ropeSin.pointer, table.baseAddress, Int64(pool.blockSize),
                            Int64(position), scratch.logits.pointer, scratch.decodeWorkspace, Int64(scratch.decodeWorkspaceBytes),
                            Int32(TSR_QIMPL_BEST))
        }
        guard status == TSR_OK else { throw InferenceError.invalidBatch("the decode step refused its inputs (status \(status.rawValue))") }
        scratch.tensorParallelSteps += 1
        return true
    }

    /// output(rows, outputs) (+)= scale · input(rows, inputs) · weight(outputs, inputs)ᵀ.
    ///
    /// Weights in their stored type: up to the scratch's ``MatmulRowLimits/stored`` rows
    /// (``MatmulRowLimits/interleaved`` for interleaved matrices; always in
    /// deterministic mode) the weight-type kernel reads them in place, with 8-bit activations
    /// for block-quantized weights (``ActivationPrecision/q8``); more rows dequantize tiles of
    /// weights (or use the f32 copy) for sgemm with f32 activations, which is where compute,
    /// not memory, bounds the time. f32-only weights go through OpenBLAS or the f32 few-rows
    /// kernel.
    static func linear(rows: Int, input: UnsafePointer<Float>, inputStride: Int, weight w: LinearWeight,
                       output: UnsafeMutablePointer<Float>, outputStride: Int, accumulate: Bool,
                       scale: Float = 1, rowwise: Bool = false, scratch: ForwardScratch) {
        let inputs = w.inputs, outputs = w.outputs
        if w.partCount == 0, let dense = w.dense {
            denseLinear(rows: rows, input: input, inputStride: inputStride, weight: dense.pointer, outputs: outputs, inputs: inputs,
                        output: output, outputStride: outputStride, accumulate: accumulate, scale: scale, rowwise: rowwise,
                        fewRowsLimit: scratch.rowLimits.fewRows)
            return
        }
        // Few rows (always in deterministic mode): the weight-type kernel. With an f32 copy,
        // sgemm over it wins from a few rows on; without, dequantized tiles from more; for
        // interleaved matrices with 8-bit activations, the kernel at any row count.
        let limits = scratch.rowLimits
        let limit = w.dense != nil ? limits.fewRows
            : w.isInterleaved && scratch.activations != .f32 ? limits.interleavedLimit : limits.stored
        let many = !rowwise && rows > limit
        if many, let dense = w.dense {
            denseLinear(rows: rows, input: input, inputStride: inputStride, weight: dense.pointer, outputs: outputs, inputs: inputs,
                        output: output, outputStride: outputStride, accumulate: accumulate, scale: scale, rowwise: false,
                        fewRowsLimit: limits.fewRows)
            return
        }
        guard many, let tile = scratch.weightTile else {
            let q8 = w.needsQ8 && scratch.activations != .f32, residual = q8 && scratch.activations == .q8x2
            if residual {
                tsr_quantize_q8x2_rows(input, Int64(inputStride), Int64(rows), Int64(inputs), scratch.q8, scratch.q8Residual)
            } else if q8 {
                tsr_quantize_q8_rows(input, Int64(inputStride), Int64(rows), Int64(inputs), scratch.q8)
            }
            tsr_qmatmul_x2(w.parts, Int64(w.partCount), Int64(inputs), q8 ? UnsafePointer(scratch.q8) : nil,
                           residual ? UnsafePointer(scratch.q8Residual) : nil, input, Int64(inputStride), Int64(rows),
                           output, Int64(outputStride), scale, accumulate ? 1 : 0, Int32(TSR_QIMPL_BEST))
            return
        }
        let tileRows = max(1, ForwardScratch.weightTileElements / inputs)
        var start = 0
        while start < outputs {
            let end = min(outputs, start + tileRows)
            w.dequantize(rows: start..<end, into: tile.pointer)
            BLAS.sgemm(CblasNoTrans, CblasTrans, m: rows, n: end - start, k: inputs, alpha: scale, a: input, lda: inputStride,
                       b: tile.pointer, ldb: inputs, beta: accumulate ? 1 : 0, c: output + start, ldc: outputStride)
            start = end
        }
    }

    /// The f32 path: sgemv for one row, the few-rows kernel, or sgemm.
    @inline(__always)
    static func denseLinear(rows: Int, input: UnsafePointer<Float>, inputStride: Int, weight: UnsafePointer<Float>,
                            outputs: Int, inputs: Int, output: UnsafeMutablePointer<Float>, outputStride: Int, accumulate: Bool,
                            scale: Float = 1, rowwise: Bool = false, fewRowsLimit: Int) {
        if rows == 1 && !rowwise {
            // One row: sgemv over slices of W's rows, a little faster than the few-rows kernel
            // (bench/RESULTS.md, model benchmark).
            BLAS.sgemv(m: outputs, n: inputs, alpha: scale, a: weight, lda: inputs, x: input, beta: accumulate ? 1 : 0, y: output)
            return
        }
        if rows <= fewRowsLimit || rowwise {
            // Decode-sized batches: OpenBLAS's sgemm packs the whole weight matrix per call (5x
            // the cost of streaming it at one row); our kernel streams W once for all rows.
            // Deterministic mode (rowwise) makes every row's bits independent of the batch.
            tsr_matmul_few_rows(input, Int64(inputStride), Int64(rows), weight, Int64(outputs), Int64(inputs),
                                output, Int64(outputStride), scale, accumulate ? 1 : 0, rowwise ? 1 : 0)
            return
        }
        BLAS.sgemm(CblasNoTrans, CblasTrans, m: rows, n: outputs, k: inputs, alpha: scale, a: input, lda: inputStride,
                   b: weight, ldb: inputs, beta: accumulate ? 1 : 0, c: output, ldc: outputStride)
    }

    /// Maximal runs of consecutive rows of one sequence at consecutive positions.
    static func segments(of batch: ForwardBatch) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = 0
        for i in 1...batch.count {
            if i == batch.count || batch.sequences[i] != batch.sequences[start] || batch.positions[i] != batch.positions[i - 1] + 1 {
                result.append(start..<i)
                start = i
            }
        }
        return result
    }

    /// Causal attention for a run of rows of one sequence (a prefill chunk of at least
    /// ``gemmAttentionMinimumRows``), reading only that sequence's cache, through sgemm.
    private func attend(rows: Range<Int>, layer l: Int, batch: ForwardBatch, cache: KVCache, scratch: ForwardScratch, scale: Float) {
        let c = config
        let qd = c.queryDimension, kvd = c.kvDimension, qkvd = qd + 2 * kvd, hd = c.headDimension
        let qkv = scratch.qkv.pointer, out = scratch.attention.pointer, scores = scratch.scores.pointer
        let pool = cache.pool
        let keyBase = pool.keyBase(layer: l), valueBase = pool.valueBase(layer: l)
        // Prefill: per head, scores = Q·Kᵀ over the whole visible context, masked softmax, then ·V.
        let first = rows.lowerBound, count = rows.count
        let firstPosition = batch.positions[first], context = firstPosition + count
        // Keys of positions 0..<context as K^T (kvd × context, row stride ldk) and values as rows:
        // in place for f32 positions within one block, else gathered (and widened) from the
        // sequence's blocks.
        let keysT: UnsafePointer<Float>, values: UnsafePointer<Float>, ldk: Int
        if pool.precision == .f32 && (cache.blocks.count == 1 || context <= pool.blockSize) {
            let offset = Int(cache.blocks[0]) * pool.blockSize * kvd * 4
            keysT = UnsafePointer((keyBase + offset).assumingMemoryBound(to: Float.self))
            values = UnsafePointer((valueBase + offset).assumingMemoryBound(to: Float.self))
            ldk = pool.blockSize
        } else {
            cache.blocks.withUnsafeBufferPointer { table in
                tsr_kv_gather(scratch.gatheredKeys.pointer, scratch.gatheredValues.pointer, keyBase, valueBase, pool.precision.ggmlType,
                              table.baseAddress, Int64(pool.blockSize), Int64(context), Int64(kvd))
            }
            keysT = UnsafePointer(scratch.gatheredKeys.pointer)
            values = UnsafePointer(scratch.gatheredValues.pointer)
            ldk = context
        }
        let group = c.headCount / c.kvHeadCount
        for h in 0..<c.headCount {
            let kvHead = h / group
            BLAS.sgemm(CblasNoTrans, CblasNoTrans, m: count, n: context, k: hd, alpha: 1, a: qkv + first * qkvd + h * hd, lda: qkvd,
                       b: keysT + kvHead * hd * ldk, ldb: ldk, beta: 0, c: scores, ldc: context)
            tsr_causal_softmax_rows(scores, Int64(count), Int64(context), Int64(context), Int64(firstPosition), scale)
            BLAS.sgemm(CblasNoTrans, CblasNoTrans, m: count, n: hd, k: context, alpha: 1, a: scores, lda: context,
                       b: values + kvHead * hd, ldb: kvd, beta: 0, c: out + first * qd + h * hd, ldc: qd)
        }
    }
}

/// Logits of a forward pass: `rows × vocabularySize`, row-major, held in (and keeping alive)
/// the scratch that computed them.
public struct Logits: @unchecked Sendable {
    let scratch: ForwardScratch
    /// Number of rows (the batch's `logitRows`).
    public let rows: Int
    public let vocabularySize: Int

    /// The first element; rows follow each other.
    public var pointer: UnsafeMutablePointer<Float> { scratch.logits.pointer }

    /// Row `i` in place.
    public func row(_ i: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(i >= 0 && i < rows, "logit row out of range")
        return UnsafeMutableBufferPointer(start: scratch.logits.pointer + i * vocabularySize, count: vocabularySize)
    }

    /// A copy of row `i`.
    public func array(_ i: Int) -> [Float] { Array(row(i)) }
}
