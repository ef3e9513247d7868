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
