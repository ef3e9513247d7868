import Foundation

/// What a request asks the model to continue.
public enum EnginePrompt: Sendable {
    /// Plain text, tokenized with the model's tokenizer (special tokens written in it are recognised).
    case text(String)
    /// Token ids as they are.
    case tokens([Int32])
    /// Chat messages, rendered with the model's chat template plus the assistant's turn opener.
    case chat([ChatMessage])
}

/// One generation request to the ``Engine``.
public struct EngineRequest: Sendable {
    /// The tenant it is accounted to; isolation, fairness and limits are per tenant.
    public var tenant: String
    /// Registered adapter name (nil: the base model).
    public var adapter: String?
    public var prompt: EnginePrompt
    public var sampling: SamplingParameters
    public var maxTokens: Int
    public var stopStrings: [String]
    public var ignoreEOS: Bool
    /// Return the log-probability of each generated token.
    public var logprobs: Bool
    /// With `logprobs`: also the this many most likely tokens at each position (0-20).
    public var topLogprobs: Int
    /// May use adapters owned by other tenants (an administrator's request).
    public var mayUseAnyAdapter = false
    /// Give up (finish with `.deadline`) after this instant.
    public var deadline: ContinuousClock.Instant?

    public init(tenant: String, adapter: String? = nil, prompt: EnginePrompt, sampling: SamplingParameters = .greedy,
                maxTokens: Int = 128, stopStrings: [String] = [], ignoreEOS: Bool = false, logprobs: Bool = false,
                topLogprobs: Int = 0, deadline: ContinuousClock.Instant? = nil) {
        self.topLogprobs = topLogprobs
        self.tenant = tenant
        self.adapter = adapter
        self.prompt = prompt
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopStrings = stopStrings
        self.ignoreEOS = ignoreEOS
        self.logprobs = logprobs
        self.deadline = deadline
    }
}

/// Token counts of a finished request.
public struct Usage: Sendable, Equatable, Codable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens whose KV blocks came from the prefix cache instead of being computed.
    public var cachedPromptTokens = 0
    /// Seconds from submission to first admission into a running batch.
    public var queueSeconds: Double?
    /// Seconds from submission to the first generated token.
    public var timeToFirstTokenSeconds: Double?

    public init(promptTokens: Int, completionTokens: Int, cachedPromptTokens: Int = 0, queueSeconds: Double? = nil,
                timeToFirstTokenSeconds: Double? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedPromptTokens = cachedPromptTokens
        self.queueSeconds = queueSeconds
        self.timeToFirstTokenSeconds = timeToFirstTokenSeconds
    }
}

/// One of the most likely tokens at a position, with its log-probability.
public struct TokenAlternative: Sendable, Equatable {
    public var tokenId: Int32
    public var logprob: Float
}

/// What a request's stream yields: text as it is generated, then one finish event.
public enum EngineEvent: Sendable {
    /// New text (possibly empty while a multi-byte character or a possible stop string is held
    /// back), the token ids it came from, their log-probabilities when asked for, and, with
    /// `topLogprobs`, each token's most likely alternatives (most likely first).
    case delta(text: String, tokenIds: [Int32], logprobs: [Float]?, top: [[TokenAlternative]]?)
    /// The last event.
    case finished(reason: EngineFinishReason, usage: Usage)
}

/// Why a request ended.
public enum EngineFinishReason: String, Sendable, Codable {
    case stop, length, deadline, cancelled
}

/// A request refused or failed by the engine; other requests are unaffected.
public enum EngineError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The tenant already has its maximum of queued requests.
    case tenantQueueFull(tenant: String, limit: Int)
    /// The prompt is empty, too long for the context or the KV pool, or not tokenizable.
    case invalidPrompt(String)
    /// A sampling parameter or max_tokens is out of range.
    case invalidParameter(String)
    /// The adapter is unknown to this tenant or could not be loaded.
    case adapter(AdapterError)
    /// The engine is shutting down or stopped.
    case notRunning
    /// The forward pass failed (a bug, or memory exhausted).
    case internalFailure(String)

    public var description: String {
        switch self {
        case .tenantQueueFull(let t, let l): "tenant '\(t)' already has \(l) queued requests; retry later"
        case .invalidPrompt(let s): "invalid prompt: \(s)"
        case .invalidParameter(let s): "invalid parameter: \(s)"
        case .adapter(let e): e.description
        case .notRunning: "the engine is not running"
        case .internalFailure(let s): "internal failure: \(s)"
        }
    }
}
