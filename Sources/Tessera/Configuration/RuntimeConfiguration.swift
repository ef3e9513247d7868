import Foundation

/// Everything a Tessera process is configured with, in one `Codable` struct: how the model is
/// loaded, compute, the engine, the adapter store and the server. The CLI's flags, a `--config`
/// file (JSON or YAML, snake_case keys, any subset of them) and library callers all fill it.
public struct RuntimeConfiguration: Sendable, Codable, Equatable {
    /// How the base model is loaded.
    public struct Model: Sendable, Codable, Equatable {
        /// A GGUF file or a Hugging Face model directory; nil = the default model (fetched on first use).
        public var path: String?
        /// MiB the model may spend on f32 copies of quantized weights (`--weight-memory`).
        public var weightMemoryMiB: Int = 0
        public var activations: ActivationPrecision = .q8x2
        public var weightLayout: WeightLayout = .interleaved
        /// KV cache precision (`--kv-precision`).
        public var kvPrecision: KVPrecision = .f16
        /// Row counts at which linear layers change matmul path (measured defaults).
        public var rowLimits = MatmulRowLimits()

        public init() {}

        enum CodingKeys: String, CodingKey {
            // "Mib" so that snake_case keys read weight_memory_mib.
            case path, weightMemoryMiB = "weightMemoryMib", activations, weightLayout, kvPrecision, rowLimits
        }

        /// The loader's options.
        public var loadOptions: ModelLoadOptions {
            ModelLoadOptions(weightMemory: weightMemoryMiB << 20, activations: activations, layout: weightLayout, kvCache: kvPrecision,
                             rowLimits: rowLimits)
        }
    }

    /// Compute threads.
    public struct Compute: Sendable, Codable, Equatable {
        /// Every compute thread, ours and OpenBLAS's (`--threads`); nil = all cores.
        public var threads: Int?
        public init() {}
    }

    /// The HTTP server (`tessera serve`).
    public struct Server: Sendable, Codable, Equatable {
        public var host = "127.0.0.1"
        public var port = 8080
        /// Where the database (and demo adapters) live (`--data-dir`).
        public var dataDirectory = "tessera-data"
        /// Every sub-folder is registered as a shared adapter named by its folder (`--adapters`).
        public var adaptersDirectory: String?
        /// Seconds in-flight requests get to finish after SIGTERM or SIGINT (`--drain-seconds`).
        public var drainSeconds: Double = 30
        /// Largest request body accepted (`--max-body-bytes`); past it, 413.
        public var maxBodyBytes = 1 << 20
        /// Largest `n` (choices per request).
        public var maxChoices = 8
        /// The name `model` takes for the base model; nil = the model file's name without extension.
        public var modelName: String?
        /// The response cache's budget in MiB (`--response-cache-memory`); 0 turns it off.
        public var responseCacheMemory = 64
        /// Seconds a cached response is served (`--response-cache-seconds`).
        public var responseCacheSeconds: Double = 3600
        /// Largest adapter upload (`POST /v1/adapters`) in bytes, both files together.
        public var maxUploadBytes = 256 << 20
        public init() {}
    }

    public var model = Model()
    public var compute = Compute()
    public var engine = EngineConfiguration()
    public var adapters = AdapterStore.Configuration()
    public var server = Server()

    public init() {}

    /// Reads a configuration file: JSON, or YAML turned into the same tree by the caller
    /// (`tree`: nested dictionaries and arrays of JSON values). Keys left out keep their
    /// defaults; an unknown key is an error that names it.
    public static func decode(tree: Any, file: String) throws -> RuntimeConfiguration {
        guard let user = tree as? [String: Any] else { throw ConfigurationError(file: file, field: "", why: "the top level must be a mapping") }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let known = try JSONSerialization.jsonObject(with: encoder.encode(fullySpecified)) as? [String: Any] ?? [:]
        try checkKeys(user, known: known, path: "", file: file)
        let defaults = try JSONSerialization.jsonObject(with: encoder.encode(RuntimeConfiguration())) as? [String: Any] ?? [:]
        let merged = merge(defaults, user)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            let config = try decoder.decode(RuntimeConfiguration.self, from: JSONSerialization.data(withJSONObject: merged))
            try config.validate()
            return config
        } catch let e as ConfigurationError {
            throw ConfigurationError(file: file, field: e.field, why: e.why)
        } catch let DecodingError.typeMismatch(type, context) {
            throw ConfigurationError(file: file, field: path(context.codingPath), why: "expected \(type)")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigurationError(file: file, field: path(context.codingPath), why: context.debugDescription)
        } catch let DecodingError.valueNotFound(_, context) {
            throw ConfigurationError(file: file, field: path(context.codingPath), why: "must not be null")
        } catch {
            throw ConfigurationError(file: file, field: "", why: "\(error)")
        }
    }

    /// Reads a JSON configuration file.
    public static func load(jsonFile path: String) throws -> RuntimeConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigurationError(file: path, field: "", why: "cannot read the file") }
        let tree: Any
        do { tree = try JSONSerialization.jsonObject(with: data) } catch {
            throw ConfigurationError(file: path, field: "", why: "not valid JSON: \(error.localizedDescription)")
        }
        return try decode(tree: tree, file: path)
    }

    /// Checks every limit; the error names the field.
    public func validate() throws {
        do { try engine.validate() } catch { throw ConfigurationError(file: "", field: "engine", why: error.description) }
        func positive(_ name: String, _ v: Int) throws { if v < 1 { throw ConfigurationError(file: "", field: name, why: "must be at least 1, got \(v)") } }
        try positive("adapters.memory_budget_bytes", adapters.memoryBudgetBytes)
        try positive("adapters.max_adapters", adapters.maxAdapters)
        try positive("server.max_body_bytes", server.maxBodyBytes)
        try positive("server.max_choices", server.maxChoices)
        try positive("server.max_upload_bytes", server.maxUploadBytes)
        guard server.responseCacheMemory >= 0 else {
            throw ConfigurationError(file: "", field: "server.response_cache_memory", why: "must be >= 0 MiB, got \(server.responseCacheMemory)")
        }
        guard server.responseCacheSeconds >= 0, server.responseCacheSeconds.isFinite else {
            throw ConfigurationError(file: "", field: "server.response_cache_seconds", why: "must be >= 0, got \(server.responseCacheSeconds)")
        }
        if let t = compute.threads { try positive("compute.threads", t) }
        guard (0...65535).contains(server.port) else { throw ConfigurationError(file: "", field: "server.port", why: "must be 0-65535, got \(server.port)") }
        guard server.drainSeconds >= 0, server.drainSeconds.isFinite else {
            throw ConfigurationError(file: "", field: "server.drain_seconds", why: "must be >= 0, got \(server.drainSeconds)")
        }
        guard model.weightMemoryMiB >= 0 else { throw ConfigurationError(file: "", field: "model.weight_memory_mib", why: "must be >= 0") }
        let limits = model.rowLimits
        for (name, v) in [("few_rows", limits.fewRows), ("stored", limits.stored), ("interleaved", limits.interleaved ?? 0)] where v < 0 {
            throw ConfigurationError(file: "", field: "model.row_limits.\(name)", why: "must be >= 0, got \(v)")
        }
    }

    /// A value with every optional field set, so its encoding lists every key a file may use.
    private static var fullySpecified: RuntimeConfiguration {
        var c = RuntimeConfiguration()
        c.model.path = ""
        c.model.rowLimits.interleaved = 1
        c.compute.threads = 1
        c.server.adaptersDirectory = ""
        c.server.modelName = ""
        c.engine.tenantWeights = ["": 1]
        return c
    }

    private static func checkKeys(_ user: [String: Any], known: [String: Any], path: String, file: String) throws {
        for (key, value) in user {
            let here = path.isEmpty ? key : "\(path).\(key)"
            guard let k = known[key] else { throw ConfigurationError(file: file, field: here, why: "unknown key") }
            // Free-form maps (tenant weights) hold any keys.
            if let sub = value as? [String: Any], let knownSub = k as? [String: Any], key != "tenant_weights" {
                try checkKeys(sub, known: knownSub, path: here, file: file)
            }
        }
    }

    private static func merge(_ base: [String: Any], _ over: [String: Any]) -> [String: Any] {
        var out = base
        for (k, v) in over {
            if let b = base[k] as? [String: Any], let o = v as? [String: Any], k != "tenant_weights" { out[k] = merge(b, o) } else { out[k] = v }
        }
        return out
    }

    /// A decoding path as the file spells it (snake_case).
    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { key in
            key.stringValue.reduce(into: "") { out, ch in
                if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
            }
        }.joined(separator: ".")
    }
}

/// A configuration file or value that cannot be used: the file, the field and why.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    public let file: String
    public let field: String
    public let why: String

    public init(file: String, field: String, why: String) {
        self.file = file
        self.field = field
        self.why = why
    }

    public var description: String {
        let location = [file, field].filter { !$0.isEmpty }.joined(separator: ": ")
        return location.isEmpty ? why : "\(location): \(why)"
    }
}

extension ActivationPrecision: Codable {}
extension WeightLayout: Codable {}
extension KVPrecision: Codable {}
