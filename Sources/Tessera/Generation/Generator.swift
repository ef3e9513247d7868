import Foundation

/// Why a generation ended.
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-generation token or a stop string.
    case stop
    /// `maxTokens` reached.
    case length
}

/// One generation: prompt tokens in, tokens out, for a single sequence.
public struct GenerationRequest: Sendable {
    public var promptTokens: [Int32]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Keep generating past end-of-generation tokens (up to `maxTokens`).
    public var ignoreEOS: Bool
    /// Generation stops when the text contains one of these; the text is cut before it.
    public var stopStrings: [String]
    /// The LoRA adapter applied to every row of this sequence (nil: the base model).
    public var adapter: LoRAAdapter?

    public init(promptTokens: [Int32], maxTokens: Int, sampling: SamplingParameters = .greedy,
                ignoreEOS: Bool = false, stopStrings: [String] = [], adapter: LoRAAdapter? = nil) {
        self.adapter = adapter
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.ignoreEOS = ignoreEOS
        self.stopStrings = stopStrings
    }
}

/// What a generation produced, with its timings.
public struct GenerationResult: Sendable {
    /// Generated token ids (an end-of-generation token that stopped it included).
    public var tokenIds: [Int32]
    /// Generated text (without end-of-generation tokens; cut before a stop string).
    public var text: String
    public var finishReason: FinishReason
    public var promptTokenCount: Int
    /// Seconds spent on the prompt (prefill), and on the generated tokens after the first.
    public var prefillSeconds: Double
    public var decodeSeconds: Double
}

/// Runs single-sequence generation and scoring synchronously on the calling thread.
/// (The engine batches many sequences; this is the one-request path it builds on.)
public final class Generator: @unchecked Sendable {
    public let model: LlamaModel
    public let tokenizer: Tokenizer?
    private let scratch: ForwardScratch
    private var batch = ForwardBatch()
    /// Rows per forward pass during prefill.
    public var prefillChunk = 512

    public init(model: LlamaModel, tokenizer: Tokenizer?) {
        self.model = model
        self.tokenizer = tokenizer
        scratch = model.makeScratch()
    }

    /// Prefills `tokens` into `cache` from its current length; returns the logits of the last token.
    func prefill(_ tokens: ArraySlice<Int32>, cache: KVCache, adapter: LoRAAdapter?) throws(InferenceError) -> UnsafeMutablePointer<Float> {
        var start = tokens.startIndex
        var logits: UnsafeMutablePointer<Float>?
        while start < tokens.endIndex {
            let end = min(start + prefillChunk, tokens.endIndex)
            batch.removeAll()
            for i in start..<end {
                batch.append(token: tokens[i], position: cache.count + (i - start), sequence: 0, wantLogits: i == end - 1,
                             adapter: adapter == nil ? nil : 0)
            }
            logits = try model.forward(batch, caches: [cache], adapters: adapter.map { [$0] } ?? [], scratch: scratch).pointer
            start = end
        }
        guard let logits else { throw InferenceError.invalidBatch("no prompt tokens") }
        return logits
    }

    /// Generates from `request`, calling `onText` with each piece of text as it becomes final
    /// (partial UTF-8 characters and possible stop-string prefixes are held back). Return false
    /// from `onText` to stop early.
    public func generate(_ request: GenerationRequest, onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        try request.sampling.validate()
        guard !request.promptTokens.isEmpty else { throw GenerationError.emptyPrompt }
        let context = model.config.contextLength
        guard request.promptTokens.count < context else { throw GenerationError.promptTooLong(tokens: request.promptTokens.count, context: context) }
        let maxTokens = max(0, min(request.maxTokens, context - request.promptTokens.count))
        let cache = try model.makeCache(capacity: request.promptTokens.count + maxTokens)
        var sampler = Sampler(parameters: request.sampling)
        sampler.observe(request.promptTokens)
        let endTokens = request.ignoreEOS ? [] : (tokenizer?.endOfGenerationTokenIds ?? [])
        var decoder = tokenizer.map { StreamingDecoder(tokenizer: $0, skipSpecialTokens: true) }
        var stops = StopStringMatcher(stopStrings: request.stopStrings)

        var generated: [Int32] = []
        generated.reserveCapacity(maxTokens)
        var finish = FinishReason.length
        let t0 = DispatchTime.now().uptimeNanoseconds
        var tPrefill = t0
        if maxTokens > 0 {
            let adapters = request.adapter.map { [$0] } ?? []
            var logits = try prefill(request.promptTokens[...], cache: cache, adapter: request.adapter)
            tPrefill = DispatchTime.now().uptimeNanoseconds
            let vocab = model.config.vocabularySize
            while generated.count < maxTokens {
                let token = sampler.sample(logits: logits, count: vocab)
                generated.append(token)
                if endTokens.contains(token) { finish = .stop; break }
                if decoder != nil {
                    let piece = try decoder!.append(token)
                    let (emit, stopped) = stops.feed(piece)
                    if !emit.isEmpty && !onText(emit) { finish = .stop; break }
                    if stopped { finish = .stop; break }
                }
                if generated.count == maxTokens { break }
                batch.removeAll()
                batch.append(token: token, position: cache.count, sequence: 0, wantLogits: true, adapter: adapters.isEmpty ? nil : 0)
                logits = try model.forward(batch, caches: [cache], adapters: adapters, scratch: scratch).pointer
            }
        }
        if finish == .length || !stops.stopped {
            if decoder != nil {
                let (emit, _) = stops.feed(decoder!.finish())
                if !emit.isEmpty { _ = onText(emit) }
            }
            let rest = stops.flush()
            if !rest.isEmpty { _ = onText(rest) }
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(tokenIds: generated, text: stops.text, finishReason: finish,
                                promptTokenCount: request.promptTokens.count,
                                prefillSeconds: Double(tPrefill - t0) / 1e9, decodeSeconds: Double(t1 - tPrefill) / 1e9)
    }

    /// Teacher-forced log-probabilities: element i is log p(tokens[i+1] | tokens[0...i]).
    public func score(_ tokens: [Int32], adapter: LoRAAdapter? = nil) throws -> [Float] {
        guard tokens.count >= 1 else { throw GenerationError.emptyPrompt }
        let context = model.config.contextLength
        guard tokens.count <= context else { throw GenerationError.promptTooLong(tokens: tokens.count, context: context) }
        let cache = try model.makeCache(capacity: tokens.count)
        let vocab = model.config.vocabularySize
        var result: [Float] = []
        result.reserveCapacity(tokens.count - 1)
        let chunk = 256
        var start = 0
        while start < tokens.count - 1 {
            let end = min(start + chunk, tokens.count - 1)
            batch.removeAll()
            for i in start..<end { batch.append(token: tokens[i], position: i, sequence: 0, wantLogits: true, adapter: adapter == nil ? nil : 0) }
            let logits = try model.forward(batch, caches: [cache], adapters: adapter.map { [$0] } ?? [], scratch: scratch)
            for (j, i) in (start..<end).enumerated() {
                let row = logits.pointer + j * vocab
                result.append(Self.logSoftmax(row, count: vocab, at: Int(tokens[i + 1])))
            }
            start = end
        }
        return result
    }

    /// log softmax(row)[index], computed in double.
    static func logSoftmax(_ row: UnsafePointer<Float>, count: Int, at index: Int) -> Float {
        var maxValue = row[0]
        for i in 1..<count where row[i] > maxValue { maxValue = row[i] }
        var sum: Double = 0
        for i in 0..<count { sum += exp(Double(row[i] - maxValue)) }
        return Float(Double(row[index] - maxValue) - log(sum))
    }
}

/// Finds stop strings in streamed text, holding back any tail that could begin one.
struct StopStringMatcher {
    let stopStrings: [String]
    private(set) var text = ""      // all accepted text (cut before a stop string once found)
    private var emitted = 0          // characters of `text` already handed out
    private(set) var stopped = false

    init(stopStrings: [String]) { self.stopStrings = stopStrings.filter { !$0.isEmpty } }

    /// Adds a piece; returns what can be emitted now and whether a stop string was found.
    mutating func feed(_ piece: String) -> (String, Bool) {
        guard !stopped else { return ("", true) }
        text += piece
        if stopStrings.isEmpty { return (takeUpTo(text.count), false) }
        for s in stopStrings {
            if let r = text.range(of: s) {
                text = String(text[..<r.lowerBound])
                stopped = true
                return (takeUpTo(text.count), true)
            }
        }
        // Hold back the longest suffix that is a prefix of a stop string.
        var hold = 0
        for s in stopStrings {
            for k in stride(from: min(s.count - 1, text.count), to: 0, by: -1) where text.hasSuffix(String(s.prefix(k))) {
                hold = max(hold, k)
                break
            }
        }
        return (takeUpTo(text.count - hold), false)
    }

    /// Everything not yet emitted.
    mutating func flush() -> String { takeUpTo(text.count) }

    private mutating func takeUpTo(_ end: Int) -> String {
        guard end > emitted else { return "" }
        let start = text.index(text.startIndex, offsetBy: emitted)
        let stop = text.index(text.startIndex, offsetBy: end)
        emitted = end
        return String(text[start..<stop])
    }
}
