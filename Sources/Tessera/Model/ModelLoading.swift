import Foundation

/// How a model is loaded and run.
public struct ModelLoadOptions: Sendable {
    /// Bytes the model may spend on f32 copies of weights kept in another type (GGUF blocks,
    /// 16-bit floats). Copies speed up many-row matmuls (prefill, big batches) and change no
    /// result; 0 (the default) keeps every weight in its stored type, read in place.
    public var weightMemory: Int
    /// How activations meet block-quantized weights (see ``ActivationPrecision``).
    public var activations: ActivationPrecision

    public init(weightMemory: Int = 0, activations: ActivationPrecision = .q8) {
        self.weightMemory = weightMemory
        self.activations = activations
    }
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
            return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: source, weightMemory: options.weightMemory),
                              source: path, activations: options.activations)
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
        return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: GGUFWeightSource(gguf: gguf), weightMemory: options.weightMemory),
                          source: gguf.path, activations: options.activations)
    }
}
