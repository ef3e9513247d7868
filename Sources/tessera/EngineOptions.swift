import ArgumentParser
import Foundation
import Tessera

/// Engine and adapter-store flags shared by the commands that run the engine.
struct EngineOptions: ParsableArguments {
    @Option(help: "Rows (prefill plus decode tokens) per forward pass.")
    var maxBatchTokens = 512

    @Option(help: "Sequences running at once.")
    var maxSeqs = 64

    @Option(help: "KV cache memory in MiB.")
    var kvCacheMb = 256

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
        c.kvCacheBytes = kvCacheMb << 20
        c.deterministic = deterministic
        c.maxRunningPerTenant = maxSeqs
        return c
    }

    /// The adapter store's limits, holding adapters at `precision` (``ModelOptions``).
    func storeConfiguration(precision: AdapterPrecision) -> AdapterStore.Configuration {
        AdapterStore.Configuration(memoryBudgetBytes: adapterMemory << 20, maxAdapters: maxAdapters, precision: precision)
    }

    func validate() throws {
        guard maxBatchTokens > 0, maxSeqs > 0, kvCacheMb > 0, adapterMemory > 0, maxAdapters > 0 else {
            throw ValidationError("engine limits must be positive")
        }
    }
}
