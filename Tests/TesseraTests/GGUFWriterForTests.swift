import Foundation
@testable import Tessera

/// Writes small GGUF files, valid or deliberately broken, for the bad-input tests.
enum GGUFWriterForTests {
    struct Tensor {
        var name: String
        var dims: [UInt64]       // innermost first
        var type: UInt32
        var data: [UInt8]
        var offsetOverride: UInt64? = nil
    }

    static func bytes(metadata: [(String, GGUFValue)], tensors: [Tensor], version: UInt32 = 3) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        func typeId(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint8: 0
            case .int8: 1
            case .uint16: 2
            case .int16: 3
            case .uint32: 4
            case .int32: 5
            case .float32: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            case .uint64: 10
            case .int64: 11
            case .float64: 12
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .uint32(let x): u32(x)
            case .int32(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .float32(let x): u32(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): str(s)
            case .array(let items):
                u32(items.first.map(typeId) ?? 0)
                u64(UInt64(items.count))
                items.forEach(value)
            case .uint64(let x): u64(x)
            case .int64(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .float64(let x): u64(x.bitPattern)
            }
        }
        out += Array("GGUF".utf8)
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata { str(k); u32(typeId(v)); value(v) }
        var offset: UInt64 = 0
        var offsets: [UInt64] = []
        for t in tensors {
            str(t.name)
            u32(UInt32(t.dims.count))
            t.dims.forEach(u64)
            u32(t.type)
            let o = t.offsetOverride ?? offset
            u64(o)
            offsets.append(offset)
            offset += (UInt64(t.data.count) + 31) / 32 * 32
        }
        while out.count % 32 != 0 { out.append(0) }
        for t in tensors {
            out += t.data
            while out.count % 32 != 0 { out.append(0) }
        }
        return out
    }

    static func write(metadata: [(String, GGUFValue)], tensors: [Tensor], version: UInt32 = 3) throws -> URL {
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("test.gguf")
        try Data(bytes(metadata: metadata, tensors: tensors, version: version)).write(to: url)
        return url
    }
}
