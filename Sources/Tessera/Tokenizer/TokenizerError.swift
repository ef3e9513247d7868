/// Why a tokenizer could not be built, or an input could not be tokenized.
public enum TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The input bytes are not UTF-8; `offset` is the byte where the first bad sequence starts.
    case invalidUTF8(offset: Int)
    /// The tokenizer family (GGUF `tokenizer.ggml.model`, or what `tokenizer.json` implies) is not implemented.
    case unsupportedModel(String)
    /// The pre-tokenizer (GGUF `tokenizer.ggml.pre`, or a `tokenizer.json` split pattern) is not implemented.
    case unsupportedPreTokenizer(String)
    /// A `tokenizer.json` or `tokenizer_config.json` field is missing, has the wrong type, or asks for
    /// a feature we do not implement.
    case malformedTokenizerJSON(path: String, field: String, reason: String)
    /// A token id is outside `0..<vocabularySize`.
    case tokenIdOutOfRange(id: Int32, vocabularySize: Int)
    /// A merge rule is not `"left right"` over tokens of the vocabulary.
    case invalidMerge(index: Int, merge: String, reason: String)
    /// The spec contradicts itself (a count or an id that does not fit the vocabulary).
    case inconsistentSpec(field: String, reason: String)
    /// The model has no chat template.
    case missingChatTemplate
    /// The chat template is not one of the families we render; `excerpt` is its beginning.
    case unknownChatTemplate(excerpt: String)

    public var description: String {
        switch self {
        case .invalidUTF8(let offset):
            return "input is not valid UTF-8: bad byte sequence at byte offset \(offset)"
        case .unsupportedModel(let name):
            return "tokenizer model '\(name)' is not supported (supported: gpt2 byte-level BPE)"
        case .unsupportedPreTokenizer(let name):
            return "pre-tokenizer '\(name)' is not supported (supported: default/gpt2, smollm, llama-bpe/llama3, qwen2)"
        case .malformedTokenizerJSON(let path, let field, let reason):
            return "\(path): field '\(field)': \(reason)"
        case .tokenIdOutOfRange(let id, let size):
            return "token id \(id) is out of range: the vocabulary has \(size) tokens (0..<\(size))"
        case .invalidMerge(let index, let merge, let reason):
            return "merge #\(index) '\(merge)' is invalid: \(reason)"
        case .inconsistentSpec(let field, let reason):
            return "tokenizer spec field '\(field)': \(reason)"
        case .missingChatTemplate:
            return "the model has no chat template; pass one explicitly"
        case .unknownChatTemplate(let excerpt):
            return "chat template not recognised (known families: chatml, llama3); it begins: \(excerpt)"
        }
    }
}
