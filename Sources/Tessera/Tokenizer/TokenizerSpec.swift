/// Everything needed to build a ``Tokenizer``, independent of the file format it came from.
///
/// A GGUF reader fills it from the `tokenizer.ggml.*` metadata; ``TokenizerSpec/init(tokenizerJSON:tokenizerConfig:)``
/// fills it from a Hugging Face `tokenizer.json` (and optionally `tokenizer_config.json`).
public struct TokenizerSpec: Sendable {
    /// The tokenizer family, as GGUF's `tokenizer.ggml.model` names it. `"gpt2"` (byte-level BPE) is supported.
    public var model: String
    /// Token text by id, in the model's own alphabet (byte-level tokens spell a leading space as `Ġ`).
    public var tokens: [String]
    /// GGUF `tokenizer.ggml.token_type` per token, or `nil` when every token is normal.
    /// Control (3) and user-defined (4) tokens are matched literally in input text; control tokens are
    /// the "special" tokens that `decode(_:skipSpecialTokens:)` can skip.
    public var tokenTypes: [Int32]?
    /// BPE merges in priority order, each `"left right"`.
    public var merges: [String]
    /// GGUF `tokenizer.ggml.pre`: which pre-tokenizer splits text before BPE.
    /// `nil`, `"default"`, `"gpt2"`: the GPT-2 regex; `"smollm"`: digits one by one, then the GPT-2 regex;
    /// `"llama-bpe"`, `"llama3"`: the Llama 3 regex; `"qwen2"`: the Llama 3 regex with one digit per piece.
    public var preTokenizer: String?
    /// Beginning-of-sequence token id.
    public var bosTokenId: Int32?
    /// End-of-sequence token id.
    public var eosTokenId: Int32?
    /// The unknown token (informational: byte-level BPE drops a byte that has no token, as Hugging Face
    /// and llama.cpp do).
    public var unknownTokenId: Int32?
    /// Id used to pad batches.
    public var paddingTokenId: Int32?
    /// Whether `encode(_:addSpecialTokens: true)` prepends the BOS token.
    public var addBOS: Bool
    /// Whether `encode(_:addSpecialTokens: true)` appends the EOS token.
    public var addEOS: Bool
    /// The model's Jinja chat template, if it has one (see ``ChatTemplate``).
    public var chatTemplate: String?
    /// Whether a pre-token found whole in the vocabulary skips the merges (Hugging Face's `ignore_merges`).
    /// `nil` takes the pre-tokenizer's default, as llama.cpp does: on for Llama 3, off otherwise.
    public var ignoreMerges: Bool?
    /// Whether text between special tokens is put in Unicode normalization form C before splitting
    /// (a `tokenizer.json` `NFC` normalizer, as Qwen2 uses).
    public var normalizesToNFC: Bool

    /// Creates a spec from plain data; every argument after `merges` has the default a GGUF file implies
    /// when the key is absent.
    public init(
        model: String = "gpt2",
        tokens: [String],
        tokenTypes: [Int32]? = nil,
        merges: [String],
        preTokenizer: String? = nil,
        bosTokenId: Int32? = nil,
        eosTokenId: Int32? = nil,
        unknownTokenId: Int32? = nil,
        paddingTokenId: Int32? = nil,
        addBOS: Bool = false,
        addEOS: Bool = false,
        chatTemplate: String? = nil,
        ignoreMerges: Bool? = nil,
        normalizesToNFC: Bool = false
    ) {
        self.model = model
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.preTokenizer = preTokenizer
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.unknownTokenId = unknownTokenId
        self.paddingTokenId = paddingTokenId
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.chatTemplate = chatTemplate
        self.ignoreMerges = ignoreMerges
        self.normalizesToNFC = normalizesToNFC
    }
}

/// GGUF `tokenizer.ggml.token_type` values.
enum TokenType {
    static let normal: Int32 = 1
    static let unknown: Int32 = 2
    static let control: Int32 = 3
    static let userDefined: Int32 = 4
    static let unused: Int32 = 5
    static let byte: Int32 = 6
}
