#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TesseraKernels

/// Activation buffers for forward passes, sized for a number of rows and grown only when a
/// larger batch arrives, so steady-state steps allocate nothing. One per compute thread.
public final class ForwardScratch: @unchecked Sendable {
    let config: LlamaConfig
    private(set) var rowCapacity = 0
    private(set) var logitCapacity = 0
    private(set) var scoreCapacity = 0
    var x: FloatBuffer!          // (rows, hidden): the residual stream
    var normed: FloatBuffer!     // (rows, hidden)
    var qkv: FloatBuffer!        // (rows, qDim + 2·kvDim)
    var attention: FloatBuffer!  // (rows, qDim)
    var gateUp: FloatBuffer!     // (rows, 2·intermediate)
    var ropeCos: FloatBuffer!    // (rows, ropeDim/2)
    var ropeSin: FloatBuffer!    // (rows, ropeDim/2)
    var logits: FloatBuffer!     // (logit rows, vocab)
    var scores: FloatBuffer!     // attention scores: (rows, context) for a prefill segment, or (context) for one row
    var loraShrunk: FloatBuffer! // (rows, max rank): x · Aᵀ of one adapter segment
    private(set) var loraCapacity = 0
    /// f16 adapter weights widened to f32 for the BLAS path (long segments): reserved by
    /// `reserve(loraWeightElements:)`, grows only.
    private(set) var loraWeights: FloatBuffer?
    /// Segment descriptors for the fused LoRA kernel, one per row at most.
    private(set) var loraSegments: UnsafeMutablePointer<tsr_lora_segment> = .allocate(capacity: 1)
    private var loraSegmentCapacity = 1
    /// How LoRA deltas are computed on this compute thread.
    public var loraKernel: LoRAKernel = .automatic
    /// Where linear layers change matmul path (the model's ``LlamaModel/rowLimits`` by default).
    public var rowLimits = MatmulRowLimits()
    /// How activations meet block-quantized weights: two 8-bit levels and integer dot products
    /// (``ActivationPrecision/q8x2``, the default: the f32 path's tokens), one 8-bit level
    /// (``ActivationPrecision/q8``, as llama.cpp: fastest for big batches and prefill), or f32
    /// against weights dequantized on the fly (``ActivationPrecision/f32``, slow).
    public var activations: ActivationPrecision = .q8x2
    /// Compute every row alone (matrix-vector products, per-row attention, the row-wise LoRA
    /// kernel) so that a row's numbers do not depend on what else is in the batch.
    public var deterministic = false
    /// One-token steps of one sequence without an adapter run as a single pool job on two
    /// threads split by heads and hidden units (tsr_decode_step) when the model's layer weights
    /// are interleaved and split for it and the pool has two threads. The same bits as the
    /// row-split path; false keeps every step there.
    public var tensorParallelDecode = true
    /// The workspace of tsr_decode_step (64-byte aligned) and its layer table.
    private(set) var decodeWorkspace: UnsafeMutableRawPointer?
    private(set) var decodeWorkspaceBytes = 0
    private(set) var decodeLayers: UnsafeMutablePointer<tsr_decode_layer> = .allocate(capacity: 1)
    private var decodeLayerCapacity = 1
    /// Set once tsr_decode_check refused this scratch's model: later steps skip the attempt.
    var decodeUnsupported = false
    /// Steps that ran as the tensor-parallel step (for tests and reports).
    public internal(set) var tensorParallelSteps = 0

    func reserveDecode(bytes: Int, layers: Int) throws(InferenceError) {
        if bytes > decodeWorkspaceBytes {
            free(decodeWorkspace)
            decodeWorkspace = nil
            decodeWorkspaceBytes = 0
            var raw: UnsafeMutableRawPointer?
            let n = max(bytes, bytes + bytes / 4)  // room for a longer context without reallocating
            guard posix_memalign(&raw, 64, n) == 0, let raw else { throw InferenceError.outOfMemory(bytes: n) }
            decodeWorkspace = raw
            decodeWorkspaceBytes = n
        }
        if layers > decodeLayerCapacity {
            decodeLayers.deallocate()
            decodeLayers = .allocate(capacity: layers)
            decodeLayerCapacity = layers
        }
    }

    /// Activations quantized to 8 bits for the stored-type kernels: (rows, max inputs / 32).
    private(set) var q8: UnsafeMutablePointer<tsr_q8_block> = .allocate(capacity: 1)
    /// Their 8-bit residuals (``ActivationPrecision/q8x2``), the same shape.
    private(set) var q8Residual: UnsafeMutablePointer<tsr_q8_block> = .allocate(capacity: 1)
    /// A tile of dequantized weight rows for many-row matmuls.
    let weightTile: FloatBuffer?
    /// Floats in `weightTile`.
    static let weightTileElements = 1 << 21

    /// Widest input of any linear layer.
    var maxInputs: Int { max(config.hiddenSize, config.queryDimension, config.intermediateSize) }

    public init(config: LlamaConfig) {
        self.config = config
        weightTile = FloatBuffer(count: Self.weightTileElements)
    }

    deinit {
        loraSegments.deallocate()
        q8.deallocate()
        q8Residual.deallocate()
        attentionItems.deallocate()
        blockTables.deallocate()
        decodeLayers.deallocate()
        free(decodeWorkspace)
    }

    /// Rows whose attention runs one row at a time (decode rows, short segments), for
    /// tsr_attention_rows; their block tables copied so the kernel can read them off-thread.
    private(set) var attentionItems: UnsafeMutablePointer<tsr_attention_item> = .allocate(capacity: 1)
    private var attentionItemCapacity = 1
    private(set) var blockTables: UnsafeMutablePointer<Int32> = .allocate(capacity: 1)
    private var blockTableCapacity = 1
    /// Scratch of tsr_attention_rows (per-thread scores, per-chunk partial softmaxes).
    private(set) var attentionScores: FloatBuffer?
    private var attentionScoreCapacity = 0

    func reserveAttention(items: Int, tableEntries: Int, scores: Int) throws(InferenceError) {
        if items > attentionItemCapacity {
            attentionItems.deallocate()
            attentionItems = .allocate(capacity: items)
            attentionItemCapacity = items
        }
        if tableEntries > blockTableCapacity {
            blockTables.deallocate()
            blockTables = .allocate(capacity: tableEntries)
            blockTableCapacity = tableEntries
        }
        if scores > attentionScoreCapacity {
            let n = max(scores, 8192)
            guard let b = FloatBuffer(count: n) else { throw InferenceError.outOfMemory(bytes: n * 4) }
            attentionScores = b
            attentionScoreCapacity = n
        }
    }

    var gatheredKeys: FloatBuffer!   // (context, kvDim): a paged sequence's keys made contiguous for prefill
    var gatheredValues: FloatBuffer! // (context, kvDim)
    private(set) var gatheredCapacity = 0

    func reserve(rows: Int, logitRows: Int, scores: Int, loraElements: Int = 0, gatheredRows: Int = 0,
                 loraWeightElements: Int = 0) throws(InferenceError) {
        func make(_ n: Int) throws(InferenceError) -> FloatBuffer {
            guard let b = FloatBuffer(count: n) else { throw InferenceError.outOfMemory(bytes: n * 4) }
            return b
        }
        let c = config
        if rows > rowCapacity {
            let r = max(rows, 16)
            x = try make(r * c.hiddenSize)
            normed = try make(r * c.hiddenSize)
            qkv = try make(r * (c.queryDimension + 2 * c.kvDimension))
            attention = try make(r * c.queryDimension)
            gateUp = try make(r * 2 * c.intermediateSize)
            ropeCos = try make(r * c.ropeDimension / 2)
            ropeSin = try make(r * c.ropeDimension / 2)
            q8.deallocate()
            q8 = .allocate(capacity: r * (maxInputs / 32 + 1))
            q8Residual.deallocate()
            q8Residual = .allocate(capacity: r * (maxInputs / 32 + 1))
            rowCapacity = r
        }
        if 3 * rows > loraSegmentCapacity {  // up to three projections (q, k, v) per call
            loraSegments.deallocate()
            loraSegments = .allocate(capacity: 3 * rows)
            loraSegmentCapacity = 3 * rows
        }
        if logitRows > logitCapacity {
            let r = max(logitRows, 4)
            logits = try make(r * c.vocabularySize)
            logitCapacity = r
        }
        if gatheredRows > gatheredCapacity {
            gatheredKeys = try make(gatheredRows * c.kvDimension)
            gatheredValues = try make(gatheredRows * c.kvDimension)
            gatheredCapacity = gatheredRows
        }
        if loraElements > loraCapacity {
            loraShrunk = try make(loraElements)
            loraCapacity = loraElements
        }
        if loraWeightElements > (loraWeights?.count ?? 0) { loraWeights = try make(loraWeightElements) }
        if scores > scoreCapacity {
            let n = max(scores, 4096)
            self.scores = try make(n)
            scoreCapacity = n
        }
    }
}

/// Precision of the activations fed to matmuls over block-quantized weights.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// Quantized to 8 bits per block of 32 (llama.cpp's Q8 activations): integer dot products.
    /// Moves logits by the activations' rounding (about 0.1–0.4 on SmolLM2's, as llama.cpp).
    case q8
    /// Two 8-bit levels per block of 32: the 8-bit values and their residual in units of the
    /// block's scale / 256 (about 16-bit precision), still integer dot products; interleaved
    /// weights take both levels in one pass over memory. Logits within about 3e-3 of the f32
    /// path's on SmolLM2.
    case q8x2
    /// Kept in f32; weights are dequantized a chunk at a time: the numbers of the f32 path.
    case f32
}
