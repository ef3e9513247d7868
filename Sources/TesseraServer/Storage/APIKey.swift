import Crypto
import Foundation

/// API keys: 32 random bytes behind a recognisable prefix, stored only as their SHA-256.
public enum APIKey {
    /// Every key starts with this, so a leaked key is easy to recognise and scan for.
    public static let prefix = "tsr_"

    /// A new key (shown once, when it is made) and the hash to store.
    public static func generate() -> (key: String, hash: Data, displayPrefix: String) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let body = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        let key = prefix + body
        return (key, hash(key), String(key.prefix(prefix.count + 4)))
    }

    /// SHA-256 of the key's bytes.
    public static func hash(_ key: String) -> Data { Data(SHA256.hash(data: Data(key.utf8))) }

    /// Compares in time that depends only on the lengths, never on where the bytes differ.
    public static func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }
}
