import TesseraKernels

/// One GGUF metadata value, with its stored type kept.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// An array; every element has the same stored type.
    case array([GGUFValue])

    /// The value as an integer, for any integer type.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): v <= UInt64(Int.max) ? Int(v) : nil
        case .int64(let v): Int(v)
        default: nil
        }
    }
    /// The value as a float, for float and integer types.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: intValue.map(Double.init)
        }
    }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: [GGUFValue]? { if case .array(let a) = self { a } else { nil } }
}

/// A tensor's description in a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// Dimensions innermost-first, as GGUF stores them: `[576, 1536]` is 1536 rows of 576.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Offset from the start of the data section.
    public let offset: Int
    /// Size of the tensor's data in bytes.
    public let byteCount: Int
    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A GGUF (v2/v3) file over a read-only memory map: metadata, tensor infos and data.
///
/// Everything the header declares is checked against the file before it is used: lengths,
/// counts, offsets and sizes, so a truncated or lying file gives a ``FormatError``.
public final class GGUFFile: @unchecked Sendable {
    public let file: MappedFile
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    private let tensorIndex: [String: Int]
    /// Byte offset of the data section in the file.
    public let dataOffset: Int
    public var path: String { file.path }

    /// Opens and validates `path`.
    public convenience init(path: String) throws(FormatError) {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws(FormatError) {
        self.file = file
        var r = ByteReader(bytes: file.bytes, path: file.path)
        let magic = try r.read(UInt32.self)
        guard magic == 0x4655_4747 else { throw FormatError(file: file.path, reason: .badMagic(expected: "GGUF")) } // "GGUF"
        version = try r.read(UInt32.self)
        guard version == 2 || version == 3 else { throw FormatError(file: file.path, reason: .unsupportedVersion(version)) }
        let tensorCount = try r.count(minimumBytesEach: 24, what: "tensor count")
        let kvCount = try r.count(minimumBytesEach: 12, what: "metadata count")

        var metadata: [String: GGUFValue] = [:]
        metadata.reserveCapacity(kvCount)
        for _ in 0..<kvCount {
            let key = try r.string(what: "a metadata key")
            let type = try r.read(UInt32.self)
            metadata[key] = try r.value(type: type, key: key, depth: 0)
        }
        self.metadata = metadata

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(tensorCount)
        var index: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let name = try r.string(what: "a tensor name")
            let nDims = try r.read(UInt32.self)
            guard nDims >= 1, nDims <= 4 else {
                throw FormatError(file: file.path, reason: .implausible(what: "dimension count of tensor '\(name)'", value: UInt64(nDims)))
            }
            var dims: [Int] = []
            var elements = 1
            for _ in 0..<nDims {
                let d = try r.read(UInt64.self)
                guard d <= UInt64(Int32.max) else {
                    throw FormatError(file: file.path, reason: .implausible(what: "dimension of tensor '\(name)'", value: d))
                }
                dims.append(Int(d))
                let (m, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                guard !overflow, m <= file.size * 8 else {
                    throw FormatError(file: file.path, reason: .implausible(what: "element count of tensor '\(name)'", value: d))
                }
                elements = m
            }
            let type = GGMLType(rawValue: try r.read(UInt32.self))
            let offset = try r.read(UInt64.self)
            guard index[name] == nil else { throw FormatError(file: file.path, reason: .duplicateTensor(name)) }
            var bytes = 0
            if type.isSupported {
                guard dims[0] % type.blockElements == 0, let b = type.byteCount(elements: elements) else {
                    throw FormatError(file: file.path, reason: .badTensorShape(
                        tensor: name, shape: dims, why: "rows of \(dims[0]) are not whole \(type) blocks of \(type.blockElements)"))
                }
                bytes = b
            }
            guard offset <= UInt64(file.size) else {
                throw FormatError(file: file.path, reason: .tensorOutOfBounds(tensor: name, offset: offset, size: UInt64(bytes), available: UInt64(file.size)))
            }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: Int(offset), byteCount: bytes))
        }
        let alignment = metadata["general.alignment"]?.intValue ?? 32
        guard alignment > 0, alignment % 8 == 0, alignment <= 1 << 20 else {
            throw FormatError(file: file.path, reason: .implausible(what: "general.alignment", value: UInt64(max(alignment, 0))))
        }
        let dataOffset = (r.offset + alignment - 1) / alignment * alignment
        let available = file.size - min(dataOffset, file.size)
        for info in infos where info.type.isSupported {
            if info.offset % alignment != 0 || info.offset + info.byteCount > available {
                throw FormatError(file: file.path, reason: .tensorOutOfBounds(
                    tensor: info.name, offset: UInt64(info.offset), size: UInt64(info.byteCount), available: UInt64(available)))
            }
        }
        self.dataOffset = dataOffset
        self.tensors = infos
        self.tensorIndex = index
    }

    /// The tensor named `name`, if present.
    public func tensor(named name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// Raw bytes of a tensor (bounds were checked when the file was opened).
    public func data(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + info.offset)..<(dataOffset + info.offset + info.byteCount)])
    }

    /// Dequantizes a whole tensor into `destination` (at least `elementCount` floats).
    public func dequantize(_ info: GGUFTensorInfo, into destination: UnsafeMutablePointer<Float>) throws(FormatError) {
        guard info.type.isSupported else {
            throw FormatError(file: path, reason: .unsupportedTensorType(tensor: info.name, type: info.type.description))
        }
        let raw = data(of: info)
        let status = tsr_dequantize(Int32(info.type.rawValue), raw.baseAddress, destination, Int64(info.elementCount))
        guard status == TSR_OK else {
            throw FormatError(file: path, reason: .unsupportedTensorType(tensor: info.name, type: info.type.description))
        }
    }

    /// Dequantizes a whole tensor into a new array (for tests and small tensors).
    public func dequantize(_ info: GGUFTensorInfo) throws(FormatError) -> [Float] {
        var out = [Float](repeating: 0, count: info.elementCount)
        try out.withUnsafeMutableBufferPointer { (buf) throws(FormatError) in
            guard let base = buf.baseAddress else { return }
            try dequantize(info, into: base)
        }
        return out
    }
}

/// A bounds-checked little-endian cursor over a mapped file.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    private func need(_ n: Int) throws(FormatError) {
        if n < 0 || offset + n > bytes.count {
            throw FormatError(file: path, reason: .truncated(offset: offset, need: n, fileSize: bytes.count))
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(FormatError) -> T {
        try need(MemoryLayout<T>.size)
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    /// A u64 count, refused when `count × minimumBytesEach` could not fit in the rest of the file.
    mutating func count(minimumBytesEach: Int, what: String) throws(FormatError) -> Int {
        let n = try read(UInt64.self)
        let remaining = UInt64(bytes.count - offset)
        guard n <= remaining / UInt64(max(minimumBytesEach, 1)) else {
            throw FormatError(file: path, reason: .implausible(what: what, value: n))
        }
        return Int(n)
    }

    mutating func string(what: String) throws(FormatError) -> String {
        let n = try count(minimumBytesEach: 1, what: "length of \(what)")
        try need(n)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
        offset += n
        guard let s = String(validating: slice, as: UTF8.self) else {
            throw FormatError(file: path, reason: .invalidUTF8(what: what))
        }
        return s
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws(FormatError) -> GGUFValue {
        switch type {
        case 0: return .uint8(try read(UInt8.self))
        case 1: return .int8(try read(Int8.self))
        case 2: return .uint16(try read(UInt16.self))
        case 3: return .int16(try read(Int16.self))
        case 4: return .uint32(try read(UInt32.self))
        case 5: return .int32(try read(Int32.self))
        case 6: return .float32(Float(bitPattern: try read(UInt32.self)))
        case 7:
            let b = try read(UInt8.self)
            guard b <= 1 else { throw FormatError(file: path, reason: .implausible(what: "bool value of '\(key)'", value: UInt64(b))) }
            return .bool(b == 1)
        case 8: return .string(try string(what: "the value of '\(key)'"))
        case 9:
            guard depth == 0 else { throw FormatError(file: path, reason: .implausible(what: "array nesting depth of '\(key)'", value: UInt64(depth + 1))) }
            let elementType = try read(UInt32.self)
            let n = try count(minimumBytesEach: 1, what: "array length of '\(key)'")
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try read(UInt64.self))
        case 11: return .int64(try read(Int64.self))
        case 12: return .float64(Double(bitPattern: try read(UInt64.self)))
        default: throw FormatError(file: path, reason: .unknownValueType(key: key, type: type))
        }
    }
}
