import Foundation

/// One loaded LoRA adapter: per layer and target projection, the low-rank pair (A, B) and its
/// scale, in f32, in the layout the kernels want. Immutable once loaded; shared by every
/// sequence that leases it. The base model is never modified.
public final class LoRAAdapter: @unchecked Sendable {
    /// The file format an adapter came from.
    public enum Format: String, Sendable, Codable {
        case peft = "peft"
        case ggufLoRA = "gguf-lora"
    }

    /// One projection's delta: `y += scale · (x · Aᵀ) · Bᵀ`.
    public struct Projection: @unchecked Sendable {
        public let rank: Int
        public let scale: Float
        let a: FloatBuffer        // (rank, input): PEFT's lora_A as is
        let bTransposed: FloatBuffer  // (rank, output): PEFT's lora_B transposed, so expand streams rows
    }

    public let name: String
    public let source: String
    public let format: Format
    /// The base model's layer count (adapters are checked against one base).
    public let layerCount: Int
    private let projections: [Projection?]  // (layer, target)

    init(name: String, source: String, format: Format, layerCount: Int, projections: [Projection?]) {
        self.name = name
        self.source = source
        self.format = format
        self.layerCount = layerCount
        self.projections = projections
    }

    @inline(__always)
    func projection(layer: Int, target: LoRATarget) -> Projection? {
        projections[layer * LoRATarget.allCases.count + Self.targetIndex(target)]
    }

    @inline(__always) static func targetIndex(_ t: LoRATarget) -> Int {
        switch t {
        case .q: 0
        case .k: 1
        case .v: 2
        case .o: 3
        case .gate: 4
        case .up: 5
        case .down: 6
        }
    }

    /// Bytes of f32 weights held.
    public var byteCount: Int { projections.reduce(0) { $0 + ($1.map { $0.a.byteCount + $0.bTransposed.byteCount } ?? 0) } }
    /// Ranks used (several with `rank_pattern`).
    public var ranks: [Int] { Array(Set(projections.compactMap { $0?.rank })).sorted() }
    /// The largest rank.
    public var maxRank: Int { ranks.last ?? 0 }
    /// Projections targeted in at least one layer.
    public var targets: [LoRATarget] {
        LoRATarget.allCases.filter { t in (0..<layerCount).contains { projection(layer: $0, target: t) != nil } }
    }
    /// Layers with at least one projection.
    public var layers: [Int] { (0..<layerCount).filter { l in LoRATarget.allCases.contains { projection(layer: l, target: $0) != nil } } }
    /// Distinct scales used.
    public var scales: [Float] { Array(Set(projections.compactMap { $0?.scale })).sorted() }
}
