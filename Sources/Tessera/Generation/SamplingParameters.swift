/// How the next token is chosen. Configuration is data: the CLI, the server and library
/// callers all build this one struct.
public struct SamplingParameters: Sendable, Equatable, Codable {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0 = off).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    public var topP: Float = 1
    /// Drop tokens whose probability is below minP × the top probability (0 = off).
    public var minP: Float = 0
    /// CTRL-style penalty on tokens already in the prompt or output (1 = off): positive logits
    /// are divided by it, negative ones multiplied, as HF's RepetitionPenaltyLogitsProcessor.
    public var repetitionPenalty: Float = 1
    /// OpenAI's presence penalty: subtracted once from the logit of every token already
    /// generated (not the prompt's), -2 to 2 (0 = off).
    public var presencePenalty: Float = 0
    /// OpenAI's frequency penalty: subtracted from a token's logit once per time it was
    /// generated, -2 to 2 (0 = off).
    public var frequencyPenalty: Float = 0
    /// Seed of this request's own random number generator.
    public var seed: UInt64 = 0

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0,
                repetitionPenalty: Float = 1, presencePenalty: Float = 0, frequencyPenalty: Float = 0, seed: UInt64 = 0) {
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
    }

    /// Greedy decoding.
    public static let greedy = SamplingParameters()

    /// Checks the ranges; the error names the field.
    public func validate() throws(GenerationError) {
        guard temperature.isFinite, temperature >= 0 else { throw .invalidParameter(name: "temperature", why: "must be >= 0, got \(temperature)") }
        guard topK >= 0 else { throw .invalidParameter(name: "top_k", why: "must be >= 0, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw .invalidParameter(name: "top_p", why: "must be in (0, 1], got \(topP)") }
        guard minP >= 0, minP <= 1 else { throw .invalidParameter(name: "min_p", why: "must be in [0, 1], got \(minP)") }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw .invalidParameter(name: "repetition_penalty", why: "must be > 0, got \(repetitionPenalty)")
        }
        for (name, v) in [("presence_penalty", presencePenalty), ("frequency_penalty", frequencyPenalty)] where !(v >= -2 && v <= 2) {
            throw .invalidParameter(name: name, why: "must be in [-2, 2], got \(v)")
        }
    }
}

/// A generation request that cannot run.
public enum GenerationError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A parameter outside its range.
    case invalidParameter(name: String, why: String)
    /// The prompt has no tokens.
    case emptyPrompt
    /// Prompt plus requested tokens exceed the model's context.
    case promptTooLong(tokens: Int, context: Int)

    public var description: String {
        switch self {
        case .invalidParameter(let n, let w): "invalid '\(n)': \(w)"
        case .emptyPrompt: "the prompt is empty (no tokens)"
        case .promptTooLong(let t, let c): "the prompt has \(t) tokens but the model's context is \(c)"
        }
    }
}
