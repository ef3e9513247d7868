#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size, 64-byte-aligned, zero-initialised float32 array that lives outside Swift's
/// copy-on-write world: weights, activations and KV caches are all `FloatBuffer`s.
///
/// Not thread-safe by itself: the owner (a model, a cache, a scratch) decides who writes.
public final class FloatBuffer: @unchecked Sendable {
    /// Number of floats.
    public let count: Int
    /// Base address; valid for the buffer's lifetime.
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates `count` zeroed floats. Returns nil only when the system is out of memory.
    public init?(count: Int) {
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { return nil }
        memset(raw, 0, bytes)
        self.count = count
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { free(pointer) }

    /// Size in bytes.
    public var byteCount: Int { count * MemoryLayout<Float>.stride }

    /// A copy of the contents, for tests and small outputs.
    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}
