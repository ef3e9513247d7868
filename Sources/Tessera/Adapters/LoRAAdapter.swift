import Foundation
import TesseraKernels

/// Element precision of a loaded adapter's A and B.
public enum AdapterPrecision: String, Sendable, Codable, CaseIterable {
    /// f32: PEFT's numbers.
    case f32
    /// f16, the default (as S-LoRA, Punica and vLLM hold adapters in 16 bits): half the memory,
    /// and half the bytes each row's delta streams (a batch of many adapters reads every one of
    /// them per step); A and B rounded to 11 significant bits (logits within about 2e-3 of
    /// PEFT's on the fixtures). An adapter with a matrix beyond f16's range (a weight above 65504,
    /// or every weight below 2⁻¹⁴, where f16 has only subnormals) is held in f32 instead, whole.
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
        /// Element type of A and Bᵀ.
        public let precision: AdapterPrecision
        let inputs: Int
        let outputs: Int
        /// Holds A (rank, inputs: PEFT's lora_A as is) at byte `aOffset` and Bᵀ (rank, outputs:
        /// PEFT's lora_B transposed, so expand streams rows) at `bOffset`; a loaded adapter's
        /// projections of one layer share one buffer, in target order, so a row's deltas read
        /// one contiguous run.
        let storage: FloatBuffer
        let aOffset: Int
        let bOffset: Int

        var a: UnsafeRawPointer { UnsafeRawPointer(storage.pointer) + aOffset }
        var bTransposed: UnsafeRawPointer { UnsafeRawPointer(storage.pointer) + bOffset }
        /// Bytes of A and Bᵀ.
        var byteCount: Int { rank * (inputs + outputs) * (precision == .f16 ? 2 : 4) }

        /// Whether A and Bᵀ each keep their values in f16 (f16 ones do): the largest magnitude
        /// of each within f16's normal range, [2⁻¹⁴, 65504] (or all zero). Below it a matrix would
        /// be all subnormals, losing precision relative to itself; above, infinities. With the
        /// largest weight normal, the smaller ones lose at most 2⁻²⁵ absolute, under f16's own
        /// relative 2⁻¹¹ of the largest.
        var fitsF16: Bool {
            guard precision == .f32 else { return true }
            let p = UnsafeRawPointer(storage.pointer)
            let a = UnsafeBufferPointer(start: (p + aOffset).assumingMemoryBound(to: Float.self), count: rank * inputs)
            let b = UnsafeBufferPointer(start: (p + bOffset).assumingMemoryBound(to: Float.self), count: rank * outputs)
            func fits(_ m: UnsafeBufferPointer<Float>) -> Bool {
                let largest = m.reduce(Float(0)) { max($0, abs($1)) }
                return largest == 0 || (largest >= 0x1p-14 && largest <= 65504)
            }
            return fits(a) && fits(b)
        }

        /// A projection over its own buffer holding f32 `a` (rank × inputs) then `bTransposed`
        /// (rank × outputs); nil when out of memory.
        init?(rank: Int, scale: Float, inputs: Int, outputs: Int, a: UnsafePointer<Float>, bTransposed: UnsafePointer<Float>) {
            guard let storage = FloatBuffer(count: rank * (inputs + outputs)) else { return nil }
            storage.pointer.update(from: a, count: rank * inputs)
            (storage.pointer + rank * inputs).update(from: bTransposed, count: rank * outputs)
            self.init(rank: rank, scale: scale, precision: .f32, inputs: inputs, outputs: outputs, storage: storage,
                      aOffset: 0, bOffset: rank * inputs * 4)
        }

        init(rank: Int, scale: Float, precision: AdapterPrecision, inputs: Int, outputs: Int, storage: FloatBuffer, aOffset: Int, bOffset: Int) {
            (self.rank, self.scale, self.precision, self.inputs, self.outputs) = (rank, scale, precision, inputs, outputs)
            (self.storage, self.aOffset, self.bOffset) = (storage, aOffset, bOffset)
        }

        /// A and Bᵀ as f32: in place, or widened into `scratch` (at least rank · (inputs +
        /// outputs) floats) when stored as f16; nil for f16 without scratch.
        func f32(scratch: UnsafeMutablePointer<Float>?) -> (a: UnsafePointer<Float>, bTransposed: UnsafePointer<Float>)? {
            guard precision == .f16 else { return (a.assumingMemoryBound(to: Float.self), bTransposed.assumingMemoryBound(to: Float.self)) }
            guard let scratch else { return nil }
            _ = tsr_dequantize(Int32(TSR_GGML_F16), a, scratch, Int64(rank * inputs))
            _ = tsr_dequantize(Int32(TSR_GGML_F16), bTransposed, scratch + rank * inputs, Int64(rank * outputs))
            return (UnsafePointer(scratch), UnsafePointer(scratch + rank * inputs))
        }

        /// This projection's A and Bᵀ written at `destination` in `precision` (byteCount bytes
        /// at that precision), as a projection over `storage`.
        func copied(to storage: FloatBuffer, at offset: Int, precision target: AdapterPrecision) -> Projection {
            let destination = UnsafeMutableRawPointer(storage.pointer) + offset
            switch (precision, target) {
            case (.f32, .f16):
                // A and Bᵀ are adjacent in an f32 projection's own buffer.
                tsr_f32_to_f16_array(a.assumingMemoryBound(to: Float.self), destination.assumingMemoryBound(to: UInt16.self), Int64(rank * inputs))
                tsr_f32_to_f16_array(bTransposed.assumingMemoryBound(to: Float.self),
                                     (destination + rank * inputs * 2).assumingMemoryBound(to: UInt16.self), Int64(rank * outputs))
            case (.f16, .f32):
                _ = tsr_dequantize(Int32(TSR_GGML_F16), a, destination.assumingMemoryBound(to: Float.self), Int64(rank * inputs))
                _ = tsr_dequantize(Int32(TSR_GGML_F16), bTransposed, (destination + rank * inputs * 4).assumingMemoryBound(to: Float.self),
                                   Int64(rank * outputs))
            default:
                let es = precision == .f16 ? 2 : 4
                destination.copyMemory(from: a, byteCount: rank * inputs * es)
                (destination + rank * inputs * es).copyMemory(from: bTransposed, byteCount: rank * outputs * es)
            }
            let es = target == .f16 ? 2 : 4
            return Projection(rank: rank, scale: scale, precision: target, inputs: inputs, outputs: outputs, storage: storage,
                              aOffset: offset, bOffset: offset + rank * inputs * es)
        }
    }

    /// Projections (layer-major, target order) repacked at `precision` into one buffer per
    /// layer; nil when out of memory.
    static func packed(_ projections: [Projection?], layerCount: Int, precision: AdapterPrecision) -> [Projection?]? {
        let targets = LoRATarget.allCases.count
        let es = precision == .f16 ? 2 : 4
        var result = projections
        for l in 0..<layerCount {
            let layer = projections[(l * targets)..<((l + 1) * targets)]
            // Each projection 64-byte aligned within the layer's buffer.
            func span(_ p: Projection) -> Int { (p.rank * (p.inputs + p.outputs) * es + 63) / 64 * 64 }
            let bytes = layer.reduce(0) { $0 + ($1.map(span) ?? 0) }
            guard bytes > 0 else { continue }
            guard let storage = FloatBuffer(count: (bytes + 3) / 4) else { return nil }
            var offset = 0
            for (i, p) in zip(layer.indices, layer) {
                guard let p else { continue }
                result[i] = p.copied(to: storage, at: offset, precision: precision)
                offset += span(p)
            }
        }
        return result
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
    public var byteCount: Int { projections.reduce(0) { $0 + ($1?.byteCount ?? 0) } }
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
