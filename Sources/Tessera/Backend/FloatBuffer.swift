#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TesseraKernels

/// A fixed-size, 64-byte-aligned, zero-initialised float32 array that lives outside Swift's
/// copy-on-write world: weights, activations and KV caches are all `FloatBuffer`s.
///
/// Not thread-safe by itself: the owner (a model, a cache, a scratch) decides who writes.
public final class FloatBuffer: @unchecked Sendable {
    /// Number of floats.
    public let count: Int
    /// Base address; valid for the buffer's lifetime.
    public let pointer: UnsafeMutablePointer<Float>

    /// Bytes of the huge-page mapping holding the buffer, or 0 when the allocator does.
    private let mapped: Int64

    /// Buffers from this size on (KV pools, f32 weight copies) are mapped 2 MiB-aligned and asked
    /// to be backed by transparent huge pages (`tsr_huge_alloc`): they are streamed whole, and
    /// 4 KiB pages cost a TLB miss every 4 KiB.
    static let hugePageMinimumBytes = 4 << 20

    /// Allocates `count` zeroed floats. Returns nil only when the system is out of memory.
    public init?(count: Int) {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        var mapped: Int64 = 0
        var raw: UnsafeMutableRawPointer?
        if bytes >= Self.hugePageMinimumBytes { raw = tsr_huge_alloc(Int64(bytes), &mapped) }  // zeroed by the kernel
        if raw == nil {
            mapped = 0
            guard posix_memalign(&raw, 64, bytes) == 0, let r = raw else { return nil }
            memset(r, 0, bytes)
        }
        guard let raw else { return nil }
        self.mapped = mapped
        self.count = count
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit {
        if mapped > 0 { tsr_huge_free(pointer, mapped) } else { free(pointer) }
    }

    /// Size in bytes.
    public var byteCount: Int { count * MemoryLayout<Float>.stride }

    /// A copy of the contents, for tests and small outputs.
    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}
