/// An adapter that cannot be loaded, registered or applied: which adapter, which file, and why.
public struct AdapterError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Why the adapter was refused.
    public enum Reason: Sendable, Equatable {
        /// The file is unreadable or malformed (safetensors or GGUF).
        case format(FormatError.Reason)
        /// `adapter_config.json` is missing, not JSON, or a field has the wrong type.
        case invalidConfig(field: String, why: String)
        /// A PEFT feature Tessera does not apply (DoRA, modules_to_save, biases, embedding LoRA, ...).
        case unsupportedFeature(String)
        /// A pickle `adapter_model.bin` instead of safetensors.
        case pickleNotSupported
        /// A tensor name that does not name a Llama projection's LoRA A or B.
        case unexpectedTensor(String)
        /// A projection with only one of its A and B matrices.
        case incompleteTensorPair(String)
        /// A tensor's shape disagrees with the base model or with the adapter's own rank.
        case shapeMismatch(tensor: String, expected: [Int], actual: [Int])
        /// A layer index past the base model's layers.
        case layerOutOfRange(tensor: String, layer: Int, layers: Int)
        /// A rank above the store's configured maximum.
        case rankTooLarge(rank: Int, maximum: Int)
        /// NaN or infinite weights.
        case nonFiniteWeights(tensor: String)
        /// No LoRA tensors at all.
        case empty
        /// Not a PEFT directory nor a GGUF LoRA file.
        case unrecognisedPath
        /// The adapter's name is not registered.
        case unknownAdapter
        /// Loading it would exceed the memory budget even after evicting every unleased adapter.
        case overBudget(needed: Int, budget: Int)
        /// Every resident slot is leased by running sequences.
        case noFreeSlot(maximum: Int)
        /// The weights file's sha256 differs from the one recorded when it was registered.
        case changedOnDisk(expected: String, actual: String)
    }

    /// The adapter's registered name (or its path when it has none yet).
    public let adapter: String
    /// The file or directory involved.
    public let file: String
    public let reason: Reason

    public init(adapter: String, file: String, reason: Reason) {
        self.adapter = adapter
        self.file = file
        self.reason = reason
    }

    public var description: String {
        let why: String
        switch reason {
        case .format(let r): why = FormatError(file: file, reason: r).description
        case .invalidConfig(let f, let w): why = "\(file): adapter_config.json field '\(f)': \(w)"
        case .unsupportedFeature(let f): why = "\(file): \(f) is not supported (Tessera applies plain LoRA on q/k/v/o/gate/up/down)"
        case .pickleNotSupported: why = "\(file): only adapter_model.bin (pickle) found; save the adapter with safetensors (safe_serialization=True)"
        case .unexpectedTensor(let t): why = "\(file): tensor '\(t)' is not a LoRA matrix of a Llama projection"
        case .incompleteTensorPair(let t): why = "\(file): '\(t)' has only one of its A and B matrices"
        case .shapeMismatch(let t, let e, let a): why = "\(file): tensor '\(t)' has shape \(a), expected \(e) (an adapter for another base model?)"
        case .layerOutOfRange(let t, let l, let n): why = "\(file): tensor '\(t)' is for layer \(l) but the base model has \(n) layers"
        case .rankTooLarge(let r, let m): why = "\(file): rank \(r) is above the configured maximum \(m)"
        case .nonFiniteWeights(let t): why = "\(file): tensor '\(t)' holds NaN or infinite values"
        case .empty: why = "\(file): no LoRA tensors"
        case .unrecognisedPath: why = "\(file): not a PEFT adapter directory (adapter_config.json) nor a GGUF LoRA file"
        case .unknownAdapter: why = "no adapter registered under this name"
        case .overBudget(let n, let b): why = "needs \(n) bytes but the adapter memory budget is \(b) bytes and every other resident adapter is in use"
        case .noFreeSlot(let m): why = "all \(m) adapter slots are leased by running sequences"
        case .changedOnDisk(let e, let a): why = "\(file): sha256 is \(a) but \(e) was registered; register the adapter again to serve the new file"
        }
        return "adapter '\(adapter)': \(why)"
    }
}
