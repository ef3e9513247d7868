import Foundation

/// The merge rules as an open-addressing hash table from a pair of token ids to the rule's rank (its
/// priority: lower merges first) and the id of the merged token.
struct MergeTable: Sendable {
    static let absent: UInt64 = .max

    private var keys: [UInt64]    // (left << 32) | right; `absent` marks an empty slot
    private var values: [UInt64]  // (rank << 32) | merged id
    private let shift: UInt64

    init(expectedCount: Int) {
        var capacity = 16
        var bits: UInt64 = 4
        while capacity < expectedCount * 2 { capacity <<= 1; bits += 1 }
        keys = [UInt64](repeating: Self.absent, count: capacity)
        values = [UInt64](repeating: 0, count: capacity)
        shift = 64 - bits
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        (UInt64(UInt32(bitPattern: left)) << 32) | UInt64(UInt32(bitPattern: right))
    }

    /// Adds a rule; a pair already present keeps its earlier (better) rank. Returns whether it was added.
    @discardableResult
    mutating func insert(left: Int32, right: Int32, rank: Int, merged: Int32) -> Bool {
        let key = Self.key(left, right)
        var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
        let mask = keys.count - 1
        while keys[slot] != Self.absent {
            if keys[slot] == key { return false }
            slot = (slot + 1) & mask
        }
        keys[slot] = key
        values[slot] = (UInt64(rank) << 32) | UInt64(UInt32(bitPattern: merged))
        return true
    }

    /// `(rank << 32) | merged id` for the pair, or ``absent``.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = Self.key(left, right)
        var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
        let mask = keys.count - 1
        return keys.withUnsafeBufferPointer { k in
            while true {
                let stored = k[slot]
                if stored == key { return values[slot] }
                if stored == Self.absent { return Self.absent }
                slot = (slot + 1) & mask
            }
        }
    }
}

/// Byte-level BPE over one pre-token, with Hugging Face's merge order: repeatedly apply the
/// lowest-ranked rule present, leftmost first (a min-heap of `(rank, position)`, stale entries skipped).
/// Holds scratch buffers, so one value serves a whole encode call without allocating per pre-token.
struct BytePairMerger {
    private var ids: [Int32] = []    // symbol at each byte position; -1 once merged into its left neighbour
    private var previous: [Int32] = []
    private var next: [Int32] = []
    private var heap: [UInt64] = []  // (rank << 32) | position

    /// Appends the token ids of `bytes` to `output`. `byteIds[b]` is the token of single byte `b`, or -1
    /// when the vocabulary lacks it; such a byte is dropped, as Hugging Face (with no `unk_token`, as
    /// byte-level models have) and llama.cpp both do. SmolLM2 lacks 21 of the 256 bytes.
    mutating func encode(
        _ bytes: UnsafeBufferPointer<UInt8>, merges: MergeTable, byteIds: [Int32], into output: inout [Int32]
    ) {
        let n = bytes.count
        if n == 0 { return }
        ids.removeAll(keepingCapacity: true)
        previous.removeAll(keepingCapacity: true)
        next.removeAll(keepingCapacity: true)
        heap.removeAll(keepingCapacity: true)
        for (k, byte) in bytes.enumerated() {
            ids.append(byteIds[Int(byte)])
            previous.append(Int32(k - 1))
            next.append(Int32(k + 1))
        }
        if n > 1 {
            for k in 0..<(n - 1) {
                let rule = merges.lookup(ids[k], ids[k + 1])
                if rule != MergeTable.absent { push((rule & 0xFFFF_FFFF_0000_0000) | UInt64(k)) }
            }
        }
        while let top = pop() {
            let position = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            let left = ids[position]
            if left < 0 { continue }
            let right = Int(next[position])
            if right >= n { continue }
            let rule = merges.lookup(left, ids[right])
            if rule == MergeTable.absent || rule >> 32 != rank { continue }  // stale: the pair has changed
            ids[position] = Int32(truncatingIfNeeded: rule & 0xFFFF_FFFF)
            ids[right] = -1
            let after = Int(next[right])
            next[position] = Int32(after)
            if after < n { previous[after] = Int32(position) }
            let before = Int(previous[position])
            if before >= 0 {
                let r = merges.lookup(ids[before], ids[position])
                if r != MergeTable.absent { push((r & 0xFFFF_FFFF_0000_0000) | UInt64(before)) }
            }
            if after < n {
                let r = merges.lookup(ids[position], ids[after])
                if r != MergeTable.absent { push((r & 0xFFFF_FFFF_0000_0000) | UInt64(position)) }
            }
        }
        var k = 0
        while k < n {
            let id = ids[k]
            if id >= 0 { output.append(id) }  // -1 here is a byte without a token (merged-away symbols are off the chain)
            k = Int(next[k])
        }
    }

    @inline(__always)
    private mutating func push(_ value: UInt64) {
        heap.append(value)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) >> 1
            if heap[parent] <= value { break }
            heap[child] = heap[parent]
            child = parent
        }
        heap[child] = value
    }

    @inline(__always)
    private mutating func pop() -> UInt64? {
        guard let last = heap.popLast() else { return nil }
        if heap.isEmpty { return last }
        let top = heap[0]
        let count = heap.count
        var parent = 0
        while true {
            var child = 2 * parent + 1
            if child >= count { break }
            if child + 1 < count, heap[child + 1] < heap[child] { child += 1 }
            if last <= heap[child] { break }
            heap[parent] = heap[child]
            parent = child
        }
        heap[parent] = last
        return top
    }
}

/// Pre-token bytes → token ids, shared by all callers of one tokenizer. Text repeats its words, so most
/// pre-tokens are found here; the cache is emptied when it grows past `limit` entries.
final class PieceCache: @unchecked Sendable {
    // @unchecked: `entries` is only touched with `lock` held.
    private let lock = NSLock()
    private var entries: [PieceKey: [Int32]] = [:]
    private let limit: Int

    init(limit: Int = 100_000) { self.limit = limit }

    /// Appends the cached ids of `piece` to `output`; returns false on a miss.
    @inline(__always)
    func append(_ piece: ArraySlice<UInt8>, to output: inout [Int32]) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let ids = entries[PieceKey(bytes: piece)] else { return false }
        output.append(contentsOf: ids)
        return true
    }

    func insert(_ piece: ArraySlice<UInt8>, ids: ArraySlice<Int32>) {
        let key = PieceKey(bytes: ArraySlice(Array(piece)))  // own copy: a slice would keep the caller's whole buffer alive
        lock.lock()
        defer { lock.unlock() }
        if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
        entries[key] = Array(ids)
    }
}

/// Pre-token bytes as a dictionary key, hashed in one call rather than byte by byte.
private struct PieceKey: Hashable {
    let bytes: ArraySlice<UInt8>

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: PieceKey, b: PieceKey) -> Bool {
        guard a.bytes.count == b.bytes.count else { return false }
        guard !a.bytes.isEmpty else { return true }
        return a.bytes.withUnsafeBytes { x in
            b.bytes.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
        }
    }
}
