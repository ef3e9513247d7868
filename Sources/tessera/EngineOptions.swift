import ArgumentParser
import Foundation
import Tessera

/// Engine and adapter-store flags shared by the commands that run the engine.
struct EngineOptions: ParsableArguments {
    @Option(help: "Rows (prefill plus decode tokens) per forward pass.")
    var maxBatchTokens = 512

    @Option(help: "Sequences running at once, over all tenants.")
    var maxSeqs = 64

    @Option(help: "Sequences one tenant may have running at once (default: --max-seqs).")
    var maxRunningPerTenant: Int?

    @Option(help: "KV cache memory in MiB.")
    var kvCacheMemory = 256

    @Option(help: "Adapter memory budget in MiB.")
    var adapterMemory = 1024

    @Option(help: "Adapters resident at once.")
    var maxAdapters = 64

    @Flag(help: "Fixed summation order: a row's numbers never depend on the rest of its batch (slower).")
    var deterministic = false

    var engineConfiguration: EngineConfiguration {
        var c = EngineConfiguration()
        c.maxBatchTokens = maxBatchTokens
        c.maxSequences = maxSeqs
        c.kvCacheBytes = kvCacheMemory << 20
        c.deterministic = deterministic
        c.maxRunningPerTenant = maxRunningPerTenant ?? maxSeqs
        return c
    }

    /// The adapter store's limits, holding adapters at `precision` (``ModelOptions``).
    func storeConfiguration(precision: AdapterPrecision) -> AdapterStore.Configuration {
        AdapterStore.Configuration(memoryBudgetBytes: adapterMemory << 20, maxAdapters: maxAdapters, precision: precision)
    }

    func validate() throws {
        guard maxBatchTokens > 0, maxSeqs > 0, kvCacheMemory > 0, (maxRunningPerTenant ?? 1) > 0, adapterMemory > 0, maxAdapters > 0 else {
            throw ValidationError("engine limits must be positive")
        }
    }
}
