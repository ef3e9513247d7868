import Foundation

/// Byte-level BPE tokenizer (the GPT-2 family: SmolLM2, Llama 3, Qwen2), with Hugging Face tokenizers'
/// exact splitting and merge order.
///
/// Encoding: special tokens written in the text (control and user-defined tokens, such as `<|im_start|>`)
/// are cut out first, longest match first; each stretch between them is split by the pre-tokenizer, each
/// piece's UTF-8 bytes are spelled in GPT-2's byte alphabet, and merges are applied by rank.
/// Immutable after `init`, so one instance serves every thread; its only mutable state is an internal,
/// locked cache of encoded pieces.
public final class Tokenizer: Sendable {
    /// Number of token ids: every id in `0..<vocabularySize` decodes.
    public let vocabularySize: Int
    /// Beginning-of-sequence token id, if the model has one.
    public let bosTokenId: Int32?
    /// End-of-sequence token id, if the model has one.
    public let eosTokenId: Int32?
    /// The model's unknown token. Byte-level BPE never produces it: a byte the vocabulary lacks is
    /// dropped, as Hugging Face and llama.cpp do.
    public let unknownTokenId: Int32?
    /// Id used to pad batches.
    public let paddingTokenId: Int32?
    /// Tokens that end a generated turn: the EOS token plus, where the vocabulary has them, the end
    /// markers of the common chat formats (`<|im_end|>`, `<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`,
    /// `<|endoftext|>`, `<end_of_turn>`).
    public let endOfGenerationTokenIds: Set<Int32>
    /// Whether `encode(_:addSpecialTokens: true)` prepends the BOS token.
    public let addsBOS: Bool
    /// Whether `encode(_:addSpecialTokens: true)` appends the EOS token.
    public let addsEOS: Bool
    /// The model's Jinja chat template, if it has one.
    public let chatTemplate: String?

    private let pieces: [String]
    private let idsByPiece: [String: Int32]
    private let pieceBytes: [UInt8]    // every token's bytes, back to back
    private let pieceOffsets: [Int]    // token i is pieceBytes[pieceOffsets[i]..<pieceOffsets[i + 1]]
    private let isControl: [Bool]      // skipped by decode(_:skipSpecialTokens: true)
    private let byteIds: [Int32]       // token of each single byte, -1 if none
    private let merges: MergeTable
    private let specialTokens: SpecialTokenMatcher
    private let preTokenizer: PreTokenizer
    private let ignoreMerges: Bool
    private let normalizesToNFC: Bool
    private let cache = PieceCache()

    /// Pieces longer than this are encoded every time rather than cached.
    private static let longestCachedPiece = 256

    /// Builds a tokenizer from plain data.
    /// - Throws: ``TokenizerError/unsupportedModel(_:)`` unless `spec.model` is `"gpt2"`;
    ///   ``TokenizerError/unsupportedPreTokenizer(_:)``; ``TokenizerError/invalidMerge(index:merge:reason:)``;
    ///   ``TokenizerError/inconsistentSpec(field:reason:)`` when counts or ids do not fit the vocabulary.
    public init(spec: TokenizerSpec) throws {
        guard spec.model == "gpt2" else { throw TokenizerError.unsupportedModel(spec.model) }
        let count = spec.tokens.count
        guard count > 0, count < Int(Int32.max) else {
            throw TokenizerError.inconsistentSpec(field: "tokens", reason: "\(count) tokens; expected 1..<2^31")
        }
        if let types = spec.tokenTypes, types.count != count {
            throw TokenizerError.inconsistentSpec(field: "tokenTypes", reason: "\(types.count) types for \(count) tokens")
        }
        let namedIds: [(String, Int32?)] = [("bosTokenId", spec.bosTokenId), ("eosTokenId", spec.eosTokenId),
                                            ("unknownTokenId", spec.unknownTokenId), ("paddingTokenId", spec.paddingTokenId)]
        for case let (field, id?) in namedIds where id < 0 || Int(id) >= count {
            throw TokenizerError.inconsistentSpec(field: field, reason: "id \(id) is outside the vocabulary (0..<\(count))")
        }
        if spec.addBOS && spec.bosTokenId == nil {
            throw TokenizerError.inconsistentSpec(field: "addBOS", reason: "BOS is to be added but there is no bosTokenId")
        }
        if spec.addEOS && spec.eosTokenId == nil {
            throw TokenizerError.inconsistentSpec(field: "addEOS", reason: "EOS is to be added but there is no eosTokenId")
        }
        preTokenizer = try PreTokenizer(ggufName: spec.preTokenizer)
        ignoreMerges = spec.ignoreMerges ?? preTokenizer.ignoresMergesByDefault
        normalizesToNFC = spec.normalizesToNFC

        var idsByPiece: [String: Int32] = [:]
        idsByPiece.reserveCapacity(count)
        var pieceBytes: [UInt8] = []
        var pieceOffsets: [Int] = [0]
        pieceOffsets.reserveCapacity(count + 1)
        var isControl = [Bool](repeating: false, count: count)
        var specialTokens = SpecialTokenMatcher()
        for (index, piece) in spec.tokens.enumerated() {
            let id = Int32(index)
            if idsByPiece[piece] == nil { idsByPiece[piece] = id }  // a duplicate keeps its first id
            pieceBytes.append(contentsOf: ByteLevelAlphabet.decode(piece))
            pieceOffsets.append(pieceBytes.count)
            let type = spec.tokenTypes?[index] ?? TokenType.normal
            if type == TokenType.control || type == TokenType.userDefined {
                specialTokens.add(Array(piece.utf8), id: id)
            }
            isControl[index] = type == TokenType.control
        }
        var byteIds = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            byteIds[byte] = idsByPiece[String(Character(ByteLevelAlphabet.scalarForByte[byte]))] ?? -1
        }

        var merges = MergeTable(expectedCount: spec.merges.count)
        for (rank, rule) in spec.merges.enumerated() {
            guard let space = rule.firstIndex(of: " ") else {
                throw TokenizerError.invalidMerge(index: rank, merge: rule, reason: "expected two tokens separated by a space")
            }
            let left = String(rule[..<space])
            let right = String(rule[rule.index(after: space)...])
            guard let leftId = idsByPiece[left], let rightId = idsByPiece[right] else {
                throw TokenizerError.invalidMerge(index: rank, merge: rule, reason: "a side is not in the vocabulary")
            }
            guard let mergedId = idsByPiece[left + right] else {
                throw TokenizerError.invalidMerge(index: rank, merge: rule, reason: "the merged token '\(left + right)' is not in the vocabulary")
            }
            merges.insert(left: leftId, right: rightId, rank: rank, merged: mergedId)
        }

        var endOfGeneration = Set<Int32>()
        if let eos = spec.eosTokenId { endOfGeneration.insert(eos) }
        for marker in ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>"] {
            if let id = idsByPiece[marker] { endOfGeneration.insert(id) }
        }

        self.vocabularySize = count
        self.bosTokenId = spec.bosTokenId
        self.eosTokenId = spec.eosTokenId
        self.unknownTokenId = spec.unknownTokenId
        self.paddingTokenId = spec.paddingTokenId
        self.endOfGenerationTokenIds = endOfGeneration
        self.addsBOS = spec.addBOS
        self.addsEOS = spec.addEOS
        self.chatTemplate = spec.chatTemplate
        self.pieces = spec.tokens
        self.idsByPiece = idsByPiece
        self.pieceBytes = pieceBytes
        self.pieceOffsets = pieceOffsets
        self.isControl = isControl
        self.byteIds = byteIds
        self.merges = merges
        self.specialTokens = specialTokens
    }

    // MARK: - Encoding

    /// Token ids for `text`.
    /// - Parameter addSpecialTokens: prepend BOS (append EOS) where the model asks for it. Special tokens
    ///   written in the text are matched as those tokens either way, as Hugging Face does.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        encodeValidUTF8(Array(text.utf8), addSpecialTokens: addSpecialTokens)
    }

    /// Token ids for UTF-8 bytes.
    /// - Throws: ``TokenizerError/invalidUTF8(offset:)`` with the offset of the first ill-formed sequence.
    public func encode(utf8 bytes: [UInt8], addSpecialTokens: Bool = true) throws -> [Int32] {
        if let offset = bytes.withUnsafeBufferPointer({ UTF8Scanning.firstInvalidOffset($0) }) {
            throw TokenizerError.invalidUTF8(offset: offset)
        }
        return encodeValidUTF8(bytes, addSpecialTokens: addSpecialTokens)
    }

    private func encodeValidUTF8(_ bytes: [UInt8], addSpecialTokens: Bool) -> [Int32] {
        var pass = EncodingPass(tokenizer: self, bytes: bytes)
        if addSpecialTokens, addsBOS, let bos = bosTokenId { pass.output.append(bos) }
        if specialTokens.isEmpty {
            pass.encodeStretch(0..<bytes.count)
        } else {
            var stretchStart = 0
            var i = 0
            bytes.withUnsafeBufferPointer { buffer in
                while i < buffer.count {
                    if let match = specialTokens.match(buffer, at: i) {
                        pass.encodeStretch(stretchStart..<i)
                        pass.output.append(match.id)
                        i = match.end
                        stretchStart = i
                    } else {
                        i += 1
                    }
                }
            }
            pass.encodeStretch(stretchStart..<bytes.count)
        }
        if addSpecialTokens, addsEOS, let eos = eosTokenId { pass.output.append(eos) }
        return pass.output
    }

    /// The state of one `encode` call: output and scratch buffers reused across pieces.
    private struct EncodingPass {
        let tokenizer: Tokenizer
        var text = ClassifiedText()
        var merger = BytePairMerger()
        var pieces: [Range<Int>] = []   // pre-tokens of the current stretch, as scalar ranges
        var scratch: [Range<Int>] = []
        var output: [Int32] = []

        init(tokenizer: Tokenizer, bytes: [UInt8]) {
            self.tokenizer = tokenizer
            text.bytes = bytes
            output.reserveCapacity(bytes.count / 3 + 2)
        }

        /// Encodes the text between two special tokens.
        mutating func encodeStretch(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            if tokenizer.normalizesToNFC {
                let original = String(decoding: text.bytes[range], as: UTF8.self)
                let normalized = Array(original.precomposedStringWithCanonicalMapping.utf8)
                var pass = EncodingPass(tokenizer: tokenizer, bytes: normalized)
                pass.encodeNormalized(0..<normalized.count)
                output.append(contentsOf: pass.output)
            } else {
                encodeNormalized(range)
            }
        }

        private mutating func encodeNormalized(_ range: Range<Int>) {
            text.load(range)
            var pieces = self.pieces, scratch = self.scratch
            let splitter = tokenizer.preTokenizer
            let scalarCount = text.classes.count
            text.withView { view in splitter.split(view, 0..<scalarCount, into: &pieces, scratch: &scratch) }
            for piece in pieces { encodePiece(text.byteRange(piece)) }
            self.pieces = pieces
            self.scratch = scratch
        }

        private mutating func encodePiece(_ byteRange: Range<Int>) {
            let bytes = text.bytes[byteRange]
            if bytes.count == 1 {
                let id = tokenizer.byteIds[Int(bytes[bytes.startIndex])]
                if id >= 0 { output.append(id) }  // a byte the vocabulary lacks is dropped (see BytePairMerger)
                return
            }
            let cacheable = bytes.count <= Tokenizer.longestCachedPiece
            if cacheable, tokenizer.cache.append(bytes, to: &output) { return }
            let start = output.count
            if tokenizer.ignoreMerges, let id = tokenizer.idsByPiece[ByteLevelAlphabet.encode(bytes)] {
                output.append(id)
            } else {
                bytes.withUnsafeBufferPointer { buffer in
                    merger.encode(buffer, merges: tokenizer.merges, byteIds: tokenizer.byteIds, into: &output)
                }
            }
            if cacheable { tokenizer.cache.insert(bytes, ids: output[start...]) }
        }
    }

    /// The pieces BPE would run on, in order: each special token written in the text as one piece, and
    /// the pre-tokenizer's pieces of the text between them (like Hugging Face's `pre_tokenize_str`;
    /// an NFC normalizer is not applied here). For inspecting and testing how text is split.
    public func preTokenize(_ text: String) -> [String] {
        let bytes = Array(text.utf8)
        var result: [String] = []
        var classified = ClassifiedText()
        classified.bytes = bytes
        var pieces: [Range<Int>] = [], scratch: [Range<Int>] = []
        func splitStretch(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            classified.load(range)
            let count = classified.classes.count
            classified.withView { preTokenizer.split($0, 0..<count, into: &pieces, scratch: &scratch) }
            for piece in pieces { result.append(String(decoding: bytes[classified.byteRange(piece)], as: UTF8.self)) }
        }
        var stretchStart = 0
        var i = 0
        bytes.withUnsafeBufferPointer { buffer in
            while i < buffer.count {
                if let match = specialTokens.match(buffer, at: i) {
                    splitStretch(stretchStart..<i)
                    result.append(String(decoding: buffer[i..<match.end], as: UTF8.self))
                    i = match.end
                    stretchStart = i
                } else {
                    i += 1
                }
            }
        }
        splitStretch(stretchStart..<bytes.count)
        return result
    }

    // MARK: - Decoding

    /// The text of `ids`. Byte sequences that are not UTF-8 (a character cut between tokens at the end,
    /// or nonsense ids) become U+FFFD, one per maximal ill-formed subpart, as Hugging Face does.
    /// - Parameter skipSpecialTokens: leave out control tokens such as `<|im_end|>`.
    /// - Throws: ``TokenizerError/tokenIdOutOfRange(id:vocabularySize:)``.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { try appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The raw bytes a token stands for (a token can hold part of a UTF-8 character).
    /// - Throws: ``TokenizerError/tokenIdOutOfRange(id:vocabularySize:)``.
    public func tokenBytes(_ id: Int32) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try appendBytes(of: id, skipSpecialTokens: false, to: &bytes)
        return bytes
    }

    /// Appends token `id`'s bytes, or nothing for a control token when `skipSpecialTokens`.
    func appendBytes(of id: Int32, skipSpecialTokens: Bool, to bytes: inout [UInt8]) throws {
        guard id >= 0, Int(id) < vocabularySize else {
            throw TokenizerError.tokenIdOutOfRange(id: id, vocabularySize: vocabularySize)
        }
        let index = Int(id)
        if skipSpecialTokens && isControl[index] { return }
        bytes.append(contentsOf: pieceBytes[pieceOffsets[index]..<pieceOffsets[index + 1]])
    }

    // MARK: - Vocabulary

    /// The id of a token given its vocabulary text (`"<|im_end|>"`, `"Ġthe"`), or `nil`.
    public func tokenId(for piece: String) -> Int32? { idsByPiece[piece] }

    /// The vocabulary text of a token (`"Ġthe"` for id 260 in SmolLM2).
    /// - Throws: ``TokenizerError/tokenIdOutOfRange(id:vocabularySize:)``.
    public func piece(for id: Int32) throws -> String {
        guard id >= 0, Int(id) < vocabularySize else {
            throw TokenizerError.tokenIdOutOfRange(id: id, vocabularySize: vocabularySize)
        }
        return pieces[Int(id)]
    }

    /// Whether `id` is a control token (GGUF type 3; a `tokenizer.json` added token marked special),
    /// which `decode(_:skipSpecialTokens: true)` leaves out.
    public func isSpecialToken(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabularySize && isControl[Int(id)]
    }

    /// The model's chat template, ready to render, with this vocabulary's BOS text.
    /// - Throws: ``TokenizerError/missingChatTemplate`` or ``TokenizerError/unknownChatTemplate(excerpt:)``.
    public func makeChatTemplate() throws -> ChatTemplate {
        try ChatTemplate(template: chatTemplate, bosToken: bosTokenId.map { pieces[Int($0)] })
    }
}
