import Foundation
import Tessera

/// Builds OpenAI's response and chunk objects for one request.
struct ResponseContext: Sendable {
    let id: String
    let created: Int
    let model: String
    let kind: OpenAIGenerationRequest.Kind
    let request: OpenAIGenerationRequest
    let tokenizer: Tokenizer
    let promptTokens: Int

    func base(object: String) -> [String: Any] {
        ["id": id, "object": object, "created": created, "model": model, "system_fingerprint": NSNull()]
    }

    func usage(completionTokens: Int) -> [String: Any] {
        ["prompt_tokens": promptTokens, "completion_tokens": completionTokens, "total_tokens": promptTokens + completionTokens]
    }

    func tokenText(_ id: Int32) -> (String, [Int]) {
        let bytes = (try? tokenizer.tokenBytes(id)) ?? []
        return (String(decoding: bytes, as: UTF8.self), bytes.map(Int.init))
    }

    /// The `logprobs` object of a choice or chunk: chat's `{"content": [...]}` or the legacy
    /// completions shape.
    func logprobsObject(ids: [Int32], logprobs: [Float], top: [[TokenAlternative]], textOffset: Int = 0) -> [String: Any] {
        let n = min(ids.count, logprobs.count)
        switch kind {
        case .chat:
            var content: [[String: Any]] = []
            for i in 0..<n {
                let (text, bytes) = tokenText(ids[i])
                let alternatives: [[String: Any]] = (i < top.count ? top[i] : []).map { alt in
                    let (t, b) = tokenText(alt.tokenId)
                    return ["token": t, "logprob": Double(alt.logprob), "bytes": b]
                }
                content.append(["token": text, "logprob": Double(logprobs[i]), "bytes": bytes, "top_logprobs": alternatives])
            }
            return ["content": content, "refusal": NSNull()]
        case .completion:
            var tokens: [String] = [], values: [Double] = [], tops: [Any] = [], offsets: [Int] = []
            var offset = textOffset
            for i in 0..<n {
                let text = tokenText(ids[i]).0
                tokens.append(text)
                values.append(Double(logprobs[i]))
                offsets.append(offset)
                offset += text.utf8.count
                if request.topLogprobs > 0 {
                    var d: [String: Double] = [:]
                    for alt in i < top.count ? top[i] : [] { d[tokenText(alt.tokenId).0] = Double(alt.logprob) }
                    tops.append(d)
                } else {
                    tops.append(NSNull())
                }
            }
            return ["tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets]
        }
    }

    /// One streamed chunk for one choice.
    func chunk(choice: Int, role: Bool, text: String?, logprobs: [String: Any]?, finishReason: String?) -> [String: Any] {
        var c = base(object: kind == .chat ? "chat.completion.chunk" : "text_completion")
        var entry: [String: Any] = ["index": choice, "logprobs": logprobs ?? NSNull(), "finish_reason": finishReason ?? NSNull()]
        switch kind {
        case .chat:
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if let text { delta["content"] = text }
            entry["delta"] = delta
        case .completion:
            entry["text"] = text ?? ""
        }
        c["choices"] = [entry]
        if request.includeUsage { c["usage"] = NSNull() }
        return c
    }

    /// The whole (non-streamed) response.
    func completeBody(_ results: [TesseraServer.ChoiceResult]) -> Data {
        var body = base(object: kind == .chat ? "chat.completion" : "text_completion")
        var choices: [[String: Any]] = []
        for (i, r) in results.enumerated() {
            var entry: [String: Any] = ["index": i, "finish_reason": r.finishReason ?? "length"]
            entry["logprobs"] = request.logprobs ? logprobsObject(ids: r.tokenIds, logprobs: r.logprobs, top: r.top) : NSNull()
            switch kind {
            case .chat: entry["message"] = ["role": "assistant", "content": r.text, "refusal": NSNull()]
            case .completion: entry["text"] = r.text
            }
            choices.append(entry)
        }
        body["choices"] = choices
        body["usage"] = usage(completionTokens: results.reduce(0) { $0 + $1.completionTokens })
        return (try? JSONSerialization.data(withJSONObject: body, options: [.withoutEscapingSlashes])) ?? Data()
    }
}
