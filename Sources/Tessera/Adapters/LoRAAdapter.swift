import Foundation
import TesseraKernels

/// Element precision of a loaded adapter's A and B.
public enum AdapterPrecision: String, Sendable, Codable, CaseIterable {
    /// f32: PEFT's numbers.
    case f32
    /// f16: half the memory, and half the bytes each row's delta streams (a batch of many
    /// adapters reads every one of them per step); A and B rounded to 11 significant bits.
    case f16

    var ggmlType: Int32 { self == .f16 ? Int32(TSR_GGML_F16) : Int32(TSR_GGML_F32) }
}

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
        /// Element type of `a` and `bTransposed`.
        public let precision: AdapterPrecision
        let a: FloatBuffer        // (rank, input): PEFT's lora_A as is (f16 elements packed two per float slot)
        let bTransposed: FloatBuffer  // (rank, output): PEFT's lora_B transposed, so expand streams rows

        /// A (rank × inputs) and Bᵀ (rank × outputs) as f32: in place, or widened into
        /// `scratch` (at least rank · (inputs + outputs) floats) when stored as f16; nil for f16
        /// without scratch.
        func f32(inputs: Int, outputs: Int, scratch: UnsafeMutablePointer<Float>?) -> (a: UnsafePointer<Float>, bTransposed: UnsafePointer<Float>)? {
            guard precision == .f16 else { return (UnsafePointer(a.pointer), UnsafePointer(bTransposed.pointer)) }
            guard let scratch else { return nil }
            _ = tsr_dequantize(Int32(TSR_GGML_F16), UnsafeRawPointer(a.pointer), scratch, Int64(rank * inputs))
            _ = tsr_dequantize(Int32(TSR_GGML_F16), UnsafeRawPointer(bTransposed.pointer), scratch + rank * inputs, Int64(rank * outputs))
            return (UnsafePointer(scratch), UnsafePointer(scratch + rank * inputs))
        }

        /// The same projection stored as f16, or nil when out of memory.
        func halved() -> Projection? {
            guard precision == .f32, let a16 = FloatBuffer(count: (a.count + 1) / 2),
                  let b16 = FloatBuffer(count: (bTransposed.count + 1) / 2) else { return precision == .f16 ? self : nil }
            tsr_f32_to_f16_array(a.pointer, UnsafeMutableRawPointer(a16.pointer).assumingMemoryBound(to: UInt16.self), Int64(a.count))
            tsr_f32_to_f16_array(bTransposed.pointer, UnsafeMutableRawPointer(b16.pointer).assumingMemoryBound(to: UInt16.self), Int64(bTransposed.count))
            return Projection(rank: rank, scale: scale, precision: .f16, a: a16, bTransposed: b16)
        }
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

    /// Bytes of weights held (A and B at their precision).
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
    /// Element precision of A and B.
    public var precision: AdapterPrecision { projections.lazy.compactMap { $0?.precision }.first ?? .f32 }
    /// Distinct scales used.
    public var scales: [Float] { Array(Set(projections.compactMap { $0?.scale })).sorted() }
}
