#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TesseraKernels

/// A tensor's bytes in their stored type, inside a mapping that `owner` keeps alive.
struct StoredTensor {
    let type: GGMLType
    let bytes: UnsafeRawBufferPointer
    let owner: AnyObject
}

/// Memory for a model's interleaved weights: one mapping, 2 MiB-aligned and asked to be backed
/// by transparent huge pages (`tsr_huge_alloc`), handed out in 64-byte-aligned slices. Decode
/// streams every weight each step; with 4 KiB pages that is a TLB miss (a two-level walk under a
/// hypervisor) every 4 KiB and a hardware prefetcher stopped at every page boundary.
final class WeightArena: @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private let mapped: Int64
    private var used = 0

    /// Nil when the system cannot map `bytes` (callers fall back to the allocator).
    init?(bytes: Int) {
        var m: Int64 = 0
        guard bytes > 0, let p = tsr_huge_alloc(Int64(bytes), &m) else { return nil }
        base = p
        capacity = bytes
        mapped = m
    }

    deinit { tsr_huge_free(base, mapped) }

    /// `bytes` of the arena, 64-byte aligned; nil when it is full.
    func take(_ bytes: Int) -> UnsafeMutableRawPointer? {
        let start = (used + 63) & ~63
        guard start + bytes <= capacity else { return nil }
        used = start + bytes
        return base + start
    }

    /// Bytes `take` hands out for parts of these sizes (each slice rounded up to 64).
    static func bytes(for sizes: [Int]) -> Int { sizes.reduce(0) { $0 + ($1 + 63) / 64 * 64 } }
}

/// Where an interleaved part goes, taken from a ``WeightArena`` by the caller: the whole part at
/// `start`, or, split in column panels, panel 0 at `start` and panel 1 at `panel1`.
struct WeightPlacement {
    let start: UnsafeMutableRawPointer
    let panel1: UnsafeMutableRawPointer?
}

/// One linear layer's weight matrix, `outputs × inputs`, as the matmuls read it.
///
/// Rows stay in their stored type (GGUF blocks or 16-bit floats, read in place from the mapped
/// file) as one or more `parts` stacked by rows — q|k|v and gate|up are fused this way without a
/// copy, and permuted q/k rows are put back in Hugging Face order by a row map. A contiguous f32
/// copy (`dense`) exists only where the model was built from f32 buffers, or where the
/// weight-memory budget bought one to speed up many-row matmuls.
final class LinearWeight: @unchecked Sendable {
    let outputs: Int
    let inputs: Int
    /// f32 rows in output order, when held.
    private(set) var dense: FloatBuffer?
    /// The stored-type rows; empty when the matrix exists only as `dense`.
    let parts: UnsafeMutablePointer<tsr_weight_part>
    let partCount: Int
    /// Whether some part is block-quantized (its matmul takes Q8 activations).
    let needsQ8: Bool
    /// Bytes of the stored-type rows (in the mapping, not allocated here).
    let storedBytes: Int
    private let rowMaps: [UnsafeMutablePointer<Int32>]
    private let owners: [AnyObject]
    /// Memory of interleaved parts (``interleave()``) taken from the allocator, freed with the
    /// matrix; or the arena they were cut from, kept alive with it.
    private var interleavedBuffers: [UnsafeMutableRawPointer] = []
    private var arena: WeightArena?
    /// Bytes of interleaved parts (allocated here; their mapped rows were given back).
    private(set) var interleavedBytes = 0
    /// Whether every part is interleaved (the kernel then beats sgemm at any row count).
    private(set) var isInterleaved = false
    private func canInterleave(_ p: tsr_weight_part) -> Bool {
        p.layout == Int32(TSR_LAYOUT_ROWS) && tsr_x8_group_block_bytes(p.type) > 0 && p.rows % 8 == 0 && p.data != nil
    }

    /// Bytes of each part ``interleave(kSplit:arena:)`` would rewrite.
    var interleavableSizes: [Int] {
        (0..<partCount).filter { canInterleave(parts[$0]) }.map { Int(parts[$0].rows * parts[$0].row_bytes) }
    }

    /// Bytes of part i once interleaved: whole, or its two column panels split at `kSplit`
    /// (nil when it would not be interleaved; one size when it cannot split there).
    func interleavedSizes(part i: Int, kSplit: Int = 0) -> [Int]? {
        var p = parts[i]
        guard canInterleave(p) else { return nil }
        let panels = [0, 1].map { Int(tsr_x8_panel_bytes(&p, Int64(inputs), Int64(kSplit), Int32($0))) }
        return kSplit > 0 && panels.allSatisfy({ $0 > 0 }) ? panels : [Int(p.rows * p.row_bytes)]
    }

    /// The column-panel split every part has (0: none, or the parts differ).
    var kSplit: Int {
        guard partCount > 0 else { return 0 }
        let first = parts[0].k_split
        return (0..<partCount).allSatisfy { parts[$0].k_split == first } ? Int(first) : 0
    }

    /// A matrix held only as f32.
    init(dense: FloatBuffer, outputs: Int, inputs: Int) {
        tensorStarts = []
        self.outputs = outputs
        self.inputs = inputs
        self.dense = dense
        parts = .allocate(capacity: 1)
        partCount = 0
        needsQ8 = false
        storedBytes = 0
        rowMaps = []
        owners = []
    }

    /// Whether part i is the first (or only) piece of its tensor, for reports.
    private let tensorStarts: [Bool]

    /// Rows of `pieces` stacked in order; a piece's `rowMap` gives the output row (within the
    /// piece) of each stored row. `continues[i]`: piece i is cut from the same tensor as piece
    /// i − 1 (counted once in reports).
    init(pieces: [(tensor: StoredTensor, rows: Int, rowMap: [Int32]?)], inputs: Int, continues: [Bool] = []) {
        tensorStarts = pieces.indices.map { !(continues.indices.contains($0) && continues[$0]) }
        self.inputs = inputs
        parts = .allocate(capacity: max(pieces.count, 1))
        var maps: [UnsafeMutablePointer<Int32>] = []
        var offset = 0, bytes = 0, q8 = false
        for (i, piece) in pieces.enumerated() {
            var mapPointer: UnsafeMutablePointer<Int32>?
            if let m = piece.rowMap {
                let p = UnsafeMutablePointer<Int32>.allocate(capacity: m.count)
                p.initialize(from: m, count: m.count)
                maps.append(p)
                mapPointer = p
            }
            let t = piece.tensor.type
            parts[i] = tsr_weight_part(type: Int32(t.rawValue), data: piece.tensor.bytes.baseAddress, rows: Int64(piece.rows),
                                       row_bytes: Int64(inputs / t.blockElements * t.blockBytes), row_map: mapPointer,
                                       out_offset: Int64(offset), layout: Int32(TSR_LAYOUT_ROWS), k_split: 0, panel1: nil)
            offset += piece.rows
            bytes += piece.tensor.bytes.count
            q8 = q8 || tsr_type_is_quantized(Int32(t.rawValue)) != 0
        }
        outputs = offset
        partCount = pieces.count
        needsQ8 = q8
        storedBytes = bytes
        rowMaps = maps
        owners = pieces.map(\.tensor.owner)
    }

    deinit {
        parts.deallocate()
        for m in rowMaps { m.deallocate() }
        for b in interleavedBuffers { free(b) }
    }

    /// Rewrites every part of a type with an interleaved layout (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K; rows a
    /// multiple of 8) as groups of 8 rows side by side (`tsr_pack_x8`), where the kernel needs
    /// no horizontal sums and one scale vector serves 8 outputs. Same bytes as stored; the
    /// mapped pages read are released, so resident memory does not grow. Returns false when
    /// out of memory (the parts already rewritten stay so; the rest stay as stored).
    /// `kSplit` > 0: parts whose type allows it are split in two column panels at that input
    /// block of 32 (`tsr_weight_part.k_split`, for the tensor-parallel decode step).
    /// Slices of `arena` hold the rewritten parts while it has room (then the allocator).
    /// `memoryOrder`: the order the parts take slices of the arena (default: stacking order).
    /// `placed`: parts whose memory the caller already took from `arena` (``WeightPlacement``),
    /// written there instead.
    func interleave(kSplit: Int = 0, arena: WeightArena? = nil, memoryOrder: [Int]? = nil, placed: [Int: WeightPlacement] = [:]) -> Bool {
        let order = memoryOrder.flatMap { Set($0) == Set(0..<partCount) && $0.count == partCount ? $0 : nil } ?? Array(0..<partCount)
        for i in order {
            var p = parts[i]
            guard canInterleave(p), let data = p.data else { continue }
            let bytes = Int(p.rows * p.row_bytes)
            let place = placed[i]
            var raw: UnsafeMutableRawPointer? = place?.start ?? arena?.take(bytes)
            let owned = raw == nil
            if owned { guard posix_memalign(&raw, 64, max(bytes, 64)) == 0 else { return false } }
            guard let raw else { return false }
            var split = Int64(kSplit)
            if let panel1 = place?.panel1 {  // the caller sized both panels with tsr_x8_panel_bytes
                guard split > 0, tsr_pack_x8_panels(&p, Int64(inputs), split, raw, panel1) == TSR_OK else { continue }
                p.panel1 = UnsafeRawPointer(panel1)
            } else if split > 0 && tsr_pack_x8_split(&p, Int64(inputs), split, raw) != TSR_OK {
                split = 0  // a type that cannot split there
            }
            guard split > 0 || tsr_pack_x8(&p, Int64(inputs), raw) == TSR_OK else {
                if owned { free(raw) }
                continue
            }
            if owned { interleavedBuffers.append(raw) } else { self.arena = arena }
            p.k_split = split
            (owners[i] as? MappedFile)?.releasePages(of: UnsafeRawBufferPointer(start: data, count: bytes))
            p.data = UnsafeRawPointer(raw)
            p.row_map = nil
            p.layout = Int32(TSR_LAYOUT_X8)
            parts[i] = p
            interleavedBytes += bytes
        }
        isInterleaved = partCount > 0 && (0..<partCount).allSatisfy { parts[$0].layout == Int32(TSR_LAYOUT_X8) }
        return true
    }

    /// Types of the stored parts, for reports.
    /// One entry per tensor: the parts cut from one tensor (`tensorStarts`) count once.
    var storedTypes: [GGMLType] { (0..<partCount).filter { tensorStarts[$0] }.map { GGMLType(rawValue: UInt32(parts[$0].type)) } }

    /// Bytes this matrix holds in memory of its own (the f32 copy).
    var denseBytes: Int { dense?.byteCount ?? 0 }

    /// Writes output rows [begin, end) as f32 into `destination` ((end − begin) × inputs).
    func dequantize(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        if let dense {
            destination.update(from: dense.pointer + range.lowerBound * inputs, count: range.count * inputs)
            return
        }
        if range.count == 1 {
            // One row (an embedding lookup): find its stored row directly.
            let out = range.lowerBound
            for i in 0..<partCount {
                let p = parts[i]
                guard out >= p.out_offset, out < p.out_offset + p.rows else { continue }
                var g = out - Int(p.out_offset)
                if let map = p.row_map { g = (0..<Int(p.rows)).first { Int(map[$0]) == g } ?? g }
                tsr_dequantize_part_row(parts + i, Int64(inputs), Int64(g), destination)
                return
            }
            return
        }
        tsr_dequantize_parts(parts, Int64(partCount), Int64(inputs), Int64(range.lowerBound), Int64(range.upperBound), destination)
    }

    /// Makes the f32 copy (when the budget allows it). Returns false when out of memory.
    @discardableResult
    func makeDense() -> Bool {
        guard dense == nil else { return true }
        guard let b = FloatBuffer(count: outputs * inputs) else { return false }
        dequantize(rows: 0..<outputs, into: b.pointer)
        dense = b
        return true
    }

    /// A private f32 copy of the whole matrix (for merging an adapter into it).
    func denseCopy() -> FloatBuffer? {
        guard let b = FloatBuffer(count: outputs * inputs) else { return nil }
        dequantize(rows: 0..<outputs, into: b.pointer)
        return b
    }
}
