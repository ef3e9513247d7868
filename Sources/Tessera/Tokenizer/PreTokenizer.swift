/// Splits text into the pieces BPE runs on, with hand-written scanners that give exactly what the
/// reference regexes give under Oniguruma (Hugging Face tokenizers) or llama.cpp:
///
/// - GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// - Qwen2: the Llama 3 pattern with `\p{N}` (one digit) for `\p{N}{1,3}`.
///
/// A scanner works on a run of scalars whose classes were computed once (``ScalarClass``); a piece's end
/// is the end of the text for the lookahead in `\s+(?!\S)`, as it is for a regex run on that piece.
struct PreTokenizer: Sendable {
    /// One splitting pass; each pass splits every piece the previous pass made.
    enum Step: Sendable, Equatable {
        /// Hugging Face `Digits`: every digit alone (`individual`), or each run of digits as one piece.
        case digits(individual: Bool)
        case gpt2
        /// The Llama 3 pattern; `maxDigits` is 3 for Llama 3, 1 for Qwen2.
        case llama3(maxDigits: Int)
    }

    let steps: [Step]
    /// Whether llama.cpp turns on `ignore_merges` for this pre-tokenizer (it does for the Llama 3 names).
    let ignoresMergesByDefault: Bool

    /// The pre-tokenizer GGUF's `tokenizer.ggml.pre` names (llama.cpp's names).
    init(ggufName name: String?) throws {
        ignoresMergesByDefault = ["llama-bpe", "llama3", "llama-v3", "falcon3"].contains(name)
        switch name {
        case nil, "default", "gpt2", "gpt-2", "phi-2", "roberta-bpe":
            steps = [.gpt2]
        case "smollm":
            steps = [.digits(individual: true), .gpt2]
        case "llama-bpe", "llama3", "llama-v3", "falcon3", "dbrx", "smaug-bpe":
            steps = [.llama3(maxDigits: 3)]
        case "qwen2", "deepseek-r1-qwen", "stablelm2":
            steps = [.llama3(maxDigits: 1)]
        case let other?:
            throw TokenizerError.unsupportedPreTokenizer(other)
        }
    }

    init(steps: [Step]) {
        self.steps = steps
        ignoresMergesByDefault = false
    }

    /// The GGUF name of a step list, when it has one (a `tokenizer.json` is mapped onto these).
    var ggufName: String? {
        switch steps {
        case [.gpt2]: return "gpt2"
        case [.digits(individual: true), .gpt2]: return "smollm"
        case [.llama3(maxDigits: 3)]: return "llama-bpe"
        case [.llama3(maxDigits: 1)]: return "qwen2"
        default: return nil
        }
    }

    /// Splits scalars `range` of `text` into `pieces` (emptied first), in order. `scratch` is a second
    /// buffer for passes after the first; both keep their capacity from call to call.
    func split(_ text: ScalarView, _ range: Range<Int>, into pieces: inout [Range<Int>], scratch: inout [Range<Int>]) {
        pieces.removeAll(keepingCapacity: true)
        guard !range.isEmpty else { return }
        guard let first = steps.first else { pieces.append(range); return }
        Self.apply(first, text, range, into: &pieces)
        for step in steps.dropFirst() {
            scratch.removeAll(keepingCapacity: true)
            for piece in pieces { Self.apply(step, text, piece, into: &scratch) }
            swap(&pieces, &scratch)
        }
    }

    private static func apply(_ step: Step, _ text: ScalarView, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
        switch step {
        case .digits(let individual): splitDigits(text, range, individual: individual, into: &pieces)
        case .gpt2: splitGPT2(text, range, into: &pieces)
        case .llama3(let maxDigits): splitLlama3(text, range, maxDigits: maxDigits, into: &pieces)
        }
    }

    // MARK: - Scanners

    /// Hugging Face `Digits`: digits (`\p{N}`, Rust's `char::is_numeric`) isolated, other runs kept.
    static func splitDigits(_ text: ScalarView, _ range: Range<Int>, individual: Bool, into pieces: inout [Range<Int>]) {
        let c = text.classes
        var i = range.lowerBound
        while i < range.upperBound {
            var j = i + 1
            if c[i] & ScalarClass.categoryMask == ScalarClass.number {
                if !individual {
                    while j < range.upperBound, c[j] & ScalarClass.categoryMask == ScalarClass.number { j += 1 }
                }
            } else {
                while j < range.upperBound, c[j] & ScalarClass.categoryMask != ScalarClass.number { j += 1 }
            }
            pieces.append(i..<j)
            i = j
        }
    }

    static func splitGPT2(_ text: ScalarView, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
        let c = text.classes
        let end = range.upperBound
        var i = range.lowerBound
        while i < end {
            let cls = c[i]
            // 's|'t|'re|'ve|'m|'ll|'d
            if cls & ScalarClass.apostrophe != 0, let length = text.contractionLength(at: i, end: end, caseInsensitive: false) {
                pieces.append(i..<(i + length)); i += length; continue
            }
            let category = cls & ScalarClass.categoryMask
            var runStart = -1
            var runCategory = category
            if category != ScalarClass.whitespace {
                runStart = i  // \p{L}+ | \p{N}+ | [^\s\p{L}\p{N}]+ without the optional space
            } else if cls & ScalarClass.space != 0, i + 1 < end, c[i + 1] & ScalarClass.categoryMask != ScalarClass.whitespace {
                runStart = i + 1  // " ?" took the space
                runCategory = c[i + 1] & ScalarClass.categoryMask
            }
            if runStart >= 0 {
                var j = runStart + 1
                while j < end, c[j] & ScalarClass.categoryMask == runCategory { j += 1 }
                pieces.append(i..<j); i = j; continue
            }
            i = splitWhitespace(c, from: i, end: end, into: &pieces)
        }
    }

    static func splitLlama3(_ text: ScalarView, _ range: Range<Int>, maxDigits: Int, into pieces: inout [Range<Int>]) {
        let c = text.classes
        let end = range.upperBound
        var i = range.lowerBound
        while i < end {
            let cls = c[i]
            let category = cls & ScalarClass.categoryMask
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cls & ScalarClass.apostrophe != 0, let length = text.contractionLength(at: i, end: end, caseInsensitive: true) {
                pieces.append(i..<(i + length)); i += length; continue
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            var letterStart = -1
            if category == ScalarClass.letter {
                letterStart = i
            } else if category != ScalarClass.number, cls & ScalarClass.newline == 0,
                      i + 1 < end, c[i + 1] & ScalarClass.categoryMask == ScalarClass.letter {
                letterStart = i + 1
            }
            if letterStart >= 0 {
                var j = letterStart + 1
                while j < end, c[j] & ScalarClass.categoryMask == ScalarClass.letter { j += 1 }
                pieces.append(i..<j); i = j; continue
            }
            // \p{N}{1,maxDigits}
            if category == ScalarClass.number {
                var j = i + 1
                while j < end, j - i < maxDigits, c[j] & ScalarClass.categoryMask == ScalarClass.number { j += 1 }
                pieces.append(i..<j); i = j; continue
            }
            // " ?[^\s\p{L}\p{N}]+[\r\n]*"
            var otherStart = -1
            if category == ScalarClass.other {
                otherStart = i
            } else if cls & ScalarClass.space != 0, i + 1 < end, c[i + 1] & ScalarClass.categoryMask == ScalarClass.other {
                otherStart = i + 1
            }
            if otherStart >= 0 {
                var j = otherStart + 1
                while j < end, c[j] & ScalarClass.categoryMask == ScalarClass.other { j += 1 }
                while j < end, c[j] & ScalarClass.newline != 0 { j += 1 }
                pieces.append(i..<j); i = j; continue
            }
            // \s*[\r\n]+ : greedy \s* backs off to the last \r or \n of the whitespace run.
            var runEnd = i
            var lastNewline = -1
            while runEnd < end, c[runEnd] & ScalarClass.categoryMask == ScalarClass.whitespace {
                if c[runEnd] & ScalarClass.newline != 0 { lastNewline = runEnd }
                runEnd += 1
            }
            if lastNewline >= 0 {
                pieces.append(i..<(lastNewline + 1)); i = lastNewline + 1; continue
            }
            i = splitWhitespace(c, from: i, end: end, into: &pieces)
        }
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: a run that reaches the end of the piece is one piece;
    /// a longer run before a non-space leaves its last scalar to start the next piece (so `"a   b"` is
    /// `a`, `"  "`, `" b"`); a single whitespace scalar before a non-space is a piece alone.
    /// Returns where scanning resumes.
    @inline(__always)
    private static func splitWhitespace(_ c: UnsafeBufferPointer<UInt8>, from i: Int, end: Int, into pieces: inout [Range<Int>]) -> Int {
        var j = i + 1
        while j < end, c[j] & ScalarClass.categoryMask == ScalarClass.whitespace { j += 1 }
        if j < end, j - i >= 2 { j -= 1 }
        pieces.append(i..<j)
        return j
    }
}

/// Class bits for one scalar: its regex category (`\p{L}`, `\p{N}`, `\s`, or anything else) and the few
/// exact characters the patterns name.
enum ScalarClass {
    static let categoryMask: UInt8 = 0b11
    static let letter: UInt8 = 0
    static let number: UInt8 = 1
    static let whitespace: UInt8 = 2
    static let other: UInt8 = 3
    /// U+0020, the only character `" ?"` accepts.
    static let space: UInt8 = 1 << 2
    /// `\r` or `\n`.
    static let newline: UInt8 = 1 << 3
    /// `'` (U+0027), which starts a contraction.
    static let apostrophe: UInt8 = 1 << 4

    /// Classes of the Basic Multilingual Plane (64 KiB, built once): property lookups are slow enough
    /// to dominate encoding of non-Latin text. Surrogate code points, never decoded, are `other`.
    private static let basicPlane: [UInt8] = (0..<0x10000).map { value in
        Unicode.Scalar(UInt32(value)).map(classify) ?? other
    }

    @inline(__always)
    static func of(_ value: UInt32) -> UInt8 {
        if value < 0x10000 { return basicPlane[Int(value)] }
        return classify(Unicode.Scalar(value) ?? "\u{FFFD}")
    }

    /// `\p{L}` is general category L*, `\p{N}` is N*, `\s` is the White_Space property (Oniguruma's
    /// Unicode `\s`: U+0009–U+000D, U+0085 and the Zs/Zl/Zp separators).
    private static func classify(_ scalar: Unicode.Scalar) -> UInt8 {
        let properties = scalar.properties
        if properties.isWhitespace {
            var bits = whitespace
            if scalar == " " { bits |= space }
            if scalar == "\r" || scalar == "\n" { bits |= newline }
            return bits
        }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return scalar == "'" ? (other | apostrophe) : other
        }
    }
}

/// One stretch of UTF-8 text decoded to scalars: each scalar's class and where its bytes start.
/// Buffers are reused from one stretch to the next within an encode call.
struct ClassifiedText {
    /// The whole input's bytes; `starts` index into it.
    var bytes: [UInt8] = []
    /// Class bits per scalar (``ScalarClass``).
    var classes: [UInt8] = []
    /// Byte offset where each scalar starts, plus one final entry: the end of the stretch.
    var starts: [Int] = []

    /// Decodes `bytes[range]`, which must be valid UTF-8.
    mutating func load(_ range: Range<Int>) {
        classes.removeAll(keepingCapacity: true)
        starts.removeAll(keepingCapacity: true)
        var i = range.lowerBound
        let end = range.upperBound
        bytes.withUnsafeBufferPointer { b in
            while i < end {
                let lead = b[i]
                starts.append(i)
                if lead < 0x80 {
                    classes.append(ScalarClass.of(UInt32(lead)))
                    i += 1
                    continue
                }
                var value: UInt32
                let length: Int
                if lead < 0xE0 {
                    value = UInt32(lead & 0x1F); length = 2
                } else if lead < 0xF0 {
                    value = UInt32(lead & 0x0F); length = 3
                } else {
                    value = UInt32(lead & 0x07); length = 4
                }
                for k in 1..<length { value = (value << 6) | UInt32(b[i + k] & 0x3F) }
                classes.append(ScalarClass.of(value))
                i += length
            }
        }
        starts.append(end)
    }

    /// Byte range of scalars `range`.
    @inline(__always)
    func byteRange(_ range: Range<Int>) -> Range<Int> { starts[range.lowerBound]..<starts[range.upperBound] }

    /// Runs `body` with borrowed pointers to the buffers (no reference counting in the scanners).
    func withView<R>(_ body: (ScalarView) -> R) -> R {
        bytes.withUnsafeBufferPointer { b in
            classes.withUnsafeBufferPointer { c in
                starts.withUnsafeBufferPointer { s in body(ScalarView(bytes: b, classes: c, starts: s)) }
            }
        }
    }
}

/// A borrowed view of a ``ClassifiedText``, valid only inside ``ClassifiedText/withView(_:)``.
struct ScalarView {
    let bytes: UnsafeBufferPointer<UInt8>
    let classes: UnsafeBufferPointer<UInt8>
    let starts: UnsafeBufferPointer<Int>

    /// Length in scalars of the contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) starting with the
    /// apostrophe at scalar `i`, or `nil`. Case-insensitive matching also takes `ſ` (U+017F) for `s`, as
    /// Unicode case folding does.
    func contractionLength(at i: Int, end: Int, caseInsensitive: Bool) -> Int? {
        guard i + 1 < end else { return nil }
        let first = letter(at: i + 1, caseInsensitive: caseInsensitive)
        switch first {
        case "s", "t", "m", "d": return 2
        case "r", "v", "l":
            guard i + 2 < end else { return nil }
            let second = letter(at: i + 2, caseInsensitive: caseInsensitive)
            let wanted: Character = first == "l" ? "l" : "e"
            return second == wanted ? 3 : nil
        default: return nil
        }
    }

    private func letter(at index: Int, caseInsensitive: Bool) -> Character? {
        let offset = starts[index]
        let byte = bytes[offset]
        if byte < 0x80 {
            var value = byte
            if caseInsensitive, (0x41...0x5A).contains(value) { value |= 0x20 }
            return Character(Unicode.Scalar(value))
        }
        if caseInsensitive, byte == 0xC5, bytes[offset + 1] == 0xBF { return "s" }  // ſ
        return nil
    }
}
