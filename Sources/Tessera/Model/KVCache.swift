/// The keys and values of one sequence, contiguous per layer: `(layer, capacity, kvDim)`.
///
/// Owned by exactly one sequence; the forward pass writes position `p` of this cache only for
/// rows of that sequence, and a row attends only to its own cache. (The engine replaces this
/// with paged blocks; the forward pass sees the same per-layer row stride either way.)
public final class KVCache: @unchecked Sendable {
    /// Positions this cache can hold.
    public let capacity: Int
    let layerCount: Int
    let kvDimension: Int
    let keys: FloatBuffer    // (layer, capacity, kvDim)
    let values: FloatBuffer  // (layer, capacity, kvDim)
    /// Number of positions written so far (0...capacity).
    public internal(set) var count: Int = 0

    init(config: LlamaConfig, capacity: Int) throws(InferenceError) {
        self.capacity = capacity
        layerCount = config.layerCount
        kvDimension = config.kvDimension
        let n = config.layerCount * capacity * config.kvDimension
        guard capacity > 0, let k = FloatBuffer(count: n), let v = FloatBuffer(count: n) else {
            throw InferenceError.outOfMemory(bytes: 2 * n * 4)
        }
        keys = k
        values = v
    }

    /// Bytes held by this cache.
    public var byteCount: Int { keys.byteCount + values.byteCount }

    /// Forgets positions from `position` on (for a new request on the same cache, or a rewind).
    public func truncate(to position: Int) { count = max(0, min(count, position)) }

    @inline(__always) func keyRow(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        keys.pointer + (layer * capacity + position) * kvDimension
    }
    @inline(__always) func valueRow(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        values.pointer + (layer * capacity + position) * kvDimension
    }
}

/// The rows of one forward pass. Each row is one token of one sequence at one position;
/// rows of the same sequence must be in order of position and continue what its cache holds.
/// Reuse one batch across steps (`removeAll`) so steps do not allocate.
public struct ForwardBatch: Sendable {
    public private(set) var tokens: [Int32] = []
    public private(set) var positions: [Int] = []
    /// Index of each row's sequence in the `caches` array passed to ``LlamaModel/forward(_:caches:scratch:)``.
    public private(set) var sequences: [Int] = []
    /// Rows whose logits are wanted, in the order they are returned.
    public private(set) var logitRows: [Int] = []
    /// Index of each row's adapter in the `adapters` array passed to the forward pass, or -1 for none.
    public private(set) var adapters: [Int] = []

    public init() {}

    public var count: Int { tokens.count }

    /// Appends a row; `wantLogits` asks for this row's next-token logits; `adapter` indexes the
    /// forward pass's adapters (nil: the base model alone). Rows sharing an adapter are best kept
    /// next to each other: each run of equal adapters is one segment of the LoRA kernels.
    public mutating func append(token: Int32, position: Int, sequence: Int, wantLogits: Bool, adapter: Int? = nil) {
        if wantLogits { logitRows.append(tokens.count) }
        tokens.append(token)
        positions.append(position)
        sequences.append(sequence)
        adapters.append(adapter ?? -1)
    }

    public mutating func removeAll() {
        tokens.removeAll(keepingCapacity: true)
        positions.removeAll(keepingCapacity: true)
        sequences.removeAll(keepingCapacity: true)
        logitRows.removeAll(keepingCapacity: true)
        adapters.removeAll(keepingCapacity: true)
    }
}
