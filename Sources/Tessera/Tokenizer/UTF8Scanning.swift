/// UTF-8 checks shared by encoding (reject bad input) and streaming decoding (hold back an unfinished
/// character). Both follow the Unicode well-formedness table (Unicode 15, table 3-7): no overlong forms,
/// no surrogates, nothing above U+10FFFF.
enum UTF8Scanning {
    /// The valid range of the second byte after a lead byte, or `nil` when `lead` cannot start a
    /// multi-byte sequence.
    @inline(__always)
    static func secondByteRange(after lead: UInt8) -> ClosedRange<UInt8>? {
        switch lead {
        case 0xC2...0xDF, 0xE1...0xEC, 0xEE...0xEF, 0xF1...0xF3: return 0x80...0xBF
        case 0xE0: return 0xA0...0xBF
        case 0xED: return 0x80...0x9F
        case 0xF0: return 0x90...0xBF
        case 0xF4: return 0x80...0x8F
        default: return nil
        }
    }

    /// Sequence length announced by a lead byte (1 for ASCII, 0 for a byte that cannot lead).
    @inline(__always)
    static func sequenceLength(lead: UInt8) -> Int {
        switch lead {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: return 2
        case 0xE0...0xEF: return 3
        case 0xF0...0xF4: return 4
        default: return 0
        }
    }

    /// Offset of the first byte of the first ill-formed sequence, or `nil` when all of `bytes` is UTF-8.
    static func firstInvalidOffset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            let lead = bytes[i]
            if lead < 0x80 { i += 1; continue }
            let length = sequenceLength(lead: lead)
            guard length > 1, i + length <= n, let second = secondByteRange(after: lead),
                  second.contains(bytes[i + 1]) else { return i }
            for k in 2..<max(2, length) where bytes[i + k] & 0xC0 != 0x80 { return i }
            i += length
        }
        return nil
    }

    /// How many bytes at the end of `bytes` are a well-formed but unfinished character: the bytes a
    /// streaming decoder must hold back until the next token brings the rest. 0 when the tail is complete
    /// or already ill-formed (an ill-formed tail becomes U+FFFD at once, exactly as a whole decode would).
    static func unfinishedSuffixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        guard n > 0 else { return 0 }
        // A sequence is at most 4 bytes, so an unfinished one started within the last 3.
        for back in 1...min(3, n) {
            let lead = bytes[n - back]
            if lead & 0xC0 == 0x80 { continue }  // continuation byte: the lead is further back
            let length = sequenceLength(lead: lead)
            guard length > back else { return 0 }  // ASCII, a complete sequence, or not a lead byte
            if back >= 2 {
                guard let second = secondByteRange(after: lead), second.contains(bytes[n - back + 1]) else { return 0 }
            }
            return back
        }
        return 0
    }
}
