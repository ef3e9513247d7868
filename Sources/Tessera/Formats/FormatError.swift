/// A model or adapter file that cannot be read: which file, and why.
public struct FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Why a file was refused.
    public enum Reason: Equatable, Sendable {
        /// The operating system could not open, stat or map the file.
        case io(String)
        /// The file does not start with the expected magic bytes.
        case badMagic(expected: String)
        /// A format version this reader does not know.
        case unsupportedVersion(UInt32)
        /// The file ends before a structure it declares (`need` bytes at `offset`).
        case truncated(offset: Int, need: Int, fileSize: Int)
        /// A declared size or count that cannot be right (larger than the file, overflowing, zero where it must not be).
        case implausible(what: String, value: UInt64)
        /// A string that is not valid UTF-8.
        case invalidUTF8(what: String)
        /// A metadata value type id that GGUF does not define.
        case unknownValueType(key: String, type: UInt32)
        /// A tensor whose data lies (partly) outside the file.
        case tensorOutOfBounds(tensor: String, offset: UInt64, size: UInt64, available: UInt64)
        /// A tensor type this build cannot dequantize.
        case unsupportedTensorType(tensor: String, type: String)
        /// A tensor whose declared shape does not fit its data or its type's block size.
        case badTensorShape(tensor: String, shape: [Int], why: String)
        /// Two tensors share a name.
        case duplicateTensor(String)
        /// A JSON header or config that does not parse or lacks a field.
        case invalidJSON(String)
    }

    /// The file (or directory) the error is about.
    public let file: String
    /// What is wrong with it.
    public let reason: Reason

    public init(file: String, reason: Reason) {
        self.file = file
        self.reason = reason
    }

    public var description: String {
        let why: String
        switch reason {
        case .io(let s): why = s
        case .badMagic(let m): why = "not a \(m) file (bad magic bytes)"
        case .unsupportedVersion(let v): why = "unsupported format version \(v)"
        case .truncated(let o, let n, let s): why = "truncated: needs \(n) bytes at offset \(o) but the file has \(s) bytes"
        case .implausible(let what, let v): why = "implausible \(what): \(v)"
        case .invalidUTF8(let what): why = "\(what) is not valid UTF-8"
        case .unknownValueType(let k, let t): why = "metadata key '\(k)' has unknown value type \(t)"
        case .tensorOutOfBounds(let t, let o, let s, let a):
            why = "tensor '\(t)' data (offset \(o), \(s) bytes) lies past the end of the data (\(a) bytes)"
        case .unsupportedTensorType(let t, let ty): why = "tensor '\(t)' has unsupported type \(ty)"
        case .badTensorShape(let t, let shape, let w): why = "tensor '\(t)' shape \(shape): \(w)"
        case .duplicateTensor(let t): why = "tensor '\(t)' appears twice"
        case .invalidJSON(let s): why = "invalid JSON: \(s)"
        }
        return "\(file): \(why)"
    }
}
