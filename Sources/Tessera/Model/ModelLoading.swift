import Foundation

/// How a model is loaded and run.
public struct ModelLoadOptions: Sendable {
    /// Bytes the model may spend on f32 copies of weights kept in another type (GGUF blocks,
    /// 16-bit floats). Copies speed up many-row matmuls (prefill, big batches) and change no
    /// result; 0 (the default) keeps every weight in its stored type, read in place.
    public var weightMemory: Int
    /// How activations meet block-quantized weights (see ``ActivationPrecision``).
    public var activations: ActivationPrecision
    /// How block-quantized rows are laid out in memory (see ``WeightLayout``).
    public var layout: WeightLayout
    /// Precision of the KV caches made for the model (``LlamaModel/makeCache(capacity:)``, the
    /// engine's pool): f16 by default (see ``KVPrecision``).
    public var kvCache: KVPrecision

    public init(weightMemory: Int = 0, activations: ActivationPrecision = .q8x2, layout: WeightLayout = .interleaved, kvCache: KVPrecision = .f16) {
        self.weightMemory = weightMemory
        self.activations = activations
        self.layout = layout
        self.kvCache = kvCache
    }
}

/// How the rows of block-quantized weights sit in memory. Either way they keep their stored
/// type and size, and results agree within float rounding.
public enum WeightLayout: String, Sendable, CaseIterable {
    /// Groups of 8 rows with their blocks side by side (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K), written once at load
    /// into memory of the model's own (the file's pages are released): the decode kernel then
    /// serves 8 outputs per instruction. Other types stay as stored.
    case interleaved
    /// Rows as stored in the file, read in place from the mapping.
    case stored
}

extension LlamaModel {
    /// Loads a model from a GGUF file or a Hugging Face directory (`config.json` + safetensors).
    ///
    /// Weights stay in their stored type, read in place from the mapped files (f32 copies only
    /// within `options.weightMemory`). Every error names the file and the reason.
    public static func load(path: String, options: ModelLoadOptions = .init()) throws(ModelError) -> LlamaModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError(file: path, reason: .format(.io("no such file or directory")))
        }
        if isDirectory.boolValue {
            let dir = URL(fileURLWithPath: path)
            let configURL = dir.appendingPathComponent("config.json")
            guard FileManager.default.fileExists(atPath: configURL.path) else { throw ModelError(file: path, reason: .unrecognisedPath) }
            let config = try LlamaConfig(hfConfig: configURL)
            let source = try HFWeightSource(directory: dir)
            return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: source, weightMemory: options.weightMemory, layout: options.layout),
                              source: path, activations: options.activations, kvPrecision: options.kvCache)
        }
        let gguf: GGUFFile
        do { gguf = try GGUFFile(path: path) } catch { throw ModelError(error) }
        return try load(gguf: gguf, options: options)
    }

    /// Loads a model from an opened GGUF file.
    public static func load(gguf: GGUFFile, options: ModelLoadOptions = .init()) throws(ModelError) -> LlamaModel {
        if let type = gguf.metadata["general.type"]?.stringValue, type != "model" {
            throw ModelError(file: gguf.path, reason: .invalidMetadata(key: "general.type", why: "'\(type)' file, expected a model"))
        }
        let config = try LlamaConfig(gguf: gguf)
        return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: GGUFWeightSource(gguf: gguf), weightMemory: options.weightMemory, layout: options.layout),
                          source: gguf.path, activations: options.activations, kvPrecision: options.kvCache)
    }
}
