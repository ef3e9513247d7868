import ArgumentParser
import Foundation
import Tessera

struct BenchEngineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-engine",
        abstract: "Aggregate decode throughput and TTFT/TPOT percentiles at several concurrencies (see bench/engine_bench.py).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Concurrent requests (all arrive at once).") var concurrency = "1,4,16,32,64"
    @Option(help: "Prompt tokens per request.") var promptTokens = 32
    @Option(help: "Generated tokens per request (end-of-sequence ignored).") var genTokens = 64
    @Option(help: "Prompt ids are slices of this JSON list (request i starts at 8·i).") var promptTokensFile = "bench/prompt_tokens_512.json"
    @Option(help: "A folder of PEFT adapters adapter-000, adapter-001, ...: also run with one distinct adapter per request.")
    var adaptersDir: String?
    @Option(help: "Rows up to which linears use the few-rows kernel instead of sgemm (0: always sgemm).")
    var fewRowsLimit: Int?
    @Flag(help: "Print one JSON object.") var json = false

    struct Row: Encodable {
        let concurrency: Int
        let distinct_adapters: Int
        let tokens_per_s: Double
        let ttft_p50_ms: Double
        let ttft_p99_ms: Double
        let tpot_p50_ms: Double
        let tpot_p99_ms: Double
    }
    struct Output: Encodable {
        let engine = "tessera"
        let threads: Int
        let system_info: String
        let base: [Row]
        let adapters: [Row]
    }

    func run() async throws {
        try await reportingErrors {
            let levels = try BenchLoRACommand.list(concurrency)
            guard let data = FileManager.default.contents(atPath: promptTokensFile),
                  let source = try? JSONDecoder().decode([Int32].self, from: data), !source.isEmpty else {
                throw ValidationError("--prompt-tokens-file \(promptTokensFile) is not a JSON list of token ids")
            }
            let modelOptions = self.modelOptions
            let rowLimits = fewRowsLimit.map { MatmulRowLimits(fewRows: $0) }
            let bundle = try await onComputeThread { try modelOptions.load(rowLimits: rowLimits) }
            let model = bundle.model
            let store = AdapterStore(base: model.config, configuration: .init(memoryBudgetBytes: 4 << 30, maxAdapters: 128,
                                                                              precision: modelOptions.adapterPrecision))
            var adapterNames: [String] = []
            if let dir = adaptersDir {
                for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted() where name.hasPrefix("adapter-") {
                    try await store.register(name: name, path: URL(fileURLWithPath: dir).appendingPathComponent(name).path)
                    adapterNames.append(name)
                }
            }
            // One untimed warm-up (page faults, thread pools), as the peer does.
            _ = try await measure(model: model, store: store, count: 1, source: source, adapters: Array(adapterNames.prefix(1)))
            var base: [Row] = [], withAdapters: [Row] = []
            for n in levels {
                base.append(try await measure(model: model, store: store, count: n, source: source, adapters: []))
                if adapterNames.count >= n {
                    withAdapters.append(try await measure(model: model, store: store, count: n, source: source, adapters: Array(adapterNames.prefix(n))))
                }
            }
            let output = Output(threads: ComputeThreads.current, system_info: ComputeThreads.report, base: base, adapters: withAdapters)
            if json { try printJSON(output); return }
            print(output.system_info)
            print("| concurrency | adapters | tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|")
            for r in base + withAdapters {
                print(String(format: "| %d | %d | %.1f | %.0f | %.0f | %.1f | %.1f |", r.concurrency, r.distinct_adapters, r.tokens_per_s,
                             r.ttft_p50_ms, r.ttft_p99_ms, r.tpot_p50_ms, r.tpot_p99_ms))
            }
        }
    }

    /// `count` requests arriving together; request i has prompt slice 8·i and adapter i (if any).
    func measure(model: LlamaModel, store: AdapterStore, count: Int, source: [Int32], adapters: [String]) async throws -> Row {
        var config = EngineConfiguration()
        config.maxSequences = max(count, 1)
        config.maxRunningPerTenant = config.maxSequences
        config.kvCacheBytes = 512 << 20
        config.prefixCaching = false  // every run computes its prompts, as the peer does
        let engine = try Engine(model: model, tokenizer: nil, adapters: store, configuration: config)
        defer { engine.stop() }
        let (promptTokens, genTokens) = (self.promptTokens, self.genTokens)
        let start = ContinuousClock.now
        let timings = try await withThrowingTaskGroup(of: (ttft: Double, tpot: Double, tokens: Int, end: Double).self) { group in
            for i in 0..<count {
                let prompt = (0..<promptTokens).map { source[(i * 8 + $0) % source.count] }
                let request = EngineRequest(tenant: "bench-\(i)", adapter: adapters.isEmpty ? nil : adapters[i], prompt: .tokens(prompt),
                                            maxTokens: genTokens, ignoreEOS: true)
                group.addTask {
                    var times: [Double] = []
                    for try await event in engine.submit(request) {
                        if case .delta(_, let ids, _, _) = event, !ids.isEmpty {
                            let d = (ContinuousClock.now - start).components
                            times.append(Double(d.seconds) * 1e3 + Double(d.attoseconds) / 1e15)
                        }
                    }
                    let tpot = times.count > 1 ? (times.last! - times.first!) / Double(times.count - 1) : 0
                    return (times.first ?? 0, tpot, times.count, times.last ?? 0)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let tokens = timings.reduce(0) { $0 + $1.tokens }
        let wall = (timings.map(\.end).max() ?? 1) / 1e3
        func pct(_ xs: [Double], _ p: Double) -> Double {
            let s = xs.sorted()
            return s[min(s.count - 1, Int((p * Double(s.count - 1)).rounded()))]
        }
        let ttft = timings.map(\.ttft), tpot = timings.map(\.tpot)
        return Row(concurrency: count, distinct_adapters: adapters.count, tokens_per_s: Double(tokens) / wall,
                   ttft_p50_ms: pct(ttft, 0.5), ttft_p99_ms: pct(ttft, 0.99), tpot_p50_ms: pct(tpot, 0.5), tpot_p99_ms: pct(tpot, 0.99))
    }
}
