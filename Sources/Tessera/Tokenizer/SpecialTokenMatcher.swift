/// Finds special tokens (control and user-defined) written literally in text, longest match first at
/// the leftmost position, as Hugging Face's added-vocabulary matcher (Aho-Corasick, leftmost-longest) does.
struct SpecialTokenMatcher: Sendable {
    /// One trie node: children by next byte, and the token ending here (-1 if none).
    private struct Node: Sendable {
        var children: [UInt8: Int32] = [:]
        var tokenId: Int32 = -1
    }

    private var nodes: [Node] = [Node()]
    /// Bytes that start some token: a quick filter so ordinary text never touches the trie.
    private var startsToken = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { nodes.count == 1 }

    /// Adds a token's text; an empty text is ignored, and the first id given for a text wins.
    mutating func add(_ text: [UInt8], id: Int32) {
        guard let first = text.first else { return }
        startsToken[Int(first)] = true
        var node = 0
        for byte in text {
            if let child = nodes[node].children[byte] {
                node = Int(child)
            } else {
                nodes.append(Node())
                nodes[node].children[byte] = Int32(nodes.count - 1)
                node = nodes.count - 1
            }
        }
        if nodes[node].tokenId < 0 { nodes[node].tokenId = id }
    }

    /// The longest token starting at `start`, as (id, end offset).
    @inline(__always)
    func match(_ bytes: UnsafeBufferPointer<UInt8>, at start: Int) -> (id: Int32, end: Int)? {
        guard startsToken[Int(bytes[start])] else { return nil }
        var node = 0
        var best: (id: Int32, end: Int)?
        var i = start
        while i < bytes.count, let child = nodes[node].children[bytes[i]] {
            node = Int(child)
            i += 1
            if nodes[node].tokenId >= 0 { best = (nodes[node].tokenId, i) }
        }
        return best
    }
}
