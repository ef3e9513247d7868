/// Per-tenant queues and a virtual-token-counter fair scheduler (Sheng et al., "Fairness in
/// Serving Large Language Models", 2024): each tenant's counter grows by the tokens it is
/// served (prompt and generated) divided by its weight, and the next request admitted comes
/// from the backlogged tenant with the smallest counter. A tenant returning from idle is lifted
/// to the smallest backlogged counter, so idleness banks no credit.
///
/// Bound: while two tenants are both backlogged, their weighted service differs by at most one
/// step's tokens plus one request's prompt and max_tokens.
struct FairQueues<Item> {
    private var queues: [String: [Item]] = [:]
    private(set) var counters: [String: Double] = [:]
    /// Weights by tenant (1 when absent); changeable while running (the next charge uses them).
    var weights: [String: Double]

    init(weights: [String: Double]) { self.weights = weights }

    var isEmpty: Bool { queues.values.allSatisfy(\.isEmpty) }
    func count(for tenant: String) -> Int { queues[tenant]?.count ?? 0 }
    var totalCount: Int { queues.values.reduce(0) { $0 + $1.count } }

    mutating func enqueue(_ item: Item, tenant: String, front: Bool = false) {
        if (queues[tenant] ?? []).isEmpty {
            let backlogged = queues.filter { !$0.value.isEmpty && $0.key != tenant }.keys.compactMap { counters[$0] }
            if let floor = backlogged.min() { counters[tenant] = max(counters[tenant] ?? 0, floor) }
            else if counters[tenant] == nil { counters[tenant] = 0 }
        }
        if front { queues[tenant, default: []].insert(item, at: 0) } else { queues[tenant, default: []].append(item) }
    }

    /// The next item from the backlogged tenant with the smallest counter among those `eligible`.
    mutating func dequeue(eligible: (String) -> Bool) -> (tenant: String, item: Item)? {
        let candidates = queues.filter { !$0.value.isEmpty && eligible($0.key) }.keys
        guard let tenant = candidates.min(by: { (counters[$0] ?? 0, $0) < (counters[$1] ?? 0, $1) }) else { return nil }
        let item = queues[tenant]!.removeFirst()
        return (tenant, item)
    }

    /// Removes the items matching `predicate` (cancelled or expired ones).
    mutating func removeAll(where predicate: (Item) -> Bool) -> [Item] {
        var removed: [Item] = []
        for key in queues.keys {
            let (gone, kept) = queues[key]!.reduce(into: ([Item](), [Item]())) { acc, item in
                if predicate(item) { acc.0.append(item) } else { acc.1.append(item) }
            }
            removed += gone
            queues[key] = kept
        }
        return removed
    }

    /// Every queued item, in no particular order.
    var allItems: [Item] { queues.values.flatMap { $0 } }

    /// Charges `tokens` of service to `tenant`.
    mutating func charge(_ tenant: String, tokens: Int) {
        counters[tenant, default: 0] += Double(tokens) / (weights[tenant] ?? 1)
    }
}
