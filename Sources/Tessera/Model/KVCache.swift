import TesseraKernels

/// Precision of a KV cache's elements.
public enum KVPrecision: String, Sendable, CaseIterable {
    /// f32: the f32 path's numbers.
    case f32
    /// f16, the default (as llama.cpp's): half the memory and half the bytes each decode step
    /// reads; keys and values rounded to 11 significant bits (SmolLM2: logits within 9e-3 of
    /// transformers', greedy tokens unchanged; SmolLM2ReferenceTests).
    case f16

    var ggmlType: Int32 { self == .f16 ? Int32(TSR_GGML_F16) : Int32(TSR_GGML_F32) }
    /// Bytes per element.
    public var elementBytes: Int { self == .f16 ? 2 : 4 }
}

/// Fixed-size blocks of keys and values for every layer, from one allocation sized by a
/// memory budget: per layer and block, the keys transposed (`kvDim × blockSize`, so decode
/// scores run over 16 positions per instruction) and the values as rows (`blockSize × kvDim`),
/// f32 or f16 (``KVPrecision``).
///
/// Blocks are handed to one sequence at a time (its ``KVCache``); the pool itself is not
/// thread-safe: one owner (the engine's compute thread, or a single cache) allocates and frees.
public final class KVBlockPool: @unchecked Sendable {
    /// Positions per block.
    public let blockSize: Int
    /// The block size decode attention reads fastest: a kv head's keys of one block are then
    /// one contiguous run (16 positions × head size), read front to back.
    public static let preferredBlockSize = 16
    /// Blocks in the pool.
    public let blockCount: Int
    let layerCount: Int
    let kvDimension: Int
    /// Element precision.
    public let precision: KVPrecision
    let keys: FloatBuffer
    let values: FloatBuffer
    private var freeBlocks: [Int32]
    /// Holders of each block: its sequence, plus the prefix cache and any sequence sharing it.
    private var references: [Int32]

    /// A pool of `blockCount` blocks of `blockSize` positions for `config`.
    public init(config: LlamaConfig, blockSize: Int, blockCount: Int, precision: KVPrecision = .f16) throws(InferenceError) {
        guard blockSize > 0, blockCount > 0 else {
            throw InferenceError.invalidBatch("a KV pool needs at least one block of one position (got \(blockCount) of \(blockSize))")
        }
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.precision = precision
        layerCount = config.layerCount
        kvDimension = config.kvDimension
        let n = config.layerCount * blockCount * blockSize * config.kvDimension
        let floats = (n * precision.elementBytes + 3) / 4
        guard let k = FloatBuffer(count: floats), let v = FloatBuffer(count: floats) else {
            throw InferenceError.outOfMemory(bytes: 2 * n * precision.elementBytes)
        }
        keys = k
        values = v
        freeBlocks = (0..<Int32(blockCount)).reversed()
        references = [Int32](repeating: 0, count: blockCount)
    }

    /// A pool sized to a byte budget.
    public convenience init(config: LlamaConfig, blockSize: Int = 16, memoryBytes: Int, precision: KVPrecision = .f16) throws(InferenceError) {
        let perBlock = Self.bytesPerBlock(config: config, blockSize: blockSize, precision: precision)
        try self.init(config: config, blockSize: blockSize, blockCount: max(1, memoryBytes / perBlock), precision: precision)
    }

    /// Bytes one block holds (keys and values of every layer).
    public static func bytesPerBlock(config: LlamaConfig, blockSize: Int, precision: KVPrecision = .f16) -> Int {
        2 * config.layerCount * blockSize * config.kvDimension * precision.elementBytes
    }

    /// Blocks not held by any sequence.
    public var freeCount: Int { freeBlocks.count }

    /// Takes a free block (one reference), or nil when the pool is exhausted.
    func allocate() -> Int32? {
        guard let b = freeBlocks.popLast() else { return nil }
        references[Int(b)] = 1
        return b
    }

    /// Adds a holder to a block in use.
    func retain(_ block: Int32) { references[Int(block)] += 1 }

    /// Drops a holder; the block returns to the pool with its last one.
    func release(_ block: Int32) {
        references[Int(block)] -= 1
        precondition(references[Int(block)] >= 0, "KV block released more often than held")
        if references[Int(block)] == 0 { freeBlocks.append(block) }
    }

    /// Number of holders of a block.
    func referenceCount(_ block: Int32) -> Int { Int(references[Int(block)]) }

    /// A layer's key storage (blocks of K^T).
    @inline(__always) func keyBase(layer: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(keys.pointer) + layer * blockCount * blockSize * kvDimension * precision.elementBytes
    }
    /// A layer's value storage (blocks of rows).
    @inline(__always) func valueBase(layer: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(values.pointer) + layer * blockCount * blockSize * kvDimension * precision.elementBytes
    }
}

/// The keys and values of one sequence: a block table into a ``KVBlockPool``.
///
/// Owned by exactly one sequence; the forward pass writes position `p` of this cache only for
/// rows of that sequence, and a row attends only to its own cache. A cache from
/// ``LlamaModel/makeCache(capacity:)`` owns a private pool of one block (contiguous).
public final class KVCache: @unchecked Sendable {
    public let pool: KVBlockPool
    /// Block ids, in position order.
    public private(set) var blocks: [Int32] = []
    /// Number of positions written so far.
    public internal(set) var count: Int = 0

    /// A cache drawing blocks from `pool` as it grows (``reserve(positions:)``).
    public init(pool: KVBlockPool) { self.pool = pool }

    /// Positions the blocks held so far can take.
    public var capacity: Int { blocks.count * pool.blockSize }

    /// Bytes held by this cache's blocks.
    public var byteCount: Int { blocks.count * 2 * pool.layerCount * pool.blockSize * pool.kvDimension * pool.precision.elementBytes }

    /// Makes room for `positions` positions in all, taking blocks from the pool; false (and
    /// nothing taken) when the pool has too few free blocks.
    public func reserve(positions: Int) -> Bool {
        let needed = (positions + pool.blockSize - 1) / pool.blockSize - blocks.count
        guard needed > 0 else { return true }
        guard needed <= pool.freeCount else { return false }
        for _ in 0..<needed { if let b = pool.allocate() { blocks.append(b) } }
        return true
    }

    /// Starts the cache with shared, already-filled blocks (a prefix-cache hit): `positions`
    /// positions are taken as written. Shared blocks are full and never written again.
    func adopt(sharedBlocks: [Int32], positions: Int) {
        precondition(blocks.isEmpty, "adopt starts an empty cache")
        for b in sharedBlocks { pool.retain(b) }
        blocks = sharedBlocks
        count = positions
    }

    /// Gives every block back to the pool and forgets all positions.
    public func releaseAll() {
        for b in blocks { pool.release(b) }
        blocks.removeAll()
        count = 0
    }

    /// Forgets positions from `position` on (blocks are kept).
    public func truncate(to position: Int) { count = max(0, min(count, position)) }

    deinit {
        // A cache dropped without releaseAll still returns its blocks.
        for b in blocks { pool.release(b) }
    }

    /// Writes position `position`'s key and value (kvDimension floats each) for `layer`.
    @inline(__always) func store(layer: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let bs = pool.blockSize
        tsr_kv_store(pool.keyBase(layer: layer), pool.valueBase(layer: layer), pool.precision.ggmlType, Int64(blocks[position / bs]),
                     Int64(bs), Int64(position % bs), key, value, Int64(pool.kvDimension))
    }
}
