import Foundation
import TesseraKernels

/// A tensor's description in a safetensors file.
public struct SafetensorsTensorInfo: Sendable {
    /// Element types Tessera reads from safetensors.
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16"
        var size: Int { self == .f32 ? 4 : 2 }
    }
    public let name: String
    public let dtype: DType
    /// Shape outermost-first, as PyTorch: `[out, in]` for a linear weight.
    public let shape: [Int]
    /// Byte range within the data section.
    public let dataRange: Range<Int>
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file over a read-only memory map. The JSON header is validated against
/// the file: offsets inside the data, sizes matching dtype and shape.
public final class SafetensorsFile: @unchecked Sendable {
    public let file: MappedFile
    public let tensors: [String: SafetensorsTensorInfo]
    /// `__metadata__` strings from the header.
    public let metadata: [String: String]
    private let dataOffset: Int
    public var path: String { file.path }

    public convenience init(path: String) throws(FormatError) {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws(FormatError) {
        self.file = file
        let path = file.path
        var r = ByteReader(bytes: file.bytes, path: path)
        let headerLength = try r.read(UInt64.self)
        guard headerLength >= 2, headerLength <= UInt64(file.size - 8), headerLength <= 100_000_000 else {
            throw FormatError(file: path, reason: .implausible(what: "safetensors header length", value: headerLength))
        }
        let headerBytes = Data(UnsafeRawBufferPointer(rebasing: file.bytes[8..<(8 + Int(headerLength))]))
        guard let object = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: Any] else {
            throw FormatError(file: path, reason: .invalidJSON("safetensors header is not a JSON object"))
        }
        dataOffset = 8 + Int(headerLength)
        let dataSize = file.size - dataOffset
        var tensors: [String: SafetensorsTensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = v as? String }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any],
                  let offsetsAny = entry["data_offsets"] as? [Any], offsetsAny.count == 2
            else { throw FormatError(file: path, reason: .invalidJSON("tensor '\(name)' lacks dtype, shape or data_offsets")) }
            guard let dtype = SafetensorsTensorInfo.DType(rawValue: dtypeName) else {
                throw FormatError(file: path, reason: .unsupportedTensorType(tensor: name, type: dtypeName))
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offsets = offsetsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, offsets.count == 2, shape.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
                throw FormatError(file: path, reason: .invalidJSON("tensor '\(name)' has a non-integer shape or data_offsets"))
            }
            var elements = 1
            for d in shape {
                let (m, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw FormatError(file: path, reason: .badTensorShape(tensor: name, shape: shape, why: "element count overflows")) }
                elements = m
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end <= dataSize else {
                throw FormatError(file: path, reason: .tensorOutOfBounds(tensor: name, offset: UInt64(max(begin, 0)), size: UInt64(max(end - begin, 0)), available: UInt64(dataSize)))
            }
            guard end - begin == elements * dtype.size else {
                throw FormatError(file: path, reason: .badTensorShape(
                    tensor: name, shape: shape, why: "\(dtypeName) data is \(end - begin) bytes, shape needs \(elements * dtype.size)"))
            }
            tensors[name] = SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Raw bytes of a tensor.
    public func data(of info: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + info.dataRange.lowerBound)..<(dataOffset + info.dataRange.upperBound)])
    }

    /// Converts a tensor to float32 into `destination` (at least `elementCount` floats).
    public func convert(_ info: SafetensorsTensorInfo, into destination: UnsafeMutablePointer<Float>) {
        let raw = data(of: info)
        let type: Int32 = switch info.dtype {
        case .f32: Int32(TSR_GGML_F32)
        case .f16: Int32(TSR_GGML_F16)
        case .bf16: Int32(TSR_GGML_BF16)
        }
        _ = tsr_dequantize(type, raw.baseAddress, destination, Int64(info.elementCount))
    }

    /// A tensor as a new float array (tests, small tensors).
    public func floats(_ info: SafetensorsTensorInfo) -> [Float] {
        var out = [Float](repeating: 0, count: info.elementCount)
        out.withUnsafeMutableBufferPointer { if let b = $0.baseAddress { convert(info, into: b) } }
        return out
    }
}
