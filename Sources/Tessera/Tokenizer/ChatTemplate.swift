import Foundation

/// One turn of a conversation.
public struct ChatMessage: Sendable, Codable, Equatable {
    /// `"system"`, `"user"` or `"assistant"` (other roles are rendered the same way, by name).
    public var role: String
    /// The turn's text.
    public var content: String

    /// Creates a message.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The prompt formats we render.
public enum ChatTemplateFamily: String, Sendable, Codable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen2).
    case chatml
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3.x).
    case llama3
}

/// A model's chat template, recognised from its Jinja text and rendered natively, without a Jinja engine.
///
/// Recognition keys on the markers each family uses and reads the few variable parts from the template
/// text: ChatML's default system prompt (SmolLM2 and Qwen2 insert one when the conversation does not
/// start with a system message), and Llama 3.1+'s system preamble (knowledge cutoff and date).
/// Tool calls and other template features are not rendered.
public struct ChatTemplate: Sendable {
    /// Which format this template renders.
    public var family: ChatTemplateFamily
    /// The BOS token's text, which Llama 3 templates write at the start.
    public var bosToken: String?
    /// ChatML: the system prompt inserted when the first message is not a system message; `nil` for none.
    public var defaultSystemPrompt: String?
    /// Llama 3.1+: the `Cutting Knowledge Date: …` line of the system preamble; `nil` for Llama 3.0,
    /// which has no preamble.
    public var knowledgeCutoffLine: String?
    /// Llama 3.1+: the `Today Date:` value. `nil` means what the template does by default: its fixed
    /// `date_string`, or today's date (`26 Nov 2025` style) where it calls `strftime_now`.
    public var dateString: String?
    private var usesCurrentDate = false

    /// Recognises a Jinja chat template.
    /// - Parameters:
    ///   - template: the template text (GGUF `tokenizer.chat_template`, `tokenizer_config.json` `chat_template`).
    ///   - bosToken: the text of the BOS token (Llama 3 templates write it).
    /// - Throws: ``TokenizerError/missingChatTemplate`` for `nil`, ``TokenizerError/unknownChatTemplate(excerpt:)``
    ///   when neither ChatML nor Llama 3 markers are present.
    public init(template: String?, bosToken: String?) throws {
        guard let template, !template.isEmpty else { throw TokenizerError.missingChatTemplate }
        self.bosToken = bosToken
        if template.contains("<|im_start|>") {
            family = .chatml
            defaultSystemPrompt = Self.defaultChatMLSystemPrompt(in: template)
        } else if template.contains("<|start_header_id|>") {
            family = .llama3
            if let cutoff = Self.jinjaStringLiteral(in: template, startingWith: "Cutting Knowledge Date:") {
                knowledgeCutoffLine = cutoff.hasSuffix("\n") ? String(cutoff.dropLast()) : cutoff
                usesCurrentDate = template.contains("strftime_now")
                dateString = usesCurrentDate ? nil : Self.defaultDateString(in: template)
            }
        } else {
            throw TokenizerError.unknownChatTemplate(excerpt: String(template.prefix(80)))
        }
    }

    /// Creates a template of a known family directly.
    public init(family: ChatTemplateFamily, bosToken: String? = nil, defaultSystemPrompt: String? = nil,
                knowledgeCutoffLine: String? = nil, dateString: String? = nil) {
        self.family = family
        self.bosToken = bosToken
        self.defaultSystemPrompt = defaultSystemPrompt
        self.knowledgeCutoffLine = knowledgeCutoffLine
        self.dateString = dateString
    }

    /// The prompt text for `messages`, ending with the assistant's header when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        switch family {
        case .chatml: return renderChatML(messages, addGenerationPrompt: addGenerationPrompt)
        case .llama3: return renderLlama3(messages, addGenerationPrompt: addGenerationPrompt)
        }
    }

    private func renderChatML(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var text = ""
        if let system = defaultSystemPrompt, let first = messages.first, first.role != "system" {
            text += "<|im_start|>system\n\(system)<|im_end|>\n"
        }
        for message in messages {
            text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n"
        }
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }

    private func renderLlama3(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        func turn(_ role: String, _ content: String) -> String {
            "<|start_header_id|>\(role)<|end_header_id|>\n\n\(content)<|eot_id|>"
        }
        var text = ""
        var rest = messages[...]
        if let cutoff = knowledgeCutoffLine {
            // Llama 3.1+: BOS, then a system turn that always carries the preamble and any system message.
            var system = ""
            if let first = rest.first, first.role == "system" {
                system = Self.jinjaTrim(first.content)
                rest = rest.dropFirst()
            }
            let date = dateString ?? (usesCurrentDate ? Self.today() : "26 Jul 2024")
            text += bosToken ?? ""
            text += turn("system", "\(cutoff)\nToday Date: \(date)\n\n\(system)")
        } else if !rest.isEmpty {
            text += bosToken ?? ""  // Llama 3.0 writes BOS before the first message only
        }
        for message in rest { text += turn(message.role, Self.jinjaTrim(message.content)) }
        if addGenerationPrompt { text += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        return text
    }

    // MARK: - Reading the template

    /// SmolLM2 and Qwen2 write `'<|im_start|>system\n<default prompt><|im_end|>\n'` as one string literal,
    /// used when the first message is not a system message. Returns that prompt, or `nil` when the
    /// template has no such literal (plain ChatML).
    static func defaultChatMLSystemPrompt(in template: String) -> String? {
        var searchStart = template.startIndex
        let marker = "<|im_start|>system"
        while let found = template.range(of: marker, range: searchStart..<template.endIndex) {
            searchStart = found.upperBound
            guard found.lowerBound > template.startIndex else { continue }
            let quote = template[template.index(before: found.lowerBound)]
            guard quote == "'" || quote == "\"" else { continue }
            guard let literal = literalBody(template, from: found.lowerBound, quote: quote) else { continue }
            let unescaped = unescapeJinja(literal)
            let header = "<|im_start|>system\n"
            guard unescaped.hasPrefix(header), let end = unescaped.range(of: "<|im_end|>") else { continue }
            return String(unescaped[unescaped.index(unescaped.startIndex, offsetBy: header.count)..<end.lowerBound])
        }
        return nil
    }

    /// The Jinja string literal that contains `prefix` (unescaped), from `prefix` to the literal's end.
    static func jinjaStringLiteral(in template: String, startingWith prefix: String) -> String? {
        guard let found = template.range(of: prefix) else { return nil }
        // Find the quote that opened the literal: the nearest quote before `prefix`.
        var index = found.lowerBound
        while index > template.startIndex {
            index = template.index(before: index)
            let character = template[index]
            if character == "'" || character == "\"" {
                guard let body = literalBody(template, from: found.lowerBound, quote: character) else { return nil }
                return unescapeJinja(body)
            }
        }
        return nil
    }

    /// The raw text from `start` up to the unescaped `quote` that closes the literal.
    private static func literalBody(_ template: String, from start: String.Index, quote: Character) -> String? {
        var body = ""
        var index = start
        var escaped = false
        while index < template.endIndex {
            let character = template[index]
            if escaped {
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == quote {
                return body
            }
            body.append(character)
            index = template.index(after: index)
        }
        return nil
    }

    /// Jinja (Python) string escapes: `\n`, `\t`, `\r`, `\\`, `\'`, `\"`.
    private static func unescapeJinja(_ text: String) -> String {
        var result = ""
        var escaped = false
        for character in text {
            if escaped {
                switch character {
                case "n": result.append("\n")
                case "t": result.append("\t")
                case "r": result.append("\r")
                default: result.append(character)
                }
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// The template's fixed `set date_string = "…"`, if any.
    private static func defaultDateString(in template: String) -> String? {
        guard let found = template.range(of: "set date_string = ") else { return nil }
        let rest = template[found.upperBound...]
        guard let quote = rest.first, quote == "\"" || quote == "'" else { return nil }
        return literalBody(template, from: template.index(after: found.upperBound), quote: quote).map(unescapeJinja)
    }

    /// Jinja's `trim`: Python's `str.strip()`, which also strips U+001C–U+001F.
    static func jinjaTrim(_ text: String) -> String {
        func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
        }
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    /// Today's date as Llama 3.2's template writes it (`strftime("%d %b %Y")`), in the C locale.
    private static func today() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "dd MMM yyyy"
        return formatter.string(from: Date())
    }
}
