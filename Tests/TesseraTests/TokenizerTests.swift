import Foundation
import XCTest
import Tessera

/// The tokenizer against Hugging Face `tokenizers` on SmolLM2-135M-Instruct: reference ids and text from
/// `Fixtures/smollm2/` (made by the fixture script from the HF tokenizer with SmolLM2's digit split), plus
/// small reference tables below, each produced by `tokenizers` 0.23 (`pre_tokenize_str` / `encode`).
final class TokenizerTests: XCTestCase {

    // MARK: - Fixtures, loaded once per process

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("smollm2")

    /// SmolLM2-135M-Instruct's GGUF `tokenizer.chat_template`.
    static let smolLM2Template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

    /// Built by the `tokenizer.json` reader, with `tokenizer_config.json` for special tokens and template.
    static let fromJSON: Result<Tokenizer, any Error> = Result {
        try Tokenizer(tokenizerJSON: fixtures.appendingPathComponent("tokenizer.json"),
                      tokenizerConfig: fixtures.appendingPathComponent("tokenizer_config.json"))
    }

    /// Vocabulary and merges as plain data, shaped like SmolLM2's GGUF metadata (read from `tokenizer.json`
    /// here so this test needs no GGUF reader).
    static let smolLM2Spec: Result<TokenizerSpec, any Error> = Result {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("tokenizer.json"))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let model = try XCTUnwrap(root["model"] as? [String: Any])
        let vocab = try XCTUnwrap(model["vocab"] as? [String: Any])
        var tokens = [String](repeating: "", count: vocab.count)
        for (piece, id) in vocab { tokens[try XCTUnwrap(id as? Int)] = piece }
        var types = [Int32](repeating: 1, count: tokens.count)
        for added in root["added_tokens"] as? [[String: Any]] ?? [] where added["special"] as? Bool == true {
            types[try XCTUnwrap(added["id"] as? Int)] = 3
        }
        let merges: [String] = try XCTUnwrap(model["merges"] as? [Any]).map { rule in
            if let text = rule as? String { return text }
            return try XCTUnwrap(rule as? [String]).joined(separator: " ")
        }
        return TokenizerSpec(
            model: "gpt2", tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: "smollm",
            bosTokenId: 1, eosTokenId: 2, unknownTokenId: 0, paddingTokenId: 2,
            addBOS: false, addEOS: false, chatTemplate: smolLM2Template)
    }

    /// Built from plain data, as from the GGUF.
    static let fromSpec: Result<Tokenizer, any Error> = Result { try Tokenizer(spec: smolLM2Spec.get()) }

    struct EncodingCase: Decodable { var text: String; var ids: [Int32]; var decoded: String }
    struct EncodingCases: Decodable { var cases: [EncodingCase] }
    struct ChatCase: Decodable {
        var family: String
        var template: String
        var messages: [ChatMessage]
        var add_generation_prompt: Bool
        var bos_token: String?
        var text: String
    }
    struct ChatCases: Decodable { var cases: [ChatCase] }

    static let encodingCases: Result<[EncodingCase], any Error> = Result {
        try JSONDecoder().decode(EncodingCases.self, from: Data(contentsOf: fixtures.appendingPathComponent("tokenizer_cases.json"))).cases
    }
    static let chatCases: Result<[ChatCase], any Error> = Result {
        try JSONDecoder().decode(ChatCases.self, from: Data(contentsOf: fixtures.appendingPathComponent("chat_cases.json"))).cases
    }

    /// Skips (rather than fails) while the fixture folder has not been made at all.
    private func requireFixtures() throws {
        if !FileManager.default.fileExists(atPath: Self.fixtures.path) {
            throw XCTSkip("no fixtures at \(Self.fixtures.path): run the fixture script in tools/")
        }
    }

    private func specTokenizer() throws -> Tokenizer {
        try requireFixtures()
        return try Self.fromSpec.get()
    }

    private func jsonTokenizer() throws -> Tokenizer {
        try requireFixtures()
        return try Self.fromJSON.get()
    }

    private func bothTokenizers() throws -> [(String, Tokenizer)] {
        try requireFixtures()
        return [("tokenizer.json", try Self.fromJSON.get()), ("spec", try Self.fromSpec.get())]
    }

    // MARK: - Encoding matches Hugging Face

    func testEveryFixtureCaseEncodesToReferenceIdsFromBothBuilds() throws {
        let cases = try { try requireFixtures(); return try Self.encodingCases.get() }()
        XCTAssertGreaterThanOrEqual(cases.count, 70)
        for (name, tokenizer) in try bothTokenizers() {
            for item in cases {
                XCTAssertEqual(tokenizer.encode(item.text, addSpecialTokens: false), item.ids, "\(name): \(item.text.debugDescription)")
                XCTAssertEqual(try tokenizer.encode(utf8: Array(item.text.utf8), addSpecialTokens: false), item.ids, "\(name) (bytes): \(item.text.debugDescription)")
            }
        }
    }

    func testDecodingReferenceIdsGivesReferenceText() throws {
        let cases = try { try requireFixtures(); return try Self.encodingCases.get() }()
        for (name, tokenizer) in try bothTokenizers() {
            for item in cases {
                XCTAssertEqual(try tokenizer.decode(item.ids), item.decoded, "\(name): \(item.text.debugDescription)")
            }
        }
    }

    func testEncodeThenDecodeGivesBackTheText() throws {
        let cases = try { try requireFixtures(); return try Self.encodingCases.get() }()
        let tokenizer = try Self.fromSpec.get()
        var checked = 0
        // SmolLM2's vocabulary lacks 21 control and invalid-in-UTF-8 bytes, which encoding drops (as HF
        // does): only texts whose reference decoding is the text itself can round-trip.
        for item in cases where item.decoded == item.text {
            XCTAssertEqual(try tokenizer.decode(tokenizer.encode(item.text)), item.text)
            checked += 1
        }
        XCTAssertGreaterThan(checked, cases.count * 9 / 10)
    }

    func testRunOfSpacesBeforeADigitStaysTogether() throws {
        // DESIGN.md pitfall: SmolLM2 splits digits before the GPT-2 regex, so "a  1" is a|ĠĠ|1, not a|Ġ|Ġ1.
        let tokenizer = try jsonTokenizer()
        let ids = tokenizer.encode("a  1", addSpecialTokens: false)
        XCTAssertEqual(try ids.map { try tokenizer.piece(for: $0) }, ["a", "ĠĠ", "1"])
    }

    func testBytesMissingFromTheVocabularyAreDroppedAsHuggingFaceDoes() throws {
        // SmolLM2 has no token for byte 0x1D (nor 20 others); HF (unk_token null) gives Ĝ|ċ|Č|Ġend.
        for (name, tokenizer) in try bothTokenizers() {
            XCTAssertEqual(tokenizer.encode("\u{1C}\u{1D}\u{0B}\u{0C} end"), [213, 199, 200, 1112], name)
        }
    }

    // MARK: - Special tokens

    func testSpecialTokensWrittenInTextAreMatchedAsThoseTokens() throws {
        for (name, tokenizer) in try bothTokenizers() {
            let ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n", addSpecialTokens: false)
            XCTAssertEqual(ids.first, 1, name)
            XCTAssertTrue(ids.contains(2), name)
            XCTAssertEqual(try tokenizer.decode(ids), "<|im_start|>user\nHi<|im_end|>\n", name)
            XCTAssertEqual(try tokenizer.decode(ids, skipSpecialTokens: true), "user\nHi\n", name)
            // Adjacent special tokens, and a near miss that stays text.
            XCTAssertEqual(tokenizer.encode("<|im_end|><|endoftext|>", addSpecialTokens: false), [2, 0], name)
            XCTAssertFalse(tokenizer.encode("<|im_end", addSpecialTokens: false).contains(2), name)
        }
    }

    func testSpecialTokensAddedOnlyWhereTheSpecSaysSo() throws {
        let tokenizer = try specTokenizer()
        XCTAssertFalse(tokenizer.addsBOS)
        XCTAssertEqual(tokenizer.encode("Hi"), tokenizer.encode("Hi", addSpecialTokens: false))
        var spec = try Self.smolLM2Spec.get()
        spec.addBOS = true
        spec.addEOS = true
        let withBOS = try Tokenizer(spec: spec)
        XCTAssertEqual(withBOS.encode("Hi"), [1] + tokenizer.encode("Hi", addSpecialTokens: false) + [2])
        XCTAssertEqual(withBOS.encode("Hi", addSpecialTokens: false), tokenizer.encode("Hi", addSpecialTokens: false))
    }

    func testSpecialTokenIdsAndEndOfGenerationAgreeBetweenBuilds() throws {
        for (name, tokenizer) in try bothTokenizers() {
            XCTAssertEqual(tokenizer.bosTokenId, 1, name)
            XCTAssertEqual(tokenizer.eosTokenId, 2, name)
            XCTAssertEqual(tokenizer.unknownTokenId, 0, name)
            XCTAssertEqual(tokenizer.paddingTokenId, 2, name)
            XCTAssertFalse(tokenizer.addsBOS, name)
            XCTAssertEqual(tokenizer.endOfGenerationTokenIds, [2, 0], name)  // <|im_end|>, <|endoftext|>
            XCTAssertEqual(tokenizer.vocabularySize, 49152, name)
            XCTAssertEqual(tokenizer.tokenId(for: "<|im_start|>"), 1, name)
            XCTAssertEqual(tokenizer.tokenId(for: "Ġthe"), 260, name)
            XCTAssertEqual(try tokenizer.piece(for: 260), "Ġthe", name)
            XCTAssertNil(tokenizer.tokenId(for: "no such token"), name)
            XCTAssertTrue(tokenizer.isSpecialToken(1), name)
            XCTAssertFalse(tokenizer.isSpecialToken(100), name)
            XCTAssertEqual(tokenizer.chatTemplate, Self.smolLM2Template, name)
            XCTAssertEqual(try tokenizer.makeChatTemplate().defaultSystemPrompt,
                           "You are a helpful AI assistant named SmolLM, trained by Hugging Face", name)
        }
    }

    // MARK: - Bad input

    func testInvalidUTF8ThrowsWithOffsetOfTheBadSequence() throws {
        let tokenizer = try specTokenizer()
        let cases: [([UInt8], Int)] = [
            ([0x61, 0xFF], 1),                    // never valid
            ([0x61, 0x62, 0xC3], 2),              // cut short at the end
            ([0xE2, 0x82, 0x41], 0),              // continuation missing
            ([0x61, 0xC0, 0xAF], 1),              // overlong '/'
            ([0xED, 0xA0, 0x80], 0),              // UTF-16 surrogate
            ([0x41, 0xF4, 0x90, 0x80, 0x80], 1),  // above U+10FFFF
            ([0x41, 0x80], 1),                    // lone continuation byte
        ]
        for (bytes, offset) in cases {
            XCTAssertThrowsError(try tokenizer.encode(utf8: bytes), "\(bytes)") { error in
                XCTAssertEqual(error as? TokenizerError, .invalidUTF8(offset: offset), "\(bytes)")
            }
        }
        let valid = "naïve 😀 中文"
        XCTAssertEqual(try tokenizer.encode(utf8: Array(valid.utf8)), tokenizer.encode(valid))
    }

    func testDecodingAnIdOutsideTheVocabularyThrows() throws {
        let tokenizer = try specTokenizer()
        for id: Int32 in [-1, 49152] {
            XCTAssertThrowsError(try tokenizer.decode([5, id])) { error in
                XCTAssertEqual(error as? TokenizerError, .tokenIdOutOfRange(id: id, vocabularySize: 49152))
            }
            XCTAssertThrowsError(try tokenizer.tokenBytes(id))
        }
    }

    func testDecodingPartOfACharacterGivesReplacementCharacters() throws {
        // Hugging Face: "😀" is ðŁ|ĺ|Ģ; decoding its first token alone gives one U+FFFD, its last two give two.
        let tokenizer = try specTokenizer()
        let ids = tokenizer.encode("😀", addSpecialTokens: false)
        XCTAssertEqual(ids, [10813, 242, 218])
        XCTAssertEqual(try tokenizer.decode([10813]), "\u{FFFD}")
        XCTAssertEqual(try tokenizer.decode([242, 218]), "\u{FFFD}\u{FFFD}")
        XCTAssertEqual(try tokenizer.tokenBytes(10813), [0xF0, 0x9F])
    }

    func testUnsupportedModelsAndPreTokenizersAreRefusedByName() {
        XCTAssertThrowsError(try Tokenizer(spec: TokenizerSpec(model: "llama", tokens: ["a"], merges: []))) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedModel("llama"))
        }
        XCTAssertThrowsError(try Tokenizer(spec: Self.byteAlphabetSpec(preTokenizer: "made-up"))) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedPreTokenizer("made-up"))
        }
        var spec = Self.byteAlphabetSpec(preTokenizer: nil)
        spec.merges = ["a z"]
        XCTAssertThrowsError(try Tokenizer(spec: spec)) { error in
            guard case .invalidMerge(0, "a z", _)? = error as? TokenizerError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: URL(fileURLWithPath: "/nonexistent/tokenizer.json"))) { error in
            guard case .malformedTokenizerJSON(path: "/nonexistent/tokenizer.json", _, _)? = error as? TokenizerError else {
                return XCTFail("\(error)")
            }
        }
    }

    // MARK: - Streaming

    func testStreamingDecoderYieldsTheTextAndNeverPartOfACharacter() throws {
        let tokenizer = try specTokenizer()
        let text = "Emoji 😀👍🏽 flags 🇯🇵, CJK 中文字符 and naïve café — ok"
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        // The test means something only if some tokens hold part of a character.
        let partial = try ids.filter { String(bytes: try tokenizer.tokenBytes($0), encoding: .utf8) == nil }
        XCTAssertGreaterThan(partial.count, 3)

        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var chunks: [String] = []
        for id in ids { chunks.append(try decoder.append(id)) }
        XCTAssertFalse(decoder.hasPendingBytes)
        chunks.append(decoder.finish())
        for chunk in chunks { XCTAssertFalse(chunk.unicodeScalars.contains("\u{FFFD}"), chunk.debugDescription) }
        XCTAssertEqual(chunks.joined(), text)
        XCTAssertTrue(chunks.contains(""), "a token that starts a character should yield nothing yet")
    }

    func testStreamingDecoderSkipsSpecialTokensAndFlushesAnUnfinishedTail() throws {
        let tokenizer = try specTokenizer()
        var decoder = StreamingDecoder(tokenizer: tokenizer, skipSpecialTokens: true)
        var text = ""
        for id in tokenizer.encode("<|im_start|>assistant\nHi 😀<|im_end|>") { text += try decoder.append(id) }
        XCTAssertEqual(text + decoder.finish(), "assistant\nHi 😀")

        var cut = StreamingDecoder(tokenizer: tokenizer)
        XCTAssertEqual(try cut.append(10813), "")  // first two bytes of an emoji
        XCTAssertTrue(cut.hasPendingBytes)
        XCTAssertEqual(cut.finish(), "\u{FFFD}")
        XCTAssertThrowsError(try cut.append(-3))
    }

    // MARK: - Pre-tokenizers (no vocabulary needed)

    /// A vocabulary of just the 256 byte tokens: enough to build a tokenizer and inspect its splitting.
    static func byteAlphabetSpec(preTokenizer: String?) -> TokenizerSpec {
        // GPT-2 bytes_to_unicode: printable Latin-1 stands for itself, the rest count up from U+0100.
        var tokens: [String] = []
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte) {
                tokens.append(String(Character(Unicode.Scalar(UInt8(byte)))))
            } else {
                tokens.append(String(Character(Unicode.Scalar(next)!)))
                next += 1
            }
        }
        return TokenizerSpec(tokens: tokens, merges: [], preTokenizer: preTokenizer)
    }

    /// Reference pieces from Hugging Face `pre_tokenize_str`: "smollm" is Sequence[Digits(individual),
    /// Split(GPT-2 regex)]; the others are Split(regex, Isolated) with the GPT-2, Llama 3 and Qwen2 patterns.
    static let referencePieces: [String: [(String, [String])]] = [
        "smollm": [
            ("a  1", ["a", "  ", "1"]),
            ("a   b", ["a", "  ", " b"]),
            ("a \t\tb", ["a", " \t", "\t", "b"]),
            ("  x", [" ", " x"]),
            ("x  ", ["x", "  "]),
            ("\n\n\nx", ["\n\n", "\n", "x"]),
            ("  \n  x", ["  \n ", " x"]),
            ("I'm can't IT'S we'LL 'sup", ["I", "'m", " can", "'t", " IT", "'", "S", " we", "'", "LL", " '", "sup"]),
            ("x'\u{17F} y", ["x", "'", "\u{17F}", " y"]),
            ("1234567 \u{663}\u{664}\u{665}", ["1", "2", "3", "4", "5", "6", "7", " ", "\u{663}", "\u{664}", "\u{665}"]),
            ("(hello) \"q\" ?!x", ["(", "hello", ")", " \"", "q", "\"", " ?!", "x"]),
            ("tab\tword\u{A0}nbsp\u{3000}ideo", ["tab", "\t", "word", "\u{A0}", "nbsp", "\u{3000}", "ideo"]),
            ("x\r\n\r\ny\n", ["x", "\r\n\r", "\n", "y", "\n"]),
            ("price: $1,234.50!!\n\nNext", ["price", ":", " $", "1", ",", "2", "3", "4", ".", "5", "0", "!!", "\n", "\n", "Next"]),
            ("e\u{301} \u{1C5} \u{2B0} \u{216B} \u{BD}", ["e", "\u{301}", " \u{1C5}", " \u{2B0}", " ", "\u{216B}", " ", "\u{BD}"]),
            ("\u{1F600}\u{1F44D}\u{1F3FD} \u{4E2D}\u{6587}", ["\u{1F600}\u{1F44D}\u{1F3FD}", " \u{4E2D}\u{6587}"]),
        ],
        "gpt2": [
            ("a  1", ["a", " ", " 1"]),
            ("a   b", ["a", "  ", " b"]),
            ("a \t\tb", ["a", " \t", "\t", "b"]),
            ("  x", [" ", " x"]),
            ("x  ", ["x", "  "]),
            ("\n\n\nx", ["\n\n", "\n", "x"]),
            ("  \n  x", ["  \n ", " x"]),
            ("I'm can't IT'S we'LL 'sup", ["I", "'m", " can", "'t", " IT", "'", "S", " we", "'", "LL", " '", "sup"]),
            ("x'\u{17F} y", ["x", "'", "\u{17F}", " y"]),
            ("1234567 \u{663}\u{664}\u{665}", ["1234567", " \u{663}\u{664}\u{665}"]),
            ("(hello) \"q\" ?!x", ["(", "hello", ")", " \"", "q", "\"", " ?!", "x"]),
            ("tab\tword\u{A0}nbsp\u{3000}ideo", ["tab", "\t", "word", "\u{A0}", "nbsp", "\u{3000}", "ideo"]),
            ("x\r\n\r\ny\n", ["x", "\r\n\r", "\n", "y", "\n"]),
            ("price: $1,234.50!!\n\nNext", ["price", ":", " $", "1", ",", "234", ".", "50", "!!", "\n", "\n", "Next"]),
            ("e\u{301} \u{1C5} \u{2B0} \u{216B} \u{BD}", ["e", "\u{301}", " \u{1C5}", " \u{2B0}", " \u{216B}", " \u{BD}"]),
            ("\u{1F600}\u{1F44D}\u{1F3FD} \u{4E2D}\u{6587}", ["\u{1F600}\u{1F44D}\u{1F3FD}", " \u{4E2D}\u{6587}"]),
        ],
        "llama-bpe": [
            ("a  1", ["a", " ", " ", "1"]),
            ("a   b", ["a", "  ", " b"]),
            ("a \t\tb", ["a", " \t", "\tb"]),
            ("  x", [" ", " x"]),
            ("x  ", ["x", "  "]),
            ("\n\n\nx", ["\n\n\n", "x"]),
            ("  \n  x", ["  \n", " ", " x"]),
            ("I'm can't IT'S we'LL 'sup", ["I", "'m", " can", "'t", " IT", "'S", " we", "'LL", " '", "sup"]),
            ("x'\u{17F} y", ["x", "'\u{17F}", " y"]),
            ("1234567 \u{663}\u{664}\u{665}", ["123", "456", "7", " ", "\u{663}\u{664}\u{665}"]),
            ("(hello) \"q\" ?!x", ["(hello", ")", " \"", "q", "\"", " ?!", "x"]),
            ("tab\tword\u{A0}nbsp\u{3000}ideo", ["tab", "\tword", "\u{A0}nbsp", "\u{3000}ideo"]),
            ("x\r\n\r\ny\n", ["x", "\r\n\r\n", "y", "\n"]),
            ("price: $1,234.50!!\n\nNext", ["price", ":", " $", "1", ",", "234", ".", "50", "!!\n\n", "Next"]),
            ("e\u{301} \u{1C5} \u{2B0} \u{216B} \u{BD}", ["e", "\u{301}", " \u{1C5}", " \u{2B0}", " ", "\u{216B}", " ", "\u{BD}"]),
            ("\u{1F600}\u{1F44D}\u{1F3FD} \u{4E2D}\u{6587}", ["\u{1F600}\u{1F44D}\u{1F3FD}", " \u{4E2D}\u{6587}"]),
        ],
        "qwen2": [
            ("a  1", ["a", " ", " ", "1"]),
            ("a   b", ["a", "  ", " b"]),
            ("a \t\tb", ["a", " \t", "\tb"]),
            ("  x", [" ", " x"]),
            ("x  ", ["x", "  "]),
            ("\n\n\nx", ["\n\n\n", "x"]),
            ("  \n  x", ["  \n", " ", " x"]),
            ("I'm can't IT'S we'LL 'sup", ["I", "'m", " can", "'t", " IT", "'S", " we", "'LL", " '", "sup"]),
            ("x'\u{17F} y", ["x", "'\u{17F}", " y"]),
            ("1234567 \u{663}\u{664}\u{665}", ["1", "2", "3", "4", "5", "6", "7", " ", "\u{663}", "\u{664}", "\u{665}"]),
            ("(hello) \"q\" ?!x", ["(hello", ")", " \"", "q", "\"", " ?!", "x"]),
            ("tab\tword\u{A0}nbsp\u{3000}ideo", ["tab", "\tword", "\u{A0}nbsp", "\u{3000}ideo"]),
            ("x\r\n\r\ny\n", ["x", "\r\n\r\n", "y", "\n"]),
            ("price: $1,234.50!!\n\nNext", ["price", ":", " $", "1", ",", "2", "3", "4", ".", "5", "0", "!!\n\n", "Next"]),
            ("e\u{301} \u{1C5} \u{2B0} \u{216B} \u{BD}", ["e", "\u{301}", " \u{1C5}", " \u{2B0}", " ", "\u{216B}", " ", "\u{BD}"]),
            ("\u{1F600}\u{1F44D}\u{1F3FD} \u{4E2D}\u{6587}", ["\u{1F600}\u{1F44D}\u{1F3FD}", " \u{4E2D}\u{6587}"]),
        ],
    ]

    func testPreTokenizersSplitExactlyLikeTheReferenceRegexes() throws {
        for (scheme, cases) in Self.referencePieces {
            let tokenizer = try Tokenizer(spec: Self.byteAlphabetSpec(preTokenizer: scheme))
            for (text, pieces) in cases {
                XCTAssertEqual(tokenizer.preTokenize(text), pieces, "\(scheme): \(text.debugDescription)")
                // With only byte tokens, every byte is its own token and decoding gives the text back.
                XCTAssertEqual(tokenizer.encode(text).count, text.utf8.count)
                XCTAssertEqual(try tokenizer.decode(tokenizer.encode(text)), text)
            }
        }
    }

    func testLlamaBPEPreTokenizerOnSmolLM2VocabularyMatchesReferenceIds() throws {
        // Reference: HF BPE(SmolLM2 vocab, merges, ignore_merges=True) with Split(Llama 3 regex) + ByteLevel.
        let cases: [(String, [Int32])] = [
            ("Hello  world 12345", [19556, 216, 905, 216, 33, 34, 35, 36, 37]),
            ("IT'S we'LL (hello) \"quoted\"", [2901, 23, 67, 392, 23, 16421, 365, 28120, 25, 476, 385, 5036, 18]),
            ("a  \n\n  b\tc", [81, 256, 1116, 216, 278, 197, 83]),
            ("x\r\n\r\ny", [104, 18682, 105]),
            ("price: $1234.50!!\n", [17517, 42, 1885, 33, 34, 35, 36, 30, 37, 32, 10095, 198]),
            ("  leading and trailing  ", [216, 2899, 284, 35079, 256]),
            ("\u{4E2D}\u{6587} \u{1F600} na\u{EF}ve", [28589, 29184, 40303, 218, 15486, 46494]),
            ("<|im_start|>user\nhi<|im_end|>", [1, 4093, 198, 6004, 2]),
        ]
        var spec = try { try requireFixtures(); return try Self.smolLM2Spec.get() }()
        spec.preTokenizer = "llama-bpe"
        let tokenizer = try Tokenizer(spec: spec)
        for (text, ids) in cases {
            XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: false), ids, text.debugDescription)
        }
    }

    func testTokenizerJSONWithLlama3SplitAndTemplateProcessingPrependsBOS() throws {
        // A Llama-3-shaped tokenizer.json over the 256 byte tokens plus <|begin_of_text|>.
        let alphabet = Self.byteAlphabetSpec(preTokenizer: nil).tokens
        var vocab: [String: Int] = [:]
        for (id, piece) in alphabet.enumerated() { vocab[piece] = id }
        let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        func json(pattern: String) -> [String: Any] {
            [
                "added_tokens": [["id": 256, "content": "<|begin_of_text|>", "special": true, "lstrip": false,
                                  "rstrip": false, "single_word": false, "normalized": false]],
                "normalizer": NSNull(),
                "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
                ]],
                "post_processor": ["type": "Sequence", "processors": [
                    ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
                    ["type": "TemplateProcessing",
                     "single": [["SpecialToken": ["id": "<|begin_of_text|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                     "pair": [] as [Any],
                     "special_tokens": ["<|begin_of_text|>": ["id": "<|begin_of_text|>", "ids": [256], "tokens": ["<|begin_of_text|>"]]]],
                ]],
                "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
                "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "byte_fallback": false,
                          "ignore_merges": true, "vocab": vocab, "merges": [] as [Any]],
            ]
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("tokenizer.json")
        try JSONSerialization.data(withJSONObject: json(pattern: llama3Pattern)).write(to: url)

        let tokenizer = try Tokenizer(tokenizerJSON: url)
        XCTAssertTrue(tokenizer.addsBOS)
        XCTAssertEqual(tokenizer.bosTokenId, 256)
        XCTAssertEqual(tokenizer.preTokenize("a \t\tb  \n  x"), ["a", " \t", "\tb", "  \n", " ", " x"])
        XCTAssertEqual(tokenizer.encode("hi").first, 256)
        XCTAssertEqual(tokenizer.encode("hi", addSpecialTokens: false), [0x68, 0x69])
        XCTAssertEqual(try tokenizer.decode(tokenizer.encode("hi")), "<|begin_of_text|>hi")

        try JSONSerialization.data(withJSONObject: json(pattern: "\\p{L}+")).write(to: url)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: url)) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedPreTokenizer("\\p{L}+"))
        }
    }

    func testOneTokenizerEncodesFromManyThreadsAtOnce() throws {
        let cases = try { try requireFixtures(); return try Self.encodingCases.get() }()
        let tokenizer = try Tokenizer(spec: Self.smolLM2Spec.get())  // a fresh one: its piece cache starts empty
        let mismatches = MismatchCounter()
        DispatchQueue.concurrentPerform(iterations: 8) { round in
            for item in cases.shuffled() where tokenizer.encode(item.text, addSpecialTokens: false) != item.ids {
                mismatches.add(round)
            }
        }
        XCTAssertEqual(mismatches.count, 0)
    }

    // MARK: - Chat templates

    func testChatTemplatesRenderEveryFixtureCase() throws {
        let cases = try { try requireFixtures(); return try Self.chatCases.get() }()
        XCTAssertFalse(cases.isEmpty)
        for item in cases {
            let template = try ChatTemplate(template: item.template, bosToken: item.bos_token)
            XCTAssertEqual(template.family.rawValue, item.family)
            XCTAssertEqual(template.render(item.messages, addGenerationPrompt: item.add_generation_prompt), item.text,
                           "\(item.family) \(item.messages.map(\.role)) generation prompt: \(item.add_generation_prompt)")
        }
    }

    func testSmolLM2TemplateInsertsItsDefaultSystemPrompt() throws {
        let template = try ChatTemplate(template: Self.smolLM2Template, bosToken: "<|im_start|>")
        XCTAssertEqual(template.family, .chatml)
        XCTAssertEqual(template.defaultSystemPrompt, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        XCTAssertEqual(template.render([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(template.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi")],
                                       addGenerationPrompt: false),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    }

    func testUnknownOrMissingChatTemplateThrows() {
        XCTAssertThrowsError(try ChatTemplate(template: "{{ messages[0]['content'] }}", bosToken: nil)) { error in
            guard case .unknownChatTemplate? = error as? TokenizerError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try ChatTemplate(template: nil, bosToken: nil)) { error in
            XCTAssertEqual(error as? TokenizerError, .missingChatTemplate)
        }
    }
}

/// Counts failures seen on several threads.
private final class MismatchCounter: @unchecked Sendable {
    // @unchecked: `value` is only touched with `lock` held.
    private let lock = NSLock()
    private var value = 0
    var count: Int { lock.lock(); defer { lock.unlock() }; return value }
    func add(_ round: Int) { lock.lock(); value += 1; lock.unlock() }
}
