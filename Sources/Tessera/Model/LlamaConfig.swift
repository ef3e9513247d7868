import Foundation

/// Hyper-parameters of a Llama-family model (Llama, SmolLM2, Mistral-style configs).
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var architecture: String
    public var vocabularySize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDimension: Int
    /// Dimensions of each head that RoPE rotates (the head dimension for Llama).
    public var ropeDimension: Int
    public var contextLength: Int
    public var rmsNormEpsilon: Float
    public var ropeTheta: Float
    /// The LM head is the token embedding (no separate output weight).
    public var tiedEmbeddings: Bool

    /// Width of all query heads together.
    public var queryDimension: Int { headCount * headDimension }
    /// Width of all key (or value) heads together.
    public var kvDimension: Int { kvHeadCount * headDimension }

    /// Checks the relations the forward pass relies on.
    func validate(file: String) throws(ModelError) {
        func bad(_ key: String, _ why: String) -> ModelError { ModelError(file: file, reason: .invalidMetadata(key: key, why: why)) }
        for (k, v) in [("vocab_size", vocabularySize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                       ("num_hidden_layers", layerCount), ("num_attention_heads", headCount),
                       ("num_key_value_heads", kvHeadCount), ("head_dim", headDimension), ("context_length", contextLength)] {
            guard v > 0, v < 1 << 24 else { throw bad(k, "must be positive and below 2^24, got \(v)") }
        }
        guard headCount % kvHeadCount == 0 else { throw bad("num_key_value_heads", "\(kvHeadCount) does not divide \(headCount) heads") }
        guard ropeDimension > 0, ropeDimension <= headDimension, ropeDimension % 2 == 0 else {
            throw bad("rope.dimension_count", "\(ropeDimension) must be even and at most the head dimension \(headDimension)")
        }
        guard headDimension % 2 == 0 else { throw bad("head_dim", "must be even, got \(headDimension)") }
        guard rmsNormEpsilon.isFinite, rmsNormEpsilon > 0 else { throw bad("rms_norm_eps", "must be positive, got \(rmsNormEpsilon)") }
        guard ropeTheta.isFinite, ropeTheta > 1 else { throw bad("rope_theta", "must be above 1, got \(ropeTheta)") }
    }

    /// Architectures whose GGUF form and HF form are both handled.
    static let supportedArchitectures: Set<String> = ["llama", "mistral"]

    /// Reads the hyper-parameters from GGUF metadata (`<arch>.embedding_length`, ...).
    init(gguf: GGUFFile) throws(ModelError) {
        let file = gguf.path
        guard let arch = gguf.metadata["general.architecture"]?.stringValue else {
            throw ModelError(file: file, reason: .missingMetadata(key: "general.architecture"))
        }
        guard Self.supportedArchitectures.contains(arch) else { throw ModelError(file: file, reason: .unknownArchitecture(arch)) }
        func int(_ key: String) throws(ModelError) -> Int {
            guard let v = gguf.metadata["\(arch).\(key)"] else { throw ModelError(file: file, reason: .missingMetadata(key: "\(arch).\(key)")) }
            guard let i = v.intValue else { throw ModelError(file: file, reason: .invalidMetadata(key: "\(arch).\(key)", why: "not an integer")) }
            return i
        }
        func float(_ key: String, default def: Float?) throws(ModelError) -> Float {
            guard let v = gguf.metadata["\(arch).\(key)"] else {
                if let def { return def }
                throw ModelError(file: file, reason: .missingMetadata(key: "\(arch).\(key)"))
            }
            guard let d = v.doubleValue else { throw ModelError(file: file, reason: .invalidMetadata(key: "\(arch).\(key)", why: "not a number")) }
            return Float(d)
        }
        architecture = arch
        hiddenSize = try int("embedding_length")
        intermediateSize = try int("feed_forward_length")
        layerCount = try int("block_count")
        headCount = try int("attention.head_count")
        kvHeadCount = gguf.metadata["\(arch).attention.head_count_kv"] == nil ? headCount : try int("attention.head_count_kv")
        headDimension = gguf.metadata["\(arch).attention.key_length"] == nil ? hiddenSize / max(headCount, 1) : try int("attention.key_length")
        ropeDimension = gguf.metadata["\(arch).rope.dimension_count"] == nil ? headDimension : try int("rope.dimension_count")
        contextLength = try int("context_length")
        rmsNormEpsilon = try float("attention.layer_norm_rms_epsilon", default: nil)
        ropeTheta = try float("rope.freq_base", default: 10000)
        if gguf.metadata["\(arch).vocab_size"] != nil {
            vocabularySize = try int("vocab_size")
        } else if let embd = gguf.tensor(named: "token_embd.weight"), embd.dimensions.count == 2 {
            vocabularySize = embd.dimensions[1]
        } else {
            throw ModelError(file: file, reason: .missingMetadata(key: "\(arch).vocab_size"))
        }
        tiedEmbeddings = gguf.tensor(named: "output.weight") == nil
        if let scaling = gguf.metadata["\(arch).rope.scaling.type"]?.stringValue, scaling != "none" {
            throw ModelError(file: file, reason: .invalidMetadata(key: "\(arch).rope.scaling.type", why: "RoPE scaling '\(scaling)' is not supported yet"))
        }
        try validate(file: file)
    }

    /// Reads the hyper-parameters from a Hugging Face `config.json`.
    init(hfConfig url: URL) throws(ModelError) {
        let file = url.path
        let object: [String: Any]
        do {
            let data = try Data(contentsOf: url)
            guard let o = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ModelError(file: file, reason: .format(.invalidJSON("config.json is not a JSON object")))
            }
            object = o
        } catch let e as ModelError {
            throw e
        } catch {
            throw ModelError(file: file, reason: .format(.invalidJSON("\(error.localizedDescription)")))
        }
        func int(_ key: String, default def: Int? = nil) throws(ModelError) -> Int {
            guard let v = object[key], !(v is NSNull) else {
                if let def { return def }
                throw ModelError(file: file, reason: .missingMetadata(key: key))
            }
            guard let n = v as? NSNumber, n.doubleValue == n.doubleValue.rounded() else {
                throw ModelError(file: file, reason: .invalidMetadata(key: key, why: "not an integer"))
            }
            return n.intValue
        }
        func float(_ key: String, in dict: [String: Any], default def: Float?) throws(ModelError) -> Float {
            guard let v = dict[key], !(v is NSNull) else {
                if let def { return def }
                throw ModelError(file: file, reason: .missingMetadata(key: key))
            }
            guard let n = v as? NSNumber else { throw ModelError(file: file, reason: .invalidMetadata(key: key, why: "not a number")) }
            return n.floatValue
        }
        let modelType = (object["model_type"] as? String) ?? ""
        guard Self.supportedArchitectures.contains(modelType) else {
            throw ModelError(file: file, reason: .unknownArchitecture(modelType.isEmpty ? "(no model_type)" : modelType))
        }
        if (object["attention_bias"] as? Bool) == true || (object["mlp_bias"] as? Bool) == true {
            throw ModelError(file: file, reason: .invalidMetadata(key: "attention_bias", why: "biased projections are not supported yet"))
        }
        // transformers 4.x writes rope_theta / rope_scaling; 5.x writes rope_parameters.
        var ropeDict = object
        if let params = object["rope_parameters"] as? [String: Any] {
            ropeDict = params
            if let type = params["rope_type"] as? String, type != "default" {
                throw ModelError(file: file, reason: .invalidMetadata(key: "rope_parameters.rope_type", why: "RoPE type '\(type)' is not supported yet"))
            }
        }
        if let scaling = object["rope_scaling"], !(scaling is NSNull) {
            let type = ((scaling as? [String: Any])?["rope_type"] ?? (scaling as? [String: Any])?["type"]) as? String ?? "?"
            if type != "default" {
                throw ModelError(file: file, reason: .invalidMetadata(key: "rope_scaling", why: "RoPE scaling '\(type)' is not supported yet"))
            }
        }
        architecture = modelType
        vocabularySize = try int("vocab_size")
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        layerCount = try int("num_hidden_layers")
        headCount = try int("num_attention_heads")
        kvHeadCount = try int("num_key_value_heads", default: headCount)
        headDimension = try int("head_dim", default: hiddenSize / max(headCount, 1))
        ropeDimension = headDimension
        contextLength = try int("max_position_embeddings", default: 4096)
        // Mistral-style sliding-window attention is exact up to the window: cap the context there.
        if let window = object["sliding_window"] as? NSNumber, (object["use_sliding_window"] as? Bool) ?? true, window.intValue > 0 {
            contextLength = min(contextLength, window.intValue)
        }
        rmsNormEpsilon = try float("rms_norm_eps", in: object, default: 1e-6)
        ropeTheta = try float("rope_theta", in: ropeDict, default: 10000)
        tiedEmbeddings = (object["tie_word_embeddings"] as? Bool) ?? false
        try validate(file: file)
    }

    public init(architecture: String, vocabularySize: Int, hiddenSize: Int, intermediateSize: Int, layerCount: Int,
                headCount: Int, kvHeadCount: Int, headDimension: Int, ropeDimension: Int, contextLength: Int,
                rmsNormEpsilon: Float, ropeTheta: Float, tiedEmbeddings: Bool) {
        self.architecture = architecture
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.ropeDimension = ropeDimension
        self.contextLength = contextLength
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeTheta = ropeTheta
        self.tiedEmbeddings = tiedEmbeddings
    }
}
