import Foundation

/// One request inside the engine: its tokens, KV blocks, sampler and stream. Owned by the
/// engine's compute thread only.
final class EngineSequence {
    let id: UInt64
    let request: EngineRequest
    let continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation
    let lease: AdapterLease?
    /// Prompt then generated tokens.
    var tokens: [Int32]
    let promptCount: Int
    let maxTokens: Int
    var cache: KVCache?
    var sampler: Sampler
    var decoder: StreamingDecoder?
    var stops: StopStringMatcher
    let endTokens: Set<Int32>
    let submittedAt: ContinuousClock.Instant
    var firstTokenAt: ContinuousClock.Instant?
    var lastTokenAt: ContinuousClock.Instant?
    /// Step at which it was (last) admitted: the most recent is preempted first.
    var admittedStep: UInt64 = 0
    /// Whether the prompt's full blocks were offered to the prefix cache.
    var prefixPublished = false
    /// When it was first admitted, and how many prompt tokens the prefix cache gave it then.
    var firstAdmittedAt: ContinuousClock.Instant?
    var cachedPromptTokens = 0

    init(id: UInt64, request: EngineRequest, promptTokens: [Int32], maxTokens: Int, lease: AdapterLease?, tokenizer: Tokenizer?,
         continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) {
        self.id = id
        self.request = request
        self.continuation = continuation
        self.lease = lease
        tokens = promptTokens
        promptCount = promptTokens.count
        self.maxTokens = maxTokens
        sampler = Sampler(parameters: request.sampling)
        sampler.observe(promptTokens)
        decoder = tokenizer.map { StreamingDecoder(tokenizer: $0, skipSpecialTokens: true) }
        stops = StopStringMatcher(stopStrings: request.stopStrings)
        endTokens = request.ignoreEOS ? [] : (tokenizer?.endOfGenerationTokenIds ?? [])
        submittedAt = .now
    }

    var generatedCount: Int { tokens.count - promptCount }
    /// Tokens not yet in the KV cache (at least one while running: the next input).
    var pending: Int { tokens.count - (cache?.count ?? 0) }
    var usage: Usage {
        func seconds(_ t: ContinuousClock.Instant?) -> Double? {
            t.map { let d = $0 - submittedAt; return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        }
        return Usage(promptTokens: promptCount, completionTokens: generatedCount, cachedPromptTokens: cachedPromptTokens,
                     queueSeconds: seconds(firstAdmittedAt), timeToFirstTokenSeconds: seconds(firstTokenAt))
    }
}
