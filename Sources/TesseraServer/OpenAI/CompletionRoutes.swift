import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Tessera

/// `POST /v1/completions` and `POST /v1/chat/completions`, plain and streamed.
extension TesseraServer {
    /// One choice as it accumulates.
    struct ChoiceResult {
        var text = ""
        var tokenIds: [Int32] = []
        var logprobs: [Float] = []
        var top: [[TokenAlternative]] = []
        var finishReason: String?
        var completionTokens = 0
        var cachedPromptTokens = 0
        var queueSeconds: Double?
        var ttftSeconds: Double?
        /// Finished by a stop or the length limit (not cancelled, not failed): cacheable.
        var complete = false
    }

    static let cacheHeader = HTTPField.Name("x-tessera-cache")!

    func handleGeneration(_ request: Request, kind: OpenAIGenerationRequest.Kind) async throws -> Response {
        let started = ContinuousClock.now
        let requestId = "req-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20).lowercased()
        guard enter() else { throw APIError.unavailable("The server is shutting down; retry on another replica.", retryAfterSeconds: 1) }
        var streaming = false
        defer { if !streaming { leave() } }
        var request = request
        let principal = try await authenticate(request)
        // A tenant already at its request limits is refused before its body is read or tokenized.
        try limiter.precheck(principal)
        let body = try await collectJSON(&request)
        var g = try OpenAIGenerationRequest.parse(body, kind: kind, maxChoices: configuration.server.maxChoices)
        let adapter = try resolveModel(g.model, for: principal)
        let adapterVersion = adapter.flatMap { adapters.registration($0)?.version }
        let limits = principal.limits
        let layerVersion = try await applyPromptLayer(&g, for: principal)
        if let cap = limits.maxTokens, let asked = g.maxTokens, asked > cap {
            // Asked for: a 400. The endpoint's default (completions: 16): the tenant's cap.
            guard body["max_tokens"] == nil && body["max_completion_tokens"] == nil else {
                let field = kind == .chat && body["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
                throw APIError.badRequest("'\(field)' is \(asked), above this tenant's limit of \(cap) tokens per request.", param: field)
            }
            g.maxTokens = cap
        }
        let prompts = try g.prompts.map(tokenize)
        let limit = contextLimit
        let promptField = kind == .chat ? "messages" : "prompt"
        var engineRequests: [EngineRequest] = []
        var promptTokenTotal = 0
        for tokens in prompts {
            guard !tokens.isEmpty else { throw APIError.badRequest("The prompt is empty.", param: promptField) }
            if let bad = tokens.first(where: { Int($0) >= engine.model.config.vocabularySize }) {
                throw APIError.badRequest("Token id \(bad) is outside the vocabulary (0..<\(engine.model.config.vocabularySize)).", param: promptField)
            }
            guard tokens.count < limit else {
                throw APIError.badRequest("This model's maximum context length is \(limit) tokens. However, your \(kind == .chat ? "messages resulted in" : "prompt has") \(tokens.count) tokens.",
                                          param: promptField, code: "context_length_exceeded")
            }
            let maxTokens = g.maxTokens ?? min(limit - tokens.count, limits.maxTokens ?? Int.max)
            guard tokens.count + maxTokens <= limit else {
                let field = kind == .chat && body["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
                throw APIError.badRequest("This model's maximum context length is \(limit) tokens. However, you requested \(tokens.count + maxTokens) tokens (\(tokens.count) in the \(promptField), \(maxTokens) for the completion). Please reduce '\(field)'.",
                                          param: field, code: "context_length_exceeded")
            }
            promptTokenTotal += tokens.count
            for i in 0..<g.n {
                var sampling = g.sampling
                sampling.seed = g.seed.map { $0 &+ UInt64(i) } ?? UInt64.random(in: 0...UInt64.max)
                var er = EngineRequest(tenant: principal.tenant, adapter: adapter, prompt: .tokens(tokens), sampling: sampling,
                                       maxTokens: maxTokens, stopStrings: g.stop, ignoreEOS: g.ignoreEOS, logprobs: g.logprobs,
                                       topLogprobs: g.topLogprobs)
                er.mayUseAnyAdapter = principal.role == .admin
                engineRequests.append(er)
            }
        }
        // Limits before admission: a throttled tenant costs the engine nothing.
        let cost = engineRequests.reduce(0) { $0 + $1.maxTokens } + promptTokenTotal
        let monthly = limits.monthlyTokens != nil ? try await limiter.monthlyUsed(principal.tenantId, storage: storage) : nil
        let ticket = try limiter.admit(principal, tokens: cost, monthlyUsed: monthly)
        engine.setTenantPolicy(tenant: principal.tenant, weight: limits.weight, maxQueued: limits.queued)
        var ticketHeld = true
        defer { if ticketHeld { limiter.release(ticket, usedTokens: cost) } }
        let promptTotal = promptTokenTotal, modelName = g.model
        let ledgerRow = { @Sendable [self] (results: [ChoiceResult], finish: String, status: Int) -> UsageRecord in
            let completion = results.reduce(0) { $0 + $1.completionTokens }
            return UsageRecord(requestId: requestId, tenantId: principal.tenantId, keyId: principal.keyId, adapter: adapter == nil ? nil : modelName,
                               adapterVersion: adapterVersion, promptTokens: promptTotal,
                               cachedPromptTokens: results.reduce(0) { $0 + $1.cachedPromptTokens }, completionTokens: completion,
                               finishReason: finish, status: status, queueMs: results.compactMap(\.queueSeconds).max().map { $0 * 1000 },
                               ttftMs: results.compactMap(\.ttftSeconds).min().map { $0 * 1000 },
                               totalMs: Double(Self.milliseconds(since: started)) ?? 0, cachedResponse: false, promptLayerVersion: layerVersion)
        }
        let log = logger
        let fields: Logger.Metadata = ["request_id": "\(requestId)", "tenant": "\(principal.tenant)", "adapter": "\(adapter ?? "-")",
                                       "kind": "\(kind == .chat ? "chat" : "completion")", "stream": "\(g.stream)"]
        // The response cache: deterministic requests only, keyed within this tenant.
        let cacheKey = responseCacheKey(g, request: request, principal: principal, adapter: adapter, adapterVersion: adapterVersion,
                                        engineRequests: engineRequests)
        if let cacheKey {
            if let hit = responseCache.lookup(cacheKey) {
                ticketHeld = false
                limiter.release(ticket, usedTokens: 0)
                metrics.responseCache(hit: true, tenant: principal.tenant)
                var row = ledgerRow(hit.results, hit.results.first?.finishReason ?? "length", 200)
                row.cachedPromptTokens = 0
                row.queueMs = nil
                row.ttftMs = nil
                row.cachedResponse = true
                await ledger.record(row)
                var meta = fields
                meta["status"] = "200"
                meta["cache"] = "hit"
                meta["ms"] = "\(Self.milliseconds(since: started))"
                log.info("request", metadata: meta)
                var headers = HTTPFields()
                headers[.contentType] = g.stream ? "text/event-stream" : "application/json"
                if g.stream { headers[.cacheControl] = "no-cache" }
                headers[HTTPField.Name("x-request-id")!] = requestId
                headers[Self.cacheHeader] = "hit"
                guard g.stream else { return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: hit.body))) }
                let context = ResponseContext(id: hit.id, created: hit.created, model: g.model, kind: kind, request: g,
                                              tokenizer: tokenizer, promptTokens: promptTokenTotal)
                streaming = true
                return Response(status: .ok, headers: headers, body: ResponseBody { [self] writer in
                    defer { leave() }
                    try? await Self.replay(hit.results, context: context, writer: &writer)
                    try? await writer.finish(nil)
                })
            }
            metrics.responseCache(hit: false, tenant: principal.tenant)
        }
        let finishRow = { @Sendable [self] (row: UsageRecord) async in
            await ledger.record(row)
            limiter.release(ticket, usedTokens: row.promptTokens + row.completionTokens)
            if row.status == 200 { await noteMonthlyUsage(principal, tokens: row.promptTokens + row.completionTokens) }
        }
        let choices = ChoiceStreams(engine: engine, requests: engineRequests)
        // Wait for the first event, so a refusal (a full queue, an adapter that cannot load)
        // still gets its own status instead of a 200 stream that fails.
        let first = await choices.next()
        if case .failed(_, let error) = first {
            choices.cancel()
            var e = apiError(for: error, model: g.model)
            if case .tenantQueueFull = error as? EngineError, limits.queued != nil {
                e = TenantLimiter.rateLimited("Too many queued requests (limit \(limits.queued ?? 0)).", type: "requests", seconds: 1)
            }
            throw e
        }
        choices.pushBack(first)
        let id = (kind == .chat ? "chatcmpl-" : "cmpl-") + requestId.dropFirst(4)
        let context = ResponseContext(id: id, created: Int(Date().timeIntervalSince1970), model: g.model, kind: kind, request: g,
                                      tokenizer: tokenizer, promptTokens: promptTokenTotal)
        let cache = responseCache
        let remember = { @Sendable (results: [ChoiceResult], body: Data) in
            guard let cacheKey, results.allSatisfy(\.complete) else { return }
            cache.insert(cacheKey, body: body, results: results, id: context.id, created: context.created)
        }
        if g.stream {
            streaming = true
            ticketHeld = false
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            headers[HTTPField.Name("x-request-id")!] = requestId
            headers[Self.cacheHeader] = "miss"
            return Response(status: .ok, headers: headers, body: ResponseBody { [self] writer in
                defer { leave() }
                var status = "200"
                var results = Array(repeating: ChoiceResult(), count: context.request.n * context.request.prompts.count)
                var recorded = false
                do {
                    try await streamChoices(choices, context: context, writer: &writer, results: &results) { results, failed in
                        // The row is committed before the client reads [DONE].
                        recorded = true
                        await finishRow(ledgerRow(results, failed ? "error" : (results.first?.finishReason ?? "length"), failed ? 500 : 200))
                        if !failed { remember(results, context.completeBody(results)) }
                    }
                } catch {
                    choices.cancel()
                    status = "disconnected"
                    if !recorded {
                        recorded = true
                        // Billed for the tokens computed before the client went away.
                        await finishRow(ledgerRow(results, "disconnected", 499))
                    }
                }
                var meta = fields
                meta["status"] = "\(status)"
                meta["ms"] = "\(Self.milliseconds(since: started))"
                log.info("request", metadata: meta)
                try? await writer.finish(nil)
            })
        }
        var results = Array(repeating: ChoiceResult(), count: engineRequests.count)
        loop: while true {
            switch await choices.next() {
            case .end: break loop
            case .failed(_, let error):
                choices.cancel()
                let e = apiError(for: error, model: g.model)
                await finishRow(ledgerRow(results, "error", Int(e.status.code)))
                ticketHeld = false
                throw e
            case .event(let i, let event): Self.accumulate(event, into: &results[i])
            }
        }
        await finishRow(ledgerRow(results, results.first?.finishReason ?? "length", 200))
        ticketHeld = false
        let responseBody = context.completeBody(results)
        remember(results, responseBody)
        var meta = fields
        meta["status"] = "200"
        meta["ms"] = "\(Self.milliseconds(since: started))"
        log.info("request", metadata: meta)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[HTTPField.Name("x-request-id")!] = requestId
        headers[Self.cacheHeader] = "miss"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: responseBody)))
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> String {
        let d = ContinuousClock.now - start
        return String(format: "%.1f", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }

    static func accumulate(_ event: EngineEvent, into r: inout ChoiceResult) {
        switch event {
        case .delta(let text, let ids, let lps, let top):
            r.text += text
            r.tokenIds += ids
            if let lps { r.logprobs += lps }
            if let top { r.top += top }
        case .finished(let reason, let usage):
            r.finishReason = Self.finishReason(reason)
            r.completionTokens = usage.completionTokens
            r.cachedPromptTokens = usage.cachedPromptTokens
            r.queueSeconds = usage.queueSeconds
            r.ttftSeconds = usage.timeToFirstTokenSeconds
            r.complete = reason == .stop || reason == .length
        }
    }

    static func finishReason(_ r: EngineFinishReason) -> String {
        switch r {
        case .stop: "stop"
        case .length, .deadline, .cancelled: "length"
        }
    }

    /// The body as JSON, within the size limit (413 past it).
    func collectJSON(_ request: inout Request) async throws -> [String: JSONValue] {
        let limit = configuration.server.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit { throw Self.tooLarge(limit) }
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch let e as HTTPError where e.status == .contentTooLarge {
            throw Self.tooLarge(limit)
        }
        return try JSONValue.parseObject(Data(buffer.readableBytesView))
    }

    static func tooLarge(_ limit: Int) -> APIError {
        APIError(status: .contentTooLarge, message: "The request body is larger than the limit of \(limit) bytes.", type: "invalid_request_error",
                 code: "request_too_large")
    }

    func tokenize(_ prompt: OpenAIGenerationRequest.Prompt) throws -> [Int32] {
        switch prompt {
        case .tokens(let t): return t
        case .text(let s): return tokenizer.encode(s)
        case .chat(let messages):
            do { return tokenizer.encode(try tokenizer.makeChatTemplate().render(messages, addGenerationPrompt: true)) } catch {
                throw APIError.badRequest("The messages cannot be rendered with the model's chat template: \(error)", param: "messages")
            }
        }
    }

    /// The engine's refusals as OpenAI errors.
    func apiError(for error: Error, model: String) -> APIError {
        if let e = error as? APIError { return e }
        guard let e = error as? EngineError else { return .internalError("\(error)") }
        switch e {
        case .tenantQueueFull(_, let limit):
            return .unavailable("Too many queued requests for this tenant (limit \(limit)); retry later.", retryAfterSeconds: 1)
        case .notRunning: return .unavailable("The server is shutting down; retry on another replica.", retryAfterSeconds: 1)
        case .invalidPrompt(let s): return .badRequest("Invalid prompt: \(s)", param: "prompt")
        case .invalidParameter(let s): return .badRequest(s, param: nil)
        case .adapter(let a):
            switch a.reason {
            case .unknownAdapter: return .modelNotFound(model)
            case .noFreeSlot, .overBudget:
                return .unavailable("Every adapter slot is in use; retry shortly.", retryAfterSeconds: 1)
            default:
                logger.error("adapter load failed", metadata: ["adapter": "\(a.adapter)", "error": "\(a)"])
                return .unavailable("The adapter '\(model)' could not be loaded; an administrator must register it again.", retryAfterSeconds: 5)
            }
        case .internalFailure(let s): return .internalError(s)
        }
    }

    /// Writes the server-sent events of every choice, then the usage chunk and `[DONE]`.
    func streamChoices(_ choices: ChoiceStreams, context: ResponseContext, writer: inout any ResponseBodyWriter,
                       results: inout [ChoiceResult], beforeDone: ([ChoiceResult], Bool) async -> Void) async throws {
        func send(_ object: [String: Any]) async throws { try await Self.sendEvent(object, to: &writer) }
        var completionTokens = 0
        let count = context.request.n * context.request.prompts.count
        if context.kind == .chat {
            for i in 0..<count { try await send(context.chunk(choice: i, role: true, text: "", logprobs: nil, finishReason: nil)) }
        }
        loop: while true {
            switch await choices.next() {
            case .end: break loop
            case .failed(_, let error):
                // Streaming has started: the error goes as an event, which the openai client raises.
                try await send(apiError(for: error, model: context.model).body)
                choices.cancel()
                await beforeDone(results, true)
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                return
            case .event(let i, .delta(let text, let ids, let lps, let top)):
                // Tokens counted as they arrive: a client that leaves is billed for what was computed.
                if i < results.count {
                    results[i].completionTokens += ids.count
                    Self.accumulate(.delta(text: text, tokenIds: ids, logprobs: lps, top: top), into: &results[i])
                }
                guard !text.isEmpty || lps != nil else { continue }
                let logprobs = lps.map { context.logprobsObject(ids: ids, logprobs: $0, top: top ?? []) }
                try await send(context.chunk(choice: i, role: false, text: text, logprobs: logprobs, finishReason: nil))
            case .event(let i, .finished(let reason, let usage)):
                completionTokens += usage.completionTokens
                if i < results.count { Self.accumulate(.finished(reason: reason, usage: usage), into: &results[i]) }
                try await send(context.chunk(choice: i, role: false, text: nil, logprobs: nil, finishReason: Self.finishReason(reason)))
            }
        }
        if context.request.includeUsage {
            var usage = context.base(object: context.kind == .chat ? "chat.completion.chunk" : "text_completion")
            usage["choices"] = [Any]()
            usage["usage"] = context.usage(completionTokens: completionTokens)
            try await send(usage)
        }
        await beforeDone(results, false)
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
    }
}

extension TesseraServer {
    static func sendEvent(_ object: [String: Any], to writer: inout any ResponseBodyWriter) async throws {
        var data = Data("data: ".utf8)
        data += (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        data += Data("\n\n".utf8)
        try await writer.write(ByteBuffer(data: data))
    }

    /// A cached response as a stream: per choice its whole text in one chunk, then its finish.
    static func replay(_ results: [ChoiceResult], context: ResponseContext, writer: inout any ResponseBodyWriter) async throws {
        if context.kind == .chat {
            for i in results.indices { try await sendEvent(context.chunk(choice: i, role: true, text: "", logprobs: nil, finishReason: nil), to: &writer) }
        }
        for (i, r) in results.enumerated() {
            let logprobs = context.request.logprobs ? context.logprobsObject(ids: r.tokenIds, logprobs: r.logprobs, top: r.top) : nil
            if !r.text.isEmpty || logprobs != nil {
                try await sendEvent(context.chunk(choice: i, role: false, text: r.text, logprobs: logprobs, finishReason: nil), to: &writer)
            }
            try await sendEvent(context.chunk(choice: i, role: false, text: nil, logprobs: nil, finishReason: r.finishReason ?? "length"), to: &writer)
        }
        if context.request.includeUsage {
            var usage = context.base(object: context.kind == .chat ? "chat.completion.chunk" : "text_completion")
            usage["choices"] = [Any]()
            usage["usage"] = context.usage(completionTokens: results.reduce(0) { $0 + $1.completionTokens })
            try await sendEvent(usage, to: &writer)
        }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
    }

    /// The cache key of a deterministic request (temperature 0 or an explicit seed) when the
    /// cache is on for this tenant and the request did not ask to bypass it; nil otherwise.
    func responseCacheKey(_ g: OpenAIGenerationRequest, request: Request, principal: Principal, adapter: String?, adapterVersion: Int?,
                          engineRequests: [EngineRequest]) -> String? {
        guard responseCache.enabled, principal.limits.cache, request.headers[Self.cacheHeader]?.lowercased() != "bypass",
              g.sampling.temperature == 0 || g.seed != nil else { return nil }
        var sampling = g.sampling
        sampling.seed = g.seed ?? 0
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let parts: [String] = [
            adapter ?? "", "\(adapterVersion ?? 0)", g.kind == .chat ? "chat" : "completion",
            engineRequests.map { r -> String in
                let tokens: String
                if case .tokens(let t) = r.prompt { tokens = t.map(String.init).joined(separator: ",") } else { tokens = "?" }
                return "\(tokens)|\(r.maxTokens)"
            }.joined(separator: ";"),
            String(decoding: (try? encoder.encode(sampling)) ?? Data(), as: UTF8.self),
            g.stop.joined(separator: "\u{1}"), "\(g.n)", "\(g.logprobs)", "\(g.topLogprobs)", "\(g.ignoreEOS)",
        ]
        return ResponseCache.key(tenantId: principal.tenantId, parts: parts)
    }

    /// Puts the tenant's prompt layer (system prompt, then examples) before a chat request's
    /// messages, when the layer is unbound or bound to the requested adapter; its version.
    func applyPromptLayer(_ g: inout OpenAIGenerationRequest, for principal: Principal) async throws -> Int? {
        guard g.kind == .chat, case .chat(let messages)? = g.prompts.first,
              let layer = try await storage.promptLayer(tenant: principal.tenant), layer.adapter == nil || layer.adapter == g.model else { return nil }
        var prefix: [ChatMessage] = []
        if let system = layer.system, !system.isEmpty { prefix.append(ChatMessage(role: "system", content: system)) }
        prefix += layer.examples.map { ChatMessage(role: $0.role, content: $0.content) }
        g.prompts = [.chat(prefix + messages)]
        return layer.version
    }
}
