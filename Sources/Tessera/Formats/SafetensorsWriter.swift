import Foundation

/// Writes float32 tensors as a safetensors file (for synthesized adapters and tests).
public enum SafetensorsWriter {
    /// One tensor: name, shape (outermost-first) and row-major values.
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to url: URL) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let sorted = tensors.sorted { $0.name < $1.name }
        for t in sorted {
            guard t.shape.reduce(1, *) == t.values.count else {
                throw FormatError(file: url.path, reason: .badTensorShape(tensor: t.name, shape: t.shape, why: "\(t.values.count) values given"))
            }
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }  // pad with spaces, as the reference writer does
        var data = Data()
        data.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        for t in sorted { t.values.withUnsafeBytes { data.append(contentsOf: $0) } }
        try data.write(to: url)
    }
}
