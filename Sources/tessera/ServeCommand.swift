import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import Tessera
import TesseraServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the OpenAI API to many tenants, each with their own adapters.",
        discussion: """
            Flags override the --config file (JSON or YAML, snake_case keys: model, compute, engine, adapters, server), \
            which overrides the defaults. On SIGTERM or SIGINT the server answers new requests with 503, lets in-flight \
            ones finish (--drain-seconds), and exits 0.
            """)

    @Option(help: "A GGUF file or a Hugging Face model directory. Default: SmolLM2-135M-Instruct, fetched on first use.")
    var model: String?
    @Option(help: "Register every sub-folder of this directory as a shared adapter named by its folder.")
    var adapters: String?
    @Option(help: "Address to listen on.")
    var host: String?
    @Option(help: "Port to listen on (0: any free port).")
    var port: Int?
    @Option(help: "Directory of the database (tenants, key hashes, adapter registry). Default: tessera-data, or the demo's own directory with --demo.")
    var dataDir: String?
    @Option(help: "Configuration file, JSON or YAML.")
    var config: String?
    @Option(help: "Seconds in-flight requests get to finish after SIGTERM or SIGINT.")
    var drainSeconds: Double?
    @Option(help: "Largest request body in bytes (413 past it).")
    var maxBodyBytes: Int?
    @Option(help: "Response cache memory in MiB (0: off).")
    var responseCacheMemory: Int?
    @Option(help: "Seconds a cached response is served.")
    var responseCacheSeconds: Double?
    @Flag(help: "Create two demo tenants with their own synthesized adapters and an admin, print their keys and examples.")
    var demo = false

    @Option(help: "Compute threads. Default: all cores.")
    var threads: Int?
    @Option(help: "MiB the model may spend on f32 copies of quantized weights.")
    var weightMemory: Int?
    @Option(help: "Activations against quantized weights: q8x2, q8 or f32.")
    var activations: ActivationPrecision?
    @Option(help: "Rows of quantized weights: interleaved or stored.")
    var weightLayout: WeightLayout?
    @Option(help: "KV cache precision: f16 or f32.")
    var kvPrecision: KVPrecision?
    @Option(help: "Precision adapters are held in: f16 or f32.")
    var adapterPrecision: AdapterPrecision?
    @Option(help: "Rows (prefill plus decode tokens) per forward pass.")
    var maxBatchTokens: Int?
    @Option(help: "Sequences running at once, over all tenants.")
    var maxSeqs: Int?
    @Option(help: "Sequences one tenant may have running at once.")
    var maxRunningPerTenant: Int?
    @Option(help: "KV cache memory in MiB.")
    var kvCacheMemory: Int?
    @Option(help: "Adapter memory budget in MiB.")
    var adapterMemory: Int?
    @Option(help: "Adapters resident at once.")
    var maxAdapters: Int?

    /// The configuration: defaults, then the file, then the flags.
    func runtimeConfiguration() throws -> RuntimeConfiguration {
        var c = RuntimeConfiguration()
        if let config {
            do { c = try RuntimeConfiguration.load(file: config) } catch let e as ConfigurationError { throw ValidationError(e.description) }
        }
        if let model { c.model.path = model }
        if let adapters { c.server.adaptersDirectory = adapters }
        if let host { c.server.host = host }
        if let port { c.server.port = port }
        if let dataDir { c.server.dataDirectory = dataDir } else if demo { c.server.dataDirectory = DefaultModel.cacheDirectory.appendingPathComponent("demo").path }
        if let drainSeconds { c.server.drainSeconds = drainSeconds }
        if let maxBodyBytes { c.server.maxBodyBytes = maxBodyBytes }
        if let responseCacheMemory { c.server.responseCacheMemory = responseCacheMemory }
        if let responseCacheSeconds { c.server.responseCacheSeconds = responseCacheSeconds }
        if let threads { c.compute.threads = threads }
        if let weightMemory { c.model.weightMemoryMiB = weightMemory }
        if let activations { c.model.activations = activations }
        if let weightLayout { c.model.weightLayout = weightLayout }
        if let kvPrecision { c.model.kvPrecision = kvPrecision }
        if let adapterPrecision { c.adapters.precision = adapterPrecision }
        if let maxBatchTokens { c.engine.maxBatchTokens = maxBatchTokens }
        if let maxSeqs {
            c.engine.maxSequences = maxSeqs
            if maxRunningPerTenant == nil { c.engine.maxRunningPerTenant = min(c.engine.maxRunningPerTenant, maxSeqs) }
        }
        if let maxRunningPerTenant { c.engine.maxRunningPerTenant = maxRunningPerTenant }
        if let kvCacheMemory { c.engine.kvCacheBytes = kvCacheMemory << 20 }
        if let adapterMemory { c.adapters.memoryBudgetBytes = adapterMemory << 20 }
        if let maxAdapters { c.adapters.maxAdapters = maxAdapters }
        do { try c.validate() } catch let e as ConfigurationError { throw ValidationError(e.description) }
        return c
    }

    func run() async throws {
        let config = try runtimeConfiguration()
        try await reportingErrors {
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
                return h
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let logger = Logger(label: "tessera.server")

            ComputeThreads.configure(threads: config.compute.threads ?? ComputeThreads.available)
            let modelPath = try config.model.path ?? DefaultModel.ensure(log: { printError($0) }).path
            let options = config.model.loadOptions
            let bundle = try await onComputeThread { try ModelBundle.load(path: modelPath, options: options) }
            let storage = try SQLiteStorage(directory: config.server.dataDirectory)
            if try await storage.tenantCount() == 0, let key = ProcessInfo.processInfo.environment["TESSERA_ADMIN_KEY"], !key.isEmpty {
                _ = try await storage.addTenant(name: "admin", role: .admin, keyHash: APIKey.hash(key), keyPrefix: String(key.prefix(8)))
                logger.info("created the admin tenant from TESSERA_ADMIN_KEY")
            }
            let store = AdapterStore(base: bundle.model.config, configuration: config.adapters)
            let server = try TesseraServer(configuration: config, bundle: bundle, modelPath: modelPath, adapters: store, storage: storage,
                                           metricsRegistry: registry, logger: logger)
            try await server.restoreRegistry()
            if let dir = config.server.adaptersDirectory { try await server.registerDirectory(dir) }
            let demoKeys = demo ? try await DemoSetup.prepare(server: server, storage: storage, directory: config.server.dataDirectory) : nil
            try await server.run { port in
                let base = "http://\(config.server.host):\(port)"
                printError("tessera: serving \(server.modelName) on \(base) (data: \(config.server.dataDirectory))")
                if let demoKeys { FileHandle.standardOutput.write(Data(DemoSetup.banner(baseURL: base, model: server.modelName, keys: demoKeys).utf8)) }
            }
        }
    }
}
