import Foundation

extension TokenizerSpec {
    /// Reads a Hugging Face `tokenizer.json` (a byte-level `BPE` model; pre-tokenizer `ByteLevel`, or a
    /// `Sequence` of `Digits`/`Split`/`ByteLevel`; `added_tokens`) and, if given, its `tokenizer_config.json`
    /// (`chat_template`, `add_bos_token`, `add_eos_token`, `bos_token`, `eos_token`, `unk_token`, `pad_token`).
    /// When the config has no chat template, a `chat_template.jinja` beside it is used.
    ///
    /// Added tokens become control tokens (type 3) when marked `special`, user-defined (type 4) otherwise.
    /// BOS/EOS addition comes from a `TemplateProcessing` post-processor unless the config says otherwise.
    /// - Throws: ``TokenizerError/malformedTokenizerJSON(path:field:reason:)`` naming the field, including
    ///   for features we do not implement (BPE dropout, subword prefixes, `lstrip`/`rstrip` added tokens);
    ///   ``TokenizerError/unsupportedModel(_:)`` for SentencePiece-style BPE (`byte_fallback`, no `ByteLevel`);
    ///   ``TokenizerError/unsupportedPreTokenizer(_:)`` for an unknown split pattern.
    public init(tokenizerJSON url: URL, tokenizerConfig configURL: URL? = nil) throws {
        let reader = JSONFieldReader(path: url.path)
        let root = try reader.object(at: url)
        guard let model = root["model"] as? [String: Any] else { throw reader.error("model", "missing or not an object") }
        let modelType = model["type"] as? String ?? "BPE"
        guard modelType == "BPE" else { throw TokenizerError.unsupportedModel("tokenizer.json model.type \(modelType)") }
        if model["byte_fallback"] as? Bool == true {
            throw TokenizerError.unsupportedModel("BPE with byte_fallback (SentencePiece-style)")
        }
        if let dropout = model["dropout"] as? Double, dropout > 0 {
            throw reader.error("model.dropout", "BPE dropout \(dropout) is not supported (inference needs none)")
        }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = model[field] as? String, !value.isEmpty {
                throw reader.error("model.\(field)", "'\(value)' is not supported by byte-level BPE")
            }
        }

        // Vocabulary: model.vocab plus added_tokens, laid out by id.
        guard let vocab = model["vocab"] as? [String: Any] else { throw reader.error("model.vocab", "missing or not an object") }
        var tokenById: [Int: String] = [:]
        tokenById.reserveCapacity(vocab.count)
        for (piece, value) in vocab {
            guard let id = jsonInteger(value), id >= 0 else {
                throw reader.error("model.vocab[\(piece)]", "id is not a non-negative integer")
            }
            tokenById[id] = piece
        }
        var typeById: [Int: Int32] = [:]
        let addedTokens = root["added_tokens"] as? [[String: Any]] ?? []
        for (index, added) in addedTokens.enumerated() {
            let field = "added_tokens[\(index)]"
            guard let id = jsonInteger(added["id"]), id >= 0, let content = added["content"] as? String else {
                throw reader.error(field, "needs an integer id and a string content")
            }
            for flag in ["lstrip", "rstrip", "single_word"] where added[flag] as? Bool == true {
                throw reader.error("\(field).\(flag)", "added token '\(content)' asks for \(flag), which is not supported")
            }
            tokenById[id] = content
            typeById[id] = added["special"] as? Bool == true ? TokenType.control : TokenType.userDefined
        }
        let size = (tokenById.keys.max() ?? -1) + 1
        var tokens = [String](repeating: "", count: size)
        var types = [Int32](repeating: TokenType.normal, count: size)
        for id in 0..<size {
            if let piece = tokenById[id] { tokens[id] = piece } else { types[id] = TokenType.unused }
        }
        for (id, type) in typeById { types[id] = type }

        guard let rawMerges = model["merges"] as? [Any] else { throw reader.error("model.merges", "missing or not an array") }
        var merges: [String] = []
        merges.reserveCapacity(rawMerges.count)
        for (index, rule) in rawMerges.enumerated() {
            if let text = rule as? String {
                merges.append(text)
            } else if let pair = rule as? [String], pair.count == 2 {
                merges.append(pair[0] + " " + pair[1])
            } else {
                throw reader.error("model.merges[\(index)]", "expected \"left right\" or [left, right]")
            }
        }

        // Normalizer: none, or NFC.
        var normalizesToNFC = false
        if let normalizer = root["normalizer"] as? [String: Any] {
            let type = normalizer["type"] as? String ?? "?"
            let children = normalizer["normalizers"] as? [Any]
            if type == "NFC" {
                normalizesToNFC = true
            } else if !(type == "Sequence" && children?.isEmpty == true) {
                throw reader.error("normalizer", "normalizer '\(type)' is not supported (only none or NFC)")
            }
        }

        var splitting = PreTokenizerReading(reader: reader)
        try splitting.read(root["pre_tokenizer"], field: "pre_tokenizer")
        let decoderType = (root["decoder"] as? [String: Any])?["type"] as? String
        guard splitting.sawByteLevel || decoderType == "ByteLevel" else {
            throw TokenizerError.unsupportedModel("BPE without ByteLevel (SentencePiece-style)")
        }
        let preTokenizer = PreTokenizer(steps: splitting.steps)
        guard let preTokenizerName = preTokenizer.ggufName else {
            throw TokenizerError.unsupportedPreTokenizer("tokenizer.json pre-tokenizer steps \(splitting.steps)")
        }

        // BOS/EOS from a TemplateProcessing post-processor.
        var template = TemplateReading()
        template.read(root["post_processor"])

        self.init(
            model: "gpt2", tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: preTokenizerName,
            bosTokenId: template.leadingId, eosTokenId: template.trailingId,
            addBOS: template.leadingId != nil, addEOS: template.trailingId != nil,
            ignoreMerges: model["ignore_merges"] as? Bool ?? false, normalizesToNFC: normalizesToNFC)
        if let configURL { try applyTokenizerConfig(at: configURL) }
    }

    /// Takes chat template, BOS/EOS choices and special token names from `tokenizer_config.json`.
    private mutating func applyTokenizerConfig(at url: URL) throws {
        let reader = JSONFieldReader(path: url.path)
        let config = try reader.object(at: url)
        func tokenId(_ field: String) throws -> Int32?? {
            guard let value = config[field], !(value is NSNull) else { return .none }
            let content = (value as? String) ?? ((value as? [String: Any])?["content"] as? String)
            guard let content else { throw reader.error(field, "expected a string or an object with 'content'") }
            guard let index = tokens.firstIndex(of: content) else {
                throw reader.error(field, "token '\(content)' is not in the vocabulary")
            }
            return .some(Int32(index))
        }
        if let id = try tokenId("bos_token") { bosTokenId = id }
        if let id = try tokenId("eos_token") { eosTokenId = id }
        if let id = try tokenId("unk_token") { unknownTokenId = id }
        if let id = try tokenId("pad_token") { paddingTokenId = id }
        if let add = config["add_bos_token"] as? Bool { addBOS = add }
        if let add = config["add_eos_token"] as? Bool { addEOS = add }

        switch config["chat_template"] {
        case let text as String:
            chatTemplate = text
        case let named as [[String: Any]]:
            let chosen = named.first { $0["name"] as? String == "default" } ?? named.first
            chatTemplate = chosen?["template"] as? String
        case nil, is NSNull:
            let jinja = url.deletingLastPathComponent().appendingPathComponent("chat_template.jinja")
            chatTemplate = try? String(contentsOf: jinja, encoding: .utf8)
        default:
            throw reader.error("chat_template", "expected a string or a list of {name, template}")
        }
    }
}

extension Tokenizer {
    /// Builds a tokenizer from a Hugging Face `tokenizer.json` and optional `tokenizer_config.json`;
    /// see ``TokenizerSpec/init(tokenizerJSON:tokenizerConfig:)`` for what is read.
    public convenience init(tokenizerJSON url: URL, tokenizerConfig: URL? = nil) throws {
        try self.init(spec: TokenizerSpec(tokenizerJSON: url, tokenizerConfig: tokenizerConfig))
    }
}

/// Reads a JSON file and names the file and field in every error.
private struct JSONFieldReader {
    let path: String

    func object(at url: URL) throws -> [String: Any] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw self.error("", "cannot read the file: \(error.localizedDescription)")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw self.error("", "not valid JSON: \(error.localizedDescription)")
        }
        guard let object = parsed as? [String: Any] else { throw self.error("", "the top level is not an object") }
        return object
    }

    func error(_ field: String, _ reason: String) -> TokenizerError {
        .malformedTokenizerJSON(path: path, field: field.isEmpty ? "(root)" : field, reason: reason)
    }
}

/// Maps a `tokenizer.json` pre-tokenizer tree onto ``PreTokenizer`` steps.
private struct PreTokenizerReading {
    let reader: JSONFieldReader
    var steps: [PreTokenizer.Step] = []
    var sawByteLevel = false

    /// The split patterns we implement, exactly as Hugging Face files spell them.
    private static let knownPatterns: [String: PreTokenizer.Step] = [
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3(maxDigits: 3),
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3(maxDigits: 1),
    ]

    init(reader: JSONFieldReader) { self.reader = reader }

    mutating func read(_ node: Any?, field: String) throws {
        guard let node, !(node is NSNull) else { return }
        guard let object = node as? [String: Any], let type = object["type"] as? String else {
            throw reader.error(field, "expected an object with a 'type'")
        }
        switch type {
        case "Sequence":
            let children = object["pretokenizers"] as? [Any] ?? []
            for (index, child) in children.enumerated() { try read(child, field: "\(field).pretokenizers[\(index)]") }
        case "ByteLevel":
            sawByteLevel = true
            if object["add_prefix_space"] as? Bool == true {
                throw reader.error("\(field).add_prefix_space", "ByteLevel add_prefix_space=true is not supported")
            }
            if object["use_regex"] as? Bool ?? true { steps.append(.gpt2) }
        case "Digits":
            steps.append(.digits(individual: object["individual_digits"] as? Bool ?? false))
        case "Split":
            let pattern = object["pattern"] as? [String: Any]
            guard let regex = (pattern?["Regex"] as? String) ?? (pattern?["String"] as? String) else {
                throw reader.error("\(field).pattern", "expected {\"Regex\": ...} or {\"String\": ...}")
            }
            let behavior = object["behavior"] as? String ?? "Isolated"
            guard behavior == "Isolated", object["invert"] as? Bool != true else {
                throw reader.error("\(field).behavior", "only Isolated, non-inverted splits are supported (got \(behavior))")
            }
            guard let step = Self.knownPatterns[regex] else { throw TokenizerError.unsupportedPreTokenizer(regex) }
            steps.append(step)
        default:
            throw TokenizerError.unsupportedPreTokenizer("tokenizer.json \(type)")
        }
    }
}

/// Finds the special tokens a `TemplateProcessing` post-processor puts around a single sequence.
private struct TemplateReading {
    var leadingId: Int32?
    var trailingId: Int32?

    mutating func read(_ node: Any?) {
        guard let object = node as? [String: Any], let type = object["type"] as? String else { return }
        if type == "Sequence" {
            for child in object["processors"] as? [Any] ?? [] { read(child) }
            return
        }
        guard type == "TemplateProcessing", let single = object["single"] as? [[String: Any]],
              let specials = object["special_tokens"] as? [String: Any] else { return }
        func id(_ item: [String: Any]?) -> Int32? {
            guard let name = (item?["SpecialToken"] as? [String: Any])?["id"] as? String,
                  let entry = specials[name] as? [String: Any],
                  let ids = entry["ids"] as? [Any], let first = ids.first.flatMap(jsonInteger) else { return nil }
            return Int32(truncatingIfNeeded: first)
        }
        leadingId = id(single.first)
        trailingId = single.count > 1 ? id(single.last) : nil
    }
}

/// An integer from `JSONSerialization` output, which is `Int` or `NSNumber` depending on the platform.
private func jsonInteger(_ value: Any?) -> Int? {
    if let int = value as? Int { return int }
    if let number = value as? NSNumber { return number.intValue }
    return nil
}
