import Foundation
import Tessera

/// A completions or chat completions request, checked field by field: what the engine runs.
struct OpenAIGenerationRequest: Sendable {
    enum Kind: Sendable { case completion, chat }
    enum Prompt: Sendable {
        case text(String)
        case tokens([Int32])
        case chat([ChatMessage])
    }

    var kind: Kind
    var model: String
    var prompts: [Prompt]
    var maxTokens: Int?
    var sampling = SamplingParameters()
    var seed: UInt64?
    var stop: [String] = []
    var n = 1
    var logprobs = false
    var topLogprobs = 0
    var stream = false
    var includeUsage = false
    var ignoreEOS = false
    /// `user` and `safety_identifier`: kept for audit, never change the output.
    var endUser: String?

    /// Fields both endpoints honour.
    static let commonFields: Set<String> = [
        "model", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "stream_options", "user", "safety_identifier",
        "presence_penalty", "frequency_penalty", "logprobs", "top_k", "min_p", "repetition_penalty", "ignore_eos",
    ]
    /// Accepted and ignored: they change nothing about the output.
    static let ignoredFields: Set<String> = ["store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key"]
    static let chatFields: Set<String> = ["messages", "max_completion_tokens", "top_logprobs", "response_format"]
    static let completionFields: Set<String> = ["prompt", "echo", "best_of", "suffix", "logit_bias"]
    /// Known OpenAI fields Tessera does not do: a 400 that says so, never a silent ignore.
    static let unsupportedFields: [String: String] = [
        "tools": "tool calling", "tool_choice": "tool calling", "functions": "function calling", "function_call": "function calling",
        "audio": "audio output", "modalities": "output modalities other than text", "prediction": "predicted outputs",
        "web_search_options": "web search", "reasoning_effort": "reasoning effort", "logit_bias": "logit_bias", "verbosity": "verbosity",
    ]

    static func parse(_ body: [String: JSONValue], kind: Kind, maxChoices: Int) throws(APIError) -> OpenAIGenerationRequest {
        let f = RequestFields(body)
        let allowed = commonFields.union(ignoredFields).union(kind == .chat ? chatFields : completionFields)
        for key in body.keys.sorted() {
            if let what = unsupportedFields[key] {
                // An empty logit_bias changes nothing.
                if key == "logit_bias", case .object(let o) = body[key], o.isEmpty { continue }
                if body[key] == .null { continue }
                throw .badRequest("'\(key)' is not supported: Tessera does not do \(what).", param: key, code: "unsupported_parameter")
            }
            guard allowed.contains(key) else { throw .badRequest("Unrecognized request argument supplied: '\(key)'.", param: key, code: "unknown_parameter") }
        }
        guard let model = try f.string("model") else { throw .badRequest("'model' is required.", param: "model") }
        var r = OpenAIGenerationRequest(kind: kind, model: model, prompts: [])
        switch kind {
        case .chat:
            r.prompts = [.chat(try parseMessages(body["messages"]))]
            if let format = body["response_format"], format != .null {
                guard case .object(let o) = format, o["type"] == .string("text"), o.count == 1 else {
                    throw .badRequest("'response_format' other than {\"type\": \"text\"} is not supported.", param: "response_format", code: "unsupported_parameter")
                }
            }
            let legacy = try f.integer("max_tokens")
            r.maxTokens = try f.integer("max_completion_tokens") ?? legacy
            r.logprobs = try f.bool("logprobs") ?? false
            if let top = try f.integer("top_logprobs", in: 0...20) {
                guard r.logprobs else { throw .badRequest("'top_logprobs' needs 'logprobs' set to true.", param: "top_logprobs") }
                r.topLogprobs = top
            }
        case .completion:
            r.prompts = try parsePrompt(body["prompt"])
            r.maxTokens = try f.integer("max_tokens") ?? 16  // OpenAI's documented default for completions
            if let lp = try f.integer("logprobs", in: 0...5) { r.logprobs = true; r.topLogprobs = lp }
            if try f.bool("echo") == true { throw .badRequest("'echo' is not supported.", param: "echo", code: "unsupported_parameter") }
            if let bestOf = try f.integer("best_of"), bestOf != 1 { throw .badRequest("'best_of' other than 1 is not supported.", param: "best_of", code: "unsupported_parameter") }
            if let suffix = try f.string("suffix"), !suffix.isEmpty { throw .badRequest("'suffix' is not supported.", param: "suffix", code: "unsupported_parameter") }
        }
        let maxTokensField = kind == .chat && body["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
        if let m = r.maxTokens, m < 1 { throw .badRequest("'\(maxTokensField)' must be at least 1, got \(m).", param: maxTokensField) }
        r.sampling.temperature = Float(try f.number("temperature", in: 0...2) ?? 1)
        r.sampling.topP = Float(try f.number("top_p", in: 0...1) ?? 1)
        if r.sampling.topP == 0 { r.sampling.topP = Float.leastNormalMagnitude }  // OpenAI accepts 0: only the top token
        r.sampling.presencePenalty = Float(try f.number("presence_penalty", in: -2...2) ?? 0)
        r.sampling.frequencyPenalty = Float(try f.number("frequency_penalty", in: -2...2) ?? 0)
        r.sampling.topK = try f.integer("top_k", in: -1...1_000_000).map { max($0, 0) } ?? 0  // vLLM: -1 = off
        r.sampling.minP = Float(try f.number("min_p", in: 0...1) ?? 0)
        r.sampling.repetitionPenalty = Float(try f.number("repetition_penalty", in: 0.01...10) ?? 1)
        if let seed = try f.integer("seed", in: Int.min...Int.max) { r.seed = UInt64(bitPattern: Int64(seed)) }
        r.n = try f.integer("n", in: 1...maxChoices) ?? 1
        r.ignoreEOS = try f.bool("ignore_eos") ?? false
        r.stream = try f.bool("stream") ?? false
        r.stop = try parseStop(body["stop"])
        if let options = body["stream_options"], options != .null {
            guard case .object(let o) = options else { throw f.wrongType("stream_options", "an object", options) }
            guard r.stream else { throw .badRequest("'stream_options' is only allowed when 'stream' is true.", param: "stream_options") }
            let so = RequestFields(o, prefix: "stream_options.")
            for key in o.keys where key != "include_usage" && key != "include_obfuscation" {
                throw .badRequest("Unrecognized request argument supplied: 'stream_options.\(key)'.", param: "stream_options.\(key)", code: "unknown_parameter")
            }
            r.includeUsage = try so.bool("include_usage") ?? false
            _ = try so.bool("include_obfuscation")
        }
        let user = try f.string("user")
        r.endUser = try f.string("safety_identifier") ?? user
        return r
    }

    static func parseStop(_ value: JSONValue?) throws(APIError) -> [String] {
        switch value {
        case nil, .null?: return []
        case .string(let s)?: return s.isEmpty ? [] : [s]
        case .array(let items)?:
            guard items.count <= 4 else { throw .badRequest("'stop' takes at most 4 sequences, got \(items.count).", param: "stop") }
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item else { throw .badRequest("'stop[\(i)]' must be a string, got \(item.typeName).", param: "stop") }
                guard !s.isEmpty else { throw .badRequest("'stop[\(i)]' must not be empty.", param: "stop") }
                out.append(s)
            }
            return out
        case let v?: throw .badRequest("'stop' must be a string or an array of strings, got \(v.typeName).", param: "stop")
        }
    }

    static func parsePrompt(_ value: JSONValue?) throws(APIError) -> [Prompt] {
        func tokens(_ items: [JSONValue], _ field: String) throws(APIError) -> [Int32] {
            var out: [Int32] = []
            for item in items {
                guard case .number(let n) = item, n == n.rounded(), n >= 0, n < 2_147_483_647 else {
                    throw .badRequest("'\(field)' must hold token ids (non-negative integers).", param: "prompt")
                }
                out.append(Int32(n))
            }
            return out
        }
        switch value {
        case nil, .null?: throw .badRequest("'prompt' is required.", param: "prompt")
        case .string(let s)?: return [.text(s)]
        case .array(let items)?:
            guard !items.isEmpty else { throw .badRequest("'prompt' must not be an empty list.", param: "prompt") }
            if case .number = items[0] { return [.tokens(try tokens(items, "prompt"))] }
            var out: [Prompt] = []
            for (i, item) in items.enumerated() {
                switch item {
                case .string(let s): out.append(.text(s))
                case .array(let t): out.append(.tokens(try tokens(t, "prompt[\(i)]")))
                default: throw .badRequest("'prompt[\(i)]' must be a string, got \(item.typeName).", param: "prompt")
                }
            }
            return out
        case let v?: throw .badRequest("'prompt' must be a string or an array of strings, got \(v.typeName).", param: "prompt")
        }
    }

    static func parseMessages(_ value: JSONValue?) throws(APIError) -> [ChatMessage] {
        guard let value, value != .null else { throw .badRequest("'messages' is required.", param: "messages") }
        guard case .array(let items) = value else { throw .badRequest("'messages' must be an array, got \(value.typeName).", param: "messages") }
        guard !items.isEmpty else { throw .badRequest("'messages' must not be empty.", param: "messages") }
        var out: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            let field = "messages[\(i)]"
            guard case .object(let o) = item else { throw .badRequest("'\(field)' must be an object, got \(item.typeName).", param: field) }
            for key in o.keys.sorted() where key != "role" && key != "content" {
                throw .badRequest("'\(field).\(key)' is not supported.", param: "\(field).\(key)", code: "unsupported_parameter")
            }
            guard case .string(var role)? = o["role"] else { throw .badRequest("'\(field).role' must be a string.", param: "\(field).role") }
            if role == "developer" { role = "system" }
            guard ["system", "user", "assistant"].contains(role) else {
                throw .badRequest("'\(field).role' must be one of system, developer, user, assistant; got '\(role)'.", param: "\(field).role")
            }
            let content: String
            switch o["content"] {
            case .string(let s)?: content = s
            case .array(let parts)?:
                var text = ""
                for (j, part) in parts.enumerated() {
                    guard case .object(let p) = part, p["type"] == .string("text"), case .string(let t)? = p["text"] else {
                        throw .badRequest("'\(field).content[\(j)]' must be a text part {\"type\": \"text\", \"text\": ...}; other content is not supported.",
                                          param: "\(field).content")
                    }
                    text += t
                }
                content = text
            default: throw .badRequest("'\(field).content' must be a string or an array of text parts.", param: "\(field).content")
            }
            out.append(ChatMessage(role: role, content: content))
        }
        return out
    }
}
