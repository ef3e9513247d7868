/// Turns generated token ids into text as they arrive, holding back the bytes of a UTF-8 character
/// that a token has only begun (SmolLM2 spells many emoji and CJK characters over two or three tokens).
///
/// The pieces it returns, joined, are exactly `tokenizer.decode(ids)`; no piece ends inside a character.
public struct StreamingDecoder: Sendable {
    /// The tokenizer whose ids are decoded.
    public let tokenizer: Tokenizer
    /// Whether control tokens (`<|im_end|>`) are left out of the text.
    public let skipSpecialTokens: Bool
    private var pending: [UInt8] = []

    /// Creates a decoder with nothing held back.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one token; returns the text it completed (possibly empty).
    /// - Throws: ``TokenizerError/tokenIdOutOfRange(id:vocabularySize:)``; nothing is consumed then.
    public mutating func append(_ id: Int32) throws -> String {
        try tokenizer.appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &pending)
        let held = UTF8Scanning.unfinishedSuffixLength(pending)
        guard pending.count > held else { return "" }
        let text = String(decoding: pending[..<(pending.count - held)], as: UTF8.self)
        pending.removeFirst(pending.count - held)
        return text
    }

    /// Whether bytes of an unfinished character are held back.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    /// Ends the stream: returns what is held back (an unfinished character becomes U+FFFD) and resets.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }
}
