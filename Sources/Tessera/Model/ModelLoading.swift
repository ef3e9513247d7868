import Foundation

extension LlamaModel {
    /// Loads a model from a GGUF file or a Hugging Face directory (`config.json` + safetensors).
    ///
    /// Weights are converted once to contiguous f32. Every error names the file and the reason.
    public static func load(path: String) throws(ModelError) -> LlamaModel {
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
            return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: source), source: path)
        }
        let gguf: GGUFFile
        do { gguf = try GGUFFile(path: path) } catch { throw ModelError(error) }
        return try load(gguf: gguf)
    }

    /// Loads a model from an opened GGUF file.
    public static func load(gguf: GGUFFile) throws(ModelError) -> LlamaModel {
        if let type = gguf.metadata["general.type"]?.stringValue, type != "model" {
            throw ModelError(file: gguf.path, reason: .invalidMetadata(key: "general.type", why: "'\(type)' file, expected a model"))
        }
        let config = try LlamaConfig(gguf: gguf)
        return LlamaModel(config: config, weights: try LlamaWeights(config: config, source: GGUFWeightSource(gguf: gguf)), source: gguf.path)
    }
}
