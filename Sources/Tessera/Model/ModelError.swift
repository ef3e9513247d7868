/// A model that cannot be loaded or run: which file, and why.
public struct ModelError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Why the model was refused.
    public enum Reason: Sendable, Equatable {
        /// The file itself is unreadable or malformed.
        case format(FormatError.Reason)
        /// `general.architecture` or `model_type` names an architecture Tessera does not run.
        case unknownArchitecture(String)
        /// A hyper-parameter the architecture needs is absent.
        case missingMetadata(key: String)
        /// A hyper-parameter is present but unusable.
        case invalidMetadata(key: String, why: String)
        /// A weight tensor the architecture needs is absent.
        case missingTensor(String)
        /// A weight's shape disagrees with the hyper-parameters (outermost-first shapes).
        case shapeMismatch(tensor: String, expected: [Int], actual: [Int])
        /// Not a GGUF file, nor a directory with `config.json`.
        case unrecognisedPath
        /// Memory for the weights could not be allocated.
        case outOfMemory(bytes: Int)
    }

    /// The file or directory the error is about.
    public let file: String
    public let reason: Reason

    public init(file: String, reason: Reason) {
        self.file = file
        self.reason = reason
    }

    init(_ error: FormatError) {
        self.init(file: error.file, reason: .format(error.reason))
    }

    public var description: String {
        switch reason {
        case .format(let r): return FormatError(file: file, reason: r).description
        case .unknownArchitecture(let a):
            return "\(file): unknown architecture '\(a)' (Tessera runs llama-family models: llama, mistral)"
        case .missingMetadata(let k): return "\(file): missing hyper-parameter '\(k)'"
        case .invalidMetadata(let k, let why): return "\(file): hyper-parameter '\(k)' is invalid: \(why)"
        case .missingTensor(let t): return "\(file): missing tensor '\(t)'"
        case .shapeMismatch(let t, let e, let a):
            return "\(file): tensor '\(t)' has shape \(a) but the hyper-parameters give \(e)"
        case .unrecognisedPath: return "\(file): not a GGUF file nor a Hugging Face model directory (config.json)"
        case .outOfMemory(let b): return "\(file): cannot allocate \(b) bytes for the weights"
        }
    }
}

/// A forward pass or generation that was asked something impossible.
public enum InferenceError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A token id outside the vocabulary.
    case tokenOutOfRange(id: Int32, vocabularySize: Int)
    /// A position past the sequence's KV cache capacity.
    case contextOverflow(position: Int, capacity: Int)
    /// A row's position does not continue its sequence (positions must be written in order).
    case positionGap(position: Int, cached: Int)
    /// A batch that references a cache that does not exist, or an empty prompt.
    case invalidBatch(String)
    /// Buffers for a batch could not be allocated.
    case outOfMemory(bytes: Int)

    public var description: String {
        switch self {
        case .tokenOutOfRange(let id, let v): "token id \(id) is outside the vocabulary (0..<\(v))"
        case .contextOverflow(let p, let c): "position \(p) exceeds the context capacity \(c)"
        case .positionGap(let p, let c): "position \(p) does not follow the \(c) cached positions"
        case .invalidBatch(let s): "invalid batch: \(s)"
        case .outOfMemory(let b): "cannot allocate \(b) bytes"
        }
    }
}
