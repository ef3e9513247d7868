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
    /// Row counts at which linear layers change matmul path (see ``MatmulRowLimits``).
    public var rowLimits: MatmulRowLimits

    public init(weightMemory: Int = 0, activations: ActivationPrecision = .q8x2, layout: WeightLayout = .interleaved, kvCache: KVPrecision = .f16,
                rowLimits: MatmulRowLimits = MatmulRowLimits()) {
        self.weightMemory = weightMemory
        self.activations = activations
        self.layout = layout
        self.kvCache = kvCache
        self.rowLimits = rowLimits
    }
}

/// Where linear layers switch matmul path, by the rows in a pass. Measured defaults; a model
/// carries its own (``ModelLoadOptions/rowLimits``) and every scratch it makes starts from them,
/// so tests and benchmarks that force a path set them on one scratch, never process-wide.
public struct MatmulRowLimits: Sendable, Codable, Equatable {
    /// Up to this many rows, f32 weights use the few-rows kernel instead of sgemm (measured:
    /// `tessera bench-lora` / `bench-engine`, see bench/RESULTS.md).
    public var fewRows = 16
    /// Up to this many rows, weights kept in their stored layout are read in place by the
    /// weight-type kernel; above, tiles are dequantized for sgemm. Measured with `tessera
    /// bench-matmul --weight-layout stored` on SmolLM2 Q4_1, 2 threads, AVX2 (bench/RESULTS.md):
    /// the kernel is faster up to 32 rows (7.0 vs 60 ms a pass at 1 row, 165 vs 182 at 32), tiles
    /// from 64 (298 vs 330).
    public var stored = 48
    /// The same limit for matrices whose every part is interleaved (``WeightLayout/interleaved``)
    /// with 8-bit activations; nil (the default) = none. Measured with `tessera bench-matmul` on
    /// SmolLM2 Q4_1, 2 threads, AVX2 (bench/RESULTS.md): the interleaved kernel is faster than
    /// dequantized tiles + sgemm at every row count up to 512 (3.9 vs 68 ms a pass at 1 row, 84
    /// vs 186 at 32, 1307 vs 1621 at 512), and than sgemm over f32 copies (about 1600 ms at 512).
    public var interleaved: Int?

    public init(fewRows: Int = 16, stored: Int = 48, interleaved: Int? = nil) {
        self.fewRows = fewRows
        self.stored = stored
        self.interleaved = interleaved
    }

    /// Stored and interleaved weights both through the weight-type kernel up to `rows` rows
    /// (`Int.max`: always; 0: never), for tests and benchmarks that force one path.
    public static func kernel(upTo rows: Int) -> MatmulRowLimits {
        MatmulRowLimits(stored: rows, interleaved: rows)
    }

    var interleavedLimit: Int { interleaved ?? .max }
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
                              source: path, activations: options.activations, kvPrecision: options.kvCache, rowLimits: options.rowLimits)
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
                          source: gguf.path, activations: options.activations, kvPrecision: options.kvCache, rowLimits: options.rowLimits)
    }
}
