import Crypto
import Foundation
import Synchronization

/// Completed deterministic responses, per tenant: a byte budget in LRU order with a TTL.
///
/// The key (``ResponseCache/key(tenantId:parts:)``) is a SHA-256 over the tenant, the adapter's
/// registry name and version, the templated prompt tokens and every parameter that changes the
/// output, so an entry is never reachable from another tenant, and a hot swap (a new version)
/// leaves the old entries unreachable until they age out.
final class ResponseCache: Sendable {
    struct Entry: Sendable {
        /// The non-streamed response exactly as first sent.
        var body: Data
        /// What a streamed hit replays.
        var results: [TesseraServer.ChoiceResult]
        var id: String
        var created: Int
        var bytes: Int
        var expires: ContinuousClock.Instant
    }

    struct Statistics: Sendable {
        var hits = 0
        var misses = 0
        var entries = 0
        var bytes = 0
        var evictions = 0
    }

    private struct Node {
        var entry: Entry
        var older: String?
        var newer: String?
    }

    private struct State {
        var nodes: [String: Node] = [:]
        var oldest: String?
        var newest: String?
        var stats = Statistics()

        mutating func unlink(_ key: String) {
            guard let n = nodes[key] else { return }
            if let o = n.older { nodes[o]?.newer = n.newer } else { oldest = n.newer }
            if let w = n.newer { nodes[w]?.older = n.older } else { newest = n.older }
        }

        mutating func appendNewest(_ key: String, _ entry: Entry) {
            nodes[key] = Node(entry: entry, older: newest, newer: nil)
            if let n = newest { nodes[n]?.newer = key } else { oldest = key }
            newest = key
        }

        mutating func remove(_ key: String) {
            guard let n = nodes[key] else { return }
            unlink(key)
            nodes[key] = nil
            stats.bytes -= n.entry.bytes
            stats.entries -= 1
        }
    }

    let budgetBytes: Int
    let ttl: Duration
    private let state = Mutex(State())

    init(budgetBytes: Int, ttlSeconds: Double) {
        self.budgetBytes = budgetBytes
        ttl = .milliseconds(Int(max(0, ttlSeconds) * 1000))
    }

    var enabled: Bool { budgetBytes > 0 }
    var statistics: Statistics { state.withLock { $0.stats } }

    static func key(tenantId: Int64, parts: [String]) -> String {
        var h = SHA256()
        h.update(data: Data("\(tenantId)".utf8))
        for p in parts {
            h.update(data: Data([0]))
            h.update(data: Data(p.utf8))
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The live entry under `key` (now the most recently used), counting a hit or a miss.
    func lookup(_ key: String) -> Entry? {
        state.withLock { s in
            guard let n = s.nodes[key] else { s.stats.misses += 1; return nil }
            guard n.entry.expires > .now else {
                s.remove(key)
                s.stats.misses += 1
                return nil
            }
            s.unlink(key)
            s.appendNewest(key, n.entry)
            s.stats.hits += 1
            return n.entry
        }
    }

    /// Stores a completed response, evicting the least recently used past the budget. An entry
    /// larger than the whole budget is not kept.
    func insert(_ key: String, body: Data, results: [TesseraServer.ChoiceResult], id: String, created: Int) {
        let bytes = body.count + results.reduce(0) { $0 + $1.text.utf8.count + 4 * ($1.tokenIds.count + $1.logprobs.count) + 32 * $1.top.count } + 256
        guard enabled, bytes <= budgetBytes else { return }
        let entry = Entry(body: body, results: results, id: id, created: created, bytes: bytes, expires: .now + ttl)
        state.withLock { s in
            s.remove(key)
            s.appendNewest(key, entry)
            s.stats.bytes += bytes
            s.stats.entries += 1
            while s.stats.bytes > budgetBytes, let victim = s.oldest {
                s.remove(victim)
                s.stats.evictions += 1
            }
        }
    }
}
