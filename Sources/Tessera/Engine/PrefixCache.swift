/// Full KV blocks of earlier prompts, reused by later prompts that start the same way.
/// Keyed by tenant, adapter and version, and the whole token prefix (a chain of blocks), so an
/// entry is never shared across tenants or adapters. Each entry holds one reference on its block.
struct PrefixCache {
    struct Key: Hashable {
        let tenant: String
        let adapter: String   // "name#version", or "" for the base
        let parent: UInt64    // entry id of the previous block (0 at the start)
        let tokens: [Int32]   // this block's tokens
    }
    struct Entry {
        let id: UInt64
        let block: Int32
        var lastUse: UInt64
    }
    private(set) var entries: [Key: Entry] = [:]
    private var nextID: UInt64 = 1
    private var clock: UInt64 = 0

    var count: Int { entries.count }

    /// The cached blocks covering the longest run of full blocks of `tokens` (at most `limit` blocks).
    mutating func lookup(tenant: String, adapter: String, tokens: [Int32], blockSize: Int, limit: Int) -> [Int32] {
        var parent: UInt64 = 0
        var blocks: [Int32] = []
        clock += 1
        for b in 0..<limit {
            let key = Key(tenant: tenant, adapter: adapter, parent: parent, tokens: Array(tokens[(b * blockSize)..<((b + 1) * blockSize)]))
            guard var e = entries[key] else { break }
            e.lastUse = clock
            entries[key] = e
            blocks.append(e.block)
            parent = e.id
        }
        return blocks
    }

    /// Offers the full blocks of a prompt; returns the blocks newly cached (the caller retains each).
    mutating func insert(tenant: String, adapter: String, tokens: [Int32], blocks: [Int32], blockSize: Int) -> [Int32] {
        var parent: UInt64 = 0
        var added: [Int32] = []
        clock += 1
        for (b, block) in blocks.enumerated() where (b + 1) * blockSize <= tokens.count {
            let key = Key(tenant: tenant, adapter: adapter, parent: parent, tokens: Array(tokens[(b * blockSize)..<((b + 1) * blockSize)]))
            if let e = entries[key] {
                parent = e.id
                continue
            }
            let e = Entry(id: nextID, block: block, lastUse: clock)
            nextID += 1
            entries[key] = e
            added.append(block)
            parent = e.id
        }
        return added
    }

    /// Removes the least recently used entry whose block only the cache still holds; returns its block.
    mutating func evictOne(isUnshared: (Int32) -> Bool) -> Int32? {
        guard let (key, e) = entries.filter({ isUnshared($0.value.block) }).min(by: { $0.value.lastUse < $1.value.lastUse }) else { return nil }
        entries[key] = nil
        return e.block
    }

    /// Removes every entry; returns their blocks.
    mutating func removeAll() -> [Int32] {
        defer { entries.removeAll() }
        return entries.values.map(\.block)
    }
}
