import Foundation

/// A model with its tokenizer, loaded from one path: what the CLI, the server and a gateway
/// start from.
public struct ModelBundle: Sendable {
    public let model: LlamaModel
    /// Nil for a model file without tokenizer metadata (tiny test models).
    public let tokenizer: Tokenizer?

    public init(model: LlamaModel, tokenizer: Tokenizer?) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Loads a GGUF file (weights and tokenizer metadata) or a Hugging Face directory
    /// (`config.json`, safetensors, `tokenizer.json`, `tokenizer_config.json`).
    public static func load(path: String, options: ModelLoadOptions = .init()) throws -> ModelBundle {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            let gguf: GGUFFile
            do { gguf = try GGUFFile(path: path) } catch { throw ModelError(error) }
            return ModelBundle(model: try LlamaModel.load(gguf: gguf, options: options), tokenizer: try tokenizer(gguf: gguf))
        }
        let model = try LlamaModel.load(path: path, options: options)
        return ModelBundle(model: model, tokenizer: try loadTokenizer(path: path))
    }

    /// Loads only the tokenizer of a GGUF file or a Hugging Face directory (nil when it has none).
    public static func loadTokenizer(path: String) throws -> Tokenizer? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError(file: path, reason: .format(.io("no such file or directory")))
        }
        if isDirectory.boolValue {
            let dir = URL(fileURLWithPath: path)
            let json = dir.appendingPathComponent("tokenizer.json")
            guard FileManager.default.fileExists(atPath: json.path) else { return nil }
            let config = dir.appendingPathComponent("tokenizer_config.json")
            return try Tokenizer(tokenizerJSON: json,
                                 tokenizerConfig: FileManager.default.fileExists(atPath: config.path) ? config : nil)
        }
        let gguf: GGUFFile
        do { gguf = try GGUFFile(path: path) } catch { throw ModelError(error) }
        return try tokenizer(gguf: gguf)
    }

    /// The model's chat template.
    public func chatTemplate() throws -> ChatTemplate {
        guard let tokenizer else { throw ModelError(file: model.source, reason: .missingMetadata(key: "tokenizer.chat_template")) }
        return try tokenizer.makeChatTemplate()
    }

    /// Builds the tokenizer from GGUF `tokenizer.ggml.*` metadata; nil when the file has none.
    public static func tokenizer(gguf: GGUFFile) throws -> Tokenizer? {
        let m = gguf.metadata
        guard let model = m["tokenizer.ggml.model"]?.stringValue else { return nil }
        func strings(_ key: String) throws(ModelError) -> [String] {
            guard let array = m[key]?.arrayValue else { throw ModelError(file: gguf.path, reason: .missingMetadata(key: key)) }
            var out: [String] = []
            out.reserveCapacity(array.count)
            for v in array {
                guard let s = v.stringValue else { throw ModelError(file: gguf.path, reason: .invalidMetadata(key: key, why: "not an array of strings")) }
                out.append(s)
            }
            return out
        }
        func id(_ key: String) -> Int32? { m[key]?.intValue.flatMap { Int32(exactly: $0) } }
        let tokens = try strings("tokenizer.ggml.tokens")
        var types: [Int32]?
        if let array = m["tokenizer.ggml.token_type"]?.arrayValue {
            types = array.map { Int32(truncatingIfNeeded: $0.intValue ?? 1) }
        }
        let spec = TokenizerSpec(
            model: model, tokens: tokens, tokenTypes: types,
            merges: m["tokenizer.ggml.merges"] == nil ? [] : try strings("tokenizer.ggml.merges"),
            preTokenizer: m["tokenizer.ggml.pre"]?.stringValue,
            bosTokenId: id("tokenizer.ggml.bos_token_id"), eosTokenId: id("tokenizer.ggml.eos_token_id"),
            unknownTokenId: id("tokenizer.ggml.unknown_token_id"), paddingTokenId: id("tokenizer.ggml.padding_token_id"),
            // llama.cpp's default when the key is absent: BOS for Llama-3-style vocabularies.
            addBOS: m["tokenizer.ggml.add_bos_token"]?.boolValue
                ?? ["llama-bpe", "llama3", "llama-v3"].contains(m["tokenizer.ggml.pre"]?.stringValue ?? ""),
            addEOS: m["tokenizer.ggml.add_eos_token"]?.boolValue ?? false,
            chatTemplate: m["tokenizer.chat_template"]?.stringValue)
        return try Tokenizer(spec: spec)
    }
}
