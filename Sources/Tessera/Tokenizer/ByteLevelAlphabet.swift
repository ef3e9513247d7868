/// GPT-2's reversible map between bytes and printable Unicode characters (`bytes_to_unicode` in
/// openai/gpt-2 `encoder.py`, `ByteLevel` in Hugging Face tokenizers).
///
/// Printable Latin-1 bytes (`!`…`~`, `¡`…`¬`, `®`…`ÿ`) stand for themselves; the other 68 bytes are
/// numbered from U+0100 in byte order, so space (0x20) is `Ġ` (U+0120) and newline (0x0A) is `Ċ` (U+010A).
enum ByteLevelAlphabet {
    /// The character that stands for each byte, by byte value.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next)!  // 256..<324: always valid scalars
                next += 1
            }
        }
        return table
    }()

    /// The byte a character stands for, or `nil` for characters outside the alphabet.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let value = scalar.value
        if value < 256 {
            let printable = (0x21...0x7E).contains(value) || (0xA1...0xAC).contains(value) || (0xAE...0xFF).contains(value)
            return printable ? UInt8(value) : nil
        }
        return byteForHighScalar[Int(value)]
    }

    private static let byteForHighScalar: [Int: UInt8] = {
        var map: [Int: UInt8] = [:]
        for (byte, scalar) in scalarForByte.enumerated() where scalar.value >= 256 {
            map[Int(scalar.value)] = UInt8(byte)
        }
        return map
    }()

    /// The token text for raw bytes (`"Ġthe"` for `" the"`).
    static func encode<S: Sequence<UInt8>>(_ bytes: S) -> String {
        var text = String.UnicodeScalarView()
        for byte in bytes { text.append(scalarForByte[Int(byte)]) }
        return String(text)
    }

    /// The bytes a token's text stands for. As Hugging Face's `ByteLevel` decoder does, a token with any
    /// character outside the alphabet (an added token such as `"<tool call>"` with a raw space) is taken
    /// as its own UTF-8 text.
    static func decode(_ piece: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(piece.unicodeScalars.count)
        for scalar in piece.unicodeScalars {
            guard let byte = byte(for: scalar) else { return Array(piece.utf8) }
            bytes.append(byte)
        }
        return bytes
    }
}
