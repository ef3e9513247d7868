import TesseraKernels

/// A ggml tensor element type, as stored in GGUF tensor infos.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    public static let q4_0 = GGMLType(rawValue: 2)
    public static let q4_1 = GGMLType(rawValue: 3)
    public static let q5_0 = GGMLType(rawValue: 6)
    public static let q5_1 = GGMLType(rawValue: 7)
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let q4_K = GGMLType(rawValue: 12)
    public static let q5_K = GGMLType(rawValue: 13)
    public static let q6_K = GGMLType(rawValue: 14)
    public static let bf16 = GGMLType(rawValue: 30)

    private static let names: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
        17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
        24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    ]

    public var description: String { Self.names[rawValue] ?? "type#\(rawValue)" }

    /// Whether this build can dequantize the type.
    public var isSupported: Bool { blockElements > 0 }
    /// Weights per block (1 for plain floats); 0 when unsupported.
    public var blockElements: Int { Int(tsr_type_block_elements(Int32(rawValue))) }
    /// Bytes per block; 0 when unsupported.
    public var blockBytes: Int { Int(tsr_type_block_bytes(Int32(rawValue))) }

    /// Bytes that `elements` values of this type occupy, or nil when unsupported or not whole blocks.
    public func byteCount(elements: Int) -> Int? {
        let be = blockElements
        guard be > 0, elements % be == 0 else { return nil }
        let (bytes, overflow) = (elements / be).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }
}
