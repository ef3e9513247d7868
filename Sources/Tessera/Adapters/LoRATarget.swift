/// A linear projection of a Llama block that a LoRA adapter may target.
public enum LoRATarget: String, CaseIterable, Sendable, Codable, Comparable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj", gate = "gate_proj", up = "up_proj", down = "down_proj"

    /// The tensor stem in GGUF names (`blk.N.<stem>.weight`).
    public var ggufName: String {
        switch self {
        case .q: "attn_q"
        case .k: "attn_k"
        case .v: "attn_v"
        case .o: "attn_output"
        case .gate: "ffn_gate"
        case .up: "ffn_up"
        case .down: "ffn_down"
        }
    }

    /// The Hugging Face module path within a layer (`self_attn.q_proj`).
    public var hfModule: String {
        switch self {
        case .q, .k, .v, .o: "self_attn.\(rawValue)"
        case .gate, .up, .down: "mlp.\(rawValue)"
        }
    }

    /// (input, output) width of the base projection.
    public func dimensions(_ c: LlamaConfig) -> (input: Int, output: Int) {
        switch self {
        case .q: (c.hiddenSize, c.queryDimension)
        case .k, .v: (c.hiddenSize, c.kvDimension)
        case .o: (c.queryDimension, c.hiddenSize)
        case .gate, .up: (c.hiddenSize, c.intermediateSize)
        case .down: (c.intermediateSize, c.hiddenSize)
        }
    }

    static func fromGGUF(_ stem: String) -> LoRATarget? { allCases.first { $0.ggufName == stem } }

    public static func < (a: LoRATarget, b: LoRATarget) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
