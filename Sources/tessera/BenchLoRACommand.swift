import ArgumentParser
import Foundation
import Tessera
#if canImport(Glibc)
import Glibc
#endif

struct BenchLoRACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-lora",
        abstract: "Adapter load latency, and decode throughput with LoRA against the base alone (see bench/lora_bench.py).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Ranks for the throughput table.") var ranks = "8,32"
    @Option(help: "Ranks for the load-latency table.") var loadRanks = "8,64"
    @Option(help: "Batch sizes (decode rows per step).") var batches = "1,8,32"
    @Option(help: "Distinct adapters per batch.") var adapterCounts = "1,8,32"
    @Option(help: "Decode steps per timed run.") var steps = 8
    @Option(help: "Timed runs (after one warm-up); medians are reported.") var runs = 5
    @Option(help: "Tokens already in each sequence's cache.") var context = 64
    @Option(help: "LoRA kernel: automatic, blas, fused, or all (one table each).") var kernel = "automatic"
    @Flag(help: "Print one JSON object.") var json = false

    struct LoadRow: Encodable {
        let rank: Int
        let bytes: Int
        let cold_ms: Double
        let warm_ms: Double
    }
    struct ThroughputRow: Encodable {
        let kernel: String
        let rank: Int?
        let batch: Int
        let adapters: Int
        let tokens_per_s: Double
        let ratio_to_base: Double
    }
    struct Output: Encodable {
        let system_info: String
        let load: [LoadRow]
        let throughput: [ThroughputRow]
    }

    static func list(_ s: String) throws -> [Int] {
        try s.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)), v > 0 else { throw ValidationError("'\(s)' is not a list of positive integers") }
            return v
        }
    }

    func run() async throws {
        try await reportingErrors {
            let ranks = try Self.list(ranks), loadRanks = try Self.list(loadRanks), batches = try Self.list(batches)
            let counts = try Self.list(adapterCounts)
            let kernels: [LoRAKernel] = kernel == "all" ? [.blas, .fused, .automatic] : [LoRAKernel(rawValue: kernel) ?? .automatic]
            let modelOptions = self.modelOptions
            let (steps, runs, context) = (self.steps, self.runs, self.context)
            let output = try await onComputeThread { () throws -> Output in
                let bundle = try modelOptions.load()
                let model = bundle.model
                let modelPath = model.source
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-bench-\(getpid())")
                defer { try? FileManager.default.removeItem(at: dir) }

                // Load latency: cold (file evicted from the page cache) and warm.
                var loadRows: [LoadRow] = []
                for rank in loadRanks {
                    let path = dir.appendingPathComponent("load-r\(rank)")
                    try AdapterSynthesizer.write(to: path, base: model.config, baseName: modelPath, rank: rank, targets: LoRATarget.allCases, seed: 1)
                    var cold: [Double] = [], warm: [Double] = [], bytes = 0
                    for _ in 0..<runs {
                        Self.evictFromPageCache(path.appendingPathComponent("adapter_model.safetensors").path)
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        bytes = try LoRAAdapter.load(path: path.path, base: model.config, precision: modelOptions.adapterPrecision).byteCount
                        let t1 = DispatchTime.now().uptimeNanoseconds
                        _ = try LoRAAdapter.load(path: path.path, base: model.config, precision: modelOptions.adapterPrecision)
                        let t2 = DispatchTime.now().uptimeNanoseconds
                        cold.append(Double(t1 - t0) / 1e6)
                        warm.append(Double(t2 - t1) / 1e6)
                    }
                    loadRows.append(LoadRow(rank: rank, bytes: bytes, cold_ms: Self.median(cold), warm_ms: Self.median(warm)))
                }

                // Throughput: decode steps of `batch` rows, each row its own sequence.
                var adaptersByRank: [Int: [LoRAAdapter]] = [:]
                for rank in ranks {
                    adaptersByRank[rank] = try (0..<(counts.max() ?? 1)).map { i in
                        let path = dir.appendingPathComponent("tp-r\(rank)-\(i)")
                        try AdapterSynthesizer.write(to: path, base: model.config, baseName: modelPath, rank: rank,
                                                     targets: LoRATarget.allCases, seed: UInt64(100 + i))
                        return try LoRAAdapter.load(path: path.path, base: model.config, precision: modelOptions.adapterPrecision)
                    }
                }
                var rows: [ThroughputRow] = []
                let scratch = model.makeScratch()
                for batchSize in batches {
                    let caches = try (0..<batchSize).map { _ in try model.makeCache(capacity: context + steps + 1) }
                    var prefill = ForwardBatch()
                    for (s, cache) in caches.enumerated() {
                        prefill.removeAll()
                        for p in 0..<context { prefill.append(token: Int32(100 + (p * 31 + s) % 1000), position: p, sequence: 0, wantLogits: false) }
                        _ = try model.forward(prefill, caches: [cache], scratch: scratch)
                    }
                    func measure(_ adapters: [LoRAAdapter], distinct: Int) throws -> Double {
                        var batch = ForwardBatch()
                        var rates: [Double] = []
                        for run in 0...runs {
                            caches.forEach { $0.truncate(to: context) }
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            for step in 0..<steps {
                                batch.removeAll()
                                for s in 0..<batchSize {
                                    // Rows of one adapter are contiguous: one segment per adapter.
                                    let a = adapters.isEmpty ? nil : s * distinct / batchSize
                                    batch.append(token: Int32(200 + s), position: context + step, sequence: s, wantLogits: true, adapter: a)
                                }
                                _ = try model.forward(batch, caches: caches, adapters: adapters, scratch: scratch)
                            }
                            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                            if run > 0 { rates.append(Double(batchSize * steps) / seconds) }
                        }
                        return Self.median(rates)
                    }
                    let base = try measure([], distinct: 0)
                    rows.append(ThroughputRow(kernel: "-", rank: nil, batch: batchSize, adapters: 0, tokens_per_s: base, ratio_to_base: 1))
                    for k in kernels {
                        scratch.loraKernel = k
                        for rank in ranks {
                            for distinct in counts where distinct <= batchSize {
                                let adapters = Array(adaptersByRank[rank]!.prefix(distinct))
                                let rate = try measure(adapters, distinct: distinct)
                                rows.append(ThroughputRow(kernel: k.rawValue, rank: rank, batch: batchSize, adapters: distinct,
                                                          tokens_per_s: rate, ratio_to_base: rate / base))
                            }
                        }
                    }
                }
                return Output(system_info: ComputeThreads.report, load: loadRows, throughput: rows)
            }
            if json {
                try printJSON(output)
                return
            }
            print(output.system_info)
            print("\n| rank | f32 bytes | cold load ms | warm load ms |\n|---:|---:|---:|---:|")
            for r in output.load { print(String(format: "| %d | %d | %.2f | %.2f |", r.rank, r.bytes, r.cold_ms, r.warm_ms)) }
            print("\n| kernel | rank | batch | distinct adapters | tokens/s | vs base |\n|---|---:|---:|---:|---:|---:|")
            for r in output.throughput {
                print(String(format: "| %@ | %@ | %d | %d | %.1f | %.2f |", r.kernel, r.rank.map(String.init) ?? "base", r.batch, r.adapters, r.tokens_per_s, r.ratio_to_base))
            }
        }
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Drops a file's pages from the page cache (clean pages only; no root needed).
    static func evictFromPageCache(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        fdatasync(fd)
        posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
}
